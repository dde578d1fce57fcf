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
