//! `kasane plasma watch`: the watching docs/PLASMA.md section 7 asks of users, done by a
//! process. Each round it reads the chain's open exits on L1; an exit whose output is no longer
//! unspent on L2 is looked for among the L2 blocks after the output's, and when a committed
//! transaction spends it, the watcher challenges the exit with that transaction (and takes the
//! bond).
//!
//! An output missing from the L2 unspent set without a spender found (never created: an output
//! of a dishonest root; or a deposit L2 has not noted yet) is reported, not challenged: there is
//! nothing to challenge it with. The watcher remembers how far it searched for each exit, so a
//! round costs only the blocks that are new.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use clap::Args;
use kasane_plasma::chain::{self as l2, L2_CONTRACT};
use kasane_plasma::contract::PlasmaCall;
use kasane_plasma::ledger::Position;
use serde_json::{json, Value};

use super::{block_leaves, l1_instruction, open_exits, outcome_json, Chain, OnL1, WalletArgs};

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub on: OnL1,
    /// The L2 node's API URL.
    #[arg(long)]
    pub l2: String,
    /// Who signs the challenges (and is paid their bonds).
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// One round, then exit (prints what it did as one JSON document).
    #[arg(long)]
    pub once: bool,
    /// Milliseconds between rounds.
    #[arg(long, default_value_t = 1_000)]
    pub poll_ms: u64,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<std::process::ExitCode> {
    let l1_node = Chain::connect(&args.on.l1).await?;
    let l2_node = Chain::connect(&args.l2).await?;
    let wallet = args.wallet.resolve()?;
    // Per exiting position: the last L2 height searched for its spender.
    let mut searched: HashMap<Position, u64> = HashMap::new();
    // Exits reported as unchallengeable, so a long-running watcher says so once.
    let mut reported: HashSet<Position> = HashSet::new();
    loop {
        let mut actions: Vec<Value> = Vec::new();
        let exits = open_exits(&l1_node, &args.on.chain).await?;
        let head = l2_node.height().await?;
        searched.retain(|position, _| exits.iter().any(|exit| exit.position == *position));
        for exit in &exits {
            let position = exit.position;
            if l2_node.entry(L2_CONTRACT, &l2::utxo_key(&position)).await?.is_some() {
                continue; // unspent on L2: a rightful exit
            }
            let first = match position {
                Position::Block { block, .. } => block + 1,
                Position::Deposit { .. } => 1,
            };
            let from = searched.get(&position).map_or(first, |done| done + 1).max(first);
            let mut spender = None;
            for height in from..=head {
                let (leaves, _) = block_leaves(&l2_node, height).await?;
                if let Some(index) = leaves.iter().position(|tx| tx.inputs.contains(&position)) {
                    let proof = kasane_plasma::proof::prove(&leaves, index)?;
                    spender = Some((height, index, leaves[index].clone(), proof));
                    break;
                }
                searched.insert(position, height);
            }
            let Some((height, index, spending_tx, proof)) = spender else {
                if reported.insert(position) || args.once {
                    actions.push(json!({
                        "position": position.to_string(),
                        "unspent_on_l2": false,
                        "spender": null,
                        "note": format!("not unspent on L2 and no spender found up to L2 height {head}: nothing to challenge with yet"),
                    }));
                }
                continue;
            };
            let call = PlasmaCall::ChallengeExit {
                chain: args.on.chain.clone(),
                position,
                spending_tx,
                spending_block: height,
                proof,
            };
            let outcome = l1_node
                .submit_and_wait(l1_node.sign(&wallet, vec![l1_instruction(&call)]))
                .await?;
            actions.push(json!({
                "position": position.to_string(),
                "challenged_with": format!("{height}:{index}"),
                "outcome": outcome_json(&outcome),
            }));
        }
        if args.once {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"open_exits": exits.len(), "actions": actions}))?
            );
            return Ok(std::process::ExitCode::SUCCESS);
        }
        for action in actions {
            println!("{action}");
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
}
