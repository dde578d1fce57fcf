//! The tokio host of one replica.
//!
//! One task owns the [`Replica`] and is the only code that touches consensus state: it takes
//! peer messages, client submissions, reads for the API and fired timers, one at a time, and
//! carries out what the replica hands back (send, broadcast, schedule a timer). The replica does
//! the local work itself in the order PROTOCOL.md requires (lock record before votes leave,
//! Kura before the world state). Signature checks, the expensive part of validation, run before
//! a message reaches that task, in the verifier stages (`verifier.rs`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kasane_consensus::replica::{Outbound, PreparedHashes, PreparedTransaction, Replica, ReplicaEvent, RestoreEvent};
use kasane_consensus::{Message, Role, Timer};
use kasane_kura::FileBackend;
use kasane_model::crypto::KeyCache;
use kasane_model::{PublicKey, SignedTransaction};
use kasane_p2p::Network;

use super::hold_log::HoldsSynced;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::byzantine::Saboteur;
use super::checkpoint::CheckpointSaver;
use super::state::{ChainEvent, Metrics, Status, TxState, TxTable};

pub type NodeReplica = Replica<FileBackend>;

/// A consensus step at least this long is logged (info, "slow consensus step").
const SLOW_STEP: Duration = Duration::from_millis(100);

/// A read of the replica's state, run on the consensus task between steps.
pub type ReadFn = Box<dyn FnOnce(&NodeReplica) + Send>;

/// Work for the consensus task from the API.
pub enum Command {
    Submit {
        transactions: Vec<SignedTransaction>,
        /// Their hashes and signature checks, in order.
        prepared: Vec<PreparedTransaction>,
        reply: oneshot::Sender<Vec<Result<(), String>>>,
        /// Fires once f + 1 validators hold every transaction admitted (or its block
        /// committed); dropped unanswered when none was admitted.
        held: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit { transactions, .. } => write!(f, "Submit({} transactions)", transactions.len()),
        }
    }
}

/// A peer message whose transaction signatures were checked on the blocking pool (into the
/// replica's shared cache).
#[derive(Debug)]
pub struct Prepared {
    pub from: PublicKey,
    pub message: Message,
    /// The hashes of the transactions the message carries, computed with the checks.
    pub hashes: PreparedHashes,
}

/// What the consensus task shares with the API.
#[derive(Debug)]
pub struct Shared {
    pub commands: mpsc::Sender<Command>,
    /// Reads of the replica's state. They have their own channel and go before any waiting
    /// command or message, so a read never queues behind a backlog of submissions.
    pub reads: mpsc::Sender<ReadFn>,
    pub status: watch::Receiver<Status>,
    pub events: broadcast::Sender<ChainEvent>,
    pub network: Network,
    pub metrics: Metrics,
    pub transactions: Mutex<TxTable>,
    pub queue_capacity: usize,
    /// `api.hold_wait_ms`.
    pub hold_wait: Duration,
    /// Transactions of API requests between admission and the consensus task's answer.
    pub admitting: std::sync::atomic::AtomicUsize,
    pub body_bytes_max: usize,
    /// Turns true when the node shuts down; long-lived responses (event streams) end then.
    pub stop: watch::Receiver<bool>,
    /// The replica's key and signature cache, for checks off the consensus task.
    pub key_cache: KeyCache,
    /// (transaction hash, payload hash) of each transaction of recently committed blocks, by
    /// height, so block reads need not hash every transaction again.
    pub recent_blocks: Mutex<std::collections::BTreeMap<u64, RecentBlock>>,
    /// Most transactions `recent_blocks` keeps (config `memory.recent_block_transactions`).
    pub recent_block_transactions_max: usize,
    /// True while the background audit of a strict start runs (it holds a second world state).
    pub auditing: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Runs `read` against the replica on the consensus task and returns its result.
    pub async fn read<T: Send + 'static>(&self, read: impl FnOnce(&NodeReplica) -> T + Send + 'static) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let read: ReadFn = Box::new(move |replica| {
            let _ = reply.send(read(replica));
        });
        self.reads.send(read).await.ok()?;
        answer.await.ok()
    }
}

/// A committed block's hash and its transactions' (transaction hash, payload hash).
#[derive(Debug, Clone)]
pub struct RecentBlock {
    pub hash: kasane_model::Hash,
    pub transactions: Vec<(kasane_model::Hash, kasane_model::Hash)>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::ProxyTail => "proxy_tail",
        Role::ValidatingPeer => "validating_peer",
        Role::Observer => "set_b",
        Role::Outsider => "outsider",
    }
}

/// Takes the replica's status for the snapshot.
/// State sync's steps in the node's log (docs/PROTOCOL.md section 8.1).
fn log_restore(event: &RestoreEvent) {
    match event {
        RestoreEvent::Started { checkpoint, height } => {
            tracing::info!(checkpoint, height, "state sync: asking the validators for a snapshot")
        }
        RestoreEvent::Proven {
            checkpoint,
            chunks,
            bytes,
            fetch_ms,
        } => tracing::info!(
            checkpoint,
            chunks,
            bytes,
            fetch_ms,
            "state sync: the snapshot proved itself against the certified block binding its root"
        ),
        RestoreEvent::Installed {
            checkpoint,
            transactions,
        } => tracing::info!(
            checkpoint,
            transactions,
            "state sync: restored state installed, the store starts from it; fetching the blocks below it in the background"
        ),
        RestoreEvent::Filled { base } => {
            tracing::info!(base, "state sync: every block below the base is stored, the store is whole again")
        }
        RestoreEvent::Abandoned { checkpoint, reason } => {
            tracing::warn!(checkpoint, %reason, "state sync: restore or fill abandoned")
        }
    }
}

pub fn status_of(replica: &NodeReplica) -> Status {
    let core = replica.core();
    let wsv = replica.wsv();
    Status {
        chain: wsv.chain().to_string(),
        public_key: replica.key().to_hex(),
        height: wsv.height(),
        head_hash: wsv.head_hash().to_hex(),
        view: core.view(),
        role: role_name(core.topology().role(&replica.key(), core.view())).to_string(),
        leader: core
            .topology()
            .leader(core.view())
            .map(|leader| leader.to_hex())
            .unwrap_or_default(),
        queue_len: replica.queue_len(),
        validators: core.topology().len(),
        transactions: wsv.transaction_count(),
        cluster_height: core.cluster_height(),
        replay_entries: wsv.replay_entries(),
        holding: replica.holding_len(),
        store_base: replica.kura().base(),
        store_lower_height: replica.kura().lower_height(),
    }
}

/// The consensus task's state.
pub struct Driver {
    replica: NodeReplica,
    network: Network,
    shared: Arc<Shared>,
    status: watch::Sender<Status>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_sequence: u64,
    /// Messages the replica sent to itself.
    loopback: VecDeque<Message>,
    /// Rewrites what leaves a node that is Byzantine on purpose.
    saboteur: Option<Saboteur>,
    checkpoints: Option<CheckpointSaver>,
    /// Told why, when the replica stops for good (its lock store failed): the node shuts down.
    halted: watch::Sender<Option<String>>,
    /// API requests waiting for their transactions to be held by f + 1 validators.
    holding: HoldWaits,
}

/// API requests waiting for acknowledgement, by request, and the request of each transaction.
#[derive(Debug, Default)]
struct HoldWaits {
    next: u64,
    requests: ahash::AHashMap<u64, HoldWait>,
    by_payload: ahash::AHashMap<kasane_model::Hash, u64>,
}

#[derive(Debug)]
struct HoldWait {
    /// Transactions of the request not yet acknowledged (each payload is in `by_payload` until
    /// it is, so a count is enough).
    remaining: usize,
    payloads: Vec<kasane_model::Hash>,
    done: oneshot::Sender<()>,
}

impl HoldWaits {
    fn wait(&mut self, payloads: Vec<kasane_model::Hash>, done: oneshot::Sender<()>) {
        if payloads.is_empty() {
            return;
        }
        self.next += 1;
        for payload in &payloads {
            self.by_payload.insert(*payload, self.next);
        }
        self.requests.insert(
            self.next,
            HoldWait {
                remaining: payloads.len(),
                payloads,
                done,
            },
        );
    }

    fn held(&mut self, payloads: &[kasane_model::Hash]) {
        for payload in payloads {
            let Some(id) = self.by_payload.remove(payload) else {
                continue;
            };
            let Some(wait) = self.requests.get_mut(&id) else {
                continue;
            };
            wait.remaining -= 1;
            if wait.remaining == 0 {
                if let Some(wait) = self.requests.remove(&id) {
                    let _ = wait.done.send(());
                }
            }
        }
    }

    /// Forgets the requests whose client stopped waiting (the API answered on its timeout).
    fn sweep(&mut self) {
        let by_payload = &mut self.by_payload;
        self.requests.retain(|id, wait| {
            let waiting = !wait.done.is_closed();
            if !waiting {
                for payload in &wait.payloads {
                    if by_payload.get(payload) == Some(id) {
                        by_payload.remove(payload);
                    }
                }
            }
            waiting
        });
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("replica", &self.replica).finish()
    }
}

impl Driver {
    pub fn new(replica: NodeReplica, network: Network, shared: Arc<Shared>, status: watch::Sender<Status>) -> Driver {
        Driver {
            replica,
            network,
            shared,
            status,
            timers: BinaryHeap::new(),
            timer_sequence: 0,
            loopback: VecDeque::new(),
            saboteur: None,
            checkpoints: None,
            halted: watch::channel(None).0,
            holding: HoldWaits::default(),
        }
    }

    /// Makes this node misbehave (fault-injection experiments only).
    pub fn set_saboteur(&mut self, saboteur: Saboteur) {
        self.saboteur = Some(saboteur);
    }

    /// Where to say why the replica stopped for good, if it does; the task then ends.
    pub fn report_halt(&mut self, halted: watch::Sender<Option<String>>) {
        self.halted = halted;
    }

    /// Saves each new checkpoint beside the block store, for restarts.
    pub fn save_checkpoints(&mut self, saver: CheckpointSaver) {
        self.checkpoints = Some(saver);
    }

    /// Runs until `stop` turns true.
    pub async fn run(
        mut self,
        mut reads: mpsc::Receiver<ReadFn>,
        mut commands: mpsc::Receiver<Command>,
        mut consensus: mpsc::Receiver<Prepared>,
        mut others: mpsc::Receiver<Prepared>,
        mut holds_synced: mpsc::UnboundedReceiver<HoldsSynced>,
        mut stop: watch::Receiver<bool>,
    ) -> NodeReplica {
        let out = self.replica.start(now_ms());
        self.after_step(out);
        loop {
            // Waiting reads first: each costs little, and a client reading the state (a
            // wallet, the plasma agent) should not wait behind a backlog of submissions.
            while let Ok(read) = reads.try_recv() {
                tokio::task::block_in_place(|| read(&self.replica));
            }
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                Some(read) = reads.recv() => tokio::task::block_in_place(|| read(&self.replica)),
                Some(command) = commands.recv() => self.command(command),
                Some(prepared) = consensus.recv() => self.message(prepared),
                Some(prepared) = others.recv() => self.message(prepared),
                Some(synced) = holds_synced.recv() => {
                    let out = self.replica.on_holds_synced(synced.ticket, synced.result);
                    self.after_step(out);
                }
                () = sleep => self.fire_timers(),
            }
            if self.replica.stopped().is_some() {
                break;
            }
        }
        self.replica
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Submit {
                transactions,
                prepared,
                reply,
                held,
            } => {
                let payloads: Vec<kasane_model::Hash> =
                    prepared.iter().map(|prepared| prepared.hashes.payload).collect();
                let (results, out) =
                    tokio::task::block_in_place(|| self.replica.submit_prepared(now_ms(), transactions, prepared));
                // Registered before the step's events are read, so no acknowledgement is missed.
                let admitted = payloads
                    .into_iter()
                    .zip(&results)
                    .filter(|(_, result)| result.is_ok())
                    .map(|(payload, _)| payload)
                    .collect();
                self.holding.wait(admitted, held);
                let _ = reply.send(results);
                self.after_step(out);
            }
        }
    }

    fn message(&mut self, prepared: Prepared) {
        let Prepared { from, message, hashes } = prepared;
        self.step(from, message, hashes);
    }

    fn step(&mut self, from: PublicKey, message: Message, hashes: PreparedHashes) {
        let is_proposal = matches!(message, Message::Proposal(_));
        if let Message::BlockSyncResponse { blocks } = &message {
            tracing::debug!(
                %from,
                blocks = blocks.len(),
                first = blocks.first().map(|block| block.block.header.height),
                height = self.replica.wsv().height(),
                "block-sync response"
            );
        }
        let (kind, height) = (message.kind(), self.replica.wsv().height());
        let started = Instant::now();
        let out = tokio::task::block_in_place(|| self.replica.on_prepared(now_ms(), from, message, hashes));
        let elapsed = started.elapsed();
        if is_proposal {
            self.shared.metrics.proposal_step.record(elapsed);
        }
        // Every message waits behind a slow step: name them, so a latency spike in a benchmark
        // can be traced to the step (and height) that made it.
        if elapsed >= SLOW_STEP {
            tracing::info!(kind, height, ms = elapsed.as_millis() as u64, "slow consensus step");
        }
        self.after_step(out);
        let counts = self.replica.wire_counts();
        let metrics = &self.shared.metrics;
        metrics
            .proposal_digests
            .store(counts.rebuilt, std::sync::atomic::Ordering::Relaxed);
        metrics
            .proposal_fetches
            .store(counts.fetches, std::sync::atomic::Ordering::Relaxed);
        let gossip = self.replica.gossip_counts();
        for (gauge, value) in [
            (&metrics.gossip_admitted, gossip.admitted),
            (&metrics.gossip_already_held, gossip.already_held),
            (&metrics.gossip_queue_full, gossip.queue_full),
            (&metrics.gossip_refused, gossip.refused),
        ] {
            Metrics::set(gauge, value);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let out = tokio::task::block_in_place(|| self.replica.on_timer(now_ms(), timer));
            self.after_step(out);
        }
    }

    /// Sends, schedules, publishes events and the status snapshot.
    fn after_step(&mut self, out: Vec<Outbound>) {
        let me = self.replica.key();
        let mut pending: VecDeque<Outbound> = out.into();
        loop {
            while let Some(item) = pending.pop_front() {
                match item {
                    // Block-sync chunks, copied from Kura as they are stored. A node never
                    // serves itself, and fault injection rewrites messages, not bytes.
                    Outbound::SendFrame { to, frame } if to != me && self.saboteur.is_none() => {
                        tracing::debug!(%to, bytes = frame.len(), "block-sync response sent");
                        self.network.send_frame(&to, kasane_p2p::Class::Sync, frame)
                    }
                    frame @ Outbound::SendFrame { .. } => pending.extend(frame.decoded()),
                    Outbound::Send { to, message } if to == me => self.loopback.push_back(message),
                    Outbound::Send { to, message } => {
                        if let Message::BlockSyncRequest { from_height, .. } = &message {
                            tracing::debug!(%to, from_height, "block-sync request");
                        }
                        match &mut self.saboteur {
                            Some(saboteur) => saboteur.send(&self.network, &to, &message),
                            None => self.network.send(&to, &message),
                        }
                    }
                    Outbound::Broadcast { message } => {
                        // The replica has already turned an honest node's proposals into digests.
                        match &mut self.saboteur {
                            Some(saboteur) => saboteur.broadcast(&self.network, &message),
                            None => self.network.broadcast(&message),
                        }
                    }
                    Outbound::Timer { timer, after_ms } => {
                        self.timer_sequence += 1;
                        let at = Instant::now() + Duration::from_millis(after_ms);
                        self.timers.push(Reverse((at, self.timer_sequence, timer)));
                    }
                }
            }
            let Some(message) = self.loopback.pop_front() else {
                break;
            };
            pending.extend(self.replica.on_message(now_ms(), me, message));
        }
        self.publish_events();
        if let Some(saver) = &mut self.checkpoints {
            saver.offer(&self.replica, &self.shared);
        }
        self.status.send_if_modified(|status| {
            let fresh = status_of(&self.replica);
            let changed = *status != fresh;
            *status = fresh;
            changed
        });
    }

    fn publish_events(&mut self) {
        for event in self.replica.take_events() {
            match event {
                ReplicaEvent::Committed {
                    height,
                    hash,
                    transactions,
                    tx_hashes,
                    rejections,
                } => self.on_commit(height, hash, transactions, tx_hashes, rejections),
                ReplicaEvent::Held { payloads } => self.holding.held(&payloads),
                ReplicaEvent::HoldStoreFailed { error } => {
                    Metrics::add(&self.shared.metrics.hold_sync_failures, 1);
                    tracing::warn!(%error, "hold log sync failed: its transactions are not answered as held");
                }
                ReplicaEvent::Restored { queued, dropped } => {
                    Metrics::add(&self.shared.metrics.holds_restored, queued as u64);
                    tracing::info!(queued, dropped, "queued again what the hold log kept");
                }
                ReplicaEvent::Backfilled {
                    height,
                    hash,
                    transactions,
                } => {
                    Metrics::add(&self.shared.metrics.backfilled_blocks, 1);
                    tracing::debug!(height, %hash, transactions, "appended below the restored checkpoint");
                }
                ReplicaEvent::Restore(event) => {
                    match event {
                        RestoreEvent::Installed { .. } => Metrics::add(&self.shared.metrics.state_sync_restores, 1),
                        RestoreEvent::Abandoned { .. } => Metrics::add(&self.shared.metrics.state_sync_abandoned, 1),
                        _ => {}
                    }
                    log_restore(&event);
                }
                ReplicaEvent::BuildFailed {
                    height,
                    error,
                    dropped: Some(payload),
                } => tracing::warn!(height, %error, %payload, "left out of the block and dropped from the queue"),
                ReplicaEvent::BuildFailed {
                    height,
                    error,
                    dropped: None,
                } => tracing::error!(height, %error, "could not build a block: proposing nothing"),
                ReplicaEvent::LockStoreFailed { error } => {
                    tracing::error!(%error, "the consensus lock record failed: no vote may leave without it; stopping");
                    self.halted.send_replace(Some(error));
                }
                ReplicaEvent::ViewChanged { height, view } => {
                    Metrics::add(&self.shared.metrics.view_changes, 1);
                    tracing::info!(height, view, "view change");
                    let _ = self.shared.events.send(ChainEvent::ViewChange { height, view });
                }
            }
        }
    }

    fn on_commit(
        &mut self,
        height: u64,
        hash: kasane_model::Hash,
        transactions: Vec<(kasane_model::Hash, bool)>,
        tx_hashes: Vec<kasane_model::Hash>,
        rejections: Vec<(kasane_model::Hash, String)>,
    ) {
        self.holding.sweep();
        let metrics = &self.shared.metrics;
        Metrics::add(&metrics.commits, 1);
        let rejected = rejections.len();
        Metrics::add(&metrics.transactions_rejected, rejected as u64);
        Metrics::add(&metrics.transactions_committed, (transactions.len() - rejected) as u64);
        tracing::debug!(height, %hash, transactions = transactions.len(), rejected, "committed");
        let mut reasons = rejections.into_iter().peekable();
        let subscribed = self.shared.events.receiver_count() > 0;
        let _ = self.shared.events.send(ChainEvent::Block {
            height,
            hash: hash.to_hex(),
            transactions: transactions.len(),
            rejected,
        });
        if let Ok(mut recent) = self.shared.recent_blocks.lock() {
            recent.insert(
                height,
                RecentBlock {
                    hash,
                    transactions: tx_hashes
                        .iter()
                        .zip(&transactions)
                        .map(|(tx_hash, (payload, _))| (*tx_hash, *payload))
                        .collect(),
                },
            );
            let mut kept: usize = recent.values().map(|block| block.transactions.len()).sum();
            while kept > self.shared.recent_block_transactions_max && recent.len() > 1 {
                if let Some((_, oldest)) = recent.pop_first() {
                    kept -= oldest.transactions.len();
                }
            }
        }
        let Ok(mut table) = self.shared.transactions.lock() else {
            return;
        };
        for ((payload, committed), tx_hash) in transactions.into_iter().zip(tx_hashes) {
            let reason = if committed {
                None
            } else {
                match reasons.peek() {
                    Some((rejected, _)) if *rejected == payload => reasons.next().map(|(_, reason)| reason),
                    _ => Some("rejected".to_string()),
                }
            };
            let state = match &reason {
                None => TxState::Committed { height },
                Some(reason) => TxState::Rejected {
                    reason: reason.clone(),
                    height: Some(height),
                },
            };
            if let Some(latency) = table.in_block(payload, tx_hash, state) {
                if committed {
                    metrics.commit_latency.record(latency);
                }
            }
            if subscribed {
                let _ = self.shared.events.send(ChainEvent::Transaction {
                    hash: tx_hash.to_hex(),
                    payload_hash: payload.to_hex(),
                    height,
                    committed,
                    reason,
                });
            }
        }
    }
}
