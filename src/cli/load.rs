//! `kasane load`: signed transfers between the genesis test accounts at an open-loop rate.
//!
//! Transactions are generated on a clock, not in answer to replies: batches go out every
//! `--batch-ms` whatever the nodes do, so a slow cluster shows up as latency and queue-full
//! answers rather than as a politely slower client. A follower reads every new block from the
//! first node and records when each transaction appeared. At the end it waits for every accepted
//! transaction, then checks that each one committed exactly once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use kasane_model::transaction::ChainId;
use kasane_model::Hash;
use serde::Serialize;

use super::http::{ApiClient, Submitted};
use crate::node::runtime::now_ms;
use crate::testnet::{transfer, Manifest, DEFAULT_TEST_ACCOUNTS};

/// Requests in flight before the generator counts batches as not sent (it never blocks). Each
/// node gets an equal share, so a node that stopped answering does not hold back the others: its
/// batches go to the next node with room.
const IN_FLIGHT_MAX: usize = 256;
/// How long a node that failed a request gets no batches.
const NODE_REST_MS: u64 = 1_000;

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// API base URLs, comma-separated; batches go round-robin. The first one is followed.
    #[arg(long, value_delimiter = ',', required_unless_present = "dir")]
    pub node: Vec<String>,
    /// A cluster directory: its nodes' URLs and account count.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// API base URLs to read committed blocks from, in order of preference (default: the
    /// first --node). The follower moves to the next one when one stops answering.
    #[arg(long, value_delimiter = ',')]
    pub follow: Vec<String>,
    /// Transactions per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Test accounts to send between (as many as genesis funded).
    #[arg(long)]
    pub accounts: Option<usize>,
    /// Milliseconds between batches.
    #[arg(long, default_value_t = 20)]
    pub batch_ms: u64,
    /// How long to wait after sending for the last transactions to commit.
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
    /// Nonce offset, so two load runs against one chain never sign the same payload.
    #[arg(long)]
    pub seed: Option<u32>,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub nodes: Vec<String>,
    pub rate: u64,
    pub duration_secs: u64,
    pub submitted: u64,
    pub accepted: u64,
    /// Refused at admission (with the reasons seen first).
    pub rejected: u64,
    pub rejection_reasons: Vec<String>,
    /// Answered 503 (queue full).
    pub queue_full: u64,
    /// Generated but not sent: too many requests in flight, or the request failed.
    pub not_sent: u64,
    pub request_errors: Vec<String>,
    /// Accepted and committed in exactly one block.
    pub committed: u64,
    /// Accepted and in a block, but rejected there (or committed at another height).
    pub rejected_in_block: u64,
    /// Accepted, in a block, outcome unknown to the followed node.
    pub outcome_unknown: u64,
    /// Accepted and seen in more than one block.
    pub duplicates: u64,
    /// Accepted and never seen in a block before the wait ended.
    pub missing: u64,
    pub start_height: u64,
    pub end_height: u64,
    pub blocks: u64,
    pub seconds: f64,
    /// Committed transactions per second, from the first send to the last commit seen.
    pub committed_per_second: f64,
    /// From sending a batch to seeing its transaction in a block (the follower polls every
    /// 25 ms, so figures include up to that much).
    pub latency: Option<LatencyReport>,
    pub ok: bool,
}

#[derive(Default)]
pub(crate) struct Seen {
    /// Transaction hash -> (times seen in blocks, when first seen, outcome known and committed).
    pub(crate) blocks: HashMap<Hash, (u32, Instant, Option<bool>)>,
    pub(crate) height: u64,
    pub(crate) blocks_read: u64,
}

#[derive(Default)]
struct Sent {
    /// Accepted transaction hash -> when its batch was sent.
    accepted: HashMap<Hash, Instant>,
    rejection_reasons: Vec<String>,
    request_errors: Vec<String>,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    queue_full: AtomicU64,
    not_sent: AtomicU64,
}

fn node_urls(args: &LoadArgs) -> anyhow::Result<(Vec<String>, usize)> {
    let manifest = args.dir.as_ref().map(|dir| Manifest::load(dir)).transpose()?;
    let urls = if args.node.is_empty() {
        manifest.as_ref().map(Manifest::api_urls).unwrap_or_default()
    } else {
        args.node.clone()
    };
    if urls.is_empty() {
        bail!("no node to send to: give --node URL[,URL...] or --dir DIR");
    }
    let accounts = args
        .accounts
        .or(manifest.map(|manifest| manifest.accounts))
        .unwrap_or(DEFAULT_TEST_ACCOUNTS);
    if accounts < 2 {
        bail!("--accounts must be at least 2");
    }
    Ok((urls, accounts))
}

/// Accepted transactions classified against the blocks a follower saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// In exactly one block, and committed there.
    pub(crate) committed: u64,
    pub(crate) rejected_in_block: u64,
    /// In one block, outcome unknown to the followed node.
    pub(crate) unknown: u64,
    /// In more than one block.
    pub(crate) duplicates: u64,
    /// In no block.
    pub(crate) missing: u64,
    /// When the last committed one was seen.
    pub(crate) last_commit: Option<Instant>,
}

impl Seen {
    /// How many of `accepted` no block seen so far holds.
    pub(crate) fn missing<'a>(&self, accepted: impl Iterator<Item = &'a Hash>) -> usize {
        accepted.filter(|hash| !self.blocks.contains_key(*hash)).count()
    }

    /// Classifies accepted transactions (hash -> when sent); `on_commit(sent, seen)` is called
    /// for each one committed exactly once.
    pub(crate) fn tally(
        &self,
        accepted: &HashMap<Hash, Instant>,
        mut on_commit: impl FnMut(Instant, Instant),
    ) -> Tally {
        let mut tally = Tally::default();
        for (hash, sent) in accepted {
            match self.blocks.get(hash) {
                None => tally.missing += 1,
                Some((count, _, _)) if *count > 1 => tally.duplicates += 1,
                Some((_, _, None)) => tally.unknown += 1,
                Some((_, _, Some(false))) => tally.rejected_in_block += 1,
                Some((_, when, Some(true))) => {
                    tally.committed += 1;
                    tally.last_commit = tally.last_commit.max(Some(*when));
                    on_commit(*sent, *when);
                }
            }
        }
        tally
    }
}

/// Follows the chain, recording every transaction of every new block. It reads from the first
/// of `clients` that answers, and moves to the next when one stops answering. A block whose
/// outcomes the node does not know (it replayed the block from its store at start) is read
/// again from the others.
pub(crate) async fn follow(clients: Vec<ApiClient>, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let mut current = 0usize;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let next = seen.lock().map(|seen| seen.height + 1).unwrap_or(u64::MAX);
        let height = match clients[current].status().await {
            Ok(status) => status["height"].as_u64().unwrap_or(0),
            Err(_) => {
                current = (current + 1) % clients.len();
                0
            }
        };
        for at in next..=height {
            let Some(block) = read_block(&clients, current, at).await else {
                break;
            };
            let now = Instant::now();
            let Ok(mut seen) = seen.lock() else {
                return;
            };
            let outcomes = block["outcomes"].as_array().cloned().unwrap_or_default();
            for (index, hash) in block["tx_hashes"].as_array().into_iter().flatten().enumerate() {
                let Some(hash) = hash.as_str().and_then(|text| Hash::from_hex(text).ok()) else {
                    continue;
                };
                let outcome = outcomes
                    .get(index)
                    .and_then(|outcome| outcome.as_str())
                    .map(|outcome| outcome == "committed");
                let entry = seen.blocks.entry(hash).or_insert((0, now, outcome));
                entry.0 += 1;
            }
            seen.height = at;
            seen.blocks_read += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Block `height` from `clients[first]`, or from the others when that one does not have it or
/// does not know every outcome in it; the first answer when none knows them all.
async fn read_block(clients: &[ApiClient], first: usize, height: u64) -> Option<serde_json::Value> {
    let mut fallback = None;
    for offset in 0..clients.len() {
        let client = &clients[(first + offset) % clients.len()];
        let Ok(block) = client.get_json(&format!("/v1/blocks/{height}")).await else {
            continue;
        };
        let transactions = block["tx_hashes"].as_array().map_or(0, Vec::len);
        let known = block["outcomes"].as_array().map_or(0, |outcomes| {
            outcomes.iter().filter(|outcome| outcome.is_string()).count()
        });
        if known == transactions {
            return Some(block);
        }
        fallback.get_or_insert(block);
    }
    fallback
}

pub async fn load(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let (urls, accounts) = node_urls(args)?;
    let clients: Vec<ApiClient> = urls
        .iter()
        .map(|url| ApiClient::new(url))
        .collect::<anyhow::Result<_>>()?;
    let status = clients[0].status().await.context("reading the first node's status")?;
    let chain: ChainId = status["chain"]
        .as_str()
        .context("status has no chain")?
        .parse()
        .map_err(|error| anyhow::anyhow!("chain id: {error}"))?;
    let start_height = status["height"].as_u64().unwrap_or(0);

    let seen = Arc::new(Mutex::new(Seen {
        height: start_height,
        ..Seen::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let followed = if args.follow.is_empty() {
        vec![clients[0].clone()]
    } else {
        args.follow
            .iter()
            .map(|url| ApiClient::new(url))
            .collect::<anyhow::Result<_>>()?
    };
    let follower = tokio::spawn(follow(followed, seen.clone(), stop.clone()));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let counters = Arc::new(Counters::default());
    let in_flight: Vec<Arc<AtomicU64>> = clients.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let per_node_in_flight = (IN_FLIGHT_MAX / clients.len()).max(8);
    let resting_until: Vec<Arc<AtomicU64>> = clients.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();

    // Nonces: a random base per run unless given, so separate runs never repeat a payload.
    let nonce_base = args.seed.unwrap_or_else(|| {
        let mut bytes = [0u8; 4];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        u32::from_le_bytes(bytes)
    });
    let started = Instant::now();
    let total = args.rate.saturating_mul(args.duration);
    let mut generated = 0u64;
    let mut next_client = 0usize;
    let mut last_progress = Instant::now();
    let interval = Duration::from_millis(args.batch_ms.max(1));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while generated < total {
        ticker.tick().await;
        let due = ((started.elapsed().as_secs_f64() * args.rate as f64) as u64).min(total);
        if due <= generated {
            continue;
        }
        let count = due - generated;
        let first = generated;
        generated = due;
        // The next node with room that has not failed a request in the last second.
        let now = started.elapsed().as_millis() as u64;
        let with_room = (0..clients.len())
            .map(|offset| (next_client + offset) % clients.len())
            .find(|&index| {
                (in_flight[index].load(Ordering::Relaxed) as usize) < per_node_in_flight
                    && resting_until[index].load(Ordering::Relaxed) <= now
            });
        let Some(target) = with_room else {
            counters.not_sent.fetch_add(count, Ordering::Relaxed);
            continue;
        };
        next_client = target + 1;
        let created_at_ms = now_ms();
        let chain = chain.clone();
        let transactions = tokio::task::spawn_blocking(move || {
            (first..first + count)
                .map(|index| {
                    let from = (index % accounts as u64) as usize;
                    let to = (from + 1) % accounts;
                    transfer(
                        &chain,
                        from,
                        to,
                        1,
                        nonce_base.wrapping_add(index as u32),
                        created_at_ms,
                    )
                })
                .collect::<Vec<_>>()
        })
        .await
        .context("signing transfers")?;
        let client = clients[target].clone();
        let (sent, task_counters, task_in_flight) = (sent.clone(), counters.clone(), in_flight[target].clone());
        let resting = resting_until[target].clone();
        task_in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let (counters, in_flight) = (task_counters, task_in_flight);
            let hashes: Vec<Hash> = transactions
                .iter()
                .map(|transaction| transaction.hashes().transaction)
                .collect();
            let at = Instant::now();
            counters.submitted.fetch_add(hashes.len() as u64, Ordering::Relaxed);
            let result = client.submit(transactions).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let Ok(mut sent) = sent.lock() else {
                return;
            };
            match result {
                Ok(Submitted::Answered(response)) => {
                    for (hash, result) in hashes.iter().zip(&response.results) {
                        if result.accepted {
                            counters.accepted.fetch_add(1, Ordering::Relaxed);
                            sent.accepted.insert(*hash, at);
                        } else {
                            counters.rejected.fetch_add(1, Ordering::Relaxed);
                            if sent.rejection_reasons.len() < 5 {
                                sent.rejection_reasons.push(result.error.clone().unwrap_or_default());
                            }
                        }
                    }
                }
                Ok(Submitted::QueueFull) => {
                    counters.queue_full.fetch_add(hashes.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    // A node that failed a request (down, restarting) gets none for a second.
                    let until = started.elapsed().as_millis() as u64 + NODE_REST_MS;
                    resting.fetch_max(until, Ordering::Relaxed);
                    counters.not_sent.fetch_add(hashes.len() as u64, Ordering::Relaxed);
                    if sent.request_errors.len() < 5 {
                        sent.request_errors.push(format!("{error:#}"));
                    }
                }
            }
        });
        if !args.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let height = seen.lock().map(|seen| seen.height).unwrap_or(0);
            eprintln!(
                "load: {:>4.0}s generated {generated} accepted {} rejected {} queue-full {} height {height}",
                started.elapsed().as_secs_f64(),
                counters.accepted.load(Ordering::Relaxed),
                counters.rejected.load(Ordering::Relaxed),
                counters.queue_full.load(Ordering::Relaxed),
            );
        }
    }
    // Let the last requests finish, then wait for every accepted transaction to show up.
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while in_flight.iter().any(|count| count.load(Ordering::Relaxed) > 0) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wait_deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    let mut last_progress = Instant::now();
    loop {
        let (missing, height) = {
            let sent = sent.lock().map_err(|_| anyhow::anyhow!("load state poisoned"))?;
            let seen = seen.lock().map_err(|_| anyhow::anyhow!("load state poisoned"))?;
            let missing = seen.missing(sent.accepted.keys());
            (missing, seen.height)
        };
        if missing == 0 || Instant::now() > wait_deadline {
            break;
        }
        if !args.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!("load: waiting for {missing} transactions to commit (height {height})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One more pass of the follower so nothing committed at the very end is missed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = follower.await;

    let sent = sent.lock().map_err(|_| anyhow::anyhow!("load state poisoned"))?;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("load state poisoned"))?;
    let mut histogram = Histogram::<u64>::new(3).context("histogram")?;
    let tally = seen.tally(&sent.accepted, |at, when| {
        let _ = histogram.record(when.saturating_duration_since(at).as_micros().max(1) as u64);
    });
    let Tally {
        committed,
        rejected_in_block,
        unknown,
        duplicates,
        missing,
        ..
    } = tally;
    let last_commit = tally.last_commit.unwrap_or(started);
    let latency = (!histogram.is_empty()).then(|| LatencyReport {
        p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p90_ms: histogram.value_at_quantile(0.9) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: histogram.max() as f64 / 1000.0,
    });
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let span = last_commit.saturating_duration_since(started).as_secs_f64();
    Ok(LoadReport {
        nodes: urls,
        rate: args.rate,
        duration_secs: args.duration,
        submitted: counters.submitted.load(Ordering::Relaxed),
        accepted,
        rejected: counters.rejected.load(Ordering::Relaxed),
        rejection_reasons: sent.rejection_reasons.clone(),
        queue_full: counters.queue_full.load(Ordering::Relaxed),
        not_sent: counters.not_sent.load(Ordering::Relaxed),
        request_errors: sent.request_errors.clone(),
        committed,
        rejected_in_block,
        outcome_unknown: unknown,
        duplicates,
        missing,
        start_height,
        end_height: seen.height,
        blocks: seen.blocks_read,
        seconds: started.elapsed().as_secs_f64(),
        committed_per_second: if span > 0.0 { committed as f64 / span } else { 0.0 },
        latency,
        ok: accepted > 0 && committed == accepted,
    })
}

pub fn print_report(report: &LoadReport) {
    println!(
        "load: submitted {} accepted {} rejected {} queue-full {} not-sent {}",
        report.submitted, report.accepted, report.rejected, report.queue_full, report.not_sent
    );
    println!(
        "load: committed {} (exactly once) rejected-in-block {} unknown {} duplicates {} missing {}",
        report.committed, report.rejected_in_block, report.outcome_unknown, report.duplicates, report.missing
    );
    println!(
        "load: heights {}..{} ({} blocks), {:.0} committed tx/s over the run",
        report.start_height, report.end_height, report.blocks, report.committed_per_second
    );
    if let Some(latency) = &report.latency {
        println!(
            "load: latency submit->seen committed p50 {:.0} ms p90 {:.0} ms p99 {:.0} ms max {:.0} ms",
            latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms
        );
    }
    for reason in &report.rejection_reasons {
        println!("load: a rejection: {reason}");
    }
    for error in &report.request_errors {
        println!("load: a request error: {error}");
    }
    println!("load: {}", if report.ok { "ok" } else { "FAILED" });
}

pub fn run_load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let runtime = super::http::runtime()?;
    let report = runtime.block_on(load(&args))?;
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
