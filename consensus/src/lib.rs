//! Sumeragi, made safe: kasane's consensus core (docs/PROTOCOL.md).
//!
//! [`Sumeragi`] is a pure state machine: [`Input`]s in, [`Effect`]s out. It has no clock, no
//! randomness and no I/O; `tests/purity.rs` fails the build if someone adds them. The
//! [`replica::Replica`] driver joins it to Kura, the world state and a bounded transaction
//! queue, and is shared by sim-net and the real node.

pub mod holding;
pub mod io;
pub mod message;
pub mod queue;
pub mod replica;
pub mod sumeragi;
pub mod topology;
pub mod votes;
pub mod wire;

pub use io::{Config, Counters, DropReason, Effect, Input, LockRecord, Timer, Verdict};
pub use message::{Message, Proposal, SignedVote, SnapshotManifest, ViewChangeVote};
pub use sumeragi::{Sumeragi, Validity};
pub use topology::{Role, Topology};
