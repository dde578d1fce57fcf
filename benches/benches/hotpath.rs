//! The per-transaction costs on a node's hot path, each on one core: decoding a signed
//! transfer and verifying its signature in batches, hashing, the transaction Merkle root,
//! building (executing) a block, and the consensus core's message rate in memory.
//!
//! cargo bench -p kasane-benches --bench hotpath

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_model::block::tx_merkle_root;
use kasane_model::codec;
use kasane_model::crypto::KeyCache;
use kasane_model::transaction::{verify_transaction_signatures, TransactionHashes};
use kasane_model::{Hash, SignedTransaction};

const BATCH: usize = 1024;

fn transfers() -> (FixtureChain, Vec<SignedTransaction>) {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block: BATCH,
        accounts: 1000,
        validators: 4,
        seed: 5,
    })
    .expect("fixture");
    let transactions = chain.next_transactions(1, kasane_kura::fixture::FIXTURE_GENESIS_MS);
    (chain, transactions)
}

fn decode_and_verify(c: &mut Criterion) {
    let (_, transactions) = transfers();
    let encoded: Vec<Vec<u8>> = transactions.iter().map(codec::encode).collect();
    // Keys decompressed once, as a node's cache has them; signatures not yet verified.
    let keys = KeyCache::new();
    {
        let mut warm = keys.clone();
        for transaction in &transactions {
            for signer in transaction.signers() {
                let _ = warm.get(signer);
            }
        }
    }
    let mut group = c.benchmark_group("transaction");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode_1024", |bench| {
        bench.iter(|| {
            encoded
                .iter()
                .map(|bytes| codec::decode::<SignedTransaction>(bytes).expect("decode"))
                .collect::<Vec<_>>()
        });
    });
    group.bench_function("hashes_1024", |bench| {
        bench.iter(|| transactions.iter().map(SignedTransaction::hashes).collect::<Vec<_>>());
    });
    group.bench_function("batch_verify_1024", |bench| {
        let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
        // Every sender's key already decompressed (a node caches them), no signature verified.
        bench.iter_batched(
            || {
                keys.forget_verified();
                keys.clone()
            },
            |mut cache| verify_transaction_signatures(&mut cache, &transactions, &hashes).expect("valid"),
            // One setup per run: the cache is shared, so a second run would find all verified.
            BatchSize::PerIteration,
        );
    });
    group.bench_function("batch_verify_1024_cold_keys", |bench| {
        let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
        bench.iter_batched(
            KeyCache::new,
            |mut cache| verify_transaction_signatures(&mut cache, &transactions, &hashes).expect("valid"),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("verified_lookup_1024", |bench| {
        let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
        let mut cache = KeyCache::new();
        verify_transaction_signatures(&mut cache, &transactions, &hashes).expect("valid");
        bench.iter(|| verify_transaction_signatures(&mut cache, &transactions, &hashes).expect("valid"));
    });
    group.finish();
}

fn merkle_and_build(c: &mut Criterion) {
    let (chain, transactions) = transfers();
    let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
    let leaves: Vec<Hash> = hashes.iter().map(|hash| hash.transaction).collect();
    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("merkle_root_1024", |bench| bench.iter(|| tx_merkle_root(&leaves)));
    group.bench_function("execute_1024_transfers", |bench| {
        bench.iter(|| {
            chain
                .wsv
                .execute(
                    2,
                    kasane_kura::fixture::FIXTURE_GENESIS_MS + 1000,
                    &transactions,
                    &hashes,
                )
                .expect("execute")
        });
    });
    group.finish();
}

fn consensus_in_memory(c: &mut Criterion) {
    // Four honest replicas on sim-net's virtual network (no loss, 5 ms latency), one transfer
    // per block: what the consensus core and replica driver cost per message, without I/O.
    let config = kasane_sim_net::SimConfig::calm(4);
    let report = kasane_sim_net::run(1, &config);
    let messages: u64 = report.messages_by_kind.values().sum();
    let mut group = c.benchmark_group("consensus");
    group.throughput(Throughput::Elements(messages));
    group.sample_size(10);
    group.bench_function("sim_4_nodes_calm_messages", |bench| {
        bench.iter(|| kasane_sim_net::run(1, &config))
    });
    group.finish();
}

criterion_group!(benches, decode_and_verify, merkle_and_build, consensus_in_memory);
criterion_main!(benches);
