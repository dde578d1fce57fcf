//! The plasma Layer 2 end to end on real processes (docs/PLASMA.md): a 4-node L1 and a
//! 1-node L2 on loopback, the settlement agent as its own process, and the wallet commands.
//!
//! One test walks the whole life:
//! - deposit on L1, transfers on L2, every L2 block's root on L1;
//! - the agent killed (SIGKILL) and restarted mid-run, with a second agent racing it: no root
//!   lost or committed twice;
//! - the L1 node the agents talk to killed and restarted: they retry, then catch up, every root
//!   right;
//! - forged proofs refused;
//! - exits of spent outputs challenged and cancelled, by hand and by `kasane plasma watch` (a
//!   deposit exited after it was spent on L2);
//! - a valid exit finalised after the challenge period, the L1 balance restored.
//!
//! A second test runs the L2 as a committee of 4 validators.
//!
//! Every process a test starts is stopped when it ends, pass or fail; every wait has a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kasane::cli::http::runtime;
use kasane::cli::plasma::{
    chain_record, committed_root, created_by, l1_instruction, l2_root, open_exits, Chain, PositionArg, Wallet,
};
use kasane_harness::{test_account, Manifest, TEST_ACCOUNT_COINS};
use kasane_model::hash::Hash;
use kasane_model::ids::Name;
use kasane_plasma::contract::PlasmaCall;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kasane");

/// The tests run one at a time: each starts up to nine node processes on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
const CHALLENGE_BLOCKS: u64 = 4;
const BOND: u128 = 10;

/// Two clusters, the agents and any node restarted by hand; everything is stopped on drop.
struct Setup {
    dir: tempfile::TempDir,
    l1: String,
    l2: String,
    children: Vec<Child>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for cluster in ["l1", "l2"] {
            let _ = Command::new(BIN)
                .args(["down", "--dir"])
                .arg(self.dir.path().join(cluster))
                .output();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
            eprintln!("---- agent log\n{log}");
        }
    }
}

fn kasane(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run kasane")
}

/// Runs a `kasane plasma` wallet command and returns its JSON.
fn plasma(args: &[&str]) -> Value {
    let mut all = vec!["plasma"];
    all.extend_from_slice(args);
    let output = kasane(&all);
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&text).unwrap_or_else(|_| {
        panic!(
            "kasane {} printed no JSON: {text}\n{}",
            all.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn committed(value: &Value) -> u64 {
    value["outcome"]["committed"]
        .as_u64()
        .unwrap_or_else(|| panic!("expected a commit: {value}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

impl Setup {
    fn new() -> Setup {
        Setup::with_l2_validators(1)
    }

    fn with_l2_validators(validators: usize) -> Setup {
        let mut setup = Setup {
            dir: tempfile::tempdir().expect("temporary directory"),
            l1: String::new(),
            l2: String::new(),
            children: Vec::new(),
        };
        setup.l1 = setup.cluster("l1", &["--validators", "4"]);
        setup.l2 = setup.cluster("l2", &["--validators", &validators.to_string(), "--plasma-l2"]);
        setup
    }

    /// Writes and starts a cluster; its first node's API.
    fn cluster(&self, name: &str, extra: &[&str]) -> String {
        let out = self.dir.path().join(name);
        let mut args = vec![
            "genesis",
            "--out",
            path_str(&out),
            "--block-time-ms",
            "50",
            "--commit-timeout-ms",
            "1000",
        ];
        args.extend_from_slice(extra);
        let output = kasane(&args);
        assert!(
            output.status.success(),
            "genesis: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let output = kasane(&["up", "--dir", path_str(&out)]);
        assert!(
            output.status.success(),
            "up: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Manifest::load(&out).expect("manifest").nodes[0].api.clone()
    }

    /// Registers chain `side` on L1, with the L2's genesis key as the operator's.
    fn register(&self) -> Value {
        plasma(&[
            "register",
            "--l1",
            &self.l1,
            "--genesis-key",
            path_str(&self.key("l1")),
            "--operator-key",
            path_str(&self.key("l2")),
            "--chain",
            "side",
            "--challenge-blocks",
            &CHALLENGE_BLOCKS.to_string(),
            "--exit-bond",
            &BOND.to_string(),
        ])
    }

    fn key(&self, cluster: &str) -> PathBuf {
        self.dir.path().join(cluster).join("genesis.key")
    }

    fn start_agent(&mut self) {
        let mut agent = Command::new(BIN);
        agent
            .args([
                "plasma", "agent", "--chain", "side", "--l1", &self.l1, "--l2", &self.l2, "--key",
            ])
            .arg(self.key("l2"));
        let log = self.dir.path().join("agent.log");
        self.spawn(agent, &log, "start the agent");
    }

    /// Starts `command` with its output appended to `log`; it is stopped with the setup.
    fn spawn(&mut self, mut command: Command, log: &Path, what: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        self.children.push(child);
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `within`.
fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn l1_balance(l1: &str, user: usize) -> u128 {
    let value = plasma_free_json(&["client", "--node", l1, "query", "account", &format!("user{user}@test")]);
    value["balances"][0]["amount"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .expect("a coin balance")
}

fn plasma_free_json(args: &[&str]) -> Value {
    let output = kasane(args);
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// L2 outputs of `user`, as (position, amount).
fn outputs(l2: &str, user: usize) -> Vec<(String, u128)> {
    let value = plasma(&["balance", "--l2", l2, "--user", &user.to_string()]);
    value["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|output| {
            (
                output["position"].as_str().expect("position").to_string(),
                output["amount"]
                    .as_str()
                    .and_then(|text| text.parse().ok())
                    .expect("amount"),
            )
        })
        .collect()
}

fn transfer(l2: &str, from: usize, to: usize, amount: u128) -> Value {
    let value = plasma(&[
        "transfer",
        "--l2",
        l2,
        "--user",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "--amount",
        &amount.to_string(),
    ]);
    committed(&value);
    value
}

/// Every L2 block up to `l2_height` has its root on L1, equal to the L2 state's root.
fn assert_roots_match(rt: &tokio::runtime::Runtime, l1: &Chain, l2: &Chain, chain: &Name, l2_height: u64) {
    for height in 1..=l2_height {
        let (expected, _) = rt.block_on(l2_root(l2, height)).expect("L2 root");
        let held = rt
            .block_on(committed_root(l1, chain, height))
            .expect("L1 root")
            .unwrap_or_else(|| panic!("root {height} lost"));
        assert_eq!(held.root, expected, "root {height}");
    }
}

#[test]
fn deposit_transfer_commit_roots_exit_challenge_and_survive_an_agent_restart() {
    let _serial = serial();
    let mut setup = Setup::new();
    let (l1, l2) = (setup.l1.clone(), setup.l2.clone());
    let registered = setup.register();
    committed(&registered);
    setup.start_agent();

    // Deposit on L1; the agent notes it on L2.
    let deposit = plasma(&[
        "deposit", "--l1", &l1, "--chain", "side", "--user", "1", "--amount", "1000",
    ]);
    committed(&deposit);
    assert_eq!(deposit["position"], "deposit:0");
    assert_eq!(l1_balance(&l1, 1), TEST_ACCOUNT_COINS - 1000);
    eventually("the deposit noted on L2", Duration::from_secs(20), || {
        (outputs(&l2, 1) == vec![("deposit:0".to_string(), 1000)]).then_some(())
    });

    // Transfers on L2: user 1 pays 300 to user 2; user 2 pays 100 of it to user 3.
    let first = transfer(&l2, 1, 2, 300);
    let paid = first["outputs"][0]["position"].as_str().expect("position").to_string();
    let change = first["outputs"][1]["position"].as_str().expect("position").to_string();
    assert_eq!(outputs(&l2, 1), vec![(change.clone(), 700)]);

    // The agent dies (SIGKILL) mid-run; L2 goes on without it.
    let mut agent = setup.children.remove(0);
    agent.kill().expect("kill the agent");
    agent.wait().expect("reap the agent");
    let second = transfer(&l2, 2, 3, 100);
    let spending_block = committed(&second);
    let spending_index = second["outputs"][0]["position"]
        .as_str()
        .and_then(|text| text.split(':').nth(1))
        .expect("position")
        .to_string();
    for round in 0..3 {
        transfer(&l2, 3, 4, 10 + round);
    }
    let rt = runtime().expect("runtime");
    let l2_chain = rt.block_on(Chain::connect(&l2)).expect("L2");
    let l1_chain = rt.block_on(Chain::connect(&l1)).expect("L1");
    let side: Name = "side".parse().expect("name");
    let l2_height = rt.block_on(l2_chain.height()).expect("L2 height");
    let held = rt.block_on(chain_record(&l1_chain, &side)).expect("record").roots;
    assert!(
        held < l2_height,
        "L1 holds {held} roots of {l2_height} L2 blocks while the agent is down"
    );

    // Restarted (and a second agent racing it), the agent catches up: every L2 block's root is
    // on L1 exactly once, equal to the L2 state's root for that block.
    setup.start_agent();
    setup.start_agent();
    eventually("roots to catch up", Duration::from_secs(30), || {
        let record = rt.block_on(chain_record(&l1_chain, &side)).ok()?;
        (record.roots >= l2_height).then_some(())
    });
    assert_roots_match(&rt, &l1_chain, &l2_chain, &side, l2_height);
    let log = setup.agent_log();
    assert!(!log.contains("alarm"), "{log}");

    // A transient L1 failure: the L1 node the agents talk to is killed (SIGKILL) while L2 goes
    // on. The agents fail to reach it and retry; once it is restarted they catch up, and every
    // root is still L2's (nothing skipped, nothing wrong).
    let node_dir = setup.dir.path().join("l1").join("node-0");
    let pid = std::fs::read_to_string(node_dir.join("node.pid"))
        .expect("node-0's pid file")
        .trim()
        .to_string();
    let killed = Command::new("kill").args(["-KILL", &pid]).status().expect("run kill");
    assert!(killed.success(), "kill -KILL {pid}");
    transfer(&l2, 4, 5, 5);
    transfer(&l2, 5, 6, 1);
    eventually("the agents to meet the failure", Duration::from_secs(30), || {
        setup.agent_log().contains("retrying").then_some(())
    });
    let mut node = Command::new(BIN);
    node.args(["node", "--config"]).arg(node_dir.join("config.toml"));
    setup.spawn(node, &node_dir.join("node.log"), "restart L1 node-0");
    let l2_height = rt.block_on(l2_chain.height()).expect("L2 height");
    eventually(
        "roots to catch up after the L1 node answers again",
        Duration::from_secs(60),
        || {
            let record = rt.block_on(chain_record(&l1_chain, &side)).ok()?;
            (record.roots >= l2_height).then_some(())
        },
    );
    assert_roots_match(&rt, &l1_chain, &l2_chain, &side, l2_height);
    let log = setup.agent_log();
    assert!(!log.contains("alarm"), "{log}");

    // Forged proofs of user 1's change, signed by user 1 itself: a changed path, and a
    // changed amount. Both are refused, and nothing is recorded.
    let change_position = change.parse::<PositionArg>().expect("position").0;
    let (tx, proof, _) = rt.block_on(created_by(&l2_chain, change_position)).expect("proof");
    let (account, key) = test_account(1);
    let wallet = Wallet { account, key };
    let mut bad_path = proof.clone();
    bad_path.path.push(Hash::of_parts(&[b"forged"]));
    let mut bigger = tx.clone();
    bigger.outputs[1].amount = 1_000_000;
    for (forged_tx, forged_proof) in [(tx.clone(), bad_path), (bigger, proof.clone())] {
        let call = PlasmaCall::StartExit {
            chain: side.clone(),
            position: change_position,
            created_by: Some((forged_tx, forged_proof)),
        };
        let outcome = rt
            .block_on(l1_chain.submit_and_wait(l1_chain.sign(&wallet, vec![l1_instruction(&call)])))
            .expect("settles");
        let reason = outcome.expect_err("a forged proof is refused");
        assert!(reason.contains("does not verify"), "{reason}");
    }
    assert!(rt.block_on(open_exits(&l1_chain, &side)).expect("exits").is_empty());

    // Exits: user 1 exits its change (valid); user 2 exits the output it already spent.
    let exit = |user: &str, position: &str| {
        plasma(&[
            "exit",
            "--l1",
            &l1,
            "--l2",
            &l2,
            "--chain",
            "side",
            "--user",
            user,
            "--position",
            position,
        ])
    };
    committed(&exit("1", &change));
    committed(&exit("2", &paid));
    // User 1 also tries to take its deposit back, though it spent it on L2 (no proof needed).
    committed(&exit("1", "deposit:0"));
    let again = exit("1", &change);
    assert!(
        again["outcome"]["rejected"]
            .as_str()
            .expect("refused")
            .contains("already started an exit"),
        "{again}"
    );

    // Anyone (user 3) challenges user 2's exit with the transaction that spent the output.
    let challenge = plasma(&[
        "challenge",
        "--l1",
        &l1,
        "--l2",
        &l2,
        "--chain",
        "side",
        "--user",
        "3",
        "--position",
        &paid,
        "--spending",
        &format!("{spending_block}:{spending_index}"),
    ]);
    committed(&challenge);
    assert_eq!(
        l1_balance(&l1, 3),
        TEST_ACCOUNT_COINS + BOND,
        "the challenger takes the bond"
    );

    // A watcher (user 4) finds the deposit's spender on L2 by itself and challenges that exit,
    // and leaves the rightful one alone.
    let watched = plasma(&[
        "watch", "--l1", &l1, "--l2", &l2, "--chain", "side", "--user", "4", "--once",
    ]);
    let actions = watched["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 1, "{watched}");
    assert_eq!(actions[0]["position"], "deposit:0");
    let spent_by: Vec<&str> = paid.split(':').take(2).collect();
    assert_eq!(actions[0]["challenged_with"], spent_by.join(":"), "{watched}");
    committed(&actions[0]);
    assert_eq!(
        l1_balance(&l1, 4),
        TEST_ACCOUNT_COINS + BOND,
        "the watcher takes the bond"
    );
    let open = rt.block_on(open_exits(&l1_chain, &side)).expect("exits");
    assert_eq!(open.len(), 1, "only user 1's rightful exit is left");

    // Finalise: within the period nothing is paid; after it, user 1 has its 700 and bond back.
    let started = open[0].started;
    let mut rounds = 0;
    loop {
        let finalize = plasma(&["finalize", "--l1", &l1, "--chain", "side", "--user", "5"]);
        let at = committed(&finalize);
        let left = finalize["open_exits"].as_u64().expect("count");
        if at < started + CHALLENGE_BLOCKS {
            assert_eq!(left, 1, "paid out at L1 height {at}, inside the challenge period");
        } else {
            assert_eq!(left, 0, "not paid at L1 height {at}, after the challenge period");
            break;
        }
        rounds += 1;
        assert!(rounds < 20, "the challenge period never ended");
    }
    assert_eq!(
        l1_balance(&l1, 1),
        TEST_ACCOUNT_COINS - 1000 + 700 - BOND,
        "its 700 back, less the bond of its false exit"
    );
    assert_eq!(
        l1_balance(&l1, 2),
        TEST_ACCOUNT_COINS - BOND,
        "a false exit loses its bond"
    );
    let record = rt.block_on(chain_record(&l1_chain, &side)).expect("record");
    assert_eq!(
        record.locked.values().sum::<u128>(),
        300,
        "the rest stays locked for L2"
    );
}

/// An L2 run by a committee of 4 validators settles like a single operator's: transfers sent to
/// different L2 nodes commit, every L2 node holds the same chain, and every root on L1 is that
/// chain's.
#[test]
fn a_committee_l2_of_four_validators_settles_on_l1() {
    let _serial = serial();
    let mut setup = Setup::with_l2_validators(4);
    let l1 = setup.l1.clone();
    committed(&setup.register());
    setup.start_agent();
    let l2_nodes: Vec<String> = Manifest::load(&setup.dir.path().join("l2"))
        .expect("manifest")
        .nodes
        .iter()
        .map(|node| node.api.clone())
        .collect();
    committed(&plasma(&[
        "deposit", "--l1", &l1, "--chain", "side", "--user", "1", "--amount", "1000",
    ]));
    eventually("the deposit noted on L2", Duration::from_secs(20), || {
        (outputs(&l2_nodes[1], 1) == vec![("deposit:0".to_string(), 1000)]).then_some(())
    });
    transfer(&l2_nodes[2], 1, 2, 300);
    // The payee's output is read from another node than the one that took the transfer.
    eventually("the payment seen on L2 node 3", Duration::from_secs(20), || {
        (outputs(&l2_nodes[3], 2).len() == 1).then_some(())
    });
    transfer(&l2_nodes[3], 2, 3, 100);

    let rt = runtime().expect("runtime");
    let l1_chain = rt.block_on(Chain::connect(&l1)).expect("L1");
    let l2_chains: Vec<Chain> = l2_nodes
        .iter()
        .map(|url| rt.block_on(Chain::connect(url)).expect("L2 node"))
        .collect();
    let side: Name = "side".parse().expect("name");
    let height = rt.block_on(l2_chains[0].height()).expect("L2 height");
    eventually("every L2 node at the same height", Duration::from_secs(20), || {
        l2_chains
            .iter()
            .all(|chain| rt.block_on(chain.height()).is_ok_and(|at| at >= height))
            .then_some(())
    });
    eventually("roots to catch up", Duration::from_secs(30), || {
        let record = rt.block_on(chain_record(&l1_chain, &side)).ok()?;
        (record.roots >= height).then_some(())
    });
    for l2_chain in &l2_chains {
        assert_roots_match(&rt, &l1_chain, l2_chain, &side, height);
    }
    assert!(!setup.agent_log().contains("alarm"));
}
