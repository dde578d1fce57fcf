//! A lock store that fails stops the replica (R17): no vote leaves without its record, the
//! replica says why once, and it sends nothing more, whatever it is given after.

mod common;

use kasane_consensus::replica::{LockStore, LockStoreError, Outbound, Replica, ReplicaEvent};
use kasane_consensus::{Config, LockRecord, Message, Timer};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::{KuraConfig, MemoryBackend};
use kasane_wsv::PluginRegistry;

/// A disk that refuses every write.
struct FailingLocks;

impl LockStore for FailingLocks {
    fn save(&mut self, _: &LockRecord) -> Result<(), LockStoreError> {
        Err(LockStoreError("no space left on device".to_string()))
    }

    fn load(&self) -> Result<Option<LockRecord>, LockStoreError> {
        Ok(None)
    }
}

fn votes(out: &[Outbound]) -> usize {
    out.iter()
        .filter(|item| {
            matches!(
                item,
                Outbound::Send {
                    message: Message::Vote(_),
                    ..
                } | Outbound::Broadcast {
                    message: Message::Vote(_)
                }
            )
        })
        .count()
}

/// The leader of height 1 over `locks`, given one block's transactions and then its block
/// time: the replica, what it sent, and the time.
fn leader_with(locks: Box<dyn LockStore>) -> (Replica<MemoryBackend>, Vec<Outbound>, u64) {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block: 16,
        accounts: 8,
        validators: 4,
        seed: 5,
    })
    .expect("the fixture chain builds");
    let disk = common::genesis_store(&chain);
    let (committed, _) = chain.next_block().expect("the fixture makes its next block");
    let now_ms = committed.block.header.timestamp_ms;
    let probe = common::replica_on(chain.validators[0].clone(), Config::default(), disk.clone());
    let leader_key = probe.core().topology().leader(0).expect("a leader in view 0");
    let leader = chain
        .validators
        .iter()
        .find(|key| key.public_key() == leader_key)
        .expect("the leader is a fixture validator")
        .clone();
    let mut replica = Replica::open(
        leader,
        Config::default(),
        disk,
        KuraConfig::default(),
        PluginRegistry::builtin(),
        locks,
        1_000,
    )
    .expect("the replica opens");
    let (admitted, mut out) = replica.submit(now_ms, committed.block.transactions);
    assert!(admitted.iter().all(Result::is_ok), "{admitted:?}");
    let height = replica.core().height();
    out.extend(replica.on_timer(now_ms + 1, Timer::BlockTime { height, view: 0 }));
    (replica, out, now_ms)
}

#[test]
fn a_failing_lock_store_stops_the_replica_before_its_vote() {
    // The control: with a store that works, the leader proposes and votes.
    let (working, out, _) = leader_with(Box::new(common::NoLocks));
    assert!(votes(&out) > 0, "the leader votes for its own proposal: {out:?}");
    assert_eq!(working.stopped(), None);

    let (mut replica, out, now_ms) = leader_with(Box::new(FailingLocks));
    assert_eq!(votes(&out), 0, "a vote left without its record: {out:?}");
    let failures: Vec<String> = replica
        .take_events()
        .into_iter()
        .filter_map(|event| match event {
            ReplicaEvent::LockStoreFailed { error } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("no space left on device"), "{failures:?}");
    assert!(replica.stopped().is_some());

    // Stopped for good: timers, messages and clients get nothing out of it (a live replica
    // would suspect the view on this timer and say so).
    let height = replica.core().height();
    assert!(replica
        .on_timer(now_ms + 2, Timer::BlockTime { height, view: 0 })
        .is_empty());
    assert!(replica
        .on_timer(now_ms + 10_000, Timer::View { height, view: 0 })
        .is_empty());
    let (admitted, out) = replica.submit(now_ms + 3, Vec::new());
    assert!(admitted.is_empty() && out.is_empty());
    let status = Message::Status {
        height: 5,
        head_hash: kasane_model::Hash::of(b"ahead"),
    };
    let peer = replica.core().topology().leader(1).expect("a leader in view 1");
    assert!(replica.on_message(now_ms + 3, peer, status).is_empty());
    assert!(replica.take_events().is_empty(), "it reports the failure once");
}
