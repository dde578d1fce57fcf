//! Permission rules of the executor: who may move, mint and register what, and who may change
//! the peer set. Metadata and removal rules are in `ownership.rs`.

mod common;

use common::*;
use kasane_model::instruction::{Instruction, Mintable, Permission};
use kasane_wsv::{InstructionError, TransactionOutcome};

#[test]
fn transfer_on_behalf_needs_a_granted_permission() {
    let mut wsv = standard_wsv();
    let bob = bob_key();
    let on_behalf = || vec![transfer(coin(ALICE), CAROL, 10)];
    assert_not_permitted(&run(&mut wsv, BOB, &bob, on_behalf()), 0);
    // bob cannot grant himself the right over alice's asset.
    let grant = Instruction::GrantPermission {
        account: account(BOB),
        permission: Permission::TransferAsset(coin(ALICE)),
    };
    assert_not_permitted(&run(&mut wsv, BOB, &bob, vec![grant.clone()]), 0);
    // alice can.
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![grant]),
        TransactionOutcome::Committed
    );
    assert!(wsv
        .account(&account(BOB))
        .expect("bob")
        .permissions
        .contains(&Permission::TransferAsset(coin(ALICE))));
    assert_eq!(run(&mut wsv, BOB, &bob, on_behalf()), TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 10);
    assert_eq!(wsv.balance(&asset("coin#wonderland", CAROL)), 10);
    // The permission is for that asset only, not for alice's other holdings nor her burns.
    assert_not_permitted(
        &run(
            &mut wsv,
            BOB,
            &bob,
            vec![Instruction::Burn {
                asset: coin(ALICE),
                amount: 1,
            }],
        ),
        0,
    );
    // Revoked, it is gone.
    let revoke = Instruction::RevokePermission {
        account: account(BOB),
        permission: Permission::TransferAsset(coin(ALICE)),
    };
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![revoke.clone()]),
        TransactionOutcome::Committed
    );
    assert_not_permitted(&run(&mut wsv, BOB, &bob, on_behalf()), 0);
    // Revoking what is not held is refused.
    assert_not_permitted(&run(&mut wsv, ALICE, &alice_key(), vec![revoke]), 0);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 10);
}

#[test]
fn only_the_owner_or_a_grantee_registers_in_a_domain() {
    let mut wsv = with_alice_land();
    let bob = bob_key();
    assert_eq!(wsv.domain(&domain("alice_land")).expect("domain").owner, account(ALICE));
    // wonderland is the genesis authority's: alice may not register there.
    assert_not_permitted(
        &run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![register_account("dave@wonderland", 4)],
        ),
        0,
    );
    assert_not_permitted(
        &run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![register_definition("silver#wonderland", Mintable::Infinitely)],
        ),
        0,
    );
    // bob may not register in alice_land ...
    assert_not_permitted(
        &run(&mut wsv, BOB, &bob, vec![register_account("dave@alice_land", 4)]),
        0,
    );
    assert_not_permitted(
        &run(
            &mut wsv,
            BOB,
            &bob,
            vec![register_definition("ruby#alice_land", Mintable::Not)],
        ),
        0,
    );
    // ... nor grant himself the right; alice may.
    let grant = Instruction::GrantPermission {
        account: account(BOB),
        permission: Permission::RegisterInDomain(domain("alice_land")),
    };
    assert_not_permitted(&run(&mut wsv, BOB, &bob, vec![grant.clone()]), 0);
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![grant]),
        TransactionOutcome::Committed
    );
    let outcome = run(
        &mut wsv,
        BOB,
        &bob,
        vec![
            register_account("dave@alice_land", 4),
            register_definition("ruby#alice_land", Mintable::Not),
        ],
    );
    assert_eq!(outcome, TransactionOutcome::Committed);
    let alice_land = wsv.domain(&domain("alice_land")).expect("domain");
    assert_eq!((alice_land.account_count, alice_land.asset_definition_count), (1, 2));
    // The definition bob registered is bob's.
    assert_eq!(
        wsv.asset_definition(&definition("ruby#alice_land"))
            .expect("ruby")
            .owner,
        account(BOB)
    );
    // Registering twice, or in a domain that does not exist, is refused.
    assert_instruction_error(
        &run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![register_account("dave@alice_land", 5)],
        ),
        0,
        InstructionError::AccountExists(account("dave@alice_land")),
    );
    assert_instruction_error(
        &run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![register_account("dave@atlantis", 5)],
        ),
        0,
        InstructionError::NoSuchDomain(domain("atlantis")),
    );
    assert_instruction_error(
        &run(&mut wsv, BOB, &bob, vec![register_domain("alice_land")]),
        0,
        InstructionError::DomainExists(domain("alice_land")),
    );
}

#[test]
fn only_the_genesis_authority_changes_peers() {
    let mut wsv = standard_wsv();
    let peer = key(200).public_key();
    assert_not_permitted(
        &run(&mut wsv, ALICE, &alice_key(), vec![Instruction::RegisterPeer { peer }]),
        0,
    );
    assert!(!wsv.peers().contains(&peer));
    assert_eq!(
        run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![Instruction::RegisterPeer { peer }]
        ),
        TransactionOutcome::Committed
    );
    assert!(wsv.peers().contains(&peer));
    assert!(wsv.validators().contains(&peer));
    assert_instruction_error(
        &run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![Instruction::RegisterPeer { peer }],
        ),
        0,
        InstructionError::PeerExists(peer),
    );
    assert_not_permitted(
        &run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![Instruction::UnregisterPeer { peer }],
        ),
        0,
    );
    assert_eq!(
        run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![Instruction::UnregisterPeer { peer }]
        ),
        TransactionOutcome::Committed
    );
    assert!(!wsv.peers().contains(&peer));
    assert_instruction_error(
        &run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![Instruction::UnregisterPeer { peer }],
        ),
        0,
        InstructionError::NoSuchPeer(peer),
    );
}

#[test]
fn only_the_definition_owner_or_a_grantee_mints() {
    let mut wsv = with_alice_land();
    // coin#wonderland is the genesis authority's.
    assert_not_permitted(
        &run(&mut wsv, ALICE, &alice_key(), vec![mint("coin#wonderland", ALICE, 1)]),
        0,
    );
    assert_not_permitted(&run(&mut wsv, BOB, &bob_key(), vec![mint("gem#alice_land", BOB, 1)]), 0);
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![mint("gem#alice_land", BOB, 5)]),
        TransactionOutcome::Committed
    );
    assert_eq!(wsv.balance(&asset("gem#alice_land", BOB)), 5);
    let grant = Instruction::GrantPermission {
        account: account(BOB),
        permission: Permission::MintAsset(definition("gem#alice_land")),
    };
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![grant]),
        TransactionOutcome::Committed
    );
    assert_eq!(
        run(&mut wsv, BOB, &bob_key(), vec![mint("gem#alice_land", BOB, 5)]),
        TransactionOutcome::Committed
    );
    assert_eq!(wsv.balance(&asset("gem#alice_land", BOB)), 10);
    assert_eq!(
        wsv.asset_definition(&definition("gem#alice_land"))
            .expect("gem")
            .total_supply,
        10
    );
    // Minting to an account that does not exist is refused.
    assert_instruction_error(
        &run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![mint("gem#alice_land", "nobody@wonderland", 1)],
        ),
        0,
        InstructionError::NoSuchAccount(account("nobody@wonderland")),
    );
    assert_eq!(
        wsv.asset_definition(&definition("gem#alice_land"))
            .expect("gem")
            .total_supply,
        10
    );
}

#[test]
fn mintable_once_becomes_not_after_one_mint() {
    let mut wsv = with_alice_land();
    let setup = vec![
        register_definition("pearl#alice_land", Mintable::Once),
        register_definition("stone#alice_land", Mintable::Not),
    ];
    assert_eq!(run(&mut wsv, ALICE, &alice_key(), setup), TransactionOutcome::Committed);
    assert_instruction_error(
        &run(&mut wsv, ALICE, &alice_key(), vec![mint("stone#alice_land", ALICE, 1)]),
        0,
        InstructionError::NotMintable(definition("stone#alice_land")),
    );
    // A rejected first mint (here, to nobody) does not use up the one mint.
    assert_instruction_error(
        &run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![mint("pearl#alice_land", "nobody@wonderland", 1)],
        ),
        0,
        InstructionError::NoSuchAccount(account("nobody@wonderland")),
    );
    assert_eq!(
        wsv.asset_definition(&definition("pearl#alice_land"))
            .expect("pearl")
            .mintable,
        Mintable::Once
    );
    assert_eq!(
        run(&mut wsv, ALICE, &alice_key(), vec![mint("pearl#alice_land", ALICE, 7)]),
        TransactionOutcome::Committed
    );
    let pearl = wsv.asset_definition(&definition("pearl#alice_land")).expect("pearl");
    assert_eq!((pearl.mintable, pearl.total_supply), (Mintable::Not, 7));
    assert_instruction_error(
        &run(&mut wsv, ALICE, &alice_key(), vec![mint("pearl#alice_land", ALICE, 1)]),
        0,
        InstructionError::NotMintable(definition("pearl#alice_land")),
    );
    // Twice in one transaction is refused too: the second mint sees the first's change, and the
    // rejection undoes it.
    let setup = vec![register_definition("opal#alice_land", Mintable::Once)];
    assert_eq!(run(&mut wsv, ALICE, &alice_key(), setup), TransactionOutcome::Committed);
    assert_instruction_error(
        &run(
            &mut wsv,
            ALICE,
            &alice_key(),
            vec![mint("opal#alice_land", ALICE, 1), mint("opal#alice_land", BOB, 1)],
        ),
        1,
        InstructionError::NotMintable(definition("opal#alice_land")),
    );
    assert_eq!(
        wsv.asset_definition(&definition("opal#alice_land"))
            .expect("opal")
            .mintable,
        Mintable::Once
    );
}

#[test]
fn the_last_peer_cannot_be_unregistered() {
    let mut wsv = standard_wsv();
    let peers: Vec<_> = wsv.peers().to_vec();
    assert!(!peers.is_empty());
    let (last, others) = peers.split_last().expect("peers");
    for peer in others {
        assert_eq!(
            run(
                &mut wsv,
                GENESIS,
                &genesis_key(),
                vec![Instruction::UnregisterPeer { peer: *peer }]
            ),
            TransactionOutcome::Committed
        );
    }
    // Removing the last one is refused, deterministically, and so is removing it together with
    // a peer registered in the same transaction and then removed again.
    assert_instruction_error(
        &run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![Instruction::UnregisterPeer { peer: *last }],
        ),
        0,
        InstructionError::LastPeer(*last),
    );
    let newcomer = key(201).public_key();
    assert_instruction_error(
        &run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![
                Instruction::RegisterPeer { peer: newcomer },
                Instruction::UnregisterPeer { peer: *last },
                Instruction::UnregisterPeer { peer: newcomer },
            ],
        ),
        2,
        InstructionError::LastPeer(newcomer),
    );
    assert_eq!(wsv.validators(), [*last].into());
}
