//! `kasane keys` and `kasane genesis`: key pairs, and a whole cluster's directory.
//!
//! `kasane genesis --validators N --out DIR` writes:
//! - DIR/genesis.block: the genesis block (validators, funded test accounts);
//! - DIR/genesis.key: the genesis authority's secret key (for later membership changes);
//! - DIR/cluster.toml: the manifest (chain, nodes with their keys and addresses);
//! - `DIR/node-<i>/config.toml`: each node's configuration, its secret key included.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, ensure, Context};
use clap::Args;
use kasane_model::transaction::Payloads;
use kasane_model::{codec, KeyPair};
use serde_json::json;

use kasane_harness::{build_genesis, Manifest, ManifestNode, DEFAULT_CHAIN, DEFAULT_TEST_ACCOUNTS};
use kasane_node::config::{ApiSection, ConsensusSection, KuraSection, NodeConfig, NodeSection, P2pSection, PeerEntry};
use kasane_node::runtime::now_ms;

pub fn run_keys() -> anyhow::Result<ExitCode> {
    let key = KeyPair::generate();
    let value = json!({
        "public_key": key.public_key().to_hex(),
        "secret_key": hex::encode(key.secret_bytes()),
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct GenesisArgs {
    /// Validators (n = 3f + 1 tolerates f faults).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Nodes that follow the chain without voting.
    #[arg(long, default_value_t = 0)]
    pub observers: usize,
    /// The cluster directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Spread nodes round-robin over these hosts (comma-separated addresses); nodes listen on
    /// all interfaces. Needs --base-port. Without it every node is on 127.0.0.1.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<IpAddr>,
    /// Node i uses ports base+3i (p2p, UDP), base+3i+1 (API) and base+3i+2 (admin). Without
    /// it, free loopback ports are picked.
    #[arg(long)]
    pub base_port: Option<u16>,
    #[arg(long, default_value_t = DEFAULT_TEST_ACCOUNTS)]
    pub accounts: usize,
    #[arg(long, default_value = DEFAULT_CHAIN)]
    pub chain: String,
    #[arg(long)]
    pub block_time_ms: Option<u64>,
    #[arg(long)]
    pub commit_timeout_ms: Option<u64>,
    #[arg(long, value_parser = super::block_txs_max)]
    pub block_txs_max: Option<usize>,
    /// Transactions a node queues before answering 503 (admission control).
    #[arg(long, default_value_t = 65_536)]
    pub queue_capacity: usize,
    /// Kura fsync policy: always, never or every:N.
    #[arg(long, default_value = "always")]
    pub fsync: String,
    /// Overwrite an existing cluster directory's files.
    #[arg(long)]
    pub force: bool,
    /// Make the chain a plasma L2 (docs/PLASMA.md): the test accounts' domain is checked by
    /// the plasma plugin, so they send only plasma transactions.
    #[arg(long)]
    pub plasma_l2: bool,
    /// What the chain takes: `signed` transactions, or also `opaque` payloads that need no
    /// signature (a consensus-only benchmark's chain; docs/PROTOCOL.md section 1.2).
    #[arg(long, value_enum, default_value_t = PayloadKind::Signed)]
    pub payload: PayloadKind,
}

/// `--payload` of `kasane genesis` and `kasane bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    Signed,
    Opaque,
}

impl PayloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Signed => "signed",
            PayloadKind::Opaque => "opaque",
        }
    }
}

impl From<PayloadKind> for Payloads {
    fn from(kind: PayloadKind) -> Payloads {
        match kind {
            PayloadKind::Signed => Payloads::Signed,
            PayloadKind::Opaque => Payloads::Opaque,
        }
    }
}

/// Three ports per node: (p2p, api, admin).
fn pick_ports(args: &GenesisArgs, nodes: usize) -> anyhow::Result<Vec<(u16, u16, u16)>> {
    if let Some(base) = args.base_port {
        return (0..nodes)
            .map(|index| {
                let first = base as usize + 3 * index;
                ensure!(
                    first + 2 <= u16::MAX as usize,
                    "--base-port {base} leaves no room for {nodes} nodes"
                );
                Ok((first as u16, first as u16 + 1, first as u16 + 2))
            })
            .collect();
    }
    ensure!(
        args.hosts.is_empty(),
        "--hosts needs --base-port: free ports can only be picked on this machine"
    );
    // Hold every socket until all are picked, so no port is handed out twice.
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let mut held_udp = Vec::new();
    let mut held_tcp = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..nodes {
        let udp = std::net::UdpSocket::bind(loopback).context("picking a free UDP port")?;
        let api = std::net::TcpListener::bind(loopback).context("picking a free TCP port")?;
        let admin = std::net::TcpListener::bind(loopback).context("picking a free TCP port")?;
        ports.push((
            udp.local_addr()?.port(),
            api.local_addr()?.port(),
            admin.local_addr()?.port(),
        ));
        held_udp.push(udp);
        held_tcp.push(api);
        held_tcp.push(admin);
    }
    Ok(ports)
}

pub fn run_genesis(args: GenesisArgs) -> anyhow::Result<ExitCode> {
    let manifest = write_cluster(&args)?;
    println!(
        "cluster of {} validators and {} observers in {} (chain {}, {} test accounts)",
        args.validators,
        args.observers,
        args.out.display(),
        manifest.chain,
        manifest.accounts
    );
    for node in &manifest.nodes {
        println!(
            "  {}: {} p2p {} api {} key {}",
            node.name,
            if node.validator { "validator" } else { "observer " },
            node.p2p,
            node.api,
            node.public_key
        );
    }
    println!("start it with: kasane up --dir {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes the cluster directory and returns its manifest.
pub fn write_cluster(args: &GenesisArgs) -> anyhow::Result<Manifest> {
    ensure!(args.validators >= 1, "--validators must be at least 1");
    ensure!(args.accounts >= 2, "--accounts must be at least 2");
    ensure!(args.queue_capacity > 0, "--queue-capacity must be positive");
    let chain = args
        .chain
        .parse()
        .map_err(|error| anyhow::anyhow!("--chain {:?}: {error}", args.chain))?;
    let fsync: kasane_kura::FsyncPolicy = args
        .fsync
        .parse()
        .map_err(|error: String| anyhow::anyhow!("--fsync: {error}"))?;
    let out = &args.out;
    if out.join(kasane_harness::MANIFEST_FILE).exists() && !args.force {
        bail!(
            "{} already holds a cluster; pass --force to overwrite it",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if args.force {
        // A new genesis makes old stores and lock records of another chain: remove them.
        for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
            let path = entry?.path();
            let is_node = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("node-"));
            if is_node && path.join("data").is_dir() {
                std::fs::remove_dir_all(path.join("data"))
                    .with_context(|| format!("removing {}", path.join("data").display()))?;
            }
        }
    }
    let nodes = args.validators + args.observers;
    let keys: Vec<KeyPair> = (0..nodes).map(|_| KeyPair::generate()).collect();
    let validators: Vec<_> = keys[..args.validators].iter().map(KeyPair::public_key).collect();
    let authority = KeyPair::generate();
    let genesis = build_genesis(
        &chain,
        authority.clone(),
        &validators,
        args.accounts,
        now_ms(),
        args.plasma_l2,
        args.payload.into(),
    )?;
    write_private(&out.join("genesis.key"), &hex::encode(authority.secret_bytes()))?;
    std::fs::write(out.join("genesis.block"), codec::encode(&genesis)).context("writing genesis.block")?;

    let ports = pick_ports(args, nodes)?;
    let host_of = |index: usize| -> IpAddr {
        match args.hosts.len() {
            0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            count => args.hosts[index % count],
        }
    };
    // Spread over hosts, a node listens on every interface of its address family.
    let listen_ip = |index: usize| -> IpAddr {
        match (args.hosts.is_empty(), host_of(index)) {
            (true, _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (false, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (false, IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        }
    };
    let peers: Vec<PeerEntry> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| PeerEntry {
            key: key.public_key().to_hex(),
            address: SocketAddr::new(host_of(index), ports[index].0),
        })
        .collect();
    let mut consensus = ConsensusSection::default();
    if let Some(value) = args.block_time_ms {
        consensus.block_time_ms = value;
    }
    if let Some(value) = args.commit_timeout_ms {
        consensus.commit_timeout_ms = value;
    }
    if let Some(value) = args.block_txs_max {
        consensus.block_txs_max = value;
    }
    let mut manifest_nodes = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let name = format!("node-{index}");
        let dir = out.join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (p2p_port, api_port, admin_port) = ports[index];
        let config = NodeConfig {
            node: NodeSection {
                secret_key: hex::encode(key.secret_bytes()),
                data_dir: PathBuf::from("data"),
                genesis: PathBuf::from("../genesis.block"),
            },
            p2p: P2pSection {
                listen: SocketAddr::new(listen_ip(index), p2p_port),
                peers: peers.clone(),
            },
            api: ApiSection {
                listen: SocketAddr::new(listen_ip(index), api_port),
                admin_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), admin_port),
                body_bytes_max: 8 << 20,
                queue_capacity: args.queue_capacity,
                hold_wait_ms: 2_000,
            },
            consensus: consensus.clone(),
            kura: KuraSection {
                fsync: fsync.to_string(),
                ..KuraSection::default()
            },
            memory: Default::default(),
            faults: Default::default(),
        };
        let text = toml::to_string_pretty(&config).context("serialising a node config")?;
        write_private(&dir.join("config.toml"), &text)?;
        manifest_nodes.push(ManifestNode {
            name: name.clone(),
            public_key: key.public_key().to_hex(),
            validator: index < args.validators,
            p2p: SocketAddr::new(host_of(index), p2p_port),
            api: format!("http://{}", SocketAddr::new(host_of(index), api_port)),
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), admin_port),
            dir: PathBuf::from(name),
        });
    }
    let manifest = Manifest {
        chain: args.chain.clone(),
        accounts: args.accounts,
        nodes: manifest_nodes,
    };
    manifest.save(out)?;
    Ok(manifest)
}

/// Writes a file that holds a secret, readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An existing file keeps its mode on open; restrict it before writing the secret.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", path.display()))?;
        }
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
