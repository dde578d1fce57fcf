//! ed25519 keys and signatures, and batch verification.
//!
//! Public keys and signatures travel as plain bytes; turning public-key bytes into a curve point
//! costs about 5 us, so verifiers keep a [`KeyCache`]. Signatures of many messages are checked
//! together with [`verify_batch`], which costs about a third of one-by-one verification and
//! falls back to one-by-one checks only to name the bad signature.
//!
//! Validity is one rule, [`rule`]: ZIP-215's cofactored equation, with small-order public keys
//! refused. [`verify_one`] and [`verify_batch`] apply the same equation, so no signature is valid
//! alone and invalid in a batch or the other way round, and every honest node reaches the same
//! verdict on a transaction whichever batch it happened to be checked in (docs/PROTOCOL.md
//! section 1). `tests/signature_rule.rs` holds the public edge-case vectors to that.

pub mod rule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::{CryptoRngCore, OsRng};
pub use rule::{with_mock_signatures, DecodedKey};
use serde::{Deserialize, Serialize};

use crate::hash::HexError;

pub const PUBLIC_KEY_BYTES: usize = 32;
pub const SIGNATURE_BYTES: usize = 64;

/// An ed25519 public key, as its 32 compressed bytes. Not checked until used.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_BYTES]);

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<PublicKey, HexError> {
        let mut out = [0u8; PUBLIC_KEY_BYTES];
        hex::decode_to_slice(text, &mut out).map_err(|_| HexError {
            expected_bytes: PUBLIC_KEY_BYTES,
        })?;
        Ok(PublicKey(out))
    }

    /// Checks the key under kasane's signature rule: a curve point, not of small order.
    pub fn check(&self) -> Result<(), SignatureError> {
        self.decode().map(|_| ())
    }

    /// Decodes the key under kasane's signature rule ([`rule`]).
    pub fn decode(&self) -> Result<DecodedKey, SignatureError> {
        rule::decode_key(self).map_err(|defect| match defect {
            rule::KeyDefect::NotAPoint => SignatureError::MalformedKey { key: *self },
            rule::KeyDefect::SmallOrder => SignatureError::WeakKey { key: *self },
        })
    }

    /// Decompresses the key for ed25519-dalek, refusing points that are not on the curve and weak
    /// keys (the transport's TLS handshake uses it; consensus validity uses [`PublicKey::decode`]).
    pub fn to_verifying_key(&self) -> Result<VerifyingKey, SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::MalformedKey { key: *self })?;
        if key.is_weak() {
            return Err(SignatureError::WeakKey { key: *self });
        }
        Ok(key)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An ed25519 signature, 64 bytes. Encoded as a fixed-size tuple (no length prefix).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_BYTES]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(SIGNATURE_BYTES)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignatureVisitor;
        impl<'de> serde::de::Visitor<'de> for SignatureVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "{SIGNATURE_BYTES} signature bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; SIGNATURE_BYTES];
                for (index, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(index, &self))?;
                }
                Ok(Signature(out))
            }
        }
        deserializer.deserialize_tuple(SIGNATURE_BYTES, SignatureVisitor)
    }
}

/// A signing key and its public key.
pub struct KeyPair {
    signing: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Clone for KeyPair {
    fn clone(&self) -> Self {
        KeyPair::from_secret(self.signing.to_bytes())
    }
}

impl KeyPair {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> KeyPair {
        KeyPair::generate_with(&mut OsRng)
    }

    /// A key from a caller's generator: deterministic tests and fixtures pass a seeded one.
    pub fn generate_with(rng: &mut impl CryptoRngCore) -> KeyPair {
        let signing = SigningKey::generate(rng);
        KeyPair::from_signing(signing)
    }

    /// A deterministic key for fixtures, tests and simulations: the secret is
    /// blake2b-256(label || index). Never use it for a key that guards anything.
    pub fn derive(label: &[u8], index: u64) -> KeyPair {
        KeyPair::from_secret(crate::hash::Hash::of_parts(&[label, &index.to_le_bytes()]).0)
    }

    pub fn from_secret(secret: [u8; 32]) -> KeyPair {
        KeyPair::from_signing(SigningKey::from_bytes(&secret))
    }

    fn from_signing(signing: SigningKey) -> KeyPair {
        let public = PublicKey(signing.verifying_key().to_bytes());
        KeyPair { signing, public }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        if rule::mock_signatures() {
            return rule::mock_signature(&self.public, message);
        }
        Signature(self.signing.sign(message).to_bytes())
    }
}

/// Why a signature or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("public key {key} is not a valid ed25519 point")]
    MalformedKey { key: PublicKey },
    #[error("public key {key} is a weak (small-order) key")]
    WeakKey { key: PublicKey },
    #[error("signature number {index} (by {key}) does not verify")]
    Invalid { index: usize, key: PublicKey },
    #[error("batch has {messages} messages, {signatures} signatures and {keys} keys")]
    LengthMismatch {
        messages: usize,
        signatures: usize,
        keys: usize,
    },
}

/// Most keys a [`KeyCache`] holds before it starts over; keeps memory bounded on hostile input.
pub const KEY_CACHE_ENTRIES_MAX: usize = 1 << 20;

/// Most verified signatures a [`KeyCache`] remembers before it starts over (about 90 MiB at
/// most: an entry keeps the signature, the key and the message, or a digest of a long message).
pub const VERIFIED_ENTRIES_MAX: usize = 1 << 19;

/// Messages up to this many bytes are remembered as they are; longer ones by their digest.
const SHORT_MESSAGE_BYTES_MAX: usize = 72;

/// Remembers decompressed verifying keys (and refusals) by their bytes, and which signatures
/// already verified, so a node checks each signature once: a transaction verified at admission
/// or on gossip is not verified again when its block is validated.
///
/// A `KeyCache` is a handle: clones share one memory, behind locks taken once per batch, so the
/// threads of a node that verify in parallel (the API's, the network's, the consensus task's)
/// see each other's work. Each memory is bounded in two generations: when the current one is
/// full it becomes the previous one and the one before is forgotten.
#[derive(Debug, Default, Clone)]
pub struct KeyCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    /// Bounds of the two memories, in entries ([`KEY_CACHE_ENTRIES_MAX`] and
    /// [`VERIFIED_ENTRIES_MAX`] unless [`KeyCache::with_limits`] says otherwise).
    keys_max: usize,
    verified_max: usize,
    keys: Mutex<Generations<PublicKey, Result<DecodedKey, SignatureError>>>,
    /// Every signature that verified, by its bytes, with the key and message it verified for.
    /// A lookup compares key and message exactly, so no hashing is needed to find a hit.
    verified: Mutex<Generations<[u8; 64], Checked>>,
}

impl Default for CacheInner {
    fn default() -> CacheInner {
        CacheInner {
            keys_max: KEY_CACHE_ENTRIES_MAX,
            verified_max: VERIFIED_ENTRIES_MAX,
            keys: Mutex::default(),
            verified: Mutex::default(),
        }
    }
}

/// The key and message one signature verified for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checked {
    key: PublicKey,
    message: MessageKey,
}

/// A message as the verified-signature memory keeps it: short messages (every message kasane
/// signs) as they are, longer ones as a blake2b digest. The two never compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKey {
    Short {
        len: u8,
        bytes: [u8; SHORT_MESSAGE_BYTES_MAX],
    },
    Long([u8; 32]),
}

impl MessageKey {
    fn of(message: &[u8]) -> MessageKey {
        if message.len() <= SHORT_MESSAGE_BYTES_MAX {
            let mut bytes = [0u8; SHORT_MESSAGE_BYTES_MAX];
            bytes[..message.len()].copy_from_slice(message);
            MessageKey::Short {
                len: message.len() as u8,
                bytes,
            }
        } else {
            MessageKey::Long(crate::hash::Hash::of_parts(&[b"kasane:verified:v2", message]).0)
        }
    }
}

/// The identity of one signature check: which signature, and the key and message it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Check {
    signature: [u8; 64],
    checked: Checked,
}

impl Check {
    fn of(key: &PublicKey, message: &[u8], signature: &Signature) -> Check {
        Check {
            signature: signature.0,
            checked: Checked {
                key: *key,
                message: MessageKey::of(message),
            },
        }
    }
}

/// A map bounded by forgetting the older half of its entries at a time. It hashes with ahash
/// (keyed randomly per process, so a peer cannot aim collisions at it): every transaction
/// signature is looked up here, and SipHash over a 64-byte key was a visible share of a node's
/// CPU at high rates (docs/BENCHMARKS.md).
#[derive(Debug)]
struct Generations<K, V> {
    current: HashMap<K, V, ahash::RandomState>,
    previous: HashMap<K, V, ahash::RandomState>,
}

impl<K, V> Default for Generations<K, V> {
    fn default() -> Self {
        Generations {
            current: HashMap::default(),
            previous: HashMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Generations<K, V> {
    /// Generations whose first is allocated for `per_generation` entries at once.
    fn with_capacity(per_generation: usize) -> Self {
        Generations {
            current: HashMap::with_capacity_and_hasher(per_generation, ahash::RandomState::default()),
            previous: HashMap::default(),
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    fn insert(&mut self, key: K, value: V, limit: usize) {
        let half = (limit / 2).max(1);
        if self.current.len() >= half {
            // The emptied table keeps its allocation, so the next generation fills it without
            // growing (and rehashing) through every size again. The table that comes back may
            // be smaller (none at all after the first generation): it is grown once, now,
            // empty. Growing while it filled rehashed the whole generation under the lock
            // every verifier and the consensus task share, a stall of the whole cluster 17 and
            // 37 s into a run at 13,000 tx/s (docs/BENCHMARKS.md).
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.clear();
            self.current.reserve(half);
        }
        self.current.insert(key, value);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    fn footprint(&self) -> usize {
        crate::footprint::map_bytes(&self.current) + crate::footprint::map_bytes(&self.previous)
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data is a cache: if a thread panicked while holding it, its contents are still sound.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KeyCache {
    pub fn new() -> KeyCache {
        KeyCache::default()
    }

    /// A cache that holds at most `keys_max` decoded keys and `verified_max` verified
    /// signatures (each at least 2). A smaller signature memory costs CPU: a signature it forgot
    /// between admission and its block is verified again.
    pub fn with_limits(keys_max: usize, verified_max: usize) -> KeyCache {
        KeyCache {
            inner: Arc::new(CacheInner {
                keys_max: keys_max.max(2),
                verified_max: verified_max.max(2),
                // A node's cache: its first generation is allocated whole, like the others, so
                // that it never grows under load (memory is touched only as it fills).
                verified: Mutex::new(Generations::with_capacity(verified_max.max(2) / 2)),
                ..CacheInner::default()
            }),
        }
    }

    pub fn get(&mut self, key: &PublicKey) -> Result<DecodedKey, SignatureError> {
        if let Some(found) = locked(&self.inner.keys).get(key) {
            return found.clone();
        }
        let decoded = key.decode();
        locked(&self.inner.keys).insert(*key, decoded.clone(), self.inner.keys_max);
        decoded
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        locked(&self.inner.keys).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets which signatures verified, keeping the decompressed keys (for benchmarks that
    /// measure verification with a warm key cache).
    pub fn forget_verified(&self) {
        *locked(&self.inner.verified) = Generations::default();
    }

    /// Bytes of the decoded keys' and the verified signatures' tables (estimate,
    /// [`crate::footprint`]).
    pub fn footprint(&self) -> [(&'static str, usize); 2] {
        [
            ("keys", locked(&self.inner.keys).footprint()),
            ("verified_signatures", locked(&self.inner.verified).footprint()),
        ]
    }

    /// Signatures remembered as verified.
    pub fn verified_len(&self) -> usize {
        locked(&self.inner.verified).len()
    }

    fn is_verified(&self, check: &Check) -> bool {
        locked(&self.inner.verified).get(&check.signature) == Some(&check.checked)
    }

    /// Which of `checks` are not yet known as verified, by index.
    fn unverified(&self, checks: &[Check]) -> Vec<usize> {
        let verified = locked(&self.inner.verified);
        (0..checks.len())
            .filter(|index| verified.get(&checks[*index].signature) != Some(&checks[*index].checked))
            .collect()
    }

    fn remember_verified<'a>(&mut self, checks: impl IntoIterator<Item = &'a Check>) {
        let mut verified = locked(&self.inner.verified);
        for check in checks {
            verified.insert(check.signature, check.checked, self.inner.verified_max);
        }
    }
}

/// Checks one signature under kasane's rule ([`rule`]).
pub fn verify_one(
    cache: &mut KeyCache,
    key: &PublicKey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    let check = Check::of(key, message, signature);
    if cache.is_verified(&check) {
        return Ok(());
    }
    let decoded = cache.get(key)?;
    if !rule::verify_single(key, &decoded, message, signature) {
        return Err(SignatureError::Invalid { index: 0, key: *key });
    }
    cache.remember_verified([&check]);
    Ok(())
}

/// One item of a batch: who signed what.
#[derive(Debug, Clone, Copy)]
pub struct SignedMessage<'a> {
    pub key: &'a PublicKey,
    pub message: &'a [u8],
    pub signature: &'a Signature,
}

/// Verifies many signatures at once, under the same rule as [`verify_one`]. On failure the error
/// names the first bad item (by index in `items`), found by checking one by one; a batch that
/// passes costs no more than the batch.
pub fn verify_batch(cache: &mut KeyCache, items: &[SignedMessage<'_>]) -> Result<(), SignatureError> {
    if items.is_empty() {
        return Ok(());
    }
    // Signatures this cache already verified are skipped; the rest are checked together.
    let checks: Vec<Check> = items
        .iter()
        .map(|item| Check::of(item.key, item.message, item.signature))
        .collect();
    let pending = cache.unverified(&checks);
    if pending.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(pending.len());
    for &index in &pending {
        let key = items[index].key;
        keys.push(
            cache
                .get(key)
                .map_err(|_| SignatureError::Invalid { index, key: *key })?,
        );
    }
    let batch: Vec<rule::BatchItem> = pending
        .iter()
        .zip(&keys)
        .map(|(&index, decoded)| rule::BatchItem {
            key: items[index].key,
            decoded,
            message: items[index].message,
            signature: items[index].signature,
        })
        .collect();
    if !rule::verify_batch_equation(&batch) {
        // Some item is bad: name the first, one by one under the same rule. Should every item
        // pass alone, the batch is accepted: both equations are the cofactored one, so that
        // only happens with the negligible chance that the coefficients met a bad combination
        // of valid items, which cannot be.
        for (&index, item) in pending.iter().zip(&batch) {
            if !rule::verify_single(item.key, item.decoded, item.message, item.signature) {
                return Err(SignatureError::Invalid { index, key: *item.key });
            }
        }
    }
    cache.remember_verified(pending.iter().map(|index| &checks[*index]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(count: usize) -> Vec<KeyPair> {
        (0..count as u64)
            .map(|index| KeyPair::derive(b"crypto-tests", index))
            .collect()
    }

    #[test]
    fn clones_share_what_verified_and_memory_is_bounded() {
        let pairs = keys(2);
        let signature = pairs[0].sign(b"shared");
        let mut worker = KeyCache::new();
        let main = worker.clone();
        let check = Check::of(&pairs[0].public_key(), b"shared", &signature);
        assert!(!main.is_verified(&check));
        assert!(verify_one(&mut worker, &pairs[0].public_key(), b"shared", &signature).is_ok());
        assert!(main.is_verified(&check));
        assert!(!KeyCache::new().is_verified(&check));
        // The same signature bytes presented with another message or key are not a hit.
        assert!(!main.is_verified(&Check::of(&pairs[0].public_key(), b"sharee", &signature)));
        assert!(!main.is_verified(&Check::of(&pairs[1].public_key(), b"shared", &signature)));
        let long = vec![7u8; SHORT_MESSAGE_BYTES_MAX + 1];
        let long_signature = pairs[0].sign(&long);
        assert!(verify_one(&mut worker, &pairs[0].public_key(), &long, &long_signature).is_ok());
        assert!(main.is_verified(&Check::of(&pairs[0].public_key(), &long, &long_signature)));
        let mut other = long.clone();
        other[SHORT_MESSAGE_BYTES_MAX] = 8;
        assert!(!main.is_verified(&Check::of(&pairs[0].public_key(), &other, &long_signature)));

        let mut generations = Generations::default();
        for value in 0..10u32 {
            generations.insert(value, (), 4);
        }
        assert!(generations.len() <= 4);
        assert!(generations.get(&9).is_some() && generations.get(&8).is_some());
        assert!(generations.get(&0).is_none());
    }

    /// A generation never grows (and rehashes) while it fills: under load the rehash of a
    /// quarter-million signatures, under the lock every verifier shares, stalled the cluster.
    #[test]
    fn a_generation_is_allocated_whole_when_it_starts() {
        let mut generations: Generations<u64, ()> = Generations::default();
        for key in 0..=1000u64 {
            generations.insert(key, (), 2000);
        }
        // Key 1000 started the second generation, in the table that came back empty.
        let capacity = generations.current.capacity();
        assert!(capacity >= 1000, "{capacity}");
        for key in 1001..2000u64 {
            generations.insert(key, (), 2000);
        }
        assert_eq!(generations.current.len(), 1000);
        assert_eq!(
            generations.current.capacity(),
            capacity,
            "the generation grew while it filled"
        );
        // A node's cache allocates its first generation whole too.
        let cache = KeyCache::with_limits(4, 2000);
        assert!(locked(&cache.inner.verified).current.capacity() >= 1000);
    }

    #[test]
    fn a_cache_with_limits_keeps_within_them() {
        let pairs = keys(12);
        let mut cache = KeyCache::with_limits(4, 6);
        for (index, pair) in pairs.iter().enumerate() {
            let message = [index as u8];
            let signature = pair.sign(&message);
            assert!(verify_one(&mut cache, &pair.public_key(), &message, &signature).is_ok());
            assert!(cache.len() <= 4 && cache.verified_len() <= 6, "after {index}");
        }
        // The newest stays remembered, the oldest is gone.
        let last = &pairs[11];
        assert!(cache.is_verified(&Check::of(&last.public_key(), &[11], &last.sign(&[11]))));
        let first = &pairs[0];
        assert!(!cache.is_verified(&Check::of(&first.public_key(), &[0], &first.sign(&[0]))));
    }

    #[test]
    fn sign_and_verify() {
        let pairs = keys(3);
        let mut cache = KeyCache::new();
        let signature = pairs[0].sign(b"hello");
        assert!(verify_one(&mut cache, &pairs[0].public_key(), b"hello", &signature).is_ok());
        assert!(verify_one(&mut cache, &pairs[1].public_key(), b"hello", &signature).is_err());
        assert!(verify_one(&mut cache, &pairs[0].public_key(), b"hellp", &signature).is_err());
    }

    #[test]
    fn batch_names_the_bad_item() {
        let pairs = keys(8);
        let messages: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 10]).collect();
        let mut signatures: Vec<Signature> = pairs
            .iter()
            .zip(&messages)
            .map(|(pair, message)| pair.sign(message))
            .collect();
        let publics: Vec<PublicKey> = pairs.iter().map(KeyPair::public_key).collect();
        let mut cache = KeyCache::new();
        let check = |cache: &mut KeyCache, signatures: &[Signature]| {
            let batch: Vec<SignedMessage> = (0..8)
                .map(|i| SignedMessage {
                    key: &publics[i],
                    message: &messages[i],
                    signature: &signatures[i],
                })
                .collect();
            verify_batch(cache, &batch)
        };
        assert_eq!(check(&mut cache, &signatures), Ok(()));
        signatures[5].0[3] ^= 1;
        assert_eq!(
            check(&mut cache, &signatures),
            Err(SignatureError::Invalid {
                index: 5,
                key: publics[5]
            })
        );
    }

    #[test]
    fn verified_signatures_are_remembered_but_never_a_different_one() {
        let pair = keys(1).remove(0);
        let key = pair.public_key();
        let signature = pair.sign(b"m");
        let mut cache = KeyCache::new();
        assert!(verify_one(&mut cache, &key, b"m", &signature).is_ok());
        // Same key and signature over another message, or a changed signature: still refused.
        assert!(verify_one(&mut cache, &key, b"n", &signature).is_err());
        let mut changed = signature;
        changed.0[9] ^= 1;
        assert!(verify_one(&mut cache, &key, b"m", &changed).is_err());
        let other = keys(2).remove(1).public_key();
        assert!(verify_one(&mut cache, &other, b"m", &signature).is_err());
        // A batch mixing a remembered signature and a bad new one names the bad one.
        let items = [
            SignedMessage {
                key: &key,
                message: b"m",
                signature: &signature,
            },
            SignedMessage {
                key: &key,
                message: b"m",
                signature: &changed,
            },
        ];
        assert_eq!(
            verify_batch(&mut cache, &items),
            Err(SignatureError::Invalid { index: 1, key })
        );
    }

    #[test]
    fn weak_and_malformed_keys_are_refused() {
        // The identity point (y = 1) is a small-order point: a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            PublicKey(identity).decode(),
            Err(SignatureError::WeakKey { .. })
        ));
        // y = 2 is not the y-coordinate of a curve point.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(PublicKey(off_curve).decode().is_err());
    }

    #[test]
    fn signature_encodes_as_64_bytes() {
        let signature = keys(1)[0].sign(b"x");
        let bytes = postcard::to_stdvec(&signature).expect("encode");
        assert_eq!(bytes.len(), SIGNATURE_BYTES);
        let back: Signature = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, signature);
    }
}
