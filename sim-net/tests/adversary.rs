//! The random adversary draws what docs/SIM.md says it draws, and runs with real signatures
//! as with mock ones.

use std::collections::HashSet;

use kasane_sim_net::{run, Behaviour, FaultKind, SimConfig};

#[test]
fn the_random_adversary_uses_every_behaviour_and_every_kind_of_fault() {
    let mut behaviours = HashSet::new();
    let mut faults = HashSet::new();
    let (mut long, mut skewed_back, mut membership, mut conflicts, mut links) = (0, 0, 0, 0, 0);
    for seed in 0..3_000 {
        let config = SimConfig::random(seed, 7, 2);
        for behaviour in &config.behaviours {
            behaviours.insert(std::mem::discriminant(behaviour));
        }
        for fault in &config.faults {
            faults.insert(std::mem::discriminant(&fault.kind));
        }
        long += u64::from(config.faults_end_ms > 10_000);
        skewed_back += u64::from(config.clock_skew_ms.iter().any(|skew| *skew < 0));
        membership += u64::from(config.spares > 0);
        conflicts += u64::from(config.client.conflicting_pairs > 0);
        links += u64::from(!config.link_latency_ms.is_empty());
    }
    // Every behaviour, and every fault kind but amnesia (which the random runs
    // leave to scenarios: with f Byzantine replicas there is no room for it).
    assert_eq!(
        behaviours.len(),
        18,
        "behaviours drawn, honest included: {}",
        behaviours.len()
    );
    assert!(faults.contains(&std::mem::discriminant(&FaultKind::PowerLoss)));
    assert!(faults.contains(&std::mem::discriminant(&FaultKind::RegisterPeer { node: 0 })));
    assert_eq!(faults.len(), 8, "fault kinds drawn: {}", faults.len());
    for (what, count) in [
        ("long faults", long),
        ("clocks behind", skewed_back),
        ("membership changes", membership),
        ("conflicting pairs", conflicts),
        ("slow links", links),
    ] {
        assert!(count > 100, "{what}: {count} of 3,000");
    }
    assert!(
        SimConfig::random(5, 4, 1)
            .behaviours
            .iter()
            .filter(|b| **b != Behaviour::Honest)
            .count()
            == 1
    );
}

#[test]
fn seeds_pass_with_real_signatures_too() {
    for seed in 0..12 {
        let mut config = SimConfig::random(seed, 4, 1);
        config.mock_signatures = false;
        let report = run(seed, &config);
        assert!(report.ok(), "seed {seed}: {:?}", report.violations);
    }
}
