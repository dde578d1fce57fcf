//! The replica driver: the consensus core joined to Kura, the world state and the transaction
//! queue. It carries out every effect that is local (validate, build, persist, commit, serve
//! blocks) and hands back what needs a network or a clock. sim-net drives it on virtual time;
//! the node will drive it from its async runtime. Nothing protocol-specific lives here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kasane_kura::{init, Backend, Kura, KuraConfig, KuraError};
use kasane_model::block::{tx_merkle_root, BlockHeader, BLOCK_TRANSACTIONS_MAX, BLOCK_TRANSACTION_BYTES_MAX};
use kasane_model::crypto::{verify_batch, KeyCache, SignedMessage};
use kasane_model::transaction::{verify_transaction_signatures, SigningMessages, TransactionHashes};
use kasane_model::{Block, CommittedBlock, Hash, KeyPair, PublicKey, SignedTransaction};
use kasane_wsv::state::ExecutedBlock;
use kasane_wsv::{ApplyError, PluginRegistry, TransactionOutcome, Wsv};

use crate::holding::{HoldStore, Holding, SyncStart, Unsynced, VolatileHolds, HOLD_SYNC_MS};
use crate::io::{Config, Effect, Input, LockRecord, Timer, Verdict};
use crate::message::{Message, Proposal, ProposalDigest, SnapshotManifest, GOSSIP_TRANSACTIONS_MAX};
use crate::queue::{Origin, QueueError, TransactionQueue};
use crate::sumeragi::{Sumeragi, BLOCKS_PER_HEIGHT_MAX};
use crate::wire::{self, Found, Wire, WireCounts};

/// Most block bytes in one block-sync response (one block always goes, and a block fits a
/// message by itself). A response is the unit of latency of block sync: at half a message
/// (32 MiB) one took 1.5-2.5 s to be read, sent, decoded and hashed on a loaded 2-core machine,
/// past the 2 s request timeout, and a node waited for each before applying any of it. At
/// 8 MiB the peers asked in parallel keep the stream full.
pub const SYNC_RESPONSE_BYTES_MAX: usize = 8 << 20;

/// How far ahead of the replica's clock a block's timestamp may be for the replica to vote for
/// it. A block stamped later is not invalid: the replica waits until its clock is within this
/// bound (R5), and commits it on its certificate like any other. So no block's validity depends
/// on a clock, and chain time runs ahead of the honest clocks by at most this much.
pub const BLOCK_FUTURE_MS_MAX: u64 = 10_000;

/// Where the consensus write-ahead record lives (R17). `save` must be durable when it returns
/// `Ok`. A store that fails stops the replica: no vote may leave without its record, so after
/// an error the replica sends nothing more and reports [`ReplicaEvent::LockStoreFailed`].
pub trait LockStore: Send {
    fn save(&mut self, record: &LockRecord) -> Result<(), LockStoreError>;
    fn load(&self) -> Result<Option<LockRecord>, LockStoreError>;
}

/// Why a lock store could not save or read its record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consensus lock record: {0}")]
pub struct LockStoreError(pub String);

/// What the host must do: talk to peers, or fire a timer later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Send {
        to: PublicKey,
        message: Message,
    },
    /// A message already encoded (a block-sync response built from Kura's records by
    /// [`crate::message::sync_response_frame`]): the bytes go as they are; a host that needs the
    /// message itself decodes it.
    SendFrame {
        to: PublicKey,
        frame: Vec<u8>,
    },
    Broadcast {
        message: Message,
    },
    Timer {
        timer: Timer,
        after_ms: u64,
    },
}

impl Outbound {
    /// The same with a [`Outbound::SendFrame`] decoded into [`Outbound::Send`], for hosts that
    /// handle messages, not bytes (the simulator, a node's loopback and fault injection); None
    /// for a frame that does not decode, which the replica never builds.
    pub fn decoded(self) -> Option<Outbound> {
        match self {
            Outbound::SendFrame { to, frame } => kasane_model::codec::decode(&frame)
                .ok()
                .map(|message| Outbound::Send { to, message }),
            other => Some(other),
        }
    }
}

/// What happened, for checkers, metrics and traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaEvent {
    Committed {
        height: u64,
        hash: Hash,
        /// (payload hash, committed?) per transaction, in block order.
        transactions: Vec<(Hash, bool)>,
        /// Transaction hashes (the Merkle leaves), in block order.
        tx_hashes: Vec<Hash>,
        /// Why each rejected transaction was rejected, by payload hash, in block order.
        rejections: Vec<(Hash, String)>,
    },
    ViewChanged {
        height: u64,
        view: u64,
    },
    /// Transactions this replica's clients submitted are acknowledged: f + 1 validators hold
    /// each, or its block committed (docs/PROTOCOL.md section 7.1).
    Held {
        payloads: Vec<Hash>,
    },
    /// The hold store failed to sync: what it was given since its last sync is not counted as
    /// held, here or by any peer (R18b). The host reports it.
    HoldStoreFailed {
        error: String,
    },
    /// Transactions held before a restart were queued again from the hold store (R18b).
    Restored {
        queued: usize,
        dropped: usize,
    },
    /// A block below a restored checkpoint was appended to Kura without execution (state sync,
    /// docs/PROTOCOL.md section 8.1): committed by the chain, its outcomes are not known here.
    Backfilled {
        height: u64,
        hash: Hash,
        transactions: usize,
    },
    /// What a restore from a snapshot did.
    Restore(RestoreEvent),
    /// The lock store failed (R17): the replica has stopped and sends nothing more; the host
    /// must stop too.
    LockStoreFailed {
        error: String,
    },
    /// This replica, as leader, could not build a block from its queue: `error` says why. When
    /// a validator plugin failed on one transaction, that transaction left the queue
    /// (`dropped`) and the block was built from the rest; otherwise nothing was proposed.
    BuildFailed {
        height: u64,
        error: String,
        dropped: Option<Hash>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("block store: {0}")]
    Kura(#[from] KuraError),
    #[error("world state init: {0}")]
    Init(#[from] init::InitError),
    #[error("{0}")]
    Lock(#[from] LockStoreError),
}

/// A validated block's transaction hashes and, when it was executed against the current state,
/// its execution.
struct Validated {
    hashes: Vec<TransactionHashes>,
    executed: Option<ExecutedBlock>,
}

/// What a host computed (off the consensus thread) for the transactions a message carries: their
/// hashes and whether it verified their signatures into the replica's shared [`KeyCache`]. The
/// host is the replica's own process, computing from this very message, so the replica takes
/// both as done and skips its own cache lookups; a host that cannot vouch passes `false` (or
/// [`PreparedHashes::None`]) and the replica checks for itself.
#[derive(Debug, Clone, Default)]
pub enum PreparedHashes {
    #[default]
    None,
    /// For a `Transactions` message, in order.
    Transactions(Vec<PreparedTransaction>),
    /// For a proposal or a block-sync response, in block order.
    Blocks(Vec<PreparedBlock>),
}

/// One transaction's hashes, whether every signature on it verified, and, when the host kept
/// it from hashing, its encoding (`codec::encode` of it, which the hold store then writes as it
/// is instead of encoding the transaction again).
#[derive(Debug, Clone)]
pub struct PreparedTransaction {
    pub hashes: TransactionHashes,
    pub signatures_verified: bool,
    pub encoding: Option<Vec<u8>>,
}

/// A block's hash, its transactions' hashes in order, and whether every transaction signature
/// in it verified.
#[derive(Debug, Clone)]
pub struct PreparedBlock {
    pub hash: Hash,
    pub transactions: Vec<TransactionHashes>,
    pub signatures_verified: bool,
}

/// One validator: consensus, store, state, queue.
pub struct Replica<B: Backend + Sync> {
    key: KeyPair,
    core: Sumeragi,
    kura: Kura<B>,
    wsv: Wsv,
    queue: TransactionQueue,
    cache: KeyCache,
    /// Blocks validated at the current height, by block hash: their transaction hashes and
    /// execution, so that committing one applies the writes already computed.
    validated: BTreeMap<Hash, Validated>,
    /// What the host computed for the blocks of the message being handled, by block hash.
    known_hashes: BTreeMap<Hash, PreparedBlock>,
    lock_store: Box<dyn LockStore>,
    /// Set when the lock store failed: the replica takes no input and sends nothing after it.
    stopped: Option<String>,
    events: Vec<ReplicaEvent>,
    /// Proposals travel as digests (the wire protocol, `wire.rs`).
    wire: Wire,
    digest_proposals: bool,
    /// Who holds each of this replica's clients' transactions, until f + 1 validators do.
    holding: Holding,
    /// Every queued transaction, durable across restarts (R18b).
    holds: Box<dyn HoldStore>,
    /// What this replica newly holds and will answer for once `holds` has synced it.
    unsynced: Unsynced,
    /// What background syncs of `holds` under way will answer for, by ticket, oldest first.
    syncing: VecDeque<(u64, Unsynced)>,
    /// A restore from a snapshot under way (state sync, `restore.rs`).
    restore: Option<restore::Restore>,
    /// Peers whose snapshot or chunk did not check out: not asked again.
    snapshot_refused: BTreeSet<PublicKey>,
    /// The manifest of the checkpoint this replica serves, built at the first request for it
    /// (it reads the blocks up to the binding block from Kura once, not once per request).
    served_manifest: Option<SnapshotManifest>,
    /// The blocks below the base of a store restored from a snapshot, being fetched (`fill.rs`).
    fill: Option<fill::Fill>,
    /// Whether a `Timer::Restore` is pending (one serves the restore and the fill).
    tick_armed: bool,
    /// Restores abandoned since this replica started.
    restores_abandoned: u32,
    /// What admission did with peers' gossip.
    gossip: GossipCounts,
}

/// What admission did with the transactions peers gossiped, since the replica started. Gossip
/// that is mostly duplicates is work for nothing: a stale-timer re-gossip once made more than
/// half of a saturated node's gossip duplicates (docs/BENCHMARKS.md), and these counts show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipCounts {
    /// Queued here.
    pub admitted: u64,
    /// Already queued or committed here (answered `Held` all the same).
    pub already_held: u64,
    /// Refused because the queue was full.
    pub queue_full: u64,
    /// Refused for anything else (bad signature, expired, wrong chain...).
    pub refused: u64,
}

mod admission;
use admission::Source;
mod blocks;
mod fill;
mod restore;
pub use restore::{RestoreEvent, RESTORE_CHECKPOINTS_BEHIND};

/// Figures by name, for metrics.
pub type NamedFigures = Vec<(&'static str, usize)>;

impl<B: Backend + Sync> std::fmt::Debug for Replica<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("key", &self.key.public_key())
            .field("height", &self.wsv.height())
            .field("view", &self.core.view())
            .field("queue", &self.queue.len())
            .finish()
    }
}

impl<B: Backend + Sync> Replica<B> {
    /// Opens the store (cutting a torn tail), replays it into the world state, and restores the
    /// lock record. The store must hold at least the genesis block.
    pub fn open(
        key: KeyPair,
        config: Config,
        backend: B,
        kura_config: KuraConfig,
        plugins: PluginRegistry,
        lock_store: Box<dyn LockStore>,
        queue_capacity: usize,
    ) -> Result<Replica<B>, ReplicaError> {
        let (kura, _) = Kura::open(backend, kura_config)?;
        let (wsv, _) = init::fast_init(&kura, plugins, None)?;
        Replica::from_parts(key, config, kura, wsv, lock_store, queue_capacity)
    }

    /// A replica over a store its host opened and a world state it replayed from that store
    /// (the node reports both steps and chooses fast or strict init).
    pub fn from_parts(
        key: KeyPair,
        config: Config,
        kura: Kura<B>,
        wsv: Wsv,
        lock_store: Box<dyn LockStore>,
        queue_capacity: usize,
    ) -> Result<Replica<B>, ReplicaError> {
        let record = lock_store.load()?;
        let core = Sumeragi::new(
            key.clone(),
            config,
            wsv.height() + 1,
            wsv.head_hash(),
            &wsv.validators(),
            &wsv.demoted(),
            record,
        );
        Ok(Replica {
            key,
            core,
            kura,
            wsv,
            queue: TransactionQueue::new(queue_capacity),
            cache: KeyCache::new(),
            validated: BTreeMap::new(),
            known_hashes: BTreeMap::new(),
            lock_store,
            events: Vec::new(),
            wire: Wire::default(),
            digest_proposals: true,
            holding: Holding::default(),
            holds: Box::new(VolatileHolds),
            unsynced: Unsynced::default(),
            syncing: VecDeque::new(),
            restore: None,
            snapshot_refused: BTreeSet::new(),
            served_manifest: None,
            fill: None,
            tick_armed: false,
            restores_abandoned: 0,
            gossip: GossipCounts::default(),
            stopped: None,
        })
    }

    /// Why this replica stopped (its lock store failed), if it did: it then sends nothing more.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Makes the replica keep its queue in `holds` (R18b), and queue again at [`Replica::start`]
    /// what `holds` kept from a previous run. Without it the queue is memory only.
    pub fn with_hold_store(mut self, holds: Box<dyn HoldStore>) -> Self {
        self.holds = holds;
        self
    }

    /// Whether this replica broadcasts its proposals as digests (the default) or whole. A
    /// replica that is Byzantine on purpose sends them whole, so its rewrites work on blocks;
    /// every replica accepts both forms.
    pub fn with_proposal_digests(mut self, digests: bool) -> Self {
        self.digest_proposals = digests;
        self
    }

    /// What the wire protocol did so far.
    pub fn wire_counts(&self) -> WireCounts {
        self.wire.counts
    }

    /// What admission did with peers' gossip so far.
    pub fn gossip_counts(&self) -> GossipCounts {
        self.gossip
    }

    /// Makes the replica share `cache` (with the validator plugins that verify signatures, say).
    pub fn with_key_cache(mut self, cache: KeyCache) -> Self {
        self.cache = cache;
        self
    }

    /// A handle on the replica's key and signature cache. The host verifies signatures off the
    /// consensus thread with it, and the checks in `submit`, `on_message` and block validation
    /// then find them done.
    pub fn key_cache(&self) -> KeyCache {
        self.cache.clone()
    }

    /// For a client's transaction still counting holders: how many validators hold it, and how
    /// many must (f + 1). `None` once it is acknowledged, committed or forgotten.
    pub fn holders(&self, payload: &Hash) -> Option<(usize, usize)> {
        self.holding
            .holders(payload)
            .map(|holders| (holders, self.holders_needed()))
    }

    /// f + 1 of the current validators: any f + 1 include one that is not faulty.
    /// Client transactions still counting their holders (bounded by `HOLD_WAIT_MS_MAX`).
    pub fn holding_len(&self) -> usize {
        self.holding.len()
    }

    pub fn holders_needed(&self) -> usize {
        self.core.topology().max_faulty() + 1
    }

    /// Whether a transaction with this payload hash waits in the queue.
    pub fn is_queued(&self, payload: &Hash) -> bool {
        self.queue.contains(payload)
    }

    pub fn key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub fn wsv(&self) -> &Wsv {
        &self.wsv
    }

    pub fn kura(&self) -> &Kura<B> {
        &self.kura
    }

    pub fn core(&self) -> &Sumeragi {
        &self.core
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Estimated bytes of the replica's tables (`kasane_model::footprint`), by table, and what
    /// waits in its buffers, by count: for telling which one holds a node's memory.
    pub fn footprint(&self) -> (NamedFigures, NamedFigures) {
        let (replay, recent) = self.wsv.footprint();
        let bytes = vec![
            ("queue", self.queue.footprint()),
            ("holding", self.holding.footprint()),
            ("replay", replay),
            ("recent_transactions", recent),
        ];
        let mut counts = self.core.buffered().to_vec();
        counts.push(("hold_syncs_waiting", self.syncing.len()));
        (bytes, counts)
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<ReplicaEvent> {
        std::mem::take(&mut self.events)
    }

    pub fn start(&mut self, now_ms: u64) -> Vec<Outbound> {
        let restored = self.restore_held(now_ms);
        let mut effects = self.core.start();
        if restored {
            effects.extend(self.core.step(Input::QueueLength(self.queue.len())));
        }
        let mut out = self.run(now_ms, effects);
        // A store restored from a snapshot before a restart goes on filling in below its base.
        self.start_fill(now_ms, &mut out);
        out
    }

    /// A message from an authenticated peer.
    pub fn on_message(&mut self, now_ms: u64, from: PublicKey, message: Message) -> Vec<Outbound> {
        self.on_prepared(now_ms, from, message, PreparedHashes::None)
    }

    /// A message from an authenticated peer, with the hashes of the transactions it carries as
    /// the host computed them from this very message (so they cannot belong to another one).
    pub fn on_prepared(
        &mut self,
        now_ms: u64,
        from: PublicKey,
        message: Message,
        hashes: PreparedHashes,
    ) -> Vec<Outbound> {
        if self.stopped.is_some() {
            return Vec::new();
        }
        let message = match message {
            Message::Transactions(transactions) => {
                let prepared = match hashes {
                    PreparedHashes::Transactions(prepared) => Some(prepared),
                    _ => None,
                };
                let mut out = Vec::new();
                self.admit(now_ms, transactions, prepared, Source::Peer(from), &mut out);
                return out;
            }
            Message::Held(payloads) => {
                self.on_held(from, &payloads);
                return Vec::new();
            }
            Message::ProposalDigest(digest) => return self.on_digest(now_ms, from, *digest, None),
            Message::TransactionsWanted { block, transactions } => {
                return self
                    .wire
                    .answer(&block, &transactions)
                    .map(|message| Outbound::Send { to: from, message })
                    .into_iter()
                    .collect();
            }
            Message::TransactionsFound { block, transactions } => {
                let Some(pending) = self.wire.take_pending(&from, &block) else {
                    return Vec::new();
                };
                let found = wire::found(transactions, hashes, &pending.missing);
                return self.on_digest(now_ms, from, pending.digest, Some(found));
            }
            Message::SnapshotWanted { height } => {
                return vec![Outbound::Send {
                    to: from,
                    message: Message::SnapshotManifest {
                        height,
                        manifest: self.snapshot_manifest(height),
                    },
                }]
            }
            Message::SnapshotChunkWanted { height, index } => {
                let bytes = self
                    .wsv
                    .checkpoint()
                    .filter(|checkpoint| checkpoint.height() == height)
                    .and_then(|checkpoint| checkpoint.chunk(index as usize))
                    .map(<[u8]>::to_vec);
                return vec![Outbound::Send {
                    to: from,
                    message: Message::SnapshotChunk { height, index, bytes },
                }];
            }
            Message::SnapshotManifest { height, manifest } => {
                return self.on_snapshot_manifest(now_ms, from, height, manifest)
            }
            Message::SnapshotChunk { height, index, bytes } => {
                return self.on_snapshot_chunk(now_ms, from, height, index, bytes)
            }
            Message::BlockSyncResponse { blocks } if self.is_fill_response(&from, &blocks) => {
                if let PreparedHashes::Blocks(prepared) = hashes {
                    self.known_hashes
                        .extend(prepared.into_iter().map(|block| (block.hash, block)));
                }
                let out = self.on_fill_response(now_ms, from, blocks);
                self.known_hashes.clear();
                return out;
            }
            message => message,
        };
        if let PreparedHashes::Blocks(blocks) = hashes {
            self.known_hashes
                .extend(blocks.into_iter().map(|block| (block.hash, block)));
        }
        let status = matches!(message, Message::Status { .. });
        let effects = self.core.step(Input::Message { from, message });
        let mut out = self.run(now_ms, effects);
        self.known_hashes.clear();
        if status {
            // A status may raise the cluster height far above this replica's.
            self.maybe_restore(now_ms, &mut out);
        }
        out
    }

    /// Rebuilds a proposal from a digest and steps the core with it; asks the sender once for
    /// what is missing (`found` is what that answer brought). Only validators' digests are
    /// held.
    fn on_digest(
        &mut self,
        now_ms: u64,
        from: PublicKey,
        digest: ProposalDigest,
        found: Option<Found>,
    ) -> Vec<Outbound> {
        if !self.core.topology().contains(&from) {
            return Vec::new();
        }
        let retried = found.is_some();
        match self.assemble(digest, &found.unwrap_or_default()) {
            Ok((proposal, prepared)) => {
                self.wire.counts.rebuilt += 1;
                self.on_prepared(
                    now_ms,
                    from,
                    Message::Proposal(Box::new(proposal)),
                    PreparedHashes::Blocks(vec![prepared]),
                )
            }
            Err((digest, missing)) if !retried => vec![Outbound::Send {
                to: from,
                message: self.wire.hold(from, digest, missing),
            }],
            // The sender did not send what its proposal holds: like a leader that proposes
            // nothing, the view timer moves on.
            Err(_) => {
                self.wire.counts.abandoned += 1;
                Vec::new()
            }
        }
    }

    pub fn on_timer(&mut self, now_ms: u64, timer: Timer) -> Vec<Outbound> {
        if self.stopped.is_some() {
            return Vec::new();
        }
        if timer == Timer::SyncHolds {
            return self.sync_holds();
        }
        if timer == Timer::Restore {
            return self.on_restore_tick(now_ms);
        }
        let mut out = Vec::new();
        if matches!(timer, Timer::View { .. }) && self.drop_expired(now_ms) {
            let effects = self.core.step(Input::QueueLength(self.queue.len()));
            out.extend(self.run(now_ms, effects));
        }
        // R18: transactions still queued when a view times out are gossiped again, so one that
        // reached only a partitioned or crashed replica still gets to a leader. Only a timer of
        // the current height and view is a timeout: every height arms one, and the timers of
        // heights that committed in time still fire. Re-gossip on those sent the 4,096 oldest
        // queued transactions to every peer once per block, which at full load was more than
        // half of all the transactions a node received, every one of them a duplicate.
        let timed_out = matches!(timer, Timer::View { height, view }
            if height == self.core.height() && view == self.core.view());
        if timed_out && !self.queue.is_empty() {
            let transactions = self
                .queue
                .oldest(GOSSIP_TRANSACTIONS_MAX, BLOCK_TRANSACTION_BYTES_MAX)
                .into_iter()
                .map(|(transaction, _)| transaction)
                .collect();
            out.push(Outbound::Broadcast {
                message: Message::Transactions(transactions),
            });
        }
        let effects = self.core.step(Input::TimerFired(timer));
        out.extend(self.run(now_ms, effects));
        out
    }

    /// Drops what expired before `now_ms` from the queue and releases it from the hold store
    /// (everything that leaves the queue is released). Returns whether anything went.
    fn drop_expired(&mut self, now_ms: u64) -> bool {
        let expired = self.queue.remove_expired(now_ms);
        self.holds.release(&expired);
        !expired.is_empty()
    }

    /// The transaction hashes, in order, of a block this replica built or validated at the
    /// current height.
    pub fn block_transaction_hashes(&self, block: &Hash) -> Option<Vec<Hash>> {
        let validated = self.validated.get(block)?;
        Some(validated.hashes.iter().map(|hashes| hashes.transaction).collect())
    }

    /// Rebuilds the proposal a digest stands for from queued transactions and `found` ones (by
    /// transaction hash, as the host fetched and checked them). Queued transactions had their
    /// signatures verified at admission. On failure, gives the digest back with the transaction
    /// hashes found nowhere, in block order.
    pub fn assemble(
        &self,
        digest: ProposalDigest,
        found: &BTreeMap<Hash, (SignedTransaction, PreparedTransaction)>,
    ) -> Result<(Proposal, PreparedBlock), (ProposalDigest, Vec<Hash>)> {
        let mut transactions = Vec::with_capacity(digest.transactions.len());
        let mut hashes = Vec::with_capacity(digest.transactions.len());
        let mut signatures_verified = true;
        let mut missing = Vec::new();
        for transaction_hash in &digest.transactions {
            if let Some((transaction, queued)) = self.queue.by_transaction_hash(transaction_hash) {
                transactions.push(transaction.clone());
                hashes.push(*queued);
            } else if let Some((transaction, prepared)) = found.get(transaction_hash) {
                transactions.push(transaction.clone());
                hashes.push(prepared.hashes);
                signatures_verified &= prepared.signatures_verified;
            } else {
                missing.push(*transaction_hash);
            }
        }
        if !missing.is_empty() {
            return Err((digest, missing));
        }
        let prepared = PreparedBlock {
            hash: digest.header.hash(),
            transactions: hashes,
            signatures_verified,
        };
        Ok((digest.into_proposal(transactions), prepared))
    }

    /// Carries out the core's effects in order, feeding answers back, until only network and
    /// timer work is left.
    fn run(&mut self, now_ms: u64, effects: Vec<Effect>) -> Vec<Outbound> {
        let mut out = Vec::new();
        if self.stopped.is_some() {
            return out;
        }
        let mut pending: VecDeque<Effect> = effects.into();
        while let Some(effect) = pending.pop_front() {
            let answer = match effect {
                Effect::Send { to, message } => {
                    out.push(Outbound::Send { to, message });
                    None
                }
                Effect::Broadcast {
                    message: Message::Proposal(proposal),
                } if self.digest_proposals => {
                    let hashes = self.block_transaction_hashes(&proposal.block.hash());
                    out.push(Outbound::Broadcast {
                        message: self.wire.compact(proposal, hashes),
                    });
                    None
                }
                Effect::Broadcast { message } => {
                    out.push(Outbound::Broadcast { message });
                    None
                }
                Effect::ScheduleTimer { timer, after_ms } => {
                    out.push(Outbound::Timer { timer, after_ms });
                    None
                }
                Effect::ViewChanged { height, view } => {
                    self.events.push(ReplicaEvent::ViewChanged { height, view });
                    None
                }
                Effect::PersistLock { record } => {
                    if let Err(error) = self.lock_store.save(&record) {
                        // What follows (a vote, say) counted on the record: none of it leaves.
                        return self.stop(error, out);
                    }
                    None
                }
                Effect::ValidateBlock { block } => Some(Input::BlockValidated {
                    height: block.header.height,
                    hash: block.hash(),
                    verdict: self.judge(now_ms, &block),
                }),
                Effect::BuildProposal {
                    height,
                    view,
                    max_transactions,
                    view_change_proof,
                } => {
                    let queued = self.queue.len();
                    let built = self.build(now_ms, height, view, max_transactions, view_change_proof);
                    // Building drops expired transactions: the core learns the new length.
                    if self.queue.len() != queued {
                        pending.extend(self.core.step(Input::QueueLength(self.queue.len())));
                    }
                    Some(match built {
                        Some(block) => Input::ProposalBuilt { height, view, block },
                        None => Input::NothingToPropose { height, view },
                    })
                }
                Effect::CommitBlock { block } => {
                    let answer = self.commit(block);
                    pending.extend(self.core.step(answer));
                    // The block's transactions left the queue.
                    Some(Input::QueueLength(self.queue.len()))
                }
                Effect::ServeBlocks { to, from_height, count } => {
                    // A store that cannot be read here is not this peer's problem: it times
                    // out and asks another (R19), and the node's own init reports the damage.
                    if let Ok(frame) = self
                        .read_records(from_height, count)
                        .map_err(|_| ())
                        .and_then(|records| crate::message::sync_response_frame(&records).map_err(|_| ()))
                    {
                        out.push(Outbound::SendFrame { to, frame });
                    }
                    None
                }
            };
            if let Some(input) = answer {
                pending.extend(self.core.step(input));
            }
        }
        out
    }

    /// The lock store failed: stop for good (R17). What `out` holds came before the record was
    /// due and goes; nothing after it does.
    fn stop(&mut self, error: LockStoreError, out: Vec<Outbound>) -> Vec<Outbound> {
        let error = error.to_string();
        self.events.push(ReplicaEvent::LockStoreFailed { error: error.clone() });
        self.stopped = Some(error);
        out
    }

    /// The manifest of this replica's checkpoint at `height`, if it holds that one (only the
    /// newest bound one is kept) and has committed the block that binds it.
    fn snapshot_manifest(&mut self, height: u64) -> Option<SnapshotManifest> {
        if let Some(served) = self
            .served_manifest
            .as_ref()
            .filter(|served| served.header.height == height)
        {
            return Some(served.clone());
        }
        let checkpoint = self
            .wsv
            .checkpoint()
            .filter(|checkpoint| checkpoint.height() == height)?;
        let link = self.wsv.checkpoint_link()?;
        let binding = height.checked_add(kasane_wsv::snapshot::binding_delay(self.wsv.checkpoint_interval()))?;
        let header = self.kura.read(height).ok()?.block.header;
        let mut headers = Vec::new();
        let mut certificate = None;
        for at in height + 1..=binding {
            let block = self.kura.read(at).ok()?;
            headers.push(block.block.header);
            certificate = Some(block.certificate);
        }
        let manifest = SnapshotManifest {
            header,
            chunks: checkpoint.manifest().to_vec(),
            headers,
            certificate: certificate?,
            link,
        };
        self.served_manifest = Some(manifest.clone());
        Some(manifest)
    }

    /// Up to `count` blocks from `from_height` as Kura stores them, stopping before the response
    /// would pass [`SYNC_RESPONSE_BYTES_MAX`] (one block always goes, and a block fits a message
    /// by itself), so a response never exceeds the size a peer accepts, and at the first block
    /// not stored (a store from a base holds no blocks between its lower part and the base: the
    /// asker gets what there is, maybe nothing, at once). Nothing is decoded: the records were
    /// checked (length and checksum) by Kura on the way out.
    fn read_records(&self, from_height: u64, count: u64) -> Result<Vec<Vec<u8>>, KuraError> {
        let last = (from_height + count.max(1) - 1).min(self.kura.height());
        let mut records = Vec::new();
        let mut bytes = 0usize;
        for height in from_height..=last {
            if !self.kura.holds(height) {
                break;
            }
            let record = self.kura.read_encoded(height)?;
            bytes += record.len();
            if !records.is_empty() && bytes > SYNC_RESPONSE_BYTES_MAX {
                break;
            }
            records.push(record);
        }
        Ok(records)
    }
}
