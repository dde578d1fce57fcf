//! The C allocator, on glibc: how many arenas it keeps, and handing freed memory back.
//!
//! glibc gives a thread that meets contention an arena of its own, up to eight per core, and
//! memory freed into an arena is kept there for that arena's next requests. A node's threads
//! (tokio workers, QUIC, the consensus task, blocking verifiers) move large buffers between them:
//! blocks, sync chunks, signature batches. On the wipe-under-load manifest (docs/TESTNET.md) the
//! default let a validator that was never restarted grow 10% over 50 s with every table at its
//! bound, and the wiped one settle at 1,785 MiB against 1,071; two arenas gave 3% and 1,119 MiB
//! at the same throughput (`kasane bench`: 14,470 and 14,611 tps against 14,730 and 14,375).
//! Trimming every 5 s (`[memory] trim_interval_ms`) on top: 0-6% over the same 50 s, and the
//! wiped node 841 MiB, its peak 1,017 MiB against 1,305 (and 1,952 with glibc's defaults).
#![allow(unsafe_code)]

/// A memory figure of a process from `/proc/<process>/status`, in KiB (`field` is `VmRSS`,
/// `VmHWM`, ...; `process` a pid or `self`); None off Linux or once the process is gone.
pub fn status_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Arenas a node process keeps, unless `MALLOC_ARENA_MAX` says otherwise.
pub const MALLOC_ARENAS: i32 = 2;

/// Limits glibc's arenas to [`MALLOC_ARENAS`], unless the environment set `MALLOC_ARENA_MAX`
/// (which glibc has read already). Call it first thing in `main`, before any thread starts.
/// Returns whether the limit was set here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    // SAFETY: mallopt only sets an allocator parameter; it takes no pointers, and glibc
    // serialises it against allocations.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() -> bool {
    false
}

/// Hands the free pages of every arena back to the system (glibc's `malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim takes a padding size and touches only the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

/// Trims every `interval` until `stop` turns true, on a blocking thread (a trim of a large heap
/// takes milliseconds).
pub async fn trim_every(interval: std::time::Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let started = std::time::Instant::now();
        if tokio::task::spawn_blocking(trim).await.is_err() {
            return;
        }
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "allocator trimmed");
    }
}
