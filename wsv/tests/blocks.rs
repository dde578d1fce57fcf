//! Block application: header checks against the head, the claimed state commitment, and that a
//! refused block changes nothing.

mod common;

use common::*;
use kasane_model::block::tx_merkle_root;
use kasane_model::instruction::Instruction;
use kasane_model::{Block, Hash, SignedTransaction};
use kasane_wsv::{ApplyError, PluginRegistry, TransactionOutcome, Wsv};

/// The standard world after one more block, so that the head is not genesis.
fn wsv_at_height_2() -> Wsv {
    let mut wsv = standard_wsv();
    let outcome = run(&mut wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, 1)]);
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert_eq!(wsv.height(), 2);
    wsv
}

/// A valid next block with one transfer, and its hashes.
fn next_block(wsv: &Wsv) -> (Block, Vec<kasane_model::transaction::TransactionHashes>) {
    let transaction = tx(wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, 100)], 0);
    make_block(wsv, next_time(wsv), vec![transaction]).expect("executes")
}

#[track_caller]
fn assert_refused(
    wsv: &mut Wsv,
    block: &Block,
    hashes: &[kasane_model::transaction::TransactionHashes],
    expected: ApplyError,
) {
    let before = snapshot(wsv);
    assert_eq!(
        wsv.apply_block(block, hashes).map(|executed| executed.outcomes),
        Err(expected)
    );
    assert_eq!(snapshot(wsv), before);
}

#[test]
fn wrong_height_is_refused() {
    let mut wsv = wsv_at_height_2();
    let (good, hashes) = next_block(&wsv);
    for height in [0, 2, 4, u64::MAX] {
        let mut block = good.clone();
        block.header.height = height;
        assert_refused(
            &mut wsv,
            &block,
            &hashes,
            ApplyError::WrongHeight {
                expected: 3,
                found: height,
            },
        );
    }
    // The untouched block still applies, and its transaction is not a replay: the refused
    // attempts recorded nothing.
    let executed = wsv.apply_block(&good, &hashes).expect("applies");
    assert_eq!(executed.outcomes, vec![TransactionOutcome::Committed]);
    assert_eq!(wsv.height(), 3);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 101);
}

#[test]
fn wrong_previous_hash_is_refused() {
    let mut wsv = wsv_at_height_2();
    let (good, hashes) = next_block(&wsv);
    let head = wsv.head_hash();
    for previous in [Hash::ZERO, Hash::of(b"elsewhere"), good.hash()] {
        let mut block = good.clone();
        block.header.previous_hash = previous;
        assert_refused(
            &mut wsv,
            &block,
            &hashes,
            ApplyError::WrongPreviousHash {
                height: 3,
                expected: head,
                found: previous,
            },
        );
    }
    wsv.apply_block(&good, &hashes).expect("applies");
    assert_eq!(wsv.head_hash(), good.hash());
}

#[test]
fn time_going_back_is_refused_but_equal_time_is_not() {
    let mut wsv = wsv_at_height_2();
    let last = wsv.last_timestamp_ms();
    let transaction = tx(&wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, 100)], 0);
    // make_block executes at the given time and builds a consistent header, so the only thing
    // wrong with this block is its time.
    let (block, hashes) = make_block(&wsv, last - 1, vec![transaction.clone()]).expect("executes");
    assert_refused(
        &mut wsv,
        &block,
        &hashes,
        ApplyError::TimeWentBack {
            height: 3,
            previous: last,
            found: last - 1,
        },
    );
    let (block, hashes) = make_block(&wsv, last, vec![transaction]).expect("executes");
    let executed = wsv
        .apply_block(&block, &hashes)
        .expect("a block at the same millisecond applies");
    assert_eq!(executed.outcomes, vec![TransactionOutcome::Committed]);
    assert_eq!(wsv.last_timestamp_ms(), last);
}

#[test]
fn wrong_state_commitment_is_refused() {
    let mut wsv = wsv_at_height_2();
    let (good, hashes) = next_block(&wsv);
    let computed = good.header.state_commitment;
    // The commitment before the block, a random one, and the one the block would have without
    // its transaction.
    let empty = make_block(&wsv, good.header.timestamp_ms, vec![])
        .expect("executes")
        .0
        .header
        .state_commitment;
    assert_ne!(empty, computed);
    for claimed in [wsv.state_commitment(), Hash::of(b"made up"), empty] {
        let mut block = good.clone();
        block.header.state_commitment = claimed;
        assert_refused(
            &mut wsv,
            &block,
            &hashes,
            ApplyError::StateCommitmentMismatch {
                height: 3,
                claimed,
                computed,
            },
        );
    }
    wsv.apply_block(&good, &hashes).expect("applies");
    assert_eq!(wsv.state_commitment(), computed);
}

#[test]
fn hash_count_must_match_transactions() {
    let mut wsv = wsv_at_height_2();
    let (good, hashes) = next_block(&wsv);
    assert_refused(
        &mut wsv,
        &good,
        &[],
        ApplyError::HashCountMismatch {
            height: 3,
            hashes: 0,
            transactions: 1,
        },
    );
    let doubled = [hashes[0], hashes[0]];
    assert_refused(
        &mut wsv,
        &good,
        &doubled,
        ApplyError::HashCountMismatch {
            height: 3,
            hashes: 2,
            transactions: 1,
        },
    );
}

#[test]
fn empty_block_changes_the_commitment_but_not_the_world() {
    let mut wsv = wsv_at_height_2();
    let before = snapshot(&wsv);
    let time = next_time(&wsv);
    let dry_run = wsv.execute(wsv.height() + 1, time, &[], &[]).expect("executes");
    assert_eq!(dry_run.write_count(), 0);
    let transfer = tx(&wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, 1)], 0);
    let one = wsv
        .execute(
            wsv.height() + 1,
            time,
            std::slice::from_ref(&transfer),
            &hashes_of(std::slice::from_ref(&transfer)),
        )
        .expect("executes");
    // Two balances move.
    assert_eq!(one.write_count(), 2);
    let executed = apply_at(&mut wsv, time, vec![]).expect("applies");
    assert!(executed.outcomes.is_empty());
    let after = snapshot(&wsv);
    assert_eq!(after.height, before.height + 1);
    // The commitment chains through every block, empty or not.
    assert_ne!(after.commitment, before.commitment);
    assert_eq!(after.balances, before.balances);
    assert_eq!(after.accounts, before.accounts);
}

#[test]
fn genesis_block_matches_the_state_it_builds() {
    let builder = standard_builder();
    let (genesis, wsv) = builder.build(PluginRegistry::builtin()).expect("genesis applies");
    let header = &genesis.block.header;
    assert_eq!(header.height, 1);
    assert_eq!(header.previous_hash, Hash::ZERO);
    assert_eq!(header.timestamp_ms, T0);
    assert_eq!(header.state_commitment, wsv.state_commitment());
    assert_eq!(wsv.head_hash(), genesis.block.hash());
    let hashes: Vec<Hash> = genesis.block.transactions.iter().map(SignedTransaction::hash).collect();
    assert_eq!(header.tx_merkle_root, tx_merkle_root(&hashes));
    // The certificate is the genesis authority's commit vote over the block.
    let validators = [genesis_key().public_key()].into();
    let mut cache = kasane_model::crypto::KeyCache::new();
    assert_eq!(
        genesis
            .certificate
            .verify(&genesis.expected_vote(), &validators, &mut cache),
        Ok(())
    );
    // The same genesis block applies to a fresh state and gives the same state.
    let mut fresh = Wsv::new(
        CHAIN.parse().expect("valid chain"),
        genesis_key().public_key(),
        PluginRegistry::builtin(),
    );
    assert_eq!(fresh.validators(), validators);
    let block_hashes: Vec<_> = genesis
        .block
        .transactions
        .iter()
        .map(SignedTransaction::hashes)
        .collect();
    fresh
        .apply_block(&genesis.block, &block_hashes)
        .expect("genesis applies to a fresh state");
    assert_eq!(fresh.state_commitment(), wsv.state_commitment());
    assert_eq!(fresh.balance(&coin(ALICE)), ALICE_COINS);
    assert_eq!(fresh.peers(), wsv.peers());
    // A genesis block with a failing instruction is refused by the builder.
    let mut bad = standard_builder();
    bad.instruction(Instruction::Transfer {
        source: coin(ALICE),
        destination: account(BOB),
        amount: ALICE_COINS + 1,
    });
    assert!(bad.build(PluginRegistry::builtin()).is_err());
}

#[test]
fn a_merkle_root_that_does_not_match_the_hashes_is_refused() {
    let mut wsv = wsv_at_height_2();
    let (mut block, hashes) = next_block(&wsv);
    block.header.tx_merkle_root = kasane_model::Hash::of(b"not the root");
    assert_refused(&mut wsv, &block, &hashes, ApplyError::MerkleRootMismatch { height: 3 });
}

/// R4's limits hold for every block, whoever built it: more than `BLOCK_TRANSACTIONS_MAX`
/// transactions, or transactions whose encodings add up to more than
/// `BLOCK_TRANSACTION_BYTES_MAX`, and the block is refused whole (a block that could not be
/// stored in Kura with its certificate must never collect votes).
#[test]
fn blocks_over_the_count_or_byte_limit_are_refused() {
    use kasane_model::block::{BLOCK_TRANSACTIONS_MAX, BLOCK_TRANSACTION_BYTES_MAX};
    use kasane_model::instruction::CONTRACT_CALL_BYTES_MAX;
    let mut wsv = wsv_at_height_2();
    let height = wsv.height() + 1;
    let now = next_time(&wsv);

    let small = tx(&wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, 1)], 0);
    let many = vec![small; BLOCK_TRANSACTIONS_MAX + 1];
    let hashes = hashes_of(&many);
    assert_eq!(
        wsv.execute(height, now, &many, &hashes)
            .map(|executed| executed.outcomes),
        Err(ApplyError::TooManyTransactions {
            height,
            count: BLOCK_TRANSACTIONS_MAX + 1
        })
    );
    // At the limit the block executes (the copies after the first are replays).
    assert!(wsv.execute(height, now, &many[1..], &hashes[1..]).is_ok());

    let call = |byte: u8| Instruction::CallContract {
        contract: name("plasma"),
        call: vec![byte; CONTRACT_CALL_BYTES_MAX],
    };
    let large = tx(&wsv, ALICE, &alice_key(), vec![call(1), call(2), call(3)], 1);
    let each = large.hashes().encoded_bytes;
    let fitting = BLOCK_TRANSACTION_BYTES_MAX / each;
    let heavy = vec![large; fitting + 1];
    let hashes = hashes_of(&heavy);
    assert_eq!(
        wsv.execute(height, now, &heavy, &hashes)
            .map(|executed| executed.outcomes),
        Err(ApplyError::TooManyBytes {
            height,
            bytes: each * (fitting + 1)
        })
    );
    let (block, hashes) = make_block(&wsv, now, heavy[..fitting].to_vec()).expect("a block at the byte limit executes");
    wsv.apply_block(&block, &hashes)
        .expect("a block at the byte limit applies");
    assert_eq!(wsv.height(), height);
}
