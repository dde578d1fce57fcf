//! The client's submissions: to random live honest replicas, resubmitted while not decided, and
//! membership changes one after another.

use super::*;

impl<'c> Simulation<'c> {
    /// The client sends a transaction to random live honest replicas (`copies` of them at once),
    /// and, resubmitting, again later while it is not decided.
    pub(super) fn submit(&mut self, submission: Submission, first: bool) {
        let payload = submission.transaction.payload.hash();
        if first {
            self.submissions_pending = self.submissions_pending.saturating_sub(1);
            self.submitted.entry(payload).or_insert(self.now);
        } else if self.checker.is_decided(&payload) {
            return;
        }
        let mut live: Vec<usize> = (0..self.nodes.len())
            .filter(|node| self.is_honest(*node) && self.nodes[*node].replica.is_some())
            .collect();
        for _ in 0..submission.copies.max(1) {
            if live.is_empty() {
                break;
            }
            let node = live.swap_remove(self.rng.below(live.len() as u64) as usize);
            let transaction = submission.transaction.clone();
            let mut queued = false;
            self.step(node, |replica, now| {
                let (results, out) = replica.submit(now, vec![transaction]);
                queued = results.iter().all(Result::is_ok);
                out
            });
            if queued && self.config.client.acknowledge == Acknowledge::Local {
                self.acknowledged.insert(payload);
            }
        }
        if self.config.client.resubmit {
            let retry_at = self.now + CLIENT_RETRY_MS;
            self.schedule(
                retry_at,
                Event::Submit {
                    submission,
                    first: false,
                },
            );
        }
    }

    /// Sends the next membership change once the one before it is decided.
    pub(super) fn membership_step(&mut self) {
        let previous_decided = self
            .membership_last
            .is_none_or(|payload| self.checker.is_decided(&payload));
        if previous_decided {
            if let Some(transaction) = self.membership.pop_front() {
                self.membership_last = Some(transaction.payload.hash());
                self.submissions_pending += 1;
                self.submit(Submission { transaction, copies: 1 }, true);
            }
        }
        if !self.membership.is_empty() {
            let at = self.now + MEMBERSHIP_POLL_MS;
            self.schedule(at, Event::Membership);
        }
    }
}
