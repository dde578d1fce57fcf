//! `kasane bench`: throughput and latency of a fresh local cluster, measured from committed
//! blocks.
//!
//! 1. Writes a cluster (genesis with funded test accounts) into a temporary directory.
//! 2. Signs the whole workload before the clock starts, in batches ready to send.
//! 3. Starts the nodes, offers the batches at the target rate (open loop, round-robin over the
//!    nodes), and follows the chain on the first node, noting when each transaction appears.
//! 4. Waits for what was accepted, checks that the nodes agree on the head and that every
//!    accepted transaction committed exactly once, and reports: committed tps (whole run and
//!    steady state), latency percentiles from an HDR histogram, blocks, view changes, per-node
//!    CPU and peak RSS; as text, JSON and an SVG of tps and latency over time.
//!
//! `--sweep` repeats this over a grid of offered rate x block size x block time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use kasane_model::transaction::ChainId;
use kasane_model::{codec, Hash, SignedTransaction};
use serde::Serialize;
use serde_json::{json, Value};

use super::ceiling::{self, Ceiling, CpuPerTransaction};
use super::cluster::{down, up};
use super::genesis::{write_cluster, GenesisArgs, PayloadKind};
use super::http::ApiClient;
use super::load::{follow, Seen};
use kasane_harness::{opaque_transaction, padded_transfer};
use kasane_node::api::{SubmitResponse, TransactionBatch, POSTCARD};
use kasane_node::runtime::now_ms;

/// Requests in flight before batches are counted as not sent (the generator never waits).
const IN_FLIGHT_MAX: usize = 1024;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Validator processes.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Offered transactions per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Seconds of offered load.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// What the load is: `signed` transfers between funded accounts, or `opaque` unsigned
    /// payloads on a chain that takes them, the workload of HotStuff's and Narwhal's
    /// benchmarks: everything but the signature checks and the execution is real (QUIC, fsync,
    /// Kura, replay protection). docs/PROTOCOL.md section 1.2.
    #[arg(long, value_enum, default_value_t = PayloadKind::Signed)]
    pub payload: PayloadKind,
    /// Approximate bytes per transaction; transfers are padded with a metadata write. Default:
    /// plain transfers (about 190 bytes), or 512 with `--payload opaque`.
    #[arg(long)]
    pub tx_size: Option<usize>,
    /// Most transactions in a block. Large blocks amortise each consensus round's fixed costs
    /// (votes, certificates, fsync, the state commitment); docs/BENCHMARKS.md has the sweep.
    #[arg(long, default_value_t = 10_000, value_parser = super::block_txs_max)]
    pub block_txs_max: usize,
    /// How long a leader waits for a full block before proposing what it has. At 20,000
    /// offered, 300 ms fills blocks of about 9,700 against 5,500 at 100 ms, for about 2-5%
    /// more committed throughput and a lower p99; at low rates it costs latency (the sweep).
    #[arg(long, default_value_t = 300)]
    pub block_time_ms: u64,
    /// Base commit timeout. Twice the node default: with blocks of thousands of transactions,
    /// four nodes on two cores can take over a second per round under overload, and a view
    /// change then costs a round for nothing (docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 2_000)]
    pub commit_timeout_ms: u64,
    /// Funded test accounts the transfers move between.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Milliseconds between batches; each batch goes to the next node in turn, so at 20,000
    /// tx/s and 40 ms a node gets a request of 800 transactions every 160 ms. Larger requests
    /// cost the nodes less per transaction (one HTTP request, one signature batch and one gossip
    /// message each); docs/BENCHMARKS.md compares 10 ms.
    #[arg(long, default_value_t = 40)]
    pub batch_ms: u64,
    /// Seconds to wait after the load for accepted transactions to commit.
    #[arg(long, default_value_t = 30)]
    pub wait_secs: u64,
    /// Transactions a node queues before it answers 503 (default: two blocks' worth, about a
    /// second of load at the target rate, so an overloaded cluster refuses the excess at once
    /// instead of queueing seconds of it).
    #[arg(long)]
    pub queue_capacity: Option<usize>,
    /// Kura fsync policy of the nodes.
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Keep the cluster here instead of a temporary directory (it is stopped either way).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Run a grid over offered rate x block size x block time instead of one run.
    #[arg(long)]
    pub sweep: bool,
    #[arg(long, value_delimiter = ',', default_value = "5000,10000,20000,40000")]
    pub sweep_rates: Vec<u64>,
    #[arg(long, value_delimiter = ',', default_value = "1000,5000", value_parser = super::block_txs_max)]
    pub sweep_block_txs: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    pub sweep_block_ms: Vec<u64>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Only measure and print the same-run ceiling (docs/BENCHMARKS.md): the signature check's
    /// cost on this machine now, without starting a cluster. Prints one JSON line.
    #[arg(long)]
    pub ceiling_only: bool,
    /// Find the cluster's capacity with probes as long as the runs, then run at 0.8x, 1.05x and
    /// 2x of it and judge issue 16's targets (`super::capacity`, docs/BENCHMARKS.md).
    /// `--duration` is the length of the probes and of the 0.8x and 1.05x runs; the 2x run lasts
    /// half of it.
    #[arg(long)]
    pub capacity: bool,
    /// Probes of the capacity search (each halves the interval it searches).
    #[arg(long, default_value_t = 5)]
    pub probes: u32,
    /// Seconds of load in each probe (default: `--duration`). Shorter probes find more than
    /// the cluster sustains for longer: 20 s probes found 22,000 tx/s where 60 s runs then
    /// committed 16,600-18,300 (docs/BENCHMARKS.md).
    #[arg(long)]
    pub probe_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeUsage {
    pub name: String,
    /// CPU seconds (user + system) used during the measured run.
    pub cpu_s: f64,
    /// Cores used on average over the run.
    pub cores: f64,
    pub peak_rss_mb: f64,
    /// What the node's admission did with its peers' gossip over the whole run (its
    /// `kasane_gossip_*_total` counters), when its metrics could be read.
    pub gossip: Option<GossipFigures>,
}

/// Transactions a node received as gossip, by what admission did with them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GossipFigures {
    pub admitted: u64,
    pub already_held: u64,
    pub queue_full: u64,
    pub refused: u64,
}

impl GossipFigures {
    /// Reads the counters from a node's Prometheus text; `None` if any is missing.
    pub fn from_metrics(text: &str) -> Option<GossipFigures> {
        let counter = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        Some(GossipFigures {
            admitted: counter("kasane_gossip_admitted_total")?,
            already_held: counter("kasane_gossip_already_held_total")?,
            queue_full: counter("kasane_gossip_queue_full_total")?,
            refused: counter("kasane_gossip_refused_total")?,
        })
    }
}

/// Each node's gossip counters, in `urls` order.
async fn gossip_figures(http: &reqwest::Client, urls: &[String]) -> Vec<Option<GossipFigures>> {
    let mut figures = Vec::with_capacity(urls.len());
    for url in urls {
        let text = match http.get(format!("{url}/metrics")).send().await {
            Ok(response) => response.text().await.ok(),
            Err(_) => None,
        };
        figures.push(text.as_deref().and_then(GossipFigures::from_metrics));
    }
    figures
}

#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t: u64,
    pub committed: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub nodes: usize,
    /// `--payload`: "signed" or "opaque" in the JSON.
    pub payload: PayloadKind,
    pub offered_tps: u64,
    pub duration_s: u64,
    pub tx_bytes: usize,
    pub block_txs_max: usize,
    pub block_time_ms: u64,
    pub fsync: String,
    pub machine: Value,
    /// Transactions sent to a node.
    pub submitted: u64,
    pub accepted: u64,
    /// Refused at admission (queue full included), each with a reason.
    pub rejected: u64,
    pub rejection_reasons: HashMap<String, u64>,
    /// Generated but not sent: too many requests in flight, or the request failed.
    pub not_sent: u64,
    /// Accepted and committed exactly once.
    pub committed: u64,
    pub rejected_in_block: u64,
    /// Accepted and in a block, outcome unknown to the followed node.
    pub outcome_unknown: u64,
    pub duplicates: u64,
    pub missing: u64,
    /// Committed transactions per second from the first send to the last commit.
    pub committed_tps: f64,
    /// Committed per second over the steady window (from 20% of the load to its end).
    pub steady_tps: f64,
    /// Submission to commit, milliseconds.
    pub latency_ms: Option<Latencies>,
    pub blocks: u64,
    pub blocks_per_s: f64,
    pub tx_per_block: f64,
    pub view_changes: u64,
    pub heads_agree: bool,
    pub per_node: Vec<NodeUsage>,
    /// The same-run ceiling (`super::ceiling`): None when it could not be measured.
    pub ceiling: Option<Ceiling>,
    pub ceiling_tps: Option<f64>,
    /// `committed_tps / ceiling_tps`.
    pub ceiling_fraction: Option<f64>,
    /// The nodes' CPU per committed transaction, split into signature checks and the rest.
    pub cpu_per_transaction: Option<CpuPerTransaction>,
    pub timeline: Vec<Second>,
    pub ok: bool,
}

/// One batch, ready to send.
struct Batch {
    body: Bytes,
    hashes: Vec<Hash>,
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    json!({
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        "cpu": cpu,
        "os": std::env::consts::OS,
    })
}

/// The transactions of a run (`--payload`).
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// Transfers between `accounts` funded accounts, padded with `padding` bytes of metadata.
    Transfers { accounts: usize, padding: usize },
    /// Unsigned opaque payloads of `bytes` bytes.
    Opaque { bytes: usize },
}

/// Bytes a transaction carries besides its padding or opaque bytes: about 190 for a transfer.
const ENCODING_OVERHEAD_GUESS: usize = 40;

impl Workload {
    /// The workload whose transactions encode to about `tx_size` bytes.
    fn sized(chain: &ChainId, payload: PayloadKind, accounts: usize, tx_size: Option<usize>) -> Workload {
        match payload {
            PayloadKind::Signed => {
                let plain = Workload::Transfers { accounts, padding: 0 }.encoded_len(chain);
                let padding = tx_size.map_or(0, |size| size.saturating_sub(plain + ENCODING_OVERHEAD_GUESS));
                Workload::Transfers { accounts, padding }
            }
            PayloadKind::Opaque => {
                let bare = Workload::Opaque { bytes: 0 }.encoded_len(chain);
                Workload::Opaque {
                    bytes: tx_size.unwrap_or(OPAQUE_TX_BYTES).saturating_sub(bare),
                }
            }
        }
    }

    fn transaction(&self, chain: &ChainId, index: usize, created_at_ms: u64) -> SignedTransaction {
        match *self {
            Workload::Transfers { accounts, padding } => {
                let sender = index % accounts;
                padded_transfer(
                    chain,
                    sender,
                    (sender + 1) % accounts,
                    1,
                    index as u32,
                    created_at_ms,
                    padding,
                )
            }
            Workload::Opaque { bytes } => opaque_transaction(chain, index as u64, created_at_ms, bytes),
        }
    }

    fn encoded_len(&self, chain: &ChainId) -> usize {
        codec::encode(&self.transaction(chain, 0, now_ms())).len()
    }
}

/// Default encoded size of an opaque transaction: the 512 bytes of asonnino/hotstuff's and
/// Narwhal's benchmarks.
const OPAQUE_TX_BYTES: usize = 512;

/// Makes (signs, for transfers) `total` transactions on every core and packs them into batches
/// of `per_batch`.
fn presign(chain: &ChainId, total: u64, per_batch: usize, workload: Workload, quiet: bool) -> Vec<Batch> {
    let created_at_ms = now_ms();
    let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let batches = (total as usize).div_ceil(per_batch);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let mut out: Vec<Option<Batch>> = (0..batches).map(|_| None).collect();
    std::thread::scope(|scope| {
        let chunks: Vec<&mut [Option<Batch>]> = out.chunks_mut(batches.div_ceil(threads).max(1)).collect();
        let mut first = 0usize;
        for chunk in chunks {
            let start = first;
            first += chunk.len();
            let done = &done;
            scope.spawn(move || {
                for (offset, slot) in chunk.iter_mut().enumerate() {
                    let batch = start + offset;
                    let from = batch * per_batch;
                    let to = ((batch + 1) * per_batch).min(total as usize);
                    let transactions: Vec<SignedTransaction> = (from..to)
                        .map(|index| workload.transaction(chain, index, created_at_ms))
                        .collect();
                    let hashes = transactions
                        .iter()
                        .map(|transaction| transaction.hashes().transaction)
                        .collect();
                    let body = Bytes::from(codec::encode(&TransactionBatch(transactions)));
                    *slot = Some(Batch { body, hashes });
                    done.fetch_add((to - from) as u64, Ordering::Relaxed);
                }
            });
        }
        if !quiet {
            let mut last = Instant::now();
            while done.load(Ordering::Relaxed) < total {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= Duration::from_secs(2) {
                    last = Instant::now();
                    eprintln!("bench: made {} of {total}", done.load(Ordering::Relaxed));
                }
            }
        }
    });
    if !quiet {
        eprintln!(
            "bench: made {total} transactions in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    out.into_iter().flatten().collect()
}

/// (utime + stime in seconds, peak RSS in MiB) of a process, from /proc.
fn process_usage(pid: i32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let peak_kib = kasane_node::allocator::status_kib(&pid.to_string(), "VmHWM")? as f64;
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
    Some((ticks / 100.0, peak_kib / 1024.0))
}

fn node_pids(dir: &Path, names: &[String]) -> Vec<i32> {
    names
        .iter()
        .map(|name| {
            std::fs::read_to_string(dir.join(name).join("node.pid"))
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

#[derive(Default)]
struct Admission {
    accepted: HashMap<Hash, Instant>,
    reasons: HashMap<String, u64>,
}

/// One measured run on a fresh cluster.
pub fn run_once(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let temporary = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| temporary.path().join("cluster"));
    let genesis = GenesisArgs {
        validators: args.nodes,
        observers: 0,
        out: dir.clone(),
        hosts: Vec::new(),
        base_port: None,
        accounts: args.accounts,
        chain: kasane_harness::DEFAULT_CHAIN.to_string(),
        block_time_ms: Some(args.block_time_ms),
        commit_timeout_ms: Some(args.commit_timeout_ms),
        block_txs_max: Some(args.block_txs_max),
        fsync: args.fsync.clone(),
        queue_capacity: args.queue_capacity.unwrap_or(2 * args.block_txs_max),
        force: true,
        plasma_l2: false,
        payload: args.payload,
    };
    let manifest = write_cluster(&genesis)?;
    let chain = manifest.chain_id()?;
    let per_batch = ((args.rate * args.batch_ms.max(1)) / 1000).max(1) as usize;
    let total = args.rate * args.duration;
    let workload = Workload::sized(&chain, args.payload, args.accounts, args.tx_size);
    let tx_bytes = workload.encoded_len(&chain);
    if !args.quiet {
        eprintln!(
            "bench: {} nodes, {} tx/s for {} s ({total} transactions of {tx_bytes} bytes, batches of {per_batch}), blocks of up to {} every {} ms",
            args.nodes, args.rate, args.duration, args.block_txs_max, args.block_time_ms
        );
    }
    let batches = presign(&chain, total, per_batch, workload, args.quiet);
    let ceiling = match workload {
        Workload::Transfers { .. } => measure_ceiling(&batches, args.nodes),
        Workload::Opaque { .. } => None,
    };
    if !args.quiet {
        match (&ceiling, workload) {
            (_, Workload::Opaque { .. }) => {
                eprintln!("bench: no signature ceiling: opaque payloads carry no signature")
            }
            (Some(ceiling), _) => eprintln!(
                "bench: ceiling {:.0} tx/s: batch verify {:.2} us per signature on one core, {} cores, {} verifiers",
                ceiling.tps, ceiling.us_per_signature, ceiling.cores, ceiling.verifiers
            ),
            (None, _) => eprintln!("bench: no ceiling: the signature check could not be timed"),
        }
    }
    let manifest = match up(&dir, Duration::from_secs(60)) {
        Ok(manifest) => manifest,
        Err(error) => {
            let _ = down(&dir, Duration::from_secs(5));
            return Err(error);
        }
    };
    let names: Vec<String> = manifest.nodes.iter().map(|node| node.name.clone()).collect();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(measure(args, &dir, &manifest.api_urls(), &names, batches, tx_bytes));
    let _ = down(&dir, Duration::from_secs(10));
    result.map(|mut report| {
        let cpu_s: f64 = report.per_node.iter().map(|node| node.cpu_s).sum();
        if let Workload::Opaque { .. } = workload {
            report.cpu_per_transaction = CpuPerTransaction::unsigned(cpu_s, report.committed);
        }
        if let Some(ceiling) = ceiling {
            report.ceiling_tps = Some(ceiling.tps);
            report.ceiling_fraction = Some(ceiling.fraction(report.committed_tps));
            report.cpu_per_transaction = ceiling.split(cpu_s, report.committed);
            report.ceiling = Some(ceiling);
        }
        report
    })
}

/// The same-run ceiling without a cluster: the signature check timed now on a few thousand
/// freshly signed bench transfers.
pub fn ceiling_now(args: &BenchArgs) -> anyhow::Result<Ceiling> {
    let chain: ChainId = kasane_harness::DEFAULT_CHAIN.parse().context("the bench's chain id")?;
    let total = 4 * ceiling::BATCH_TRANSACTIONS as u64;
    let workload = Workload::Transfers {
        accounts: args.accounts,
        padding: 0,
    };
    let batches = presign(&chain, total, ceiling::BATCH_TRANSACTIONS, workload, true);
    measure_ceiling(&batches, args.nodes).context("timing the signature check")
}

/// Times the signature check on the first few thousand of the run's own transactions
/// (`super::ceiling`), before the cluster starts, so nothing else runs meanwhile.
fn measure_ceiling(batches: &[Batch], verifiers: usize) -> Option<Ceiling> {
    let mut sample: Vec<SignedTransaction> = Vec::new();
    for batch in batches {
        if sample.len() >= 4 * ceiling::BATCH_TRANSACTIONS {
            break;
        }
        sample.extend(codec::decode::<TransactionBatch>(&batch.body).ok()?.0);
    }
    ceiling::measure(&sample, verifiers, ceiling::MEASURE_FOR)
}

async fn measure(
    args: &BenchArgs,
    dir: &Path,
    urls: &[String],
    names: &[String],
    batches: Vec<Batch>,
    tx_bytes: usize,
) -> anyhow::Result<BenchReport> {
    let clients: Vec<ApiClient> = urls
        .iter()
        .map(|url| ApiClient::new(url))
        .collect::<anyhow::Result<_>>()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .context("HTTP client")?;
    let start_height = clients[0].status().await?["height"].as_u64().unwrap_or(0);
    // The maps of committed and accepted transactions are sized for the whole workload at once
    // (`Seen::starting_at`).
    let workload: usize = batches.iter().map(|batch| batch.hashes.len()).sum();
    let seen = Arc::new(Mutex::new(Seen::starting_at(start_height, workload)));
    let stop = Arc::new(AtomicBool::new(false));
    let follower = tokio::spawn(follow(vec![clients[0].clone()], seen.clone(), stop.clone()));
    let pids = node_pids(dir, names);
    let usage_before: Vec<Option<(f64, f64)>> = pids.iter().map(|pid| process_usage(*pid)).collect();

    let admission = Arc::new(Mutex::new(Admission {
        accepted: HashMap::with_capacity(workload),
        ..Admission::default()
    }));
    let in_flight = Arc::new(AtomicU64::new(0));
    let submitted = Arc::new(AtomicU64::new(0));
    let not_sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_millis(args.batch_ms.max(1));
    let mut last_progress = Instant::now();
    let mut next_node = 0usize;
    for (index, batch) in batches.into_iter().enumerate() {
        let due = started + interval * index as u32;
        tokio::time::sleep_until(due.into()).await;
        if in_flight.load(Ordering::Relaxed) as usize >= IN_FLIGHT_MAX {
            not_sent.fetch_add(batch.hashes.len() as u64, Ordering::Relaxed);
            continue;
        }
        let url = format!("{}/v1/transactions", urls[next_node % urls.len()]);
        next_node += 1;
        let (http, task_admission, task_in_flight, submitted, not_sent) = (
            http.clone(),
            admission.clone(),
            in_flight.clone(),
            submitted.clone(),
            not_sent.clone(),
        );
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let (admission, in_flight) = (task_admission, task_in_flight);
            let sent_at = Instant::now();
            let count = batch.hashes.len() as u64;
            let response = http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, POSTCARD)
                .body(batch.body)
                .send()
                .await;
            let outcome = match response {
                Ok(response) => {
                    let status = response.status();
                    match response.text().await {
                        Ok(text) => Ok((status, text)),
                        Err(error) => Err(error.to_string()),
                    }
                }
                Err(error) => Err(error.to_string()),
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let Ok(mut admission) = admission.lock() else {
                return;
            };
            match outcome {
                Ok((status, text)) if status.is_success() => {
                    submitted.fetch_add(count, Ordering::Relaxed);
                    match serde_json::from_str::<SubmitResponse>(&text) {
                        Ok(response) => {
                            for (hash, result) in batch.hashes.iter().zip(&response.results) {
                                if result.accepted {
                                    admission.accepted.insert(*hash, sent_at);
                                } else {
                                    *admission
                                        .reasons
                                        .entry(result.error.clone().unwrap_or_default())
                                        .or_default() += 1;
                                }
                            }
                        }
                        Err(error) => {
                            *admission
                                .reasons
                                .entry(format!("unreadable answer: {error}"))
                                .or_default() += count;
                        }
                    }
                }
                Ok((status, text)) => {
                    submitted.fetch_add(count, Ordering::Relaxed);
                    let reason = if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        "queue full (503)".to_string()
                    } else {
                        format!("{status}: {}", text.chars().take(120).collect::<String>())
                    };
                    *admission.reasons.entry(reason).or_default() += count;
                }
                Err(_) => {
                    not_sent.fetch_add(count, Ordering::Relaxed);
                }
            }
        });
        if !args.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let (height, committed) = seen
                .lock()
                .map(|seen| (seen.height, seen.blocks.len()))
                .unwrap_or_default();
            let accepted = admission.lock().map(|admission| admission.accepted.len()).unwrap_or(0);
            eprintln!(
                "bench: {:>3.0}s offered {} accepted {accepted} in blocks {committed} height {height} in flight {}",
                started.elapsed().as_secs_f64(),
                (index + 1) * batch_len_hint(args),
                in_flight.load(Ordering::Relaxed)
            );
        }
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let drain = Instant::now() + Duration::from_secs(30);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    loop {
        let missing = {
            let admission = admission.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            seen.missing(admission.accepted.keys())
        };
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        if !args.quiet {
            eprintln!("bench: waiting for {missing} accepted transactions to commit");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let usage_after: Vec<Option<(f64, f64)>> = pids.iter().map(|pid| process_usage(*pid)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = follower.await;

    // Heads and view changes, every node.
    let mut heads = Vec::new();
    let mut view_changes;
    let agree_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        heads.clear();
        view_changes = 0;
        for client in &clients {
            let status = client.status().await.unwrap_or(Value::Null);
            view_changes += status["view_changes"].as_u64().unwrap_or(0);
            heads.push((status["height"].clone(), status["head_hash"].clone()));
        }
        if heads.iter().all(|head| *head == heads[0]) || Instant::now() > agree_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let heads_agree = heads.iter().all(|head| *head == heads[0] && !head.1.is_null());
    let gossip = gossip_figures(&http, urls).await;

    let admission = admission.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("histogram")?;
    let seconds = args.duration as usize + args.wait_secs as usize + 2;
    let mut per_second: Vec<(u64, Histogram<u64>)> = (0..seconds)
        .map(|_| Histogram::new_with_bounds(1, 3_600_000_000, 2).map(|histogram| (0, histogram)))
        .collect::<Result<_, _>>()
        .context("histogram")?;
    let tally = seen.tally(&admission.accepted, |sent_at, when| {
        let micros = when.saturating_duration_since(sent_at).as_micros().max(1) as u64;
        let _ = histogram.record(micros);
        let second = when.saturating_duration_since(started).as_secs() as usize;
        if let Some((count, bucket)) = per_second.get_mut(second) {
            *count += 1;
            let _ = bucket.record(micros);
        }
    });
    let (committed, rejected_in_block, duplicates, missing) = (
        tally.committed,
        tally.rejected_in_block,
        tally.duplicates,
        tally.missing,
    );
    let last_commit = tally.last_commit.unwrap_or(started);
    let span = last_commit.saturating_duration_since(started).as_secs_f64();
    let steady_from = (args.duration as usize / 5).max(1);
    let steady_to = (args.duration as usize).max(steady_from + 1);
    let steady: u64 = per_second
        .get(steady_from..steady_to.min(per_second.len()))
        .map(|window| window.iter().map(|(count, _)| count).sum())
        .unwrap_or(0);
    let steady_tps = steady as f64 / (steady_to - steady_from) as f64;
    let last_second = per_second.iter().rposition(|(count, _)| *count > 0).unwrap_or(0);
    let timeline = per_second[..=last_second]
        .iter()
        .enumerate()
        .map(|(second, (count, bucket))| Second {
            t: second as u64,
            committed: *count,
            p50_ms: (!bucket.is_empty()).then(|| bucket.value_at_quantile(0.5) as f64 / 1000.0),
            p99_ms: (!bucket.is_empty()).then(|| bucket.value_at_quantile(0.99) as f64 / 1000.0),
        })
        .collect();
    let per_node = names
        .iter()
        .zip(usage_before.iter().zip(&usage_after))
        .zip(gossip)
        .map(|((name, (before, after)), gossip)| {
            let (cpu_before, _) = before.unwrap_or((0.0, 0.0));
            let (cpu_after, peak) = after.unwrap_or((cpu_before, 0.0));
            NodeUsage {
                name: name.clone(),
                cpu_s: cpu_after - cpu_before,
                cores: (cpu_after - cpu_before) / wall.max(1e-9),
                peak_rss_mb: peak,
                gossip,
            }
        })
        .collect();
    let blocks = seen.blocks_read;
    let rejected: u64 = admission.reasons.values().sum();
    let accepted = admission.accepted.len() as u64;
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let _ = load_seconds;
    Ok(BenchReport {
        nodes: args.nodes,
        payload: args.payload,
        offered_tps: args.rate,
        duration_s: args.duration,
        tx_bytes,
        block_txs_max: args.block_txs_max,
        block_time_ms: args.block_time_ms,
        fsync: args.fsync.clone(),
        machine: machine(),
        submitted: submitted.load(Ordering::Relaxed),
        accepted,
        rejected,
        rejection_reasons: admission.reasons.clone(),
        not_sent: not_sent.load(Ordering::Relaxed),
        committed,
        rejected_in_block,
        outcome_unknown: tally.unknown,
        duplicates,
        missing,
        committed_tps: if span > 0.0 { committed as f64 / span } else { 0.0 },
        steady_tps,
        latency_ms: (!histogram.is_empty()).then(|| Latencies {
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            max: histogram.max() as f64 / 1000.0,
        }),
        blocks,
        blocks_per_s: if span > 0.0 { blocks as f64 / span } else { 0.0 },
        tx_per_block: if blocks > 0 {
            committed as f64 / blocks as f64
        } else {
            0.0
        },
        view_changes,
        heads_agree,
        per_node,
        ceiling: None,
        ceiling_tps: None,
        ceiling_fraction: None,
        cpu_per_transaction: None,
        timeline,
        ok: heads_agree && accepted > 0 && committed == accepted,
    })
}

fn batch_len_hint(args: &BenchArgs) -> usize {
    ((args.rate * args.batch_ms.max(1)) / 1000).max(1) as usize
}

pub fn print_report(report: &BenchReport) {
    println!(
        "bench: {} nodes, offered {} tx/s for {} s, {}-byte {} transactions, blocks of up to {} every {} ms, fsync {}",
        report.nodes,
        report.offered_tps,
        report.duration_s,
        report.tx_bytes,
        report.payload.as_str(),
        report.block_txs_max,
        report.block_time_ms,
        report.fsync
    );
    println!(
        "bench: submitted {} accepted {} rejected {} not-sent {}",
        report.submitted, report.accepted, report.rejected, report.not_sent
    );
    for (reason, count) in &report.rejection_reasons {
        println!("bench:   rejected {count}: {reason}");
    }
    println!(
        "bench: committed {} exactly once; rejected in block {}, outcome unknown {}, duplicates {}, missing {}",
        report.committed, report.rejected_in_block, report.outcome_unknown, report.duplicates, report.missing
    );
    println!(
        "bench: committed tps {:.0} (whole run), {:.0} (steady, from 20% of the load)",
        report.committed_tps, report.steady_tps
    );
    if let Some(latency) = &report.latency_ms {
        println!(
            "bench: latency submit->commit p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms max {:.0} ms",
            latency.p50, latency.p95, latency.p99, latency.max
        );
    }
    match (&report.ceiling, report.ceiling_fraction) {
        (Some(ceiling), Some(fraction)) => println!(
            "bench: ceiling {:.0} tx/s (same run: {:.2} us per signature, {} cores, {} verifiers): committed {:.1}% of it",
            ceiling.tps,
            ceiling.us_per_signature,
            ceiling.cores,
            ceiling.verifiers,
            100.0 * fraction
        ),
        _ if report.payload == PayloadKind::Opaque => {
            println!("bench: no signature ceiling: opaque payloads carry no signature")
        }
        _ => println!("bench: no ceiling measured"),
    }
    if let Some(cpu) = &report.cpu_per_transaction {
        println!(
            "bench: node cpu per committed transaction {:.1} us: signature checks {:.1} us, everything else {:.1} us",
            cpu.total_us, cpu.signatures_us, cpu.other_us
        );
    }
    println!(
        "bench: {} blocks, {:.1} blocks/s, {:.0} tx/block, {} view changes, heads agree: {}",
        report.blocks, report.blocks_per_s, report.tx_per_block, report.view_changes, report.heads_agree
    );
    for node in &report.per_node {
        let gossip = node.gossip.map_or(String::new(), |gossip| {
            format!(
                ", gossip received: {} queued, {} already held, {} refused (queue full), {} refused (other)",
                gossip.admitted, gossip.already_held, gossip.queue_full, gossip.refused
            )
        });
        println!(
            "bench:   {} cpu {:.1} s ({:.2} cores) peak rss {:.0} MiB{gossip}",
            node.name, node.cpu_s, node.cores, node.peak_rss_mb
        );
    }
    println!("bench: {}", if report.ok { "ok" } else { "FAILED" });
}

/// An SVG polyline of (x, y) points scaled into a box.
fn polyline(points: &[(f64, f64)], box_: (f64, f64, f64, f64), max: (f64, f64), style: &str) -> String {
    let (left, top, width, height) = box_;
    let path: Vec<String> = points
        .iter()
        .map(|(x, y)| {
            format!(
                "{:.1},{:.1}",
                left + x / max.0.max(1e-9) * width,
                top + height - y / max.1.max(1e-9) * height
            )
        })
        .collect();
    format!("<polyline fill=\"none\" {style} points=\"{}\"/>", path.join(" "))
}

/// One line of a chart.
struct Series {
    name: String,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

fn series(name: impl Into<String>, color: &'static str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        color,
        points,
    }
}

fn panel(title: &str, box_: (f64, f64, f64, f64), x_label: &str, max: (f64, f64), lines: &[Series]) -> String {
    let (left, top, width, height) = box_;
    let mut svg = format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{width}\" height=\"{height}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{left}\" y=\"{}\" font-size=\"14\">{title}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{:.0}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">0</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{:.0} {x_label}</text>",
        top - 8.0,
        left - 4.0,
        top + 10.0,
        max.1,
        left - 4.0,
        top + height,
        left + width,
        top + height + 14.0,
        max.0,
    );
    for (index, Series { name, color, points }) in lines.iter().enumerate() {
        svg.push_str(&polyline(
            points,
            box_,
            max,
            &format!("stroke=\"{color}\" stroke-width=\"1.5\""),
        ));
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{color}\">{name}</text>",
            left + 8.0 + 150.0 * index as f64,
            top + 14.0
        ));
    }
    svg
}

fn svg_document(body: &str, height: f64) -> String {
    format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"{height}\" font-family=\"sans-serif\">{body}</svg>\n")
}

pub fn report_svg(report: &BenchReport) -> String {
    let seconds = report.timeline.len().max(1) as f64;
    let tps: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|second| (second.t as f64, second.committed as f64))
        .collect();
    let offered: Vec<(f64, f64)> = vec![
        (0.0, report.offered_tps as f64),
        (report.duration_s as f64, report.offered_tps as f64),
    ];
    let max_tps = tps
        .iter()
        .map(|point| point.1)
        .fold(report.offered_tps as f64, f64::max)
        * 1.1;
    let p50: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .filter_map(|second| second.p50_ms.map(|value| (second.t as f64, value)))
        .collect();
    let p99: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .filter_map(|second| second.p99_ms.map(|value| (second.t as f64, value)))
        .collect();
    let max_ms = p99.iter().map(|point| point.1).fold(1.0, f64::max) * 1.1;
    let mut body = panel(
        &format!(
            "committed tps per second ({} nodes, offered {} tx/s)",
            report.nodes, report.offered_tps
        ),
        (70.0, 40.0, 800.0, 200.0),
        "s",
        (seconds, max_tps),
        &[
            series("committed", "#1f77b4", tps),
            series("offered", "#999999", offered),
        ],
    );
    body.push_str(&panel(
        "latency submit->commit per second (ms)",
        (70.0, 300.0, 800.0, 200.0),
        "s",
        (seconds, max_ms),
        &[series("p50", "#2ca02c", p50), series("p99", "#d62728", p99)],
    ));
    svg_document(&body, 540.0)
}

fn sweep_svg(reports: &[BenchReport]) -> String {
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    let mut groups: Vec<((usize, u64), Vec<&BenchReport>)> = Vec::new();
    for report in reports {
        let key = (report.block_txs_max, report.block_time_ms);
        match groups.iter_mut().find(|(group, _)| *group == key) {
            Some((_, members)) => members.push(report),
            None => groups.push((key, vec![report])),
        }
    }
    let max_offered = reports
        .iter()
        .map(|report| report.offered_tps as f64)
        .fold(1.0, f64::max)
        * 1.05;
    let max_tps = reports
        .iter()
        .map(|report| report.steady_tps)
        .fold(max_offered, f64::max)
        * 1.05;
    let max_ms = reports
        .iter()
        .filter_map(|report| report.latency_ms.as_ref().map(|latency| latency.p99))
        .fold(1.0, f64::max)
        * 1.1;
    let lines = |value: &dyn Fn(&BenchReport) -> f64| -> Vec<Series> {
        groups
            .iter()
            .enumerate()
            .map(|(index, ((txs, ms), members))| {
                series(
                    format!("{txs} tx/{ms} ms"),
                    colors[index % colors.len()],
                    members
                        .iter()
                        .map(|report| (report.offered_tps as f64, value(report)))
                        .collect(),
                )
            })
            .collect()
    };
    let throughput = lines(&|report| report.steady_tps);
    let latency = lines(&|report| report.latency_ms.as_ref().map_or(0.0, |latency| latency.p99));
    let mut body = panel(
        "steady committed tps vs offered tps (block size / block time)",
        (70.0, 40.0, 800.0, 200.0),
        "offered tx/s",
        (max_offered, max_tps),
        &throughput,
    );
    body.push_str(&panel(
        "p99 latency (ms) vs offered tps",
        (70.0, 300.0, 800.0, 200.0),
        "offered tx/s",
        (max_offered, max_ms),
        &latency,
    ));
    svg_document(&body, 540.0)
}

pub fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 || args.rate == 0 || args.duration == 0 {
        bail!("--nodes, --rate and --duration must be positive");
    }
    if args.accounts < 2 {
        bail!("--accounts must be at least 2");
    }
    if args.ceiling_only {
        println!("{}", serde_json::to_string(&ceiling_now(&args)?)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.capacity {
        if args.payload == PayloadKind::Opaque {
            bail!("--capacity searches below the signature ceiling, which opaque payloads do not have: give --rate, or --sweep");
        }
        return super::capacity::run(&args);
    }
    if !args.sweep {
        let report = run_once(&args)?;
        print_report(&report);
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &args.svg {
            std::fs::write(path, report_svg(&report)).with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let mut reports = Vec::new();
    for &block_txs_max in &args.sweep_block_txs {
        for &block_time_ms in &args.sweep_block_ms {
            for &rate in &args.sweep_rates {
                let run = BenchArgs {
                    rate,
                    block_txs_max,
                    block_time_ms,
                    sweep: false,
                    capacity: false,
                    quiet: true,
                    dir: None,
                    ..args.clone()
                };
                eprintln!("bench: sweep: {rate} tx/s, blocks of {block_txs_max}, every {block_time_ms} ms");
                let report = run_once(&run)?;
                eprintln!(
                    "bench: sweep:   steady {:.0} tps, p99 {:.0} ms, rejected {}, ok {}",
                    report.steady_tps,
                    report.latency_ms.as_ref().map_or(0.0, |latency| latency.p99),
                    report.rejected,
                    report.ok
                );
                reports.push(report);
            }
        }
    }
    println!("| block txs | block ms | offered tps | steady tps | whole-run tps | p50 ms | p99 ms | rejected | view changes | ok |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for report in &reports {
        let (p50, p99) = report
            .latency_ms
            .as_ref()
            .map_or((0.0, 0.0), |latency| (latency.p50, latency.p99));
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            report.block_txs_max,
            report.block_time_ms,
            report.offered_tps,
            report.steady_tps,
            report.committed_tps,
            p50,
            p99,
            report.rejected,
            report.view_changes,
            report.ok
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, sweep_svg(&reports)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if reports.iter().all(|report| report.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
