//! State sync (docs/PROTOCOL.md section 8.1): a replica far behind the cluster restores the
//! state of a recent checkpoint from its peers, proves it with the certified block that binds
//! the checkpoint's root, and goes on from there; the blocks below the checkpoint come later
//! (`fill.rs`).
//!
//! 1. *Start*: the cluster height (claimed by `f + 1` validators) is more than
//!    [`RESTORE_CHECKPOINTS_BEHIND`] checkpoints above this replica's; the checkpoint `c` is the
//!    newest one whose binding block `c + D` the cluster has committed. Every validator is asked
//!    for its manifest of `c`.
//! 2. *Manifest*: the first that checks out is chosen: the headers from `c` to `c + D` each name
//!    the one before, the last carries a commit certificate by this replica's validators, and the
//!    root of the listed chunks bound to the stated link gives that header's commitment. A
//!    validator that sends the same manifest becomes a source of chunks too.
//! 3. *Chunks*: at most [`CHUNKS_IN_FLIGHT_PER_PEER`] requests per source, each chunk checked
//!    against the manifest on arrival. A wrong chunk, or an answer "not held", drops its sender
//!    as a source; a request unanswered for [`CHUNK_TIMEOUT_MS`] goes to another source.
//! 4. *Proof*: the chunks, each of which matched its listed hash, must restore a state at `c`
//!    whose canonical encoding they are (so the state is the one the certified root names). A
//!    snapshot that fails makes every source of its manifest refused, and the restore starts
//!    again.
//! 5. *Install*: Kura starts from `c` (the snapshot is kept beside its chunks, so a restart
//!    replays from it), the restored state becomes this replica's, and consensus and block sync
//!    go on from `c + 1` with execution. The blocks up to `c` are fetched in the background and
//!    appended below the base, checked by certificate, Merkle root and hash chain, until the
//!    store is whole again (`fill.rs`); strict init and `kura verify --strict` then replay it
//!    from genesis.
//!
//! While the snapshot is fetched, block sync goes on executing; if it reaches `c` first, the
//! restore is dropped. The validator set must be the same at this replica's height and at `c`
//! (checked: certificates below `c` are checked with it); with live membership the fill would
//! need each height's validators.

use kasane_model::block::{Certificate, Vote, VoteKind};
use kasane_wsv::snapshot::chunk_hash;

use super::*;

/// How many checkpoints behind the cluster height a replica must be to restore rather than
/// execute every block.
pub const RESTORE_CHECKPOINTS_BEHIND: u64 = 2;
/// Chunk requests out to one source at once (chunks are about 1 MiB): enough that the answers
/// of three sources cover a snapshot of tens of chunks in a few round trips, which under load
/// take hundreds of milliseconds each (a chunk waits behind block-sync responses).
const CHUNKS_IN_FLIGHT_PER_PEER: usize = 8;
/// A chunk request unanswered this long goes to another source.
const CHUNK_TIMEOUT_MS: u64 = 5_000;
/// How often a restoring replica looks after its requests.
const RESTORE_TICK_MS: u64 = 500;
/// A restore that received nothing useful for this long starts again.
const RESTORE_STALL_MS: u64 = 20_000;
/// Restores abandoned after which block sync no longer pauses while a restore runs.
const RESTORES_ABANDONED_BEFORE_SYNC_RUNS: u32 = 2;
/// Most peers remembered as having sent a snapshot or chunk that did not check out.
const REFUSED_PEERS_MAX: usize = 1024;

/// A manifest that checked out.
struct Chosen {
    header: BlockHeader,
    header_hash: Hash,
    chunks: Vec<Hash>,
    /// The binding block's hash and link: another manifest naming the same ones is the same.
    binding_hash: Hash,
    link: Hash,
}

/// A restore under way.
pub(super) struct Restore {
    checkpoint: u64,
    started_ms: u64,
    last_progress_ms: u64,
    chosen: Option<Chosen>,
    chunks: Vec<Option<Vec<u8>>>,
    /// Chunk index -> (source asked, when).
    in_flight: BTreeMap<u32, (PublicKey, u64)>,
    sources: BTreeSet<PublicKey>,
}

impl Restore {
    fn new(checkpoint: u64, now_ms: u64) -> Restore {
        Restore {
            checkpoint,
            started_ms: now_ms,
            last_progress_ms: now_ms,
            chosen: None,
            chunks: Vec::new(),
            in_flight: BTreeMap::new(),
            sources: BTreeSet::new(),
        }
    }
}

/// What a restore did, for the host's logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreEvent {
    /// Every validator was asked for its manifest of `checkpoint`.
    Started { checkpoint: u64, height: u64 },
    /// The snapshot of `checkpoint` restored, canonical, to the root its binding block names.
    Proven {
        checkpoint: u64,
        chunks: usize,
        bytes: usize,
        /// From the start of the restore to its last chunk (host time).
        fetch_ms: u64,
    },
    /// The restored state is this replica's and Kura starts from it; the blocks up to it are
    /// fetched in the background.
    Installed { checkpoint: u64, transactions: u64 },
    /// Every block below the base is in: the store is whole again.
    Filled { base: u64 },
    /// The restore stopped: why, and whether block sync goes on executing.
    Abandoned { checkpoint: u64, reason: String },
}

impl<B: Backend + Sync> Replica<B> {
    /// Step 1: starts a restore if state sync is on, none is under way, and this replica is far
    /// enough behind the cluster.
    pub(super) fn maybe_restore(&mut self, now_ms: u64, out: &mut Vec<Outbound>) {
        // A store that still fills in below a base does not start from another one.
        if self.restore.is_some() || !self.core.config().state_sync || self.kura.base().is_some() {
            return;
        }
        let interval = self.wsv.checkpoint_interval();
        let height = self.kura.height();
        let cluster = self.core.cluster_height();
        // The newest checkpoint whose binding block the cluster committed.
        let Some(checkpoint) = kasane_wsv::snapshot::newest_bound_checkpoint(cluster, interval) else {
            return;
        };
        if cluster <= height + RESTORE_CHECKPOINTS_BEHIND * interval || checkpoint <= height {
            return;
        }
        self.restore = Some(Restore::new(checkpoint, now_ms));
        self.events
            .push(ReplicaEvent::Restore(RestoreEvent::Started { checkpoint, height }));
        // Blocks executed now would be overtaken by the restore; they would take the processor
        // and bandwidth it needs. After restores that failed, block sync runs alongside, so a
        // restore that cannot finish never holds up catching up.
        if self.restores_abandoned < RESTORES_ABANDONED_BEFORE_SYNC_RUNS {
            self.core.pause_sync();
        }
        self.ask_manifests(checkpoint, out);
        self.arm_tick(out);
    }

    /// Keeps one `Timer::Restore` pending while a restore or a fill is under way.
    pub(super) fn arm_tick(&mut self, out: &mut Vec<Outbound>) {
        if !self.tick_armed {
            self.tick_armed = true;
            out.push(Outbound::Timer {
                timer: Timer::Restore,
                after_ms: RESTORE_TICK_MS,
            });
        }
    }

    fn ask_manifests(&self, checkpoint: u64, out: &mut Vec<Outbound>) {
        let me = self.key.public_key();
        for peer in self.core.topology().validators() {
            if peer != me && !self.snapshot_refused.contains(&peer) {
                out.push(Outbound::Send {
                    to: peer,
                    message: Message::SnapshotWanted { height: checkpoint },
                });
            }
        }
    }

    /// Step 2: a manifest from `from`.
    pub(super) fn on_snapshot_manifest(
        &mut self,
        now_ms: u64,
        from: PublicKey,
        height: u64,
        manifest: Option<SnapshotManifest>,
    ) -> Vec<Outbound> {
        let mut out = Vec::new();
        let Some(manifest) = manifest else {
            return out;
        };
        let wanted = self
            .restore
            .as_ref()
            .is_some_and(|restore| restore.checkpoint == height && !self.snapshot_refused.contains(&from));
        if !wanted || !self.core.topology().contains(&from) {
            return out;
        }
        let header_hash = manifest.header.hash();
        let binding_hash = manifest.headers.last().map(BlockHeader::hash);
        let chosen_matches = self
            .restore
            .as_ref()
            .and_then(|restore| restore.chosen.as_ref())
            .map(|chosen| {
                chosen.header_hash == header_hash
                    && chosen.chunks == manifest.chunks
                    && Some(chosen.binding_hash) == binding_hash
                    && chosen.link == manifest.link
            });
        match chosen_matches {
            Some(true) => {}
            // Another manifest than the chosen one: both cannot check out (that takes two
            // certified blocks at one height, or a second preimage), so it is ignored.
            Some(false) => return out,
            None => {
                let Some(binding_hash) = binding_hash.filter(|_| self.manifest_checks_out(height, &manifest)) else {
                    self.refuse_snapshot_peer(from);
                    return out;
                };
                let Some(restore) = self.restore.as_mut() else {
                    return out;
                };
                restore.chunks = vec![None; manifest.chunks.len()];
                restore.chosen = Some(Chosen {
                    header: manifest.header,
                    header_hash,
                    chunks: manifest.chunks,
                    binding_hash,
                    link: manifest.link,
                });
                restore.last_progress_ms = now_ms;
            }
        }
        if let Some(restore) = self.restore.as_mut() {
            restore.sources.insert(from);
        }
        self.request_chunks(now_ms, &mut out);
        out
    }

    /// The manifest's header is of the checkpoint height, its headers lead from it to the
    /// binding block, whose header is certified by this replica's validators and whose
    /// commitment is the root of the listed chunks bound to the stated link.
    fn manifest_checks_out(&mut self, height: u64, manifest: &SnapshotManifest) -> bool {
        let delay = kasane_wsv::snapshot::binding_delay(self.wsv.checkpoint_interval());
        if manifest.header.height != height || manifest.chunks.is_empty() || manifest.headers.len() as u64 != delay {
            return false;
        }
        let mut previous = &manifest.header;
        for header in &manifest.headers {
            if header.height != previous.height + 1 || header.previous_hash != previous.hash() {
                return false;
            }
            previous = header;
        }
        let root = kasane_wsv::snapshot::root_of(height, &manifest.chunks);
        kasane_wsv::snapshot::checkpoint_commitment(&manifest.link, &root) == previous.state_commitment
            && self.certified_header(previous, &manifest.certificate)
    }

    /// Whether `block` carries a commit certificate for itself by this replica's validators.
    pub(super) fn certified(&mut self, block: &CommittedBlock) -> bool {
        self.certified_header(&block.block.header, &block.certificate)
    }

    /// Whether `certificate` is a commit certificate for `header` by this replica's validators.
    fn certified_header(&mut self, header: &BlockHeader, certificate: &Certificate) -> bool {
        // The view it was committed in is the certificate's (CommittedBlock::expected_vote).
        let vote = Vote {
            kind: VoteKind::Commit,
            height: header.height,
            view: certificate.vote.view,
            block_hash: header.hash(),
        };
        certificate.vote == vote
            && certificate
                .verify(&vote, &self.core.topology().validators(), &mut self.cache)
                .is_ok()
    }

    /// Step 3: asks each source for missing chunks, up to its share of requests.
    fn request_chunks(&mut self, now_ms: u64, out: &mut Vec<Outbound>) {
        let Some(restore) = self.restore.as_mut() else {
            return;
        };
        let mut missing = (0..restore.chunks.len() as u32)
            .filter(|index| restore.chunks[*index as usize].is_none() && !restore.in_flight.contains_key(index))
            .collect::<Vec<u32>>()
            .into_iter();
        for source in restore.sources.clone() {
            let asked = restore.in_flight.values().filter(|(peer, _)| *peer == source).count();
            for _ in asked..CHUNKS_IN_FLIGHT_PER_PEER {
                let Some(index) = missing.next() else {
                    return;
                };
                restore.in_flight.insert(index, (source, now_ms));
                out.push(Outbound::Send {
                    to: source,
                    message: Message::SnapshotChunkWanted {
                        height: restore.checkpoint,
                        index,
                    },
                });
            }
        }
    }

    /// Step 3: a chunk from `from`; step 4 once every chunk is in.
    pub(super) fn on_snapshot_chunk(
        &mut self,
        now_ms: u64,
        from: PublicKey,
        height: u64,
        index: u32,
        bytes: Option<Vec<u8>>,
    ) -> Vec<Outbound> {
        let mut out = Vec::new();
        let Some(restore) = self.restore.as_mut() else {
            return out;
        };
        let asked =
            restore.checkpoint == height && restore.in_flight.get(&index).is_some_and(|(peer, _)| *peer == from);
        if !asked {
            return out;
        }
        restore.in_flight.remove(&index);
        let expected = restore
            .chosen
            .as_ref()
            .and_then(|chosen| chosen.chunks.get(index as usize))
            .copied();
        let mut bad = false;
        match bytes {
            Some(bytes) if expected == Some(chunk_hash(&bytes)) => {
                restore.chunks[index as usize] = Some(bytes);
                restore.last_progress_ms = now_ms;
            }
            Some(_) => {
                restore.sources.remove(&from);
                bad = true;
            }
            // It moved on to a newer checkpoint.
            None => {
                restore.sources.remove(&from);
            }
        }
        let complete = restore.chosen.is_some() && restore.chunks.iter().all(Option::is_some);
        if bad {
            self.refuse_snapshot_peer(from);
        }
        if complete {
            self.prove(now_ms, &mut out);
        } else {
            self.request_chunks(now_ms, &mut out);
        }
        out
    }

    /// Step 4: restores the snapshot; its chunks must be the canonical encoding of what they
    /// restore, so that the state is the one whose root the binding block names.
    fn prove(&mut self, now_ms: u64, out: &mut Vec<Outbound>) {
        let Some(mut restore) = self.restore.take() else {
            return;
        };
        let Some(chosen) = restore.chosen.as_ref() else {
            self.restore = Some(restore);
            return;
        };
        let checkpoint = restore.checkpoint;
        let chunks: Vec<Vec<u8>> = restore.chunks.iter_mut().filter_map(Option::take).collect();
        let (chunk_count, bytes) = (chunks.len(), chunks.iter().map(Vec::len).sum());
        let restored = Wsv::from_snapshot(
            self.wsv.chain().clone(),
            *self.wsv.genesis_key(),
            self.wsv.plugins().clone(),
            self.wsv.checkpoint_interval(),
            &chosen.header,
            &chunks,
        );
        drop(chunks);
        // The root was checked against the certified binding header when the manifest was
        // chosen, and every chunk against the manifest on arrival; `from_snapshot` checked that
        // the chunks are the canonical encoding of the state they restore.
        let proof = restored.map_err(|error| error.to_string());
        let validators = self.core.topology().validators();
        match proof {
            Ok(restored) if restored.validators() == validators => {
                self.events.push(ReplicaEvent::Restore(RestoreEvent::Proven {
                    checkpoint,
                    chunks: chunk_count,
                    bytes,
                    fetch_ms: now_ms.saturating_sub(restore.started_ms),
                }));
                let (header, header_hash) = (chosen.header.clone(), chosen.header_hash);
                self.restore = Some(restore);
                self.install(now_ms, restored, &header, header_hash, out);
            }
            Ok(_) => {
                self.restore = Some(restore);
                self.abandon_restore(
                    now_ms,
                    out,
                    "the validator set changed between this height and the checkpoint",
                );
            }
            Err(error) => {
                for source in &restore.sources {
                    if self.snapshot_refused.len() < REFUSED_PEERS_MAX {
                        self.snapshot_refused.insert(*source);
                    }
                }
                self.restore = Some(restore);
                self.abandon_restore(now_ms, out, &format!("the snapshot did not prove itself: {error}"));
                // Start again at once, from the validators not refused.
                self.maybe_restore(now_ms, out);
            }
        }
    }

    /// The tick: requests that timed out go to other sources, a stalled restore starts again,
    /// and one overtaken by block sync stops.
    pub(super) fn on_restore_tick(&mut self, now_ms: u64) -> Vec<Outbound> {
        let mut out = Vec::new();
        self.tick_armed = false;
        self.restore_tick(now_ms, &mut out);
        self.fill_tick(now_ms, &mut out);
        if self.restore.is_some() || self.fill.is_some() {
            self.arm_tick(&mut out);
        }
        out
    }

    fn restore_tick(&mut self, now_ms: u64, out: &mut Vec<Outbound>) {
        let height = self.kura.height();
        let Some(restore) = self.restore.as_mut() else {
            return;
        };
        if height >= restore.checkpoint {
            self.abandon_restore(now_ms, out, "block sync reached the checkpoint first");
            return;
        }
        // Validators keep only their latest checkpoint: with no source left (every validator
        // answered "not held", before a manifest was chosen or after) and a newer checkpoint in
        // the cluster, the restore starts again from the newest one.
        let moved_on = restore.sources.is_empty() && restore.in_flight.is_empty();
        let newer =
            kasane_wsv::snapshot::newest_bound_checkpoint(self.core.cluster_height(), self.wsv.checkpoint_interval())
                .is_some_and(|newest| newest > restore.checkpoint);
        let stalled = now_ms.saturating_sub(restore.last_progress_ms) > RESTORE_STALL_MS;
        if stalled || (moved_on && newer) {
            self.abandon_restore(
                now_ms,
                out,
                if stalled {
                    "no progress"
                } else {
                    "the validators moved on to a newer checkpoint"
                },
            );
            self.maybe_restore(now_ms, out);
            return;
        }
        let timed_out: Vec<(u32, PublicKey)> = restore
            .in_flight
            .iter()
            .filter(|(_, (_, sent))| now_ms.saturating_sub(*sent) > CHUNK_TIMEOUT_MS)
            .map(|(index, (peer, _))| (*index, *peer))
            .collect();
        for (index, peer) in timed_out {
            restore.in_flight.remove(&index);
            restore.sources.remove(&peer);
        }
        let ask_again = restore.sources.is_empty().then_some(restore.checkpoint);
        if let Some(checkpoint) = ask_again {
            // Whoever answers with the chosen manifest is a source again.
            self.ask_manifests(checkpoint, out);
        }
        self.request_chunks(now_ms, out);
    }

    fn refuse_snapshot_peer(&mut self, peer: PublicKey) {
        if self.snapshot_refused.len() < REFUSED_PEERS_MAX {
            self.snapshot_refused.insert(peer);
        }
    }

    /// Drops the restore under way, and lets block sync ask for blocks again.
    fn abandon_restore(&mut self, now_ms: u64, out: &mut Vec<Outbound>, reason: &str) {
        if let Some(restore) = self.restore.take() {
            self.restores_abandoned = self.restores_abandoned.saturating_add(1);
            self.events.push(ReplicaEvent::Restore(RestoreEvent::Abandoned {
                checkpoint: restore.checkpoint,
                reason: reason.to_string(),
            }));
        }
        let effects = self.core.resume_sync();
        out.extend(self.run(now_ms, effects));
    }

    /// Step 5: Kura starts from the checkpoint (keeping the snapshot beside its chunks), the
    /// restored state becomes this replica's, the core moves past the checkpoint, and the fill
    /// of the blocks below it starts.
    fn install(
        &mut self,
        now_ms: u64,
        restored: Wsv,
        header: &BlockHeader,
        header_hash: Hash,
        out: &mut Vec<Outbound>,
    ) {
        let checkpoint = header.height;
        // Block sync may already be past the checkpoint.
        if self.kura.height() >= checkpoint {
            self.abandon_restore(now_ms, out, "block sync reached the checkpoint first");
            return;
        }
        let chunks: Vec<&[u8]> = restored
            .checkpoint()
            .map(|snapshot| {
                (0..snapshot.chunk_count())
                    .filter_map(|index| snapshot.chunk(index))
                    .collect()
            })
            .unwrap_or_default();
        let encoded_header = kasane_model::codec::encode_body(header);
        if let Err(error) = self.kura.rebase(checkpoint, header_hash, &encoded_header, &chunks) {
            self.abandon_restore(
                now_ms,
                out,
                &format!("the store could not start from the snapshot: {error}"),
            );
            return;
        }
        drop(chunks);
        self.restore = None;
        self.validated.clear();
        self.wsv = restored;
        self.events.push(ReplicaEvent::Restore(RestoreEvent::Installed {
            checkpoint,
            transactions: self.wsv.transaction_count(),
        }));
        let effects = self.core.step(Input::Restored {
            height: checkpoint,
            hash: header_hash,
            validators: self.wsv.validators(),
            demoted: self.wsv.demoted(),
        });
        out.extend(self.run(now_ms, effects));
        self.wire.retain(&self.wsv.validators(), checkpoint + 1);
        self.start_fill(now_ms, out);
    }
}
