//! Queries: balances with pagination, recent transactions, domains.

mod common;

use common::*;
use kasane_model::ids::DomainId;
use kasane_model::instruction::Instruction;
use kasane_model::SignedTransaction;
use kasane_wsv::query::PAGE_LIMIT_MAX;
use kasane_wsv::state::RECENT_TRANSACTIONS_PER_ACCOUNT;
use kasane_wsv::{Page, RejectionReason, TransactionOutcome};

#[test]
fn balances_list_non_zero_holdings_in_order() {
    let mut wsv = standard_wsv();
    assert_eq!(
        wsv.balances(&account(ALICE), Page::default()),
        vec![(definition("coin#wonderland"), ALICE_COINS)]
    );
    // carol sends alice some coin#looking_glass: alice now holds two assets.
    assert_eq!(
        run(&mut wsv, CAROL, &carol_key(), vec![transfer(coin(CAROL), ALICE, 20)]),
        TransactionOutcome::Committed
    );
    let expected = vec![
        (definition("coin#looking_glass"), 20),
        (definition("coin#wonderland"), ALICE_COINS),
    ];
    assert_eq!(wsv.balances(&account(ALICE), Page::default()), expected);
    assert_eq!(
        wsv.balances(&account(ALICE), Page { offset: 1, limit: 10 }),
        expected[1..].to_vec()
    );
    assert_eq!(
        wsv.balances(&account(ALICE), Page { offset: 0, limit: 1 }),
        expected[..1].to_vec()
    );
    assert!(wsv.balances(&account(ALICE), Page { offset: 2, limit: 10 }).is_empty());
    assert!(wsv.balances(&account(ALICE), Page { offset: 0, limit: 0 }).is_empty());
    assert_eq!(
        wsv.balances(&account(CAROL), Page::default()),
        vec![(definition("coin#looking_glass"), CAROL_COINS - 20)]
    );
    assert!(wsv.balances(&account("nobody@wonderland"), Page::default()).is_empty());
}

#[test]
fn an_emptied_holding_is_no_longer_listed() {
    let mut wsv = standard_wsv();
    let outcome = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![transfer(coin(ALICE), BOB, ALICE_COINS)],
    );
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert!(wsv.balances(&account(ALICE), Page::default()).is_empty());
    assert_eq!(wsv.account(&account(ALICE)).expect("alice").held_asset_count, 0);
    assert_eq!(wsv.balance(&coin(ALICE)), 0);
    assert_eq!(
        wsv.balances(&account(BOB), Page::default()),
        vec![(definition("coin#wonderland"), ALICE_COINS + BOB_COINS)]
    );
    // Receiving again lists it again; emptying by burning unlists it.
    assert_eq!(
        run(&mut wsv, BOB, &bob_key(), vec![transfer(coin(BOB), ALICE, 5)]),
        TransactionOutcome::Committed
    );
    assert_eq!(
        wsv.balances(&account(ALICE), Page::default()),
        vec![(definition("coin#wonderland"), 5)]
    );
    let burn = vec![Instruction::Burn {
        asset: coin(ALICE),
        amount: 5,
    }];
    assert_eq!(run(&mut wsv, ALICE, &alice_key(), burn), TransactionOutcome::Committed);
    assert!(wsv.balances(&account(ALICE), Page::default()).is_empty());
}

#[test]
fn a_holding_emptied_and_refilled_in_one_block_stays_listed() {
    let mut wsv = standard_wsv();
    let transactions = vec![
        tx(
            &wsv,
            ALICE,
            &alice_key(),
            vec![transfer(coin(ALICE), BOB, ALICE_COINS)],
            0,
        ),
        tx(&wsv, BOB, &bob_key(), vec![transfer(coin(BOB), ALICE, 1)], 0),
    ];
    let outcomes = apply(&mut wsv, transactions);
    assert_eq!(
        outcomes,
        vec![TransactionOutcome::Committed, TransactionOutcome::Committed]
    );
    assert_eq!(
        wsv.balances(&account(ALICE), Page::default()),
        vec![(definition("coin#wonderland"), 1)]
    );
    assert_eq!(wsv.account(&account(ALICE)).expect("alice").held_asset_count, 1);
}

#[test]
fn recent_transactions_are_newest_first() {
    let mut wsv = standard_wsv();
    assert!(wsv.recent_transactions(&account(ALICE)).is_empty());
    let mut sent = Vec::new();
    for amount in 1..=3u128 {
        let transaction = tx(&wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, amount)], 0);
        sent.push((transaction.hash(), wsv.height() + 1));
        apply_one(&mut wsv, transaction);
    }
    let recent: Vec<_> = wsv
        .recent_transactions(&account(ALICE))
        .iter()
        .map(|entry| (entry.hash, entry.height))
        .collect();
    sent.reverse();
    assert_eq!(recent, sent);
    // Transactions are listed under their creator only.
    assert!(wsv.recent_transactions(&account(BOB)).is_empty());
}

#[test]
fn recent_transactions_are_bounded() {
    let mut wsv = standard_wsv();
    let count = RECENT_TRANSACTIONS_PER_ACCOUNT + 8;
    // Half in one block, half in the next, so the bound holds within and across blocks.
    let make = |wsv: &kasane_wsv::Wsv, range: std::ops::Range<usize>| -> Vec<SignedTransaction> {
        range
            .map(|nonce| {
                tx(
                    wsv,
                    ALICE,
                    &alice_key(),
                    vec![transfer(coin(ALICE), BOB, 1)],
                    nonce as u32,
                )
            })
            .collect()
    };
    let first = make(&wsv, 0..count / 2);
    apply(&mut wsv, first.clone());
    let second = make(&wsv, count / 2..count);
    apply(&mut wsv, second.clone());
    let all: Vec<_> = first.iter().chain(&second).map(SignedTransaction::hash).collect();
    let recent: Vec<_> = wsv
        .recent_transactions(&account(ALICE))
        .iter()
        .map(|entry| entry.hash)
        .collect();
    assert_eq!(recent.len(), RECENT_TRANSACTIONS_PER_ACCOUNT);
    let expected: Vec<_> = all
        .iter()
        .rev()
        .take(RECENT_TRANSACTIONS_PER_ACCOUNT)
        .copied()
        .collect();
    assert_eq!(recent, expected);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - count as u128);
}

#[test]
fn replays_are_not_listed_and_removed_accounts_are_forgotten() {
    let mut wsv = standard_wsv();
    let transaction = tx(&wsv, BOB, &bob_key(), vec![transfer(coin(BOB), ALICE, BOB_COINS)], 0);
    let outcomes = apply(&mut wsv, vec![transaction.clone(), transaction.clone()]);
    assert_eq!(outcomes[1], TransactionOutcome::Rejected(RejectionReason::Replayed));
    assert_eq!(wsv.recent_transactions(&account(BOB)).len(), 1);
    let remove = vec![Instruction::UnregisterAccount { account: account(BOB) }];
    assert_eq!(run(&mut wsv, BOB, &bob_key(), remove), TransactionOutcome::Committed);
    assert!(wsv.recent_transactions(&account(BOB)).is_empty());
}

#[test]
fn unknown_creators_are_not_remembered() {
    // Anyone can put a transaction by a made-up creator in a block; it is rejected, and the
    // node must not keep a list of recent transactions for an account that does not exist.
    let mut wsv = standard_wsv();
    let ghosts: Vec<SignedTransaction> = (0..5)
        .map(|index| {
            tx(
                &wsv,
                &format!("ghost{index}@wonderland"),
                &alice_key(),
                vec![transfer(coin(ALICE), BOB, 1)],
                0,
            )
        })
        .collect();
    let outcomes = apply(&mut wsv, ghosts);
    for (index, outcome) in outcomes.iter().enumerate() {
        assert_eq!(
            outcome,
            &TransactionOutcome::Rejected(RejectionReason::NoSuchCreator(account(&format!(
                "ghost{index}@wonderland"
            ))))
        );
        assert!(wsv
            .recent_transactions(&account(&format!("ghost{index}@wonderland")))
            .is_empty());
    }
}

#[test]
fn domains_are_listed_in_order_with_pages() {
    let mut wsv = standard_wsv();
    let register = |name: &str| Instruction::RegisterDomain {
        domain: DomainId::new(name).expect("valid"),
        validator: "default".parse().expect("valid"),
    };
    assert_eq!(
        run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![register("aardvark"), register("zebra")]
        ),
        TransactionOutcome::Committed
    );
    let names: Vec<String> = wsv.domains(Page::default()).iter().map(ToString::to_string).collect();
    assert_eq!(names, ["aardvark", "genesis", "looking_glass", "wonderland", "zebra"]);
    let second_page: Vec<String> = wsv
        .domains(Page { offset: 2, limit: 2 })
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(second_page, ["looking_glass", "wonderland"]);
    assert_eq!(
        wsv.domains(Page {
            offset: 0,
            limit: usize::MAX
        })
        .len(),
        5
    );
}

#[test]
fn pages_are_capped_at_the_maximum() {
    let mut wsv = standard_wsv();
    let per_transaction = kasane_model::transaction::INSTRUCTIONS_MAX;
    let transactions: Vec<SignedTransaction> = (0..PAGE_LIMIT_MAX.div_ceil(per_transaction))
        .map(|chunk| {
            let instructions = (0..per_transaction)
                .map(|index| Instruction::RegisterDomain {
                    domain: DomainId::new(&format!("d{chunk:03}-{index:03}")).expect("valid"),
                    validator: "default".parse().expect("valid"),
                })
                .collect();
            tx(&wsv, ALICE, &alice_key(), instructions, chunk as u32)
        })
        .collect();
    let outcomes = apply(&mut wsv, transactions);
    assert!(outcomes.iter().all(|outcome| *outcome == TransactionOutcome::Committed));
    let total = wsv.world().domain_count();
    assert!(total > PAGE_LIMIT_MAX);
    assert_eq!(
        wsv.domains(Page {
            offset: 0,
            limit: usize::MAX
        })
        .len(),
        PAGE_LIMIT_MAX
    );
    assert_eq!(
        wsv.domains(Page {
            offset: PAGE_LIMIT_MAX,
            limit: usize::MAX
        })
        .len(),
        total - PAGE_LIMIT_MAX
    );
    assert_eq!(
        wsv.domains(Page {
            offset: usize::MAX,
            limit: usize::MAX
        }),
        vec![]
    );
}
