//! Every scenario file in scenarios/ runs and meets its expectation. The two withholding
//! scenarios are the proof that locking matters and that the agreement checker can fail.

use std::path::Path;

use kasane_sim_net::{run, Scenario};

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    Scenario::parse(&text).unwrap_or_else(|error| panic!("{name}: {error}"))
}

#[test]
fn every_scenario_meets_its_expectation() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&directory)
        .expect("scenarios/")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "only {} scenarios", names.len());
    for name in names {
        let scenario = scenario(&name);
        let config = scenario.config().unwrap_or_else(|error| panic!("{name}: {error}"));
        let report = run(scenario.seed, &config);
        assert!(
            scenario.met_by(&report),
            "{name}: expected {}, got {:?}\n{:#?}",
            scenario.expect,
            report.violations,
            report.final_states
        );
    }
}

#[test]
fn locking_matters_in_the_withholding_scenario() {
    let safe = scenario("withholding-proxy-tail.toml");
    let report = run(safe.seed, &safe.config().expect("config"));
    assert!(report.ok(), "{:?}", report.violations);
    assert!(report.view_changes > 0, "the scenario must force a view change");
    assert_eq!(report.committed_transactions, report.submitted_transactions);
    let unsafe_run = scenario("withholding-proxy-tail-without-locking.toml");
    let report = run(unsafe_run.seed, &unsafe_run.config().expect("config"));
    assert!(
        report
            .violations
            .iter()
            .any(|violation| violation.invariant == "agreement"),
        "{:?}",
        report.violations
    );
}

#[test]
fn bad_scenarios_are_clear_errors() {
    assert!(Scenario::parse("name = \"x\"\nnodes = 0").is_err());
    assert!(Scenario::parse("name = \"x\"\nnodes = 4\nsurprise = 1").is_err());
    let too_many = "name = \"x\"\nnodes = 4\n[[byzantine]]\nnode = 0\nbehaviour = \"silent\"\n[[byzantine]]\nnode = 1\nbehaviour = \"silent\"";
    assert!(Scenario::parse(too_many).expect("parses").config().is_err());
    let unknown = "name = \"x\"\nnodes = 4\n[[byzantine]]\nnode = \"king\"\nbehaviour = \"silent\"";
    assert!(Scenario::parse(unknown).expect("parses").config().is_err());
}

/// Acknowledgement by f + 1 (docs/PROTOCOL.md section 7.1): a transaction one replica queued is
/// lost with that replica, so under the old rule the liveness checker fires; under the new one
/// the client is never told it is kept. A transaction that two replicas hold survives the crash
/// of the one that admitted it, without resubmission.
#[test]
fn acknowledgement_by_f_plus_one() {
    let lost = scenario("lost-without-resubmission.toml");
    let mut config = lost.config().expect("config");
    let report = run(lost.seed, &config);
    assert_eq!(report.acknowledged_transactions, 1);
    assert!(report
        .violations
        .iter()
        .any(|violation| violation.invariant == "liveness"));
    config.client.acknowledge = kasane_sim_net::config::Acknowledge::Held;
    let report = run(lost.seed, &config);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(
        report.acknowledged_transactions, 0,
        "one holder of f + 1 = 2 acknowledged"
    );

    let kept = scenario("acknowledged-survives-crash.toml");
    let report = run(kept.seed, &kept.config().expect("config"));
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.acknowledged_transactions, 1);
    assert_eq!(report.committed_transactions, 1);
}

/// R18b: holders that crash and restart one after the other keep what they acknowledged. The
/// same file with the holds in memory loses the transaction.
#[test]
fn durable_holds_survive_holders_crashing_one_after_the_other() {
    let kept = scenario("acknowledged-survives-sequential-crashes.toml");
    let mut config = kept.config().expect("config");
    let report = run(kept.seed, &config);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.acknowledged_transactions, 1);
    assert_eq!(report.committed_transactions, 1);

    config.holds = kasane_sim_net::config::Holds::Memory;
    let report = run(kept.seed, &config);
    assert_eq!(report.acknowledged_transactions, 1);
    assert!(
        report
            .violations
            .iter()
            .any(|violation| violation.invariant == "liveness"),
        "holders in memory forget: {:?}",
        report.violations
    );
}
