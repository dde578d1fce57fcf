//! The audit of a strict start (docs/NODE.md, "Strict init"): the node replays its store fast,
//! rejoins, and verifies every Merkle root, certificate and signature of what it replayed on a
//! thread of its own once it has caught up; a store that fails stops the node.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kasane_kura::{audit_to, AuditTarget, FileBackend, InitReport, Kura, KuraConfig};

use super::runtime::Shared;

/// Heights below the cluster at which the node counts as caught up for the audit to start.
const CAUGHT_UP_WITHIN: u64 = 5;
/// The audit starts at the latest this long after the node started, caught up or not.
const START_WITHIN: Duration = Duration::from_secs(60);
/// Decoding and verifying threads of the audit, besides the one that applies: the node and its
/// peers keep the rest of the machine.
const AUDIT_WORKERS: usize = 1;

/// Waits until the node has caught up (or [`START_WITHIN`]), then audits the store in `dir` up
/// to `target` on a thread of its own, with `shared.auditing` set meanwhile (the status route
/// shows it). Resolves with the report, or why the store failed.
pub async fn run(
    dir: PathBuf,
    blocks_per_chunk: u32,
    target: AuditTarget,
    shared: Arc<Shared>,
) -> Result<InitReport, String> {
    let mut status = shared.status.clone();
    let caught_up = status
        .wait_for(|status| status.cluster_height > 0 && status.height + CAUGHT_UP_WITHIN >= status.cluster_height);
    let _ = tokio::time::timeout(START_WITHIN, caught_up).await;
    tracing::info!(
        height = target.height,
        "strict init: auditing every certificate and signature of the replayed store in the background"
    );
    let (done, result) = tokio::sync::oneshot::channel();
    shared.auditing.store(true, Ordering::Relaxed);
    let spawned = std::thread::Builder::new().name("kura-audit".into()).spawn(move || {
        let _ = done.send(audit(dir, blocks_per_chunk, &target));
    });
    let outcome = match spawned {
        Err(error) => Err(format!("starting the audit thread: {error}")),
        Ok(_) => result
            .await
            .unwrap_or_else(|_| Err("the audit thread stopped without an answer".into())),
    };
    shared.auditing.store(false, Ordering::Relaxed);
    outcome
}

/// The audit itself, on a read-only view of the store (consensus keeps appending beside it).
fn audit(dir: PathBuf, blocks_per_chunk: u32, target: &AuditTarget) -> Result<InitReport, String> {
    let backend = FileBackend::open(&dir).map_err(|error| format!("opening {}: {error}", dir.display()))?;
    let config = KuraConfig {
        blocks_per_chunk,
        read_only: true,
        ..KuraConfig::default()
    };
    let (kura, _) = Kura::open(backend, config).map_err(|error| format!("opening {}: {error}", dir.display()))?;
    audit_to(&kura, target, super::plugins(), AUDIT_WORKERS).map_err(|error| error.to_string())
}
