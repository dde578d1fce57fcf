//! A valid signed chain of transfers from a generated genesis: the fixture of `kasane kura
//! generate`, of the benchmarks, and of Kura's tests. Everything is derived from a seed, so the
//! same parameters give the same chain, byte for byte.

use kasane_model::block::{quorum, tx_merkle_root, BlockHeader, Certificate};
use kasane_model::ids::{AccountId, AssetId};
use kasane_model::instruction::Instruction;
use kasane_model::transaction::{TransactionHashes, TTL_MS_MAX};
use kasane_model::{Block, CommittedBlock, Hash, KeyPair, SignedTransaction, TransactionPayload};
use kasane_wsv::genesis::{GenesisBuilder, GenesisError};
use kasane_wsv::{ApplyError, PluginRegistry, Wsv};

use crate::backend::Backend;
use crate::store::{Kura, KuraError};

/// Genesis time of fixtures: 2023-11-14T22:13:20Z.
pub const FIXTURE_GENESIS_MS: u64 = 1_700_000_000_000;
/// Time between fixture blocks.
pub const FIXTURE_BLOCK_INTERVAL_MS: u64 = 1_000;
/// Coins each fixture account starts with.
pub const FIXTURE_ACCOUNT_COINS: u128 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureConfig {
    /// Transfer blocks after genesis.
    pub blocks: u64,
    pub transactions_per_block: usize,
    /// Funded accounts; transfers go round-robin from account i to account i + 1.
    pub accounts: usize,
    pub validators: usize,
    pub seed: u64,
}

impl Default for FixtureConfig {
    fn default() -> FixtureConfig {
        FixtureConfig {
            blocks: 10,
            transactions_per_block: 100,
            accounts: 100,
            validators: 4,
            seed: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("genesis: {0}")]
    Genesis(#[from] GenesisError),
    #[error("fixture block does not apply: {0}")]
    Apply(#[from] ApplyError),
    #[error("store: {0}")]
    Kura(#[from] KuraError),
    #[error("fixture needs at least 2 accounts and 1 validator")]
    TooSmall,
}

/// The keys and state of a fixture chain being built.
#[derive(Debug)]
pub struct FixtureChain {
    pub config: FixtureConfig,
    /// The genesis authority's key: it signed genesis and may change the peer set.
    pub genesis_key: KeyPair,
    pub validators: Vec<KeyPair>,
    pub accounts: Vec<(AccountId, KeyPair)>,
    pub genesis: CommittedBlock,
    /// The world state after the last generated block.
    pub wsv: Wsv,
    next_sender: usize,
}

fn seed_label(seed: u64, role: &str) -> Vec<u8> {
    format!("kasane-fixture/{seed}/{role}").into_bytes()
}

impl FixtureChain {
    /// Keys, accounts and the genesis block.
    pub fn new(config: FixtureConfig) -> Result<FixtureChain, FixtureError> {
        if config.accounts < 2 || config.validators == 0 {
            return Err(FixtureError::TooSmall);
        }
        let genesis_key = KeyPair::derive(&seed_label(config.seed, "genesis"), 0);
        let validators: Vec<KeyPair> = (0..config.validators as u64)
            .map(|index| KeyPair::derive(&seed_label(config.seed, "validator"), index))
            .collect();
        let accounts: Vec<(AccountId, KeyPair)> = (0..config.accounts)
            .map(|index| {
                let id = AccountId::new(&format!("user{index}"), "bench").expect("generated names are valid");
                (id, KeyPair::derive(&seed_label(config.seed, "account"), index as u64))
            })
            .collect();
        let mut builder = GenesisBuilder::new(
            "kasane-fixture".parse().expect("constant name"),
            genesis_key.clone(),
            FIXTURE_GENESIS_MS,
        );
        for validator in &validators {
            builder.peer(validator.public_key());
        }
        for (id, key) in &accounts {
            builder.funded_account(id.clone(), key.public_key(), FIXTURE_ACCOUNT_COINS);
        }
        let (genesis, wsv) = builder.build(PluginRegistry::builtin())?;
        Ok(FixtureChain {
            config,
            genesis_key,
            validators,
            accounts,
            genesis,
            wsv,
            next_sender: 0,
        })
    }

    /// The coin asset of account `index`.
    pub fn coin_of(&self, index: usize) -> AssetId {
        let account = &self.accounts[index].0;
        AssetId::new(
            format!("coin#{}", account.domain)
                .parse()
                .expect("generated names are valid"),
            account.clone(),
        )
    }

    /// Signed transfers for the next block, round-robin over the accounts.
    pub fn next_transactions(&mut self, height: u64, timestamp_ms: u64) -> Vec<SignedTransaction> {
        let count = self.config.transactions_per_block;
        let accounts = self.accounts.len();
        let first = self.next_sender;
        self.next_sender = (first + count) % accounts;
        let payloads: Vec<(usize, TransactionPayload)> = (0..count)
            .map(|offset| {
                let sender = (first + offset) % accounts;
                let receiver = (sender + 1) % accounts;
                let payload = TransactionPayload {
                    chain: self.wsv.chain().clone(),
                    creator: self.accounts[sender].0.clone(),
                    instructions: vec![Instruction::Transfer {
                        source: self.coin_of(sender),
                        destination: self.accounts[receiver].0.clone(),
                        amount: 1,
                    }],
                    created_at_ms: timestamp_ms,
                    ttl_ms: TTL_MS_MAX,
                    // Distinct per (height, offset) so no two fixture payloads are equal.
                    nonce: ((height as u32) << 14) ^ offset as u32,
                };
                (sender, payload)
            })
            .collect();
        sign_in_parallel(&self.accounts, payloads)
    }

    /// Builds, executes and certifies the next block, and applies it to the fixture's state.
    pub fn next_block(&mut self) -> Result<(CommittedBlock, Vec<TransactionHashes>), FixtureError> {
        let height = self.wsv.height() + 1;
        let transactions = self.next_transactions(height, self.timestamp_of(height));
        self.next_block_of(transactions)
    }

    /// The timestamp of the fixture block at `height`.
    pub fn timestamp_of(&self, height: u64) -> u64 {
        FIXTURE_GENESIS_MS + (height - 1) * FIXTURE_BLOCK_INTERVAL_MS
    }

    /// Builds, executes and certifies the next block with the caller's `transactions` (whose
    /// signatures are not checked here), and applies it to the fixture's state.
    pub fn next_block_of(
        &mut self,
        transactions: Vec<SignedTransaction>,
    ) -> Result<(CommittedBlock, Vec<TransactionHashes>), FixtureError> {
        let height = self.wsv.height() + 1;
        let timestamp_ms = self.timestamp_of(height);
        let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
        let executed = self.wsv.execute(height, timestamp_ms, &transactions, &hashes)?;
        let proposer = &self.validators[(height as usize) % self.validators.len()];
        let header = BlockHeader {
            height,
            previous_hash: self.wsv.head_hash(),
            view: 0,
            proposer: proposer.public_key(),
            tx_merkle_root: tx_merkle_root(&hashes.iter().map(|hash| hash.transaction).collect::<Vec<Hash>>()),
            state_commitment: executed.state_commitment,
            timestamp_ms,
            view_change_proof: None,
        };
        let block = Block { header, transactions };
        self.wsv.commit(executed, block.hash(), block.header.view);
        let signers: Vec<&KeyPair> = self.validators.iter().take(quorum(self.validators.len())).collect();
        let certificate = Certificate::sign(CommittedBlock::expected_vote_for(&block), &signers);
        Ok((CommittedBlock { block, certificate }, hashes))
    }

    /// Appends genesis and `config.blocks` transfer blocks to `kura`, calling `progress` with
    /// (blocks written, blocks in all) after each block.
    pub fn write_all<B: Backend>(
        &mut self,
        kura: &mut Kura<B>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(), FixtureError> {
        let total = self.config.blocks + 1;
        kura.append(&self.genesis)?;
        progress(1, total);
        for written in 2..=total {
            let (block, _) = self.next_block()?;
            kura.append(&block)?;
            progress(written, total);
        }
        Ok(())
    }
}

/// Signs payloads on every core; signing is most of the cost of generating a fixture.
fn sign_in_parallel(
    accounts: &[(AccountId, KeyPair)],
    payloads: Vec<(usize, TransactionPayload)>,
) -> Vec<SignedTransaction> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .max(1);
    let per_thread = payloads.len().div_ceil(threads).max(1);
    // The signing threads sign the way this thread does (real or mock signatures).
    let mock = kasane_model::crypto::rule::mock_signatures();
    let sign = move |chunk: &[(usize, TransactionPayload)]| {
        chunk
            .iter()
            .map(|(sender, payload)| SignedTransaction::sign(payload.clone(), &[&accounts[*sender].1]))
            .collect::<Vec<_>>()
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = payloads
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    if mock {
                        kasane_model::crypto::with_mock_signatures(|| sign(chunk))
                    } else {
                        sign(chunk)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("signing threads do not panic"))
            .collect()
    })
}
