//! `kasane node` (one node in the foreground), `kasane up` and `kasane down` (every node of a
//! cluster directory in the background).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::http::{runtime, ApiClient};
use kasane_harness::Manifest;
use kasane_node::byzantine::ByzantineMode;
use kasane_node::config::{InitMode, NodeConfig};
use kasane_node::NodeOptions;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's config.toml (made by `kasane genesis`).
    #[arg(long)]
    pub config: PathBuf,
    /// How to rebuild the world state from the block store; overrides the config file.
    #[arg(long, value_enum)]
    pub init: Option<InitMode>,
    /// Worker threads of the async runtime (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Break the protocol on purpose, for fault-injection experiments: silent, equivocate,
    /// invalid-block or withhold-commit:N (N: the victim's node index). Never on a real network.
    #[arg(long, value_name = "BEHAVIOUR")]
    pub unsafe_byzantine: Option<ByzantineMode>,
}

pub fn run_node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(&args.config)?;
    let init = args.init.unwrap_or(config.kura.init);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.enable_all().build().context("starting the async runtime")?;
    let options = NodeOptions {
        init,
        byzantine: args.unsafe_byzantine,
    };
    runtime.block_on(kasane_node::run(config, options, kasane_node::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The cluster directory (made by `kasane genesis --out DIR`).
    #[arg(long)]
    pub dir: PathBuf,
    /// How long to wait for every node to be healthy.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

fn pid_file(dir: &Path, node: &str) -> PathBuf {
    dir.join(node).join("node.pid")
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process runs. A child of this process that exited is reaped here (a zombie would
/// otherwise look alive to a signal probe until the parent exits).
fn alive(pid: i32) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => true,
        Ok(_) => false,
        // Not our child: ask the kernel whether it exists.
        Err(_) => kill(Pid::from_raw(pid), None).is_ok(),
    }
}

/// The last lines of a node's log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts every node of `dir` in the background and waits until all are healthy. Returns the
/// manifest.
pub fn up(dir: &Path, timeout: Duration) -> anyhow::Result<Manifest> {
    let manifest = Manifest::load(dir)?;
    let exe = std::env::current_exe().context("finding the kasane executable")?;
    for node in &manifest.nodes {
        let pid_path = pid_file(dir, &node.name);
        if let Some(pid) = read_pid(&pid_path) {
            if alive(pid) {
                bail!(
                    "{} is already running (pid {pid}); `kasane down --dir {}` first",
                    node.name,
                    dir.display()
                );
            }
        }
        let child = spawn_node(&exe, dir, node, &[])?;
        std::fs::write(&pid_path, child.id().to_string()).with_context(|| format!("writing {}", pid_path.display()))?;
    }
    wait_healthy(dir, &manifest, timeout)?;
    Ok(manifest)
}

/// Starts `kasane node` for one node of the cluster in `dir`, in the background, logging to
/// its directory's node.log (appended), with `extra` arguments after `--config`.
pub fn spawn_node(
    exe: &Path,
    dir: &Path,
    node: &kasane_harness::ManifestNode,
    extra: &[String],
) -> anyhow::Result<std::process::Child> {
    let node_dir = dir.join(&node.dir);
    let log_path = node_dir.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("node")
        .arg("--config")
        .arg(node_dir.join("config.toml"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        // Its own process group: a Ctrl-C meant for the shell does not reach the cluster.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    command.spawn().with_context(|| format!("starting {}", node.name))
}

/// Waits until every node answers /v1/status and sees all its peers.
pub fn wait_healthy(dir: &Path, manifest: &Manifest, timeout: Duration) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let peers = manifest.nodes.len() - 1;
    let deadline = Instant::now() + timeout;
    runtime.block_on(async {
        for node in &manifest.nodes {
            let client = ApiClient::new(&node.api)?;
            loop {
                let last = match client.status().await {
                    Ok(status) if status["peers_connected"].as_u64() >= Some(peers as u64) => break,
                    Ok(status) => format!("{} of {peers} peers connected", status["peers_connected"]),
                    Err(error) => error.to_string(),
                };
                if let Some(pid) = read_pid(&pid_file(dir, &node.name)) {
                    if !alive(pid) {
                        bail!(
                            "{} exited; the end of its log:\n{}",
                            node.name,
                            log_tail(&dir.join(&node.dir).join("node.log"), 20)
                        );
                    }
                }
                if Instant::now() > deadline {
                    bail!("{} is not healthy after {timeout:?}: {last}", node.name);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    })
}

pub fn run_up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let manifest = up(&args.dir, Duration::from_secs(args.timeout_secs))?;
    println!("{} nodes up:", manifest.nodes.len());
    for node in &manifest.nodes {
        println!(
            "  {} {} (pid {})",
            node.name,
            node.api,
            read_pid(&pid_file(&args.dir, &node.name)).unwrap_or(0)
        );
    }
    println!(
        "logs in {}/node-*/node.log; stop with: kasane down --dir {}",
        args.dir.display(),
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub grace_secs: u64,
}

/// Stops one process: SIGTERM, then SIGKILL after `grace`. Returns whether it needed SIGKILL.
pub fn stop_process(pid: i32, grace: Duration) -> bool {
    let process = Pid::from_raw(pid);
    if kill(process, Signal::SIGTERM).is_err() {
        return false;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(pid) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(process, Signal::SIGKILL);
    true
}

/// Stops every node of `dir` that has a pid file. Returns (stopped, killed).
pub fn down(dir: &Path, grace: Duration) -> anyhow::Result<(usize, usize)> {
    let manifest = Manifest::load(dir)?;
    let mut stopped = 0;
    let mut killed = 0;
    for node in &manifest.nodes {
        let path = pid_file(dir, &node.name);
        let Some(pid) = read_pid(&path) else {
            continue;
        };
        if alive(pid) {
            if stop_process(pid, grace) {
                killed += 1;
            }
            stopped += 1;
        }
        let _ = std::fs::remove_file(&path);
    }
    Ok((stopped, killed))
}

pub fn run_down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let (stopped, killed) = down(&args.dir, Duration::from_secs(args.grace_secs))?;
    println!("stopped {stopped} nodes ({killed} needed SIGKILL)");
    Ok(ExitCode::SUCCESS)
}
