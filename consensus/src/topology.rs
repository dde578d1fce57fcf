//! Who does what at a height and view (docs/PROTOCOL.md section 2, rules R1-R3).

use std::collections::BTreeSet;

use kasane_model::block::{max_faulty, quorum};
use kasane_model::PublicKey;

/// A validator's role in one view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    ValidatingPeer,
    ProxyTail,
    /// Set B: receives and validates blocks, and votes like every validator (R3a); collects no
    /// votes.
    Observer,
    /// Not a validator at this height.
    Outsider,
}

impl Role {
    /// Whether the role is in set A (leader, validating peer, proxy tail). Every validator
    /// votes (R3a); set A is what the specification's message pattern is built around.
    pub fn in_set_a(self) -> bool {
        matches!(self, Role::Leader | Role::ValidatingPeer | Role::ProxyTail)
    }
}

/// The validator order of one height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// View-0 order (R1).
    order: Vec<PublicKey>,
}

impl Topology {
    /// R1: sort the validators, rotate left by `height mod n`, and move the `demoted` ones (who
    /// led a failed view recently, from the world state: `Wsv::demoted`) behind the others. The
    /// order is a function of the committed chain alone: a leader cannot choose the next
    /// height's leader by grinding the hash of the block it proposes (an order taken from the
    /// previous block hash let it, through the timestamp and the transactions it picks).
    pub fn new(validators: &BTreeSet<PublicKey>, height: u64, demoted: &BTreeSet<PublicKey>) -> Topology {
        Topology {
            order: kasane_model::block::view_zero_order(validators, height, demoted),
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Faults tolerated: (n - 1) / 3.
    pub fn max_faulty(&self) -> usize {
        max_faulty(self.order.len())
    }

    /// n - f.
    pub fn quorum(&self) -> usize {
        quorum(self.order.len())
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.order.contains(key)
    }

    pub fn validators(&self) -> BTreeSet<PublicKey> {
        self.order.iter().copied().collect()
    }

    /// R2: the peer at `position` of the order of `view`; none in an empty topology (a chain
    /// without validators cannot decide anything, and the executor refuses to remove the last
    /// one).
    fn at(&self, view: u64, position: usize) -> Option<PublicKey> {
        let n = self.order.len();
        if n == 0 {
            return None;
        }
        let start = (view % n as u64) as usize;
        Some(self.order[(start + position) % n])
    }

    /// R3: `A[0]`.
    pub fn leader(&self, view: u64) -> Option<PublicKey> {
        self.at(view, 0)
    }

    /// R3: `A[q-1]`.
    pub fn proxy_tail(&self, view: u64) -> Option<PublicKey> {
        self.at(view, self.quorum().saturating_sub(1))
    }

    /// R7: who collects the votes of `view`: the proxy tail and the leader (one peer when
    /// `n = 1`). Two collectors, so that one silent validator in either role does not keep the
    /// view from forming its certificates.
    pub fn collectors(&self, view: u64) -> Vec<PublicKey> {
        let mut collectors: Vec<PublicKey> = self.proxy_tail(view).into_iter().chain(self.leader(view)).collect();
        collectors.dedup();
        collectors
    }

    /// Whether `key` collects the votes of `view`.
    pub fn is_collector(&self, key: &PublicKey, view: u64) -> bool {
        self.proxy_tail(view).as_ref() == Some(key) || self.leader(view).as_ref() == Some(key)
    }

    /// Whether `key` leads `view`.
    pub fn is_leader(&self, key: &PublicKey, view: u64) -> bool {
        self.leader(view).as_ref() == Some(key)
    }

    /// The order of `view`.
    pub fn order(&self, view: u64) -> Vec<PublicKey> {
        (0..self.order.len())
            .filter_map(|position| self.at(view, position))
            .collect()
    }

    pub fn role(&self, key: &PublicKey, view: u64) -> Role {
        let n = self.order.len();
        let Some(index) = self.order.iter().position(|candidate| candidate == key) else {
            return Role::Outsider;
        };
        let start = (view % n as u64) as usize;
        let position = (index + n - start) % n;
        let q = self.quorum();
        if position == 0 {
            Role::Leader
        } else if position == q - 1 {
            Role::ProxyTail
        } else if position < q {
            Role::ValidatingPeer
        } else {
            Role::Observer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kasane_model::KeyPair;

    fn none() -> BTreeSet<PublicKey> {
        BTreeSet::new()
    }

    fn keys(n: u64) -> BTreeSet<PublicKey> {
        (0..n)
            .map(|index| KeyPair::derive(b"topology", index).public_key())
            .collect()
    }

    #[test]
    fn sets_and_roles_for_four() {
        let validators = keys(4);
        let topology = Topology::new(&validators, 4, &none());
        // Height 4 of 4 validators: no rotation, the sorted order.
        let sorted: Vec<PublicKey> = validators.iter().copied().collect();
        assert_eq!(topology.order(0), sorted);
        assert_eq!(topology.quorum(), 3);
        assert_eq!(topology.max_faulty(), 1);
        assert_eq!(topology.leader(0), Some(sorted[0]));
        assert_eq!(topology.proxy_tail(0), Some(sorted[2]));
        assert_eq!(topology.role(&sorted[1], 0), Role::ValidatingPeer);
        assert_eq!(topology.role(&sorted[3], 0), Role::Observer);
        // A view change rotates by one: new leader and new proxy tail.
        assert_eq!(topology.leader(1), Some(sorted[1]));
        assert_eq!(topology.proxy_tail(1), Some(sorted[3]));
        assert_eq!(topology.role(&sorted[0], 1), Role::Observer);
        assert_eq!(topology.leader(4), Some(sorted[0]));
        let outsider = KeyPair::derive(b"other", 0).public_key();
        assert_eq!(topology.role(&outsider, 0), Role::Outsider);
    }

    #[test]
    fn heights_rotate_the_order_round_robin() {
        let validators = keys(7);
        let sorted: Vec<PublicKey> = validators.iter().copied().collect();
        for height in 0..21u64 {
            let topology = Topology::new(&validators, height, &none());
            let first = (height % 7) as usize;
            assert_eq!(topology.leader(0), Some(sorted[first]), "height {height}");
            assert_eq!(topology.quorum(), 5);
            assert_eq!(topology.proxy_tail(0), Some(sorted[(first + 4) % 7]));
            // Height h, view v leads with the same peer as height h + v, view 0.
            assert_eq!(
                topology.leader(3),
                Topology::new(&validators, height + 3, &none()).leader(0)
            );
        }
    }

    #[test]
    fn an_empty_topology_has_no_roles_and_does_not_panic() {
        let topology = Topology::new(&BTreeSet::new(), 9, &none());
        assert!(topology.is_empty());
        assert_eq!(topology.leader(3), None);
        assert_eq!(topology.proxy_tail(3), None);
        assert!(topology.order(0).is_empty());
        let anyone = KeyPair::derive(b"other", 0).public_key();
        assert_eq!(topology.role(&anyone, 0), Role::Outsider);
        assert!(!topology.is_leader(&anyone, 0));
    }

    #[test]
    fn every_view_has_one_leader_one_proxy_tail_and_q_in_set_a() {
        for n in 1..=31u64 {
            let validators = keys(n);
            let topology = Topology::new(&validators, n * 7 + 1, &none());
            for view in 0..(2 * n) {
                let roles: Vec<Role> = validators.iter().map(|key| topology.role(key, view)).collect();
                let set_a = roles.iter().filter(|role| role.in_set_a()).count();
                assert_eq!(set_a, topology.quorum(), "n {n} view {view}");
                let collectors = topology.collectors(view);
                assert_eq!(collectors.len(), if n > 1 { 2 } else { 1 }, "n {n} view {view}");
                assert!(collectors.iter().all(|key| topology.is_collector(key, view)));
                let leader = topology.leader(view).expect("a leader");
                assert_eq!(topology.role(&leader, view), Role::Leader, "n {n} view {view}");
                let tails = roles.iter().filter(|role| **role == Role::ProxyTail).count();
                assert_eq!(tails, usize::from(n > 1), "n {n} view {view}");
            }
        }
    }

    #[test]
    fn demoted_validators_lead_last_and_sit_in_set_b() {
        let validators = keys(4);
        let sorted: Vec<PublicKey> = validators.iter().copied().collect();
        // Height 5: the plain order starts at sorted[1]; sorted[1] is demoted.
        let demoted: BTreeSet<PublicKey> = [sorted[1]].into();
        let topology = Topology::new(&validators, 5, &demoted);
        assert_eq!(topology.order(0), vec![sorted[2], sorted[3], sorted[0], sorted[1]]);
        assert_eq!(topology.leader(0), Some(sorted[2]));
        assert_eq!(topology.role(&sorted[1], 0), Role::Observer);
        // Views still rotate through everyone: the demoted one leads view 3.
        assert_eq!(topology.leader(3), Some(sorted[1]));
        // Demoting someone who is not a validator changes nothing.
        let outsider: BTreeSet<PublicKey> = [KeyPair::derive(b"other", 0).public_key()].into();
        assert_eq!(
            Topology::new(&validators, 5, &outsider),
            Topology::new(&validators, 5, &none())
        );
    }
}
