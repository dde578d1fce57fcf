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

/// The base record of a store restored from a snapshot (docs/KURA-FORMAT.md, "A store from a
/// base"): the store holds heights `1..=L` and `base+1..`, the blocks between are fetched later.
pub const BASE_FILE: &str = "base.kura";
/// The snapshot of the world state at the base height, beside the base record.
pub const BASE_SNAPSHOT_FILE: &str = "base-snapshot.kura";

pub const BASE_MAGIC: [u8; 8] = *b"KASANEKB";
pub const BASE_SNAPSHOT_MAGIC: [u8; 8] = *b"KASANEKS";
const BASE_RECORD_BYTES: usize = 8 + 2 + 2 + 4 + 8 + 32 + 4;

/// Where the upper part of a store from a base starts: the height below it and that block's
/// hash, and the chunk size (so an upper part with no chunk yet knows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseRecord {
    pub blocks_per_chunk: u32,
    pub base: u64,
    pub base_hash: Hash,
}

pub fn encode_base_record(record: &BaseRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(BASE_RECORD_BYTES);
    out.extend_from_slice(&BASE_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&record.blocks_per_chunk.to_le_bytes());
    out.extend_from_slice(&record.base.to_le_bytes());
    out.extend_from_slice(record.base_hash.as_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Parses a base record; the reason when it is not one.
pub fn parse_base_record(bytes: &[u8]) -> Result<BaseRecord, String> {
    if bytes.len() != BASE_RECORD_BYTES {
        return Err(format!("{} bytes, a base record has {BASE_RECORD_BYTES}", bytes.len()));
    }
    if bytes[..8] != BASE_MAGIC {
        return Err("wrong magic".into());
    }
    let crc_at = BASE_RECORD_BYTES - 4;
    if crc32c::crc32c(&bytes[..crc_at]) != read_u32(bytes, crc_at) {
        return Err("checksum mismatch".into());
    }
    let version = read_u16(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} (this build reads {FORMAT_VERSION})"));
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[24..56]);
    Ok(BaseRecord {
        blocks_per_chunk: read_u32(bytes, 12),
        base: read_u64(bytes, 16),
        base_hash: Hash(hash),
    })
}

/// Encodes the base snapshot: magic, version, the encoded header of the base block, then each
/// snapshot chunk with its length and checksum.
pub fn encode_base_snapshot<C: AsRef<[u8]>>(header: &[u8], chunks: &[C]) -> Vec<u8> {
    let total: usize = chunks.iter().map(|chunk| chunk.as_ref().len() + 8).sum();
    let mut out = Vec::with_capacity(24 + header.len() + total);
    out.extend_from_slice(&BASE_SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    let section = |out: &mut Vec<u8>, bytes: &[u8]| {
        // Snapshot chunks are at most a few MiB and a header far less.
        let len = u32::try_from(bytes.len()).expect("snapshot sections are far below 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    section(&mut out, header);
    let count = u32::try_from(chunks.len()).expect("snapshot chunk count fits u32");
    out.extend_from_slice(&count.to_le_bytes());
    for chunk in chunks {
        section(&mut out, chunk.as_ref());
    }
    out
}

/// One length-and-checksum section of a base snapshot at `*at`, which moves past it.
fn read_section(bytes: &[u8], at: &mut usize, what: &str) -> Result<Vec<u8>, String> {
    let start = *at;
    let head = bytes
        .get(start..start + 8)
        .ok_or_else(|| format!("{what}: cut short at byte {start}"))?;
    let len = read_u32(head, 0) as usize;
    let crc = read_u32(head, 4);
    let body = bytes
        .get(start + 8..(start + 8).saturating_add(len))
        .ok_or_else(|| format!("{what}: cut short at byte {start}"))?;
    if crc32c::crc32c(body) != crc {
        return Err(format!("{what}: checksum mismatch at byte {start}"));
    }
    *at = start + 8 + len;
    Ok(body.to_vec())
}

/// A base snapshot's parts: the encoded header of the base block, and the snapshot's chunks.
pub type BaseSnapshot = (Vec<u8>, Vec<Vec<u8>>);

/// Parses a base snapshot into the header bytes and the chunks; the reason when it fails.
pub fn parse_base_snapshot(bytes: &[u8]) -> Result<BaseSnapshot, String> {
    if bytes.len() < 12 || bytes[..8] != BASE_SNAPSHOT_MAGIC {
        return Err("wrong magic".into());
    }
    let version = read_u16(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} (this build reads {FORMAT_VERSION})"));
    }
    let mut at = 12usize;
    let header = read_section(bytes, &mut at, "header")?;
    let count_bytes = bytes.get(at..at + 4).ok_or("chunk count: cut short")?;
    let count = read_u32(count_bytes, 0) as usize;
    at += 4;
    let mut chunks = Vec::with_capacity(count.min(1 << 16));
    for index in 0..count {
        chunks.push(read_section(bytes, &mut at, &format!("chunk {index}"))?);
    }
    if at != bytes.len() {
        return Err(format!("{} bytes after the last chunk", bytes.len() - at));
    }
    Ok((header, chunks))
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
