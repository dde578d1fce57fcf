//! Each node's resident memory over the run, sampled from `/proc/<pid>/status`: the peak, and,
//! for runs of at least [`FLAT_RUN_S_MIN`] of load, whether it stays flat after warm-up (the
//! mean of the second half within 10% of the first half's). A node restarted or wiped in the
//! run is a new process that fills its queues, caches and tables again: its first
//! [`WARM_UP_S`] are its own warm-up and are left out of the halves, like the run's.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Check;

/// Seconds between samples.
pub const SAMPLE_EVERY_S: f64 = 5.0;
/// Seconds of load before memory is expected to level off (queues, caches and tables filling).
pub const WARM_UP_S: f64 = 60.0;
/// Load shorter than this gets no flatness check: the halves would be too short to compare.
pub const FLAT_RUN_S_MIN: f64 = 240.0;
/// How much the second half's mean may exceed the first's.
const GROWTH_MAX: f64 = 0.10;

/// One node's memory over the run, in MiB.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub peak_mib: f64,
    /// Mean over the first and the second half of the load after warm-up (None when a half has
    /// no samples, say the node was down).
    pub first_half_mib: Option<f64>,
    pub second_half_mib: Option<f64>,
    /// Every sample: (seconds since the load started, MiB, process id), for plots and for
    /// telling a process that grows from one that was replaced.
    pub samples: Vec<(f64, f64, u32)>,
}

/// Samples per node: (seconds since the load started, resident KiB, process id).
#[derive(Debug, Default)]
pub struct Samples {
    by_node: BTreeMap<String, Vec<(f64, u64, u32)>>,
    last_s: Option<f64>,
}

impl Samples {
    /// Whether a sample is due at `at_s`.
    pub fn due(&self, at_s: f64) -> bool {
        self.last_s.is_none_or(|last| at_s - last >= SAMPLE_EVERY_S)
    }

    /// Records the resident memory of each (name, pid).
    pub fn sample(&mut self, at_s: f64, processes: impl Iterator<Item = (String, u32)>) {
        self.last_s = Some(at_s);
        for (name, pid) in processes {
            if let Some(kib) = resident_kib(pid) {
                self.by_node.entry(name).or_default().push((at_s, kib, pid));
            }
        }
    }

    /// Each node's report, and the flatness check when the load ran long enough.
    pub fn report(&self, load_s: f64) -> (BTreeMap<String, MemoryReport>, Option<Check>) {
        let mid = WARM_UP_S + (load_s - WARM_UP_S) / 2.0;
        let mean = |samples: &[(f64, u64, u32)], from: f64, to: f64| {
            // When each process was first seen: a later one is a restart.
            let mut started: BTreeMap<u32, f64> = BTreeMap::new();
            for (at, _, pid) in samples {
                started.entry(*pid).or_insert(*at);
            }
            let first_pid = samples.first().map(|(_, _, pid)| *pid);
            let window: Vec<u64> = samples
                .iter()
                .filter(|(at, _, pid)| {
                    let warmed = Some(*pid) == first_pid || *at - started[pid] >= WARM_UP_S;
                    *at >= from && *at < to && warmed
                })
                .map(|(_, kib, _)| *kib)
                .collect();
            (!window.is_empty()).then(|| window.iter().sum::<u64>() as f64 / window.len() as f64 / 1024.0)
        };
        let reports: BTreeMap<String, MemoryReport> = self
            .by_node
            .iter()
            .map(|(name, samples)| {
                let peak = samples.iter().map(|(_, kib, _)| *kib).max().unwrap_or(0) as f64 / 1024.0;
                let report = MemoryReport {
                    peak_mib: peak,
                    first_half_mib: mean(samples, WARM_UP_S, mid),
                    second_half_mib: mean(samples, mid, load_s),
                    samples: samples
                        .iter()
                        .map(|(at, kib, pid)| (*at, *kib as f64 / 1024.0, *pid))
                        .collect(),
                };
                (name.clone(), report)
            })
            .collect();
        if load_s < FLAT_RUN_S_MIN {
            return (reports, None);
        }
        let mut grown = Vec::new();
        let mut details = Vec::new();
        for (name, report) in &reports {
            if let (Some(first), Some(second)) = (report.first_half_mib, report.second_half_mib) {
                details.push(format!("{name} {first:.0} -> {second:.0}"));
                if second > first * (1.0 + GROWTH_MAX) {
                    grown.push(name.clone());
                }
            }
        }
        let check = Check {
            name: "resident memory flat after warm-up (second half within 10% of the first; a restarted process's first 60 s left out)",
            ok: grown.is_empty() && !details.is_empty(),
            detail: format!(
                "mean MiB over {WARM_UP_S:.0}-{mid:.0} s -> {mid:.0}-{load_s:.0} s: {}{}",
                details.join(", "),
                if grown.is_empty() {
                    String::new()
                } else {
                    format!("; grew: {}", grown.join(", "))
                }
            ),
        };
        (reports, Some(check))
    }
}

/// `VmRSS` of a process, in KiB (Linux); None elsewhere or once it is gone.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_beyond_a_tenth_fails_and_short_runs_are_not_judged() {
        let mut samples = Samples::default();
        for step in 0..60 {
            let at = step as f64 * 5.0;
            samples
                .by_node
                .entry("flat".into())
                .or_default()
                .push((at, 1_000_000, 1));
            samples
                .by_node
                .entry("growing".into())
                .or_default()
                .push((at, 1_000_000 + 10_000 * step, 2));
            // Restarted at 200 s: its new process starts low and fills up for 60 s, then is
            // as large as before. Its warm-up is not growth.
            let (kib, pid) = match at {
                at if at < 200.0 => (1_000_000, 3),
                at if at < 260.0 => (200_000 + 10_000 * (step - 40), 4),
                _ => (1_000_000, 4),
            };
            samples
                .by_node
                .entry("restarted".into())
                .or_default()
                .push((at, kib, pid));
        }
        let (reports, check) = samples.report(300.0);
        let check = check.expect("a 300 s run is judged");
        assert!(!check.ok, "{}", check.detail);
        assert!(check.detail.contains("grew: growing"), "{}", check.detail);
        let restarted = &reports["restarted"];
        assert_eq!(
            (restarted.first_half_mib, restarted.second_half_mib),
            (Some(1_000_000.0 / 1024.0), Some(1_000_000.0 / 1024.0)),
            "the restarted process's warm-up is left out"
        );
        assert!(reports["flat"].peak_mib > 976.0);
        assert!(samples.report(120.0).1.is_none());
        assert!(resident_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
