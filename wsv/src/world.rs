//! The entities of the world state and the committed world that holds them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kasane_model::ids::{AccountId, AssetDefinitionId, AssetId, DomainId, Name};
use kasane_model::instruction::{Mintable, Permission};
use kasane_model::PublicKey;
use serde::{Deserialize, Serialize};

/// Hash maps of the state use ahash: fast, and keyed randomly per process so that names chosen
/// by clients cannot be aimed at one bucket. Nothing iterates them in protocol logic.
pub type StateMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// Key-value metadata of a domain, account or asset definition.
pub type Metadata = BTreeMap<Name, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub id: DomainId,
    pub owner: AccountId,
    /// Name of the validator plugin that checks transactions of this domain's accounts.
    pub validator: Name,
    pub metadata: Metadata,
    /// Accounts registered in the domain; a domain is unregistered only when empty.
    pub account_count: u64,
    /// Asset definitions registered in the domain.
    pub asset_definition_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub signatories: BTreeSet<PublicKey>,
    /// How many distinct signatories must sign (m of n).
    pub signatures_required: u8,
    pub metadata: Metadata,
    /// Rights this account holds over objects it does not own.
    pub permissions: BTreeSet<Permission>,
    /// Assets with a non-zero balance held by this account; an account is unregistered only
    /// when it holds nothing.
    pub held_asset_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetDefinition {
    pub id: AssetDefinitionId,
    pub owner: AccountId,
    pub scale: u8,
    pub mintable: Mintable,
    /// Sum of all balances; a definition is unregistered only when nothing is in circulation.
    pub total_supply: u128,
    pub metadata: Metadata,
}

/// An identifier that was unregistered. Identifiers are never reused: a new account under an
/// old name would inherit what the old one owned and every permission others granted over it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RetiredId {
    Domain(DomainId),
    Account(AccountId),
    AssetDefinition(AssetDefinitionId),
}

/// A key of the contract section of the world state (wsv/src/contract.rs). Each contract
/// reads and writes only keys under its own name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StoreKey {
    /// A value the contract wrote under a key of its choosing.
    Data { contract: Name, key: Vec<u8> },
    /// How much of an asset the contract holds (a little-endian u128). Only the executor
    /// writes it: a contract locks an amount from its caller and releases it to an account.
    Lock {
        contract: Name,
        definition: AssetDefinitionId,
    },
}

/// The committed world state. Balances are stored only while non-zero.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub(crate) domains: StateMap<DomainId, Domain>,
    pub(crate) accounts: StateMap<AccountId, Account>,
    pub(crate) asset_definitions: StateMap<AssetDefinitionId, AssetDefinition>,
    pub(crate) assets: StateMap<AssetId, u128>,
    pub(crate) peers: BTreeSet<PublicKey>,
    pub(crate) retired: StateMap<RetiredId, ()>,
    /// The contracts' section: their data and the assets they hold. An asset definition's
    /// total supply counts the amounts locked here as well as the balances.
    pub(crate) store: StateMap<StoreKey, Vec<u8>>,
    /// Index, not state: the asset definitions each account holds a non-zero balance of, kept
    /// so that balance queries need no scan. Derived from `assets`; not in the commitment.
    pub(crate) holdings: StateMap<AccountId, BTreeSet<AssetDefinitionId>>,
}

impl World {
    pub fn domain(&self, id: &DomainId) -> Option<&Domain> {
        self.domains.get(id)
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    pub fn asset_definition(&self, id: &AssetDefinitionId) -> Option<&AssetDefinition> {
        self.asset_definitions.get(id)
    }

    /// Balance of an asset; zero when the account holds none.
    pub fn balance(&self, id: &AssetId) -> u128 {
        self.assets.get(id).copied().unwrap_or(0)
    }

    pub fn is_retired(&self, id: &RetiredId) -> bool {
        self.retired.contains_key(id)
    }

    /// A contract's value under `key`.
    pub fn store_value(&self, contract: &Name, key: &[u8]) -> Option<&[u8]> {
        self.store
            .get(&StoreKey::Data {
                contract: contract.clone(),
                key: key.to_vec(),
            })
            .map(Vec::as_slice)
    }

    /// Up to `limit` of a contract's entries whose key starts with `prefix` (and value with
    /// `value_prefix`, when given), in key order, starting after `after` when given. It scans
    /// the whole section: a query for wallets and tools, not for protocol logic.
    pub fn store_scan(
        &self,
        contract: &Name,
        prefix: &[u8],
        value_prefix: Option<&[u8]>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut found: Vec<(&Vec<u8>, &Vec<u8>)> = self
            .store
            .iter()
            .filter_map(|(key, value)| match key {
                StoreKey::Data { contract: owner, key } if owner == contract && key.starts_with(prefix) => {
                    let wanted = after.is_none_or(|after| key.as_slice() > after)
                        && value_prefix.is_none_or(|wanted| value.starts_with(wanted));
                    wanted.then_some((key, value))
                }
                _ => None,
            })
            .collect();
        found.sort_unstable();
        found
            .into_iter()
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// How much of `definition` the contract holds.
    pub fn locked(&self, contract: &Name, definition: &AssetDefinitionId) -> u128 {
        self.store
            .get(&StoreKey::Lock {
                contract: contract.clone(),
                definition: definition.clone(),
            })
            .map(|bytes| decode_amount(bytes))
            .unwrap_or(0)
    }

    pub fn peers(&self) -> &BTreeSet<PublicKey> {
        &self.peers
    }

    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn asset_count(&self) -> usize {
        self.assets.len()
    }
}

/// A lock's stored amount: 16 little-endian bytes (anything else reads as zero, which the
/// executor never writes).
pub(crate) fn decode_amount(bytes: &[u8]) -> u128 {
    <[u8; 16]>::try_from(bytes).map(u128::from_le_bytes).unwrap_or(0)
}
