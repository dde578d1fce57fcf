//! Subcommands of the `kasane` binary.

pub mod bench;
pub mod capacity;
pub mod ceiling;
pub mod client;
pub mod cluster;
pub mod demo;
pub mod genesis;
pub mod http;
pub mod kura;
pub mod load;
pub mod plasma;
pub mod sim;
pub mod store_demo;
pub mod testnet;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Prints "label: done/total" to stderr at most every `interval`, and once at the end.
#[derive(Debug)]
pub struct ProgressLine {
    label: &'static str,
    last: Instant,
    interval: Duration,
}

impl ProgressLine {
    pub fn new(label: &'static str) -> ProgressLine {
        ProgressLine {
            label,
            last: Instant::now(),
            interval: Duration::from_millis(500),
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if done == total || self.last.elapsed() >= self.interval {
            self.last = Instant::now();
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            let mut stderr = std::io::stderr();
            // On a terminal the line rewrites itself; in a log, each update is its own line.
            if stderr.is_terminal() {
                let _ = write!(stderr, "\r{}: {done}/{total} blocks ({percent}%)", self.label);
                if done == total {
                    let _ = writeln!(stderr);
                }
            } else {
                let _ = writeln!(stderr, "{}: {done}/{total} blocks ({percent}%)", self.label);
            }
        }
    }
}

/// Parses a block size in transactions for the command line
/// ([`kasane_node::config::check_block_txs_max`]).
pub fn block_txs_max(text: &str) -> Result<usize, String> {
    let value = text.parse().map_err(|error| format!("{error}"))?;
    kasane_node::config::check_block_txs_max(value)
        .map(|()| value)
        .map_err(|error| error.to_string())
}
