//! kasane's plasma Layer 2 (docs/PLASMA.md): a UTXO chain whose block roots are committed to the
//! kasane Layer 1.
//!
//! - [`ledger`]: outputs, positions and their exit priority, plasma transactions and their
//!   signatures, the rules of a spend, the unspent set;
//! - [`proof`]: roots and inclusion proofs over a block's plasma transactions, and the root
//!   accumulator the L2 state keeps per block;
//! - [`chain`]: the L2 side, the ledger contract and validator plugin every node registers;
//! - [`contract`]: the L1 contract (chains, roots, deposits, exits, challenges, finalisation).
//!
//! The settlement agent, the wallet and the benchmark are `kasane plasma` (src/cli/plasma/).
//!
//! ```
//! use kasane_model::KeyPair;
//! use kasane_plasma::ledger::{Output, PlasmaTx, Position, UtxoSet};
//! use kasane_plasma::proof;
//!
//! let alice = KeyPair::derive(b"plasma-doc", 0);
//! let bob = KeyPair::derive(b"plasma-doc", 1);
//! let coin = "coin#test".parse().unwrap();
//! let mut utxos = UtxoSet::default();
//! // An L1 deposit of 10 coins by Alice, noted on L2.
//! utxos.note_deposit(0, Output { owner: alice.public_key(), asset: coin, amount: 10 }).unwrap();
//! let pay = PlasmaTx::sign(
//!     vec![Position::Deposit { number: 0 }],
//!     vec![
//!         Output { owner: bob.public_key(), asset: "coin#test".parse().unwrap(), amount: 4 },
//!         Output { owner: alice.public_key(), asset: "coin#test".parse().unwrap(), amount: 6 },
//!     ],
//!     &[&alice],
//! );
//! utxos.apply(&pay, 1, 0).unwrap();
//! assert!(utxos.apply(&pay, 1, 1).is_err(), "a double spend is refused");
//! let root = proof::root(&[pay.clone()]);
//! let inclusion = proof::prove(&[pay.clone()], 0).unwrap();
//! assert!(proof::verify(&pay, &inclusion, &root).is_ok());
//! ```

pub mod chain;
pub mod contract;
pub mod ledger;
pub mod proof;
