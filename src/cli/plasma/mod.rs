//! `kasane plasma`: the settlement agent, the wallet, and the benchmark of the plasma Layer 2
//! (docs/PLASMA.md).
//!
//! The L1 and the L2 are ordinary kasane chains. The L1 holds the `plasma` contract; the L2 was
//! made with `kasane genesis --plasma-l2`, so its test accounts send only plasma transactions.
//! The operator's key is the L2 genesis key: it notes deposits on L2 (as the L2 genesis
//! authority) and commits roots on L1 (as the account `operator@<chain>` that `register`
//! creates).

pub mod agent;
pub mod bench;
pub mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::{Args, Subcommand};
use kasane_model::codec;
use kasane_model::hash::Hash;
use kasane_model::ids::{AccountId, AssetDefinitionId, Name};
use kasane_model::instruction::Instruction;
use kasane_model::merkle::InclusionProof;
use kasane_model::transaction::{ChainId, TTL_MS_MAX};
use kasane_model::{KeyPair, PublicKey, SignedTransaction, TransactionPayload};
use kasane_plasma::chain::{self as l2, L2Call, L2_CONTRACT};
use kasane_plasma::contract::{self as l1, ChainRecord, DepositRecord, ExitRecord, PlasmaCall, L1_CONTRACT};
use kasane_plasma::ledger::{Output, PlasmaTx, Position};
use kasane_plasma::proof::{self, RootAccumulator};
use serde_json::{json, Value};

use super::http::{runtime, ApiClient, Submitted};
use kasane_harness::test_account;
use kasane_node::runtime::now_ms;

#[derive(Debug, Subcommand)]
pub enum PlasmaCommand {
    /// Registers a plasma chain on L1 and its operator account `operator@<chain>` (signed by
    /// the L1 genesis authority).
    Register(RegisterArgs),
    /// Runs the settlement agent: commits every L2 block's root to L1 and notes L1 deposits on
    /// L2, until stopped. It keeps no state: after a restart it asks L1 where it stands.
    Agent(agent::AgentArgs),
    /// Locks L1 coins in the chain; the agent makes them an L2 output.
    Deposit(DepositArgs),
    /// Pays on L2 from the wallet's unspent outputs (change comes back to the wallet).
    Transfer(TransferArgs),
    /// The wallet's unspent L2 outputs.
    Balance(BalanceArgs),
    /// The transaction that created an L2 output and its inclusion proof (JSON).
    Proof(ProofArgs),
    /// Starts the exit of an output on L1 (pays the exit bond).
    Exit(ExitArgs),
    /// Cancels another's exit with the L2 transaction that spent the exiting output.
    Challenge(ChallengeArgs),
    /// Pays out exits whose challenge period has passed, in priority order.
    Finalize(FinalizeArgs),
    /// Watches the chain's open exits and challenges every one whose output was spent on L2.
    Watch(watch::WatchArgs),
    /// The chain's record on L1: roots, deposits, what it holds, open exits.
    Status(StatusArgs),
    /// Measures L2 throughput with roots committed to a 4-node L1, beside L1-only throughput.
    Bench(bench::PlasmaBenchArgs),
}

pub fn run(command: PlasmaCommand) -> anyhow::Result<ExitCode> {
    match command {
        PlasmaCommand::Bench(args) => bench::run(args),
        PlasmaCommand::Agent(args) => runtime()?.block_on(agent::run(args)),
        PlasmaCommand::Watch(args) => runtime()?.block_on(watch::run(args)),
        command => runtime()?.block_on(run_wallet(command)),
    }
}

async fn run_wallet(command: PlasmaCommand) -> anyhow::Result<ExitCode> {
    let value = match command {
        PlasmaCommand::Register(args) => register(&args).await?,
        PlasmaCommand::Deposit(args) => deposit(&args).await?,
        PlasmaCommand::Transfer(args) => transfer(&args).await?,
        PlasmaCommand::Balance(args) => balance(&args).await?,
        PlasmaCommand::Proof(args) => {
            let node = Chain::connect(&args.l2).await?;
            let (tx, inclusion, root) = created_by(&node, args.position.0).await?;
            json!({
                "position": position_text(&args.position.0),
                "tx": hex::encode(tx.leaf()),
                "outputs": tx.outputs.iter().map(output_json).collect::<Vec<_>>(),
                "leaf_index": inclusion.leaf_index,
                "tree_size": inclusion.tree_size,
                "path": inclusion.path.iter().map(Hash::to_hex).collect::<Vec<_>>(),
                "root": root.to_hex(),
            })
        }
        PlasmaCommand::Exit(args) => exit(&args).await?,
        PlasmaCommand::Challenge(args) => challenge(&args).await?,
        PlasmaCommand::Finalize(args) => {
            let node = Chain::connect(&args.on.l1).await?;
            let wallet = args.wallet.resolve()?;
            let call = PlasmaCall::FinalizeExits {
                chain: args.on.chain.clone(),
                max: args.max,
            };
            let before = chain_record(&node, &args.on.chain).await?;
            let outcome = node.run(&wallet, vec![l1_instruction(&call)]).await?;
            let open = open_exits(&node, &args.on.chain).await?;
            let after = chain_record(&node, &args.on.chain).await?;
            json!({"outcome": outcome, "open_exits": open.len(), "locked_before": locked_json(&before), "locked_after": locked_json(&after)})
        }
        PlasmaCommand::Status(args) => {
            let node = Chain::connect(&args.on.l1).await?;
            let record = chain_record(&node, &args.on.chain).await?;
            let exits = open_exits(&node, &args.on.chain).await?;
            json!({
                "chain": args.on.chain.to_string(),
                "operator": record.operator.to_string(),
                "challenge_blocks": record.challenge_blocks,
                "exit_bond": record.exit_bond.to_string(),
                "bond_asset": record.bond_asset.to_string(),
                "roots": record.roots,
                "deposits": record.deposits,
                "locked": locked_json(&record),
                "open_exits": exits.iter().map(exit_json).collect::<Vec<_>>(),
            })
        }
        PlasmaCommand::Agent(_) | PlasmaCommand::Bench(_) | PlasmaCommand::Watch(_) => {
            unreachable!("handled by run")
        }
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    let refused = value
        .get("outcome")
        .and_then(|outcome| outcome.get("rejected"))
        .is_some();
    Ok(if refused { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The L1 node to talk to and the plasma chain on it.
#[derive(Debug, Clone, Args)]
pub struct OnL1 {
    /// The L1 node's API URL.
    #[arg(long)]
    pub l1: String,
    /// The plasma chain's name on L1.
    #[arg(long)]
    pub chain: Name,
}

/// Who signs: a test account by index (its key is derived from the public test label), or an
/// account with a key file (hex secret, as `kasane genesis` writes genesis.key).
#[derive(Debug, Clone, Args)]
pub struct WalletArgs {
    /// Test account `user<N>@test`.
    #[arg(long, conflicts_with_all = ["account", "key"])]
    pub user: Option<usize>,
    /// An account id (with --key).
    #[arg(long, requires = "key")]
    pub account: Option<AccountId>,
    /// File holding the account's secret key in hex.
    #[arg(long, requires = "account")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Wallet {
    pub account: AccountId,
    pub key: KeyPair,
}

impl WalletArgs {
    pub fn resolve(&self) -> anyhow::Result<Wallet> {
        match (&self.user, &self.account, &self.key) {
            (Some(index), _, _) => {
                let (account, key) = test_account(*index);
                Ok(Wallet { account, key })
            }
            (None, Some(account), Some(path)) => Ok(Wallet {
                account: account.clone(),
                key: read_key(path)?,
            }),
            _ => bail!("say who signs: --user N, or --account ID --key FILE"),
        }
    }
}

/// Reads a secret key written in hex (genesis.key).
pub fn read_key(path: &Path) -> anyhow::Result<KeyPair> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = hex::decode(text.trim()).with_context(|| format!("{} is not a hex secret key", path.display()))?;
    let secret: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} does not hold a 32-byte secret key", path.display()))?;
    Ok(KeyPair::from_secret(secret))
}

/// A position on the command line: `BLOCK:TX:OUTPUT` or `deposit:N`.
#[derive(Debug, Clone, Copy)]
pub struct PositionArg(pub Position);

impl std::str::FromStr for PositionArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not BLOCK:TX:OUTPUT or deposit:N");
        if let Some(number) = text.strip_prefix("deposit:") {
            return Ok(PositionArg(Position::Deposit {
                number: number.parse().map_err(|_| bad())?,
            }));
        }
        let parts: Vec<&str> = text.split(':').collect();
        let [block, tx, output] = parts.as_slice() else {
            return Err(bad());
        };
        Ok(PositionArg(Position::Block {
            block: block.parse().map_err(|_| bad())?,
            tx_index: tx.parse().map_err(|_| bad())?,
            output_index: output.parse().map_err(|_| bad())?,
        }))
    }
}

pub fn position_text(position: &Position) -> String {
    position.to_string()
}

fn output_json(output: &Output) -> Value {
    json!({"owner": output.owner.to_hex(), "asset": output.asset.to_string(), "amount": output.amount.to_string()})
}

fn exit_json(exit: &ExitRecord) -> Value {
    json!({
        "position": position_text(&exit.position),
        "priority": exit.priority.to_string(),
        "account": exit.account.to_string(),
        "asset": exit.asset.to_string(),
        "amount": exit.amount.to_string(),
        "bond": exit.bond.to_string(),
        "started": exit.started,
    })
}

fn locked_json(record: &ChainRecord) -> Value {
    record
        .locked
        .iter()
        .map(|(asset, amount)| (asset.to_string(), Value::String(amount.to_string())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// What happened to a submitted transaction.
pub fn outcome_json(outcome: &Result<u64, String>) -> Value {
    match outcome {
        Ok(height) => json!({"committed": height}),
        Err(reason) => json!({"rejected": reason}),
    }
}

/// One chain's API, with its chain id.
#[derive(Debug, Clone)]
pub struct Chain {
    pub api: ApiClient,
    pub id: ChainId,
}

/// How long a submitted transaction may take to commit before the tool gives up on it.
const COMMIT_WAIT: Duration = Duration::from_secs(60);

impl Chain {
    pub async fn connect(url: &str) -> anyhow::Result<Chain> {
        let api = ApiClient::with_timeout(url, Duration::from_secs(10))?;
        let status = api.status().await?;
        let id = status
            .get("chain")
            .and_then(Value::as_str)
            .context("the node's status names no chain")?
            .parse()
            .map_err(|error| anyhow::anyhow!("the node's chain id: {error}"))?;
        Ok(Chain { api, id })
    }

    pub async fn height(&self) -> anyhow::Result<u64> {
        let status = self.api.status().await?;
        status
            .get("height")
            .and_then(Value::as_u64)
            .context("the node's status has no height")
    }

    /// A transaction of `instructions` by `wallet`, created now.
    pub fn sign(&self, wallet: &Wallet, instructions: Vec<Instruction>) -> SignedTransaction {
        let payload = TransactionPayload {
            chain: self.id.clone(),
            creator: wallet.account.clone(),
            instructions,
            created_at_ms: now_ms(),
            ttl_ms: TTL_MS_MAX,
            nonce: rand_nonce(),
        };
        SignedTransaction::sign(payload, &[&wallet.key])
    }

    /// Submits `transaction` (retrying while the node's queue is full) and waits for its
    /// outcome: `Ok(height)` committed, `Err(reason)` rejected. Fails if the node cannot be
    /// reached or the transaction does not settle in time.
    pub async fn submit_and_wait(&self, transaction: SignedTransaction) -> anyhow::Result<Result<u64, String>> {
        let hash = transaction.hashes().transaction;
        let deadline = Instant::now() + COMMIT_WAIT;
        loop {
            match self.api.submit(vec![transaction.clone()]).await? {
                Submitted::QueueFull | Submitted::CatchingUp(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Submitted::QueueFull => bail!("the node's queue stayed full for {COMMIT_WAIT:?}"),
                Submitted::CatchingUp(answer) => bail!("the node is still catching up after {COMMIT_WAIT:?}: {answer}"),
                // Admitted but not yet held by f + 1: it may still commit; its outcome decides.
                Submitted::NotHeld(_) => break,
                Submitted::Answered(response) => {
                    if let Some(error) = response.results.first().and_then(|result| result.error.clone()) {
                        return Ok(Err(error));
                    }
                    break;
                }
            }
        }
        self.wait(&hash, deadline).await
    }

    /// Waits for a known transaction's outcome.
    pub async fn wait(&self, hash: &Hash, deadline: Instant) -> anyhow::Result<Result<u64, String>> {
        loop {
            if let Some(found) = self.api.get_json_optional(&format!("/v1/transactions/{hash}")).await? {
                let state = &found["state"];
                match state["status"].as_str() {
                    Some("committed") => return Ok(Ok(state["height"].as_u64().unwrap_or(0))),
                    Some("rejected") => return Ok(Err(state["reason"].as_str().unwrap_or("rejected").to_string())),
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                bail!("transaction {hash} did not settle within {COMMIT_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Signs, submits and waits, as JSON for the tools' output.
    pub async fn run(&self, wallet: &Wallet, instructions: Vec<Instruction>) -> anyhow::Result<Value> {
        let outcome = self.submit_and_wait(self.sign(wallet, instructions)).await?;
        Ok(outcome_json(&outcome))
    }

    /// A contract's value under `key`, if any.
    pub async fn entry(&self, contract: &str, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let path = format!("/v1/contracts/{contract}/entries/{}", hex::encode(key));
        let Some(found) = self.api.get_json_optional(&path).await? else {
            return Ok(None);
        };
        let value = found["value"].as_str().context("an entry without a value")?;
        Ok(Some(hex::decode(value).context("an entry's value is not hex")?))
    }

    /// Every entry of a contract under `prefix` (and with values under `value_prefix`).
    pub async fn entries(
        &self,
        contract: &str,
        prefix: &[u8],
        value_prefix: Option<&[u8]>,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut all = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut path = format!(
                "/v1/contracts/{contract}/entries?limit=1000&prefix={}",
                hex::encode(prefix)
            );
            if let Some(value_prefix) = value_prefix {
                path.push_str(&format!("&value_prefix={}", hex::encode(value_prefix)));
            }
            if let Some(after) = &after {
                path.push_str(&format!("&after={}", hex::encode(after)));
            }
            let page = self.api.get_json(&path).await?;
            let entries = page["entries"].as_array().context("no entries in the answer")?;
            for entry in entries {
                let key = hex::decode(entry["key"].as_str().unwrap_or_default()).context("a key is not hex")?;
                let value = hex::decode(entry["value"].as_str().unwrap_or_default()).context("a value is not hex")?;
                all.push((key, value));
            }
            if entries.len() < 1000 {
                return Ok(all);
            }
            after = all.last().map(|(key, _)| key.clone());
        }
    }
}

fn rand_nonce() -> u32 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32()
}

pub fn l1_instruction(call: &PlasmaCall) -> Instruction {
    Instruction::CallContract {
        contract: Name::new(L1_CONTRACT).expect("constant names are valid"),
        call: codec::encode(call),
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> anyhow::Result<T> {
    codec::decode_body(what, bytes).with_context(|| format!("a stored {what} does not decode"))
}

pub async fn chain_record(l1_node: &Chain, chain: &Name) -> anyhow::Result<ChainRecord> {
    let bytes = l1_node
        .entry(L1_CONTRACT, &l1::chain_key(chain))
        .await?
        .with_context(|| format!("L1 has no plasma chain {chain} (run `kasane plasma register`)"))?;
    decode("chain record", &bytes)
}

pub async fn open_exits(l1_node: &Chain, chain: &Name) -> anyhow::Result<Vec<ExitRecord>> {
    match l1_node.entry(L1_CONTRACT, &l1::exits_key(chain)).await? {
        Some(bytes) => decode("exits", &bytes),
        None => Ok(Vec::new()),
    }
}

/// Root `number` as L1 holds it.
pub async fn committed_root(l1_node: &Chain, chain: &Name, number: u64) -> anyhow::Result<Option<l1::RootRecord>> {
    match l1_node.entry(L1_CONTRACT, &l1::root_key(chain, number)).await? {
        Some(bytes) => Ok(Some(decode("root", &bytes)?)),
        None => Ok(None),
    }
}

/// The root of L2 block `height` from the L2 state (the empty root for a block that applied no
/// plasma transaction). The caller makes sure the block is committed.
pub async fn l2_root(l2_node: &Chain, height: u64) -> anyhow::Result<(Hash, u64)> {
    match l2_node.entry(L2_CONTRACT, &l2::accumulator_key(height)).await? {
        Some(bytes) => {
            let accumulator: RootAccumulator = decode("root accumulator", &bytes)?;
            Ok((accumulator.root(), accumulator.count))
        }
        None => Ok((RootAccumulator::default().root(), 0)),
    }
}

/// The plasma transactions L2 block `height` applied, in order (its leaves), read from the
/// block and told apart from rejected ones by the leaf hashes the L2 state keeps; with the
/// block's root from the L2 state, which they are checked to make.
pub async fn block_leaves(l2_node: &Chain, height: u64) -> anyhow::Result<(Vec<PlasmaTx>, Hash)> {
    let committed = l2_node.api.block(height).await?;
    let candidates = l2::block_leaves(
        committed
            .block
            .transactions
            .iter()
            .map(|transaction| (transaction, true)),
    );
    // Usually every transfer of a block applied: then the count and the root agree at once.
    let (root, count) = l2_root(l2_node, height).await?;
    if candidates.len() as u64 == count && proof::root(&candidates) == root {
        return Ok((candidates, root));
    }
    let stored = l2_node.entries(L2_CONTRACT, &l2::leaf_prefix(height), None).await?;
    let mut hashes: Vec<(u64, Hash)> = Vec::with_capacity(stored.len());
    for (key, value) in stored {
        let (_, _, index): (u8, u64, u64) = decode("leaf key", &key)?;
        let hash: [u8; 32] = value
            .try_into()
            .map_err(|_| anyhow::anyhow!("a stored leaf hash is not 32 bytes"))?;
        hashes.push((index, Hash(hash)));
    }
    hashes.sort_unstable();
    ensure!(
        hashes.iter().enumerate().all(|(at, (index, _))| *index == at as u64) && hashes.len() as u64 == count,
        "the leaf hashes of L2 block {height} are not numbered 0..{count}"
    );
    // The applied transfers are a subsequence of the block's transfers, in order.
    let mut leaves = Vec::with_capacity(hashes.len());
    let mut candidates = candidates.into_iter();
    for (index, wanted) in &hashes {
        let found = candidates
            .by_ref()
            .find(|candidate| proof::leaf_hash(candidate) == *wanted)
            .with_context(|| format!("leaf {index} of L2 block {height} is not among its transactions"))?;
        leaves.push(found);
    }
    ensure!(
        proof::root(&leaves) == root,
        "the leaves of L2 block {height} do not make its root"
    );
    Ok((leaves, root))
}

/// The L2 transaction that created the output at `position` (a block position), its
/// inclusion proof and the block's root.
pub async fn created_by(l2_node: &Chain, position: Position) -> anyhow::Result<(PlasmaTx, InclusionProof<Hash>, Hash)> {
    let Position::Block { block, tx_index, .. } = position else {
        bail!("a deposit's output needs no proof: L1 holds its record");
    };
    leaf_with_proof(l2_node, block, tx_index as usize).await
}

/// Leaf `index` of L2 block `block`, its proof and the block's root (the proof checked against
/// the L2 state's root before it is returned).
pub async fn leaf_with_proof(
    l2_node: &Chain,
    block: u64,
    index: usize,
) -> anyhow::Result<(PlasmaTx, InclusionProof<Hash>, Hash)> {
    let (leaves, root) = block_leaves(l2_node, block).await?;
    let tx = leaves
        .get(index)
        .cloned()
        .with_context(|| format!("L2 block {block} has {} plasma transactions, no {index}", leaves.len()))?;
    let inclusion = proof::prove(&leaves, index).context("building the proof")?;
    proof::verify(&tx, &inclusion, &root).context("the proof does not match the L2 state's root")?;
    Ok((tx, inclusion, root))
}

/// The unspent L2 outputs owned by `owner`.
pub async fn unspent_of(l2_node: &Chain, owner: &PublicKey) -> anyhow::Result<Vec<(Position, Output)>> {
    let entries = l2_node
        .entries(L2_CONTRACT, l2::UTXO_PREFIX, Some(&codec::encode_body(owner)))
        .await?;
    let mut outputs = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let position = l2::position_of_key(&key).context("an unspent-set key does not decode")?;
        outputs.push((position, decode("output", &value)?));
    }
    outputs.sort_by_key(|(position, _)| *position);
    Ok(outputs)
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub on: OnL1,
    /// The L1 genesis authority's secret key file.
    #[arg(long)]
    pub genesis_key: PathBuf,
    /// The operator's secret key file (the L2 chain's genesis.key).
    #[arg(long)]
    pub operator_key: PathBuf,
    /// Challenge period, in L1 blocks.
    #[arg(long, default_value_t = 20)]
    pub challenge_blocks: u64,
    /// The asset exit bonds are paid in.
    #[arg(long, default_value = "coin#test")]
    pub bond_asset: AssetDefinitionId,
    /// What starting an exit costs until it is finalised (or is lost to a challenger).
    #[arg(long, default_value_t = 10)]
    pub exit_bond: u128,
}

/// The L1 account that commits `chain`'s roots.
pub fn operator_account(chain: &Name) -> anyhow::Result<AccountId> {
    AccountId::new("operator", chain.as_str()).map_err(|error| anyhow::anyhow!("chain name {chain}: {error}"))
}

async fn register(args: &RegisterArgs) -> anyhow::Result<Value> {
    let node = Chain::connect(&args.on.l1).await?;
    let authority = Wallet {
        account: AccountId::new("genesis", "genesis").expect("constant names are valid"),
        key: read_key(&args.genesis_key)?,
    };
    let operator_key = read_key(&args.operator_key)?;
    let operator = operator_account(&args.on.chain)?;
    let instructions = vec![
        Instruction::RegisterDomain {
            domain: operator.domain.clone(),
            validator: Name::new(kasane_wsv::plugin::DEFAULT_PLUGIN).expect("constant names are valid"),
        },
        Instruction::RegisterAccount {
            account: operator.clone(),
            signatories: vec![operator_key.public_key()],
        },
        l1_instruction(&PlasmaCall::RegisterChain {
            chain: args.on.chain.clone(),
            operator: operator.clone(),
            challenge_blocks: args.challenge_blocks,
            bond_asset: args.bond_asset.clone(),
            exit_bond: args.exit_bond,
        }),
    ];
    let outcome = node.run(&authority, instructions).await?;
    Ok(json!({"chain": args.on.chain.to_string(), "operator": operator.to_string(), "outcome": outcome}))
}

#[derive(Debug, Args)]
pub struct DepositArgs {
    #[command(flatten)]
    pub on: OnL1,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// In the asset's smallest unit.
    #[arg(long)]
    pub amount: u128,
    /// The L1 asset definition (an L2 output stands for it).
    #[arg(long, default_value = "coin#test")]
    pub asset: AssetDefinitionId,
    /// The L2 key to own the output (default: the wallet's key).
    #[arg(long)]
    pub owner: Option<String>,
}

async fn deposit(args: &DepositArgs) -> anyhow::Result<Value> {
    let node = Chain::connect(&args.on.l1).await?;
    let wallet = args.wallet.resolve()?;
    let owner = match &args.owner {
        Some(text) => PublicKey::from_hex(text).map_err(|error| anyhow::anyhow!("--owner: {error}"))?,
        None => wallet.key.public_key(),
    };
    let call = PlasmaCall::Deposit {
        chain: args.on.chain.clone(),
        asset: args.asset.clone(),
        amount: args.amount,
        owner,
    };
    let outcome = node
        .submit_and_wait(node.sign(&wallet, vec![l1_instruction(&call)]))
        .await?;
    let mut value = json!({"outcome": outcome_json(&outcome)});
    if let Ok(height) = outcome {
        // The deposit's number: this owner's deposit recorded at that L1 height.
        let deposits = node
            .entries(
                L1_CONTRACT,
                &l1::deposit_prefix(&args.on.chain),
                Some(&codec::encode_body(&owner)),
            )
            .await?;
        for (key, bytes) in deposits {
            let record: DepositRecord = decode("deposit", &bytes)?;
            let (_, _, number): (u8, Name, u64) = decode("deposit key", &key)?;
            if record.l1_height == height && record.amount == args.amount {
                value["position"] = json!(position_text(&Position::Deposit { number }));
            }
        }
    }
    Ok(value)
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The L2 node's API URL.
    #[arg(long)]
    pub l2: String,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// The payee: a test account index, or a public key in hex.
    #[arg(long)]
    pub to: String,
    /// In the asset's smallest unit.
    #[arg(long)]
    pub amount: u128,
    /// The L1 asset definition (an L2 output stands for it).
    #[arg(long, default_value = "coin#test")]
    pub asset: AssetDefinitionId,
}

fn payee(text: &str) -> anyhow::Result<PublicKey> {
    if let Ok(index) = text.parse::<usize>() {
        return Ok(test_account(index).1.public_key());
    }
    PublicKey::from_hex(text).map_err(|error| anyhow::anyhow!("--to {text:?}: not an account index or key: {error}"))
}

/// The plasma transaction that pays `amount` of `asset` to `to` from `available`, with change
/// back to `wallet`: the fewest outputs (at most 4), largest first.
pub fn pay(
    wallet: &KeyPair,
    available: &[(Position, Output)],
    to: PublicKey,
    asset: &AssetDefinitionId,
    amount: u128,
) -> anyhow::Result<PlasmaTx> {
    ensure!(amount > 0, "the amount must be positive");
    let mut candidates: Vec<&(Position, Output)> =
        available.iter().filter(|(_, output)| output.asset == *asset).collect();
    candidates.sort_by_key(|(_, output)| std::cmp::Reverse(output.amount));
    let mut inputs = Vec::new();
    let mut total = 0u128;
    for (position, output) in candidates.into_iter().take(kasane_plasma::ledger::INPUTS_MAX) {
        if total >= amount {
            break;
        }
        inputs.push(*position);
        total = total.saturating_add(output.amount);
    }
    ensure!(
        total >= amount,
        "the wallet's {} largest outputs of {asset} hold {total}, less than {amount}",
        kasane_plasma::ledger::INPUTS_MAX
    );
    let mut outputs = vec![Output {
        owner: to,
        asset: asset.clone(),
        amount,
    }];
    if total > amount {
        outputs.push(Output {
            owner: wallet.public_key(),
            asset: asset.clone(),
            amount: total - amount,
        });
    }
    let signers = vec![wallet; inputs.len()];
    Ok(PlasmaTx::sign(inputs, outputs, &signers))
}

/// Where the outputs of `tx`, committed in L2 block `height`, are.
async fn positions_of(l2_node: &Chain, height: u64, tx: &PlasmaTx) -> anyhow::Result<Vec<Position>> {
    let (leaves, _) = block_leaves(l2_node, height).await?;
    let index = leaves
        .iter()
        .position(|leaf| leaf == tx)
        .with_context(|| format!("the transaction committed in L2 block {height} but is not among its leaves"))?;
    Ok((0..tx.outputs.len())
        .map(|output_index| Position::Block {
            block: height,
            tx_index: index as u32,
            output_index: output_index as u8,
        })
        .collect())
}

async fn transfer(args: &TransferArgs) -> anyhow::Result<Value> {
    let node = Chain::connect(&args.l2).await?;
    let wallet = args.wallet.resolve()?;
    let available = unspent_of(&node, &wallet.key.public_key()).await?;
    let tx = pay(&wallet.key, &available, payee(&args.to)?, &args.asset, args.amount)?;
    let outcome = node
        .submit_and_wait(node.sign(&wallet, vec![L2Call::Transfer(tx.clone()).instruction()]))
        .await?;
    let mut value = json!({
        "outcome": outcome_json(&outcome),
        "inputs": tx.inputs.iter().map(position_text).collect::<Vec<_>>(),
    });
    if let Ok(height) = outcome {
        let positions = positions_of(&node, height, &tx).await?;
        value["outputs"] = positions
            .iter()
            .zip(&tx.outputs)
            .map(|(position, output)| {
                let mut item = output_json(output);
                item["position"] = json!(position_text(position));
                item
            })
            .collect();
    }
    Ok(value)
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// The L2 node's API URL.
    #[arg(long)]
    pub l2: String,
    #[command(flatten)]
    pub wallet: WalletArgs,
}

async fn balance(args: &BalanceArgs) -> anyhow::Result<Value> {
    let node = Chain::connect(&args.l2).await?;
    let wallet = args.wallet.resolve()?;
    let outputs = unspent_of(&node, &wallet.key.public_key()).await?;
    let mut totals = std::collections::BTreeMap::<String, u128>::new();
    for (_, output) in &outputs {
        *totals.entry(output.asset.to_string()).or_default() += output.amount;
    }
    Ok(json!({
        "owner": wallet.key.public_key().to_hex(),
        "outputs": outputs.iter().map(|(position, output)| {
            let mut item = output_json(output);
            item["position"] = json!(position_text(position));
            item
        }).collect::<Vec<_>>(),
        "totals": totals.iter().map(|(asset, amount)| (asset.clone(), Value::String(amount.to_string()))).collect::<serde_json::Map<_, _>>(),
    }))
}

#[derive(Debug, Args)]
pub struct ProofArgs {
    /// The L2 node's API URL.
    #[arg(long)]
    pub l2: String,
    /// BLOCK:TX:OUTPUT
    #[arg(long)]
    pub position: PositionArg,
}

#[derive(Debug, Args)]
pub struct ExitArgs {
    #[command(flatten)]
    pub on: OnL1,
    /// Where to read the output's transaction and proof (not needed for a deposit).
    #[arg(long)]
    pub l2: Option<String>,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// BLOCK:TX:OUTPUT or deposit:N
    #[arg(long)]
    pub position: PositionArg,
}

async fn exit(args: &ExitArgs) -> anyhow::Result<Value> {
    let node = Chain::connect(&args.on.l1).await?;
    let wallet = args.wallet.resolve()?;
    let position = args.position.0;
    let created = match position {
        Position::Deposit { .. } => None,
        Position::Block { .. } => {
            let l2_url = args
                .l2
                .as_deref()
                .context("the exit of a block output needs --l2 for its proof")?;
            let l2_node = Chain::connect(l2_url).await?;
            let (tx, inclusion, _) = created_by(&l2_node, position).await?;
            Some((tx, inclusion))
        }
    };
    let call = PlasmaCall::StartExit {
        chain: args.on.chain.clone(),
        position,
        created_by: created,
    };
    let outcome = node.run(&wallet, vec![l1_instruction(&call)]).await?;
    Ok(json!({"position": position_text(&position), "outcome": outcome}))
}

#[derive(Debug, Args)]
pub struct ChallengeArgs {
    #[command(flatten)]
    pub on: OnL1,
    /// The L2 node's API URL.
    #[arg(long)]
    pub l2: String,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// The exiting output: BLOCK:TX:OUTPUT or deposit:N.
    #[arg(long)]
    pub position: PositionArg,
    /// The L2 transaction that spent it: BLOCK:TX.
    #[arg(long)]
    pub spending: String,
}

async fn challenge(args: &ChallengeArgs) -> anyhow::Result<Value> {
    let node = Chain::connect(&args.on.l1).await?;
    let l2_node = Chain::connect(&args.l2).await?;
    let wallet = args.wallet.resolve()?;
    let (block, index) = args
        .spending
        .split_once(':')
        .and_then(|(block, index)| Some((block.parse::<u64>().ok()?, index.parse::<usize>().ok()?)))
        .with_context(|| format!("--spending {:?} is not BLOCK:TX", args.spending))?;
    let (spending_tx, inclusion, _) = leaf_with_proof(&l2_node, block, index).await?;
    let call = PlasmaCall::ChallengeExit {
        chain: args.on.chain.clone(),
        position: args.position.0,
        spending_tx,
        spending_block: block,
        proof: inclusion,
    };
    let outcome = node.run(&wallet, vec![l1_instruction(&call)]).await?;
    Ok(json!({"position": position_text(&args.position.0), "outcome": outcome}))
}

#[derive(Debug, Args)]
pub struct FinalizeArgs {
    #[command(flatten)]
    pub on: OnL1,
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// Most exits paid by this call.
    #[arg(long, default_value_t = 64)]
    pub max: u32,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub on: OnL1,
}
