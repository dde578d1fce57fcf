//! Checkpoints and snapshots (wsv/src/snapshot.rs, docs/PROTOCOL.md section 8.1): a snapshot
//! restores the state, the block that binds its root proves it, and damaged or forged chunks
//! are refused with an error, never a panic, and never applied.

mod common;

use common::*;
use kasane_model::{Block, BlockHeader, SignedTransaction};
use kasane_wsv::snapshot::{binding_delay, chunk_hash, root_of};
use kasane_wsv::{ApplyError, PluginRegistry, RejectionReason, SnapshotError, TransactionOutcome, Wsv};

/// Checkpoints at 3, 6, 9...; with the binding delay capped at the interval, block 6 binds the
/// root of 3 and block 9 the root of 6.
const INTERVAL: u64 = 3;

/// Builds and applies a block of `transactions` one second after the head; returns it.
fn commit(wsv: &mut Wsv, transactions: Vec<SignedTransaction>) -> Block {
    let (block, hashes) = make_block(wsv, next_time(wsv), transactions).expect("executes");
    wsv.apply_block(&block, &hashes).expect("applies");
    block
}

/// The standard world with a checkpoint every `interval` heights, taken to height `last` (at
/// least 6): five blocks of transfers, one of which a new domain, account and asset (and with
/// `extra_transfer` one more transfer by Bob at height 5), then empty blocks. Returns the view
/// and the blocks from height 2.
fn chain_to(last: u64, interval: u64, extra_transfer: bool) -> (Wsv, Vec<Block>) {
    let mut wsv = standard_wsv().with_checkpoint_interval(interval);
    let mut blocks = Vec::new();
    for height in 2..=last {
        let mut transactions = Vec::new();
        if height <= 6 {
            transactions.push(tx(
                &wsv,
                ALICE,
                &alice_key(),
                vec![transfer(coin(ALICE), BOB, 10)],
                height as u32,
            ));
        }
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
    assert_eq!(wsv.height(), last);
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
    let checkpoint = wsv.checkpoint().expect("a checkpoint was bound");
    (0..checkpoint.chunk_count())
        .map(|index| checkpoint.chunk(index).expect("in range").to_vec())
        .collect()
}

fn apply(wsv: &mut Wsv, block: &Block) -> Result<kasane_wsv::AppliedBlock, ApplyError> {
    wsv.apply_block(block, &hashes_of(&block.transactions))
}

#[test]
fn a_snapshot_restores_the_state_and_the_binding_block_proves_it() {
    assert_eq!(binding_delay(INTERVAL), 3);
    let (at_6, _) = chain_to(6, INTERVAL, false);
    let (mut wsv, blocks) = chain_to(9, INTERVAL, false);
    // At 9 the checkpoint of 6 is bound (the one of 9 is still being taken).
    let checkpoint = wsv.checkpoint().expect("block 9 binds checkpoint 6").clone();
    assert_eq!(checkpoint.height(), 6);
    assert_eq!(checkpoint.root(), root_of(6, checkpoint.manifest()));
    assert!(wsv.checkpoint_link().is_some());
    let chunks = chunks_of(&wsv);
    for (chunk, hash) in chunks.iter().zip(checkpoint.manifest()) {
        assert_eq!(chunk_hash(chunk), *hash);
    }

    let mut restored = restore(&blocks[4].header, &chunks).expect("restores");
    assert_eq!(snapshot(&restored), snapshot(&at_6));
    assert_eq!(restored.transaction_count(), at_6.transaction_count());
    assert_eq!(restored.peers(), at_6.peers());
    assert_eq!(restored.checkpoint().map(|c| c.root()), Some(checkpoint.root()));
    assert_eq!(restored.checkpoint_link(), None);

    // Blocks 7 to 9 apply on it, the last binding the root of 6; then it holds the same link.
    for block in &blocks[5..] {
        apply(&mut restored, block).expect("applies on the restored state");
    }
    assert_eq!(snapshot(&restored), snapshot(&wsv));
    assert_eq!(restored.checkpoint_link(), wsv.checkpoint_link());
    // A payload committed before the checkpoint is still a replay.
    let replayed = blocks[4].transactions[0].clone();
    let (block, hashes) = make_block(&wsv, next_time(&wsv), vec![replayed]).expect("executes");
    let applied = restored.apply_block(&block, &hashes).expect("the next block applies");
    wsv.apply_block(&block, &hashes).expect("applies");
    assert_eq!(restored.state_commitment(), wsv.state_commitment());
    assert!(matches!(
        applied.outcomes[0],
        TransactionOutcome::Rejected(RejectionReason::Replayed)
    ));
}

#[test]
fn the_block_binding_a_checkpoint_commits_to_its_root() {
    // Same blocks, same writes: the commitments agree until block 6, which binds the root of
    // checkpoint 3 (taken, not yet bound, at 3 to 5).
    let (with, _) = chain_to(5, INTERVAL, false);
    let (without, _) = chain_to(5, 100, false);
    assert_eq!(with.state_commitment(), without.state_commitment());
    assert!(with.checkpoint().is_none());
    let (with, _) = chain_to(6, INTERVAL, false);
    let (without, _) = chain_to(6, 100, false);
    assert_eq!(snapshot(&with).balances, snapshot(&without).balances);
    assert_ne!(with.state_commitment(), without.state_commitment());
    assert_eq!(with.checkpoint().map(|c| c.height()), Some(3));
    assert!(without.checkpoint().is_none());
}

#[test]
fn a_forged_snapshot_restores_but_fails_at_the_binding_block() {
    let (mut honest, blocks) = chain_to(9, INTERVAL, false);
    // Another state at height 6 (one more transfer at height 5), offered as the honest chain's.
    let (forged, _) = chain_to(9, INTERVAL, true);
    let mut restored = restore(&blocks[4].header, &chunks_of(&forged)).expect("well formed and canonical");
    // Blocks 7 and 8 write nothing, so they apply; block 9 binds the root and is refused.
    for block in &blocks[5..7] {
        apply(&mut restored, block).expect("an empty block applies");
    }
    let refused = apply(&mut restored, &blocks[7]);
    assert!(
        matches!(refused, Err(ApplyError::StateCommitmentMismatch { height: 9, .. })),
        "{refused:?}"
    );
    assert_eq!(restored.height(), 8);
    let transaction = tx(&honest, BOB, &bob_key(), vec![transfer(coin(BOB), CAROL, 2)], 9);
    let (block, hashes) = make_block(&honest, next_time(&honest), vec![transaction]).expect("executes");
    honest
        .apply_block(&block, &hashes)
        .expect("the honest state applies it");
}

#[test]
fn damaged_chunks_are_errors_never_panics() {
    let (wsv, blocks) = chain_to(9, INTERVAL, false);
    let header = |height: usize| &blocks[height - 2].header;
    let chunks = chunks_of(&wsv);
    let honest_root = wsv.checkpoint().map(|c| c.root());
    assert_eq!(chunks.len(), 1);
    let good = &chunks[0];
    // Cut at every length, or flip any byte: an error, never a panic; where the damage still
    // leaves a well-formed snapshot (cut at an entry boundary, a byte of a name that stays a
    // valid name), a state whose root is not the honest one, which the binding block refuses.
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
