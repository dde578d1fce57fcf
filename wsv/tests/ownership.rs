//! Ownership rules of the executor: who may edit metadata, and when domains, accounts and asset
//! definitions may be removed.

mod common;

use common::*;
use kasane_model::instruction::{Instruction, MetadataTarget, Permission};
use kasane_wsv::{InstructionError, TransactionOutcome};

#[test]
fn metadata_is_edited_by_owners_only() {
    let mut wsv = with_alice_land();
    let set = |target: MetadataTarget| Instruction::SetKeyValue {
        target,
        key: name("colour"),
        value: "red".to_string(),
    };
    let domain_target = MetadataTarget::Domain(domain("alice_land"));
    let account_target = MetadataTarget::Account(account(ALICE));
    let definition_target = MetadataTarget::AssetDefinition(definition("gem#alice_land"));
    for target in [domain_target.clone(), account_target.clone(), definition_target.clone()] {
        assert_not_permitted(&run(&mut wsv, BOB, &bob_key(), vec![set(target.clone())]), 0);
        assert_eq!(
            run(&mut wsv, ALICE, &alice_key(), vec![set(target)]),
            TransactionOutcome::Committed
        );
    }
    let red = Some(&"red".to_string());
    assert_eq!(
        wsv.domain(&domain("alice_land"))
            .expect("domain")
            .metadata
            .get(&name("colour")),
        red
    );
    assert_eq!(
        wsv.account(&account(ALICE))
            .expect("alice")
            .metadata
            .get(&name("colour")),
        red
    );
    assert_eq!(
        wsv.asset_definition(&definition("gem#alice_land"))
            .expect("gem")
            .metadata
            .get(&name("colour")),
        red
    );
    // The genesis authority owns nothing of alice's either.
    assert_not_permitted(
        &run(&mut wsv, GENESIS, &genesis_key(), vec![set(account_target.clone())]),
        0,
    );
    // ManageAccount lets bob edit alice's account, and only that.
    let grant = Instruction::GrantPermission {
        account: account(BOB),
        permission: Permission::ManageAccount(account(ALICE)),
    };
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![grant]),
        TransactionOutcome::Committed
    );
    let remove = |target: MetadataTarget| Instruction::RemoveKeyValue {
        target,
        key: name("colour"),
    };
    assert_eq!(
        run(&mut wsv, BOB, &bob_key(), vec![remove(account_target.clone())]),
        TransactionOutcome::Committed
    );
    assert!(wsv.account(&account(ALICE)).expect("alice").metadata.is_empty());
    assert_not_permitted(&run(&mut wsv, BOB, &bob_key(), vec![remove(domain_target)]), 0);
    assert_instruction_error(
        &run(&mut wsv, ALICE, &alice_key(), vec![remove(account_target)]),
        0,
        InstructionError::NoSuchMetadata(name("colour")),
    );
    // Values over the size limit are refused.
    let huge = Instruction::SetKeyValue {
        target: definition_target,
        key: name("colour"),
        value: "x".repeat(kasane_model::instruction::METADATA_VALUE_BYTES_MAX + 1),
    };
    assert!(matches!(
        run(&mut wsv, ALICE, &alice_key(), vec![huge]),
        TransactionOutcome::Rejected(kasane_wsv::RejectionReason::Instruction {
            index: 0,
            error: InstructionError::LimitExceeded { .. }
        })
    ));
}

#[test]
fn domain_is_unregistered_only_when_empty_and_by_its_owner() {
    let mut wsv = with_alice_land();
    let unregister = Instruction::UnregisterDomain {
        domain: domain("alice_land"),
    };
    assert_instruction_error(
        &run(&mut wsv, ALICE, &alice_key(), vec![unregister.clone()]),
        0,
        InstructionError::DomainNotEmpty(domain("alice_land")),
    );
    let setup = vec![
        Instruction::UnregisterAssetDefinition {
            definition: definition("gem#alice_land"),
        },
        register_account("dave@alice_land", 4),
    ];
    assert_eq!(run(&mut wsv, ALICE, &alice_key(), setup), TransactionOutcome::Committed);
    assert_instruction_error(
        &run(&mut wsv, ALICE, &alice_key(), vec![unregister.clone()]),
        0,
        InstructionError::DomainNotEmpty(domain("alice_land")),
    );
    // The domain owner removes the (empty) account; bob may remove neither.
    let remove_dave = Instruction::UnregisterAccount {
        account: account("dave@alice_land"),
    };
    assert_not_permitted(&run(&mut wsv, BOB, &bob_key(), vec![remove_dave.clone()]), 0);
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![remove_dave]),
        TransactionOutcome::Committed
    );
    assert!(wsv.account(&account("dave@alice_land")).is_none());
    assert_not_permitted(&run(&mut wsv, BOB, &bob_key(), vec![unregister.clone()]), 0);
    let domains_before = wsv.world().domain_count();
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![unregister]),
        TransactionOutcome::Committed
    );
    assert!(wsv.domain(&domain("alice_land")).is_none());
    assert_eq!(wsv.world().domain_count(), domains_before - 1);
    // The genesis domain is protected.
    assert_instruction_error(
        &run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![Instruction::UnregisterDomain {
                domain: domain("genesis"),
            }],
        ),
        0,
        InstructionError::Protected("genesis".to_string()),
    );
}

#[test]
fn account_is_unregistered_only_when_it_holds_nothing() {
    let mut wsv = standard_wsv();
    let remove_bob = Instruction::UnregisterAccount { account: account(BOB) };
    // The genesis authority owns wonderland.
    assert_instruction_error(
        &run(&mut wsv, GENESIS, &genesis_key(), vec![remove_bob.clone()]),
        0,
        InstructionError::AccountNotEmpty(account(BOB)),
    );
    assert_not_permitted(&run(&mut wsv, ALICE, &alice_key(), vec![remove_bob.clone()]), 0);
    let accounts_in_wonderland = wsv.domain(&domain("wonderland")).expect("wonderland").account_count;
    // bob empties his account and removes himself in one transaction.
    let outcome = run(
        &mut wsv,
        BOB,
        &bob_key(),
        vec![transfer(coin(BOB), ALICE, BOB_COINS), remove_bob],
    );
    assert_eq!(outcome, TransactionOutcome::Committed);
    assert!(wsv.account(&account(BOB)).is_none());
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS + BOB_COINS);
    assert_eq!(
        wsv.domain(&domain("wonderland")).expect("wonderland").account_count,
        accounts_in_wonderland - 1
    );
    // A definition with coins in circulation cannot go either.
    assert_instruction_error(
        &run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![Instruction::UnregisterAssetDefinition {
                definition: definition("coin#wonderland"),
            }],
        ),
        0,
        InstructionError::AssetDefinitionInUse(definition("coin#wonderland")),
    );
    // Nor the genesis authority.
    assert_instruction_error(
        &run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![Instruction::UnregisterAccount {
                account: genesis_account(),
            }],
        ),
        0,
        InstructionError::Protected(genesis_account().to_string()),
    );
    // A transaction by the removed account is refused.
    let outcome = run(&mut wsv, BOB, &bob_key(), vec![transfer(coin(BOB), ALICE, 1)]);
    assert_eq!(
        outcome,
        TransactionOutcome::Rejected(kasane_wsv::RejectionReason::NoSuchCreator(account(BOB)))
    );
}

#[test]
fn unregistered_identifiers_are_never_reused() {
    use kasane_model::instruction::Mintable;
    let mut wsv = standard_wsv();
    // alice registers a domain with an account and an asset definition, then removes them.
    let setup = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![
            register_domain("attic"),
            register_account("dave@attic", 30),
            register_definition("lamp#attic", Mintable::Infinitely),
        ],
    );
    assert_eq!(setup, TransactionOutcome::Committed);
    let teardown = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![
            Instruction::UnregisterAccount {
                account: account("dave@attic"),
            },
            Instruction::UnregisterAssetDefinition {
                definition: definition("lamp#attic"),
            },
            Instruction::UnregisterDomain {
                domain: domain("attic"),
            },
        ],
    );
    assert_eq!(teardown, TransactionOutcome::Committed);
    // Re-registering any of them is refused, even by the same owner.
    assert_instruction_error(
        &run(&mut wsv, ALICE, &alice_key(), vec![register_domain("attic")]),
        0,
        InstructionError::Retired("attic".into()),
    );
    // An account unregistered from a domain that still exists cannot come back either.
    let gone = run(
        &mut wsv,
        GENESIS,
        &genesis_key(),
        vec![
            register_account("eve@wonderland", 33),
            Instruction::UnregisterAccount {
                account: account("eve@wonderland"),
            },
        ],
    );
    assert_eq!(gone, TransactionOutcome::Committed);
    assert_instruction_error(
        &run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![register_account("eve@wonderland", 34)],
        ),
        0,
        InstructionError::Retired("eve@wonderland".into()),
    );
}
