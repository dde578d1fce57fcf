//! Shared fixtures of the wsv integration tests: a standard genesis, transaction and block
//! builders, and a snapshot of what a failed block must leave unchanged.

#![allow(dead_code)]

use kasane_model::block::tx_merkle_root;
use kasane_model::ids::{AccountId, AssetDefinitionId, AssetId, DomainId, Name};
use kasane_model::instruction::{Instruction, Mintable};
use kasane_model::transaction::TransactionHashes;
use kasane_model::{Block, BlockHeader, Hash, KeyPair, SignedTransaction, TransactionPayload};
use kasane_wsv::genesis::GenesisBuilder;
use kasane_wsv::{
    AppliedBlock, ApplyError, InstructionError, PluginRegistry, RejectionReason, TransactionOutcome, Wsv,
};

/// The genesis authority.
pub const GENESIS: &str = "genesis@genesis";
pub const CHAIN: &str = "wsv-tests";
/// Genesis time; later blocks are a second apart by default.
pub const T0: u64 = 1_700_000_000_000;
/// Time-to-live of test transactions.
pub const TTL: u64 = 60_000;

pub const ALICE: &str = "alice@wonderland";
pub const BOB: &str = "bob@wonderland";
pub const CAROL: &str = "carol@looking_glass";

pub const ALICE_COINS: u128 = 1_000;
pub const BOB_COINS: u128 = 500;
pub const CAROL_COINS: u128 = 50;

/// A deterministic key: index 0 is the genesis key, 1.. are accounts' keys.
pub fn key(index: u64) -> KeyPair {
    KeyPair::derive(b"kasane-wsv-tests", index)
}

pub fn genesis_key() -> KeyPair {
    key(0)
}

pub fn alice_key() -> KeyPair {
    key(1)
}

pub fn bob_key() -> KeyPair {
    key(2)
}

pub fn carol_key() -> KeyPair {
    key(3)
}

pub fn account(text: &str) -> AccountId {
    text.parse().expect("test account ids are valid")
}

pub fn definition(text: &str) -> AssetDefinitionId {
    text.parse().expect("test asset definition ids are valid")
}

/// The `coin` asset of `holder`'s domain, held by `holder`.
pub fn coin(holder: &str) -> AssetId {
    let holder = account(holder);
    AssetId::new(definition(&format!("coin#{}", holder.domain)), holder)
}

/// `definition` held by `holder`.
pub fn asset(definition_text: &str, holder: &str) -> AssetId {
    AssetId::new(definition(definition_text), account(holder))
}

pub fn genesis_account() -> AccountId {
    account("genesis@genesis")
}

/// A builder with the standard accounts: alice and bob in wonderland (coin#wonderland, owned by
/// the genesis authority), carol in looking_glass (coin#looking_glass), and one peer.
pub fn standard_builder() -> GenesisBuilder {
    let mut builder = GenesisBuilder::new(CHAIN.parse().expect("valid chain"), genesis_key(), T0);
    builder.peer(key(100).public_key());
    builder.funded_account(account(ALICE), alice_key().public_key(), ALICE_COINS);
    builder.funded_account(account(BOB), bob_key().public_key(), BOB_COINS);
    builder.funded_account(account(CAROL), carol_key().public_key(), CAROL_COINS);
    builder
}

/// The world after the standard genesis block, with the built-in plugins.
pub fn standard_wsv() -> Wsv {
    build(&standard_builder(), PluginRegistry::builtin())
}

pub fn build(builder: &GenesisBuilder, plugins: PluginRegistry) -> Wsv {
    let (_, wsv) = builder.build(plugins).expect("genesis applies");
    wsv
}

/// A payload for `creator` created at `created_at_ms` with the test TTL.
pub fn payload(creator: &str, instructions: Vec<Instruction>, created_at_ms: u64, nonce: u32) -> TransactionPayload {
    TransactionPayload {
        chain: CHAIN.parse().expect("valid chain"),
        creator: account(creator),
        instructions,
        created_at_ms,
        ttl_ms: TTL,
        nonce,
    }
}

/// A transaction by `creator`, created at the time the next block of `wsv` will have by default.
pub fn tx(wsv: &Wsv, creator: &str, signer: &KeyPair, instructions: Vec<Instruction>, nonce: u32) -> SignedTransaction {
    SignedTransaction::sign(payload(creator, instructions, next_time(wsv), nonce), &[signer])
}

pub fn transfer(source: AssetId, destination: &str, amount: u128) -> Instruction {
    Instruction::Transfer {
        source,
        destination: account(destination),
        amount,
    }
}

/// The default timestamp of the block after the head: one second later.
pub fn next_time(wsv: &Wsv) -> u64 {
    wsv.last_timestamp_ms() + 1_000
}

pub fn hashes_of(transactions: &[SignedTransaction]) -> Vec<TransactionHashes> {
    transactions.iter().map(SignedTransaction::hashes).collect()
}

/// Executes `transactions` on top of `wsv` and builds the block a proposer would: the header
/// follows the head and claims the commitment the execution computed.
pub fn make_block(
    wsv: &Wsv,
    timestamp_ms: u64,
    transactions: Vec<SignedTransaction>,
) -> Result<(Block, Vec<TransactionHashes>), ApplyError> {
    let hashes = hashes_of(&transactions);
    let height = wsv.height() + 1;
    let executed = wsv.execute(height, timestamp_ms, &transactions, &hashes)?;
    let header = BlockHeader {
        height,
        previous_hash: wsv.head_hash(),
        view: 0,
        proposer: key(100).public_key(),
        tx_merkle_root: tx_merkle_root(&hashes.iter().map(|hash| hash.transaction).collect::<Vec<Hash>>()),
        state_commitment: executed.state_commitment,
        timestamp_ms,
        view_change_proof: None,
    };
    Ok((Block { header, transactions }, hashes))
}

/// Builds and applies a block at `timestamp_ms`.
pub fn apply_at(
    wsv: &mut Wsv,
    timestamp_ms: u64,
    transactions: Vec<SignedTransaction>,
) -> Result<AppliedBlock, ApplyError> {
    let (block, hashes) = make_block(wsv, timestamp_ms, transactions)?;
    let executed = wsv.apply_block(&block, &hashes)?;
    assert_eq!(wsv.head_hash(), block.hash());
    assert_eq!(wsv.state_commitment(), block.header.state_commitment);
    Ok(executed)
}

/// Builds and applies a block one second after the head; the block must apply.
pub fn apply(wsv: &mut Wsv, transactions: Vec<SignedTransaction>) -> Vec<TransactionOutcome> {
    let time = next_time(wsv);
    apply_at(wsv, time, transactions).expect("block applies").outcomes
}

/// Applies one transaction in its own block and returns its outcome.
pub fn apply_one(wsv: &mut Wsv, transaction: SignedTransaction) -> TransactionOutcome {
    apply(wsv, vec![transaction]).remove(0)
}

/// Runs `instructions` as `creator` in a block of their own and returns the outcome.
pub fn run(wsv: &mut Wsv, creator: &str, signer: &KeyPair, instructions: Vec<Instruction>) -> TransactionOutcome {
    let transaction = tx(wsv, creator, signer, instructions, 0);
    apply_one(wsv, transaction)
}

/// Runs `instructions` as `creator`, signed by all of `signers`, in a block of their own.
pub fn run_signed(
    wsv: &mut Wsv,
    creator: &str,
    signers: &[&KeyPair],
    instructions: Vec<Instruction>,
) -> TransactionOutcome {
    let transaction = SignedTransaction::sign(payload(creator, instructions, next_time(wsv), 0), signers);
    apply_one(wsv, transaction)
}

/// Asserts that `outcome` is a rejection of instruction `index` with `error`.
#[track_caller]
pub fn assert_instruction_error(outcome: &TransactionOutcome, index: usize, error: InstructionError) {
    assert_eq!(
        outcome,
        &TransactionOutcome::Rejected(RejectionReason::Instruction { index, error }),
    );
}

/// Asserts that `outcome` is a rejection of instruction `index` with `NotPermitted`.
#[track_caller]
pub fn assert_not_permitted(outcome: &TransactionOutcome, index: usize) {
    match outcome {
        TransactionOutcome::Rejected(RejectionReason::Instruction {
            index: found,
            error: InstructionError::NotPermitted { .. },
        }) => assert_eq!(*found, index),
        other => panic!("expected NotPermitted at instruction {index}, got {other:?}"),
    }
}

/// What a failed block must leave as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub height: u64,
    pub head_hash: Hash,
    pub commitment: Hash,
    pub last_timestamp_ms: u64,
    pub replay_entries: usize,
    pub balances: Vec<u128>,
    pub accounts: usize,
    pub domains: usize,
}

pub fn snapshot(wsv: &Wsv) -> Snapshot {
    Snapshot {
        height: wsv.height(),
        head_hash: wsv.head_hash(),
        commitment: wsv.state_commitment(),
        last_timestamp_ms: wsv.last_timestamp_ms(),
        replay_entries: wsv.replay_entries(),
        balances: [ALICE, BOB, CAROL]
            .iter()
            .map(|holder| wsv.balance(&coin(holder)))
            .collect(),
        accounts: wsv.world().account_count(),
        domains: wsv.world().domain_count(),
    }
}

// Instructions and worlds shared by the permission tests.

pub fn name(text: &str) -> Name {
    Name::new(text).expect("valid name")
}

pub fn domain(text: &str) -> DomainId {
    DomainId::new(text).expect("valid domain")
}

pub fn register_domain(text: &str) -> Instruction {
    Instruction::RegisterDomain {
        domain: domain(text),
        validator: name("default"),
    }
}

pub fn register_account(text: &str, key_index: u64) -> Instruction {
    Instruction::RegisterAccount {
        account: account(text),
        signatories: vec![key(key_index).public_key()],
    }
}

pub fn register_definition(text: &str, mintable: Mintable) -> Instruction {
    Instruction::RegisterAssetDefinition {
        definition: definition(text),
        scale: 2,
        mintable,
    }
}

pub fn mint(definition_text: &str, holder: &str, amount: u128) -> Instruction {
    Instruction::Mint {
        asset: asset(definition_text, holder),
        amount,
    }
}

/// alice owns a domain `alice_land` with a definition `gem#alice_land`.
pub fn with_alice_land() -> Wsv {
    let mut wsv = standard_wsv();
    let outcome = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![
            register_domain("alice_land"),
            register_definition("gem#alice_land", Mintable::Infinitely),
        ],
    );
    assert_eq!(outcome, TransactionOutcome::Committed);
    wsv
}
