//! Validator plugins: the built-in amount limit, a custom plugin's three verdicts, and unknown
//! plugin names.

mod common;

use std::sync::Arc;

use common::*;
use kasane_model::ids::DomainId;
use kasane_model::instruction::{Instruction, MetadataTarget};
use kasane_model::SignedTransaction;
use kasane_wsv::genesis::{GenesisBuilder, GenesisError};
use kasane_wsv::plugin::{AMOUNT_LIMIT_KEY, AMOUNT_LIMIT_PLUGIN};
use kasane_wsv::{
    ApplyError, Domain, InstructionError, PluginContext, PluginRegistry, RejectionReason, TransactionOutcome,
    ValidatorPlugin, Verdict, Wsv,
};

const DAN: &str = "dan@capped";
const ERIN: &str = "erin@flaky";

fn dan_key() -> kasane_model::KeyPair {
    key(4)
}

fn erin_key() -> kasane_model::KeyPair {
    key(5)
}

fn set_limit(value: &str) -> Instruction {
    Instruction::SetKeyValue {
        target: MetadataTarget::Domain(DomainId::new("capped").expect("valid")),
        key: name(AMOUNT_LIMIT_KEY),
        value: value.to_string(),
    }
}

/// Decides by the transaction's nonce: 13 cannot be decided, 7 is invalid, anything else is
/// valid; nonce 21 is rejected with what the plugin sees of the state.
struct Flaky;

impl ValidatorPlugin for Flaky {
    fn validate(&self, context: &PluginContext<'_, '_>, domain: &Domain, transaction: &SignedTransaction) -> Verdict {
        match transaction.payload.nonce {
            13 => Verdict::ExecutionFailure("oracle unreachable".to_string()),
            7 => Verdict::Invalid("seven is unlucky".to_string()),
            21 => Verdict::Invalid(format!(
                "height {} domain {} balance {}",
                context.height(),
                domain.id,
                context.balance(&coin(ERIN)),
            )),
            _ => Verdict::Valid,
        }
    }
}

fn registry() -> PluginRegistry {
    let mut plugins = PluginRegistry::builtin();
    plugins.register("flaky", Arc::new(Flaky));
    plugins
}

/// The standard accounts, plus dan in `capped` (amount_limit, no limit set yet) and erin in
/// `flaky` (the custom plugin), each with 1000 of their domain's coin.
fn plugin_wsv() -> Wsv {
    let mut builder = standard_builder();
    builder.domain(
        &DomainId::new("capped").expect("valid"),
        AMOUNT_LIMIT_PLUGIN.parse().expect("valid"),
    );
    builder.domain(&DomainId::new("flaky").expect("valid"), "flaky".parse().expect("valid"));
    builder.funded_account(account(DAN), dan_key().public_key(), 1_000);
    builder.funded_account(account(ERIN), erin_key().public_key(), 1_000);
    let wsv = build(&builder, registry());
    assert_eq!(
        wsv.domain(&DomainId::new("capped").expect("valid"))
            .expect("capped")
            .validator,
        name(AMOUNT_LIMIT_PLUGIN)
    );
    wsv
}

#[test]
fn amount_limit_rejects_transfers_over_the_domain_limit() {
    let mut wsv = plugin_wsv();
    // No limit yet: anything goes.
    assert_eq!(
        run(&mut wsv, DAN, &dan_key(), vec![transfer(coin(DAN), BOB, 200)]),
        TransactionOutcome::Committed
    );
    // Only the domain's owner (the genesis authority) sets the limit.
    assert_not_permitted(&run(&mut wsv, DAN, &dan_key(), vec![set_limit("1000000")]), 0);
    assert_eq!(
        run(&mut wsv, GENESIS, &genesis_key(), vec![set_limit("100")]),
        TransactionOutcome::Committed
    );

    let outcome = run(&mut wsv, DAN, &dan_key(), vec![transfer(coin(DAN), BOB, 101)]);
    match outcome {
        TransactionOutcome::Rejected(RejectionReason::Plugin { plugin, reason }) => {
            assert_eq!(plugin, name(AMOUNT_LIMIT_PLUGIN));
            assert!(reason.contains("101"), "{reason}");
        }
        other => panic!("expected a plugin rejection, got {other:?}"),
    }
    // Any instruction over the limit rejects the whole transaction.
    let outcome = run(
        &mut wsv,
        DAN,
        &dan_key(),
        vec![transfer(coin(DAN), BOB, 1), transfer(coin(DAN), BOB, 101)],
    );
    assert!(matches!(
        outcome,
        TransactionOutcome::Rejected(RejectionReason::Plugin { .. })
    ));
    assert_eq!(wsv.balance(&coin(DAN)), 800);
    assert_eq!(
        run(&mut wsv, DAN, &dan_key(), vec![transfer(coin(DAN), BOB, 100)]),
        TransactionOutcome::Committed
    );
    assert_eq!(wsv.balance(&coin(DAN)), 700);
    // The limit is on the creator's domain: others may send dan more, and bob may send dan's
    // coin on in any amount.
    assert_eq!(
        run(
            &mut wsv,
            BOB,
            &bob_key(),
            vec![transfer(asset("coin#capped", BOB), ALICE, 300)]
        ),
        TransactionOutcome::Committed
    );
    // Removing the limit lifts it.
    let remove = Instruction::RemoveKeyValue {
        target: MetadataTarget::Domain(DomainId::new("capped").expect("valid")),
        key: name(AMOUNT_LIMIT_KEY),
    };
    assert_eq!(
        run(&mut wsv, GENESIS, &genesis_key(), vec![remove]),
        TransactionOutcome::Committed
    );
    assert_eq!(
        run(&mut wsv, DAN, &dan_key(), vec![transfer(coin(DAN), BOB, 700)]),
        TransactionOutcome::Committed
    );
}

#[test]
fn amount_limit_set_earlier_in_the_block_applies() {
    let mut wsv = plugin_wsv();
    let transactions = vec![
        tx(&wsv, GENESIS, &genesis_key(), vec![set_limit("100")], 0),
        tx(&wsv, DAN, &dan_key(), vec![transfer(coin(DAN), BOB, 101)], 0),
    ];
    let outcomes = apply(&mut wsv, transactions);
    assert_eq!(outcomes[0], TransactionOutcome::Committed);
    assert!(matches!(
        outcomes[1],
        TransactionOutcome::Rejected(RejectionReason::Plugin { .. })
    ));
    assert_eq!(wsv.balance(&coin(DAN)), 1_000);
}

#[test]
fn malformed_amount_limit_fails_closed() {
    let mut wsv = plugin_wsv();
    assert_eq!(
        run(&mut wsv, GENESIS, &genesis_key(), vec![set_limit("one hundred")]),
        TransactionOutcome::Committed
    );
    for instructions in [
        vec![transfer(coin(DAN), BOB, 1)],
        vec![Instruction::Burn {
            asset: coin(DAN),
            amount: 1,
        }],
    ] {
        let outcome = run(&mut wsv, DAN, &dan_key(), instructions);
        assert!(
            matches!(outcome, TransactionOutcome::Rejected(RejectionReason::Plugin { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(wsv.balance(&coin(DAN)), 1_000);
}

#[test]
fn custom_plugin_verdicts() {
    let mut wsv = plugin_wsv();
    let valid = tx(&wsv, ERIN, &erin_key(), vec![transfer(coin(ERIN), ALICE, 10)], 1);
    let invalid = tx(&wsv, ERIN, &erin_key(), vec![transfer(coin(ERIN), ALICE, 10)], 7);
    let probe = tx(&wsv, ERIN, &erin_key(), vec![transfer(coin(ERIN), ALICE, 10)], 21);
    let outcomes = apply(&mut wsv, vec![valid, invalid, probe]);
    assert_eq!(outcomes[0], TransactionOutcome::Committed);
    assert_eq!(
        outcomes[1],
        TransactionOutcome::Rejected(RejectionReason::Plugin {
            plugin: name("flaky"),
            reason: "seven is unlucky".to_string()
        })
    );
    // The plugin sees the height of the block being applied and the block's earlier writes.
    assert_eq!(
        outcomes[2],
        TransactionOutcome::Rejected(RejectionReason::Plugin {
            plugin: name("flaky"),
            reason: "height 2 domain flaky balance 990".to_string()
        })
    );
    assert_eq!(wsv.balance(&coin(ERIN)), 990);
    // Transactions of other domains never reach the plugin.
    let from_alice = tx(&wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), ERIN, 1)], 13);
    let outcome = apply_one(&mut wsv, from_alice);
    assert_eq!(outcome, TransactionOutcome::Committed);
}

#[test]
fn execution_failure_stops_the_block_and_changes_nothing() {
    let mut wsv = plugin_wsv();
    let before = snapshot(&wsv);
    let time = next_time(&wsv);
    let good = tx(&wsv, ALICE, &alice_key(), vec![transfer(coin(ALICE), BOB, 10)], 0);
    let undecidable = tx(&wsv, ERIN, &erin_key(), vec![transfer(coin(ERIN), ALICE, 10)], 13);
    let transactions = vec![good.clone(), undecidable];
    let expected = ApplyError::ExecutionFailure {
        height: 2,
        index: 1,
        plugin: name("flaky"),
        reason: "oracle unreachable".to_string(),
    };
    // A proposer cannot build the block ...
    assert_eq!(
        make_block(&wsv, time, transactions.clone()).map(|_| ()),
        Err(expected.clone())
    );
    // ... and a block that carries it is refused whatever commitment it claims.
    let (mut block, _) = make_block(&wsv, time, vec![]).expect("an empty block executes");
    block.header.tx_merkle_root =
        kasane_model::block::tx_merkle_root(&transactions.iter().map(SignedTransaction::hash).collect::<Vec<_>>());
    block.transactions = transactions.clone();
    let hashes = hashes_of(&transactions);
    assert_eq!(
        wsv.apply_block(&block, &hashes).map(|executed| executed.outcomes),
        Err(expected)
    );
    assert_eq!(snapshot(&wsv), before);
    assert_eq!(wsv.balance(&coin(ERIN)), 1_000);
    // Nothing was marked: the good transaction is not a replay in the next block.
    let outcomes = apply_at(&mut wsv, time, vec![good]).expect("applies").outcomes;
    assert_eq!(outcomes, vec![TransactionOutcome::Committed]);
    assert_eq!(wsv.balance(&coin(ALICE)), ALICE_COINS - 10);
}

#[test]
fn unknown_validator_names_are_refused() {
    let mut wsv = standard_wsv();
    let register = Instruction::RegisterDomain {
        domain: DomainId::new("mystery").expect("valid"),
        validator: name("nope"),
    };
    assert_instruction_error(
        &run(&mut wsv, ALICE, &alice_key(), vec![register]),
        0,
        InstructionError::UnknownValidator(name("nope")),
    );
    assert!(wsv.domain(&DomainId::new("mystery").expect("valid")).is_none());
    // "flaky" is known only to nodes that registered it.
    let register = Instruction::RegisterDomain {
        domain: DomainId::new("mystery").expect("valid"),
        validator: name("flaky"),
    };
    assert_instruction_error(
        &run(&mut wsv, ALICE, &alice_key(), vec![register]),
        0,
        InstructionError::UnknownValidator(name("flaky")),
    );
    // The genesis builder refuses it too.
    let mut builder = GenesisBuilder::new(CHAIN.parse().expect("valid chain"), genesis_key(), T0);
    builder.domain(&DomainId::new("mystery").expect("valid"), name("nope"));
    match builder.build(PluginRegistry::builtin()) {
        Err(GenesisError::Rejected {
            index: 0,
            reason: RejectionReason::Instruction { index: 0, error },
        }) => {
            assert_eq!(error, InstructionError::UnknownValidator(name("nope")));
        }
        other => panic!(
            "expected the genesis to be refused, got {:?}",
            other.map(|(block, _)| block.block.header)
        ),
    }
}
