//! The consensus crate stays pure (docs/PROTOCOL.md, STYLE 1-3): no clock, no randomness, no
//! sockets, no threads, no files, no async runtime, and no hash-map iteration in protocol logic.
//! This test fails the build of anyone who adds them.

use std::path::Path;

const FORBIDDEN_ANYWHERE: &[&str] = &[
    "std::time",
    "Instant::",
    "SystemTime",
    "tokio",
    "rand::",
    "thread_rng",
    "OsRng",
    "KeyPair::generate",
    "std::net",
    "std::fs",
    "std::thread",
    "std::process",
];

/// Protocol-logic files iterate only ordered collections.
const ORDERED_ONLY: &[&str] = &[
    "mod.rs",
    "voting.rs",
    "view_change.rs",
    "sync.rs",
    "votes.rs",
    "topology.rs",
    "io.rs",
    "message.rs",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn consensus_sources_use_no_clock_randomness_or_io() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&source, &mut files);
    let mut checked = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).expect("source file");
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_string();
        for forbidden in FORBIDDEN_ANYWHERE {
            assert!(
                !text.contains(forbidden),
                "{name} uses {forbidden}: the consensus crate must stay pure"
            );
        }
        if ORDERED_ONLY.contains(&name.as_str()) {
            assert!(
                !text.contains("HashMap") && !text.contains("HashSet"),
                "{name} uses a hash map or set"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} source files found");
}

#[test]
fn consensus_depends_on_no_runtime_or_randomness() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).expect("manifest");
    let dependencies = manifest.split("[dependencies]").nth(1).unwrap_or_default();
    for forbidden in ["tokio", "rand", "quinn", "mio", "async-std", "getrandom"] {
        assert!(
            !dependencies
                .lines()
                .any(|line| line.trim_start().starts_with(forbidden)),
            "consensus must not depend on {forbidden}"
        );
    }
}
