//! Transactions: a payload (what, by whom, when) and the signatures over it.
//!
//! Two hashes name a transaction. The *payload hash* is what signers sign and what replay
//! protection remembers: adding, dropping or re-encoding signatures cannot make an old payload
//! look new. The *transaction hash* is blake2b-256 of the whole versioned encoding, signatures
//! included; blocks commit to it (the transaction Merkle root) and clients look transactions up
//! by it.

use serde::{Deserialize, Serialize};

use crate::codec::{self, Versioned};
use crate::crypto::{KeyPair, PublicKey, Signature, SignedMessage};
use crate::hash::Hash;
use crate::ids::{AccountId, Name};
use crate::instruction::Instruction;

/// Most instructions in one transaction.
pub const INSTRUCTIONS_MAX: usize = 64;
/// Most signatures on one transaction.
pub const TRANSACTION_SIGNATURES_MAX: usize = 16;
/// Longest time-to-live a transaction may ask for: ten minutes. Replay protection remembers
/// every payload hash until it expires, so memory is about rate x TTL x 48 bytes (about 0.6 GB
/// at 20,000 tps); a longer TTL costs proportionally more.
pub const TTL_MS_MAX: u64 = 10 * 60 * 1000;
/// How far ahead of the block's timestamp a transaction's creation time may be.
pub const FUTURE_SKEW_MS_MAX: u64 = 60 * 1000;
/// Largest encoded transaction.
pub const TRANSACTION_BYTES_MAX: usize = 64 * 1024;
/// Domain separation of the signed message, so a transaction signature can never be replayed
/// as a vote or anything else kasane signs.
pub const TRANSACTION_SIGNING_DOMAIN: &[u8; 16] = b"kasane:tx:v1\0\0\0\0";
/// Domain separation of the payload hash.
const PAYLOAD_HASH_DOMAIN: &[u8] = b"kasane:tx-payload:v1";

/// The identity of a chain; a transaction for another chain is refused.
pub type ChainId = Name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionPayload {
    pub chain: ChainId,
    pub creator: AccountId,
    pub instructions: Vec<Instruction>,
    /// Milliseconds since the Unix epoch, by the creator's clock.
    pub created_at_ms: u64,
    /// The transaction expires `ttl_ms` after `created_at_ms`.
    pub ttl_ms: u64,
    /// Distinguishes otherwise identical payloads created in the same millisecond.
    pub nonce: u32,
}

impl TransactionPayload {
    /// Hash of the payload: the replay-protection key, and what signatures cover.
    pub fn hash(&self) -> Hash {
        Hash::of_parts(&[PAYLOAD_HASH_DOMAIN, &codec::encode_body(self)])
    }

    /// When the transaction stops being valid, in milliseconds since the epoch.
    pub fn expires_at_ms(&self) -> u64 {
        self.created_at_ms.saturating_add(self.ttl_ms)
    }
}

/// The message a signer signs: the domain tag followed by the payload hash.
pub fn signing_message(payload_hash: &Hash) -> [u8; 48] {
    let mut message = [0u8; 48];
    message[..16].copy_from_slice(TRANSACTION_SIGNING_DOMAIN);
    message[16..].copy_from_slice(payload_hash.as_bytes());
    message
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionSignature {
    pub public_key: PublicKey,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTransaction {
    pub payload: TransactionPayload,
    pub signatures: Vec<TransactionSignature>,
}

impl Versioned for SignedTransaction {
    const NAME: &'static str = "transaction";
    const VERSION: u8 = 1;
    const ENCODED_BYTES_MAX: usize = TRANSACTION_BYTES_MAX;
}

/// What a chain takes as transactions, fixed by its genesis block and so the same on every node
/// (docs/PROTOCOL.md section 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Payloads {
    /// Signed transactions of ordinary instructions only.
    #[default]
    Signed,
    /// Also [`Instruction::Opaque`] bytes, and unsigned transactions that carry nothing else:
    /// a consensus-only chain for benchmarks.
    Opaque,
}

/// A transaction refused before it touches any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatelessError {
    #[error("transaction is for chain {found}, this is chain {expected}")]
    WrongChain { expected: String, found: String },
    #[error("transaction has no instructions")]
    NoInstructions,
    #[error("transaction has {count} instructions, over the limit of {INSTRUCTIONS_MAX}")]
    TooManyInstructions { count: usize },
    #[error("transaction has no signatures")]
    NoSignatures,
    #[error("transaction has {count} signatures, over the limit of {TRANSACTION_SIGNATURES_MAX}")]
    TooManySignatures { count: usize },
    #[error("transaction is signed twice by {key}")]
    DuplicateSigner { key: PublicKey },
    #[error("time-to-live {ttl_ms} ms is over the limit of {TTL_MS_MAX} ms")]
    TtlTooLong { ttl_ms: u64 },
    #[error("transaction is {bytes} bytes, over the limit of {TRANSACTION_BYTES_MAX}")]
    TooLarge { bytes: usize },
    #[error("transaction carries opaque payloads, which this chain does not take")]
    OpaqueNotAccepted,
}

impl SignedTransaction {
    /// Signs `payload` with each of `signers`.
    pub fn sign(payload: TransactionPayload, signers: &[&KeyPair]) -> SignedTransaction {
        let message = signing_message(&payload.hash());
        let signatures = signers
            .iter()
            .map(|pair| TransactionSignature {
                public_key: pair.public_key(),
                signature: pair.sign(&message),
            })
            .collect();
        SignedTransaction { payload, signatures }
    }

    /// The versioned canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// blake2b-256 of the canonical encoding.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.encode())
    }

    /// Both hashes from one encoding: postcard encodes a struct as its fields back to back, so
    /// the payload's bytes are a slice of the transaction's.
    pub fn hashes(&self) -> TransactionHashes {
        self.hashes_and_encoding().0
    }

    /// [`Self::hashes`] and the encoding they were computed from, which is exactly
    /// `codec::encode(self)`: for a caller that also needs the bytes (the node's hold log).
    pub fn hashes_and_encoding(&self) -> (TransactionHashes, Vec<u8>) {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(<Self as Versioned>::VERSION);
        codec::encode_body_into(&self.payload, &mut bytes);
        let payload_end = bytes.len();
        codec::encode_body_into(&self.signatures, &mut bytes);
        let hashes = TransactionHashes {
            encoded_bytes: bytes.len(),
            transaction: Hash::of(&bytes),
            payload: Hash::of_parts(&[PAYLOAD_HASH_DOMAIN, &bytes[1..payload_end]]),
        };
        (hashes, bytes)
    }

    /// Carries opaque payloads alone and no signature: on a chain of [`Payloads::Opaque`], it
    /// needs neither a signature nor a registered creator.
    pub fn is_unsigned_opaque(&self) -> bool {
        self.signatures.is_empty() && self.payload.instructions.iter().all(Instruction::is_opaque)
    }

    /// Checks what needs no state: chain, counts, duplicate signers, time-to-live, and whether
    /// the chain takes what the transaction carries. Signatures themselves are checked by the
    /// caller, in batches (see [`SigningMessages::items`]).
    pub fn check_stateless(&self, chain: &ChainId, payloads: Payloads) -> Result<(), StatelessError> {
        if self.payload.chain != *chain {
            return Err(StatelessError::WrongChain {
                expected: chain.to_string(),
                found: self.payload.chain.to_string(),
            });
        }
        let instructions = self.payload.instructions.len();
        if instructions == 0 {
            return Err(StatelessError::NoInstructions);
        }
        if instructions > INSTRUCTIONS_MAX {
            return Err(StatelessError::TooManyInstructions { count: instructions });
        }
        let opaque = self.payload.instructions.iter().any(Instruction::is_opaque);
        if opaque && payloads != Payloads::Opaque {
            return Err(StatelessError::OpaqueNotAccepted);
        }
        match self.signatures.len() {
            0 if self.is_unsigned_opaque() => {}
            0 => return Err(StatelessError::NoSignatures),
            count if count > TRANSACTION_SIGNATURES_MAX => return Err(StatelessError::TooManySignatures { count }),
            _ => {}
        }
        for (index, signature) in self.signatures.iter().enumerate() {
            if self.signatures[..index]
                .iter()
                .any(|earlier| earlier.public_key == signature.public_key)
            {
                return Err(StatelessError::DuplicateSigner {
                    key: signature.public_key,
                });
            }
        }
        if self.payload.ttl_ms > TTL_MS_MAX {
            return Err(StatelessError::TtlTooLong {
                ttl_ms: self.payload.ttl_ms,
            });
        }
        Ok(())
    }

    /// The public keys that signed, in signature order.
    pub fn signers(&self) -> impl Iterator<Item = &PublicKey> {
        self.signatures.iter().map(|signature| &signature.public_key)
    }
}

/// The two hashes of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionHashes {
    pub transaction: Hash,
    pub payload: Hash,
    /// Length of the versioned encoding, which is what `TRANSACTION_BYTES_MAX` limits.
    pub encoded_bytes: usize,
}

/// A transaction whose signatures did not verify: its index in the list, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction {index}: {error}")]
pub struct BadTransactionSignature {
    pub index: usize,
    pub error: crate::crypto::SignatureError,
}

/// Verifies every signature of `transactions` (with their `hashes`, in the same order) in one
/// batch, naming the first transaction with a bad one.
pub fn verify_transaction_signatures(
    cache: &mut crate::crypto::KeyCache,
    transactions: &[SignedTransaction],
    hashes: &[TransactionHashes],
) -> Result<usize, BadTransactionSignature> {
    let messages: Vec<SigningMessages> = hashes
        .iter()
        .map(|hash| SigningMessages::for_payload_hash(&hash.payload))
        .collect();
    let items: Vec<SignedMessage> = transactions
        .iter()
        .zip(&messages)
        .flat_map(|(transaction, messages)| messages.items(transaction))
        .collect();
    crate::crypto::verify_batch(cache, &items).map_err(|error| {
        // Map the failing signature back to its transaction.
        let item = match error {
            crate::crypto::SignatureError::Invalid { index, .. } => index,
            _ => 0,
        };
        let mut seen = 0;
        let index = transactions
            .iter()
            .position(|transaction| {
                seen += transaction.signatures.len();
                item < seen
            })
            .unwrap_or(0);
        BadTransactionSignature { index, error }
    })?;
    Ok(items.len())
}

/// The signing messages of one transaction, kept alive for a batch verification.
#[derive(Debug, Clone)]
pub struct SigningMessages {
    message: [u8; 48],
}

impl SigningMessages {
    pub fn for_payload_hash(payload_hash: &Hash) -> SigningMessages {
        SigningMessages {
            message: signing_message(payload_hash),
        }
    }

    /// The batch items for `transaction`'s signatures, all over the same message.
    pub fn items<'a>(&'a self, transaction: &'a SignedTransaction) -> impl Iterator<Item = SignedMessage<'a>> + 'a {
        transaction.signatures.iter().map(move |signature| SignedMessage {
            key: &signature.public_key,
            message: &self.message,
            signature: &signature.signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instruction::Instruction;

    #[test]
    fn hashes_agree_with_the_separate_definitions() {
        let key = KeyPair::derive(b"tx-tests", 0);
        let payload = TransactionPayload {
            chain: "c".parse().expect("name"),
            creator: "a@d".parse().expect("id"),
            instructions: vec![Instruction::RegisterPeer { peer: key.public_key() }],
            created_at_ms: 5,
            ttl_ms: 10,
            nonce: 3,
        };
        let transaction = SignedTransaction::sign(payload, &[&key]);
        let hashes = transaction.hashes();
        assert_eq!(hashes.transaction, transaction.hash());
        assert_eq!(hashes.payload, transaction.payload.hash());
        let (same, encoding) = transaction.hashes_and_encoding();
        assert_eq!(same, hashes);
        assert_eq!(encoding, codec::encode(&transaction));
    }

    fn payload(instructions: Vec<Instruction>) -> TransactionPayload {
        TransactionPayload {
            chain: "c".parse().expect("name"),
            creator: "a@d".parse().expect("id"),
            instructions,
            created_at_ms: 5,
            ttl_ms: 10,
            nonce: 3,
        }
    }

    #[test]
    fn only_an_opaque_chain_takes_opaque_payloads_and_unsigned_ones_carry_nothing_else() {
        let chain: ChainId = "c".parse().expect("name");
        let key = KeyPair::derive(b"tx-tests", 1);
        let opaque = || Instruction::Opaque { bytes: vec![7; 512] };
        let peer = Instruction::RegisterPeer { peer: key.public_key() };
        let unsigned = SignedTransaction {
            payload: payload(vec![opaque(), opaque()]),
            signatures: Vec::new(),
        };
        assert!(unsigned.is_unsigned_opaque());
        assert_eq!(unsigned.check_stateless(&chain, Payloads::Opaque), Ok(()));
        assert_eq!(
            unsigned.check_stateless(&chain, Payloads::Signed),
            Err(StatelessError::OpaqueNotAccepted)
        );
        // Signed, an opaque payload is still one only an opaque chain takes.
        let signed = SignedTransaction::sign(payload(vec![opaque()]), &[&key]);
        assert_eq!(signed.check_stateless(&chain, Payloads::Opaque), Ok(()));
        assert_eq!(
            signed.check_stateless(&chain, Payloads::Signed),
            Err(StatelessError::OpaqueNotAccepted)
        );
        // An ordinary instruction beside opaque ones needs its signature on every chain.
        let mixed = SignedTransaction {
            payload: payload(vec![opaque(), peer.clone()]),
            signatures: Vec::new(),
        };
        assert!(!mixed.is_unsigned_opaque());
        assert_eq!(
            mixed.check_stateless(&chain, Payloads::Opaque),
            Err(StatelessError::NoSignatures)
        );
        let plain = SignedTransaction {
            payload: payload(vec![peer]),
            signatures: Vec::new(),
        };
        assert_eq!(
            plain.check_stateless(&chain, Payloads::Opaque),
            Err(StatelessError::NoSignatures)
        );
    }
}
