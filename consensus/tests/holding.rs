//! Acknowledgement by f + 1 (docs/PROTOCOL.md section 7.1), through the replica: a client's
//! transaction is acknowledged once f + 1 validators hold it, a peer's gossip is answered with
//! what the peer holds, and answers from non-validators do not count.

mod common;

use kasane_consensus::replica::{Outbound, Replica, ReplicaEvent};
use kasane_consensus::{Config, Message};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::{Kura, KuraConfig, MemoryBackend};
use kasane_model::{Hash, KeyPair};
use kasane_wsv::PluginRegistry;

fn validator(chain: &FixtureChain, index: usize) -> Replica<MemoryBackend> {
    let disk = MemoryBackend::new();
    let (mut kura, _) = Kura::open(disk.clone(), KuraConfig::default()).unwrap();
    kura.append(&chain.genesis).unwrap();
    drop(kura);
    Replica::open(
        chain.validators[index].clone(),
        Config::default(),
        disk,
        KuraConfig::default(),
        PluginRegistry::builtin(),
        Box::new(common::NoLocks),
        1_000,
    )
    .unwrap()
}

fn held(replica: &mut Replica<MemoryBackend>) -> Vec<Hash> {
    replica
        .take_events()
        .into_iter()
        .flat_map(|event| match event {
            ReplicaEvent::Held { payloads } => payloads,
            _ => Vec::new(),
        })
        .collect()
}

fn gossip(out: &[Outbound]) -> Message {
    out.iter()
        .find_map(|item| match item {
            Outbound::Broadcast {
                message: message @ Message::Transactions(_),
            } => Some(message.clone()),
            _ => None,
        })
        .expect("the admitted transactions are gossiped")
}

#[test]
fn a_client_transaction_is_acknowledged_by_f_plus_one_validators() {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block: 3,
        accounts: 8,
        validators: 4,
        seed: 9,
        ..FixtureConfig::default()
    })
    .unwrap();
    let (committed, _) = chain.next_block().unwrap();
    let transactions = committed.block.transactions;
    let now_ms = committed.block.header.timestamp_ms;
    let payloads: Vec<Hash> = transactions
        .iter()
        .map(|transaction| transaction.payload.hash())
        .collect();
    let mut admitting = validator(&chain, 0);
    let mut peer = validator(&chain, 1);
    let (admitted, out) = admitting.submit(now_ms, transactions[..2].to_vec());
    assert!(admitted.iter().all(Result::is_ok), "{admitted:?}");
    // Held by itself only: one of the f + 1 = 2 needed.
    assert!(held(&mut admitting).is_empty());
    assert_eq!(admitting.holders(&payloads[0]), Some((1, 2)));

    // The peer already had the second from elsewhere: it still answers for both.
    let (_, _) = peer.submit(now_ms, vec![transactions[1].clone()]);
    let answer = peer.on_message(now_ms, admitting.key(), gossip(&out));
    let reply = answer
        .iter()
        .find_map(|item| match item {
            Outbound::Send {
                to,
                message: Message::Held(held),
            } if *to == admitting.key() => Some(held.clone()),
            _ => None,
        })
        .expect("the peer answers Held");
    assert_eq!(reply, payloads[..2]);

    // A key outside the validators counts for nothing.
    let stranger = KeyPair::derive(b"holding-stranger", 0).public_key();
    assert!(admitting
        .on_message(now_ms, stranger, Message::Held(reply.clone()))
        .is_empty());
    assert!(held(&mut admitting).is_empty());

    // The validator's answer makes two holders: both acknowledged, once.
    admitting.on_message(now_ms, peer.key(), Message::Held(reply.clone()));
    assert_eq!(held(&mut admitting), payloads[..2]);
    assert_eq!(admitting.holders(&payloads[0]), None);
    admitting.on_message(now_ms, peer.key(), Message::Held(reply));
    assert!(held(&mut admitting).is_empty());
}

/// Past its time-to-live a payload leaves the replay memory, so "already committed" can no
/// longer be told. A node that still took such a transaction (from a client, or from a peer's
/// re-gossip) proposed it again: the 10-minute soak with a 60 s time-to-live found 10,511
/// transactions committed once and then included in up to six later blocks, rejected there as
/// expired. Admission refuses them now, and a queue drops what expired before it gossips or
/// proposes.
#[test]
fn an_expired_transaction_is_refused_and_leaves_the_queue() {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block: 2,
        accounts: 8,
        validators: 4,
        seed: 12,
        ..FixtureConfig::default()
    })
    .unwrap();
    let (committed, _) = chain.next_block().unwrap();
    let transactions = committed.block.transactions;
    let expires_at = transactions[0].payload.expires_at_ms();
    let mut replica = validator(&chain, 0);

    let (late, _) = replica.submit(expires_at + 1, vec![transactions[0].clone()]);
    assert!(
        late[0].as_ref().is_err_and(|error| error.starts_with("expired at")),
        "{late:?}"
    );
    assert_eq!(replica.queue_len(), 0);

    let (admitted, _) = replica.submit(expires_at - 1, vec![transactions[1].clone()]);
    assert!(admitted[0].is_ok(), "{admitted:?}");
    assert_eq!(replica.queue_len(), 1);
    let out = replica.on_timer(expires_at + 1, kasane_consensus::Timer::View { height: 2, view: 0 });
    assert_eq!(replica.queue_len(), 0);
    assert!(
        !out.iter().any(|item| matches!(
            item,
            Outbound::Broadcast {
                message: Message::Transactions(_)
            }
        )),
        "an expired transaction is not gossiped again"
    );
}
