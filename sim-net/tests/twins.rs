//! Twins (docs/SIM.md, "Twins"): a bounded sample of the enumerated scenarios of n = 4 with one
//! twin, and sampled ones of n = 7 with two, break no invariant; with locking switched off the
//! same enumeration finds the fork, so the checkers can fail. The long run (a million
//! scenarios) is `kasane sim --twins`; its figures are in docs/SIM.md.

use kasane_sim_net::run;
use kasane_sim_net::twins::{twins_config, Enumerator};

fn failures(nodes: usize, indices: impl Iterator<Item = u64>, locking: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for index in indices {
        let mut config = twins_config(nodes, index).expect("an enumerated scenario");
        config.consensus.locking = locking;
        let report = run(index, &config);
        if !report.ok() {
            failures.push(format!(
                "scenario {index}: {:?} (replay: kasane sim --twins --nodes {nodes} --seeds {index}{})",
                report.violations,
                if locking { "" } else { " --no-locking" }
            ));
        }
    }
    failures
}

#[test]
fn the_first_enumerated_scenarios_break_nothing() {
    let failures = failures(4, 0..2_500, true);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_strided_sample_of_three_partitioned_rounds_breaks_nothing() {
    let enumerator = Enumerator::four_nodes_one_twin();
    let first = enumerator.block_len(0) + enumerator.block_len(1) + enumerator.block_len(2);
    let failures = failures(4, (0..600).map(|offset| first + offset * 997), true);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sampled_scenarios_of_seven_with_two_twins_break_nothing() {
    let failures = failures(7, 0..150, true);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn without_locking_the_enumeration_finds_the_fork() {
    let found = failures(4, 0..1_000, false);
    assert!(
        found.iter().any(|failure| failure.contains("\"agreement\"")),
        "no agreement violation in 1,000 scenarios without locking: {found:?}"
    );
}

#[test]
fn a_twins_scenario_replays_exactly() {
    for index in [17u64, 40_000] {
        let config = twins_config(4, index).expect("scenario");
        let (first, second) = (run(index, &config), run(index, &config));
        assert_eq!(
            (first.digest, first.events),
            (second.digest, second.events),
            "scenario {index}"
        );
        assert!(first.height > 1, "scenario {index} committed nothing");
    }
}
