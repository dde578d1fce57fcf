//! `kasane client`: talk to one node's API.

use std::process::ExitCode;

use anyhow::{bail, ensure, Context};
use clap::{Args, Subcommand};
use kasane_model::hash::Blake2bMerkle;
use kasane_model::merkle::{self, InclusionProof};
use kasane_model::transaction::ChainId;
use kasane_model::Hash;
use serde_json::{json, Value};

use super::http::{runtime, ApiClient, Submitted};
use kasane_harness::transfer;
use kasane_node::runtime::now_ms;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The node's API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub node: String,
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submits a transfer between genesis test accounts.
    Submit {
        #[arg(long)]
        from: usize,
        #[arg(long)]
        to: usize,
        #[arg(long, default_value_t = 1)]
        amount: u128,
        /// Payload nonce (default: the current time in milliseconds, truncated).
        #[arg(long)]
        nonce: Option<u32>,
        /// Answer once the transaction is in a committed block, with its height, outcome and
        /// Merkle proof (checked here against the block's header); fail after `--timeout-ms`.
        #[arg(long)]
        wait_commit: bool,
        #[arg(long, default_value_t = 10_000, requires = "wait_commit")]
        timeout_ms: u64,
    },
    /// The node's status.
    Status,
    /// A transaction's status, by transaction or payload hash.
    Tx { hash: String },
    /// A block with its certificate and transaction hashes.
    Block { height: u64 },
    /// A Merkle inclusion proof of a transaction in a block, checked against the block's root.
    Proof { height: u64, tx_hash: String },
    /// World state queries.
    Query {
        #[command(subcommand)]
        what: Query,
    },
}

#[derive(Debug, Subcommand)]
pub enum Query {
    Accounts {
        #[arg(long)]
        domain: Option<String>,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    Account {
        id: String,
    },
    Domains {
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    Peers,
}

fn hashes(value: &Value) -> anyhow::Result<Vec<Hash>> {
    value
        .as_array()
        .context("expected a list of hashes")?
        .iter()
        .map(|item| {
            let text = item.as_str().context("expected a hex string")?;
            Hash::from_hex(text).map_err(|error| anyhow::anyhow!("{text:?}: {error}"))
        })
        .collect()
}

fn hash_field(value: &Value, field: &str) -> anyhow::Result<Hash> {
    let text = value[field].as_str().with_context(|| format!("no {field}"))?;
    Hash::from_hex(text).map_err(|error| anyhow::anyhow!("{field}: {error}"))
}

/// Checks a proof answer of GET /v1/blocks/{h}/proof/{tx} against a block answer of
/// GET /v1/blocks/{h}: the root is the block's, and the path leads from the leaf to it.
pub fn check_proof(block: &Value, proof: &Value) -> anyhow::Result<()> {
    let root = hash_field(block, "tx_merkle_root")?;
    ensure!(
        hash_field(proof, "tx_merkle_root")? == root,
        "the proof names another root"
    );
    let leaf = hash_field(proof, "tx_hash")?;
    let proof = InclusionProof {
        leaf_index: proof["leaf_index"].as_u64().context("no leaf_index")?,
        tree_size: proof["tree_size"].as_u64().context("no tree_size")?,
        path: hashes(&proof["path"])?,
    };
    merkle::verify_inclusion::<Blake2bMerkle>(leaf.as_bytes(), &proof, &root)
        .map_err(|error| anyhow::anyhow!("the proof does not verify: {error}"))
}

pub fn run_client(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let client = ApiClient::new(&args.node)?;
    let value = runtime.block_on(async {
        match args.command {
            ClientCommand::Submit {
                from,
                to,
                amount,
                nonce,
                wait_commit,
                timeout_ms,
            } => {
                let status = client.status().await?;
                let chain: ChainId = status["chain"]
                    .as_str()
                    .context("status has no chain")?
                    .parse()
                    .map_err(|error| anyhow::anyhow!("chain id: {error}"))?;
                let nonce = nonce.unwrap_or(now_ms() as u32);
                let transaction = transfer(&chain, from, to, amount, nonce, now_ms());
                let query = if wait_commit {
                    format!("?wait=commit&timeout_ms={timeout_ms}")
                } else {
                    String::new()
                };
                match client.submit_with(vec![transaction], &query).await? {
                    Submitted::Answered(response) => {
                        let mut value = serde_json::to_value(&response)?;
                        for (index, result) in response.results.iter().enumerate() {
                            if let Some(inclusion) = &result.block {
                                let block = client.get_json(&format!("/v1/blocks/{}", inclusion.height)).await?;
                                check_proof(&block, &inclusion.proof)?;
                                value["results"][index]["block"]["verified"] = json!(true);
                            }
                        }
                        Ok(value)
                    }
                    Submitted::QueueFull => bail!("the node's queue is full; retry later"),
                    Submitted::NotHeld(answer) => bail!("not acknowledged: {answer}"),
                    Submitted::CatchingUp(answer) => bail!("refused: {answer}"),
                }
            }
            ClientCommand::Status => client.status().await,
            ClientCommand::Tx { hash } => client.get_json(&format!("/v1/transactions/{hash}")).await,
            ClientCommand::Block { height } => client.get_json(&format!("/v1/blocks/{height}")).await,
            ClientCommand::Proof { height, tx_hash } => {
                let block = client.get_json(&format!("/v1/blocks/{height}")).await?;
                let proof = client.get_json(&format!("/v1/blocks/{height}/proof/{tx_hash}")).await?;
                check_proof(&block, &proof)?;
                Ok(json!({"proof": proof, "verified": true}))
            }
            ClientCommand::Query { what } => {
                let path = match what {
                    Query::Accounts { domain, offset, limit } => {
                        let domain = domain.map(|domain| format!("&domain={domain}")).unwrap_or_default();
                        format!("/v1/accounts?offset={offset}&limit={limit}{domain}")
                    }
                    Query::Account { id } => format!("/v1/accounts/{id}"),
                    Query::Domains { offset, limit } => format!("/v1/domains?offset={offset}&limit={limit}"),
                    Query::Peers => "/v1/peers".to_string(),
                };
                client.get_json(&path).await
            }
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}
