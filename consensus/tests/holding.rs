//! Acknowledgement by f + 1 (docs/PROTOCOL.md section 7.1), through the replica: a client's
//! transaction is acknowledged once f + 1 validators hold it, a peer's gossip is answered with
//! what the peer holds, and answers from non-validators do not count.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use kasane_consensus::holding::MemoryHolds;
use kasane_consensus::replica::{Outbound, Replica, ReplicaEvent};
use kasane_consensus::{Config, Message, Timer};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::MemoryBackend;
use kasane_model::{Hash, KeyPair, SignedTransaction};

fn validator(chain: &FixtureChain, index: usize) -> Replica<MemoryBackend> {
    validator_on(chain, index, common::genesis_store(chain))
}

fn validator_on(chain: &FixtureChain, index: usize, disk: MemoryBackend) -> Replica<MemoryBackend> {
    common::replica_on(chain.validators[index].clone(), Config::default(), disk)
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

fn asks_for_sync(out: &[Outbound]) -> bool {
    out.iter().any(|item| {
        matches!(
            item,
            Outbound::Timer {
                timer: Timer::SyncHolds,
                ..
            }
        )
    })
}

/// A four-validator fixture chain and the signed transactions of its next block (valid at that
/// block's time), with their payload hashes.
struct Fixture {
    chain: FixtureChain,
    transactions: Vec<SignedTransaction>,
    payloads: Vec<Hash>,
    now_ms: u64,
}

fn fixture(transactions_per_block: usize, seed: u64) -> Fixture {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block,
        accounts: 8,
        validators: 4,
        seed,
    })
    .unwrap();
    let (committed, _) = chain.next_block().unwrap();
    let transactions = committed.block.transactions;
    let payloads = transactions
        .iter()
        .map(|transaction| transaction.payload.hash())
        .collect();
    Fixture {
        chain,
        transactions,
        payloads,
        now_ms: committed.block.header.timestamp_ms,
    }
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

/// Whether `out` gossips transactions.
fn gossips(out: &[Outbound]) -> bool {
    out.iter().any(|item| {
        matches!(
            item,
            Outbound::Broadcast {
                message: Message::Transactions(_)
            }
        )
    })
}

#[test]
fn a_client_transaction_is_acknowledged_by_f_plus_one_validators() {
    let Fixture {
        chain,
        transactions,
        payloads,
        now_ms,
    } = fixture(3, 9);
    let mut admitting = validator(&chain, 0);
    let mut peer = validator(&chain, 1);
    let (admitted, out) = admitting.submit(now_ms, transactions[..2].to_vec());
    assert!(admitted.iter().all(Result::is_ok), "{admitted:?}");
    // Not even held by itself until its hold store synced them (R18b).
    assert_eq!(admitting.holders(&payloads[0]), Some((0, 2)));
    assert!(asks_for_sync(&out));
    assert!(admitting.on_timer(now_ms, Timer::SyncHolds).is_empty());
    // Held by itself only: one of the f + 1 = 2 needed.
    assert!(held(&mut admitting).is_empty());
    assert_eq!(admitting.holders(&payloads[0]), Some((1, 2)));

    // The peer already had the second from elsewhere: it still answers for both, once its
    // store synced them.
    let (_, _) = peer.submit(now_ms, vec![transactions[1].clone()]);
    let answer = peer.on_message(now_ms, admitting.key(), gossip(&out));
    assert!(!answer.iter().any(|item| matches!(
        item,
        Outbound::Send {
            message: Message::Held(_),
            ..
        }
    )));
    let answer = peer.on_timer(now_ms, Timer::SyncHolds);
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
    let Fixture {
        chain, transactions, ..
    } = fixture(2, 12);
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
    assert!(!gossips(&out), "an expired transaction is not gossiped again");
}

/// R18: queued transactions are gossiped again when a view times out, and only then. Every
/// height arms a view timer and those of heights that committed in time still fire; re-gossip
/// on them sent the oldest queued transactions to every peer once per block, and at full load
/// (`kasane bench --rate 26000`) more than half of what each node received was such duplicates.
#[test]
fn only_a_timeout_of_the_current_view_gossips_the_queue_again() {
    let Fixture {
        chain,
        transactions,
        now_ms,
        ..
    } = fixture(2, 13);
    let mut replica = validator(&chain, 0);
    let (admitted, _) = replica.submit(now_ms, vec![transactions[0].clone()]);
    assert!(admitted[0].is_ok(), "{admitted:?}");
    let (height, view) = (replica.core().height(), replica.core().view());

    let stale = replica.on_timer(
        now_ms + 1,
        Timer::View {
            height: height - 1,
            view,
        },
    );
    assert!(!gossips(&stale), "a timer of a height that committed is not a timeout");
    let current = replica.on_timer(now_ms + 2, Timer::View { height, view });
    match gossip(&current) {
        Message::Transactions(again) => assert_eq!(again, vec![transactions[0].clone()]),
        other => panic!("expected transactions, got {other:?}"),
    }
    assert_eq!(replica.queue_len(), 1);
}

/// What admission did with peers' gossip is counted (the node's `kasane_gossip_*_total`): a
/// duplicate is told apart from a transaction queued here and from one refused.
#[test]
fn gossip_counts_say_what_admission_did_with_each_transaction() {
    use kasane_consensus::replica::GossipCounts;
    let Fixture {
        chain,
        transactions,
        now_ms,
        ..
    } = fixture(3, 14);
    let mut peer = validator(&chain, 1);
    let from = chain.validators[0].public_key();
    let mut forged = transactions[2].clone();
    forged.signatures[0].signature.0[0] ^= 1;

    peer.on_message(now_ms, from, Message::Transactions(transactions[..2].to_vec()));
    peer.on_message(
        now_ms,
        from,
        Message::Transactions(vec![transactions[0].clone(), forged]),
    );
    assert_eq!(
        peer.gossip_counts(),
        GossipCounts {
            admitted: 2,
            already_held: 1,
            queue_full: 0,
            refused: 1,
        }
    );
    assert_eq!(peer.queue_len(), 2);
}

/// R18b. Holding in memory promised only that some holder stays up until the block commits: the
/// kill-acknowledger testnet (kill -9 the acknowledging node every 15 s) lost 1,424 acknowledged
/// transactions when queues were full, because the acknowledger and then its one other holder
/// were each killed, one after the other, before either proposed them. A holder now answers only
/// for what its hold store synced, and a restart queues that again.
#[test]
fn a_restarted_holder_queues_again_what_it_synced_and_answers_only_after_a_sync() {
    let Fixture {
        chain,
        transactions,
        payloads,
        now_ms,
    } = fixture(4, 21);
    let disk = common::genesis_store(&chain);
    let holds = MemoryHolds::default();
    let boot = |holds: &MemoryHolds| {
        let mut replica = validator_on(&chain, 1, disk.clone()).with_hold_store(Box::new(holds.clone()));
        replica.start(now_ms);
        replica
    };
    let gossiper = validator(&chain, 0);

    // Two transactions gossiped, synced, answered; a third gossiped but the node dies before
    // its sync: it was never answered for, and the restart does not bring it back.
    let mut holder = boot(&holds);
    holder.on_message(
        now_ms,
        gossiper.key(),
        Message::Transactions(transactions[..2].to_vec()),
    );
    let answer = holder.on_timer(now_ms, Timer::SyncHolds);
    assert!(answer.iter().any(|item| matches!(
        item,
        Outbound::Send { message: Message::Held(held), .. } if *held == payloads[..2]
    )));
    let out = holder.on_message(
        now_ms,
        gossiper.key(),
        Message::Transactions(vec![transactions[2].clone()]),
    );
    assert!(asks_for_sync(&out));
    drop(holder);
    holds.crash();
    assert_eq!(holds.payloads(), payloads[..2]);

    let mut holder = boot(&holds);
    assert_eq!(holder.queue_len(), 2);
    assert!(holder.is_queued(&payloads[0]) && holder.is_queued(&payloads[1]));
    assert!(holder
        .take_events()
        .contains(&ReplicaEvent::Restored { queued: 2, dropped: 0 }));

    // A sync that fails answers nothing: the peer must find its f + 1 elsewhere.
    holds.set_failing(true);
    holder.on_message(
        now_ms,
        gossiper.key(),
        Message::Transactions(vec![transactions[3].clone()]),
    );
    assert!(holder.on_timer(now_ms, Timer::SyncHolds).is_empty());
    assert!(holder
        .take_events()
        .iter()
        .any(|event| matches!(event, ReplicaEvent::HoldStoreFailed { error } if error == "the store is failing")));
    holds.set_failing(false);

    // What expires leaves the queue and the store.
    let expires_at = transactions[0].payload.expires_at_ms();
    holder.on_timer(expires_at + 1, Timer::View { height: 2, view: 0 });
    assert_eq!(holder.queue_len(), 0);
    assert!(holds.payloads().is_empty(), "{:?}", holds.payloads());
}

/// A hold store that syncs in the background: every sync is started and answered only when
/// the test hands its outcome to the replica, as the node's hold log thread does.
#[derive(Debug, Default)]
struct Background {
    tickets: u64,
}

impl kasane_consensus::holding::HoldStore for Background {
    fn append(&mut self, _payload: &Hash, _transaction: &SignedTransaction, _encoding: Option<Vec<u8>>) {}

    fn release(&mut self, _payloads: &[Hash]) {}

    fn sync(&mut self) -> kasane_consensus::holding::SyncStart {
        self.tickets += 1;
        kasane_consensus::holding::SyncStart::Started(self.tickets)
    }

    fn load(&mut self) -> Vec<SignedTransaction> {
        Vec::new()
    }
}

fn held_answers(out: &[Outbound]) -> Vec<Vec<Hash>> {
    out.iter()
        .filter_map(|item| match item {
            Outbound::Send {
                message: Message::Held(held),
                ..
            } => Some(held.clone()),
            _ => None,
        })
        .collect()
}

/// The node's hold log syncs on a thread of its own, so the consensus task does not wait on
/// the disk: a replica answers `Held` for what a background sync covered only when its outcome
/// comes back, in order, and a failed one answers nothing.
#[test]
fn a_background_sync_answers_only_when_its_outcome_comes_back() {
    let Fixture {
        chain,
        transactions,
        payloads,
        now_ms,
    } = fixture(4, 23);
    let mut holder = validator(&chain, 1).with_hold_store(Box::<Background>::default());
    holder.start(now_ms);
    let gossiper = validator(&chain, 0);

    holder.on_message(
        now_ms,
        gossiper.key(),
        Message::Transactions(transactions[..2].to_vec()),
    );
    assert!(held_answers(&holder.on_timer(now_ms, Timer::SyncHolds)).is_empty());
    let out = holder.on_message(
        now_ms,
        gossiper.key(),
        Message::Transactions(vec![transactions[2].clone()]),
    );
    assert!(asks_for_sync(&out), "a second sync starts while the first is out");
    assert!(held_answers(&holder.on_timer(now_ms, Timer::SyncHolds)).is_empty());
    let out = holder.on_message(
        now_ms,
        gossiper.key(),
        Message::Transactions(vec![transactions[3].clone()]),
    );
    assert!(asks_for_sync(&out));
    assert!(held_answers(&holder.on_timer(now_ms, Timer::SyncHolds)).is_empty());

    // The first sync's outcome answers for the first two only.
    assert_eq!(
        held_answers(&holder.on_holds_synced(1, Ok(()))),
        vec![payloads[..2].to_vec()]
    );
    assert!(
        held_answers(&holder.on_holds_synced(1, Ok(()))).is_empty(),
        "answered once"
    );
    // The third sync's outcome covers the second too (the writer syncs in order).
    assert_eq!(
        held_answers(&holder.on_holds_synced(3, Ok(()))),
        vec![vec![payloads[2]], vec![payloads[3]]]
    );

    // A failed background sync answers nothing and is reported.
    holder.take_events();
    holder.on_message(
        now_ms,
        gossiper.key(),
        Message::Transactions(vec![transactions[0].clone()]),
    );
    holder.on_timer(now_ms, Timer::SyncHolds);
    assert!(held_answers(&holder.on_holds_synced(4, Err("disk full".to_string()))).is_empty());
    assert!(holder
        .take_events()
        .iter()
        .any(|event| matches!(event, ReplicaEvent::HoldStoreFailed { error } if error == "disk full")));
}
