//! Init: rebuilding the world state from the store, fast or strict, and the auditor.
//!
//! Both modes overlap work: while the calling thread applies a window of blocks to the world
//! state, worker threads decode (and, in strict mode, verify) the next window. Each worker
//! keeps its own key cache across windows, because decompressing a public key costs about as
//! much as a third of a signature check.

use std::time::{Duration, Instant};

use kasane_model::block::{tx_merkle_root, BlockHeader};
use kasane_model::codec;
use kasane_model::crypto::KeyCache;
use kasane_model::transaction::{verify_transaction_signatures, TransactionHashes};
use kasane_model::{CommittedBlock, Hash, SignedTransaction};
use kasane_wsv::{PluginRegistry, Wsv};

use crate::backend::Backend;
use crate::checkpoint;
use crate::store::{Kura, KuraError};

/// Blocks decoded ahead per worker while the previous window is applied.
const WINDOW_BLOCKS_PER_WORKER: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// Replay: decode and re-execute, checking the hash chain and state commitments only.
    Fast,
    /// Verify everything: Merkle roots, certificates, every signature, then re-execute.
    Strict,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("first bad height: {height}: {reason}")]
    BadBlock { height: u64, reason: String },
    #[error("the store is empty: no genesis block")]
    Empty,
    #[error("storage: {0}")]
    Storage(KuraError),
    #[error("the store was restored from a snapshot at height {base} and holds the blocks below it only up to {lower}: strict verification needs every block from genesis (they are fetched in the background; fast init starts from the snapshot)")]
    Incomplete { base: u64, lower: u64 },
    #[error("the store's base snapshot at height {base}: {reason}")]
    BadSnapshot { base: u64, reason: String },
    #[error("audit: the live world state is at height {live}, the store only at {stored}")]
    StoreBehind { live: u64, stored: u64 },
    #[error("audit: at height {height} the store gives {what} {stored}, the live world state {live}")]
    AuditMismatch {
        height: u64,
        what: &'static str,
        stored: Hash,
        live: Hash,
    },
}

impl InitError {
    /// The first bad height, when the error is about a block.
    pub fn bad_height(&self) -> Option<u64> {
        match self {
            InitError::BadBlock { height, .. } | InitError::AuditMismatch { height, .. } => Some(*height),
            _ => None,
        }
    }
}

fn bad(height: u64, reason: impl std::fmt::Display) -> InitError {
    InitError::BadBlock {
        height,
        reason: reason.to_string(),
    }
}

impl From<KuraError> for InitError {
    fn from(error: KuraError) -> InitError {
        match error {
            KuraError::Corrupt { height, reason } => bad(height, reason),
            KuraError::Decode { height, error } => bad(height, error),
            other => InitError::Storage(other),
        }
    }
}

/// What an init did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub mode: InitMode,
    pub height: u64,
    pub blocks: u64,
    pub transactions: u64,
    pub rejected_transactions: u64,
    pub signatures_verified: u64,
    pub elapsed: Duration,
    /// The height of the state the replay started from: 0 (before genesis), the base of a
    /// store restored from a snapshot, or the local checkpoint's height.
    pub started_from: u64,
    /// The local checkpoints considered and not used, newest first, each with why (the newest
    /// lacks the blocks up to the one binding its root when a crash lost them).
    pub checkpoints_refused: Vec<String>,
}

impl InitReport {
    pub fn transactions_per_second(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A block decoded (and in strict mode verified) by a worker, ready to apply.
struct Prepared {
    block: CommittedBlock,
    hashes: Vec<TransactionHashes>,
    signatures: u64,
}

/// Progress callback: (height applied, target height).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Replays every block into a fresh world state without checking signatures.
pub fn fast_init<B: Backend + Sync>(
    kura: &Kura<B>,
    plugins: PluginRegistry,
    progress: Option<Progress<'_>>,
) -> Result<(Wsv, InitReport), InitError> {
    run(
        kura,
        plugins,
        Start::Replay(InitMode::Fast),
        kura.height(),
        worker_count(),
        progress,
    )
}

/// [`fast_init`] from the store's newest local checkpoint ([`crate::checkpoint`]) that proves
/// itself: its header is the stored block at its height and the stored block after it,
/// executed on it, gives the commitment that block carries. Without one (no file, torn or stale
/// ones, ones that do not prove themselves) a replay from genesis, or from the base; the
/// reasons are in [`InitReport::checkpoints_refused`]. What a node starts with.
pub fn fast_init_from_checkpoint<B: Backend + Sync>(
    kura: &Kura<B>,
    plugins: PluginRegistry,
    progress: Option<Progress<'_>>,
) -> Result<(Wsv, InitReport), InitError> {
    run(
        kura,
        plugins,
        Start::FromCheckpoint,
        kura.height(),
        worker_count(),
        progress,
    )
}

/// Verifies and replays every block into a fresh world state.
pub fn strict_init<B: Backend + Sync>(
    kura: &Kura<B>,
    plugins: PluginRegistry,
    progress: Option<Progress<'_>>,
) -> Result<(Wsv, InitReport), InitError> {
    run(
        kura,
        plugins,
        Start::Replay(InitMode::Strict),
        kura.height(),
        worker_count(),
        progress,
    )
}

/// Re-runs strict verification of the store up to the live world state's height and compares
/// the result with it.
pub fn audit<B: Backend + Sync>(kura: &Kura<B>, live: &Wsv, plugins: PluginRegistry) -> Result<InitReport, InitError> {
    let expected = AuditTarget {
        height: live.height(),
        head_hash: live.head_hash(),
        state_commitment: live.state_commitment(),
    };
    audit_to(kura, &expected, plugins, worker_count())
}

/// What an audit must arrive at: a height, and the head hash and state commitment a world state
/// had there (the one a node replayed fast at start, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditTarget {
    pub height: u64,
    pub head_hash: Hash,
    pub state_commitment: Hash,
}

/// Strict verification of the store up to `expected.height` (every Merkle root, certificate and
/// signature, then re-execution), compared with `expected`; with `workers` decoding threads, so
/// a node can audit in the background without taking every core.
pub fn audit_to<B: Backend + Sync>(
    kura: &Kura<B>,
    expected: &AuditTarget,
    plugins: PluginRegistry,
    workers: usize,
) -> Result<InitReport, InitError> {
    incomplete(kura)?;
    if kura.height() < expected.height {
        return Err(InitError::StoreBehind {
            live: expected.height,
            stored: kura.height(),
        });
    }
    let (audited, report) = run(
        kura,
        plugins,
        Start::Replay(InitMode::Strict),
        expected.height,
        workers.max(1),
        None,
    )?;
    let height = expected.height;
    if audited.head_hash() != expected.head_hash {
        return Err(InitError::AuditMismatch {
            height,
            what: "head hash",
            stored: audited.head_hash(),
            live: expected.head_hash,
        });
    }
    if audited.state_commitment() != expected.state_commitment {
        return Err(InitError::AuditMismatch {
            height,
            what: "state commitment",
            stored: audited.state_commitment(),
            live: expected.state_commitment,
        });
    }
    Ok(report)
}

/// Workers that decode (and verify) ahead of the applying thread: one per core. In fast mode
/// decoding and hashing cost about twice what execution does, so the applying thread is kept
/// busy only when both cores decode.
fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
        .max(1)
}

/// Where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// From before genesis, or from the base of a store restored from a snapshot.
    Replay(InitMode),
    /// Fast, from the local checkpoint when it proves itself.
    FromCheckpoint,
}

fn run<B: Backend + Sync>(
    kura: &Kura<B>,
    plugins: PluginRegistry,
    start: Start,
    target: u64,
    workers: usize,
    mut progress: Option<Progress<'_>>,
) -> Result<(Wsv, InitReport), InitError> {
    let started = Instant::now();
    let mode = match start {
        Start::Replay(mode) => mode,
        Start::FromCheckpoint => InitMode::Fast,
    };
    if target == 0 {
        return Err(InitError::Empty);
    }
    let mut caches: Vec<KeyCache> = (0..workers).map(|_| KeyCache::new()).collect();
    let window = WINDOW_BLOCKS_PER_WORKER * workers as u64;
    let mut report = InitReport {
        mode,
        height: 0,
        blocks: 0,
        transactions: 0,
        rejected_transactions: 0,
        signatures_verified: 0,
        elapsed: Duration::ZERO,
        started_from: 0,
        checkpoints_refused: Vec::new(),
    };
    let mut wsv = start_state(kura, plugins, start, target, &mut report)?;
    let first = wsv.height() + 1;
    let mut current = prepare_window(kura, mode, first, (first + window - 1).min(target), &mut caches);
    let mut verifier_cache = KeyCache::new();
    let mut next_height = first;
    while next_height <= target {
        let next_from = next_height + current.len() as u64;
        let next_to = (next_from + window - 1).min(target);
        let (applied, next) = std::thread::scope(|scope| {
            let caches = &mut caches;
            let handle = (next_from <= target)
                .then(|| scope.spawn(move || prepare_window(kura, mode, next_from, next_to, caches)));
            let applied = apply_window(&mut wsv, mode, current, &mut verifier_cache, &mut report);
            let next = handle.map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| vec![Err(bad(next_from, "worker thread panicked"))])
            });
            (applied, next.unwrap_or_default())
        });
        applied?;
        next_height = wsv.height() + 1;
        if let Some(progress) = progress.as_mut() {
            progress(wsv.height(), target);
        }
        current = next;
    }
    report.height = wsv.height();
    report.elapsed = started.elapsed();
    Ok((wsv, report))
}

/// A strict run needs every block from genesis.
fn incomplete<B: Backend>(kura: &Kura<B>) -> Result<(), InitError> {
    match kura.base() {
        Some(base) => Err(InitError::Incomplete {
            base,
            lower: kura.lower_height(),
        }),
        None => Ok(()),
    }
}

/// The state the replay starts from: before genesis for a whole store; for a store from a base
/// (fast mode only), the snapshot it keeps at the base, whose blocks after it then prove it as
/// they apply (their state commitments bind it); the local checkpoint, proven, when asked for
/// and newer than those.
fn start_state<B: Backend + Sync>(
    kura: &Kura<B>,
    plugins: PluginRegistry,
    start: Start,
    target: u64,
    report: &mut InitReport,
) -> Result<Wsv, InitError> {
    let genesis = kura.read(1)?;
    let before_genesis = genesis_state(&genesis, plugins)?;
    if start == Start::FromCheckpoint {
        if let Some(wsv) = newest_local_checkpoint(kura, &before_genesis, target, report) {
            return Ok(wsv);
        }
    }
    let Some(base) = kura.base() else {
        return Ok(before_genesis);
    };
    if start == Start::Replay(InitMode::Strict) {
        incomplete(kura)?;
    }
    report.started_from = base;
    let bad_snapshot = |reason: String| InitError::BadSnapshot { base, reason };
    let (header, chunks) = kura
        .base_snapshot()
        .map_err(|error| bad_snapshot(error.to_string()))?
        .ok_or_else(|| bad_snapshot("missing".into()))?;
    let header: BlockHeader =
        codec::decode_body("block header", &header).map_err(|error| bad_snapshot(format!("header: {error}")))?;
    if header.height != base || Some(header.hash()) != kura.base_hash() {
        return Err(bad_snapshot(format!(
            "its header is of height {}, hash {}, not the base's",
            header.height,
            header.hash()
        )));
    }
    Wsv::from_snapshot(
        before_genesis.chain().clone(),
        *before_genesis.genesis_key(),
        before_genesis.plugins().clone(),
        before_genesis.checkpoint_interval(),
        &header,
        &chunks,
    )
    .map_err(|error| bad_snapshot(error.to_string()))
}

/// The state at the newest local checkpoint above the base (if any) that proves itself, with the
/// blocks up to its binding block applied; the others tried are in the report's refusals.
fn newest_local_checkpoint<B: Backend + Sync>(
    kura: &Kura<B>,
    before_genesis: &Wsv,
    target: u64,
    report: &mut InitReport,
) -> Option<Wsv> {
    let floor = kura.base().unwrap_or(0);
    let heights = match checkpoint::heights(kura.backend()) {
        Ok(heights) => heights,
        Err(error) => {
            report
                .checkpoints_refused
                .push(format!("listing the local checkpoints: {error}"));
            return None;
        }
    };
    for height in heights.into_iter().filter(|height| *height > floor) {
        match local_checkpoint(kura, before_genesis, height, target, report) {
            Ok(wsv) => return Some(wsv),
            Err(reason) => report
                .checkpoints_refused
                .push(format!("checkpoint {height}: {reason}")),
        }
    }
    None
}

/// The state at the local checkpoint of height `height`, with the blocks up to the one that
/// binds its root applied to prove it; the reason when the file cannot be used. The header must
/// be the stored block at `height`, and the binding block must be stored and not above `target`.
fn local_checkpoint<B: Backend + Sync>(
    kura: &Kura<B>,
    before_genesis: &Wsv,
    height: u64,
    target: u64,
    report: &mut InitReport,
) -> Result<Wsv, String> {
    let (header, chunks) = checkpoint::load(kura.backend(), height)?;
    let header: BlockHeader =
        codec::decode_body("block header", &header).map_err(|error| format!("its header: {error}"))?;
    if header.height != height {
        return Err(format!("its header is of height {}", header.height));
    }
    let binding = height + kasane_wsv::snapshot::binding_delay(before_genesis.checkpoint_interval());
    if binding > target {
        return Err(format!(
            "it is of height {height}, and the replay goes only to {target}, below block {binding}, which proves it"
        ));
    }
    if kura.hash_at(height) != Some(header.hash()) {
        return Err(format!(
            "its header (height {height}, hash {}) is not the stored block at that height",
            header.hash()
        ));
    }
    let mut wsv = Wsv::from_snapshot(
        before_genesis.chain().clone(),
        *before_genesis.genesis_key(),
        before_genesis.plugins().clone(),
        before_genesis.checkpoint_interval(),
        &header,
        &chunks,
    )
    .map_err(|error| format!("its snapshot of height {height}: {error}"))?;
    drop(chunks);
    // Counted only if the checkpoint proves itself: otherwise the replay starts elsewhere.
    let (mut transactions, mut rejected) = (0, 0);
    for next in height + 1..=binding {
        let block = kura.read(next).map_err(|error| {
            format!("reading block {next}, on the way to block {binding}, which proves it: {error}")
        })?;
        let hashes: Vec<TransactionHashes> = block.block.transactions.iter().map(SignedTransaction::hashes).collect();
        let applied = wsv
            .apply_block(&block.block, &hashes)
            .map_err(|error| format!("block {next} executed on it does not give its stored commitment: {error}"))?;
        transactions += hashes.len() as u64;
        rejected += applied.rejected_count() as u64;
    }
    report.blocks += binding - height;
    report.transactions += transactions;
    report.rejected_transactions += rejected;
    report.started_from = height;
    Ok(wsv)
}

/// The state before genesis: the chain id from the genesis transactions, the genesis key from
/// its proposer.
fn genesis_state(genesis: &CommittedBlock, plugins: PluginRegistry) -> Result<Wsv, InitError> {
    let header = &genesis.block.header;
    if header.height != 1 || header.previous_hash != Hash::ZERO {
        return Err(bad(
            1,
            "the first block is not a genesis block (height 1, previous hash zero)",
        ));
    }
    let chain = genesis
        .block
        .transactions
        .first()
        .map(|transaction| transaction.payload.chain.clone())
        .ok_or_else(|| bad(1, "genesis block has no transactions, so no chain id"))?;
    Ok(Wsv::new(chain, header.proposer, plugins))
}

/// Decodes (and verifies) heights `from..=to`, split over the workers.
fn prepare_window<B: Backend + Sync>(
    kura: &Kura<B>,
    mode: InitMode,
    from: u64,
    to: u64,
    caches: &mut [KeyCache],
) -> Vec<Result<Prepared, InitError>> {
    let workers = caches.len() as u64;
    let mut per_worker: Vec<Vec<(u64, Result<Prepared, InitError>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = caches
            .iter_mut()
            .enumerate()
            .map(|(worker, cache)| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let mut height = from + worker as u64;
                    while height <= to {
                        out.push((height, prepare(kura, mode, height, cache)));
                        height += workers;
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| vec![(from, Err(bad(from, "worker thread panicked")))])
            })
            .collect()
    });
    let mut all: Vec<(u64, Result<Prepared, InitError>)> = per_worker.drain(..).flatten().collect();
    all.sort_by_key(|(height, _)| *height);
    all.into_iter().map(|(_, prepared)| prepared).collect()
}

/// Reads and decodes one block, computes its transaction hashes, and in strict mode checks its
/// Merkle root and every transaction signature.
fn prepare<B: Backend>(
    kura: &Kura<B>,
    mode: InitMode,
    height: u64,
    cache: &mut KeyCache,
) -> Result<Prepared, InitError> {
    let payload = kura.read_encoded(height)?;
    let block: CommittedBlock = codec::decode(&payload).map_err(|error| bad(height, error))?;
    if block.block.header.height != height {
        return Err(bad(height, format!("block says height {}", block.block.header.height)));
    }
    let hashes: Vec<TransactionHashes> = block.block.transactions.iter().map(SignedTransaction::hashes).collect();
    let mut signatures = 0;
    if mode == InitMode::Strict {
        let transaction_hashes: Vec<Hash> = hashes.iter().map(|hash| hash.transaction).collect();
        if tx_merkle_root(&transaction_hashes) != block.block.header.tx_merkle_root {
            return Err(bad(height, "transaction Merkle root does not match the transactions"));
        }
        signatures = verify_transaction_signatures(cache, &block.block.transactions, &hashes)
            .map_err(|error| bad(height, error))? as u64;
    }
    Ok(Prepared {
        block,
        hashes,
        signatures,
    })
}

/// Applies prepared blocks in order, checking certificates in strict mode.
fn apply_window(
    wsv: &mut Wsv,
    mode: InitMode,
    window: Vec<Result<Prepared, InitError>>,
    cache: &mut KeyCache,
    report: &mut InitReport,
) -> Result<(), InitError> {
    for prepared in window {
        let prepared = prepared?;
        let height = prepared.block.block.header.height;
        if mode == InitMode::Strict {
            let validators = wsv.validators();
            prepared
                .block
                .certificate
                .verify(&prepared.block.expected_vote(), &validators, cache)
                .map_err(|error| bad(height, format!("commit certificate: {error}")))?;
            prepared
                .block
                .block
                .header
                .check_view_change_proof(&validators, cache)
                .map_err(|error| bad(height, format!("view-change proof: {error}")))?;
        }
        let executed = wsv
            .apply_block(&prepared.block.block, &prepared.hashes)
            .map_err(|error| bad(height, error))?;
        report.blocks += 1;
        report.transactions += prepared.hashes.len() as u64;
        report.rejected_transactions += executed.rejected_count() as u64;
        report.signatures_verified += prepared.signatures;
    }
    Ok(())
}
