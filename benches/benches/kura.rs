//! Kura append with fsync on, and fast and strict init of a 1,000,000-transfer store.
//!
//! cargo bench -p kasane-benches --bench kura

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::init::{fast_init, strict_init};
use kasane_kura::{FileBackend, FsyncPolicy, Kura, KuraConfig};
use kasane_model::codec;
use kasane_wsv::PluginRegistry;

const TRANSACTIONS_PER_BLOCK: usize = 1000;
const INIT_BLOCKS: u64 = 1000;

fn append(c: &mut Criterion) {
    // Pre-build 50 blocks of 1,000 signed transfers; each iteration appends them all to a
    // fresh store with fdatasync per block.
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 50,
        transactions_per_block: TRANSACTIONS_PER_BLOCK,
        accounts: TRANSACTIONS_PER_BLOCK,
        validators: 4,
        seed: 2,
    })
    .expect("fixture");
    let mut blocks = vec![chain.genesis.clone()];
    for _ in 0..50 {
        blocks.push(chain.next_block().expect("block").0);
    }
    let bytes: u64 = blocks.iter().map(|block| codec::encode(block).len() as u64).sum();
    let mut group = c.benchmark_group("kura_append_fsync_always");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("51_blocks_of_1000_transfers", |bench| {
        bench.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let backend = FileBackend::open(dir.path()).expect("backend");
                let config = KuraConfig {
                    fsync: FsyncPolicy::Always,
                    ..KuraConfig::default()
                };
                let (mut kura, _) = Kura::open(backend, config).expect("open");
                for block in &blocks {
                    kura.append(block).expect("append");
                }
                dir
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
    eprintln!(
        "kura append: {} blocks, {:.1} MB per iteration",
        blocks.len(),
        bytes as f64 / 1e6
    );
}

fn init(c: &mut Criterion) {
    let dir = kasane_benches::fixture_store(INIT_BLOCKS, TRANSACTIONS_PER_BLOCK);
    let (kura, _) = Kura::open(FileBackend::open(&dir).expect("backend"), KuraConfig::default()).expect("open");
    let transactions = (kura.height() - 1) * TRANSACTIONS_PER_BLOCK as u64;
    let mut group = c.benchmark_group("kura_init_1000x1000");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(transactions));
    group.bench_function("fast", |bench| {
        bench.iter(|| fast_init(&kura, PluginRegistry::builtin(), None).expect("fast init"));
    });
    group.bench_function("strict", |bench| {
        bench.iter(|| strict_init(&kura, PluginRegistry::builtin(), None).expect("strict init"));
    });
    group.finish();
}

criterion_group!(benches, append, init);
criterion_main!(benches);
