//! Property tests of the versioned codec on the two structures that cross process boundaries
//! most: `SignedTransaction` and `CommittedBlock`; and of the two hashes of a transaction and the
//! transaction Merkle root.
//!
//! Canonicity. postcard (1.1) accepts over-long varints: `0x80 0x00` decodes as 0, just like
//! `0x00`. Every integer wider than a byte, every length and every enum tag is a varint, so a
//! byte string that decodes successfully need NOT re-encode to itself. What does hold, and is
//! asserted here, is:
//! - `decode(encode(x)) == x` for every value;
//! - a successfully decoded value re-encodes to a canonical form that decodes to the same value
//!   and is never longer than the input (over-long varints only add bytes; every other field is
//!   fixed-size or checked: bools, option tags, UTF-8 and names);
//! - `SignedTransaction::hash` is over the re-encoding, so two encodings of one transaction share
//!   one hash (see `non_canonical_varints_are_accepted_and_hash_is_canonical`).

use kasane_model::block::{tx_merkle_root, BlockHeader, Certificate, BLOCK_BYTES_MAX};
use kasane_model::codec::{decode, encode, CodecError, Versioned};
use kasane_model::crypto::{self, KeyCache};
use kasane_model::hash::{Blake2bMerkle, Hash};
use kasane_model::ids::Name;
use kasane_model::instruction::{Instruction, MetadataTarget};
use kasane_model::merkle;
use kasane_model::transaction::{signing_message, TRANSACTION_BYTES_MAX};
use kasane_model::{Block, CommittedBlock, KeyPair, SignedTransaction, TransactionPayload, Vote, VoteKind};
use proptest::prelude::*;

mod strategies;

use strategies::*;

/// What must hold for any input to `decode::<T>`: no panic (the call returning at all), and a
/// value that decodes is stable under re-encoding and its canonical form is no longer.
fn check_decode_of_any_input<T: Versioned + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode::<T>(bytes) {
        Ok(value) => {
            let canonical = encode(&value);
            prop_assert!(
                canonical.len() <= bytes.len(),
                "canonical form ({} bytes) longer than the accepted input ({} bytes)",
                canonical.len(),
                bytes.len()
            );
            prop_assert_eq!(decode::<T>(&canonical), Ok(value));
        }
        Err(CodecError::Empty { .. }) => prop_assert!(bytes.is_empty()),
        Err(CodecError::UnknownVersion { found, supported, .. }) => {
            prop_assert_eq!(supported, T::VERSION);
            prop_assert_eq!(Some(&found), bytes.first());
            prop_assert_ne!(found, T::VERSION);
        }
        Err(CodecError::TooLarge { bytes: size, limit, .. }) => {
            prop_assert_eq!(size, bytes.len());
            prop_assert!(size > limit);
        }
        Err(CodecError::TrailingBytes { extra, .. }) => prop_assert!(extra > 0 && extra < bytes.len()),
        Err(CodecError::Malformed { .. }) => {}
    }
    Ok(())
}

/// Every strict prefix of a valid encoding is refused: the decoder reads the same bytes in the
/// same order as on the whole input, so it runs out before it finishes.
fn check_truncations<T: Versioned + std::fmt::Debug>(bytes: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    for cut in cuts {
        let cut = cut % bytes.len();
        match decode::<T>(&bytes[..cut]) {
            Err(CodecError::Empty { .. }) => prop_assert_eq!(cut, 0),
            Err(CodecError::Malformed { .. }) => prop_assert!(cut > 0),
            other => prop_assert!(false, "prefix of {} of {} bytes gave {:?}", cut, bytes.len(), other),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn transaction_round_trips(tx in transaction()) {
        let bytes = encode(&tx);
        prop_assert_eq!(bytes[0], SignedTransaction::VERSION);
        prop_assert_eq!(&tx.encode(), &bytes);
        prop_assert_eq!(decode::<SignedTransaction>(&bytes), Ok(tx.clone()));
        // hash() and hashes() agree, and hash() is over exactly this encoding.
        prop_assert_eq!(tx.hash(), Hash::of(&bytes));
        let hashes = tx.hashes();
        prop_assert_eq!(hashes.transaction, tx.hash());
        prop_assert_eq!(hashes.payload, tx.payload.hash());
    }

    #[test]
    fn committed_block_round_trips(block in committed_block()) {
        let bytes = encode(&block);
        prop_assert_eq!(bytes[0], CommittedBlock::VERSION);
        prop_assert_eq!(decode::<CommittedBlock>(&bytes), Ok(block.clone()));
        // A trailing byte is refused, not ignored.
        let mut long = bytes.clone();
        long.push(0);
        prop_assert_eq!(
            decode::<CommittedBlock>(&long),
            Err(CodecError::TrailingBytes { name: CommittedBlock::NAME, extra: 1 })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..600),
        version in prop_oneof![Just(1u8), any::<u8>()],
    ) {
        check_decode_of_any_input::<SignedTransaction>(&body)?;
        check_decode_of_any_input::<CommittedBlock>(&body)?;
        // Past the version byte, so that the postcard decoder sees the rest.
        let mut framed = vec![version];
        framed.extend_from_slice(&body);
        check_decode_of_any_input::<SignedTransaction>(&framed)?;
        check_decode_of_any_input::<CommittedBlock>(&framed)?;
    }

    #[test]
    fn damaged_transactions_never_panic(
        tx in transaction(),
        damages in prop::collection::vec(damage(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 4),
    ) {
        let bytes = encode(&tx);
        check_truncations::<SignedTransaction>(&bytes, &cuts)?;
        let mut damaged = bytes.clone();
        apply_damage(&mut damaged, &damages);
        check_decode_of_any_input::<SignedTransaction>(&damaged)?;
    }

    #[test]
    fn damaged_blocks_never_panic(
        block in committed_block(),
        damages in prop::collection::vec(damage(), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 4),
    ) {
        let bytes = encode(&block);
        check_truncations::<CommittedBlock>(&bytes, &cuts)?;
        let mut damaged = bytes.clone();
        apply_damage(&mut damaged, &damages);
        check_decode_of_any_input::<CommittedBlock>(&damaged)?;
    }

    #[test]
    fn unknown_versions_are_refused(tx in transaction(), version in any::<u8>()) {
        prop_assume!(version != SignedTransaction::VERSION);
        let mut bytes = encode(&tx);
        bytes[0] = version;
        prop_assert_eq!(
            decode::<SignedTransaction>(&bytes),
            Err(CodecError::UnknownVersion { name: SignedTransaction::NAME, found: version, supported: 1 })
        );
    }

    #[test]
    fn signatures_change_the_transaction_hash_not_the_payload_hash(
        tx in transaction(),
        extra in transaction_signature(),
        byte in 0usize..64,
        mask in 1u8..=255,
    ) {
        let payload_hash = tx.payload.hash();
        let tx_hash = tx.hash();

        let mut added = tx.clone();
        added.signatures.push(extra);
        prop_assert_eq!(added.payload.hash(), payload_hash);
        prop_assert_ne!(added.hash(), tx_hash);

        if !tx.signatures.is_empty() {
            let mut changed = tx.clone();
            changed.signatures[0].signature.0[byte] ^= mask;
            prop_assert_eq!(changed.payload.hash(), payload_hash);
            prop_assert_ne!(changed.hash(), tx_hash);

            let mut dropped = tx.clone();
            dropped.signatures.pop();
            prop_assert_eq!(dropped.payload.hash(), payload_hash);
            prop_assert_ne!(dropped.hash(), tx_hash);
        }

        // Any change to the payload changes both.
        let mut other = tx.clone();
        other.payload.nonce = other.payload.nonce.wrapping_add(1);
        prop_assert_ne!(other.payload.hash(), payload_hash);
        prop_assert_ne!(other.hash(), tx_hash);
    }

    #[test]
    fn tx_merkle_root_is_the_rfc6962_root_of_transaction_hashes(
        hashes in prop::collection::vec(hash(), 0..40),
    ) {
        let leaves: Vec<[u8; 32]> = hashes.iter().map(|hash| hash.0).collect();
        prop_assert_eq!(tx_merkle_root(&hashes), merkle::root::<Blake2bMerkle, _>(&leaves));
        if hashes.len() >= 2 && hashes[0] != hashes[1] {
            let mut swapped = hashes.clone();
            swapped.swap(0, 1);
            prop_assert_ne!(tx_merkle_root(&swapped), tx_merkle_root(&hashes));
        }
    }
}

fn sample_transaction(signers: &[&KeyPair]) -> SignedTransaction {
    let payload = TransactionPayload {
        chain: "codec-tests".parse().expect("valid name"),
        creator: "alice@wonderland".parse().expect("valid account"),
        instructions: vec![Instruction::Transfer {
            source: "coin#wonderland#alice@wonderland".parse().expect("valid asset"),
            destination: "bob@wonderland".parse().expect("valid account"),
            amount: 300,
        }],
        created_at_ms: 1_700_000_000_000,
        ttl_ms: 60_000,
        nonce: 7,
    };
    SignedTransaction::sign(payload, signers)
}

#[test]
fn real_signatures_cover_the_payload_hash_only() {
    let alice = KeyPair::derive(b"codec-tests", 0);
    let bob = KeyPair::derive(b"codec-tests", 1);
    let single = sample_transaction(&[&alice]);
    let double = sample_transaction(&[&alice, &bob]);
    assert_eq!(single.payload.hash(), double.payload.hash());
    assert_ne!(single.hash(), double.hash());
    // alice's signature is the same in both: it signs the payload hash, not the signature list.
    assert_eq!(single.signatures[0], double.signatures[0]);
    let message = signing_message(&single.payload.hash());
    let mut cache = KeyCache::new();
    for signature in &double.signatures {
        assert_eq!(
            crypto::verify_one(&mut cache, &signature.public_key, &message, &signature.signature),
            Ok(())
        );
    }
    assert_eq!(decode::<SignedTransaction>(&double.encode()), Ok(double));
}

#[test]
fn empty_and_oversized_inputs() {
    assert_eq!(
        decode::<SignedTransaction>(&[]),
        Err(CodecError::Empty {
            name: SignedTransaction::NAME
        })
    );
    assert_eq!(
        decode::<CommittedBlock>(&[]),
        Err(CodecError::Empty {
            name: CommittedBlock::NAME
        })
    );

    // The size is checked before anything else, even a valid version byte.
    let oversized = vec![SignedTransaction::VERSION; TRANSACTION_BYTES_MAX + 1];
    assert_eq!(
        decode::<SignedTransaction>(&oversized),
        Err(CodecError::TooLarge {
            name: SignedTransaction::NAME,
            bytes: TRANSACTION_BYTES_MAX + 1,
            limit: TRANSACTION_BYTES_MAX
        })
    );
    // At the limit the size check passes and the body is judged (here: a chain-name length
    // that is an endless varint).
    let mut at_limit = vec![0xff; TRANSACTION_BYTES_MAX];
    at_limit[0] = SignedTransaction::VERSION;
    assert!(matches!(
        decode::<SignedTransaction>(&at_limit),
        Err(CodecError::Malformed { .. })
    ));

    let oversized_block = vec![0u8; BLOCK_BYTES_MAX + 1];
    assert_eq!(
        decode::<CommittedBlock>(&oversized_block),
        Err(CodecError::TooLarge {
            name: CommittedBlock::NAME,
            bytes: BLOCK_BYTES_MAX + 1,
            limit: BLOCK_BYTES_MAX
        })
    );

    // A well-formed transaction that encodes to more than the limit is refused whole.
    let alice = KeyPair::derive(b"codec-tests", 0);
    let mut big = sample_transaction(&[&alice]);
    big.payload.instructions = (0..80)
        .map(|index| Instruction::SetKeyValue {
            target: MetadataTarget::Account(big.payload.creator.clone()),
            key: Name::new(&format!("key{index}")).expect("valid name"),
            value: "v".repeat(1000),
        })
        .collect();
    let bytes = encode(&big);
    assert!(bytes.len() > TRANSACTION_BYTES_MAX);
    assert!(matches!(
        decode::<SignedTransaction>(&bytes),
        Err(CodecError::TooLarge { .. })
    ));
    // The same transaction inside a block is within the block's limit and decodes.
    let block = CommittedBlock {
        block: Block {
            header: BlockHeader {
                height: 2,
                previous_hash: Hash::ZERO,
                view: 0,
                proposer: alice.public_key(),
                tx_merkle_root: tx_merkle_root(&[big.hash()]),
                state_commitment: Hash::ZERO,
                timestamp_ms: 0,
                view_change_proof: None,
            },
            transactions: vec![big],
        },
        certificate: Certificate {
            vote: Vote {
                kind: VoteKind::Commit,
                height: 2,
                view: 0,
                block_hash: Hash::ZERO,
            },
            signatures: vec![],
        },
    };
    assert_eq!(decode::<CommittedBlock>(&encode(&block)), Ok(block));
}

#[test]
fn non_canonical_varints_are_accepted_and_hash_is_canonical() {
    let mut tx = sample_transaction(&[]);
    tx.signatures.clear();
    let canonical = encode(&tx);
    // With no signatures the encoding ends with the signature count, one varint byte 0x00.
    assert_eq!(canonical.last(), Some(&0));
    let mut overlong = canonical.clone();
    overlong.pop();
    overlong.extend_from_slice(&[0x80, 0x00]);
    // postcard accepts the over-long form of 0 ...
    let decoded = decode::<SignedTransaction>(&overlong).expect("postcard accepts over-long varints");
    assert_eq!(decoded, tx);
    // ... so decoding is not injective on bytes, but the transaction hash is over the canonical
    // re-encoding, so both byte strings name the same transaction.
    assert_ne!(Hash::of(&overlong), tx.hash());
    assert_eq!(decoded.hash(), tx.hash());
    assert_eq!(encode(&decoded), canonical);
}

#[test]
fn names_are_checked_when_decoding() {
    let mut tx = sample_transaction(&[]);
    // "alice" -> "al ce": the creator name is on the wire as length-prefixed UTF-8.
    let bytes = encode(&tx);
    let at = bytes
        .windows(5)
        .position(|window| window == b"alice")
        .expect("the name is on the wire");
    let mut bad = bytes.clone();
    bad[at + 2] = b' ';
    assert!(matches!(
        decode::<SignedTransaction>(&bad),
        Err(CodecError::Malformed { .. })
    ));
    let mut fine = bytes.clone();
    fine[at + 2] = b'x';
    tx.payload.creator = "alxce@wonderland".parse().expect("valid account");
    assert_eq!(decode::<SignedTransaction>(&fine), Ok(tx));
}
