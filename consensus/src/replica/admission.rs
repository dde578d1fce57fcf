//! Admission: transactions from clients and gossip, checked (limits, replay, signatures in one
//! batch), queued, and gossiped on when they came from a client.

use super::*;

impl<B: Backend + Sync> Replica<B> {
    /// Transactions from a client: checked, queued and gossiped. Returns each one's admission.
    pub fn submit(
        &mut self,
        now_ms: u64,
        transactions: Vec<SignedTransaction>,
    ) -> (Vec<Result<(), String>>, Vec<Outbound>) {
        let mut out = Vec::new();
        let results = self.admit(now_ms, transactions, None, true, &mut out);
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
        let results = self.admit(now_ms, transactions, Some(prepared), true, &mut out);
        (results, out)
    }

    /// Checks signatures (in one batch) and limits, queues what passes, and gossips it when it
    /// came from a client. `prepared`, when the host gives it, must match `transactions` one for
    /// one; otherwise it is ignored and everything is computed here.
    pub(super) fn admit(
        &mut self,
        now_ms: u64,
        transactions: Vec<SignedTransaction>,
        prepared: Option<Vec<PreparedTransaction>>,
        gossip: bool,
        out: &mut Vec<Outbound>,
    ) -> Vec<Result<(), String>> {
        let transactions: Vec<SignedTransaction> = transactions.into_iter().take(GOSSIP_TRANSACTIONS_MAX).collect();
        let mut known = prepared
            .filter(|prepared| prepared.len() == transactions.len())
            .map(Vec::into_iter);
        let mut results = Vec::with_capacity(transactions.len());
        let mut accepted = 0usize;
        // Only a client's transactions are gossiped on; the rest move into the queue uncloned.
        let mut to_gossip = Vec::new();
        for transaction in transactions {
            let PreparedTransaction {
                hashes,
                signatures_verified,
            } = known
                .as_mut()
                .and_then(Iterator::next)
                .unwrap_or_else(|| PreparedTransaction {
                    hashes: transaction.hashes(),
                    signatures_verified: false,
                });
            let result = self
                .check_transaction(now_ms, &transaction, &hashes, signatures_verified)
                .and_then(|()| {
                    let copy = gossip.then(|| transaction.clone());
                    self.queue
                        .push(transaction, hashes)
                        .map(|()| copy)
                        .map_err(|error| match error {
                            QueueError::Duplicate => "already queued".to_string(),
                            other => other.to_string(),
                        })
                });
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
        if accepted > 0 {
            let effects = self.core.step(Input::QueueLength(self.queue.len()));
            out.extend(self.run(now_ms, effects));
        }
        results
    }

    pub(super) fn check_transaction(
        &mut self,
        now_ms: u64,
        transaction: &SignedTransaction,
        hashes: &TransactionHashes,
        signatures_verified: bool,
    ) -> Result<(), String> {
        transaction
            .check_stateless(self.wsv.chain())
            .map_err(|error| error.to_string())?;
        if self.wsv.is_committed_payload(&hashes.payload, now_ms) {
            return Err("already committed".to_string());
        }
        if signatures_verified {
            return Ok(());
        }
        let messages = SigningMessages::for_payload_hash(&hashes.payload);
        let items: Vec<SignedMessage> = messages.items(transaction).collect();
        verify_batch(&mut self.cache, &items).map_err(|error| error.to_string())
    }
}
