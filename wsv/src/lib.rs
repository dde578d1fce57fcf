//! The world state view (WSV) of kasane: the Iroha 2 data model in memory, the instruction
//! executor with its permission rules, validator plugins, atomic block application with a
//! state commitment, and queries. No I/O.
//!
//! ```
//! use kasane_model::KeyPair;
//! use kasane_wsv::genesis::GenesisBuilder;
//! use kasane_wsv::{PluginRegistry, Wsv};
//!
//! let genesis_key = KeyPair::derive(b"doc", 0);
//! let validator = KeyPair::derive(b"doc", 1);
//! let mut builder = GenesisBuilder::new("demo".parse().unwrap(), genesis_key, 1_700_000_000_000);
//! builder.peer(validator.public_key());
//! let alice = KeyPair::derive(b"doc", 2).public_key();
//! let coins = builder.funded_account("alice@wonderland".parse().unwrap(), alice, 1_000);
//! let (genesis_block, wsv) = builder.build(PluginRegistry::builtin()).unwrap();
//! assert_eq!(wsv.height(), 1);
//! assert_eq!(wsv.balance(&coins), 1_000);
//! assert_eq!(genesis_block.block.header.state_commitment, wsv.state_commitment());
//! ```

pub mod commitment;
pub mod contract;
pub mod execute;
pub mod genesis;
pub mod layer;
pub mod plugin;
pub mod query;
pub mod replay;
pub mod snapshot;
pub mod state;
pub mod world;

pub use contract::{Contract, ContractContext, ContractResult};
pub use execute::InstructionError;
pub use plugin::{PluginContext, PluginRegistry, ValidatorPlugin, Verdict};
pub use query::Page;
pub use snapshot::{Snapshot, SnapshotError};
pub use state::{
    AppliedBlock, ApplyError, ExecutedBlock, RejectionReason, TransactionOutcome, Wsv, PAYLOADS_KEY, PAYLOADS_OPAQUE,
};
pub use world::{Account, AssetDefinition, Domain, StoreKey, World};
