//! Block sync (R19).

use kasane_model::block::VoteKind;
use kasane_model::{CommittedBlock, PublicKey};

use super::*;

/// Most peers remembered as having sent a block that did not check out.
const DISTRUSTED_PEERS_MAX: usize = 1024;

impl Sumeragi {
    /// Requests that may be out at once, each to a different peer: more than the faulty peers
    /// there can be, so peers that claim heights they never serve cannot hold every slot.
    fn sync_slots(&self) -> usize {
        self.topology.max_faulty() + 1
    }

    /// The first height from this replica's own that is not waiting in `pending`. Every new
    /// request starts there, whoever else was asked for it: with up to f peers that claim heights
    /// and never answer holding a slot each, the f + 1-th slot still asks an honest peer for the
    /// blocks that are needed next (peers asked for distinct chunks let a liar hold the one that
    /// matters while honest peers are asked for heights past the tip). A peer that answers is
    /// asked for the chunk after its answer at once, so one stream is pipelined.
    fn sync_next_height(&self) -> u64 {
        let mut next = self.height;
        while self.sync.pending.contains_key(&next) {
            next += 1;
        }
        next
    }

    /// R19: asks `from` for the blocks from the first one missing, if `from` has no request out,
    /// a slot is free, and the blocks already waiting stay within bounds.
    pub(super) fn request_sync(&mut self, from: PublicKey, out: &mut Vec<Effect>) {
        if from == self.me
            || self.config.byzantine_skip_own_commit
            || self.sync.in_flight.contains_key(&from)
            || self.sync.distrusted.contains(&from)
            || self.sync.in_flight.len() >= self.sync_slots()
            || self.sync.pending.len() >= self.sync_slots() * SYNC_BLOCKS_MAX as usize
        {
            return;
        }
        let from_height = self.sync_next_height();
        self.sync.in_flight.insert(from, from_height);
        out.push(Effect::Send {
            to: from,
            message: Message::BlockSyncRequest {
                from_height,
                count: SYNC_BLOCKS_MAX,
            },
        });
        out.push(Effect::ScheduleTimer {
            timer: Timer::Sync {
                peer: from,
                from_height,
            },
            after_ms: self.config.sync_timeout_ms,
        });
    }

    pub(super) fn on_sync_request(&mut self, from: PublicKey, from_height: u64, count: u64, out: &mut Vec<Effect>) {
        if from_height == 0 {
            self.drop_message(DropReason::Unexpected);
        } else if from_height >= self.height {
            // Nothing to serve: say so, so the asker need not wait for its timeout.
            out.push(Effect::Send {
                to: from,
                message: Message::BlockSyncResponse { blocks: Vec::new() },
            });
        } else {
            out.push(Effect::ServeBlocks {
                to: from,
                from_height,
                count: count.clamp(1, SYNC_BLOCKS_MAX),
            });
        }
    }

    pub(super) fn on_sync_response(&mut self, from: PublicKey, blocks: Vec<CommittedBlock>, out: &mut Vec<Effect>) {
        let Some(asked) = self.sync.in_flight.remove(&from) else {
            return self.drop_message(DropReason::Unexpected);
        };
        let mut added = false;
        for (expected, block) in (asked..).zip(blocks.into_iter().take(SYNC_BLOCKS_MAX as usize)) {
            if block.block.header.height != expected {
                break;
            }
            if expected >= self.height && !self.sync.pending.contains_key(&expected) {
                self.sync.pending.insert(expected, (block, from));
                added = true;
            }
        }
        // Pipelining: ask for the next chunk now, so it travels while these are applied. A peer
        // that has nothing more answers with no blocks.
        if added {
            self.request_sync(from, out);
        }
        self.continue_sync(out);
    }

    /// Commits the next synced block once its certificate checks out with this height's
    /// validators; the host re-validates the block itself before applying it.
    pub(super) fn continue_sync(&mut self, out: &mut Vec<Effect>) {
        while self
            .sync
            .pending
            .first_key_value()
            .is_some_and(|(height, _)| *height < self.height)
        {
            self.sync.pending.pop_first();
        }
        if self.state.committing.is_some() {
            return;
        }
        let Some((next, source)) = self.sync.pending.remove(&self.height) else {
            return;
        };
        let certificate = next.certificate.clone();
        let sound = certificate.vote.block_hash == next.block.hash()
            && next.block.header.previous_hash == self.head
            && self.check_certificate(&certificate, VoteKind::Commit);
        if !sound {
            self.drop_message(DropReason::BadCertificate);
            self.distrust(source);
            return;
        }
        self.state.committing = Some(certificate.vote.block_hash);
        self.sync.committing_from = Some(source);
        out.push(Effect::CommitBlock { block: next });
    }

    /// A synced block that failed to commit: its sender is not asked again, and what it sent
    /// is dropped.
    pub(super) fn distrust_committing(&mut self) {
        if let Some(source) = self.sync.committing_from.take() {
            self.distrust(source);
        }
    }

    fn distrust(&mut self, peer: PublicKey) {
        self.sync.pending.retain(|_, (_, source)| *source != peer);
        self.sync.in_flight.remove(&peer);
        if self.sync.distrusted.len() < DISTRUSTED_PEERS_MAX {
            self.sync.distrusted.insert(peer);
        }
    }
}
