//! Building a genesis block: the first block, signed and certified by the genesis authority.

use kasane_model::block::{tx_merkle_root, BlockHeader, Certificate};
use kasane_model::ids::{AccountId, AssetDefinitionId, AssetId, DomainId, Name};
use kasane_model::instruction::{Instruction, MetadataTarget, Mintable};
#[cfg(doc)]
use kasane_model::transaction::Payloads;
use kasane_model::transaction::{ChainId, INSTRUCTIONS_MAX, TTL_MS_MAX};
use kasane_model::{Block, CommittedBlock, Hash, KeyPair, PublicKey, SignedTransaction, TransactionPayload};

use crate::plugin::{PluginRegistry, DEFAULT_PLUGIN};
use crate::state::{
    genesis_account, ApplyError, RejectionReason, TransactionOutcome, Wsv, PAYLOADS_KEY, PAYLOADS_OPAQUE,
};

/// Name of the asset definition [`GenesisBuilder::funded_account`] mints, in the account's domain.
pub const CURRENCY_NAME: &str = "coin";

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("genesis transaction {index} was rejected: {reason}")]
    Rejected { index: usize, reason: RejectionReason },
    #[error("genesis block does not apply: {0}")]
    Apply(#[from] ApplyError),
}

/// Collects the instructions of a genesis block.
#[derive(Debug)]
pub struct GenesisBuilder {
    chain: ChainId,
    authority: KeyPair,
    timestamp_ms: u64,
    instructions: Vec<Instruction>,
    domains: Vec<DomainId>,
    definitions: Vec<AssetDefinitionId>,
}

impl GenesisBuilder {
    pub fn new(chain: ChainId, authority: KeyPair, timestamp_ms: u64) -> GenesisBuilder {
        GenesisBuilder {
            chain,
            authority,
            timestamp_ms,
            instructions: Vec::new(),
            domains: Vec::new(),
            definitions: Vec::new(),
        }
    }

    /// Registers a validator.
    pub fn peer(&mut self, key: PublicKey) -> &mut Self {
        self.instructions.push(Instruction::RegisterPeer { peer: key });
        self
    }

    /// Registers a domain checked by the named validator plugin (once per domain). A plugin
    /// the registry passed to [`Self::build`] does not know makes the build fail.
    pub fn domain(&mut self, domain: &DomainId, validator: Name) -> &mut Self {
        if !self.domains.contains(domain) {
            self.domains.push(domain.clone());
            self.instructions.push(Instruction::RegisterDomain {
                domain: domain.clone(),
                validator,
            });
        }
        self
    }

    /// Registers `account` (and its domain, and the domain's `coin` asset, when new) and mints
    /// `amount` coins to it. Returns the account's coin asset.
    pub fn funded_account(&mut self, account: AccountId, signatory: PublicKey, amount: u128) -> AssetId {
        self.domain(
            &account.domain,
            Name::new(DEFAULT_PLUGIN).expect("constant names are valid"),
        );
        let definition = AssetDefinitionId {
            name: Name::new(CURRENCY_NAME).expect("constant names are valid"),
            domain: account.domain.clone(),
        };
        if !self.definitions.contains(&definition) {
            self.definitions.push(definition.clone());
            self.instructions.push(Instruction::RegisterAssetDefinition {
                definition: definition.clone(),
                scale: 0,
                mintable: Mintable::Infinitely,
            });
        }
        self.instructions.push(Instruction::RegisterAccount {
            account: account.clone(),
            signatories: vec![signatory],
        });
        let asset = AssetId::new(definition, account);
        if amount > 0 {
            self.instructions.push(Instruction::Mint {
                asset: asset.clone(),
                amount,
            });
        }
        asset
    }

    /// Makes the chain one of [`Payloads::Opaque`]: it also takes opaque payloads, unsigned
    /// when they are all a transaction carries (a consensus-only benchmark's chain).
    pub fn opaque_payloads(&mut self) -> &mut Self {
        self.instructions.push(Instruction::SetKeyValue {
            target: MetadataTarget::Account(genesis_account()),
            key: Name::new(PAYLOADS_KEY).expect("constant names are valid"),
            value: PAYLOADS_OPAQUE.to_string(),
        });
        self
    }

    /// Adds any instruction, run by the genesis authority.
    pub fn instruction(&mut self, instruction: Instruction) -> &mut Self {
        self.instructions.push(instruction);
        self
    }

    /// Signs the genesis transactions, executes them on a fresh world state, and certifies the
    /// block with the genesis authority's signature. Returns the block and the state after it.
    pub fn build(&self, plugins: PluginRegistry) -> Result<(CommittedBlock, Wsv), GenesisError> {
        let creator = Wsv::new(
            self.chain.clone(),
            self.authority.public_key(),
            PluginRegistry::default(),
        )
        .genesis_authority()
        .clone();
        let transactions: Vec<SignedTransaction> = self
            .instructions
            .chunks(INSTRUCTIONS_MAX)
            .enumerate()
            .map(|(nonce, chunk)| {
                let payload = TransactionPayload {
                    chain: self.chain.clone(),
                    creator: creator.clone(),
                    instructions: chunk.to_vec(),
                    created_at_ms: self.timestamp_ms,
                    ttl_ms: TTL_MS_MAX,
                    nonce: nonce as u32,
                };
                SignedTransaction::sign(payload, &[&self.authority])
            })
            .collect();
        let hashes: Vec<_> = transactions.iter().map(SignedTransaction::hashes).collect();
        let mut wsv = Wsv::new(self.chain.clone(), self.authority.public_key(), plugins);
        let executed = wsv.execute(1, self.timestamp_ms, &transactions, &hashes)?;
        for (index, outcome) in executed.outcomes.iter().enumerate() {
            if let TransactionOutcome::Rejected(reason) = outcome {
                return Err(GenesisError::Rejected {
                    index,
                    reason: reason.clone(),
                });
            }
        }
        let header = BlockHeader {
            height: 1,
            previous_hash: Hash::ZERO,
            view: 0,
            proposer: self.authority.public_key(),
            tx_merkle_root: tx_merkle_root(&hashes.iter().map(|hash| hash.transaction).collect::<Vec<_>>()),
            state_commitment: executed.state_commitment,
            timestamp_ms: self.timestamp_ms,
            view_change_proof: None,
        };
        let block = Block { header, transactions };
        wsv.commit(executed, block.hash(), block.header.view);
        let committed = CommittedBlock {
            certificate: Certificate::sign(CommittedBlock::expected_vote_for(&block), &[&self.authority]),
            block,
        };
        Ok((committed, wsv))
    }
}
