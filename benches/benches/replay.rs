//! The replay memory (wsv/src/replay.rs) through its growth: 150 blocks of 6,000 payloads
//! recorded from empty, about 100 s of load at 9,000 tx/s, each block looking up its payloads
//! first as a validator does. Besides criterion's time for the whole run it prints, from one
//! pass, the slowest block and the median one: a table that rehashes in one step shows as a
//! slow block, on every node at once in a cluster (docs/BENCHMARKS.md).
//!
//! cargo bench -p kasane-benches --bench replay

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kasane_model::Hash;
use kasane_wsv::replay::ReplayGuard;

const BLOCKS: u64 = 150;
const PER_BLOCK: u64 = 6_000;

fn blocks() -> Vec<Vec<(Hash, u64)>> {
    (0..BLOCKS)
        .map(|block| {
            (0..PER_BLOCK)
                .map(|index| {
                    (
                        Hash::of(&(block * PER_BLOCK + index).to_le_bytes()),
                        600_000 + block * 1_000,
                    )
                })
                .collect()
        })
        .collect()
}

/// Records every block into a fresh guard; returns each block's time.
fn run(blocks: &[Vec<(Hash, u64)>]) -> Vec<Duration> {
    let mut guard = ReplayGuard::default();
    blocks
        .iter()
        .enumerate()
        .map(|(block, entries)| {
            let started = Instant::now();
            let now = block as u64 * 1_000;
            let fresh = entries.iter().filter(|(hash, _)| !guard.seen(hash, now)).count();
            assert_eq!(fresh, entries.len());
            guard.record_block(entries.clone(), now);
            started.elapsed()
        })
        .collect()
}

fn replay(c: &mut Criterion) {
    let blocks = blocks();
    let mut times = run(&blocks);
    let slowest = times
        .iter()
        .enumerate()
        .max_by_key(|(_, time)| **time)
        .map(|(block, time)| (block, *time));
    times.sort();
    if let Some((block, time)) = slowest {
        println!(
            "replay: slowest block {block} ({} entries before it): {:.1} ms; median block {:.2} ms",
            block as u64 * PER_BLOCK,
            time.as_secs_f64() * 1e3,
            times[times.len() / 2].as_secs_f64() * 1e3
        );
    }
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BLOCKS * PER_BLOCK));
    group.bench_function("record_150_blocks_of_6000_from_empty", |bench| {
        bench.iter(|| run(&blocks))
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
