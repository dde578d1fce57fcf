//! blake2b-256, the one hash function of kasane.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use serde::{Deserialize, Serialize};

use crate::merkle::MerkleHasher;

/// The blake2b hasher with a 32-byte output.
pub type Blake2b256 = Blake2b<U32>;

/// Length of a hash in bytes.
pub const HASH_BYTES: usize = 32;

/// A blake2b-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hash(pub [u8; HASH_BYTES]);

impl Hash {
    /// The all-zero hash: the "previous block hash" of the genesis block.
    pub const ZERO: Hash = Hash([0; HASH_BYTES]);

    /// Hash of one byte string.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Blake2b256::digest(bytes).into())
    }

    /// Hash of the concatenation of several byte strings, without building the concatenation.
    pub fn of_parts(parts: &[&[u8]]) -> Hash {
        let mut hasher = Blake2b256::new();
        for part in parts {
            hasher.update(part);
        }
        Hash(hasher.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Hash, HexError> {
        let mut out = [0u8; HASH_BYTES];
        hex::decode_to_slice(text, &mut out).map_err(|_| HexError {
            expected_bytes: HASH_BYTES,
        })?;
        Ok(Hash(out))
    }
}

/// A hex string of the wrong length or with a non-hex character.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected_bytes} bytes as {} hex digits", expected_bytes * 2)]
pub struct HexError {
    pub expected_bytes: usize,
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The Merkle trees of kasane (transaction roots, plasma roots) use blake2b-256.
#[derive(Debug, Clone, Copy)]
pub struct Blake2bMerkle;

impl MerkleHasher for Blake2bMerkle {
    type Digest = Hash;

    fn hash_parts(parts: &[&[u8]]) -> Hash {
        Hash::of_parts(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let hash = Hash::of(b"kasane");
        assert_eq!(Hash::from_hex(&hash.to_hex()), Ok(hash));
        assert!(Hash::from_hex("00").is_err());
        assert!(Hash::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn parts_equal_concatenation() {
        assert_eq!(Hash::of_parts(&[b"ab", b"cd"]), Hash::of(b"abcd"));
        assert_ne!(Hash::of(b""), Hash::ZERO);
    }
}
