//! Vote counting: distinct validators' votes per (kind, view, hash), turned into a certificate
//! at quorum (R7, R9), and view-change votes per view (R14, R15).

use std::collections::BTreeMap;

use kasane_model::block::{Certificate, ValidatorSignature, Vote, VoteKind};
use kasane_model::{Hash, PublicKey};

use crate::message::ViewChangeVote;

/// Votes of one height, bounded by the views the replica accepts.
#[derive(Debug, Default, Clone)]
pub struct VoteCollector {
    votes: BTreeMap<(VoteKind, u64, Hash), BTreeMap<PublicKey, ValidatorSignature>>,
}

impl VoteCollector {
    /// Adds a (verified) vote; returns the certificate the first time the vote's block reaches
    /// `quorum` distinct voters.
    pub fn add(&mut self, vote: Vote, signature: ValidatorSignature, quorum: usize) -> Option<Certificate> {
        let voters = self.votes.entry((vote.kind, vote.view, vote.block_hash)).or_default();
        if voters.contains_key(&signature.validator) {
            return None;
        }
        voters.insert(signature.validator, signature);
        (voters.len() == quorum).then(|| Certificate {
            vote,
            signatures: voters.values().copied().collect(),
        })
    }

    /// Whether `voter` already voted `kind` in `view` (for any hash).
    pub fn has_voted(&self, kind: VoteKind, view: u64, voter: &PublicKey) -> bool {
        self.votes
            .range((kind, view, Hash::ZERO)..=(kind, view, Hash([0xff; 32])))
            .any(|(_, voters)| voters.contains_key(voter))
    }

    /// Drops votes of views below `view`.
    pub fn forget_below(&mut self, view: u64) {
        self.votes.retain(|(_, vote_view, _), _| *vote_view >= view);
    }

    pub fn clear(&mut self) {
        self.votes.clear();
    }
}

/// View-change votes of one height: per view, per voter.
#[derive(Debug, Default, Clone)]
pub struct ViewChangeCollector {
    votes: BTreeMap<u64, BTreeMap<PublicKey, ViewChangeVote>>,
}

impl ViewChangeCollector {
    /// Adds a (verified) vote; returns false if the voter already voted for that view.
    pub fn add(&mut self, vote: ViewChangeVote) -> bool {
        let voters = self.votes.entry(vote.view).or_default();
        if voters.contains_key(&vote.signature.validator) {
            return false;
        }
        voters.insert(vote.signature.validator, vote);
        true
    }

    /// The highest view above `current` that some `threshold` distinct voters want to reach or
    /// pass: R14 with `threshold = f + 1`.
    pub fn view_wanted_by(&self, threshold: usize, current: u64) -> Option<u64> {
        let mut voters = std::collections::BTreeSet::new();
        for (view, votes) in self.votes.range(current + 1..).rev() {
            voters.extend(votes.keys().copied());
            if voters.len() >= threshold {
                return Some(*view);
            }
        }
        None
    }

    /// A view above `current` with `quorum` votes, and those votes: R15's proof.
    pub fn proof_above(&self, quorum: usize, current: u64) -> Option<(u64, Vec<ViewChangeVote>)> {
        self.votes
            .range(current + 1..)
            .rev()
            .find(|(_, votes)| votes.len() >= quorum)
            .map(|(view, votes)| (*view, votes.values().take(quorum).cloned().collect()))
    }

    pub fn forget_below(&mut self, view: u64) {
        self.votes.retain(|vote_view, _| *vote_view >= view);
    }

    pub fn clear(&mut self) {
        self.votes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kasane_model::KeyPair;

    fn vote(view: u64, hash: &[u8]) -> Vote {
        Vote {
            kind: VoteKind::Prepare,
            height: 5,
            view,
            block_hash: Hash::of(hash),
        }
    }

    #[test]
    fn certificate_at_quorum_once_and_only_distinct_voters() {
        let keys: Vec<KeyPair> = (0..4).map(|i| KeyPair::derive(b"votes", i)).collect();
        let mut collector = VoteCollector::default();
        let target = vote(0, b"a");
        assert!(collector.add(target, target.sign(&keys[0]), 3).is_none());
        assert!(
            collector.add(target, target.sign(&keys[0]), 3).is_none(),
            "a repeated voter does not count"
        );
        assert!(collector.add(vote(0, b"b"), vote(0, b"b").sign(&keys[1]), 3).is_none());
        assert!(collector.add(target, target.sign(&keys[2]), 3).is_none());
        let certificate = collector.add(target, target.sign(&keys[3]), 3).expect("quorum");
        assert_eq!(certificate.signatures.len(), 3);
        assert_eq!(certificate.vote, target);
        assert!(
            collector.add(target, target.sign(&keys[1]), 3).is_none(),
            "only the first time"
        );
        assert!(collector.has_voted(VoteKind::Prepare, 0, &keys[1].public_key()));
        assert!(!collector.has_voted(VoteKind::Commit, 0, &keys[1].public_key()));
        collector.forget_below(1);
        assert!(!collector.has_voted(VoteKind::Prepare, 0, &keys[1].public_key()));
    }

    #[test]
    fn view_change_join_and_proof() {
        let keys: Vec<KeyPair> = (0..4).map(|i| KeyPair::derive(b"vc", i)).collect();
        let mut collector = ViewChangeCollector::default();
        assert!(collector.add(ViewChangeVote::new(5, 2, None, &keys[0])));
        assert!(!collector.add(ViewChangeVote::new(5, 2, None, &keys[0])));
        assert_eq!(collector.view_wanted_by(2, 0), None);
        assert!(collector.add(ViewChangeVote::new(5, 1, None, &keys[1])));
        // f + 1 = 2 voters want at least view 1.
        assert_eq!(collector.view_wanted_by(2, 0), Some(1));
        assert_eq!(collector.view_wanted_by(2, 1), None);
        assert!(collector.proof_above(3, 0).is_none());
        collector.add(ViewChangeVote::new(5, 2, None, &keys[2]));
        collector.add(ViewChangeVote::new(5, 2, None, &keys[3]));
        let (view, proof) = collector.proof_above(3, 0).expect("quorum for view 2");
        assert_eq!(view, 2);
        assert_eq!(proof.len(), 3);
    }
}
