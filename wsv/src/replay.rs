//! Replay protection: a payload hash committed within its time-to-live is refused.
//!
//! Each payload hash is remembered with its expiry time. Entries are grouped by the block that
//! added them and dropped a whole block at a time once every entry of that block has expired:
//! block timestamps never decrease and no time-to-live exceeds `TTL_MS_MAX`, so the memory held
//! is bounded by the transactions of the last `TTL_MS_MAX` milliseconds of blocks.

use std::collections::VecDeque;

use kasane_model::Hash;

use crate::world::StateMap;

#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    expiry_by_payload: StateMap<Hash, u64>,
    /// Per block, in order: the latest expiry among its entries, and the entries.
    blocks: VecDeque<(u64, Vec<Hash>)>,
}

impl ReplayGuard {
    /// Whether `payload` was committed and has not expired at `now_ms`.
    pub fn seen(&self, payload: &Hash, now_ms: u64) -> bool {
        self.expiry_by_payload
            .get(payload)
            .is_some_and(|expiry| *expiry >= now_ms)
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
                    if self.expiry_by_payload.get(&hash).is_some_and(|expiry| *expiry < now_ms) {
                        self.expiry_by_payload.remove(&hash);
                    }
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        let latest = entries.iter().map(|(_, expiry)| *expiry).max().unwrap_or(0);
        let mut hashes = Vec::with_capacity(entries.len());
        for (hash, expiry) in entries {
            self.expiry_by_payload.insert(hash, expiry);
            hashes.push(hash);
        }
        self.blocks.push_back((latest, hashes));
    }

    /// Payload hashes remembered now.
    pub fn len(&self) -> usize {
        self.expiry_by_payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expiry_by_payload.is_empty()
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
}
