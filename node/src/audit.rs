//! The audit of a strict start (docs/NODE.md, "Strict init"): the node replays its store fast,
//! rejoins, and once it has caught up verifies every Merkle root, certificate and signature of
//! what it replayed, in a process of its own (`kasane kura audit`); a store that fails stops the
//! node.
//!
//! A process, not a thread: the audit builds a second world state (hundreds of MB on a long
//! chain) and frees it at the end. In the node's own heap that raised the node's peak (851-888
//! MiB against about 700 in the soak) and left holes for the allocator to keep; a process of its
//! own hands all of it back when it exits. The child is killed when the node stops, and exits by
//! itself if the node dies (it watches its parent).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kasane_kura::{audit_to, AuditTarget, FileBackend, InitReport, Kura, KuraConfig};
use serde::{Deserialize, Serialize};

use super::runtime::Shared;

/// Heights below the cluster at which the node counts as caught up for the audit to start.
const CAUGHT_UP_WITHIN: u64 = 5;
/// The audit starts at the latest this long after the node started, caught up or not.
const START_WITHIN: Duration = Duration::from_secs(60);
/// Decoding and verifying threads of the audit, besides the one that applies: the node and its
/// peers keep the rest of the machine.
pub const AUDIT_WORKERS: usize = 1;

/// What a passed audit reports (`kasane kura audit` prints it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditSummary {
    pub height: u64,
    pub blocks: u64,
    pub signatures: u64,
    pub seconds: f64,
    /// The audit process's peak resident memory (None where /proc is not there).
    pub peak_rss_mib: Option<f64>,
}

impl AuditSummary {
    pub fn of(report: &InitReport) -> AuditSummary {
        AuditSummary {
            height: report.height,
            blocks: report.blocks,
            signatures: report.signatures_verified,
            seconds: report.elapsed.as_secs_f64(),
            peak_rss_mib: super::allocator::status_kib("self", "VmHWM").map(|kib| kib as f64 / 1024.0),
        }
    }
}

/// Waits until the node has caught up (or `START_WITHIN`), then audits the store in `dir` up
/// to `target` in a child process of this binary, with `shared.auditing` set meanwhile (the
/// status route shows it). Resolves with the summary, or why the store failed. Dropping the
/// future kills the child.
pub async fn run(
    dir: PathBuf,
    blocks_per_chunk: u32,
    target: AuditTarget,
    shared: Arc<Shared>,
) -> Result<AuditSummary, String> {
    let mut status = shared.status.clone();
    let caught_up = status
        .wait_for(|status| status.cluster_height > 0 && status.height + CAUGHT_UP_WITHIN >= status.cluster_height);
    let _ = tokio::time::timeout(START_WITHIN, caught_up).await;
    tracing::info!(
        height = target.height,
        "strict init: auditing every certificate and signature of the replayed store in the background"
    );
    shared.auditing.store(true, Ordering::Relaxed);
    let outcome = audit_in_child(&dir, blocks_per_chunk, &target).await;
    shared.auditing.store(false, Ordering::Relaxed);
    outcome
}

async fn audit_in_child(dir: &Path, blocks_per_chunk: u32, target: &AuditTarget) -> Result<AuditSummary, String> {
    let exe = std::env::current_exe().map_err(|error| format!("finding this binary to run the audit: {error}"))?;
    let output = tokio::process::Command::new(exe)
        .args(["kura", "audit", "--dir"])
        .arg(dir)
        .args(["--blocks-per-chunk", &blocks_per_chunk.to_string()])
        .args(["--height", &target.height.to_string()])
        .args(["--head-hash", &target.head_hash.to_hex()])
        .args(["--state-commitment", &target.state_commitment.to_hex()])
        .args(["--workers", &AUDIT_WORKERS.to_string()])
        .args(["--parent", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| format!("running the audit process: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        return serde_json::from_str(stdout.trim())
            .map_err(|error| format!("the audit process passed, but its report is unreadable ({error}): {stdout}"));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = [stdout.trim(), stderr.trim()]
        .into_iter()
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(format!("the audit process exited with {}: {said}", output.status))
}

/// The audit itself, on a read-only view of the store in `dir` (consensus keeps appending
/// beside it), with `workers` decoding and verifying threads. What `kasane kura audit` runs.
pub fn audit_store(
    dir: &Path,
    blocks_per_chunk: u32,
    target: &AuditTarget,
    workers: usize,
) -> Result<InitReport, String> {
    let backend = FileBackend::open(dir).map_err(|error| format!("opening {}: {error}", dir.display()))?;
    let config = KuraConfig {
        blocks_per_chunk,
        read_only: true,
        ..KuraConfig::default()
    };
    let (kura, _) = Kura::open(backend, config).map_err(|error| format!("opening {}: {error}", dir.display()))?;
    audit_to(&kura, target, super::plugins(), workers).map_err(|error| error.to_string())
}
