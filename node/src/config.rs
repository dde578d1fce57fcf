//! A node's TOML configuration, as `kasane genesis` writes it. Paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use kasane_consensus::Config as ConsensusConfig;
use kasane_model::block::BLOCK_TRANSACTIONS_MAX;
use kasane_model::{KeyPair, PublicKey};
use kasane_p2p::FaultRules;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub p2p: P2pSection,
    pub api: ApiSection,
    #[serde(default)]
    pub consensus: ConsensusSection,
    #[serde(default)]
    pub kura: KuraSection,
    #[serde(default)]
    pub memory: MemorySection,
    #[serde(default)]
    pub faults: FaultRules,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The node's ed25519 secret key (32 bytes, hex). The file should be readable by its owner only.
    pub secret_key: String,
    /// Where Kura and the consensus lock record live.
    pub data_dir: PathBuf,
    /// The genesis block (versioned postcard), written by `kasane genesis`.
    pub genesis: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub key: String,
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pSection {
    pub listen: SocketAddr,
    /// Every node of the cluster (validators and observers); this node's own entry is skipped.
    pub peers: Vec<PeerEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub listen: SocketAddr,
    /// The admin endpoint (fault rules); must be a loopback address.
    pub admin_listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_body_bytes_max")]
    pub body_bytes_max: usize,
    /// Transactions waiting for a block before submissions get 503.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// How long a submission waits for f + 1 validators to hold its transactions before those
    /// not yet held are answered as not acknowledged (docs/NODE.md, "Acknowledgement").
    #[serde(default = "default_hold_wait_ms")]
    pub hold_wait_ms: u64,
}

fn default_hold_wait_ms() -> u64 {
    2_000
}

fn default_body_bytes_max() -> usize {
    8 << 20
}

fn default_queue_capacity() -> usize {
    65_536
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusSection {
    pub block_time_ms: u64,
    pub commit_timeout_ms: u64,
    pub timeout_doublings_max: u64,
    pub block_txs_max: usize,
    pub status_interval_ms: u64,
    pub sync_timeout_ms: u64,
    /// Blocks committed on their certificate without local validation (block sync) skip the
    /// signature re-check (docs/PROTOCOL.md, R19). False re-verifies every signature.
    pub certified_blocks_skip_signatures: bool,
    /// A node far behind restores a recent checkpoint's state from its peers instead of
    /// executing every block up to it (docs/PROTOCOL.md section 8.1).
    pub state_sync: bool,
}

impl Default for ConsensusSection {
    fn default() -> ConsensusSection {
        let defaults = ConsensusConfig::default();
        ConsensusSection {
            block_time_ms: defaults.block_time_ms,
            commit_timeout_ms: defaults.commit_timeout_ms,
            timeout_doublings_max: defaults.timeout_doublings_max,
            block_txs_max: defaults.block_txs_max,
            status_interval_ms: defaults.status_interval_ms,
            sync_timeout_ms: defaults.sync_timeout_ms,
            certified_blocks_skip_signatures: defaults.certified_blocks_skip_signatures,
            state_sync: defaults.state_sync,
        }
    }
}

impl ConsensusSection {
    pub fn to_config(&self) -> ConsensusConfig {
        ConsensusConfig {
            block_time_ms: self.block_time_ms,
            commit_timeout_ms: self.commit_timeout_ms,
            timeout_doublings_max: self.timeout_doublings_max,
            block_txs_max: self.block_txs_max,
            status_interval_ms: self.status_interval_ms,
            sync_timeout_ms: self.sync_timeout_ms,
            certified_blocks_skip_signatures: self.certified_blocks_skip_signatures,
            state_sync: self.state_sync,
            ..ConsensusConfig::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InitMode {
    /// Replay blocks without re-verifying them.
    Fast,
    /// Verify hashes, certificates and signatures, re-execute, compare state commitments.
    Strict,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KuraSection {
    /// "always", "never" or "every:N".
    pub fsync: String,
    pub blocks_per_chunk: u32,
    pub init: InitMode,
    /// Keep the newest checkpoint's snapshot beside the chunks, so that a restart replays
    /// from it instead of from genesis (docs/NODE.md, "Restart").
    pub checkpoint_file: bool,
}

impl Default for KuraSection {
    fn default() -> KuraSection {
        KuraSection {
            fsync: "always".to_string(),
            blocks_per_chunk: kasane_kura::KuraConfig::default().blocks_per_chunk,
            init: InitMode::Fast,
            checkpoint_file: true,
        }
    }
}

/// Bounds of the node's in-memory tables, in entries (docs/NODE.md, "Memory"). Each table
/// forgets its oldest entries past its bound; none of them decides a consensus verdict. The
/// replay memory is not here: it must hold every committed payload until its time-to-live
/// ends, so the time-to-live of transactions bounds it (at most 10 minutes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// Transactions whose status `GET /v1/transactions/{hash}` answers from memory. The
    /// default, 524,288, is about a minute at 9,000 tx/s and takes about 235 MB: the entries
    /// (120 bytes each) and two hash maps kept at most half full (node/src/state.rs, `TxTable`).
    pub transaction_table_entries: usize,
    /// Transactions of recent blocks kept with their hashes (for block queries and proofs).
    /// Older blocks' hashes are computed again when asked for. The default, 131,072 (8 MiB of
    /// hashes, at least 13 blocks of 10,000), covers the proofs of `?wait=commit`, answered at
    /// commit, and fills within the first 15 s of 9,000 tx/s; 1,048,576 took four minutes of
    /// that load to fill, and the soak's memory grew by its 64 MiB after warm-up.
    pub recent_block_transactions: usize,
    /// Decoded public keys.
    pub key_cache_entries: usize,
    /// Signatures remembered as verified, so a transaction checked at admission is not checked
    /// again in its block.
    pub verified_signatures: usize,
    /// How often the node hands the allocator's free pages back to the system, in ms; 0 never
    /// (node/src/allocator.rs). Without it a node that synced or served a burst of blocks kept
    /// the freed memory resident.
    pub trim_interval_ms: u64,
}

/// The smallest bound a table accepts.
pub const MEMORY_TABLE_ENTRIES_MIN: usize = 1024;

impl Default for MemorySection {
    fn default() -> MemorySection {
        MemorySection {
            transaction_table_entries: 1 << 19,
            recent_block_transactions: 1 << 17,
            key_cache_entries: kasane_model::crypto::KEY_CACHE_ENTRIES_MAX,
            verified_signatures: kasane_model::crypto::VERIFIED_ENTRIES_MAX,
            trim_interval_ms: 5_000,
        }
    }
}

impl NodeConfig {
    /// Reads and checks a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: NodeConfig = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.node.data_dir = base.join(&config.node.data_dir);
        config.node.genesis = base.join(&config.node.genesis);
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        self.key()?;
        self.peers()?;
        ensure!(
            self.api.admin_listen.ip().is_loopback(),
            "api.admin_listen {} is not a loopback address: the admin endpoint changes fault rules and must not be reachable from other hosts",
            self.api.admin_listen
        );
        ensure!(
            self.api.body_bytes_max >= 1024,
            "api.body_bytes_max must be at least 1024"
        );
        ensure!(self.api.queue_capacity > 0, "api.queue_capacity must be positive");
        ensure!(
            (1..=600_000).contains(&self.api.hold_wait_ms),
            "api.hold_wait_ms must be between 1 and 600000"
        );
        self.kura
            .fsync
            .parse::<kasane_kura::FsyncPolicy>()
            .map_err(|error| anyhow::anyhow!("kura.fsync: {error}"))?;
        ensure!(self.kura.blocks_per_chunk > 0, "kura.blocks_per_chunk must be positive");
        let memory = &self.memory;
        for (name, value) in [
            ("transaction_table_entries", memory.transaction_table_entries),
            ("recent_block_transactions", memory.recent_block_transactions),
            ("key_cache_entries", memory.key_cache_entries),
            ("verified_signatures", memory.verified_signatures),
        ] {
            ensure!(
                value >= MEMORY_TABLE_ENTRIES_MIN,
                "memory.{name} must be at least {MEMORY_TABLE_ENTRIES_MIN}, not {value}"
            );
        }
        let consensus = &self.consensus;
        ensure!(
            consensus.block_time_ms > 0 && consensus.commit_timeout_ms > 0,
            "consensus: block_time_ms and commit_timeout_ms must be positive"
        );
        check_block_txs_max(consensus.block_txs_max)?;
        kasane_p2p::faults::Faults::new(self.faults.clone())?;
        Ok(())
    }

    pub fn key(&self) -> anyhow::Result<KeyPair> {
        let bytes = hex::decode(self.node.secret_key.trim()).context("node.secret_key is not hex")?;
        let Ok(secret) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!("node.secret_key must be 32 bytes, found {}", bytes.len());
        };
        Ok(KeyPair::from_secret(secret))
    }

    pub fn peers(&self) -> anyhow::Result<Vec<kasane_p2p::Peer>> {
        self.p2p
            .peers
            .iter()
            .map(|entry| {
                let key = PublicKey::from_hex(&entry.key)
                    .map_err(|error| anyhow::anyhow!("p2p peer key {:?}: {error}", entry.key))?;
                Ok(kasane_p2p::Peer {
                    key,
                    address: entry.address,
                })
            })
            .collect()
    }
}

/// `consensus.block_txs_max` (and the flags and manifests that set it) must be 1 to the block
/// limit every replica enforces: a larger setting builds blocks no replica accepts.
pub fn check_block_txs_max(value: usize) -> anyhow::Result<()> {
    ensure!(
        (1..=BLOCK_TRANSACTIONS_MAX).contains(&value),
        "consensus.block_txs_max is {value}; a block holds 1 to {BLOCK_TRANSACTIONS_MAX} transactions"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(memory: &str) -> anyhow::Result<NodeConfig> {
        let text = format!(
            r#"
[node]
secret_key = "{}"
data_dir = "data"
genesis = "genesis.block"

[p2p]
listen = "127.0.0.1:40000"
peers = []

[api]
listen = "127.0.0.1:40001"
admin_listen = "127.0.0.1:40002"
{memory}
"#,
            "11".repeat(32)
        );
        let config: NodeConfig = toml::from_str(&text)?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn memory_bounds_have_defaults_and_a_floor() {
        let defaults = config("").unwrap();
        assert_eq!(defaults.memory, MemorySection::default());
        let set = config("[memory]\nverified_signatures = 4096\ntransaction_table_entries = 2048").unwrap();
        assert_eq!(set.memory.verified_signatures, 4096);
        assert_eq!(set.memory.transaction_table_entries, 2048);
        assert_eq!(set.memory.key_cache_entries, MemorySection::default().key_cache_entries);
        let error = config("[memory]\nrecent_block_transactions = 10")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("memory.recent_block_transactions must be at least 1024"),
            "{error}"
        );
        assert!(config("[memory]\nunknown_table = 5").is_err());
        assert_eq!(defaults.memory.trim_interval_ms, 5_000);
        assert_eq!(
            config("[memory]\ntrim_interval_ms = 0")
                .unwrap()
                .memory
                .trim_interval_ms,
            0
        );
    }

    /// A block size no replica would accept is refused at start, not found by a stalled chain.
    #[test]
    fn block_txs_max_stays_within_the_block_limit() {
        let at_limit = config(&format!("[consensus]\nblock_txs_max = {BLOCK_TRANSACTIONS_MAX}")).unwrap();
        assert_eq!(at_limit.consensus.block_txs_max, BLOCK_TRANSACTIONS_MAX);
        let error = config("[consensus]\nblock_txs_max = 20000").unwrap_err().to_string();
        assert!(error.contains("a block holds 1 to 16384 transactions"), "{error}");
        assert!(config("[consensus]\nblock_txs_max = 0").is_err());
    }
}
