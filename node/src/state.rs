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
///
/// The entries sit in a ring in the order they came; two hash maps find them by payload hash and
/// by transaction hash (a sequence number each, 40 bytes a slot). Everything is allocated at
/// start and never grows: the ring holds `capacity` entries, and the maps have twice as many
/// slots as entries they ever hold. A hash map churned (one entry in, the oldest out) while more
/// than half full collects tombstones until it doubles (hashbrown rehashes in place only below
/// half): the earlier table, at 57%, would have doubled after about ten times its size in
/// inserts, and its order queue, filled before it was trimmed, doubled at once when the table
/// first filled (128 MiB more that the ring then touched page by page: the soak's nodes grew
/// about 0.6 MiB/s for two minutes after the table filled).
pub struct TxTable {
    /// Entry `first + i` is `ring[i]`.
    ring: VecDeque<Slot>,
    first: u64,
    // ahash: a committed block inserts thousands of entries here; SipHash over 32-byte keys
    // showed in node profiles.
    by_payload: HashMap<Hash, u64, ahash::RandomState>,
    by_tx_hash: HashMap<Hash, u64, ahash::RandomState>,
    capacity: usize,
}

struct Slot {
    payload: Hash,
    /// The transaction hash it is found by: the one admitted, or the copy that committed.
    tx_hash: Hash,
    entry: TxEntry,
}

impl std::fmt::Debug for TxTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxTable").field("entries", &self.ring.len()).finish()
    }
}

impl TxTable {
    /// A table of at most `capacity` transactions, allocated whole at once: growing a hash map
    /// of a million entries rehashes it in one step, which stalled every node's consensus task
    /// at once in long benchmark runs (docs/BENCHMARKS.md).
    pub fn new(capacity: usize) -> TxTable {
        let capacity = capacity.max(1);
        TxTable {
            ring: VecDeque::with_capacity(capacity),
            first: 0,
            by_payload: HashMap::with_capacity_and_hasher(2 * capacity, ahash::RandomState::new()),
            by_tx_hash: HashMap::with_capacity_and_hasher(2 * capacity, ahash::RandomState::new()),
            capacity,
        }
    }

    fn slot(&self, sequence: u64) -> Option<&Slot> {
        self.ring.get(usize::try_from(sequence.checked_sub(self.first)?).ok()?)
    }

    fn slot_mut(&mut self, sequence: u64) -> Option<&mut Slot> {
        self.ring
            .get_mut(usize::try_from(sequence.checked_sub(self.first)?).ok()?)
    }

    fn entry_mut(&mut self, payload: &Hash) -> Option<&mut TxEntry> {
        let sequence = *self.by_payload.get(payload)?;
        self.slot_mut(sequence).map(|slot| &mut slot.entry)
    }

    /// Adds an entry for a payload the table does not hold, forgetting the oldest first, so
    /// that nothing ever holds more than `capacity` and nothing grows past what `new` allocated.
    fn insert(&mut self, payload: Hash, tx_hash: Hash, entry: TxEntry) {
        while self.ring.len() >= self.capacity {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            let sequence = self.first;
            self.first += 1;
            if self.by_payload.get(&old.payload) == Some(&sequence) {
                self.by_payload.remove(&old.payload);
            }
            if self.by_tx_hash.get(&old.tx_hash) == Some(&sequence) {
                self.by_tx_hash.remove(&old.tx_hash);
            }
        }
        let sequence = self.first + self.ring.len() as u64;
        self.ring.push_back(Slot {
            payload,
            tx_hash,
            entry,
        });
        self.by_payload.insert(payload, sequence);
        self.by_tx_hash.insert(tx_hash, sequence);
    }

    /// A transaction this node admitted. It replaces an earlier admission refusal (say, a full
    /// queue) but nothing that happened in a block.
    pub fn queued(&mut self, payload: Hash, tx_hash: Hash, now: Instant) {
        if let Some(entry) = self.entry_mut(&payload) {
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
        if !self.by_payload.contains_key(&payload) {
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
        let Some(sequence) = self.by_payload.get(&payload).copied() else {
            self.insert(payload, tx_hash, TxEntry { state, submitted: None });
            return None;
        };
        let slot = self.slot_mut(sequence)?;
        // A payload commits once; a later copy rejected as a replay does not change that.
        if matches!(slot.entry.state, TxState::Committed { .. }) {
            return None;
        }
        slot.entry.state = state;
        let elapsed = slot.entry.submitted.take().map(|at| at.elapsed());
        // Usually the same transaction hash `queued` recorded; a copy of the payload with other
        // signatures may have committed instead, and is what the entry is found by from now on.
        let replaced = std::mem::replace(&mut slot.tx_hash, tx_hash);
        if replaced != tx_hash {
            if self.by_tx_hash.get(&replaced) == Some(&sequence) {
                self.by_tx_hash.remove(&replaced);
            }
            self.by_tx_hash.insert(tx_hash, sequence);
        }
        elapsed
    }

    /// Looks up by payload hash or transaction hash.
    pub fn get(&self, hash: &Hash) -> Option<(Hash, TxState)> {
        let sequence = self.by_tx_hash.get(hash).or_else(|| self.by_payload.get(hash))?;
        self.slot(*sequence)
            .map(|slot| (slot.payload, slot.entry.state.clone()))
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The capacities of the ring and the two maps (for the test that they never grow).
    #[cfg(test)]
    fn allocated(&self) -> (usize, usize, usize) {
        (
            self.ring.capacity(),
            self.by_payload.capacity(),
            self.by_tx_hash.capacity(),
        )
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
    /// The newest checkpoint saved to the store's directory for restarts (0: none yet), and
    /// saves that failed.
    pub local_checkpoint_height: AtomicU64,
    pub local_checkpoint_failures: AtomicU64,
    /// Proposals received as digests and rebuilt from the queue, and those of them that needed
    /// transactions fetched from their sender first.
    pub proposal_digests: AtomicU64,
    pub proposal_fetches: AtomicU64,
    /// Transactions peers gossiped: queued, already held here, refused for a full queue, and
    /// refused for anything else (`kasane_consensus::replica::GossipCounts`).
    pub gossip_admitted: AtomicU64,
    pub gossip_already_held: AtomicU64,
    pub gossip_queue_full: AtomicU64,
    pub gossip_refused: AtomicU64,
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

    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
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

    /// Churned for a hundred times its size, a full table keeps what it allocated at start
    /// (hash maps count tombstones against their capacity until they rehash in place, never
    /// above the start), and every entry it still holds is found by both hashes.
    #[test]
    fn a_churned_table_keeps_the_memory_it_started_with() {
        let capacity = 1024;
        let mut table = TxTable::new(capacity);
        let (ring, by_payload, by_tx_hash) = table.allocated();
        let tx = |value: u64| hash(1 << 32 | value);
        let rounds = 100 * capacity as u64;
        for value in 0..rounds {
            table.queued(hash(value), tx(value), Instant::now());
            if value % 3 == 0 {
                // Every third commits as a copy with another transaction hash.
                table.in_block(hash(value), tx(1 << 31 | value), TxState::Committed { height: value });
            }
        }
        assert_eq!(table.len(), capacity);
        let now = table.allocated();
        assert_eq!(now.0, ring, "the ring grew");
        assert!(
            now.1 <= by_payload && now.2 <= by_tx_hash,
            "{now:?} against {by_payload}, {by_tx_hash}"
        );
        assert!(table.by_payload.len() == capacity && table.by_tx_hash.len() == capacity);
        for value in rounds - capacity as u64..rounds {
            let found = if value % 3 == 0 { tx(1 << 31 | value) } else { tx(value) };
            assert_eq!(table.get(&found).map(|(payload, _)| payload), Some(hash(value)));
            assert_eq!(table.get(&hash(value)).map(|(payload, _)| payload), Some(hash(value)));
        }
        assert_eq!(table.get(&hash(rounds - capacity as u64 - 1)), None);
    }
}
