//! `kasane kura demo`: the storage and state half of a node at work, end to end.
//!
//! 1. generate a chain of signed transfers (a genesis with validators and funded accounts, then
//!    blocks executed against the world state and certified by a quorum) into a fresh store,
//!    fsync on;
//! 2. reopen the store and replay it into a world state, fast and strict;
//! 3. tear the last record as a crash would, reopen, and show the store cut back to the last
//!    whole block with the same state as before that block.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{ensure, Context};
use clap::Args;
use kasane_kura::init::{fast_init, strict_init};
use kasane_kura::{FileBackend, FsyncPolicy, Kura, KuraConfig};

use super::kura::{generate, init_report_json, GenerateArgs};
use super::ProgressLine;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Store directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    blocks: u64,
    #[arg(long, default_value_t = 1000)]
    txs_per_block: usize,
    /// Write the summary as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let temporary = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| temporary.path().join("kura"));
    println!(
        "kasane demo: {} blocks of {} transfers into {}",
        args.blocks,
        args.txs_per_block,
        dir.display()
    );

    let generate_args = GenerateArgs {
        dir: dir.clone(),
        blocks: args.blocks,
        txs_per_block: args.txs_per_block,
        accounts: None,
        validators: 4,
        seed: 1,
        blocks_per_chunk: 100,
        fsync: FsyncPolicy::Always,
    };
    let generated = generate(&generate_args)?;
    let transactions = generated["transactions"].as_u64().unwrap_or(0);
    let seconds = generated["seconds"].as_f64().unwrap_or(0.0);
    println!(
        "generated: height {}, {} transactions in {} chunks, {:.1} MB, {:.1} s (signing, executing, fsync per block)",
        generated["height"],
        transactions,
        generated["chunks"],
        generated["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        seconds
    );

    let started = Instant::now();
    let (kura, open) = Kura::open(FileBackend::open(&dir)?, KuraConfig::default())?;
    println!(
        "reopened: height {} in {:.3} s (every record checksum verified)",
        open.height,
        started.elapsed().as_secs_f64()
    );

    let mut progress = ProgressLine::new("fast init");
    let (fast_wsv, fast) = fast_init(&kura, kasane_node::plugins(), Some(&mut |d, t| progress.update(d, t)))?;
    println!(
        "fast init: {} transactions in {:.2} s = {:.0} tx/s",
        fast.transactions,
        fast.elapsed.as_secs_f64(),
        fast.transactions_per_second()
    );
    let mut progress = ProgressLine::new("strict init");
    let (strict_wsv, strict) = strict_init(&kura, kasane_node::plugins(), Some(&mut |d, t| progress.update(d, t)))?;
    println!(
        "strict init: {} transactions, {} signatures in {:.2} s = {:.0} tx/s",
        strict.transactions,
        strict.signatures_verified,
        strict.elapsed.as_secs_f64(),
        strict.transactions_per_second()
    );
    ensure!(
        fast_wsv.state_commitment() == strict_wsv.state_commitment()
            && generated["state_commitment"].as_str() == Some(strict_wsv.state_commitment().to_hex().as_str()),
        "fast and strict init disagree with the generated state"
    );
    println!(
        "state commitment {} (generator, fast and strict init agree)",
        strict_wsv.state_commitment()
    );

    // A crash in the middle of the last append: cut the last chunk inside its last record.
    let height = kura.height();
    let last_chunk = dir.join(kasane_kura::format::chunk_file_name(
        ((height - 1) / u64::from(kura.blocks_per_chunk())) as u32,
    ));
    drop(kura);
    let length = std::fs::metadata(&last_chunk)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last_chunk)?
        .set_len(length - 100)?;
    let (kura, reopened) = Kura::open(FileBackend::open(&dir)?, KuraConfig::default())?;
    let cut = reopened.cut.clone().context("the torn record was not detected")?;
    let (after_crash, _) = fast_init(&kura, kasane_node::plugins(), None)?;
    println!(
        "torn tail: cut {} bytes in chunk {}; store back to height {} (was {}), state commitment {}",
        cut.bytes_cut,
        cut.chunk,
        reopened.height,
        height,
        after_crash.state_commitment()
    );
    ensure!(reopened.height == height - 1, "recovery lost more than the torn block");

    let summary = serde_json::json!({
        "generated": generated,
        "fast_init": init_report_json(&fast),
        "strict_init": init_report_json(&strict),
        "torn_tail": {"bytes_cut": cut.bytes_cut, "height_before": height, "height_after": reopened.height},
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
        println!("wrote {}", path.display());
    }
    println!("demo: ok");
    Ok(ExitCode::SUCCESS)
}
