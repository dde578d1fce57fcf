//! kasane's shared vocabulary: hashes, keys and signatures, identifiers, instructions,
//! transactions, blocks and certificates, Merkle trees and the versioned codec. No I/O.
//!
//! ```
//! use kasane_model::{codec, crypto::KeyPair, ids::AccountId, instruction::Instruction};
//! use kasane_model::transaction::{SignedTransaction, TransactionPayload};
//!
//! let alice = KeyPair::derive(b"example", 0);
//! let payload = TransactionPayload {
//!     chain: "demo".parse().unwrap(),
//!     creator: "alice@wonderland".parse().unwrap(),
//!     instructions: vec![Instruction::Transfer {
//!         source: "rose#wonderland#alice@wonderland".parse().unwrap(),
//!         destination: "bob@wonderland".parse::<AccountId>().unwrap(),
//!         amount: 5,
//!     }],
//!     created_at_ms: 1_700_000_000_000,
//!     ttl_ms: 60_000,
//!     nonce: 0,
//! };
//! let transaction = SignedTransaction::sign(payload, &[&alice]);
//! let bytes = codec::encode(&transaction);
//! assert_eq!(codec::decode::<SignedTransaction>(&bytes).unwrap(), transaction);
//! ```

pub mod block;
pub mod codec;
pub mod crypto;
pub mod footprint;
pub mod hash;
pub mod ids;
pub mod instruction;
pub mod merkle;
pub mod transaction;

pub use block::{Block, BlockHeader, Certificate, CommittedBlock, Vote, VoteKind};
pub use crypto::{KeyPair, PublicKey, Signature};
pub use hash::Hash;
pub use transaction::{SignedTransaction, TransactionPayload};
