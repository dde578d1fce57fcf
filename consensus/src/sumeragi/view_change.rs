//! Suspicion and view change (R11-R16), and timers.
use std::collections::BTreeSet;

use kasane_model::block::VoteKind;

use super::*;

impl Sumeragi {
    /// R15: `proof` holds `quorum` distinct, valid view-change votes for (height, view).
    pub(super) fn check_proof(&mut self, view: u64, proof: &[ViewChangeVote]) -> bool {
        let mut voters = BTreeSet::new();
        for vote in proof {
            if vote.height != self.height
                || vote.view != view
                || !self.topology.contains(&vote.signature.validator)
                || vote.verify_signature(&mut self.cache).is_err()
            {
                return false;
            }
            voters.insert(vote.signature.validator);
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
            Timer::BlockTime { height, view } if height == self.height && view == self.view => self.maybe_propose(out),
            Timer::View { height, view } if height == self.height && view == self.view => {
                self.view_timer_armed = false;
                if self.has_work() || self.sent_view_change.is_some() {
                    self.suspect(out);
                }
            }
            Timer::Sync { height } if self.sync_in_flight.is_some_and(|(_, asked)| asked == height) => {
                self.sync_in_flight = None;
            }
            _ => {}
        }
    }

    /// R12, R13: stop voting in this view and ask for the next one (escalating if a view change
    /// is already under way); keep the view timer running so a stalled change escalates.
    pub(super) fn suspect(&mut self, out: &mut Vec<Effect>) {
        self.counters.suspicions += 1;
        let target = match self.sent_view_change {
            Some(sent) if sent > self.view => sent + 1,
            _ => self.view + 1,
        };
        self.send_view_change(target, out);
        self.arm_view_timer(out);
    }

    pub(super) fn send_view_change(&mut self, view: u64, out: &mut Vec<Effect>) {
        if self.sent_view_change.is_some_and(|sent| sent >= view) {
            return;
        }
        self.sent_view_change = Some(view);
        let vote = ViewChangeVote::new(self.height, view, self.highest.clone(), &self.key);
        self.broadcast_and_deliver(Message::ViewChange(vote), out);
    }

    /// R14, R15.
    pub(super) fn on_view_change(&mut self, from: PublicKey, vote: ViewChangeVote, out: &mut Vec<Effect>) {
        if vote.view <= self.view {
            // R15a: the sender's own vote shows it is behind in views (it lost some view-change
            // votes): hand it, once per view, the proof that moved this replica.
            let own_vote = vote.signature.validator == from && from != self.me;
            if own_vote && !self.proof.is_empty() && self.proof_sent_to.insert(from) {
                for proof_vote in self.proof.clone() {
                    out.push(Effect::Send {
                        to: from,
                        message: Message::ViewChange(proof_vote),
                    });
                }
            }
            return self.drop_message(DropReason::StaleView);
        }
        if vote.view > self.view + VIEW_WINDOW {
            return self.drop_message(DropReason::FutureView);
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
        if !self.view_changes.add(vote) {
            return self.drop_message(DropReason::Duplicate);
        }
        if let Some(view) = self
            .view_changes
            .view_wanted_by(self.topology.max_faulty() + 1, self.view)
        {
            self.send_view_change(view, out);
        }
        if let Some((view, proof)) = self.view_changes.proof_above(self.topology.quorum(), self.view) {
            self.enter_view(view, proof, out);
        }
    }

    pub(super) fn enter_view(&mut self, view: u64, proof: Vec<ViewChangeVote>, out: &mut Vec<Effect>) {
        self.view = view;
        self.counters.view_changes += 1;
        self.proposal = None;
        self.proposed = false;
        self.proof = proof;
        self.proof_sent_to.clear();
        self.stashed.clear();
        self.prepare_votes.forget_below(view);
        self.commit_votes.forget_below(view);
        self.view_changes.forget_below(view + 1);
        self.view_timer_armed = false;
        out.push(Effect::ViewChanged {
            height: self.height,
            view,
        });
        if self.has_work() {
            self.arm_view_timer(out);
        }
        // After a view change the leader does not wait for its block timer.
        self.maybe_propose(out);
    }
}
