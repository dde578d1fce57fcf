//! `kasane demo`: the main job. A local cluster under load, end to end, on defaults:
//! genesis (4 validators on loopback), up, load (signed transfers at an open-loop rate), status
//! of every node (same height and head hash), a Merkle proof checked against a block, down.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context};
use clap::Args;
use serde_json::{json, Value};

use super::client::check_proof;
use super::cluster::{down, up};
use super::genesis::{write_cluster, GenesisArgs, PayloadKind};
use super::http::{runtime, ApiClient};
use super::load::{load, print_report, LoadArgs};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Cluster directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Transactions per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Leave the cluster running (with --dir) instead of stopping it.
    #[arg(long, requires = "dir")]
    keep: bool,
    /// Write the summary as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let temporary = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| temporary.path().join("cluster"));
    println!("demo: genesis of {} validators in {}", args.validators, dir.display());
    let genesis = GenesisArgs {
        validators: args.validators,
        observers: 0,
        out: dir.clone(),
        hosts: Vec::new(),
        base_port: None,
        accounts: 100,
        chain: kasane_harness::DEFAULT_CHAIN.to_string(),
        block_time_ms: None,
        commit_timeout_ms: None,
        block_txs_max: None,
        fsync: "always".to_string(),
        queue_capacity: 65_536,
        force: args.dir.is_some(),
        plasma_l2: false,
        payload: PayloadKind::Signed,
    };
    write_cluster(&genesis)?;
    println!("demo: starting the nodes");
    let manifest = match up(&dir, Duration::from_secs(60)) {
        Ok(manifest) => manifest,
        Err(error) => {
            let _ = down(&dir, Duration::from_secs(5));
            return Err(error);
        }
    };
    for node in &manifest.nodes {
        println!("demo:   {} {}", node.name, node.api);
    }
    let result = exercise(&args, &dir, &manifest.api_urls());
    if !args.keep {
        let (stopped, killed) = down(&dir, Duration::from_secs(10))?;
        println!("demo: stopped {stopped} nodes ({killed} needed SIGKILL)");
    }
    let summary = result?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let ok = summary["ok"].as_bool() == Some(true);
    println!("demo: {}", if ok { "ok" } else { "FAILED" });
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn exercise(args: &DemoArgs, dir: &std::path::Path, urls: &[String]) -> anyhow::Result<Value> {
    let load_args = LoadArgs {
        node: urls.to_vec(),
        dir: Some(dir.to_path_buf()),
        follow: Vec::new(),
        rate: args.rate,
        duration: args.duration,
        accounts: None,
        batch_ms: 20,
        wait_secs: 60,
        ttl_ms: kasane_model::transaction::TTL_MS_MAX,
        seed: None,
        json: None,
        quiet: false,
        last_acknowledger: None,
    };
    println!(
        "demo: load of {} transfers/s for {} s across {} nodes",
        args.rate,
        args.duration,
        urls.len()
    );
    runtime()?.block_on(async {
        let report = load(&load_args).await?;
        print_report(&report);
        // Every node at the same height with the same head.
        let clients: Vec<ApiClient> = urls
            .iter()
            .map(|url| ApiClient::new(url))
            .collect::<anyhow::Result<_>>()?;
        let mut statuses = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            statuses.clear();
            for client in &clients {
                statuses.push(client.status().await?);
            }
            let first = (&statuses[0]["height"], &statuses[0]["head_hash"]);
            if statuses
                .iter()
                .all(|status| (&status["height"], &status["head_hash"]) == first)
                || tokio::time::Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (url, status) in urls.iter().zip(&statuses) {
            println!(
                "demo: {url} height {} head {} view {} role {} commits {} view changes {}",
                status["height"],
                status["head_hash"].as_str().unwrap_or("?"),
                status["view"],
                status["role"].as_str().unwrap_or("?"),
                status["commits"],
                status["view_changes"]
            );
        }
        let converged = statuses.iter().all(|status| {
            (&status["height"], &status["head_hash"]) == (&statuses[0]["height"], &statuses[0]["head_hash"])
        });
        // A proof for the first transaction of the last block, checked against the block.
        let height = statuses[0]["height"].as_u64().unwrap_or(0);
        let block = clients[0].get_json(&format!("/v1/blocks/{height}")).await?;
        let proof_ok = match block["tx_hashes"]
            .as_array()
            .and_then(|hashes| hashes.first())
            .and_then(Value::as_str)
        {
            Some(tx_hash) => {
                let proof = clients[0]
                    .get_json(&format!("/v1/blocks/{height}/proof/{tx_hash}"))
                    .await?;
                check_proof(&block, &proof).is_ok()
            }
            None => false,
        };
        println!(
            "demo: nodes converged: {converged}; Merkle proof of a transaction in block {height}: {}",
            if proof_ok { "verified" } else { "FAILED" }
        );
        ensure!(!statuses.is_empty(), "no node answered");
        Ok(json!({
            "load": report,
            "converged": converged,
            "height": height,
            "proof_verified": proof_ok,
            "ok": report.ok && converged && proof_ok,
        }))
    })
}
