//! The simulation loop: replica instances, a simulated network and disks on virtual time.
//!
//! An instance is one replica with its own disk, lock record and memory. Validators and spares
//! have one instance each; with Twins a key has several (`twins.rs`). Messages addressed to a
//! key reach every instance of it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kasane_consensus::replica::{LockStore, Outbound, Replica, ReplicaEvent};
use kasane_consensus::{LockRecord, Message, Timer};
use kasane_kura::fixture::{FixtureChain, FixtureConfig, FIXTURE_GENESIS_MS};
use kasane_kura::{Kura, KuraConfig, MemoryBackend};
use kasane_model::{Hash, KeyPair, PublicKey, SignedTransaction};
use kasane_wsv::PluginRegistry;

use crate::byzantine::{Coalition, Mischief};
use crate::checker::{Checker, Violation};
use crate::client::{self, Submission, CLIENT_ACCOUNTS};
use crate::config::{Behaviour, FaultKind, SimConfig};
use crate::oracle::{CoreView, Oracle};
use crate::rng::Rng;
use crate::twins::{round_of, TWIN_CLOCK_OFFSET_MS};

/// A run that processes more events than this is stopped and reported.
pub const EVENTS_MAX: u64 = 5_000_000;
/// Virtual time 0 is this wall-clock time: the genesis block's timestamp.
const EPOCH_MS: u64 = FIXTURE_GENESIS_MS;
const QUEUE_CAPACITY: usize = 10_000;
/// A client resubmits a transaction not committed this long after it sent it: a replica's queue
/// is memory, and a crash loses it.
const CLIENT_RETRY_MS: u64 = 3_000;
/// How often the client looks whether its next membership change may go out.
const MEMBERSHIP_POLL_MS: u64 = 250;

/// The lock record on a simulated disk: it survives crashes (saving is durable), and is lost
/// only by an amnesia fault. The records saved during a step are kept for the oracles, which
/// check that every vote leaves after a durable record of it.
#[derive(Debug, Clone, Default)]
struct SharedLocks(Arc<Mutex<Locks>>);

#[derive(Debug, Default)]
struct Locks {
    record: Option<LockRecord>,
    saved: Vec<LockRecord>,
}

impl SharedLocks {
    fn locks(&self) -> std::sync::MutexGuard<'_, Locks> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget(&self) {
        self.locks().record = None;
    }

    /// The records saved since the last call.
    fn take_saved(&self) -> Vec<LockRecord> {
        std::mem::take(&mut self.locks().saved)
    }
}

impl LockStore for SharedLocks {
    fn save(&mut self, record: &LockRecord) {
        let mut locks = self.locks();
        locks.record = Some(record.clone());
        locks.saved.push(record.clone());
    }

    fn load(&self) -> Option<LockRecord> {
        self.locks().record.clone()
    }
}

#[derive(Debug)]
struct Node {
    key: KeyPair,
    /// The node whose key, behaviour and clock this instance has (itself but for twins).
    original: usize,
    clock_offset_ms: i64,
    disk: MemoryBackend,
    locks: SharedLocks,
    replica: Option<Replica<MemoryBackend>>,
    /// Bumped on every crash, so timers of a previous life are ignored.
    generation: u64,
    mischief: Mischief,
}

#[derive(Debug)]
enum Event {
    Deliver { to: usize, from: usize, message: Message },
    Timer { node: usize, generation: u64, timer: Timer },
    Submit { submission: Submission, first: bool },
    Fault(FaultKind),
    EndOfFaults,
    Membership,
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub seed: u64,
    pub violations: Vec<Violation>,
    /// Highest height committed by an honest replica.
    pub height: u64,
    pub committed_transactions: usize,
    pub submitted_transactions: usize,
    pub view_changes: u64,
    pub messages: u64,
    /// Messages sent, by kind (`Message::kind`).
    pub messages_by_kind: BTreeMap<&'static str, u64>,
    pub events: u64,
    pub end_ms: u64,
    /// blake2b over the committed chain, the event count and the final heights: equal digests
    /// for equal seeds prove a run replays.
    pub digest: Hash,
    /// Virtual time from submission to first commit, per transaction, in ms.
    pub commit_latencies_ms: Vec<u64>,
    /// Messages honest replicas dropped, by reason (live replicas at the end).
    pub dropped: BTreeMap<String, u64>,
    /// Each replica's consensus state at the end (for failure reports).
    pub final_states: Vec<String>,
}

impl SimReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

struct Simulation<'c> {
    config: &'c SimConfig,
    fixture: FixtureChain,
    rng: Rng,
    now: u64,
    sequence: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: Vec<Node>,
    /// The instances of each key.
    index: BTreeMap<PublicKey, Vec<usize>>,
    blocked: BTreeSet<(usize, usize)>,
    /// Whether the faults ended, Twins' round partitions with them.
    partitions_lifted: bool,
    checker: Checker,
    oracle: Oracle,
    coalition: Coalition,
    /// Instances whose lock record was lost.
    amnesiac: BTreeSet<usize>,
    submitted: BTreeMap<Hash, u64>,
    /// Client submissions not yet made.
    submissions_pending: usize,
    /// Membership changes not yet sent, in order; each waits for the one before to be decided.
    membership: std::collections::VecDeque<SignedTransaction>,
    membership_last: Option<Hash>,
    membership_changes: u32,
    latencies: Vec<u64>,
    view_changes: u64,
    messages: u64,
    messages_by_kind: BTreeMap<&'static str, u64>,
    processed: u64,
}

/// The genesis every simulated cluster of `nodes` validators starts from.
fn fixture(nodes: usize) -> FixtureChain {
    FixtureChain::new(FixtureConfig {
        blocks: 0,
        transactions_per_block: 1,
        accounts: CLIENT_ACCOUNTS,
        validators: nodes,
        seed: 1,
    })
    .expect("the fixture genesis builds")
}

/// Each node's role in `view` at height 2 (the first block after genesis), by node index: what
/// a scenario needs to aim a fault at the leader or the proxy tail.
pub fn roles_after_genesis(nodes: usize, view: u64) -> Vec<kasane_consensus::Role> {
    let fixture = fixture(nodes);
    let validators: BTreeSet<PublicKey> = fixture.validators.iter().map(KeyPair::public_key).collect();
    let topology = kasane_consensus::Topology::new(&validators, 2);
    fixture
        .validators
        .iter()
        .map(|key| topology.role(&key.public_key(), view))
        .collect()
}

/// Runs one seed.
pub fn run(seed: u64, config: &SimConfig) -> SimReport {
    let go = || {
        let mut simulation = Simulation::new(seed, config);
        simulation.run();
        simulation.report(seed)
    };
    if config.mock_signatures {
        kasane_model::crypto::with_mock_signatures(go)
    } else {
        go()
    }
}

impl<'c> Simulation<'c> {
    fn new(seed: u64, config: &'c SimConfig) -> Simulation<'c> {
        let mut rng = Rng::new(seed);
        let fixture = fixture(config.nodes);
        let workload = client::workload(&config.client, &fixture, &mut rng);
        let mut simulation = Simulation {
            config,
            fixture,
            rng: rng.fork(),
            now: 0,
            sequence: 0,
            events: BTreeMap::new(),
            nodes: Vec::new(),
            index: BTreeMap::new(),
            blocked: BTreeSet::new(),
            partitions_lifted: false,
            checker: Checker::default(),
            oracle: Oracle::new(config.consensus.locking, config.views_after_heal_max),
            coalition: Coalition::default(),
            amnesiac: BTreeSet::new(),
            submitted: BTreeMap::new(),
            submissions_pending: workload.submissions.len(),
            membership: Default::default(),
            membership_last: None,
            membership_changes: 0,
            latencies: Vec::new(),
            view_changes: 0,
            messages: 0,
            messages_by_kind: BTreeMap::new(),
            processed: 0,
        };
        simulation.create_instances();
        for node in 0..simulation.nodes.len() {
            simulation.boot(node);
        }
        for (first, second) in workload.conflicts {
            simulation.checker.conflicting(first, second);
        }
        for (at, submission) in workload.submissions {
            simulation.schedule(
                at,
                Event::Submit {
                    submission,
                    first: true,
                },
            );
        }
        for fault in &config.faults {
            simulation.schedule(fault.at_ms, Event::Fault(fault.kind.clone()));
        }
        simulation.schedule(config.faults_end_ms, Event::EndOfFaults);
        simulation
    }

    /// Validators, spares, then twins; each with a fresh disk holding genesis.
    fn create_instances(&mut self) {
        let config = self.config;
        let mut keys: Vec<(KeyPair, usize, i64)> = self
            .fixture
            .validators
            .iter()
            .enumerate()
            .map(|(node, key)| (key.clone(), node, 0))
            .collect();
        for spare in 0..config.spares {
            keys.push((
                KeyPair::derive(b"kasane-sim-spare", spare as u64),
                config.nodes + spare,
                0,
            ));
        }
        for &original in config.twins.iter().flat_map(|twins| &twins.of) {
            keys.push((keys[original].0.clone(), original, TWIN_CLOCK_OFFSET_MS));
        }
        for (key, original, clock_offset_ms) in keys {
            let disk = MemoryBackend::new();
            let (mut kura, _) = Kura::open(disk.clone(), KuraConfig::default()).expect("a fresh memory store opens");
            kura.append(&self.fixture.genesis).expect("genesis appends");
            self.index.entry(key.public_key()).or_default().push(self.nodes.len());
            self.nodes.push(Node {
                key,
                original,
                clock_offset_ms,
                disk,
                locks: SharedLocks::default(),
                replica: None,
                generation: 0,
                mischief: Mischief::default(),
            });
        }
    }

    /// Instance `node`'s wall clock: virtual time from the genesis timestamp, plus its skew.
    fn clock(&self, node: usize) -> u64 {
        let entry = &self.nodes[node];
        let skew = self.config.clock_skew(entry.original) + entry.clock_offset_ms;
        (EPOCH_MS + self.now).saturating_add_signed(skew)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.events.insert((at, self.sequence), event);
    }

    fn behaviour(&self, node: usize) -> Behaviour {
        self.config.behaviour(self.nodes[node].original)
    }

    /// Whether instance `node` is honest: its key behaves and has no twin.
    fn is_honest(&self, node: usize) -> bool {
        self.config.is_honest(self.nodes[node].original)
    }

    /// Honest and with its lock record: the oracles hold it to every rule.
    fn is_held_to_rules(&self, node: usize) -> bool {
        self.is_honest(node) && !self.amnesiac.contains(&node)
    }

    /// Starts (or restarts) a replica from its disk.
    fn boot(&mut self, node: usize) {
        let entry = &self.nodes[node];
        let behaviour = self.behaviour(node);
        let mut consensus = self.config.consensus.clone();
        consensus.byzantine_skip_own_commit = matches!(behaviour, Behaviour::WithholdCommit { .. });
        let replica = Replica::open(
            entry.key.clone(),
            consensus,
            entry.disk.clone(),
            KuraConfig::default(),
            PluginRegistry::builtin(),
            Box::new(entry.locks.clone()),
            QUEUE_CAPACITY,
        );
        let replica = match replica {
            Ok(replica) => replica,
            Err(error) => {
                self.checker.violations.push(Violation {
                    at_ms: self.now,
                    invariant: "durability",
                    detail: format!("node {node} failed to restart: {error}"),
                });
                return;
            }
        };
        // Byzantine replicas send whole proposals so their rewrites work on blocks, except
        // the one that withholds bodies, which needs digests to withhold them from.
        let digests = matches!(behaviour, Behaviour::Honest | Behaviour::WithholdBodies);
        let mut replica = replica.with_proposal_digests(digests);
        if self.is_honest(node) {
            self.checker.on_restart(self.now, node, replica.kura().height());
            let amnesiac = self.amnesiac.contains(&node);
            self.oracle
                .observe_restart(self.now, node, &CoreView::of(replica.core()), amnesiac);
        }
        let outbound = replica.start(self.clock(node));
        self.nodes[node].locks.take_saved();
        self.nodes[node].replica = Some(replica);
        self.dispatch(node, outbound);
    }

    fn run(&mut self) {
        while let Some(((at, _), event)) = self.events.pop_first() {
            if at > self.config.duration_ms {
                break;
            }
            self.now = at;
            self.processed += 1;
            if self.processed > EVENTS_MAX {
                self.checker.violations.push(Violation {
                    at_ms: self.now,
                    invariant: "bounded run",
                    detail: format!("more than {EVENTS_MAX} events"),
                });
                break;
            }
            self.handle(event);
            if !self.checker.violations.is_empty() || !self.oracle.violations.is_empty() {
                break;
            }
            if self.now >= self.config.faults_end_ms && self.settled() {
                break;
            }
        }
        if self.config.check_liveness && self.checker.violations.is_empty() && self.oracle.violations.is_empty() {
            let heights = self.honest_heights();
            let submitted: BTreeSet<Hash> = self.submitted.keys().copied().collect();
            self.checker.check_liveness(self.now, &submitted, &heights);
        }
    }

    fn honest_heights(&self) -> BTreeMap<usize, u64> {
        (0..self.nodes.len())
            .filter(|node| self.is_honest(*node))
            .map(|node| {
                (
                    node,
                    self.nodes[node]
                        .replica
                        .as_ref()
                        .map_or(0, |replica| replica.wsv().height()),
                )
            })
            .collect()
    }

    /// Everything submitted is decided and every honest replica is at the top.
    fn settled(&self) -> bool {
        if self.submissions_pending > 0 || !self.membership.is_empty() {
            return false;
        }
        let submitted: BTreeSet<Hash> = self.submitted.keys().copied().collect();
        let top = self.checker.chain().keys().next_back().copied().unwrap_or(1);
        self.checker.all_decided(&submitted) && self.honest_heights().values().all(|height| *height >= top)
    }

    fn handle(&mut self, event: Event) {
        if std::env::var_os("KASANE_SIM_TRACE").is_some() {
            let line = match &event {
                Event::Deliver { to, from, message } => format!("deliver {from}->{to} {}", short(message)),
                Event::Timer { node, timer, .. } => format!("timer {node} {timer:?}"),
                Event::Submit { first, .. } => format!("submit (first {first})"),
                Event::Fault(kind) => format!("fault {kind:?}"),
                Event::EndOfFaults => "end of faults".to_string(),
                Event::Membership => "membership".to_string(),
            };
            eprintln!("{:>6} {line}", self.now);
        }
        match event {
            Event::Deliver { to, from, message } => self.on_deliver(to, from, message),
            Event::Timer {
                node,
                generation,
                timer,
            } => {
                if self.nodes[node].generation == generation {
                    self.step(node, |replica, now| replica.on_timer(now, timer));
                }
            }
            Event::Submit { submission, first } => self.submit(submission, first),
            Event::Fault(kind) => self.fault(kind),
            Event::EndOfFaults => {
                self.blocked.clear();
                for node in 0..self.nodes.len() {
                    if self.nodes[node].replica.is_none() {
                        self.boot(node);
                    }
                }
                let positions: Vec<(usize, u64, u64)> = (0..self.nodes.len())
                    .filter(|node| self.is_honest(*node))
                    .filter_map(|node| {
                        let core = self.nodes[node].replica.as_ref()?.core();
                        Some((node, core.height(), core.view()))
                    })
                    .collect();
                self.oracle.mark_heal(positions);
                self.partitions_lifted = true;
            }
            Event::Membership => self.membership_step(),
        }
    }

    fn on_deliver(&mut self, to: usize, from: usize, message: Message) {
        let from_key = self.nodes[from].key.public_key();
        let behaviour = self.behaviour(to);
        if behaviour == Behaviour::VoteAll {
            self.coalition_votes(to, &message);
        }
        self.step(to, |replica, now| replica.on_message(now, from_key, message));
    }

    /// A coalition replica's votes for what it just received, beside its honest core's.
    fn coalition_votes(&mut self, node: usize, message: &Message) {
        let Some(replica) = self.nodes[node].replica.as_ref() else {
            return;
        };
        let (height, topology) = (replica.core().height(), replica.core().topology().clone());
        let key = self.nodes[node].key.clone();
        let behaviour = self.behaviour(node);
        let votes = self.nodes[node]
            .mischief
            .incoming(behaviour, &key, message, height, &topology, &self.coalition);
        for (to_key, vote) in votes {
            for to in self.index.get(&to_key).cloned().unwrap_or_default() {
                if to != node {
                    self.deliver(node, to, vote.clone(), 0);
                }
            }
        }
    }

    /// Steps instance `node` with `work`, holds honest replicas to the oracles, and carries out
    /// what it sent.
    fn step(&mut self, node: usize, work: impl FnOnce(&mut Replica<MemoryBackend>, u64) -> Vec<Outbound>) {
        let now = self.clock(node);
        let held = self.is_held_to_rules(node);
        let Some(replica) = self.nodes[node].replica.as_mut() else {
            return;
        };
        let before = held.then(|| CoreView::of(replica.core()));
        let outbound = work(replica, now);
        let saved = self.nodes[node].locks.take_saved();
        if let (Some(before), Some(replica)) = (before, self.nodes[node].replica.as_ref()) {
            let after = CoreView::of(replica.core());
            let key = replica.key();
            let sent = outbound.iter().filter_map(|item| match item {
                Outbound::Send { message, .. } | Outbound::Broadcast { message } => Some(message),
                Outbound::Timer { .. } => None,
            });
            self.oracle
                .observe_step(self.now, node, &key, &before, &after, &saved, sent);
        }
        self.dispatch(node, outbound);
    }

    /// The client sends a transaction to random live honest replicas (`copies` of them at once),
    /// and, resubmitting, again later while it is not decided.
    fn submit(&mut self, submission: Submission, first: bool) {
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
            self.step(node, |replica, now| replica.submit(now, vec![transaction]).1);
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
    fn membership_step(&mut self) {
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

    fn crash(&mut self, node: usize) {
        let Some(replica) = self.nodes[node].replica.take() else {
            return;
        };
        if self.is_honest(node) {
            self.oracle.observe_crash(node, CoreView::of(replica.core()));
        }
        drop(replica);
        self.nodes[node].generation += 1;
        self.nodes[node].disk.crash();
    }

    fn fault(&mut self, kind: FaultKind) {
        match kind {
            FaultKind::Crash { node } => self.crash(node),
            FaultKind::PowerLoss => {
                for node in 0..self.nodes.len() {
                    self.crash(node);
                }
            }
            FaultKind::Restart { node } => {
                if self.nodes[node].replica.is_none() {
                    self.boot(node);
                }
            }
            FaultKind::LoseLockRecord { node } => {
                self.nodes[node].locks.forget();
                if self.is_honest(node) && self.amnesiac.insert(node) {
                    self.check_fault_budget();
                }
            }
            FaultKind::Partition { groups } => {
                for (index, group) in groups.iter().enumerate() {
                    for other in groups.iter().skip(index + 1) {
                        for &a in group {
                            for &b in other {
                                self.blocked.insert((a, b));
                                self.blocked.insert((b, a));
                            }
                        }
                    }
                }
            }
            FaultKind::CutLink { from, to } => {
                self.blocked.insert((from, to));
            }
            FaultKind::Heal => self.blocked.clear(),
            FaultKind::RegisterPeer { node } | FaultKind::UnregisterPeer { node } => {
                let register = matches!(kind, FaultKind::RegisterPeer { .. });
                let peer = self.nodes[node].key.public_key();
                self.membership_changes += 1;
                let transaction = client::membership(&self.fixture, peer, register, self.now, self.membership_changes);
                self.membership.push_back(transaction);
                if self.membership.len() == 1 {
                    self.schedule(self.now, Event::Membership);
                }
            }
        }
    }

    /// More faulty keys than f (Byzantine, twinned and amnesiac together) void the guarantees:
    /// the run is flagged rather than trusted.
    fn check_fault_budget(&mut self) {
        let amnesiac_keys: BTreeSet<usize> = self.amnesiac.iter().map(|node| self.nodes[*node].original).collect();
        let faulty = self.config.faulty_keys() + amnesiac_keys.len();
        if faulty > self.config.max_faulty() {
            self.checker.violations.push(Violation {
                at_ms: self.now,
                invariant: "fault budget",
                detail: format!(
                    "{faulty} faulty replicas ({} amnesiac), more than f = {}: the run proves nothing",
                    amnesiac_keys.len(),
                    self.config.max_faulty()
                ),
            });
        }
    }

    /// Carries out a replica's outbound work, through its behaviour, and records its events.
    fn dispatch(&mut self, node: usize, outbound: Vec<Outbound>) {
        let honest = self.is_honest(node);
        let Some(replica) = self.nodes[node].replica.as_mut() else {
            return;
        };
        let events = replica.take_events();
        let position = (replica.core().height(), replica.core().view());
        for event in events {
            match event {
                ReplicaEvent::Committed {
                    height,
                    hash,
                    transactions,
                    ..
                } if honest => {
                    for (payload, committed) in &transactions {
                        if *committed && !self.checker.chain().contains_key(&height) {
                            if let Some(submitted_at) = self.submitted.get(payload) {
                                self.latencies.push(self.now.saturating_sub(*submitted_at));
                            }
                        }
                    }
                    self.checker.on_commit(self.now, node, height, hash, &transactions);
                }
                ReplicaEvent::ViewChanged { height, view } if honest => {
                    self.view_changes += 1;
                    if !self.amnesiac.contains(&node) {
                        self.oracle.observe_view(self.now, node, height, view);
                    }
                }
                _ => {}
            }
        }
        for item in outbound {
            match item {
                Outbound::Timer { timer, after_ms } => {
                    let generation = self.nodes[node].generation;
                    let at = self.now + after_ms;
                    self.schedule(
                        at,
                        Event::Timer {
                            node,
                            generation,
                            timer,
                        },
                    );
                }
                Outbound::Send { to, message } => {
                    for to in self.index.get(&to).cloned().unwrap_or_default() {
                        if to != node {
                            self.send_as(node, to, &message, position);
                        }
                    }
                }
                Outbound::Broadcast { message } => {
                    for to in 0..self.nodes.len() {
                        if to != node {
                            self.send_as(node, to, &message, position);
                        }
                    }
                }
            }
        }
    }

    /// Sends through the sender's behaviour and, with Twins, the partition of the message's
    /// round (`position` is the sender's height and view).
    fn send_as(&mut self, node: usize, to: usize, message: &Message, position: (u64, u64)) {
        if let Some(twins) = self.config.twins.as_ref().filter(|_| !self.partitions_lifted) {
            if !twins.allows(round_of(message, position.0, position.1), node, to) {
                return;
            }
        }
        let behaviour = self.behaviour(node);
        if behaviour == Behaviour::Honest {
            return self.deliver(node, to, message.clone(), 0);
        }
        let key = self.nodes[node].key.clone();
        let target = self.nodes[to].original;
        let outgoing = self.nodes[node].mischief.outgoing(
            behaviour,
            &key,
            target,
            message,
            self.now,
            &mut self.rng,
            &mut self.coalition,
        );
        for (delay_ms, message) in outgoing {
            self.deliver(node, to, message, delay_ms);
        }
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message, delay_ms: u64) {
        let (source, target) = (self.nodes[from].original, self.nodes[to].original);
        if self.blocked.contains(&(from, to)) || self.rng.chance(self.config.loss_per_million) {
            return;
        }
        self.messages += 1;
        *self.messages_by_kind.entry(message.kind()).or_default() += 1;
        let (low, high) = self
            .config
            .link_latency_ms
            .get(&(source, target))
            .copied()
            .unwrap_or(self.config.latency_ms);
        if self.rng.chance(self.config.duplicate_per_million) {
            let at = self.now + delay_ms + self.rng.between(low, high);
            self.schedule(
                at,
                Event::Deliver {
                    to,
                    from,
                    message: message.clone(),
                },
            );
        }
        let at = self.now + delay_ms + self.rng.between(low, high);
        self.schedule(at, Event::Deliver { to, from, message });
    }

    fn dropped(&self) -> BTreeMap<String, u64> {
        let mut dropped = BTreeMap::new();
        for (node, entry) in self.nodes.iter().enumerate() {
            let Some(replica) = entry.replica.as_ref().filter(|_| self.is_honest(node)) else {
                continue;
            };
            for (reason, count) in &replica.core().counters().dropped {
                *dropped.entry(format!("{reason:?}")).or_default() += count;
            }
        }
        dropped
    }

    fn report(&self, seed: u64) -> SimReport {
        let mut digest_input = Vec::new();
        for (height, (hash, _)) in self.checker.chain() {
            digest_input.extend_from_slice(&height.to_le_bytes());
            digest_input.extend_from_slice(hash.as_bytes());
        }
        digest_input.extend_from_slice(&self.processed.to_le_bytes());
        for height in self.honest_heights().values() {
            digest_input.extend_from_slice(&height.to_le_bytes());
        }
        let mut violations = self.checker.violations.clone();
        violations.extend(self.oracle.violations.iter().cloned());
        SimReport {
            seed,
            violations,
            height: self.checker.chain().keys().next_back().copied().unwrap_or(1),
            committed_transactions: self.checker.decided_transactions(),
            submitted_transactions: self.submitted.len(),
            view_changes: self.view_changes,
            messages: self.messages,
            messages_by_kind: self.messages_by_kind.clone(),
            events: self.processed,
            end_ms: self.now,
            digest: Hash::of(&digest_input),
            commit_latencies_ms: self.latencies.clone(),
            dropped: self.dropped(),
            final_states: self
                .nodes
                .iter()
                .enumerate()
                .map(|(node, entry)| match &entry.replica {
                    Some(replica) => format!(
                        "node {node} ({}): {}",
                        self.behaviour(node).name(),
                        replica.core().summary()
                    ),
                    None => format!("node {node}: down"),
                })
                .collect(),
        }
    }
}

fn short(message: &Message) -> String {
    match message {
        Message::Proposal(p) => format!(
            "proposal h{} v{} justify {:?}",
            p.height,
            p.view,
            p.justify.as_ref().map(|c| c.vote.view)
        ),
        Message::Vote(v) => format!("vote {:?} h{} v{}", v.vote.kind, v.vote.height, v.vote.view),
        Message::PrepareCertificate(c) => format!("prepare-cert h{} v{}", c.vote.height, c.vote.view),
        Message::CommitCertificate(c) => format!("commit-cert h{} v{}", c.vote.height, c.vote.view),
        Message::ViewChange(v) => format!(
            "view-change h{} v{} highest {:?}",
            v.height,
            v.view,
            v.highest.as_ref().map(|c| c.vote.view)
        ),
        other => other.kind().to_string(),
    }
}
