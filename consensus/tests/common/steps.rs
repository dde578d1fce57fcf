//! Step tables for the pure core (malachite's TestStep): an input, the effects it must produce
//! (all of them, in order), and checks of the state after it. Four validators from a fixture
//! genesis deciding height 2; nodes are named by their role in a view.
#![allow(dead_code)]

use std::collections::BTreeSet;

use kasane_consensus::{
    Config, DropReason, Effect, Input, LockRecord, Message, Proposal, Role, Sumeragi, Timer, ViewChangeVote,
};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_model::block::{Certificate, Vote, VoteKind};
use kasane_model::{Block, Hash, KeyPair, PublicKey};

/// The validators and blocks of the tables.
pub struct Cluster {
    pub keys: Vec<KeyPair>,
    pub validators: BTreeSet<PublicKey>,
    pub genesis: Hash,
    base: Block,
}

impl Cluster {
    pub fn new() -> Cluster {
        let mut chain = FixtureChain::new(FixtureConfig {
            blocks: 1,
            transactions_per_block: 2,
            accounts: 4,
            validators: 4,
            seed: 9,
        })
        .expect("fixture");
        let keys = chain.validators.clone();
        let validators = keys.iter().map(KeyPair::public_key).collect();
        let genesis = chain.genesis.block.hash();
        let (committed, _) = chain.next_block().expect("block");
        Cluster {
            keys,
            validators,
            genesis,
            base: committed.block,
        }
    }

    pub fn key(&self, node: usize) -> PublicKey {
        self.keys[node].public_key()
    }

    /// The node with `role` in `view` at height 2.
    pub fn node(&self, role: Role, view: u64) -> usize {
        let topology = kasane_consensus::Topology::new(&self.validators, 2, &BTreeSet::new());
        (0..self.keys.len())
            .find(|node| topology.role(&self.key(*node), view) == role)
            .expect("role present")
    }

    pub fn leader(&self, view: u64) -> usize {
        self.node(Role::Leader, view)
    }

    pub fn proxy_tail(&self, view: u64) -> usize {
        self.node(Role::ProxyTail, view)
    }

    /// Every node but `node`, in index order.
    pub fn others(&self, node: usize) -> Vec<usize> {
        (0..self.keys.len()).filter(|other| *other != node).collect()
    }

    pub fn replica(&self, node: usize) -> Sumeragi {
        self.replica_with(node, Config::default(), None)
    }

    pub fn replica_with(&self, node: usize, config: Config, record: Option<LockRecord>) -> Sumeragi {
        Sumeragi::new(
            self.keys[node].clone(),
            config,
            2,
            self.genesis,
            &self.validators,
            &BTreeSet::new(),
            record,
        )
    }

    /// A new block of height 2 proposed in `view` by `proposer`; `variant` makes another one.
    pub fn block(&self, view: u64, proposer: usize, variant: u64) -> Block {
        let mut block = self.base.clone();
        block.header.view = view;
        block.header.proposer = self.key(proposer);
        block.header.timestamp_ms += variant;
        block
    }

    pub fn proposal(
        &self,
        view: u64,
        block: &Block,
        justify: Option<Certificate>,
        proof: Vec<ViewChangeVote>,
    ) -> Proposal {
        Proposal {
            height: 2,
            view,
            block: block.clone(),
            justify,
            proof,
        }
    }

    pub fn vote(kind: VoteKind, view: u64, block: &Block) -> Vote {
        Vote {
            kind,
            height: 2,
            view,
            block_hash: block.hash(),
        }
    }

    pub fn certificate(&self, kind: VoteKind, view: u64, block: &Block, signers: &[usize]) -> Certificate {
        let keys: Vec<&KeyPair> = signers.iter().map(|node| &self.keys[*node]).collect();
        Certificate::sign(Cluster::vote(kind, view, block), &keys)
    }

    pub fn view_change(&self, signer: usize, view: u64, highest: Option<Certificate>) -> ViewChangeVote {
        ViewChangeVote::new(2, view, highest, &self.keys[signer])
    }

    pub fn proof(&self, view: u64, signers: &[usize]) -> Vec<ViewChangeVote> {
        signers
            .iter()
            .map(|signer| self.view_change(*signer, view, None))
            .collect()
    }

    /// A message from `from`.
    pub fn from(&self, from: usize, message: Message) -> Input {
        Input::Message {
            from: self.key(from),
            message,
        }
    }

    /// A signed vote from `from`.
    pub fn vote_from(&self, from: usize, kind: VoteKind, view: u64, block: &Block) -> Input {
        let vote = Cluster::vote(kind, view, block);
        self.from(
            from,
            Message::Vote(kasane_consensus::SignedVote::new(vote, &self.keys[from])),
        )
    }
}

/// Which timer an effect schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    Block,
    View,
    Status,
    Sync,
    Revalidate,
    ApplySynced,
    SyncHolds,
    Restore,
}

/// One expected effect, described by what matters for the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A vote of `kind` in `view` sent to node `to`.
    Vote {
        kind: VoteKind,
        view: u64,
        to: usize,
    },
    /// A broadcast of a message of this kind (`Message::kind`).
    Broadcast(&'static str),
    /// A message of this kind sent to node `to`.
    Send {
        kind: &'static str,
        to: usize,
    },
    Timer(TimerKind),
    /// A timer of this kind, after exactly this long.
    TimerAfter(TimerKind, u64),
    Validate,
    Build {
        view: u64,
        with_proof: bool,
    },
    /// The lock record made durable: its view, its lock's view, whether it holds the block.
    Persist {
        view: u64,
        lock: Option<u64>,
        block: bool,
    },
    Commit,
    Serve {
        to: usize,
        from_height: u64,
    },
    ViewChanged(u64),
}

fn timer_kind(timer: &Timer) -> TimerKind {
    match timer {
        Timer::BlockTime { .. } => TimerKind::Block,
        Timer::View { .. } => TimerKind::View,
        Timer::Status => TimerKind::Status,
        Timer::Sync { .. } => TimerKind::Sync,
        Timer::Revalidate { .. } => TimerKind::Revalidate,
        Timer::ApplySynced => TimerKind::ApplySynced,
        Timer::SyncHolds => TimerKind::SyncHolds,
        Timer::Restore => TimerKind::Restore,
    }
}

fn node_of(cluster: &Cluster, key: &PublicKey) -> usize {
    (0..cluster.keys.len())
        .find(|node| cluster.key(*node) == *key)
        .expect("a cluster key")
}

/// The description of an effect in the terms of [`Expect`].
fn describe(cluster: &Cluster, effect: &Effect) -> Expect {
    match effect {
        Effect::Send {
            to,
            message: Message::Vote(vote),
        } => Expect::Vote {
            kind: vote.vote.kind,
            view: vote.vote.view,
            to: node_of(cluster, to),
        },
        Effect::Send { to, message } => Expect::Send {
            kind: message.kind(),
            to: node_of(cluster, to),
        },
        Effect::Broadcast { message } => Expect::Broadcast(message.kind()),
        Effect::ScheduleTimer { timer, .. } => Expect::Timer(timer_kind(timer)),
        Effect::ValidateBlock { .. } => Expect::Validate,
        Effect::BuildProposal {
            view,
            view_change_proof,
            ..
        } => Expect::Build {
            view: *view,
            with_proof: view_change_proof.is_some(),
        },
        Effect::PersistLock { record } => Expect::Persist {
            view: record.view,
            lock: record.lock.as_ref().map(|lock| lock.vote.view),
            block: record.block.is_some(),
        },
        Effect::CommitBlock { .. } => Expect::Commit,
        Effect::ServeBlocks { to, from_height, .. } => Expect::Serve {
            to: node_of(cluster, to),
            from_height: *from_height,
        },
        Effect::ViewChanged { view, .. } => Expect::ViewChanged(*view),
    }
}

fn matches(cluster: &Cluster, effect: &Effect, expected: &Expect) -> bool {
    match (expected, effect) {
        (Expect::TimerAfter(kind, after), Effect::ScheduleTimer { timer, after_ms }) => {
            timer_kind(timer) == *kind && after_ms == after
        }
        _ => describe(cluster, effect) == *expected,
    }
}

/// A check of the core's state after a row.
pub type Then<'a> = Box<dyn Fn(&Sumeragi) + 'a>;

/// A row of a table.
pub struct Step<'a> {
    pub note: &'static str,
    pub input: Input,
    pub effects: Vec<Expect>,
    pub then: Option<Then<'a>>,
}

/// A row: `input` must produce exactly `effects`.
pub fn step<'a>(note: &'static str, input: Input, effects: Vec<Expect>) -> Step<'a> {
    Step {
        note,
        input,
        effects,
        then: None,
    }
}

impl<'a> Step<'a> {
    /// A check of the state after the step.
    pub fn then(mut self, check: impl Fn(&Sumeragi) + 'a) -> Step<'a> {
        self.then = Some(Box::new(check));
        self
    }
}

/// Runs the rows in order on `replica`; returns every row's effects.
pub fn run(cluster: &Cluster, replica: &mut Sumeragi, rule: &str, steps: Vec<Step<'_>>) -> Vec<Vec<Effect>> {
    let mut all = Vec::new();
    for (index, row) in steps.into_iter().enumerate() {
        let effects = replica.step(row.input);
        let described: Vec<Expect> = effects.iter().map(|effect| describe(cluster, effect)).collect();
        let same = effects.len() == row.effects.len()
            && effects
                .iter()
                .zip(&row.effects)
                .all(|(effect, expected)| matches(cluster, effect, expected));
        assert!(
            same,
            "{rule}, row {index} ({}):\n  expected {:?}\n  got      {:?}\n  state    {}",
            row.note,
            row.effects,
            described,
            replica.summary()
        );
        if let Some(check) = row.then {
            check(replica);
        }
        all.push(effects);
    }
    all
}

/// How many messages the replica dropped for `reason`.
pub fn dropped(replica: &Sumeragi, reason: DropReason) -> u64 {
    replica.counters().dropped.get(&reason).copied().unwrap_or(0)
}

/// The block a replica broadcast as a proposal among `effects`.
pub fn proposal_in(effects: &[Effect]) -> Option<Proposal> {
    effects.iter().find_map(|effect| match effect {
        Effect::Broadcast {
            message: Message::Proposal(proposal),
        } => Some((**proposal).clone()),
        _ => None,
    })
}

/// The view-change vote a replica broadcast among `effects`.
pub fn view_change_in(effects: &[Effect]) -> Option<ViewChangeVote> {
    effects.iter().find_map(|effect| match effect {
        Effect::Broadcast {
            message: Message::ViewChange(vote),
        } => Some(vote.clone()),
        _ => None,
    })
}
