//! The single-vote fork (docs/PROTOCOL.md section 5): a proxy tail that sends its commit
//! certificate to one honest peer only, which is then cut off, while the others change view.
//! With locking the new leader must re-propose the certified block and agreement holds; with
//! locking switched off the checkers must catch the fork. This is the proof that the agreement
//! checker can fail.

use kasane_consensus::Role;
use kasane_sim_net::{roles_after_genesis, run, Behaviour, Fault, FaultKind, SimConfig};

/// n = 4: the proxy tail of height 2, view 0 withholds its commit certificate from everyone but
/// the leader, and the leader's links to the two other honest replicas are cut from just after
/// the prepare certificate reached them (t = 72 ms with 5 ms links) until t = 5 s.
fn withholding_scenario(locking: bool) -> SimConfig {
    let roles = roles_after_genesis(4, 0);
    let leader = roles.iter().position(|role| *role == Role::Leader).expect("a leader");
    let proxy_tail = roles
        .iter()
        .position(|role| *role == Role::ProxyTail)
        .expect("a proxy tail");
    let others: Vec<usize> = (0..4).filter(|node| *node != leader && *node != proxy_tail).collect();
    let mut config = SimConfig::calm(4);
    config.behaviours[proxy_tail] = Behaviour::WithholdCommit { victim: leader };
    config.transactions = 3;
    config.load_window_ms = 0;
    config.faults_end_ms = 5_000;
    for &other in &others {
        for (from, to) in [(leader, other), (other, leader)] {
            config.faults.push(Fault {
                at_ms: 72,
                kind: FaultKind::CutLink { from, to },
            });
        }
    }
    config.faults.push(Fault {
        at_ms: 5_000,
        kind: FaultKind::Heal,
    });
    config.consensus.locking = locking;
    config
}

#[test]
fn locking_keeps_the_withheld_block() {
    let config = withholding_scenario(true);
    let report = run(1, &config);
    assert!(
        report.ok(),
        "violations with locking: {:?}\n{:#?}",
        report.violations,
        report.final_states
    );
    assert_eq!(report.committed_transactions, report.submitted_transactions);
    assert!(report.view_changes > 0, "the scenario must force a view change");
}

#[test]
fn without_locking_the_checker_catches_the_fork() {
    let config = withholding_scenario(false);
    let report = run(1, &config);
    let agreement = report
        .violations
        .iter()
        .find(|violation| violation.invariant == "agreement");
    assert!(
        agreement.is_some(),
        "locking off must fork, but the run found {:?}\n{:#?}",
        report.violations,
        report.final_states
    );
}
