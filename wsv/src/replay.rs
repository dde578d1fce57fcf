//! Replay protection: a payload hash committed within its time-to-live is refused.
//!
//! Each payload hash is remembered with its expiry time, and filed under its expiry second.
//! Every block drops the seconds that have passed at its timestamp, and what expired of the
//! current one: block timestamps never
//! decrease, so the memory held is what expires after the latest block, that is the
//! transactions committed over the time-to-live clients chose (at most `TTL_MS_MAX`). (Version
//! 1 filed entries by block and dropped a block once all its entries had expired: one entry of
//! the 10-minute maximum, in the genesis block say, held every later block behind it, so a load
//! with a 60 s time-to-live kept 10 minutes of entries.) Whether a payload counts as seen
//! depends only on its expiry, never on when memory is freed.

use std::collections::BTreeMap;
use std::sync::Arc;

use kasane_model::Hash;

use crate::world::StateMap;

/// Tables the remembered payloads are spread over. A hash table that grows rehashes every
/// entry in one step: at a million entries and more, a pause of hundreds of milliseconds on the
/// consensus path of every node at once. Spread over 1,024 tables, each growth rehashes a
/// thousandth of the entries, in a table small enough to stay in cache (1 MB at 12 million
/// entries, ten minutes at 20,000 tx/s), and the tables reach their thresholds tens of blocks
/// apart, not all together (docs/BENCHMARKS.md, "The replay memory in shards").
const SHARDS: usize = 1_024;

/// Width of an expiry bucket.
const BUCKET_MS: u64 = 1_000;

/// The memory of committed payload hashes.
///
/// The payload -> expiry map is split into [`SHARDS`] tables, chosen by a hash of the payload
/// keyed per process (its own key, not the tables' own, so that the entries of one table do not
/// share the bits its buckets are found by): a client who grinds payload hashes cannot pile its
/// entries into one table and bring back the one-step growth. Which table holds a payload
/// changes nothing but speed; what the guard answers and the order of [`ReplayGuard::entries`]
/// follow from the blocks alone.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    shards: Vec<StateMap<Hash, u64>>,
    chooser: ahash::RandomState,
    len: usize,
    /// Expiry second -> the payloads that expire in it with their expiry, in the order they
    /// were recorded. Shared with the copies [`ReplayGuard::frozen`] hands out, and copied on
    /// the first write after one was taken: a checkpoint copies nothing at once.
    buckets: BTreeMap<u64, Arc<Vec<(Hash, u64)>>>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard {
            shards: (0..SHARDS).map(|_| StateMap::default()).collect(),
            chooser: ahash::RandomState::new(),
            len: 0,
            buckets: BTreeMap::new(),
        }
    }
}

impl ReplayGuard {
    /// Whether `payload` was committed and has not expired at `now_ms`.
    pub fn seen(&self, payload: &Hash, now_ms: u64) -> bool {
        self.expiry(payload).is_some_and(|expiry| expiry >= now_ms)
    }

    fn shard(&self, payload: &Hash) -> usize {
        (self.chooser.hash_one(payload) >> (64 - SHARDS.trailing_zeros())) as usize
    }

    fn expiry(&self, payload: &Hash) -> Option<u64> {
        self.shards[self.shard(payload)].get(payload).copied()
    }

    /// Remembers a block's payload hashes with their expiry times, and forgets what expired
    /// before `now_ms` (the block's timestamp).
    pub fn record_block(&mut self, entries: Vec<(Hash, u64)>, now_ms: u64) {
        // Whole buckets whose second has passed, then the expired part of the first one left.
        while let Some(mut first) = self.buckets.first_entry() {
            let whole = (*first.key() + 1) * BUCKET_MS <= now_ms;
            let expired: Vec<(Hash, u64)> = if whole {
                Arc::unwrap_or_clone(first.remove())
            } else {
                let bucket = Arc::make_mut(first.get_mut());
                let (gone, kept): (Vec<_>, Vec<_>) = bucket.drain(..).partition(|(_, expiry)| *expiry < now_ms);
                *bucket = kept;
                if bucket.is_empty() {
                    first.remove();
                }
                gone
            };
            for (hash, expiry) in expired {
                let shard = self.shard(&hash);
                let table = &mut self.shards[shard];
                // A later block may have re-added the same payload after it expired; keep it.
                if table.get(&hash) == Some(&expiry) {
                    table.remove(&hash);
                    self.len -= 1;
                }
            }
            if !whole {
                break;
            }
        }
        // A block's entries mostly share an expiry second: file them a run at a time, one
        // look-up in the bucket map per run.
        let mut run: Vec<(Hash, u64)> = Vec::new();
        let mut run_second = None;
        for (hash, expiry) in entries {
            self.insert(hash, expiry);
            let second = expiry / BUCKET_MS;
            if run_second != Some(second) {
                if let Some(previous) = run_second {
                    Arc::make_mut(self.buckets.entry(previous).or_default()).append(&mut run);
                }
                run_second = Some(second);
            }
            run.push((hash, expiry));
        }
        if let Some(second) = run_second {
            Arc::make_mut(self.buckets.entry(second).or_default()).append(&mut run);
        }
    }

    /// Files `hash` in its table; an entry for the same payload there is older, and the new one
    /// replaces it.
    fn insert(&mut self, hash: Hash, expiry: u64) {
        let shard = self.shard(&hash);
        if self.shards[shard].insert(hash, expiry).is_none() {
            self.len += 1;
        }
    }

    /// Every remembered (payload, expiry), by expiry second, then in the order recorded: an
    /// order that follows from the blocks alone, so every peer walks the same sequence
    /// (snapshots, wsv/src/snapshot.rs).
    pub fn entries(&self) -> impl Iterator<Item = &(Hash, u64)> {
        self.buckets.values().flat_map(|bucket| bucket.iter())
    }

    /// The entries as they are now, for encoding elsewhere while the guard goes on: the
    /// buckets are shared, not copied, until the guard next writes to each.
    pub fn frozen(&self) -> FrozenEntries {
        FrozenEntries {
            buckets: self.buckets.clone(),
        }
    }

    /// The guard that remembers `entries`, given in the order of [`ReplayGuard::entries`].
    pub fn from_entries(entries: Vec<(Hash, u64)>) -> ReplayGuard {
        let mut guard = ReplayGuard::default();
        for shard in &mut guard.shards {
            shard.reserve(entries.len() / SHARDS + entries.len() / (4 * SHARDS));
        }
        for (hash, expiry) in entries {
            // A payload is filed once at a time (it is re-added only after its entry expired and
            // was dropped); should a list repeat one, the latest expiry is the one that counts.
            let shard = guard.shard(&hash);
            match guard.shards[shard].entry(hash) {
                std::collections::hash_map::Entry::Occupied(mut kept) => {
                    let latest = (*kept.get()).max(expiry);
                    kept.insert(latest);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(expiry);
                    guard.len += 1;
                }
            }
            Arc::make_mut(guard.buckets.entry(expiry / BUCKET_MS).or_default()).push((hash, expiry));
        }
        guard
    }

    /// Bytes the guard's tables hold (estimate, `kasane_model::footprint`).
    pub fn footprint(&self) -> usize {
        use kasane_model::footprint::{map_bytes, vec_bytes};
        self.shards.iter().map(map_bytes).sum::<usize>()
            + self.buckets.values().map(|bucket| vec_bytes(bucket)).sum::<usize>()
            // The bucket map's own nodes: a key, a vector header and the node's share, roughly.
            + self.buckets.len() * 64
    }

    /// Payload hashes remembered now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The entries of a [`ReplayGuard`] at one moment ([`ReplayGuard::frozen`]), in the order of
/// [`ReplayGuard::entries`].
#[derive(Debug, Clone, Default)]
pub struct FrozenEntries {
    buckets: BTreeMap<u64, Arc<Vec<(Hash, u64)>>>,
}

impl FrozenEntries {
    pub fn entries(&self) -> impl Iterator<Item = &(Hash, u64)> {
        self.buckets.values().flat_map(|bucket| bucket.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_then_forgets() {
        let mut guard = ReplayGuard::default();
        let a = Hash::of(b"a");
        let b = Hash::of(b"b");
        guard.record_block(vec![(a, 100), (b, 2_300)], 10);
        assert!(guard.seen(&a, 50));
        assert!(guard.seen(&a, 100));
        assert!(!guard.seen(&a, 101));
        // Each entry is freed by the first block after its expiry, whatever else is kept.
        guard.record_block(vec![], 100);
        assert_eq!(guard.len(), 2);
        guard.record_block(vec![], 101);
        assert_eq!(guard.len(), 1);
        assert!(guard.seen(&b, 1_000));
        guard.record_block(vec![], 2_301);
        assert_eq!(guard.len(), 0);
        assert!(guard.buckets.is_empty());
    }

    /// A frozen copy keeps the entries of its moment while the guard adds to, drains and drops
    /// the buckets it shares.
    #[test]
    fn a_frozen_copy_does_not_follow_the_guard() {
        let mut guard = ReplayGuard::default();
        let hash = |value: u64| Hash::of(&value.to_le_bytes());
        guard.record_block(vec![(hash(1), 1_500), (hash(2), 2_500)], 0);
        let frozen = guard.frozen();
        let before: Vec<(Hash, u64)> = guard.entries().copied().collect();
        // Adds to the bucket of second 2, drains part of second 1's, then drops it whole.
        guard.record_block(vec![(hash(3), 2_600)], 1_000);
        guard.record_block(vec![], 2_000);
        assert_eq!(frozen.entries().copied().collect::<Vec<_>>(), before);
        assert_eq!(
            guard.entries().copied().collect::<Vec<_>>(),
            vec![(hash(2), 2_500), (hash(3), 2_600)]
        );
    }

    /// One long-lived entry recorded first does not hold back the short-lived ones after it:
    /// the soak with a 60 s time-to-live kept 1.8 million entries (10 minutes of them) behind the
    /// genesis block's 10-minute ones before the guard freed by expiry.
    #[test]
    fn a_long_time_to_live_holds_nothing_else_back() {
        let mut guard = ReplayGuard::default();
        let hash = |value: u64| Hash::of(&value.to_le_bytes());
        guard.record_block(vec![(hash(u64::MAX), 600_000)], 0);
        for block in 0..100u64 {
            let now = block * 1_000;
            let entries = (0..10).map(|index| (hash(block * 10 + index), now + 60_000)).collect();
            guard.record_block(entries, now);
        }
        // At 99 s, what expires at 99 s or later is kept: blocks 39..=99 (expiries 99 s..159 s)
        // and the long one; the rest is gone.
        assert_eq!(guard.len(), 61 * 10 + 1);
        assert!(guard.seen(&hash(u64::MAX), 99_000));
        assert!(!guard.seen(&hash(0), 99_000));
    }

    /// Through the growth of every table, nothing is lost or kept past its expiry, whatever the
    /// order of growth, expiry and re-adds.
    #[test]
    fn grows_and_loses_nothing() {
        let mut guard = ReplayGuard::default();
        let hash = |value: u64| Hash::of(&value.to_le_bytes());
        // 300 blocks of 50 entries; block b expires at 1_000 + 10 * b.
        for block in 0..300u64 {
            let entries = (0..50)
                .map(|index| (hash(block * 50 + index), 1_000 + 10 * block))
                .collect();
            guard.record_block(entries, 900 + 10 * block);
        }
        // At 900 + 10 * 299 = 3890, blocks up to 288 have expired and been dropped.
        let now = 3_890;
        for value in 0..300 * 50 {
            let expiry = 1_000 + 10 * (value / 50);
            assert_eq!(guard.seen(&hash(value), now), expiry >= now, "entry {value}");
        }
        assert_eq!(
            guard.len(),
            guard.buckets.values().map(|bucket| bucket.len()).sum::<usize>()
        );
        // Re-adding an expired payload remembers it again.
        guard.record_block(vec![(hash(0), 10_000)], now + 1);
        assert!(guard.seen(&hash(0), now + 1));
    }

    /// The payloads are spread over the tables: none holds more than twice its share, so no
    /// table's growth rehashes much more than a thousandth of the entries.
    #[test]
    fn entries_are_spread_over_the_tables() {
        let mut guard = ReplayGuard::default();
        let hash = |value: u64| Hash::of(&value.to_le_bytes());
        let total = 200 * SHARDS as u64;
        guard.record_block((0..total).map(|value| (hash(value), 5_000)).collect(), 0);
        assert_eq!(guard.len(), total as usize);
        let largest = guard.shards.iter().map(|shard| shard.len()).max().expect("tables");
        assert!(largest < 2 * 200, "largest table holds {largest} of an average of 200");
        assert!((0..total).all(|value| guard.seen(&hash(value), 5_000)));
        guard.record_block(vec![], 5_001);
        assert!(guard.is_empty());
        assert!(guard.shards.iter().all(|shard| shard.is_empty()));
    }
}
