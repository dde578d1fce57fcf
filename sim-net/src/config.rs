//! What a simulation run is made of: nodes, Byzantine assignments, network, timed faults, load.

use kasane_consensus::Config;

use crate::rng::Rng;

/// How a replica misbehaves. Byzantine replicas run the honest core; the behaviour rewrites
/// what they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behaviour {
    Honest,
    /// Sends nothing at all.
    Silent,
    /// Sends commit certificates, status and block-sync responses to `victim` only: as proxy
    /// tail, it lets one honest peer commit and hides the block from the rest (the
    /// block-withholding attack of the Iroha specification).
    WithholdCommit {
        victim: usize,
    },
    /// As leader, sends one block to the even-numbered replicas and a different valid block
    /// (same transactions, timestamp one millisecond later) to the odd-numbered ones.
    Equivocate,
    /// As leader, proposes blocks whose state commitment is wrong.
    InvalidBlock,
    /// With every vote it sends, also sends a vote of the same kind for another block hash,
    /// properly signed (double voting).
    DoubleVote,
    /// With every signed message it sends, also sends a copy with a broken signature.
    Forge,
    /// With every message it sends, also sends again one it sent before.
    Replay,
    /// With every status it sends, also sends properly signed view-change votes for random
    /// views.
    ViewChangeSpam,
    /// Everything it sends arrives 400 ms late.
    SlowSigner,
}

impl Behaviour {
    pub fn name(&self) -> String {
        match self {
            Behaviour::Honest => "honest".into(),
            Behaviour::Silent => "silent".into(),
            Behaviour::WithholdCommit { victim } => format!("withhold-commit(victim {victim})"),
            Behaviour::Equivocate => "equivocate".into(),
            Behaviour::InvalidBlock => "invalid-block".into(),
            Behaviour::DoubleVote => "double-vote".into(),
            Behaviour::Forge => "forge".into(),
            Behaviour::Replay => "replay".into(),
            Behaviour::ViewChangeSpam => "view-change-spam".into(),
            Behaviour::SlowSigner => "slow-signer".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Power loss: the replica's memory is gone, its disk keeps what was synced.
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    /// Messages between different groups are dropped (both ways).
    Partition {
        groups: Vec<Vec<usize>>,
    },
    /// Messages from `from` to `to` are dropped (one way).
    CutLink {
        from: usize,
        to: usize,
    },
    /// Every partition and cut link ends.
    Heal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub at_ms: u64,
    pub kind: FaultKind,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    /// Behaviour per node index (missing: honest).
    pub behaviours: Vec<Behaviour>,
    /// Per-message latency, uniform in this range.
    pub latency_ms: (u64, u64),
    pub loss_per_million: u32,
    pub duplicate_per_million: u32,
    /// How far each replica's clock runs ahead of virtual time, by node index (missing: 0).
    pub clock_skew_ms: Vec<u64>,
    /// Signed transfers submitted by the client, spread over `load_window_ms`.
    pub transactions: usize,
    pub load_window_ms: u64,
    pub faults: Vec<Fault>,
    /// After this time no new faults start: everything heals and crashed replicas restart.
    pub faults_end_ms: u64,
    /// The run stops here (or earlier, once every transaction is committed everywhere).
    pub duration_ms: u64,
    /// Check that every transaction commits on every honest replica by the end.
    pub check_liveness: bool,
    pub consensus: Config,
}

impl SimConfig {
    /// A quiet cluster: no faults, 5 ms links.
    pub fn calm(nodes: usize) -> SimConfig {
        SimConfig {
            nodes,
            behaviours: vec![Behaviour::Honest; nodes],
            latency_ms: (5, 5),
            loss_per_million: 0,
            duplicate_per_million: 0,
            clock_skew_ms: Vec::new(),
            transactions: 20,
            load_window_ms: 1_000,
            faults: Vec::new(),
            faults_end_ms: 0,
            duration_ms: 60_000,
            check_liveness: true,
            consensus: sim_consensus_config(),
        }
    }

    /// Faulty nodes allowed: (n - 1) / 3.
    pub fn max_faulty(&self) -> usize {
        self.nodes.saturating_sub(1) / 3
    }

    pub fn behaviour(&self, node: usize) -> Behaviour {
        self.behaviours.get(node).copied().unwrap_or(Behaviour::Honest)
    }

    pub fn clock_skew(&self, node: usize) -> u64 {
        self.clock_skew_ms.get(node).copied().unwrap_or(0)
    }

    pub fn is_honest(&self, node: usize) -> bool {
        self.behaviour(node) == Behaviour::Honest
    }

    /// A random run for `seed`: `byzantine` Byzantine replicas of random kinds, random latency,
    /// loss and duplication, and random crashes and partitions of honest replicas before
    /// `faults_end_ms`.
    pub fn random(seed: u64, nodes: usize, byzantine: usize) -> SimConfig {
        let mut rng = Rng::new(seed ^ 0x6B61_7361_6E65);
        let mut config = SimConfig::calm(nodes);
        let low = rng.between(1, 10);
        config.latency_ms = (low, low + rng.between(0, 40));
        config.loss_per_million = rng.between(0, 30_000) as u32;
        config.duplicate_per_million = rng.between(0, 20_000) as u32;
        config.transactions = rng.between(5, 40) as usize;
        config.load_window_ms = rng.between(100, 4_000);
        config.faults_end_ms = 8_000;
        // Clocks disagree by up to 2 s (blocks from the future are refused beyond 10 s).
        config.clock_skew_ms = (0..nodes).map(|_| rng.between(0, 2_000)).collect();
        let mut order: Vec<usize> = (0..nodes).collect();
        for index in (1..order.len()).rev() {
            order.swap(index, rng.below(index as u64 + 1) as usize);
        }
        let (bad, good) = order.split_at(byzantine.min(nodes));
        for &node in bad {
            config.behaviours[node] = match rng.below(9) {
                0 => Behaviour::Silent,
                1 => Behaviour::Equivocate,
                2 => Behaviour::InvalidBlock,
                3 => Behaviour::DoubleVote,
                4 => Behaviour::Forge,
                5 => Behaviour::Replay,
                6 => Behaviour::ViewChangeSpam,
                7 => Behaviour::SlowSigner,
                _ => Behaviour::WithholdCommit {
                    victim: good[rng.below(good.len() as u64) as usize],
                },
            };
        }
        for _ in 0..rng.below(4) {
            let at_ms = rng.between(0, 6_000);
            let until = (at_ms + rng.between(200, 3_000)).min(config.faults_end_ms);
            match rng.below(3) {
                0 => {
                    let node = good[rng.below(good.len() as u64) as usize];
                    config.faults.push(Fault {
                        at_ms,
                        kind: FaultKind::Crash { node },
                    });
                    config.faults.push(Fault {
                        at_ms: until,
                        kind: FaultKind::Restart { node },
                    });
                }
                1 => {
                    let split = rng.between(1, nodes as u64 - 1) as usize;
                    let groups = vec![order[..split].to_vec(), order[split..].to_vec()];
                    config.faults.push(Fault {
                        at_ms,
                        kind: FaultKind::Partition { groups },
                    });
                    config.faults.push(Fault {
                        at_ms: until,
                        kind: FaultKind::Heal,
                    });
                }
                _ => {
                    let from = rng.below(nodes as u64) as usize;
                    let to = rng.below(nodes as u64) as usize;
                    config.faults.push(Fault {
                        at_ms,
                        kind: FaultKind::CutLink { from, to },
                    });
                    config.faults.push(Fault {
                        at_ms: until,
                        kind: FaultKind::Heal,
                    });
                }
            }
        }
        config
    }
}

/// Consensus timing for simulations: short timers so runs of seconds see many view changes.
pub fn sim_consensus_config() -> Config {
    Config {
        block_time_ms: 50,
        commit_timeout_ms: 300,
        timeout_doublings_max: 3,
        block_txs_max: 500,
        status_interval_ms: 500,
        sync_timeout_ms: 1_000,
        locking: true,
        byzantine_skip_own_commit: false,
        certified_blocks_skip_signatures: true,
    }
}
