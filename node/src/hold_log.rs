//! The hold log (docs/PROTOCOL.md section 7.1, R18b; docs/NODE.md, "Acknowledgement"): every
//! transaction in the node's queue, on disk, so that a node killed and restarted queues again
//! what it told its peers and clients it holds.
//!
//! A directory of segment files `NNNNNNNNNNNNNNNN.hold`, each a header (`KHLD`, version) and
//! records `[kind u8][length u32 LE][crc32c u32 LE of kind and body][body]`:
//! - kind 1, a queued transaction: its versioned encoding;
//! - kind 2, released transactions (committed or expired): their payload hashes, 32 bytes each.
//!
//! Appends and releases go to a buffer; `sync` writes it to the newest segment and fdatasyncs it
//! (the replica syncs at most every `HOLD_SYNC_MS`, and answers `Held` only after). A segment
//! rolls past [`SEGMENT_BYTES`]. The oldest segment is deleted once none of its transactions is
//! still held; segments go oldest first only, so a release record never outlives the
//! transaction it releases. When more than [`SEGMENTS_MAX`] segments pile up behind a
//! transaction that stays queued, the oldest segment's held transactions are copied to the
//! newest and the segment goes. Opening reads every segment in order: a torn record at the end
//! of the newest is cut (a crash mid-write), damage anywhere else is an error naming the file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ahash::AHashMap as HashMap;
use anyhow::{bail, Context};
use kasane_consensus::holding::{HoldStore, SyncStart};
use kasane_model::{codec, Hash, SignedTransaction};

const MAGIC: &[u8; 4] = b"KHLD";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 5;
const RECORD_HEADER_BYTES: usize = 9;
const KIND_TRANSACTION: u8 = 1;
const KIND_RELEASED: u8 = 2;
/// A segment rolls once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// More segments than this, and the oldest one's held transactions are copied forward.
pub const SEGMENTS_MAX: usize = 8;
/// Largest record body read back (a transaction is at most `TRANSACTION_BYTES_MAX`; a release
/// record at most the queue's capacity in hashes).
const RECORD_BYTES_MAX: usize = 64 << 20;

#[derive(Debug)]
pub struct HoldLog {
    dir: PathBuf,
    /// A segment rolls once it holds this many bytes ([`SEGMENT_BYTES`] but in tests).
    segment_bytes: u64,
    /// Segment id to how many of its transactions are still held.
    segments: BTreeMap<u64, usize>,
    /// The newest segment, where records go.
    current: File,
    current_id: u64,
    current_bytes: u64,
    /// Records not yet written.
    buffer: Vec<u8>,
    /// Held payload hash to the segment of its newest copy.
    held: HashMap<Hash, u64>,
    /// What opening found, handed to the replica once.
    loaded: Vec<SignedTransaction>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.hold"))
}

/// Appends a record whose body `body` writes in place behind the header, then fills in the
/// header: no copy and no allocation per record.
fn push_record(buffer: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buffer.len();
    buffer.extend_from_slice(&[kind; RECORD_HEADER_BYTES]);
    body(buffer);
    let written = &buffer[start + RECORD_HEADER_BYTES..];
    let length = (written.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), written).to_le_bytes();
    buffer[start + 1..start + 5].copy_from_slice(&length);
    buffer[start + 5..start + 9].copy_from_slice(&crc);
}

/// One record read back.
enum Record {
    Transaction(Box<SignedTransaction>),
    Released(Vec<Hash>),
}

/// The records of one segment's bytes, and where the last whole record ends. `Err` for a header
/// that is not a hold log's.
fn parse(bytes: &[u8]) -> anyhow::Result<(Vec<Record>, usize, Option<String>)> {
    if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
        bail!("not a kasane hold log segment");
    }
    if bytes[4] != VERSION {
        bail!("hold log version {} (this build reads {VERSION})", bytes[4]);
    }
    let mut records = Vec::new();
    let mut at = HEADER_BYTES;
    let damage = loop {
        if at == bytes.len() {
            break None;
        }
        let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) else {
            break Some(format!("a torn record header at byte {at}"));
        };
        let kind = header[0];
        let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        if length > RECORD_BYTES_MAX {
            break Some(format!("a record of {length} bytes at byte {at}"));
        }
        let start = at + RECORD_HEADER_BYTES;
        let Some(body) = bytes.get(start..start + length) else {
            break Some(format!("a torn record at byte {at}"));
        };
        if crc32c::crc32c_append(crc32c::crc32c(&[kind]), body) != crc {
            break Some(format!("a checksum mismatch at byte {at}"));
        }
        let record = match kind {
            KIND_TRANSACTION => match codec::decode::<SignedTransaction>(body) {
                Ok(transaction) => Record::Transaction(Box::new(transaction)),
                Err(error) => break Some(format!("a transaction that does not decode at byte {at}: {error}")),
            },
            KIND_RELEASED if length % 32 == 0 => Record::Released(
                body.chunks_exact(32)
                    .map(|chunk| {
                        let mut hash = [0u8; 32];
                        hash.copy_from_slice(chunk);
                        Hash(hash)
                    })
                    .collect(),
            ),
            _ => break Some(format!("an unknown record kind {kind} at byte {at}")),
        };
        records.push(record);
        at = start + length;
    };
    Ok((records, at, damage))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn new_segment(dir: &Path, id: u64) -> anyhow::Result<File> {
    let path = segment_path(dir, id);
    // Appends only, so a write after a cut (`HoldLog::write_out`) lands at the new end. A file of
    // this id can only be the leftover of a failed attempt to start the segment: emptied.
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_len(0)?;
    file.write_all(MAGIC)?;
    file.write_all(&[VERSION])?;
    file.sync_data()?;
    sync_dir(dir)?;
    Ok(file)
}

impl HoldLog {
    /// Opens (or creates) the log in `dir` and reads what it holds.
    pub fn open(dir: &Path) -> anyhow::Result<HoldLog> {
        HoldLog::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> anyhow::Result<HoldLog> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".hold").and_then(|id| id.parse::<u64>().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        // Payload -> (segment, order of its newest copy, the transaction).
        let mut found: HashMap<Hash, (u64, u64, SignedTransaction)> = HashMap::default();
        let mut order = 0u64;
        for (index, &id) in ids.iter().enumerate() {
            let path = segment_path(dir, id);
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let (records, end, damage) =
                parse(&bytes).with_context(|| format!("hold log segment {}", path.display()))?;
            if let Some(damage) = damage {
                if index + 1 < ids.len() {
                    bail!(
                        "hold log segment {} is damaged ({damage}) and is not the newest; move the hold \
                         directory away to start without what it held",
                        path.display()
                    );
                }
                // The newest segment ends mid-record: a crash during a write. Cut it there.
                tracing::warn!(segment = %path.display(), damage, "cutting the hold log's torn tail");
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(end as u64)?;
                file.sync_all()?;
            }
            for record in records {
                match record {
                    Record::Transaction(transaction) => {
                        order += 1;
                        found.insert(transaction.payload.hash(), (id, order, *transaction));
                    }
                    Record::Released(payloads) => {
                        for payload in payloads {
                            found.remove(&payload);
                        }
                    }
                }
            }
        }
        let mut segments: BTreeMap<u64, usize> = ids.iter().map(|id| (*id, 0)).collect();
        let mut held = HashMap::default();
        let mut loaded: Vec<(u64, SignedTransaction)> = Vec::with_capacity(found.len());
        for (payload, (id, order, transaction)) in found {
            *segments.entry(id).or_default() += 1;
            held.insert(payload, id);
            loaded.push((order, transaction));
        }
        loaded.sort_unstable_by_key(|(order, _)| *order);
        let current_id = ids.last().map_or(0, |id| id + 1);
        let current = new_segment(dir, current_id)?;
        segments.insert(current_id, 0);
        let mut log = HoldLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            current,
            current_id,
            current_bytes: HEADER_BYTES as u64,
            buffer: Vec::new(),
            held,
            loaded: loaded.into_iter().map(|(_, transaction)| transaction).collect(),
        };
        log.delete_released_segments()?;
        Ok(log)
    }

    /// Transactions held now (what a restart would queue again, before it drops what committed
    /// or expired meanwhile).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Segment files on disk.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    fn write_out(&mut self) -> anyhow::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = self
            .current
            .write_all(&self.buffer)
            .and_then(|()| self.current.sync_data());
        if let Err(error) = written {
            // Part of the buffer may be in the file, and after a failed fdatasync its pages may
            // be dropped unwritten: cut the file back to what the last sync made durable, so the
            // retry writes every record whole, once, and syncs it again.
            let _ = self.current.set_len(self.current_bytes);
            return Err(error.into());
        }
        self.current_bytes += self.buffer.len() as u64;
        self.buffer.clear();
        if self.current_bytes >= self.segment_bytes {
            // On failure the log stays on the full segment and tries again at the next sync.
            let next = self.current_id + 1;
            self.current = new_segment(&self.dir, next)?;
            self.current_id = next;
            self.current_bytes = HEADER_BYTES as u64;
            self.segments.insert(next, 0);
        }
        Ok(())
    }

    /// Deletes the oldest segments while none of their transactions is held. A deletion lost to
    /// a crash only brings back released transactions, which the replica drops as committed or
    /// expired.
    fn delete_released_segments(&mut self) -> anyhow::Result<()> {
        while let Some((&id, &live)) = self.segments.first_key_value() {
            if id == self.current_id || live > 0 {
                break;
            }
            let path = segment_path(&self.dir, id);
            std::fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))?;
            self.segments.remove(&id);
        }
        Ok(())
    }

    /// Copies the held transactions of the oldest segment to the newest, so that segment can go.
    fn compact_oldest(&mut self) -> anyhow::Result<()> {
        let Some((&oldest, _)) = self.segments.first_key_value() else {
            return Ok(());
        };
        if oldest == self.current_id {
            return Ok(());
        }
        let path = segment_path(&self.dir, oldest);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (records, _, damage) = parse(&bytes).with_context(|| format!("hold log segment {}", path.display()))?;
        if let Some(damage) = damage {
            bail!("hold log segment {} is damaged ({damage})", path.display());
        }
        for record in records {
            if let Record::Transaction(transaction) = record {
                let payload = transaction.payload.hash();
                if self.held.get(&payload) == Some(&oldest) {
                    self.append_record(payload, &transaction, None);
                }
            }
        }
        // The copies must be durable before the originals go.
        self.write_out()?;
        self.delete_released_segments()
    }

    fn append_record(&mut self, payload: Hash, transaction: &SignedTransaction, encoding: Option<&[u8]>) {
        match encoding {
            Some(encoding) => self.append_encoded(payload, encoding),
            None => self.append_encoded(payload, &versioned_encoding(transaction)),
        }
    }

    /// Appends a transaction by its versioned encoding (`codec::encode` of it).
    fn append_encoded(&mut self, payload: Hash, encoding: &[u8]) {
        push_record(&mut self.buffer, KIND_TRANSACTION, |buffer| {
            buffer.extend_from_slice(encoding)
        });
        if let Some(old) = self.held.insert(payload, self.current_id) {
            if let Some(live) = self.segments.get_mut(&old) {
                *live = live.saturating_sub(1);
            }
        }
        *self.segments.entry(self.current_id).or_default() += 1;
    }

    /// Writes and fdatasyncs what was appended and released, then deletes or compacts the
    /// segments nothing holds any more.
    pub fn sync_now(&mut self) -> Result<(), String> {
        let result = self.write_out().and_then(|()| {
            self.delete_released_segments()?;
            if self.segments.len() > SEGMENTS_MAX {
                self.compact_oldest()?;
            }
            Ok(())
        });
        result.map_err(|error| format!("hold log {}: {error:#}", self.dir.display()))
    }
}

/// `codec::encode(transaction)`, the body of a transaction record.
fn versioned_encoding(transaction: &SignedTransaction) -> Vec<u8> {
    let mut encoding = vec![<SignedTransaction as codec::Versioned>::VERSION];
    codec::encode_body_into(transaction, &mut encoding);
    encoding
}

/// What the consensus task hands the hold log's thread, in order.
#[derive(Debug)]
enum Op {
    /// Queued transactions: payload hash and versioned encoding of each, in order.
    Append(Vec<(Hash, Vec<u8>)>),
    Release(Vec<Hash>),
    Sync(u64),
}

/// The outcome of a background sync of the hold log, for
/// [`kasane_consensus::replica::Replica::on_holds_synced`].
#[derive(Debug)]
pub struct HoldsSynced {
    pub ticket: u64,
    pub result: Result<(), String>,
}

/// Most operations the hold log's thread takes in after a sync request before it syncs: it
/// syncs what came meanwhile too (group commit) but never waits for a quiet moment.
const OPS_PER_SYNC_MAX: usize = 65_536;

/// Appends the consensus task gathers before it hands them to the hold log's thread in one
/// message. One message per transaction woke the thread once per transaction: at 12,000 tx/s
/// that was about 48,000 wake-ups a second across a 4-node cluster, and ~3% of its CPU went to
/// the scheduler (docs/BENCHMARKS.md). Appends also go across before any release or sync, so
/// the thread sees every operation in the consensus task's order.
const APPENDS_PER_SEND: usize = 1_024;

/// The hold log on a thread of its own: the consensus task hands it appends, releases and sync
/// requests and goes on, and the outcome of each sync comes back on a channel. Every write and
/// fdatasync of the log happens on that thread, so the consensus task never waits on the disk
/// for a hold (it did: 8.8 ms per sync on a saturated 2-core machine, docs/BENCHMARKS.md).
#[derive(Debug)]
pub struct BackgroundHoldLog {
    ops: std::sync::mpsc::Sender<Op>,
    /// Appends not yet handed to the thread (see [`APPENDS_PER_SEND`]).
    appends: Vec<(Hash, Vec<u8>)>,
    next_ticket: u64,
    loaded: Vec<SignedTransaction>,
    /// Whether the thread stopped (a send failed): every later sync fails.
    stopped: bool,
}

impl BackgroundHoldLog {
    /// Starts the thread that owns `log`; sync outcomes go to `synced`. The thread ends when
    /// this handle is dropped or `synced` is closed.
    pub fn start(
        mut log: HoldLog,
        synced: tokio::sync::mpsc::UnboundedSender<HoldsSynced>,
    ) -> anyhow::Result<BackgroundHoldLog> {
        let loaded = std::mem::take(&mut log.loaded);
        let (ops, receiver) = std::sync::mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("hold-log".to_string())
            .spawn(move || {
                while let Ok(op) = receiver.recv() {
                    let mut ticket = apply(&mut log, op);
                    if ticket.is_none() {
                        continue;
                    }
                    for _ in 0..OPS_PER_SYNC_MAX {
                        let Ok(op) = receiver.try_recv() else {
                            break;
                        };
                        ticket = apply(&mut log, op).or(ticket);
                    }
                    let result = log.sync_now();
                    if let Some(ticket) = ticket {
                        if synced.send(HoldsSynced { ticket, result }).is_err() {
                            return;
                        }
                    }
                }
            })
            .context("starting the hold log's thread")?;
        Ok(BackgroundHoldLog {
            ops,
            appends: Vec::new(),
            next_ticket: 0,
            loaded,
            stopped: false,
        })
    }

    fn send(&mut self, op: Op) {
        if self.ops.send(op).is_err() {
            self.stopped = true;
        }
    }

    /// Hands the gathered appends to the thread, ahead of whatever is sent next.
    fn send_appends(&mut self) {
        if !self.appends.is_empty() {
            let appends = std::mem::take(&mut self.appends);
            self.send(Op::Append(appends));
        }
    }
}

/// Applies one operation to the log; a sync request gives its ticket.
fn apply(log: &mut HoldLog, op: Op) -> Option<u64> {
    match op {
        Op::Append(appends) => {
            for (payload, encoding) in appends {
                log.append_encoded(payload, &encoding);
            }
        }
        Op::Release(payloads) => log.release(&payloads),
        Op::Sync(ticket) => return Some(ticket),
    }
    None
}

impl HoldStore for BackgroundHoldLog {
    fn append(&mut self, payload: &Hash, transaction: &SignedTransaction, encoding: Option<Vec<u8>>) {
        let encoding = encoding.unwrap_or_else(|| versioned_encoding(transaction));
        self.appends.push((*payload, encoding));
        if self.appends.len() >= APPENDS_PER_SEND {
            self.send_appends();
        }
    }

    fn release(&mut self, payloads: &[Hash]) {
        if !payloads.is_empty() {
            self.send_appends();
            self.send(Op::Release(payloads.to_vec()));
        }
    }

    fn sync(&mut self) -> SyncStart {
        self.send_appends();
        self.next_ticket += 1;
        self.send(Op::Sync(self.next_ticket));
        if self.stopped {
            return SyncStart::Done(Err("the hold log's thread stopped".to_string()));
        }
        SyncStart::Started(self.next_ticket)
    }

    fn load(&mut self) -> Vec<SignedTransaction> {
        std::mem::take(&mut self.loaded)
    }
}

impl HoldStore for HoldLog {
    fn append(&mut self, payload: &Hash, transaction: &SignedTransaction, encoding: Option<Vec<u8>>) {
        self.append_record(*payload, transaction, encoding.as_deref());
    }

    fn release(&mut self, payloads: &[Hash]) {
        let released: Vec<&Hash> = payloads
            .iter()
            .filter(|payload| match self.held.remove(*payload) {
                Some(id) => {
                    if let Some(live) = self.segments.get_mut(&id) {
                        *live = live.saturating_sub(1);
                    }
                    true
                }
                None => false,
            })
            .collect();
        if !released.is_empty() {
            push_record(&mut self.buffer, KIND_RELEASED, |buffer| {
                for payload in released {
                    buffer.extend_from_slice(&payload.0);
                }
            });
        }
    }

    fn sync(&mut self) -> SyncStart {
        SyncStart::Done(self.sync_now())
    }

    fn load(&mut self) -> Vec<SignedTransaction> {
        std::mem::take(&mut self.loaded)
    }
}

#[cfg(test)]
mod tests {
    use kasane_model::transaction::TransactionPayload;
    use kasane_model::KeyPair;

    use super::*;

    fn transaction(nonce: u32) -> SignedTransaction {
        let key = KeyPair::derive(b"hold-log-tests", 0);
        let payload = TransactionPayload {
            chain: "c".parse().expect("name"),
            creator: "a@d".parse().expect("id"),
            instructions: Vec::new(),
            created_at_ms: 0,
            ttl_ms: 1_000,
            nonce,
        };
        SignedTransaction::sign(payload, &[&key])
    }

    fn payload(transaction: &SignedTransaction) -> Hash {
        transaction.payload.hash()
    }

    fn nonces(transactions: &[SignedTransaction]) -> Vec<u32> {
        transactions
            .iter()
            .map(|transaction| transaction.payload.nonce)
            .collect()
    }

    /// The node's hold log on its own thread: each sync's outcome comes back with its ticket,
    /// and what it synced (appends and releases, in order) is what a reopened log holds.
    #[test]
    fn the_background_log_answers_each_sync_and_keeps_what_it_synced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("held");
        let transactions: Vec<SignedTransaction> = (0..4).map(transaction).collect();
        let (synced_tx, mut synced) = tokio::sync::mpsc::unbounded_channel();
        let mut log = BackgroundHoldLog::start(HoldLog::open(&path).expect("open"), synced_tx).expect("start");
        assert!(log.load().is_empty());
        for transaction in &transactions[..3] {
            log.append(&payload(transaction), transaction, None);
        }
        assert_eq!(log.sync(), SyncStart::Started(1));
        log.release(&[payload(&transactions[0])]);
        let encoding = codec::encode(&transactions[3]);
        log.append(&payload(&transactions[3]), &transactions[3], Some(encoding));
        assert_eq!(log.sync(), SyncStart::Started(2));
        let mut answered = Vec::new();
        while answered.last() != Some(&2) {
            let outcome = synced.blocking_recv().expect("an outcome");
            assert_eq!(outcome.result, Ok(()));
            answered.push(outcome.ticket);
        }
        assert!(
            answered.windows(2).all(|pair| pair[0] < pair[1]),
            "in order: {answered:?}"
        );
        drop(log);

        let mut log = HoldLog::open(&path).expect("reopen");
        assert_eq!(nonces(&log.load()), [1, 2, 3]);
    }

    #[test]
    fn what_was_synced_and_not_released_comes_back_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("held");
        let transactions: Vec<SignedTransaction> = (0..5).map(transaction).collect();
        let mut log = HoldLog::open(&path).expect("open");
        assert!(log.load().is_empty());
        for transaction in &transactions[..4] {
            // Half of them come with the encoding their hashing made, as gossip does.
            let encoding = (transaction.payload.nonce % 2 == 1).then(|| codec::encode(transaction));
            log.append(&payload(transaction), transaction, encoding);
        }
        log.release(&[payload(&transactions[1])]);
        log.sync_now().expect("sync");
        // Appended but never synced: lost with the process, as if it crashed.
        log.append(&payload(&transactions[4]), &transactions[4], None);
        drop(log);

        let mut log = HoldLog::open(&path).expect("reopen");
        assert_eq!(nonces(&log.load()), [0, 2, 3]);
        assert_eq!(log.len(), 3);
        // Released after the restart, then restarted again.
        log.release(&[payload(&transactions[0])]);
        log.sync_now().expect("sync");
        drop(log);
        let mut log = HoldLog::open(&path).expect("reopen");
        assert_eq!(nonces(&log.load()), [2, 3]);
    }

    #[test]
    fn a_failed_write_is_written_whole_by_the_next_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("held");
        let transactions: Vec<SignedTransaction> = (0..2).map(transaction).collect();
        let mut log = HoldLog::open(&path).expect("open");
        log.append(&payload(&transactions[0]), &transactions[0], None);
        // The segment's handle refuses writes, as a failing disk would.
        let writable = std::mem::replace(
            &mut log.current,
            File::open(segment_path(&path, log.current_id)).expect("read-only handle"),
        );
        assert!(log.sync_now().is_err());
        log.current = writable;
        log.append(&payload(&transactions[1]), &transactions[1], None);
        log.sync_now().expect("the retry syncs");
        drop(log);
        let mut log = HoldLog::open(&path).expect("reopen");
        assert_eq!(nonces(&log.load()), [0, 1]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_damage_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("held");
        let transactions: Vec<SignedTransaction> = (0..2).map(transaction).collect();
        let mut log = HoldLog::open(&path).expect("open");
        for transaction in &transactions {
            log.append(&payload(transaction), transaction, None);
        }
        log.sync_now().expect("sync");
        let segment = segment_path(&path, log.current_id);
        drop(log);
        // A crash in the middle of the second record.
        let bytes = std::fs::read(&segment).expect("read");
        let file = OpenOptions::new().write(true).open(&segment).expect("open segment");
        file.set_len(bytes.len() as u64 - 7).expect("truncate");
        drop(file);
        let mut log = HoldLog::open(&path).expect("a torn tail is cut");
        assert_eq!(nonces(&log.load()), [0]);
        drop(log);

        // The damaged segment is no longer the newest: a flipped byte in it is an error.
        let mut bytes = std::fs::read(&segment).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&segment, &bytes).expect("write");
        let error = HoldLog::open(&path).expect_err("damage before the newest segment");
        assert!(format!("{error:#}").contains("is damaged"), "{error:#}");
    }

    #[test]
    fn segments_go_once_released_and_a_long_held_transaction_is_copied_forward() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("held");
        let mut log = HoldLog::open_with(&path, 64 << 10).expect("open");
        let stuck = transaction(u32::MAX);
        log.append(&payload(&stuck), &stuck, None);
        // Enough traffic for many segments, each released right away.
        let mut nonce = 0u32;
        while log.current_id < 3 * SEGMENTS_MAX as u64 {
            let batch: Vec<SignedTransaction> = (0..100)
                .map(|_| {
                    nonce += 1;
                    transaction(nonce)
                })
                .collect();
            for transaction in &batch {
                log.append(&payload(transaction), transaction, None);
            }
            log.sync_now().expect("sync");
            let payloads: Vec<Hash> = batch.iter().map(payload).collect();
            log.release(&payloads);
            log.sync_now().expect("sync");
            assert!(log.segments() <= SEGMENTS_MAX + 1, "{} segments", log.segments());
        }
        let files = std::fs::read_dir(&path).expect("list").count();
        assert_eq!(files, log.segments());
        drop(log);
        let mut log = HoldLog::open(&path).expect("reopen");
        assert_eq!(nonces(&log.load()), [u32::MAX]);
    }
}
