//! Block sync (R19).

use kasane_model::block::VoteKind;
use kasane_model::{CommittedBlock, PublicKey};

use super::*;

/// Most peers remembered as having sent a block that did not check out.
const DISTRUSTED_PEERS_MAX: usize = 1024;

impl Sumeragi {
    /// Requests that may be out at once, one per peer: every other validator, so a node far
    /// behind fetches distinct chunks from all of them in parallel (at least `f + 1`).
    fn sync_slots(&self) -> usize {
        (self.topology.len().saturating_sub(1)).max(self.topology.max_faulty() + 1)
    }

    /// Most heights above this replica's own that blocks are fetched for: what waits in
    /// `pending` stays within `(f + 1) * SYNC_BLOCKS_MAX` blocks whatever the parallelism.
    fn sync_window(&self) -> u64 {
        (self.topology.max_faulty() as u64 + 1) * SYNC_BLOCKS_MAX
    }

    /// The first height from this replica's own that is not waiting in `pending`.
    fn first_missing_height(&self) -> u64 {
        let mut next = self.height;
        while self.sync.pending.contains_key(&next) {
            next += 1;
        }
        next
    }

    /// Where a new request starts: the first height from this replica's own that is neither
    /// waiting in `pending` nor counted as covered by a request out to a peer that is not slow.
    /// So parallel requests ask for distinct chunks, and the blocks needed next are never left
    /// to a peer that stopped answering: a request that times out marks its peer slow, and the
    /// heights it covered go to the next request at once (a peer that answers with blocks is
    /// counted again). A liar can hold up the chain once per answer it gives, for one timeout;
    /// it cannot hold it up for good.
    fn sync_next_height(&self) -> u64 {
        let mut next = self.height;
        loop {
            if self.sync.pending.contains_key(&next) {
                next += 1;
                continue;
            }
            let covered = self
                .sync
                .in_flight
                .iter()
                .filter(|(peer, _)| !self.sync.slow.contains(*peer))
                .filter(|(_, (from, span))| *from <= next && next < from + span)
                .map(|(_, (from, span))| from + span)
                .max();
            match covered {
                Some(end) => next = end,
                None => return next,
            }
        }
    }

    /// R19: asks `from` for the blocks from the first height nobody is fetching, if `from` has
    /// no request out, a slot is free, and the height is within the window of waiting blocks.
    pub(super) fn request_sync(&mut self, from: PublicKey, out: &mut Vec<Effect>) {
        if from == self.me
            || self.config.byzantine_skip_own_commit
            || self.sync.paused
            || self.sync.in_flight.contains_key(&from)
            || self.sync.distrusted.contains(&from)
            || self.sync.in_flight.len() >= self.sync_slots()
        {
            return;
        }
        let mut from_height = self.sync_next_height();
        if from_height >= self.height + self.sync_window() {
            return;
        }
        // Only what the peer says it has: asked past its height, it would answer with nothing.
        // Near the tip the distinct chunks run past every claim: the peer is then asked for the
        // first missing height, like the request already out for it, which may have gone to a
        // liar (the redundancy R19 had before requests ran in parallel).
        let claimed = self.sync.claimed.get(&from).copied();
        if claimed.is_some_and(|claimed| from_height > claimed) {
            from_height = self.first_missing_height();
            if claimed.is_some_and(|claimed| from_height > claimed) {
                return;
            }
        }
        let span = self.sync.blocks_per_response.clamp(1, SYNC_BLOCKS_MAX);
        self.sync.in_flight.insert(from, (from_height, span));
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

    /// Asks every validator that claims a height above this replica's, has no request out and
    /// is not slow: after an answer, a synced commit or a timeout, so all peers stay busy, not
    /// only the one that answered. A slow peer is asked again only when its status comes.
    pub(super) fn request_sync_from_all(&mut self, out: &mut Vec<Effect>) {
        let ahead: Vec<PublicKey> = self
            .sync
            .claimed
            .iter()
            .filter(|(peer, claimed)| **claimed >= self.height && !self.sync.slow.contains(*peer))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in ahead {
            self.request_sync(peer, out);
        }
    }

    /// A request that was not answered in time: its peer is slow, and what it covered is
    /// asked of others now.
    pub(super) fn sync_timed_out(&mut self, peer: PublicKey, out: &mut Vec<Effect>) {
        self.sync.in_flight.remove(&peer);
        self.sync.slow.insert(peer);
        self.request_sync_from_all(out);
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
        let Some((asked, _)) = self.sync.in_flight.remove(&from) else {
            return self.drop_message(DropReason::Unexpected);
        };
        let received = blocks.len().min(SYNC_BLOCKS_MAX as usize) as u64;
        let mut added = false;
        let window_end = self.height + self.sync_window();
        for (expected, block) in (asked..).zip(blocks.into_iter().take(SYNC_BLOCKS_MAX as usize)) {
            if block.block.header.height != expected {
                break;
            }
            if expected >= self.height && expected < window_end && !self.sync.pending.contains_key(&expected) {
                self.sync.pending.insert(expected, (block, from));
                added = true;
            }
        }
        // A response that stops short of the peer's claimed height was cut by its size bound:
        // the next requests are counted to cover as many blocks.
        let claimed = self.sync.claimed.get(&from).copied().unwrap_or(0);
        if received > 0 && asked + received <= claimed {
            self.sync.blocks_per_response = received;
        }
        // Pipelining: ask for the next chunks now, so they travel while these are applied. A
        // peer whose answer added nothing (it has nothing more, its status was stale, or it
        // lies) counts as slow: asked again only when its next status comes, never in a loop.
        if added {
            self.sync.slow.remove(&from);
            self.request_sync(from, out);
        } else {
            self.sync.slow.insert(from);
        }
        self.request_sync_from_all(out);
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
        self.sync.slow.remove(&peer);
        if self.sync.distrusted.len() < DISTRUSTED_PEERS_MAX {
            self.sync.distrusted.insert(peer);
        }
    }
}
