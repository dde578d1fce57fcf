//! Transfers and mints: balances, the errors of bad transfers, overflow, and the atomicity of a
//! transaction within its block.

mod common;

use common::*;
use kasane_model::ids::{DomainId, Name};
use kasane_model::instruction::Instruction;
use kasane_wsv::{InstructionError, TransactionOutcome};

fn total_supply(wsv: &kasane_wsv::Wsv, definition_text: &str) -> u128 {
    wsv.asset_definition(&definition(definition_text))
        .expect("definition exists")
        .total_supply
}

#[test]
fn transfer_moves_balances_and_keeps_supply() {
    let mut wsv = standard_wsv();
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS);
    assert_eq!(total_supply(&wsv, "coin#wonderland"), ALICE_COINS + BOB_COINS);
    let outcome = run(&mut wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, 300)]);
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 300);
    assert_eq!(wsv.balance(&asset("coin#wonderland", BOB)), BOB_COINS + 300);
    assert_eq!(total_supply(&wsv, "coin#wonderland"), ALICE_COINS + BOB_COINS);
    assert_eq!(wsv.height(), 2);
}

#[test]
fn transfer_to_another_domain_creates_the_holding() {
    let mut wsv = standard_wsv();
    let carol_wonder_coin = asset("coin#wonderland", CAROL);
    assert_eq!(wsv.account(&account(CAROL)).expect("carol").held_asset_count, 1);
    let outcome = run(&mut wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), CAROL, 10)]);
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&carol_wonder_coin), 10);
    assert_eq!(wsv.account(&account(CAROL)).expect("carol").held_asset_count, 2);
}

#[test]
fn bad_transfers_are_rejected_with_the_right_error() {
    let mut wsv = standard_wsv();
    let before = snapshot(&wsv);
    let alice = alice_key();
    let cases = vec![
        (
            transfer(coin(ALICE), BOB, ALICE_COINS + 1),
            InstructionError::InsufficientBalance {
                asset: coin(ALICE),
                balance: ALICE_COINS,
                amount: ALICE_COINS + 1,
            },
        ),
        (
            transfer(coin(ALICE), BOB, u128::MAX),
            InstructionError::InsufficientBalance {
                asset: coin(ALICE),
                balance: ALICE_COINS,
                amount: u128::MAX,
            },
        ),
        (transfer(coin(ALICE), BOB, 0), InstructionError::ZeroAmount),
        (
            transfer(coin(ALICE), "nobody@wonderland", 1),
            InstructionError::NoSuchAccount(account("nobody@wonderland")),
        ),
        (
            transfer(coin(ALICE), "bob@nowhere", 1),
            InstructionError::NoSuchAccount(account("bob@nowhere")),
        ),
        (
            transfer(asset("gold#wonderland", ALICE), BOB, 1),
            InstructionError::NoSuchAssetDefinition(definition("gold#wonderland")),
        ),
        // alice holds no coin#looking_glass.
        (
            transfer(asset("coin#looking_glass", ALICE), CAROL, 1),
            InstructionError::InsufficientBalance {
                asset: asset("coin#looking_glass", ALICE),
                balance: 0,
                amount: 1,
            },
        ),
    ];
    let count = cases.len();
    let (transactions, errors): (Vec<_>, Vec<_>) = cases
        .into_iter()
        .enumerate()
        .map(|(nonce, (instruction, error))| (tx(&wsv, ALICE, &alice, vec![instruction], nonce as u32), error))
        .unzip();
    let outcomes = apply(&mut wsv, transactions);
    assert_eq!(outcomes.len(), count);
    for (outcome, error) in outcomes.iter().zip(errors) {
        assert_instruction_error(outcome, 0, error);
    }
    let after = snapshot(&wsv);
    assert_eq!(after.balances, before.balances);
    // A block of rejected transactions writes nothing, but it is still a block.
    assert_eq!(after.height, before.height + 1);
    assert_eq!(total_supply(&wsv, "coin#wonderland"), ALICE_COINS + BOB_COINS);
}

#[test]
fn transfer_to_self_keeps_the_balance() {
    let mut wsv = standard_wsv();
    let transactions = vec![
        tx(&wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), ALICE, 1)], 0),
        // The whole balance: debited to zero, then credited back.
        tx(
            &wsv,
            ALICE,
            &alice_key(),
            vec![transfer(coin(ALICE), ALICE, ALICE_COINS)],
            1,
        ),
        tx(
            &wsv,
            ALICE,
            &alice_key(),
            vec![transfer(coin(ALICE), ALICE, ALICE_COINS + 1)],
            2,
        ),
    ];
    let outcomes = apply(&mut wsv, transactions);
    assert_eq!(outcomes[0], TransactionOutcome::Committed);
    assert_eq!(outcomes[1], TransactionOutcome::Committed);
    assert_instruction_error(
        &outcomes[2],
        0,
        InstructionError::InsufficientBalance {
            asset: coin(ALICE),
            balance: ALICE_COINS,
            amount: ALICE_COINS + 1,
        },
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS);
    assert_eq!(wsv.account(&account(ALICE)).expect("alice").held_asset_count, 1);
    assert_eq!(
        wsv.balances(&account(ALICE), Default::default()),
        vec![(definition("coin#wonderland"), ALICE_COINS)]
    );
}

#[test]
fn mint_overflow_is_rejected() {
    let mut wsv = standard_wsv();
    let genesis = genesis_key();
    let supply = ALICE_COINS + BOB_COINS;
    let outcome = run(
        &mut wsv,
        "genesis@genesis",
        &genesis,
        vec![Instruction::Mint {
            asset: coin(BOB),
            amount: u128::MAX - supply + 1,
        }],
    );
    assert_instruction_error(&outcome, 0, InstructionError::Overflow);
    assert_eq!(total_supply(&wsv, "coin#wonderland"), supply);
    // Up to the limit is fine; one more is not, whoever would receive it.
    let outcome = run(
        &mut wsv,
        "genesis@genesis",
        &genesis,
        vec![Instruction::Mint {
            asset: coin(BOB),
            amount: u128::MAX - supply,
        }],
    );
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert_eq!(total_supply(&wsv, "coin#wonderland"), u128::MAX);
    assert_eq!(wsv.balance(&coin(BOB)), u128::MAX - ALICE_COINS);
    let outcome = run(
        &mut wsv,
        "genesis@genesis",
        &genesis,
        vec![Instruction::Mint {
            asset: coin(ALICE),
            amount: 1,
        }],
    );
    assert_instruction_error(&outcome, 0, InstructionError::Overflow);
    // Balances can still move at the maximum supply.
    let outcome = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![transfer(coin(ALICE), BOB, ALICE_COINS)],
    );
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&coin(BOB)), u128::MAX);
    // And burning brings the supply down with the balance.
    let outcome = run(
        &mut wsv,
        BOB,
        &bob_key(),
        vec![Instruction::Burn {
            asset: coin(BOB),
            amount: u128::MAX,
        }],
    );
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert_eq!(total_supply(&wsv, "coin#wonderland"), 0);
    assert!(wsv.balances(&account(BOB), Default::default()).is_empty());
}

#[test]
fn failing_second_instruction_undoes_the_first() {
    let mut wsv = standard_wsv();
    let alice = alice_key();
    let good_before = tx(&wsv, BOB, &bob_key(), vec![transfer(coin(BOB), ALICE, 5)], 0);
    let failing = tx(
        &wsv,
        ALICE,
        &alice,
        vec![transfer(coin(ALICE), BOB, 100), transfer(coin(ALICE), BOB, ALICE_COINS)],
        1,
    );
    let good_after = tx(&wsv, ALICE, &alice, vec![transfer(coin(ALICE), CAROL, 7)], 2);
    let time = next_time(&wsv);

    // The block without the failing transaction, executed but not committed.
    let without_hashes = hashes_of(&[good_before.clone(), good_after.clone()]);
    let without = wsv
        .execute(
            wsv.height() + 1,
            time,
            &[good_before.clone(), good_after.clone()],
            &without_hashes,
        )
        .expect("executes");

    let executed = apply_at(&mut wsv, time, vec![good_before, failing, good_after]).expect("applies");
    assert_eq!(executed.outcomes[0], TransactionOutcome::Committed);
    assert_instruction_error(
        &executed.outcomes[1],
        1,
        InstructionError::InsufficientBalance {
            asset: coin(ALICE),
            balance: ALICE_COINS + 5 - 100,
            amount: ALICE_COINS,
        },
    );
    assert_eq!(executed.outcomes[2], TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS + 5 - 7);
    assert_eq!(wsv.balance(&coin(BOB)), BOB_COINS - 5);
    assert_eq!(wsv.balance(&asset("coin#wonderland", CAROL)), 7);
    // The commitment is over the block's writes, and the rejected transaction wrote nothing.
    assert_eq!(executed.state_commitment, without.state_commitment);
    assert_eq!(executed.rejected_count(), 1);
    assert_eq!(without.rejected_count(), 0);
}

#[test]
fn undo_restores_writes_of_earlier_transactions_in_the_block() {
    let mut wsv = standard_wsv();
    let alice = alice_key();
    let newland = DomainId::new("newland").expect("valid");
    let default = Name::new("default").expect("valid");
    let transactions = vec![
        // Committed: alice's and bob's balances are now written in the block.
        tx(&wsv, ALICE, &alice, vec![transfer(coin(ALICE), BOB, 100)], 0),
        // Writes the same keys twice, registers a domain, then fails.
        tx(
            &wsv,
            ALICE,
            &alice,
            vec![
                transfer(coin(ALICE), BOB, 10),
                transfer(coin(ALICE), BOB, 10),
                Instruction::RegisterDomain {
                    domain: newland.clone(),
                    validator: default.clone(),
                },
                transfer(coin(ALICE), "nobody@wonderland", 1),
            ],
            1,
        ),
        // The domain does not exist, so it can be registered again.
        tx(
            &wsv,
            BOB,
            &bob_key(),
            vec![Instruction::RegisterDomain {
                domain: newland.clone(),
                validator: default,
            }],
            2,
        ),
    ];
    let outcomes = apply(&mut wsv, transactions);
    assert_eq!(outcomes[0], TransactionOutcome::Committed);
    assert_instruction_error(
        &outcomes[1],
        3,
        InstructionError::NoSuchAccount(account("nobody@wonderland")),
    );
    assert_eq!(outcomes[2], TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 100);
    assert_eq!(wsv.balance(&coin(BOB)), BOB_COINS + 100);
    assert_eq!(wsv.domain(&newland).expect("registered").owner, account(BOB));
}

#[test]
fn rejected_first_transfer_of_a_new_holding_leaves_no_holding() {
    // Crediting a new holder and then failing must also undo the holder's held-asset count.
    let mut wsv = standard_wsv();
    let outcome = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![
            transfer(coin(ALICE), CAROL, 1),
            Instruction::Burn {
                asset: coin(ALICE),
                amount: ALICE_COINS,
            },
        ],
    );
    assert_instruction_error(
        &outcome,
        1,
        InstructionError::InsufficientBalance {
            asset: coin(ALICE),
            balance: ALICE_COINS - 1,
            amount: ALICE_COINS,
        },
    );
    assert_eq!(wsv.account(&account(CAROL)).expect("carol").held_asset_count, 1);
    assert_eq!(wsv.balances(&account(CAROL), Default::default()).len(), 1);
}
