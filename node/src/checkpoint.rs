//! Saving local checkpoints (kura/src/checkpoint.rs): each new checkpoint of the world state is
//! written beside the block store (the newest two are kept), so that a restart replays from it
//! instead of from genesis (docs/NODE.md, "Restart").
//!
//! The snapshot is already encoded: the world state encodes it on its own thread at every
//! checkpoint height, and holds it from the commit of the block that binds its root, to serve it
//! to nodes that restore. Writing it (tens of MB, synced) is the slow part, so it runs on a
//! blocking thread, one write at a time; a checkpoint that comes while the last one is still
//! being written is skipped, and the next one replaces it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kasane_kura::{checkpoint, FileBackend};
use kasane_model::codec;

use super::runtime::{NodeReplica, Shared};
use super::state::Metrics;

/// Writes the replica's newest checkpoint to its store's directory.
#[derive(Debug)]
pub struct CheckpointSaver {
    dir: PathBuf,
    writing: Arc<AtomicBool>,
    /// The height of the last checkpoint handed to a write.
    last: u64,
}

impl CheckpointSaver {
    /// A saver for the store in `dir`, which holds a checkpoint of height `last` already (0 for
    /// none), or one no newer than it.
    pub fn new(dir: PathBuf, last: u64) -> CheckpointSaver {
        CheckpointSaver {
            dir,
            writing: Arc::new(AtomicBool::new(false)),
            last,
        }
    }

    /// Whether the checkpoint of `height` is to be written now, marking it as handed to a write
    /// if so: it is newer than the last, no write is under way, and the store holds its block
    /// (`stored`, asked last: it reads the store's index).
    ///
    /// A store restored from a snapshot holds no block at its base until the fill brings it: the
    /// base's checkpoint is saved then. (It was once marked before that check and so skipped for
    /// good, and a node killed after its fill but before its next checkpoint replayed from
    /// genesis: 17 s in the 28th soak, docs/TESTNET.md.)
    fn claim(&mut self, height: u64, stored: impl FnOnce() -> bool) -> bool {
        if height <= self.last || self.writing.load(Ordering::Acquire) || !stored() {
            return false;
        }
        self.last = height;
        true
    }

    /// Starts writing the replica's checkpoint if it is newer than the last one written and no
    /// write is under way. Call after commits; costs a header read when there is something to
    /// write, nothing otherwise.
    pub fn offer(&mut self, replica: &NodeReplica, shared: &Arc<Shared>) {
        let Some(snapshot) = replica.wsv().checkpoint() else {
            return;
        };
        let height = snapshot.height();
        if !self.claim(height, || replica.kura().holds(height)) {
            return;
        }
        let Ok(block) = replica.kura().read(height) else {
            return;
        };
        let header = codec::encode_body(&block.block.header);
        self.writing.store(true, Ordering::Release);
        let snapshot = snapshot.clone();
        let dir = self.dir.clone();
        let writing = self.writing.clone();
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let chunks: Vec<&[u8]> = (0..snapshot.chunk_count())
                .filter_map(|index| snapshot.chunk(index))
                .collect();
            let saved = FileBackend::open(&dir)
                .and_then(|mut backend| checkpoint::save(&mut backend, height, &header, &chunks));
            match saved {
                Ok(()) => {
                    Metrics::set(&shared.metrics.local_checkpoint_height, height);
                    tracing::debug!(
                        height,
                        bytes = snapshot.bytes(),
                        seconds = started.elapsed().as_secs_f64(),
                        "local checkpoint saved"
                    );
                }
                Err(error) => {
                    Metrics::add(&shared.metrics.local_checkpoint_failures, 1);
                    tracing::warn!(
                        height,
                        %error,
                        "saving the local checkpoint failed: a restart replays from an older one, or from genesis"
                    )
                }
            }
            writing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_whose_block_is_not_stored_yet_is_saved_once_it_is() {
        let mut saver = CheckpointSaver::new(PathBuf::from("/nonexistent"), 100);
        // The base of a restored store, its block not yet filled in: not now, and not lost.
        assert!(!saver.claim(200, || false));
        assert!(!saver.claim(200, || false));
        assert!(saver.claim(200, || true), "saved once the fill brought the block");
        assert!(!saver.claim(200, || true), "handed to a write once only");
        // Older or equal heights never; a newer one waits while a write is under way.
        assert!(!saver.claim(150, || true));
        saver.writing.store(true, Ordering::Release);
        assert!(!saver.claim(300, || true));
        saver.writing.store(false, Ordering::Release);
        assert!(saver.claim(300, || true));
    }
}
