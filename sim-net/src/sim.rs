//! The simulation loop: replicas, a simulated network and disks on virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kasane_consensus::replica::{LockStore, Outbound, Replica, ReplicaEvent};
use kasane_consensus::{LockRecord, Message, Timer};
use kasane_kura::fixture::{FixtureChain, FixtureConfig, FIXTURE_GENESIS_MS};
use kasane_kura::{Kura, KuraConfig, MemoryBackend};
use kasane_model::instruction::Instruction;
use kasane_model::transaction::TTL_MS_MAX;
use kasane_model::{Hash, KeyPair, PublicKey, SignedTransaction, TransactionPayload};
use kasane_wsv::PluginRegistry;

use crate::byzantine::Mischief;
use crate::checker::{Checker, Violation};
use crate::config::{Behaviour, FaultKind, SimConfig};
use crate::rng::Rng;

/// A run that processes more events than this is stopped and reported.
pub const EVENTS_MAX: u64 = 5_000_000;
/// Virtual time 0 is this wall-clock time: the genesis block's timestamp.
const EPOCH_MS: u64 = FIXTURE_GENESIS_MS;
/// Funded accounts the client signs from.
const CLIENT_ACCOUNTS: usize = 32;
const QUEUE_CAPACITY: usize = 10_000;
/// A client resubmits a transaction not committed this long after it sent it: a replica's queue
/// is memory, and a crash loses it.
const CLIENT_RETRY_MS: u64 = 3_000;

/// The lock record on a simulated disk: it survives crashes (saving is durable).
#[derive(Debug, Clone, Default)]
struct SharedLocks(Arc<Mutex<Option<LockRecord>>>);

impl LockStore for SharedLocks {
    fn save(&mut self, record: &LockRecord) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(record.clone());
    }

    fn load(&self) -> Option<LockRecord> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

#[derive(Debug)]
struct Node {
    key: KeyPair,
    disk: MemoryBackend,
    locks: SharedLocks,
    replica: Option<Replica<MemoryBackend>>,
    /// Bumped on every crash, so timers of a previous life are ignored.
    generation: u64,
    mischief: Mischief,
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        message: Message,
    },
    Timer {
        node: usize,
        generation: u64,
        timer: Timer,
    },
    Submit {
        transaction: SignedTransaction,
        first: bool,
    },
    Fault(FaultKind),
    EndOfFaults,
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
    rng: Rng,
    now: u64,
    sequence: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: Vec<Node>,
    index: BTreeMap<PublicKey, usize>,
    blocked: BTreeSet<(usize, usize)>,
    checker: Checker,
    submitted: BTreeMap<Hash, u64>,
    /// Client submissions not yet made.
    submissions_pending: usize,
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
    let mut simulation = Simulation::new(seed, config);
    simulation.run();
    simulation.report(seed)
}

impl<'c> Simulation<'c> {
    fn new(seed: u64, config: &'c SimConfig) -> Simulation<'c> {
        let mut rng = Rng::new(seed);
        let fixture = fixture(config.nodes);
        let mut simulation = Simulation {
            config,
            rng: rng.fork(),
            now: 0,
            sequence: 0,
            events: BTreeMap::new(),
            nodes: Vec::new(),
            index: BTreeMap::new(),
            blocked: BTreeSet::new(),
            checker: Checker::default(),
            submitted: BTreeMap::new(),
            submissions_pending: config.transactions,
            latencies: Vec::new(),
            view_changes: 0,
            messages: 0,
            messages_by_kind: BTreeMap::new(),
            processed: 0,
        };
        for (position, key) in fixture.validators.iter().enumerate() {
            let disk = MemoryBackend::new();
            let (mut kura, _) = Kura::open(disk.clone(), KuraConfig::default()).expect("a fresh memory store opens");
            kura.append(&fixture.genesis).expect("genesis appends");
            simulation.index.insert(key.public_key(), position);
            simulation.nodes.push(Node {
                key: key.clone(),
                disk,
                locks: SharedLocks::default(),
                replica: None,
                generation: 0,
                mischief: Mischief::default(),
            });
        }
        for node in 0..config.nodes {
            simulation.boot(node);
        }
        let chain = fixture.wsv.chain().clone();
        for index in 0..config.transactions {
            let at = rng.between(0, config.load_window_ms);
            let sender = index % CLIENT_ACCOUNTS;
            let payload = TransactionPayload {
                chain: chain.clone(),
                creator: fixture.accounts[sender].0.clone(),
                instructions: vec![Instruction::Transfer {
                    source: fixture.coin_of(sender),
                    destination: fixture.accounts[(sender + 1) % CLIENT_ACCOUNTS].0.clone(),
                    amount: 1,
                }],
                created_at_ms: EPOCH_MS + at,
                ttl_ms: TTL_MS_MAX,
                nonce: index as u32,
            };
            let transaction = SignedTransaction::sign(payload, &[&fixture.accounts[sender].1]);
            simulation.schedule(
                at,
                Event::Submit {
                    transaction,
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

    /// Replica `node`'s wall clock: virtual time from the genesis timestamp, plus its skew.
    fn clock(&self, node: usize) -> u64 {
        EPOCH_MS + self.now + self.config.clock_skew(node)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.events.insert((at, self.sequence), event);
    }

    fn behaviour(&self, node: usize) -> Behaviour {
        self.config.behaviour(node)
    }

    /// Starts (or restarts) a replica from its disk.
    fn boot(&mut self, node: usize) {
        let entry = &self.nodes[node];
        let mut consensus = self.config.consensus.clone();
        consensus.byzantine_skip_own_commit = matches!(self.behaviour(node), Behaviour::WithholdCommit { .. });
        let replica = Replica::open(
            entry.key.clone(),
            consensus,
            entry.disk.clone(),
            KuraConfig::default(),
            PluginRegistry::builtin(),
            Box::new(entry.locks.clone()),
            QUEUE_CAPACITY,
        );
        let mut replica = match replica {
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
        if self.config.is_honest(node) {
            self.checker.on_restart(self.now, node, replica.kura().height());
        }
        let outbound = replica.start(self.clock(node));
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
            if !self.checker.violations.is_empty() {
                break;
            }
            if self.now >= self.config.faults_end_ms && self.settled() {
                break;
            }
        }
        if self.config.check_liveness && self.checker.violations.is_empty() {
            let heights = self.honest_heights();
            let submitted: BTreeSet<Hash> = self.submitted.keys().copied().collect();
            self.checker.check_liveness(self.now, &submitted, &heights);
        }
    }

    fn honest_heights(&self) -> BTreeMap<usize, u64> {
        (0..self.nodes.len())
            .filter(|node| self.config.is_honest(*node))
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

    /// Everything submitted is committed and every honest replica is at the top.
    fn settled(&self) -> bool {
        if self.submissions_pending > 0 {
            return false;
        }
        let submitted: BTreeSet<Hash> = self.submitted.keys().copied().collect();
        let top = self.checker.chain().keys().next_back().copied().unwrap_or(1);
        self.checker.all_committed(&submitted) && self.honest_heights().values().all(|height| *height >= top)
    }

    fn handle(&mut self, event: Event) {
        if std::env::var_os("KASANE_SIM_TRACE").is_some() {
            let line = match &event {
                Event::Deliver { to, from, message } => format!("deliver {from}->{to} {}", short(message)),
                Event::Timer { node, timer, .. } => format!("timer {node} {timer:?}"),
                Event::Submit { first, .. } => format!("submit (first {first})"),
                Event::Fault(kind) => format!("fault {kind:?}"),
                Event::EndOfFaults => "end of faults".to_string(),
            };
            eprintln!("{:>6} {line}", self.now);
        }
        match event {
            Event::Deliver { to, from, message } => {
                let from_key = self.nodes[from].key.public_key();
                let now = self.clock(to);
                if let Some(replica) = self.nodes[to].replica.as_mut() {
                    let outbound = replica.on_message(now, from_key, message);
                    self.dispatch(to, outbound);
                }
            }
            Event::Timer {
                node,
                generation,
                timer,
            } => {
                let now = self.clock(node);
                if self.nodes[node].generation != generation {
                    return;
                }
                if let Some(replica) = self.nodes[node].replica.as_mut() {
                    let outbound = replica.on_timer(now, timer);
                    self.dispatch(node, outbound);
                }
            }
            Event::Submit { transaction, first } => self.submit(transaction, first),
            Event::Fault(kind) => self.fault(kind),
            Event::EndOfFaults => {
                self.blocked.clear();
                for node in 0..self.nodes.len() {
                    if self.nodes[node].replica.is_none() {
                        self.boot(node);
                    }
                }
            }
        }
    }

    /// The client sends a transaction to a random live honest replica, and sends it again later
    /// while it is not committed.
    fn submit(&mut self, transaction: SignedTransaction, first: bool) {
        let payload = transaction.payload.hash();
        if first {
            self.submissions_pending -= 1;
            self.submitted.insert(payload, self.now);
        } else if self.checker.is_committed(&payload) {
            return;
        }
        let retry_at = self.now + CLIENT_RETRY_MS;
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|node| self.config.is_honest(*node) && self.nodes[*node].replica.is_some())
            .collect();
        if !live.is_empty() {
            let node = live[self.rng.below(live.len() as u64) as usize];
            let now = self.clock(node);
            if let Some(replica) = self.nodes[node].replica.as_mut() {
                let (_, outbound) = replica.submit(now, vec![transaction.clone()]);
                self.dispatch(node, outbound);
            }
        }
        self.schedule(
            retry_at,
            Event::Submit {
                transaction,
                first: false,
            },
        );
    }

    fn fault(&mut self, kind: FaultKind) {
        match kind {
            FaultKind::Crash { node } => {
                if let Some(replica) = self.nodes[node].replica.take() {
                    drop(replica);
                    self.nodes[node].generation += 1;
                    self.nodes[node].disk.crash();
                }
            }
            FaultKind::Restart { node } => {
                if self.nodes[node].replica.is_none() {
                    self.boot(node);
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
        }
    }

    /// Carries out a replica's outbound work, through its behaviour, and records its events.
    fn dispatch(&mut self, node: usize, outbound: Vec<Outbound>) {
        if let Some(replica) = self.nodes[node].replica.as_mut() {
            let events = replica.take_events();
            let honest = self.config.is_honest(node);
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
                    ReplicaEvent::ViewChanged { .. } if honest => self.view_changes += 1,
                    _ => {}
                }
            }
        }
        let behaviour = self.behaviour(node);
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
                    if let Some(&to) = self.index.get(&to) {
                        self.send_as(node, behaviour, to, &message);
                    }
                }
                Outbound::Broadcast { message } => {
                    for to in 0..self.nodes.len() {
                        if to != node {
                            self.send_as(node, behaviour, to, &message);
                        }
                    }
                }
            }
        }
    }

    /// Sends through the sender's behaviour.
    fn send_as(&mut self, node: usize, behaviour: Behaviour, to: usize, message: &Message) {
        if behaviour == Behaviour::Honest {
            return self.deliver(node, to, message.clone(), 0);
        }
        let key = self.nodes[node].key.clone();
        let outgoing = self.nodes[node]
            .mischief
            .outgoing(behaviour, &key, to, message, &mut self.rng);
        for (delay_ms, message) in outgoing {
            self.deliver(node, to, message, delay_ms);
        }
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message, delay_ms: u64) {
        if self.blocked.contains(&(from, to)) || self.rng.chance(self.config.loss_per_million) {
            return;
        }
        self.messages += 1;
        *self.messages_by_kind.entry(message.kind()).or_default() += 1;
        let (low, high) = self.config.latency_ms;
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
            let Some(replica) = entry.replica.as_ref().filter(|_| self.config.is_honest(node)) else {
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
        SimReport {
            seed,
            violations: self.checker.violations.clone(),
            height: self.checker.chain().keys().next_back().copied().unwrap_or(1),
            committed_transactions: self.checker.committed_transactions(),
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
