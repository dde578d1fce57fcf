//! Checkpoints and snapshots of the committed state (docs/PROTOCOL.md section 8.1).
//!
//! At every height `c` that is a positive multiple of the checkpoint interval `K` (100 by
//! default: a Kura chunk), a validator encodes its whole committed state `W(c)` (the world, the
//! replay memory, the leader failures of R1, the last block time and the transaction count) as a
//! sequence of entries cut into chunks of about [`CHUNK_BYTES_TARGET`], and hashes them into a
//! root. The commitment of block `c + D` binds that root, `D` the binding delay
//! ([`binding_delay`]: [`CHECKPOINT_BINDING_DELAY`] heights, at most the interval):
//!
//! ```text
//! commitment(c + D) = H(checkpoint domain || link || root(W(c)))
//! link              = H(domain || commitment(c + D - 1) || writes(c + D))   (wsv/src/commitment.rs)
//! ```
//!
//! The delay lets the encoding run on its own thread, from a copy of the state taken at the
//! commit of `c` (the replay memory's buckets are shared, not copied), while blocks `c + 1` to
//! `c + D - 1` go on: encoding and hashing a million replay entries takes over 100 ms, which in
//! the commit path stalled every node at once at every checkpoint (docs/BENCHMARKS.md). The
//! block `c + D` waits for the encoding only if it is not done by then.
//!
//! A node that holds the certified header of `c + D`, the headers between it and `c`, and the
//! `link` of `c + D` (which the manifest states) can check a snapshot of `W(c)` that it fetched
//! from anyone: the root of its chunks bound to `link` must give the certified commitment, and
//! the chunks must be the canonical encoding of what they restore ([`Wsv::from_snapshot`]). A
//! forged snapshot, or a forged `link`, would need a second preimage of the hash.
//!
//! [`Wsv::from_snapshot`]: crate::Wsv::from_snapshot
//!
//! The encoding is deterministic: the same state gives the same bytes, chunk boundaries
//! included, on every peer, whatever order its hash maps iterate in. Entries are byte strings
//! `u32 key length | key | u32 value length | value`, all integers little-endian:
//!
//! 1. one header entry, key `[0]`, value `postcard(Meta)`;
//! 2. the world, encoded as wsv/src/commitment.rs encodes writes (a table tag and the postcard
//!    encoding of the identifier; `0x01` and the postcard encoding of the value), sorted by key;
//! 3. the replay memory, key `[8] || payload hash`, value `0x01 || postcard(expiry)`, in the
//!    guard's own order (by expiry second, then as recorded), which every peer shares because it
//!    follows from the blocks.
//!
//! Per-account recent transactions are an index for queries, not state: a node restored from a
//! snapshot lists only what it committed itself.

use std::collections::{BTreeSet, VecDeque};

use kasane_model::codec;
use kasane_model::hash::Hash;
use kasane_model::{BlockHeader, PublicKey};
use serde::{Deserialize, Serialize};

use crate::commitment::{
    Encoded, TAG_ACCOUNT, TAG_ASSET, TAG_ASSET_DEFINITION, TAG_DOMAIN, TAG_PEER, TAG_RETIRED, TAG_STORE,
};
use crate::replay::{FrozenEntries, ReplayGuard};
use crate::world::World;

/// Heights between checkpoints unless a chain says otherwise: one Kura chunk, so that a store
/// restored from a snapshot at `c` starts with a whole chunk.
pub const CHECKPOINT_INTERVAL: u64 = 100;
/// Heights between a checkpoint and the block whose commitment binds its root, unless the
/// interval is shorter ([`binding_delay`]): at a few hundred milliseconds a block under load,
/// over a second for the encoding to finish off the commit path.
pub const CHECKPOINT_BINDING_DELAY: u64 = 8;
/// A chunk is cut after the entry that takes it to this many bytes.
pub const CHUNK_BYTES_TARGET: usize = 1 << 20;
/// Largest chunk a restore accepts: the target plus one entry, which the transaction size
/// limit bounds far below this.
pub const CHUNK_BYTES_MAX: usize = 8 << 20;

const CHUNK_DOMAIN: &[u8] = b"kasane:snapshot-chunk:v1";
const ROOT_DOMAIN: &[u8] = b"kasane:snapshot-root:v1";
const CHECKPOINT_DOMAIN: &[u8] = b"kasane:checkpoint:v1";

const TAG_META: u8 = 0;
const TAG_REPLAY: u8 = 8;

/// The state that is not the world or the replay memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    height: u64,
    last_timestamp_ms: u64,
    transactions: u64,
    leader_failures: Vec<(u64, Vec<PublicKey>)>,
}

/// The encoded state at a checkpoint height: what a validator serves to nodes that restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    height: u64,
    chunks: Vec<Vec<u8>>,
    manifest: Vec<Hash>,
    root: Hash,
    entries: u64,
}

/// Why a snapshot could not be restored. Nothing is half-restored: the caller keeps what it had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot has no chunks")]
    Empty,
    #[error("chunk {index}: {bytes} bytes is over the limit of {CHUNK_BYTES_MAX}")]
    ChunkTooLarge { index: usize, bytes: usize },
    #[error("chunk {index}: an entry is cut short at byte {offset}")]
    Truncated { index: usize, offset: usize },
    #[error("chunk {index}, entry at byte {offset}: {reason}")]
    Malformed {
        index: usize,
        offset: usize,
        reason: String,
    },
    #[error("the first entry is not the snapshot header")]
    NoHeader,
    #[error("chunk {index}, entry at byte {offset}: out of the canonical order")]
    OutOfOrder { index: usize, offset: usize },
    #[error("a snapshot of height {found} for a header of height {expected}")]
    WrongHeight { expected: u64, found: u64 },
    #[error("height {height} is not a checkpoint (every {interval} heights)")]
    NotACheckpoint { height: u64, interval: u64 },
    #[error("the chunks are not the canonical encoding of the state they hold (root {computed}, received {received})")]
    NotCanonical { received: Hash, computed: Hash },
}

/// The hash of one chunk, as listed in a manifest.
pub fn chunk_hash(bytes: &[u8]) -> Hash {
    Hash::of_parts(&[CHUNK_DOMAIN, &(bytes.len() as u64).to_le_bytes(), bytes])
}

/// The root of a snapshot of height `height` whose chunks hash to `manifest`.
pub fn root_of(height: u64, manifest: &[Hash]) -> Hash {
    use blake2::Digest;
    let mut hasher = kasane_model::hash::Blake2b256::new();
    hasher.update(ROOT_DOMAIN);
    hasher.update(height.to_le_bytes());
    hasher.update((manifest.len() as u64).to_le_bytes());
    for hash in manifest {
        hasher.update(hash.as_bytes());
    }
    Hash(hasher.finalize().into())
}

/// Heights between a checkpoint and the block that binds its root, for a chain whose
/// checkpoints are `interval` heights apart: [`CHECKPOINT_BINDING_DELAY`], or the interval if
/// that is shorter, so that a checkpoint is bound before the next one is taken.
pub fn binding_delay(interval: u64) -> u64 {
    CHECKPOINT_BINDING_DELAY.min(interval.max(1))
}

/// The checkpoint whose root block `height` binds, if it binds one.
pub fn bound_checkpoint(height: u64, interval: u64) -> Option<u64> {
    let checkpoint = height.checked_sub(binding_delay(interval))?;
    (checkpoint > 0 && checkpoint % interval.max(1) == 0).then_some(checkpoint)
}

/// The newest checkpoint whose binding block is at or below `height`, if any.
pub fn newest_bound_checkpoint(height: u64, interval: u64) -> Option<u64> {
    let interval = interval.max(1);
    let checkpoint = height.saturating_sub(binding_delay(interval)) / interval * interval;
    (checkpoint > 0).then_some(checkpoint)
}

/// The commitment of the block that binds a checkpoint: its ordinary commitment (`link`) bound
/// to the checkpoint's root.
pub fn checkpoint_commitment(link: &Hash, root: &Hash) -> Hash {
    Hash::of_parts(&[CHECKPOINT_DOMAIN, link.as_bytes(), root.as_bytes()])
}

/// Cuts entries into chunks of about [`CHUNK_BYTES_TARGET`].
struct ChunkWriter {
    chunks: Vec<Vec<u8>>,
    current: Vec<u8>,
    entries: u64,
}

impl ChunkWriter {
    fn new() -> ChunkWriter {
        ChunkWriter {
            chunks: Vec::new(),
            current: Vec::with_capacity(CHUNK_BYTES_TARGET + 4096),
            entries: 0,
        }
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        self.current.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.current.extend_from_slice(key);
        self.current.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.current.extend_from_slice(value);
        self.entries += 1;
        if self.current.len() >= CHUNK_BYTES_TARGET {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK_BYTES_TARGET + 4096));
            self.chunks.push(full);
        }
    }

    fn finish(mut self) -> (Vec<Vec<u8>>, u64) {
        if !self.current.is_empty() {
            self.current.shrink_to_fit();
            self.chunks.push(self.current);
        }
        (self.chunks, self.entries)
    }
}

/// What a snapshot's entries restore, before it becomes a [`crate::Wsv`].
pub(crate) struct Restored {
    pub(crate) world: World,
    pub(crate) replay: ReplayGuard,
    pub(crate) last_timestamp_ms: u64,
    pub(crate) transactions: u64,
    pub(crate) leader_failures: VecDeque<(u64, Vec<PublicKey>)>,
}

impl Snapshot {
    /// Encodes the state at `height` from its parts ([`crate::Wsv`] does at every checkpoint).
    pub fn encode(
        height: u64,
        world: &World,
        replay: &FrozenEntries,
        last_timestamp_ms: u64,
        transactions: u64,
        leader_failures: &VecDeque<(u64, Vec<PublicKey>)>,
    ) -> Snapshot {
        let mut writer = ChunkWriter::new();
        let meta = Meta {
            height,
            last_timestamp_ms,
            transactions,
            leader_failures: leader_failures.iter().cloned().collect(),
        };
        writer.push(&[TAG_META], &codec::encode_body(&meta));
        let mut encoded = encode_world(world);
        encoded.sort();
        for (key, value) in encoded.iter() {
            writer.push(key, value);
        }
        drop(encoded);
        let mut key = [0u8; 33];
        key[0] = TAG_REPLAY;
        let mut value = Vec::with_capacity(11);
        for (payload, expiry) in replay.entries() {
            key[1..].copy_from_slice(payload.as_bytes());
            value.clear();
            value.push(1);
            codec::encode_body_into(expiry, &mut value);
            writer.push(&key, &value);
        }
        let (chunks, entries) = writer.finish();
        let manifest: Vec<Hash> = chunks.iter().map(|chunk| chunk_hash(chunk)).collect();
        Snapshot {
            root: root_of(height, &manifest),
            height,
            chunks,
            manifest,
            entries,
        }
    }

    /// The height of the state it holds.
    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn root(&self) -> Hash {
        self.root
    }

    /// The hash of each chunk, in order.
    pub fn manifest(&self) -> &[Hash] {
        &self.manifest
    }

    pub fn chunk(&self, index: usize) -> Option<&[u8]> {
        self.chunks.get(index).map(Vec::as_slice)
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Entries encoded: the header, the world's and the replay memory's.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes of all chunks.
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

fn encode_world(world: &World) -> Encoded {
    let count = world.domains.len()
        + world.accounts.len()
        + world.asset_definitions.len()
        + world.assets.len()
        + world.peers.len()
        + world.retired.len()
        + world.store.len();
    let mut encoded = Encoded::with_capacity(count);
    for (key, value) in &world.domains {
        encoded.push(TAG_DOMAIN, key, Some(value));
    }
    for (key, value) in &world.accounts {
        encoded.push(TAG_ACCOUNT, key, Some(value));
    }
    for (key, value) in &world.asset_definitions {
        encoded.push(TAG_ASSET_DEFINITION, key, Some(value));
    }
    for (key, balance) in &world.assets {
        encoded.push(TAG_ASSET, key, Some(balance));
    }
    for key in &world.peers {
        encoded.push(TAG_PEER, key, Some(&()));
    }
    for key in world.retired.keys() {
        encoded.push(TAG_RETIRED, key, Some(&()));
    }
    for (key, value) in &world.store {
        encoded.push(TAG_STORE, key, Some(value));
    }
    encoded
}

/// One entry of a chunk: (chunk index, offset, key, value).
type Entry<'a> = (usize, usize, &'a [u8], &'a [u8]);

/// Walks the entries of a list of chunks.
struct Entries<'a, C: AsRef<[u8]>> {
    chunks: &'a [C],
    index: usize,
    offset: usize,
}

impl<'a, C: AsRef<[u8]>> Entries<'a, C> {
    fn next_entry(&mut self) -> Option<Result<Entry<'a>, SnapshotError>> {
        loop {
            let chunk = self.chunks.get(self.index)?.as_ref();
            if self.offset < chunk.len() {
                let (index, offset) = (self.index, self.offset);
                let truncated = SnapshotError::Truncated { index, offset };
                let mut at = offset;
                let mut field = || -> Option<&'a [u8]> {
                    let length = u32::from_le_bytes(chunk.get(at..at + 4)?.try_into().ok()?) as usize;
                    let bytes = chunk.get(at + 4..(at + 4).checked_add(length)?)?;
                    at += 4 + length;
                    Some(bytes)
                };
                let entry = field().and_then(|key| Some((key, field()?)));
                return Some(match entry {
                    Some((key, value)) => {
                        self.offset = at;
                        Ok((index, offset, key, value))
                    }
                    None => Err(truncated),
                });
            }
            self.index += 1;
            self.offset = 0;
        }
    }
}

fn malformed(index: usize, offset: usize, reason: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Malformed {
        index,
        offset,
        reason: reason.to_string(),
    }
}

/// Decodes the identifier after a key's tag and a value after its presence byte.
fn decode_pair<K: serde::de::DeserializeOwned, V: serde::de::DeserializeOwned>(
    index: usize,
    offset: usize,
    key: &[u8],
    value: &[u8],
) -> Result<(K, V), SnapshotError> {
    let key = codec::decode_body::<K>("snapshot key", &key[1..]).map_err(|error| malformed(index, offset, error))?;
    let value = match value.split_first() {
        Some((1, body)) => {
            codec::decode_body::<V>("snapshot value", body).map_err(|error| malformed(index, offset, error))?
        }
        _ => return Err(malformed(index, offset, "a value must start with 0x01")),
    };
    Ok((key, value))
}

/// Restores the state a snapshot of height `height` holds. Checks only the structure: the
/// caller checks the root (canonical re-encoding, then the binding block's commitment).
pub(crate) fn restore<C: AsRef<[u8]>>(height: u64, chunks: &[C]) -> Result<Restored, SnapshotError> {
    if chunks.is_empty() {
        return Err(SnapshotError::Empty);
    }
    for (index, chunk) in chunks.iter().enumerate() {
        let bytes = chunk.as_ref().len();
        if bytes > CHUNK_BYTES_MAX {
            return Err(SnapshotError::ChunkTooLarge { index, bytes });
        }
    }
    let mut entries = Entries {
        chunks,
        index: 0,
        offset: 0,
    };
    let meta: Meta = match entries.next_entry() {
        Some(Ok((index, offset, key, value))) if key == [TAG_META] => {
            codec::decode_body("snapshot header", value).map_err(|error| malformed(index, offset, error))?
        }
        Some(Err(error)) => return Err(error),
        _ => return Err(SnapshotError::NoHeader),
    };
    if meta.height != height {
        return Err(SnapshotError::WrongHeight {
            expected: height,
            found: meta.height,
        });
    }
    let mut world = World::default();
    let mut replay = Vec::new();
    let mut previous_key: Option<&[u8]> = None;
    while let Some(entry) = entries.next_entry() {
        let (index, offset, key, value) = entry?;
        let Some(&tag) = key.first() else {
            return Err(malformed(index, offset, "an empty key"));
        };
        if tag == TAG_REPLAY {
            let payload: [u8; 32] = key[1..]
                .try_into()
                .map_err(|_| malformed(index, offset, "a replay key is a tag and 32 bytes"))?;
            let expiry = match value.split_first() {
                Some((1, body)) => codec::decode_body::<u64>("replay expiry", body),
                _ => return Err(malformed(index, offset, "a value must start with 0x01")),
            }
            .map_err(|error| malformed(index, offset, error))?;
            replay.push((Hash(payload), expiry));
            continue;
        }
        // World entries come sorted and before the replay memory.
        if !replay.is_empty() || previous_key.is_some_and(|previous| previous >= key) {
            return Err(SnapshotError::OutOfOrder { index, offset });
        }
        previous_key = Some(key);
        match tag {
            TAG_DOMAIN => {
                let (id, domain) = decode_pair(index, offset, key, value)?;
                world.domains.insert(id, domain);
            }
            TAG_ACCOUNT => {
                let (id, account) = decode_pair(index, offset, key, value)?;
                world.accounts.insert(id, account);
            }
            TAG_ASSET_DEFINITION => {
                let (id, definition) = decode_pair(index, offset, key, value)?;
                world.asset_definitions.insert(id, definition);
            }
            TAG_ASSET => {
                let (id, balance): (kasane_model::ids::AssetId, u128) = decode_pair(index, offset, key, value)?;
                if balance == 0 {
                    return Err(malformed(index, offset, "a zero balance is not stored"));
                }
                world
                    .holdings
                    .entry(id.account.clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(id.definition.clone());
                world.assets.insert(id, balance);
            }
            TAG_PEER => {
                let (key, ()) = decode_pair(index, offset, key, value)?;
                world.peers.insert(key);
            }
            TAG_RETIRED => {
                let (id, ()) = decode_pair(index, offset, key, value)?;
                world.retired.insert(id, ());
            }
            TAG_STORE => {
                let (key, value) = decode_pair(index, offset, key, value)?;
                world.store.insert(key, value);
            }
            _ => return Err(malformed(index, offset, format!("unknown tag {tag}"))),
        }
    }
    Ok(Restored {
        world,
        replay: ReplayGuard::from_entries(replay),
        last_timestamp_ms: meta.last_timestamp_ms,
        transactions: meta.transactions,
        leader_failures: meta.leader_failures.into(),
    })
}

/// Checks that `header` can head a restored state: its height is a checkpoint.
pub(crate) fn check_checkpoint_height(header: &BlockHeader, interval: u64) -> Result<(), SnapshotError> {
    if header.height == 0 || header.height % interval != 0 {
        return Err(SnapshotError::NotACheckpoint {
            height: header.height,
            interval,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay_of(count: u64) -> ReplayGuard {
        let mut guard = ReplayGuard::default();
        for block in 0..count / 1_000 {
            let entries = (0..1_000)
                .map(|index| (Hash::of(&(block * 1_000 + index).to_le_bytes()), 60_000 + block * 10))
                .collect();
            guard.record_block(entries, block * 10);
        }
        guard
    }

    /// A large replay memory spans several chunks, each near the target size, and restores to
    /// the same encoding whatever order the new maps iterate in.
    #[test]
    fn many_chunks_round_trip() {
        let replay = replay_of(60_000);
        let failures = VecDeque::from([(7, vec![PublicKey([3; 32])])]);
        let snapshot = Snapshot::encode(200, &World::default(), &replay.frozen(), 1_234, 99, &failures);
        assert!(snapshot.chunk_count() >= 2, "{} chunks", snapshot.chunk_count());
        for index in 0..snapshot.chunk_count() - 1 {
            let bytes = snapshot.chunk(index).map_or(0, <[u8]>::len);
            assert!(
                (CHUNK_BYTES_TARGET..CHUNK_BYTES_TARGET + 64).contains(&bytes),
                "{bytes}"
            );
        }
        assert_eq!(snapshot.entries(), 60_001);
        let restored = restore(200, &snapshot.chunks).expect("restores");
        assert_eq!(restored.replay.len(), 60_000);
        assert_eq!(restored.transactions, 99);
        assert_eq!(restored.leader_failures, failures);
        let again = Snapshot::encode(
            200,
            &restored.world,
            &restored.replay.frozen(),
            1_234,
            99,
            &restored.leader_failures,
        );
        assert_eq!(again, snapshot);
        // The restored guard answers like the original.
        let probe = Hash::of(&59_999u64.to_le_bytes());
        assert_eq!(restored.replay.seen(&probe, 60_000), replay.seen(&probe, 60_000));
    }

    /// Block `c + D` binds checkpoint `c`; nothing else binds one; the delay never reaches the
    /// next checkpoint.
    #[test]
    fn which_block_binds_which_checkpoint() {
        assert_eq!(binding_delay(100), CHECKPOINT_BINDING_DELAY);
        assert_eq!(binding_delay(3), 3);
        assert_eq!(binding_delay(0), 1);
        assert_eq!(bound_checkpoint(108, 100), Some(100));
        assert_eq!(bound_checkpoint(101, 100), None);
        assert_eq!(bound_checkpoint(8, 100), None);
        assert_eq!(bound_checkpoint(6, 3), Some(3));
        assert_eq!(bound_checkpoint(3, 3), None);
        assert_eq!(bound_checkpoint(2, 1), Some(1));
        assert_eq!(newest_bound_checkpoint(107, 100), None);
        assert_eq!(newest_bound_checkpoint(108, 100), Some(100));
        assert_eq!(newest_bound_checkpoint(307, 100), Some(200));
        for height in 0..1_000 {
            if let Some(checkpoint) = bound_checkpoint(height, 100) {
                assert_eq!(newest_bound_checkpoint(height, 100), Some(checkpoint));
            }
        }
    }

    /// A replay entry whose expiry does not decode, or a key of the wrong length, is an error.
    #[test]
    fn malformed_replay_entries_are_errors() {
        let mut writer = ChunkWriter::new();
        let meta = Meta {
            height: 5,
            last_timestamp_ms: 0,
            transactions: 0,
            leader_failures: Vec::new(),
        };
        writer.push(&[TAG_META], &codec::encode_body(&meta));
        writer.push(&[TAG_REPLAY, 1, 2, 3], &[1, 0]);
        let (chunks, _) = writer.finish();
        assert!(matches!(restore(5, &chunks), Err(SnapshotError::Malformed { .. })));
    }
}
