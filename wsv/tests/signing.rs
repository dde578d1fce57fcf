//! Signing conditions: signatories, m-of-n, and who may change them.

mod common;

use common::*;
use kasane_model::instruction::{Instruction, Permission};
use kasane_model::transaction::StatelessError;
use kasane_model::{KeyPair, SignedTransaction};
use kasane_wsv::{InstructionError, RejectionReason, TransactionOutcome, Wsv};

/// alice with a second signatory (key 11) and a signing condition of 2.
fn alice_two_of_two() -> (Wsv, KeyPair) {
    let mut wsv = standard_wsv();
    let second = key(11);
    let outcome = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![
            Instruction::AddSignatory {
                account: account(ALICE),
                key: second.public_key(),
            },
            Instruction::SetSigningCondition {
                account: account(ALICE),
                required: 2,
            },
        ],
    );
    assert_eq!(outcome, TransactionOutcome::Committed);
    let alice = wsv.account(&account(ALICE)).expect("alice");
    assert_eq!(alice.signatures_required, 2);
    assert_eq!(alice.signatories.len(), 2);
    (wsv, second)
}

fn signed(
    wsv: &Wsv,
    signers: &[&KeyPair],
    instructions: Vec<kasane_model::instruction::Instruction>,
) -> SignedTransaction {
    SignedTransaction::sign(payload(ALICE, instructions, next_time(wsv), 0), signers)
}

#[test]
fn two_of_two_needs_both_signatures() {
    let (mut wsv, second) = alice_two_of_two();
    let first = alice_key();
    let pay = || vec![transfer(coin(ALICE), BOB, 1)];
    for signer in [&first, &second] {
        let outcome = run_signed(&mut wsv, ALICE, &[signer], pay());
        assert_eq!(
            outcome,
            TransactionOutcome::Rejected(RejectionReason::NotEnoughSignatures {
                account: account(ALICE),
                required: 2,
                found: 1
            })
        );
    }
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS);
    assert_eq!(
        run_signed(&mut wsv, ALICE, &[&first, &second], pay()),
        TransactionOutcome::Committed
    );
    // Order of signatures does not matter.
    assert_eq!(
        run_signed(&mut wsv, ALICE, &[&second, &first], pay()),
        TransactionOutcome::Committed
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 2);
}

#[test]
fn a_signature_by_a_non_signatory_is_rejected() {
    let (mut wsv, second) = alice_two_of_two();
    let stranger = key(99);
    let pay = || vec![transfer(coin(ALICE), BOB, 1)];
    // Enough signatures in number, one of them by an outsider.
    let outcome = run_signed(&mut wsv, ALICE, &[&alice_key(), &stranger], pay());
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::NotASignatory {
            account: account(ALICE),
            key: stranger.public_key()
        })
    );
    // An extra signature by an outsider on top of a satisfied condition is refused as well.
    let outcome = run_signed(&mut wsv, ALICE, &[&alice_key(), &second, &stranger], pay());
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::NotASignatory {
            account: account(ALICE),
            key: stranger.public_key()
        })
    );
    // bob's key does not sign for alice, even with a 1-of-1 account.
    let mut wsv = standard_wsv();
    let outcome = run_signed(&mut wsv, ALICE, &[&bob_key()], pay());
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::NotASignatory {
            account: account(ALICE),
            key: bob_key().public_key()
        })
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS);
}

#[test]
fn duplicate_signer_and_no_signature_are_stateless_rejections() {
    let (mut wsv, _) = alice_two_of_two();
    let first = alice_key();
    // The same key twice would count as two signatories if it were not refused first.
    let outcome = run_signed(&mut wsv, ALICE, &[&first, &first], vec![transfer(coin(ALICE), BOB, 1)]);
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Stateless(StatelessError::DuplicateSigner {
            key: first.public_key()
        }))
    );
    let outcome = run_signed(&mut wsv, ALICE, &[], vec![transfer(coin(ALICE), BOB, 1)]);
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Stateless(StatelessError::NoSignatures))
    );
    let outcome = run_signed(&mut wsv, ALICE, &[&first], vec![]);
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Stateless(StatelessError::NoInstructions))
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS);
}

#[test]
fn signatories_cannot_drop_below_the_condition() {
    let (mut wsv, second) = alice_two_of_two();
    let both = [&alice_key(), &second];
    let remove = Instruction::RemoveSignatory {
        account: account(ALICE),
        key: second.public_key(),
    };
    let outcome = run_signed(&mut wsv, ALICE, &both, vec![remove.clone()]);
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Instruction {
            index: 0,
            error: InstructionError::BadSigningCondition {
                account: account(ALICE),
                required: 2,
                signatories: 1
            },
        })
    );
    assert_eq!(wsv.account(&account(ALICE)).expect("alice").signatories.len(), 2);
    // Lowering the condition first makes the removal possible, in one transaction.
    let lower = Instruction::SetSigningCondition {
        account: account(ALICE),
        required: 1,
    };
    let outcome = run_signed(&mut wsv, ALICE, &both, vec![lower, remove.clone()]);
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert!(!wsv
        .account(&account(ALICE))
        .expect("alice")
        .signatories
        .contains(&second.public_key()));
    // The removed key no longer signs.
    let outcome = run_signed(&mut wsv, ALICE, &[&second], vec![transfer(coin(ALICE), BOB, 1)]);
    assert!(matches!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::NotASignatory { .. })
    ));
    // The last signatory cannot be removed, and a key that is not one cannot be removed again.
    let last = Instruction::RemoveSignatory {
        account: account(ALICE),
        key: alice_key().public_key(),
    };
    let outcome = run_signed(&mut wsv, ALICE, &[&alice_key()], vec![last]);
    assert!(matches!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Instruction {
            index: 0,
            error: InstructionError::BadSigningCondition { .. }
        })
    ));
    let outcome = run_signed(&mut wsv, ALICE, &[&alice_key()], vec![remove]);
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Instruction {
            index: 0,
            error: InstructionError::NoSuchSignatory {
                account: account(ALICE),
                key: second.public_key()
            },
        })
    );
}

#[test]
fn signing_condition_must_be_satisfiable() {
    let mut wsv = standard_wsv();
    for required in [0u8, 2] {
        let outcome = run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![Instruction::SetSigningCondition {
                account: account(ALICE),
                required,
            }],
        );
        assert_eq!(
            outcome,
            TransactionOutcome::Rejected(RejectionReason::Instruction {
                index: 0,
                error: InstructionError::BadSigningCondition {
                    account: account(ALICE),
                    required: usize::from(required),
                    signatories: 1
                },
            })
        );
    }
    // Adding a key twice is refused.
    let add = Instruction::AddSignatory {
        account: account(ALICE),
        key: alice_key().public_key(),
    };
    let outcome = run(&mut wsv, ALICE, &alice_key(), vec![add]);
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Instruction {
            index: 0,
            error: InstructionError::SignatoryExists {
                account: account(ALICE),
                key: alice_key().public_key()
            },
        })
    );
    // A key that is not a curve point is refused.
    let mut bad = [0u8; 32];
    bad[0] = 2;
    let add = Instruction::AddSignatory {
        account: account(ALICE),
        key: kasane_model::PublicKey(bad),
    };
    let outcome = run(&mut wsv, ALICE, &alice_key(), vec![add]);
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Instruction {
            index: 0,
            error: InstructionError::BadKey(kasane_model::PublicKey(bad)),
        })
    );
}

#[test]
fn only_the_account_or_a_manager_changes_signatories() {
    let mut wsv = standard_wsv();
    let bob = bob_key();
    // bob adds his own key to alice's account: refused.
    let hijack = vec![Instruction::AddSignatory {
        account: account(ALICE),
        key: bob.public_key(),
    }];
    assert_not_permitted(&run(&mut wsv, BOB, &bob, hijack.clone()), 0);
    let raise = vec![Instruction::SetSigningCondition {
        account: account(ALICE),
        required: 1,
    }];
    assert_not_permitted(&run(&mut wsv, BOB, &bob, raise), 0);
    assert!(!wsv
        .account(&account(ALICE))
        .expect("alice")
        .signatories
        .contains(&bob.public_key()));
    // With ManageAccount he may.
    let grant = Instruction::GrantPermission {
        account: account(BOB),
        permission: Permission::ManageAccount(account(ALICE)),
    };
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![grant]),
        TransactionOutcome::Committed
    );
    assert_eq!(run(&mut wsv, BOB, &bob, hijack), TransactionOutcome::Committed);
    // ... after which bob's key signs for alice.
    let outcome = run_signed(&mut wsv, ALICE, &[&bob], vec![transfer(coin(ALICE), BOB, 3)]);
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&coin(BOB)), BOB_COINS + 3);
}

#[test]
fn a_condition_raised_earlier_in_the_block_applies_to_later_transactions() {
    let mut wsv = standard_wsv();
    let second = key(11);
    let raise = signed(
        &wsv,
        &[&alice_key()],
        vec![
            Instruction::AddSignatory {
                account: account(ALICE),
                key: second.public_key(),
            },
            Instruction::SetSigningCondition {
                account: account(ALICE),
                required: 2,
            },
        ],
    );
    let mut late = signed(&wsv, &[&alice_key()], vec![transfer(coin(ALICE), BOB, 1)]);
    late.payload.nonce = 1;
    let late = SignedTransaction::sign(late.payload, &[&alice_key()]);
    let outcomes = apply(&mut wsv, vec![raise, late]);
    assert_eq!(outcomes[0], TransactionOutcome::Committed);
    assert_eq!(
        outcomes[1],
        TransactionOutcome::Rejected(RejectionReason::NotEnoughSignatures {
            account: account(ALICE),
            required: 2,
            found: 1
        })
    );
}

#[test]
fn a_partly_signed_payload_is_not_spent_and_commits_later_fully_signed() {
    let (mut wsv, second) = alice_two_of_two();
    let first = alice_key();
    let time = next_time(&wsv);
    let payload = payload(ALICE, vec![transfer(coin(ALICE), BOB, 7)], time, 42);
    let partly = SignedTransaction::sign(payload.clone(), &[&first]);
    assert!(matches!(
        apply_one(&mut wsv, partly),
        TransactionOutcome::Rejected(RejectionReason::NotEnoughSignatures { .. })
    ));
    let fully = SignedTransaction::sign(payload, &[&first, &second]);
    assert_eq!(apply_one(&mut wsv, fully.clone()), TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 7);
    // Once authorized, the payload is spent.
    assert_eq!(
        apply_one(&mut wsv, fully),
        TransactionOutcome::Rejected(RejectionReason::Replayed)
    );
}

#[test]
fn an_oversized_transaction_in_a_block_is_rejected() {
    use kasane_model::instruction::MetadataTarget;
    use kasane_model::transaction::TRANSACTION_BYTES_MAX;
    let mut wsv = standard_wsv();
    // 64 instructions of 1 KiB metadata values: over the 64 KiB transaction limit.
    let instructions: Vec<Instruction> = (0..64)
        .map(|index| Instruction::SetKeyValue {
            target: MetadataTarget::Account(account(ALICE)),
            key: name(&format!("k{index}")),
            value: "x".repeat(1024),
        })
        .collect();
    let transaction = tx(&wsv, ALICE, &alice_key(), instructions, 0);
    let bytes = transaction.hashes().encoded_bytes;
    assert!(bytes > TRANSACTION_BYTES_MAX);
    assert_eq!(
        apply_one(&mut wsv, transaction),
        TransactionOutcome::Rejected(RejectionReason::Stateless(StatelessError::TooLarge { bytes }))
    );
}
