//! `kasane bench --capacity`: finds what the cluster sustains on this machine now, then runs
//! the three loads issue 16 judges throughput by, each beside the ceiling measured in its own
//! run (docs/BENCHMARKS.md, "Capacity and its targets").
//!
//! 1. **Search.** Probes (`--probe-secs`, `--duration` by default) bisect between 0 and the
//!    same-run ceiling, which no cluster can pass. A probe *keeps up* when it commits what it
//!    was offered: at least 95% of the offered rate in the steady window, at least 99% of what
//!    was submitted accepted, at most 1% of the load left unsent by the generator, and every
//!    accepted transaction committed exactly once with the heads agreeing. The capacity is the
//!    highest rate that kept up.
//! 2. **Runs**, each on a fresh cluster: 0.8x the capacity for `--duration` (p99 at most 1 s),
//!    1.05x for `--duration` (committed at least 75% of that run's ceiling) and 2x for half of
//!    `--duration` (at least 95% of the capacity committed, the rest refused).
//!
//! Every run must be correct (nothing lost, heads agree) or the command fails. The three
//! targets are printed as met or not met; they are goals for the code, not for the machine, so
//! a target not met does not change the exit code.

use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Serialize;

use super::bench::{ceiling_now, run_once, BenchArgs, BenchReport};

/// Share of the offered rate a probe must commit, in its steady window, to keep up.
const KEPT_UP_STEADY: f64 = 0.95;
/// Share of the submitted transactions a probe must have accepted to keep up.
const KEPT_UP_ACCEPTED: f64 = 0.99;
/// Probe rates are rounded to this many tx/s.
const RATE_STEP: u64 = 250;

/// What decides whether a run kept up with its load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    pub offered_tps: u64,
    pub steady_tps: f64,
    pub total: u64,
    pub submitted: u64,
    pub accepted: u64,
    pub not_sent: u64,
    /// Every accepted transaction committed exactly once and the heads agree.
    pub correct: bool,
}

impl Outcome {
    pub fn of(report: &BenchReport) -> Outcome {
        Outcome {
            offered_tps: report.offered_tps,
            steady_tps: report.steady_tps,
            total: report.offered_tps * report.duration_s,
            submitted: report.submitted,
            accepted: report.accepted,
            not_sent: report.not_sent,
            correct: report.ok,
        }
    }

    /// Whether the cluster committed what it was offered.
    pub fn kept_up(&self) -> bool {
        self.correct
            && self.steady_tps >= KEPT_UP_STEADY * self.offered_tps as f64
            && self.accepted as f64 >= KEPT_UP_ACCEPTED * self.submitted as f64
            && self.not_sent * 100 <= self.total
    }
}

/// Bisection over offered rates: `low` kept up (0 before any probe did), `high` did not (the
/// ceiling before any probe failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Search {
    pub low: u64,
    pub high: u64,
}

impl Search {
    pub fn new(ceiling_tps: u64) -> Search {
        Search {
            low: 0,
            high: ceiling_tps,
        }
    }

    /// The next rate to probe, or None when the interval is narrower than a step.
    pub fn next(&self) -> Option<u64> {
        let middle = (self.low + self.high) / 2 / RATE_STEP * RATE_STEP;
        (middle > self.low && middle < self.high).then_some(middle)
    }

    pub fn record(&mut self, rate: u64, kept_up: bool) {
        if kept_up {
            self.low = self.low.max(rate);
        } else {
            self.high = self.high.min(rate);
        }
    }
}

/// One of the three judged runs.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub name: &'static str,
    /// Offered rate over the capacity.
    pub factor: f64,
    pub report: BenchReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub wanted: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    /// The ceiling the search started from (timed before the first probe).
    pub search_ceiling_tps: f64,
    pub probes: Vec<Outcome>,
    pub capacity_tps: u64,
    /// The most any probe committed in its steady window, kept up or not.
    pub best_steady_tps: f64,
    pub runs: Vec<Run>,
    pub targets: Vec<Target>,
    /// Every run correct: nothing lost, heads agree.
    pub correct: bool,
}

fn quiet_run(args: &BenchArgs, rate: u64, duration: u64) -> BenchArgs {
    BenchArgs {
        rate,
        duration,
        quiet: true,
        sweep: false,
        capacity: false,
        dir: None,
        json: None,
        svg: None,
        ..args.clone()
    }
}

fn summary(report: &BenchReport) -> String {
    let (p50, p99) = report
        .latency_ms
        .as_ref()
        .map_or((f64::NAN, f64::NAN), |latency| (latency.p50, latency.p99));
    let ceiling = report.ceiling_fraction.map_or("no ceiling".to_string(), |fraction| {
        format!(
            "{:.1}% of its ceiling {:.0}",
            100.0 * fraction,
            report.ceiling_tps.unwrap_or(0.0)
        )
    });
    format!(
        "committed {:.0} tps (steady {:.0}), {ceiling}, p50 {p50:.0} ms p99 {p99:.0} ms, accepted {} of {} submitted, not sent {}, correct {}",
        report.committed_tps, report.steady_tps, report.accepted, report.submitted, report.not_sent, report.ok
    )
}

/// Judges the three runs against issue 16's targets.
pub fn targets(capacity: u64, runs: &[Run]) -> Vec<Target> {
    let find = |name: &str| runs.iter().find(|run| run.name == name).map(|run| &run.report);
    let mut targets = Vec::new();
    if let Some(report) = find("0.8x") {
        let p99 = report.latency_ms.as_ref().map(|latency| latency.p99);
        targets.push(Target {
            name: "0.8x: p99 at most 1 s",
            wanted: "p99 <= 1000 ms".to_string(),
            measured: p99.map_or("no latency".to_string(), |p99| format!("p99 {p99:.0} ms")),
            met: p99.is_some_and(|p99| p99 <= 1000.0),
        });
    }
    if let Some(report) = find("1.05x") {
        targets.push(Target {
            name: "1.05x: committed at least 75% of the same-run ceiling",
            wanted: "ceiling fraction >= 0.75".to_string(),
            measured: report.ceiling_fraction.map_or("no ceiling".to_string(), |fraction| {
                format!(
                    "{:.0} of {:.0} tps: {:.3}",
                    report.committed_tps,
                    report.ceiling_tps.unwrap_or(0.0),
                    fraction
                )
            }),
            met: report.ceiling_fraction.is_some_and(|fraction| fraction >= 0.75),
        });
    }
    if let Some(report) = find("2x") {
        let share = report.steady_tps / capacity.max(1) as f64;
        targets.push(Target {
            name: "2x: at least 95% of the capacity committed, the rest refused",
            wanted: format!("steady >= {:.0} tps", 0.95 * capacity as f64),
            measured: format!("steady {:.0} tps: {:.3} of the capacity", report.steady_tps, share),
            met: share >= 0.95 && report.ok,
        });
    }
    targets
}

fn search(args: &BenchArgs, ceiling_tps: f64) -> anyhow::Result<(Search, Vec<Outcome>)> {
    let mut search = Search::new(ceiling_tps as u64);
    let mut probes = Vec::new();
    let seconds = args.probe_secs.unwrap_or(args.duration);
    for probe in 1..=args.probes {
        let Some(rate) = search.next() else { break };
        eprintln!(
            "capacity: probe {probe} of {}: {rate} tx/s for {seconds} s (kept up so far: {}, not: {})",
            args.probes, search.low, search.high
        );
        let report = run_once(&quiet_run(args, rate, seconds))?;
        let outcome = Outcome::of(&report);
        eprintln!(
            "capacity:   {}: {}",
            if outcome.kept_up() {
                "kept up"
            } else {
                "did not keep up"
            },
            summary(&report)
        );
        if !report.ok {
            bail!(
                "probe at {rate} tx/s lost transactions or the heads disagreed: {}",
                summary(&report)
            );
        }
        search.record(rate, outcome.kept_up());
        probes.push(outcome);
    }
    Ok((search, probes))
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.probes == 0 || args.probe_secs == Some(0) {
        bail!("--probes and --probe-secs must be positive");
    }
    let ceiling = ceiling_now(args)?;
    eprintln!(
        "capacity: ceiling {:.0} tx/s now ({:.2} us per signature, {} cores, {} verifiers); searching below it",
        ceiling.tps, ceiling.us_per_signature, ceiling.cores, ceiling.verifiers
    );
    let (search, probes) = search(args, ceiling.tps)?;
    if search.low == 0 {
        bail!("no probe kept up; the slowest was {} tx/s", search.high);
    }
    let capacity = search.low;
    eprintln!(
        "capacity: {capacity} tx/s (the next probe up, {} tx/s, did not keep up)",
        search.high
    );
    let mut runs = Vec::new();
    for (name, factor, duration) in [
        ("0.8x", 0.8, args.duration),
        ("1.05x", 1.05, args.duration),
        ("2x", 2.0, (args.duration / 2).max(1)),
    ] {
        let rate = (capacity as f64 * factor).round() as u64;
        eprintln!("capacity: {name}: {rate} tx/s for {duration} s");
        let report = run_once(&quiet_run(args, rate, duration)).with_context(|| format!("the {name} run"))?;
        eprintln!("capacity:   {}", summary(&report));
        runs.push(Run { name, factor, report });
    }
    let report = CapacityReport {
        search_ceiling_tps: ceiling.tps,
        best_steady_tps: probes.iter().map(|probe| probe.steady_tps).fold(0.0, f64::max),
        probes,
        capacity_tps: capacity,
        targets: targets(capacity, &runs),
        correct: runs.iter().all(|run| run.report.ok),
        runs,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.correct {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn print_report(report: &CapacityReport) {
    println!(
        "capacity: {} tx/s sustained ({} probes below a ceiling of {:.0}; best steady {:.0})",
        report.capacity_tps,
        report.probes.len(),
        report.search_ceiling_tps,
        report.best_steady_tps
    );
    println!("| run | offered tps | committed tps | steady tps | of capacity | same-run ceiling | of ceiling | p50 ms | p99 ms | refused | correct |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for run in &report.runs {
        let bench = &run.report;
        let (p50, p99) = bench
            .latency_ms
            .as_ref()
            .map_or((f64::NAN, f64::NAN), |latency| (latency.p50, latency.p99));
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | {:.0} | {:.3} | {p50:.0} | {p99:.0} | {} | {} |",
            run.name,
            bench.offered_tps,
            bench.committed_tps,
            bench.steady_tps,
            bench.steady_tps / report.capacity_tps.max(1) as f64,
            bench.ceiling_tps.unwrap_or(f64::NAN),
            bench.ceiling_fraction.unwrap_or(f64::NAN),
            bench.rejected,
            bench.ok
        );
    }
    for target in &report.targets {
        println!(
            "capacity: {}: {} ({}; wanted {})",
            target.name,
            if target.met { "met" } else { "NOT met" },
            target.measured,
            target.wanted
        );
    }
    println!(
        "capacity: {}",
        if report.correct {
            "ok"
        } else {
            "FAILED: a run lost transactions or disagreed"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(offered_tps: u64, steady_tps: f64, accepted: u64) -> Outcome {
        Outcome {
            offered_tps,
            steady_tps,
            total: offered_tps * 20,
            submitted: offered_tps * 20,
            accepted,
            not_sent: 0,
            correct: true,
        }
    }

    #[test]
    fn a_probe_keeps_up_only_when_it_commits_what_it_was_offered() {
        assert!(outcome(10_000, 9_800.0, 200_000).kept_up());
        assert!(!outcome(10_000, 9_000.0, 200_000).kept_up(), "steady 90% of offered");
        assert!(!outcome(10_000, 9_800.0, 190_000).kept_up(), "5% refused");
        let unsent = Outcome {
            not_sent: 4_000,
            ..outcome(10_000, 9_800.0, 196_000)
        };
        assert!(!unsent.kept_up(), "the generator could not send 2%");
        let wrong = Outcome {
            correct: false,
            ..outcome(10_000, 9_800.0, 200_000)
        };
        assert!(!wrong.kept_up(), "a lost transaction");
    }

    #[test]
    fn the_search_bisects_between_what_kept_up_and_what_did_not() {
        let mut search = Search::new(40_000);
        // The cluster sustains 17,000 tx/s: the probes close in on it from both sides.
        let mut probed = Vec::new();
        while let Some(rate) = search.next() {
            probed.push(rate);
            search.record(rate, rate <= 17_000);
        }
        assert_eq!(&probed[..3], &[20_000, 10_000, 15_000]);
        assert!(search.low <= 17_000 && search.high > 17_000, "{search:?}");
        assert!(search.high - search.low <= 2 * RATE_STEP, "{search:?}");
        assert!(probed.windows(2).all(|pair| pair[0] != pair[1]));
    }
}
