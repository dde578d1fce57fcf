//! The random adversary: `SimConfig::random(seed, nodes, byzantine)` (docs/SIM.md, "What a
//! random run contains").

use crate::config::{Acknowledge, Behaviour, ClientConfig, Fault, FaultKind, SimConfig};
use crate::rng::Rng;

impl SimConfig {
    /// A random run for `seed`: `byzantine` Byzantine replicas (single behaviours or a
    /// coalition), random latency, per-link latency, loss, duplication and clock skew of either
    /// sign, a hostile client, membership changes, and faults that are short (crashes,
    /// partitions, cut links, healed within 3 s) or long and total (a partition or quorum loss
    /// of up to 120 s, every replica losing power, more than f replicas crashing).
    pub fn random(seed: u64, nodes: usize, byzantine: usize) -> SimConfig {
        let mut rng = Rng::new(seed ^ 0x6B61_7361_6E65);
        let mut config = SimConfig::calm(nodes);
        let low = rng.between(1, 10);
        config.latency_ms = (low, low + rng.between(0, 40));
        config.loss_per_million = rng.between(0, 30_000) as u32;
        config.duplicate_per_million = rng.between(0, 20_000) as u32;
        config.client = ClientConfig {
            transactions: rng.between(5, 40) as usize,
            load_window_ms: rng.between(100, 4_000),
            resubmit: true,
            acknowledge: Acknowledge::Held,
            conflicting_pairs: rng.below(4) as usize,
            duplicates: rng.below(6) as usize,
            edge_signatures: 0,
        };
        // Clocks disagree by up to 2 s either way.
        config.clock_skew_ms = (0..nodes).map(|_| rng.between(0, 4_000) as i64 - 2_000).collect();
        let mut order: Vec<usize> = (0..nodes).collect();
        for index in (1..order.len()).rev() {
            order.swap(index, rng.below(index as u64 + 1) as usize);
        }
        let byzantine = byzantine.min(nodes);
        let (bad, good) = order.split_at(byzantine);
        assign_behaviours(&mut rng, &mut config, bad, good);
        // Some links are slower one way than the other.
        for _ in 0..rng.below(3) {
            let from = rng.below(nodes as u64) as usize;
            let to = rng.below(nodes as u64) as usize;
            let low = rng.between(1, 100);
            config
                .link_latency_ms
                .insert((from, to), (low, low + rng.between(0, 100)));
        }
        if rng.below(10) < 7 {
            short_faults(&mut rng, &mut config, &order, good);
        } else {
            long_fault(&mut rng, &mut config, &order, good);
        }
        if rng.below(5) == 0 {
            membership_change(&mut rng, &mut config, good);
        }
        config.duration_ms = config.faults_end_ms + 60_000;
        config
    }
}

fn assign_behaviours(rng: &mut Rng, config: &mut SimConfig, bad: &[usize], good: &[usize]) {
    // With two or more Byzantine replicas, a coalition half the time: one shows every peer
    // its own block, the others vote for all of them.
    if bad.len() >= 2 && rng.below(2) == 0 {
        config.behaviours[bad[0]] = Behaviour::EquivocatePerPeer;
        for &node in &bad[1..] {
            config.behaviours[node] = Behaviour::VoteAll;
        }
        return;
    }
    for &node in bad {
        config.behaviours[node] = match rng.below(17) {
            0 => Behaviour::Silent,
            1 => Behaviour::Equivocate,
            2 => Behaviour::InvalidBlock,
            3 => Behaviour::DoubleVote,
            4 => Behaviour::Forge,
            5 => Behaviour::Replay,
            6 => Behaviour::ViewChangeSpam,
            7 => Behaviour::SlowSigner,
            8 => Behaviour::EquivocatePerPeer,
            9 => Behaviour::VoteAll,
            10 => Behaviour::VoteThenSilent {
                silent_ms: rng.between(500, 10_000),
            },
            11 => Behaviour::WithholdBodies,
            12 => Behaviour::FarFutureViews,
            13 => Behaviour::Mutate {
                per_million: rng.between(50_000, 300_000) as u32,
            },
            14 => Behaviour::DigestSpam,
            15 => Behaviour::MisstatedHeader,
            _ => Behaviour::WithholdCommit {
                victim: good[rng.below(good.len() as u64) as usize],
            },
        };
    }
}

/// Up to three faults before 8 s, each healed within 3 s.
fn short_faults(rng: &mut Rng, config: &mut SimConfig, order: &[usize], good: &[usize]) {
    let nodes = config.nodes;
    config.faults_end_ms = 8_000;
    for _ in 0..rng.below(4) {
        let at_ms = rng.between(0, 6_000);
        let until = (at_ms + rng.between(200, 3_000)).min(config.faults_end_ms);
        match rng.below(3) {
            0 => {
                let node = good[rng.below(good.len() as u64) as usize];
                push_outage(config, at_ms, until, &[node]);
            }
            1 => {
                let split = rng.between(1, nodes as u64 - 1) as usize;
                let groups = vec![order[..split].to_vec(), order[split..].to_vec()];
                push_split(config, at_ms, until, groups);
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
}

/// One long or total fault: a partition or quorum loss of up to 120 s, every replica losing
/// power, or more than f honest replicas crashing for up to 60 s.
fn long_fault(rng: &mut Rng, config: &mut SimConfig, order: &[usize], good: &[usize]) {
    let nodes = config.nodes;
    let at_ms = rng.between(100, 3_000);
    let length = match rng.below(3) {
        0 => rng.between(10_000, 120_000),
        1 => rng.between(3_000, 30_000),
        _ => rng.between(500, 5_000),
    };
    let until = at_ms + length;
    config.faults_end_ms = until + rng.between(0, 2_000);
    match rng.below(4) {
        0 => {
            // A split that may leave no side with a quorum.
            let split = rng.between(1, nodes as u64 - 1) as usize;
            push_split(
                config,
                at_ms,
                until,
                vec![order[..split].to_vec(), order[split..].to_vec()],
            );
        }
        1 => {
            // Quorum loss: f + 1 replicas cut off from everyone else.
            let cut = config.max_faulty() + 1;
            push_split(config, at_ms, until, vec![order[..cut].to_vec(), order[cut..].to_vec()]);
        }
        2 => {
            config.faults.push(Fault {
                at_ms,
                kind: FaultKind::PowerLoss,
            });
            for node in 0..nodes {
                config.faults.push(Fault {
                    at_ms: until + rng.below(1_000),
                    kind: FaultKind::Restart { node },
                });
            }
        }
        _ => {
            // More than f honest replicas crash (possibly every honest one) and restart.
            let crashed = (config.max_faulty() + 1 + rng.below(good.len() as u64) as usize).min(good.len());
            push_outage(config, at_ms, until, &good[..crashed]);
        }
    }
}

fn push_outage(config: &mut SimConfig, at_ms: u64, until: u64, nodes: &[usize]) {
    for &node in nodes {
        config.faults.push(Fault {
            at_ms,
            kind: FaultKind::Crash { node },
        });
        config.faults.push(Fault {
            at_ms: until,
            kind: FaultKind::Restart { node },
        });
    }
}

fn push_split(config: &mut SimConfig, at_ms: u64, until: u64, groups: Vec<Vec<usize>>) {
    config.faults.push(Fault {
        at_ms,
        kind: FaultKind::Partition { groups },
    });
    config.faults.push(Fault {
        at_ms: until,
        kind: FaultKind::Heal,
    });
}

/// A spare replica registered as a validator, and later an honest validator removed, so the
/// validator count (and f) is back where it started.
fn membership_change(rng: &mut Rng, config: &mut SimConfig, good: &[usize]) {
    config.spares = 1;
    let spare = config.nodes;
    config.behaviours.push(Behaviour::Honest);
    config.clock_skew_ms.push(rng.between(0, 4_000) as i64 - 2_000);
    let register_at = rng.between(200, 4_000);
    config.faults.push(Fault {
        at_ms: register_at,
        kind: FaultKind::RegisterPeer { node: spare },
    });
    let removed = good[rng.below(good.len() as u64) as usize];
    config.faults.push(Fault {
        at_ms: register_at + rng.between(1_000, 4_000),
        kind: FaultKind::UnregisterPeer { node: removed },
    });
    config.faults_end_ms = config.faults_end_ms.max(register_at + 5_000);
}
