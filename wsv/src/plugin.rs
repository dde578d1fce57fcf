//! Validator plugins: pluggable, per-domain transaction validation.
//!
//! After the built-in checks (signatures satisfy the signing condition, not expired, not
//! replayed) and before its instructions run, each transaction is shown to the validator plugin
//! of its creator's domain. The plugin answers one of three verdicts, after Fabric's validation
//! plugins:
//! - `Valid`: the transaction runs;
//! - `Invalid(reason)`: the transaction is rejected, deterministically, and recorded as such;
//! - `ExecutionFailure(reason)`: the plugin could not decide (a bug, a missing resource).
//!   Processing of the whole block stops, nothing is marked invalid, and the node reports it,
//!   because marking the transaction invalid on this node but not on others would make honest
//!   peers diverge.
//!
//! Every node must register the same plugins under the same names; a domain names its plugin
//! when it is registered, and registering a domain with an unknown plugin is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use kasane_model::ids::{AccountId, AssetId, DomainId};
use kasane_model::instruction::Instruction;
use kasane_model::SignedTransaction;

use crate::contract::Contract;
use crate::layer::Layered;
use crate::world::{Account, Domain, StoreKey};

/// A plugin's verdict on one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid(String),
    ExecutionFailure(String),
}

/// Read-only state a plugin may consult: the committed world with the block's earlier writes.
#[derive(Debug)]
pub struct PluginContext<'a, 'w> {
    pub(crate) state: &'a Layered<'w>,
    pub(crate) height: u64,
}

impl PluginContext<'_, '_> {
    pub fn domain(&self, id: &DomainId) -> Option<&Domain> {
        self.state.domain(id)
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.state.account(id)
    }

    pub fn balance(&self, id: &AssetId) -> u128 {
        self.state.balance(id)
    }

    /// Height of the block being applied.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// A contract's value under `key`, with the block's earlier writes (wsv/src/contract.rs).
    pub fn contract_value(&self, contract: &kasane_model::ids::Name, key: &[u8]) -> Option<&[u8]> {
        self.state
            .store(&StoreKey::Data {
                contract: contract.clone(),
                key: key.to_vec(),
            })
            .map(Vec::as_slice)
    }
}

pub trait ValidatorPlugin: Send + Sync {
    /// Decides on `transaction`, whose creator is in `domain`.
    fn validate(&self, context: &PluginContext<'_, '_>, domain: &Domain, transaction: &SignedTransaction) -> Verdict;
}

/// The validator plugins and contracts this node knows, by name.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    plugins: BTreeMap<String, Arc<dyn ValidatorPlugin>>,
    contracts: BTreeMap<String, Arc<dyn Contract>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("plugins", &self.plugins.keys().collect::<Vec<_>>())
            .field("contracts", &self.contracts.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Name of the plugin that accepts everything the built-in rules accept.
pub const DEFAULT_PLUGIN: &str = "default";
/// Name of the plugin that caps transfer and mint amounts by a domain metadata value.
pub const AMOUNT_LIMIT_PLUGIN: &str = "amount_limit";
/// The domain metadata key the amount-limit plugin reads (a decimal integer).
pub const AMOUNT_LIMIT_KEY: &str = "amount_limit";

impl PluginRegistry {
    /// The plugins every kasane node ships: `default` and `amount_limit`.
    pub fn builtin() -> PluginRegistry {
        let mut registry = PluginRegistry::default();
        registry.register(DEFAULT_PLUGIN, Arc::new(AcceptAll));
        registry.register(AMOUNT_LIMIT_PLUGIN, Arc::new(AmountLimit));
        registry
    }

    pub fn register(&mut self, name: &str, plugin: Arc<dyn ValidatorPlugin>) {
        self.plugins.insert(name.to_string(), plugin);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.plugins.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn ValidatorPlugin>> {
        self.plugins.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// Registers a contract that `CallContract { contract: name, .. }` reaches.
    pub fn register_contract(&mut self, name: &str, contract: Arc<dyn Contract>) {
        self.contracts.insert(name.to_string(), contract);
    }

    pub fn contract(&self, name: &str) -> Option<&Arc<dyn Contract>> {
        self.contracts.get(name)
    }
}

/// Accepts every transaction: the built-in rules are the whole policy.
#[derive(Debug)]
pub struct AcceptAll;

impl ValidatorPlugin for AcceptAll {
    fn validate(&self, _: &PluginContext<'_, '_>, _: &Domain, _: &SignedTransaction) -> Verdict {
        Verdict::Valid
    }
}

/// Rejects a transfer or mint of more than the domain's `amount_limit` metadata value. A domain
/// without the key has no limit; a value that is not a decimal integer rejects everything, so a
/// misconfigured limit fails closed (and, being state, fails the same way on every peer).
#[derive(Debug)]
pub struct AmountLimit;

impl ValidatorPlugin for AmountLimit {
    fn validate(&self, _: &PluginContext<'_, '_>, domain: &Domain, transaction: &SignedTransaction) -> Verdict {
        let Some(text) = domain
            .metadata
            .iter()
            .find(|(key, _)| key.as_str() == AMOUNT_LIMIT_KEY)
            .map(|(_, value)| value)
        else {
            return Verdict::Valid;
        };
        let Ok(limit) = text.parse::<u128>() else {
            return Verdict::Invalid(format!("domain {} has a malformed amount_limit {text:?}", domain.id));
        };
        for instruction in &transaction.payload.instructions {
            let amount = match instruction {
                Instruction::Transfer { amount, .. } | Instruction::Mint { amount, .. } => *amount,
                _ => continue,
            };
            if amount > limit {
                return Verdict::Invalid(format!(
                    "amount {amount} is over domain {}'s limit of {limit}",
                    domain.id
                ));
            }
        }
        Verdict::Valid
    }
}
