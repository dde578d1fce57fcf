//! Admission: transactions from clients and gossip, checked (limits, replay, signatures in one
//! batch), queued, and gossiped on when they came from a client.

use super::*;
use kasane_model::transaction::Payloads;

/// Where admitted transactions came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// This replica's client: gossiped on, and counted until f + 1 validators hold them.
    Client,
    /// A peer's gossip: answered with [`Message::Held`] for what this replica now holds.
    Peer(PublicKey),
}

impl<B: Backend + Sync> Replica<B> {
    /// Transactions from a client: checked, queued and gossiped. Returns each one's admission.
    pub fn submit(
        &mut self,
        now_ms: u64,
        transactions: Vec<SignedTransaction>,
    ) -> (Vec<Result<(), String>>, Vec<Outbound>) {
        let mut out = Vec::new();
        let results = self.admit(now_ms, transactions, None, Source::Client, &mut out);
        (results, out)
    }

    /// [`Replica::submit`] with what the host computed from these very transactions (see
    /// [`PreparedHashes`]).
    pub fn submit_prepared(
        &mut self,
        now_ms: u64,
        transactions: Vec<SignedTransaction>,
        prepared: Vec<PreparedTransaction>,
    ) -> (Vec<Result<(), String>>, Vec<Outbound>) {
        let mut out = Vec::new();
        let results = self.admit(now_ms, transactions, Some(prepared), Source::Client, &mut out);
        (results, out)
    }

    /// Checks signatures (in one batch) and limits, queues what passes, and gossips it when it
    /// came from a client (counting its holders) or tells the peer it came from what is held. `prepared`, when the host gives it, must match `transactions` one for
    /// one; otherwise it is ignored and everything is computed here.
    pub(super) fn admit(
        &mut self,
        now_ms: u64,
        transactions: Vec<SignedTransaction>,
        prepared: Option<Vec<PreparedTransaction>>,
        source: Source,
        out: &mut Vec<Outbound>,
    ) -> Vec<Result<(), String>> {
        if self.stopped.is_some() {
            return vec![
                Err("this node has stopped: its consensus lock record failed".to_string());
                transactions.len()
            ];
        }
        let transactions: Vec<SignedTransaction> = transactions.into_iter().take(GOSSIP_TRANSACTIONS_MAX).collect();
        let mut known = prepared
            .filter(|prepared| prepared.len() == transactions.len())
            .map(Vec::into_iter);
        let mut results = Vec::with_capacity(transactions.len());
        let mut accepted = 0usize;
        let gossip = source == Source::Client;
        let origin = if gossip { Origin::Client } else { Origin::Peer };
        // Fixed by genesis: read once for the batch, not per transaction.
        let payloads = self.wsv.payloads();
        // Only a client's transactions are gossiped on; the rest move into the queue uncloned.
        let mut to_gossip = Vec::new();
        // Payload hashes now held here: a client's, to count; a peer's, to tell it.
        let mut held = Vec::new();
        for transaction in transactions {
            let PreparedTransaction {
                hashes,
                signatures_verified,
                encoding,
            } = known
                .as_mut()
                .and_then(Iterator::next)
                .unwrap_or_else(|| PreparedTransaction {
                    hashes: transaction.hashes(),
                    signatures_verified: false,
                    encoding: None,
                });
            let payload = hashes.payload;
            let mut full = false;
            let result = self
                .check_transaction(now_ms, payloads, &transaction, &hashes, signatures_verified)
                .and_then(|()| {
                    let copy = gossip.then(|| transaction.clone());
                    self.queue
                        .push(transaction, hashes, origin)
                        .map(|()| copy)
                        .map_err(|error| match error {
                            QueueError::Duplicate => "already queued".to_string(),
                            other => {
                                full = matches!(other, QueueError::Full { .. });
                                other.to_string()
                            }
                        })
                });
            if result.is_ok() {
                if let Some(queued) = self.queue.get(&payload) {
                    self.holds.append(&payload, queued, encoding);
                }
            }
            // A peer's copy already queued here (or committed) is held all the same.
            let already_held = result.is_err() && source != Source::Client && self.holds(now_ms, &payload);
            if result.is_ok() || already_held {
                held.push(payload);
            }
            if source != Source::Client {
                let counts = &mut self.gossip;
                let count = if result.is_ok() {
                    &mut counts.admitted
                } else if already_held {
                    &mut counts.already_held
                } else if full {
                    &mut counts.queue_full
                } else {
                    &mut counts.refused
                };
                *count += 1;
            }
            results.push(result.map(|copy| {
                accepted += 1;
                to_gossip.extend(copy);
            }));
        }
        if !to_gossip.is_empty() {
            out.push(Outbound::Broadcast {
                message: Message::Transactions(to_gossip),
            });
        }
        // What is held is answered for once the hold store has synced it (R18b).
        match source {
            Source::Client => self.count_holders(now_ms, held),
            Source::Peer(from) if !held.is_empty() && from != self.key.public_key() => {
                self.unsynced.peers.entry(from).or_default().extend(held)
            }
            Source::Peer(_) => {}
        }
        out.extend(self.sync_holds_later());
        if accepted > 0 {
            let effects = self.core.step(Input::QueueLength(self.queue.len()));
            out.extend(self.run(now_ms, effects));
        }
        results
    }

    /// Judges one transaction for the queue; `payloads` is what the chain takes
    /// ([`kasane_wsv::Wsv::payloads`], read once per batch by the caller).
    pub(super) fn check_transaction(
        &mut self,
        now_ms: u64,
        payloads: Payloads,
        transaction: &SignedTransaction,
        hashes: &TransactionHashes,
        signatures_verified: bool,
    ) -> Result<(), String> {
        transaction
            .check_stateless(self.wsv.chain(), payloads)
            .map_err(|error| error.to_string())?;
        if self.wsv.is_committed_payload(&hashes.payload, now_ms) {
            return Err("already committed".to_string());
        }
        // Past its time-to-live the replay memory forgets a payload, so "already committed"
        // can no longer be told; no block can commit it any more either.
        let expires_at_ms = transaction.payload.expires_at_ms();
        if now_ms > expires_at_ms {
            return Err(format!("expired at {expires_at_ms} ms (now {now_ms} ms)"));
        }
        if signatures_verified {
            return Ok(());
        }
        let messages = SigningMessages::for_payload_hash(&hashes.payload);
        let items: Vec<SignedMessage> = messages.items(transaction).collect();
        verify_batch(&mut self.cache, &items).map_err(|error| error.to_string())
    }

    /// Whether this replica holds `payload`: queued, or committed.
    fn holds(&self, now_ms: u64, payload: &Hash) -> bool {
        self.queue.contains(payload) || self.wsv.is_committed_payload(payload, now_ms)
    }

    /// Starts counting holders for a client's admitted transactions. This replica counts as
    /// one, when it is a validator, once its hold store has synced them.
    fn count_holders(&mut self, now_ms: u64, payloads: Vec<Hash>) {
        let needed = self.holders_needed();
        for payload in &payloads {
            self.holding.wait(now_ms, *payload, Vec::new(), needed);
        }
        if self.core.topology().contains(&self.key.public_key()) {
            self.unsynced.own.extend(payloads);
        }
    }

    /// Asks for a [`Timer::SyncHolds`] when something waits for one and none is out.
    fn sync_holds_later(&mut self) -> Option<Outbound> {
        if self.unsynced.is_empty() || self.unsynced.timer_out {
            return None;
        }
        self.unsynced.timer_out = true;
        Some(Outbound::Timer {
            timer: Timer::SyncHolds,
            after_ms: HOLD_SYNC_MS,
        })
    }

    /// R18b: makes what this replica newly holds durable, then answers each peer `Held` and
    /// counts itself a holder of its own clients' transactions. A store that syncs in the
    /// background answers later, through [`Replica::on_holds_synced`].
    pub(super) fn sync_holds(&mut self) -> Vec<Outbound> {
        let unsynced = std::mem::take(&mut self.unsynced);
        match self.holds.sync() {
            SyncStart::Done(result) => self.answer_holds(unsynced, result),
            SyncStart::Started(ticket) => {
                self.syncing.push_back((ticket, unsynced));
                Vec::new()
            }
        }
    }

    /// The outcome of the hold store's background sync `ticket` (see [`HoldStore::sync`]): it
    /// answers for that sync and every earlier one still waiting. Anything else is ignored.
    pub fn on_holds_synced(&mut self, ticket: u64, result: Result<(), String>) -> Vec<Outbound> {
        let mut out = Vec::new();
        if self.stopped.is_some() {
            return out;
        }
        while self.syncing.front().is_some_and(|(waiting, _)| *waiting <= ticket) {
            if let Some((_, unsynced)) = self.syncing.pop_front() {
                out.extend(self.answer_holds(unsynced, result.clone()));
            }
        }
        out
    }

    /// Answers for what a sync made durable. A failed sync answers nothing: those transactions
    /// stay queued here, but no one counts this replica as their holder.
    fn answer_holds(&mut self, unsynced: Unsynced, result: Result<(), String>) -> Vec<Outbound> {
        if let Err(error) = result {
            self.events.push(ReplicaEvent::HoldStoreFailed { error });
            return Vec::new();
        }
        let mut out = Vec::new();
        for (peer, payloads) in unsynced.peers {
            for chunk in payloads.chunks(GOSSIP_TRANSACTIONS_MAX) {
                out.push(Outbound::Send {
                    to: peer,
                    message: Message::Held(chunk.to_vec()),
                });
            }
        }
        if !unsynced.own.is_empty() {
            let me = self.key.public_key();
            let needed = self.holders_needed();
            let acknowledged = self.holding.held_by(me, &unsynced.own, needed);
            if !acknowledged.is_empty() {
                self.events.push(ReplicaEvent::Held { payloads: acknowledged });
            }
        }
        out
    }

    /// R18b at start: queues again what the hold store kept from a previous run. The store is
    /// this replica's own disk, checked like Kura's records (docs/NODE.md), so signatures are
    /// not verified again; what has committed or expired since is dropped and released.
    /// Returns whether anything was queued.
    pub(super) fn restore_held(&mut self, now_ms: u64) -> bool {
        let stored = self.holds.load();
        if stored.is_empty() {
            return false;
        }
        let (mut queued, mut dropped) = (0usize, Vec::new());
        let payloads = self.wsv.payloads();
        for transaction in stored {
            let hashes = transaction.hashes();
            let payload = hashes.payload;
            let kept = self
                .check_transaction(now_ms, payloads, &transaction, &hashes, true)
                .is_ok()
                && self.queue.push(transaction, hashes, Origin::Peer).is_ok();
            if kept {
                queued += 1;
            } else if !self.queue.contains(&payload) {
                dropped.push(payload);
            }
        }
        self.holds.release(&dropped);
        self.events.push(ReplicaEvent::Restored {
            queued,
            dropped: dropped.len(),
        });
        queued > 0
    }

    /// A peer holds some of this replica's clients' transactions; only validators count.
    pub(super) fn on_held(&mut self, from: PublicKey, payloads: &[Hash]) {
        if !self.core.topology().contains(&from) {
            return;
        }
        let payloads = &payloads[..payloads.len().min(GOSSIP_TRANSACTIONS_MAX)];
        let acknowledged = self.holding.held_by(from, payloads, self.holders_needed());
        if !acknowledged.is_empty() {
            self.events.push(ReplicaEvent::Held { payloads: acknowledged });
        }
    }
}
