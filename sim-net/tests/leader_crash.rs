//! Recovery after the leader crashes before proposing: the others time out, change view, and
//! the next leader commits. Prints the recovery time in virtual time.

use kasane_consensus::Role;
use kasane_sim_net::{roles_after_genesis, run, Fault, FaultKind, SimConfig};

#[test]
fn a_crashed_leader_is_replaced_within_one_view_timeout() {
    for nodes in [4, 7] {
        let roles = roles_after_genesis(nodes, 0);
        let leader = roles.iter().position(|role| *role == Role::Leader).expect("a leader");
        let mut config = SimConfig::calm(nodes);
        config.client.transactions = 5;
        config.client.load_window_ms = 0;
        config.faults = vec![Fault {
            at_ms: 1,
            kind: FaultKind::Crash { node: leader },
        }];
        config.faults_end_ms = 10_000;
        let report = run(1, &config);
        assert!(report.ok(), "n = {nodes}: {:?}", report.violations);
        let recovery = report.commit_latencies_ms.iter().max().copied().expect("commits");
        let bound = config.consensus.view_timeout(0) + 200;
        println!(
            "n = {nodes}: leader crashed at 1 ms; all 5 transactions committed by {recovery} ms (bound {bound} ms)"
        );
        assert!(
            recovery <= bound,
            "n = {nodes}: recovery took {recovery} ms, more than {bound} ms"
        );
        assert!(report.view_changes > 0);
    }
}

/// Leader reputation (R1): a validator that stays down costs a view change the first time it
/// should lead, then leads last for `DEMOTION_HEIGHTS_PER_VALIDATOR * n` heights, instead of
/// failing every n-th height.
#[test]
fn a_validator_that_stays_down_stops_costing_a_view_change_every_n_heights() {
    let nodes = 4;
    let roles = roles_after_genesis(nodes, 0);
    // Not the first leader: it fails when its turn comes, some heights in.
    let crashed = roles
        .iter()
        .position(|role| *role == Role::ProxyTail)
        .expect("a proxy tail");
    let mut config = SimConfig::calm(nodes);
    config.client.transactions = 4_000;
    config.client.load_window_ms = 40_000;
    // Down while the load runs, back after it, so the run ends with every replica at the tip.
    config.faults = vec![
        Fault {
            at_ms: 1,
            kind: FaultKind::Crash { node: crashed },
        },
        Fault {
            at_ms: 41_000,
            kind: FaultKind::Restart { node: crashed },
        },
    ];
    config.faults_end_ms = 45_000;
    let report = run(1, &config);
    assert!(report.ok(), "{:?}", report.violations);
    // Each of the three live replicas counts the view changes it makes (the restarted one's
    // few after 41 s are counted too: the bound allows for them).
    let per_replica = report.view_changes as f64 / 3.0;
    let heights = report.height;
    let window = kasane_wsv::state::DEMOTION_HEIGHTS_PER_VALIDATOR * nodes as u64;
    println!("one of {nodes} down: {heights} heights, {per_replica:.1} view changes per live replica (window {window} heights)");
    assert!(
        heights > 2 * window,
        "the run must outlast the window: {heights} heights"
    );
    let bound = (heights / window + 3) as f64;
    assert!(
        per_replica <= bound,
        "{per_replica:.1} view changes per replica over {heights} heights: more than one per window ({bound})"
    );
}
