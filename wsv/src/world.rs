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

/// The committed world state. Balances are stored only while non-zero.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub(crate) domains: StateMap<DomainId, Domain>,
    pub(crate) accounts: StateMap<AccountId, Account>,
    pub(crate) asset_definitions: StateMap<AssetDefinitionId, AssetDefinition>,
    pub(crate) assets: StateMap<AssetId, u128>,
    pub(crate) peers: BTreeSet<PublicKey>,
    pub(crate) retired: StateMap<RetiredId, ()>,
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
