//! The Sumeragi state machine (docs/PROTOCOL.md). Pure: inputs in, effects out; no clock, no
//! randomness, no I/O. Each handler cites the rule it implements; the handlers live in
//! `proposing` (R4, R4a), `voting` (R5-R10), `view_change` (R11-R16) and `sync` (R19).
//!
//! The state of a height (`HeightState`) and of a view within it (`ViewState`) are each one
//! value, replaced whole when the replica commits or changes view, so no field can be forgotten
//! in a reset.

mod proposing;
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
/// Views above the current one whose individual votes are kept. A replica further behind
/// catches up through a whole proof (R15, R15a), which is judged at any distance.
pub const VIEW_WINDOW: u64 = 64;
/// Distinct blocks remembered per height.
pub const BLOCKS_PER_HEIGHT_MAX: usize = 64;
/// Votes and prepare certificates of a later view kept per sender until the replica enters
/// that view (R7a).
pub const EARLY_MESSAGES_PER_SENDER_MAX: usize = 4;

/// What this replica knows of a block's validity (R5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Held (fetched, or kept across a restart with the lock), not judged yet.
    Unchecked,
    /// Handed to the host for validation.
    Pending,
    /// Valid by the chain, too far ahead of the local clock to vote for yet.
    Early,
    Valid,
    Invalid,
}

#[derive(Debug, Clone)]
struct BlockEntry {
    block: Block,
    validity: Validity,
}

/// Everything a replica knows and did at the height it is deciding. Replaced whole on commit.
#[derive(Debug, Default)]
struct HeightState {
    view: u64,
    blocks: BTreeMap<Hash, BlockEntry>,
    /// R8: the prepare certificate this replica locked on.
    lock: Option<Certificate>,
    /// The highest prepare certificate it knows of (its lock, or one it saw).
    highest: Option<Certificate>,
    voted_prepare: Option<u64>,
    voted_commit: Option<u64>,
    prepare_votes: VoteCollector,
    commit_votes: VoteCollector,
    view_changes: ViewChangeCollector,
    /// R13: the view-change vote it sent last, broadcast again on every view timeout.
    sent_view_change: Option<ViewChangeVote>,
    commit_certificate: Option<Certificate>,
    committing: Option<Hash>,
    /// R7a: votes and prepare certificates of views this replica has not entered yet, per
    /// sender, replayed when it enters their view.
    early: BTreeMap<PublicKey, VecDeque<Message>>,
    view_state: ViewState,
}

/// Everything a replica knows and did in its current view. Replaced whole on a view change.
#[derive(Debug, Default)]
struct ViewState {
    /// The proposal accepted in this view, and its justification.
    proposal: Option<(Hash, Option<Certificate>)>,
    proposed: bool,
    /// R4a: the certified block this leader asked its peers for.
    block_wanted: Option<Hash>,
    /// Peers this replica sent a block to on their request (once each per view).
    blocks_sent_to: BTreeSet<PublicKey>,
    /// Prepare certificates this proxy tail formed before it validated their block.
    stashed: Vec<Certificate>,
    /// A prepare certificate of this view that arrived before its block validated.
    unjudged_certificate: Option<Certificate>,
    /// The view-change votes that made this view (empty in view 0).
    proof: Vec<ViewChangeVote>,
    /// Peers this replica sent its proof to since its view timer last fired (R15a).
    proof_sent_to: BTreeSet<PublicKey>,
    view_timer_armed: bool,
}

/// Block sync (R19): blocks received and waiting to be committed, and the requests out.
#[derive(Debug, Default)]
struct SyncState {
    pending: BTreeMap<u64, (CommittedBlock, PublicKey)>,
    /// Per peer, the first height asked for and how many heights the request is counted to
    /// cover (the blocks a response carried last): at most one request per peer.
    in_flight: BTreeMap<PublicKey, (u64, u64)>,
    /// Peers whose last request timed out: their requests cover nothing for the others until
    /// they answer with blocks again, so a peer that takes requests and never answers holds up
    /// the chain once, for one timeout.
    slow: BTreeSet<PublicKey>,
    /// Blocks per response, from the last response cut short by its size bound: what a new
    /// request is counted to cover. Starts at `SYNC_BLOCKS_MAX`.
    blocks_per_response: u64,
    /// Peers that sent a block that did not check out; never asked again.
    distrusted: BTreeSet<PublicKey>,
    /// Who sent the synced block being committed.
    committing_from: Option<PublicKey>,
    /// The height each validator last said it committed (R19 status), validators only.
    claimed: BTreeMap<PublicKey, u64>,
    /// No new requests while the host restores a snapshot (state sync): executing blocks that
    /// the restore will overtake would take the processor and bandwidth the restore needs.
    paused: bool,
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
    queue_len: usize,
    state: HeightState,
    future: Vec<(PublicKey, Message)>,
    sync: SyncState,
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
        Message::ViewChangeProof(votes) => votes.first().map(|vote| vote.height),
        Message::BlockWanted { height, .. } => Some(*height),
        Message::BlockFound(block) => Some(block.header.height),
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
        demoted: &BTreeSet<PublicKey>,
        record: Option<LockRecord>,
    ) -> Sumeragi {
        let me = key.public_key();
        let mut replica = Sumeragi {
            key,
            me,
            config,
            height,
            head,
            topology: Topology::new(validators, height, demoted),
            queue_len: 0,
            state: HeightState::default(),
            future: Vec::new(),
            sync: SyncState {
                blocks_per_response: SYNC_BLOCKS_MAX,
                ..SyncState::default()
            },
            cache: KeyCache::new(),
            inbox: VecDeque::new(),
            counters: Counters::default(),
        };
        // R17: a restarted replica keeps its view and its proof, its lock and the locked block,
        // and never votes twice in a view.
        if let Some(record) = record.filter(|record| record.height == height) {
            let state = &mut replica.state;
            state.view = record.view;
            if record
                .proof
                .iter()
                .all(|vote| vote.height == height && vote.view == record.view)
            {
                state.view_state.proof = record.proof;
            }
            if let (Some(lock), Some(block)) = (&record.lock, record.block) {
                if block.hash() == lock.vote.block_hash && block.header.height == height {
                    state.blocks.insert(
                        lock.vote.block_hash,
                        BlockEntry {
                            block,
                            validity: Validity::Unchecked,
                        },
                    );
                }
            }
            state.highest = record.lock.clone();
            state.lock = record.lock;
            state.voted_prepare = record.voted_prepare;
            state.voted_commit = record.voted_commit;
        }
        replica
    }

    /// Effects to run once at start: the status timer and a first status, and for a replica
    /// restarted with a lock, its view timer (and, as leader, the re-proposal).
    pub fn start(&mut self) -> Vec<Effect> {
        let mut out = vec![
            Effect::ScheduleTimer {
                timer: Timer::Status,
                after_ms: self.config.status_interval_ms,
            },
            Effect::Broadcast { message: self.status() },
        ];
        if self.has_work() {
            self.arm_view_timer(&mut out);
            self.maybe_propose(&mut out);
        }
        self.drain_inbox(&mut out);
        out
    }

    /// The highest height that at least `f + 1` validators (so at least one honest one) say
    /// they committed, from their last status; 0 before `f + 1` have spoken. One lying peer
    /// cannot raise it: a node uses it to tell clients it is still catching up.
    pub fn cluster_height(&self) -> u64 {
        let mut claimed: Vec<u64> = self
            .sync
            .claimed
            .iter()
            .filter(|(peer, _)| self.topology.contains(peer))
            .map(|(_, height)| *height)
            .collect();
        claimed.sort_unstable_by(|a, b| b.cmp(a));
        claimed.get(self.topology.max_faulty()).copied().unwrap_or(0)
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn view(&self) -> u64 {
        self.state.view
    }

    pub fn key(&self) -> PublicKey {
        self.me
    }

    pub fn lock(&self) -> Option<&Certificate> {
        self.state.lock.as_ref()
    }

    /// The highest prepare certificate this replica knows for its height.
    pub fn highest(&self) -> Option<&Certificate> {
        self.state.highest.as_ref()
    }

    /// The proposal accepted in the current view: its block hash and its justification.
    pub fn proposal(&self) -> Option<(&Hash, Option<&Certificate>)> {
        self.state
            .view_state
            .proposal
            .as_ref()
            .map(|(hash, justify)| (hash, justify.as_ref()))
    }

    /// The view this replica last asked to move to (R13), if it did at this height.
    pub fn view_change_sent(&self) -> Option<u64> {
        self.state.sent_view_change.as_ref().map(|vote| vote.view)
    }

    /// What this replica knows of a block of its height.
    pub fn validity(&self, hash: &Hash) -> Option<Validity> {
        self.state.blocks.get(hash).map(|entry| entry.validity)
    }

    /// What waits in memory: messages for the next height, early messages of later views,
    /// synced blocks not yet committed and their transactions.
    pub fn buffered(&self) -> [(&'static str, usize); 4] {
        [
            ("future_messages", self.future.len()),
            ("early_messages", self.state.early.values().map(VecDeque::len).sum()),
            ("sync_pending_blocks", self.sync.pending.len()),
            (
                "sync_pending_transactions",
                self.sync
                    .pending
                    .values()
                    .map(|(block, _)| block.block.transactions.len())
                    .sum(),
            ),
        ]
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
        let state = &self.state;
        format!(
            "height {} view {} queue {} proposal {} lock {:?} highest {:?} voted {:?}/{:?} sent_vc {:?} committing {} commit_cert {} sync {} pending {} future {}",
            self.height,
            state.view,
            self.queue_len,
            state.view_state.proposal.is_some(),
            state.lock.as_ref().map(|c| c.vote.view),
            state.highest.as_ref().map(|c| c.vote.view),
            state.voted_prepare,
            state.voted_commit,
            self.view_change_sent(),
            state.committing.is_some(),
            state.commit_certificate.is_some(),
            self.sync.in_flight.len(),
            self.sync.pending.len(),
            self.future.len(),
        )
    }

    /// Makes block sync ask for nothing new (answers to requests out are still applied) until
    /// [`Sumeragi::resume_sync`] or `Input::Restored`: the host restores a snapshot (state sync,
    /// docs/PROTOCOL.md section 8.1).
    pub fn pause_sync(&mut self) {
        self.sync.paused = true;
    }

    /// Ends [`Sumeragi::pause_sync`]: every peer above this replica is asked again.
    pub fn resume_sync(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.sync.paused {
            self.sync.paused = false;
            self.request_sync_from_all(&mut out);
        }
        out
    }

    /// Whether a block-sync request to `peer` awaits its answer.
    pub fn is_syncing_from(&self, peer: &PublicKey) -> bool {
        self.sync.in_flight.contains_key(peer)
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
                if height == self.height && view == self.state.view {
                    self.state.view_state.proposed = false;
                }
            }
            Input::BlockValidated { height, hash, verdict } => self.on_block_validated(height, hash, verdict, &mut out),
            Input::BlockCommitted {
                height,
                hash,
                validators,
                demoted,
            } => self.on_block_committed(height, hash, &validators, &demoted, &mut out),
            Input::CommitFailed { height, hash } => self.on_commit_failed(height, hash),
            Input::Restored {
                height,
                hash,
                validators,
                demoted,
            } => self.on_restored(height, hash, &validators, &demoted, &mut out),
        }
        self.drain_inbox(&mut out);
        out
    }

    fn drain_inbox(&mut self, out: &mut Vec<Effect>) {
        while let Some((from, message)) = self.inbox.pop_front() {
            self.on_message(from, message, out);
        }
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

    /// R17: what must survive a crash.
    fn record(&self) -> LockRecord {
        let state = &self.state;
        LockRecord {
            height: self.height,
            view: state.view,
            proof: state.view_state.proof.clone(),
            lock: state.lock.clone(),
            block: state
                .lock
                .as_ref()
                .and_then(|lock| state.blocks.get(&lock.vote.block_hash))
                .map(|entry| entry.block.clone()),
            voted_prepare: state.voted_prepare,
            voted_commit: state.voted_commit,
        }
    }

    fn persist(&self, out: &mut Vec<Effect>) {
        out.push(Effect::PersistLock { record: self.record() });
    }

    fn arm_view_timer(&mut self, out: &mut Vec<Effect>) {
        if !self.state.view_state.view_timer_armed {
            self.state.view_state.view_timer_armed = true;
            out.push(Effect::ScheduleTimer {
                timer: Timer::View {
                    height: self.height,
                    view: self.state.view,
                },
                after_ms: self.config.view_timeout(self.state.view),
            });
        }
    }

    fn has_work(&self) -> bool {
        self.queue_len > 0 || self.state.highest.is_some() || self.state.view_state.proposal.is_some()
    }

    fn on_message(&mut self, from: PublicKey, message: Message, out: &mut Vec<Effect>) {
        match message {
            Message::Status { height, .. } => {
                if self.topology.contains(&from) {
                    self.sync.claimed.insert(from, height);
                }
                // R19: the peer says it committed our height (or more): fetch from it.
                if height >= self.height {
                    self.request_sync(from, out);
                }
                // A peer more than a block behind (a node that just started, say) learns this
                // height now rather than at the next status: it starts catching up, or restoring
                // a snapshot, a status interval sooner. One answer per status it sends, and only
                // while it is behind, so two replicas never answer each other in a loop.
                if height.saturating_add(2) < self.height && from != self.me {
                    out.push(Effect::Send {
                        to: from,
                        message: self.status(),
                    });
                }
                return;
            }
            Message::BlockSyncRequest { from_height, count } => {
                return self.on_sync_request(from, from_height, count, out)
            }
            Message::BlockSyncResponse { blocks } => return self.on_sync_response(from, blocks, out),
            // Gossip and the wire form of proposals are the host's business (the replica queues
            // gossip and rebuilds digests into proposals before they get here).
            Message::Transactions(_)
            | Message::ProposalDigest(_)
            | Message::TransactionsWanted { .. }
            | Message::TransactionsFound { .. }
            | Message::Held(_) => return self.drop_message(DropReason::Unexpected),
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
            Message::ViewChangeProof(votes) => self.on_view_change_proof(votes, out),
            Message::BlockWanted { hash, .. } => self.on_block_wanted(from, hash, out),
            Message::BlockFound(block) => self.on_block_found(*block, out),
            _ => self.drop_message(DropReason::Unexpected),
        }
    }
}
