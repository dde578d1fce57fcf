//! Contracts (wsv/src/contract.rs): a call's writes land in the contract's own section and are
//! undone with its transaction; assets a contract locks leave the caller's balance, stay in the
//! total supply, and come out only up to what was locked.

mod common;

use std::sync::Arc;

use common::*;
use kasane_model::instruction::{Instruction, CONTRACT_CALL_BYTES_MAX};
use kasane_wsv::{
    Contract, ContractContext, ContractResult, InstructionError, PluginRegistry, TransactionOutcome, Wsv,
};

/// A toy contract: `[0]` counts calls under key "n"; `[1]` counts, then refuses; `[2, a]` locks
/// `a` of coin#wonderland from the caller; `[3, a]` releases `a` to the caller.
struct Counter;

fn coin_definition() -> kasane_model::ids::AssetDefinitionId {
    definition("coin#wonderland")
}

impl Contract for Counter {
    fn call(&self, context: &mut ContractContext<'_, '_>, call: &[u8]) -> ContractResult {
        match call {
            [0] | [1] => {
                let count = context.get(b"n").map_or(0, |bytes| bytes[0]) + 1;
                context.put(b"n", vec![count]);
                if call[0] == 1 {
                    return Err("counted, then refused".to_string());
                }
                Ok(())
            }
            [2, amount] => context.lock_from_caller(&coin_definition(), u128::from(*amount)),
            [3, amount] => {
                let caller = context.caller().clone();
                context.release(&coin_definition(), &caller, u128::from(*amount))
            }
            _ => Err("unknown call".to_string()),
        }
    }
}

fn counter_wsv() -> Wsv {
    let mut registry = PluginRegistry::builtin();
    registry.register_contract("counter", Arc::new(Counter));
    build(&standard_builder(), registry)
}

fn call(bytes: &[u8]) -> Instruction {
    Instruction::CallContract {
        contract: name("counter"),
        call: bytes.to_vec(),
    }
}

fn count(wsv: &Wsv) -> Option<u8> {
    wsv.world().store_value(&name("counter"), b"n").map(|bytes| bytes[0])
}

#[track_caller]
fn assert_contract_refused(outcome: &TransactionOutcome, index: usize, reason: &str) {
    assert_instruction_error(
        outcome,
        index,
        InstructionError::Contract {
            contract: name("counter"),
            reason: reason.to_string(),
        },
    );
}

#[test]
fn a_refused_call_leaves_no_write_and_the_commitment_covers_the_section() {
    let mut wsv = counter_wsv();
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![call(&[0])]),
        TransactionOutcome::Committed
    );
    assert_eq!(count(&wsv), Some(1));
    // The second instruction fails: the first one's write is undone too.
    let outcome = run(&mut wsv, ALICE, &alice_key(), vec![call(&[0]), call(&[1])]);
    assert_contract_refused(&outcome, 1, "counted, then refused");
    assert_eq!(count(&wsv), Some(1));

    // Two worlds that differ only in the section have different commitments.
    let mut other = counter_wsv();
    let mut again = counter_wsv();
    let time = next_time(&other);
    let first = tx(&other, ALICE, &alice_key(), vec![call(&[0])], 1);
    let second = tx(&other, ALICE, &alice_key(), vec![call(&[0]), call(&[0])], 1);
    apply_at(&mut other, time, vec![first]).expect("applies");
    apply_at(&mut again, time, vec![second]).expect("applies");
    assert_eq!(count(&other), Some(1));
    assert_eq!(count(&again), Some(2));
    assert_ne!(other.state_commitment(), again.state_commitment());
}

#[test]
fn locked_assets_leave_the_balance_stay_in_supply_and_come_out_only_up_to_the_lock() {
    let mut wsv = counter_wsv();
    let supply = |wsv: &Wsv| {
        wsv.world()
            .asset_definition(&coin_definition())
            .expect("coin")
            .total_supply
    };
    let before = supply(&wsv);
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![call(&[2, 40])]),
        TransactionOutcome::Committed
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 40);
    assert_eq!(wsv.world().locked(&name("counter"), &coin_definition()), 40);
    assert_eq!(supply(&wsv), before, "locked coins are still in circulation");

    let outcome = run(&mut wsv, BOB, &bob_key(), vec![call(&[3, 41])]);
    assert_contract_refused(
        &outcome,
        0,
        "contract counter holds 40 of coin#wonderland, less than 41",
    );
    assert_eq!(
        run(&mut wsv, BOB, &bob_key(), vec![call(&[3, 30])]),
        TransactionOutcome::Committed
    );
    assert_eq!(wsv.balance(&coin(BOB)), BOB_COINS + 30);
    assert_eq!(wsv.world().locked(&name("counter"), &coin_definition()), 10);

    let outcome = run(&mut wsv, CAROL, &carol_key(), vec![call(&[2, 200])]);
    assert_contract_refused(
        &outcome,
        0,
        "asset coin#wonderland#carol@looking_glass holds 0, less than 200",
    );
}

#[test]
fn unknown_contracts_and_oversized_calls_are_refused() {
    let mut wsv = counter_wsv();
    let unknown = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![Instruction::CallContract {
            contract: name("nobody"),
            call: vec![0],
        }],
    );
    assert_instruction_error(&unknown, 0, InstructionError::UnknownContract(name("nobody")));
    let oversized = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![call(&vec![0; CONTRACT_CALL_BYTES_MAX + 1])],
    );
    assert_instruction_error(
        &oversized,
        0,
        InstructionError::LimitExceeded {
            what: "contract call bytes",
            count: CONTRACT_CALL_BYTES_MAX + 1,
            limit: CONTRACT_CALL_BYTES_MAX,
        },
    );
    assert_eq!(count(&wsv), None);
}
