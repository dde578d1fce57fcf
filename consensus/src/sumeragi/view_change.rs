//! Suspicion and view change (R11-R16), and timers.
use std::collections::BTreeSet;

use kasane_model::block::VoteKind;

use super::*;

impl Sumeragi {
    /// R15: `proof` holds `quorum` distinct validators' valid view-change votes for exactly
    /// (height, view), and nothing else.
    pub(super) fn check_proof(&mut self, view: u64, proof: &[ViewChangeVote]) -> bool {
        if proof.len() > self.topology.len() {
            return false;
        }
        let mut voters = BTreeSet::new();
        for vote in proof {
            if vote.height != self.height
                || vote.view != view
                || !self.topology.contains(&vote.signature.validator)
                || !voters.insert(vote.signature.validator)
                || vote.verify_signature(&mut self.cache).is_err()
            {
                return false;
            }
        }
        voters.len() >= self.topology.quorum()
    }

    pub(super) fn on_timer(&mut self, timer: Timer, out: &mut Vec<Effect>) {
        match timer {
            Timer::Status => {
                out.push(Effect::Broadcast { message: self.status() });
                out.push(Effect::ScheduleTimer {
                    timer: Timer::Status,
                    after_ms: self.config.status_interval_ms,
                });
            }
            Timer::BlockTime { height, view } if height == self.height && view == self.state.view => {
                self.maybe_propose(out)
            }
            Timer::View { height, view } if height == self.height && view == self.state.view => {
                let view_state = &mut self.state.view_state;
                view_state.view_timer_armed = false;
                // R15a answers each peer at most once per view timeout.
                view_state.proof_sent_to.clear();
                if self.has_work() || self.state.sent_view_change.is_some() {
                    self.suspect(out);
                }
            }
            Timer::Sync { peer, from_height }
                if self.sync.in_flight.get(&peer).map(|(from, _)| *from) == Some(from_height) =>
            {
                self.sync_timed_out(peer, out);
            }
            Timer::ApplySynced => self.continue_sync(out),
            Timer::Revalidate { height, hash }
                if height == self.height && self.validity(&hash) == Some(Validity::Early) =>
            {
                self.validate(hash, out);
            }
            _ => {}
        }
    }

    /// R12, R13: stop voting in this view and ask for the next one. A replica that already
    /// asked broadcasts the same vote again instead of asking for a still later view: on its
    /// own account a replica is never more than one view ahead, so after a quorum loss of any
    /// length the votes of the honest replicas still meet in one view once they can talk (R16
    /// keeps the timer running so the vote is repeated).
    pub(super) fn suspect(&mut self, out: &mut Vec<Effect>) {
        self.counters.suspicions += 1;
        match &self.state.sent_view_change {
            Some(vote) if vote.view > self.state.view => {
                out.push(Effect::Broadcast {
                    message: Message::ViewChange(vote.clone()),
                });
            }
            _ => self.send_view_change(self.state.view + 1, out),
        }
        self.arm_view_timer(out);
    }

    pub(super) fn send_view_change(&mut self, view: u64, out: &mut Vec<Effect>) {
        if self.view_change_sent().is_some_and(|sent| sent >= view) {
            return;
        }
        let vote = ViewChangeVote::new(self.height, view, self.state.highest.clone(), &self.key);
        self.state.sent_view_change = Some(vote.clone());
        self.broadcast_and_deliver(Message::ViewChange(vote), out);
    }

    /// R14, R15, R15a.
    pub(super) fn on_view_change(&mut self, from: PublicKey, vote: ViewChangeVote, out: &mut Vec<Effect>) {
        let view = self.state.view;
        if vote.view <= view {
            // R15a: the sender's own vote shows it is behind in views (it lost some view-change
            // votes, or it was cut off): hand it the proof that moved this replica, as one
            // message it can judge at any distance.
            let own_vote = vote.signature.validator == from && from != self.me;
            let proof = &self.state.view_state.proof;
            if own_vote && !proof.is_empty() && self.state.view_state.proof_sent_to.insert(from) {
                out.push(Effect::Send {
                    to: from,
                    message: Message::ViewChangeProof(proof.clone()),
                });
            }
            return self.drop_message(DropReason::StaleView);
        }
        if vote.view > view + VIEW_WINDOW {
            return self.drop_message(DropReason::FutureView);
        }
        if !self.topology.contains(&vote.signature.validator) {
            // Votes are relayed (R15a), so the signer need not be the sender; it must be a
            // validator, or anyone could mint keys and a view change.
            return self.drop_message(DropReason::NotAValidator);
        }
        if vote.verify_signature(&mut self.cache).is_err() {
            return self.drop_message(DropReason::BadSignature);
        }
        if let Some(highest) = &vote.highest {
            if !self.check_certificate(highest, VoteKind::Prepare) {
                return self.drop_message(DropReason::BadCertificate);
            }
            let highest = highest.clone();
            self.note_highest(&highest);
        }
        if !self.state.view_changes.add(vote) {
            return self.drop_message(DropReason::Duplicate);
        }
        // R14: f + 1 validators want to reach or pass a view; at least one of them is honest.
        if let Some(wanted) = self
            .state
            .view_changes
            .view_wanted_by(self.topology.max_faulty() + 1, view)
        {
            self.send_view_change(wanted, out);
        }
        if let Some((view, proof)) = self.state.view_changes.proof_above(self.topology.quorum(), view) {
            self.enter_view(view, proof, out);
        }
    }

    /// R15a: a proof sent whole by a replica ahead of this one.
    pub(super) fn on_view_change_proof(&mut self, votes: Vec<ViewChangeVote>, out: &mut Vec<Effect>) {
        let Some(view) = votes.first().map(|vote| vote.view) else {
            return self.drop_message(DropReason::BadProof);
        };
        if view <= self.state.view {
            return self.drop_message(DropReason::StaleView);
        }
        if !self.check_proof(view, &votes) {
            return self.drop_message(DropReason::BadProof);
        }
        for vote in &votes {
            if let Some(highest) = &vote.highest {
                if self.check_certificate(highest, VoteKind::Prepare) {
                    let highest = highest.clone();
                    self.note_highest(&highest);
                }
            }
        }
        self.enter_view(view, votes, out);
    }

    /// R15: a new view, its proof durable before anything this replica does in it (R17).
    pub(super) fn enter_view(&mut self, view: u64, proof: Vec<ViewChangeVote>, out: &mut Vec<Effect>) {
        let state = &mut self.state;
        state.view = view;
        state.view_state = ViewState {
            proof,
            ..ViewState::default()
        };
        state.prepare_votes.forget_below(view);
        state.commit_votes.forget_below(view);
        state.view_changes.forget_below(view + 1);
        self.counters.view_changes += 1;
        out.push(Effect::ViewChanged {
            height: self.height,
            view,
        });
        self.persist(out);
        if self.has_work() {
            self.arm_view_timer(out);
        }
        self.replay_early();
        // After a view change the leader does not wait for its block timer.
        self.maybe_propose(out);
    }
}
