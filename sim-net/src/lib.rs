//! sim-net: kasane's deterministic simulator. Whole clusters of real replicas (consensus core,
//! Kura on simulated disks, world state) run in one process on virtual time, over a simulated
//! network with latency, loss, duplication, reordering and partitions, with crashes, power
//! loss, amnesia, clock skew, Byzantine replicas and coalitions, and Twins (several replicas
//! under one key), all driven by one seed. Checkers and oracles run after every event.
//!
//! ```
//! use kasane_sim_net::{run, SimConfig};
//!
//! let report = run(7, &SimConfig::calm(4));
//! assert!(report.ok(), "{:?}", report.violations);
//! assert!(report.submitted_transactions > 0);
//! assert_eq!(report.committed_transactions, report.submitted_transactions);
//! ```

pub mod byzantine;
pub mod checker;
pub mod client;
pub mod config;
pub mod oracle;
pub mod random;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod twins;

pub use checker::Violation;
pub use config::{Behaviour, ClientConfig, Fault, FaultKind, SimConfig};
pub use scenario::{Scenario, ScenarioError};
pub use sim::{roles_after_genesis, run, SimReport};
pub use twins::{Enumerator, Twins};
