//! Contracts: state machines that every node registers under the same name, called by the
//! `CallContract` instruction.
//!
//! A contract owns a section of the world state (its keys under [`StoreKey::Data`]) and may
//! hold assets: it locks an amount from the calling account and releases what it holds to any
//! account. It cannot touch anything else. Its writes go through the block's layer like every
//! other write: they are covered by the state commitment and undone when the transaction that
//! made them is rejected. A contract decides from the world state, the caller and the height
//! only, so every honest node decides the same.
//!
//! This keeps `wsv` free of any one contract's types: the plasma contract lives in the plasma
//! crate (docs/PLASMA.md) and the node registers it beside the validator plugins.

use kasane_model::ids::{AccountId, AssetDefinitionId, AssetId, Name};

use crate::execute::add_balance;
use crate::layer::Layered;
use crate::world::{decode_amount, Account, Domain, StoreKey};

/// Why a contract refused a call; the transaction is rejected with it.
pub type ContractResult = Result<(), String>;

/// A state machine reachable through `CallContract { contract, call }`.
pub trait Contract: Send + Sync {
    /// Runs one call. An `Err` rejects the transaction and undoes every write it made.
    fn call(&self, context: &mut ContractContext<'_, '_>, call: &[u8]) -> ContractResult;
}

/// What a contract call sees and may change.
#[derive(Debug)]
pub struct ContractContext<'a, 'w> {
    pub(crate) state: &'a mut Layered<'w>,
    pub(crate) contract: &'a Name,
    pub(crate) caller: &'a AccountId,
    pub(crate) genesis_authority: &'a AccountId,
    pub(crate) height: u64,
}

impl ContractContext<'_, '_> {
    /// The account that signed the transaction.
    pub fn caller(&self) -> &AccountId {
        self.caller
    }

    /// The chain's genesis authority (the operator of a single-operator chain).
    pub fn genesis_authority(&self) -> &AccountId {
        self.genesis_authority
    }

    /// Height of the block being applied.
    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.state.account(id)
    }

    pub fn domain(&self, id: &kasane_model::ids::DomainId) -> Option<&Domain> {
        self.state.domain(id)
    }

    pub fn balance(&self, id: &AssetId) -> u128 {
        self.state.balance(id)
    }

    fn data_key(&self, key: &[u8]) -> StoreKey {
        StoreKey::Data {
            contract: self.contract.clone(),
            key: key.to_vec(),
        }
    }

    fn lock_key(&self, definition: &AssetDefinitionId) -> StoreKey {
        StoreKey::Lock {
            contract: self.contract.clone(),
            definition: definition.clone(),
        }
    }

    /// The contract's value under `key`, as of this transaction's place in its block.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.state.store(&self.data_key(key)).map(Vec::as_slice)
    }

    pub fn put(&mut self, key: &[u8], value: Vec<u8>) {
        let key = self.data_key(key);
        self.state.set_store(key, Some(value));
    }

    pub fn delete(&mut self, key: &[u8]) {
        let key = self.data_key(key);
        self.state.set_store(key, None);
    }

    /// How much of `definition` this contract holds.
    pub fn locked(&self, definition: &AssetDefinitionId) -> u128 {
        self.state
            .store(&self.lock_key(definition))
            .map(|bytes| decode_amount(bytes))
            .unwrap_or(0)
    }

    fn set_locked(&mut self, definition: &AssetDefinitionId, amount: u128) {
        let key = self.lock_key(definition);
        let value = (amount != 0).then(|| amount.to_le_bytes().to_vec());
        self.state.set_store(key, value);
    }

    /// Moves `amount` of `definition` from the caller's balance into the contract.
    pub fn lock_from_caller(&mut self, definition: &AssetDefinitionId, amount: u128) -> ContractResult {
        if amount == 0 {
            return Err("amount must be positive".to_string());
        }
        let locked = self
            .locked(definition)
            .checked_add(amount)
            .ok_or("the locked amount overflows")?;
        let asset = AssetId::new(definition.clone(), self.caller.clone());
        self.move_balance(&asset, amount, false)?;
        self.set_locked(definition, locked);
        Ok(())
    }

    /// Moves `amount` of `definition` from the contract to `to`. Refused when the contract
    /// holds less: a contract can never pay out more than was locked into it.
    pub fn release(&mut self, definition: &AssetDefinitionId, to: &AccountId, amount: u128) -> ContractResult {
        if amount == 0 {
            return Ok(());
        }
        let locked = self.locked(definition);
        let Some(rest) = locked.checked_sub(amount) else {
            return Err(format!(
                "contract {} holds {locked} of {definition}, less than {amount}",
                self.contract
            ));
        };
        let asset = AssetId::new(definition.clone(), to.clone());
        self.move_balance(&asset, amount, true)?;
        self.set_locked(definition, rest);
        Ok(())
    }

    /// Changes a balance the way instructions do ([`add_balance`]), for a definition that exists.
    fn move_balance(&mut self, asset: &AssetId, amount: u128, add: bool) -> ContractResult {
        if self.state.asset_definition(&asset.definition).is_none() {
            return Err(format!("asset definition {} does not exist", asset.definition));
        }
        add_balance(self.state, asset, amount, add).map_err(|error| error.to_string())
    }
}
