//! `kasane testnet --manifest FILE`: fault injection on a real local cluster.
//!
//! The runner writes a fresh cluster, starts every node as its own process, offers load to the
//! honest nodes, and plays the manifest's timeline of perturbations (kill, restart, pause,
//! disconnect, partition, delay, wipe) while it polls every node's status ten times a second.
//! For each perturbation it records the highest honest height when it started and when it
//! ended, how long the cluster then took to commit a new block, and how long the nodes it hit
//! took to reach the height the cluster had at its end. At the end it checks that every honest
//! node agrees on the head, that every transaction a node acknowledged committed exactly once,
//! that every recovery stayed within the manifest's bound, that no node exited by itself or
//! panicked, and that a strict `kura verify` of every node's store passes. Exit code 0 only
//! when every check passed.

pub mod manifest;
pub mod memory;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::json;

use super::cluster::{log_tail, spawn_node};
use super::genesis::{write_cluster, GenesisArgs, PayloadKind};
use super::http::{runtime, ApiClient};
use super::kura::{verify_store, StoreCheck};
use super::load::{load, LoadArgs, LoadReport};
use kasane_harness::{Manifest, DEFAULT_CHAIN};
use kasane_node::byzantine::ByzantineMode;
use kasane_node::config::NodeConfig;
use manifest::{Kind, Step, Target, TestnetManifest};

/// How often the runner polls every node's status.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long one status probe may take (a paused node never answers).
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);
/// How long a node gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct TestnetArgs {
    /// The experiment (TOML; see docs/TESTNET.md and testnets/).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the cluster in this directory (default: a temporary one, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One node process of the experiment.
struct NodeProcess {
    name: String,
    byzantine: Option<ByzantineMode>,
    api: ApiClient,
    admin: ApiClient,
    kura_dir: PathBuf,
    log: PathBuf,
    /// Arguments after `--config`.
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    /// The fault rules it should have; re-sent after a restart or a pause.
    faults_dirty: bool,
    /// Times it was killed, restarted or wiped by the timeline.
    starts: u32,
    /// View changes counted by its earlier processes, and by the current one so far.
    view_changes_before: u64,
    view_changes_now: u64,
}

impl NodeProcess {
    fn honest(&self) -> bool {
        self.byzantine.is_none()
    }

    fn probe_able(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// What a status probe returned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    height: u64,
    head_hash: String,
    /// The next leader's key as the node sees it.
    leader: String,
    view_changes: u64,
    /// Transactions in the node's chain.
    transactions: u64,
    /// The checkpoint its store starts from while it fetches the blocks below (state sync).
    store_base: Option<u64>,
    /// Its strict start's background audit is running.
    auditing: bool,
}

/// A perturbation as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub kind: &'static str,
    pub what: String,
    pub at_s: f64,
    pub ended_s: Option<f64>,
    /// Highest honest height when it started, and when it ended.
    pub height_before: u64,
    pub height_after: Option<u64>,
    /// From its start until the cluster committed a block above `height_before` (for a killed
    /// leader: how long the view change took).
    pub first_commit_s: Option<f64>,
    /// From its end until the cluster committed a block above `height_after`.
    pub resumed_s: Option<f64>,
    /// From its end until every honest node it hit reached `height_after`.
    pub caught_up_s: Option<f64>,
    /// The larger of the two, when both happened.
    pub recovery_s: Option<f64>,
    /// For a wipe: the transactions the wiped nodes' chains held when they had caught up, and
    /// that count per second of `caught_up_s` (restart, init and sync together).
    pub caught_up_transactions: Option<u64>,
    pub catch_up_tx_per_s: Option<f64>,
    pub ok: bool,
    pub error: Option<String>,
    /// Every node it hit, and the honest ones among them (who must catch up).
    #[serde(skip)]
    targets: Vec<usize>,
    #[serde(skip)]
    hit: Vec<usize>,
}

/// One check of the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestnetReport {
    pub name: String,
    pub validators: usize,
    pub observers: usize,
    pub byzantine: BTreeMap<String, String>,
    pub recovery_bound_s: f64,
    pub timeline: Vec<Record>,
    pub load: Option<LoadReport>,
    pub final_heights: BTreeMap<String, Option<u64>>,
    /// View changes each node went through (summed over its restarts).
    pub view_changes: BTreeMap<String, u64>,
    pub checks: Vec<Check>,
    /// Each node's resident memory: the peak, and the means of the two halves after warm-up.
    pub memory: BTreeMap<String, memory::MemoryReport>,
    pub seconds: f64,
    pub ok: bool,
}

/// An active network fault, for composing each node's rules.
#[derive(Debug, Clone)]
enum Effect {
    Isolate(usize),
    Split(Vec<Vec<usize>>),
    Slow(Vec<usize>, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Start(usize),
    End(usize),
}

struct Runner {
    manifest: TestnetManifest,
    steps: Vec<Step>,
    exe: PathBuf,
    dir: PathBuf,
    cluster: Manifest,
    nodes: Vec<NodeProcess>,
    probes: Vec<Option<Probe>>,
    effects: Vec<(usize, Effect)>,
    records: Vec<Record>,
    /// Nodes that exited without being told to, with the end of their logs.
    unexpected_exits: Vec<String>,
    started: Instant,
    /// The load generator's last acknowledging node, as an index of `load_nodes`.
    last_acknowledger: Arc<std::sync::atomic::AtomicUsize>,
    /// The nodes the load is sent to, in the generator's order.
    load_nodes: Vec<usize>,
    /// Each node's resident memory over the run.
    memory: memory::Samples,
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Whatever happened, no node outlives the runner.
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let pid = Pid::from_raw(child.id() as i32);
                let _ = kill(pid, Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn run(args: TestnetArgs) -> anyhow::Result<ExitCode> {
    let manifest = TestnetManifest::load(&args.manifest)?;
    let temporary = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| temporary.path().join("cluster"));
    let report = runtime()?.block_on(async {
        // SIGTERM too (`timeout`, `kill`): dropping the experiment stops every node it started.
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::select! {
            report = experiment(manifest, &dir, args.dir.is_some()) => report,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; every node was stopped"),
            _ = terminate.recv() => bail!("terminated; every node was stopped"),
        }
    })?;
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("testnet: report written to {}", path.display());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn experiment(manifest: TestnetManifest, dir: &Path, overwrite: bool) -> anyhow::Result<TestnetReport> {
    let steps = manifest.steps()?;
    let byzantine = manifest.byzantine()?;
    println!(
        "testnet {}: {} validators, {} observers, load {} tx/s for {} s, {} perturbations, recovery bound {} s",
        manifest.name,
        manifest.validators,
        manifest.observers,
        manifest.load.rate,
        manifest.load.duration_s,
        steps.len(),
        manifest.recovery_bound_s
    );
    let genesis = GenesisArgs {
        validators: manifest.validators,
        observers: manifest.observers,
        out: dir.to_path_buf(),
        hosts: Vec::new(),
        base_port: None,
        accounts: manifest.accounts,
        chain: DEFAULT_CHAIN.to_string(),
        block_time_ms: manifest.consensus.block_time_ms,
        commit_timeout_ms: manifest.consensus.commit_timeout_ms,
        block_txs_max: manifest.consensus.block_txs_max,
        fsync: "always".to_string(),
        queue_capacity: 65_536,
        force: overwrite,
        plasma_l2: false,
        payload: PayloadKind::Signed,
    };
    let cluster = write_cluster(&genesis)?;
    let mut nodes = Vec::new();
    for (index, node) in cluster.nodes.iter().enumerate() {
        let config_path = dir.join(&node.dir).join("config.toml");
        let mut config = NodeConfig::load(&config_path)?;
        let spec = manifest.nodes.get(&node.name).cloned().unwrap_or_default();
        if let Some(fsync) = spec.fsync {
            config.kura.fsync = fsync;
        }
        if let Some(init) = spec.init {
            config.kura.init = init;
        }
        if let Some(state_sync) = manifest.consensus.state_sync {
            config.consensus.state_sync = state_sync;
        }
        let text = toml::to_string_pretty(&config).context("writing a node config")?;
        std::fs::write(&config_path, text).with_context(|| format!("writing {}", config_path.display()))?;
        let byzantine = byzantine.get(&index).copied();
        let mut args = Vec::new();
        if let Some(mode) = byzantine {
            args.push("--unsafe-byzantine".to_string());
            args.push(mode.to_string());
        }
        nodes.push(NodeProcess {
            name: node.name.clone(),
            byzantine,
            api: ApiClient::with_timeout(&node.api, PROBE_TIMEOUT)?,
            admin: ApiClient::with_timeout(&format!("http://{}", node.admin), Duration::from_secs(2))?,
            kura_dir: config.node.data_dir.join("kura"),
            log: dir.join(&node.dir).join("node.log"),
            args,
            child: None,
            paused: false,
            faults_dirty: false,
            starts: 0,
            view_changes_before: 0,
            view_changes_now: 0,
        });
    }
    let probes = vec![None; nodes.len()];
    let mut runner = Runner {
        steps,
        exe: std::env::current_exe().context("finding the kasane executable")?,
        dir: dir.to_path_buf(),
        cluster,
        nodes,
        probes,
        effects: Vec::new(),
        records: Vec::new(),
        unexpected_exits: Vec::new(),
        started: Instant::now(),
        manifest,
        last_acknowledger: Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
        load_nodes: Vec::new(),
        memory: memory::Samples::default(),
    };
    for index in 0..runner.nodes.len() {
        runner.start_node(index)?;
    }
    runner.wait_all_up(Duration::from_secs(60)).await?;
    println!("testnet: {} nodes up in {}", runner.nodes.len(), dir.display());
    runner.experiment().await
}

impl Runner {
    fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn start_node(&mut self, index: usize) -> anyhow::Result<()> {
        let child = spawn_node(
            &self.exe,
            &self.dir,
            &self.cluster.nodes[index],
            &self.nodes[index].args,
        )?;
        let node = &mut self.nodes[index];
        node.view_changes_before += std::mem::take(&mut node.view_changes_now);
        node.child = Some(child);
        node.paused = false;
        node.faults_dirty = true;
        Ok(())
    }

    fn kill_node(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[index].paused = false;
    }

    /// SIGTERM, then SIGKILL after the grace period. Returns whether SIGKILL was needed.
    fn stop_node(&mut self, index: usize) -> bool {
        let Some(mut child) = self.nodes[index].child.take() else {
            return false;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        self.nodes[index].paused = false;
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    fn signal(&mut self, index: usize, signal: Signal) {
        if let Some(child) = &self.nodes[index].child {
            let _ = kill(Pid::from_raw(child.id() as i32), signal);
        }
    }

    async fn wait_all_up(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let peers = self.nodes.len() - 1;
        loop {
            self.check_exits();
            if let Some(exit) = self.unexpected_exits.first() {
                bail!("a node did not start: {exit}");
            }
            let statuses = futures_util::future::join_all(self.nodes.iter().map(|node| node.api.status())).await;
            let ready = statuses
                .iter()
                .filter(|status| {
                    status
                        .as_ref()
                        .is_ok_and(|status| status["peers_connected"].as_u64() >= Some(peers as u64))
                })
                .count();
            if ready == self.nodes.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {ready} of {} nodes were up with all peers after {timeout:?}",
                    self.nodes.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Notes nodes that exited without being told to.
    fn check_exits(&mut self) {
        for node in &mut self.nodes {
            let Some(child) = &mut node.child else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                self.unexpected_exits.push(format!(
                    "{} exited by itself ({status}); the end of its log:\n{}",
                    node.name,
                    log_tail(&node.log, 15)
                ));
            }
        }
    }

    async fn poll(&mut self) {
        let probes = futures_util::future::join_all(self.nodes.iter().map(|node| async move {
            if !node.probe_able() {
                return None;
            }
            let status = node.api.status().await.ok()?;
            Some(Probe {
                height: status["height"].as_u64()?,
                head_hash: status["head_hash"].as_str()?.to_string(),
                leader: status["leader"].as_str().unwrap_or("").to_string(),
                view_changes: status["view_changes"].as_u64().unwrap_or(0),
                transactions: status["transactions"].as_u64().unwrap_or(0),
                store_base: status["store_base"].as_u64(),
                auditing: status["auditing"].as_bool().unwrap_or(false),
            })
        }))
        .await;
        for (node, probe) in self.nodes.iter_mut().zip(&probes) {
            if let Some(probe) = probe {
                node.view_changes_now = node.view_changes_now.max(probe.view_changes);
            }
        }
        self.probes = probes;
        let at_s = self.elapsed_s();
        if self.memory.due(at_s) {
            let processes = self.nodes.iter().zip(&self.probes).filter_map(|(node, probe)| {
                let auditing = probe.as_ref().is_some_and(|probe| probe.auditing);
                node.child
                    .as_ref()
                    .map(|child| (node.name.clone(), child.id(), auditing))
            });
            self.memory.sample(at_s, processes);
        }
    }

    fn honest_height(&self) -> u64 {
        self.nodes
            .iter()
            .zip(&self.probes)
            .filter(|(node, _)| node.honest())
            .filter_map(|(_, probe)| probe.as_ref().map(|probe| probe.height))
            .max()
            .unwrap_or(0)
    }

    /// The node that leads the next round, as the honest nodes at the highest height see it
    /// (it may itself be behind, or Byzantine).
    fn leader(&self) -> Option<usize> {
        let height = self.honest_height();
        let key = self
            .nodes
            .iter()
            .zip(&self.probes)
            .filter(|(node, _)| node.honest())
            .filter_map(|(_, probe)| probe.as_ref())
            .find(|probe| probe.height == height && !probe.leader.is_empty())
            .map(|probe| probe.leader.clone())?;
        self.cluster.nodes.iter().position(|node| node.public_key == key)
    }

    /// Each node's fault rules under the active effects, sent to every node that answers.
    async fn apply_faults(&mut self) {
        let keys: Vec<String> = self.cluster.nodes.iter().map(|node| node.public_key.clone()).collect();
        for index in 0..self.nodes.len() {
            if !self.nodes[index].faults_dirty || !self.nodes[index].probe_able() {
                continue;
            }
            let mut peers = serde_json::Map::new();
            for (peer, key) in keys.iter().enumerate().take(self.nodes.len()) {
                if peer == index {
                    continue;
                }
                let mut cut = false;
                let mut delay_ms = 0;
                for (_, effect) in &self.effects {
                    match effect {
                        Effect::Isolate(node) => cut |= *node == index || *node == peer,
                        Effect::Split(groups) => {
                            let group_of = |node: usize| groups.iter().position(|group| group.contains(&node));
                            cut |= group_of(index) != group_of(peer);
                        }
                        Effect::Slow(nodes, ms) if nodes.contains(&index) => delay_ms = delay_ms.max(*ms),
                        Effect::Slow(..) => {}
                    }
                }
                if cut || delay_ms > 0 {
                    peers.insert(key.clone(), json!({ "cut": cut, "delay_ms": delay_ms }));
                }
            }
            let rules = json!({ "peers": peers });
            if self.nodes[index].admin.put_json("/admin/faults", &rules).await.is_ok() {
                self.nodes[index].faults_dirty = false;
            }
        }
    }

    fn mark_all_faults_dirty(&mut self) {
        for node in &mut self.nodes {
            node.faults_dirty = true;
        }
    }

    fn describe(&self, step: &Step, hit: &[usize]) -> String {
        let names = |indices: &[usize]| {
            indices
                .iter()
                .map(|&index| self.nodes[index].name.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        let leader = match step.target {
            Target::Leader => " (leader)",
            Target::LastAcknowledger => " (last acknowledger)",
            _ => "",
        };
        match (step.kind, &step.target) {
            (Kind::Kill | Kind::Wipe, _) => format!(
                "{} {}{leader}, down {:.1} s",
                step.kind.name(),
                names(hit),
                step.duration_s
            ),
            (Kind::Restart, _) => format!("restart {}{leader}", names(hit)),
            (Kind::Partition, Target::Groups(groups)) => format!(
                "partition {} for {:.1} s",
                groups
                    .iter()
                    .map(|group| format!("[{}]", names(group)))
                    .collect::<Vec<_>>()
                    .join(" | "),
                step.duration_s
            ),
            (Kind::Delay, _) => format!(
                "delay {} ms into {} for {:.1} s",
                step.delay_ms,
                names(hit),
                step.duration_s
            ),
            _ => format!(
                "{} {}{leader} for {:.1} s",
                step.kind.name(),
                names(hit),
                step.duration_s
            ),
        }
    }

    async fn start_step(&mut self, id: usize) -> Option<Action> {
        let step = self.steps[id].clone();
        let hit: Vec<usize> = match &step.target {
            Target::Node(index) => vec![*index],
            Target::Leader => match self.leader() {
                Some(index) => vec![index],
                None => Vec::new(),
            },
            Target::LastAcknowledger => {
                let last = self.last_acknowledger.load(std::sync::atomic::Ordering::Relaxed);
                self.load_nodes.get(last).copied().into_iter().collect()
            }
            Target::Nodes(indices) => indices.clone(),
            Target::Groups(groups) => groups.concat(),
        };
        let mut record = Record {
            kind: step.kind.name(),
            what: self.describe(&step, &hit),
            at_s: self.elapsed_s(),
            ended_s: None,
            height_before: self.honest_height(),
            height_after: None,
            first_commit_s: None,
            resumed_s: None,
            caught_up_s: None,
            recovery_s: None,
            caught_up_transactions: None,
            catch_up_tx_per_s: None,
            ok: false,
            error: None,
            targets: hit.clone(),
            hit: hit
                .iter()
                .copied()
                .filter(|&index| self.nodes[index].honest())
                .collect(),
        };
        if hit.is_empty() {
            let (whom, why) = match step.target {
                Target::LastAcknowledger => ("last acknowledger", "no node has acknowledged a transaction yet"),
                _ => ("leader", "no honest node at the highest height named a leader"),
            };
            record.what = format!("{} {whom}", step.kind.name());
            record.error = Some(why.to_string());
            println!(
                "testnet: {:>6.1}s {}: {}",
                record.at_s,
                record.what,
                record.error.as_deref().unwrap_or("")
            );
            self.records.push(record);
            return None;
        }
        println!(
            "testnet: {:>6.1}s {} (height {})",
            record.at_s, record.what, record.height_before
        );
        let slot = self.records.len();
        self.records.push(record);
        match step.kind {
            Kind::Kill => tokio::task::block_in_place(|| self.kill_node(hit[0])),
            Kind::Wipe => {
                tokio::task::block_in_place(|| self.kill_node(hit[0]));
                let kura = self.nodes[hit[0]].kura_dir.clone();
                if let Err(error) = std::fs::remove_dir_all(&kura) {
                    self.records[slot].error = Some(format!("deleting {}: {error}", kura.display()));
                }
            }
            Kind::Restart => {
                let killed = tokio::task::block_in_place(|| self.stop_node(hit[0]));
                if killed {
                    self.records[slot].error = Some(format!("{} needed SIGKILL to stop", self.nodes[hit[0]].name));
                }
            }
            Kind::Pause => {
                self.signal(hit[0], Signal::SIGSTOP);
                self.nodes[hit[0]].paused = true;
            }
            Kind::Disconnect => self.effects.push((slot, Effect::Isolate(hit[0]))),
            Kind::Partition => {
                if let Target::Groups(groups) = &step.target {
                    self.effects.push((slot, Effect::Split(groups.clone())));
                }
            }
            Kind::Delay => self.effects.push((slot, Effect::Slow(hit.clone(), step.delay_ms))),
        }
        if matches!(step.kind, Kind::Disconnect | Kind::Partition | Kind::Delay) {
            self.mark_all_faults_dirty();
            self.apply_faults().await;
        }
        Some(Action::End(slot))
    }

    async fn end_step(&mut self, slot: usize, step: &Step) {
        let hit = self.records[slot].targets.clone();
        match step.kind {
            Kind::Kill | Kind::Wipe | Kind::Restart => {
                for &index in &hit {
                    self.nodes[index].starts += 1;
                    if let Err(error) = self.start_node(index) {
                        self.records[slot].error = Some(format!("restarting: {error:#}"));
                    }
                }
            }
            Kind::Pause => {
                for &index in &hit {
                    self.signal(index, Signal::SIGCONT);
                    self.nodes[index].paused = false;
                    self.nodes[index].faults_dirty = true;
                }
            }
            Kind::Disconnect | Kind::Partition | Kind::Delay => {
                self.effects.retain(|(owner, _)| *owner != slot);
                self.mark_all_faults_dirty();
                self.apply_faults().await;
            }
        }
        self.poll().await;
        let (ended, height) = (self.elapsed_s(), self.honest_height());
        let record = &mut self.records[slot];
        record.ended_s = Some(ended);
        record.height_after = Some(height);
    }

    /// Resolves recoveries that happened since the last poll.
    fn observe_recoveries(&mut self) {
        let now = self.elapsed_s();
        let height = self.honest_height();
        for record in &mut self.records {
            if record.first_commit_s.is_none() && height > record.height_before {
                record.first_commit_s = Some(now - record.at_s);
            }
            let (Some(ended), Some(after)) = (record.ended_s, record.height_after) else {
                continue;
            };
            if record.resumed_s.is_none() && height > after {
                record.resumed_s = Some(now - ended);
            }
            if record.caught_up_s.is_none() {
                let caught_up = record
                    .hit
                    .iter()
                    .all(|&index| self.probes[index].as_ref().is_some_and(|probe| probe.height >= after));
                if caught_up {
                    let seconds = now - ended;
                    record.caught_up_s = Some(seconds);
                    if record.kind == "wipe" {
                        let transactions: u64 = record
                            .hit
                            .iter()
                            .filter_map(|&index| self.probes[index].as_ref().map(|probe| probe.transactions))
                            .min()
                            .unwrap_or(0);
                        record.caught_up_transactions = Some(transactions);
                        record.catch_up_tx_per_s = Some(transactions as f64 / seconds.max(0.001));
                    }
                }
            }
        }
    }

    fn progress(&self) {
        let heights: Vec<String> = self
            .nodes
            .iter()
            .zip(&self.probes)
            .map(|(node, probe)| match (probe, node.child.is_some(), node.paused) {
                (_, false, _) => format!("{}=down", node.name),
                (_, _, true) => format!("{}=paused", node.name),
                (Some(probe), _, _) => format!("{}={}", node.name, probe.height),
                (None, _, _) => format!("{}=?", node.name),
            })
            .collect();
        println!("testnet: {:>6.1}s heights {}", self.elapsed_s(), heights.join(" "));
    }

    async fn experiment(&mut self) -> anyhow::Result<TestnetReport> {
        let manifest = self.manifest.clone();
        self.load_nodes = (0..self.nodes.len())
            .filter(|&index| self.nodes[index].honest())
            .collect();
        let honest_urls: Vec<String> = self
            .load_nodes
            .iter()
            .map(|&index| self.cluster.nodes[index].api.clone())
            .collect();
        // Blocks are read from the honest nodes the timeline touches least.
        let mut touched = vec![0usize; self.nodes.len()];
        for step in &self.steps {
            match &step.target {
                Target::Node(index) => touched[*index] += 2,
                Target::Leader | Target::LastAcknowledger => touched.iter_mut().for_each(|count| *count += 1),
                Target::Nodes(indices) => indices.iter().for_each(|&index| touched[index] += 1),
                Target::Groups(_) => {}
            }
        }
        let mut followed: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| self.nodes[index].honest())
            .collect();
        followed.sort_by_key(|&index| (touched[index], index));
        let load_args = LoadArgs {
            node: honest_urls,
            dir: None,
            follow: followed
                .iter()
                .map(|&index| self.cluster.nodes[index].api.clone())
                .collect(),
            rate: manifest.load.rate,
            duration: manifest.load.duration_s,
            accounts: Some(manifest.accounts),
            batch_ms: 20,
            wait_secs: manifest.load.wait_s,
            ttl_ms: manifest
                .load
                .ttl_s
                .map_or(kasane_model::transaction::TTL_MS_MAX, |seconds| seconds * 1000),
            seed: None,
            json: None,
            quiet: true,
            last_acknowledger: Some(self.last_acknowledger.clone()),
        };
        self.started = Instant::now();
        let mut load_task = tokio::spawn(async move { load(&load_args).await });

        let mut queue: BinaryHeap<Reverse<(u64, u64, Action)>> = BinaryHeap::new();
        let mut sequence = 0u64;
        for (id, step) in self.steps.iter().enumerate() {
            sequence += 1;
            queue.push(Reverse(((step.at_s * 1000.0) as u64, sequence, Action::Start(id))));
        }
        let mut slot_step: BTreeMap<usize, usize> = BTreeMap::new();
        let bound = manifest.recovery_bound_s;
        let mut last_progress = Instant::now();
        let mut load_done_at: Option<f64> = None;
        let mut load_result = None;
        loop {
            let now_ms = self.started.elapsed().as_millis() as u64;
            while let Some(Reverse((at, _, action))) = queue.peek().copied() {
                if at > now_ms {
                    break;
                }
                queue.pop();
                match action {
                    Action::Start(id) => {
                        if let Some(Action::End(slot)) = self.start_step(id).await {
                            slot_step.insert(slot, id);
                            let end = ((self.steps[id].at_s + self.steps[id].duration_s) * 1000.0) as u64;
                            sequence += 1;
                            queue.push(Reverse((end.max(now_ms), sequence, Action::End(slot))));
                        }
                    }
                    Action::End(slot) => {
                        let step = self.steps[slot_step[&slot]].clone();
                        self.end_step(slot, &step).await;
                    }
                }
            }
            self.check_exits();
            self.poll().await;
            self.apply_faults().await;
            self.observe_recoveries();
            if last_progress.elapsed() >= Duration::from_secs(5) {
                last_progress = Instant::now();
                self.progress();
            }
            if load_result.is_none() && load_task.is_finished() {
                load_result = Some(joined(&mut load_task).await);
                load_done_at = Some(self.elapsed_s());
            }
            let pending = self
                .records
                .iter()
                .any(|record| record.error.is_none() && (record.resumed_s.is_none() || record.caught_up_s.is_none()));
            if queue.is_empty() && !pending && load_result.is_some() {
                break;
            }
            // Past the load, recoveries that have not come within three bounds are not coming.
            if let Some(done) = load_done_at {
                let last_end = self
                    .records
                    .iter()
                    .filter_map(|record| record.ended_s)
                    .fold(0.0, f64::max);
                if queue.is_empty() && self.elapsed_s() > done.max(last_end + 3.0 * bound) {
                    break;
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let load_report = match load_result {
            Some(result) => result,
            None => joined(&mut load_task).await,
        };
        for record in &mut self.records {
            record.recovery_s = match (record.resumed_s, record.caught_up_s) {
                (Some(resumed), Some(caught_up)) => Some(resumed.max(caught_up)),
                _ => None,
            };
            record.ok = record.error.is_none() && record.recovery_s.is_some_and(|recovery| recovery <= bound);
        }
        self.finish(load_report).await
    }

    async fn finish(&mut self, load_report: anyhow::Result<LoadReport>) -> anyhow::Result<TestnetReport> {
        let manifest = self.manifest.clone();
        let mut checks = Vec::new();
        // Every node runs again before the end checks.
        for index in 0..self.nodes.len() {
            if self.nodes[index].paused {
                self.signal(index, Signal::SIGCONT);
                self.nodes[index].paused = false;
            }
        }
        self.effects.clear();
        self.mark_all_faults_dirty();
        self.apply_faults().await;

        let load_end = load_report.as_ref().map(|report| report.end_height).unwrap_or(0);
        let converged = self
            .converge(load_end, Duration::from_secs(manifest.converge_timeout_s))
            .await;
        checks.push(Check {
            name: "honest nodes agree on the head",
            ok: converged.is_ok(),
            detail: match &converged {
                Ok((height, hash)) => format!("height {height}, head {}", &hash[..16.min(hash.len())]),
                Err(error) => error.clone(),
            },
        });
        // A node restored from a snapshot fetches the blocks below it once it is at the head;
        // the strict verification below needs them.
        if converged.is_ok() {
            self.await_whole_stores(Duration::from_secs(manifest.converge_timeout_s))
                .await;
        }
        let final_heights = self
            .nodes
            .iter()
            .zip(&self.probes)
            .map(|(node, probe)| (node.name.clone(), probe.as_ref().map(|probe| probe.height)))
            .collect();

        checks.push(match &load_report {
            Ok(report) => Check {
                name: "every acknowledged transaction committed exactly once",
                ok: report.ok,
                detail: format!(
                    "accepted {}, committed {}, rejected in block {}, outcome unknown {}, duplicates {}, missing {}, \
                     re-included and rejected {} (submitted {}, refused {}, queue full {}, not held by f + 1 {}, catching up {}, not sent {})",
                    report.accepted,
                    report.committed,
                    report.rejected_in_block,
                    report.outcome_unknown,
                    report.duplicates,
                    report.missing,
                    report.reincluded,
                    report.submitted,
                    report.rejected,
                    report.queue_full,
                    report.not_held,
                    report.catching_up,
                    report.not_sent
                ),
            },
            Err(error) => Check {
                name: "every acknowledged transaction committed exactly once",
                ok: false,
                detail: format!("the load failed: {error:#}"),
            },
        });

        // A run is only as good as the load it carried: a generator held back by its bound on
        // requests in flight (or by failing requests) has not tested what it offered.
        if let Ok(report) = &load_report {
            // Not sent: no request slot free, or the request failed (a node down).
            let sent = report.generated.saturating_sub(report.not_sent);
            let fraction = sent as f64 / report.generated.max(1) as f64;
            let floor = manifest.load.sent_percent_min;
            checks.push(Check {
                name: "the load generator sent at least the manifest's floor of what it offered",
                ok: 100.0 * fraction >= floor,
                detail: format!(
                    "floor {floor}%: sent {sent} of {} generated ({:.1}%), {:.0} tx/s over {} s; not sent {} (no request slot, or the request failed)",
                    report.generated,
                    100.0 * fraction,
                    sent as f64 / report.duration_secs.max(1) as f64,
                    report.duration_secs,
                    report.not_sent
                ),
            });
        }

        let slow: Vec<String> = self
            .records
            .iter()
            .filter(|record| !record.ok)
            .map(|record| {
                format!(
                    "{} at {:.1} s: {}",
                    record.what,
                    record.at_s,
                    record.error.clone().unwrap_or_else(|| match record.recovery_s {
                        Some(recovery) => format!("recovered in {recovery:.1} s"),
                        None => "did not recover".to_string(),
                    })
                )
            })
            .collect();
        let worst = self
            .records
            .iter()
            .filter_map(|record| record.recovery_s)
            .fold(0.0, f64::max);
        checks.push(Check {
            name: "commits resume within the bound after each perturbation",
            ok: slow.is_empty(),
            detail: if slow.is_empty() {
                format!(
                    "{} perturbations, slowest recovery {worst:.2} s (bound {} s)",
                    self.records.len(),
                    manifest.recovery_bound_s
                )
            } else {
                slow.join("; ")
            },
        });

        self.check_exits();
        let mut needed_kill = Vec::new();
        for index in 0..self.nodes.len() {
            if tokio::task::block_in_place(|| self.stop_node(index)) {
                needed_kill.push(self.nodes[index].name.clone());
            }
        }
        let mut problems = self.unexpected_exits.clone();
        for node in &self.nodes {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            if let Some(line) = log.lines().find(|line| line.contains("panicked")) {
                problems.push(format!("{} panicked: {line}", node.name));
            }
        }
        if !needed_kill.is_empty() {
            problems.push(format!(
                "{} did not stop within {STOP_GRACE:?} of SIGTERM",
                needed_kill.join(", ")
            ));
        }
        checks.push(Check {
            name: "no node exited by itself, panicked or hung on stop",
            ok: problems.is_empty(),
            detail: if problems.is_empty() {
                format!("{} nodes stopped cleanly", self.nodes.len())
            } else {
                problems.join("\n")
            },
        });

        let mut store_problems = Vec::new();
        let mut heights = Vec::new();
        for node in &self.nodes {
            let verdict = tokio::task::block_in_place(|| verify_store(&node.kura_dir, true, false));
            match verdict {
                Ok(StoreCheck::Sound { height, .. }) => heights.push(format!("{}={height}", node.name)),
                Ok(StoreCheck::Bad { height, reason }) => {
                    store_problems.push(format!("{}: first bad height {height}: {reason}", node.name))
                }
                Err(error) => store_problems.push(format!("{}: {error:#}", node.name)),
            }
        }
        checks.push(Check {
            name: "strict kura verify of every store",
            ok: store_problems.is_empty(),
            detail: if store_problems.is_empty() {
                format!("sound: {}", heights.join(" "))
            } else {
                store_problems.join("; ")
            },
        });

        let (memory, memory_check) = self.memory.report(manifest.load.duration_s as f64);
        checks.extend(memory_check);
        let ok = checks.iter().all(|check| check.ok);
        Ok(TestnetReport {
            name: manifest.name.clone(),
            validators: manifest.validators,
            observers: manifest.observers,
            byzantine: self
                .nodes
                .iter()
                .filter_map(|node| node.byzantine.map(|mode| (node.name.clone(), mode.to_string())))
                .collect(),
            recovery_bound_s: manifest.recovery_bound_s,
            timeline: self.records.clone(),
            load: load_report.ok(),
            final_heights,
            view_changes: self
                .nodes
                .iter()
                .map(|node| (node.name.clone(), node.view_changes_before + node.view_changes_now))
                .collect(),
            checks,
            memory,
            seconds: self.elapsed_s(),
            ok,
        })
    }

    /// Waits until no honest node's store still fills in below a snapshot base, or `timeout`
    /// passes (the strict verification then says which store is not whole).
    async fn await_whole_stores(&mut self, timeout: Duration) {
        let started = Instant::now();
        let mut waited = false;
        loop {
            let filling: Vec<String> = self
                .nodes
                .iter()
                .zip(&self.probes)
                .filter(|(node, _)| node.honest())
                .filter_map(|(node, probe)| {
                    let base = probe.as_ref()?.store_base?;
                    Some(format!("{} (from {base})", node.name))
                })
                .collect();
            if filling.is_empty() {
                if waited {
                    println!(
                        "testnet: every store whole after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                return;
            }
            if started.elapsed() > timeout {
                println!(
                    "testnet: stores still filling in below a snapshot after {timeout:?}: {}",
                    filling.join(", ")
                );
                return;
            }
            waited = true;
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.check_exits();
            self.poll().await;
        }
    }

    /// Waits until every honest node reports one head at or above `at_least`.
    async fn converge(&mut self, at_least: u64, timeout: Duration) -> Result<(u64, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_exits();
            self.poll().await;
            let heads: Vec<Option<(u64, String)>> = self
                .nodes
                .iter()
                .zip(&self.probes)
                .filter(|(node, _)| node.honest())
                .map(|(_, probe)| probe.as_ref().map(|probe| (probe.height, probe.head_hash.clone())))
                .collect();
            if let Some(Some(first)) = heads.first() {
                if first.0 >= at_least && heads.iter().all(|head| head.as_ref() == Some(first)) {
                    return Ok(first.clone());
                }
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&heads)
                    .map(|(node, head)| match head {
                        Some((height, hash)) => format!("{}={height}/{}", node.name, &hash[..8.min(hash.len())]),
                        None => format!("{}=no answer", node.name),
                    })
                    .collect();
                return Err(format!("no agreement after {timeout:?}: {}", seen.join(" ")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn joined(task: &mut tokio::task::JoinHandle<anyhow::Result<LoadReport>>) -> anyhow::Result<LoadReport> {
    task.await
        .map_err(|error| anyhow::anyhow!("the load task failed: {error}"))?
}

fn print_report(report: &TestnetReport) {
    println!();
    println!(
        "testnet {}: timeline (1st block: from the start to the next block; resumed: from the end to the next block; \
         caught up: from the end until the nodes hit reach the height at the end; recovery: the later of the two)",
        report.name
    );
    println!(
        "  {:>7}  {:<58} {:>7} {:>7} {:>9} {:>8} {:>9} {:>9}  verdict",
        "at s", "perturbation", "before", "after", "1st block", "resumed", "caught up", "recovery"
    );
    let seconds = |value: Option<f64>| value.map_or("-".to_string(), |value| format!("{value:.2}"));
    for record in &report.timeline {
        println!(
            "  {:>7.1}  {:<58} {:>7} {:>7} {:>9} {:>8} {:>9} {:>9}  {}",
            record.at_s,
            record.what,
            record.height_before,
            record.height_after.map_or("-".to_string(), |height| height.to_string()),
            seconds(record.first_commit_s),
            seconds(record.resumed_s),
            seconds(record.caught_up_s),
            seconds(record.recovery_s),
            if record.ok { "ok" } else { "FAILED" }
        );
        if let (Some(transactions), Some(rate), Some(seconds)) = (
            record.caught_up_transactions,
            record.catch_up_tx_per_s,
            record.caught_up_s,
        ) {
            println!(
                "           caught up {transactions} transactions in {seconds:.2} s from the restart: {rate:.0} tx/s"
            );
        }
        if let Some(error) = &record.error {
            println!("           {error}");
        }
    }
    if let Some(load) = &report.load {
        println!(
            "testnet: load: {} accepted, {} committed, {:.0} committed tx/s, heights {}..{}",
            load.accepted, load.committed, load.committed_per_second, load.start_height, load.end_height
        );
    }
    let views: Vec<String> = report
        .view_changes
        .iter()
        .map(|(name, count)| format!("{name}={count}"))
        .collect();
    let heights: Vec<String> = report
        .final_heights
        .iter()
        .map(|(name, height)| format!("{name}={}", height.map_or("?".to_string(), |height| height.to_string())))
        .collect();
    println!("testnet: final heights {}", heights.join(" "));
    println!("testnet: view changes {}", views.join(" "));
    let memory: Vec<String> = report
        .memory
        .iter()
        .map(|(name, memory)| {
            let mean = |mib: Option<f64>| mib.map_or("-".to_string(), |mib| format!("{mib:.0}"));
            format!(
                "{name}={:.0}/{}/{}",
                memory.peak_mib,
                mean(memory.first_half_mib),
                mean(memory.second_half_mib)
            )
        })
        .collect();
    println!(
        "testnet: resident memory MiB (peak / mean of the first and second half after warm-up) {}",
        memory.join(" ")
    );
    for check in &report.checks {
        println!(
            "testnet: [{}] {}: {}",
            if check.ok { "pass" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    println!(
        "testnet {}: {} after {:.0} s",
        report.name,
        if report.ok { "ok" } else { "FAILED" },
        report.seconds
    );
}
