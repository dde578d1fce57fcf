//! The Sumeragi state machine (docs/PROTOCOL.md). Pure: inputs in, effects out; no clock, no
//! randomness, no I/O. Each handler cites the rule it implements; the handlers live in
//! `voting` (R4-R10), `view_change` (R11-R16) and `sync` (R19).

mod sync;
mod view_change;
mod voting;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kasane_model::block::Certificate;
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
    /// Peers this replica already sent its view's proof to (R15a).
    proof_sent_to: BTreeSet<PublicKey>,
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
            proof_sent_to: BTreeSet::new(),
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

    pub fn config(&self) -> &Config {
        &self.config
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
                if from_height == 0 {
                    self.drop_message(DropReason::Unexpected);
                } else if from_height >= self.height {
                    // Nothing to serve: say so, so the asker need not wait for its timeout.
                    out.push(Effect::Send {
                        to: from,
                        message: Message::BlockSyncResponse { blocks: Vec::new() },
                    });
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
            // Gossip and the wire form of proposals are the host's business (the replica queues
            // gossip; the node rebuilds digests into proposals before they get here).
            Message::Transactions(_)
            | Message::ProposalDigest(_)
            | Message::TransactionsWanted { .. }
            | Message::TransactionsFound { .. } => return self.drop_message(DropReason::Unexpected),
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
            Message::ViewChange(vote) => self.on_view_change(from, vote, out),
            _ => self.drop_message(DropReason::Unexpected),
        }
    }
}
