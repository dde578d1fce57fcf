//! kasane's peer-to-peer transport over QUIC (quinn).
//!
//! - [`identity`]: certificates made from each node's ed25519 key; both sides of a handshake pin
//!   the other's key against the cluster membership. No certificate authority, no plaintext.
//! - [`network`]: one outgoing connection per peer with a long-lived stream per message class,
//!   length-prefixed versioned frames, bounded queues with an overload policy, reconnection with
//!   backoff.
//! - [`faults`]: per-peer drop, delay and cut rules for experiments.

pub mod faults;
pub mod identity;
pub mod network;

pub use faults::{FaultRule, FaultRules};
pub use network::{Class, Inbound, Network, NetworkConfig, NetworkError, NetworkStats, Peer, FRAME_BYTES_MAX};
