//! The local checkpoint: a node's own snapshot of its world state at its latest checkpoint
//! height, kept beside the chunks so that a restart replays from there instead of from genesis
//! (docs/NODE.md, "Restart from the local checkpoint").
//!
//! The file has the layout of the base snapshot (docs/KURA-FORMAT.md): the encoded header of
//! the checkpoint block and the snapshot's chunks, each with its length and checksum. It is an
//! optimisation, never a source of truth: fast init uses it only when its header is the stored
//! block at its height and the stored block after it, executed on the restored state, yields
//! the state commitment that block carries (which binds the snapshot's root). Anything else
//! (a missing, torn, stale or forged file) means a replay from genesis, as without it. Strict
//! init never reads it.

use crate::backend::Backend;
use crate::format;

/// The file's name in the store's directory.
pub const FILE: &str = "checkpoint.kura";

/// Replaces the local checkpoint, durably (written to a temporary file, synced, renamed).
/// `header` is the encoded header of the checkpoint block, `chunks` the snapshot's chunks.
pub fn save<B: Backend, C: AsRef<[u8]>>(backend: &mut B, header: &[u8], chunks: &[C]) -> std::io::Result<()> {
    backend.write_file(FILE, &format::encode_base_snapshot(header, chunks))
}

/// The local checkpoint, if the store keeps one: the encoded header and the chunks. An error
/// names what is wrong with the file (unreadable, torn, wrong version).
pub fn load<B: Backend>(backend: &B) -> Result<Option<(Vec<u8>, Vec<Vec<u8>>)>, String> {
    let Some(bytes) = backend
        .read_file(FILE)
        .map_err(|error| format!("reading {FILE}: {error}"))?
    else {
        return Ok(None);
    };
    format::parse_base_snapshot(&bytes)
        .map(Some)
        .map_err(|reason| format!("{FILE}: {reason}"))
}
