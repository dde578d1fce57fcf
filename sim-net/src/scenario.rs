//! Scenario files: a simulation written down in TOML (docs/SIM.md, "Scenarios").
//!
//! Nodes are named by index or by their role at the first height after genesis in view 0
//! (`"leader"`, `"proxy-tail"`, `"validating-peer"`, `"observer"`: the first node with that role),
//! so a scenario can aim a fault at the leader without knowing the topology. Every key a file of
//! an earlier version used still means what it meant.

use std::collections::BTreeMap;

use kasane_consensus::Role;
use serde::Deserialize;

use crate::config::{views_after_heal_max, Behaviour, Fault, FaultKind, SimConfig};
use crate::sim::roles_after_genesis;
use crate::twins::{Phase, Split, Twins};

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
    /// silent, equivocate, equivocate-per-peer, invalid-block, double-vote, vote-all,
    /// vote-then-silent, withhold-bodies, forge, replay, view-change-spam, far-future-views,
    /// digest-spam, misstated-header, mutate, slow-signer, withhold-commit.
    pub behaviour: String,
    /// For withhold-commit: the one peer that gets the commit.
    pub victim: Option<NodeRef>,
    /// For vote-then-silent: how long it stays silent after a Commit vote (default 5 s).
    pub silent_ms: Option<u64>,
    /// For mutate: the chance per message, per million (default 100,000).
    pub per_million: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum FaultEntry {
    Crash {
        at_ms: u64,
        node: NodeRef,
    },
    /// Every replica loses power at once.
    PowerLoss {
        at_ms: u64,
    },
    Restart {
        at_ms: u64,
        node: NodeRef,
    },
    /// The node's lock record is lost (best while it is down): amnesia.
    LoseLockRecord {
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
    /// The genesis authority registers the node (a spare, usually) as a validator.
    RegisterPeer {
        at_ms: u64,
        node: NodeRef,
    },
    UnregisterPeer {
        at_ms: u64,
        node: NodeRef,
    },
}

/// A one-way link slower (or faster) than the rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    pub from: NodeRef,
    pub to: NodeRef,
    pub latency_ms: (u64, u64),
}

/// Twin instances and the partitions of their rounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinsEntry {
    /// The nodes whose key gets a twin (one twin each); twin instances are numbered after the
    /// validators and spares, in this order.
    pub of: Vec<NodeRef>,
    #[serde(default)]
    pub rounds: Vec<RoundEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundEntry {
    pub height: u64,
    pub view: u64,
    /// "vote" or "decide".
    pub phase: String,
    /// Instance indices; instances in no group form a group of their own.
    pub groups: Vec<Vec<usize>>,
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
    #[serde(default)]
    pub spares: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub latency_ms: Option<(u64, u64)>,
    #[serde(default)]
    pub links: Vec<LinkEntry>,
    #[serde(default)]
    pub loss_per_million: u32,
    #[serde(default)]
    pub duplicate_per_million: u32,
    /// Per node, how far its clock is from virtual time (either sign).
    #[serde(default)]
    pub clock_skew_ms: Vec<i64>,
    #[serde(default = "default_transactions")]
    pub transactions: usize,
    #[serde(default)]
    pub load_window_ms: u64,
    #[serde(default = "default_true")]
    pub resubmit: bool,
    /// `"held"` (the default: f + 1 validators hold it) or `"local"` (the replica it was sent to
    /// queued it).
    #[serde(default)]
    pub acknowledge: crate::config::Acknowledge,
    /// `"disk"` (the default: a restarted replica queues again what it held) or `"memory"`
    /// (a crash forgets it; the rule before R18b).
    #[serde(default)]
    pub holds: crate::config::Holds,
    #[serde(default)]
    pub conflicting_pairs: usize,
    #[serde(default)]
    pub duplicates: usize,
    #[serde(default)]
    pub edge_signatures: usize,
    #[serde(default)]
    pub faults_end_ms: u64,
    #[serde(default = "default_duration")]
    pub duration_ms: u64,
    #[serde(default = "default_true")]
    pub locking: bool,
    #[serde(default = "default_true")]
    pub mock_signatures: bool,
    #[serde(default)]
    pub views_after_heal_max: Option<u64>,
    #[serde(default = "default_expect")]
    pub expect: String,
    #[serde(default)]
    pub byzantine: Vec<ByzantineEntry>,
    #[serde(default)]
    pub twins: Option<TwinsEntry>,
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
fn default_true() -> bool {
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
        if scenario.spares > 8 {
            return Err(ScenarioError::Invalid(format!(
                "at most 8 spares, not {}",
                scenario.spares
            )));
        }
        Ok(scenario)
    }

    /// Instances in all: validators, spares, twins.
    fn instances(&self) -> usize {
        self.nodes + self.spares + self.twins.as_ref().map_or(0, |twins| twins.of.len())
    }

    fn node(&self, reference: &NodeRef) -> Result<usize, ScenarioError> {
        match reference {
            NodeRef::Index(index) if *index < self.instances() => Ok(*index),
            NodeRef::Index(index) => Err(ScenarioError::Invalid(format!(
                "node {index} of {} instances",
                self.instances()
            ))),
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

    fn behaviour(&self, entry: &ByzantineEntry) -> Result<Behaviour, ScenarioError> {
        Ok(match entry.behaviour.as_str() {
            "silent" => Behaviour::Silent,
            "equivocate" => Behaviour::Equivocate,
            "equivocate-per-peer" => Behaviour::EquivocatePerPeer,
            "invalid-block" => Behaviour::InvalidBlock,
            "double-vote" => Behaviour::DoubleVote,
            "vote-all" => Behaviour::VoteAll,
            "vote-then-silent" => Behaviour::VoteThenSilent {
                silent_ms: entry.silent_ms.unwrap_or(5_000),
            },
            "withhold-bodies" => Behaviour::WithholdBodies,
            "forge" => Behaviour::Forge,
            "replay" => Behaviour::Replay,
            "view-change-spam" => Behaviour::ViewChangeSpam,
            "far-future-views" => Behaviour::FarFutureViews,
            "digest-spam" => Behaviour::DigestSpam,
            "misstated-header" => Behaviour::MisstatedHeader,
            "mutate" => Behaviour::Mutate {
                per_million: entry.per_million.unwrap_or(100_000),
            },
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
        })
    }

    fn twins(&self) -> Result<Option<Twins>, ScenarioError> {
        let Some(entry) = &self.twins else {
            return Ok(None);
        };
        let of = entry
            .of
            .iter()
            .map(|node| self.node(node))
            .collect::<Result<Vec<_>, _>>()?;
        if of.iter().any(|node| *node >= self.nodes) {
            return Err(ScenarioError::Invalid("only validators have twins".into()));
        }
        let instances = self.instances();
        let mut rounds = BTreeMap::new();
        for round in &entry.rounds {
            let phase = match round.phase.as_str() {
                "vote" => Phase::Vote,
                "decide" => Phase::Decide,
                other => return Err(ScenarioError::Invalid(format!("unknown phase {other:?}"))),
            };
            // Instances named in no group share one group of their own.
            let mut groups = vec![round.groups.len() as u8; instances];
            for (group, members) in round.groups.iter().enumerate() {
                for &member in members {
                    let slot = groups.get_mut(member).ok_or_else(|| {
                        ScenarioError::Invalid(format!("instance {member} of {instances} in a round's groups"))
                    })?;
                    *slot = group as u8;
                }
            }
            rounds.insert((round.height, round.view, phase), Split(groups));
        }
        Ok(Some(Twins { of, rounds }))
    }

    fn fault(&self, entry: &FaultEntry, faults: &mut Vec<Fault>) -> Result<(), ScenarioError> {
        let mut push = |at_ms: u64, kind: FaultKind| faults.push(Fault { at_ms, kind });
        match entry {
            FaultEntry::Crash { at_ms, node } => push(*at_ms, FaultKind::Crash { node: self.node(node)? }),
            FaultEntry::PowerLoss { at_ms } => push(*at_ms, FaultKind::PowerLoss),
            FaultEntry::Restart { at_ms, node } => push(*at_ms, FaultKind::Restart { node: self.node(node)? }),
            FaultEntry::LoseLockRecord { at_ms, node } => {
                push(*at_ms, FaultKind::LoseLockRecord { node: self.node(node)? })
            }
            FaultEntry::Partition { at_ms, groups } => {
                let groups = groups
                    .iter()
                    .map(|group| group.iter().map(|node| self.node(node)).collect())
                    .collect::<Result<Vec<Vec<usize>>, _>>()?;
                push(*at_ms, FaultKind::Partition { groups });
            }
            FaultEntry::Isolate { at_ms, node, from } => {
                let node = self.node(node)?;
                for other in from {
                    let other = self.node(other)?;
                    for (from, to) in [(node, other), (other, node)] {
                        push(*at_ms, FaultKind::CutLink { from, to });
                    }
                }
            }
            FaultEntry::Cut { at_ms, from, to } => push(
                *at_ms,
                FaultKind::CutLink {
                    from: self.node(from)?,
                    to: self.node(to)?,
                },
            ),
            FaultEntry::Heal { at_ms } => push(*at_ms, FaultKind::Heal),
            FaultEntry::RegisterPeer { at_ms, node } => {
                push(*at_ms, FaultKind::RegisterPeer { node: self.node(node)? })
            }
            FaultEntry::UnregisterPeer { at_ms, node } => {
                push(*at_ms, FaultKind::UnregisterPeer { node: self.node(node)? })
            }
        }
        Ok(())
    }

    /// The simulation this scenario describes.
    pub fn config(&self) -> Result<SimConfig, ScenarioError> {
        let mut config = SimConfig::calm(self.nodes);
        config.spares = self.spares;
        config.behaviours = vec![Behaviour::Honest; self.nodes + self.spares];
        if let Some(latency) = self.latency_ms {
            config.latency_ms = latency;
        }
        for link in &self.links {
            config
                .link_latency_ms
                .insert((self.node(&link.from)?, self.node(&link.to)?), link.latency_ms);
        }
        config.loss_per_million = self.loss_per_million;
        config.duplicate_per_million = self.duplicate_per_million;
        config.clock_skew_ms = self.clock_skew_ms.clone();
        config.client.transactions = self.transactions;
        config.client.load_window_ms = self.load_window_ms;
        config.client.resubmit = self.resubmit;
        config.client.acknowledge = self.acknowledge;
        config.holds = self.holds;
        config.client.conflicting_pairs = self.conflicting_pairs;
        config.client.duplicates = self.duplicates;
        config.client.edge_signatures = self.edge_signatures;
        config.faults_end_ms = self.faults_end_ms;
        config.duration_ms = self.duration_ms;
        config.consensus.locking = self.locking;
        config.mock_signatures = self.mock_signatures;
        config.views_after_heal_max = self.views_after_heal_max.unwrap_or(views_after_heal_max(self.nodes));
        config.twins = self.twins()?;
        let faulty = self.byzantine.len() + config.twins.as_ref().map_or(0, |twins| twins.of.len());
        if faulty > config.max_faulty() {
            return Err(ScenarioError::Invalid(format!(
                "{faulty} Byzantine or twinned nodes, more than f = {}",
                config.max_faulty()
            )));
        }
        for entry in &self.byzantine {
            let node = self.node(&entry.node)?;
            config.behaviours[node] = self.behaviour(entry)?;
        }
        for entry in &self.faults {
            self.fault(entry, &mut config.faults)?;
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
