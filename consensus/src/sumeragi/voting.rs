//! The normal case (R5-R10): proposals received, validation, votes, certificates, locking,
//! commit.
use std::collections::BTreeSet;

use kasane_model::block::{Certificate, Vote, VoteKind};
use kasane_model::{Block, CommittedBlock, Hash, PublicKey};

use super::*;
use crate::io::Verdict;

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
            .state
            .highest
            .as_ref()
            .is_none_or(|highest| certificate.vote.view > highest.vote.view)
        {
            self.state.highest = Some(certificate.clone());
        }
    }

    /// R5: whether a proposal's block and justification have the shape the rules require. A
    /// new block (no justification) is of this view and by its leader, so the ledger's record
    /// of failed views (R15) cannot be forged; a re-proposed block comes with a prepare
    /// certificate of an earlier view for exactly that block, and its header is of a view no
    /// later than that certificate's.
    fn proposal_shape_ok(&mut self, from: &PublicKey, proposal: &Proposal, hash: &Hash) -> bool {
        let header = &proposal.block.header;
        if header.height != self.height || header.previous_hash != self.head {
            return false;
        }
        match &proposal.justify {
            None => header.view == proposal.view && header.proposer == *from,
            Some(justify) => {
                justify.vote.block_hash == *hash
                    && justify.vote.view < proposal.view
                    && header.view <= justify.vote.view
                    && self.check_certificate(justify, VoteKind::Prepare)
            }
        }
    }

    /// R5: checks a proposal and hands its block to validation.
    pub(super) fn on_proposal(&mut self, from: PublicKey, proposal: Proposal, out: &mut Vec<Effect>) {
        if proposal.view > self.state.view {
            // A valid proof moves this replica into the proposal's view however far ahead it
            // is: it is q signatures, not one peer's word (R15).
            if !self.check_proof(proposal.view, &proposal.proof) {
                return self.drop_message(DropReason::BadProof);
            }
            self.enter_view(proposal.view, proposal.proof.clone(), out);
        }
        if proposal.view < self.state.view {
            return self.drop_message(DropReason::StaleView);
        }
        if !self.topology.is_leader(&from, self.state.view) {
            return self.drop_message(DropReason::NotTheLeader);
        }
        if self.state.view_state.proposal.is_some() {
            // The first proposal of a view wins; a second is equivocation or a repeat.
            return self.drop_message(DropReason::Duplicate);
        }
        let hash = proposal.block.hash();
        if !self.proposal_shape_ok(&from, &proposal, &hash) {
            self.drop_message(DropReason::BadProposal);
            return self.suspect(out);
        }
        if let Some(justify) = &proposal.justify {
            self.note_highest(justify);
        }
        self.state.view_state.proposal = Some((hash, proposal.justify));
        self.arm_view_timer(out);
        match self.state.blocks.get(&hash).map(|entry| entry.validity) {
            Some(Validity::Valid) => self.on_valid_proposal(hash, out),
            Some(Validity::Invalid) => self.suspect(out),
            Some(Validity::Pending | Validity::Early) => {}
            Some(Validity::Unchecked) => self.validate(hash, out),
            None => {
                self.remember_block(hash, proposal.block, Validity::Unchecked);
                self.validate(hash, out);
            }
        }
    }

    /// Hands a held block to the host for validation.
    pub(super) fn validate(&mut self, hash: Hash, out: &mut Vec<Effect>) {
        if let Some(entry) = self.state.blocks.get_mut(&hash) {
            entry.validity = Validity::Pending;
            out.push(Effect::ValidateBlock {
                block: entry.block.clone(),
            });
        }
    }

    /// Keeps a block of this height, within BLOCKS_PER_HEIGHT_MAX.
    pub(super) fn remember_block(&mut self, hash: Hash, block: Block, validity: Validity) {
        if self.state.blocks.len() >= BLOCKS_PER_HEIGHT_MAX {
            self.evict_block();
        }
        self.state.blocks.insert(hash, BlockEntry { block, validity });
    }

    /// Makes room for one block, keeping the locked, highest and proposed blocks.
    pub(super) fn evict_block(&mut self) {
        let state = &self.state;
        let keep: BTreeSet<Hash> = [
            state.lock.as_ref().map(|c| c.vote.block_hash),
            state.highest.as_ref().map(|c| c.vote.block_hash),
            state.view_state.proposal.as_ref().map(|(hash, _)| *hash),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(victim) = state.blocks.keys().find(|hash| !keep.contains(hash)).copied() {
            self.state.blocks.remove(&victim);
        }
    }

    pub(super) fn on_block_validated(&mut self, height: u64, hash: Hash, verdict: Verdict, out: &mut Vec<Effect>) {
        if height != self.height {
            return;
        }
        let Some(entry) = self.state.blocks.get_mut(&hash) else {
            return;
        };
        let current = self
            .state
            .view_state
            .proposal
            .as_ref()
            .is_some_and(|(proposed, _)| *proposed == hash);
        match verdict {
            Verdict::Early { retry_after_ms } => {
                // Not a verdict on the block: the clock decides only when to vote.
                entry.validity = Validity::Early;
                out.push(Effect::ScheduleTimer {
                    timer: Timer::Revalidate { height, hash },
                    after_ms: retry_after_ms.max(1),
                });
                return;
            }
            Verdict::Invalid => {
                entry.validity = Validity::Invalid;
                if current {
                    self.suspect(out);
                }
                return;
            }
            Verdict::Valid => entry.validity = Validity::Valid,
        }
        if current {
            self.on_valid_proposal(hash, out);
        }
        // A prepare certificate this proxy tail formed before it validated the block.
        let (ready, waiting): (Vec<Certificate>, Vec<Certificate>) = std::mem::take(&mut self.state.view_state.stashed)
            .into_iter()
            .partition(|c| c.vote.block_hash == hash);
        self.state.view_state.stashed = waiting;
        for certificate in ready {
            self.broadcast_and_deliver(Message::PrepareCertificate(certificate), out);
        }
        // A prepare certificate of this view that arrived before the block validated.
        if let Some(certificate) = self
            .state
            .view_state
            .unjudged_certificate
            .take_if(|certificate| certificate.vote.block_hash == hash)
        {
            self.lock_and_vote_commit(certificate, out);
        }
        self.try_commit(None, out);
    }

    /// R6: the locking rule.
    pub(super) fn may_vote_prepare(&self, hash: &Hash, justify: Option<&Certificate>) -> bool {
        if !self.config.locking {
            return true;
        }
        match &self.state.lock {
            None => true,
            Some(lock) if lock.vote.block_hash == *hash => true,
            Some(lock) => justify.is_some_and(|j| j.vote.block_hash == *hash && j.vote.view > lock.vote.view),
        }
    }

    /// R3a and R13: whether this replica votes in its current view: it is a validator of the
    /// height (every validator votes in every view, so one silent validator anywhere in the order
    /// costs no view change unless it leads; with set A alone voting in view 0, a silent member
    /// of set A failed 3 of 4 heights of a four-validator cluster, and Iroha #5495 is the same
    /// stall in later views), and it has not asked to leave the view.
    pub(super) fn votes_now(&self) -> bool {
        let view = self.state.view;
        self.topology.contains(&self.me) && self.view_change_sent().is_none_or(|target| target <= view)
    }

    /// R6: a validated proposal gets this validator's Prepare vote, if it may give it.
    pub(super) fn on_valid_proposal(&mut self, hash: Hash, out: &mut Vec<Effect>) {
        let view = self.state.view;
        let justify = self
            .state
            .view_state
            .proposal
            .as_ref()
            .and_then(|(_, justify)| justify.clone());
        if !self.votes_now()
            || self.state.voted_prepare == Some(view)
            || !self.may_vote_prepare(&hash, justify.as_ref())
        {
            return;
        }
        self.state.voted_prepare = Some(view);
        self.persist(out);
        let vote = Vote {
            kind: VoteKind::Prepare,
            height: self.height,
            view,
            block_hash: hash,
        };
        self.send_to_collectors(Message::Vote(SignedVote::new(vote, &self.key)), out);
    }

    /// R7: a vote goes to both collectors of the view.
    fn send_to_collectors(&mut self, message: Message, out: &mut Vec<Effect>) {
        for collector in self.topology.collectors(self.state.view) {
            self.send(collector, message.clone(), out);
        }
    }

    /// R7, R9: the collectors (proxy tail and leader) count votes.
    pub(super) fn on_vote(&mut self, from: PublicKey, vote: SignedVote, out: &mut Vec<Effect>) {
        let view = self.state.view;
        if vote.signature.validator != from {
            return self.drop_message(DropReason::SignerIsNotSender);
        }
        if vote.vote.view < view {
            return self.drop_message(DropReason::StaleView);
        }
        if vote.vote.view > view {
            // R7a: a voter that entered the view before this proxy tail did.
            if self.topology.is_collector(&self.me, vote.vote.view) {
                return self.keep_early(from, vote.vote.view, Message::Vote(vote));
            }
            return self.drop_message(DropReason::FutureView);
        }
        if !self.topology.is_collector(&self.me, view) {
            return self.drop_message(DropReason::NotACollector);
        }
        // R3a: every validator of the height votes.
        if !self.topology.contains(&from) {
            return self.drop_message(DropReason::NotAValidator);
        }
        if vote.verify(&mut self.cache).is_err() {
            return self.drop_message(DropReason::BadSignature);
        }
        let quorum = self.topology.quorum();
        let collector = match vote.vote.kind {
            VoteKind::Prepare => &mut self.state.prepare_votes,
            VoteKind::Commit => &mut self.state.commit_votes,
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
                    .state
                    .blocks
                    .get(&certificate.vote.block_hash)
                    .is_some_and(|entry| entry.validity == Validity::Valid);
                if validated {
                    self.broadcast_and_deliver(Message::PrepareCertificate(certificate), out);
                } else {
                    self.state.view_state.stashed.push(certificate);
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

    /// R8: a prepare certificate is noted as the highest; one of this view locks and gets this
    /// validator's Commit vote.
    pub(super) fn on_prepare_certificate(&mut self, certificate: Certificate, out: &mut Vec<Effect>) {
        if !self.check_certificate(&certificate, VoteKind::Prepare) {
            return self.drop_message(DropReason::BadCertificate);
        }
        self.note_highest(&certificate);
        if certificate.vote.view > self.state.view {
            // R7a: the proxy tail entered the view before this validator did.
            let (from, view) = (self.topology.proxy_tail(certificate.vote.view), certificate.vote.view);
            if let Some(from) = from {
                self.keep_early(from, view, Message::PrepareCertificate(certificate));
            }
            return;
        }
        if certificate.vote.view != self.state.view {
            return;
        }
        let validity = self
            .state
            .blocks
            .get(&certificate.vote.block_hash)
            .map(|entry| entry.validity);
        if validity == Some(Validity::Valid) {
            self.lock_and_vote_commit(certificate, out);
        } else {
            self.state.view_state.unjudged_certificate = Some(certificate);
        }
    }

    /// R7a: keeps a message of a later view (within the window) until this replica enters it,
    /// a few per sender, so one sender cannot crowd out the others.
    fn keep_early(&mut self, from: PublicKey, view: u64, message: Message) {
        if view > self.state.view + VIEW_WINDOW {
            return self.drop_message(DropReason::FutureView);
        }
        let kept = self.state.early.entry(from).or_default();
        let full = kept.len() >= EARLY_MESSAGES_PER_SENDER_MAX;
        if full {
            kept.pop_front();
        }
        kept.push_back(message);
        if full {
            self.drop_message(DropReason::Full);
        }
    }

    /// R7a: the kept messages of the view just entered, back into the inbox; those of earlier
    /// views are dropped.
    pub(super) fn replay_early(&mut self) {
        let view = self.state.view;
        let early_view = |message: &Message| match message {
            Message::Vote(vote) => vote.vote.view,
            Message::PrepareCertificate(certificate) => certificate.vote.view,
            _ => 0,
        };
        for (from, kept) in &mut self.state.early {
            let (ready, later): (VecDeque<Message>, VecDeque<Message>) = std::mem::take(kept)
                .into_iter()
                .partition(|message| early_view(message) <= view);
            *kept = later;
            for message in ready.into_iter().filter(|message| early_view(message) == view) {
                self.inbox.push_back((*from, message));
            }
        }
        self.state.early.retain(|_, kept| !kept.is_empty());
    }

    /// R8: lock on a prepare certificate of this view, make the lock durable with its block,
    /// then vote Commit, once per view.
    fn lock_and_vote_commit(&mut self, certificate: Certificate, out: &mut Vec<Effect>) {
        let view = self.state.view;
        if !self.votes_now() || self.state.voted_commit == Some(view) {
            return;
        }
        if self.config.locking
            && self
                .state
                .lock
                .as_ref()
                .is_none_or(|lock| lock.vote.view < certificate.vote.view)
        {
            self.state.lock = Some(certificate.clone());
        }
        self.state.voted_commit = Some(view);
        self.persist(out);
        let vote = Vote {
            kind: VoteKind::Commit,
            ..certificate.vote
        };
        self.send_to_collectors(Message::Vote(SignedVote::new(vote, &self.key)), out);
    }

    /// R10: a commit certificate of any view commits its block.
    pub(super) fn on_commit_certificate(&mut self, from: PublicKey, certificate: Certificate, out: &mut Vec<Effect>) {
        if !self.check_certificate(&certificate, VoteKind::Commit) {
            return self.drop_message(DropReason::BadCertificate);
        }
        self.state.commit_certificate = Some(certificate);
        self.try_commit(Some(from), out);
    }

    /// R10: commits the certified block once this replica holds it. Its validity is then a
    /// matter of the chain alone: the host checks it again if it had not judged it (a block
    /// too far ahead of the local clock to vote for is still committed when certified).
    pub(super) fn try_commit(&mut self, from: Option<PublicKey>, out: &mut Vec<Effect>) {
        if self.state.committing.is_some() {
            return;
        }
        let Some(certificate) = self.state.commit_certificate.clone() else {
            return;
        };
        match self.state.blocks.get(&certificate.vote.block_hash) {
            Some(entry) if entry.validity != Validity::Invalid => {
                self.state.committing = Some(certificate.vote.block_hash);
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
        demoted: &BTreeSet<PublicKey>,
        out: &mut Vec<Effect>,
    ) {
        if height != self.height {
            return;
        }
        self.counters.commits += 1;
        let synced = self.sync.committing_from.take().is_some();
        self.move_past(height, hash, validators, demoted, out);
        if synced {
            // A synced block leaves room in the window: keep every peer fetching, and apply the
            // next one in a step of its own.
            self.request_sync_from_all(out);
            out.push(Effect::ScheduleTimer {
                timer: Timer::ApplySynced,
                after_ms: 0,
            });
        } else {
            self.continue_sync(out);
        }
    }

    /// State sync restored the state at `height` (certified by the cluster: its next block's
    /// commit certificate was checked against this replica's validators, and executing that
    /// block on the restored state proved it): this replica moves to `height + 1` as a commit
    /// of every block up to it would have, and block sync goes on from there.
    pub(super) fn on_restored(
        &mut self,
        height: u64,
        hash: Hash,
        validators: &BTreeSet<PublicKey>,
        demoted: &BTreeSet<PublicKey>,
        out: &mut Vec<Effect>,
    ) {
        if height < self.height || self.state.committing.is_some() {
            return;
        }
        self.sync.committing_from = None;
        self.sync.paused = false;
        self.move_past(height, hash, validators, demoted, out);
        self.sync.pending.retain(|pending, _| *pending > height);
        self.request_sync_from_all(out);
        self.continue_sync(out);
    }

    /// Leaves every height up to `height` (whose block is `hash`) behind: a new topology, a
    /// fresh height state, and the messages held for the next height let in.
    fn move_past(
        &mut self,
        height: u64,
        hash: Hash,
        validators: &BTreeSet<PublicKey>,
        demoted: &BTreeSet<PublicKey>,
        out: &mut Vec<Effect>,
    ) {
        self.height = height + 1;
        self.head = hash;
        self.topology = Topology::new(validators, self.height, demoted);
        self.state = HeightState::default();
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
    }

    pub(super) fn on_commit_failed(&mut self, height: u64, hash: Hash) {
        if height != self.height || self.state.committing != Some(hash) {
            return;
        }
        self.state.committing = None;
        if let Some(entry) = self.state.blocks.get_mut(&hash) {
            entry.validity = Validity::Invalid;
        }
        self.distrust_committing();
    }
}
