//! The pending changes of one block over the committed world, with an undo log so that a
//! rejected transaction leaves no trace.
//!
//! Reads look in the block's changes first, then in the committed world. Every write records
//! what it replaced; when a transaction is rejected its writes are undone in reverse order.
//! This costs one map insert per write and nothing per read, where a separate overlay per
//! transaction would cost a merge per transaction.

use std::collections::BTreeMap;

use kasane_model::ids::{AccountId, AssetDefinitionId, AssetId, DomainId};
use kasane_model::PublicKey;

use crate::world::{Account, AssetDefinition, Domain, RetiredId, StateMap, StoreKey, World};

/// A pending value: `Some` written, `None` deleted.
type Pending<V> = Option<V>;

/// The changes a block makes, keyed like the world. `None` marks a deletion.
#[derive(Debug, Default, Clone)]
pub struct BlockChanges {
    pub(crate) domains: StateMap<DomainId, Pending<Domain>>,
    pub(crate) accounts: StateMap<AccountId, Pending<Account>>,
    pub(crate) asset_definitions: StateMap<AssetDefinitionId, Pending<AssetDefinition>>,
    /// Zero means the balance is gone (deleted).
    pub(crate) assets: StateMap<AssetId, u128>,
    /// Ordered so that applying them and hashing them needs no sort.
    pub(crate) peers: BTreeMap<PublicKey, bool>,
    /// Identifiers unregistered in this block (only ever added).
    pub(crate) retired: StateMap<RetiredId, ()>,
    /// The contracts' section (`None` deletes).
    pub(crate) store: StateMap<StoreKey, Pending<Vec<u8>>>,
}

/// What one write replaced: `None` if the key was not in the block's changes before.
#[derive(Debug)]
enum Undo {
    Domain(DomainId, Option<Pending<Domain>>),
    Account(AccountId, Option<Pending<Account>>),
    AssetDefinition(AssetDefinitionId, Option<Pending<AssetDefinition>>),
    Asset(AssetId, Option<u128>),
    Peer(PublicKey, Option<bool>),
    Retired(RetiredId, Option<()>),
    Store(StoreKey, Option<Pending<Vec<u8>>>),
}

/// Reads through a block's changes to the world, and writes with undo.
#[derive(Debug)]
pub struct Layered<'w> {
    world: &'w World,
    changes: BlockChanges,
    undo: Vec<Undo>,
}

fn restore<K: std::hash::Hash + Eq, V>(map: &mut StateMap<K, V>, key: K, previous: Option<V>) {
    match previous {
        Some(value) => {
            map.insert(key, value);
        }
        None => {
            map.remove(&key);
        }
    }
}

impl<'w> Layered<'w> {
    pub fn new(world: &'w World) -> Layered<'w> {
        Layered {
            world,
            changes: BlockChanges::default(),
            undo: Vec::new(),
        }
    }

    pub fn world(&self) -> &'w World {
        self.world
    }

    /// Marks the start of a transaction: writes from here on can be undone.
    pub fn begin(&mut self) {
        self.undo.clear();
    }

    /// Keeps the transaction's writes.
    pub fn keep(&mut self) {
        self.undo.clear();
    }

    /// Undoes every write since [`Self::begin`].
    pub fn undo(&mut self) {
        while let Some(entry) = self.undo.pop() {
            let changes = &mut self.changes;
            match entry {
                Undo::Domain(key, previous) => restore(&mut changes.domains, key, previous),
                Undo::Account(key, previous) => restore(&mut changes.accounts, key, previous),
                Undo::AssetDefinition(key, previous) => restore(&mut changes.asset_definitions, key, previous),
                Undo::Asset(key, previous) => restore(&mut changes.assets, key, previous),
                Undo::Retired(key, previous) => restore(&mut changes.retired, key, previous),
                Undo::Store(key, previous) => restore(&mut changes.store, key, previous),
                Undo::Peer(key, previous) => match previous {
                    Some(value) => {
                        changes.peers.insert(key, value);
                    }
                    None => {
                        changes.peers.remove(&key);
                    }
                },
            }
        }
    }

    pub fn into_changes(self) -> BlockChanges {
        self.changes
    }

    pub fn domain(&self, id: &DomainId) -> Option<&Domain> {
        match self.changes.domains.get(id) {
            Some(pending) => pending.as_ref(),
            None => self.world.domains.get(id),
        }
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        match self.changes.accounts.get(id) {
            Some(pending) => pending.as_ref(),
            None => self.world.accounts.get(id),
        }
    }

    pub fn asset_definition(&self, id: &AssetDefinitionId) -> Option<&AssetDefinition> {
        match self.changes.asset_definitions.get(id) {
            Some(pending) => pending.as_ref(),
            None => self.world.asset_definitions.get(id),
        }
    }

    pub fn balance(&self, id: &AssetId) -> u128 {
        match self.changes.assets.get(id) {
            Some(balance) => *balance,
            None => self.world.assets.get(id).copied().unwrap_or(0),
        }
    }

    /// How many peers are registered, with this block's changes.
    pub fn peer_count(&self) -> usize {
        let added = self
            .changes
            .peers
            .iter()
            .filter(|(key, present)| **present && !self.world.peers.contains(key))
            .count();
        let removed = self
            .changes
            .peers
            .iter()
            .filter(|(key, present)| !**present && self.world.peers.contains(key))
            .count();
        self.world.peers.len() + added - removed
    }

    pub fn is_peer(&self, key: &PublicKey) -> bool {
        match self.changes.peers.get(key) {
            Some(present) => *present,
            None => self.world.peers.contains(key),
        }
    }

    pub fn is_retired(&self, id: &RetiredId) -> bool {
        self.changes.retired.contains_key(id) || self.world.retired.contains_key(id)
    }

    pub fn store(&self, key: &StoreKey) -> Option<&Vec<u8>> {
        match self.changes.store.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.world.store.get(key),
        }
    }

    pub fn set_store(&mut self, key: StoreKey, value: Pending<Vec<u8>>) {
        let previous = self.changes.store.insert(key.clone(), value);
        self.undo.push(Undo::Store(key, previous));
    }

    pub fn retire(&mut self, id: RetiredId) {
        let previous = self.changes.retired.insert(id.clone(), ());
        self.undo.push(Undo::Retired(id, previous));
    }

    pub fn set_domain(&mut self, id: DomainId, value: Pending<Domain>) {
        let previous = self.changes.domains.insert(id.clone(), value);
        self.undo.push(Undo::Domain(id, previous));
    }

    pub fn set_account(&mut self, id: AccountId, value: Pending<Account>) {
        let previous = self.changes.accounts.insert(id.clone(), value);
        self.undo.push(Undo::Account(id, previous));
    }

    pub fn set_asset_definition(&mut self, id: AssetDefinitionId, value: Pending<AssetDefinition>) {
        let previous = self.changes.asset_definitions.insert(id.clone(), value);
        self.undo.push(Undo::AssetDefinition(id, previous));
    }

    pub fn set_balance(&mut self, id: AssetId, balance: u128) {
        let previous = self.changes.assets.insert(id.clone(), balance);
        self.undo.push(Undo::Asset(id, previous));
    }

    pub fn set_peer(&mut self, key: PublicKey, present: bool) {
        let previous = self.changes.peers.insert(key, present);
        self.undo.push(Undo::Peer(key, previous));
    }
}

impl BlockChanges {
    /// Writes the changes into the world.
    pub(crate) fn apply_to(self, world: &mut World) {
        fn merge<K: std::hash::Hash + Eq, V>(target: &mut StateMap<K, V>, source: StateMap<K, Option<V>>) {
            for (key, value) in source {
                match value {
                    Some(value) => {
                        target.insert(key, value);
                    }
                    None => {
                        target.remove(&key);
                    }
                }
            }
        }
        merge(&mut world.domains, self.domains);
        merge(&mut world.accounts, self.accounts);
        merge(&mut world.asset_definitions, self.asset_definitions);
        merge(&mut world.store, self.store);
        for (key, balance) in self.assets {
            if balance == 0 {
                if world.assets.remove(&key).is_some() {
                    if let Some(held) = world.holdings.get_mut(&key.account) {
                        held.remove(&key.definition);
                        if held.is_empty() {
                            world.holdings.remove(&key.account);
                        }
                    }
                }
            } else if world.assets.insert(key.clone(), balance).is_none() {
                world.holdings.entry(key.account).or_default().insert(key.definition);
            }
        }
        world.retired.extend(self.retired);
        for (key, present) in self.peers {
            if present {
                world.peers.insert(key);
            } else {
                world.peers.remove(&key);
            }
        }
    }

    /// Number of written keys.
    pub fn len(&self) -> usize {
        self.domains.len()
            + self.accounts.len()
            + self.asset_definitions.len()
            + self.assets.len()
            + self.peers.len()
            + self.retired.len()
            + self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
