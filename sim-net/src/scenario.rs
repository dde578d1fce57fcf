//! Scenario files: a simulation written down in TOML (docs/SIM.md, "Scenarios").
//!
//! Nodes are named by index or by their role at the first height after genesis in view 0
//! (`"leader"`, `"proxy-tail"`, `"validating-peer"`, `"observer"`: the first node with that role),
//! so a scenario can aim a fault at the leader without knowing the topology.

use kasane_consensus::Role;
use serde::Deserialize;

use crate::config::{Behaviour, Fault, FaultKind, SimConfig};
use crate::sim::roles_after_genesis;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("scenario: {0}")]
    Invalid(String),
}

/// A node: an index, or a role at height 2, view 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NodeRef {
    Index(usize),
    Role(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByzantineEntry {
    pub node: NodeRef,
    /// silent, equivocate, invalid-block, double-vote, withhold-commit.
    pub behaviour: String,
    /// For withhold-commit: the one peer that gets the commit.
    pub victim: Option<NodeRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum FaultEntry {
    Crash {
        at_ms: u64,
        node: NodeRef,
    },
    Restart {
        at_ms: u64,
        node: NodeRef,
    },
    Partition {
        at_ms: u64,
        groups: Vec<Vec<NodeRef>>,
    },
    /// Cuts the links between `node` and each of `from`, both ways.
    Isolate {
        at_ms: u64,
        node: NodeRef,
        from: Vec<NodeRef>,
    },
    Cut {
        at_ms: u64,
        from: NodeRef,
        to: NodeRef,
    },
    Heal {
        at_ms: u64,
    },
}

/// What the run must show: `ok` (no invariant broken) or the name of the invariant that must
/// be broken (`agreement`, ...), for scenarios that prove a checker can fail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub nodes: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub latency_ms: Option<(u64, u64)>,
    #[serde(default)]
    pub loss_per_million: u32,
    #[serde(default)]
    pub duplicate_per_million: u32,
    #[serde(default = "default_transactions")]
    pub transactions: usize,
    #[serde(default)]
    pub load_window_ms: u64,
    #[serde(default)]
    pub faults_end_ms: u64,
    #[serde(default = "default_duration")]
    pub duration_ms: u64,
    #[serde(default = "default_locking")]
    pub locking: bool,
    #[serde(default = "default_expect")]
    pub expect: String,
    #[serde(default)]
    pub byzantine: Vec<ByzantineEntry>,
    #[serde(default)]
    pub faults: Vec<FaultEntry>,
}

fn default_seed() -> u64 {
    1
}
fn default_transactions() -> usize {
    10
}
fn default_duration() -> u64 {
    60_000
}
fn default_locking() -> bool {
    true
}
fn default_expect() -> String {
    "ok".into()
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)?;
        if !(1..=31).contains(&scenario.nodes) {
            return Err(ScenarioError::Invalid(format!(
                "nodes must be 1 to 31, not {}",
                scenario.nodes
            )));
        }
        Ok(scenario)
    }

    fn node(&self, reference: &NodeRef) -> Result<usize, ScenarioError> {
        match reference {
            NodeRef::Index(index) if *index < self.nodes => Ok(*index),
            NodeRef::Index(index) => Err(ScenarioError::Invalid(format!("node {index} of {}", self.nodes))),
            NodeRef::Role(name) => {
                let role = match name.as_str() {
                    "leader" => Role::Leader,
                    "proxy-tail" => Role::ProxyTail,
                    "validating-peer" => Role::ValidatingPeer,
                    "observer" => Role::Observer,
                    other => return Err(ScenarioError::Invalid(format!("unknown node name {other:?}"))),
                };
                roles_after_genesis(self.nodes, 0)
                    .iter()
                    .position(|candidate| *candidate == role)
                    .ok_or_else(|| ScenarioError::Invalid(format!("no {name} with {} nodes", self.nodes)))
            }
        }
    }

    /// The simulation this scenario describes.
    pub fn config(&self) -> Result<SimConfig, ScenarioError> {
        let mut config = SimConfig::calm(self.nodes);
        if let Some(latency) = self.latency_ms {
            config.latency_ms = latency;
        }
        config.loss_per_million = self.loss_per_million;
        config.duplicate_per_million = self.duplicate_per_million;
        config.transactions = self.transactions;
        config.load_window_ms = self.load_window_ms;
        config.faults_end_ms = self.faults_end_ms;
        config.duration_ms = self.duration_ms;
        config.consensus.locking = self.locking;
        if self.byzantine.len() > config.max_faulty() {
            return Err(ScenarioError::Invalid(format!(
                "{} Byzantine nodes, more than f = {}",
                self.byzantine.len(),
                config.max_faulty()
            )));
        }
        for entry in &self.byzantine {
            let node = self.node(&entry.node)?;
            config.behaviours[node] = match entry.behaviour.as_str() {
                "silent" => Behaviour::Silent,
                "equivocate" => Behaviour::Equivocate,
                "invalid-block" => Behaviour::InvalidBlock,
                "double-vote" => Behaviour::DoubleVote,
                "forge" => Behaviour::Forge,
                "replay" => Behaviour::Replay,
                "view-change-spam" => Behaviour::ViewChangeSpam,
                "slow-signer" => Behaviour::SlowSigner,
                "withhold-commit" => {
                    let victim = entry
                        .victim
                        .as_ref()
                        .ok_or_else(|| ScenarioError::Invalid("withhold-commit needs a victim".into()))?;
                    Behaviour::WithholdCommit {
                        victim: self.node(victim)?,
                    }
                }
                other => return Err(ScenarioError::Invalid(format!("unknown behaviour {other:?}"))),
            };
        }
        for entry in &self.faults {
            match entry {
                FaultEntry::Crash { at_ms, node } => config.faults.push(Fault {
                    at_ms: *at_ms,
                    kind: FaultKind::Crash { node: self.node(node)? },
                }),
                FaultEntry::Restart { at_ms, node } => config.faults.push(Fault {
                    at_ms: *at_ms,
                    kind: FaultKind::Restart { node: self.node(node)? },
                }),
                FaultEntry::Partition { at_ms, groups } => {
                    let groups = groups
                        .iter()
                        .map(|group| group.iter().map(|node| self.node(node)).collect())
                        .collect::<Result<Vec<Vec<usize>>, _>>()?;
                    config.faults.push(Fault {
                        at_ms: *at_ms,
                        kind: FaultKind::Partition { groups },
                    });
                }
                FaultEntry::Isolate { at_ms, node, from } => {
                    let node = self.node(node)?;
                    for other in from {
                        let other = self.node(other)?;
                        for (from, to) in [(node, other), (other, node)] {
                            config.faults.push(Fault {
                                at_ms: *at_ms,
                                kind: FaultKind::CutLink { from, to },
                            });
                        }
                    }
                }
                FaultEntry::Cut { at_ms, from, to } => config.faults.push(Fault {
                    at_ms: *at_ms,
                    kind: FaultKind::CutLink {
                        from: self.node(from)?,
                        to: self.node(to)?,
                    },
                }),
                FaultEntry::Heal { at_ms } => config.faults.push(Fault {
                    at_ms: *at_ms,
                    kind: FaultKind::Heal,
                }),
            }
        }
        Ok(config)
    }

    /// Whether a run's violations meet the expectation.
    pub fn met_by(&self, report: &crate::SimReport) -> bool {
        if self.expect == "ok" {
            report.ok()
        } else {
            report
                .violations
                .iter()
                .any(|violation| violation.invariant == self.expect)
        }
    }
}
