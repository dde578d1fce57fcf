//! Blocks: judging a proposed block (by the chain, then its timeliness), building one, and
//! committing one (Kura first, then the world state).

use super::*;

/// Executions one build may try, each after leaving out a transaction a plugin could not decide.
const BUILD_ATTEMPTS_MAX: usize = 8;

impl<B: Backend + Sync> Replica<B> {
    /// R5: the verdict on a block a validator may vote for: valid by the chain
    /// ([`Replica::validate`]), and not stamped more than [`BLOCK_FUTURE_MS_MAX`] ahead of this
    /// replica's clock (else it is early: judged again later, never invalid for it).
    pub(super) fn judge(&mut self, now_ms: u64, block: &Block) -> Verdict {
        let hash = block.hash();
        if !self.validated.contains_key(&hash) && !self.validate(block, true) {
            return Verdict::Invalid;
        }
        let latest = now_ms.saturating_add(BLOCK_FUTURE_MS_MAX);
        if block.header.timestamp_ms > latest {
            return Verdict::Early {
                retry_after_ms: block.header.timestamp_ms - latest,
            };
        }
        Verdict::Valid
    }

    /// Checks `block` against the committed state, by the chain alone: header, view-change
    /// proof, Merkle root, (when `check_signatures`) every transaction signature, and the state
    /// commitment after execution. Keeps the execution of a valid block for its commit.
    pub(super) fn validate(&mut self, block: &Block, check_signatures: bool) -> bool {
        let header = &block.header;
        if self.wsv.check_header(header).is_err() || block.transactions.is_empty() {
            return false;
        }
        if header
            .check_view_change_proof(&self.wsv.validators(), &mut self.cache)
            .is_err()
        {
            return false;
        }
        let (hashes, signatures_verified) = self.hashes_of(block);
        let transaction_hashes: Vec<Hash> = hashes.iter().map(|hash| hash.transaction).collect();
        if tx_merkle_root(&transaction_hashes) != header.tx_merkle_root {
            return false;
        }
        if check_signatures
            && !signatures_verified
            && verify_transaction_signatures(&mut self.cache, &block.transactions, &hashes).is_err()
        {
            return false;
        }
        match self
            .wsv
            .execute(header.height, header.timestamp_ms, &block.transactions, &hashes)
        {
            Ok(executed) if executed.state_commitment == header.state_commitment => {
                self.remember_validated(block.hash(), hashes, executed);
                true
            }
            _ => false,
        }
    }

    /// A block's transaction hashes, from what the host computed for this message when it
    /// matches the block, else computed here; and whether the host verified every signature.
    pub(super) fn hashes_of(&mut self, block: &Block) -> (Vec<TransactionHashes>, bool) {
        match self.known_hashes.remove(&block.hash()) {
            Some(known) if known.transactions.len() == block.transactions.len() => {
                (known.transactions, known.signatures_verified)
            }
            _ => (
                block.transactions.iter().map(SignedTransaction::hashes).collect(),
                false,
            ),
        }
    }

    /// R4: a block of the oldest queued transactions, executed on the committed state.
    pub(super) fn build(
        &mut self,
        now_ms: u64,
        height: u64,
        view: u64,
        max_transactions: usize,
        view_change_proof: Option<kasane_model::block::ViewChangeProof>,
    ) -> Option<Block> {
        if height != self.wsv.height() + 1 {
            return None;
        }
        let timestamp_ms = now_ms.max(self.wsv.last_timestamp_ms());
        // What expired would only be rejected in the block.
        self.drop_expired(timestamp_ms);
        // The block's own limits bound what a configuration asks for: a block past them would
        // be refused by every replica, this one included, and the leader would propose nothing
        // at every height (blocks of 20,000 once halted a cluster so).
        let count = max_transactions.min(BLOCK_TRANSACTIONS_MAX);
        // Each plugin failure costs an execution of the block; past a few, the rest wait for
        // the next build, so undecidable transactions cannot make one build cost the queue
        // times a block.
        let mut attempts = 0;
        let (transactions, hashes, executed) = loop {
            attempts += 1;
            if self.queue.is_empty() || attempts > BUILD_ATTEMPTS_MAX {
                return None;
            }
            let chosen = self.queue.oldest(count, BLOCK_TRANSACTION_BYTES_MAX);
            let (transactions, hashes): (Vec<SignedTransaction>, Vec<TransactionHashes>) = chosen.into_iter().unzip();
            match self.wsv.execute(height, timestamp_ms, &transactions, &hashes) {
                Ok(executed) => break (transactions, hashes, executed),
                // A validator plugin could not decide on one transaction here (wsv::plugin): no
                // block may carry it from this replica, so it leaves the queue and the rest go.
                Err(error @ ApplyError::ExecutionFailure { index, .. }) => {
                    let payload = hashes[index].payload;
                    self.queue.remove_payloads([&payload]);
                    self.holds.release(&[payload]);
                    self.events.push(ReplicaEvent::BuildFailed {
                        height,
                        error: error.to_string(),
                        dropped: Some(payload),
                    });
                }
                Err(error) => {
                    self.events.push(ReplicaEvent::BuildFailed {
                        height,
                        error: error.to_string(),
                        dropped: None,
                    });
                    return None;
                }
            }
        };
        let transaction_hashes: Vec<Hash> = hashes.iter().map(|hash| hash.transaction).collect();
        let header = BlockHeader {
            height,
            previous_hash: self.wsv.head_hash(),
            view,
            proposer: self.key.public_key(),
            tx_merkle_root: tx_merkle_root(&transaction_hashes),
            state_commitment: executed.state_commitment,
            timestamp_ms,
            view_change_proof,
        };
        let block = Block { header, transactions };
        self.remember_validated(block.hash(), hashes, executed);
        Some(block)
    }

    /// Keeps a validated block's transaction hashes for its commit, bounded like the core's
    /// blocks per height (a stalled height sees at most one new block per view).
    pub(super) fn remember_validated(&mut self, hash: Hash, hashes: Vec<TransactionHashes>, executed: ExecutedBlock) {
        if self.validated.len() >= BLOCKS_PER_HEIGHT_MAX {
            self.validated.pop_first();
        }
        self.validated.insert(
            hash,
            Validated {
                hashes,
                executed: Some(executed),
            },
        );
    }

    /// R10: durable in Kura first, then applied to the world state.
    pub(super) fn commit(&mut self, committed: CommittedBlock) -> Input {
        let height = committed.block.header.height;
        let hash = committed.block.hash();
        let failed = Input::CommitFailed { height, hash };
        // Blocks that arrive by block sync were not validated on this replica yet. The core
        // checked their commit certificate; whether their signatures are checked again is the
        // certified-block rule (R19).
        let check_signatures = !self.core.config().certified_blocks_skip_signatures;
        if !self.validated.contains_key(&hash) && !self.validate(&committed.block, check_signatures) {
            return failed;
        }
        let Some(Validated { hashes, executed }) = self.validated.remove(&hash) else {
            return failed;
        };
        if self.kura.append(&committed).is_err() {
            // Keep what was validated: the core may try to commit this block again.
            self.validated.insert(hash, Validated { hashes, executed });
            return failed;
        }
        // Validation executed the block against this very state (the validated blocks are
        // dropped at every commit), so its writes are applied as they are.
        let applied = match executed {
            Some(executed) if executed.height == height => self.wsv.commit(executed, hash, committed.block.header.view),
            _ => match self.wsv.apply_block(&committed.block, &hashes) {
                Ok(applied) => applied,
                // The block is in Kura but does not apply: a broken invariant of our own code,
                // since it was validated against this very state.
                Err(error) => panic!("a validated block failed to apply at height {height}: {error}"),
            },
        };
        let payloads: Vec<Hash> = hashes.iter().map(|hash| hash.payload).collect();
        let unqueued = self.queue.remove_payloads(&payloads);
        self.holds.release(&unqueued);
        // The chain holds what it committed: a client's transaction still counting holders is
        // acknowledged now.
        let settled: Vec<Hash> = payloads
            .iter()
            .filter(|payload| self.holding.settle(payload))
            .copied()
            .collect();
        if !settled.is_empty() {
            self.events.push(ReplicaEvent::Held { payloads: settled });
        }
        self.validated.clear();
        self.wire.retain(&self.wsv.validators(), height + 1);
        self.events.push(ReplicaEvent::Committed {
            height,
            hash,
            transactions: hashes
                .iter()
                .zip(&applied.outcomes)
                .map(|(hash, outcome)| (hash.payload, *outcome == TransactionOutcome::Committed))
                .collect(),
            tx_hashes: hashes.iter().map(|hash| hash.transaction).collect(),
            rejections: hashes
                .iter()
                .zip(&applied.outcomes)
                .filter_map(|(hash, outcome)| match outcome {
                    TransactionOutcome::Rejected(reason) => Some((hash.payload, reason.to_string())),
                    TransactionOutcome::Committed => None,
                })
                .collect(),
        });
        Input::BlockCommitted {
            height,
            hash,
            validators: self.wsv.validators(),
            demoted: self.wsv.demoted(),
        }
    }
}
