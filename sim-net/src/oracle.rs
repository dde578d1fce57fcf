//! Oracles on what honest replicas do, checked on every message they send and every step they
//! take (docs/SIM.md, "Checkers"):
//! - at most one Prepare and one Commit vote per honest key per (height, view);
//! - no vote leaves before a durable lock record of it (R17);
//! - a Commit vote only for the block the voter is locked on;
//! - a Prepare vote against the voter's lock only on a justification of a higher view (R6);
//! - locks never regress within a height, across restarts too (R17);
//! - after the last fault heals, no height takes more than `views_after_heal_max` views.
//!
//! Votes a proxy tail sends itself never leave it, so they are not seen here; its lock and the
//! locks of everyone else are.

use std::collections::BTreeMap;

use kasane_consensus::{LockRecord, Message, Sumeragi};
use kasane_model::block::VoteKind;
use kasane_model::{Hash, PublicKey};

use crate::checker::Violation;

/// What the oracles read of a replica's consensus state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreView {
    pub height: u64,
    pub view: u64,
    /// (view, block hash) of the lock.
    pub lock: Option<(u64, Hash)>,
    /// (view, block hash) of the current proposal's justification.
    pub justify: Option<(u64, Hash)>,
}

impl CoreView {
    pub fn of(core: &Sumeragi) -> CoreView {
        CoreView {
            height: core.height(),
            view: core.view(),
            lock: core.lock().map(|lock| (lock.vote.view, lock.vote.block_hash)),
            justify: core
                .proposal()
                .and_then(|(_, justify)| justify)
                .map(|justify| (justify.vote.view, justify.vote.block_hash)),
        }
    }
}

#[derive(Debug)]
pub struct Oracle {
    locking: bool,
    views_after_heal_max: u64,
    /// Every vote honest replicas sent: (voter, kind, height, view) to the block voted for.
    votes: BTreeMap<(PublicKey, VoteKind, u64, u64), Hash>,
    /// Each replica's consensus state when it last went down.
    at_crash: BTreeMap<usize, CoreView>,
    /// Each honest replica's (height, view) when the faults ended: views are counted from there.
    heal: Option<BTreeMap<usize, (u64, u64)>>,
    pub violations: Vec<Violation>,
}

impl Oracle {
    pub fn new(locking: bool, views_after_heal_max: u64) -> Oracle {
        Oracle {
            locking,
            views_after_heal_max,
            votes: BTreeMap::new(),
            at_crash: BTreeMap::new(),
            heal: None,
            violations: Vec::new(),
        }
    }

    fn flag(&mut self, at_ms: u64, invariant: &'static str, detail: String) {
        self.violations.push(Violation {
            at_ms,
            invariant,
            detail,
        });
    }

    /// An honest replica `node` (key `key`) took a step from `before` to `after`, saved the
    /// lock records `saved` and sent `sent`.
    #[allow(clippy::too_many_arguments)]
    pub fn observe_step<'m>(
        &mut self,
        at_ms: u64,
        node: usize,
        key: &PublicKey,
        before: &CoreView,
        after: &CoreView,
        saved: &[LockRecord],
        sent: impl Iterator<Item = &'m Message>,
    ) {
        for message in sent {
            if let Message::Vote(vote) = message {
                if vote.signature.validator == *key {
                    self.observe_vote(at_ms, node, key, vote.vote, after, saved);
                }
            }
        }
        if self.locking && before.height == after.height {
            if let Some((locked_view, _)) = before.lock {
                if after.lock.is_none_or(|(view, _)| view < locked_view) {
                    self.flag(
                        at_ms,
                        "lock regressed",
                        format!(
                            "node {node} at height {}: lock of view {locked_view} became {:?}",
                            after.height, after.lock
                        ),
                    );
                }
            }
        }
    }

    fn observe_vote(
        &mut self,
        at_ms: u64,
        node: usize,
        key: &PublicKey,
        vote: kasane_model::Vote,
        after: &CoreView,
        saved: &[LockRecord],
    ) {
        // The same vote goes to both collectors of the view (R7): one vote, sent twice.
        let slot = (*key, vote.kind, vote.height, vote.view);
        if let Some(earlier) = self
            .votes
            .insert(slot, vote.block_hash)
            .filter(|earlier| *earlier != vote.block_hash)
        {
            self.flag(
                at_ms,
                "one vote per view",
                format!(
                    "node {node} voted {:?} twice at height {} view {}: for {earlier} and for {}",
                    vote.kind, vote.height, vote.view, vote.block_hash
                ),
            );
        }
        // The record made durable for this vote: of its height, saying it voted in its view.
        let record = saved.iter().rev().find(|record| {
            record.height == vote.height
                && match vote.kind {
                    VoteKind::Prepare => record.voted_prepare == Some(vote.view),
                    VoteKind::Commit => record.voted_commit == Some(vote.view),
                }
        });
        let Some(record) = record else {
            return self.flag(
                at_ms,
                "vote before its record",
                format!(
                    "node {node} voted {:?} at height {} view {} without a durable record of it",
                    vote.kind, vote.height, vote.view
                ),
            );
        };
        if !self.locking {
            return;
        }
        let lock = record.lock.as_ref().map(|lock| (lock.vote.view, lock.vote.block_hash));
        match vote.kind {
            VoteKind::Commit => {
                if lock.map(|(_, hash)| hash) != Some(vote.block_hash) {
                    self.flag(
                        at_ms,
                        "commit only for the lock",
                        format!(
                            "node {node} voted Commit for {} at height {} view {} while locked on {lock:?}",
                            vote.block_hash, vote.height, vote.view
                        ),
                    );
                }
            }
            VoteKind::Prepare => {
                let Some((locked_view, locked_hash)) = lock else {
                    return;
                };
                // The justification is read after the step; when the step also moved the
                // replica past the vote's view, it is not known here and not judged.
                if locked_hash == vote.block_hash || (after.height, after.view) != (vote.height, vote.view) {
                    return;
                }
                let justified = after
                    .justify
                    .is_some_and(|(view, hash)| hash == vote.block_hash && view > locked_view);
                if !justified {
                    self.flag(
                        at_ms,
                        "prepare against the lock",
                        format!(
                            "node {node} voted Prepare for {} at height {} view {} against its lock of view {locked_view} on {locked_hash}, justified by {:?}",
                            vote.block_hash, vote.height, vote.view, after.justify
                        ),
                    );
                }
            }
        }
    }

    /// An honest replica goes down in `state`.
    pub fn observe_crash(&mut self, node: usize, state: CoreView) {
        self.at_crash.insert(node, state);
    }

    /// An honest replica restarted in `state`; `amnesiac` if its lock record was lost.
    pub fn observe_restart(&mut self, at_ms: u64, node: usize, state: &CoreView, amnesiac: bool) {
        let Some(before) = self.at_crash.remove(&node) else {
            return;
        };
        if amnesiac || !self.locking || before.height != state.height {
            return;
        }
        if let Some((locked_view, _)) = before.lock {
            if state.lock.is_none_or(|(view, _)| view < locked_view) {
                self.flag(
                    at_ms,
                    "lock regressed",
                    format!(
                        "node {node} restarted at height {} without its lock of view {locked_view} ({:?})",
                        state.height, state.lock
                    ),
                );
            }
        }
    }

    /// Faults ended: from here on each height gets at most `views_after_heal_max` views,
    /// counted for each replica from where it stood (`positions`: node to (height, view)).
    pub fn mark_heal(&mut self, positions: impl IntoIterator<Item = (usize, u64, u64)>) {
        self.heal = Some(
            positions
                .into_iter()
                .map(|(node, height, view)| (node, (height, view)))
                .collect(),
        );
    }

    /// An honest replica entered `view` at `height`.
    pub fn observe_view(&mut self, at_ms: u64, node: usize, height: u64, view: u64) {
        let Some(positions) = &self.heal else {
            return;
        };
        let base = match positions.get(&node) {
            Some((at_height, at_view)) if *at_height == height => *at_view,
            Some((at_height, _)) if height < *at_height => return,
            _ => 0,
        };
        let allowed = base + self.views_after_heal_max;
        if view > allowed {
            self.flag(
                at_ms,
                "liveness after heal",
                format!(
                    "node {node} reached view {view} at height {height} after the faults ended (at most {allowed})"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kasane_consensus::SignedVote;
    use kasane_model::block::{Certificate, Vote};
    use kasane_model::KeyPair;

    fn view(height: u64, view: u64, lock: Option<(u64, Hash)>, justify: Option<(u64, Hash)>) -> CoreView {
        CoreView {
            height,
            view,
            lock,
            justify,
        }
    }

    fn vote(key: &KeyPair, kind: VoteKind, view: u64, hash: Hash) -> Message {
        Message::Vote(SignedVote::new(
            Vote {
                kind,
                height: 2,
                view,
                block_hash: hash,
            },
            key,
        ))
    }

    fn record(view: u64, lock: Option<(u64, Hash)>, prepare: Option<u64>, commit: Option<u64>) -> LockRecord {
        LockRecord {
            height: 2,
            view,
            proof: Vec::new(),
            lock: lock.map(|(view, hash)| Certificate {
                vote: Vote {
                    kind: VoteKind::Prepare,
                    height: 2,
                    view,
                    block_hash: hash,
                },
                signatures: Vec::new(),
            }),
            block: None,
            voted_prepare: prepare,
            voted_commit: commit,
        }
    }

    /// The invariants the oracles flag, one row each: what was done, and what must be said.
    #[test]
    fn every_oracle_can_fail() {
        let key = KeyPair::derive(b"oracle", 0);
        let me = key.public_key();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        // Each case: (before, after, lock records written, messages sent).
        type Case = (CoreView, CoreView, Vec<LockRecord>, Vec<Message>);
        let rows: Vec<(&str, Vec<Case>)> = vec![
            (
                "one vote per view",
                vec![
                    (
                        view(2, 0, None, None),
                        view(2, 0, None, None),
                        vec![record(0, None, Some(0), None)],
                        vec![vote(&key, VoteKind::Prepare, 0, a)],
                    ),
                    (
                        view(2, 0, None, None),
                        view(2, 0, None, None),
                        vec![record(0, None, Some(0), None)],
                        vec![vote(&key, VoteKind::Prepare, 0, b)],
                    ),
                ],
            ),
            (
                "vote before its record",
                vec![(
                    view(2, 0, None, None),
                    view(2, 0, None, None),
                    vec![],
                    vec![vote(&key, VoteKind::Prepare, 0, a)],
                )],
            ),
            (
                "commit only for the lock",
                vec![(
                    view(2, 1, Some((0, a)), None),
                    view(2, 1, Some((0, a)), None),
                    vec![record(1, Some((0, a)), None, Some(1))],
                    vec![vote(&key, VoteKind::Commit, 1, b)],
                )],
            ),
            (
                "prepare against the lock",
                vec![(
                    view(2, 2, Some((1, a)), None),
                    view(2, 2, Some((1, a)), Some((1, b))),
                    vec![record(2, Some((1, a)), Some(2), None)],
                    vec![vote(&key, VoteKind::Prepare, 2, b)],
                )],
            ),
            (
                "lock regressed",
                vec![(
                    view(2, 3, Some((2, a)), None),
                    view(2, 3, Some((1, b)), None),
                    vec![],
                    vec![],
                )],
            ),
        ];
        for (invariant, steps) in rows {
            let mut oracle = Oracle::new(true, 10);
            for (at, (before, after, saved, sent)) in steps.iter().enumerate() {
                oracle.observe_step(at as u64, 0, &me, before, after, saved, sent.iter());
            }
            assert_eq!(
                oracle.violations.iter().map(|v| v.invariant).collect::<Vec<_>>(),
                vec![invariant],
                "{invariant}"
            );
        }
        // And the same steps done right are silent: a Prepare against the lock on a higher
        // justification, a Commit for the lock.
        let mut oracle = Oracle::new(true, 10);
        oracle.observe_step(
            0,
            0,
            &me,
            &view(2, 2, Some((0, a)), None),
            &view(2, 2, Some((0, a)), Some((1, b))),
            &[record(2, Some((0, a)), Some(2), None)],
            [vote(&key, VoteKind::Prepare, 2, b)].iter(),
        );
        oracle.observe_step(
            1,
            0,
            &me,
            &view(2, 2, Some((0, a)), None),
            &view(2, 2, Some((2, b)), None),
            &[record(2, Some((2, b)), Some(2), Some(2))],
            [vote(&key, VoteKind::Commit, 2, b)].iter(),
        );
        assert!(oracle.violations.is_empty(), "{:?}", oracle.violations);
    }

    #[test]
    fn views_after_the_heal_are_bounded_and_restarts_keep_locks() {
        let mut oracle = Oracle::new(true, 10);
        oracle.observe_view(0, 0, 2, 50);
        assert!(oracle.violations.is_empty(), "no bound before the heal");
        oracle.mark_heal([(0, 2, 40)]);
        oracle.observe_view(1, 0, 2, 50);
        oracle.observe_view(2, 0, 3, 10);
        assert!(oracle.violations.is_empty());
        oracle.observe_view(3, 0, 3, 11);
        assert_eq!(oracle.violations.len(), 1);
        assert_eq!(oracle.violations[0].invariant, "liveness after heal");

        let mut oracle = Oracle::new(true, 10);
        let a = Hash::of(b"a");
        oracle.observe_crash(1, view(5, 2, Some((1, a)), None));
        oracle.observe_restart(9, 1, &view(5, 2, Some((1, a)), None), false);
        oracle.observe_crash(1, view(5, 2, Some((1, a)), None));
        oracle.observe_restart(9, 1, &view(5, 0, None, None), true);
        assert!(oracle.violations.is_empty(), "an amnesiac restart is not judged");
        oracle.observe_crash(1, view(5, 2, Some((1, a)), None));
        oracle.observe_restart(9, 1, &view(5, 0, None, None), false);
        assert_eq!(oracle.violations.len(), 1);
    }
}
