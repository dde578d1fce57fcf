//! `kasane kura generate|inspect|verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::init::{fast_init, strict_init, InitReport};
use kasane_kura::{FileBackend, FsyncPolicy, Kura, KuraConfig, KuraError};
use serde_json::json;

use super::ProgressLine;

#[derive(Debug, Subcommand)]
pub enum KuraCommand {
    /// The storage and state demo: generates a chain into a fresh store, replays it fast and
    /// strict, tears the tail as a crash would and shows the recovery.
    Demo(super::store_demo::DemoArgs),
    /// Writes a valid signed chain of transfers from a generated genesis into a new store.
    Generate(GenerateArgs),
    /// Prints a JSON summary of a store (read-only).
    Inspect {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Strict verification up to a height, compared with the head hash and state commitment a
    /// replay reached there: exit 0 with a JSON summary when they match, else exit 1 with the
    /// reason. A node's strict start runs its background audit this way, in a process of its own.
    Audit(AuditArgs),
    /// Checks every block: exit 0 when all are sound, else exit 1 with `first bad height: N`.
    Verify {
        #[arg(long)]
        dir: PathBuf,
        /// Also verify Merkle roots, certificates and every transaction signature.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub blocks_per_chunk: u32,
    /// The height to verify up to.
    #[arg(long)]
    pub height: u64,
    /// The head hash the replay reached at that height (64 hex digits).
    #[arg(long)]
    pub head_hash: String,
    /// The state commitment the replay reached at that height (64 hex digits).
    #[arg(long)]
    pub state_commitment: String,
    /// Decoding and verifying threads besides the one that applies.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Exit (code 3) as soon as the process with this id is no longer the parent: a node's
    /// audit must not outlive the node.
    #[arg(long)]
    pub parent: Option<u32>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// Transfer blocks after genesis.
    #[arg(long, default_value_t = 100)]
    pub blocks: u64,
    #[arg(long, default_value_t = 1000)]
    pub txs_per_block: usize,
    /// Funded accounts (default: as many as transactions per block, at least 2).
    #[arg(long)]
    pub accounts: Option<usize>,
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 100)]
    pub blocks_per_chunk: u32,
    /// always, never or every:N.
    #[arg(long, default_value = "always")]
    pub fsync: FsyncPolicy,
}

pub fn run(command: KuraCommand) -> anyhow::Result<ExitCode> {
    match command {
        KuraCommand::Demo(args) => super::store_demo::run(args),
        KuraCommand::Generate(args) => {
            let summary = generate(&args)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        KuraCommand::Inspect { dir } => {
            println!("{}", serde_json::to_string_pretty(&inspect(&dir)?)?);
            Ok(ExitCode::SUCCESS)
        }
        KuraCommand::Audit(args) => audit(&args),
        KuraCommand::Verify { dir, strict } => verify(&dir, strict),
    }
}

fn audit(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let hash = |what: &str, text: &str| {
        kasane_model::Hash::from_hex(text).map_err(|error| anyhow::anyhow!("--{what}: {error}"))
    };
    let target = kasane_kura::AuditTarget {
        height: args.height,
        head_hash: hash("head-hash", &args.head_hash)?,
        state_commitment: hash("state-commitment", &args.state_commitment)?,
    };
    if let Some(parent) = args.parent {
        std::thread::spawn(move || loop {
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(3);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        });
    }
    let workers = args.workers.max(1);
    match kasane_node::audit::audit_store(&args.dir, args.blocks_per_chunk, &target, workers) {
        Ok(report) => {
            let summary = kasane_node::audit::AuditSummary::of(&report);
            println!("{}", serde_json::to_string(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            println!("audit failed: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

fn open_existing(dir: &Path, read_only: bool) -> anyhow::Result<(Kura<FileBackend>, kasane_kura::OpenReport)> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let backend = FileBackend::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    Ok(Kura::open(
        backend,
        KuraConfig {
            read_only,
            ..KuraConfig::default()
        },
    )?)
}

pub fn generate(args: &GenerateArgs) -> anyhow::Result<serde_json::Value> {
    let backend = FileBackend::open(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let config = KuraConfig {
        blocks_per_chunk: args.blocks_per_chunk,
        fsync: args.fsync,
        read_only: false,
    };
    let (mut kura, _) = Kura::open(backend, config)?;
    if kura.height() > 0 {
        bail!(
            "{} already holds a store of {} blocks; generate writes only into an empty directory",
            args.dir.display(),
            kura.height()
        );
    }
    let fixture = FixtureConfig {
        blocks: args.blocks,
        transactions_per_block: args.txs_per_block,
        accounts: args.accounts.unwrap_or(args.txs_per_block).max(2),
        validators: args.validators,
        seed: args.seed,
    };
    let started = std::time::Instant::now();
    let mut chain = FixtureChain::new(fixture)?;
    let mut progress = ProgressLine::new("generate");
    chain.write_all(&mut kura, |done, total| progress.update(done, total))?;
    kura.sync()?;
    Ok(json!({
        "dir": args.dir,
        "height": kura.height(),
        "transactions": args.blocks * args.txs_per_block as u64,
        "chunks": kura.chunk_count(),
        "bytes": kura.bytes(),
        "head_hash": kura.head_hash().to_hex(),
        "state_commitment": chain.wsv.state_commitment().to_hex(),
        "fsync": args.fsync.to_string(),
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

pub fn inspect(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let (kura, report) = open_existing(dir, true)?;
    let cut = report
        .cut
        .map(|cut| json!({"chunk": cut.chunk, "offset": cut.offset, "bytes": cut.bytes_cut, "reason": cut.reason}));
    Ok(json!({
        "dir": dir,
        "height": kura.height(),
        "chunks": kura.chunk_count(),
        "bytes": kura.bytes(),
        "blocks_per_chunk": kura.blocks_per_chunk(),
        "head_hash": kura.head_hash().to_hex(),
        "torn_tail": cut,
        // A store restored from a snapshot: its base, and how far the blocks below it reach.
        "base": kura.base(),
        "lower_height": kura.lower_height(),
    }))
}

pub fn init_report_json(report: &InitReport) -> serde_json::Value {
    json!({
        "mode": format!("{:?}", report.mode).to_lowercase(),
        "height": report.height,
        "blocks": report.blocks,
        "transactions": report.transactions,
        "rejected_transactions": report.rejected_transactions,
        "signatures_verified": report.signatures_verified,
        "seconds": report.elapsed.as_secs_f64(),
        "transactions_per_second": report.transactions_per_second().round(),
    })
}

/// What `kura verify` found in one store.
#[derive(Debug, Clone)]
pub enum StoreCheck {
    Sound {
        height: u64,
        head_hash: String,
        report: serde_json::Value,
    },
    Bad {
        height: u64,
        reason: String,
    },
}

/// Checks every block of the store in `dir` (read-only), strictly or not.
pub fn verify_store(dir: &Path, strict: bool, progress: bool) -> anyhow::Result<StoreCheck> {
    let (kura, report) = match open_existing(dir, true) {
        Ok(opened) => opened,
        Err(error) => {
            if let Some(KuraError::Corrupt { height, reason }) = error.downcast_ref::<KuraError>() {
                return Ok(StoreCheck::Bad {
                    height: *height,
                    reason: reason.to_string(),
                });
            }
            return Err(error);
        }
    };
    if let Some(cut) = &report.cut {
        eprintln!(
            "note: torn tail of {} bytes after height {} in chunk {} ({}); a node cuts it when it opens the store",
            cut.bytes_cut,
            kura.height(),
            cut.chunk,
            cut.reason
        );
    }
    let mut line = ProgressLine::new(if strict { "strict verify" } else { "verify" });
    let mut on_progress = |done: u64, total: u64| {
        if progress {
            line.update(done, total)
        }
    };
    let result = if strict {
        strict_init(&kura, kasane_node::plugins(), Some(&mut on_progress))
    } else {
        fast_init(&kura, kasane_node::plugins(), Some(&mut on_progress))
    };
    match result {
        Ok((wsv, init)) => {
            let mut out = init_report_json(&init);
            out["head_hash"] = json!(wsv.head_hash().to_hex());
            out["state_commitment"] = json!(wsv.state_commitment().to_hex());
            out["verdict"] = json!("sound");
            Ok(StoreCheck::Sound {
                height: wsv.height(),
                head_hash: wsv.head_hash().to_hex(),
                report: out,
            })
        }
        Err(error) => match error.bad_height() {
            Some(height) => Ok(StoreCheck::Bad {
                height,
                reason: error.to_string(),
            }),
            None => Err(error.into()),
        },
    }
}

fn verify(dir: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    match verify_store(dir, strict, true)? {
        StoreCheck::Sound { report, .. } => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        StoreCheck::Bad { height, reason } => {
            println!("first bad height: {height}");
            println!("reason: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}
