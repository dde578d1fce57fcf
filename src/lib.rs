//! The `kasane` node and command-line tools. `src/main.rs` is the binary; this library holds
//! everything it runs, so integration tests can use the same types.

pub mod cli;
