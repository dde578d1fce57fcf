//! The storage under Kura: a directory of chunk files, or memory that can simulate a crash.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::format;

/// The bytes of a whole chunk: mapped from a file, or owned.
#[derive(Debug)]
pub enum ChunkBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ChunkBytes::Mapped(map) => map,
            ChunkBytes::Owned(bytes) => bytes,
        }
    }
}

/// What Kura needs of its storage. Chunks are named by number.
pub trait Backend: Send {
    /// Chunk numbers present, ascending.
    fn list(&self) -> io::Result<Vec<u32>>;
    /// A whole chunk. `sealed` promises the chunk will never be written again (so a file
    /// backend may map it).
    fn read_chunk(&self, chunk: u32, sealed: bool) -> io::Result<ChunkBytes>;
    /// `len` bytes at `offset`.
    fn read_at(&self, chunk: u32, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Creates an empty chunk and makes its name durable.
    fn create(&mut self, chunk: u32) -> io::Result<()>;
    /// Appends to a chunk (not yet durable).
    fn append(&mut self, chunk: u32, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended to `chunk` durable.
    fn sync(&mut self, chunk: u32) -> io::Result<()>;
    /// Cuts a chunk to `len` bytes, durably.
    fn truncate(&mut self, chunk: u32, len: u64) -> io::Result<()>;
    /// Removes a chunk, durably.
    fn remove(&mut self, chunk: u32) -> io::Result<()>;
    /// A named file beside the chunks (the base record and base snapshot of a store restored
    /// from a snapshot); `None` when there is none.
    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Writes a named file whole and durably: after a crash it holds the old bytes or the new.
    fn write_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Removes a named file durably; nothing to do when there is none.
    fn remove_file(&mut self, name: &str) -> io::Result<()>;
    /// The names of the named files (whatever is not a chunk), in no particular order; a file
    /// backend includes the temporary files of writes a crash cut short.
    fn list_files(&self) -> io::Result<Vec<String>>;
}

/// Chunk files in a directory.
#[derive(Debug)]
pub struct FileBackend {
    dir: PathBuf,
    /// The chunk being appended to, kept open.
    active: Option<(u32, File)>,
}

impl FileBackend {
    /// Uses (and creates, if missing) the directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<FileBackend> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(FileBackend { dir, active: None })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, chunk: u32) -> PathBuf {
        self.dir.join(format::chunk_file_name(chunk))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn active_file(&mut self, chunk: u32) -> io::Result<&mut File> {
        if self.active.as_ref().map(|(number, _)| *number) != Some(chunk) {
            let file = OpenOptions::new().read(true).append(true).open(self.path(chunk))?;
            self.active = Some((chunk, file));
        }
        match &mut self.active {
            Some((_, file)) => Ok(file),
            None => Err(io::Error::other("no active chunk")),
        }
    }
}

impl Backend for FileBackend {
    fn list(&self) -> io::Result<Vec<u32>> {
        let mut chunks = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(number) = entry.file_name().to_str().and_then(format::parse_chunk_file_name) {
                chunks.push(number);
            }
        }
        chunks.sort_unstable();
        Ok(chunks)
    }

    fn read_chunk(&self, chunk: u32, sealed: bool) -> io::Result<ChunkBytes> {
        let mut file = File::open(self.path(chunk))?;
        if sealed && file.metadata()?.len() > 0 {
            return crate::mmap::map_sealed_chunk(&file).map(ChunkBytes::Mapped);
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        Ok(ChunkBytes::Owned(bytes))
    }

    fn read_at(&self, chunk: u32, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(chunk))?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }

    fn create(&mut self, chunk: u32) -> io::Result<()> {
        OpenOptions::new().write(true).create_new(true).open(self.path(chunk))?;
        self.sync_dir()
    }

    fn append(&mut self, chunk: u32, bytes: &[u8]) -> io::Result<()> {
        self.active_file(chunk)?.write_all(bytes)
    }

    fn sync(&mut self, chunk: u32) -> io::Result<()> {
        self.active_file(chunk)?.sync_data()
    }

    fn truncate(&mut self, chunk: u32, len: u64) -> io::Result<()> {
        self.active = None;
        let file = OpenOptions::new().write(true).open(self.path(chunk))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn remove(&mut self, chunk: u32) -> io::Result<()> {
        if self.active.as_ref().is_some_and(|(number, _)| *number == chunk) {
            self.active = None;
        }
        fs::remove_file(self.path(chunk))?;
        self.sync_dir()
    }

    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn write_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let temporary = self.dir.join(format!("{name}.tmp"));
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, self.dir.join(name))?;
        self.sync_dir()
    }

    fn remove_file(&mut self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => self.sync_dir(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn list_files(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                if format::parse_chunk_file_name(name).is_none() {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }
}

#[derive(Debug, Default, Clone)]
struct MemoryChunk {
    bytes: Vec<u8>,
    synced_len: usize,
}

/// An in-memory disk shared by clones, which keeps track of what was synced so a test or a
/// simulation can [`MemoryBackend::crash`] it: every byte appended after the last sync is lost.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    disk: Arc<Mutex<BTreeMap<u32, MemoryChunk>>>,
    /// Named files: written whole and durably, so a crash leaves them as they are.
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn disk(&self) -> MutexGuard<'_, BTreeMap<u32, MemoryChunk>> {
        // A panic while holding this lock can only come from a bug in this file; the data is
        // plain bytes and stays usable, so take it back.
        self.disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn files(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Simulates power loss: unsynced bytes vanish.
    pub fn crash(&self) {
        for chunk in self.disk().values_mut() {
            chunk.bytes.truncate(chunk.synced_len);
        }
    }

    /// Simulates power loss where `keep` of the unsynced bytes of the last chunk reached the
    /// disk (a torn write).
    pub fn crash_keeping(&self, keep: usize) {
        let mut disk = self.disk();
        let last = disk.keys().next_back().copied();
        for (number, chunk) in disk.iter_mut() {
            let kept = if Some(*number) == last { keep } else { 0 };
            let len = (chunk.synced_len + kept).min(chunk.bytes.len());
            chunk.bytes.truncate(len);
        }
    }

    /// The bytes of a chunk, for tests that damage a store.
    pub fn chunk_bytes(&self, chunk: u32) -> Option<Vec<u8>> {
        self.disk().get(&chunk).map(|chunk| chunk.bytes.clone())
    }

    /// Replaces the bytes of a chunk (as synced), for tests that damage a store.
    pub fn set_chunk_bytes(&self, chunk: u32, bytes: Vec<u8>) {
        let synced_len = bytes.len();
        self.disk().insert(chunk, MemoryChunk { bytes, synced_len });
    }

    /// A copy of the whole disk, independent of this one.
    pub fn snapshot(&self) -> MemoryBackend {
        MemoryBackend {
            disk: Arc::new(Mutex::new(self.disk().clone())),
            files: Arc::new(Mutex::new(self.files().clone())),
        }
    }
}

fn missing(chunk: u32) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("chunk {chunk} does not exist"))
}

impl Backend for MemoryBackend {
    fn list(&self) -> io::Result<Vec<u32>> {
        Ok(self.disk().keys().copied().collect())
    }

    fn read_chunk(&self, chunk: u32, _sealed: bool) -> io::Result<ChunkBytes> {
        let disk = self.disk();
        let found = disk.get(&chunk).ok_or_else(|| missing(chunk))?;
        Ok(ChunkBytes::Owned(found.bytes.clone()))
    }

    fn read_at(&self, chunk: u32, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let disk = self.disk();
        let found = disk.get(&chunk).ok_or_else(|| missing(chunk))?;
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        found
            .bytes
            .get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    fn create(&mut self, chunk: u32) -> io::Result<()> {
        let mut disk = self.disk();
        if disk.contains_key(&chunk) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("chunk {chunk} exists"),
            ));
        }
        disk.insert(chunk, MemoryChunk::default());
        Ok(())
    }

    fn append(&mut self, chunk: u32, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        disk.get_mut(&chunk)
            .ok_or_else(|| missing(chunk))?
            .bytes
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self, chunk: u32) -> io::Result<()> {
        let mut disk = self.disk();
        let found = disk.get_mut(&chunk).ok_or_else(|| missing(chunk))?;
        found.synced_len = found.bytes.len();
        Ok(())
    }

    fn truncate(&mut self, chunk: u32, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        let found = disk.get_mut(&chunk).ok_or_else(|| missing(chunk))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(found.bytes.len());
        found.bytes.truncate(len);
        found.synced_len = len;
        Ok(())
    }

    fn remove(&mut self, chunk: u32) -> io::Result<()> {
        self.disk().remove(&chunk).map(|_| ()).ok_or_else(|| missing(chunk))
    }

    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.files().get(name).cloned())
    }

    fn write_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.files().insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    fn remove_file(&mut self, name: &str) -> io::Result<()> {
        self.files().remove(name);
        Ok(())
    }

    fn list_files(&self) -> io::Result<Vec<String>> {
        Ok(self.files().keys().cloned().collect())
    }
}
