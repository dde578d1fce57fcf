//! The byte layout of docs/KURA-FORMAT.md, as named constants and pure encode/parse functions.

use kasane_model::block::BLOCK_BYTES_MAX;
use kasane_model::Hash;

pub const FORMAT_VERSION: u16 = 1;
pub const BLOCKS_PER_CHUNK_DEFAULT: u32 = 100;

pub const CHUNK_MAGIC: [u8; 8] = *b"KASANEKC";
pub const CHUNK_MAGIC_OFFSET: usize = 0;
pub const CHUNK_VERSION_OFFSET: usize = CHUNK_MAGIC_OFFSET + 8;
pub const CHUNK_RESERVED_A_OFFSET: usize = CHUNK_VERSION_OFFSET + 2;
pub const CHUNK_BLOCKS_OFFSET: usize = CHUNK_RESERVED_A_OFFSET + 2;
pub const CHUNK_FIRST_HEIGHT_OFFSET: usize = CHUNK_BLOCKS_OFFSET + 4;
pub const CHUNK_RESERVED_B_OFFSET: usize = CHUNK_FIRST_HEIGHT_OFFSET + 8;
pub const CHUNK_CRC_OFFSET: usize = CHUNK_RESERVED_B_OFFSET + 4;
pub const CHUNK_HEADER_BYTES: usize = CHUNK_CRC_OFFSET + 4;

pub const RECORD_MAGIC: [u8; 4] = *b"KREC";
pub const RECORD_MAGIC_OFFSET: usize = 0;
pub const RECORD_LEN_OFFSET: usize = RECORD_MAGIC_OFFSET + 4;
pub const RECORD_HEIGHT_OFFSET: usize = RECORD_LEN_OFFSET + 4;
pub const RECORD_HASH_OFFSET: usize = RECORD_HEIGHT_OFFSET + 8;
pub const RECORD_PAYLOAD_CRC_OFFSET: usize = RECORD_HASH_OFFSET + 32;
pub const RECORD_HEADER_CRC_OFFSET: usize = RECORD_PAYLOAD_CRC_OFFSET + 4;
pub const RECORD_HEADER_BYTES: usize = RECORD_HEADER_CRC_OFFSET + 4;

/// Largest payload a record may declare.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = BLOCK_BYTES_MAX;

const _: () = assert!(CHUNK_HEADER_BYTES == 32);
const _: () = assert!(RECORD_HEADER_BYTES == 56);

fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(out)
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(out)
}

/// The header of chunk number `chunk`.
pub fn encode_chunk_header(blocks_per_chunk: u32, chunk: u32) -> [u8; CHUNK_HEADER_BYTES] {
    let mut out = [0u8; CHUNK_HEADER_BYTES];
    out[CHUNK_MAGIC_OFFSET..CHUNK_VERSION_OFFSET].copy_from_slice(&CHUNK_MAGIC);
    out[CHUNK_VERSION_OFFSET..CHUNK_RESERVED_A_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[CHUNK_BLOCKS_OFFSET..CHUNK_FIRST_HEIGHT_OFFSET].copy_from_slice(&blocks_per_chunk.to_le_bytes());
    let first_height = u64::from(chunk) * u64::from(blocks_per_chunk) + 1;
    out[CHUNK_FIRST_HEIGHT_OFFSET..CHUNK_RESERVED_B_OFFSET].copy_from_slice(&first_height.to_le_bytes());
    let crc = crc32c::crc32c(&out[..CHUNK_CRC_OFFSET]);
    out[CHUNK_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A chunk header that passed its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub version: u16,
    pub blocks_per_chunk: u32,
    pub first_height: u64,
}

/// Parses a chunk header; `None` if it is short, has the wrong magic or a bad checksum.
pub fn parse_chunk_header(bytes: &[u8]) -> Option<ChunkHeader> {
    let header = bytes.get(..CHUNK_HEADER_BYTES)?;
    if header[..CHUNK_VERSION_OFFSET] != CHUNK_MAGIC {
        return None;
    }
    if crc32c::crc32c(&header[..CHUNK_CRC_OFFSET]) != read_u32(header, CHUNK_CRC_OFFSET) {
        return None;
    }
    Some(ChunkHeader {
        version: read_u16(header, CHUNK_VERSION_OFFSET),
        blocks_per_chunk: read_u32(header, CHUNK_BLOCKS_OFFSET),
        first_height: read_u64(header, CHUNK_FIRST_HEIGHT_OFFSET),
    })
}

/// The header of a record holding `payload`.
pub fn encode_record_header(height: u64, block_hash: &Hash, payload: &[u8]) -> [u8; RECORD_HEADER_BYTES] {
    let mut out = [0u8; RECORD_HEADER_BYTES];
    out[RECORD_MAGIC_OFFSET..RECORD_LEN_OFFSET].copy_from_slice(&RECORD_MAGIC);
    // Callers refuse payloads over RECORD_PAYLOAD_BYTES_MAX (64 MiB), which fits in u32.
    let len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    out[RECORD_LEN_OFFSET..RECORD_HEIGHT_OFFSET].copy_from_slice(&len.to_le_bytes());
    out[RECORD_HEIGHT_OFFSET..RECORD_HASH_OFFSET].copy_from_slice(&height.to_le_bytes());
    out[RECORD_HASH_OFFSET..RECORD_PAYLOAD_CRC_OFFSET].copy_from_slice(block_hash.as_bytes());
    out[RECORD_PAYLOAD_CRC_OFFSET..RECORD_HEADER_CRC_OFFSET].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&out[..RECORD_HEADER_CRC_OFFSET]);
    out[RECORD_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A record header that passed its own checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: u32,
    pub height: u64,
    pub block_hash: Hash,
    pub payload_crc: u32,
}

impl RecordHeader {
    pub fn record_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload_len as usize
    }

    pub fn payload_matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.payload_len as usize && crc32c::crc32c(payload) == self.payload_crc
    }
}

/// Why bytes are not a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    Short,
    BadMagic,
    BadChecksum,
    TooLarge,
}

/// Parses a record header from the start of `bytes`.
pub fn parse_record_header(bytes: &[u8]) -> Result<RecordHeader, HeaderProblem> {
    let header = bytes.get(..RECORD_HEADER_BYTES).ok_or(HeaderProblem::Short)?;
    if header[..RECORD_LEN_OFFSET] != RECORD_MAGIC {
        return Err(HeaderProblem::BadMagic);
    }
    if crc32c::crc32c(&header[..RECORD_HEADER_CRC_OFFSET]) != read_u32(header, RECORD_HEADER_CRC_OFFSET) {
        return Err(HeaderProblem::BadChecksum);
    }
    let payload_len = read_u32(header, RECORD_LEN_OFFSET);
    if payload_len as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Err(HeaderProblem::TooLarge);
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&header[RECORD_HASH_OFFSET..RECORD_PAYLOAD_CRC_OFFSET]);
    Ok(RecordHeader {
        payload_len,
        height: read_u64(header, RECORD_HEIGHT_OFFSET),
        block_hash: Hash(hash),
        payload_crc: read_u32(header, RECORD_PAYLOAD_CRC_OFFSET),
    })
}

/// Whether a whole valid record (header and payload checksums) starts at `bytes[0]`.
pub fn is_valid_record_at(bytes: &[u8]) -> bool {
    match parse_record_header(bytes) {
        Ok(header) => bytes
            .get(RECORD_HEADER_BYTES..header.record_bytes())
            .is_some_and(|payload| header.payload_matches(payload)),
        Err(_) => false,
    }
}

/// Whether any valid record starts anywhere in `bytes`.
pub fn contains_valid_record(bytes: &[u8]) -> bool {
    let mut start = 0;
    while let Some(found) = bytes[start..]
        .windows(RECORD_MAGIC.len())
        .position(|window| window == RECORD_MAGIC)
    {
        let at = start + found;
        if is_valid_record_at(&bytes[at..]) {
            return true;
        }
        start = at + 1;
    }
    false
}

/// The file name of chunk number `chunk`.
pub fn chunk_file_name(chunk: u32) -> String {
    format!("chunk-{chunk:08}.kura")
}

/// The chunk number of a file name, if it is a chunk file.
pub fn parse_chunk_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("chunk-")?.strip_suffix(".kura")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_detect_damage() {
        let chunk = encode_chunk_header(100, 3);
        assert_eq!(
            parse_chunk_header(&chunk),
            Some(ChunkHeader {
                version: 1,
                blocks_per_chunk: 100,
                first_height: 301
            })
        );
        let payload = b"payload";
        let record = encode_record_header(7, &Hash::of(b"b"), payload);
        let parsed = parse_record_header(&record).expect("valid");
        assert_eq!(parsed.height, 7);
        assert!(parsed.payload_matches(payload));
        for bit in 0..RECORD_HEADER_BYTES * 8 {
            let mut damaged = record;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_record_header(&damaged).is_err(), "bit {bit}");
        }
        let mut whole = record.to_vec();
        whole.extend_from_slice(payload);
        assert!(is_valid_record_at(&whole));
        let mut shifted = vec![0u8, b'K'];
        shifted.extend_from_slice(&whole);
        assert!(contains_valid_record(&shifted));
        assert!(!contains_valid_record(&whole[1..]));
    }

    #[test]
    fn chunk_file_names() {
        assert_eq!(chunk_file_name(12), "chunk-00000012.kura");
        assert_eq!(parse_chunk_file_name("chunk-00000012.kura"), Some(12));
        assert_eq!(parse_chunk_file_name("chunk-12.kura"), None);
        assert_eq!(parse_chunk_file_name("other"), None);
    }
}
