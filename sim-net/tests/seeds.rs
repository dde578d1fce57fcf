//! Random seeds with Byzantine replicas and random faults: no invariant may break. The seed
//! ranges are split over several tests so the harness runs them on every core.

use kasane_sim_net::{run, SimConfig};

fn run_seeds(nodes: usize, seeds: std::ops::Range<u64>) {
    let byzantine = (nodes - 1) / 3;
    let mut failures = Vec::new();
    for seed in seeds {
        let config = SimConfig::random(seed, nodes, byzantine);
        let report = run(seed, &config);
        if !report.ok() {
            failures.push(format!(
                "seed {seed}: {:?} (replay: kasane sim --nodes {nodes} --byzantine {byzantine} --seeds {seed})",
                report.violations
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn four_nodes_one_byzantine_seeds_0_to_150() {
    run_seeds(4, 0..150);
}

#[test]
fn four_nodes_one_byzantine_seeds_150_to_300() {
    run_seeds(4, 150..300);
}

#[test]
fn seven_nodes_two_byzantine_seeds_0_to_100() {
    run_seeds(7, 0..100);
}

#[test]
fn seven_nodes_two_byzantine_seeds_100_to_200() {
    run_seeds(7, 100..200);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [3, 17] {
        let config = SimConfig::random(seed, 4, 1);
        let first = run(seed, &config);
        let second = run(seed, &config);
        assert_eq!(first.digest, second.digest, "seed {seed}");
        assert_eq!(first.events, second.events, "seed {seed}");
        assert!(first.height > 1, "seed {seed} committed nothing");
    }
    let other = run(4, &SimConfig::random(4, 4, 1));
    assert_ne!(other.digest, run(3, &SimConfig::random(3, 4, 1)).digest);
}
