//! The experiment file of `kasane testnet` (TOML, documented in docs/TESTNET.md): the cluster,
//! per-node settings, the load, and a timeline of perturbations.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context};
use serde::Deserialize;

use kasane_node::byzantine::ByzantineMode;
use kasane_node::config::InitMode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestnetManifest {
    /// A name for reports (default: the file's stem).
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_validators")]
    pub validators: usize,
    #[serde(default)]
    pub observers: usize,
    /// Funded test accounts the load sends between.
    #[serde(default = "default_accounts")]
    pub accounts: usize,
    /// After each perturbation ends, the cluster must commit a new block, and the nodes it hit
    /// must reach the height the cluster had, within this many seconds.
    #[serde(default = "default_recovery_bound_s")]
    pub recovery_bound_s: f64,
    /// How long honest nodes may take, after the load, to agree on one head.
    #[serde(default = "default_converge_timeout_s")]
    pub converge_timeout_s: u64,
    #[serde(default)]
    pub consensus: ConsensusOverrides,
    pub load: LoadSpec,
    /// Per-node settings, by node name (`node-0`, `node-1`, ...).
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeSpec>,
    #[serde(default, rename = "perturbation")]
    pub timeline: Vec<Perturbation>,
}

fn default_validators() -> usize {
    4
}

fn default_accounts() -> usize {
    200
}

fn default_recovery_bound_s() -> f64 {
    20.0
}

fn default_converge_timeout_s() -> u64 {
    60
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusOverrides {
    pub block_time_ms: Option<u64>,
    pub commit_timeout_ms: Option<u64>,
    pub block_txs_max: Option<usize>,
    /// `consensus.state_sync` of every node (default on): off, a wiped node executes every
    /// block it syncs, for comparison.
    pub state_sync: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Transactions per second, spread over the honest nodes.
    pub rate: u64,
    pub duration_s: u64,
    /// How long to wait after the load for every accepted transaction to commit.
    #[serde(default = "default_wait_s")]
    pub wait_s: u64,
    /// Time-to-live of the load's transactions in seconds (default the chain's limit, 600).
    /// Nodes keep each committed payload hash until it expires, so this bounds that memory.
    pub ttl_s: Option<u64>,
    /// The share of the generated load, in percent, that must have been sent for the run to
    /// count (default 95). A manifest that overloads the cluster on purpose sets it lower and
    /// says why: there, requests wait out `api.hold_wait_ms` for acknowledgements that cannot
    /// come in time and hold the generator's request slots.
    #[serde(default = "default_sent_percent_min")]
    pub sent_percent_min: f64,
}

fn default_wait_s() -> u64 {
    120
}

fn default_sent_percent_min() -> f64 {
    95.0
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Kura fsync policy: always, never or every:N.
    pub fsync: Option<String>,
    /// How the node rebuilds its state at every start.
    pub init: Option<InitMode>,
    /// silent, equivocate, withhold-commit or invalid-block (the node runs with
    /// `--unsafe-byzantine`).
    pub byzantine: Option<String>,
    /// For withhold-commit: the one node that learns of commits.
    pub victim: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// SIGKILL, then start again after `restart_after_s`.
    Kill,
    /// SIGTERM, wait for the exit, start again.
    Restart,
    /// SIGSTOP for `duration_s`, then SIGCONT.
    Pause,
    /// Cut the node off from every peer (p2p fault hooks) for `duration_s`.
    Disconnect,
    /// Split the nodes into `groups` for `duration_s`, then heal.
    Partition,
    /// Delay every message the `nodes` receive by `delay_ms` for `duration_s`.
    Delay,
    /// SIGKILL, delete the node's block store, start again after `restart_after_s`: it
    /// resyncs from its peers.
    Wipe,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Restart => "restart",
            Kind::Pause => "pause",
            Kind::Disconnect => "disconnect",
            Kind::Partition => "partition",
            Kind::Delay => "delay",
            Kind::Wipe => "wipe",
        }
    }
}

/// One entry of the timeline. With `every_s` and `count` it repeats.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Perturbation {
    /// Seconds after the load starts.
    pub at_s: f64,
    pub kind: Kind,
    /// The node: a name, "leader" for whichever node leads when the perturbation starts, or
    /// "last-acknowledger" for the node that last acknowledged a transaction to the load.
    pub node: Option<String>,
    /// For delay: the nodes whose incoming messages are delayed (default: every node).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// For partition: every node in exactly one group.
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    pub duration_s: Option<f64>,
    pub restart_after_s: Option<f64>,
    pub delay_ms: Option<u64>,
    pub every_s: Option<f64>,
    pub count: Option<u32>,
}

/// Who a perturbation hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Node(usize),
    Leader,
    /// The node that last acknowledged a transaction to the load generator (`node =
    /// "last-acknowledger"`): the one whose death would lose what only it held.
    LastAcknowledger,
    /// Every node (partition) or the listed ones (delay).
    Nodes(Vec<usize>),
    Groups(Vec<Vec<usize>>),
}

/// One perturbation of the expanded timeline.
#[derive(Debug, Clone)]
pub struct Step {
    pub at_s: f64,
    pub kind: Kind,
    pub target: Target,
    /// How long the perturbation lasts: the pause, cut, partition or delay, or the time a
    /// killed or wiped node stays down (0 for restart).
    pub duration_s: f64,
    pub delay_ms: u64,
}

impl Step {
    pub fn end_s(&self) -> f64 {
        self.at_s + self.duration_s
    }
}

/// The node names of a cluster: validators first, as `kasane genesis` writes them.
pub fn node_names(validators: usize, observers: usize) -> Vec<String> {
    (0..validators + observers)
        .map(|index| format!("node-{index}"))
        .collect()
}

impl TestnetManifest {
    pub fn load(path: &Path) -> anyhow::Result<TestnetManifest> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut manifest: TestnetManifest =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if manifest.name.is_empty() {
            manifest.name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| "testnet".to_string());
        }
        manifest
            .check()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(manifest)
    }

    pub fn names(&self) -> Vec<String> {
        node_names(self.validators, self.observers)
    }

    fn index_of(&self, name: &str) -> anyhow::Result<usize> {
        self.names().iter().position(|known| known == name).with_context(|| {
            format!(
                "no node named {name:?}: this cluster has node-0 .. node-{}",
                self.validators + self.observers - 1
            )
        })
    }

    /// The Byzantine mode of each node that has one, by index.
    pub fn byzantine(&self) -> anyhow::Result<BTreeMap<usize, ByzantineMode>> {
        let mut modes = BTreeMap::new();
        for (name, spec) in &self.nodes {
            let index = self.index_of(name)?;
            let Some(behaviour) = &spec.byzantine else {
                ensure!(
                    spec.victim.is_none(),
                    "{name}: victim is only for byzantine = \"withhold-commit\""
                );
                continue;
            };
            let mode = if behaviour == "withhold-commit" {
                let victim = spec
                    .victim
                    .as_deref()
                    .with_context(|| format!("{name}: withhold-commit needs victim = \"node-N\""))?;
                ByzantineMode::WithholdCommit {
                    victim: self.index_of(victim)?,
                }
            } else {
                ensure!(
                    spec.victim.is_none(),
                    "{name}: victim is only for byzantine = \"withhold-commit\""
                );
                behaviour
                    .parse()
                    .map_err(|error: String| anyhow::anyhow!("{name}: {error}"))?
            };
            ensure!(index < self.validators, "{name}: only validators can be Byzantine");
            modes.insert(index, mode);
        }
        let f = (self.validators.saturating_sub(1)) / 3;
        ensure!(
            modes.len() <= f,
            "{} Byzantine validators, but {} validators tolerate at most {f}",
            modes.len(),
            self.validators
        );
        Ok(modes)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(self.validators >= 1, "validators must be at least 1");
        ensure!(self.accounts >= 2, "accounts must be at least 2");
        ensure!(
            self.load.rate > 0 && self.load.duration_s > 0,
            "the load needs a rate and a duration"
        );
        ensure!(self.recovery_bound_s > 0.0, "recovery_bound_s must be positive");
        if let Some(block_txs_max) = self.consensus.block_txs_max {
            kasane_node::config::check_block_txs_max(block_txs_max)?;
        }
        ensure!(
            (0.0..=100.0).contains(&self.load.sent_percent_min),
            "load.sent_percent_min must be between 0 and 100"
        );
        if let Some(ttl_s) = self.load.ttl_s {
            ensure!(
                (1..=kasane_model::transaction::TTL_MS_MAX / 1000).contains(&ttl_s),
                "load.ttl_s must be 1..={} (the chain's limit), not {ttl_s}",
                kasane_model::transaction::TTL_MS_MAX / 1000
            );
        }
        for (name, spec) in &self.nodes {
            self.index_of(name)?;
            if let Some(fsync) = &spec.fsync {
                fsync
                    .parse::<kasane_kura::FsyncPolicy>()
                    .map_err(|error| anyhow::anyhow!("{name}: fsync: {error}"))?;
            }
        }
        self.byzantine()?;
        for step in self.steps()? {
            ensure!(
                step.end_s() < self.load.duration_s as f64,
                "the {} at {} s ends at {} s, after the load ({} s): recovery is measured by commits, so every \
                 perturbation must end while the load runs",
                step.kind.name(),
                step.at_s,
                step.end_s(),
                self.load.duration_s
            );
        }
        Ok(())
    }

    /// The timeline with repetitions expanded, in time order.
    pub fn steps(&self) -> anyhow::Result<Vec<Step>> {
        let mut steps = Vec::new();
        for (position, entry) in self.timeline.iter().enumerate() {
            let what = format!("perturbation {} ({})", position + 1, entry.kind.name());
            ensure!(entry.at_s >= 0.0, "{what}: at_s must not be negative");
            let target = self.target_of(entry).with_context(|| what.clone())?;
            let duration_s = match entry.kind {
                Kind::Kill | Kind::Wipe => entry.restart_after_s.unwrap_or(2.0),
                Kind::Restart => 0.0,
                Kind::Pause | Kind::Disconnect | Kind::Partition | Kind::Delay => {
                    entry.duration_s.with_context(|| format!("{what}: needs duration_s"))?
                }
            };
            ensure!(duration_s >= 0.0, "{what}: durations must not be negative");
            let delay_ms = match entry.kind {
                Kind::Delay => entry.delay_ms.with_context(|| format!("{what}: needs delay_ms"))?,
                _ => {
                    ensure!(entry.delay_ms.is_none(), "{what}: delay_ms is only for delay");
                    0
                }
            };
            let (every_s, count) = match (entry.every_s, entry.count) {
                (None, None) => (0.0, 1),
                (Some(every), Some(count)) if every > 0.0 && count >= 1 => (every, count),
                _ => bail!("{what}: every_s and count go together (every_s > 0, count >= 1)"),
            };
            for repeat in 0..count {
                steps.push(Step {
                    at_s: entry.at_s + every_s * repeat as f64,
                    kind: entry.kind,
                    target: target.clone(),
                    duration_s,
                    delay_ms,
                });
            }
        }
        steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        Ok(steps)
    }

    fn target_of(&self, entry: &Perturbation) -> anyhow::Result<Target> {
        match entry.kind {
            Kind::Partition => {
                ensure!(
                    entry.node.is_none() && entry.nodes.is_empty(),
                    "a partition takes groups only"
                );
                ensure!(entry.groups.len() >= 2, "a partition needs at least two groups");
                let mut seen = vec![false; self.validators + self.observers];
                let mut groups = Vec::new();
                for group in &entry.groups {
                    let mut indices = Vec::new();
                    for name in group {
                        let index = self.index_of(name)?;
                        ensure!(!seen[index], "{name} is in two groups");
                        seen[index] = true;
                        indices.push(index);
                    }
                    groups.push(indices);
                }
                ensure!(seen.iter().all(|&in_group| in_group), "every node must be in one group");
                Ok(Target::Groups(groups))
            }
            Kind::Delay => {
                ensure!(
                    entry.node.is_none() && entry.groups.is_empty(),
                    "a delay takes nodes only"
                );
                let indices = if entry.nodes.is_empty() {
                    (0..self.validators + self.observers).collect()
                } else {
                    entry
                        .nodes
                        .iter()
                        .map(|name| self.index_of(name))
                        .collect::<anyhow::Result<_>>()?
                };
                Ok(Target::Nodes(indices))
            }
            _ => {
                ensure!(
                    entry.nodes.is_empty() && entry.groups.is_empty(),
                    "{} takes one node",
                    entry.kind.name()
                );
                match entry.node.as_deref() {
                    None => bail!("needs node = \"node-N\" or \"leader\""),
                    Some("leader") => Ok(Target::Leader),
                    Some("last-acknowledger") => Ok(Target::LastAcknowledger),
                    Some(name) => Ok(Target::Node(self.index_of(name)?)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<TestnetManifest> {
        let manifest: TestnetManifest = toml::from_str(text)?;
        manifest.check()?;
        Ok(manifest)
    }

    const LOAD: &str = "[load]\nrate = 100\nduration_s = 60\n";

    #[test]
    fn a_full_manifest_expands_its_timeline() {
        let text = format!(
            r#"
validators = 4
observers = 1
{LOAD}
[nodes.node-1]
fsync = "never"
init = "strict"
[nodes.node-3]
byzantine = "withhold-commit"
victim = "node-0"

[[perturbation]]
at_s = 5
kind = "kill"
node = "leader"
every_s = 10
count = 3

[[perturbation]]
at_s = 7
kind = "partition"
groups = [["node-0", "node-1"], ["node-2", "node-3", "node-4"]]
duration_s = 4

[[perturbation]]
at_s = 40
kind = "delay"
delay_ms = 100
duration_s = 5
"#
        );
        let manifest = parse(&text).unwrap();
        let steps = manifest.steps().unwrap();
        let starts: Vec<f64> = steps.iter().map(|step| step.at_s).collect();
        assert_eq!(starts, vec![5.0, 7.0, 15.0, 25.0, 40.0]);
        assert_eq!(steps[0].target, Target::Leader);
        assert_eq!(steps[0].duration_s, 2.0);
        assert_eq!(steps[1].target, Target::Groups(vec![vec![0, 1], vec![2, 3, 4]]));
        assert_eq!(steps[4].target, Target::Nodes(vec![0, 1, 2, 3, 4]));
        assert_eq!(
            manifest.byzantine().unwrap().get(&3),
            Some(&ByzantineMode::WithholdCommit { victim: 0 })
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[[perturbation]]\nat_s = 1\nkind = \"kill\"\nnode = \"node-9\"\n", "no node named"),
            ("[[perturbation]]\nat_s = 1\nkind = \"pause\"\nnode = \"node-1\"\n", "needs duration_s"),
            ("[[perturbation]]\nat_s = 58\nkind = \"pause\"\nnode = \"node-1\"\nduration_s = 5\n", "after the load"),
            (
                "[[perturbation]]\nat_s = 1\nkind = \"partition\"\ngroups = [[\"node-0\"], [\"node-1\"]]\nduration_s = 1\n",
                "every node must be in one group",
            ),
            ("[nodes.node-1]\nbyzantine = \"silent\"\n[nodes.node-2]\nbyzantine = \"silent\"\n", "tolerate at most 1"),
            ("[nodes.node-1]\nbyzantine = \"sneaky\"\n", "unknown Byzantine behaviour"),
            ("[nodes.node-1]\nfsync = \"sometimes\"\n", "fsync"),
            ("[[perturbation]]\nat_s = 1\nkind = \"kill\"\nnode = \"node-1\"\nevery_s = 5\n", "go together"),
            ("[[perturbation]]\nat_s = 1\nkind = \"melt\"\nnode = \"node-1\"\n", "unknown variant"),
        ];
        // The sent floor is a percentage.
        let error = parse("name = \"t\"\nvalidators = 4\n[load]\nrate = 10\nduration_s = 5\nsent_percent_min = 101\n")
            .unwrap_err();
        assert!(format!("{error:#}").contains("sent_percent_min"), "{error:#}");
        for (body, expected) in cases {
            let error = parse(&format!("{LOAD}{body}")).unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains(expected), "{body}: {message}");
        }
    }
}
