//! kasane's one signature validity rule: ZIP-215 (cofactored ed25519 verification), with public
//! keys of small order refused. Single checks and batch checks use the same equation, so a
//! signature gets the same verdict alone, in any batch, at admission, in a block, in strict init
//! and in the auditor (docs/PROTOCOL.md section 1, "One signature rule").
//!
//! The rule, for a public key encoding `A_bytes`, a message `M` and a signature `R_bytes || s`:
//! - `A_bytes` decodes to a curve point `A` (non-canonical encodings of the field element are
//!   accepted, as ZIP-215 says), and `A` is not of small order (kasane's addition: with such a
//!   key anybody can sign anything, so registering one is refused too);
//! - `R_bytes` decodes to a point `R` (non-canonical encodings accepted);
//! - `s` is a canonical scalar (`s < l`);
//! - with `k = SHA-512(R_bytes || A_bytes || M) mod l`, the cofactored equation
//!   `[8](R + [k]A - [s]B) = 0` holds.
//!
//! A batch checks `[8](sum z_i R_i + sum (z_i k_i) A_i - (sum z_i s_i) B) = 0` for 128-bit
//! coefficients `z_i`. If every item satisfies its own equation the batch equation holds for any
//! coefficients, because multiplying by the cofactor is linear; if one does not, the batch fails
//! except with probability about 2^-128, and the caller then checks one by one. The
//! coefficients are derived from a hash of the whole batch, so a batch's verdict does not depend
//! on any randomness of the verifier.

use std::cell::Cell;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha512};

use super::{PublicKey, Signature};

/// A public key decoded for verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedKey {
    point: EdwardsPoint,
    /// `-A`, for the single-signature equation.
    negated: EdwardsPoint,
}

/// Why a key fails the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDefect {
    NotAPoint,
    SmallOrder,
}

/// Decodes a public key under the rule.
pub fn decode_key(key: &PublicKey) -> Result<DecodedKey, KeyDefect> {
    let point = CompressedEdwardsY(key.0).decompress().ok_or(KeyDefect::NotAPoint)?;
    if point.is_small_order() {
        return Err(KeyDefect::SmallOrder);
    }
    Ok(DecodedKey { point, negated: -point })
}

/// The parts of a signature that decode: `R`, `s`, and the challenge `k`.
struct Parts {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

fn parts(key: &PublicKey, message: &[u8], signature: &Signature) -> Option<Parts> {
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&signature.0[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&signature.0[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let mut hasher = Sha512::new();
    hasher.update(r_bytes);
    hasher.update(key.0);
    hasher.update(message);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hasher.finalize());
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    Some(Parts { r, s, k })
}

/// Checks one signature with the cofactored equation.
pub fn verify_single(key: &PublicKey, decoded: &DecodedKey, message: &[u8], signature: &Signature) -> bool {
    if mock_signatures() {
        return *signature == mock_signature(key, message);
    }
    let Some(Parts { r, s, k }) = parts(key, message, signature) else {
        return false;
    };
    // sB - kA, then [8]((sB - kA) - R) must be the identity.
    let computed = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &decoded.negated, &s);
    (computed - r).mul_by_cofactor().is_identity()
}

/// One item of a batch under the rule.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    pub key: &'a PublicKey,
    pub decoded: &'a DecodedKey,
    pub message: &'a [u8],
    pub signature: &'a Signature,
}

/// Checks many signatures at once: true when the batch equation holds, which it does whenever
/// every item is valid. False means at least one item is invalid (with overwhelming probability);
/// the caller finds which one by checking one by one.
pub fn verify_batch_equation(items: &[BatchItem<'_>]) -> bool {
    if mock_signatures() {
        return items
            .iter()
            .all(|item| *item.signature == mock_signature(item.key, item.message));
    }
    let mut decoded = Vec::with_capacity(items.len());
    // The coefficients come from a hash of everything the batch checks: each item's s and its
    // challenge k, which is itself a hash of R, the key and the message.
    let mut seed = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    seed.update(b"kasane:batch-coefficients:v1");
    for item in items {
        let Some(parts) = parts(item.key, item.message, item.signature) else {
            return false;
        };
        seed.update(parts.k.as_bytes());
        seed.update(parts.s.as_bytes());
        decoded.push(parts);
    }
    let mut coefficients = rand_chacha::ChaCha12Rng::from_seed(seed.finalize().into());
    // One coefficient for B, one per R, one per distinct key: signatures by the same key share
    // its point (many transactions of one account in a block).
    let mut scalars: Vec<Scalar> = Vec::with_capacity(2 * items.len() + 1);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(2 * items.len() + 1);
    let mut basepoint = Scalar::ZERO;
    let mut key_slot: std::collections::HashMap<[u8; 32], usize, ahash::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(items.len(), ahash::RandomState::new());
    let mut key_scalars: Vec<Scalar> = Vec::new();
    let mut key_points: Vec<EdwardsPoint> = Vec::new();
    for (item, parts) in items.iter().zip(&decoded) {
        let mut z_bytes = [0u8; 32];
        coefficients.fill_bytes(&mut z_bytes[..16]);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        basepoint -= z * parts.s;
        scalars.push(z);
        points.push(parts.r);
        let slot = *key_slot.entry(item.key.0).or_insert_with(|| {
            key_scalars.push(Scalar::ZERO);
            key_points.push(item.decoded.point);
            key_points.len() - 1
        });
        key_scalars[slot] += z * parts.k;
    }
    scalars.push(basepoint);
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    scalars.extend(key_scalars);
    points.extend(key_points);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// A valid signature of `message` by `pair` whose R carries the order-8 torsion point
/// `EIGHT_TORSION[torsion]` (0 gives an ordinary signature): valid under this rule, refused by a
/// cofactorless one-by-one check, and accepted by cofactorless batches only for some batch
/// coefficients. For tests and the simulator, which must show every check gives it one verdict.
pub fn torsion_signature(pair: &super::KeyPair, message: &[u8], torsion: usize) -> Signature {
    let expanded = Sha512::digest(pair.secret_bytes());
    let mut half = [0u8; 32];
    half.copy_from_slice(&expanded[..32]);
    half[0] &= 248;
    half[31] &= 127;
    half[31] |= 64;
    let secret = Scalar::from_bytes_mod_order(half);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&Sha512::digest([&expanded[32..], message].concat()));
    let nonce = Scalar::from_bytes_mod_order_wide(&wide);
    let r = EdwardsPoint::mul_base(&nonce) + curve25519_dalek::constants::EIGHT_TORSION[torsion % 8];
    let r_bytes = r.compress().to_bytes();
    let mut hasher = Sha512::new();
    hasher.update(r_bytes);
    hasher.update(pair.public_key().0);
    hasher.update(message);
    wide.copy_from_slice(&hasher.finalize());
    let s = nonce + Scalar::from_bytes_mod_order_wide(&wide) * secret;
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&r_bytes);
    out[32..].copy_from_slice(s.as_bytes());
    Signature(out)
}

thread_local! {
    static MOCK_SIGNATURES: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread signs and verifies with mock signatures (see [`with_mock_signatures`]).
pub fn mock_signatures() -> bool {
    MOCK_SIGNATURES.with(Cell::get)
}

/// Runs `work` with mock signatures on this thread: a signature is then a keyed hash of the
/// public key and the message, which anybody can compute. It exists for the simulator only,
/// where ed25519 is nearly all of a run's cost and no simulated party forges by computing another
/// key's signature (Byzantine replicas sign with their own keys, and broken signatures are made
/// by flipping bits, which the mock check refuses like the real one). Never enable it where a
/// signature guards anything; nothing in the node does. The previous mode is restored on return,
/// also on a panic.
pub fn with_mock_signatures<T>(work: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            MOCK_SIGNATURES.with(|mock| mock.set(self.0));
        }
    }
    let _restore = Restore(MOCK_SIGNATURES.with(|mock| mock.replace(true)));
    work()
}

/// The mock signature of `message` by `key`.
pub(super) fn mock_signature(key: &PublicKey, message: &[u8]) -> Signature {
    let mut hasher = blake2::Blake2b512::new();
    hasher.update(b"kasane:mock-signature:v1");
    hasher.update(key.0);
    hasher.update(message);
    let mut out = [0u8; 64];
    out.copy_from_slice(&hasher.finalize());
    Signature(out)
}
