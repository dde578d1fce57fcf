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
    #[error("block {height} is not stored yet: the store was restored from a snapshot at height {base} and holds the blocks below it up to {lower}")]
    NotFilled { height: u64, lower: u64, base: u64 },
    #[error("base record: {reason}")]
    BadBase { reason: String },
    #[error("cannot start the store from height {base}: {reason}")]
    BadRebase { base: u64, reason: String },
    #[error("block {height} has hash {found}, the store's base names {expected}")]
    NotTheBase { height: u64, expected: Hash, found: Hash },
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
    /// The torn tail cut from the part that consensus appends to.
    pub cut: Option<TailCut>,
    /// For a store from a base: the base height, and the height the part below it reaches.
    pub base: Option<u64>,
    pub lower_height: u64,
    /// For a store from a base: the torn tail cut from the part below the base.
    pub lower_cut: Option<TailCut>,
}

/// A run of consecutive heights in consecutive chunk files.
#[derive(Debug, Default)]
struct Segment {
    /// The height before the first block (0 for the part from genesis), and that block's hash.
    base: u64,
    base_hash: Hash,
    index: Vec<Location>,
    /// Length of the last chunk of this segment.
    tail_len: u64,
    appends_since_sync: u32,
}

impl Segment {
    fn height(&self) -> u64 {
        self.base + self.index.len() as u64
    }

    fn head_hash(&self) -> Hash {
        self.index.last().map_or(self.base_hash, |location| location.hash)
    }

    fn get(&self, height: u64) -> Option<Location> {
        height
            .checked_sub(self.base + 1)
            .and_then(|index| self.index.get(usize::try_from(index).ok()?))
            .copied()
    }
}

/// The two parts of a store from a base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// From genesis on: the whole store, or the blocks below the base.
    Lower,
    /// Above the base of a store restored from a snapshot.
    Upper,
}

/// The block store.
///
/// A store is usually one run of heights from genesis. A store restored from a snapshot (state
/// sync, docs/PROTOCOL.md section 8.1) has two: the blocks from genesis it had (at least the
/// genesis block), and the blocks above the snapshot's height (the *base*), which consensus
/// appends to. The blocks between are fetched later and appended below the base
/// ([`Kura::append_below`]); when they reach it the two parts are one store again.
#[derive(Debug)]
pub struct Kura<B: Backend> {
    backend: B,
    blocks_per_chunk: u32,
    fsync: FsyncPolicy,
    lower: Segment,
    upper: Option<Segment>,
    by_hash: HashMap<Hash, u64>,
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
        let base = match backend.read_file(format::BASE_FILE)? {
            None => None,
            Some(bytes) => {
                let record = format::parse_base_record(&bytes).map_err(|reason| KuraError::BadBase { reason })?;
                if record.blocks_per_chunk == 0
                    || record.base == 0
                    || record.base % u64::from(record.blocks_per_chunk) != 0
                {
                    return Err(KuraError::BadBase {
                        reason: format!(
                            "base {} is not a positive multiple of {} blocks per chunk",
                            record.base, record.blocks_per_chunk
                        ),
                    });
                }
                Some(record)
            }
        };
        let mut kura = Kura {
            backend,
            blocks_per_chunk: base.map_or(config.blocks_per_chunk, |record| record.blocks_per_chunk),
            fsync: config.fsync,
            lower: Segment::default(),
            upper: None,
            by_hash: HashMap::new(),
            bytes: 0,
            failed: false,
            read_only: config.read_only,
        };
        let split = base.map_or(u32::MAX, |record| {
            u32::try_from(record.base / u64::from(record.blocks_per_chunk)).unwrap_or(u32::MAX)
        });
        let (lower_chunks, upper_chunks): (Vec<u32>, Vec<u32>) = chunks.iter().partition(|chunk| **chunk < split);
        let mut lower = Segment::default();
        let lower_cut = match kura.scan(&mut lower, &lower_chunks, 0, base.is_none())? {
            None => None,
            Some(damage) => Some(kura.cut_tail(&mut lower, &lower_chunks, damage)?),
        };
        kura.lower = lower;
        let mut cut = None;
        if let Some(record) = base {
            let mut upper = Segment {
                base: record.base,
                base_hash: record.base_hash,
                ..Segment::default()
            };
            if let Some(damage) = kura.scan(&mut upper, &upper_chunks, split, false)? {
                cut = Some(kura.cut_tail(&mut upper, &upper_chunks, damage)?);
            }
            kura.upper = Some(upper);
        } else {
            cut = lower_cut.clone();
            // A merge that removed the base record and stopped before the snapshot went.
            if !config.read_only && kura.backend.read_file(format::BASE_SNAPSHOT_FILE)?.is_some() {
                kura.backend.remove_file(format::BASE_SNAPSHOT_FILE)?;
            }
        }
        if let Some(upper) = &kura.upper {
            if kura.lower.height() > upper.base {
                return Err(KuraError::Corrupt {
                    height: upper.base + 1,
                    reason: format!("the part below the base {} reaches past it", upper.base),
                });
            }
            // The last block below the base was appended, the merge did not finish.
            if kura.lower.height() == upper.base && !config.read_only {
                kura.merge()?;
            }
        }
        for cut in cut.iter().chain(if base.is_some() { lower_cut.as_ref() } else { None }) {
            if !config.read_only {
                tracing::warn!(
                    chunk = cut.chunk,
                    offset = cut.offset,
                    bytes_cut = cut.bytes_cut,
                    reason = %cut.reason,
                    height = kura.height(),
                    "kura: cut a torn tail back to the last whole block"
                );
            }
        }
        let report = OpenReport {
            height: kura.height(),
            chunks: kura.chunk_count(),
            bytes: kura.bytes,
            blocks_per_chunk: kura.blocks_per_chunk,
            cut,
            base: kura.base(),
            lower_height: kura.lower.height(),
            lower_cut: if base.is_some() { lower_cut } else { None },
        };
        Ok((kura, report))
    }

    /// Walks the chunks of one part, building its index, up to the first damage. The first
    /// chunk of a store from genesis sets the chunk size (`sets_size`); every other must agree.
    fn scan(
        &mut self,
        segment: &mut Segment,
        chunks: &[u32],
        first_chunk: u32,
        sets_size: bool,
    ) -> Result<Option<Damage>, KuraError> {
        let mut expected_height = segment.base + 1;
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
            if u64::from(chunk) != u64::from(first_chunk) + position as u64 {
                return damage(
                    0,
                    expected_height,
                    true,
                    format!("chunk {} is missing", u64::from(first_chunk) + position as u64),
                );
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
            if position == 0 && sets_size {
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
                        "blocks_per_chunk {} differs from the store's {}",
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
                segment.index.push(Location {
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
            segment.tail_len = bytes.len() as u64;
        }
        Ok(None)
    }

    /// Decides whether damage is a torn tail of its part (cut it) or corruption before the
    /// tail (error).
    fn cut_tail(&mut self, segment: &mut Segment, chunks: &[u32], damage: Damage) -> Result<TailCut, KuraError> {
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
            // The segment's tail is now its last whole chunk (full, or none).
            segment.tail_len = 0;
        } else {
            if !read_only {
                self.backend.truncate(damage.chunk, damage.offset)?;
            }
            self.bytes += damage.offset;
            segment.tail_len = damage.offset;
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
        self.upper.as_ref().unwrap_or(&self.lower).height()
    }

    /// Hash of the last block; [`Hash::ZERO`] when empty.
    pub fn head_hash(&self) -> Hash {
        self.upper.as_ref().unwrap_or(&self.lower).head_hash()
    }

    /// For a store restored from a snapshot whose blocks below it are not all in yet: the
    /// snapshot's height.
    pub fn base(&self) -> Option<u64> {
        self.upper.as_ref().map(|upper| upper.base)
    }

    /// The hash of the block at the base, when there is a base.
    pub fn base_hash(&self) -> Option<Hash> {
        self.upper.as_ref().map(|upper| upper.base_hash)
    }

    /// The height the blocks from genesis reach without a gap: [`Kura::height`] for a whole
    /// store, below the base for a store from a base.
    pub fn lower_height(&self) -> u64 {
        self.lower.height()
    }

    /// Whether the store holds every block from genesis to its head.
    pub fn is_complete(&self) -> bool {
        self.upper.is_none()
    }

    /// Whether the block at `height` is stored.
    pub fn holds(&self, height: u64) -> bool {
        self.location(height).is_ok()
    }

    pub fn blocks_per_chunk(&self) -> u32 {
        self.blocks_per_chunk
    }

    /// Number of chunk files.
    pub fn chunk_count(&self) -> usize {
        let per_chunk = self.blocks_per_chunk as usize;
        self.lower.index.len().div_ceil(per_chunk)
            + self
                .upper
                .as_ref()
                .map_or(0, |upper| upper.index.len().div_ceil(per_chunk))
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
        let found = match &self.upper {
            Some(upper) if height > upper.base => upper.get(height),
            _ => self.lower.get(height),
        };
        found.ok_or_else(|| match &self.upper {
            Some(upper) if height > self.lower.height() && height <= upper.base => KuraError::NotFilled {
                height,
                lower: self.lower.height(),
                base: upper.base,
            },
            _ => KuraError::NoSuchHeight {
                height,
                store_height: self.height(),
            },
        })
    }

    fn chunk_of(&self, height: u64) -> u32 {
        ((height - 1) / u64::from(self.blocks_per_chunk)) as u32
    }

    /// Whether `chunk` will never be written again: a chunk below the last of its part.
    fn is_sealed(&self, chunk: u32) -> bool {
        let part_height = match &self.upper {
            Some(upper) if u64::from(chunk) * u64::from(self.blocks_per_chunk) >= upper.base => upper.height(),
            _ => self.lower.height(),
        };
        part_height > 0 && chunk < self.chunk_of(part_height)
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
        let part = if self.upper.is_some() { Part::Upper } else { Part::Lower };
        let sync = self.fsync;
        self.write(part, height, previous, hash, payload, sync)
    }

    /// Makes this a store from a base: consensus appends from `base + 1` on (after the block
    /// with `base_hash`), and the state at `base` is kept beside the chunks (`header` is the
    /// encoded header of block `base`, `chunks` the snapshot's chunks) for init. The blocks
    /// between the store's height and the base come later through [`Kura::append_below`].
    /// Durable when it returns.
    pub fn rebase<C: AsRef<[u8]>>(
        &mut self,
        base: u64,
        base_hash: Hash,
        header: &[u8],
        chunks: &[C],
    ) -> Result<(), KuraError> {
        self.check_writable()?;
        let refuse = |reason: String| Err(KuraError::BadRebase { base, reason });
        if self.upper.is_some() {
            return refuse("the store already has a base".into());
        }
        if base % u64::from(self.blocks_per_chunk) != 0 {
            return refuse(format!("not a multiple of {} blocks per chunk", self.blocks_per_chunk));
        }
        if base <= self.lower.height() {
            return refuse(format!("the store already holds height {}", self.lower.height()));
        }
        if self.lower.height() == 0 {
            // Init reads the chain's identity from it.
            return refuse("the store has no genesis block".into());
        }
        if self.lower.height() > 0 {
            self.backend.sync(self.chunk_of(self.lower.height()))?;
            self.lower.appends_since_sync = 0;
        }
        self.backend.write_file(
            format::BASE_SNAPSHOT_FILE,
            &format::encode_base_snapshot(header, chunks),
        )?;
        self.backend.write_file(
            format::BASE_FILE,
            &format::encode_base_record(&format::BaseRecord {
                blocks_per_chunk: self.blocks_per_chunk,
                base,
                base_hash,
            }),
        )?;
        self.upper = Some(Segment {
            base,
            base_hash,
            ..Segment::default()
        });
        Ok(())
    }

    /// The snapshot a store from a base keeps: the encoded header of the base block and the
    /// snapshot's chunks. `None` for a whole store.
    pub fn base_snapshot(&self) -> Result<Option<format::BaseSnapshot>, KuraError> {
        if self.upper.is_none() {
            return Ok(None);
        }
        let bytes = self
            .backend
            .read_file(format::BASE_SNAPSHOT_FILE)?
            .ok_or_else(|| KuraError::BadBase {
                reason: "the base snapshot file is missing".into(),
            })?;
        format::parse_base_snapshot(&bytes)
            .map(Some)
            .map_err(|reason| KuraError::BadBase {
                reason: format!("base snapshot: {reason}"),
            })
    }

    /// Appends a block below the base of a store from a base: the next height of the lower
    /// part, linked to its head. The block at the base must be the one the base names; with it
    /// the two parts become one store. Not synced block by block (a crash loses only blocks
    /// that can be fetched again): chunks are synced when sealed and at the join. Returns
    /// whether the store is whole now.
    pub fn append_below(&mut self, block: &CommittedBlock) -> Result<bool, KuraError> {
        let Some(base) = self.upper.as_ref().map(|upper| (upper.base, upper.base_hash)) else {
            return Err(KuraError::NotNext {
                head: self.height(),
                found: block.block.header.height,
            });
        };
        let height = block.block.header.height;
        let hash = block.block.hash();
        if height > base.0 {
            return Err(KuraError::NotNext {
                head: self.lower.height(),
                found: height,
            });
        }
        if height == base.0 && hash != base.1 {
            return Err(KuraError::NotTheBase {
                height,
                expected: base.1,
                found: hash,
            });
        }
        let payload = codec::encode(block);
        self.write(
            Part::Lower,
            height,
            &block.block.header.previous_hash,
            &hash,
            &payload,
            FsyncPolicy::Never,
        )?;
        if self.lower.height() == base.0 {
            self.merge()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Joins the lower part, which reached the base, to the upper one, and removes the base.
    fn merge(&mut self) -> Result<(), KuraError> {
        let Some(expected) = self.base_hash() else {
            return Ok(());
        };
        if self.lower.head_hash() != expected {
            return Err(KuraError::NotTheBase {
                height: self.lower.height(),
                expected,
                found: self.lower.head_hash(),
            });
        }
        if self.lower.height() > 0 {
            self.backend.sync(self.chunk_of(self.lower.height()))?;
        }
        self.backend.remove_file(format::BASE_FILE)?;
        self.backend.remove_file(format::BASE_SNAPSHOT_FILE)?;
        let Some(upper) = self.upper.take() else {
            return Ok(());
        };
        if !upper.index.is_empty() {
            self.lower.tail_len = upper.tail_len;
            self.lower.appends_since_sync = upper.appends_since_sync;
        }
        self.lower.index.extend(upper.index);
        Ok(())
    }

    fn check_writable(&self) -> Result<(), KuraError> {
        if self.failed || self.read_only {
            return Err(KuraError::Io(io::Error::other(
                "the store is read-only, or an earlier append failed (reopen it so recovery cuts the partial record)",
            )));
        }
        Ok(())
    }

    /// Appends one record to a part, after the checks every append makes.
    fn write(
        &mut self,
        part: Part,
        height: u64,
        previous: &Hash,
        hash: &Hash,
        payload: &[u8],
        policy: FsyncPolicy,
    ) -> Result<(), KuraError> {
        self.check_writable()?;
        let blocks_per_chunk = u64::from(self.blocks_per_chunk);
        let chunk = self.chunk_of(height.max(1));
        let segment = match part {
            Part::Upper => self.upper.as_ref().unwrap_or(&self.lower),
            Part::Lower => &self.lower,
        };
        if height != segment.height() + 1 {
            return Err(KuraError::NotNext {
                head: segment.height(),
                found: height,
            });
        }
        if *previous != segment.head_hash() {
            return Err(KuraError::WrongPrevious {
                height,
                expected: segment.head_hash(),
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
        let first_of_chunk = (height - 1) % blocks_per_chunk == 0;
        // A chunk of this part before this one (the upper part's first has none).
        let seals = first_of_chunk && height - 1 > segment.base;
        let mut tail_len = segment.tail_len;
        let mut appends_since_sync = segment.appends_since_sync;
        self.failed = true;
        if first_of_chunk {
            if seals {
                // Seal: the previous chunk is durable before the next exists, so a crash can
                // only ever damage the last chunk of a part.
                self.backend.sync(chunk - 1)?;
                appends_since_sync = 0;
            }
            self.backend.create(chunk)?;
            let header = format::encode_chunk_header(self.blocks_per_chunk, chunk);
            self.backend.append(chunk, &header)?;
            tail_len = header.len() as u64;
            self.bytes += header.len() as u64;
        }
        let mut record = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
        record.extend_from_slice(&format::encode_record_header(height, hash, payload));
        record.extend_from_slice(payload);
        self.backend.append(chunk, &record)?;
        appends_since_sync += 1;
        let sync_now = match policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Every(count) => appends_since_sync >= count,
            FsyncPolicy::Never => false,
        };
        if sync_now {
            self.backend.sync(chunk)?;
            appends_since_sync = 0;
        }
        self.failed = false;
        let segment = match part {
            Part::Upper => self.upper.as_mut().unwrap_or(&mut self.lower),
            Part::Lower => &mut self.lower,
        };
        segment.index.push(Location {
            chunk,
            offset: tail_len,
            payload_len: payload.len() as u32,
            hash: *hash,
        });
        segment.tail_len = tail_len + record.len() as u64;
        segment.appends_since_sync = appends_since_sync;
        self.by_hash.insert(*hash, height);
        self.bytes += record.len() as u64;
        Ok(())
    }

    /// Makes every appended block durable, whatever the policy (for shutdown).
    pub fn sync(&mut self) -> Result<(), KuraError> {
        let blocks_per_chunk = u64::from(self.blocks_per_chunk);
        for segment in std::iter::once(&mut self.lower).chain(self.upper.as_mut()) {
            if segment.height() > segment.base && segment.appends_since_sync > 0 {
                let chunk = ((segment.height() - 1) / blocks_per_chunk) as u32;
                self.backend.sync(chunk)?;
                segment.appends_since_sync = 0;
            }
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
            let sealed = self.is_sealed(chunk);
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
