//! The ceiling `kasane bench` reports beside its throughput, measured in the same run: what the
//! machine's cores could commit if checking signatures were the only work (docs/BENCHMARKS.md,
//! "The same-run ceiling").
//!
//! The speed of one machine moves by tens of percent within a day, so an absolute figure says
//! little about a change of build. Right before the cluster starts, the bench times batch
//! verification on one core with the transactions it is about to send: every sender's key
//! already decompressed (a node caches them), no signature remembered as verified, batches of
//! the size the nodes check. Every validator checks every transaction's signatures once (the
//! node its client sent it to at admission, the others when it is gossiped), so
//!
//! `ceiling_tps = cores x 1e6 / (verifiers x us per signature x signatures per transaction)`
//!
//! and `ceiling_fraction = committed tps / ceiling_tps`. The CPU the nodes used per committed
//! transaction is split the same way: signature checks (verifiers x signatures x us per
//! signature) and everything else.

use std::time::{Duration, Instant};

use kasane_model::crypto::KeyCache;
use kasane_model::transaction::verify_transaction_signatures;
use kasane_model::transaction::TransactionHashes;
use kasane_model::SignedTransaction;
use serde::Serialize;

/// Transactions a node checks in one batch (the verifier stages' batch, about a client
/// request's size in the bench).
pub const BATCH_TRANSACTIONS: usize = 1024;

/// How long the measurement runs: long enough for about 100 batches on this kind of machine.
pub const MEASURE_FOR: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// Batch-verify cost per signature on one core, warm keys, microseconds.
    pub us_per_signature: f64,
    /// Signatures timed.
    pub signatures_timed: u64,
    /// Signatures on each transaction of the workload.
    pub signatures_per_transaction: f64,
    /// Cores of the machine.
    pub cores: usize,
    /// Nodes that check each transaction's signatures.
    pub verifiers: usize,
    /// Transactions per second the cores could commit if signature checks were all the work.
    pub tps: f64,
}

/// Times batch verification of `transactions` (valid, signed by their creators) on this thread
/// for about `budget`. None when there is nothing to time.
pub fn measure(transactions: &[SignedTransaction], verifiers: usize, budget: Duration) -> Option<Ceiling> {
    let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
    let signatures: usize = transactions
        .iter()
        .map(|transaction| transaction.signatures.len())
        .sum();
    if signatures == 0 {
        return None;
    }
    let mut cache = KeyCache::new();
    // Warm the keys (and the code): one pass, not timed.
    verify_transaction_signatures(&mut cache, transactions, &hashes).ok()?;
    let started = Instant::now();
    let mut timed = Duration::ZERO;
    let mut signatures_timed = 0u64;
    while started.elapsed() < budget {
        for (chunk, chunk_hashes) in transactions
            .chunks(BATCH_TRANSACTIONS)
            .zip(hashes.chunks(BATCH_TRANSACTIONS))
        {
            cache.forget_verified();
            let at = Instant::now();
            verify_transaction_signatures(&mut cache, chunk, chunk_hashes).ok()?;
            timed += at.elapsed();
            signatures_timed += chunk
                .iter()
                .map(|transaction| transaction.signatures.len() as u64)
                .sum::<u64>();
        }
    }
    let us_per_signature = timed.as_secs_f64() * 1e6 / signatures_timed as f64;
    let signatures_per_transaction = signatures as f64 / transactions.len() as f64;
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let tps = cores as f64 * 1e6 / (verifiers.max(1) as f64 * us_per_signature * signatures_per_transaction);
    Some(Ceiling {
        us_per_signature,
        signatures_timed,
        signatures_per_transaction,
        cores,
        verifiers,
        tps,
    })
}

/// The CPU the nodes used per committed transaction, split into signature checks and the rest.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPerTransaction {
    pub total_us: f64,
    pub signatures_us: f64,
    pub other_us: f64,
}

impl CpuPerTransaction {
    /// `cpu_s` seconds of node CPU over `committed` transactions that carry no signature
    /// (opaque payloads).
    pub fn unsigned(cpu_s: f64, committed: u64) -> Option<CpuPerTransaction> {
        let total_us = cpu_s * 1e6 / (committed > 0).then_some(committed as f64)?;
        Some(CpuPerTransaction {
            total_us,
            signatures_us: 0.0,
            other_us: total_us,
        })
    }
}

impl Ceiling {
    /// `committed_tps / tps`.
    pub fn fraction(&self, committed_tps: f64) -> f64 {
        committed_tps / self.tps
    }

    /// Splits `cpu_s` seconds of node CPU over `committed` transactions.
    pub fn split(&self, cpu_s: f64, committed: u64) -> Option<CpuPerTransaction> {
        if committed == 0 {
            return None;
        }
        let total_us = cpu_s * 1e6 / committed as f64;
        let signatures_us = self.verifiers as f64 * self.signatures_per_transaction * self.us_per_signature;
        Some(CpuPerTransaction {
            total_us,
            signatures_us,
            other_us: total_us - signatures_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_divides_the_cores_among_the_verifiers() {
        // The bench's own transfers, as `kasane bench` times them.
        let chain = kasane_harness::DEFAULT_CHAIN.parse().expect("chain id");
        let transactions: Vec<SignedTransaction> = (0..64)
            .map(|nonce| kasane_harness::padded_transfer(&chain, nonce as usize % 8, 8, 1, nonce, 0, 0))
            .collect();
        let one = measure(&transactions, 1, Duration::from_millis(20)).expect("timed");
        assert!(one.us_per_signature > 0.0 && one.signatures_timed >= 64);
        assert_eq!(one.signatures_per_transaction, 1.0);
        let expected = one.cores as f64 * 1e6 / one.us_per_signature;
        assert!((one.tps - expected).abs() / expected < 1e-9);
        let split = one.split(2.0, 1_000).expect("committed");
        assert!((split.total_us - 2_000.0).abs() < 1e-9);
        assert!((split.signatures_us + split.other_us - split.total_us).abs() < 1e-9);
        assert!(measure(&[], 4, Duration::from_millis(1)).is_none());
        // A signature that does not verify gives no figure rather than a wrong one.
        let mut forged = transactions[0].clone();
        forged.payload.nonce += 1000;
        assert!(measure(&[forged], 4, Duration::from_millis(1)).is_none());
    }
}
