//! The block store: append, read, and recovery on open (docs/KURA-FORMAT.md).

use std::collections::HashMap;
use std::io;
use std::str::FromStr;

use kasane_model::codec::{self, CodecError};
use kasane_model::{CommittedBlock, Hash};

use crate::backend::Backend;
use crate::format::{self, RECORD_HEADER_BYTES};

/// When appended blocks are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every `append` returns (the default).
    Always,
    /// After every N appends, and when a chunk is sealed.
    Every(u32),
    /// Only when a chunk is sealed.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<FsyncPolicy, String> {
        match text {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match text.strip_prefix("every:").map(str::parse::<u32>) {
                Some(Ok(count)) if count > 0 => Ok(FsyncPolicy::Every(count)),
                _ => Err(format!("fsync policy {text:?} is not always, never or every:N (N > 0)")),
            },
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Every(count) => write!(f, "every:{count}"),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KuraConfig {
    /// Blocks per chunk for a new store; an existing store keeps the size it was created with.
    pub blocks_per_chunk: u32,
    pub fsync: FsyncPolicy,
    /// Open without changing anything: a torn tail is reported but not cut, appends fail.
    /// For inspection and verification tools.
    pub read_only: bool,
}

impl Default for KuraConfig {
    fn default() -> KuraConfig {
        KuraConfig {
            blocks_per_chunk: format::BLOCKS_PER_CHUNK_DEFAULT,
            fsync: FsyncPolicy::Always,
            read_only: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KuraError {
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt record at height {height}: {reason}")]
    Corrupt { height: u64, reason: String },
    #[error("chunk {chunk}: {reason}")]
    BadChunk { chunk: u32, reason: String },
    #[error("block {height}: {error}")]
    Decode { height: u64, error: CodecError },
    #[error("block height {found} does not follow the store's head {head}")]
    NotNext { head: u64, found: u64 },
    #[error("block {height} names previous hash {found}, the store's head is {expected}")]
    WrongPrevious { height: u64, expected: Hash, found: Hash },
    #[error("block {height} is {bytes} bytes, over the record limit of {limit}")]
    TooLarge { height: u64, bytes: usize, limit: usize },
    #[error("no block at height {height} (store height {store_height})")]
    NoSuchHeight { height: u64, store_height: u64 },
    #[error("blocks_per_chunk must be at least 1")]
    BadConfig,
}

/// Where one record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    chunk: u32,
    offset: u64,
    payload_len: u32,
    hash: Hash,
}

/// A torn tail that open cut away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    pub chunk: u32,
    pub offset: u64,
    pub bytes_cut: u64,
    /// Chunk files after `chunk` that held no valid record and were removed.
    pub chunks_removed: Vec<u32>,
    pub reason: String,
}

/// What open found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub height: u64,
    pub chunks: usize,
    pub bytes: u64,
    pub blocks_per_chunk: u32,
    pub cut: Option<TailCut>,
}

/// The block store.
#[derive(Debug)]
pub struct Kura<B: Backend> {
    backend: B,
    blocks_per_chunk: u32,
    fsync: FsyncPolicy,
    index: Vec<Location>,
    by_hash: HashMap<Hash, u64>,
    /// Length of the last chunk.
    tail_len: u64,
    appends_since_sync: u32,
    bytes: u64,
    /// Set while an append is in flight; still set if it failed half-way.
    failed: bool,
    read_only: bool,
}

/// The damage found while scanning: where the store must end, if it is a torn tail.
struct Damage {
    chunk: u32,
    offset: u64,
    height: u64,
    reason: String,
    /// Whether the chunk header itself is damaged (the whole file goes).
    header: bool,
}

impl<B: Backend> Kura<B> {
    /// Opens a store, cutting a torn tail back to the last whole block.
    pub fn open(backend: B, config: KuraConfig) -> Result<(Kura<B>, OpenReport), KuraError> {
        if config.blocks_per_chunk == 0 {
            return Err(KuraError::BadConfig);
        }
        let chunks = backend.list()?;
        let mut kura = Kura {
            backend,
            blocks_per_chunk: config.blocks_per_chunk,
            fsync: config.fsync,
            index: Vec::new(),
            by_hash: HashMap::new(),
            tail_len: 0,
            appends_since_sync: 0,
            bytes: 0,
            failed: false,
            read_only: config.read_only,
        };
        let cut = match kura.scan(&chunks)? {
            None => None,
            Some(damage) => Some(kura.cut_tail(&chunks, damage)?),
        };
        if let Some(cut) = cut.as_ref().filter(|_| !config.read_only) {
            tracing::warn!(
                chunk = cut.chunk,
                offset = cut.offset,
                bytes_cut = cut.bytes_cut,
                reason = %cut.reason,
                height = kura.height(),
                "kura: cut a torn tail back to the last whole block"
            );
        }
        let report = OpenReport {
            height: kura.height(),
            chunks: kura.chunk_count(),
            bytes: kura.bytes,
            blocks_per_chunk: kura.blocks_per_chunk,
            cut,
        };
        Ok((kura, report))
    }

    /// Walks every chunk, building the index, up to the first damage.
    fn scan(&mut self, chunks: &[u32]) -> Result<Option<Damage>, KuraError> {
        let mut expected_height = 1u64;
        for (position, &chunk) in chunks.iter().enumerate() {
            let is_last = position + 1 == chunks.len();
            let damage = |offset: usize, height: u64, header: bool, reason: String| {
                Ok(Some(Damage {
                    chunk,
                    offset: offset as u64,
                    height,
                    reason,
                    header,
                }))
            };
            if u64::from(chunk) != position as u64 {
                return damage(0, expected_height, true, format!("chunk {position} is missing"));
            }
            let bytes = self.backend.read_chunk(chunk, !is_last)?;
            let Some(header) = format::parse_chunk_header(&bytes) else {
                return damage(0, expected_height, true, "chunk header is damaged".into());
            };
            if header.version != format::FORMAT_VERSION {
                return Err(KuraError::BadChunk {
                    chunk,
                    reason: format!(
                        "format version {} (this build reads {})",
                        header.version,
                        format::FORMAT_VERSION
                    ),
                });
            }
            if position == 0 {
                if header.blocks_per_chunk == 0 {
                    return Err(KuraError::BadChunk {
                        chunk,
                        reason: "blocks_per_chunk is 0".into(),
                    });
                }
                self.blocks_per_chunk = header.blocks_per_chunk;
            } else if header.blocks_per_chunk != self.blocks_per_chunk {
                return Err(KuraError::BadChunk {
                    chunk,
                    reason: format!(
                        "blocks_per_chunk {} differs from chunk 0's {}",
                        header.blocks_per_chunk, self.blocks_per_chunk
                    ),
                });
            }
            if header.first_height != expected_height {
                return damage(
                    0,
                    expected_height,
                    true,
                    format!("chunk starts at height {}", header.first_height),
                );
            }
            let mut offset = format::CHUNK_HEADER_BYTES;
            let mut records = 0u32;
            while offset < bytes.len() {
                if records == self.blocks_per_chunk {
                    return damage(
                        offset,
                        expected_height,
                        true,
                        "bytes after the last record of a full chunk".into(),
                    );
                }
                let record = match format::parse_record_header(&bytes[offset..]) {
                    Ok(record) => record,
                    Err(problem) => {
                        return damage(offset, expected_height, true, format!("record header: {problem:?}"));
                    }
                };
                if record.height != expected_height {
                    return damage(
                        offset,
                        expected_height,
                        true,
                        format!("record says height {}", record.height),
                    );
                }
                let payload = bytes.get(offset + RECORD_HEADER_BYTES..offset + record.record_bytes());
                match payload {
                    None => {
                        return damage(
                            offset,
                            expected_height,
                            false,
                            "record runs past the end of the chunk".into(),
                        )
                    }
                    Some(payload) if !record.payload_matches(payload) => {
                        return damage(offset, expected_height, false, "payload checksum mismatch".into());
                    }
                    Some(_) => {}
                }
                self.index.push(Location {
                    chunk,
                    offset: offset as u64,
                    payload_len: record.payload_len,
                    hash: record.block_hash,
                });
                self.by_hash.insert(record.block_hash, expected_height);
                offset += record.record_bytes();
                records += 1;
                expected_height += 1;
            }
            // Checked before the chunk's bytes are counted: a cut counts what it keeps.
            if !is_last && records < self.blocks_per_chunk {
                return damage(
                    offset,
                    expected_height,
                    true,
                    format!("sealed chunk holds only {records} records"),
                );
            }
            if records == 0 {
                // A chunk whose first append was torn after its header: the next append
                // creates it again, so it must not stay.
                return damage(offset, expected_height, true, "chunk holds no record".into());
            }
            self.bytes += bytes.len() as u64;
            self.tail_len = bytes.len() as u64;
        }
        Ok(None)
    }

    /// Decides whether damage is a torn tail (cut it) or corruption before the tail (error).
    fn cut_tail(&mut self, chunks: &[u32], damage: Damage) -> Result<TailCut, KuraError> {
        let bytes = self.backend.read_chunk(damage.chunk, false)?;
        let offset = damage.offset as usize;
        let rest_start = if damage.header {
            offset + 1
        } else {
            // The header is sound: the next record, if any, starts right after this one.
            let header = format::parse_record_header(&bytes[offset..]).map_err(|_| KuraError::Corrupt {
                height: damage.height,
                reason: "record header changed during open".into(),
            })?;
            offset + header.record_bytes()
        };
        // Byte by byte, as the format says: the record after this one may be damaged too.
        let later_valid = bytes.get(rest_start..).is_some_and(format::contains_valid_record);
        let later_chunks: Vec<u32> = chunks.iter().copied().filter(|chunk| *chunk > damage.chunk).collect();
        let mut later_valid_elsewhere = false;
        for chunk in &later_chunks {
            let later = self.backend.read_chunk(*chunk, false)?;
            if format::contains_valid_record(&later) {
                later_valid_elsewhere = true;
                break;
            }
        }
        if later_valid || later_valid_elsewhere {
            return Err(KuraError::Corrupt {
                height: damage.height,
                reason: damage.reason,
            });
        }
        let chunk_len = bytes.len() as u64;
        drop(bytes);
        let read_only = self.read_only;
        // A cut that would leave no record (or no sound header) removes the whole chunk: a
        // chunk file without records would make the next append's create fail.
        let whole_chunk_goes = damage.offset <= format::CHUNK_HEADER_BYTES as u64;
        let mut bytes_cut = if whole_chunk_goes {
            chunk_len
        } else {
            chunk_len - damage.offset
        };
        let mut chunks_removed = Vec::new();
        for chunk in later_chunks.iter().rev() {
            bytes_cut += self.backend.read_chunk(*chunk, false)?.len() as u64;
            if !read_only {
                self.backend.remove(*chunk)?;
            }
            chunks_removed.push(*chunk);
        }
        chunks_removed.reverse();
        if whole_chunk_goes {
            if !read_only {
                self.backend.remove(damage.chunk)?;
            }
            chunks_removed.insert(0, damage.chunk);
            self.tail_len = 0;
        } else {
            if !read_only {
                self.backend.truncate(damage.chunk, damage.offset)?;
            }
            self.bytes += damage.offset;
            self.tail_len = damage.offset;
        }
        Ok(TailCut {
            chunk: damage.chunk,
            offset: damage.offset,
            bytes_cut,
            chunks_removed,
            reason: damage.reason,
        })
    }

    /// Height of the last block; 0 when empty.
    pub fn height(&self) -> u64 {
        self.index.len() as u64
    }

    /// Hash of the last block; [`Hash::ZERO`] when empty.
    pub fn head_hash(&self) -> Hash {
        self.index.last().map(|location| location.hash).unwrap_or(Hash::ZERO)
    }

    pub fn blocks_per_chunk(&self) -> u32 {
        self.blocks_per_chunk
    }

    /// Number of chunk files.
    pub fn chunk_count(&self) -> usize {
        self.index.len().div_ceil(self.blocks_per_chunk as usize)
    }

    /// Bytes in all chunk files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The height of the block with this hash.
    pub fn height_of(&self, hash: &Hash) -> Option<u64> {
        self.by_hash.get(hash).copied()
    }

    /// The block hash at `height`, from the index.
    pub fn hash_at(&self, height: u64) -> Option<Hash> {
        self.location(height).ok().map(|location| location.hash)
    }

    fn location(&self, height: u64) -> Result<Location, KuraError> {
        height
            .checked_sub(1)
            .and_then(|index| self.index.get(index as usize))
            .copied()
            .ok_or(KuraError::NoSuchHeight {
                height,
                store_height: self.height(),
            })
    }

    fn chunk_of(&self, height: u64) -> u32 {
        ((height - 1) / u64::from(self.blocks_per_chunk)) as u32
    }

    /// Appends a committed block; under the default policy it is durable when this returns.
    pub fn append(&mut self, block: &CommittedBlock) -> Result<Hash, KuraError> {
        let payload = codec::encode(block);
        let hash = block.block.hash();
        self.append_encoded(
            block.block.header.height,
            &block.block.header.previous_hash,
            &hash,
            &payload,
        )?;
        Ok(hash)
    }

    /// Appends an already encoded committed block whose height, previous hash and hash the
    /// caller has taken from it.
    pub fn append_encoded(
        &mut self,
        height: u64,
        previous: &Hash,
        hash: &Hash,
        payload: &[u8],
    ) -> Result<(), KuraError> {
        if self.failed || self.read_only {
            return Err(KuraError::Io(io::Error::other(
                "the store is read-only, or an earlier append failed (reopen it so recovery cuts the partial record)",
            )));
        }
        if height != self.height() + 1 {
            return Err(KuraError::NotNext {
                head: self.height(),
                found: height,
            });
        }
        if *previous != self.head_hash() {
            return Err(KuraError::WrongPrevious {
                height,
                expected: self.head_hash(),
                found: *previous,
            });
        }
        if payload.len() > format::RECORD_PAYLOAD_BYTES_MAX {
            return Err(KuraError::TooLarge {
                height,
                bytes: payload.len(),
                limit: format::RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        self.failed = true;
        let chunk = self.chunk_of(height);
        if (height - 1) % u64::from(self.blocks_per_chunk) == 0 {
            if chunk > 0 {
                // Seal: the previous chunk is durable before the next exists, so a crash can
                // only ever damage the last chunk.
                self.backend.sync(chunk - 1)?;
                self.appends_since_sync = 0;
            }
            self.backend.create(chunk)?;
            let header = format::encode_chunk_header(self.blocks_per_chunk, chunk);
            self.backend.append(chunk, &header)?;
            self.tail_len = header.len() as u64;
            self.bytes += header.len() as u64;
        }
        let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
        record.extend_from_slice(&format::encode_record_header(height, hash, payload));
        record.extend_from_slice(payload);
        self.backend.append(chunk, &record)?;
        self.appends_since_sync += 1;
        let sync_now = match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Every(count) => self.appends_since_sync >= count,
            FsyncPolicy::Never => false,
        };
        if sync_now {
            self.backend.sync(chunk)?;
            self.appends_since_sync = 0;
        }
        self.failed = false;
        self.index.push(Location {
            chunk,
            offset: self.tail_len,
            payload_len: payload.len() as u32,
            hash: *hash,
        });
        self.by_hash.insert(*hash, height);
        self.tail_len += record.len() as u64;
        self.bytes += record.len() as u64;
        Ok(())
    }

    /// Makes every appended block durable, whatever the policy (for shutdown).
    pub fn sync(&mut self) -> Result<(), KuraError> {
        if self.height() > 0 && self.appends_since_sync > 0 {
            let chunk = self.chunk_of(self.height());
            self.backend.sync(chunk)?;
            self.appends_since_sync = 0;
        }
        Ok(())
    }

    /// The encoded committed block at `height`, its checksums verified.
    pub fn read_encoded(&self, height: u64) -> Result<Vec<u8>, KuraError> {
        let location = self.location(height)?;
        let record = self.backend.read_at(
            location.chunk,
            location.offset,
            RECORD_HEADER_BYTES + location.payload_len as usize,
        )?;
        check_record(&record, height, &location)?;
        let mut payload = record;
        payload.drain(..RECORD_HEADER_BYTES);
        Ok(payload)
    }

    /// The committed block at `height`.
    pub fn read(&self, height: u64) -> Result<CommittedBlock, KuraError> {
        let payload = self.read_encoded(height)?;
        codec::decode(&payload).map_err(|error| KuraError::Decode { height, error })
    }

    /// The committed block with this hash.
    pub fn read_by_hash(&self, hash: &Hash) -> Result<Option<CommittedBlock>, KuraError> {
        match self.height_of(hash) {
            Some(height) => self.read(height).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `count` encoded blocks from `from` on, never more than one chunk's worth
    /// (block sync's unit), checksums verified. Sealed chunks are read through a memory map.
    pub fn read_range_encoded(&self, from: u64, count: usize) -> Result<Vec<Vec<u8>>, KuraError> {
        let count = count.min(self.blocks_per_chunk as usize);
        let last = from.saturating_add(count as u64).saturating_sub(1).min(self.height());
        let mut out = Vec::with_capacity(count);
        if from == 0 || from > last {
            return Ok(out);
        }
        let mut height = from;
        while height <= last {
            let chunk = self.chunk_of(height);
            let sealed = chunk < self.chunk_of(self.height());
            if sealed {
                let bytes = self.backend.read_chunk(chunk, true)?;
                while height <= last && self.chunk_of(height) == chunk {
                    let location = self.location(height)?;
                    let start = location.offset as usize;
                    let end = start + RECORD_HEADER_BYTES + location.payload_len as usize;
                    let record = bytes.get(start..end).ok_or_else(|| KuraError::Corrupt {
                        height,
                        reason: "record is past the end of its chunk".into(),
                    })?;
                    check_record(record, height, &location)?;
                    out.push(record[RECORD_HEADER_BYTES..].to_vec());
                    height += 1;
                }
            } else {
                out.push(self.read_encoded(height)?);
                height += 1;
            }
        }
        Ok(out)
    }
}

/// Checks a record read back against the index: header checksum, height, hash, payload.
fn check_record(record: &[u8], height: u64, location: &Location) -> Result<(), KuraError> {
    let corrupt = |reason: &str| KuraError::Corrupt {
        height,
        reason: reason.to_string(),
    };
    let header =
        format::parse_record_header(record).map_err(|problem| corrupt(&format!("record header: {problem:?}")))?;
    if header.height != height || header.block_hash != location.hash || header.payload_len != location.payload_len {
        return Err(corrupt("record header changed since open"));
    }
    if !header.payload_matches(&record[RECORD_HEADER_BYTES..]) {
        return Err(corrupt("payload checksum mismatch"));
    }
    Ok(())
}
