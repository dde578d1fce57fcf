//! The Sumeragi state machine (docs/PROTOCOL.md). Pure: inputs in, effects out; no clock, no
//! randomness, no I/O. Each handler cites the rule it implements.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kasane_model::block::{Certificate, Vote, VoteKind};
use kasane_model::crypto::KeyCache;
use kasane_model::{Block, CommittedBlock, Hash, KeyPair, PublicKey};

use crate::io::{Config, Counters, DropReason, Effect, Input, LockRecord, Timer};
use crate::message::{Message, Proposal, SignedVote, ViewChangeVote, SYNC_BLOCKS_MAX};
use crate::topology::Topology;
use crate::votes::{ViewChangeCollector, VoteCollector};

/// Messages for the next height kept until the replica gets there.
pub const FUTURE_MESSAGES_MAX: usize = 1024;
/// Views above the current one whose messages are accepted.
pub const VIEW_WINDOW: u64 = 64;
/// Distinct blocks remembered per height.
pub const BLOCKS_PER_HEIGHT_MAX: usize = 64;

#[derive(Debug, Clone)]
struct BlockEntry {
    block: Block,
    validated: Option<bool>,
}

/// One validator's consensus state.
#[derive(Debug)]
pub struct Sumeragi {
    key: KeyPair,
    me: PublicKey,
    config: Config,
    /// The height being decided: the committed height plus one.
    height: u64,
    head: Hash,
    topology: Topology,
    view: u64,
    queue_len: usize,
    blocks: BTreeMap<Hash, BlockEntry>,
    /// The proposal accepted in the current view, and its justification.
    proposal: Option<(Hash, Option<Certificate>)>,
    proposed: bool,
    lock: Option<Certificate>,
    highest: Option<Certificate>,
    voted_prepare: Option<u64>,
    voted_commit: Option<u64>,
    prepare_votes: VoteCollector,
    commit_votes: VoteCollector,
    /// Prepare certificates formed by this proxy tail before it validated their block.
    stashed: Vec<Certificate>,
    view_changes: ViewChangeCollector,
    sent_view_change: Option<u64>,
    proof: Vec<ViewChangeVote>,
    commit_certificate: Option<Certificate>,
    committing: Option<Hash>,
    view_timer_armed: bool,
    future: Vec<(PublicKey, Message)>,
    sync_pending: VecDeque<CommittedBlock>,
    /// The peer asked for blocks, and the height asked for.
    sync_in_flight: Option<(PublicKey, u64)>,
    cache: KeyCache,
    inbox: VecDeque<(PublicKey, Message)>,
    counters: Counters,
}

fn message_height(message: &Message) -> Option<u64> {
    match message {
        Message::Proposal(proposal) => Some(proposal.height),
        Message::Vote(vote) => Some(vote.vote.height),
        Message::PrepareCertificate(certificate) | Message::CommitCertificate(certificate) => {
            Some(certificate.vote.height)
        }
        Message::ViewChange(vote) => Some(vote.height),
        _ => None,
    }
}

impl Sumeragi {
    /// A replica whose committed head is `height - 1` with hash `head`, with the validators of
    /// `height`, and the lock record it persisted before a restart, if any.
    pub fn new(
        key: KeyPair,
        config: Config,
        height: u64,
        head: Hash,
        validators: &BTreeSet<PublicKey>,
        record: Option<LockRecord>,
    ) -> Sumeragi {
        let me = key.public_key();
        let mut replica = Sumeragi {
            key,
            me,
            config,
            height,
            head,
            topology: Topology::new(validators, &head),
            view: 0,
            queue_len: 0,
            blocks: BTreeMap::new(),
            proposal: None,
            proposed: false,
            lock: None,
            highest: None,
            voted_prepare: None,
            voted_commit: None,
            prepare_votes: VoteCollector::default(),
            commit_votes: VoteCollector::default(),
            stashed: Vec::new(),
            view_changes: ViewChangeCollector::default(),
            sent_view_change: None,
            proof: Vec::new(),
            commit_certificate: None,
            committing: None,
            view_timer_armed: false,
            future: Vec::new(),
            sync_pending: VecDeque::new(),
            sync_in_flight: None,
            cache: KeyCache::new(),
            inbox: VecDeque::new(),
            counters: Counters::default(),
        };
        // R17: a restarted replica keeps its lock and never votes twice in a view.
        if let Some(record) = record.filter(|record| record.height == height) {
            replica.view = record.view;
            replica.highest = record.lock.clone();
            replica.lock = record.lock;
            replica.voted_prepare = record.voted_prepare;
            replica.voted_commit = record.voted_commit;
        }
        replica
    }

    /// Effects to run once at start: the status timer and a first status.
    pub fn start(&mut self) -> Vec<Effect> {
        vec![
            Effect::ScheduleTimer {
                timer: Timer::Status,
                after_ms: self.config.status_interval_ms,
            },
            Effect::Broadcast { message: self.status() },
        ]
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn view(&self) -> u64 {
        self.view
    }

    pub fn key(&self) -> PublicKey {
        self.me
    }

    pub fn lock(&self) -> Option<&Certificate> {
        self.lock.as_ref()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// One line of state for traces and failure reports.
    pub fn summary(&self) -> String {
        format!(
            "height {} view {} queue {} proposal {} lock {:?} highest {:?} voted {:?}/{:?} sent_vc {:?} committing {} commit_cert {} sync {} pending {} future {}",
            self.height,
            self.view,
            self.queue_len,
            self.proposal.is_some(),
            self.lock.as_ref().map(|c| c.vote.view),
            self.highest.as_ref().map(|c| c.vote.view),
            self.voted_prepare,
            self.voted_commit,
            self.sent_view_change,
            self.committing.is_some(),
            self.commit_certificate.is_some(),
            self.sync_in_flight.is_some(),
            self.sync_pending.len(),
            self.future.len(),
        )
    }

    /// Handles one input and returns what the host must do, in order.
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Message { from, message } => self.on_message(from, message, &mut out),
            Input::TimerFired(timer) => self.on_timer(timer, &mut out),
            Input::QueueLength(len) => self.on_queue_length(len, &mut out),
            Input::ProposalBuilt { height, view, block } => self.on_proposal_built(height, view, block, &mut out),
            Input::NothingToPropose { height, view } => {
                if height == self.height && view == self.view {
                    self.proposed = false;
                }
            }
            Input::BlockValidated { height, hash, valid } => self.on_block_validated(height, hash, valid, &mut out),
            Input::BlockCommitted {
                height,
                hash,
                validators,
            } => self.on_block_committed(height, hash, &validators, &mut out),
            Input::CommitFailed { height, hash } => self.on_commit_failed(height, hash),
        }
        while let Some((from, message)) = self.inbox.pop_front() {
            self.on_message(from, message, &mut out);
        }
        out
    }

    fn drop_message(&mut self, reason: DropReason) {
        *self.counters.dropped.entry(reason).or_default() += 1;
    }

    fn status(&self) -> Message {
        Message::Status {
            height: self.height - 1,
            head_hash: self.head,
        }
    }

    /// Sends to a peer, or to this replica's own inbox.
    fn send(&mut self, to: PublicKey, message: Message, out: &mut Vec<Effect>) {
        if to == self.me {
            self.inbox.push_back((self.me, message));
        } else {
            out.push(Effect::Send { to, message });
        }
    }

    /// Broadcasts to the other validators and delivers to this replica too.
    fn broadcast_and_deliver(&mut self, message: Message, out: &mut Vec<Effect>) {
        out.push(Effect::Broadcast {
            message: message.clone(),
        });
        self.inbox.push_back((self.me, message));
    }

    fn record(&self) -> LockRecord {
        LockRecord {
            height: self.height,
            view: self.view,
            lock: self.lock.clone(),
            voted_prepare: self.voted_prepare,
            voted_commit: self.voted_commit,
        }
    }

    fn arm_view_timer(&mut self, out: &mut Vec<Effect>) {
        if !self.view_timer_armed {
            self.view_timer_armed = true;
            out.push(Effect::ScheduleTimer {
                timer: Timer::View {
                    height: self.height,
                    view: self.view,
                },
                after_ms: self.config.view_timeout(self.view),
            });
        }
    }

    fn has_work(&self) -> bool {
        self.queue_len > 0 || self.highest.is_some() || self.proposal.is_some()
    }

    fn on_message(&mut self, from: PublicKey, message: Message, out: &mut Vec<Effect>) {
        match message {
            Message::Status { height, .. } => {
                // R19: the peer has committed our height (or more): fetch from it.
                if height >= self.height {
                    self.request_sync(from, out);
                }
                return;
            }
            Message::BlockSyncRequest { from_height, count } => {
                if from_height == 0 || from_height >= self.height {
                    self.drop_message(DropReason::Unexpected);
                } else {
                    let count = count.clamp(1, SYNC_BLOCKS_MAX);
                    out.push(Effect::ServeBlocks {
                        to: from,
                        from_height,
                        count,
                    });
                }
                return;
            }
            Message::BlockSyncResponse { blocks } => return self.on_sync_response(from, blocks, out),
            Message::Transactions(_) => return self.drop_message(DropReason::Unexpected),
            _ => {}
        }
        if !self.topology.contains(&from) {
            return self.drop_message(DropReason::NotAValidator);
        }
        let Some(height) = message_height(&message) else {
            return self.drop_message(DropReason::Unexpected);
        };
        if height < self.height {
            return self.drop_message(DropReason::StaleHeight);
        }
        if height > self.height {
            if height == self.height + 1 && self.future.len() < FUTURE_MESSAGES_MAX {
                self.future.push((from, message));
            } else {
                self.drop_message(DropReason::FutureHeight);
                self.request_sync(from, out);
            }
            return;
        }
        match message {
            Message::Proposal(proposal) => self.on_proposal(from, *proposal, out),
            Message::Vote(vote) => self.on_vote(from, vote, out),
            Message::PrepareCertificate(certificate) => self.on_prepare_certificate(certificate, out),
            Message::CommitCertificate(certificate) => self.on_commit_certificate(from, certificate, out),
            Message::ViewChange(vote) => self.on_view_change(vote, out),
            _ => self.drop_message(DropReason::Unexpected),
        }
    }

    /// A certificate of `kind` for the current height with a quorum of this height's validators.
    fn check_certificate(&mut self, certificate: &Certificate, kind: VoteKind) -> bool {
        certificate.vote.kind == kind
            && certificate.vote.height == self.height
            && certificate
                .verify(&certificate.vote, &self.topology.validators(), &mut self.cache)
                .is_ok()
    }

    fn note_highest(&mut self, certificate: &Certificate) {
        if self
            .highest
            .as_ref()
            .is_none_or(|highest| certificate.vote.view > highest.vote.view)
        {
            self.highest = Some(certificate.clone());
        }
    }

    /// R15: `proof` holds `quorum` distinct, valid view-change votes for (height, view).
    fn check_proof(&mut self, view: u64, proof: &[ViewChangeVote]) -> bool {
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

    /// R5: checks a proposal and hands its block to validation.
    fn on_proposal(&mut self, from: PublicKey, proposal: Proposal, out: &mut Vec<Effect>) {
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
                if self.blocks.len() >= BLOCKS_PER_HEIGHT_MAX {
                    self.evict_block();
                }
                self.blocks.insert(
                    hash,
                    BlockEntry {
                        block: block.clone(),
                        validated: None,
                    },
                );
                out.push(Effect::ValidateBlock { block });
            }
        }
    }

    /// Makes room for one block, keeping the locked, highest and proposed blocks.
    fn evict_block(&mut self) {
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

    fn on_block_validated(&mut self, height: u64, hash: Hash, valid: bool, out: &mut Vec<Effect>) {
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
    fn may_vote_prepare(&self, hash: &Hash, justify: Option<&Certificate>) -> bool {
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
    fn votes_in_view(&self, key: &PublicKey, view: u64) -> bool {
        if view == 0 {
            self.topology.role(key, view).votes()
        } else {
            self.topology.contains(key)
        }
    }

    /// R6: a validated proposal gets this validator's Prepare vote, if it may give it.
    fn on_valid_proposal(&mut self, hash: Hash, out: &mut Vec<Effect>) {
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
    fn on_vote(&mut self, from: PublicKey, vote: SignedVote, out: &mut Vec<Effect>) {
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
    fn on_prepare_certificate(&mut self, certificate: Certificate, out: &mut Vec<Effect>) {
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
    fn on_commit_certificate(&mut self, from: PublicKey, certificate: Certificate, out: &mut Vec<Effect>) {
        if !self.check_certificate(&certificate, VoteKind::Commit) {
            return self.drop_message(DropReason::BadCertificate);
        }
        self.commit_certificate = Some(certificate);
        self.try_commit(Some(from), out);
    }

    fn try_commit(&mut self, from: Option<PublicKey>, out: &mut Vec<Effect>) {
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

    fn on_block_committed(&mut self, height: u64, hash: Hash, validators: &BTreeSet<PublicKey>, out: &mut Vec<Effect>) {
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

    fn on_commit_failed(&mut self, height: u64, hash: Hash) {
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
    fn enter_height(&mut self, out: &mut Vec<Effect>) {
        if self.queue_len > 0 {
            self.arm_view_timer(out);
            self.arm_block_timer(out);
        }
    }

    fn arm_block_timer(&mut self, out: &mut Vec<Effect>) {
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

    fn on_queue_length(&mut self, len: usize, out: &mut Vec<Effect>) {
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
    fn maybe_propose(&mut self, out: &mut Vec<Effect>) {
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
        if self.queue_len > 0 {
            self.proposed = true;
            out.push(Effect::BuildProposal {
                height: self.height,
                view: self.view,
                max_transactions: self.config.block_txs_max,
            });
        }
    }

    fn on_proposal_built(&mut self, height: u64, view: u64, block: Block, out: &mut Vec<Effect>) {
        if height != self.height || view != self.view || self.topology.leader(view) != self.me {
            return;
        }
        let hash = block.hash();
        if self.blocks.len() >= BLOCKS_PER_HEIGHT_MAX {
            self.evict_block();
        }
        self.blocks.insert(
            hash,
            BlockEntry {
                block: block.clone(),
                validated: Some(true),
            },
        );
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

    fn on_timer(&mut self, timer: Timer, out: &mut Vec<Effect>) {
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
    fn suspect(&mut self, out: &mut Vec<Effect>) {
        self.counters.suspicions += 1;
        let target = match self.sent_view_change {
            Some(sent) if sent > self.view => sent + 1,
            _ => self.view + 1,
        };
        self.send_view_change(target, out);
        self.arm_view_timer(out);
    }

    fn send_view_change(&mut self, view: u64, out: &mut Vec<Effect>) {
        if self.sent_view_change.is_some_and(|sent| sent >= view) {
            return;
        }
        self.sent_view_change = Some(view);
        let vote = ViewChangeVote::new(self.height, view, self.highest.clone(), &self.key);
        self.broadcast_and_deliver(Message::ViewChange(vote), out);
    }

    /// R14, R15.
    fn on_view_change(&mut self, vote: ViewChangeVote, out: &mut Vec<Effect>) {
        if vote.view <= self.view {
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

    fn enter_view(&mut self, view: u64, proof: Vec<ViewChangeVote>, out: &mut Vec<Effect>) {
        self.view = view;
        self.counters.view_changes += 1;
        self.proposal = None;
        self.proposed = false;
        self.proof = proof;
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

    /// R19: one request in flight at a time.
    fn request_sync(&mut self, from: PublicKey, out: &mut Vec<Effect>) {
        if self.sync_in_flight.is_some() || from == self.me || self.config.byzantine_skip_own_commit {
            return;
        }
        self.sync_in_flight = Some((from, self.height));
        out.push(Effect::Send {
            to: from,
            message: Message::BlockSyncRequest {
                from_height: self.height,
                count: SYNC_BLOCKS_MAX,
            },
        });
        out.push(Effect::ScheduleTimer {
            timer: Timer::Sync { height: self.height },
            after_ms: self.config.sync_timeout_ms,
        });
    }

    fn on_sync_response(&mut self, from: PublicKey, blocks: Vec<CommittedBlock>, out: &mut Vec<Effect>) {
        if self.sync_in_flight.map(|(peer, _)| peer) != Some(from) {
            return self.drop_message(DropReason::Unexpected);
        }
        self.sync_in_flight = None;
        let wanted = (self.height..).zip(blocks.into_iter().take(SYNC_BLOCKS_MAX as usize));
        for (expected, block) in wanted {
            if block.block.header.height != expected {
                break;
            }
            self.sync_pending.push_back(block);
        }
        self.continue_sync(out);
    }

    /// Commits the next synced block once its certificate checks out with this height's
    /// validators; the host re-validates the block itself before applying it.
    fn continue_sync(&mut self, out: &mut Vec<Effect>) {
        while self
            .sync_pending
            .front()
            .is_some_and(|block| block.block.header.height < self.height)
        {
            self.sync_pending.pop_front();
        }
        if self.committing.is_some() {
            return;
        }
        let Some(next) = self.sync_pending.pop_front() else {
            return;
        };
        if next.block.header.height != self.height {
            self.sync_pending.clear();
            return;
        }
        let certificate = next.certificate.clone();
        let sound = certificate.vote.block_hash == next.block.hash()
            && next.block.header.previous_hash == self.head
            && self.check_certificate(&certificate, VoteKind::Commit);
        if !sound {
            self.drop_message(DropReason::BadCertificate);
            self.sync_pending.clear();
            return;
        }
        self.committing = Some(certificate.vote.block_hash);
        out.push(Effect::CommitBlock { block: next });
    }
}
