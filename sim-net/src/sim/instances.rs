//! Replica instances: their disks and lock records, booting, crashing and the faults that hit
//! them, and stepping one under the oracles.

use super::*;

/// The lock record on a simulated disk: it survives crashes (saving is durable), and is lost
/// only by an amnesia fault. The records saved during a step are kept for the oracles, which
/// check that every vote leaves after a durable record of it.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedLocks(Arc<Mutex<Locks>>);

#[derive(Debug, Default)]
struct Locks {
    record: Option<LockRecord>,
    saved: Vec<LockRecord>,
}

impl SharedLocks {
    fn locks(&self) -> std::sync::MutexGuard<'_, Locks> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn forget(&self) {
        self.locks().record = None;
    }

    /// The records saved since the last call.
    pub(super) fn take_saved(&self) -> Vec<LockRecord> {
        std::mem::take(&mut self.locks().saved)
    }
}

impl LockStore for SharedLocks {
    fn save(&mut self, record: &LockRecord) -> Result<(), LockStoreError> {
        let mut locks = self.locks();
        locks.record = Some(record.clone());
        locks.saved.push(record.clone());
        Ok(())
    }

    fn load(&self) -> Result<Option<LockRecord>, LockStoreError> {
        Ok(self.locks().record.clone())
    }
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) key: KeyPair,
    /// The node whose key, behaviour and clock this instance has (itself but for twins).
    pub(super) original: usize,
    pub(super) clock_offset_ms: i64,
    pub(super) disk: MemoryBackend,
    pub(super) locks: SharedLocks,
    /// The hold store on the simulated disk (R18b): a crash loses what was not synced.
    pub(super) holds: MemoryHolds,
    pub(super) replica: Option<Replica<MemoryBackend>>,
    /// Bumped on every crash, so timers of a previous life are ignored.
    pub(super) generation: u64,
    pub(super) mischief: Mischief,
}

impl<'c> Simulation<'c> {
    /// Validators, spares, then twins; each with a fresh disk holding genesis.
    pub(super) fn create_instances(&mut self) {
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
                holds: MemoryHolds::default(),
                replica: None,
                generation: 0,
                mischief: Mischief::default(),
            });
        }
    }

    /// Starts (or restarts) a replica from its disk.
    pub(super) fn boot(&mut self, node: usize) {
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
        if self.config.holds == Holds::Disk {
            replica = replica.with_hold_store(Box::new(entry.holds.clone()));
        }
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

    /// Steps instance `node` with `work`, holds honest replicas to the oracles, and carries out
    /// what it sent.
    pub(super) fn step(&mut self, node: usize, work: impl FnOnce(&mut Replica<MemoryBackend>, u64) -> Vec<Outbound>) {
        let now = self.clock(node);
        let held = self.is_held_to_rules(node);
        let Some(replica) = self.nodes[node].replica.as_mut() else {
            return;
        };
        let before = held.then(|| CoreView::of(replica.core()));
        let outbound: Vec<Outbound> = work(replica, now).into_iter().filter_map(Outbound::decoded).collect();
        let saved = self.nodes[node].locks.take_saved();
        if let (Some(before), Some(replica)) = (before, self.nodes[node].replica.as_ref()) {
            let after = CoreView::of(replica.core());
            let key = replica.key();
            let sent = outbound.iter().filter_map(|item| match item {
                Outbound::Send { message, .. } | Outbound::Broadcast { message } => Some(message),
                Outbound::Timer { .. } | Outbound::SendFrame { .. } => None,
            });
            self.oracle
                .observe_step(self.now, node, &key, &before, &after, &saved, sent);
        }
        self.dispatch(node, outbound);
    }

    pub(super) fn crash(&mut self, node: usize) {
        let Some(replica) = self.nodes[node].replica.take() else {
            return;
        };
        if self.is_honest(node) {
            self.oracle.observe_crash(node, CoreView::of(replica.core()));
        }
        drop(replica);
        self.nodes[node].generation += 1;
        self.nodes[node].disk.crash();
        self.nodes[node].holds.crash();
    }

    pub(super) fn fault(&mut self, kind: FaultKind) {
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
    pub(super) fn check_fault_budget(&mut self) {
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
}
