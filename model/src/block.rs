//! Blocks, votes and certificates.
//!
//! A block's hash is blake2b-256 of its header's canonical encoding; the header commits to the
//! transactions through the transaction Merkle root (an RFC 6962 tree over the transaction
//! hashes, in block order) and to the state through the state commitment after the block.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::codec::{self, Versioned};
use crate::crypto::{self, KeyCache, KeyPair, PublicKey, Signature, SignatureError, SignedMessage};
use crate::hash::{Blake2bMerkle, Hash};
use crate::merkle;
use crate::transaction::SignedTransaction;

/// Most transactions in one block.
pub const BLOCK_TRANSACTIONS_MAX: usize = 16_384;
/// Largest encoded committed block (block and certificate).
pub const BLOCK_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most bytes a block's transactions may take, counted as the sum of their versioned encodings
/// (each at least as long as its encoding inside the block). The rest of [`BLOCK_BYTES_MAX`]
/// is left to the header, its view-change proof and the commit certificate: 4 MiB holds both
/// signature lists for more than 20,000 validators. A block that fits this fits Kura and a
/// proposal message, so a block honest replicas vote for can always be stored.
pub const BLOCK_TRANSACTION_BYTES_MAX: usize = BLOCK_BYTES_MAX - 4 * 1024 * 1024;
/// Domain separation of block hashes.
const BLOCK_HASH_DOMAIN: &[u8] = b"kasane:block:v1";
/// Domain separation of vote signatures.
const VOTE_SIGNING_DOMAIN: &[u8; 16] = b"kasane:vote:v1\0\0";
/// Domain separation of view-change signatures.
const VIEW_CHANGE_DOMAIN: &[u8; 16] = b"kasane:vc:v1\0\0\0\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// 1 for the genesis block.
    pub height: u64,
    /// [`Hash::ZERO`] for the genesis block.
    pub previous_hash: Hash,
    /// The view (number of view changes at this height) in which the block was proposed.
    pub view: u64,
    /// The leader that proposed it; for the genesis block, the genesis authority's key.
    pub proposer: PublicKey,
    pub tx_merkle_root: Hash,
    /// The world state commitment after this block is applied.
    pub state_commitment: Hash,
    /// Milliseconds since the Unix epoch, by the proposer's clock.
    pub timestamp_ms: u64,
    /// For a block first proposed in a view above 0: the quorum of view-change signatures that
    /// made that view (docs/PROTOCOL.md R15), so the history of failed views is on the ledger.
    pub view_change_proof: Option<ViewChangeProof>,
}

/// The bytes a view-change vote signs: domain, height, view.
pub fn view_change_message(height: u64, view: u64) -> [u8; 32] {
    let mut message = [0u8; 32];
    message[..16].copy_from_slice(VIEW_CHANGE_DOMAIN);
    message[16..24].copy_from_slice(&height.to_le_bytes());
    message[24..].copy_from_slice(&view.to_le_bytes());
    message
}

/// A quorum of validators' signatures saying "move to `view` at `height`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChangeProof {
    pub height: u64,
    pub view: u64,
    pub signatures: Vec<ValidatorSignature>,
}

impl ViewChangeProof {
    /// Distinct members of `validators`, at least a quorum, every signature valid.
    pub fn verify(&self, validators: &BTreeSet<PublicKey>, cache: &mut KeyCache) -> Result<(), CertificateError> {
        verify_quorum(
            &self.signatures,
            &view_change_message(self.height, self.view),
            validators,
            cache,
        )
    }
}

impl BlockHeader {
    /// A block first proposed in view 0 carries no view-change proof; one proposed in a later
    /// view carries a valid proof for exactly its height and view.
    pub fn check_view_change_proof(
        &self,
        validators: &BTreeSet<PublicKey>,
        cache: &mut KeyCache,
    ) -> Result<(), CertificateError> {
        match (&self.view_change_proof, self.view) {
            (None, 0) => Ok(()),
            (Some(proof), view) if view > 0 && proof.height == self.height && proof.view == view => {
                proof.verify(validators, cache)
            }
            _ => Err(CertificateError::BadViewChangeProof {
                height: self.height,
                view: self.view,
            }),
        }
    }
}

impl BlockHeader {
    pub fn hash(&self) -> Hash {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(BLOCK_HASH_DOMAIN);
        codec::encode_body_into(self, &mut bytes);
        Hash::of(&bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub transactions: Vec<SignedTransaction>,
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    pub fn height(&self) -> u64 {
        self.header.height
    }
}

/// The transaction Merkle root over already-computed transaction hashes.
pub fn tx_merkle_root(transaction_hashes: &[Hash]) -> Hash {
    let leaves: Vec<Hash> = transaction_hashes
        .iter()
        .map(|hash| merkle::leaf_hash::<Blake2bMerkle>(hash.as_bytes()))
        .collect();
    merkle::root_from_leaf_hashes::<Blake2bMerkle>(&leaves)
}

/// Which voting phase a vote or certificate belongs to (docs/PROTOCOL.md, consensus issue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    Prepare,
    Commit,
}

/// What a validator signs when it votes for a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub kind: VoteKind,
    pub height: u64,
    pub view: u64,
    pub block_hash: Hash,
}

impl Vote {
    /// The signed message: domain tag, kind, height, view, block hash, fixed layout.
    pub fn signing_message(&self) -> [u8; 16 + 1 + 8 + 8 + 32] {
        let mut message = [0u8; 65];
        message[..16].copy_from_slice(VOTE_SIGNING_DOMAIN);
        message[16] = match self.kind {
            VoteKind::Prepare => 0,
            VoteKind::Commit => 1,
        };
        message[17..25].copy_from_slice(&self.height.to_le_bytes());
        message[25..33].copy_from_slice(&self.view.to_le_bytes());
        message[33..].copy_from_slice(self.block_hash.as_bytes());
        message
    }

    pub fn sign(&self, validator: &KeyPair) -> ValidatorSignature {
        ValidatorSignature {
            validator: validator.public_key(),
            signature: validator.sign(&self.signing_message()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorSignature {
    pub validator: PublicKey,
    pub signature: Signature,
}

/// A quorum of validator signatures over one vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub vote: Vote,
    pub signatures: Vec<ValidatorSignature>,
}

/// R1: the view-0 order of `height`. The validators sorted and rotated left by `height mod n`;
/// then those in `demoted` (validators that led a failed view recently, leader reputation)
/// move behind the others, each group keeping its rotated order. A function of the committed
/// chain alone, so every honest replica computes the same order; the one place it lives (the
/// consensus topology and the world state's record of failed leaders both use it).
pub fn view_zero_order(validators: &BTreeSet<PublicKey>, height: u64, demoted: &BTreeSet<PublicKey>) -> Vec<PublicKey> {
    let mut order: Vec<PublicKey> = validators.iter().copied().collect();
    if !order.is_empty() {
        let shift = (height % order.len() as u64) as usize;
        order.rotate_left(shift);
    }
    let (mut ahead, behind): (Vec<PublicKey>, Vec<PublicKey>) =
        order.into_iter().partition(|key| !demoted.contains(key));
    ahead.extend(behind);
    ahead
}

/// The faults `validators` validators tolerate: f = (n - 1) / 3. The one place the formula lives.
pub fn max_faulty(validators: usize) -> usize {
    validators.saturating_sub(1) / 3
}

/// The quorum for `validators` validators: n - f.
pub fn quorum(validators: usize) -> usize {
    validators - max_faulty(validators)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("the validator set is empty")]
    NoValidators,
    #[error("certificate is for {found:?}, expected {expected:?}")]
    WrongVote { expected: Vote, found: Vote },
    #[error("signer {signer} is not a validator")]
    NotAValidator { signer: PublicKey },
    #[error("signer {signer} signed twice")]
    DuplicateSigner { signer: PublicKey },
    #[error("{signatures} signatures, quorum is {quorum}")]
    NoQuorum { signatures: usize, quorum: usize },
    #[error("bad signature: {0}")]
    BadSignature(SignatureError),
    #[error("block {height} of view {view} lacks a matching view-change proof, or has one it should not")]
    BadViewChangeProof { height: u64, view: u64 },
}

impl Certificate {
    /// Certifies `vote` with the signatures of `signers`.
    pub fn sign(vote: Vote, signers: &[&KeyPair]) -> Certificate {
        Certificate {
            vote,
            signatures: signers.iter().map(|signer| vote.sign(signer)).collect(),
        }
    }

    /// Checks that the certificate is for `expected` and carries a quorum of distinct valid
    /// signatures of `validators`.
    pub fn verify(
        &self,
        expected: &Vote,
        validators: &BTreeSet<PublicKey>,
        cache: &mut KeyCache,
    ) -> Result<(), CertificateError> {
        if validators.is_empty() {
            return Err(CertificateError::NoValidators);
        }
        if self.vote != *expected {
            return Err(CertificateError::WrongVote {
                expected: *expected,
                found: self.vote,
            });
        }
        verify_quorum(&self.signatures, &self.vote.signing_message(), validators, cache)
    }
}

/// Distinct members of `validators`, at least a quorum of them, each with a valid signature of
/// `message`: the rule of commit certificates and view-change proofs alike.
fn verify_quorum(
    signatures: &[ValidatorSignature],
    message: &[u8],
    validators: &BTreeSet<PublicKey>,
    cache: &mut KeyCache,
) -> Result<(), CertificateError> {
    if validators.is_empty() {
        return Err(CertificateError::NoValidators);
    }
    let mut seen = BTreeSet::new();
    for signature in signatures {
        if !validators.contains(&signature.validator) {
            return Err(CertificateError::NotAValidator {
                signer: signature.validator,
            });
        }
        if !seen.insert(signature.validator) {
            return Err(CertificateError::DuplicateSigner {
                signer: signature.validator,
            });
        }
    }
    let needed = quorum(validators.len());
    if signatures.len() < needed {
        return Err(CertificateError::NoQuorum {
            signatures: signatures.len(),
            quorum: needed,
        });
    }
    let items: Vec<SignedMessage> = signatures
        .iter()
        .map(|signature| SignedMessage {
            key: &signature.validator,
            message,
            signature: &signature.signature,
        })
        .collect();
    crypto::verify_batch(cache, &items).map_err(CertificateError::BadSignature)
}

/// A block with the commit certificate that finalised it: what Kura stores and block sync sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBlock {
    pub block: Block,
    pub certificate: Certificate,
}

impl Versioned for CommittedBlock {
    const NAME: &'static str = "committed block";
    /// 2: headers carry the view-change proof.
    const VERSION: u8 = 2;
    const ENCODED_BYTES_MAX: usize = BLOCK_BYTES_MAX;
}

impl CommittedBlock {
    /// The commit vote this block's certificate must carry: a Commit vote for this height and
    /// hash. The view is the certificate's own: a block first proposed in one view may commit in a
    /// later one (docs/PROTOCOL.md R10), so it need not equal the header's view.
    pub fn expected_vote(&self) -> Vote {
        Vote {
            view: self.certificate.vote.view,
            ..CommittedBlock::expected_vote_for(&self.block)
        }
    }

    /// The commit vote that certifies `block` in the view it was proposed in.
    pub fn expected_vote_for(block: &Block) -> Vote {
        Vote {
            kind: VoteKind::Commit,
            height: block.header.height,
            view: block.header.view,
            block_hash: block.hash(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_n_minus_f() {
        let table = [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (6, 5), (7, 5), (10, 7)];
        for (validators, expected) in table {
            assert_eq!(quorum(validators), expected, "n = {validators}");
        }
    }

    #[test]
    fn view_change_proof_rules() {
        let pairs: Vec<KeyPair> = (0..4).map(|i| KeyPair::derive(b"vc-proof", i)).collect();
        let validators: BTreeSet<PublicKey> = pairs.iter().map(KeyPair::public_key).collect();
        let sign = |signers: &[usize], height: u64, view: u64| ViewChangeProof {
            height,
            view,
            signatures: signers
                .iter()
                .map(|&i| ValidatorSignature {
                    validator: pairs[i].public_key(),
                    signature: pairs[i].sign(&view_change_message(height, view)),
                })
                .collect(),
        };
        let mut cache = KeyCache::new();
        let mut header = BlockHeader {
            height: 5,
            previous_hash: Hash::ZERO,
            view: 0,
            proposer: pairs[0].public_key(),
            tx_merkle_root: Hash::ZERO,
            state_commitment: Hash::ZERO,
            timestamp_ms: 0,
            view_change_proof: None,
        };
        assert_eq!(header.check_view_change_proof(&validators, &mut cache), Ok(()));
        header.view = 2;
        assert!(matches!(
            header.check_view_change_proof(&validators, &mut cache),
            Err(CertificateError::BadViewChangeProof { .. })
        ));
        header.view_change_proof = Some(sign(&[0, 1, 2], 5, 2));
        assert_eq!(header.check_view_change_proof(&validators, &mut cache), Ok(()));
        header.view_change_proof = Some(sign(&[0, 1], 5, 2));
        assert!(matches!(
            header.check_view_change_proof(&validators, &mut cache),
            Err(CertificateError::NoQuorum { .. })
        ));
        header.view_change_proof = Some(sign(&[0, 1, 1], 5, 2));
        assert!(matches!(
            header.check_view_change_proof(&validators, &mut cache),
            Err(CertificateError::DuplicateSigner { .. })
        ));
        header.view_change_proof = Some(sign(&[0, 1, 2], 5, 1));
        assert!(matches!(
            header.check_view_change_proof(&validators, &mut cache),
            Err(CertificateError::BadViewChangeProof { .. })
        ));
        let mut forged = sign(&[0, 1, 2], 5, 2);
        forged.signatures[2].signature.0[0] ^= 1;
        header.view_change_proof = Some(forged);
        assert!(matches!(
            header.check_view_change_proof(&validators, &mut cache),
            Err(CertificateError::BadSignature(_))
        ));
        // A proof in a view-0 block is refused, and the proof is part of the block hash.
        let with_proof = BlockHeader {
            view: 0,
            view_change_proof: Some(sign(&[0, 1, 2], 5, 0)),
            ..header.clone()
        };
        assert!(with_proof.check_view_change_proof(&validators, &mut cache).is_err());
        let without = BlockHeader {
            view_change_proof: None,
            ..with_proof.clone()
        };
        assert_ne!(with_proof.hash(), without.hash());
    }

    #[test]
    fn certificate_rules() {
        let pairs: Vec<KeyPair> = (0..4).map(|i| KeyPair::derive(b"cert", i)).collect();
        let validators: BTreeSet<PublicKey> = pairs.iter().map(KeyPair::public_key).collect();
        let vote = Vote {
            kind: VoteKind::Commit,
            height: 2,
            view: 0,
            block_hash: Hash::of(b"b"),
        };
        let mut cache = KeyCache::new();
        let good = Certificate::sign(vote, &[&pairs[0], &pairs[1], &pairs[2]]);
        assert_eq!(good.verify(&vote, &validators, &mut cache), Ok(()));
        let short = Certificate::sign(vote, &[&pairs[0], &pairs[1]]);
        assert!(matches!(
            short.verify(&vote, &validators, &mut cache),
            Err(CertificateError::NoQuorum { .. })
        ));
        let twice = Certificate::sign(vote, &[&pairs[0], &pairs[1], &pairs[1]]);
        assert!(matches!(
            twice.verify(&vote, &validators, &mut cache),
            Err(CertificateError::DuplicateSigner { .. })
        ));
        let outsider = KeyPair::derive(b"other", 0);
        let foreign = Certificate::sign(vote, &[&pairs[0], &pairs[1], &outsider]);
        assert!(matches!(
            foreign.verify(&vote, &validators, &mut cache),
            Err(CertificateError::NotAValidator { .. })
        ));
        let mut forged = good.clone();
        forged.signatures[1].signature.0[0] ^= 1;
        assert!(matches!(
            forged.verify(&vote, &validators, &mut cache),
            Err(CertificateError::BadSignature(_))
        ));
        let other_view = Vote { view: 1, ..vote };
        assert!(matches!(
            good.verify(&other_view, &validators, &mut cache),
            Err(CertificateError::WrongVote { .. })
        ));
    }
}
