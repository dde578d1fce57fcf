//! Invariant checkers, run after every event (agreement, validity, durability) and at the end
//! (liveness).

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
    /// Highest height each honest replica acknowledged (durable in its store).
    acknowledged: BTreeMap<usize, u64>,
    pub violations: Vec<Violation>,
}

impl Checker {
    /// An honest replica committed a block: agreement (one block per height) and validity (no
    /// transaction commits twice).
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
            }
        }
        let acknowledged = self.acknowledged.entry(node).or_default();
        *acknowledged = (*acknowledged).max(height);
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

    /// At the end: every submitted transaction is committed, and every honest replica holds the
    /// whole chain.
    pub fn check_liveness(&mut self, at_ms: u64, submitted: &BTreeSet<Hash>, heights: &BTreeMap<usize, u64>) {
        let missing = submitted
            .iter()
            .filter(|payload| !self.committed.contains_key(payload))
            .count();
        if missing > 0 {
            self.violations.push(Violation {
                at_ms,
                invariant: "liveness",
                detail: format!(
                    "{missing} of {} submitted transactions never committed",
                    submitted.len()
                ),
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

    pub fn is_committed(&self, payload: &Hash) -> bool {
        self.committed.contains_key(payload)
    }

    pub fn committed_transactions(&self) -> usize {
        self.committed.len()
    }

    /// Whether every submitted payload is committed.
    pub fn all_committed(&self, submitted: &BTreeSet<Hash>) -> bool {
        submitted.iter().all(|payload| self.committed.contains_key(payload))
    }
}
