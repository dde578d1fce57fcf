//! The bounded transaction queue: admitted (signature-checked) transactions waiting for a block.

use std::collections::{BTreeSet, HashSet, VecDeque};

/// The set of queued payload hashes. ahash (keyed randomly per process): every admission and
/// every committed transaction touches it.
type PayloadSet = HashSet<Hash, ahash::RandomState>;

use kasane_model::transaction::TransactionHashes;
use kasane_model::{Hash, SignedTransaction};

/// Why a transaction was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is full ({capacity} transactions)")]
    Full { capacity: usize },
    #[error("the transaction is already queued")]
    Duplicate,
}

#[derive(Debug)]
pub struct TransactionQueue {
    items: VecDeque<(SignedTransaction, TransactionHashes)>,
    payloads: PayloadSet,
    capacity: usize,
}

impl TransactionQueue {
    pub fn new(capacity: usize) -> TransactionQueue {
        TransactionQueue {
            items: VecDeque::new(),
            payloads: PayloadSet::default(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, transaction: SignedTransaction, hashes: TransactionHashes) -> Result<(), QueueError> {
        if self.payloads.contains(&hashes.payload) {
            return Err(QueueError::Duplicate);
        }
        if self.items.len() >= self.capacity {
            return Err(QueueError::Full {
                capacity: self.capacity,
            });
        }
        self.payloads.insert(hashes.payload);
        self.items.push_back((transaction, hashes));
        Ok(())
    }

    /// The oldest `count` transactions, left in the queue until a block commits them.
    pub fn oldest(&self, count: usize) -> Vec<(SignedTransaction, TransactionHashes)> {
        self.items.iter().take(count).cloned().collect()
    }

    /// Drops the transactions whose payloads a committed block carried.
    pub fn remove_payloads(&mut self, payloads: &BTreeSet<Hash>) {
        let mut removed = 0usize;
        for payload in payloads {
            removed += usize::from(self.payloads.remove(payload));
        }
        if removed == 0 {
            return;
        }
        // What is still in the set stays: one hash lookup per queued item instead of a search
        // of the (large) committed set.
        let queued = &self.payloads;
        self.items.retain(|(_, hashes)| queued.contains(&hashes.payload));
    }

    pub fn contains(&self, payload: &Hash) -> bool {
        self.payloads.contains(payload)
    }
}
