//! The consensus lock record on disk (PROTOCOL.md R17): written to a temporary file, synced,
//! renamed over the old one and the directory synced, so a crash leaves the old record or the
//! new one, never a mix.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use kasane_consensus::replica::{LockStore, LockStoreError};
use kasane_consensus::LockRecord;
use kasane_model::codec;

const MAGIC: &[u8; 4] = b"KLCK";
/// 2: the record keeps the view's proof and the locked block (PROTOCOL.md R17). Records of
/// version 1 are still read.
const VERSION: u8 = 2;

/// The record as version 1 wrote it.
#[derive(serde::Deserialize)]
struct RecordV1 {
    height: u64,
    view: u64,
    lock: Option<kasane_model::Certificate>,
    voted_prepare: Option<u64>,
    voted_commit: Option<u64>,
}

impl From<RecordV1> for LockRecord {
    fn from(old: RecordV1) -> LockRecord {
        // Without its proof a restored view cannot be shown to others, and without the block
        // the lock cannot be re-proposed; both only cost views (R4a fetches the block).
        LockRecord {
            height: old.height,
            view: old.view,
            proof: Vec::new(),
            lock: old.lock,
            block: None,
            voted_prepare: old.voted_prepare,
            voted_commit: old.voted_commit,
        }
    }
}

#[derive(Debug)]
pub struct FileLockStore {
    path: PathBuf,
    /// The record found at open, until the first save. Saved records are not kept in memory:
    /// a commit vote's record holds the whole locked block, and a copy of it per height was
    /// work for nothing, since only a starting replica loads the record.
    record: Option<LockRecord>,
    saved: bool,
}

fn encode(record: &LockRecord) -> Vec<u8> {
    let body = codec::encode_body(record);
    let mut bytes = Vec::with_capacity(body.len() + 13);
    bytes.extend_from_slice(MAGIC);
    bytes.push(VERSION);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

fn decode(bytes: &[u8]) -> anyhow::Result<LockRecord> {
    if bytes.len() < 13 || &bytes[..4] != MAGIC {
        bail!("not a kasane lock record");
    }
    let version = bytes[4];
    if version != VERSION && version != 1 {
        bail!("unknown lock record version {version} (this build reads 1 and {VERSION})");
    }
    let length = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let checksum = u32::from_le_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]);
    let body = &bytes[13..];
    if body.len() != length || crc32c::crc32c(body) != checksum {
        bail!("lock record checksum or length mismatch");
    }
    if version == 1 {
        return Ok(postcard::from_bytes::<RecordV1>(body)
            .context("lock record body")?
            .into());
    }
    postcard::from_bytes(body).context("lock record body")
}

impl FileLockStore {
    /// Reads the record if there is one. A damaged record is an error: starting without it could
    /// make this node vote twice at a height.
    pub fn open(path: &Path) -> anyhow::Result<FileLockStore> {
        let record = match std::fs::read(path) {
            Ok(bytes) => Some(decode(&bytes).with_context(|| {
                format!(
                    "{} is damaged; the node refuses to start rather than risk voting twice (move it away only if this node's votes were never sent)",
                    path.display()
                )
            })?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        Ok(FileLockStore {
            path: path.to_path_buf(),
            record,
            saved: false,
        })
    }

    fn write(&self, record: &LockRecord) -> std::io::Result<()> {
        let temporary = self.path.with_extension("tmp");
        let mut file = File::create(&temporary)?;
        file.write_all(&encode(record))?;
        file.sync_data()?;
        std::fs::rename(&temporary, &self.path)?;
        if let Some(parent) = self.path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }
}

/// A failure names the file: a vote must not leave this node unless the record is durable, so
/// the replica stops on it and the node shuts down (docs/PROTOCOL.md R17).
impl LockStore for FileLockStore {
    fn save(&mut self, record: &LockRecord) -> Result<(), LockStoreError> {
        self.write(record)
            .map_err(|error| LockStoreError(format!("cannot write {}: {error}", self.path.display())))?;
        self.record = None;
        self.saved = true;
        Ok(())
    }

    /// The newest record: the one found at open or, after a save, the file read again (saved
    /// and synced a moment ago, so unreadable means the disk failed under the node).
    fn load(&self) -> Result<Option<LockRecord>, LockStoreError> {
        if !self.saved {
            return Ok(self.record.clone());
        }
        std::fs::read(&self.path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| decode(&bytes))
            .map(Some)
            .map_err(|error| LockStoreError(format!("cannot read back {}: {error:#}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(height: u64) -> LockRecord {
        LockRecord {
            height,
            view: 2,
            proof: Vec::new(),
            lock: None,
            block: None,
            voted_prepare: Some(1),
            voted_commit: None,
        }
    }

    #[test]
    fn a_saved_record_is_read_back_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("consensus.lock");
        let mut store = FileLockStore::open(&path).expect("open");
        assert_eq!(store.load(), Ok(None));
        store.save(&record(5)).expect("save 5");
        store.save(&record(6)).expect("save 6");
        assert_eq!(store.load(), Ok(Some(record(6))), "read back from the file");
        assert_eq!(FileLockStore::open(&path).expect("reopen").load(), Ok(Some(record(6))));
        let mut bytes = std::fs::read(&path).expect("read");
        for index in 0..bytes.len() {
            bytes[index] ^= 0x40;
            std::fs::write(&path, &bytes).expect("write");
            assert!(FileLockStore::open(&path).is_err(), "flipped byte {index} accepted");
            bytes[index] ^= 0x40;
        }
        std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
        assert!(FileLockStore::open(&path).is_err());
    }

    /// A disk that fails under the node is an error naming the file, never an exit inside
    /// the store: the replica stops on it and the node shuts down.
    #[test]
    fn a_save_or_read_back_that_fails_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let sub = dir.path().join("data");
        std::fs::create_dir(&sub).expect("mkdir");
        let path = sub.join("consensus.lock");
        let mut store = FileLockStore::open(&path).expect("open");
        store.save(&record(5)).expect("save");
        std::fs::remove_dir_all(&sub).expect("remove the directory under the store");
        let error = store.load().expect_err("the record is gone");
        assert!(error.to_string().contains("consensus.lock"), "{error}");
        let error = store.save(&record(6)).expect_err("the directory is gone");
        assert!(error.to_string().contains("cannot write"), "{error}");
        assert!(error.to_string().contains("consensus.lock"), "{error}");
    }

    #[test]
    fn a_record_of_version_1_is_still_read() {
        #[derive(serde::Serialize)]
        struct Old {
            height: u64,
            view: u64,
            lock: Option<kasane_model::Certificate>,
            voted_prepare: Option<u64>,
            voted_commit: Option<u64>,
        }
        let body = postcard::to_stdvec(&Old {
            height: 7,
            view: 3,
            lock: None,
            voted_prepare: Some(3),
            voted_commit: Some(2),
        })
        .expect("encode");
        let mut bytes = MAGIC.to_vec();
        bytes.push(1);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let record = decode(&bytes).expect("a version 1 record");
        assert_eq!((record.height, record.view, record.voted_prepare), (7, 3, Some(3)));
        assert!(record.proof.is_empty() && record.block.is_none());
        bytes[4] = 9;
        assert!(decode(&bytes).is_err());
    }
}
