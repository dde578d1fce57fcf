//! Acknowledgement by f + 1 (docs/PROTOCOL.md section 7.1): a client's transaction counts as
//! acknowledged once f + 1 validators hold it in their queues, so no crash of f replicas can
//! lose it. The replica that admitted it gossips it; every replica that then holds it answers
//! [`crate::Message::Held`]; this table counts the answers.
//!
//! Holding is durable (R18b): every queued transaction is in the replica's [`HoldStore`], and
//! a replica answers `Held` (or counts itself) only once the store has synced it. A holder that
//! crashes and restarts re-queues what it held, so crashes of any number of holders one after
//! the other, each restarting, lose nothing; only a holder whose disk is lost (a wiped node)
//! forgets, and f + 1 holders survive f of those. R18 (gossip again on every view timeout) and
//! R4 (a leader proposes its oldest queued transactions) carry the transaction from a holder
//! into a block.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ahash::AHashMap as HashMap;

use kasane_model::{Hash, PublicKey, SignedTransaction};

/// How long a replica gathers what it newly holds before it syncs its [`HoldStore`] and answers
/// (group commit): one sync per interval, however many gossip messages and client requests
/// arrived in it. It adds at most this much to an acknowledgement.
pub const HOLD_SYNC_MS: u64 = 5;

/// Where a replica keeps the transactions of its queue, so that a restart does not forget what
/// it told its peers and clients it holds (docs/PROTOCOL.md section 7.1, R18b). The node keeps
/// them in a log of segment files (node/src/hold_log.rs); the simulator on its simulated disk.
pub trait HoldStore: Send {
    /// A transaction entered the queue. Durable only after the next successful [`Self::sync`].
    /// `encoding`, when the host kept it from hashing, is `codec::encode(transaction)`; it is
    /// handed over, so a store that writes elsewhere takes it without a copy.
    fn append(&mut self, payload: &Hash, transaction: &SignedTransaction, encoding: Option<Vec<u8>>);
    /// These transactions left the queue (their block committed, or they expired): a restart
    /// need not queue them again. Need not be durable: a payload released but still stored is
    /// dropped when it is queued again, as committed or expired.
    fn release(&mut self, payloads: &[Hash]);
    /// Makes every append and release so far durable, at once or in the background. On an error
    /// nothing appended since the last successful sync counts as held. A store that syncs in the
    /// background answers [`SyncStart::Started`] and its host later hands the outcome to
    /// [`crate::replica::Replica::on_holds_synced`]: the consensus task never waits on the disk
    /// for a hold (docs/NODE.md, "Durability").
    fn sync(&mut self) -> SyncStart;
    /// What the store held when the replica started and was not released, oldest first. Called
    /// once, by [`crate::replica::Replica::start`].
    fn load(&mut self) -> Vec<SignedTransaction>;
}

/// How a [`HoldStore::sync`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStart {
    /// The store synced at once, with this outcome.
    Done(Result<(), String>),
    /// The store syncs in the background; its outcome comes back with this ticket. Tickets rise
    /// by one per sync, and an outcome for a ticket answers every earlier one as well (the
    /// background writer syncs in order and may sync several at once).
    Started(u64),
}

/// A store that keeps nothing: a restart forgets every held transaction. For tests of the
/// replica alone, and hosts that accept the weaker promise of section 7.1 (at most f holders
/// down at once before the block commits).
#[derive(Debug, Default)]
pub struct VolatileHolds;

impl HoldStore for VolatileHolds {
    fn append(&mut self, _payload: &Hash, _transaction: &SignedTransaction, _encoding: Option<Vec<u8>>) {}

    fn release(&mut self, _payloads: &[Hash]) {}

    fn sync(&mut self) -> SyncStart {
        SyncStart::Done(Ok(()))
    }

    fn load(&mut self) -> Vec<SignedTransaction> {
        Vec::new()
    }
}

/// A hold store in memory that outlives its replica, as a disk does: what was synced survives
/// [`MemoryHolds::crash`], what was only appended does not. Clones share the store, so a host
/// keeps one and hands a clone to each incarnation of the replica (the simulator's disks, the
/// replica tests). [`MemoryHolds::set_failing`] makes every sync fail, as a broken disk would.
#[derive(Debug, Clone, Default)]
pub struct MemoryHolds(Arc<Mutex<StoredHolds>>);

#[derive(Debug, Default)]
struct StoredHolds {
    /// Synced transactions by the order they were appended.
    synced: BTreeMap<u64, (Hash, SignedTransaction)>,
    /// Where each synced payload is in `synced`.
    by_payload: BTreeMap<Hash, u64>,
    /// Appended since the last sync.
    pending: Vec<(Hash, SignedTransaction)>,
    next: u64,
    failing: bool,
}

impl MemoryHolds {
    fn stored(&self) -> MutexGuard<'_, StoredHolds> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The power goes: what was not synced is gone.
    pub fn crash(&self) {
        self.stored().pending.clear();
    }

    pub fn set_failing(&self, failing: bool) {
        self.stored().failing = failing;
    }

    /// The synced payloads, oldest first.
    pub fn payloads(&self) -> Vec<Hash> {
        self.stored().synced.values().map(|(payload, _)| *payload).collect()
    }
}

impl HoldStore for MemoryHolds {
    fn append(&mut self, payload: &Hash, transaction: &SignedTransaction, _encoding: Option<Vec<u8>>) {
        self.stored().pending.push((*payload, transaction.clone()));
    }

    fn release(&mut self, payloads: &[Hash]) {
        let mut stored = self.stored();
        for payload in payloads {
            if let Some(at) = stored.by_payload.remove(payload) {
                stored.synced.remove(&at);
            }
        }
        stored.pending.retain(|(payload, _)| !payloads.contains(payload));
    }

    fn sync(&mut self) -> SyncStart {
        let mut stored = self.stored();
        if stored.failing {
            return SyncStart::Done(Err("the store is failing".to_string()));
        }
        for (payload, transaction) in std::mem::take(&mut stored.pending) {
            let at = stored.next;
            stored.next += 1;
            if let Some(old) = stored.by_payload.insert(payload, at) {
                stored.synced.remove(&old);
            }
            stored.synced.insert(at, (payload, transaction));
        }
        SyncStart::Done(Ok(()))
    }

    fn load(&mut self) -> Vec<SignedTransaction> {
        self.stored()
            .synced
            .values()
            .map(|(_, transaction)| transaction.clone())
            .collect()
    }
}

/// What a replica newly holds and has not synced yet: the `Held` answers owed to peers, and its
/// own clients' transactions it will count itself a holder of.
#[derive(Debug, Default)]
pub struct Unsynced {
    /// Payload hashes to answer each peer with, in the order they came.
    pub peers: BTreeMap<PublicKey, Vec<Hash>>,
    /// This replica's clients' transactions (when it is a validator).
    pub own: Vec<Hash>,
    /// Whether a [`crate::Timer::SyncHolds`] is out.
    pub timer_out: bool,
}

impl Unsynced {
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.own.is_empty()
    }
}

/// How long a transaction waits for its holders before the table forgets it. The host answers
/// its client long before (a few seconds); this only bounds the table when peers never answer.
pub const HOLD_WAIT_MS_MAX: u64 = 30_000;

/// The admitting replica's count of who holds each of its clients' transactions.
#[derive(Debug, Default)]
pub struct Holding {
    /// Payload hash -> when it was added and the validators known to hold it (the admitting
    /// replica among them when it is a validator). Only transactions not yet held by enough.
    waiting: HashMap<Hash, (u64, Vec<PublicKey>)>,
    /// When each entry was added, oldest first, to forget entries past [`HOLD_WAIT_MS_MAX`].
    /// Entries that left `waiting` stay until they reach the front or the deque is compacted.
    added: VecDeque<(u64, Hash)>,
}

impl Holding {
    /// Transactions still counting holders.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Bytes the tables hold (estimate, `kasane_model::footprint`).
    pub fn footprint(&self) -> usize {
        use kasane_model::footprint::{deque_bytes, map_bytes, vec_bytes};
        map_bytes(&self.waiting)
            + self
                .waiting
                .values()
                .map(|(_, holders)| vec_bytes(holders))
                .sum::<usize>()
            + deque_bytes(&self.added)
    }

    /// Starts counting for `payload`, held so far by `holders`. Returns true when that is already
    /// `needed` (a cluster of one): the transaction is acknowledged at once and not kept.
    pub fn wait(&mut self, now_ms: u64, payload: Hash, mut holders: Vec<PublicKey>, needed: usize) -> bool {
        self.forget_older_than(now_ms.saturating_sub(HOLD_WAIT_MS_MAX));
        if holders.len() >= needed {
            return true;
        }
        holders.reserve_exact(needed.saturating_sub(holders.len()));
        self.waiting.insert(payload, (now_ms, holders));
        self.added.push_back((now_ms, payload));
        if self.added.len() > 2 * self.waiting.len() + 1_024 {
            let mut live: Vec<(u64, Hash)> = self.waiting.iter().map(|(payload, (at, _))| (*at, *payload)).collect();
            live.sort_unstable();
            self.added = live.into();
        }
        false
    }

    /// `from`, a validator, holds `payloads`. Returns those that reach `needed` holders with it,
    /// in the order given; they leave the table.
    pub fn held_by(&mut self, from: PublicKey, payloads: &[Hash], needed: usize) -> Vec<Hash> {
        let mut done = Vec::new();
        for payload in payloads {
            let Some((_, holders)) = self.waiting.get_mut(payload) else {
                continue;
            };
            if !holders.contains(&from) {
                holders.push(from);
            }
            if holders.len() >= needed {
                self.waiting.remove(payload);
                done.push(*payload);
            }
        }
        done
    }

    /// Removes `payload` (its block committed: the chain holds it). Returns whether it was
    /// waiting.
    pub fn settle(&mut self, payload: &Hash) -> bool {
        self.waiting.remove(payload).is_some()
    }

    /// How many validators are known to hold `payload`, while it waits.
    pub fn holders(&self, payload: &Hash) -> Option<usize> {
        self.waiting.get(payload).map(|(_, holders)| holders.len())
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn forget_older_than(&mut self, cutoff_ms: u64) {
        while let Some(&(at, payload)) = self.added.front() {
            if at >= cutoff_ms {
                break;
            }
            self.added.pop_front();
            // Only the entry of that time: the payload may have left and come back since.
            if self.waiting.get(&payload).is_some_and(|(added, _)| *added == at) {
                self.waiting.remove(&payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kasane_model::KeyPair;

    fn key(seed: u8) -> PublicKey {
        KeyPair::derive(b"holding", u64::from(seed)).public_key()
    }

    #[test]
    fn counts_distinct_holders_and_forgets_the_old() {
        let mut holding = Holding::default();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        assert!(holding.wait(0, Hash::of(b"solo"), vec![key(1)], 1));
        assert!(!holding.wait(0, a, vec![key(1)], 2));
        assert!(!holding.wait(10, b, vec![key(1)], 2));
        // The same holder twice is one holder.
        assert!(holding.held_by(key(1), &[a], 2).is_empty());
        assert_eq!(holding.holders(&a), Some(1));
        assert_eq!(holding.held_by(key(2), &[a, b], 2), vec![a, b]);
        assert!(holding.is_empty());
        assert!(!holding.wait(20, a, vec![key(1)], 2));
        assert!(holding.settle(&a));
        assert!(!holding.settle(&a));
        assert!(!holding.wait(30, b, vec![key(1)], 2));
        // Past the wait, an entry is forgotten at the next wait.
        holding.wait(30 + HOLD_WAIT_MS_MAX + 1, a, vec![key(1)], 2);
        assert_eq!(holding.holders(&b), None);
        assert_eq!(holding.holders(&a), Some(1));
    }
}
