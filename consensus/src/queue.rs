//! The bounded transaction queue: admitted (signature-checked) transactions waiting for a block.

use std::collections::{BTreeSet, HashSet, VecDeque};

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
    payloads: HashSet<Hash>,
    capacity: usize,
}

impl TransactionQueue {
    pub fn new(capacity: usize) -> TransactionQueue {
        TransactionQueue {
            items: VecDeque::new(),
            payloads: HashSet::new(),
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
        if payloads.is_empty() {
            return;
        }
        self.items.retain(|(_, hashes)| !payloads.contains(&hashes.payload));
        for payload in payloads {
            self.payloads.remove(payload);
        }
    }

    pub fn contains(&self, payload: &Hash) -> bool {
        self.payloads.contains(payload)
    }
}
