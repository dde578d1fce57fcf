//! Who does what at a height and view (docs/PROTOCOL.md section 2, rules R1-R3).

use std::collections::BTreeSet;

use kasane_model::block::quorum;
use kasane_model::{Hash, PublicKey};

/// A validator's role in one view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    ValidatingPeer,
    ProxyTail,
    /// Set B: receives and validates blocks, does not vote.
    Observer,
    /// Not a validator at this height.
    Outsider,
}

impl Role {
    /// Whether the role votes (set A).
    pub fn votes(self) -> bool {
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
    /// R1: sort the validators, rotate left by the previous block hash's first 8 bytes mod n.
    pub fn new(validators: &BTreeSet<PublicKey>, previous_hash: &Hash) -> Topology {
        let mut order: Vec<PublicKey> = validators.iter().copied().collect();
        if !order.is_empty() {
            let mut first = [0u8; 8];
            first.copy_from_slice(&previous_hash.as_bytes()[..8]);
            let shift = (u64::from_le_bytes(first) % order.len() as u64) as usize;
            order.rotate_left(shift);
        }
        Topology { order }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Faults tolerated: (n - 1) / 3.
    pub fn max_faulty(&self) -> usize {
        self.order.len().saturating_sub(1) / 3
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

    /// R2: the peer at `position` of the order of `view`.
    fn at(&self, view: u64, position: usize) -> PublicKey {
        let n = self.order.len();
        let start = (view % n as u64) as usize;
        self.order[(start + position) % n]
    }

    /// R3: A[0]. Panics on an empty topology, which the replica never builds.
    pub fn leader(&self, view: u64) -> PublicKey {
        self.at(view, 0)
    }

    /// R3: A[q-1].
    pub fn proxy_tail(&self, view: u64) -> PublicKey {
        self.at(view, self.quorum() - 1)
    }

    /// The order of `view`.
    pub fn order(&self, view: u64) -> Vec<PublicKey> {
        (0..self.order.len()).map(|position| self.at(view, position)).collect()
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

    fn keys(n: u64) -> BTreeSet<PublicKey> {
        (0..n)
            .map(|index| KeyPair::derive(b"topology", index).public_key())
            .collect()
    }

    #[test]
    fn sets_and_roles_for_four() {
        let validators = keys(4);
        let topology = Topology::new(&validators, &Hash::ZERO);
        // Zero hash: no rotation, the sorted order.
        let sorted: Vec<PublicKey> = validators.iter().copied().collect();
        assert_eq!(topology.order(0), sorted);
        assert_eq!(topology.quorum(), 3);
        assert_eq!(topology.max_faulty(), 1);
        assert_eq!(topology.leader(0), sorted[0]);
        assert_eq!(topology.proxy_tail(0), sorted[2]);
        assert_eq!(topology.role(&sorted[1], 0), Role::ValidatingPeer);
        assert_eq!(topology.role(&sorted[3], 0), Role::Observer);
        // A view change rotates by one: new leader and new proxy tail.
        assert_eq!(topology.leader(1), sorted[1]);
        assert_eq!(topology.proxy_tail(1), sorted[3]);
        assert_eq!(topology.role(&sorted[0], 1), Role::Observer);
        assert_eq!(topology.leader(4), sorted[0]);
        let outsider = KeyPair::derive(b"other", 0).public_key();
        assert_eq!(topology.role(&outsider, 0), Role::Outsider);
    }

    #[test]
    fn previous_hash_rotates_the_order() {
        let validators = keys(7);
        let mut hash = [0u8; 32];
        hash[0] = 3;
        let topology = Topology::new(&validators, &Hash(hash));
        let sorted: Vec<PublicKey> = validators.iter().copied().collect();
        assert_eq!(topology.leader(0), sorted[3]);
        assert_eq!(topology.quorum(), 5);
        assert_eq!(topology.proxy_tail(0), sorted[(3 + 4) % 7]);
    }

    #[test]
    fn every_view_has_one_leader_one_proxy_tail_and_q_voters() {
        for n in 1..=31u64 {
            let validators = keys(n);
            let topology = Topology::new(&validators, &Hash::of(&n.to_le_bytes()));
            for view in 0..(2 * n) {
                let roles: Vec<Role> = validators.iter().map(|key| topology.role(key, view)).collect();
                let voters = roles.iter().filter(|role| role.votes()).count();
                assert_eq!(voters, topology.quorum(), "n {n} view {view}");
                assert_eq!(
                    topology.role(&topology.leader(view), view),
                    Role::Leader,
                    "n {n} view {view}"
                );
                let tails = roles.iter().filter(|role| **role == Role::ProxyTail).count();
                assert_eq!(tails, usize::from(n > 1), "n {n} view {view}");
            }
        }
    }
}
