//! Invariant checkers, run after every event (agreement, validity, durability) and at the end
//! (liveness). The oracles on what replicas send are in `oracle.rs`.

use std::collections::{BTreeMap, BTreeSet};

use kasane_model::Hash;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub at_ms: u64,
    pub invariant: &'static str,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Checker {
    /// The first block committed at each height by an honest replica, and who committed it.
    chain: BTreeMap<u64, (Hash, usize)>,
    /// Payload hashes committed (outcome Committed), with the height.
    committed: BTreeMap<Hash, u64>,
    /// Payload hashes in a committed block, committed or rejected: decided.
    decided: BTreeSet<Hash>,
    /// Pairs of payloads of which at most one may commit.
    conflicts: Vec<(Hash, Hash)>,
    /// Highest height each honest replica acknowledged (durable in its store).
    acknowledged: BTreeMap<usize, u64>,
    pub violations: Vec<Violation>,
}

impl Checker {
    /// Registers two transactions of which at most one may commit.
    pub fn conflicting(&mut self, first: Hash, second: Hash) {
        self.conflicts.push((first, second));
    }

    /// An honest replica committed a block: agreement (one block per height) and validity (no
    /// transaction commits twice, at most one of a conflicting pair commits).
    pub fn on_commit(&mut self, at_ms: u64, node: usize, height: u64, hash: Hash, transactions: &[(Hash, bool)]) {
        match self.chain.get(&height) {
            Some((first, first_node)) if *first != hash => {
                self.violations.push(Violation {
                    at_ms,
                    invariant: "agreement",
                    detail: format!(
                        "height {height}: node {first_node} committed {first}, node {node} committed {hash}"
                    ),
                });
            }
            Some(_) => {}
            None => {
                self.chain.insert(height, (hash, node));
                for (payload, committed) in transactions {
                    self.decided.insert(*payload);
                    if !committed {
                        continue;
                    }
                    if let Some(earlier) = self.committed.insert(*payload, height) {
                        self.violations.push(Violation {
                            at_ms,
                            invariant: "validity",
                            detail: format!("transaction {payload} committed at heights {earlier} and {height}"),
                        });
                    }
                }
                self.check_conflicts(at_ms);
            }
        }
        let acknowledged = self.acknowledged.entry(node).or_default();
        *acknowledged = (*acknowledged).max(height);
    }

    fn check_conflicts(&mut self, at_ms: u64) {
        let both: Vec<(Hash, Hash)> = self
            .conflicts
            .iter()
            .filter(|(first, second)| self.committed.contains_key(first) && self.committed.contains_key(second))
            .copied()
            .collect();
        for (first, second) in both {
            self.violations.push(Violation {
                at_ms,
                invariant: "validity",
                detail: format!("conflicting transactions {first} and {second} both committed"),
            });
        }
        self.conflicts
            .retain(|(first, second)| !(self.committed.contains_key(first) && self.committed.contains_key(second)));
    }

    /// An honest replica restarted with `height` blocks in its store.
    pub fn on_restart(&mut self, at_ms: u64, node: usize, height: u64) {
        let acknowledged = self.acknowledged.get(&node).copied().unwrap_or(0);
        if height < acknowledged {
            self.violations.push(Violation {
                at_ms,
                invariant: "durability",
                detail: format!("node {node} acknowledged height {acknowledged} but restarted at {height}"),
            });
        }
    }

    /// At the end: every submitted transaction is decided (in a committed block, committed or
    /// rejected), and every honest replica holds the whole chain.
    pub fn check_liveness(
        &mut self,
        at_ms: u64,
        submitted: &BTreeSet<Hash>,
        what: &str,
        heights: &BTreeMap<usize, u64>,
    ) {
        let missing = submitted
            .iter()
            .filter(|payload| !self.decided.contains(payload))
            .count();
        if missing > 0 {
            self.violations.push(Violation {
                at_ms,
                invariant: "liveness",
                detail: format!("{missing} of {} {what} transactions never committed", submitted.len()),
            });
        }
        let top = self.chain.keys().next_back().copied().unwrap_or(1);
        for (node, height) in heights {
            if *height < top {
                self.violations.push(Violation {
                    at_ms,
                    invariant: "liveness",
                    detail: format!("node {node} is at height {height}, the chain at {top}"),
                });
            }
        }
    }

    pub fn chain(&self) -> &BTreeMap<u64, (Hash, usize)> {
        &self.chain
    }

    /// Whether the transaction is in a committed block (committed or rejected).
    pub fn is_decided(&self, payload: &Hash) -> bool {
        self.decided.contains(payload)
    }

    pub fn committed_transactions(&self) -> usize {
        self.committed.len()
    }

    pub fn decided_transactions(&self) -> usize {
        self.decided.len()
    }

    /// Whether every submitted payload is decided.
    pub fn all_decided(&self, submitted: &BTreeSet<Hash>) -> bool {
        submitted.iter().all(|payload| self.decided.contains(payload))
    }
}
