//! `kasane sim`: many seeds of sim-net (random adversaries, or Twins scenarios), one verdict
//! line each, and a summary.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use kasane_sim_net::twins::{twins_config, Enumerator};
use kasane_sim_net::{run, SimConfig, SimReport};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Validators per run (4 to 31).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Byzantine validators per run (at most (nodes - 1) / 3).
    #[arg(long, default_value_t = 1)]
    byzantine: usize,
    /// Seeds to run: `A..B` (B excluded) or one seed. With --twins: scenario numbers.
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Run a scenario file (TOML, docs/SIM.md) instead of random seeds.
    #[arg(long)]
    scenario: Option<std::path::PathBuf>,
    /// Twins scenarios instead of random adversaries: for --nodes 4 the enumerated scenarios
    /// (one twin; partitions by round; docs/SIM.md), for other sizes sampled ones with f twins.
    #[arg(long)]
    twins: bool,
    /// A calm cluster instead of random faults: 5 ms links, no loss, no faults, honest
    /// replicas; prints commit latency and messages per block.
    #[arg(long)]
    calm: bool,
    /// Transactions per run (with --calm).
    #[arg(long, default_value_t = 20)]
    transactions: usize,
    /// Run with locking switched off (test-only: shows the checkers catch the fork).
    #[arg(long)]
    no_locking: bool,
    /// Sign and verify with real ed25519 instead of the simulator's mock signatures.
    #[arg(long)]
    real_signatures: bool,
    /// Runs at once, on as many threads (each run stays deterministic).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
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
    println!("{}", verdict(&report, &config));
    let met = scenario.met_by(&report);
    println!(
        "expectation {}: {}",
        scenario.expect,
        if met { "met" } else { "NOT met" }
    );
    Ok(if met { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// What the summary adds up over all runs.
#[derive(Debug, Default)]
struct Totals {
    runs: u64,
    failures: u64,
    blocks: u64,
    view_changes: u64,
    messages: u64,
    by_kind: BTreeMap<&'static str, u64>,
    latencies: Vec<u64>,
}

impl Totals {
    fn add(&mut self, report: &SimReport) {
        self.runs += 1;
        self.failures += u64::from(!report.ok());
        self.blocks += report.height.saturating_sub(1);
        self.view_changes += report.view_changes;
        self.messages += report.messages;
        for (kind, count) in &report.messages_by_kind {
            *self.by_kind.entry(kind).or_default() += count;
        }
        self.latencies.extend(&report.commit_latencies_ms);
    }
}

impl SimArgs {
    /// The run of `seed`.
    fn config(&self, seed: u64) -> anyhow::Result<SimConfig> {
        let mut config = if self.twins {
            twins_config(self.nodes, seed).with_context(|| {
                format!(
                    "there are {} enumerated Twins scenarios for 4 nodes",
                    Enumerator::four_nodes_one_twin().len()
                )
            })?
        } else if self.calm {
            let mut calm = SimConfig::calm(self.nodes);
            calm.client.transactions = self.transactions;
            calm
        } else {
            SimConfig::random(seed, self.nodes, self.byzantine)
        };
        config.consensus.locking = !self.no_locking;
        config.mock_signatures = !self.real_signatures;
        Ok(config)
    }

    /// The command that replays `seed` alone.
    fn replay(&self, seed: u64) -> String {
        let mut command = if self.twins {
            format!("kasane sim --twins --nodes {} --seeds {seed}", self.nodes)
        } else {
            format!(
                "kasane sim --nodes {} --byzantine {} --seeds {seed}",
                self.nodes, self.byzantine
            )
        };
        for (on, flag) in [
            (self.no_locking, " --no-locking"),
            (self.real_signatures, " --real-signatures"),
            (self.calm, " --calm"),
        ] {
            if on {
                command.push_str(flag);
            }
        }
        command
    }
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
    args.config(seeds.start)?;
    let jobs = args.jobs.clamp(1, 64);
    if args.twins {
        let twins = if args.nodes == 4 { 1 } else { max_faulty };
        println!(
            "kasane sim: twins nodes {} twins {twins} scenarios {}..{} locking {} mock signatures {} jobs {jobs}",
            args.nodes, seeds.start, seeds.end, !args.no_locking, !args.real_signatures
        );
    } else {
        println!(
            "kasane sim: nodes {} byzantine {} seeds {}..{} locking {} mock signatures {} jobs {jobs}",
            args.nodes, args.byzantine, seeds.start, seeds.end, !args.no_locking, !args.real_signatures
        );
    }
    let started = Instant::now();
    let total = seeds.end - seeds.start;
    let mut totals = Totals::default();
    let (sender, results) = mpsc::sync_channel::<anyhow::Result<(SimReport, SimConfig)>>(1024);
    std::thread::scope(|scope| {
        for job in 0..jobs as u64 {
            let sender = sender.clone();
            let (args, seeds) = (&args, seeds.clone());
            scope.spawn(move || {
                for seed in seeds.filter(|seed| seed % jobs as u64 == job) {
                    let outcome = args.config(seed).map(|config| (run(seed, &config), config));
                    if sender.send(outcome).is_err() {
                        return;
                    }
                }
            });
        }
        drop(sender);
        let mut last_progress = Instant::now();
        for outcome in results {
            let (report, config) = outcome?;
            totals.add(&report);
            if args.json {
                println!("{}", report_json(&report, &config));
            } else if !report.ok() || !args.quiet || args.verbose {
                println!("{}", verdict(&report, &config));
            }
            if !report.ok() {
                println!("  replay: {}", args.replay(report.seed));
            }
            if last_progress.elapsed().as_secs() >= 10 {
                last_progress = Instant::now();
                let rate = totals.runs as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprintln!(
                    "... {} of {total} runs, {} failing, {rate:.0} runs/s",
                    totals.runs, totals.failures
                );
            }
        }
        anyhow::Ok(())
    })?;
    print_summary(&mut totals, started.elapsed().as_secs_f64());
    Ok(if totals.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(totals: &mut Totals, seconds: f64) {
    println!(
        "summary: {} seeds, {} with violations, {} blocks committed, {} view changes, {:.1} s, {:.1} seeds/s",
        totals.runs,
        totals.failures,
        totals.blocks,
        totals.view_changes,
        seconds,
        totals.runs as f64 / seconds.max(1e-9)
    );
    let latencies = &mut totals.latencies;
    latencies.sort_unstable();
    if !latencies.is_empty() {
        let percentile = |p: usize| latencies[(latencies.len() - 1) * p / 100];
        println!(
            "virtual time: commit latency p50 {} ms, p99 {} ms, max {} ms over {} transactions; {:.0} messages per block",
            percentile(50),
            percentile(99),
            latencies[latencies.len() - 1],
            latencies.len(),
            totals.messages as f64 / totals.blocks.max(1) as f64
        );
    }
    if totals.blocks > 0 {
        let per_block: Vec<String> = totals
            .by_kind
            .iter()
            .map(|(kind, count)| format!("{kind} {:.1}", *count as f64 / totals.blocks as f64))
            .collect();
        println!("messages per block by kind: {}", per_block.join(", "));
    }
}

fn verdict(report: &SimReport, config: &SimConfig) -> String {
    let behaviours: Vec<String> = config
        .behaviours
        .iter()
        .enumerate()
        .filter(|(_, behaviour)| **behaviour != kasane_sim_net::Behaviour::Honest)
        .map(|(node, behaviour)| format!("{node}:{}", behaviour.name()))
        .collect();
    let twins = config.twins.as_ref().map_or(String::new(), |twins| {
        let rounds: Vec<String> = twins
            .rounds
            .iter()
            .map(|((height, view, phase), split)| format!("h{height}v{view}{phase:?}{:?}", split.groups()))
            .collect();
        format!(", twins of {:?} rounds [{}]", twins.of, rounds.join(" "))
    });
    let verdict = if report.ok() {
        "ok".to_string()
    } else {
        format!("VIOLATION {:?}", report.violations)
    };
    format!(
        "seed {} {verdict}: height {}, {}/{} tx, {} view changes, {} messages, {} events, end {} ms, latency {:?}..{:?}, faults {}, byzantine [{}]{twins}, digest {}",
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
    )
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
        "twins": config.twins.is_some(),
        "digest": report.digest.to_hex(),
    })
}
