//! The normal case (R4-R10): proposals, validation, votes, certificates, locking, commit.
use std::collections::BTreeSet;

use kasane_model::block::{Certificate, Vote, VoteKind};
use kasane_model::{Block, CommittedBlock, Hash, PublicKey};

use super::*;

impl Sumeragi {
    /// A certificate of `kind` for the current height with a quorum of this height's validators.
    pub(super) fn check_certificate(&mut self, certificate: &Certificate, kind: VoteKind) -> bool {
        certificate.vote.kind == kind
            && certificate.vote.height == self.height
            && certificate
                .verify(&certificate.vote, &self.topology.validators(), &mut self.cache)
                .is_ok()
    }

    pub(super) fn note_highest(&mut self, certificate: &Certificate) {
        if self
            .highest
            .as_ref()
            .is_none_or(|highest| certificate.vote.view > highest.vote.view)
        {
            self.highest = Some(certificate.clone());
        }
    }

    /// R5: checks a proposal and hands its block to validation.
    pub(super) fn on_proposal(&mut self, from: PublicKey, proposal: Proposal, out: &mut Vec<Effect>) {
        if proposal.view > self.view {
            if proposal.view > self.view + VIEW_WINDOW || !self.check_proof(proposal.view, &proposal.proof) {
                return self.drop_message(DropReason::BadProof);
            }
            self.enter_view(proposal.view, proposal.proof.clone(), out);
        }
        if proposal.view < self.view {
            return self.drop_message(DropReason::StaleView);
        }
        if from != self.topology.leader(self.view) {
            return self.drop_message(DropReason::NotTheLeader);
        }
        if self.proposal.is_some() {
            // The first proposal of a view wins; a second is equivocation or a repeat.
            return self.drop_message(DropReason::Duplicate);
        }
        let block = proposal.block;
        let hash = block.hash();
        let header_ok = block.header.height == self.height && block.header.previous_hash == self.head;
        let justify_ok = match &proposal.justify {
            None => true,
            Some(justify) => justify.vote.block_hash == hash && self.check_certificate(justify, VoteKind::Prepare),
        };
        if !header_ok || !justify_ok {
            self.drop_message(DropReason::BadProposal);
            return self.suspect(out);
        }
        if let Some(justify) = &proposal.justify {
            self.note_highest(justify);
        }
        self.proposal = Some((hash, proposal.justify));
        self.arm_view_timer(out);
        match self.blocks.get(&hash).map(|entry| entry.validated) {
            Some(Some(true)) => self.on_valid_proposal(hash, out),
            Some(Some(false)) => self.suspect(out),
            Some(None) => {}
            None => {
                self.remember_block(hash, block.clone(), None);
                out.push(Effect::ValidateBlock { block });
            }
        }
    }

    /// Keeps a block of this height, within BLOCKS_PER_HEIGHT_MAX.
    pub(super) fn remember_block(&mut self, hash: Hash, block: Block, validated: Option<bool>) {
        if self.blocks.len() >= BLOCKS_PER_HEIGHT_MAX {
            self.evict_block();
        }
        self.blocks.insert(hash, BlockEntry { block, validated });
    }

    /// Makes room for one block, keeping the locked, highest and proposed blocks.
    pub(super) fn evict_block(&mut self) {
        let keep: BTreeSet<Hash> = [
            self.lock.as_ref().map(|c| c.vote.block_hash),
            self.highest.as_ref().map(|c| c.vote.block_hash),
            self.proposal.as_ref().map(|(hash, _)| *hash),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(victim) = self.blocks.keys().find(|hash| !keep.contains(hash)).copied() {
            self.blocks.remove(&victim);
        }
    }

    pub(super) fn on_block_validated(&mut self, height: u64, hash: Hash, valid: bool, out: &mut Vec<Effect>) {
        if height != self.height {
            return;
        }
        let Some(entry) = self.blocks.get_mut(&hash) else {
            return;
        };
        entry.validated = Some(valid);
        let current = self.proposal.as_ref().is_some_and(|(proposed, _)| *proposed == hash);
        if !valid {
            if current {
                self.suspect(out);
            }
            return;
        }
        if current {
            self.on_valid_proposal(hash, out);
        }
        // A prepare certificate this proxy tail formed before it validated the block.
        let (ready, waiting): (Vec<Certificate>, Vec<Certificate>) = std::mem::take(&mut self.stashed)
            .into_iter()
            .partition(|c| c.vote.block_hash == hash);
        self.stashed = waiting;
        for certificate in ready {
            self.broadcast_and_deliver(Message::PrepareCertificate(certificate), out);
        }
        self.try_commit(None, out);
    }

    /// R6: the locking rule.
    pub(super) fn may_vote_prepare(&self, hash: &Hash, justify: Option<&Certificate>) -> bool {
        if !self.config.locking {
            return true;
        }
        match &self.lock {
            None => true,
            Some(lock) if lock.vote.block_hash == *hash => true,
            Some(lock) => justify.is_some_and(|j| j.vote.block_hash == *hash && j.vote.view > lock.vote.view),
        }
    }

    /// R3a: who votes in `view`. In view 0 set A votes; once a view change has shown a fault at
    /// this height, set B joins and every validator votes, so faulty peers scattered through
    /// set A cannot keep a quorum from forming (Iroha #5495).
    pub(super) fn votes_in_view(&self, key: &PublicKey, view: u64) -> bool {
        if view == 0 {
            self.topology.role(key, view).votes()
        } else {
            self.topology.contains(key)
        }
    }

    /// R6: a validated proposal gets this validator's Prepare vote, if it may give it.
    pub(super) fn on_valid_proposal(&mut self, hash: Hash, out: &mut Vec<Effect>) {
        let justify = self.proposal.as_ref().and_then(|(_, justify)| justify.clone());
        let votes = self.votes_in_view(&self.me, self.view);
        if !votes || self.voted_prepare == Some(self.view) || !self.may_vote_prepare(&hash, justify.as_ref()) {
            return;
        }
        self.voted_prepare = Some(self.view);
        out.push(Effect::PersistLock { record: self.record() });
        let vote = Vote {
            kind: VoteKind::Prepare,
            height: self.height,
            view: self.view,
            block_hash: hash,
        };
        let proxy_tail = self.topology.proxy_tail(self.view);
        self.send(proxy_tail, Message::Vote(SignedVote::new(vote, &self.key)), out);
    }

    /// R7, R9: the proxy tail counts votes.
    pub(super) fn on_vote(&mut self, from: PublicKey, vote: SignedVote, out: &mut Vec<Effect>) {
        if vote.signature.validator != from {
            return self.drop_message(DropReason::SignerIsNotSender);
        }
        if vote.vote.view != self.view {
            let reason = if vote.vote.view < self.view {
                DropReason::StaleView
            } else {
                DropReason::FutureView
            };
            return self.drop_message(reason);
        }
        if self.topology.proxy_tail(self.view) != self.me {
            return self.drop_message(DropReason::NotTheProxyTail);
        }
        if !self.votes_in_view(&from, self.view) {
            return self.drop_message(DropReason::NotAValidator);
        }
        if vote.verify(&mut self.cache).is_err() {
            return self.drop_message(DropReason::BadSignature);
        }
        let quorum = self.topology.quorum();
        let collector = match vote.vote.kind {
            VoteKind::Prepare => &mut self.prepare_votes,
            VoteKind::Commit => &mut self.commit_votes,
        };
        if collector.has_voted(vote.vote.kind, vote.vote.view, &from) {
            return self.drop_message(DropReason::Duplicate);
        }
        let Some(certificate) = collector.add(vote.vote, vote.signature, quorum) else {
            return;
        };
        match certificate.vote.kind {
            VoteKind::Prepare => {
                let validated = self
                    .blocks
                    .get(&certificate.vote.block_hash)
                    .is_some_and(|e| e.validated == Some(true));
                if validated {
                    self.broadcast_and_deliver(Message::PrepareCertificate(certificate), out);
                } else {
                    self.stashed.push(certificate);
                }
            }
            VoteKind::Commit if self.config.byzantine_skip_own_commit => {
                out.push(Effect::Broadcast {
                    message: Message::CommitCertificate(certificate),
                });
            }
            VoteKind::Commit => self.broadcast_and_deliver(Message::CommitCertificate(certificate), out),
        }
    }

    /// R8: lock on a prepare certificate of this view, then vote Commit.
    pub(super) fn on_prepare_certificate(&mut self, certificate: Certificate, out: &mut Vec<Effect>) {
        if !self.check_certificate(&certificate, VoteKind::Prepare) {
            return self.drop_message(DropReason::BadCertificate);
        }
        self.note_highest(&certificate);
        let hash = certificate.vote.block_hash;
        let validated = self
            .blocks
            .get(&hash)
            .is_some_and(|entry| entry.validated == Some(true));
        if certificate.vote.view != self.view
            || !validated
            || !self.votes_in_view(&self.me, self.view)
            || self.voted_commit == Some(self.view)
        {
            return;
        }
        if self.config.locking
            && self
                .lock
                .as_ref()
                .is_none_or(|lock| lock.vote.view < certificate.vote.view)
        {
            self.lock = Some(certificate.clone());
        }
        self.voted_commit = Some(self.view);
        out.push(Effect::PersistLock { record: self.record() });
        let vote = Vote {
            kind: VoteKind::Commit,
            ..certificate.vote
        };
        let proxy_tail = self.topology.proxy_tail(self.view);
        self.send(proxy_tail, Message::Vote(SignedVote::new(vote, &self.key)), out);
    }

    /// R10: a commit certificate of any view commits its block.
    pub(super) fn on_commit_certificate(&mut self, from: PublicKey, certificate: Certificate, out: &mut Vec<Effect>) {
        if !self.check_certificate(&certificate, VoteKind::Commit) {
            return self.drop_message(DropReason::BadCertificate);
        }
        self.commit_certificate = Some(certificate);
        self.try_commit(Some(from), out);
    }

    pub(super) fn try_commit(&mut self, from: Option<PublicKey>, out: &mut Vec<Effect>) {
        if self.committing.is_some() {
            return;
        }
        let Some(certificate) = self.commit_certificate.clone() else {
            return;
        };
        match self.blocks.get(&certificate.vote.block_hash) {
            Some(entry) if entry.validated == Some(true) => {
                self.committing = Some(certificate.vote.block_hash);
                out.push(Effect::CommitBlock {
                    block: CommittedBlock {
                        block: entry.block.clone(),
                        certificate,
                    },
                });
            }
            Some(_) => {}
            None => {
                // We never saw the block: fetch it with its certificate (R19).
                if let Some(from) = from {
                    self.request_sync(from, out);
                }
            }
        }
    }

    pub(super) fn on_block_committed(
        &mut self,
        height: u64,
        hash: Hash,
        validators: &BTreeSet<PublicKey>,
        out: &mut Vec<Effect>,
    ) {
        if height != self.height {
            return;
        }
        self.counters.commits += 1;
        self.height += 1;
        self.head = hash;
        self.topology = Topology::new(validators, &hash);
        self.view = 0;
        self.blocks.clear();
        self.proposal = None;
        self.proposed = false;
        self.lock = None;
        self.highest = None;
        self.voted_prepare = None;
        self.voted_commit = None;
        self.prepare_votes.clear();
        self.commit_votes.clear();
        self.stashed.clear();
        self.view_changes.clear();
        self.sent_view_change = None;
        self.proof.clear();
        self.proof_sent_to.clear();
        self.commit_certificate = None;
        self.committing = None;
        self.view_timer_armed = false;
        let next_height = self.height;
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.future)
            .into_iter()
            .partition(|(_, message)| message_height(message) == Some(next_height));
        self.future = later
            .into_iter()
            .filter(|(_, m)| message_height(m) > Some(next_height))
            .collect();
        self.inbox.extend(ready);
        self.enter_height(out);
        self.continue_sync(out);
    }

    pub(super) fn on_commit_failed(&mut self, height: u64, hash: Hash) {
        if height != self.height || self.committing != Some(hash) {
            return;
        }
        self.committing = None;
        if let Some(entry) = self.blocks.get_mut(&hash) {
            entry.validated = Some(false);
        }
        self.sync_pending.clear();
        self.sync_in_flight = None;
    }

    /// Timers and proposals for a fresh (height, view 0).
    pub(super) fn enter_height(&mut self, out: &mut Vec<Effect>) {
        if self.queue_len > 0 {
            self.arm_view_timer(out);
            self.arm_block_timer(out);
        }
    }

    pub(super) fn arm_block_timer(&mut self, out: &mut Vec<Effect>) {
        if self.topology.leader(self.view) == self.me && !self.proposed {
            out.push(Effect::ScheduleTimer {
                timer: Timer::BlockTime {
                    height: self.height,
                    view: self.view,
                },
                after_ms: self.config.block_time_ms,
            });
        }
    }

    pub(super) fn on_queue_length(&mut self, len: usize, out: &mut Vec<Effect>) {
        let was_empty = self.queue_len == 0;
        self.queue_len = len;
        if len == 0 {
            return;
        }
        if was_empty {
            self.arm_view_timer(out);
            self.arm_block_timer(out);
        }
        if len >= self.config.block_txs_max {
            self.maybe_propose(out);
        }
    }

    /// R4: the leader proposes once per view: the highest certified block if it knows one, else
    /// a new block from its queue.
    pub(super) fn maybe_propose(&mut self, out: &mut Vec<Effect>) {
        if self.topology.leader(self.view) != self.me || self.proposed || self.committing.is_some() {
            return;
        }
        let reproposal = if self.config.locking {
            self.highest.clone()
        } else {
            None
        };
        if let Some(justify) = reproposal {
            let Some(entry) = self.blocks.get(&justify.vote.block_hash) else {
                // We lack the locked block; this view will time out and a leader that has it
                // will propose (docs/PROTOCOL.md section 6).
                return;
            };
            let proposal = Proposal {
                height: self.height,
                view: self.view,
                block: entry.block.clone(),
                justify: Some(justify),
                proof: self.proof.clone(),
            };
            self.proposed = true;
            self.counters.proposals += 1;
            return self.broadcast_and_deliver(Message::Proposal(Box::new(proposal)), out);
        }
        // A new block in a later view must carry that view's proof (R15); a replica that
        // restarted into the view without it leaves the proposal to the next leader.
        let view_change_proof = ViewChangeVote::proof_of(&self.proof);
        if self.queue_len > 0 && (self.view == 0 || view_change_proof.is_some()) {
            self.proposed = true;
            out.push(Effect::BuildProposal {
                height: self.height,
                view: self.view,
                max_transactions: self.config.block_txs_max,
                view_change_proof: if self.view == 0 { None } else { view_change_proof },
            });
        }
    }

    pub(super) fn on_proposal_built(&mut self, height: u64, view: u64, block: Block, out: &mut Vec<Effect>) {
        if height != self.height || view != self.view || self.topology.leader(view) != self.me {
            return;
        }
        let hash = block.hash();
        self.remember_block(hash, block.clone(), Some(true));
        self.counters.proposals += 1;
        let proposal = Proposal {
            height,
            view,
            block,
            justify: None,
            proof: self.proof.clone(),
        };
        self.broadcast_and_deliver(Message::Proposal(Box::new(proposal)), out);
    }
}
