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

/// Entries moved from the draining table per entry recorded: enough that the draining table is
/// empty before the current one (twice its size) fills (after half as many inserts as it held,
/// when the current one is three quarters full), and no more: each move is a remove and an
/// insert in tables of tens of MB, each a cache miss. 4 made a block of 6,000 entries cost
/// 14-28 ms for 24 blocks after the growth at 458,752 entries; 2 costs 4-7 ms for about 40
/// (docs/BENCHMARKS.md).
const MIGRATED_PER_INSERT: usize = 2;

/// Width of an expiry bucket.
const BUCKET_MS: u64 = 1_000;

/// The memory of committed payload hashes.
///
/// A hash map that grows rehashes every entry in one step; at a million entries and more that is
/// a pause of hundreds of milliseconds on the consensus path, on every node at once (seen in
/// long benchmark runs, docs/BENCHMARKS.md). So the guard grows incrementally: when the current
/// table is full, it becomes the draining table, a new table of twice the capacity takes the
/// inserts, and every insert moves a few entries across, walking the buckets in order. Lookups
/// look in both.
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    current: StateMap<Hash, u64>,
    draining: StateMap<Hash, u64>,
    /// Expiry second -> the payloads that expire in it with their expiry, in the order they
    /// were recorded. Shared with the copies [`ReplayGuard::frozen`] hands out, and copied on
    /// the first write after one was taken: a checkpoint copies nothing at once.
    buckets: BTreeMap<u64, Arc<Vec<(Hash, u64)>>>,
    /// Where the move from `draining` stands: (bucket, index in it). Every entry of `draining`
    /// is filed in a bucket at or after it.
    cursor: (u64, usize),
}

impl ReplayGuard {
    /// Whether `payload` was committed and has not expired at `now_ms`.
    pub fn seen(&self, payload: &Hash, now_ms: u64) -> bool {
        self.expiry(payload).is_some_and(|expiry| expiry >= now_ms)
    }

    fn expiry(&self, payload: &Hash) -> Option<u64> {
        // The draining table is empty except while the guard grows: skip hashing for it then.
        self.current
            .get(payload)
            .or_else(|| {
                (!self.draining.is_empty())
                    .then(|| self.draining.get(payload))
                    .flatten()
            })
            .copied()
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
                // A later block may have re-added the same payload after it expired; keep it.
                if self.expiry(&hash) == Some(expiry) {
                    self.current.remove(&hash);
                    if !self.draining.is_empty() {
                        self.draining.remove(&hash);
                    }
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

    fn insert(&mut self, hash: Hash, expiry: u64) {
        if self.current.len() >= self.current.capacity() && self.draining.is_empty() && !self.current.is_empty() {
            let capacity = 2 * self.current.capacity();
            let full = std::mem::replace(
                &mut self.current,
                StateMap::with_capacity_and_hasher(capacity, Default::default()),
            );
            self.draining = full;
            self.cursor = (self.buckets.first_key_value().map_or(0, |(second, _)| *second), 0);
        }
        // An entry for the same payload in the draining table is older: the new one replaces it.
        if !self.draining.is_empty() {
            self.draining.remove(&hash);
        }
        self.current.insert(hash, expiry);
        self.migrate(MIGRATED_PER_INSERT);
    }

    /// Moves up to `count` entries from the draining table into the current one.
    fn migrate(&mut self, mut count: usize) {
        while count > 0 && !self.draining.is_empty() {
            let (second, position) = self.cursor;
            // The cursor's bucket, or the next one if it was dropped.
            let Some((&at, hashes)) = self.buckets.range(second..).next() else {
                // Every bucket was walked: what is left (nothing, if the invariant holds) goes
                // across at once.
                let rest = std::mem::take(&mut self.draining);
                self.current.extend(rest);
                return;
            };
            let position = if at == second { position } else { 0 };
            match hashes.get(position) {
                Some((hash, _)) => {
                    if let Some(expiry) = self.draining.remove(hash) {
                        self.current.insert(*hash, expiry);
                        count -= 1;
                    }
                    self.cursor = (at, position + 1);
                }
                None => self.cursor = (at + 1, 0),
            }
        }
        if self.draining.is_empty() && self.draining.capacity() > 0 {
            self.draining = StateMap::default();
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
        let mut current = StateMap::with_capacity_and_hasher(entries.len(), Default::default());
        let mut buckets: BTreeMap<u64, Arc<Vec<(Hash, u64)>>> = BTreeMap::new();
        for (hash, expiry) in entries {
            // A payload is filed once at a time (it is re-added only after its entry expired and
            // was dropped); should a list repeat one, the latest expiry is the one that counts.
            let kept = current.entry(hash).or_insert(expiry);
            *kept = (*kept).max(expiry);
            Arc::make_mut(buckets.entry(expiry / BUCKET_MS).or_default()).push((hash, expiry));
        }
        ReplayGuard {
            current,
            draining: StateMap::default(),
            buckets,
            cursor: (0, 0),
        }
    }

    /// Bytes the guard's tables hold (estimate, `kasane_model::footprint`).
    pub fn footprint(&self) -> usize {
        use kasane_model::footprint::{map_bytes, vec_bytes};
        map_bytes(&self.current)
            + map_bytes(&self.draining)
            + self.buckets.values().map(|bucket| vec_bytes(bucket)).sum::<usize>()
            // The bucket map's own nodes: a key, a vector header and the node's share, roughly.
            + self.buckets.len() * 64
    }

    /// Payload hashes remembered now.
    pub fn len(&self) -> usize {
        self.current.len() + self.draining.len()
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

    /// Growth moves entries across a few at a time; nothing is lost or kept past its expiry on
    /// the way, whatever the order of growth, expiry and re-adds.
    #[test]
    fn grows_incrementally_and_loses_nothing() {
        let mut guard = ReplayGuard::default();
        let hash = |value: u64| Hash::of(&value.to_le_bytes());
        let mut grew = false;
        // 300 blocks of 50 entries; block b expires at 1_000 + 10 * b.
        for block in 0..300u64 {
            let entries = (0..50)
                .map(|index| (hash(block * 50 + index), 1_000 + 10 * block))
                .collect();
            guard.record_block(entries, 900 + 10 * block);
            grew |= !guard.draining.is_empty();
            // The draining table empties before the current one fills (else the current one
            // would rehash in one step after all).
            assert!(guard.draining.is_empty() || guard.current.len() < guard.current.capacity());
        }
        assert!(grew, "the guard never grew through the draining table");
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
}
