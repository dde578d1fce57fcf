//! Opaque payloads (docs/PROTOCOL.md section 1.2): a chain whose genesis says so orders
//! unsigned opaque bytes, changes no state for them and still refuses a replay; every other chain
//! refuses them, and no block after genesis can change what a chain takes.

mod common;

use common::*;
use kasane_model::ids::Name;
use kasane_model::instruction::{Instruction, MetadataTarget};
use kasane_model::transaction::{Payloads, StatelessError};
use kasane_model::SignedTransaction;
use kasane_wsv::{
    InstructionError, PluginRegistry, RejectionReason, TransactionOutcome, Wsv, PAYLOADS_KEY, PAYLOADS_OPAQUE,
};

fn opaque_wsv() -> Wsv {
    let mut builder = standard_builder();
    builder.opaque_payloads();
    build(&builder, PluginRegistry::builtin())
}

/// Opaque bytes under a creator no chain registered, without a signature.
fn unsigned(wsv: &Wsv, nonce: u32) -> SignedTransaction {
    SignedTransaction {
        payload: payload(
            "nobody@nowhere",
            vec![Instruction::Opaque {
                bytes: vec![nonce as u8; 512],
            }],
            next_time(wsv),
            nonce,
        ),
        signatures: Vec::new(),
    }
}

#[test]
fn an_opaque_chain_orders_unsigned_bytes_once_and_changes_no_state() {
    let mut wsv = opaque_wsv();
    assert_eq!(wsv.payloads(), Payloads::Opaque);
    let before = snapshot(&wsv);
    let first = unsigned(&wsv, 1);
    let second = unsigned(&wsv, 2);
    let outcomes = apply(&mut wsv, vec![first.clone(), second]);
    assert_eq!(outcomes, vec![TransactionOutcome::Committed; 2]);
    let after = snapshot(&wsv);
    assert_eq!(after.balances, before.balances);
    assert_eq!(after.accounts, before.accounts);
    assert_eq!(after.replay_entries, before.replay_entries + 2);
    // Ordered once: the same payload again is a replay.
    assert_eq!(
        apply_one(&mut wsv, first),
        TransactionOutcome::Rejected(RejectionReason::Replayed)
    );
    // Signed transactions still work as on any chain.
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, 5)]),
        TransactionOutcome::Committed
    );
    assert_eq!(wsv.balance(&coin(BOB)), BOB_COINS + 5);
}

#[test]
fn a_chain_of_signed_payloads_refuses_opaque_ones_signed_or_not() {
    let mut wsv = standard_wsv();
    assert_eq!(wsv.payloads(), Payloads::Signed);
    let refused = TransactionOutcome::Rejected(RejectionReason::Stateless(StatelessError::OpaqueNotAccepted));
    let transaction = unsigned(&wsv, 1);
    assert_eq!(apply_one(&mut wsv, transaction), refused);
    let signed = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![Instruction::Opaque { bytes: vec![1; 8] }],
    );
    assert_eq!(signed, refused);
}

#[test]
fn no_block_after_genesis_changes_what_the_chain_takes() {
    let set = |value: &str| Instruction::SetKeyValue {
        target: MetadataTarget::Account(genesis_account()),
        key: Name::new(PAYLOADS_KEY).expect("name"),
        value: value.to_string(),
    };
    for (mut wsv, value) in [(standard_wsv(), PAYLOADS_OPAQUE), (opaque_wsv(), "signed")] {
        let payloads = wsv.payloads();
        let outcome = run(&mut wsv, GENESIS, &genesis_key(), vec![set(value)]);
        assert_instruction_error(
            &outcome,
            0,
            InstructionError::NotPermitted {
                authority: genesis_account(),
                action: format!("change the chain's {PAYLOADS_KEY} after genesis"),
            },
        );
        assert_eq!(wsv.payloads(), payloads);
    }
}
