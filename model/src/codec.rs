//! The versioned binary codec: one version byte, then the postcard encoding.
//!
//! Every top-level structure that crosses a process boundary (a transaction, a block, a p2p
//! message, an API body, a Kura record) implements [`Versioned`]. Decoding checks the size limit
//! before reading anything, then the version byte, then that postcard consumed every byte. Any
//! input, however hostile, gives a [`CodecError`], never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A structure framed behind a version byte.
pub trait Versioned: Serialize + DeserializeOwned {
    /// Human name used in errors ("transaction", "block", ...).
    const NAME: &'static str;
    /// The version this build writes and reads.
    const VERSION: u8;
    /// Largest encoding (version byte included) this build accepts.
    const ENCODED_BYTES_MAX: usize;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{name}: empty input")]
    Empty { name: &'static str },
    #[error("{name}: {bytes} bytes is over the limit of {limit}")]
    TooLarge {
        name: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("{name}: unknown version {found} (this build reads version {supported})")]
    UnknownVersion {
        name: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("{name}: malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
    #[error("{name}: {extra} unexpected bytes after the value")]
    TrailingBytes { name: &'static str, extra: usize },
}

/// Encodes `value` behind its version byte.
pub fn encode<T: Versioned>(value: &T) -> Vec<u8> {
    let mut out = vec![T::VERSION];
    encode_body_into(value, &mut out);
    out
}

/// Appends the postcard encoding of any value (without a version byte) to `out`.
pub fn encode_body_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Serialising our own in-memory values into a Vec cannot fail: every type in the model
    // serialises to postcard's data model and a Vec grows as needed.
    let result = postcard::to_io(value, &mut *out);
    assert!(result.is_ok(), "postcard serialisation into a Vec failed");
}

/// The postcard encoding of any value, without a version byte.
pub fn encode_body<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_body_into(value, &mut out);
    out
}

/// Decodes a versioned value, refusing oversized input, unknown versions and trailing bytes.
pub fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > T::ENCODED_BYTES_MAX {
        return Err(CodecError::TooLarge {
            name: T::NAME,
            bytes: bytes.len(),
            limit: T::ENCODED_BYTES_MAX,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty { name: T::NAME })?;
    if version != T::VERSION {
        return Err(CodecError::UnknownVersion {
            name: T::NAME,
            found: version,
            supported: T::VERSION,
        });
    }
    decode_body(T::NAME, body)
}

/// Decodes an unversioned postcard body that must use every byte.
pub fn decode_body<T: DeserializeOwned>(name: &'static str, body: &[u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|error| CodecError::Malformed {
        name,
        reason: error.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes {
            name,
            extra: rest.len(),
        });
    }
    Ok(value)
}

/// `#[serde(with = "kasane_model::codec::bytes")]` for a `Vec<u8>` field: the same postcard
/// encoding as the default (a length, then the bytes), written and read as one slice instead
/// of one `u8` at a time through serde's sequence machinery, which for a 512-byte opaque payload
/// cost more than the rest of the transaction.
pub mod bytes {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        /// Self-describing formats (JSON) write bytes as a sequence of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The hint is the sender's; the vector grows with what actually arrives.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u32,
        b: String,
    }

    impl Versioned for Sample {
        const NAME: &'static str = "sample";
        const VERSION: u8 = 3;
        const ENCODED_BYTES_MAX: usize = 64;
    }

    #[test]
    fn round_trip_and_errors() {
        let sample = Sample { a: 7, b: "x".into() };
        let bytes = encode(&sample);
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<Sample>(&bytes), Ok(sample));
        assert_eq!(decode::<Sample>(&[]), Err(CodecError::Empty { name: "sample" }));
        let mut wrong = bytes.clone();
        wrong[0] = 4;
        assert!(matches!(
            decode::<Sample>(&wrong),
            Err(CodecError::UnknownVersion { found: 4, .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<Sample>(&long),
            Err(CodecError::TrailingBytes { extra: 1, .. })
        ));
        assert!(matches!(decode::<Sample>(&[3u8; 65]), Err(CodecError::TooLarge { .. })));
        assert!(matches!(
            decode::<Sample>(&bytes[..2]),
            Err(CodecError::Malformed { .. })
        ));
    }

    #[test]
    fn bytes_encode_like_a_sequence_of_u8_and_read_back_from_either() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Slice(#[serde(with = "super::bytes")] Vec<u8>);
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Sequence(Vec<u8>);
        let data: Vec<u8> = (0..=255).chain(0..44).collect();
        let slice = postcard::to_allocvec(&Slice(data.clone())).expect("encodes");
        assert_eq!(slice, postcard::to_allocvec(&Sequence(data.clone())).expect("encodes"));
        assert_eq!(postcard::from_bytes::<Slice>(&slice).expect("decodes").0, data);
        let json = serde_json::to_string(&Slice(data.clone())).expect("encodes");
        assert_eq!(json, serde_json::to_string(&Sequence(data.clone())).expect("encodes"));
        assert_eq!(serde_json::from_str::<Slice>(&json).expect("decodes").0, data);
        // Truncated: a clear error, not a panic.
        assert!(postcard::from_bytes::<Slice>(&slice[..100]).is_err());
    }
}
