//! What a simulation run is made of: nodes, Byzantine assignments, twins, network, clocks, timed
//! faults, the client. `SimConfig::random` (random.rs) draws one from a seed; scenario files
//! (scenario.rs) write one down.

use std::collections::BTreeMap;

use kasane_consensus::Config;

use crate::twins::Twins;

/// How a replica misbehaves. Byzantine replicas run the honest core; the behaviour rewrites
/// what they send, and for the coalition behaviours adds what the honest core would refuse.
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
    /// As leader, sends every peer a block of its own (timestamp plus the peer's index): as
    /// many valid conflicting blocks as there are peers, all shared with the coalition.
    EquivocatePerPeer,
    /// As leader, proposes blocks whose state commitment is wrong.
    InvalidBlock,
    /// With every vote it sends, also sends a vote of the same kind for another block hash,
    /// properly signed (double voting).
    DoubleVote,
    /// Votes Prepare for every proposal it sees and Commit for every prepare certificate, and
    /// for every block its coalition shows it, whatever its lock (the honest core still runs
    /// beside it): conflicting real blocks get the coalition's votes.
    VoteAll,
    /// Honest until it has voted Commit, then silent for `silent_ms`, then honest again.
    VoteThenSilent {
        silent_ms: u64,
    },
    /// As leader, proposes digests and never sends a body asked for; never serves a block by
    /// hash or by sync.
    WithholdBodies,
    /// With every signed message it sends, also sends a copy with a broken signature.
    Forge,
    /// With every message it sends, also sends again one it sent before.
    Replay,
    /// With every status it sends, also sends properly signed view-change votes for random
    /// views.
    ViewChangeSpam,
    /// With every status it sends, also sends properly signed view-change votes for views a
    /// thousand to a million ahead, and whole proofs of such views signed by itself alone; its
    /// status claims a height a thousand ahead, and it never answers block sync.
    FarFutureViews,
    /// With every status it sends, also sends proposal digests of transactions nobody has, so
    /// every peer asks it for them (and keeps a digest waiting).
    DigestSpam,
    /// As leader, proposes new blocks whose header misstates the view (a view-0 header in a
    /// later view, or a later view's in view 0) or names another proposer.
    MisstatedHeader,
    /// Small-scope mutations of its own messages (ByzzFuzz): with `per_million` chance each,
    /// a message goes out with its view or height one off (re-signed where it is its own
    /// vote), or an old proposal of its goes out again.
    Mutate {
        per_million: u32,
    },
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
            Behaviour::EquivocatePerPeer => "equivocate-per-peer".into(),
            Behaviour::InvalidBlock => "invalid-block".into(),
            Behaviour::DoubleVote => "double-vote".into(),
            Behaviour::VoteAll => "vote-all".into(),
            Behaviour::VoteThenSilent { silent_ms } => format!("vote-then-silent({silent_ms} ms)"),
            Behaviour::WithholdBodies => "withhold-bodies".into(),
            Behaviour::Forge => "forge".into(),
            Behaviour::Replay => "replay".into(),
            Behaviour::ViewChangeSpam => "view-change-spam".into(),
            Behaviour::FarFutureViews => "far-future-views".into(),
            Behaviour::DigestSpam => "digest-spam".into(),
            Behaviour::MisstatedHeader => "misstated-header".into(),
            Behaviour::Mutate { per_million } => format!("mutate({per_million} per million)"),
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
    /// Every replica loses power at once.
    PowerLoss,
    Restart {
        node: usize,
    },
    /// The replica's lock record is lost (amnesia), as if its disk lost the file: it restarts
    /// without its lock, its view or its votes. Counted as a fault: beyond f faulty replicas
    /// (Byzantine and amnesiac together) the run is flagged, not trusted.
    LoseLockRecord {
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
    /// The genesis authority registers `node`'s key as a validator (a membership change on
    /// the ledger); `node` is usually a spare that follows the chain as a non-validator.
    RegisterPeer {
        node: usize,
    },
    /// The genesis authority removes `node`'s key from the validators.
    UnregisterPeer {
        node: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub at_ms: u64,
    pub kind: FaultKind,
}

/// When a client's transaction counts as acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acknowledge {
    /// Once f + 1 validators hold it ([`kasane_consensus::replica::ReplicaEvent::Held`]): what
    /// a node's API answers.
    #[default]
    Held,
    /// Once the replica it was sent to queued it: the rule before acknowledgement by f + 1, kept
    /// to show what it loses.
    Local,
}

/// Where a replica keeps the transactions it holds (R18b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Holds {
    /// On its simulated disk: what it synced survives a crash, so a restarted holder queues
    /// it again. What a node does.
    #[default]
    Disk,
    /// In memory only: a holder that crashes forgets. The rule before R18b, kept to show what
    /// it loses.
    Memory,
}

/// The client's load and how hostile it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Signed transfers, spread over `load_window_ms`.
    pub transactions: usize,
    pub load_window_ms: u64,
    /// Resubmit a transaction not committed 3 s after it was sent (a replica's queue is memory).
    /// Without it, a transaction lost with a replica's memory surfaces as a liveness failure.
    pub resubmit: bool,
    /// When the client takes a transaction as acknowledged. Without resubmission, liveness asks
    /// that every acknowledged one is decided.
    pub acknowledge: Acknowledge,
    /// Pairs of conflicting transactions (two registrations of one domain, by different
    /// accounts) sent to different replicas at once: exactly one of each pair may commit.
    pub conflicting_pairs: usize,
    /// Transactions also sent, unchanged, to a second replica at once: each commits once.
    pub duplicates: usize,
    /// Transfers whose signature has a torsion component in R: valid under kasane's rule
    /// (model::crypto::rule), refused alone and accepted in batches by cofactorless checks.
    /// Needs real signatures (mock signatures have no such thing).
    pub edge_signatures: usize,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            transactions: 20,
            load_window_ms: 1_000,
            resubmit: true,
            acknowledge: Acknowledge::Held,
            conflicting_pairs: 0,
            duplicates: 0,
            edge_signatures: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Validators at genesis.
    pub nodes: usize,
    /// Replicas that start as non-validators and follow the chain (candidates for
    /// `RegisterPeer`); their indices follow the validators'.
    pub spares: usize,
    /// Behaviour per node index (missing: honest).
    pub behaviours: Vec<Behaviour>,
    /// Twin instances (several replicas under one key) and their round partitions.
    pub twins: Option<Twins>,
    /// Per-message latency, uniform in this range.
    pub latency_ms: (u64, u64),
    /// Per-link latency, overriding `latency_ms` one way: (from, to) to a range.
    pub link_latency_ms: BTreeMap<(usize, usize), (u64, u64)>,
    pub loss_per_million: u32,
    pub duplicate_per_million: u32,
    /// How far each replica's wall clock is from virtual time, either way, by node index
    /// (missing: 0).
    pub clock_skew_ms: Vec<i64>,
    pub client: ClientConfig,
    pub faults: Vec<Fault>,
    /// After this time no new faults start: everything heals and crashed replicas restart.
    pub faults_end_ms: u64,
    /// The run stops here (or earlier, once every transaction is decided everywhere).
    pub duration_ms: u64,
    /// Check that every transaction is decided on every honest replica by the end, and that
    /// after the faults end a height never takes more than `views_after_heal_max` views.
    pub check_liveness: bool,
    pub views_after_heal_max: u64,
    /// Sign and verify with the cheap mock scheme (model::crypto::rule): the protocol is the
    /// same, and a run costs a fraction.
    pub mock_signatures: bool,
    /// Where replicas keep what they hold (R18b).
    pub holds: Holds,
    pub consensus: Config,
}

impl SimConfig {
    /// A quiet cluster: no faults, 5 ms links.
    pub fn calm(nodes: usize) -> SimConfig {
        SimConfig {
            nodes,
            spares: 0,
            behaviours: vec![Behaviour::Honest; nodes],
            twins: None,
            latency_ms: (5, 5),
            link_latency_ms: BTreeMap::new(),
            loss_per_million: 0,
            duplicate_per_million: 0,
            clock_skew_ms: Vec::new(),
            client: ClientConfig::default(),
            faults: Vec::new(),
            faults_end_ms: 0,
            duration_ms: 60_000,
            check_liveness: true,
            views_after_heal_max: views_after_heal_max(nodes),
            mock_signatures: true,
            holds: Holds::Disk,
            consensus: sim_consensus_config(),
        }
    }

    /// Faulty nodes allowed among the genesis validators: (n - 1) / 3.
    pub fn max_faulty(&self) -> usize {
        kasane_model::block::max_faulty(self.nodes)
    }

    /// Replicas in all: validators, spares, twins.
    pub fn instances(&self) -> usize {
        self.nodes + self.spares + self.twins.as_ref().map_or(0, |twins| twins.of.len())
    }

    pub fn behaviour(&self, node: usize) -> Behaviour {
        self.behaviours.get(node).copied().unwrap_or(Behaviour::Honest)
    }

    pub fn clock_skew(&self, node: usize) -> i64 {
        self.clock_skew_ms.get(node).copied().unwrap_or(0)
    }

    /// Whether the node behaves and its key has no twin.
    pub fn is_honest(&self, node: usize) -> bool {
        self.behaviour(node) == Behaviour::Honest && self.twins.as_ref().is_none_or(|twins| !twins.is_twinned(node))
    }

    /// Faulty keys by the configuration: Byzantine behaviours and twinned keys.
    pub fn faulty_keys(&self) -> usize {
        (0..self.nodes + self.spares)
            .filter(|node| !self.is_honest(*node))
            .count()
    }
}

/// How many views a height may take, after the last fault healed, before the run counts as
/// stuck: up to f views with a faulty leader or proxy tail in every rotation of n, one more to
/// re-propose a lock, one to bring views together, and slack for a view that began before the
/// heal. Twice n plus two covers that for every n.
pub fn views_after_heal_max(nodes: usize) -> u64 {
    2 * nodes as u64 + 2
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
        state_sync: true,
    }
}
