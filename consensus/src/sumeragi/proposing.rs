//! Proposing (R4, R4a): the leader's block timer, new blocks and re-proposals of the highest
//! certified block, and blocks fetched by hash.
use kasane_model::{Block, Hash, PublicKey};

use super::*;

impl Sumeragi {
    /// Timers and proposals for a fresh (height, view 0).
    pub(super) fn enter_height(&mut self, out: &mut Vec<Effect>) {
        if self.queue_len > 0 {
            self.arm_view_timer(out);
            self.arm_block_timer(out);
        }
    }

    pub(super) fn arm_block_timer(&mut self, out: &mut Vec<Effect>) {
        if self.topology.is_leader(&self.me, self.state.view) && !self.state.view_state.proposed {
            out.push(Effect::ScheduleTimer {
                timer: Timer::BlockTime {
                    height: self.height,
                    view: self.state.view,
                },
                after_ms: self.config.block_time_ms,
            });
        }
    }

    pub(super) fn on_queue_length(&mut self, len: usize, out: &mut Vec<Effect>) {
        let was_empty = self.queue_len == 0;
        self.queue_len = len;
        if len == 0 {
            return;
        }
        if was_empty {
            self.arm_view_timer(out);
            self.arm_block_timer(out);
        }
        if len >= self.config.block_txs_max {
            self.maybe_propose(out);
        }
    }

    /// R4: the leader proposes once per view: the highest certified block if it knows one
    /// (fetching it by hash if it does not hold it, R4a), else a new block from its queue.
    pub(super) fn maybe_propose(&mut self, out: &mut Vec<Effect>) {
        let view = self.state.view;
        if !self.topology.is_leader(&self.me, view) || self.state.view_state.proposed || self.state.committing.is_some()
        {
            return;
        }
        let reproposal = if self.config.locking {
            self.state.highest.clone()
        } else {
            None
        };
        if let Some(justify) = reproposal {
            if justify.vote.view >= view {
                // A certificate of this very view: this leader proposed in it already (before a
                // restart). The next view re-proposes.
                return;
            }
            let hash = justify.vote.block_hash;
            let Some(entry) = self.state.blocks.get(&hash) else {
                // R4a: ask the validators for it, once per view; the certificate's signers
                // validated it and its lockers keep it durable.
                if self.state.view_state.block_wanted != Some(hash) {
                    self.state.view_state.block_wanted = Some(hash);
                    out.push(Effect::Broadcast {
                        message: Message::BlockWanted {
                            height: self.height,
                            hash,
                        },
                    });
                }
                return;
            };
            let proposal = Proposal {
                height: self.height,
                view,
                block: entry.block.clone(),
                justify: Some(justify),
                proof: self.state.view_state.proof.clone(),
            };
            self.state.view_state.proposed = true;
            self.counters.proposals += 1;
            return self.broadcast_and_deliver(Message::Proposal(Box::new(proposal)), out);
        }
        // A new block in a later view must carry that view's proof (R15); a replica that
        // restarted into the view without it leaves the proposal to the next leader.
        let view_change_proof = ViewChangeVote::proof_of(&self.state.view_state.proof);
        if self.queue_len > 0 && (view == 0 || view_change_proof.is_some()) {
            self.state.view_state.proposed = true;
            out.push(Effect::BuildProposal {
                height: self.height,
                view,
                max_transactions: self.config.block_txs_max,
                view_change_proof: if view == 0 { None } else { view_change_proof },
            });
        }
    }

    pub(super) fn on_proposal_built(&mut self, height: u64, view: u64, block: Block, out: &mut Vec<Effect>) {
        if height != self.height || view != self.state.view || !self.topology.is_leader(&self.me, view) {
            return;
        }
        let hash = block.hash();
        self.remember_block(hash, block.clone(), Validity::Valid);
        self.counters.proposals += 1;
        let proposal = Proposal {
            height,
            view,
            block,
            justify: None,
            proof: self.state.view_state.proof.clone(),
        };
        self.broadcast_and_deliver(Message::Proposal(Box::new(proposal)), out);
    }

    /// R4a: a peer asks for a block of this height; answered once per peer and view, with a
    /// block this replica holds and has not found invalid.
    pub(super) fn on_block_wanted(&mut self, from: PublicKey, hash: Hash, out: &mut Vec<Effect>) {
        let Some(entry) = self.state.blocks.get(&hash) else {
            return;
        };
        if entry.validity == Validity::Invalid || from == self.me {
            return;
        }
        let block = entry.block.clone();
        if self.state.view_state.blocks_sent_to.insert(from) {
            out.push(Effect::Send {
                to: from,
                message: Message::BlockFound(Box::new(block)),
            });
        }
    }

    /// R4a: the block this leader asked for; anything else is dropped.
    pub(super) fn on_block_found(&mut self, block: Block, out: &mut Vec<Effect>) {
        let hash = block.hash();
        if self.state.view_state.block_wanted != Some(hash) || self.state.blocks.contains_key(&hash) {
            return self.drop_message(DropReason::Unsolicited);
        }
        self.remember_block(hash, block, Validity::Unchecked);
        self.maybe_propose(out);
    }
}
