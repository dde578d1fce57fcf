//! The L1 plasma contract (docs/PLASMA.md section 3): registered chains, their roots, deposits,
//! exits, challenges and finalisation. Every node of the L1 registers it as the contract
//! [`L1_CONTRACT`]; users reach it with `CallContract { contract: "plasma", call }` where `call`
//! is an encoded [`PlasmaCall`].
//!
//! State, in the contract's section of the L1 world state (keys are postcard encodings, so a
//! chain's entries share a prefix):
//! - `(b'c', chain)`: the [`ChainRecord`];
//! - `(b'r', chain, number)`: root `number` ([`RootRecord`]);
//! - `(b'd', chain, number)`: deposit `number` ([`DepositRecord`]);
//! - `(b'e', chain)`: the open exits, in priority order ([`ExitRecord`]);
//! - `(b'x', chain, position)`: a position that started an exit; never removed, so an output
//!   exits at most once.

use std::collections::BTreeMap;

use kasane_model::codec::{self, Versioned};
use kasane_model::crypto::{verify_one, KeyCache};
use kasane_model::hash::Hash;
use kasane_model::ids::{AccountId, AssetDefinitionId, Name};
use kasane_model::merkle::InclusionProof;
use kasane_model::PublicKey;
use kasane_wsv::{Contract, ContractContext, ContractResult};
use serde::{Deserialize, Serialize};

use crate::ledger::{PlasmaTx, Position};
use crate::proof;

/// The name every L1 node registers the contract under.
pub const L1_CONTRACT: &str = "plasma";
/// Most exits one chain may have open at once (they are kept as one ordered value).
pub const OPEN_EXITS_MAX: usize = 4096;
/// Most roots one `CommitRoots` call may carry.
pub const ROOTS_PER_CALL_MAX: usize = 256;

/// One call of the L1 contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlasmaCall {
    /// Registers chain `chain` with `operator` as the only account that commits its roots.
    RegisterChain {
        chain: Name,
        operator: AccountId,
        challenge_blocks: u64,
        bond_asset: AssetDefinitionId,
        exit_bond: u128,
    },
    /// Appends roots `first`, `first + 1`, ...: the roots of L2 blocks of those heights.
    CommitRoots { chain: Name, first: u64, roots: Vec<Hash> },
    /// Locks `amount` of `asset` from the caller; the output it creates on L2 is `owner`'s.
    Deposit {
        chain: Name,
        asset: AssetDefinitionId,
        amount: u128,
        owner: PublicKey,
    },
    /// Starts the exit of the output at `position`. A block position proves the output with
    /// the transaction that created it and its inclusion proof; a deposit needs neither.
    StartExit {
        chain: Name,
        position: Position,
        created_by: Option<(PlasmaTx, InclusionProof<Hash>)>,
    },
    /// Cancels the exit of `position` with a committed L2 transaction that spends it:
    /// `spending_tx` is leaf `proof.leaf_index` of the root of L2 block `spending_block`.
    ChallengeExit {
        chain: Name,
        position: Position,
        spending_tx: PlasmaTx,
        spending_block: u64,
        proof: InclusionProof<Hash>,
    },
    /// Pays out up to `max` exits whose challenge period has passed, in priority order.
    FinalizeExits { chain: Name, max: u32 },
}

impl Versioned for PlasmaCall {
    const NAME: &'static str = "plasma call";
    const VERSION: u8 = 1;
    const ENCODED_BYTES_MAX: usize = kasane_model::instruction::CONTRACT_CALL_BYTES_MAX;
}

/// A registered chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRecord {
    pub operator: AccountId,
    pub challenge_blocks: u64,
    pub bond_asset: AssetDefinitionId,
    pub exit_bond: u128,
    /// Roots committed: the last committed root is that of L2 block `roots`.
    pub roots: u64,
    /// Deposits made: the next deposit's number.
    pub deposits: u64,
    /// What this chain holds of each asset: deposits in, finalised exits out. Exits of one
    /// chain can never take what was deposited into another.
    pub locked: BTreeMap<AssetDefinitionId, u128>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRecord {
    pub root: Hash,
    /// The L1 height of the block that committed it.
    pub l1_height: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRecord {
    pub owner: PublicKey,
    pub depositor: AccountId,
    pub asset: AssetDefinitionId,
    pub amount: u128,
    /// Roots the chain held when the deposit committed (its exit priority, docs/PLASMA.md 1).
    pub roots_before: u64,
    pub l1_height: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub priority: u128,
    pub position: Position,
    /// The output's owner key, whose signature on a spending transaction cancels the exit.
    pub owner: PublicKey,
    /// The L1 account that is paid.
    pub account: AccountId,
    pub asset: AssetDefinitionId,
    pub amount: u128,
    pub bond: u128,
    /// L1 height the exit started at; it may finalise at `started + challenge_blocks`.
    pub started: u64,
}

pub fn chain_key(chain: &Name) -> Vec<u8> {
    codec::encode_body(&(b'c', chain))
}

pub fn root_key(chain: &Name, number: u64) -> Vec<u8> {
    codec::encode_body(&(b'r', chain, number))
}

pub fn deposit_key(chain: &Name, number: u64) -> Vec<u8> {
    codec::encode_body(&(b'd', chain, number))
}

/// The prefix shared by every deposit key of `chain`.
pub fn deposit_prefix(chain: &Name) -> Vec<u8> {
    codec::encode_body(&(b'd', chain))
}

pub fn exits_key(chain: &Name) -> Vec<u8> {
    codec::encode_body(&(b'e', chain))
}

pub fn exited_key(chain: &Name, position: &Position) -> Vec<u8> {
    codec::encode_body(&(b'x', chain, position))
}

/// Decodes a stored record; a value that does not decode is this contract's bug, reported as a
/// refusal rather than a panic.
pub fn decode_record<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, String> {
    codec::decode_body(what, bytes).map_err(|error| format!("stored {what} does not decode: {error}"))
}

/// The L1 plasma contract.
#[derive(Debug, Default)]
pub struct PlasmaContract {
    keys: KeyCache,
}

impl PlasmaContract {
    pub fn new(keys: KeyCache) -> PlasmaContract {
        PlasmaContract { keys }
    }
}

fn load<T: serde::de::DeserializeOwned>(
    context: &ContractContext<'_, '_>,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, String> {
    context.get(key).map(|bytes| decode_record(what, bytes)).transpose()
}

fn chain_record(context: &ContractContext<'_, '_>, chain: &Name) -> Result<ChainRecord, String> {
    load(context, &chain_key(chain), "chain record")?.ok_or_else(|| format!("no plasma chain {chain}"))
}

fn root_of(context: &ContractContext<'_, '_>, chain: &Name, record: &ChainRecord, block: u64) -> Result<Hash, String> {
    if block == 0 || block > record.roots {
        return Err(format!(
            "L2 block {block} has no committed root (chain {chain} has roots 1 to {})",
            record.roots
        ));
    }
    let root: RootRecord = load(context, &root_key(chain, block), "root")?.ok_or("a committed root is missing")?;
    Ok(root.root)
}

impl Contract for PlasmaContract {
    fn call(&self, context: &mut ContractContext<'_, '_>, call: &[u8]) -> ContractResult {
        let call: PlasmaCall = codec::decode(call).map_err(|error| format!("not a plasma call: {error}"))?;
        match call {
            PlasmaCall::RegisterChain {
                chain,
                operator,
                challenge_blocks,
                bond_asset,
                exit_bond,
            } => {
                if context.get(&chain_key(&chain)).is_some() {
                    return Err(format!("plasma chain {chain} is already registered"));
                }
                if challenge_blocks == 0 {
                    return Err("the challenge period must be at least 1 L1 block".into());
                }
                if context.account(&operator).is_none() {
                    return Err(format!("operator account {operator} does not exist"));
                }
                let record = ChainRecord {
                    operator,
                    challenge_blocks,
                    bond_asset,
                    exit_bond,
                    roots: 0,
                    deposits: 0,
                    locked: BTreeMap::new(),
                };
                context.put(&chain_key(&chain), codec::encode_body(&record));
                Ok(())
            }
            PlasmaCall::CommitRoots { chain, first, roots } => {
                let mut record = chain_record(context, &chain)?;
                if *context.caller() != record.operator {
                    return Err(format!(
                        "only the operator {} commits roots of {chain}",
                        record.operator
                    ));
                }
                if first != record.roots + 1 {
                    return Err(format!(
                        "root {first} is not the next root of {chain}: the next is {}",
                        record.roots + 1
                    ));
                }
                if roots.is_empty() || roots.len() > ROOTS_PER_CALL_MAX {
                    return Err(format!(
                        "a call commits 1 to {ROOTS_PER_CALL_MAX} roots, not {}",
                        roots.len()
                    ));
                }
                for root in roots {
                    record.roots += 1;
                    let stored = RootRecord {
                        root,
                        l1_height: context.height(),
                    };
                    context.put(&root_key(&chain, record.roots), codec::encode_body(&stored));
                }
                context.put(&chain_key(&chain), codec::encode_body(&record));
                Ok(())
            }
            PlasmaCall::Deposit {
                chain,
                asset,
                amount,
                owner,
            } => {
                let mut record = chain_record(context, &chain)?;
                if owner.check().is_err() {
                    return Err(format!("owner {owner} is not a usable ed25519 key"));
                }
                context.lock_from_caller(&asset, amount)?;
                let held = record.locked.entry(asset.clone()).or_default();
                *held = held.checked_add(amount).ok_or("the chain's lock overflows")?;
                let deposit = DepositRecord {
                    owner,
                    depositor: context.caller().clone(),
                    asset,
                    amount,
                    roots_before: record.roots,
                    l1_height: context.height(),
                };
                context.put(&deposit_key(&chain, record.deposits), codec::encode_body(&deposit));
                record.deposits += 1;
                context.put(&chain_key(&chain), codec::encode_body(&record));
                Ok(())
            }
            PlasmaCall::StartExit {
                chain,
                position,
                created_by,
            } => self.start_exit(context, &chain, position, created_by),
            PlasmaCall::ChallengeExit {
                chain,
                position,
                spending_tx,
                spending_block,
                proof,
            } => self.challenge_exit(context, &chain, position, &spending_tx, spending_block, &proof),
            PlasmaCall::FinalizeExits { chain, max } => finalize_exits(context, &chain, max),
        }
    }
}

impl PlasmaContract {
    fn start_exit(
        &self,
        context: &mut ContractContext<'_, '_>,
        chain: &Name,
        position: Position,
        created_by: Option<(PlasmaTx, InclusionProof<Hash>)>,
    ) -> ContractResult {
        let record = chain_record(context, chain)?;
        let (owner, asset, amount, priority) = match (position, created_by) {
            (Position::Deposit { number }, None) => {
                let deposit: DepositRecord = load(context, &deposit_key(chain, number), "deposit")?
                    .ok_or_else(|| format!("chain {chain} has no deposit {number}"))?;
                let priority = position.priority_key(deposit.roots_before);
                (deposit.owner, deposit.asset, deposit.amount, priority)
            }
            (Position::Deposit { .. }, Some(_)) => {
                return Err("the exit of a deposit carries no transaction or proof".into());
            }
            (Position::Block { .. }, None) => {
                return Err("the exit of a block output needs the transaction that created it and its proof".into());
            }
            (
                Position::Block {
                    block,
                    tx_index,
                    output_index,
                },
                Some((tx, inclusion)),
            ) => {
                let root = root_of(context, chain, &record, block)?;
                if inclusion.leaf_index != u64::from(tx_index) {
                    return Err(format!(
                        "the proof is for leaf {}, the position names transaction {tx_index}",
                        inclusion.leaf_index
                    ));
                }
                proof::verify(&tx, &inclusion, &root)
                    .map_err(|error| format!("the inclusion proof does not verify against root {block}: {error}"))?;
                let output = tx
                    .outputs
                    .get(usize::from(output_index))
                    .ok_or_else(|| format!("the transaction has no output {output_index}"))?;
                (
                    output.owner,
                    output.asset.clone(),
                    output.amount,
                    position.priority_key(0),
                )
            }
        };
        let caller = context.caller().clone();
        let signs = context
            .account(&caller)
            .is_some_and(|account| account.signatories.contains(&owner));
        if !signs {
            return Err(format!("{caller} does not hold the output's key {owner}"));
        }
        let exited = exited_key(chain, &position);
        if context.get(&exited).is_some() {
            return Err(format!("output {position} of {chain} has already started an exit"));
        }
        let mut exits: Vec<ExitRecord> = load(context, &exits_key(chain), "exits")?.unwrap_or_default();
        if exits.len() >= OPEN_EXITS_MAX {
            return Err(format!(
                "chain {chain} has {OPEN_EXITS_MAX} open exits; finalise some first"
            ));
        }
        if record.exit_bond > 0 {
            context.lock_from_caller(&record.bond_asset, record.exit_bond)?;
        }
        let exit = ExitRecord {
            priority,
            position,
            owner,
            account: caller,
            asset,
            amount,
            bond: record.exit_bond,
            started: context.height(),
        };
        let at = exits.partition_point(|open| open.priority < priority);
        exits.insert(at, exit);
        context.put(&exited, Vec::new());
        context.put(&exits_key(chain), codec::encode_body(&exits));
        Ok(())
    }

    fn challenge_exit(
        &self,
        context: &mut ContractContext<'_, '_>,
        chain: &Name,
        position: Position,
        spending_tx: &PlasmaTx,
        spending_block: u64,
        inclusion: &InclusionProof<Hash>,
    ) -> ContractResult {
        let record = chain_record(context, chain)?;
        let mut exits: Vec<ExitRecord> = load(context, &exits_key(chain), "exits")?.unwrap_or_default();
        let at = exits
            .iter()
            .position(|exit| exit.position == position)
            .ok_or_else(|| format!("no open exit of {position} on {chain}"))?;
        let input = spending_tx
            .inputs
            .iter()
            .position(|input| *input == position)
            .ok_or("the transaction does not spend the exiting output")?;
        let signed = spending_tx
            .signatures
            .get(input)
            .ok_or("the spending input is not signed")?;
        let hash = PlasmaTx::signing_hash(&spending_tx.inputs, &spending_tx.outputs);
        let mut keys = self.keys.clone();
        if signed.key != exits[at].owner {
            return Err("the spending input is not signed by the exiting output's owner".into());
        }
        verify_one(&mut keys, &exits[at].owner, hash.as_bytes(), &signed.signature)
            .map_err(|_| "the spending input is not signed by the exiting output's owner")?;
        let root = root_of(context, chain, &record, spending_block)?;
        proof::verify(spending_tx, inclusion, &root)
            .map_err(|error| format!("the inclusion proof does not verify against root {spending_block}: {error}"))?;
        let exit = exits.remove(at);
        let challenger = context.caller().clone();
        context.release(&record.bond_asset, &challenger, exit.bond)?;
        context.put(&exits_key(chain), codec::encode_body(&exits));
        Ok(())
    }
}

fn finalize_exits(context: &mut ContractContext<'_, '_>, chain: &Name, max: u32) -> ContractResult {
    let mut record = chain_record(context, chain)?;
    let mut exits: Vec<ExitRecord> = load(context, &exits_key(chain), "exits")?.unwrap_or_default();
    let height = context.height();
    let due = exits
        .iter()
        .take(max as usize)
        .take_while(|exit| exit.started.saturating_add(record.challenge_blocks) <= height)
        .count();
    for exit in exits.drain(..due) {
        let held = record.locked.entry(exit.asset.clone()).or_default();
        // An exit of an output the operator conjured can be worth more than the chain still
        // holds: the exits before it (older outputs) were paid first. It is closed unpaid, its
        // bond returned, so it cannot hold up the exits behind it.
        let Some(rest) = held.checked_sub(exit.amount) else {
            context.release(&record.bond_asset, &exit.account, exit.bond)?;
            continue;
        };
        *held = rest;
        context.release(&exit.asset, &exit.account, exit.amount)?;
        context.release(&record.bond_asset, &exit.account, exit.bond)?;
    }
    context.put(&exits_key(chain), codec::encode_body(&exits));
    context.put(&chain_key(chain), codec::encode_body(&record));
    Ok(())
}
