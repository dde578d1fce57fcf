//! Shared fixtures of kasane's benchmarks. The benchmarks themselves are in benches/benches/;
//! docs/BENCHMARKS.md gives the commands and the figures.

use std::path::PathBuf;

use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::{FileBackend, FsyncPolicy, Kura, KuraConfig};

/// A fixture store on disk, generated once and reused by later runs (generation signs every
/// transaction, which takes longer than the benchmark). Lives under target/bench-fixtures/.
pub fn fixture_store(blocks: u64, transactions_per_block: usize) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target
        .join("bench-fixtures")
        .join(format!("transfers-{blocks}x{transactions_per_block}"));
    let complete = dir.join("complete");
    if complete.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("generating fixture store {} (once)...", dir.display());
    let backend = FileBackend::open(&dir).expect("create fixture directory");
    let config = KuraConfig {
        fsync: FsyncPolicy::Never,
        ..KuraConfig::default()
    };
    let (mut kura, _) = Kura::open(backend, config).expect("open fixture store");
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks,
        transactions_per_block,
        accounts: transactions_per_block.max(2),
        validators: 4,
        seed: 1,
    })
    .expect("fixture genesis");
    chain.write_all(&mut kura, |_, _| {}).expect("write fixture");
    kura.sync().expect("sync fixture");
    std::fs::write(&complete, b"").expect("mark fixture complete");
    dir
}
