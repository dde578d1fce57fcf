//! World state application of 1,000-transfer blocks on one core (signatures are verified
//! elsewhere, once per transaction; this is execution, permission checks, replay protection
//! and the state commitment).
//!
//! cargo bench -p kasane-benches --bench wsv

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_model::transaction::TransactionHashes;
use kasane_model::CommittedBlock;

const TRANSACTIONS_PER_BLOCK: usize = 1000;
const BLOCKS: usize = 10;

fn apply(c: &mut Criterion) {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: BLOCKS as u64,
        transactions_per_block: TRANSACTIONS_PER_BLOCK,
        accounts: 10_000,
        validators: 4,
        seed: 3,
    })
    .expect("fixture");
    let start = chain.wsv.clone();
    let blocks: Vec<(CommittedBlock, Vec<TransactionHashes>)> =
        (0..BLOCKS).map(|_| chain.next_block().expect("block")).collect();
    let mut group = c.benchmark_group("wsv_apply");
    group.throughput(Throughput::Elements((BLOCKS * TRANSACTIONS_PER_BLOCK) as u64));
    group.bench_function("10_blocks_of_1000_transfers", |bench| {
        bench.iter_batched(
            || start.clone(),
            |mut wsv| {
                for (block, hashes) in &blocks {
                    wsv.apply_block(&block.block, hashes).expect("apply");
                }
                wsv
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
