//! The `kasane` binary end to end: kura generate, inspect, verify (fast and strict), audit, and
//! the `first bad height` report on a damaged store.

use std::path::Path;
use std::process::{Command, Output};

use kasane_kura::format;

fn kasane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kasane"))
        .args(args)
        .env("KASANE_LOG", "error")
        .output()
        .expect("run kasane")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn generate(dir: &Path) {
    let dir = dir.to_str().expect("utf-8 path");
    let output = kasane(&[
        "kura",
        "generate",
        "--dir",
        dir,
        "--blocks",
        "12",
        "--txs-per-block",
        "5",
        "--blocks-per-chunk",
        "4",
    ]);
    assert!(
        output.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Byte offset of the record of `height` in its chunk file, walking the documented layout.
fn record_offset(chunk_bytes: &[u8], height: u64) -> usize {
    let mut offset = format::CHUNK_HEADER_BYTES;
    loop {
        let header = format::parse_record_header(&chunk_bytes[offset..]).expect("sound record");
        if header.height == height {
            return offset;
        }
        offset += header.record_bytes();
    }
}

#[test]
fn generate_inspect_and_verify_a_sound_store() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("store");
    generate(&dir);
    let dir = dir.to_str().expect("utf-8 path");

    let inspect = kasane(&["kura", "inspect", "--dir", dir]);
    assert!(inspect.status.success());
    let summary: serde_json::Value = serde_json::from_str(&stdout(&inspect)).expect("inspect prints JSON");
    assert_eq!(summary["height"], 13);
    assert_eq!(summary["chunks"], 4);
    assert!(summary["bytes"].as_u64().expect("bytes") > 0);

    for strict in [false, true] {
        let mut args = vec!["kura", "verify", "--dir", dir];
        if strict {
            args.push("--strict");
        }
        let verify = kasane(&args);
        assert!(verify.status.success(), "verify (strict {strict}): {}", stdout(&verify));
        let report: serde_json::Value = serde_json::from_str(&stdout(&verify)).expect("verify prints JSON");
        assert_eq!(report["verdict"], "sound");
        assert_eq!(report["height"], 13);
        // 12 blocks of 5 transfers, and the one genesis transaction.
        assert_eq!(report["transactions"], 61);
    }
}

#[test]
fn audit_passes_only_against_the_head_the_store_replays_to() {
    // What a node's strict start runs in a process of its own (docs/NODE.md, "Strict init").
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("store");
    generate(&dir);
    let dir = dir.to_str().expect("utf-8 path");
    let verify = kasane(&["kura", "verify", "--dir", dir, "--strict"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&verify)).expect("verify prints JSON");
    let head = report["head_hash"].as_str().expect("head hash").to_string();
    let commitment = report["state_commitment"].as_str().expect("commitment").to_string();
    let audit = |height: &str, head: &str, commitment: &str| {
        kasane(&[
            "kura",
            "audit",
            "--dir",
            dir,
            "--blocks-per-chunk",
            "4",
            "--height",
            height,
            "--head-hash",
            head,
            "--state-commitment",
            commitment,
        ])
    };

    let passed = audit("13", &head, &commitment);
    assert!(passed.status.success(), "{}", stdout(&passed));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&passed)).expect("audit prints JSON");
    assert_eq!(
        (summary["height"].as_u64(), summary["blocks"].as_u64()),
        (Some(13), Some(13))
    );
    assert_eq!(summary["signatures"].as_u64(), Some(61));

    let wrong_head = audit("13", &commitment, &commitment);
    assert_eq!(wrong_head.status.code(), Some(1));
    assert!(stdout(&wrong_head).contains("audit failed: audit: at height 13 the store gives head hash"));
    let wrong_height = audit("10", &head, &commitment);
    assert_eq!(wrong_height.status.code(), Some(1));
    assert!(
        stdout(&wrong_height).contains("at height 10"),
        "{}",
        stdout(&wrong_height)
    );
    let beyond = audit("14", &head, &commitment);
    assert_eq!(beyond.status.code(), Some(1));
    assert!(stdout(&beyond).contains("only at 13"), "{}", stdout(&beyond));
    let bad_hex = audit("13", "zz", &commitment);
    assert!(!bad_hex.status.success());
    assert!(String::from_utf8_lossy(&bad_hex.stderr).contains("--head-hash"));
}

#[test]
fn verify_names_the_first_bad_height() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("store");
    generate(&dir);
    // Height 6 is the second record of chunk 1 (heights 5..=8): flip one payload byte.
    let chunk = dir.join(format::chunk_file_name(1));
    let mut bytes = std::fs::read(&chunk).expect("read chunk");
    let offset = record_offset(&bytes, 6) + format::RECORD_HEADER_BYTES + 10;
    bytes[offset] ^= 0x01;
    std::fs::write(&chunk, &bytes).expect("write chunk");

    for strict in [false, true] {
        let mut args = vec!["kura", "verify", "--dir", dir.to_str().expect("utf-8 path")];
        if strict {
            args.push("--strict");
        }
        let verify = kasane(&args);
        assert_eq!(verify.status.code(), Some(1), "verify must fail: {}", stdout(&verify));
        assert!(
            stdout(&verify).contains("first bad height: 6"),
            "got: {}",
            stdout(&verify)
        );
    }
    // Inspection is read-only and does not cut anything: the damage is still there.
    assert_eq!(std::fs::read(&chunk).expect("read chunk"), bytes);
}

#[test]
fn verify_reports_a_torn_tail_but_does_not_cut_it() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("store");
    generate(&dir);
    let chunk = dir.join(format::chunk_file_name(3));
    let length = std::fs::metadata(&chunk).expect("chunk").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&chunk)
        .expect("open chunk")
        .set_len(length - 7)
        .expect("truncate");
    let verify = kasane(&["kura", "verify", "--dir", dir.to_str().expect("utf-8 path")]);
    assert!(verify.status.success());
    let report: serde_json::Value = serde_json::from_str(&stdout(&verify)).expect("JSON");
    assert_eq!(report["height"], 12);
    assert!(String::from_utf8_lossy(&verify.stderr).contains("torn tail"));
    assert_eq!(std::fs::metadata(&chunk).expect("chunk").len(), length - 7);
}

#[test]
fn verify_of_a_missing_directory_is_a_clear_error() {
    let verify = kasane(&["kura", "verify", "--dir", "/nonexistent/kasane-store"]);
    assert_eq!(verify.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&verify.stderr).contains("is not a directory"));
}

#[test]
fn genesis_spreads_nodes_over_hosts_with_fixed_ports() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("cluster");
    let out_text = out.to_str().expect("utf-8 path");
    let refused = kasane(&[
        "genesis",
        "--validators",
        "3",
        "--out",
        out_text,
        "--hosts",
        "10.0.0.1,10.0.0.2",
    ]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "--hosts without --base-port must be refused"
    );
    let output = kasane(&[
        "genesis",
        "--validators",
        "3",
        "--observers",
        "1",
        "--out",
        out_text,
        "--hosts",
        "10.0.0.1,10.0.0.2",
        "--base-port",
        "20000",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(out.join("node-1/config.toml")).expect("config")).expect("toml");
    assert_eq!(config["p2p"]["listen"].as_str(), Some("0.0.0.0:20003"));
    assert_eq!(config["api"]["listen"].as_str(), Some("0.0.0.0:20004"));
    assert_eq!(config["api"]["admin_listen"].as_str(), Some("127.0.0.1:20005"));
    let peers: Vec<&str> = config["p2p"]["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|peer| peer["address"].as_str().expect("address"))
        .collect();
    assert_eq!(
        peers,
        ["10.0.0.1:20000", "10.0.0.2:20003", "10.0.0.1:20006", "10.0.0.2:20009"]
    );
    // The secret key file is the owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("node-1/config.toml"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = kasane(&[
        "genesis",
        "--validators",
        "3",
        "--out",
        out_text,
        "--base-port",
        "20000",
    ]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing cluster is not overwritten without --force"
    );
}
