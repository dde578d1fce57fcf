//! What a leader builds from its queue (R4): never a block past the limits every replica
//! enforces, whatever its configuration asks for.

mod common;

use std::sync::Arc;

use kasane_consensus::replica::{Outbound, Replica, ReplicaEvent};
use kasane_consensus::{Config, Message, Timer};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::{Kura, KuraConfig, MemoryBackend};
use kasane_model::block::BLOCK_TRANSACTIONS_MAX;
use kasane_model::ids::{AccountId, DomainId, Name};
use kasane_model::instruction::Instruction;
use kasane_model::transaction::TransactionPayload;
use kasane_model::{KeyPair, SignedTransaction};
use kasane_wsv::genesis::GenesisBuilder;
use kasane_wsv::{Domain, PluginContext, PluginRegistry, ValidatorPlugin, Verdict};

/// The number of transactions in the block a leader proposed in `out`, if it proposed one.
fn proposed_transactions(out: &[Outbound]) -> Option<usize> {
    out.iter().find_map(|item| match item {
        Outbound::Broadcast {
            message: Message::Proposal(proposal),
        } => Some(proposal.block.transactions.len()),
        Outbound::Broadcast {
            message: Message::ProposalDigest(digest),
        } => Some(digest.transactions.len()),
        _ => None,
    })
}

/// Blocks of 20,000 once halted a cluster: the leader asked its queue for 20,000, the world
/// state refused to execute more than 16,384, and the refusal became "nothing to propose" at
/// every height and view. Asked for more than the limit, a leader proposes a full block.
#[test]
fn a_leader_asked_for_more_than_the_block_limit_proposes_a_full_block() {
    let per_block = BLOCK_TRANSACTIONS_MAX / 2 + 1_000;
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 2,
        transactions_per_block: per_block,
        accounts: 64,
        validators: 4,
        seed: 21,
    })
    .unwrap();
    let genesis_disk = common::genesis_store(&chain);
    let mut transactions: Vec<SignedTransaction> = Vec::new();
    let mut now_ms = 0;
    for _ in 0..2 {
        let (committed, _) = chain.next_block().unwrap();
        now_ms = committed.block.header.timestamp_ms;
        transactions.extend(committed.block.transactions);
    }
    assert!(transactions.len() > BLOCK_TRANSACTIONS_MAX);

    let config = Config {
        block_txs_max: 20_000,
        ..Config::default()
    };
    let probe = common::replica_on(chain.validators[0].clone(), config.clone(), genesis_disk.clone());
    let leader_key = probe.core().topology().leader(0).expect("a leader in view 0");
    let leader = chain
        .validators
        .iter()
        .find(|key| key.public_key() == leader_key)
        .expect("the leader is a fixture validator")
        .clone();
    let mut replica = common::replica_queueing(leader, config, genesis_disk, 2 * BLOCK_TRANSACTIONS_MAX);
    for batch in transactions.chunks(4_096) {
        let (admitted, _) = replica.submit(now_ms, batch.to_vec());
        assert!(
            admitted.iter().all(Result::is_ok),
            "{:?}",
            admitted.iter().find(|result| result.is_err())
        );
    }
    assert_eq!(replica.queue_len(), transactions.len());

    let height = replica.core().height();
    let out = replica.on_timer(now_ms + 1, Timer::BlockTime { height, view: 0 });
    assert_eq!(proposed_transactions(&out), Some(BLOCK_TRANSACTIONS_MAX));
}

/// Decides nothing about nonce 13 (a plugin that lost its oracle); everything else is valid.
struct Undecided;

impl ValidatorPlugin for Undecided {
    fn validate(&self, _: &PluginContext<'_, '_>, _: &Domain, transaction: &SignedTransaction) -> Verdict {
        match transaction.payload.nonce {
            13 => Verdict::ExecutionFailure("oracle unreachable".to_string()),
            _ => Verdict::Valid,
        }
    }
}

/// A transaction a validator plugin cannot decide on stops any block that carries it (wsv's
/// plugin rules). Queued at a leader, it once made every block that leader built fail, and
/// being gossiped, every leader's: the chain stopped. The leader leaves it out, drops it from
/// its queue, says so, and proposes the rest.
#[test]
fn a_transaction_no_block_can_carry_leaves_the_queue_and_the_rest_are_proposed() {
    let validators: Vec<KeyPair> = (0..4)
        .map(|index| KeyPair::derive(b"building/validator", index))
        .collect();
    let erin_key = KeyPair::derive(b"building/erin", 0);
    let erin = AccountId::new("erin", "flaky").unwrap();
    let genesis_ms = 1_000_000;
    let mut builder = GenesisBuilder::new(
        "building".parse().unwrap(),
        KeyPair::derive(b"building/genesis", 0),
        genesis_ms,
    );
    for validator in &validators {
        builder.peer(validator.public_key());
    }
    builder.domain(&DomainId::new("flaky").unwrap(), Name::new("flaky").unwrap());
    let coin = builder.funded_account(erin.clone(), erin_key.public_key(), 1_000);
    let mut plugins = PluginRegistry::builtin();
    plugins.register("flaky", Arc::new(Undecided));
    let (genesis, wsv) = builder.build(plugins.clone()).unwrap();
    let disk = MemoryBackend::new();
    Kura::open(disk.clone(), KuraConfig::default())
        .unwrap()
        .0
        .append(&genesis)
        .unwrap();

    let now_ms = genesis_ms + 1_000;
    let transfer = |nonce: u32| {
        let payload = TransactionPayload {
            chain: wsv.chain().clone(),
            creator: erin.clone(),
            instructions: vec![Instruction::Transfer {
                source: coin.clone(),
                destination: erin.clone(),
                amount: 1,
            }],
            created_at_ms: now_ms,
            ttl_ms: 60_000,
            nonce,
        };
        SignedTransaction::sign(payload, &[&erin_key])
    };
    let (good, undecidable) = (transfer(1), transfer(13));

    let open = |key: KeyPair| {
        Replica::open(
            key,
            Config::default(),
            disk.clone(),
            KuraConfig::default(),
            plugins.clone(),
            Box::new(common::NoLocks),
            100,
        )
        .unwrap()
    };
    let leader_key = open(validators[0].clone()).core().topology().leader(0).unwrap();
    let mut replica = open(
        validators
            .iter()
            .find(|key| key.public_key() == leader_key)
            .unwrap()
            .clone(),
    );
    let (admitted, _) = replica.submit(now_ms, vec![undecidable.clone(), good]);
    assert!(admitted.iter().all(Result::is_ok), "{admitted:?}");
    let height = replica.core().height();
    let out = replica.on_timer(now_ms + 1, Timer::BlockTime { height, view: 0 });
    assert_eq!(proposed_transactions(&out), Some(1));
    assert_eq!(replica.queue_len(), 1);
    let dropped: Vec<_> = replica
        .take_events()
        .into_iter()
        .filter_map(|event| match event {
            ReplicaEvent::BuildFailed { dropped, error, .. } => Some((dropped, error)),
            _ => None,
        })
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].0, Some(undecidable.payload.hash()));
    assert!(dropped[0].1.contains("oracle unreachable"), "{}", dropped[0].1);
}
