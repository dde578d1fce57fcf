//! The L2 chain's side (docs/PLASMA.md sections 1 and 4): the unspent set kept in the L2 world
//! state by the contract [`L2_CONTRACT`], and the validator plugin [`PLUGIN`] that checks every
//! plasma transaction of the L2 domain's accounts before it runs.
//!
//! A plasma transaction travels as `CallContract { contract: "plasma_l2", call }` with `call`
//! an encoded [`L2Call::Transfer`], inside an ordinary kasane transaction of an account of a
//! domain whose validator is [`PLUGIN`]. The plugin verifies the input owners' signatures and
//! refuses double spends, unbalanced amounts and bad shapes, reading the unspent set through
//! the block's layer (so an earlier transaction of the same block counts). The contract then
//! spends the inputs and creates the outputs at their positions. It checks the unspent set
//! again (cheap: a few lookups) but not the signatures, and so it takes transfers only from
//! accounts of plugin-checked domains.
//!
//! State, in the contract's section of the L2 world state:
//! - `(b'u', position)`: an unspent output;
//! - `b"n"`: how many L1 deposits were noted (u64);
//! - `(b'r', height)`: the block's [`RootAccumulator`]: how many plasma transactions it
//!   applied and the peaks of their tree, so the root of every L2 block is agreed state that the
//!   agent reads in one lookup (a block with no entry applied none: its root is the empty root);
//! - `(b'l', height, index)`: the leaf hash of the block's plasma transaction `index`, so a
//!   wallet can tell the applied transfers of a block from rejected ones when it builds a proof.
//!
//! A block's leaves are the plasma transactions it applied, in order; a rejected transaction
//! (a double spend, say) is in the block but not in its tree.

use std::sync::Arc;

use kasane_model::codec::{self, Versioned};
use kasane_model::crypto::KeyCache;
use kasane_model::ids::Name;
use kasane_model::instruction::Instruction;
use kasane_model::{Hash, SignedTransaction};
use kasane_wsv::{
    Contract, ContractContext, ContractResult, Domain, PluginContext, PluginRegistry, ValidatorPlugin, Verdict,
};
use serde::{Deserialize, Serialize};

use crate::contract::{decode_record, PlasmaContract, L1_CONTRACT};
use crate::ledger::{check_shape, check_transaction, InputSignature, Output, PlasmaError, PlasmaTx, Position};
use crate::proof::{leaf_hash, RootAccumulator};

/// The name every L2 node registers the ledger contract under.
pub const L2_CONTRACT: &str = "plasma_l2";
/// The name of the validator plugin an L2 domain names.
pub const PLUGIN: &str = "plasma";
/// Most deposits one `NoteDeposits` call may carry.
pub const NOTES_PER_CALL_MAX: usize = 64;

/// One call of the L2 ledger contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum L2Call {
    /// A plasma transaction.
    Transfer(PlasmaTx),
    /// The outputs of L1 deposits `first`, `first + 1`, ... (only the L2 genesis authority,
    /// the operator, notes deposits; the agent copies them from L1).
    NoteDeposits { first: u64, outputs: Vec<Output> },
}

impl Versioned for L2Call {
    const NAME: &'static str = "plasma L2 call";
    const VERSION: u8 = 1;
    const ENCODED_BYTES_MAX: usize = kasane_model::instruction::CONTRACT_CALL_BYTES_MAX;
}

impl L2Call {
    /// The instruction that carries this call.
    pub fn instruction(&self) -> Instruction {
        Instruction::CallContract {
            contract: l2_contract_name(),
            call: codec::encode(self),
        }
    }
}

pub fn l2_contract_name() -> Name {
    Name::new(L2_CONTRACT).expect("constant names are valid")
}

pub fn utxo_key(position: &Position) -> Vec<u8> {
    codec::encode_body(&(b'u', position))
}

/// The prefix shared by every unspent output's key.
pub const UTXO_PREFIX: &[u8] = b"u";
pub const NOTED_KEY: &[u8] = b"n";

pub fn accumulator_key(height: u64) -> Vec<u8> {
    codec::encode_body(&(b'r', height))
}

pub fn leaf_key(height: u64, index: u64) -> Vec<u8> {
    codec::encode_body(&(b'l', height, index))
}

/// The prefix shared by the leaf hashes of block `height`.
pub fn leaf_prefix(height: u64) -> Vec<u8> {
    codec::encode_body(&(b'l', height))
}

/// Decodes an unspent-set key back to its position.
pub fn position_of_key(key: &[u8]) -> Option<Position> {
    let (tag, position): (u8, Position) = codec::decode_body("utxo key", key).ok()?;
    (tag == b'u').then_some(position)
}

/// The plasma transactions a committed L2 block carries, in block order: the leaves of its
/// root (docs/PLASMA.md section 2). `accepted` says which of the block's transactions were
/// applied; rejected ones carry no leaf.
pub fn block_leaves<'a>(transactions: impl IntoIterator<Item = (&'a SignedTransaction, bool)>) -> Vec<PlasmaTx> {
    let mut leaves = Vec::new();
    for (transaction, accepted) in transactions {
        if !accepted {
            continue;
        }
        for instruction in &transaction.payload.instructions {
            if let Instruction::CallContract { contract, call } = instruction {
                if contract.as_str() == L2_CONTRACT {
                    if let Ok(L2Call::Transfer(tx)) = codec::decode::<L2Call>(call) {
                        leaves.push(tx);
                    }
                }
            }
        }
    }
    leaves
}

/// The input signatures of the plasma transfers `transaction` carries, with what they sign, so
/// a node can check them in batches before the plugin looks at any state (the plugin finds them
/// in the node's verified-signature memory). Calls that do not decode are left to the plugin.
pub fn input_signatures(transaction: &SignedTransaction) -> Vec<(Hash, InputSignature)> {
    let mut found = Vec::new();
    for instruction in &transaction.payload.instructions {
        if let Instruction::CallContract { contract, call } = instruction {
            if contract.as_str() == L2_CONTRACT {
                if let Ok(L2Call::Transfer(tx)) = codec::decode::<L2Call>(call) {
                    let (hash, signatures) = tx.signed_messages();
                    found.extend(signatures.iter().map(|signed| (hash, *signed)));
                }
            }
        }
    }
    found
}

/// The L2 ledger contract.
#[derive(Debug, Default)]
pub struct LedgerContract;

fn read_u64(context: &ContractContext<'_, '_>, key: &[u8]) -> Result<u64, String> {
    context
        .get(key)
        .map(|bytes| decode_record::<u64>("counter", bytes))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn unspent(context: &ContractContext<'_, '_>, position: &Position) -> Option<Output> {
    context
        .get(&utxo_key(position))
        .and_then(|bytes| codec::decode_body("output", bytes).ok())
}

impl Contract for LedgerContract {
    fn call(&self, context: &mut ContractContext<'_, '_>, call: &[u8]) -> ContractResult {
        let call: L2Call = codec::decode(call).map_err(|error| format!("not a plasma L2 call: {error}"))?;
        match call {
            L2Call::NoteDeposits { first, outputs } => {
                if context.caller() != context.genesis_authority() {
                    return Err("only the L2 operator (the genesis authority) notes deposits".into());
                }
                if outputs.is_empty() || outputs.len() > NOTES_PER_CALL_MAX {
                    return Err(format!("a call notes 1 to {NOTES_PER_CALL_MAX} deposits"));
                }
                let noted = read_u64(context, NOTED_KEY)?;
                if first != noted {
                    return Err(PlasmaError::DepositOrder {
                        number: first,
                        expected: noted,
                    }
                    .to_string());
                }
                let count = outputs.len() as u64;
                for (offset, output) in outputs.into_iter().enumerate() {
                    if output.amount == 0 {
                        return Err(PlasmaError::ZeroAmount { index: offset }.to_string());
                    }
                    let position = Position::Deposit {
                        number: first + offset as u64,
                    };
                    context.put(&utxo_key(&position), codec::encode_body(&output));
                }
                context.put(NOTED_KEY, codec::encode_body(&(first + count)));
                Ok(())
            }
            L2Call::Transfer(tx) => {
                let caller = context.caller().clone();
                let checked = context
                    .domain(&caller.domain)
                    .is_some_and(|domain| domain.validator.as_str() == PLUGIN);
                if !checked {
                    return Err(format!(
                        "plasma transfers come from accounts of a domain checked by the {PLUGIN} plugin; {caller}'s is not"
                    ));
                }
                check_transaction(&tx, |position| unspent(context, position), None)
                    .map_err(|error| error.to_string())?;
                let height = context.height();
                let mut accumulator: RootAccumulator = match context.get(&accumulator_key(height)) {
                    Some(bytes) => decode_record("root accumulator", bytes)?,
                    None => RootAccumulator::default(),
                };
                let index =
                    u32::try_from(accumulator.count).map_err(|_| "too many plasma transactions in one block")?;
                for position in &tx.inputs {
                    context.delete(&utxo_key(position));
                }
                for (output_index, output) in tx.outputs.iter().enumerate() {
                    let position = Position::Block {
                        block: height,
                        tx_index: index,
                        output_index: output_index as u8,
                    };
                    context.put(&utxo_key(&position), codec::encode_body(output));
                }
                let leaf = leaf_hash(&tx);
                context.put(&leaf_key(height, accumulator.count), leaf.as_bytes().to_vec());
                accumulator.push(leaf);
                context.put(&accumulator_key(height), codec::encode_body(&accumulator));
                Ok(())
            }
        }
    }
}

/// The L2 validator plugin: every instruction of a transaction from a plasma domain must be a
/// plasma transfer, signed by its inputs' owners, spending unspent outputs, balanced.
#[derive(Debug, Default)]
pub struct PlasmaPlugin {
    keys: KeyCache,
}

impl PlasmaPlugin {
    pub fn new(keys: KeyCache) -> PlasmaPlugin {
        PlasmaPlugin { keys }
    }
}

impl ValidatorPlugin for PlasmaPlugin {
    fn validate(&self, context: &PluginContext<'_, '_>, _: &Domain, transaction: &SignedTransaction) -> Verdict {
        let contract = l2_contract_name();
        let mut keys = self.keys.clone();
        for (index, instruction) in transaction.payload.instructions.iter().enumerate() {
            let Instruction::CallContract { contract: called, call } = instruction else {
                return Verdict::Invalid(format!(
                    "instruction {index}: a plasma domain's accounts send only plasma transfers"
                ));
            };
            if *called != contract {
                return Verdict::Invalid(format!("instruction {index}: calls {called}, not {L2_CONTRACT}"));
            }
            let tx = match codec::decode::<L2Call>(call) {
                Ok(L2Call::Transfer(tx)) => tx,
                Ok(L2Call::NoteDeposits { .. }) => {
                    return Verdict::Invalid(format!("instruction {index}: only the operator notes deposits"));
                }
                Err(error) => return Verdict::Invalid(format!("instruction {index}: not a plasma call: {error}")),
            };
            if let Err(error) = check_shape(&tx) {
                return Verdict::Invalid(format!("instruction {index}: {error}"));
            }
            let lookup = |position: &Position| {
                context
                    .contract_value(&contract, &utxo_key(position))
                    .and_then(|bytes| codec::decode_body("output", bytes).ok())
            };
            if let Err(error) = check_transaction(&tx, lookup, Some(&mut keys)) {
                return Verdict::Invalid(format!("instruction {index}: {error}"));
            }
        }
        Verdict::Valid
    }
}

/// Registers the plasma plugin and both contracts: every kasane node ships them, so any chain
/// may be an L1 (the `plasma` contract) or an L2 (the `plasma_l2` contract and the `plasma`
/// plugin on its domain). `keys` is the node's verified-signature memory.
pub fn register(registry: &mut PluginRegistry, keys: KeyCache) {
    registry.register(PLUGIN, Arc::new(PlasmaPlugin::new(keys.clone())));
    registry.register_contract(L2_CONTRACT, Arc::new(LedgerContract));
    registry.register_contract(L1_CONTRACT, Arc::new(PlasmaContract::new(keys)));
}

/// The built-in plugins with plasma's registered ([`register`]): the set every kasane node
/// registers, and so what a tool that builds or replays a chain must use too.
pub fn node_registry(keys: KeyCache) -> PluginRegistry {
    let mut registry = PluginRegistry::builtin();
    register(&mut registry, keys);
    registry
}
