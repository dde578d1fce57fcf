//! Test networks: the genesis test accounts, the cluster manifest `kasane genesis` writes, and
//! signed transfers between test accounts for `kasane client` and `kasane load`.
//!
//! The test accounts' keys are derived from a published label, like the development accounts
//! of other chains: anyone can spend their coins. They exist for local and test clusters only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kasane_model::crypto::KeyCache;
use kasane_model::ids::{AccountId, AssetId};
use kasane_model::instruction::{Instruction, MetadataTarget, METADATA_VALUE_BYTES_MAX};
use kasane_model::transaction::{ChainId, Payloads, TTL_MS_MAX};
use kasane_model::{CommittedBlock, KeyPair, PublicKey, SignedTransaction, TransactionPayload};
use kasane_wsv::genesis::GenesisBuilder;
use serde::{Deserialize, Serialize};

/// Label the test accounts' keys are derived from.
pub const TEST_ACCOUNT_LABEL: &[u8] = b"kasane-test-account";
pub const TEST_DOMAIN: &str = "test";
/// Coins each test account starts with.
pub const TEST_ACCOUNT_COINS: u128 = 1_000_000_000_000;
pub const DEFAULT_TEST_ACCOUNTS: usize = 100;
pub const DEFAULT_CHAIN: &str = "kasane-local";

/// Test account `index`: its id (`user<index>@test`) and key.
pub fn test_account(index: usize) -> (AccountId, KeyPair) {
    let id = AccountId::new(&format!("user{index}"), TEST_DOMAIN).expect("generated account names are valid");
    (id, KeyPair::derive(TEST_ACCOUNT_LABEL, index as u64))
}

/// The coin asset of a test account.
pub fn coin_of(account: &AccountId) -> AssetId {
    AssetId::new(
        format!("coin#{}", account.domain)
            .parse()
            .expect("generated asset names are valid"),
        account.clone(),
    )
}

/// A signed transfer of `amount` coins from test account `from` to test account `to`.
pub fn transfer(
    chain: &ChainId,
    from: usize,
    to: usize,
    amount: u128,
    nonce: u32,
    created_at_ms: u64,
) -> SignedTransaction {
    padded_transfer(chain, from, to, amount, nonce, created_at_ms, 0)
}

/// [`transfer`] with a time-to-live of `ttl_ms` (at most `TTL_MS_MAX`) instead of the maximum:
/// every node keeps a committed payload's hash for replay protection until it expires, so the
/// time-to-live clients choose bounds that memory.
pub fn transfer_with_ttl(
    chain: &ChainId,
    from: usize,
    to: usize,
    nonce: u32,
    created_at_ms: u64,
    ttl_ms: u64,
) -> SignedTransaction {
    build_transfer(chain, from, to, 1, nonce, created_at_ms, 0, ttl_ms)
}

/// A transfer followed, when `padding` > 0, by a metadata write of `padding` bytes (at most
/// [`METADATA_VALUE_BYTES_MAX`]) on the sender's account, to make larger transactions.
pub fn padded_transfer(
    chain: &ChainId,
    from: usize,
    to: usize,
    amount: u128,
    nonce: u32,
    created_at_ms: u64,
    padding: usize,
) -> SignedTransaction {
    build_transfer(chain, from, to, amount, nonce, created_at_ms, padding, TTL_MS_MAX)
}

#[allow(clippy::too_many_arguments)]
fn build_transfer(
    chain: &ChainId,
    from: usize,
    to: usize,
    amount: u128,
    nonce: u32,
    created_at_ms: u64,
    padding: usize,
    ttl_ms: u64,
) -> SignedTransaction {
    let (source, key) = test_account(from);
    let (destination, _) = test_account(to);
    let mut instructions = vec![Instruction::Transfer {
        source: coin_of(&source),
        destination,
        amount,
    }];
    if padding > 0 {
        instructions.push(Instruction::SetKeyValue {
            target: MetadataTarget::Account(source.clone()),
            key: "padding".parse().expect("constant names are valid"),
            value: "p".repeat(padding.min(METADATA_VALUE_BYTES_MAX)),
        });
    }
    let payload = TransactionPayload {
        chain: chain.clone(),
        creator: source,
        instructions,
        created_at_ms,
        ttl_ms,
        nonce,
    };
    SignedTransaction::sign(payload, &[&key])
}

/// An unsigned transaction of `bytes` opaque bytes for a chain of [`Payloads::Opaque`]: the
/// workload of a consensus-only benchmark. `index` makes the payload (and so its replay key)
/// unique; the creator is one no chain registers, since none is consulted.
pub fn opaque_transaction(chain: &ChainId, index: u64, created_at_ms: u64, bytes: usize) -> SignedTransaction {
    let mut body = vec![0u8; bytes];
    for (at, byte) in index.to_le_bytes().iter().enumerate().take(bytes) {
        body[at] = *byte;
    }
    let payload = TransactionPayload {
        chain: chain.clone(),
        creator: AccountId::new("opaque", TEST_DOMAIN).expect("constant names are valid"),
        instructions: vec![Instruction::Opaque { bytes: body }],
        created_at_ms,
        ttl_ms: TTL_MS_MAX,
        nonce: index as u32,
    };
    SignedTransaction {
        payload,
        signatures: Vec::new(),
    }
}

/// The genesis block: validators as peers, and `accounts` funded test accounts. With
/// `plasma_l2`, the test domain is checked by the plasma plugin: its accounts send only plasma
/// transactions, and the chain is a plasma L2 (docs/PLASMA.md). With [`Payloads::Opaque`], the
/// chain also orders unsigned opaque payloads (docs/PROTOCOL.md section 1.2).
pub fn build_genesis(
    chain: &ChainId,
    authority: KeyPair,
    validators: &[PublicKey],
    accounts: usize,
    timestamp_ms: u64,
    plasma_l2: bool,
    payloads: Payloads,
) -> anyhow::Result<CommittedBlock> {
    let mut builder = GenesisBuilder::new(chain.clone(), authority, timestamp_ms);
    for validator in validators {
        builder.peer(*validator);
    }
    if payloads == Payloads::Opaque {
        builder.opaque_payloads();
    }
    if plasma_l2 {
        builder.domain(
            &TEST_DOMAIN.parse().expect("constant names are valid"),
            kasane_plasma::chain::PLUGIN.parse().expect("constant names are valid"),
        );
    }
    for index in 0..accounts {
        let (id, key) = test_account(index);
        builder.funded_account(id, key.public_key(), TEST_ACCOUNT_COINS);
    }
    let (genesis, _) = builder
        .build(kasane_plasma::chain::node_registry(KeyCache::new()))
        .context("building genesis")?;
    Ok(genesis)
}

/// One node of a cluster, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNode {
    pub name: String,
    pub public_key: String,
    pub validator: bool,
    pub p2p: SocketAddr,
    /// Base URL of the node's API, e.g. http://127.0.0.1:8080.
    pub api: String,
    pub admin: SocketAddr,
    /// The node's directory, relative to the manifest.
    pub dir: PathBuf,
}

/// DIR/cluster.toml: what `kasane up`, `down`, `load` and the tests need to know of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub chain: String,
    pub accounts: usize,
    pub nodes: Vec<ManifestNode>,
}

pub const MANIFEST_FILE: &str = "cluster.toml";

impl Manifest {
    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (made by `kasane genesis --out DIR`)", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let text = toml::to_string_pretty(self).context("serialising the manifest")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn api_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.api.clone()).collect()
    }

    pub fn chain_id(&self) -> anyhow::Result<ChainId> {
        self.chain
            .parse()
            .map_err(|error| anyhow::anyhow!("chain id {:?}: {error}", self.chain))
    }
}
