//! The settlement agent (docs/PLASMA.md section 6).
//!
//! Each turn it asks L1 for the chain's record and L2 for its height, then:
//! - commits the roots of the L2 blocks L1 does not hold yet, in height order, up to
//!   [`ROOTS_PER_CALL_MAX`] in one L1 transaction, and waits for the outcome;
//! - copies L1 deposits that L2 has not noted yet to L2, in number order, and waits.
//!
//! It keeps nothing of its own between turns, so a restart resumes exactly where L1 and L2
//! stand: the contract takes only the next root number, so no root is skipped, and a root
//! already committed is refused, so none is committed twice. A refusal because another copy of
//! the agent (or an earlier life of this one) got there first is success when L1 holds the same
//! root, and an alarm, which stops the agent, when it holds a different one. A node that cannot
//! be reached, a full queue or a timeout is retried with backoff: not deciding is never turned
//! into a skipped or a wrong root.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use kasane_model::codec;
use kasane_model::hash::Hash;
use kasane_model::ids::AccountId;
use kasane_plasma::chain::{L2Call, L2_CONTRACT, NOTED_KEY};
use kasane_plasma::contract::{self as l1, DepositRecord, PlasmaCall, ROOTS_PER_CALL_MAX};
use kasane_plasma::ledger::Output;

use super::{chain_record, committed_root, l1_instruction, l2_root, operator_account, read_key, Chain, OnL1, Wallet};

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub on: OnL1,
    /// The L2 node's API.
    #[arg(long)]
    pub l2: String,
    /// The operator's secret key file (the L2 chain's genesis.key).
    #[arg(long)]
    pub key: PathBuf,
    /// Milliseconds between turns when there is nothing to do.
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// No line per commit.
    #[arg(long)]
    pub quiet: bool,
}

/// Most deposits noted in one L2 transaction (several `NoteDeposits` calls of up to
/// `NOTES_PER_CALL_MAX` each, within the transaction size limit).
const NOTES_PER_TRANSACTION_MAX: usize = 512;

#[derive(Debug)]
struct Agent {
    args: AgentArgs,
    l1: Chain,
    l2: Chain,
    l1_operator: Wallet,
    l2_operator: Wallet,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<std::process::ExitCode> {
    let key = read_key(&args.key)?;
    let mut backoff = Duration::from_millis(100);
    // Connect, retrying: the agent may start before the nodes do.
    let (l1, l2) = loop {
        match (Chain::connect(&args.on.l1).await, Chain::connect(&args.l2).await) {
            (Ok(l1), Ok(l2)) => break (l1, l2),
            (Err(error), _) | (_, Err(error)) => {
                eprintln!("agent: waiting for the nodes: {error:#}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let agent = Agent {
        l1_operator: Wallet {
            account: operator_account(&args.on.chain)?,
            key: key.clone(),
        },
        l2_operator: Wallet {
            account: AccountId::new("genesis", "genesis").expect("constant names are valid"),
            key,
        },
        args,
        l1,
        l2,
    };
    eprintln!(
        "agent: chain {} from {} to {}",
        agent.args.on.chain,
        agent.l2.api.base(),
        agent.l1.api.base()
    );
    let mut backoff = Duration::from_millis(100);
    loop {
        match agent.turn().await {
            Ok(worked) => {
                backoff = Duration::from_millis(100);
                if !worked {
                    tokio::time::sleep(Duration::from_millis(agent.args.poll_ms)).await;
                }
            }
            Err(error) if error.is::<Alarm>() => return Err(error),
            Err(error) => {
                eprintln!("agent: {error:#}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// L1 holds a root that differs from the L2 block's: someone else committed roots for this
/// chain. The agent stops rather than build on it.
#[derive(Debug, thiserror::Error)]
#[error("alarm: L1 holds root {number} = {held}, but L2 block {number}'s root is {computed}")]
struct Alarm {
    number: u64,
    held: Hash,
    computed: Hash,
}

impl Agent {
    /// One turn; whether it did anything.
    async fn turn(&self) -> anyhow::Result<bool> {
        let committed_roots = self.commit_roots().await?;
        let noted = self.note_deposits().await?;
        Ok(committed_roots || noted)
    }

    async fn commit_roots(&self) -> anyhow::Result<bool> {
        let chain = &self.args.on.chain;
        let record = chain_record(&self.l1, chain).await?;
        let l2_height = self.l2.height().await?;
        if l2_height <= record.roots {
            return Ok(false);
        }
        let first = record.roots + 1;
        let last = l2_height.min(record.roots + ROOTS_PER_CALL_MAX as u64);
        let mut roots = Vec::with_capacity((last - first + 1) as usize);
        let mut leaves = 0;
        for height in first..=last {
            let (root, count) = l2_root(&self.l2, height).await?;
            roots.push(root);
            leaves += count;
        }
        let call = PlasmaCall::CommitRoots {
            chain: chain.clone(),
            first,
            roots: roots.clone(),
        };
        let started = Instant::now();
        let transaction = self.l1.sign(&self.l1_operator, vec![l1_instruction(&call)]);
        match self.l1.submit_and_wait(transaction).await? {
            Ok(l1_height) => {
                if !self.args.quiet {
                    eprintln!(
                        "agent: roots {first}..={last} ({leaves} plasma transactions) committed at L1 height {l1_height} in {} ms",
                        started.elapsed().as_millis()
                    );
                }
                Ok(true)
            }
            Err(reason) => {
                // Refused: most likely another life of the agent committed these already.
                // Whatever L1 now holds must be exactly what L2 says.
                for (offset, computed) in roots.iter().enumerate() {
                    let number = first + offset as u64;
                    match committed_root(&self.l1, chain, number).await? {
                        Some(held) if held.root == *computed => {}
                        Some(held) => {
                            return Err(Alarm {
                                number,
                                held: held.root,
                                computed: *computed,
                            }
                            .into())
                        }
                        None if offset == 0 => bail!("L1 refused roots {first}..={last}: {reason}"),
                        None => break,
                    }
                }
                Ok(true)
            }
        }
    }

    async fn note_deposits(&self) -> anyhow::Result<bool> {
        let chain = &self.args.on.chain;
        let record = chain_record(&self.l1, chain).await?;
        let noted = match self.l2.entry(L2_CONTRACT, NOTED_KEY).await? {
            Some(bytes) => codec::decode_body::<u64>("noted deposits", &bytes).context("the L2 deposit count")?,
            None => 0,
        };
        if record.deposits <= noted {
            return Ok(false);
        }
        let last = record.deposits.min(noted + NOTES_PER_TRANSACTION_MAX as u64);
        let mut outputs = Vec::new();
        for number in noted..last {
            let bytes = self
                .l1
                .entry(l1::L1_CONTRACT, &l1::deposit_key(chain, number))
                .await?
                .with_context(|| format!("L1 counts {} deposits but has no record of {number}", record.deposits))?;
            let deposit: DepositRecord = codec::decode_body("deposit", &bytes).context("a deposit record")?;
            outputs.push(Output {
                owner: deposit.owner,
                asset: deposit.asset,
                amount: deposit.amount,
            });
        }
        let instructions = outputs
            .chunks(kasane_plasma::chain::NOTES_PER_CALL_MAX)
            .scan(noted, |first, chunk| {
                let call = L2Call::NoteDeposits {
                    first: *first,
                    outputs: chunk.to_vec(),
                };
                *first += chunk.len() as u64;
                Some(call.instruction())
            })
            .collect();
        let transaction = self.l2.sign(&self.l2_operator, instructions);
        match self.l2.submit_and_wait(transaction).await? {
            Ok(height) => {
                if !self.args.quiet {
                    eprintln!("agent: deposits {noted}..{last} noted at L2 height {height}");
                }
            }
            // Refused: another life of the agent noted them first; the next turn re-reads.
            Err(reason) => eprintln!("agent: L2 refused the notes of deposits {noted}..{last}: {reason}"),
        }
        Ok(true)
    }
}
