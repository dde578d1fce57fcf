//! Shared setup of the replica-level tests, and the step-table harness of the core.
#![allow(dead_code, clippy::unwrap_used)]

pub mod steps;

use kasane_consensus::replica::{LockStore, LockStoreError, Replica};
use kasane_consensus::{Config, LockRecord};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::{Kura, KuraConfig, MemoryBackend};
use kasane_model::KeyPair;
use kasane_wsv::PluginRegistry;

/// A lock store that keeps nothing: these tests never restart a replica.
pub struct NoLocks;

impl LockStore for NoLocks {
    fn save(&mut self, _: &LockRecord) -> Result<(), LockStoreError> {
        Ok(())
    }

    fn load(&self) -> Result<Option<LockRecord>, LockStoreError> {
        Ok(None)
    }
}

/// A replica (key derived from `label`) over an in-memory store holding only `chain`'s genesis.
pub fn replica_at_genesis(chain: &FixtureChain, label: &[u8], config: Config) -> Replica<MemoryBackend> {
    replica_on(KeyPair::derive(label, 0), config, genesis_store(chain))
}

/// An in-memory store holding only `chain`'s genesis block.
pub fn genesis_store(chain: &FixtureChain) -> MemoryBackend {
    let disk = MemoryBackend::new();
    let (mut kura, _) = Kura::open(disk.clone(), KuraConfig::default()).unwrap();
    kura.append(&chain.genesis).unwrap();
    disk
}

/// A fixture chain of 4 validators and its genesis and `config.blocks` blocks, written to an
/// in-memory store.
pub fn stored_chain(config: FixtureConfig) -> (FixtureChain, MemoryBackend) {
    let mut chain = FixtureChain::new(config).unwrap();
    let disk = MemoryBackend::new();
    let (mut kura, _) = Kura::open(disk.clone(), KuraConfig::default()).unwrap();
    chain.write_all(&mut kura, |_, _| {}).unwrap();
    (chain, disk)
}

/// A replica with `key` that opens the store on `disk` (default Kura settings, built-in plugins,
/// no lock store).
pub fn replica_on(key: KeyPair, config: Config, disk: MemoryBackend) -> Replica<MemoryBackend> {
    replica_queueing(key, config, disk, 1_000)
}

/// [`replica_on`] with a queue of `queue_capacity` transactions.
pub fn replica_queueing(
    key: KeyPair,
    config: Config,
    disk: MemoryBackend,
    queue_capacity: usize,
) -> Replica<MemoryBackend> {
    Replica::open(
        key,
        config,
        disk,
        KuraConfig::default(),
        PluginRegistry::builtin(),
        Box::new(NoLocks),
        queue_capacity,
    )
    .unwrap()
}
