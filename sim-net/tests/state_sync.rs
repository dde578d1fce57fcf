//! State sync in the simulator (docs/PROTOCOL.md section 8.1): a validator down while the others
//! commit hundreds of heights comes back, restores the latest checkpoint from them and
//! backfills below it, under the simulator's checkers (agreement on every height, including the
//! backfilled ones), and replays the same way from the same seed.

use kasane_sim_net::{run, Fault, FaultKind, SimConfig};

fn down_for_40_s() -> SimConfig {
    let mut config = SimConfig::calm(4);
    config.client.transactions = 4_000;
    config.client.load_window_ms = 40_000;
    config.faults = vec![
        Fault {
            at_ms: 1,
            kind: FaultKind::Crash { node: 1 },
        },
        Fault {
            at_ms: 41_000,
            kind: FaultKind::Restart { node: 1 },
        },
    ];
    config.faults_end_ms = 45_000;
    config
}

#[test]
fn a_validator_back_after_hundreds_of_heights_restores_a_checkpoint() {
    let config = down_for_40_s();
    let report = run(3, &config);
    assert!(report.ok(), "{:?}", report.violations);
    let sent = |kind: &str| report.messages_by_kind.get(kind).copied().unwrap_or(0);
    println!(
        "{} heights, {} restores, {} blocks backfilled; snapshot messages: wanted {}, manifests {}, chunks wanted {}, chunks {}",
        report.height,
        report.restores,
        report.backfilled_blocks,
        sent("snapshot-wanted"),
        sent("snapshot-manifest"),
        sent("snapshot-chunk-wanted"),
        sent("snapshot-chunk")
    );
    assert!(
        report.height > 300,
        "the run must pass checkpoints: {} heights",
        report.height
    );
    assert_eq!(
        report.restores, 1,
        "the restarted validator did not restore a checkpoint"
    );
    // Block sync executes while the snapshot is fetched and proven (fast in virtual time); at
    // least a checkpoint interval of blocks below the checkpoint was not executed.
    assert!(
        report.backfilled_blocks >= 100,
        "{} blocks backfilled",
        report.backfilled_blocks
    );
    // The same seed replays the same run, restore included.
    assert_eq!(run(3, &config).digest, report.digest, "the run does not replay");
}

#[test]
fn without_state_sync_the_same_run_executes_every_block() {
    let mut config = down_for_40_s();
    config.consensus.state_sync = false;
    let report = run(3, &config);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.messages_by_kind.get("snapshot-chunk"), None);
    assert_eq!((report.restores, report.backfilled_blocks), (0, 0));
}
