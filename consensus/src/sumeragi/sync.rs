//! Block sync (R19).

use kasane_model::block::VoteKind;
use kasane_model::{CommittedBlock, PublicKey};

use super::*;

impl Sumeragi {
    /// The first height neither committed nor waiting in `sync_pending`.
    fn sync_next_height(&self) -> u64 {
        self.sync_pending
            .back()
            .map_or(self.height, |block| block.block.header.height + 1)
            .max(self.height)
    }

    /// R19: one request in flight at a time, for the blocks after those already waiting, and
    /// none while a chunk's worth is waiting (memory stays bounded by two responses).
    pub(super) fn request_sync(&mut self, from: PublicKey, out: &mut Vec<Effect>) {
        if self.sync_in_flight.is_some()
            || from == self.me
            || self.config.byzantine_skip_own_commit
            || self.sync_pending.len() >= SYNC_BLOCKS_MAX as usize
        {
            return;
        }
        let from_height = self.sync_next_height();
        self.sync_in_flight = Some((from, from_height));
        out.push(Effect::Send {
            to: from,
            message: Message::BlockSyncRequest {
                from_height,
                count: SYNC_BLOCKS_MAX,
            },
        });
        out.push(Effect::ScheduleTimer {
            timer: Timer::Sync { height: from_height },
            after_ms: self.config.sync_timeout_ms,
        });
    }

    pub(super) fn on_sync_response(&mut self, from: PublicKey, blocks: Vec<CommittedBlock>, out: &mut Vec<Effect>) {
        if self.sync_in_flight.map(|(peer, _)| peer) != Some(from) {
            return self.drop_message(DropReason::Unexpected);
        }
        self.sync_in_flight = None;
        let wanted = (self.sync_next_height()..).zip(blocks.into_iter().take(SYNC_BLOCKS_MAX as usize));
        let mut added = false;
        for (expected, block) in wanted {
            if block.block.header.height != expected {
                break;
            }
            self.sync_pending.push_back(block);
            added = true;
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
            .sync_pending
            .front()
            .is_some_and(|block| block.block.header.height < self.height)
        {
            self.sync_pending.pop_front();
        }
        if self.committing.is_some() {
            return;
        }
        let Some(next) = self.sync_pending.pop_front() else {
            return;
        };
        if next.block.header.height != self.height {
            self.sync_pending.clear();
            return;
        }
        let certificate = next.certificate.clone();
        let sound = certificate.vote.block_hash == next.block.hash()
            && next.block.header.previous_hash == self.head
            && self.check_certificate(&certificate, VoteKind::Commit);
        if !sound {
            self.drop_message(DropReason::BadCertificate);
            self.sync_pending.clear();
            return;
        }
        self.committing = Some(certificate.vote.block_hash);
        out.push(Effect::CommitBlock { block: next });
    }
}
