//! What the consensus task publishes for the API: the status snapshot, transaction outcomes,
//! the event stream and metrics.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kasane_model::Hash;
use serde::Serialize;

/// The node's view of the chain, refreshed after every step of the consensus task.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    pub chain: String,
    pub public_key: String,
    pub height: u64,
    pub head_hash: String,
    pub view: u64,
    /// leader, proxy_tail, validating_peer, set_b or outsider, for the next height and view.
    pub role: String,
    /// The leader of the next height and view as this node sees it (public key, hex).
    pub leader: String,
    pub queue_len: usize,
    pub validators: usize,
    /// Transactions in the node's chain (every applied block, rejected ones included).
    pub transactions: u64,
    /// The highest height f + 1 validators say they committed (0 before they have spoken): a
    /// node far below it is catching up and refuses client transactions.
    pub cluster_height: u64,
    /// Payload hashes in replay memory (each kept until its time-to-live ends).
    pub replay_entries: usize,
    /// Client transactions still counting their f + 1 holders.
    pub holding: usize,
    /// The checkpoint this node's store was restored from while the blocks below it are still
    /// fetched (state sync); `None` once the store holds every block from genesis.
    pub store_base: Option<u64>,
    /// The blocks from genesis the store holds below `store_base` (its height when whole).
    pub store_lower_height: u64,
}

/// Where a transaction is, as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxState {
    Queued,
    Committed { height: u64 },
    Rejected { reason: String, height: Option<u64> },
}

struct TxEntry {
    state: TxState,
    submitted: Option<Instant>,
}

/// Outcomes of recent transactions by payload hash (and transaction hash), bounded: the oldest
/// entries are forgotten first.
pub struct TxTable {
    // ahash: a committed block inserts thousands of entries here; SipHash over 32-byte keys
    // showed in node profiles.
    entries: HashMap<Hash, TxEntry, ahash::RandomState>,
    by_tx_hash: HashMap<Hash, Hash, ahash::RandomState>,
    order: VecDeque<(Hash, Hash)>,
    capacity: usize,
}

impl std::fmt::Debug for TxTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxTable").field("entries", &self.entries.len()).finish()
    }
}

impl TxTable {
    /// A table of at most `capacity` transactions, allocated whole at once: growing a hash map
    /// of a million entries rehashes it in one step, which stalled every node's consensus task
    /// at once in long benchmark runs (docs/BENCHMARKS.md).
    pub fn new(capacity: usize) -> TxTable {
        TxTable {
            entries: HashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new()),
            by_tx_hash: HashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new()),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    fn insert(&mut self, payload: Hash, tx_hash: Hash, entry: TxEntry) {
        if self.entries.insert(payload, entry).is_none() {
            self.by_tx_hash.insert(tx_hash, payload);
            self.order.push_back((payload, tx_hash));
            while self.order.len() > self.capacity {
                if let Some((old_payload, old_tx)) = self.order.pop_front() {
                    self.entries.remove(&old_payload);
                    self.by_tx_hash.remove(&old_tx);
                }
            }
        }
    }

    /// A transaction this node admitted. It replaces an earlier admission refusal (say, a full
    /// queue) but nothing that happened in a block.
    pub fn queued(&mut self, payload: Hash, tx_hash: Hash, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&payload) {
            if matches!(entry.state, TxState::Rejected { height: None, .. }) {
                entry.state = TxState::Queued;
                entry.submitted = Some(now);
            }
        } else {
            self.insert(
                payload,
                tx_hash,
                TxEntry {
                    state: TxState::Queued,
                    submitted: Some(now),
                },
            );
        }
    }

    /// A transaction refused at admission; an earlier outcome (a duplicate of something queued
    /// or committed) is kept.
    pub fn refused(&mut self, payload: Hash, tx_hash: Hash, reason: String) {
        if !self.entries.contains_key(&payload) {
            self.insert(
                payload,
                tx_hash,
                TxEntry {
                    state: TxState::Rejected { reason, height: None },
                    submitted: None,
                },
            );
        }
    }

    /// A transaction in a committed block. Returns how long ago this node admitted it.
    pub fn in_block(&mut self, payload: Hash, tx_hash: Hash, state: TxState) -> Option<Duration> {
        match self.entries.get_mut(&payload) {
            Some(entry) => {
                // A payload commits once; a later copy rejected as a replay does not change that.
                if matches!(entry.state, TxState::Committed { .. }) {
                    return None;
                }
                entry.state = state;
                // Usually the same transaction hash `queued` recorded; a copy of the payload
                // with other signatures may have committed instead.
                if self.by_tx_hash.get(&tx_hash) != Some(&payload) {
                    self.by_tx_hash.insert(tx_hash, payload);
                }
                entry.submitted.take().map(|at| at.elapsed())
            }
            None => {
                self.insert(payload, tx_hash, TxEntry { state, submitted: None });
                None
            }
        }
    }

    /// Looks up by payload hash or transaction hash.
    pub fn get(&self, hash: &Hash) -> Option<(Hash, TxState)> {
        let payload = self.by_tx_hash.get(hash).copied().unwrap_or(*hash);
        self.entries.get(&payload).map(|entry| (payload, entry.state.clone()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What the event stream carries.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChainEvent {
    Block {
        height: u64,
        hash: String,
        transactions: usize,
        rejected: usize,
    },
    Transaction {
        hash: String,
        payload_hash: String,
        height: u64,
        committed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    ViewChange {
        height: u64,
        view: u64,
    },
}

/// A latency distribution in microseconds, up to an hour.
#[derive(Debug)]
pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Latency {
        // Bounds are constants within hdrhistogram's limits; auto-resize keeps it working if not.
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 2)
            .or_else(|_| Histogram::new(2))
            .map(|mut histogram| {
                histogram.auto(true);
                histogram
            });
        Latency(Mutex::new(
            histogram.expect("a 2-significant-digit histogram is always valid"),
        ))
    }
}

impl Latency {
    pub fn record(&self, elapsed: Duration) {
        if let Ok(mut histogram) = self.0.lock() {
            let _ = histogram.record((elapsed.as_micros() as u64).max(1));
        }
    }

    /// (count, sum in seconds, [(quantile, seconds)]).
    pub fn summary(&self) -> (u64, f64, Vec<(f64, f64)>) {
        let Ok(histogram) = self.0.lock() else {
            return (0, 0.0, Vec::new());
        };
        let count = histogram.len();
        let sum = histogram.mean() * count as f64 / 1e6;
        let quantiles = [0.5, 0.9, 0.99]
            .iter()
            .map(|quantile| (*quantile, histogram.value_at_quantile(*quantile) as f64 / 1e6))
            .collect();
        (count, sum, quantiles)
    }
}

/// Counters and gauges for /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub commits: AtomicU64,
    pub transactions_committed: AtomicU64,
    pub transactions_rejected: AtomicU64,
    pub view_changes: AtomicU64,
    pub submitted: AtomicU64,
    pub admission_refused: AtomicU64,
    pub queue_full_responses: AtomicU64,
    /// Admitted transactions answered as not acknowledged: f + 1 validators did not hold them
    /// within `api.hold_wait_ms`.
    pub not_held: AtomicU64,
    /// Transaction gossip dropped unchecked while the node was catching up.
    pub gossip_dropped_catching_up: AtomicU64,
    /// Syncs of the hold log that failed (R18b): what they carried was not answered as held.
    pub hold_sync_failures: AtomicU64,
    /// Transactions queued again from the hold log at start.
    pub holds_restored: AtomicU64,
    /// State sync: checkpoints restored and installed, restores abandoned (block sync then
    /// executes), and blocks appended below a restored checkpoint without execution.
    pub state_sync_restores: AtomicU64,
    pub state_sync_abandoned: AtomicU64,
    pub backfilled_blocks: AtomicU64,
    /// Proposals received as digests and rebuilt from the queue, and those of them that needed
    /// transactions fetched from their sender first.
    pub proposal_digests: AtomicU64,
    pub proposal_fetches: AtomicU64,
    /// Time the consensus task spent on a received proposal: validation, execution, voting.
    pub proposal_step: Latency,
    /// From admission on this node to commit, for transactions submitted here.
    pub commit_latency: Latency,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(value: u64) -> Hash {
        Hash::of(&value.to_le_bytes())
    }

    #[test]
    fn a_commit_is_never_overwritten_and_the_table_is_bounded() {
        let mut table = TxTable::new(3);
        table.queued(hash(1), hash(101), Instant::now());
        assert!(table
            .in_block(hash(1), hash(101), TxState::Committed { height: 4 })
            .is_some());
        table.refused(hash(1), hash(101), "already committed".into());
        table.in_block(
            hash(1),
            hash(101),
            TxState::Rejected {
                reason: "replay".into(),
                height: Some(5),
            },
        );
        assert_eq!(table.get(&hash(1)), Some((hash(1), TxState::Committed { height: 4 })));
        assert_eq!(table.get(&hash(101)), Some((hash(1), TxState::Committed { height: 4 })));
        for value in 2..=4 {
            table.refused(hash(value), hash(100 + value), "bad".into());
        }
        assert_eq!(table.len(), 3);
        assert_eq!(table.get(&hash(1)), None);
        assert_eq!(table.get(&hash(104)).map(|(payload, _)| payload), Some(hash(4)));
    }
}
