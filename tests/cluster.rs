//! Real clusters of `kasane node` processes on loopback: agreement, crash recovery, leader
//! failure, hostile input, exactly-once application, Merkle proofs, and `kasane up`/`down`.
//!
//! The tests run one at a time (each starts four or five processes on a 2-core machine and
//! times view changes), and every process a test starts is killed when the test ends, pass or
//! fail. Every wait has a deadline.

// Each test holds the serial lock for its whole run, on its own runtime and thread: holding it
// across awaits blocks only other tests, which is the point.
#![allow(clippy::await_holding_lock)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kasane::cli::client::check_proof;
use kasane::cli::http::{ApiClient, Submitted};
use kasane::cli::load::{load, LoadArgs};
use kasane_harness::{opaque_transaction, test_account, transfer, Manifest, TEST_ACCOUNT_COINS};
use kasane_model::block::tx_merkle_root;
use kasane_model::transaction::{ChainId, TTL_MS_MAX};
use kasane_model::{Hash, KeyPair, SignedTransaction};
use kasane_node::runtime::now_ms;
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

const BIN: &str = env!("CARGO_BIN_EXE_kasane");

struct Cluster {
    dir: tempfile::TempDir,
    manifest: Manifest,
    children: Vec<Option<Child>>,
    /// Extra processes (an outsider node).
    extra: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten().chain(self.extra.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for node in &self.manifest.nodes {
                let log = std::fs::read_to_string(self.dir.path().join(&node.dir).join("node.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("---- {} (last lines)", node.name);
                for line in &lines[lines.len().saturating_sub(25)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn genesis(dir: &Path, extra: &[&str]) -> Manifest {
    let output = Command::new(BIN)
        .args(["genesis", "--out"])
        .arg(dir)
        .args(["--block-time-ms", "50", "--commit-timeout-ms", "500"])
        .args(extra)
        .output()
        .expect("run kasane genesis");
    assert!(
        output.status.success(),
        "genesis failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Manifest::load(dir).expect("manifest")
}

fn spawn_node(config: &Path, log: &Path) -> Child {
    spawn_node_with(config, log, &[])
}

fn spawn_node_with(config: &Path, log: &Path, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(BIN)
        .arg("node")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("KASANE_LOG", "info,quinn=warn,rustls=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start kasane node")
}

impl Cluster {
    fn new(validators: usize) -> Cluster {
        Cluster::with_genesis(validators, &[])
    }

    /// A cluster whose `kasane genesis` is also given `extra`.
    fn with_genesis(validators: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let validators = validators.to_string();
        let arguments: Vec<&str> = ["--validators", validators.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let manifest = genesis(dir.path(), &arguments);
        let children = (0..manifest.nodes.len()).map(|_| None).collect();
        let mut cluster = Cluster {
            dir,
            manifest,
            children,
            extra: Vec::new(),
        };
        for index in 0..cluster.manifest.nodes.len() {
            cluster.start(index);
        }
        cluster
    }

    fn node_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(&self.manifest.nodes[index].dir)
    }

    fn start(&mut self, index: usize) {
        self.start_with(index, &[]);
    }

    fn start_with(&mut self, index: usize, extra: &[&str]) {
        let dir = self.node_dir(index);
        self.children[index] = Some(spawn_node_with(&dir.join("config.toml"), &dir.join("node.log"), extra));
    }

    /// kill -9.
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            child.kill().expect("kill");
            child.wait().expect("reap");
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.children.len())
            .filter(|index| self.children[*index].is_some())
            .collect()
    }

    fn client(&self, index: usize) -> ApiClient {
        ApiClient::new(&self.manifest.nodes[index].api).expect("client")
    }

    fn chain(&self) -> ChainId {
        self.manifest.chain_id().expect("chain id")
    }

    async fn status(&self, index: usize) -> Option<Value> {
        self.client(index).status().await.ok()
    }

    /// Waits until every live node answers and sees every other live node.
    async fn wait_connected(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let live = self.live();
        for &index in &live {
            loop {
                if let Some(status) = self.status(index).await {
                    if status["peers_connected"].as_u64() >= Some(live.len() as u64 - 1) {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "node {index} did not connect within {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits until every live node is at the same height (at least `height`) with the same head.
    async fn wait_converged(&self, height: u64, within: Duration) -> (u64, String) {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for index in self.live() {
                if let Some(status) = self.status(index).await {
                    seen.push((
                        status["height"].as_u64().unwrap_or(0),
                        status["head_hash"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
            if seen.len() == self.live().len() && seen[0].0 >= height && seen.iter().all(|status| *status == seen[0]) {
                return seen[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge at height >= {height} within {within:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a node has saved a local checkpoint (`kasane_local_checkpoint_height` in its
    /// metrics); returns its height.
    async fn wait_local_checkpoint(&self, index: usize, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let url = format!("{}/metrics", self.manifest.nodes[index].api);
        loop {
            let (_, metrics) = get(&url).await;
            let saved = metrics.as_str().and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("kasane_local_checkpoint_height "))
                    .and_then(|value| value.trim().parse::<u64>().ok())
            });
            if let Some(height) = saved.filter(|height| *height > 0) {
                return height;
            }
            assert!(
                Instant::now() < deadline,
                "node {index} saved no local checkpoint within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls a node until the transaction is committed; returns its height.
    async fn wait_committed(&self, index: usize, hash: &Hash, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let client = self.client(index);
        loop {
            if let Ok(value) = client.get_json(&format!("/v1/transactions/{hash}")).await {
                match value["state"]["status"].as_str() {
                    Some("committed") => return value["state"]["height"].as_u64().expect("height"),
                    Some("rejected") => panic!("transaction {hash} rejected: {value}"),
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "transaction {hash} not committed on node {index} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn submit(client: &ApiClient, transactions: Vec<SignedTransaction>) -> Vec<bool> {
    match client.submit(transactions).await.expect("submit") {
        Submitted::Answered(response) => response.results.iter().map(|result| result.accepted).collect(),
        Submitted::QueueFull => panic!("queue full"),
        Submitted::NotHeld(answer) => panic!("not held: {answer}"),
        Submitted::CatchingUp(answer) => panic!("catching up: {answer}"),
    }
}

async fn balance(client: &ApiClient, account: usize) -> u128 {
    let (id, _) = test_account(account);
    let value = client.get_json(&format!("/v1/accounts/{id}")).await.expect("account");
    value["balances"][0]["amount"]
        .as_str()
        .expect("amount")
        .parse()
        .expect("number")
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_node_cluster_commits_agrees_applies_once_and_proves() {
    let _serial = serial();
    let cluster = Cluster::new(4);
    cluster.wait_connected(Duration::from_secs(30)).await;
    let chain = cluster.chain();
    let clients: Vec<ApiClient> = (0..4).map(|index| cluster.client(index)).collect();

    // Transfers among accounts 0..20 through every node.
    for batch in 0..4u32 {
        let transactions: Vec<SignedTransaction> = (0..5u32)
            .map(|offset| {
                let from = (batch * 5 + offset) as usize;
                transfer(&chain, from, (from + 1) % 20, 1, batch * 100 + offset, now_ms())
            })
            .collect();
        assert_eq!(submit(&clients[batch as usize], transactions).await, vec![true; 5]);
    }
    // One transfer of 7 from account 50 to 51, submitted twice to node 0 and once to node 1.
    let twice = transfer(&chain, 50, 51, 7, 4242, now_ms());
    let twice_hash = twice.hashes().transaction;
    assert_eq!(submit(&clients[0], vec![twice.clone()]).await, vec![true]);
    assert_eq!(
        submit(&clients[0], vec![twice.clone()]).await,
        vec![false],
        "a duplicate was admitted"
    );
    submit(&clients[1], vec![twice.clone()]).await;
    let committed_at = cluster.wait_committed(0, &twice_hash, Duration::from_secs(30)).await;
    // Resubmitting a committed transaction is refused at admission.
    assert_eq!(submit(&clients[2], vec![twice.clone()]).await, vec![false]);

    // Let every other submission commit, then check the four agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.status(0).await.expect("status")["queue_len"].as_u64() != Some(0) {
        assert!(Instant::now() < deadline, "queue never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (height, head) = cluster.wait_converged(committed_at, Duration::from_secs(30)).await;
    assert!(height >= 2, "nothing committed");
    for client in &clients {
        let status = client.status().await.expect("status");
        assert_eq!(status["head_hash"].as_str(), Some(head.as_str()));
    }

    // Applied exactly once: balances moved by 7 once, and the transaction is in one block.
    assert_eq!(balance(&clients[3], 50).await, TEST_ACCOUNT_COINS - 7);
    assert_eq!(balance(&clients[2], 51).await, TEST_ACCOUNT_COINS + 7);
    let mut occurrences = 0;
    let mut proofs = 0;
    for at in 2..=height {
        let block = clients[0].get_json(&format!("/v1/blocks/{at}")).await.expect("block");
        let tx_hashes: Vec<Hash> = block["tx_hashes"]
            .as_array()
            .expect("tx_hashes")
            .iter()
            .map(|hash| Hash::from_hex(hash.as_str().expect("hex")).expect("hash"))
            .collect();
        // The root is the RFC 6962-style blake2b-256 root over the transaction hashes.
        assert_eq!(
            tx_merkle_root(&tx_hashes).to_hex(),
            block["tx_merkle_root"].as_str().expect("root"),
            "block {at}"
        );
        assert_eq!(block["certificate"]["block_hash"], block["hash"]);
        occurrences += tx_hashes.iter().filter(|hash| **hash == twice_hash).count();
        for hash in &tx_hashes {
            let proof = clients[1]
                .get_json(&format!("/v1/blocks/{at}/proof/{hash}"))
                .await
                .expect("proof");
            check_proof(&block, &proof).expect("the proof verifies");
            proofs += 1;
            // A proof moved to another leaf does not verify.
            let mut moved = proof.clone();
            if moved["tree_size"].as_u64() > Some(1) {
                let index = moved["leaf_index"].as_u64().expect("index");
                moved["leaf_index"] = Value::from(if index == 0 { 1 } else { 0 });
                assert!(check_proof(&block, &moved).is_err());
            }
        }
    }
    assert_eq!(
        occurrences, 1,
        "the transaction submitted three times is in {occurrences} blocks"
    );
    assert_eq!(proofs, 21);

    // Metrics are Prometheus text with the node's height.
    let metrics = reqwest::get(format!("{}/metrics", cluster.manifest.nodes[0].api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains(&format!("\nkasane_height {height}\n")), "{metrics}");
    assert!(metrics.contains("kasane_p2p_bytes_sent_total"));
    // Proposals travelled as digests and were rebuilt from the peers' queues.
    // And what clients submitted was gossiped to the other nodes, who queued it.
    let (mut rebuilt, mut gossiped) = (0u64, 0u64);
    for node in &cluster.manifest.nodes {
        let text = reqwest::get(format!("{}/metrics", node.api))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        rebuilt += text
            .lines()
            .find_map(|line| line.strip_prefix("kasane_proposal_digests_total "))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .expect("the digest counter");
        gossiped += kasane::cli::bench::GossipFigures::from_metrics(&text)
            .expect("the gossip counters")
            .admitted;
    }
    assert!(rebuilt > 0, "no proposal was rebuilt from a digest");
    assert!(gossiped > 0, "no peer queued gossip");

    // The event stream reports the next block.
    let mut events = reqwest::get(format!("{}/v1/events", cluster.manifest.nodes[2].api))
        .await
        .expect("events");
    // This one goes in as a JSON body.
    let json_body = serde_json::to_vec(&transfer(&chain, 60, 61, 1, 1, now_ms())).expect("json");
    let url = format!("{}/v1/transactions", cluster.manifest.nodes[3].api);
    let (status, answer) = post(&url, "application/json", json_body).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)), "{answer}");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.contains("event: block") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), events.chunk())
            .await
            .expect("an event in time")
            .expect("stream");
        text.push_str(&String::from_utf8_lossy(&chunk.expect("open stream")));
        assert!(Instant::now() < deadline, "no block event: {text}");
    }
    assert!(text.contains("\"type\":\"block\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_killed_during_load_recovers_from_kura_and_converges() {
    // Killed past a checkpoint, node 3 restarts from its local checkpoint (docs/NODE.md,
    // "Restart"); the strict audit then replays every block from genesis and compares.
    let _serial = serial();
    let mut cluster = Cluster::new(4);
    cluster.wait_connected(Duration::from_secs(30)).await;
    let args = LoadArgs {
        node: vec![
            cluster.manifest.nodes[0].api.clone(),
            cluster.manifest.nodes[1].api.clone(),
        ],
        dir: None,
        follow: Vec::new(),
        rate: 150,
        duration: 20,
        accounts: Some(100),
        batch_ms: 20,
        wait_secs: 60,
        ttl_ms: TTL_MS_MAX,
        seed: Some(7),
        json: None,
        quiet: true,
        last_acknowledger: None,
    };
    let load = tokio::spawn(async move { load(&args).await });
    let saved = cluster.wait_local_checkpoint(3, Duration::from_secs(40)).await;
    // Killed past the checkpoint: it is saved once the block binding its root (8 heights on,
    // which proves it at the restart) is committed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let height = cluster.status(3).await.expect("status")["height"]
            .as_u64()
            .expect("height");
        if height > saved {
            break height;
        }
        assert!(Instant::now() < deadline, "node 3 stayed at height {height}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.kill(3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Back with a strict init: it replays fast and rejoins, then verifies every block it kept
    // in the background (docs/NODE.md, "Strict init").
    cluster.start_with(3, &["--init", "strict"]);
    // Every block node 3 acknowledged before the kill is still there when it answers again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        if let Some(status) = cluster.status(3).await {
            break status["height"].as_u64().expect("height");
        }
        assert!(Instant::now() < deadline, "node 3 did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        after >= before,
        "node 3 lost blocks: {before} before the kill, {after} after"
    );
    let report = load.await.expect("load task").expect("load");
    assert!(report.accepted > 0);
    assert_eq!(report.duplicates, 0, "{report:?}");
    assert_eq!(report.missing, 0, "{report:?}");
    assert!(report.ok, "{report:?}");
    let (height, _) = cluster.wait_converged(report.end_height, Duration::from_secs(40)).await;
    assert!(height > before);
    let log_path = cluster.node_dir(3).join("node.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).expect("log");
        if log.contains("strict init: the audit passed") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(log.matches("node started").count(), 2, "node 3 started twice");
    assert!(log.contains("mode=Strict"), "the restart did not use strict init");
    let ready = log
        .lines()
        .filter(|line| line.contains("world state ready"))
        .nth(1)
        .expect("a second start");
    let from: u64 = ready
        .split_whitespace()
        .find_map(|field| field.strip_prefix("from="))
        .and_then(|from| from.parse().ok())
        .unwrap_or_else(|| panic!("no start height in {ready:?}"));
    assert!(
        from >= saved && from % 100 == 0,
        "the restart replayed from {from}, not from the checkpoint of {saved} or a newer one: {ready}"
    );
    assert!(
        log.contains("strict init: the audit passed"),
        "the background audit did not pass within 60 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_changes_the_view_and_commits_continue() {
    let _serial = serial();
    let mut cluster = Cluster::new(4);
    cluster.wait_connected(Duration::from_secs(30)).await;
    let chain = cluster.chain();
    let first = transfer(&chain, 1, 2, 1, 1, now_ms());
    assert_eq!(submit(&cluster.client(0), vec![first.clone()]).await, vec![true]);
    let height = cluster
        .wait_committed(0, &first.hashes().transaction, Duration::from_secs(30))
        .await;
    cluster.wait_converged(height, Duration::from_secs(30)).await;
    let mut leader = None;
    for index in 0..4 {
        if cluster.status(index).await.expect("status")["role"] == "leader" {
            leader = Some(index);
        }
    }
    let leader = leader.expect("one node is the leader");
    cluster.kill(leader);
    let survivor = (leader + 1) % 4;
    let killed_at = Instant::now();
    let second = transfer(&chain, 3, 4, 1, 2, now_ms());
    assert_eq!(
        submit(&cluster.client(survivor), vec![second.clone()]).await,
        vec![true]
    );
    cluster
        .wait_committed(survivor, &second.hashes().transaction, Duration::from_secs(20))
        .await;
    let recovery = killed_at.elapsed();
    eprintln!("commit after killing the leader took {recovery:?}");
    let status = cluster.status(survivor).await.expect("status");
    assert!(status["view_changes"].as_u64() >= Some(1), "{status}");
    assert!(
        recovery < Duration::from_secs(10),
        "commits resumed only after {recovery:?}"
    );
}

async fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("get");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_errors_and_the_cluster_keeps_working() {
    let _serial = serial();
    let mut cluster = Cluster::new(4);
    cluster.wait_connected(Duration::from_secs(30)).await;
    let api = cluster.manifest.nodes[0].api.clone();
    let transactions = format!("{api}/v1/transactions");

    // Malformed, oversized and wrongly typed bodies: JSON errors with codes.
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("application/json", b"{not json".to_vec(), 400, "bad_request"),
        ("application/json", b"{\"payload\": 3}".to_vec(), 400, "bad_request"),
        ("application/json", b"[]".to_vec(), 400, "bad_request"),
        ("application/x-postcard", vec![1, 0xff, 0xff, 0xff], 400, "bad_request"),
        ("application/x-postcard", vec![9, 0], 400, "bad_request"),
        ("application/x-postcard", Vec::new(), 400, "bad_request"),
        ("text/plain", b"hello".to_vec(), 415, "unsupported_media_type"),
        ("application/json", vec![b' '; 9 << 20], 413, "payload_too_large"),
    ];
    for (content_type, body, status, code) in cases {
        let (got, value) = post(&transactions, content_type, body).await;
        assert_eq!(
            (got, value["error"]["code"].as_str()),
            (status, Some(code)),
            "{content_type}: {value}"
        );
        assert!(value["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()));
    }
    for (path, status) in [
        ("/v1/blocks/abc", 400),
        ("/v1/blocks/999999", 404),
        ("/v1/blocks/1/proof/00", 400),
        ("/v1/transactions/zz", 400),
        ("/v1/accounts?limit=0", 400),
        ("/v1/accounts?offset=-1", 400),
        ("/v1/accounts/not-an-id", 400),
        ("/v1/nothing", 404),
    ] {
        let (got, value) = get(&format!("{api}{path}")).await;
        assert_eq!(got, status, "{path}: {value}");
        assert!(value["error"]["code"].is_string(), "{path}: {value}");
    }
    let (status, value) = post(&format!("{api}/v1/status"), "application/json", Vec::new()).await;
    assert_eq!(
        (status, value["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{value}"
    );

    // A transaction with a bad signature, one for another chain, and unsigned opaque bytes on a
    // chain that takes only signed transactions (docs/PROTOCOL.md section 1.2) are refused with
    // reasons.
    let chain = cluster.chain();
    let mut forged = transfer(&chain, 5, 6, 1, 1, now_ms());
    forged.signatures[0].signature.0[0] ^= 1;
    let foreign = transfer(&"other-chain".parse().expect("name"), 5, 6, 1, 2, now_ms());
    let opaque = opaque_transaction(&chain, 3, now_ms(), 512);
    match cluster
        .client(0)
        .submit(vec![forged, foreign, opaque])
        .await
        .expect("submit")
    {
        Submitted::Answered(response) => {
            assert_eq!(response.accepted, 0);
            assert!(response.results.iter().all(|result| result.error.is_some()));
            let reason = response.results[2].error.as_deref().unwrap_or_default();
            assert!(reason.contains("opaque payloads"), "{reason}");
        }
        Submitted::QueueFull => panic!("queue full"),
        Submitted::NotHeld(answer) => panic!("not held: {answer}"),
        Submitted::CatchingUp(answer) => panic!("catching up: {answer}"),
    }

    // Garbage datagrams to the p2p port.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for size in [0usize, 1, 20, 1200, 1500, 4000] {
        let junk: Vec<u8> = (0..size).map(|index| (index * 7 + 3) as u8).collect();
        socket.send_to(&junk, cluster.manifest.nodes[0].p2p).expect("send");
    }

    // A node whose key is not in genesis: node 0's config with a new key and its own ports.
    let outsider_dir = cluster.dir.path().join("outsider");
    std::fs::create_dir_all(&outsider_dir).expect("dir");
    let text = std::fs::read_to_string(cluster.node_dir(0).join("config.toml")).expect("config");
    let mut config: toml::Table = toml::from_str(&text).expect("toml");
    let free = |tcp: bool| -> String {
        if tcp {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").to_string()
        } else {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            socket.local_addr().expect("address").to_string()
        }
    };
    config["node"]["secret_key"] = toml::Value::String(hex::encode(KeyPair::generate().secret_bytes()));
    config["node"]["genesis"] =
        toml::Value::String(cluster.dir.path().join("genesis.block").to_string_lossy().into_owned());
    config["p2p"]["listen"] = toml::Value::String(free(false));
    let outsider_api = free(true);
    config["api"]["listen"] = toml::Value::String(outsider_api.clone());
    config["api"]["admin_listen"] = toml::Value::String(free(true));
    std::fs::write(
        outsider_dir.join("config.toml"),
        toml::to_string(&config).expect("toml"),
    )
    .expect("write");
    cluster.extra.push(spawn_node(
        &outsider_dir.join("config.toml"),
        &outsider_dir.join("node.log"),
    ));
    let outsider = ApiClient::new(&format!("http://{outsider_api}")).expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while outsider.status().await.is_err() {
        assert!(Instant::now() < deadline, "the outsider node did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = outsider.status().await.expect("status");
    assert_eq!(status["peers_connected"], 0, "an outsider connected: {status}");
    let admin = cluster.manifest.nodes[0].admin;
    let (_, network) = get(&format!("http://{admin}/admin/network")).await;
    assert!(network["handshakes_refused"].as_u64() >= Some(1), "{network}");

    // Fault rules through the admin endpoint: refused when malformed, applied when sound.
    let client = reqwest::Client::new();
    let bad = client
        .put(format!("http://{admin}/admin/faults"))
        .body(r#"{"peers": {"*": {"drop_rate": 2.0}}}"#)
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status().as_u16(), 400);
    let delay = r#"{"peers": {"*": {"delay_ms": 5}}}"#;
    let set = client
        .put(format!("http://{admin}/admin/faults"))
        .body(delay)
        .send()
        .await
        .expect("put");
    assert_eq!(set.status().as_u16(), 200);
    let (_, rules) = get(&format!("http://{admin}/admin/faults")).await;
    assert_eq!(rules["peers"]["*"]["delay_ms"], 5, "{rules}");

    // After all that the cluster still commits, and every node agrees.
    let good = transfer(&chain, 7, 8, 1, 3, now_ms());
    assert_eq!(submit(&cluster.client(0), vec![good.clone()]).await, vec![true]);
    let height = cluster
        .wait_committed(0, &good.hashes().transaction, Duration::from_secs(30))
        .await;
    cluster.wait_converged(height, Duration::from_secs(30)).await;
    assert!(cluster.live().len() == 4);
}

#[test]
fn up_and_down_run_a_cluster_with_an_observer() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("dir");
    let manifest = genesis(dir.path(), &["--validators", "4", "--observers", "1"]);
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Command::new(BIN).arg("down").arg("--dir").arg(self.0).output();
        }
    }
    let _down = Down(dir.path());
    let up = Command::new(BIN)
        .arg("up")
        .arg("--dir")
        .arg(dir.path())
        .args(["--timeout-secs", "60"])
        .output()
        .expect("up");
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(up.status.success(), "{stdout}{}", String::from_utf8_lossy(&up.stderr));
    for node in &manifest.nodes {
        assert!(stdout.contains(&node.api), "{stdout}");
    }
    let pids: Vec<i32> = manifest
        .nodes
        .iter()
        .map(|node| {
            std::fs::read_to_string(dir.path().join(&node.dir).join("node.pid"))
                .expect("pid file")
                .trim()
                .parse()
                .expect("pid")
        })
        .collect();

    // A transfer commits; the observer follows the validators to the same head.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let chain = manifest.chain_id().expect("chain");
        let transaction = transfer(&chain, 9, 10, 1, 9, now_ms());
        let client = ApiClient::new(&manifest.nodes[0].api).expect("client");
        assert_eq!(submit(&client, vec![transaction]).await, vec![true]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut heads = Vec::new();
            for node in &manifest.nodes {
                let status = ApiClient::new(&node.api)
                    .expect("client")
                    .status()
                    .await
                    .expect("status");
                heads.push((status["height"].as_u64().unwrap_or(0), status["head_hash"].clone()));
            }
            if heads[0].0 >= 2 && heads.iter().all(|head| *head == heads[0]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "observer or validators did not converge: {heads:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let observer = ApiClient::new(&manifest.nodes[4].api)
            .expect("client")
            .status()
            .await
            .expect("status");
        assert_eq!(observer["role"], "outsider", "{observer}");
    });

    // The client commands.
    let client = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(["client", "--node", &manifest.nodes[1].api])
            .args(args)
            .output()
            .expect("client");
        assert!(
            output.status.success(),
            "client {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("client prints JSON")
    };
    let submitted = client(&["submit", "--from", "11", "--to", "12", "--amount", "3"]);
    assert_eq!(submitted["accepted"], 1, "{submitted}");
    let hash = submitted["results"][0]["hash"].as_str().expect("hash").to_string();
    assert!(client(&["tx", &hash])["state"]["status"].is_string());
    assert_eq!(client(&["status"])["validators"], 4);
    assert_eq!(
        client(&["query", "domains"])["domains"],
        serde_json::json!(["genesis", "test"])
    );
    assert_eq!(client(&["query", "peers"])["peers"].as_array().map(Vec::len), Some(4));
    let accounts = client(&["query", "accounts", "--domain", "test", "--offset", "2", "--limit", "3"]);
    assert_eq!(accounts["accounts"].as_array().map(Vec::len), Some(3), "{accounts}");
    let first_tx = client(&["block", "2"])["tx_hashes"][0]
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(client(&["proof", "2", &first_tx])["verified"], true);

    let down = Command::new(BIN)
        .arg("down")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("down");
    assert!(down.status.success());
    let said = String::from_utf8_lossy(&down.stdout);
    // SIGTERM alone stopped every node: graceful shutdown works.
    assert!(said.contains("stopped 5 nodes (0 needed SIGKILL)"), "{said}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                // A zombie awaiting its reaper counts as stopped.
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat.contains(") Z "))
            },
            "process {pid} is still running"
        );
    }
}

/// Acknowledgement by f + 1 and `?wait=commit` on real processes: a committed answer carries
/// a height and a proof that checks against the block; bad queries are 400; with no quorum the
/// wait ends in a `504 commit_timeout` naming what is known; with fewer than f + 1 validators
/// up a submission is `503 not_held`; and a full queue (two transactions here) answers `503
/// queue_full` before it decodes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_commit_answers_with_a_proof_or_a_clear_error() {
    use kasane_node::api::{TransactionBatch, POSTCARD};
    let _serial = serial();
    let mut cluster = Cluster::with_genesis(4, &["--queue-capacity", "2"]);
    cluster.wait_connected(Duration::from_secs(30)).await;
    let chain = cluster.chain();
    let api = cluster.manifest.nodes[0].api.clone();
    let body = |from: usize, nonce: u32| {
        kasane_model::codec::encode(&TransactionBatch(vec![transfer(
            &chain,
            from,
            from + 1,
            1,
            nonce,
            now_ms(),
        )]))
    };

    let (status, value) = post(&format!("{api}/v1/transactions?wait=commit"), POSTCARD, body(1, 1)).await;
    assert_eq!(status, 200, "{value}");
    let result = &value["results"][0];
    assert_eq!(result["accepted"], true, "{value}");
    assert_eq!(result["block"]["outcome"], "committed", "{value}");
    let height = result["block"]["height"].as_u64().expect("height");
    assert!(height >= 2, "{value}");
    let block = cluster
        .client(0)
        .get_json(&format!("/v1/blocks/{height}"))
        .await
        .expect("block");
    assert_eq!(block["hash"], result["block"]["block_hash"], "{value}");
    check_proof(&block, &result["block"]["proof"]).expect("the proof checks against the block");

    for query in [
        "wait=soon",
        "wait=commit&timeout_ms=0",
        "timeout_ms=500",
        "wait=commit&extra=1",
        "wait=commit&timeout_ms=x",
    ] {
        let (status, value) = post(&format!("{api}/v1/transactions?{query}"), POSTCARD, body(3, 3)).await;
        assert_eq!(
            (status, value["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{query}: {value}"
        );
    }

    // Two of four up: two holders (f + 1) acknowledge, but no quorum commits.
    cluster.kill(3);
    cluster.kill(2);
    let started = Instant::now();
    let (status, value) = post(
        &format!("{api}/v1/transactions?wait=commit&timeout_ms=1500"),
        POSTCARD,
        body(5, 5),
    )
    .await;
    assert_eq!(
        (status, value["error"]["code"].as_str()),
        (504, Some("commit_timeout")),
        "{value}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let known = &value["error"]["transactions"][0];
    assert_eq!(known["accepted"], true, "{value}");
    assert_eq!(known["state"]["status"], "queued", "{value}");

    // One of four up: held by one of the two needed.
    cluster.kill(1);
    let (status, value) = post(&format!("{api}/v1/transactions"), POSTCARD, body(7, 7)).await;
    assert_eq!(
        (status, value["error"]["code"].as_str()),
        (503, Some("not_held")),
        "{value}"
    );
    assert!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("held by 1 of the 2 needed")),
        "{value}"
    );

    // Transactions 5 and 7 fill the queue: the next request is refused before its body is
    // decoded, so even bytes that are no batch get the 503.
    for request in [body(9, 9), b"not a batch".to_vec()] {
        let (status, value) = post(&format!("{api}/v1/transactions"), POSTCARD, request).await;
        assert_eq!(
            (status, value["error"]["code"].as_str()),
            (503, Some("queue_full")),
            "{value}"
        );
    }
}
