//! Checkpoint snapshots (wsv/src/snapshot.rs): what a validator spends at every checkpoint to
//! copy its state in the commit path (`copy_*`) and to encode and hash it on its own thread
//! (`encode_*`), and what a restoring node spends to decode and check it, for a world of 10,000
//! accounts and a replay memory of 1,000,000 payloads (about 110 s of transactions at 9,000
//! tx/s).
//!
//! cargo bench -p kasane-benches --bench snapshot

use std::collections::VecDeque;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_model::{BlockHeader, Hash};
use kasane_wsv::replay::ReplayGuard;
use kasane_wsv::{PluginRegistry, Snapshot, Wsv};

const REPLAY_ENTRIES: u64 = 1_000_000;
const HEIGHT: u64 = 100;

fn snapshot(c: &mut Criterion) {
    let chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block: 1,
        accounts: 10_000,
        validators: 4,
        seed: 5,
    })
    .expect("fixture");
    let mut replay = ReplayGuard::default();
    for block in 0..REPLAY_ENTRIES / 10_000 {
        let entries = (0..10_000)
            .map(|index| {
                (
                    Hash::of(&(block * 10_000 + index).to_le_bytes()),
                    600_000 + block * 1_000,
                )
            })
            .collect();
        replay.record_block(entries, block * 1_000);
    }
    let world = chain.wsv.world();
    let encoded = Snapshot::encode(HEIGHT, world, &replay.frozen(), 1, 1, &VecDeque::new());
    println!(
        "snapshot: {} entries, {} chunks, {:.1} MiB",
        encoded.entries(),
        encoded.chunk_count(),
        encoded.bytes() as f64 / (1 << 20) as f64
    );
    let chunks: Vec<Vec<u8>> = (0..encoded.chunk_count())
        .map(|index| encoded.chunk(index).expect("in range").to_vec())
        .collect();
    let header = BlockHeader {
        height: HEIGHT,
        previous_hash: Hash::ZERO,
        view: 0,
        proposer: chain.genesis_key.public_key(),
        tx_merkle_root: Hash::ZERO,
        state_commitment: Hash::ZERO,
        timestamp_ms: 1,
        view_change_proof: None,
    };
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Elements(encoded.entries()));
    group.bench_function("copy_10k_accounts_1m_replay", |bench| {
        bench.iter(|| (world.clone(), replay.frozen()))
    });
    group.bench_function("encode_10k_accounts_1m_replay", |bench| {
        bench.iter(|| Snapshot::encode(HEIGHT, world, &replay.frozen(), 1, 1, &VecDeque::new()))
    });
    group.bench_function("restore_10k_accounts_1m_replay", |bench| {
        bench.iter(|| {
            Wsv::from_snapshot(
                chain.wsv.chain().clone(),
                chain.genesis_key.public_key(),
                PluginRegistry::builtin(),
                HEIGHT,
                &header,
                &chunks,
            )
            .expect("restores")
        })
    });
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
