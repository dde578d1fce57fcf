//! `kasane sim`: many seeds of sim-net, one verdict line each, and a summary.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use kasane_sim_net::{run, SimConfig, SimReport};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Validators per run (4 to 31).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Byzantine validators per run (at most (nodes - 1) / 3).
    #[arg(long, default_value_t = 1)]
    byzantine: usize,
    /// Seeds to run: `A..B` (B excluded) or one seed.
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Run a scenario file (TOML, docs/SIM.md) instead of random seeds.
    #[arg(long)]
    scenario: Option<std::path::PathBuf>,
    /// A calm cluster instead of random faults: 5 ms links, no loss, no faults, honest
    /// replicas; prints commit latency and messages per block.
    #[arg(long)]
    calm: bool,
    /// Transactions per run (with --calm).
    #[arg(long, default_value_t = 20)]
    transactions: usize,
    /// Run with locking switched off (test-only: shows the checkers catch the fork).
    #[arg(long, hide = true)]
    no_locking: bool,
    /// Print one JSON object per seed instead of text lines.
    #[arg(long)]
    json: bool,
    /// Print verdict lines only for failing seeds (and the summary).
    #[arg(long)]
    quiet: bool,
    /// Accepted for compatibility: every seed's verdict is printed unless --quiet.
    #[arg(long, hide = true)]
    verbose: bool,
}

fn parse_seeds(text: &str) -> anyhow::Result<std::ops::Range<u64>> {
    match text.split_once("..") {
        Some((start, end)) => {
            let start: u64 = start.parse().context("seed range start")?;
            let end: u64 = end.parse().context("seed range end")?;
            if end <= start {
                bail!("empty seed range {text}");
            }
            Ok(start..end)
        }
        None => {
            let seed: u64 = text.parse().context("seed")?;
            Ok(seed..seed + 1)
        }
    }
}

/// Runs one scenario file and checks its expectation.
fn run_scenario(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let scenario = kasane_sim_net::Scenario::parse(&text)?;
    let config = scenario.config()?;
    println!(
        "kasane sim: scenario {} ({}): nodes {} seed {} locking {} expect {}",
        scenario.name,
        path.display(),
        scenario.nodes,
        scenario.seed,
        scenario.locking,
        scenario.expect
    );
    if !scenario.description.is_empty() {
        println!("{}", scenario.description.trim());
    }
    let report = run(scenario.seed, &config);
    print_verdict(&report, &config);
    let met = scenario.met_by(&report);
    println!(
        "expectation {}: {}",
        scenario.expect,
        if met { "met" } else { "NOT met" }
    );
    Ok(if met { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn run_sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.scenario {
        return run_scenario(path);
    }
    if !(1..=31).contains(&args.nodes) {
        bail!("--nodes must be between 1 and 31");
    }
    let max_faulty = (args.nodes - 1) / 3;
    if args.byzantine > max_faulty {
        bail!(
            "--byzantine {} is more than f = {max_faulty} for {} nodes",
            args.byzantine,
            args.nodes
        );
    }
    let seeds = parse_seeds(&args.seeds)?;
    println!(
        "kasane sim: nodes {} byzantine {} seeds {}..{} locking {}",
        args.nodes, args.byzantine, seeds.start, seeds.end, !args.no_locking
    );
    let started = Instant::now();
    let mut failures = 0u64;
    let mut latencies: Vec<u64> = Vec::new();
    let mut messages = 0u64;
    let mut by_kind: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut blocks = 0u64;
    let mut view_changes = 0u64;
    let total = seeds.end - seeds.start;
    let mut last_progress = Instant::now();
    for seed in seeds.clone() {
        let mut config = if args.calm {
            let mut calm = SimConfig::calm(args.nodes);
            calm.transactions = args.transactions;
            calm
        } else {
            SimConfig::random(seed, args.nodes, args.byzantine)
        };
        config.consensus.locking = !args.no_locking;
        let report = run(seed, &config);
        blocks += report.height.saturating_sub(1);
        view_changes += report.view_changes;
        messages += report.messages;
        for (kind, count) in &report.messages_by_kind {
            *by_kind.entry(kind).or_default() += count;
        }
        latencies.extend(&report.commit_latencies_ms);
        if args.json {
            println!("{}", report_json(&report, &config));
        } else if !report.ok() || !args.quiet || args.verbose {
            print_verdict(&report, &config);
        }
        if !report.ok() {
            failures += 1;
            let locking = if args.no_locking { " --no-locking" } else { "" };
            println!(
                "  replay: kasane sim --nodes {} --byzantine {} --seeds {seed}{locking}",
                args.nodes, args.byzantine
            );
        }
        if last_progress.elapsed().as_secs() >= 5 {
            last_progress = Instant::now();
            eprintln!("... {} of {total} seeds, {failures} failing", seed - seeds.start + 1);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "summary: {total} seeds, {failures} with violations, {blocks} blocks committed, {view_changes} view changes, {:.1} seeds/s",
        total as f64 / seconds.max(1e-9)
    );
    latencies.sort_unstable();
    if !latencies.is_empty() {
        let percentile = |p: usize| latencies[(latencies.len() - 1) * p / 100];
        println!(
            "virtual time: commit latency p50 {} ms, p99 {} ms, max {} ms over {} transactions; {:.0} messages per block",
            percentile(50),
            percentile(99),
            latencies[latencies.len() - 1],
            latencies.len(),
            messages as f64 / blocks.max(1) as f64
        );
    }
    if blocks > 0 {
        let per_block: Vec<String> = by_kind
            .iter()
            .map(|(kind, count)| format!("{kind} {:.1}", *count as f64 / blocks as f64))
            .collect();
        println!("messages per block by kind: {}", per_block.join(", "));
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_verdict(report: &SimReport, config: &SimConfig) {
    let behaviours: Vec<String> = config
        .behaviours
        .iter()
        .enumerate()
        .filter(|(_, behaviour)| **behaviour != kasane_sim_net::Behaviour::Honest)
        .map(|(node, behaviour)| format!("{node}:{}", behaviour.name()))
        .collect();
    let verdict = if report.ok() {
        "ok".to_string()
    } else {
        format!("VIOLATION {:?}", report.violations)
    };
    println!(
        "seed {} {verdict}: height {}, {}/{} tx, {} view changes, {} messages, {} events, end {} ms, latency {:?}..{:?}, faults {}, byzantine [{}], digest {}",
        report.seed,
        report.height,
        report.committed_transactions,
        report.submitted_transactions,
        report.view_changes,
        report.messages,
        report.events,
        report.end_ms,
        config.latency_ms.0,
        config.latency_ms.1,
        config.faults.len(),
        behaviours.join(", "),
        &report.digest.to_hex()[..16],
    );
}

fn report_json(report: &SimReport, config: &SimConfig) -> serde_json::Value {
    serde_json::json!({
        "seed": report.seed,
        "ok": report.ok(),
        "violations": report.violations.iter().map(|v| format!("{} at {} ms: {}", v.invariant, v.at_ms, v.detail)).collect::<Vec<_>>(),
        "height": report.height,
        "committed_transactions": report.committed_transactions,
        "submitted_transactions": report.submitted_transactions,
        "view_changes": report.view_changes,
        "messages": report.messages,
        "events": report.events,
        "end_ms": report.end_ms,
        "faults": config.faults.len(),
        "digest": report.digest.to_hex(),
    })
}
