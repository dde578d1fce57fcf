//! The bounded transaction queue: admitted (signature-checked) transactions waiting for a block.

use std::collections::{BTreeSet, HashMap, VecDeque};

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

#[derive(Debug)]
struct Queued {
    transaction: SignedTransaction,
    hashes: TransactionHashes,
}

#[derive(Debug)]
pub struct TransactionQueue {
    /// Payload hashes, oldest first; every one is a key of `entries`.
    order: VecDeque<Hash>,
    /// By payload hash.
    entries: Map<Hash, Queued>,
    /// Transaction hash to payload hash, for blocks that travel as hashes (docs/NODE.md).
    by_transaction: Map<Hash, Hash>,
    capacity: usize,
}

impl TransactionQueue {
    pub fn new(capacity: usize) -> TransactionQueue {
        TransactionQueue {
            order: VecDeque::new(),
            entries: Map::default(),
            by_transaction: Map::default(),
            capacity,
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

    pub fn push(&mut self, transaction: SignedTransaction, hashes: TransactionHashes) -> Result<(), QueueError> {
        if self.entries.contains_key(&hashes.payload) {
            return Err(QueueError::Duplicate);
        }
        if self.entries.len() >= self.capacity {
            return Err(QueueError::Full {
                capacity: self.capacity,
            });
        }
        self.order.push_back(hashes.payload);
        self.by_transaction.insert(hashes.transaction, hashes.payload);
        self.entries.insert(hashes.payload, Queued { transaction, hashes });
        Ok(())
    }

    /// The oldest `count` transactions, left in the queue until a block commits them.
    pub fn oldest(&self, count: usize) -> Vec<(SignedTransaction, TransactionHashes)> {
        self.order
            .iter()
            .filter_map(|payload| self.entries.get(payload))
            .take(count)
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
    pub fn remove_payloads(&mut self, payloads: &BTreeSet<Hash>) -> Vec<Hash> {
        let mut removed = Vec::new();
        for payload in payloads {
            if let Some(queued) = self.entries.remove(payload) {
                self.by_transaction.remove(&queued.hashes.transaction);
                removed.push(*payload);
            }
        }
        if !removed.is_empty() {
            let entries = &self.entries;
            self.order.retain(|payload| entries.contains_key(payload));
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
            let entries = &self.entries;
            self.order.retain(|payload| entries.contains_key(payload));
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

    #[test]
    fn keeps_order_bounds_and_finds_by_transaction_hash() {
        let mut queue = TransactionQueue::new(3);
        let transactions: Vec<SignedTransaction> = (0..4).map(transaction).collect();
        let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
        for index in 0..3 {
            assert_eq!(queue.push(transactions[index].clone(), hashes[index]), Ok(()));
        }
        assert_eq!(
            queue.push(transactions[0].clone(), hashes[0]),
            Err(QueueError::Duplicate)
        );
        assert_eq!(
            queue.push(transactions[3].clone(), hashes[3]),
            Err(QueueError::Full { capacity: 3 })
        );
        let found = queue
            .by_transaction_hash(&hashes[1].transaction)
            .map(|(found, _)| found.clone());
        assert_eq!(found, Some(transactions[1].clone()));
        assert!(queue.by_transaction_hash(&hashes[1].payload).is_none());

        queue.remove_payloads(&BTreeSet::from([hashes[0].payload, hashes[3].payload]));
        assert_eq!(queue.len(), 2);
        assert!(queue.by_transaction_hash(&hashes[0].transaction).is_none());
        let oldest: Vec<Hash> = queue.oldest(5).iter().map(|(_, hashes)| hashes.payload).collect();
        assert_eq!(oldest, [hashes[1].payload, hashes[2].payload]);
        assert_eq!(queue.push(transactions[3].clone(), hashes[3]), Ok(()));
        assert_eq!(queue.oldest(1)[0].1, hashes[1]);
    }
}
