//! The simulation loop: replica instances, a simulated network and disks on virtual time.
//! Instances and their faults are in `instances.rs`, the network in `network.rs`, the client's
//! submissions in `load.rs`.
//!
//! An instance is one replica with its own disk, lock record and memory. Validators and spares
//! have one instance each; with Twins a key has several (`twins.rs`). Messages addressed to a
//! key reach every instance of it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kasane_consensus::holding::MemoryHolds;
use kasane_consensus::replica::{LockStore, LockStoreError, Outbound, Replica, ReplicaEvent, RestoreEvent};
use kasane_consensus::{LockRecord, Message, Timer};
use kasane_kura::fixture::{FixtureChain, FixtureConfig, FIXTURE_GENESIS_MS};
use kasane_kura::{Kura, KuraConfig, MemoryBackend};
use kasane_model::{Hash, KeyPair, PublicKey, SignedTransaction};
use kasane_wsv::PluginRegistry;

use crate::byzantine::{Coalition, Mischief};
use crate::checker::{Checker, Violation};
use crate::client::{self, Submission, CLIENT_ACCOUNTS};
use crate::config::{Acknowledge, Behaviour, FaultKind, Holds, SimConfig};
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

// Most events are deliveries: boxing the message would add an allocation per event and save
// no memory.
#[allow(clippy::large_enum_variant)]
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
    /// Of those, how many the client was told are acknowledged.
    pub acknowledged_transactions: usize,
    pub view_changes: u64,
    /// Snapshot restores installed by honest replicas (state sync, docs/PROTOCOL.md 8.1), and
    /// the blocks they appended below the checkpoint without executing them.
    pub restores: u64,
    pub backfilled_blocks: u64,
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
    /// Submitted transactions the client was told are acknowledged (`ClientConfig::acknowledge`).
    acknowledged: BTreeSet<Hash>,
    /// Client submissions not yet made.
    submissions_pending: usize,
    /// Membership changes not yet sent, in order; each waits for the one before to be decided.
    membership: std::collections::VecDeque<SignedTransaction>,
    membership_last: Option<Hash>,
    membership_changes: u32,
    latencies: Vec<u64>,
    view_changes: u64,
    restores: u64,
    backfilled_blocks: u64,
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
    let topology = kasane_consensus::Topology::new(&validators, 2, &BTreeSet::new());
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

mod instances;
mod load;
mod network;

use instances::Node;

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
            acknowledged: BTreeSet::new(),
            submissions_pending: workload.submissions.len(),
            membership: Default::default(),
            membership_last: None,
            membership_changes: 0,
            latencies: Vec::new(),
            view_changes: 0,
            restores: 0,
            backfilled_blocks: 0,
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
            let (promised, what) = self.promised();
            self.checker.check_liveness(self.now, &promised, what, &heights);
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

    /// What must be decided: a resubmitting client's every transaction (it keeps trying), or
    /// else every acknowledged one; and what to call them.
    fn promised(&self) -> (BTreeSet<Hash>, &'static str) {
        if self.config.client.resubmit {
            (self.submitted.keys().copied().collect(), "submitted")
        } else {
            (self.acknowledged.clone(), "acknowledged")
        }
    }

    /// Everything submitted is decided and every honest replica is at the top.
    fn settled(&self) -> bool {
        if self.submissions_pending > 0 || !self.membership.is_empty() {
            return false;
        }
        let (promised, _) = self.promised();
        let top = self.checker.chain().keys().next_back().copied().unwrap_or(1);
        self.checker.all_decided(&promised) && self.honest_heights().values().all(|height| *height >= top)
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
            acknowledged_transactions: self.acknowledged.len(),
            view_changes: self.view_changes,
            restores: self.restores,
            backfilled_blocks: self.backfilled_blocks,
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
