//! The fill (docs/PROTOCOL.md section 8.1): a replica whose store starts from a snapshot's base
//! fetches the blocks below the base in the background, oldest first, and appends them below
//! it, until the store holds every block from genesis again.
//!
//! One request is out at a time, to one validator after another, and none while the replica is
//! still catching up to the tip, so the fill takes what the cluster can spare and never holds up
//! consensus or block sync at the tip. Each block must
//! carry a commit certificate of this replica's validators for itself, match its Merkle root,
//! and link to the block below it (Kura checks the link, and that the block at the base is the
//! one the base names). A peer that sends a block failing any of these is not asked again; one
//! that does not answer within [`FILL_TIMEOUT_MS`] loses its turn.

use super::*;

/// A fill request unanswered this long goes to the next validator.
const FILL_TIMEOUT_MS: u64 = 5_000;
/// The fill waits while the replica is more than this many heights below the cluster: catching
/// up to the tip comes first (a fill response costs the replica hashing and the peer reading
/// what the tip's blocks need).
const FILL_BEHIND_MAX: u64 = 5;

/// The fill under way.
#[derive(Debug, Default)]
pub(super) struct Fill {
    /// The request out: to whom, from which height, when.
    in_flight: Option<(PublicKey, u64, u64)>,
    /// Whose turn is next, among the validators not refused.
    turn: usize,
    /// Validators that sent a block that did not check out.
    refused: BTreeSet<PublicKey>,
}

impl<B: Backend + Sync> Replica<B> {
    /// Starts the fill if the store has a base and none runs.
    pub(super) fn start_fill(&mut self, now_ms: u64, out: &mut Vec<Outbound>) {
        if self.kura.base().is_none() || self.fill.is_some() {
            return;
        }
        self.fill = Some(Fill::default());
        self.request_fill(now_ms, out);
        self.arm_tick(out);
    }

    /// Asks the next validator for the blocks above the lower part, if no request is out.
    fn request_fill(&mut self, now_ms: u64, out: &mut Vec<Outbound>) {
        let Some(base) = self.kura.base() else {
            self.fill = None;
            return;
        };
        let me = self.key.public_key();
        let validators = self.core.topology().validators();
        let from_height = self.kura.lower_height() + 1;
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        let behind = self.core.cluster_height() > self.wsv.height() + FILL_BEHIND_MAX;
        if fill.in_flight.is_some() || behind {
            return;
        }
        let mut peers: Vec<PublicKey> = validators
            .iter()
            .filter(|peer| **peer != me && !fill.refused.contains(peer))
            .copied()
            .collect();
        if peers.is_empty() {
            // Every validator was refused once: at most f of them lie, so the others were
            // refused for a fault of their own that may be gone (a store being repaired, say).
            fill.refused.clear();
            peers = validators.into_iter().filter(|peer| *peer != me).collect();
        }
        let Some(peer) = peers.get(fill.turn % peers.len().max(1)).copied() else {
            return;
        };
        fill.turn = fill.turn.wrapping_add(1);
        fill.in_flight = Some((peer, from_height, now_ms));
        out.push(Outbound::Send {
            to: peer,
            message: Message::BlockSyncRequest {
                from_height,
                count: (base + 1 - from_height).min(crate::message::SYNC_BLOCKS_MAX),
            },
        });
    }

    /// Whether a block-sync response from `from` answers the fill: its first block is the one
    /// asked for, or it is empty and the core asked that peer for nothing.
    pub(super) fn is_fill_response(&self, from: &PublicKey, blocks: &[CommittedBlock]) -> bool {
        let Some((peer, asked, _)) = self.fill.as_ref().and_then(|fill| fill.in_flight) else {
            return false;
        };
        peer == *from
            && match blocks.first() {
                Some(block) => block.block.header.height == asked,
                None => !self.core.is_syncing_from(from),
            }
    }

    /// Appends what a fill response brought, in order, while each block checks out; then asks
    /// for more.
    pub(super) fn on_fill_response(
        &mut self,
        now_ms: u64,
        from: PublicKey,
        blocks: Vec<CommittedBlock>,
    ) -> Vec<Outbound> {
        let mut out = Vec::new();
        if let Some(fill) = self.fill.as_mut() {
            fill.in_flight = None;
        }
        for block in blocks {
            if block.block.header.height != self.kura.lower_height() + 1 {
                break;
            }
            let Some(hashes) = self.fill_block_checks_out(&block) else {
                self.refuse_fill_peer(from);
                break;
            };
            let (height, hash) = (block.block.header.height, block.block.hash());
            match self.kura.append_below(&block) {
                Ok(whole) => {
                    let payloads: Vec<Hash> = hashes.iter().map(|hashes| hashes.payload).collect();
                    let unqueued = self.queue.remove_payloads(&payloads);
                    self.holds.release(&unqueued);
                    self.events.push(ReplicaEvent::Backfilled {
                        height,
                        hash,
                        transactions: hashes.len(),
                    });
                    if whole {
                        self.fill = None;
                        self.events
                            .push(ReplicaEvent::Restore(RestoreEvent::Filled { base: height }));
                        return out;
                    }
                }
                Err(KuraError::Io(error)) => {
                    // The disk, not the peer: stop; a restart opens the store again and goes on.
                    self.fill = None;
                    self.events.push(ReplicaEvent::Restore(RestoreEvent::Abandoned {
                        checkpoint: self.kura.base().unwrap_or(0),
                        reason: format!("the fill could not write block {height}: {error}"),
                    }));
                    return out;
                }
                Err(_) => {
                    self.refuse_fill_peer(from);
                    break;
                }
            }
        }
        self.request_fill(now_ms, &mut out);
        out
    }

    /// A block's commit certificate by this replica's validators and its Merkle root; its
    /// transactions' hashes when both hold.
    fn fill_block_checks_out(&mut self, block: &CommittedBlock) -> Option<Vec<TransactionHashes>> {
        let (hashes, _) = self.hashes_of(&block.block);
        let leaves: Vec<Hash> = hashes.iter().map(|hashes| hashes.transaction).collect();
        (tx_merkle_root(&leaves) == block.block.header.tx_merkle_root && self.certified(block)).then_some(hashes)
    }

    fn refuse_fill_peer(&mut self, peer: PublicKey) {
        if let Some(fill) = self.fill.as_mut() {
            fill.refused.insert(peer);
        }
    }

    /// A request unanswered for [`FILL_TIMEOUT_MS`] goes to the next validator.
    pub(super) fn fill_tick(&mut self, now_ms: u64, out: &mut Vec<Outbound>) {
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        if fill
            .in_flight
            .is_some_and(|(_, _, sent)| now_ms.saturating_sub(sent) > FILL_TIMEOUT_MS)
        {
            fill.in_flight = None;
        }
        self.request_fill(now_ms, out);
    }
}
