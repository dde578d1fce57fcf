//! Each node's resident memory over the run, sampled from `/proc/<pid>/status`: the peak, and,
//! for runs of at least [`FLAT_RUN_S_MIN`] of load, whether it stays flat after warm-up (the
//! mean of the second half within 10% of the first half's). A node restarted or wiped in the
//! run is a new process that fills its queues, caches and tables again: its first
//! [`WARM_UP_S`] are its own warm-up and are left out of the halves, like the run's. So is the
//! background audit of a strict start (the node's status says `auditing`): it replays the chain
//! into a second world state, a cost as large as the state and gone when the audit ends, not
//! growth. The peak counts every sample.
//!
//! A node whose second half belongs to a later process than its first is judged twice: that
//! process must not grow over its own judged life (its halves, when it lived at least
//! [`PROCESS_S_MIN`] after warm-up), and its second-half mean must be within 10% of the
//! cluster's first-half mean. Its own first half was another process: soak runs 8 to 23 put a
//! restarted or wiped process 5-12% above the one it replaced, with its tables (the
//! `kasane_table_bytes` metric) the same size as its peers' and under glibc's allocator and
//! jemalloc alike, so that comparison measured a different process, not growth
//! (docs/TESTNET.md, "Memory of a replaced process").

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
/// A replaced process is judged on its own halves when it lived at least this long after its
/// warm-up (judged samples, audits left out).
pub const PROCESS_S_MIN: f64 = 120.0;

/// One node's memory over the run, in MiB.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub peak_mib: f64,
    /// Mean over the first and the second half of the load after warm-up (None when a half has
    /// no samples, say the node was down).
    pub first_half_mib: Option<f64>,
    pub second_half_mib: Option<f64>,
    /// Every sample: (seconds since the load started, MiB, process id, auditing), for plots and
    /// for telling a process that grows from one that was replaced or was auditing.
    pub samples: Vec<(f64, f64, u32, bool)>,
}

/// One sample of one node.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the load started.
    at: f64,
    kib: u64,
    pid: u32,
    /// The node's background audit was running.
    auditing: bool,
}

/// Samples per node.
#[derive(Debug, Default)]
pub struct Samples {
    by_node: BTreeMap<String, Vec<Sample>>,
    last_s: Option<f64>,
}

impl Samples {
    /// Whether a sample is due at `at_s`.
    pub fn due(&self, at_s: f64) -> bool {
        self.last_s.is_none_or(|last| at_s - last >= SAMPLE_EVERY_S)
    }

    /// Records the resident memory of each (name, pid, auditing).
    pub fn sample(&mut self, at_s: f64, processes: impl Iterator<Item = (String, u32, bool)>) {
        self.last_s = Some(at_s);
        for (name, pid, auditing) in processes {
            if let Some(kib) = resident_kib(pid) {
                self.by_node.entry(name).or_default().push(Sample {
                    at: at_s,
                    kib,
                    pid,
                    auditing,
                });
            }
        }
    }

    /// Each node's report, and the flatness check when the load ran long enough.
    pub fn report(&self, load_s: f64) -> (BTreeMap<String, MemoryReport>, Option<Check>) {
        let mid = WARM_UP_S + (load_s - WARM_UP_S) / 2.0;
        let mean = |samples: &[Sample], from: f64, to: f64| {
            // When each process was first seen: a later one is a restart.
            let mut started: BTreeMap<u32, f64> = BTreeMap::new();
            for sample in samples {
                started.entry(sample.pid).or_insert(sample.at);
            }
            let first_pid = samples.first().map(|sample| sample.pid);
            let window: Vec<u64> = samples
                .iter()
                .filter(|sample| {
                    let warmed = Some(sample.pid) == first_pid || sample.at - started[&sample.pid] >= WARM_UP_S;
                    sample.at >= from && sample.at < to && warmed && !sample.auditing
                })
                .map(|sample| sample.kib)
                .collect();
            (!window.is_empty()).then(|| window.iter().sum::<u64>() as f64 / window.len() as f64 / 1024.0)
        };
        let reports: BTreeMap<String, MemoryReport> = self
            .by_node
            .iter()
            .map(|(name, samples)| {
                let peak = samples.iter().map(|sample| sample.kib).max().unwrap_or(0) as f64 / 1024.0;
                let report = MemoryReport {
                    peak_mib: peak,
                    first_half_mib: mean(samples, WARM_UP_S, mid),
                    second_half_mib: mean(samples, mid, load_s),
                    samples: samples
                        .iter()
                        .map(|sample| (sample.at, sample.kib as f64 / 1024.0, sample.pid, sample.auditing))
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
        let mut audits = Vec::new();
        for (name, samples) in &self.by_node {
            // Each run of consecutive samples of one process taken while it audited.
            let mut windows: Vec<(u32, f64, f64)> = Vec::new();
            let mut open = false;
            for sample in samples {
                if !sample.auditing {
                    open = false;
                    continue;
                }
                match windows.last_mut() {
                    Some((pid, _, to)) if open && *pid == sample.pid => *to = sample.at,
                    _ => windows.push((sample.pid, sample.at, sample.at)),
                }
                open = true;
            }
            audits.extend(
                windows
                    .iter()
                    .map(|(_, from, to)| format!("{name} {from:.0}-{to:.0} s")),
            );
        }
        let firsts: Vec<f64> = reports.values().filter_map(|report| report.first_half_mib).collect();
        let cluster_first = (!firsts.is_empty()).then(|| firsts.iter().sum::<f64>() / firsts.len() as f64);
        for (name, report) in &reports {
            let (Some(first), Some(second)) = (report.first_half_mib, report.second_half_mib) else {
                continue;
            };
            let samples = &self.by_node[name];
            let first_pid = samples.first().map(|sample| sample.pid);
            // The process that began the second half: a node replaced only late in the run
            // is still mostly its first process there, and is judged against itself.
            let second_pid = samples
                .iter()
                .find(|sample| sample.at >= mid && sample.at < load_s)
                .map(|sample| sample.pid);
            match (second_pid, cluster_first) {
                (Some(second_pid), Some(cluster)) if Some(second_pid) != first_pid => {
                    let own = process_halves(samples, second_pid, load_s);
                    let own_text = match own {
                        Some((from, to)) => format!("; its own halves {from:.0} -> {to:.0}"),
                        None => String::new(),
                    };
                    details.push(format!(
                        "{name} {first:.0} -> {second:.0} (replaced: against the cluster's first half {cluster:.0}{own_text})"
                    ));
                    let own_grew = own.is_some_and(|(from, to)| to > from * (1.0 + GROWTH_MAX));
                    if second > cluster * (1.0 + GROWTH_MAX) || own_grew {
                        grown.push(name.clone());
                    }
                }
                _ => {
                    details.push(format!("{name} {first:.0} -> {second:.0}"));
                    if second > first * (1.0 + GROWTH_MAX) {
                        grown.push(name.clone());
                    }
                }
            }
        }
        let check = Check {
            name: "resident memory flat after warm-up (second half within 10% of the first, of the cluster's first for a replaced process, which must not grow itself; a restarted process's first 60 s and a strict start's background audit left out)",
            ok: grown.is_empty() && !details.is_empty(),
            detail: format!(
                "mean MiB over {WARM_UP_S:.0}-{mid:.0} s -> {mid:.0}-{load_s:.0} s: {}{}{}",
                details.join(", "),
                if audits.is_empty() {
                    String::new()
                } else {
                    format!("; auditing (left out): {}", audits.join(", "))
                },
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

/// The means, in MiB, of the first and the second half of one process's judged samples (after
/// its warm-up, before `load_s`, audits left out), when they span at least [`PROCESS_S_MIN`].
fn process_halves(samples: &[Sample], pid: u32, load_s: f64) -> Option<(f64, f64)> {
    let started = samples.iter().find(|sample| sample.pid == pid)?.at;
    let judged: Vec<&Sample> = samples
        .iter()
        .filter(|sample| {
            sample.pid == pid && sample.at - started >= WARM_UP_S && sample.at < load_s && !sample.auditing
        })
        .collect();
    let (from, to) = (judged.first()?.at, judged.last()?.at);
    if to - from < PROCESS_S_MIN {
        return None;
    }
    let mid = from + (to - from) / 2.0;
    let mean =
        |half: Vec<u64>| (!half.is_empty()).then(|| half.iter().sum::<u64>() as f64 / half.len() as f64 / 1024.0);
    let first = mean(
        judged
            .iter()
            .filter(|sample| sample.at < mid)
            .map(|sample| sample.kib)
            .collect(),
    )?;
    let second = mean(
        judged
            .iter()
            .filter(|sample| sample.at >= mid)
            .map(|sample| sample.kib)
            .collect(),
    )?;
    Some((first, second))
}

/// `VmRSS` of a process, in KiB (Linux); None elsewhere or once it is gone.
fn resident_kib(pid: u32) -> Option<u64> {
    kasane_node::allocator::status_kib(&pid.to_string(), "VmRSS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_beyond_a_tenth_fails_and_short_runs_are_not_judged() {
        let mut samples = Samples::default();
        for step in 0..60 {
            let at = step as f64 * 5.0;
            let sample = |kib: u64, pid: u32, auditing: bool| Sample { at, kib, pid, auditing };
            samples
                .by_node
                .entry("flat".into())
                .or_default()
                .push(sample(1_000_000, 1, false));
            samples
                .by_node
                .entry("growing".into())
                .or_default()
                .push(sample(1_000_000 + 10_000 * step, 2, false));
            // Restarted strict at 150 s: 60 s of warm-up, then an audit from 210 to 260 s that
            // holds half as much again; the audit is not growth, and the peak still shows it.
            let (kib, pid, auditing) = match at {
                at if at < 150.0 => (1_000_000, 5, false),
                at if at < 210.0 => (600_000, 6, false),
                at if at < 260.0 => (1_500_000, 6, true),
                at if at < 270.0 => (1_000_000, 6, false),
                // Restarted again at 270 s: audits from its first sample.
                at if at < 280.0 => (1_500_000, 7, true),
                _ => (1_000_000, 7, false),
            };
            samples
                .by_node
                .entry("audited".into())
                .or_default()
                .push(sample(kib, pid, auditing));
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
                .push(sample(kib, pid, false));
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
        assert_eq!(
            (reports["audited"].first_half_mib, reports["audited"].second_half_mib),
            (Some(1_000_000.0 / 1024.0), Some(1_000_000.0 / 1024.0)),
            "the audit is left out"
        );
        assert!(reports["audited"].peak_mib > 1_400_000.0 / 1024.0);
        assert!(
            check
                .detail
                .contains("auditing (left out): audited 210-255 s, audited 270-275 s"),
            "{}",
            check.detail
        );
        assert!(check.detail.ends_with("; grew: growing"), "{}", check.detail);
        assert!(reports["flat"].peak_mib > 976.0);
        assert!(samples.report(120.0).1.is_none());
        assert!(resident_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }

    /// A wiped node's new process that settles 8% above the one it replaced is not growth (it
    /// was judged so before); one 15% above the cluster, or one that grows over its own life,
    /// is.
    #[test]
    fn a_replaced_process_is_judged_by_its_own_life_and_the_cluster() {
        let judge = |replaced: &dyn Fn(f64) -> u64| {
            let mut samples = Samples::default();
            for step in 0..121 {
                let at = step as f64 * 5.0;
                for (name, kib, pid) in [
                    ("steady-a", 1_000_000, 1),
                    ("steady-b", 1_000_000, 2),
                    // Wiped at 270 s, back at 273 s.
                    (
                        "wiped",
                        if at < 270.0 { 1_000_000 } else { replaced(at) },
                        if at < 270.0 { 3 } else { 4 },
                    ),
                ] {
                    samples.by_node.entry(name.into()).or_default().push(Sample {
                        at,
                        kib,
                        pid,
                        auditing: false,
                    });
                }
            }
            samples.report(600.0).1.expect("a 600 s run is judged")
        };
        let settled_higher = judge(&|_| 1_080_000);
        assert!(settled_higher.ok, "{}", settled_higher.detail);
        assert!(
            settled_higher.detail.contains(
                "wiped 977 -> 1055 (replaced: against the cluster's first half 977; its own halves 1055 -> 1055)"
            ),
            "{}",
            settled_higher.detail
        );
        let far_higher = judge(&|_| 1_150_000);
        assert!(
            !far_higher.ok && far_higher.detail.ends_with("grew: wiped"),
            "{}",
            far_higher.detail
        );
        let growing = judge(&|at| 900_000 + (at as u64 - 270) * 1_000);
        assert!(
            !growing.ok && growing.detail.ends_with("grew: wiped"),
            "{}",
            growing.detail
        );
    }
}
