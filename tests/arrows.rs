//! The crates' arrows point one way (ARCHITECTURE.md, "Crates and their arrows"): each crate
//! may use only the kasane crates listed for it here, so the vocabulary never learns about
//! storage, the pure core never about the network, and no library about the binary. A new
//! dependency between kasane crates is a design change: make it here and in ARCHITECTURE.md.

use std::collections::BTreeSet;
use std::path::Path;

/// Each crate's directory and the kasane crates it may depend on (any section: normal, dev,
/// build or target-specific).
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("wsv", &["kasane-model"]),
    ("kura", &["kasane-model", "kasane-wsv"]),
    ("consensus", &["kasane-model", "kasane-wsv", "kasane-kura"]),
    ("p2p", &["kasane-model", "kasane-consensus"]),
    (
        "sim-net",
        &["kasane-model", "kasane-wsv", "kasane-kura", "kasane-consensus"],
    ),
    ("plasma", &["kasane-model", "kasane-wsv"]),
    ("harness", &["kasane-model", "kasane-wsv", "kasane-plasma"]),
    (
        "node",
        &[
            "kasane-model",
            "kasane-wsv",
            "kasane-kura",
            "kasane-consensus",
            "kasane-p2p",
            "kasane-plasma",
            // `--unsafe-byzantine` rewrites messages with the simulator's Mischief.
            "kasane-sim-net",
            // Tests only: test accounts and transfers.
            "kasane-harness",
        ],
    ),
    (
        "benches",
        &["kasane-model", "kasane-wsv", "kasane-kura", "kasane-sim-net"],
    ),
];

/// The kasane crates a Cargo.toml names as dependencies: every line `kasane-<name>...` in a
/// dependency section.
fn kasane_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut in_dependencies = false;
    let mut found = BTreeSet::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line.contains("dependencies");
            continue;
        }
        if !in_dependencies || !line.starts_with("kasane-") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        found.insert(name);
    }
    found
}

#[test]
fn every_crate_depends_only_on_the_kasane_crates_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("the workspace manifest");
    for (directory, allowed) in ALLOWED {
        assert!(
            workspace.contains(&format!("\"{directory}\"")),
            "{directory} is not a workspace member"
        );
        let manifest = std::fs::read_to_string(root.join(directory).join("Cargo.toml")).expect("a crate manifest");
        let allowed: BTreeSet<String> = allowed.iter().map(|name| name.to_string()).collect();
        let extra: Vec<String> = kasane_dependencies(&manifest).difference(&allowed).cloned().collect();
        assert!(
            extra.is_empty(),
            "{directory}/Cargo.toml depends on {extra:?}, against the arrows (ARCHITECTURE.md)"
        );
    }
}

#[test]
fn every_workspace_member_has_its_arrows_listed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("the workspace manifest");
    let members = workspace
        .lines()
        .find(|line| line.trim_start().starts_with("members"))
        .expect("a members line");
    let listed: BTreeSet<&str> = ALLOWED.iter().map(|(directory, _)| *directory).collect();
    for member in members.split('"').skip(1).step_by(2) {
        assert!(listed.contains(member), "{member} has no entry in ALLOWED");
    }
}

#[test]
fn the_reader_finds_dependencies_in_every_section() {
    let manifest = "[package]\nname = \"kasane-x\"\n[dependencies]\nkasane-model.workspace = true\n\
                    serde = \"1\"\n[target.'cfg(unix)'.dependencies]\nkasane-wsv = { path = \"../wsv\" }\n\
                    [dev-dependencies]\nkasane-kura.workspace = true\n[lints]\nworkspace = true\n";
    let found: Vec<String> = kasane_dependencies(manifest).into_iter().collect();
    assert_eq!(found, ["kasane-kura", "kasane-model", "kasane-wsv"]);
}
