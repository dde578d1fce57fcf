//! Local checkpoints: a node's own snapshots of its world state at its latest checkpoint
//! heights, kept beside the chunks so that a restart replays from there instead of from genesis
//! (docs/NODE.md, "Restart").
//!
//! Each file, `checkpoint-<height, 20 digits>.kura`, has the layout of the base snapshot
//! (docs/KURA-FORMAT.md): the encoded header of the checkpoint block and the snapshot's chunks,
//! each with its length and checksum. The newest [`KEPT`] are kept: a file is written once the
//! block binding its root is committed, but a crash can lose blocks not yet synced, and a store
//! without the blocks up to the binding one starts from the checkpoint before.
//!
//! A file is an optimisation, never a source of truth: fast init uses one only when its header
//! is the stored block at its height and the stored blocks after it up to the one binding its
//! root, executed on the restored state, yield the state commitment that block carries.
//! Anything else (a missing, torn, stale or forged file) means an older file or a replay from
//! genesis, as without them. Strict init never reads them.

use std::io;

use crate::backend::Backend;
use crate::format;

/// Local checkpoints kept: the newest, and the one before for a stop right at the newest.
pub const KEPT: usize = 2;

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".kura";
/// What a write cut short by a crash leaves (the file backend's temporary name).
const TEMPORARY_SUFFIX: &str = ".kura.tmp";

/// The file name of the local checkpoint of height `height`.
pub fn file_name(height: u64) -> String {
    format!("{PREFIX}{height:020}{SUFFIX}")
}

fn height_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The heights of the local checkpoints the store keeps, newest first.
pub fn heights<B: Backend>(backend: &B) -> io::Result<Vec<u64>> {
    Ok(heights_in(&backend.list_files()?))
}

fn heights_in(names: &[String]) -> Vec<u64> {
    let mut heights: Vec<u64> = names.iter().filter_map(|name| height_of(name)).collect();
    heights.sort_unstable_by(|a, b| b.cmp(a));
    heights
}

/// Writes the local checkpoint of height `height` durably (a temporary file, synced, renamed),
/// then removes all but the newest [`KEPT`] and what earlier writes cut short by a crash left.
/// `header` is the encoded header of the checkpoint block, `chunks` the snapshot's chunks.
pub fn save<B: Backend, C: AsRef<[u8]>>(backend: &mut B, height: u64, header: &[u8], chunks: &[C]) -> io::Result<()> {
    backend.write_file(&file_name(height), &format::encode_base_snapshot(header, chunks))?;
    let names = backend.list_files()?;
    let torn = names
        .iter()
        .filter(|name| name.starts_with(PREFIX) && name.ends_with(TEMPORARY_SUFFIX))
        .cloned();
    let old = heights_in(&names).into_iter().skip(KEPT).map(file_name);
    for name in torn.chain(old) {
        backend.remove_file(&name)?;
    }
    Ok(())
}

/// The local checkpoint of height `height`: the encoded header and the chunks. An error names
/// what is wrong with the file (missing, unreadable, torn, wrong version).
pub fn load<B: Backend>(backend: &B, height: u64) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let name = file_name(height);
    let bytes = backend
        .read_file(&name)
        .map_err(|error| format!("reading {name}: {error}"))?
        .ok_or_else(|| format!("{name} is gone"))?;
    format::parse_base_snapshot(&bytes).map_err(|reason| format!("{name}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    #[test]
    fn names_round_trip_and_only_the_newest_two_stay() {
        assert_eq!(file_name(1200), "checkpoint-00000000000000001200.kura");
        assert_eq!(height_of(&file_name(1200)), Some(1200));
        for other in [
            "checkpoint-1200.kura",
            "checkpoint-00000000000000001200.kura.tmp",
            "base-snapshot.kura",
            "checkpoint-0000000000000000120x.kura",
        ] {
            assert_eq!(height_of(other), None, "{other}");
        }
        let mut backend = MemoryBackend::new();
        backend
            .write_file("checkpoint-00000000000000000100.kura.tmp", b"torn")
            .expect("write");
        for height in [100, 200, 300] {
            save(&mut backend, height, b"header", &[b"chunk".to_vec()]).expect("save");
        }
        assert_eq!(heights(&backend).expect("list"), vec![300, 200]);
        assert_eq!(
            load(&backend, 300).expect("load"),
            (b"header".to_vec(), vec![b"chunk".to_vec()])
        );
        assert!(load(&backend, 100).expect_err("removed").contains("gone"));
        assert_eq!(
            backend.list_files().expect("list").len(),
            2,
            "the torn write is removed"
        );
    }
}
