//! Twins (Bano, Sonnino, Chursin, Perelman, Malkhi; OPODIS 2021): several replicas under one
//! key, each with its own disk, lock record and honest core. Nothing in them is Byzantine code,
//! yet together they equivocate, vote twice and forget locks. Partitions are keyed by round,
//! not by time: a message belongs to the (height, view, phase) it is about, and a round that
//! the scenario partitions delivers it only within a group.
//!
//! A view has two phases here: `Vote` (the proposal, both kinds of votes, the prepare
//! certificate, and fetches of bodies and blocks) and `Decide` (the commit certificate, the
//! view-change votes and proofs leaving the view, status and block sync). A partition of the
//! `Decide` phase is what lets a commit certificate reach some replicas and not others, the
//! situation that separates a safe protocol from an unsafe one. Transaction gossip is never
//! partitioned.
//!
//! Which key is twinned places the twins in the leader rotation (leaders rotate round robin by
//! height and view, R1-R2), so the enumerator's choice of key is its choice of leader placement.

use std::collections::BTreeMap;

use kasane_consensus::Message;

use crate::rng::Rng;

/// A phase of a view (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Vote,
    Decide,
}

/// The round a message belongs to.
pub type Round = (u64, u64, Phase);

/// A partition of the instances: a group number per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split(pub Vec<u8>);

impl Split {
    pub fn together(&self, a: usize, b: usize) -> bool {
        self.0.get(a) == self.0.get(b)
    }

    /// The groups, each a list of instances.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let mut groups: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (instance, group) in self.0.iter().enumerate() {
            groups.entry(*group).or_default().push(instance);
        }
        groups.into_values().collect()
    }
}

/// The twins of a run and their partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twins {
    /// For each twin instance, in order after the validators and spares, the node whose key it
    /// shares.
    pub of: Vec<usize>,
    /// Partitions by round; rounds not listed are fully connected.
    pub rounds: BTreeMap<Round, Split>,
}

/// When the round partitions of a Twins run lift (virtual time).
pub const TWINS_PARTITIONS_END_MS: u64 = 5_000;

/// A twin's clock runs this far ahead of its original's, so twins that lead at the same
/// moment build different blocks (their timestamps differ) and equivocate.
pub const TWIN_CLOCK_OFFSET_MS: i64 = 1;

impl Twins {
    /// Whether `node`'s key has twins (the original and its twins are all faulty).
    pub fn is_twinned(&self, node: usize) -> bool {
        self.of.contains(&node)
    }

    /// Whether a message of `round` may go from instance `from` to instance `to`.
    pub fn allows(&self, round: Option<Round>, from: usize, to: usize) -> bool {
        match round.and_then(|round| self.rounds.get(&round)) {
            Some(split) => split.together(from, to),
            None => true,
        }
    }
}

/// The round of `message`, sent by a replica at (`height`, `view`); `None` for gossip.
pub fn round_of(message: &Message, height: u64, view: u64) -> Option<Round> {
    let leaving = |vote_height: u64, target: u64| (vote_height, target.saturating_sub(1), Phase::Decide);
    Some(match message {
        Message::Proposal(proposal) => (proposal.height, proposal.view, Phase::Vote),
        Message::ProposalDigest(digest) => (digest.height, digest.view, Phase::Vote),
        Message::Vote(vote) => (vote.vote.height, vote.vote.view, Phase::Vote),
        Message::PrepareCertificate(certificate) => (certificate.vote.height, certificate.vote.view, Phase::Vote),
        Message::CommitCertificate(certificate) => (certificate.vote.height, certificate.vote.view, Phase::Decide),
        Message::ViewChange(vote) => leaving(vote.height, vote.view),
        Message::ViewChangeProof(votes) => match votes.first() {
            Some(vote) => leaving(vote.height, vote.view),
            None => (height, view, Phase::Decide),
        },
        Message::BlockWanted { .. }
        | Message::BlockFound(_)
        | Message::TransactionsWanted { .. }
        | Message::TransactionsFound { .. } => (height, view, Phase::Vote),
        Message::Status { .. }
        | Message::BlockSyncRequest { .. }
        | Message::BlockSyncResponse { .. }
        | Message::SnapshotWanted { .. }
        | Message::SnapshotManifest { .. }
        | Message::SnapshotChunkWanted { .. }
        | Message::SnapshotChunk { .. } => (height, view, Phase::Decide),
        Message::Transactions(_) | Message::Held(_) => return None,
    })
}

/// Every way to split `instances` into exactly two non-empty groups, each once: the group of
/// instance 0 is group 0 (so swapping the groups' names gives nothing new).
pub fn two_way_splits(instances: usize) -> Vec<Split> {
    (1..(1u32 << (instances - 1)))
        .map(|mask| {
            Split(
                (0..instances)
                    .map(|instance| {
                        if instance == 0 {
                            0
                        } else {
                            ((mask >> (instance - 1)) & 1) as u8
                        }
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The rounds an enumerated scenario may partition: heights 2 and 3, views 0 to 3, both phases.
pub fn enumerated_rounds() -> Vec<Round> {
    let mut rounds = Vec::new();
    for height in 2..=3 {
        for view in 0..=3 {
            for phase in [Phase::Vote, Phase::Decide] {
                rounds.push((height, view, phase));
            }
        }
    }
    rounds
}

/// Most partitioned rounds an enumerated scenario has.
pub const ENUMERATED_PARTITIONS_MAX: usize = 3;

/// Scenarios of n = 4 with one twin, in a fixed order: every choice of the twinned key (and
/// with it the twins' place in the leader rotation), first with no partitioned round, then
/// every choice of one partitioned round and its two-way split, then of two, then of three.
/// The blocks of up to two rounds are visited in order, whole; the block of three (7,560,000
/// scenarios) in a fixed stride through it, so any prefix of it is spread over all its rounds.
#[derive(Debug, Clone)]
pub struct Enumerator {
    rounds: Vec<Round>,
    splits: Vec<Split>,
    keys: usize,
}

impl Enumerator {
    pub fn four_nodes_one_twin() -> Enumerator {
        Enumerator {
            rounds: enumerated_rounds(),
            splits: two_way_splits(5),
            keys: 4,
        }
    }

    /// Scenarios with exactly `partitioned` partitioned rounds.
    pub fn block_len(&self, partitioned: usize) -> u64 {
        binomial(self.rounds.len() as u64, partitioned as u64)
            * (self.splits.len() as u64).pow(partitioned as u32)
            * self.keys as u64
    }

    /// All scenarios the enumerator has.
    pub fn len(&self) -> u64 {
        (0..=ENUMERATED_PARTITIONS_MAX).map(|k| self.block_len(k)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scenario number `index` (below `len()`): the twinned node and the partitions.
    pub fn scenario(&self, index: u64) -> Option<Twins> {
        let mut offset = index;
        for partitioned in 0..=ENUMERATED_PARTITIONS_MAX {
            let block = self.block_len(partitioned);
            if offset < block {
                let position = if partitioned == ENUMERATED_PARTITIONS_MAX {
                    spread(offset, block)
                } else {
                    offset
                };
                return Some(self.decode(partitioned, position));
            }
            offset -= block;
        }
        None
    }

    fn decode(&self, partitioned: usize, position: u64) -> Twins {
        let keys = self.keys as u64;
        let twinned = (position % keys) as usize;
        let mut rest = position / keys;
        let splits = self.splits.len() as u64;
        let mut chosen_splits = Vec::with_capacity(partitioned);
        for _ in 0..partitioned {
            chosen_splits.push(&self.splits[(rest % splits) as usize]);
            rest /= splits;
        }
        let slots = unrank_combination(self.rounds.len(), partitioned, rest);
        Twins {
            of: vec![twinned],
            rounds: slots
                .into_iter()
                .zip(chosen_splits)
                .map(|(slot, split)| (self.rounds[slot], split.clone()))
                .collect(),
        }
    }
}

/// A position in a block visited by a stride coprime to its length: a bijection on
/// `0..length` that spreads any prefix over the whole block.
fn spread(offset: u64, length: u64) -> u64 {
    let mut stride = 1_000_003u64 % length.max(1);
    while gcd(stride, length) != 1 {
        stride += 1;
    }
    ((offset as u128 * stride as u128) % length as u128) as u64
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn binomial(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    (0..k).fold(1u64, |acc, i| acc * (n - i) / (i + 1))
}

/// The `rank`-th `k`-subset of `0..n` in lexicographic order.
fn unrank_combination(n: usize, k: usize, mut rank: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(k);
    let mut next = 0usize;
    for remaining in (1..=k).rev() {
        loop {
            let with_next = binomial((n - next - 1) as u64, (remaining - 1) as u64);
            if rank < with_next {
                out.push(next);
                next += 1;
                break;
            }
            rank -= with_next;
            next += 1;
        }
    }
    out
}

/// A sampled scenario for larger clusters (n = 7 with two twins, say): `twins` distinct keys
/// of `nodes` are twinned, and each enumerated round is split with probability one in three,
/// into two or three random groups.
pub fn sampled(seed: u64, nodes: usize, twins: usize) -> Twins {
    let mut rng = Rng::new(seed ^ 0x0074_7769_6E73);
    let mut keys: Vec<usize> = (0..nodes).collect();
    for index in (1..keys.len()).rev() {
        keys.swap(index, rng.below(index as u64 + 1) as usize);
    }
    let of: Vec<usize> = keys[..twins.min(nodes)].to_vec();
    let instances = nodes + of.len();
    let mut rounds = BTreeMap::new();
    for round in enumerated_rounds() {
        if rng.below(3) != 0 {
            continue;
        }
        let groups = rng.between(2, 3) as u8;
        let split = Split((0..instances).map(|_| rng.below(u64::from(groups)) as u8).collect());
        if split.groups().len() > 1 {
            rounds.insert(round, split);
        }
    }
    Twins { of, rounds }
}

/// The run of Twins scenario `index` for `nodes` validators: n = 4 enumerated (one twin),
/// other sizes sampled with f twins. A quiet network (1 to 5 ms links, no loss), four transfers
/// in the first 100 ms, 30 s of virtual time. Partitions apply by round until 5 s of virtual
/// time, then lift (a replica stuck in a partitioned round would otherwise stay cut off: its
/// messages all belong to that round); from there each height gets a bounded number of views.
/// `None` past the enumeration.
pub fn twins_config(nodes: usize, index: u64) -> Option<crate::SimConfig> {
    let twins = if nodes == 4 {
        Enumerator::four_nodes_one_twin().scenario(index)?
    } else {
        sampled(index, nodes, kasane_model::block::max_faulty(nodes))
    };
    let mut config = crate::SimConfig::calm(nodes);
    config.latency_ms = (1, 5);
    config.client.transactions = 4;
    config.client.load_window_ms = 100;
    config.faults_end_ms = TWINS_PARTITIONS_END_MS;
    config.duration_ms = 30_000;
    config.twins = Some(twins);
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_each_partition_once() {
        let splits = two_way_splits(5);
        assert_eq!(splits.len(), 15);
        for split in &splits {
            assert_eq!(split.groups().len(), 2);
            assert_eq!(split.0[0], 0);
        }
        let unique: std::collections::BTreeSet<Vec<u8>> = splits.iter().map(|split| split.0.clone()).collect();
        assert_eq!(unique.len(), 15);
    }

    #[test]
    fn the_enumerator_visits_each_scenario_once() {
        let enumerator = Enumerator::four_nodes_one_twin();
        assert_eq!(enumerator.block_len(0), 4);
        assert_eq!(enumerator.block_len(1), 16 * 15 * 4);
        assert_eq!(enumerator.block_len(2), 120 * 225 * 4);
        assert_eq!(enumerator.block_len(3), 560 * 3375 * 4);
        // The blocks of up to two partitioned rounds: all distinct.
        let small = enumerator.block_len(0) + enumerator.block_len(1) + enumerator.block_len(2);
        let mut seen = std::collections::BTreeSet::new();
        for index in 0..small {
            let twins = enumerator.scenario(index).expect("in range");
            let key: Vec<String> = std::iter::once(format!("{:?}", twins.of))
                .chain(
                    twins
                        .rounds
                        .iter()
                        .map(|(round, split)| format!("{round:?}{:?}", split.0)),
                )
                .collect();
            assert!(seen.insert(key), "index {index} repeats a scenario");
        }
        // The strided block is a bijection: a sample of positions maps to distinct scenarios.
        let block = enumerator.block_len(3);
        let positions: std::collections::BTreeSet<u64> = (0..20_000).map(|offset| spread(offset, block)).collect();
        assert_eq!(positions.len(), 20_000);
        assert!(enumerator.scenario(enumerator.len()).is_none());
        assert_eq!(enumerator.scenario(small).expect("first of three").rounds.len(), 3);
    }

    #[test]
    fn combinations_unrank_in_order() {
        let all: Vec<Vec<usize>> = (0..binomial(5, 2)).map(|rank| unrank_combination(5, 2, rank)).collect();
        assert_eq!(all.first(), Some(&vec![0, 1]));
        assert_eq!(all.last(), Some(&vec![3, 4]));
        assert_eq!(all.len(), 10);
    }
}
