//! Replay protection: a payload hash committed within its time-to-live is refused.
//!
//! Each payload hash is remembered with its expiry time. Entries are grouped by the block that
//! added them and dropped a whole block at a time once every entry of that block has expired:
//! block timestamps never decrease and no time-to-live exceeds `TTL_MS_MAX`, so the memory held
//! is bounded by the transactions of the last `TTL_MS_MAX` milliseconds of blocks.

use std::collections::VecDeque;

use kasane_model::Hash;

use crate::world::StateMap;

/// Entries moved from the draining table per entry recorded: enough that the draining table is
/// empty long before the current one (twice its size) fills.
const MIGRATED_PER_INSERT: usize = 4;

/// The memory of committed payload hashes.
///
/// A hash map that grows rehashes every entry in one step; at a million entries and more that is
/// a pause of hundreds of milliseconds on the consensus path, on every node at once (seen in
/// long benchmark runs, docs/BENCHMARKS.md). So the guard grows incrementally: when the current
/// table is full, it becomes the draining table, a new table of twice the capacity takes the
/// inserts, and every insert moves a few entries across, walking the blocks in order. Lookups
/// look in both.
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    current: StateMap<Hash, u64>,
    draining: StateMap<Hash, u64>,
    /// Per block, in order: the latest expiry among its entries, and the entries.
    blocks: VecDeque<(u64, Vec<Hash>)>,
    /// Where the move from `draining` stands: (index in `blocks`, index in that block's
    /// entries). Every entry of `draining` belongs to a block at or after it.
    cursor: (usize, usize),
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

    /// Remembers a block's payload hashes with their expiry times, and forgets blocks whose
    /// entries have all expired by `now_ms`.
    pub fn record_block(&mut self, entries: Vec<(Hash, u64)>, now_ms: u64) {
        while let Some((latest_expiry, _)) = self.blocks.front() {
            if *latest_expiry >= now_ms {
                break;
            }
            if let Some((_, hashes)) = self.blocks.pop_front() {
                for hash in hashes {
                    // A later block may have re-added the same payload after it expired; keep it.
                    if self.expiry(&hash).is_some_and(|expiry| expiry < now_ms) {
                        self.current.remove(&hash);
                        if !self.draining.is_empty() {
                            self.draining.remove(&hash);
                        }
                    }
                }
                self.cursor = match self.cursor {
                    (0, _) => (0, 0),
                    (block, position) => (block - 1, position),
                };
            }
        }
        if entries.is_empty() {
            return;
        }
        let latest = entries.iter().map(|(_, expiry)| *expiry).max().unwrap_or(0);
        let mut hashes = Vec::with_capacity(entries.len());
        for (hash, expiry) in entries {
            self.insert(hash, expiry);
            hashes.push(hash);
        }
        self.blocks.push_back((latest, hashes));
    }

    fn insert(&mut self, hash: Hash, expiry: u64) {
        if self.current.len() >= self.current.capacity() && self.draining.is_empty() && !self.current.is_empty() {
            let capacity = 2 * self.current.capacity();
            let full = std::mem::replace(
                &mut self.current,
                StateMap::with_capacity_and_hasher(capacity, Default::default()),
            );
            self.draining = full;
            self.cursor = (0, 0);
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
            let (block, position) = self.cursor;
            let Some((_, hashes)) = self.blocks.get(block) else {
                // Every block was walked: what is left (nothing, if the invariant holds) goes
                // across at once.
                let rest = std::mem::take(&mut self.draining);
                self.current.extend(rest);
                return;
            };
            match hashes.get(position) {
                Some(hash) => {
                    if let Some(expiry) = self.draining.remove(hash) {
                        self.current.insert(*hash, expiry);
                        count -= 1;
                    }
                    self.cursor = (block, position + 1);
                }
                None => self.cursor = (block + 1, 0),
            }
        }
        if self.draining.is_empty() && self.draining.capacity() > 0 {
            self.draining = StateMap::default();
        }
    }

    /// Payload hashes remembered now.
    pub fn len(&self) -> usize {
        self.current.len() + self.draining.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        guard.record_block(vec![(a, 100), (b, 300)], 10);
        assert!(guard.seen(&a, 50));
        assert!(guard.seen(&a, 100));
        assert!(!guard.seen(&a, 101));
        // The block is kept while any of its entries (b) is live.
        guard.record_block(vec![], 200);
        assert_eq!(guard.len(), 2);
        guard.record_block(vec![], 301);
        assert_eq!(guard.len(), 0);
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
            guard.blocks.iter().map(|(_, hashes)| hashes.len()).sum::<usize>()
        );
        // Re-adding an expired payload remembers it again.
        guard.record_block(vec![(hash(0), 10_000)], now + 1);
        assert!(guard.seen(&hash(0), now + 1));
    }
}
