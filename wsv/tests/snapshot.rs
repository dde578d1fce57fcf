//! Checkpoints and snapshots (wsv/src/snapshot.rs, docs/PROTOCOL.md section 8.1): a snapshot
//! restores the state, the block after the checkpoint proves it, and damaged or forged chunks
//! are refused with an error, never a panic, and never applied.

mod common;

use common::*;
use kasane_model::{Block, BlockHeader, SignedTransaction};
use kasane_wsv::snapshot::{chunk_hash, root_of};
use kasane_wsv::{ApplyError, PluginRegistry, RejectionReason, SnapshotError, TransactionOutcome, Wsv};

const INTERVAL: u64 = 3;

/// Builds and applies a block of `transactions` one second after the head; returns it.
fn commit(wsv: &mut Wsv, transactions: Vec<SignedTransaction>) -> Block {
    let (block, hashes) = make_block(wsv, next_time(wsv), transactions).expect("executes");
    wsv.apply_block(&block, &hashes).expect("applies");
    block
}

/// The standard world with a checkpoint every 3 heights, taken to height 6 by five blocks of
/// transfers, one of which a new domain, account and asset; and the header of each block.
fn chain_to_6(interval: u64, extra_transfer: bool) -> (Wsv, Vec<Block>) {
    let mut wsv = standard_wsv().with_checkpoint_interval(interval);
    let mut blocks = Vec::new();
    for height in 2..=6u32 {
        let mut transactions = vec![tx(
            &wsv,
            ALICE,
            &alice_key(),
            vec![transfer(coin(ALICE), BOB, 10)],
            height,
        )];
        if height == 4 {
            transactions.push(tx(
                &wsv,
                ALICE,
                &alice_key(),
                vec![
                    register_domain("looking_glass_2"),
                    register_account("dodo@looking_glass_2", 7),
                ],
                100,
            ));
        }
        if extra_transfer && height == 5 {
            transactions.push(tx(&wsv, BOB, &bob_key(), vec![transfer(coin(BOB), CAROL, 1)], 0));
        }
        blocks.push(commit(&mut wsv, transactions));
    }
    assert_eq!(wsv.height(), 6);
    (wsv, blocks)
}

fn restore(header: &BlockHeader, chunks: &[Vec<u8>]) -> Result<Wsv, SnapshotError> {
    Wsv::from_snapshot(
        CHAIN.parse().expect("valid chain"),
        genesis_key().public_key(),
        PluginRegistry::builtin(),
        INTERVAL,
        header,
        chunks,
    )
}

fn chunks_of(wsv: &Wsv) -> Vec<Vec<u8>> {
    let checkpoint = wsv.checkpoint().expect("a checkpoint was passed");
    (0..checkpoint.chunk_count())
        .map(|index| checkpoint.chunk(index).expect("in range").to_vec())
        .collect()
}

#[test]
fn a_snapshot_restores_the_state_and_the_next_block_proves_it() {
    let (mut wsv, blocks) = chain_to_6(INTERVAL, false);
    let checkpoint = wsv.checkpoint().expect("height 6 is a checkpoint").clone();
    assert_eq!(checkpoint.height(), 6);
    assert_eq!(checkpoint.root(), root_of(6, checkpoint.manifest()));
    let chunks = chunks_of(&wsv);
    for (chunk, hash) in chunks.iter().zip(checkpoint.manifest()) {
        assert_eq!(chunk_hash(chunk), *hash);
    }

    let mut restored = restore(&blocks[4].header, &chunks).expect("restores");
    assert_eq!(restored.height(), 6);
    assert_eq!(restored.head_hash(), wsv.head_hash());
    assert_eq!(restored.state_commitment(), wsv.state_commitment());
    assert_eq!(snapshot(&restored), snapshot(&wsv));
    assert_eq!(restored.transaction_count(), wsv.transaction_count());
    assert_eq!(restored.peers(), wsv.peers());
    assert_eq!(restored.checkpoint().map(|c| c.root()), Some(checkpoint.root()));

    // Block 7 binds the root of the state at 6: the restored state computes the same
    // commitment, and a payload committed before the checkpoint is still a replay.
    let replayed = blocks[4].transactions[0].clone();
    let (block, hashes) = make_block(&wsv, next_time(&wsv), vec![replayed.clone()]).expect("executes");
    let applied = restored.apply_block(&block, &hashes).expect("the next block applies");
    wsv.apply_block(&block, &hashes).expect("applies");
    assert_eq!(restored.state_commitment(), wsv.state_commitment());
    assert!(matches!(
        applied.outcomes[0],
        TransactionOutcome::Rejected(RejectionReason::Replayed)
    ));
    assert_eq!(snapshot(&restored), snapshot(&wsv));
}

#[test]
fn the_block_after_a_checkpoint_commits_to_its_root() {
    let (with, _) = chain_to_6(INTERVAL, false);
    let (without, _) = chain_to_6(100, false);
    // Same blocks, same writes: only the commitments after checkpoints 3 and 6 differ.
    assert_eq!(snapshot(&with).balances, snapshot(&without).balances);
    assert_ne!(with.state_commitment(), without.state_commitment());
    assert!(without.checkpoint().is_none());
}

#[test]
fn a_forged_snapshot_restores_but_fails_at_the_next_block() {
    let (mut honest, blocks) = chain_to_6(INTERVAL, false);
    // Another state at height 6 (one more transfer at height 5), offered as the honest chain's.
    let (forged, _) = chain_to_6(INTERVAL, true);
    let mut restored = restore(&blocks[4].header, &chunks_of(&forged)).expect("well formed and canonical");
    let transaction = tx(&honest, BOB, &bob_key(), vec![transfer(coin(BOB), CAROL, 2)], 9);
    let (block, hashes) = make_block(&honest, next_time(&honest), vec![transaction]).expect("executes");
    let refused = restored.apply_block(&block, &hashes);
    assert!(
        matches!(refused, Err(ApplyError::StateCommitmentMismatch { height: 7, .. })),
        "{refused:?}"
    );
    assert_eq!(restored.height(), 6);
    honest
        .apply_block(&block, &hashes)
        .expect("the honest state applies it");
}

#[test]
fn damaged_chunks_are_errors_never_panics() {
    let (wsv, blocks) = chain_to_6(INTERVAL, false);
    let header = |height: usize| &blocks[height - 2].header;
    let chunks = chunks_of(&wsv);
    let honest_root = wsv.checkpoint().map(|c| c.root());
    assert_eq!(chunks.len(), 1);
    let good = &chunks[0];
    // Cut at every length, or flip any byte: an error, never a panic; where the damage still
    // leaves a well-formed snapshot (cut at an entry boundary, a byte of a name that stays a
    // valid name), a state whose root is not the honest one, which the next block refuses.
    let mut refused = 0;
    let damaged = (0..good.len())
        .map(|length| good[..length].to_vec())
        .chain((0..good.len()).map(|index| {
            let mut flipped = good.clone();
            flipped[index] ^= 0x5a;
            flipped
        }));
    for chunk in damaged {
        match restore(header(6), &[chunk]) {
            Ok(restored) => assert_ne!(restored.checkpoint().map(|c| c.root()), honest_root),
            Err(_) => refused += 1,
        }
    }
    assert!(
        refused > good.len(),
        "only {refused} of {} damaged snapshots refused",
        2 * good.len()
    );
    // No chunks, the wrong header, a header that is not a checkpoint.
    let none: [Vec<u8>; 0] = [];
    assert_eq!(restore(header(6), &none).err(), Some(SnapshotError::Empty));
    assert!(matches!(
        restore(header(3), &chunks),
        Err(SnapshotError::WrongHeight { expected: 3, found: 6 })
    ));
    assert!(matches!(
        restore(header(5), &chunks),
        Err(SnapshotError::NotACheckpoint { height: 5, .. })
    ));
    // The same entries cut elsewhere are not the canonical chunks.
    let (first, second) = good.split_at(good.len() / 2);
    let resplit = restore(header(6), &[first.to_vec(), second.to_vec()]);
    assert!(resplit.is_err(), "{resplit:?}");
}
