//! The node: a replica hosted in tokio, talking QUIC to its peers and HTTP to its clients.
//!
//! Start order: open Kura (a torn tail is cut), write the genesis block into an empty store,
//! replay the store into the world state (fast, or strict by flag), read the lock record, start
//! the network, the consensus task and the API. The replica catches up by block sync once it
//! hears its peers' status. Shutdown (SIGINT, SIGTERM) stops the API and the consensus task,
//! then closes the network; every committed block is already durable under the default fsync
//! policy, so a kill -9 loses nothing acknowledged either.

pub mod allocator;
pub mod api;
pub mod audit;
pub mod byzantine;
pub mod checkpoint;
pub mod commit_wait;
pub mod config;
pub mod hold_log;
pub mod lock_file;
pub mod runtime;
pub mod state;
pub mod verifier;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use kasane_consensus::replica::Replica;
use kasane_kura::init::{fast_init, fast_init_from_checkpoint};
use kasane_kura::{AuditTarget, FileBackend, FsyncPolicy, Kura, KuraConfig};
use kasane_model::crypto::KeyCache;
use kasane_model::{codec, CommittedBlock};
use kasane_p2p::{Network, NetworkConfig};
use kasane_wsv::PluginRegistry;
use tokio::sync::{broadcast, mpsc, watch};

use byzantine::{ByzantineMode, Saboteur};
use checkpoint::CheckpointSaver;
use config::{InitMode, NodeConfig};
use hold_log::{BackgroundHoldLog, HoldLog};
use lock_file::FileLockStore;
use runtime::{status_of, Driver, Shared};
use state::{Metrics, TxTable};

/// Events buffered per stream subscriber before it is told it lagged.
const EVENT_BUFFER: usize = 65_536;

pub fn read_genesis(path: &std::path::Path) -> anyhow::Result<CommittedBlock> {
    let bytes = std::fs::read(path).with_context(|| format!("reading the genesis block {}", path.display()))?;
    codec::decode(&bytes).with_context(|| format!("decoding the genesis block {}", path.display()))
}

/// What [`open_replica`] opened.
struct Opened {
    replica: Replica<FileBackend>,
    /// For a strict start: what the background audit must arrive at.
    audit: Option<AuditTarget>,
    /// The height of the state the replay started from (the local checkpoint's, when it was
    /// used): the saver of checkpoints writes only newer ones.
    started_from: u64,
    /// Outcomes of the hold log's background syncs, for the consensus task.
    holds_synced: tokio::sync::mpsc::UnboundedReceiver<hold_log::HoldsSynced>,
}

/// Opens the store, writing genesis into an empty one, and replays it into the world state, from
/// the local checkpoint when it proves itself. For a strict start, the replay is fast and the
/// strict audit of what it replayed comes back as a target, run in the background once the node
/// has caught up ([`audit`]).
fn open_replica(config: &NodeConfig, options: &NodeOptions) -> anyhow::Result<Opened> {
    let init = options.init;
    let key = config.key()?;
    let genesis = read_genesis(&config.node.genesis)?;
    std::fs::create_dir_all(&config.node.data_dir)
        .with_context(|| format!("creating {}", config.node.data_dir.display()))?;
    let kura_dir = config.node.data_dir.join("kura");
    let backend = FileBackend::open(&kura_dir).with_context(|| format!("opening {}", kura_dir.display()))?;
    let fsync: FsyncPolicy = config
        .kura
        .fsync
        .parse()
        .map_err(|error: String| anyhow::anyhow!(error))?;
    let kura_config = KuraConfig {
        blocks_per_chunk: config.kura.blocks_per_chunk,
        fsync,
        read_only: false,
    };
    let (mut kura, report) =
        Kura::open(backend, kura_config).with_context(|| format!("opening the block store {}", kura_dir.display()))?;
    tracing::info!(height = kura.height(), report = ?report, "block store open");
    if kura.height() == 0 {
        kura.append(&genesis).context("writing the genesis block")?;
        tracing::info!(hash = %genesis.block.hash(), "genesis block written");
    } else {
        let first = kura.hash_at(1);
        ensure!(
            first == Some(genesis.block.hash()),
            "the block store in {} starts with block {:?}, not this cluster's genesis {}: it belongs to another chain",
            kura_dir.display(),
            first.map(|hash| hash.to_hex()),
            genesis.block.hash()
        );
    }
    let started = Instant::now();
    let height = kura.height();
    let mut last_log = Instant::now();
    let mut progress = |done: u64, total: u64| {
        if last_log.elapsed().as_secs() >= 2 {
            last_log = Instant::now();
            tracing::info!(done, total, "replaying the block store");
        }
    };
    let cache = KeyCache::with_limits(config.memory.key_cache_entries, config.memory.verified_signatures);
    let audit = match (init, kura.base()) {
        (InitMode::Strict, Some(base)) => {
            tracing::warn!(
                base,
                below = kura.lower_height(),
                "strict init needs every block from genesis, and this store was restored from a snapshot at {base} and still fetches the blocks below it: no audit this time"
            );
            false
        }
        (InitMode::Strict, None) => true,
        (InitMode::Fast, _) => false,
    };
    // A strict start replays fast and audits in the background (docs/NODE.md, "Strict init").
    // Either replays from the local checkpoint when the store keeps one that proves itself.
    let plugins = plugins_with(cache.clone());
    let (wsv, report) = if config.kura.checkpoint_file {
        fast_init_from_checkpoint(&kura, plugins, Some(&mut progress))
    } else {
        fast_init(&kura, plugins, Some(&mut progress))
    }
    .with_context(|| format!("{init:?} init of the world state"))?;
    if !report.checkpoints_refused.is_empty() {
        let refused = report.checkpoints_refused.join("; ");
        if report.started_from > kura.base().unwrap_or(0) {
            tracing::info!(from = report.started_from, %refused, "started from an older local checkpoint");
        } else {
            tracing::warn!(%refused, "no local checkpoint was used: replayed the whole store instead");
        }
    }
    let audit = audit.then(|| AuditTarget {
        height: wsv.height(),
        head_hash: wsv.head_hash(),
        state_commitment: wsv.state_commitment(),
    });
    tracing::info!(
        mode = ?init,
        height,
        from = report.started_from,
        blocks = report.blocks,
        transactions = report.transactions,
        seconds = started.elapsed().as_secs_f64(),
        "world state ready"
    );
    let lock_store = FileLockStore::open(&config.node.data_dir.join("consensus.lock"))?;
    let hold_dir = config.node.data_dir.join("held");
    let holds = HoldLog::open(&hold_dir).with_context(|| format!("opening the hold log {}", hold_dir.display()))?;
    tracing::info!(held = holds.len(), segments = holds.segments(), "hold log read");
    let (holds_synced_tx, holds_synced_rx) = tokio::sync::mpsc::unbounded_channel();
    let holds = BackgroundHoldLog::start(holds, holds_synced_tx)?;
    let mut consensus = config.consensus.to_config();
    consensus.byzantine_skip_own_commit = options.byzantine.is_some_and(ByzantineMode::skips_own_commit);
    let replica = Replica::from_parts(
        key,
        consensus,
        kura,
        wsv,
        Box::new(lock_store),
        config.api.queue_capacity,
    )?
    .with_key_cache(cache)
    .with_hold_store(Box::new(holds))
    // A node that is Byzantine on purpose sends whole proposals, so its rewrites work on blocks.
    .with_proposal_digests(options.byzantine.is_none());
    Ok(Opened {
        replica,
        audit,
        started_from: report.started_from,
        holds_synced: holds_synced_rx,
    })
}

/// The validator plugins and contracts every kasane node registers: the built-in plugins, and
/// plasma's plugin and contracts (docs/PLASMA.md), so any chain may serve as a plasma L1 or L2.
/// Every node of a chain must register the same set.
/// `cache` is the node's verified-signature memory, which the plasma plugin shares with the
/// verifier stages that check plasma signatures in batches ahead of it.
pub fn plugins_with(cache: KeyCache) -> PluginRegistry {
    kasane_plasma::chain::node_registry(cache)
}

/// [`plugins_with`] a memory of its own (tools that replay or build chains).
pub fn plugins() -> PluginRegistry {
    plugins_with(KeyCache::new())
}

/// How to start a node, beyond its config file.
#[derive(Debug, Clone, Copy)]
pub struct NodeOptions {
    pub init: InitMode,
    /// Misbehave on purpose (fault-injection experiments only).
    pub byzantine: Option<ByzantineMode>,
}

/// Runs a node until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    options: NodeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let key = config.key()?;
    if let Some(mode) = options.byzantine {
        tracing::warn!(%mode, "this node is Byzantine on purpose (--unsafe-byzantine): it breaks the protocol");
    }
    let Opened {
        replica,
        audit: audit_target,
        started_from,
        holds_synced: holds_synced_rx,
    } = tokio::task::block_in_place(|| open_replica(&config, &options))?;
    let peers = config.peers()?;
    let mut members: Vec<_> = replica.wsv().validators().into_iter().collect();
    members.extend(peers.iter().map(|peer| peer.key));
    let mut network_config = NetworkConfig::new(config.p2p.listen, peers, members);
    network_config.faults = config.faults.clone();
    let (network, inbound) = Network::start(&key, network_config).context("starting the p2p network")?;

    let cache = replica.key_cache();
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let (reads_tx, reads_rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (status_tx, status_rx) = watch::channel(status_of(&replica));
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let shared = Arc::new(Shared {
        commands: commands_tx,
        reads: reads_tx,
        status: status_rx,
        events,
        network: network.clone(),
        metrics: Metrics::default(),
        transactions: Mutex::new(TxTable::new(config.memory.transaction_table_entries)),
        recent_block_transactions_max: config.memory.recent_block_transactions,
        queue_capacity: config.api.queue_capacity,
        hold_wait: std::time::Duration::from_millis(config.api.hold_wait_ms),
        admitting: Default::default(),
        body_bytes_max: config.api.body_bytes_max,
        stop: stop_rx.clone(),
        key_cache: cache.clone(),
        recent_blocks: Mutex::new(std::collections::BTreeMap::new()),
        auditing: Default::default(),
    });

    let (consensus_tx, consensus_rx) = mpsc::channel(1024);
    let (others_tx, others_rx) = mpsc::channel(1024);
    tokio::spawn(verifier::verifier(inbound.consensus, consensus_tx, cache.clone(), None));
    tokio::spawn(verifier::verifier(inbound.sync, others_tx.clone(), cache.clone(), None));
    tokio::spawn(verifier::verifier(
        inbound.gossip,
        others_tx,
        cache.clone(),
        Some(shared.clone()),
    ));

    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API address {}", config.api.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(config.api.admin_listen)
        .await
        .with_context(|| format!("binding the admin address {}", config.api.admin_listen))?;
    tracing::info!(
        key = %key.public_key(),
        p2p = %config.p2p.listen,
        api = %config.api.listen,
        admin = %config.api.admin_listen,
        height = replica.wsv().height(),
        "node started"
    );

    let mut driver = Driver::new(replica, network.clone(), shared.clone(), status_tx);
    if let Some(mode) = options.byzantine {
        let nodes = config
            .p2p
            .peers
            .iter()
            .map(|peer| kasane_model::PublicKey::from_hex(&peer.key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow::anyhow!("a peer key in the config: {error}"))?;
        driver.set_saboteur(Saboteur::new(mode, key.clone(), nodes));
    }
    if config.kura.checkpoint_file {
        driver.save_checkpoints(CheckpointSaver::new(config.node.data_dir.join("kura"), started_from));
    }
    if config.memory.trim_interval_ms > 0 {
        let interval = std::time::Duration::from_millis(config.memory.trim_interval_ms);
        tokio::spawn(allocator::trim_every(interval, stop_rx.clone()));
    }
    let (halt_tx, mut halt_rx) = tokio::sync::watch::channel(None);
    driver.report_halt(halt_tx);
    let consensus_task = tokio::spawn(driver.run(
        reads_rx,
        commands_rx,
        consensus_rx,
        others_rx,
        holds_synced_rx,
        stop_rx.clone(),
    ));

    let stopped = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let api_server =
        axum::serve(api_listener, api::router(shared.clone())).with_graceful_shutdown(stopped(stop_rx.clone()));
    let api = tokio::spawn(async move { api_server.await });
    let admin_server =
        axum::serve(admin_listener, api::admin_router(shared.clone())).with_graceful_shutdown(stopped(stop_rx.clone()));
    let admin = tokio::spawn(async move { admin_server.await });

    // A strict start's audit: a store that fails it stops the node.
    let audit = audit_target.map(|target| {
        tokio::spawn(audit::run(
            config.node.data_dir.join("kura"),
            config.kura.blocks_per_chunk,
            target,
            shared.clone(),
        ))
    });
    let audit_failed = async move {
        match audit {
            Some(audit) => match audit.await {
                Ok(Ok(summary)) => {
                    tracing::info!(
                        height = summary.height,
                        signatures = summary.signatures,
                        seconds = summary.seconds,
                        audit_peak_rss_mib = summary.peak_rss_mib,
                        "strict init: the audit passed"
                    );
                    std::future::pending().await
                }
                Ok(Err(reason)) => reason,
                Err(error) => format!("the audit task failed: {error}"),
            },
            None => std::future::pending().await,
        }
    };
    let halted = async move {
        match halt_rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The consensus task ended without saying why: only at shutdown.
            Err(_) => std::future::pending().await,
        }
    };
    let failure = tokio::select! {
        _ = shutdown => None,
        reason = audit_failed => {
            tracing::error!(%reason, "strict init: the audit of the block store failed; stopping the node");
            Some(format!("the strict audit of the block store failed: {reason}"))
        }
        reason = halted => Some(format!("consensus stopped: {reason}")),
    };
    tracing::info!("shutting down");
    stop_tx.send_replace(true);
    let grace = std::time::Duration::from_secs(3);
    let _ = tokio::time::timeout(grace, api).await;
    let _ = tokio::time::timeout(grace, admin).await;
    drop(shared);
    let mut consensus_task = consensus_task;
    match tokio::time::timeout(grace, &mut consensus_task).await {
        Ok(Ok(replica)) => {
            tracing::info!(height = replica.wsv().height(), "consensus stopped");
        }
        Ok(Err(error)) => bail!("the consensus task failed: {error}"),
        Err(_) => {
            // It is inside a long step (a burst of synced blocks, each appended whole). Cancel it
            // at its next await and wait for that, so it is never polled again while the runtime
            // shuts down.
            tracing::warn!("the consensus task did not stop in time; cancelling it after its current step");
            consensus_task.abort();
            let _ = consensus_task.await;
        }
    }
    network.shutdown().await;
    if let Some(reason) = failure {
        bail!("{reason}");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
