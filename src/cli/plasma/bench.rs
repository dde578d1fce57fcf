//! `kasane plasma bench` (docs/PLASMA.md section 10): L2 throughput with every L2 block's root
//! committed to a 4-node L1 running at the same time, beside the L1-only throughput of the same
//! run, and the time from an L2 block's commit to its root's commit on L1.
//!
//! 1. L1 only: `kasane bench` on a fresh 4-node cluster (pre-signed transfers, `--l1-rate`).
//! 2. L1 and L2 together: a fresh 4-node L1 and a 1-node L2 (`--plasma-l2`), the chain
//!    registered, the agent running as its own process. Each test account deposits on L1; the
//!    bench splits the deposits on L2 (1 output into 4, level by level) until there is one
//!    unspent output per measured transaction, so that every measured transaction can be signed
//!    before the clock starts, as the L1 phase's are. (A plasma input names its output by
//!    position, known only once the output's block commits, so a chain of spends cannot be
//!    signed ahead.)
//! 3. The measured load: `--rate` plasma transfers per second for `--duration` seconds, each
//!    in its own kasane transaction (so two signatures each: the envelope's and the input
//!    owner's). A monitor polls L2's height and L1's root count every 20 ms: a block's root lag
//!    is from when it was first seen committed on L2 to when L1 was first seen holding its root
//!    (so each figure may be up to 20 ms late on either end).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bytes::Bytes;
use clap::{Args, Parser};
use kasane_model::codec;
use kasane_model::hash::Hash;
use kasane_model::ids::Name;
use kasane_model::transaction::TTL_MS_MAX;
use kasane_model::{KeyPair, PublicKey, SignedTransaction, TransactionPayload};
use kasane_plasma::chain::{L2Call, L2_CONTRACT, NOTED_KEY};
use kasane_plasma::contract::{self as l1, DepositRecord, PlasmaCall};
use kasane_plasma::ledger::{Output, PlasmaTx, Position};
use kasane_plasma::proof;
use serde::Serialize;
use serde_json::{json, Value};

use super::{block_leaves, chain_record, l1_instruction, l2_root, Chain, Wallet};
use crate::cli::bench::{BenchArgs, BenchReport};
use crate::cli::cluster::{down, up};
use crate::cli::genesis::{write_cluster, GenesisArgs, PayloadKind};
use crate::cli::http::Submitted;
use kasane_harness::test_account;
use kasane_node::api::{SubmitResponse, TransactionBatch, POSTCARD};
use kasane_node::runtime::now_ms;

#[derive(Debug, Clone, Args)]
pub struct PlasmaBenchArgs {
    /// Offered plasma transfers per second on L2 (about what its one validator sustains here
    /// with nothing refused; docs/PLASMA.md section 10 has 50,000 and 60,000).
    #[arg(long, default_value_t = 45_000)]
    pub rate: u64,
    /// Seconds of offered L2 load (and of the L1-only run).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Offered transfers per second in the L1-only run (about what 4 nodes here sustain).
    #[arg(long, default_value_t = 21_000)]
    pub l1_rate: u64,
    /// Skip the L1-only run (its figure is then missing from the report).
    #[arg(long)]
    pub skip_l1_only: bool,
    /// Test accounts that deposit and trade on L2.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// L2 block time: how long its one validator waits for a full block.
    #[arg(long, default_value_t = 100)]
    pub l2_block_time_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    pub l2_block_txs_max: usize,
    /// L1 block time in the L1-and-L2 run: roots wait at most this long for their block.
    #[arg(long, default_value_t = 100)]
    pub l1_block_time_ms: u64,
    /// Milliseconds between request batches.
    #[arg(long, default_value_t = 40)]
    pub batch_ms: u64,
    /// Kura fsync policy of every node.
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Keep the clusters here instead of a temporary directory (they are stopped either way).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlasmaBenchReport {
    /// L2 plasma transfers committed per second, from the first batch sent to the last block
    /// seen committed.
    pub l2_tps: f64,
    /// Committed transfers per second of the L1-only run (`kasane bench`), if it ran.
    pub l1_tps: Option<f64>,
    pub ratio: Option<f64>,
    /// From an L2 block's commit to its root's commit on L1, over the measured blocks.
    pub root_lag_ms: Percentiles,
    /// Measured L2 blocks whose root took longer than 2 s.
    pub blocks_over_2s: usize,
    pub offered_tps: u64,
    pub duration_s: u64,
    pub submitted: u64,
    pub accepted: u64,
    pub refused: u64,
    pub refusal_reasons: HashMap<String, u64>,
    pub l2_committed: u64,
    pub l2_blocks: u64,
    /// Roots L1 held at the end, and the L2 height they had to reach.
    pub roots_committed: u64,
    pub l2_height: u64,
    pub setup_s: f64,
    pub l1_only: Option<Value>,
    pub config: Value,
}

/// Stops what the bench started, however it ends.
struct Guard {
    dirs: Vec<PathBuf>,
    agent: Option<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(agent) = &mut self.agent {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        for dir in &self.dirs {
            let _ = down(dir, Duration::from_secs(10));
        }
    }
}

fn say(quiet: bool, text: impl AsRef<str>) {
    if !quiet {
        eprintln!("plasma bench: {}", text.as_ref());
    }
}

pub fn run(args: PlasmaBenchArgs) -> anyhow::Result<ExitCode> {
    ensure!(
        args.rate > 0 && args.duration > 0,
        "--rate and --duration must be positive"
    );
    ensure!(args.users >= 2, "--users must be at least 2");
    let l1_only = if args.skip_l1_only {
        None
    } else {
        say(
            args.quiet,
            format!(
                "L1 only: kasane bench --rate {} --duration {}",
                args.l1_rate, args.duration
            ),
        );
        #[derive(Debug, Parser)]
        struct Wrapper {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let wrapper = Wrapper::try_parse_from([
            "bench".to_string(),
            "--rate".into(),
            args.l1_rate.to_string(),
            "--duration".into(),
            args.duration.to_string(),
            "--fsync".into(),
            args.fsync.clone(),
        ])
        .context("L1-only bench arguments")?;
        let mut bench = wrapper.bench;
        bench.quiet = args.quiet;
        Some(crate::cli::bench::run_once(&bench)?)
    };
    let temporary = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    let mut report = measure(&args, &dir)?;
    if let Some(l1) = &l1_only {
        report.l1_tps = Some(l1.committed_tps);
        report.ratio = Some(report.l2_tps / l1.committed_tps.max(f64::MIN_POSITIVE));
        report.l1_only = Some(l1_summary(l1));
    }
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // The targets are reported, not enforced; a lost transfer or root is a failure.
    let complete = report.l2_committed == report.accepted && report.roots_committed >= report.l2_height;
    if !complete {
        println!(
            "plasma bench: INCOMPLETE: {} of {} accepted transfers committed, roots {} of {} L2 blocks",
            report.l2_committed, report.accepted, report.roots_committed, report.l2_height
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn l1_summary(report: &BenchReport) -> Value {
    json!({
        "committed_tps": report.committed_tps,
        "offered_tps": report.offered_tps,
        "committed": report.committed,
        "refused": report.rejected,
        "latency_ms": report.latency_ms,
        "view_changes": report.view_changes,
    })
}

pub fn print_report(report: &PlasmaBenchReport) {
    println!(
        "L2: {:.0} plasma transfers/s committed ({} of {} accepted, {} refused at admission), {} blocks",
        report.l2_tps, report.l2_committed, report.accepted, report.refused, report.l2_blocks
    );
    match (report.l1_tps, report.ratio) {
        (Some(l1), Some(ratio)) => println!("L1 only: {l1:.0} transfers/s; L2 / L1 = {ratio:.2} (target >= 2)"),
        _ => println!("L1 only: not run (--skip-l1-only)"),
    }
    println!(
        "root lag (L2 commit to root committed on L1): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} blocks over 2 s (target 0); roots {} of {} L2 blocks",
        report.root_lag_ms.p50,
        report.root_lag_ms.p99,
        report.root_lag_ms.max,
        report.blocks_over_2s,
        report.roots_committed,
        report.l2_height
    );
}

fn genesis(args: &PlasmaBenchArgs, out: &Path, l2: bool) -> anyhow::Result<()> {
    let genesis = GenesisArgs {
        validators: if l2 { 1 } else { 4 },
        observers: 0,
        out: out.to_path_buf(),
        hosts: Vec::new(),
        base_port: None,
        accounts: args.users,
        chain: if l2 { "kasane-l2" } else { "kasane-l1" }.to_string(),
        block_time_ms: Some(if l2 {
            args.l2_block_time_ms
        } else {
            args.l1_block_time_ms
        }),
        commit_timeout_ms: Some(2_000),
        block_txs_max: Some(if l2 { args.l2_block_txs_max } else { 10_000 }),
        fsync: args.fsync.clone(),
        queue_capacity: if l2 { 2 * args.l2_block_txs_max } else { 20_000 },
        force: true,
        plasma_l2: l2,
        payload: PayloadKind::Signed,
    };
    write_cluster(&genesis)?;
    Ok(())
}

fn measure(args: &PlasmaBenchArgs, dir: &Path) -> anyhow::Result<PlasmaBenchReport> {
    let setup_started = Instant::now();
    let (l1_dir, l2_dir) = (dir.join("l1"), dir.join("l2"));
    genesis(args, &l1_dir, false)?;
    genesis(args, &l2_dir, true)?;
    let mut guard = Guard {
        dirs: Vec::new(),
        agent: None,
    };
    guard.dirs.push(l1_dir.clone());
    let l1_manifest = up(&l1_dir, Duration::from_secs(60))?;
    guard.dirs.push(l2_dir.clone());
    let l2_manifest = up(&l2_dir, Duration::from_secs(60))?;
    let (l1_url, l2_url) = (l1_manifest.nodes[0].api.clone(), l2_manifest.nodes[0].api.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let chain: Name = "bench".parse().expect("constant names are valid");
    rt.block_on(super::register(&super::RegisterArgs {
        on: super::OnL1 {
            l1: l1_url.clone(),
            chain: chain.clone(),
        },
        genesis_key: l1_dir.join("genesis.key"),
        operator_key: l2_dir.join("genesis.key"),
        challenge_blocks: 20,
        bond_asset: "coin#test".parse().expect("constant names are valid"),
        exit_bond: 10,
    }))?;
    let log = std::fs::File::create(dir.join("agent.log")).context("creating agent.log")?;
    let agent = std::process::Command::new(std::env::current_exe().context("locating the kasane binary")?)
        .args([
            "plasma",
            "agent",
            "--chain",
            chain.as_str(),
            "--l1",
            &l1_url,
            "--l2",
            &l2_url,
            "--key",
        ])
        .arg(l2_dir.join("genesis.key"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the agent")?;
    guard.agent = Some(agent);
    let report = rt.block_on(async {
        let l1 = Chain::connect(&l1_url).await?;
        let l2 = Chain::connect(&l2_url).await?;
        let needed = (args.rate * args.duration) as usize;
        let outputs = setup_outputs(args, &l1, &l2, &chain, needed).await?;
        let setup_s = setup_started.elapsed().as_secs_f64();
        say(
            args.quiet,
            format!("setup done in {setup_s:.1} s; signing {needed} transfers"),
        );
        let batches = presign(&l2, args, outputs);
        load(args, &l1, &l2, &chain, batches, setup_s).await
    });
    drop(guard);
    report
}

/// Each user deposits on L1; once L2 noted the deposits, the bench splits outputs 1 into 4 on
/// L2 until there are `needed`. Returns them with their owners (user indexes).
async fn setup_outputs(
    args: &PlasmaBenchArgs,
    l1: &Chain,
    l2: &Chain,
    chain: &Name,
    needed: usize,
) -> anyhow::Result<Vec<(Position, usize, u128)>> {
    let users = args.users;
    let amount: u128 = 1 << 38;
    let deposits: Vec<SignedTransaction> = (0..users)
        .map(|user| {
            let (account, key) = test_account(user);
            let call = PlasmaCall::Deposit {
                chain: chain.clone(),
                asset: "coin#test".parse().expect("constant names are valid"),
                amount,
                owner: key.public_key(),
            };
            l1.sign(&Wallet { account, key }, vec![l1_instruction(&call)])
        })
        .collect();
    say(args.quiet, format!("{users} deposits on L1"));
    submit_all(l1, deposits).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let noted = match l2.entry(L2_CONTRACT, NOTED_KEY).await? {
            Some(bytes) => codec::decode_body::<u64>("noted", &bytes)?,
            None => 0,
        };
        if noted >= users as u64 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "L2 noted {noted} of {users} deposits within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = chain_record(l1, chain).await?;
    let owners: HashMap<PublicKey, usize> = (0..users)
        .map(|user| (test_account(user).1.public_key(), user))
        .collect();
    let mut outputs = Vec::with_capacity(needed);
    for number in 0..record.deposits {
        let bytes = l1
            .entry(l1::L1_CONTRACT, &l1::deposit_key(chain, number))
            .await?
            .context("a deposit record")?;
        let deposit: DepositRecord = codec::decode_body("deposit", &bytes)?;
        let user = *owners.get(&deposit.owner).context("a deposit of an unknown owner")?;
        outputs.push((Position::Deposit { number }, user, deposit.amount));
    }
    let keys: Vec<KeyPair> = (0..users).map(|user| test_account(user).1).collect();
    while outputs.len() < needed {
        let splits = outputs.len().min((needed - outputs.len()).div_ceil(3));
        let rest = outputs.split_off(splits);
        let txs: Vec<(PlasmaTx, usize)> = outputs
            .iter()
            .map(|(position, user, amount)| {
                let part = amount / 4;
                let parts = [amount - 3 * part, part, part, part];
                let owner = keys[*user].public_key();
                let tx_outputs = parts
                    .iter()
                    .map(|part| Output {
                        owner,
                        asset: "coin#test".parse().expect("constant names are valid"),
                        amount: *part,
                    })
                    .collect();
                (PlasmaTx::sign(vec![*position], tx_outputs, &[&keys[*user]]), *user)
            })
            .collect();
        say(
            args.quiet,
            format!(
                "splitting {} outputs into {} on L2",
                txs.len(),
                rest.len() + 4 * txs.len()
            ),
        );
        let envelopes: Vec<SignedTransaction> = txs
            .iter()
            .map(|(tx, user)| envelope(l2, *user, &keys[*user], tx, 0))
            .collect();
        let start_height = l2.height().await?;
        submit_all(l2, envelopes).await?;
        let positions = settle(l2, start_height, txs.iter().map(|(tx, _)| tx)).await?;
        outputs = rest;
        for ((tx, user), at) in txs.iter().zip(positions) {
            let Position::Block { block, tx_index, .. } = at else {
                unreachable!("settle gives block positions")
            };
            for (index, output) in tx.outputs.iter().enumerate() {
                outputs.push((
                    Position::Block {
                        block,
                        tx_index,
                        output_index: index as u8,
                    },
                    *user,
                    output.amount,
                ));
            }
        }
    }
    outputs.truncate(needed);
    Ok(outputs)
}

/// A kasane transaction on L2 by `user` carrying one plasma transfer.
fn envelope(l2: &Chain, user: usize, key: &KeyPair, tx: &PlasmaTx, nonce: u32) -> SignedTransaction {
    let payload = TransactionPayload {
        chain: l2.id.clone(),
        creator: test_account(user).0,
        instructions: vec![L2Call::Transfer(tx.clone()).instruction()],
        created_at_ms: now_ms(),
        ttl_ms: TTL_MS_MAX,
        nonce,
    };
    SignedTransaction::sign(payload, &[key])
}

/// Submits `transactions` in requests of 2,000, waiting while the node's queue is full.
async fn submit_all(node: &Chain, transactions: Vec<SignedTransaction>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let hashes: Vec<Hash> = transactions.iter().map(|tx| tx.hashes().transaction).collect();
    for chunk in transactions.chunks(2_000) {
        loop {
            match node.api.submit(chunk.to_vec()).await? {
                Submitted::QueueFull | Submitted::CatchingUp(_) => {
                    ensure!(
                        Instant::now() < deadline,
                        "the node's queue stayed full (or it kept catching up)"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Admitted but not yet held by f + 1; the wait for the setup's commits decides.
                Submitted::NotHeld(_) => break,
                Submitted::Answered(response) => {
                    let refused: Vec<&String> = response
                        .results
                        .iter()
                        .filter_map(|result| result.error.as_ref())
                        .collect();
                    ensure!(
                        refused.is_empty(),
                        "setup transactions refused: {:?}",
                        &refused[..refused.len().min(3)]
                    );
                    break;
                }
            }
        }
    }
    // The last one settles after the others (one node, one queue, in order) on L2; on L1 wait
    // for each.
    for hash in hashes
        .iter()
        .rev()
        .take(if hashes.len() > 200 { 1 } else { hashes.len() })
    {
        node.wait(hash, deadline)
            .await?
            .map_err(|reason| anyhow::anyhow!("setup transaction refused: {reason}"))?;
    }
    Ok(())
}

/// Where each of `txs` committed on L2 (blocks after `start_height`): block and leaf index.
async fn settle<'a>(
    l2: &Chain,
    start_height: u64,
    txs: impl Iterator<Item = &'a PlasmaTx>,
) -> anyhow::Result<Vec<Position>> {
    let wanted: Vec<Hash> = txs.map(proof::leaf_hash).collect();
    let mut index: HashMap<Hash, usize> = wanted.iter().enumerate().map(|(at, hash)| (*hash, at)).collect();
    let mut found: Vec<Option<Position>> = vec![None; wanted.len()];
    let mut height = start_height;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !index.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "{} setup transfers did not commit",
            index.len()
        );
        let head = l2.height().await?;
        if head <= height {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for block in height + 1..=head {
            for (leaf, tx) in block_leaves(l2, block).await?.0.iter().enumerate() {
                if let Some(at) = index.remove(&proof::leaf_hash(tx)) {
                    found[at] = Some(Position::Block {
                        block,
                        tx_index: leaf as u32,
                        output_index: 0,
                    });
                }
            }
        }
        height = head;
    }
    Ok(found
        .into_iter()
        .map(|position| position.expect("every transfer was found"))
        .collect())
}

struct Batch {
    body: Bytes,
    count: u64,
}

/// Signs one transfer per output (to the next user), in request batches, on every core.
fn presign(l2: &Chain, args: &PlasmaBenchArgs, outputs: Vec<(Position, usize, u128)>) -> Vec<Batch> {
    let per_batch = ((args.rate * args.batch_ms.max(1)) / 1000).max(1) as usize;
    let keys: Vec<KeyPair> = (0..args.users).map(|user| test_account(user).1).collect();
    let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let chunks: Vec<&[(Position, usize, u128)]> = outputs.chunks(per_batch).collect();
    let mut batches: Vec<Option<Batch>> = (0..chunks.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        for (slots, work) in batches
            .chunks_mut(chunks.len().div_ceil(threads).max(1))
            .zip(chunks.chunks(chunks.len().div_ceil(threads).max(1)))
        {
            let keys = &keys;
            scope.spawn(move || {
                for (slot, chunk) in slots.iter_mut().zip(work) {
                    let transactions: Vec<SignedTransaction> = chunk
                        .iter()
                        .map(|(position, user, amount)| {
                            let to = (user + 1) % keys.len();
                            let tx = PlasmaTx::sign(
                                vec![*position],
                                vec![Output {
                                    owner: keys[to].public_key(),
                                    asset: "coin#test".parse().expect("constant names are valid"),
                                    amount: *amount,
                                }],
                                &[&keys[*user]],
                            );
                            envelope(l2, *user, &keys[*user], &tx, 1)
                        })
                        .collect();
                    *slot = Some(Batch {
                        count: transactions.len() as u64,
                        body: Bytes::from(codec::encode(&TransactionBatch(transactions))),
                    });
                }
            });
        }
    });
    batches.into_iter().flatten().collect()
}

#[derive(Debug, Default)]
struct Admission {
    accepted: u64,
    refused: u64,
    reasons: HashMap<String, u64>,
}

/// What the monitor saw: when each L2 block was first seen committed (and how many transfers
/// it applied), and when L1 was first seen holding its root.
#[derive(Debug, Default)]
struct Seen {
    blocks: Vec<(u64, Instant, u64)>,
    roots: HashMap<u64, Instant>,
    l2_height: u64,
    roots_held: u64,
}

async fn monitor(l1: Chain, l2: Chain, chain: Name, start_height: u64, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let mut height = start_height;
    let mut roots = chain_record(&l1, &chain).await.map(|record| record.roots).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        if let Ok(head) = l2.height().await {
            let now = Instant::now();
            for block in height + 1..=head {
                let count = l2_root(&l2, block).await.map(|(_, count)| count).unwrap_or(0);
                if let Ok(mut seen) = seen.lock() {
                    seen.blocks.push((block, now, count));
                    seen.l2_height = block;
                }
            }
            height = height.max(head);
        }
        if let Ok(record) = chain_record(&l1, &chain).await {
            let now = Instant::now();
            if let Ok(mut seen) = seen.lock() {
                for number in roots + 1..=record.roots {
                    seen.roots.insert(number, now);
                }
                seen.roots_held = record.roots;
            }
            roots = roots.max(record.roots);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentiles(mut values: Vec<f64>) -> Percentiles {
    if values.is_empty() {
        return Percentiles {
            p50: 0.0,
            p99: 0.0,
            max: 0.0,
        };
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        max: values[values.len() - 1],
    }
}

async fn load(
    args: &PlasmaBenchArgs,
    l1: &Chain,
    l2: &Chain,
    chain: &Name,
    batches: Vec<Batch>,
    setup_s: f64,
) -> anyhow::Result<PlasmaBenchReport> {
    let start_height = l2.height().await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(monitor(
        l1.clone(),
        l2.clone(),
        chain.clone(),
        start_height,
        seen.clone(),
        stop.clone(),
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()
        .context("HTTP client")?;
    let url = format!("{}/v1/transactions", l2.api.base());
    let admission = Arc::new(Mutex::new(Admission::default()));
    let submitted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_millis(args.batch_ms.max(1));
    say(args.quiet, format!("{} transfers/s for {} s", args.rate, args.duration));
    let mut tasks = Vec::with_capacity(batches.len());
    for (index, batch) in batches.into_iter().enumerate() {
        tokio::time::sleep_until((started + interval * index as u32).into()).await;
        let (http, url, admission, submitted) = (http.clone(), url.clone(), admission.clone(), submitted.clone());
        tasks.push(tokio::spawn(async move {
            submitted.fetch_add(batch.count, Ordering::Relaxed);
            let response = http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, POSTCARD)
                .body(batch.body)
                .send()
                .await;
            let answer = match response {
                Ok(response) => {
                    let status = response.status();
                    response
                        .text()
                        .await
                        .map(|text| (status, text))
                        .map_err(|error| error.to_string())
                }
                Err(error) => Err(error.to_string()),
            };
            let Ok(mut admission) = admission.lock() else { return };
            match answer {
                Ok((status, text)) if status.is_success() => match serde_json::from_str::<SubmitResponse>(&text) {
                    Ok(response) => {
                        for result in &response.results {
                            if result.accepted {
                                admission.accepted += 1;
                            } else {
                                admission.refused += 1;
                                *admission
                                    .reasons
                                    .entry(result.error.clone().unwrap_or_default())
                                    .or_default() += 1;
                            }
                        }
                    }
                    Err(error) => {
                        admission.refused += batch.count;
                        *admission
                            .reasons
                            .entry(format!("unreadable answer: {error}"))
                            .or_default() += batch.count;
                    }
                },
                Ok((status, _)) => {
                    admission.refused += batch.count;
                    *admission.reasons.entry(format!("HTTP {status}")).or_default() += batch.count;
                }
                Err(error) => {
                    admission.refused += batch.count;
                    *admission.reasons.entry(format!("request failed: {error}")).or_default() += batch.count;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let accepted = admission.lock().map(|admission| admission.accepted).unwrap_or(0);
    // Wait for the accepted transfers to commit, then for their roots.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (committed, l2_height, roots) = {
            let seen = seen.lock().map_err(|_| anyhow::anyhow!("monitor poisoned"))?;
            (
                seen.blocks.iter().map(|(_, _, count)| count).sum::<u64>(),
                seen.l2_height,
                seen.roots_held,
            )
        };
        if committed >= accepted && roots >= l2_height {
            break;
        }
        if Instant::now() >= deadline {
            say(
                args.quiet,
                format!("gave up waiting: {committed} of {accepted} committed, roots {roots} of {l2_height}"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("monitor poisoned"))?;
    let admission = admission.lock().map_err(|_| anyhow::anyhow!("admission poisoned"))?;
    let measured: Vec<&(u64, Instant, u64)> = seen.blocks.iter().filter(|(_, _, count)| *count > 0).collect();
    let l2_committed: u64 = measured.iter().map(|(_, _, count)| count).sum();
    let last_commit = measured.last().map(|(_, at, _)| *at).unwrap_or(started);
    let elapsed = last_commit.duration_since(started).as_secs_f64().max(f64::MIN_POSITIVE);
    let lags: Vec<f64> = measured
        .iter()
        .filter_map(|(block, at, _)| {
            seen.roots
                .get(block)
                .map(|root| root.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    let missing_roots = measured.len() - lags.len();
    let blocks_over_2s = lags.iter().filter(|lag| **lag > 2_000.0).count() + missing_roots;
    Ok(PlasmaBenchReport {
        l2_tps: l2_committed as f64 / elapsed,
        l1_tps: None,
        ratio: None,
        root_lag_ms: percentiles(lags),
        blocks_over_2s,
        offered_tps: args.rate,
        duration_s: args.duration,
        submitted: submitted.load(Ordering::Relaxed),
        accepted: admission.accepted,
        refused: admission.refused,
        refusal_reasons: admission.reasons.clone(),
        l2_committed,
        l2_blocks: measured.len() as u64,
        roots_committed: seen.roots_held,
        l2_height: seen.l2_height,
        setup_s,
        l1_only: None,
        config: json!({
            "users": args.users,
            "l2_validators": 1,
            "l1_validators": 4,
            "l2_block_time_ms": args.l2_block_time_ms,
            "l2_block_txs_max": args.l2_block_txs_max,
            "l1_block_time_ms": args.l1_block_time_ms,
            "batch_ms": args.batch_ms,
            "fsync": args.fsync,
            "signatures_per_transfer": 2,
        }),
    })
}
