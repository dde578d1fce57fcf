//! The bounded transaction queue: admitted (signature-checked) transactions waiting for a block.

use std::collections::{HashMap, VecDeque};

use kasane_model::transaction::TransactionHashes;
use kasane_model::{Hash, SignedTransaction};

/// Maps of the queue hash with ahash (keyed randomly per process, like std's own `RandomState`,
/// so nothing observable depends on it): every admission and every committed transaction
/// touches them. The queue's order lives in a `VecDeque`, never in a map.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Why a transaction was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is full ({capacity} transactions)")]
    Full { capacity: usize },
    #[error("the transaction is already queued")]
    Duplicate,
}

/// Whose transaction a push queues, which sets how full the queue may be for it. A client's is
/// refused once the queue holds its capacity: that is the door, where overload is refused
/// before any work. A peer's (gossip, or a held transaction restored at start) was admitted
/// by some validator within that validator's own capacity and is about to be proposed; it is
/// queued until the queue holds twice the capacity. With one bound for both, a node whose
/// queue clients had filled refused its peers' gossip, then fetched nearly every proposal's
/// missing bodies from the leader (a round trip per block), and its peers' transactions lacked
/// holders: under overload the cluster committed less than at capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Peer,
}

#[derive(Debug)]
struct Queued {
    transaction: SignedTransaction,
    hashes: TransactionHashes,
    /// Its place in `order`.
    sequence: u64,
}

/// Entries of `order` whose transaction left the queue, beyond twice the queue's length, before
/// `order` is compacted in one pass.
const STALE_ORDER_SLACK: usize = 4_096;

#[derive(Debug)]
pub struct TransactionQueue {
    /// (payload hash, sequence), oldest first. An entry is live while `entries` holds that
    /// payload with that sequence; the others are stale, left by transactions that went (a
    /// committed block takes thousands at once, and walking the whole queue at every commit to
    /// drop them cost the consensus task milliseconds per block) and dropped from the front as
    /// they reach it, or all at once when they outnumber the live ones.
    order: VecDeque<(Hash, u64)>,
    /// By payload hash.
    entries: Map<Hash, Queued>,
    /// Transaction hash to payload hash, for blocks that travel as hashes (docs/NODE.md).
    by_transaction: Map<Hash, Hash>,
    capacity: usize,
    next_sequence: u64,
}

/// The entry of `entries` that `(payload, sequence)`, an entry of `order`, stands for, if it is
/// live (see `TransactionQueue::order`).
fn live_in<'a>(entries: &'a Map<Hash, Queued>, (payload, sequence): &(Hash, u64)) -> Option<&'a Queued> {
    entries.get(payload).filter(|queued| queued.sequence == *sequence)
}

impl TransactionQueue {
    pub fn new(capacity: usize) -> TransactionQueue {
        TransactionQueue {
            order: VecDeque::new(),
            entries: Map::default(),
            by_transaction: Map::default(),
            capacity,
            next_sequence: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes the queue's tables hold, the queued transactions' own heap memory left out
    /// (estimate, `kasane_model::footprint`).
    pub fn footprint(&self) -> usize {
        use kasane_model::footprint::{deque_bytes, map_bytes};
        deque_bytes(&self.order) + map_bytes(&self.entries) + map_bytes(&self.by_transaction)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues a transaction at the back, within the bound its origin allows (see [`Origin`]).
    pub fn push(
        &mut self,
        transaction: SignedTransaction,
        hashes: TransactionHashes,
        origin: Origin,
    ) -> Result<(), QueueError> {
        if self.entries.contains_key(&hashes.payload) {
            return Err(QueueError::Duplicate);
        }
        let bound = match origin {
            Origin::Client => self.capacity,
            Origin::Peer => self.capacity.saturating_mul(2),
        };
        if self.entries.len() >= bound {
            return Err(QueueError::Full { capacity: bound });
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.order.push_back((hashes.payload, sequence));
        self.by_transaction.insert(hashes.transaction, hashes.payload);
        self.entries.insert(
            hashes.payload,
            Queued {
                transaction,
                hashes,
                sequence,
            },
        );
        Ok(())
    }

    /// The queued transaction an entry of `order` stands for, if it is live.
    fn live(&self, entry: &(Hash, u64)) -> Option<&Queued> {
        live_in(&self.entries, entry)
    }

    /// Drops the stale entries of `order` at its front, and every stale one when they outnumber
    /// the live ones by [`STALE_ORDER_SLACK`].
    fn tidy_order(&mut self) {
        while let Some(front) = self.order.front() {
            if self.live(front).is_some() {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.entries.len() + STALE_ORDER_SLACK {
            let entries = &self.entries;
            self.order.retain(|entry| live_in(entries, entry).is_some());
        }
    }

    /// The oldest transactions, at most `count` of them and at most `bytes` of encodings
    /// together (it stops at the first that would pass either), left in the queue until a block
    /// commits them.
    pub fn oldest(&self, count: usize, bytes: usize) -> Vec<(SignedTransaction, TransactionHashes)> {
        let mut taken_bytes = 0usize;
        self.order
            .iter()
            .filter_map(|entry| self.live(entry))
            .take(count)
            .take_while(|queued| {
                taken_bytes += queued.hashes.encoded_bytes;
                taken_bytes <= bytes
            })
            .map(|queued| (queued.transaction.clone(), queued.hashes))
            .collect()
    }

    /// The queued transaction with this transaction hash (the hash of its whole encoding, so
    /// signatures included), with its hashes.
    pub fn by_transaction_hash(&self, transaction: &Hash) -> Option<(&SignedTransaction, &TransactionHashes)> {
        let queued = self.entries.get(self.by_transaction.get(transaction)?)?;
        Some((&queued.transaction, &queued.hashes))
    }

    /// Drops the transactions whose payloads a committed block carried. Returns those that were
    /// queued.
    pub fn remove_payloads<'a>(&mut self, payloads: impl IntoIterator<Item = &'a Hash>) -> Vec<Hash> {
        let mut removed = Vec::new();
        for payload in payloads {
            if let Some(queued) = self.entries.remove(payload) {
                self.by_transaction.remove(&queued.hashes.transaction);
                removed.push(*payload);
            }
        }
        if !removed.is_empty() {
            self.tidy_order();
        }
        removed
    }

    /// Drops every transaction whose time-to-live ended before `now_ms`: no block at or after
    /// that time can commit it, and the replay memory may already have forgotten its payload,
    /// so gossiping or proposing it again would only fill blocks with rejections. Returns the
    /// payload hashes that went, in no particular order.
    pub fn remove_expired(&mut self, now_ms: u64) -> Vec<Hash> {
        let mut expired = Vec::new();
        let by_transaction = &mut self.by_transaction;
        self.entries.retain(|payload, queued| {
            let live = queued.transaction.payload.expires_at_ms() >= now_ms;
            if !live {
                by_transaction.remove(&queued.hashes.transaction);
                expired.push(*payload);
            }
            live
        });
        if !expired.is_empty() {
            self.tidy_order();
        }
        expired
    }

    /// The queued transaction with this payload hash.
    pub fn get(&self, payload: &Hash) -> Option<&SignedTransaction> {
        self.entries.get(payload).map(|queued| &queued.transaction)
    }

    pub fn contains(&self, payload: &Hash) -> bool {
        self.entries.contains_key(payload)
    }
}

#[cfg(test)]
mod tests {
    use kasane_model::transaction::TransactionPayload;
    use kasane_model::KeyPair;

    use super::*;

    fn transaction(nonce: u32) -> SignedTransaction {
        let key = KeyPair::derive(b"queue-tests", 0);
        let payload = TransactionPayload {
            chain: "c".parse().expect("name"),
            creator: "a@d".parse().expect("id"),
            instructions: Vec::new(),
            created_at_ms: 0,
            ttl_ms: 1_000,
            nonce,
        };
        SignedTransaction::sign(payload, &[&key])
    }

    /// A queue of `capacity` holding the first three of `count` transactions, with all of them.
    fn three_queued(capacity: usize, count: u32) -> (TransactionQueue, Vec<SignedTransaction>, Vec<TransactionHashes>) {
        let mut queue = TransactionQueue::new(capacity);
        let transactions: Vec<SignedTransaction> = (0..count).map(transaction).collect();
        let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
        for index in 0..3 {
            assert_eq!(
                queue.push(transactions[index].clone(), hashes[index], Origin::Client),
                Ok(())
            );
        }
        (queue, transactions, hashes)
    }

    #[test]
    fn keeps_order_bounds_and_finds_by_transaction_hash() {
        let (mut queue, transactions, hashes) = three_queued(3, 4);
        assert_eq!(
            queue.push(transactions[0].clone(), hashes[0], Origin::Client),
            Err(QueueError::Duplicate)
        );
        assert_eq!(
            queue.push(transactions[3].clone(), hashes[3], Origin::Client),
            Err(QueueError::Full { capacity: 3 })
        );
        let found = queue
            .by_transaction_hash(&hashes[1].transaction)
            .map(|(found, _)| found.clone());
        assert_eq!(found, Some(transactions[1].clone()));
        assert!(queue.by_transaction_hash(&hashes[1].payload).is_none());

        queue.remove_payloads(&[hashes[0].payload, hashes[3].payload]);
        assert_eq!(queue.len(), 2);
        assert!(queue.by_transaction_hash(&hashes[0].transaction).is_none());
        let oldest: Vec<Hash> = queue
            .oldest(5, usize::MAX)
            .iter()
            .map(|(_, hashes)| hashes.payload)
            .collect();
        assert_eq!(oldest, [hashes[1].payload, hashes[2].payload]);
        assert_eq!(queue.push(transactions[3].clone(), hashes[3], Origin::Client), Ok(()));
        assert_eq!(queue.oldest(1, usize::MAX)[0].1, hashes[1]);
    }

    /// A queue full for clients still takes peers' transactions, up to twice its capacity.
    #[test]
    fn peers_fill_the_queue_to_twice_its_capacity() {
        let (mut queue, transactions, hashes) = three_queued(3, 7);
        assert_eq!(
            queue.push(transactions[3].clone(), hashes[3], Origin::Client),
            Err(QueueError::Full { capacity: 3 })
        );
        for index in 3..6 {
            assert_eq!(
                queue.push(transactions[index].clone(), hashes[index], Origin::Peer),
                Ok(())
            );
        }
        assert_eq!(
            queue.push(transactions[6].clone(), hashes[6], Origin::Peer),
            Err(QueueError::Full { capacity: 6 })
        );
        // Below twice the capacity but above it, still closed to clients.
        queue.remove_payloads(&[hashes[0].payload]);
        assert_eq!(
            queue.push(transactions[6].clone(), hashes[6], Origin::Client),
            Err(QueueError::Full { capacity: 3 })
        );
        assert_eq!(queue.len(), 5);
    }

    /// The oldest stop at the byte budget as at the count: never a transaction past either.
    #[test]
    fn oldest_stops_at_the_byte_budget() {
        let (queue, _, hashes) = three_queued(3, 3);
        let payloads = |taken: Vec<(SignedTransaction, TransactionHashes)>| -> Vec<Hash> {
            taken.iter().map(|(_, hashes)| hashes.payload).collect()
        };
        let two = hashes[0].encoded_bytes + hashes[1].encoded_bytes;
        assert_eq!(payloads(queue.oldest(3, two)), [hashes[0].payload, hashes[1].payload]);
        assert_eq!(payloads(queue.oldest(3, two - 1)), [hashes[0].payload]);
        assert_eq!(payloads(queue.oldest(1, two)), [hashes[0].payload]);
        assert!(queue.oldest(3, hashes[0].encoded_bytes - 1).is_empty());
    }

    /// A transaction that left from the middle of the queue leaves a stale entry in the order:
    /// queued again, it counts once, at the back; and stale entries never outnumber the live
    /// ones by more than the slack.
    #[test]
    fn what_left_is_skipped_once_and_the_order_stays_bounded() {
        let (mut queue, transactions, hashes) = three_queued(100_000, 3);
        assert_eq!(queue.remove_payloads(&[hashes[1].payload]), [hashes[1].payload]);
        assert_eq!(queue.push(transactions[1].clone(), hashes[1], Origin::Client), Ok(()));
        let oldest: Vec<Hash> = queue
            .oldest(10, usize::MAX)
            .iter()
            .map(|(_, hashes)| hashes.payload)
            .collect();
        assert_eq!(oldest, [hashes[0].payload, hashes[2].payload, hashes[1].payload]);

        let many: Vec<SignedTransaction> = (10..20_010).map(transaction).collect();
        let many_hashes: Vec<TransactionHashes> = many.iter().map(SignedTransaction::hashes).collect();
        for (transaction, hashes) in many.iter().zip(&many_hashes) {
            assert_eq!(queue.push(transaction.clone(), *hashes, Origin::Client), Ok(()));
        }
        // Every other one leaves, never the front: the stale entries are dropped in one pass
        // once they pass the slack.
        let leaving: Vec<Hash> = many_hashes
            .iter()
            .skip(1)
            .step_by(2)
            .map(|hashes| hashes.payload)
            .collect();
        assert_eq!(queue.remove_payloads(&leaving).len(), 10_000);
        assert_eq!(queue.len(), 10_003);
        assert!(
            queue.order.len() <= 2 * queue.len() + STALE_ORDER_SLACK,
            "{}",
            queue.order.len()
        );
        let oldest = queue.oldest(usize::MAX, usize::MAX);
        assert_eq!(oldest.len(), 10_003);
        assert_eq!(oldest[3].1, many_hashes[0]);
        assert_eq!(oldest[4].1, many_hashes[2]);
        // What leaves from the front goes from the order at once.
        let front: Vec<Hash> = oldest.iter().take(1_000).map(|(_, hashes)| hashes.payload).collect();
        queue.remove_payloads(&front);
        assert_eq!(
            queue
                .live(queue.order.front().expect("queued"))
                .map(|queued| queued.hashes),
            Some(oldest[1_000].1)
        );
    }
}
