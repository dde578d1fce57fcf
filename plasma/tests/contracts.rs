//! The L1 plasma contract and the L2 ledger (contract and plugin) run inside a real world state:
//! each rule of docs/PLASMA.md sections 1, 3, 4 and 5 is tried, the refusals with their reasons.

#[path = "../../wsv/tests/common/mod.rs"]
mod common;

use common::*;
use kasane_model::codec;
use kasane_model::crypto::KeyCache;
use kasane_model::ids::{DomainId, Name};
use kasane_model::instruction::Instruction;
use kasane_model::{Hash, KeyPair};
use kasane_plasma::chain::{self, block_leaves, utxo_key, L2Call, L2_CONTRACT, PLUGIN};
use kasane_plasma::contract::{chain_key, exits_key, ChainRecord, ExitRecord, PlasmaCall, L1_CONTRACT};
use kasane_plasma::ledger::{Output, PlasmaTx, Position};
use kasane_plasma::proof;
use kasane_wsv::{InstructionError, PluginRegistry, RejectionReason, TransactionOutcome, Wsv};

const CHALLENGE_BLOCKS: u64 = 3;
const BOND: u128 = 5;

fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::builtin();
    chain::register(&mut registry, KeyCache::new());
    registry
}

fn chain_name() -> Name {
    name("side")
}

fn call(call: &PlasmaCall) -> Instruction {
    Instruction::CallContract {
        contract: name(L1_CONTRACT),
        call: codec::encode(call),
    }
}

fn coin_definition() -> kasane_model::ids::AssetDefinitionId {
    definition("coin#wonderland")
}

/// The standard L1 with chain `side` registered (operator bob, 3-block challenge period, a
/// bond of 5 coin#wonderland).
fn l1() -> Wsv {
    let mut builder = standard_builder();
    builder.instruction(call(&PlasmaCall::RegisterChain {
        chain: chain_name(),
        operator: account(BOB),
        challenge_blocks: CHALLENGE_BLOCKS,
        bond_asset: coin_definition(),
        exit_bond: BOND,
    }));
    build(&builder, registry())
}

fn record(wsv: &Wsv) -> ChainRecord {
    let bytes = wsv
        .world()
        .store_value(&name(L1_CONTRACT), &chain_key(&chain_name()))
        .expect("chain registered");
    codec::decode_body("chain", bytes).expect("decodes")
}

fn open_exits(wsv: &Wsv) -> Vec<ExitRecord> {
    wsv.world()
        .store_value(&name(L1_CONTRACT), &exits_key(&chain_name()))
        .map(|bytes| codec::decode_body("exits", bytes).expect("decodes"))
        .unwrap_or_default()
}

#[track_caller]
fn assert_refused(outcome: &TransactionOutcome, contains: &str) {
    match outcome {
        TransactionOutcome::Rejected(RejectionReason::Instruction {
            error: InstructionError::Contract { reason, .. },
            ..
        }) => assert!(reason.contains(contains), "reason {reason:?} lacks {contains:?}"),
        other => panic!("expected a contract refusal containing {contains:?}, got {other:?}"),
    }
}

fn commit_roots(wsv: &mut Wsv, first: u64, roots: Vec<Hash>) -> TransactionOutcome {
    run(
        wsv,
        BOB,
        &bob_key(),
        vec![call(&PlasmaCall::CommitRoots {
            chain: chain_name(),
            first,
            roots,
        })],
    )
}

fn deposit(wsv: &mut Wsv, amount: u128, owner: &KeyPair) -> TransactionOutcome {
    run(
        wsv,
        ALICE,
        &alice_key(),
        vec![call(&PlasmaCall::Deposit {
            chain: chain_name(),
            asset: coin_definition(),
            amount,
            owner: owner.public_key(),
        })],
    )
}

fn finalize(wsv: &mut Wsv) -> TransactionOutcome {
    run(
        wsv,
        CAROL,
        &carol_key(),
        vec![call(&PlasmaCall::FinalizeExits {
            chain: chain_name(),
            max: 16,
        })],
    )
}

fn output(owner: &KeyPair, amount: u128) -> Output {
    Output {
        owner: owner.public_key(),
        asset: coin_definition(),
        amount,
    }
}

#[test]
fn roots_are_committed_by_the_operator_only_in_order_and_never_rewritten() {
    let mut wsv = l1();
    let (a, b) = (Hash::of_parts(&[b"a"]), Hash::of_parts(&[b"b"]));
    let outsider = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![call(&PlasmaCall::CommitRoots {
            chain: chain_name(),
            first: 1,
            roots: vec![a],
        })],
    );
    assert_refused(&outsider, "only the operator");
    assert_refused(&commit_roots(&mut wsv, 2, vec![a]), "not the next root");
    assert_eq!(commit_roots(&mut wsv, 1, vec![a, b]), TransactionOutcome::Committed);
    assert_refused(&commit_roots(&mut wsv, 2, vec![a]), "the next is 3");
    assert_eq!(record(&wsv).roots, 2);
    let garbage = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![Instruction::CallContract {
            contract: name(L1_CONTRACT),
            call: vec![1, 2, 3],
        }],
    );
    assert_refused(&garbage, "not a plasma call");
    let unknown = run(
        &mut wsv,
        ALICE,
        &alice_key(),
        vec![Instruction::CallContract {
            contract: name("nothing"),
            call: vec![],
        }],
    );
    assert!(matches!(
        unknown,
        TransactionOutcome::Rejected(RejectionReason::Instruction {
            error: InstructionError::UnknownContract(_),
            ..
        })
    ));
}

#[test]
fn a_deposit_exits_after_the_challenge_period_and_only_once() {
    let mut wsv = l1();
    let alice = alice_key();
    assert_eq!(deposit(&mut wsv, 100, &alice), TransactionOutcome::Committed);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 100);
    assert_eq!(wsv.world().locked(&name(L1_CONTRACT), &coin_definition()), 100);
    assert_refused(&deposit(&mut wsv, ALICE_COINS, &alice), "less than");

    let exit = PlasmaCall::StartExit {
        chain: chain_name(),
        position: Position::Deposit { number: 0 },
        created_by: None,
    };
    assert_refused(
        &run(&mut wsv, BOB, &bob_key(), vec![call(&exit)]),
        "does not hold the output's key",
    );
    assert_eq!(
        run(&mut wsv, ALICE, &alice, vec![call(&exit)]),
        TransactionOutcome::Committed
    );
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 100 - BOND);
    assert_refused(
        &run(&mut wsv, ALICE, &alice, vec![call(&exit)]),
        "already started an exit",
    );

    // Within the period, finalisation pays nothing.
    let started = open_exits(&wsv)[0].started;
    while wsv.height() + 1 < started + CHALLENGE_BLOCKS {
        assert_eq!(finalize(&mut wsv), TransactionOutcome::Committed);
        assert_eq!(open_exits(&wsv).len(), 1, "paid out at height {}", wsv.height());
    }
    assert_eq!(finalize(&mut wsv), TransactionOutcome::Committed);
    assert!(open_exits(&wsv).is_empty());
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS, "amount and bond returned");
    assert_eq!(wsv.world().locked(&name(L1_CONTRACT), &coin_definition()), 0);
    assert_refused(
        &run(&mut wsv, ALICE, &alice, vec![call(&exit)]),
        "already started an exit",
    );
}

/// Commits the root of one L2 block holding `txs` as root `number`.
fn commit_block(wsv: &mut Wsv, number: u64, txs: &[PlasmaTx]) {
    assert_eq!(
        commit_roots(wsv, number, vec![proof::root(txs)]),
        TransactionOutcome::Committed
    );
}

#[test]
fn a_block_output_exits_with_its_proof_and_a_spent_one_is_challenged() {
    let mut wsv = l1();
    let (alice, dave) = (alice_key(), key(9));
    assert_eq!(deposit(&mut wsv, 100, &alice), TransactionOutcome::Committed);
    // L2 block 1: alice pays 60 to dave, keeps 40. L2 block 2: dave spends his 60.
    let pay = PlasmaTx::sign(
        vec![Position::Deposit { number: 0 }],
        vec![output(&dave, 60), output(&alice, 40)],
        &[&alice],
    );
    let other = PlasmaTx::sign(
        vec![Position::Deposit { number: 7 }],
        vec![output(&alice, 1)],
        &[&alice],
    );
    let block1 = vec![other.clone(), pay.clone()];
    commit_block(&mut wsv, 1, &block1);
    let spend = PlasmaTx::sign(
        vec![Position::Block {
            block: 1,
            tx_index: 1,
            output_index: 0,
        }],
        vec![output(&alice, 60)],
        &[&dave],
    );
    commit_block(&mut wsv, 2, std::slice::from_ref(&spend));

    let alice_output = Position::Block {
        block: 1,
        tx_index: 1,
        output_index: 1,
    };
    let exit_of = |position, tx: &PlasmaTx, proof| PlasmaCall::StartExit {
        chain: chain_name(),
        position,
        created_by: Some((tx.clone(), proof)),
    };
    let good_proof = proof::prove(&block1, 1).expect("proof");
    // A forged proof: the path of another leaf.
    let mut forged = good_proof.clone();
    forged.path[0] = Hash::of_parts(&[b"forged"]);
    assert_refused(
        &run(
            &mut wsv,
            ALICE,
            &alice,
            vec![call(&exit_of(alice_output, &pay, forged))],
        ),
        "does not verify",
    );
    let moved = proof::prove(&block1, 0).expect("proof");
    assert_refused(
        &run(&mut wsv, ALICE, &alice, vec![call(&exit_of(alice_output, &pay, moved))]),
        "the proof is for leaf 0",
    );
    let beyond = Position::Block {
        block: 3,
        tx_index: 1,
        output_index: 1,
    };
    assert_refused(
        &run(
            &mut wsv,
            ALICE,
            &alice,
            vec![call(&exit_of(beyond, &pay, good_proof.clone()))],
        ),
        "has no committed root",
    );
    assert_eq!(
        run(
            &mut wsv,
            ALICE,
            &alice,
            vec![call(&exit_of(alice_output, &pay, good_proof.clone()))]
        ),
        TransactionOutcome::Committed
    );

    // Dave exits the output he already spent in block 2; carol challenges with the spend.
    let dave_account = "dave@wonderland";
    assert_eq!(
        run(
            &mut wsv,
            GENESIS,
            &genesis_key(),
            vec![
                Instruction::RegisterAccount {
                    account: account(dave_account),
                    signatories: vec![dave.public_key()],
                },
                Instruction::Mint {
                    asset: coin(dave_account),
                    amount: 10,
                }
            ]
        ),
        TransactionOutcome::Committed
    );
    let dave_output = Position::Block {
        block: 1,
        tx_index: 1,
        output_index: 0,
    };
    assert_eq!(
        run(
            &mut wsv,
            dave_account,
            &dave,
            vec![call(&exit_of(dave_output, &pay, good_proof))]
        ),
        TransactionOutcome::Committed
    );
    assert_eq!(open_exits(&wsv).len(), 2);
    let challenge = |tx: &PlasmaTx, block, proof| PlasmaCall::ChallengeExit {
        chain: chain_name(),
        position: dave_output,
        spending_tx: tx.clone(),
        spending_block: block,
        proof,
    };
    // A transaction that does not spend the output is no challenge.
    assert_refused(
        &run(
            &mut wsv,
            CAROL,
            &carol_key(),
            vec![call(&challenge(&pay, 1, proof::prove(&block1, 1).expect("proof")))],
        ),
        "does not spend",
    );
    let spend_proof = proof::prove(std::slice::from_ref(&spend), 0).expect("proof");
    assert_refused(
        &run(
            &mut wsv,
            CAROL,
            &carol_key(),
            vec![call(&challenge(&spend, 1, spend_proof.clone()))],
        ),
        "does not verify",
    );
    assert_eq!(
        run(
            &mut wsv,
            CAROL,
            &carol_key(),
            vec![call(&challenge(&spend, 2, spend_proof))]
        ),
        TransactionOutcome::Committed
    );
    assert_eq!(
        wsv.balance(&asset("coin#wonderland", CAROL)),
        BOND,
        "the challenger takes the bond"
    );
    let left = open_exits(&wsv);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].position, alice_output);

    for _ in 0..CHALLENGE_BLOCKS {
        assert_eq!(finalize(&mut wsv), TransactionOutcome::Committed);
    }
    assert!(open_exits(&wsv).is_empty());
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 100 + 40);
    assert_eq!(wsv.world().locked(&name(L1_CONTRACT), &coin_definition()), 60);
    assert_eq!(record(&wsv).locked[&coin_definition()], 60);
}

#[test]
fn exits_finalise_in_priority_order_and_never_take_more_than_the_chain_holds() {
    let mut wsv = l1();
    let alice = alice_key();
    assert_eq!(deposit(&mut wsv, 30, &alice), TransactionOutcome::Committed);
    // An operator's root conjures an output of 1,000 in block 1 (no such deposit exists).
    let conjured = PlasmaTx::sign(
        vec![Position::Deposit { number: 99 }],
        vec![output(&alice, 1_000)],
        &[&alice],
    );
    commit_block(&mut wsv, 1, std::slice::from_ref(&conjured));
    let conjured_proof = proof::prove(std::slice::from_ref(&conjured), 0).expect("proof");
    assert_eq!(deposit(&mut wsv, 20, &alice), TransactionOutcome::Committed);
    let conjured_exit = PlasmaCall::StartExit {
        chain: chain_name(),
        position: Position::Block {
            block: 1,
            tx_index: 0,
            output_index: 0,
        },
        created_by: Some((conjured, conjured_proof)),
    };
    let exits = [
        call(&PlasmaCall::StartExit {
            chain: chain_name(),
            position: Position::Deposit { number: 1 },
            created_by: None,
        }),
        call(&conjured_exit),
        call(&PlasmaCall::StartExit {
            chain: chain_name(),
            position: Position::Deposit { number: 0 },
            created_by: None,
        }),
    ];
    for exit in exits {
        assert_eq!(run(&mut wsv, ALICE, &alice, vec![exit]), TransactionOutcome::Committed);
    }
    let order: Vec<Position> = open_exits(&wsv).iter().map(|exit| exit.position).collect();
    assert_eq!(
        order,
        vec![
            Position::Deposit { number: 0 },
            Position::Block {
                block: 1,
                tx_index: 0,
                output_index: 0
            },
            Position::Deposit { number: 1 },
        ],
        "deposit 0 (before root 1), block 1, deposit 1 (after root 1)"
    );
    for _ in 0..=CHALLENGE_BLOCKS {
        assert_eq!(finalize(&mut wsv), TransactionOutcome::Committed);
    }
    assert!(open_exits(&wsv).is_empty());
    // Deposit 0 paid 30; the conjured 1,000 exceeded the 20 left and was closed unpaid; deposit 1
    // paid 20. Every bond came back.
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS);
    assert_eq!(wsv.world().locked(&name(L1_CONTRACT), &coin_definition()), 0);
}

fn l2_domain() -> DomainId {
    DomainId::new("l2").expect("valid")
}

const USER: &str = "user@l2";
const OUTSIDER: &str = "alice@wonderland";

/// An L2 chain: domain `l2` checked by the plasma plugin, with `user@l2`.
fn l2() -> Wsv {
    let mut builder = standard_builder();
    builder.domain(&l2_domain(), name(PLUGIN));
    builder.funded_account(account(USER), key(20).public_key(), 0);
    build(&builder, registry())
}

fn note(wsv: &mut Wsv, signer: (&str, &KeyPair), first: u64, outputs: Vec<Output>) -> TransactionOutcome {
    let note = L2Call::NoteDeposits { first, outputs };
    run(wsv, signer.0, signer.1, vec![note.instruction()])
}

fn unspent(wsv: &Wsv, position: &Position) -> Option<Output> {
    wsv.world()
        .store_value(&name(L2_CONTRACT), &utxo_key(position))
        .map(|bytes| codec::decode_body("output", bytes).expect("decodes"))
}

#[test]
fn the_l2_ledger_notes_deposits_in_order_and_refuses_double_spends_and_forgeries() {
    let mut wsv = l2();
    let (alice, bob) = (alice_key(), bob_key());
    let genesis = genesis_key();
    assert_refused(
        &note(&mut wsv, (ALICE, &alice), 0, vec![output(&alice, 10)]),
        "only the L2 operator",
    );
    assert_refused(
        &note(&mut wsv, (GENESIS, &genesis), 1, vec![output(&alice, 10)]),
        "next is 0",
    );
    assert_eq!(
        note(
            &mut wsv,
            (GENESIS, &genesis),
            0,
            vec![output(&alice, 10), output(&bob, 5)]
        ),
        TransactionOutcome::Committed
    );
    assert_refused(
        &note(&mut wsv, (GENESIS, &genesis), 0, vec![output(&alice, 10)]),
        "next is 2",
    );

    let user = key(20);
    let transfer = |tx: &PlasmaTx| L2Call::Transfer(tx.clone()).instruction();
    let pay = PlasmaTx::sign(
        vec![Position::Deposit { number: 0 }],
        vec![output(&bob, 4), output(&alice, 6)],
        &[&alice],
    );
    let again = PlasmaTx::sign(vec![Position::Deposit { number: 0 }], vec![output(&bob, 10)], &[&alice]);
    let forged = PlasmaTx::sign(
        vec![Position::Deposit { number: 1 }],
        vec![output(&alice, 5)],
        &[&alice],
    );
    let unbalanced = PlasmaTx::sign(vec![Position::Deposit { number: 1 }], vec![output(&alice, 6)], &[&bob]);
    let txs = vec![
        tx(&wsv, USER, &user, vec![transfer(&pay)], 1),
        tx(&wsv, USER, &user, vec![transfer(&again)], 2),
        tx(&wsv, USER, &user, vec![transfer(&forged)], 3),
        tx(&wsv, USER, &user, vec![transfer(&unbalanced)], 4),
        tx(&wsv, USER, &user, vec![transfer(&pay), transfer(&pay)], 5),
        tx(
            &wsv,
            USER,
            &user,
            vec![Instruction::Burn {
                asset: coin(USER),
                amount: 1,
            }],
            6,
        ),
        tx(&wsv, OUTSIDER, &alice, vec![transfer(&unbalanced)], 7),
    ];
    let outcomes = apply(&mut wsv, txs.clone());
    let height = wsv.height();
    let plugin_reason = |outcome: &TransactionOutcome| match outcome {
        TransactionOutcome::Rejected(RejectionReason::Plugin { reason, .. }) => reason.clone(),
        other => panic!("expected a plugin rejection, got {other:?}"),
    };
    assert_eq!(outcomes[0], TransactionOutcome::Committed);
    assert!(
        plugin_reason(&outcomes[1]).contains("not an unspent output"),
        "double spend in one block"
    );
    assert!(
        plugin_reason(&outcomes[2]).contains("signature"),
        "bob's deposit signed by alice"
    );
    assert!(plugin_reason(&outcomes[3]).contains("inputs carry 5, outputs 6"));
    assert!(
        plugin_reason(&outcomes[4]).contains("not an unspent output"),
        "already spent"
    );
    assert!(plugin_reason(&outcomes[5]).contains("only plasma transfers"));
    assert_refused(&outcomes[6], "checked by the plasma plugin");

    assert_eq!(unspent(&wsv, &Position::Deposit { number: 0 }), None);
    let created = |output_index| Position::Block {
        block: height,
        tx_index: 0,
        output_index,
    };
    assert_eq!(unspent(&wsv, &created(0)), Some(output(&bob, 4)));
    assert_eq!(unspent(&wsv, &created(1)), Some(output(&alice, 6)));

    // The block's leaves are the accepted transfers, in order.
    let accepted: Vec<bool> = outcomes
        .iter()
        .map(|outcome| *outcome == TransactionOutcome::Committed)
        .collect();
    assert_eq!(block_leaves(txs.iter().zip(accepted)), vec![pay.clone()]);
    // The block's root is agreed L2 state: the accumulator counts only the applied transfer.
    let stored = wsv
        .world()
        .store_value(&name(L2_CONTRACT), &chain::accumulator_key(height))
        .expect("the block applied a transfer");
    let accumulator: proof::RootAccumulator = codec::decode_body("accumulator", stored).expect("decodes");
    assert_eq!(accumulator.count, 1);
    assert_eq!(accumulator.root(), proof::root(std::slice::from_ref(&pay)));
    let leaves = wsv
        .world()
        .store_scan(&name(L2_CONTRACT), &chain::leaf_prefix(height), None, None, 10);
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0].1, proof::leaf_hash(&pay).as_bytes().to_vec());

    // Bob spends his change, and his deposit, in the next block: index 0 again.
    let spend = PlasmaTx::sign(
        vec![created(0), Position::Deposit { number: 1 }],
        vec![output(&alice, 9)],
        &[&bob, &bob],
    );
    let spend = tx(&wsv, USER, &user, vec![transfer(&spend)], 8);
    assert_eq!(apply_one(&mut wsv, spend), TransactionOutcome::Committed);
    assert_eq!(
        unspent(
            &wsv,
            &Position::Block {
                block: height + 1,
                tx_index: 0,
                output_index: 0
            }
        ),
        Some(output(&alice, 9))
    );
}
