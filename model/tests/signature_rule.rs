//! One signature rule everywhere (docs/PROTOCOL.md section 1): every edge-case vector gets the
//! same verdict checked alone, in a batch by itself, and in batches mixed with valid signatures
//! of other keys at every position. The vectors are the twelve public cases of "Taming the many
//! EdDSAs" (Chalkias, Garillot, Nikolaenko 2020; novifinancial/ed25519-speccheck, cases.json),
//! and signatures built here with torsion components in `R` and in the key.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use kasane_model::crypto::{verify_batch, verify_one, KeyCache, KeyPair, PublicKey, Signature, SignedMessage};
use sha2::{Digest, Sha512};

/// (message, public key, signature, valid under kasane's rule, what the case exercises).
/// Verdicts: ZIP-215's cofactored equation, except that small-order keys (cases 0, 1, 10, 11)
/// are refused.
const SPECCHECK: [(&str, &str, &str, bool, &str); 12] = [
    (
        "8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a0000000000000000000000000000000000000000000000000000000000000000",
        false,
        "0: small A and R, s = 0 (small-order key refused)",
    ),
    (
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        false,
        "1: small A, mixed R (small-order key refused)",
    ),
    (
        "aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e",
        true,
        "2: mixed A, small R",
    ),
    (
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009",
        true,
        "3: mixed A and R, valid both ways",
    ),
    (
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed5125ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09",
        true,
        "4: mixed A and R, valid only cofactored",
    ),
    (
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405",
        true,
        "5: mixed A, prime-order R, valid only cofactored without pre-reduction",
    ),
    (
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514",
        false,
        "6: s > l",
    ),
    (
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa19427e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22",
        false,
        "7: s much greater than l",
    ),
    (
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f",
        false,
        "8: non-canonical R, challenge hashed over the reduced R",
    ),
    (
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908",
        true,
        "9: non-canonical R, challenge hashed over R as sent",
    ),
    (
        "e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        false,
        "10: non-canonical small A (small-order key refused)",
    ),
    (
        "39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        false,
        "11: non-canonical small A (small-order key refused)",
    ),
];

/// One vector: who signed what, the verdict the rule gives, and what it exercises.
#[derive(Debug, Clone)]
struct Vector {
    key: PublicKey,
    message: Vec<u8>,
    signature: Signature,
    valid: bool,
    name: String,
}

fn bytes<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).expect("hex of the right length");
    out
}

fn speccheck() -> Vec<Vector> {
    SPECCHECK
        .iter()
        .map(|(message, key, signature, valid, name)| Vector {
            key: PublicKey(bytes(key)),
            message: hex::decode(message).expect("hex"),
            signature: Signature(bytes(signature)),
            valid: *valid,
            name: format!("speccheck {name}"),
        })
        .collect()
}

/// A signature by hand: secret scalar `a`, nonce `r`, with `key_torsion` added to the public key
/// and `r_torsion` to R. The cofactored equation ignores both; the cofactorless one (which
/// batch verification in other libraries used) sees them.
fn crafted(seed: u64, key_torsion: usize, r_torsion: usize, message: &[u8]) -> (PublicKey, Signature) {
    let scalar = |label: &[u8]| {
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&Sha512::digest([label, &seed.to_le_bytes()].concat()));
        Scalar::from_bytes_mod_order_wide(&wide)
    };
    let a = scalar(b"secret");
    let r = scalar(b"nonce");
    let public: EdwardsPoint = ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[key_torsion];
    let big_r: EdwardsPoint = ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[r_torsion];
    let key_bytes = public.compress().to_bytes();
    let r_bytes = big_r.compress().to_bytes();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&Sha512::digest([&r_bytes[..], &key_bytes[..], message].concat()));
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    let s = r + k * a;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&r_bytes);
    signature[32..].copy_from_slice(s.as_bytes());
    (PublicKey(key_bytes), Signature(signature))
}

fn crafted_vectors() -> Vec<Vector> {
    let mut vectors = Vec::new();
    for (seed, key_torsion, r_torsion) in [(1u64, 0, 1), (2, 0, 4), (3, 1, 0), (4, 3, 5), (5, 2, 2), (6, 7, 3)] {
        let message = format!("crafted message {seed}").into_bytes();
        let (key, signature) = crafted(seed, key_torsion, r_torsion, &message);
        vectors.push(Vector {
            key,
            message: message.clone(),
            signature,
            valid: true,
            name: format!("crafted key torsion {key_torsion}, R torsion {r_torsion}"),
        });
        // The same signature over another message, and with s off by one: invalid everywhere.
        vectors.push(Vector {
            key,
            message: [message.as_slice(), b"!"].concat(),
            signature,
            valid: false,
            name: format!("crafted key torsion {key_torsion}, R torsion {r_torsion}, other message"),
        });
        let mut changed = signature;
        changed.0[40] ^= 1;
        vectors.push(Vector {
            key,
            message,
            signature: changed,
            valid: false,
            name: format!("crafted key torsion {key_torsion}, R torsion {r_torsion}, changed s"),
        });
    }
    vectors
}

/// Valid signatures of ordinary keys, to mix with a vector in batches.
fn partners(count: usize, salt: u64) -> Vec<(PublicKey, Vec<u8>, Signature)> {
    (0..count as u64)
        .map(|index| {
            let pair = KeyPair::derive(b"signature-rule-partner", salt * 100 + index);
            let message = format!("partner {salt} {index}").into_bytes();
            let signature = pair.sign(&message);
            (pair.public_key(), message, signature)
        })
        .collect()
}

/// The verdict of a batch holding `vector` at `position` among `partners`.
fn batch_verdict(vector: &Vector, partners: &[(PublicKey, Vec<u8>, Signature)], position: usize) -> Result<(), usize> {
    let mut items: Vec<SignedMessage> = partners
        .iter()
        .map(|(key, message, signature)| SignedMessage {
            key,
            message,
            signature,
        })
        .collect();
    items.insert(
        position,
        SignedMessage {
            key: &vector.key,
            message: &vector.message,
            signature: &vector.signature,
        },
    );
    // A fresh cache each time: nothing is remembered from an earlier check.
    verify_batch(&mut KeyCache::new(), &items).map_err(|error| match error {
        kasane_model::crypto::SignatureError::Invalid { index, .. } => index,
        _ => usize::MAX,
    })
}

#[test]
fn every_vector_gets_one_verdict_alone_and_in_every_batch() {
    let vectors: Vec<Vector> = speccheck().into_iter().chain(crafted_vectors()).collect();
    assert_eq!(vectors.iter().filter(|vector| vector.valid).count(), 5 + 6);
    for vector in &vectors {
        let single = verify_one(&mut KeyCache::new(), &vector.key, &vector.message, &vector.signature).is_ok();
        assert_eq!(single, vector.valid, "{}: alone", vector.name);
        assert_eq!(
            batch_verdict(vector, &[], 0).is_ok(),
            vector.valid,
            "{}: in a batch by itself",
            vector.name
        );
        for (salt, size) in [(1u64, 1usize), (2, 2), (3, 7), (4, 63)] {
            let partners = partners(size, salt);
            for position in [0, size / 2, size] {
                let verdict = batch_verdict(vector, &partners, position);
                if vector.valid {
                    assert_eq!(verdict, Ok(()), "{}: batch of {} at {position}", vector.name, size + 1);
                } else {
                    assert_eq!(
                        verdict,
                        Err(position),
                        "{}: batch of {} at {position} must name it",
                        vector.name,
                        size + 1
                    );
                }
            }
        }
    }
}

#[test]
fn a_remembered_verdict_is_the_verdict() {
    // The cache remembers only what verified; an invalid vector stays invalid after a valid
    // signature by the same key was remembered.
    for vector in crafted_vectors() {
        let mut cache = KeyCache::new();
        let first = verify_one(&mut cache, &vector.key, &vector.message, &vector.signature).is_ok();
        let again = verify_one(&mut cache, &vector.key, &vector.message, &vector.signature).is_ok();
        assert_eq!((first, again), (vector.valid, vector.valid), "{}", vector.name);
    }
}

#[test]
fn small_order_keys_are_refused_and_honest_keys_sign() {
    for (index, torsion) in EIGHT_TORSION.iter().enumerate() {
        let key = PublicKey(torsion.compress().to_bytes());
        assert!(key.check().is_err(), "torsion point {index} accepted as a key");
    }
    let pair = KeyPair::derive(b"signature-rule", 0);
    assert!(pair.public_key().check().is_ok());
    let signature = pair.sign(b"message");
    assert!(verify_one(&mut KeyCache::new(), &pair.public_key(), b"message", &signature).is_ok());
}

#[test]
fn mock_signatures_are_checked_like_real_ones() {
    let pair = KeyPair::derive(b"signature-rule", 1);
    let real = pair.sign(b"m");
    kasane_model::crypto::with_mock_signatures(|| {
        let mock = pair.sign(b"m");
        assert_ne!(mock, real);
        let mut cache = KeyCache::new();
        assert!(verify_one(&mut cache, &pair.public_key(), b"m", &mock).is_ok());
        assert!(verify_one(&mut cache, &pair.public_key(), b"n", &mock).is_err());
        let mut flipped = mock;
        flipped.0[7] ^= 1;
        assert!(verify_one(&mut cache, &pair.public_key(), b"m", &flipped).is_err());
        assert!(verify_one(&mut KeyCache::new(), &pair.public_key(), b"m", &real).is_err());
    });
    // Back to real signatures afterwards.
    assert!(verify_one(&mut KeyCache::new(), &pair.public_key(), b"m", &real).is_ok());
    assert_eq!(pair.sign(b"m"), real);
}

#[test]
fn the_vectors_separate_the_rules() {
    // What makes these vectors edge cases: the cofactorless strict check of ed25519-dalek, the
    // one-by-one rule kasane used before, refuses valid ones (speccheck 2 and 4, every crafted
    // one with a torsion component in R), while batches with the cofactorless equation accepted
    // some of them, depending on their random coefficients.
    let strict = |vector: &Vector| {
        ed25519_dalek::VerifyingKey::from_bytes(&vector.key.0)
            .and_then(|key| {
                key.verify_strict(
                    &vector.message,
                    &ed25519_dalek::Signature::from_bytes(&vector.signature.0),
                )
            })
            .is_ok()
    };
    let vectors = speccheck();
    assert!(vectors[2].valid && !strict(&vectors[2]));
    assert!(vectors[4].valid && !strict(&vectors[4]));
    let with_torsion_in_r: Vec<Vector> = crafted_vectors()
        .into_iter()
        .filter(|vector| vector.valid && !vector.name.contains("R torsion 0"))
        .collect();
    assert_eq!(with_torsion_in_r.len(), 5);
    assert!(with_torsion_in_r.iter().all(|vector| !strict(vector)));
    // The helper tests and the simulator sign edge cases with does the same for a real key pair.
    let pair = KeyPair::derive(b"signature-rule", 2);
    for torsion in 1..8 {
        let signature = kasane_model::crypto::rule::torsion_signature(&pair, b"edge", torsion);
        let vector = Vector {
            key: pair.public_key(),
            message: b"edge".to_vec(),
            signature,
            valid: true,
            name: format!("torsion_signature({torsion})"),
        };
        assert!(verify_one(&mut KeyCache::new(), &vector.key, &vector.message, &signature).is_ok());
        assert!(!strict(&vector), "{}", vector.name);
        assert_eq!(batch_verdict(&vector, &partners(3, 9), 1), Ok(()));
    }
    assert_eq!(
        kasane_model::crypto::rule::torsion_signature(&pair, b"edge", 0),
        pair.sign(b"edge"),
        "no torsion is the ordinary signature"
    );
}
