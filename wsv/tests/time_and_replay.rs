//! Expiry, transactions from the future, and replay protection (keyed on the payload hash).

mod common;

use common::*;
use kasane_model::instruction::Instruction;
use kasane_model::transaction::{StatelessError, FUTURE_SKEW_MS_MAX, TTL_MS_MAX};
use kasane_model::{SignedTransaction, TransactionPayload};
use kasane_wsv::{RejectionReason, TransactionOutcome, Wsv};

fn pay(amount: u128) -> Vec<Instruction> {
    vec![transfer(coin(ALICE), BOB, amount)]
}

fn alice_tx(payload: TransactionPayload) -> SignedTransaction {
    SignedTransaction::sign(payload, &[&alice_key()])
}

/// The standard world a while after genesis, so that genesis replay entries have expired
/// and every entry counted in a test is the test's own.
fn settled_wsv() -> Wsv {
    let mut wsv = standard_wsv();
    assert!(wsv.replay_entries() > 0, "the genesis transactions are remembered");
    apply_at(&mut wsv, T0 + TTL_MS_MAX + 1, vec![]).expect("empty block applies");
    assert_eq!(wsv.replay_entries(), 0);
    wsv
}

#[test]
fn expired_transactions_are_rejected() {
    let mut wsv = standard_wsv();
    let now = next_time(&wsv);
    // Expires exactly at block time: still valid.
    let at_expiry = alice_tx(payload(ALICE, pay(1), now - TTL, 0));
    // Expired one millisecond before the block.
    let expired = alice_tx(payload(ALICE, pay(2), now - TTL - 1, 0));
    let outcomes = apply_at(&mut wsv, now, vec![at_expiry, expired])
        .expect("applies")
        .outcomes;
    assert_eq!(outcomes[0], TransactionOutcome::Committed);
    assert_eq!(
        outcomes[1],
        TransactionOutcome::Rejected(RejectionReason::Expired {
            expires_at_ms: now - 1,
            block_time_ms: now
        })
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 1);
}

#[test]
fn transactions_from_the_future_are_rejected() {
    let mut wsv = standard_wsv();
    let now = next_time(&wsv);
    let at_limit = alice_tx(payload(ALICE, pay(1), now + FUTURE_SKEW_MS_MAX, 0));
    let beyond = alice_tx(payload(ALICE, pay(2), now + FUTURE_SKEW_MS_MAX + 1, 0));
    let outcomes = apply_at(&mut wsv, now, vec![at_limit, beyond])
        .expect("applies")
        .outcomes;
    assert_eq!(outcomes[0], TransactionOutcome::Committed);
    assert_eq!(
        outcomes[1],
        TransactionOutcome::Rejected(RejectionReason::FromTheFuture {
            created_at_ms: now + FUTURE_SKEW_MS_MAX + 1,
            block_time_ms: now,
        })
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 1);
}

#[test]
fn ttl_over_the_limit_is_a_stateless_rejection() {
    let mut wsv = standard_wsv();
    let mut long = payload(ALICE, pay(1), next_time(&wsv), 0);
    long.ttl_ms = TTL_MS_MAX + 1;
    let outcome = apply_one(&mut wsv, alice_tx(long));
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Stateless(StatelessError::TtlTooLong {
            ttl_ms: TTL_MS_MAX + 1
        }))
    );
    let mut other_chain = payload(ALICE, pay(1), next_time(&wsv), 0);
    other_chain.chain = "other-chain".parse().expect("valid name");
    let outcome = apply_one(&mut wsv, alice_tx(other_chain));
    assert!(matches!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Stateless(StatelessError::WrongChain { .. }))
    ));
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS);
}

#[test]
fn same_payload_twice_in_one_block_is_replayed() {
    let mut wsv = standard_wsv();
    let transaction = tx(&wsv, ALICE, &alice_key(), pay(10), 0);
    let outcomes = apply(&mut wsv, vec![transaction.clone(), transaction]);
    assert_eq!(
        outcomes,
        vec![
            TransactionOutcome::Committed,
            TransactionOutcome::Rejected(RejectionReason::Replayed)
        ]
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 10);
}

#[test]
fn same_payload_in_a_later_block_is_replayed_until_it_expires() {
    let mut wsv = settled_wsv();
    let created = next_time(&wsv);
    let transaction = alice_tx(payload(ALICE, pay(10), created, 0));
    assert_eq!(apply_one(&mut wsv, transaction.clone()), TransactionOutcome::Committed);
    assert_eq!(wsv.replay_entries(), 1);
    // Later blocks within the TTL, the last one exactly at expiry.
    for time in [created + 1, created + TTL / 2, created + TTL] {
        let outcomes = apply_at(&mut wsv, time, vec![transaction.clone()])
            .expect("applies")
            .outcomes;
        assert_eq!(outcomes, vec![TransactionOutcome::Rejected(RejectionReason::Replayed)]);
    }
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 10);
    assert_eq!(wsv.replay_entries(), 1);
    // A block one millisecond after expiry prunes the entry ...
    apply_at(&mut wsv, created + TTL + 1, vec![]).expect("applies");
    assert_eq!(wsv.replay_entries(), 0);
    // ... and the payload is then refused as expired rather than replayed.
    let outcomes = apply_at(&mut wsv, created + TTL + 2, vec![transaction])
        .expect("applies")
        .outcomes;
    assert_eq!(
        outcomes,
        vec![TransactionOutcome::Rejected(RejectionReason::Expired {
            expires_at_ms: created + TTL,
            block_time_ms: created + TTL + 2
        })]
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 10);
}

#[test]
fn replay_is_keyed_on_the_payload_not_the_signatures() {
    let mut wsv = standard_wsv();
    let second = key(11);
    // alice gets a second signatory; one signature still suffices.
    let add = vec![Instruction::AddSignatory {
        account: account(ALICE),
        key: second.public_key(),
    }];
    assert_eq!(run(&mut wsv, ALICE, &alice_key(), add), TransactionOutcome::Committed);
    let payload = payload(ALICE, pay(10), next_time(&wsv), 0);
    let by_first = SignedTransaction::sign(payload.clone(), &[&alice_key()]);
    let by_second = SignedTransaction::sign(payload.clone(), &[&second]);
    let by_both = SignedTransaction::sign(payload, &[&alice_key(), &second]);
    assert_ne!(by_first.hash(), by_second.hash());
    assert_ne!(by_first.hash(), by_both.hash());
    assert_eq!(by_first.payload.hash(), by_both.payload.hash());
    // In one block ...
    let outcomes = apply(&mut wsv, vec![by_first, by_second.clone()]);
    assert_eq!(
        outcomes,
        vec![
            TransactionOutcome::Committed,
            TransactionOutcome::Rejected(RejectionReason::Replayed)
        ]
    );
    // ... and in later blocks.
    assert_eq!(
        apply_one(&mut wsv, by_both),
        TransactionOutcome::Rejected(RejectionReason::Replayed)
    );
    assert_eq!(
        apply_one(&mut wsv, by_second),
        TransactionOutcome::Rejected(RejectionReason::Replayed)
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 10);
}

#[test]
fn different_nonce_is_a_different_payload() {
    let mut wsv = standard_wsv();
    let first = tx(&wsv, ALICE, &alice_key(), pay(10), 0);
    let second = tx(&wsv, ALICE, &alice_key(), pay(10), 1);
    let outcomes = apply(&mut wsv, vec![first, second]);
    assert_eq!(
        outcomes,
        vec![TransactionOutcome::Committed, TransactionOutcome::Committed]
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 20);
}

#[test]
fn a_rejected_payload_is_remembered_too() {
    // A rejected transaction stays in its block, so including it again is a replay, not a retry.
    let mut wsv = standard_wsv();
    let too_much = tx(&wsv, ALICE, &alice_key(), pay(ALICE_COINS + 1), 0);
    let outcome = apply_one(&mut wsv, too_much.clone());
    assert!(matches!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Instruction { index: 0, .. })
    ));
    assert_eq!(
        apply_one(&mut wsv, too_much),
        TransactionOutcome::Rejected(RejectionReason::Replayed)
    );
}

#[test]
fn replay_entries_are_pruned_as_they_expire() {
    let mut wsv = settled_wsv();
    let start = next_time(&wsv);
    let short = |nonce| {
        let mut payload = payload(ALICE, pay(1), start, nonce);
        payload.ttl_ms = 1_000;
        alice_tx(payload)
    };
    let long = alice_tx(payload(ALICE, pay(1), start, 100));
    apply_at(&mut wsv, start, vec![short(0), short(1), long]).expect("applies");
    apply_at(&mut wsv, start + 10, vec![short(2)]).expect("applies");
    assert_eq!(wsv.replay_entries(), 4);
    // The first block also holds a long-lived entry; the short ones go when they expire all the
    // same, in both blocks (before version 2 of the guard the long one held both blocks whole).
    apply_at(&mut wsv, start + 2_000, vec![]).expect("applies");
    assert_eq!(wsv.replay_entries(), 1);
    apply_at(&mut wsv, start + TTL + 1, vec![]).expect("applies");
    assert_eq!(wsv.replay_entries(), 0);
}

/// A transaction that can never be valid may claim an expiry far in the future. It is rejected,
/// and it must not keep its block (nor every block after it) in replay memory forever.
#[test]
fn invalid_expiry_claims_do_not_stop_pruning() {
    for (label, ttl_ms, created_offset) in [
        ("time-to-live over the limit", u64::MAX, 0),
        ("created far in the future", TTL, u64::MAX / 2),
    ] {
        let mut wsv = settled_wsv();
        let start = next_time(&wsv);
        let mut bad = payload(ALICE, pay(1), start.saturating_add(created_offset), 0);
        bad.ttl_ms = ttl_ms;
        let good = alice_tx(payload(ALICE, pay(1), start, 1));
        let outcomes = apply_at(&mut wsv, start, vec![alice_tx(bad), good])
            .expect("applies")
            .outcomes;
        assert!(
            matches!(outcomes[0], TransactionOutcome::Rejected(_)),
            "{label}: {outcomes:?}"
        );
        assert_eq!(outcomes[1], TransactionOutcome::Committed, "{label}");
        let later = start + TTL_MS_MAX + FUTURE_SKEW_MS_MAX + 1;
        let next = alice_tx(payload(ALICE, pay(1), later, 2));
        apply_at(&mut wsv, later, vec![next]).expect("applies");
        apply_at(&mut wsv, later + TTL_MS_MAX + FUTURE_SKEW_MS_MAX + 1, vec![]).expect("applies");
        assert_eq!(wsv.replay_entries(), 0, "{label}: replay memory was never pruned");
    }
}
