//! A store from a base (state sync, docs/KURA-FORMAT.md "A store from a base"): it keeps the
//! snapshot beside its chunks, appends above the base, reads what it holds and names what it does
//! not, survives reopening and crashes of the fill, fast-inits from the snapshot, refuses strict
//! init until the blocks below the base are in, and becomes a whole store when they are.

mod common;

use common::*;
use kasane_kura::fixture::FixtureChain;
use kasane_kura::format;
use kasane_kura::init::{fast_init, strict_init, InitError};
use kasane_kura::{Backend, FileBackend, Kura, KuraError, MemoryBackend};
use kasane_model::CommittedBlock;
use kasane_wsv::PluginRegistry;

/// The fixture's checkpoint: every 100 heights (a multiple of the tests' 4 blocks per chunk).
const BASE: u64 = 100;
const HEIGHTS: u64 = 110;

/// A chain of [`HEIGHTS`] blocks, and the snapshot the fixture's state made at [`BASE`] (the
/// encoded header of block `BASE`, and the snapshot's chunks).
struct Restored {
    blocks: Vec<CommittedBlock>,
    header: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    fixture: FixtureChain,
}

fn restored() -> Restored {
    let chain = Chain::new(HEIGHTS, 7);
    let (header, chunks) = chain.checkpoint(BASE);
    let (header, chunks) = (header.to_vec(), chunks.to_vec());
    Restored {
        blocks: chain.blocks,
        header,
        chunks,
        fixture: chain.fixture,
    }
}

impl Restored {
    fn block(&self, height: u64) -> &CommittedBlock {
        &self.blocks[height as usize - 1]
    }

    /// A store holding genesis, started from the base, with the blocks above it appended.
    fn based_store<B: Backend>(&self, backend: B) -> Kura<B> {
        let (mut kura, _) = Kura::open(backend, config()).expect("open");
        kura.append(self.block(1)).expect("genesis");
        kura.rebase(BASE, self.block(BASE).block.hash(), &self.header, &self.chunks)
            .expect("rebase");
        for height in BASE + 1..=HEIGHTS {
            kura.append(self.block(height)).expect("append above the base");
        }
        kura
    }
}

#[test]
fn a_store_from_a_base_reads_what_it_holds_and_names_what_it_does_not() {
    let chain = restored();
    let kura = chain.based_store(MemoryBackend::new());
    assert_eq!(
        (kura.height(), kura.base(), kura.lower_height()),
        (HEIGHTS, Some(BASE), 1)
    );
    assert!(!kura.is_complete());
    assert_eq!(kura.head_hash(), chain.block(HEIGHTS).block.hash());
    assert_eq!(kura.read(1).expect("genesis"), *chain.block(1));
    assert_eq!(kura.read(105).expect("above"), *chain.block(105));
    assert!(kura.holds(101) && kura.holds(1) && !kura.holds(2) && !kura.holds(BASE));
    match kura.read(50) {
        Err(KuraError::NotFilled {
            height: 50,
            lower: 1,
            base: BASE,
        }) => {}
        other => panic!("expected NotFilled, got {other:?}"),
    }
    assert!(matches!(kura.read(HEIGHTS + 1), Err(KuraError::NoSuchHeight { .. })));
    assert_eq!(kura.height_of(&chain.block(103).block.hash()), Some(103));
    // A range read stops at the gap: block sync serves what there is.
    assert!(kura.read_range_encoded(2, 4).is_err());
    assert_eq!(kura.read_range_encoded(101, 4).expect("range").len(), 4);
    assert_eq!(kura.read_range_encoded(109, 4).expect("range").len(), 2);
}

#[test]
fn a_rebase_is_refused_unless_it_starts_a_chunk_above_the_store_with_genesis_in_it() {
    let chain = restored();
    let hash = chain.block(BASE).block.hash();
    let (mut empty, _) = Kura::open(MemoryBackend::new(), config()).expect("open");
    assert!(matches!(
        empty.rebase(BASE, hash, &chain.header, &chain.chunks),
        Err(KuraError::BadRebase { .. })
    ));
    let (mut kura, _) = Kura::open(MemoryBackend::new(), config()).expect("open");
    for height in 1..=3 {
        kura.append(chain.block(height)).expect("append");
    }
    for base in [2, 99] {
        assert!(matches!(
            kura.rebase(base, hash, &chain.header, &chain.chunks),
            Err(KuraError::BadRebase { .. })
        ));
    }
    kura.rebase(BASE, hash, &chain.header, &chain.chunks).expect("rebase");
    assert!(matches!(
        kura.rebase(BASE + 4, hash, &chain.header, &chain.chunks),
        Err(KuraError::BadRebase { .. })
    ));
    // Appends above the base start at base + 1, after the base's hash.
    assert!(matches!(
        kura.append(chain.block(BASE + 2)),
        Err(KuraError::NotNext { .. })
    ));
    kura.append(chain.block(BASE + 1)).expect("append");
}

#[test]
fn fast_init_starts_from_the_kept_snapshot_and_strict_init_waits_for_the_fill() {
    let chain = restored();
    let backend = MemoryBackend::new();
    drop(chain.based_store(backend.clone()));
    let (kura, report) = Kura::open(backend, config()).expect("reopen");
    assert_eq!(
        (report.height, report.base, report.lower_height),
        (HEIGHTS, Some(BASE), 1)
    );
    let (wsv, init) = fast_init(&kura, PluginRegistry::builtin(), None).expect("fast init");
    assert_eq!(init.blocks, HEIGHTS - BASE);
    assert_eq!(wsv.height(), HEIGHTS);
    assert_eq!(wsv.state_commitment(), chain.fixture.wsv.state_commitment());
    assert_eq!(wsv.transaction_count(), chain.fixture.wsv.transaction_count());
    match strict_init(&kura, PluginRegistry::builtin(), None) {
        Err(InitError::Incomplete { base: BASE, lower: 1 }) => {}
        other => panic!("expected Incomplete, got {:?}", other.map(|(wsv, _)| wsv.height())),
    }
}

#[test]
fn a_damaged_kept_snapshot_is_an_init_error_not_a_wrong_state() {
    let chain = restored();
    let backend = MemoryBackend::new();
    drop(chain.based_store(backend.clone()));
    let mut bytes = backend
        .read_file(format::BASE_SNAPSHOT_FILE)
        .expect("read")
        .expect("kept");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut damaged = backend.clone();
    damaged.write_file(format::BASE_SNAPSHOT_FILE, &bytes).expect("write");
    let (kura, _) = Kura::open(backend, config()).expect("open: the chunks are sound");
    match fast_init(&kura, PluginRegistry::builtin(), None) {
        Err(InitError::BadSnapshot { base: BASE, reason }) => assert!(reason.contains("checksum"), "{reason}"),
        other => panic!("expected BadSnapshot, got {:?}", other.map(|(wsv, _)| wsv.height())),
    }
}

#[test]
fn the_fill_appends_below_the_base_and_the_store_becomes_whole() {
    let mut chain = restored();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kura = chain.based_store(FileBackend::open(dir.path()).expect("backend"));
    assert!(dir.path().join(format::BASE_FILE).exists());
    assert!(dir.path().join(format::BASE_SNAPSHOT_FILE).exists());
    // Out of order, and not the base's block at the base: refused, nothing written.
    assert!(matches!(
        kura.append_below(chain.block(3)),
        Err(KuraError::NotNext { .. })
    ));
    assert!(matches!(
        kura.append_below(chain.block(HEIGHTS)),
        Err(KuraError::NotNext { .. })
    ));
    for height in 2..BASE {
        assert!(!kura.append_below(chain.block(height)).expect("append below"));
    }
    assert_eq!(kura.lower_height(), BASE - 1);
    assert!(kura.append_below(chain.block(BASE)).expect("the last one"));
    assert!(kura.is_complete());
    assert_eq!(
        (kura.height(), kura.base(), kura.lower_height()),
        (HEIGHTS, None, HEIGHTS)
    );
    assert!(!dir.path().join(format::BASE_FILE).exists());
    assert!(!dir.path().join(format::BASE_SNAPSHOT_FILE).exists());
    // Consensus appends on as to any store.
    let (next, _) = chain.fixture.next_block().expect("block");
    kura.append(&next).expect("append after the join");
    chain.blocks.push(next);
    drop(kura);
    let (kura, report) = Kura::open(FileBackend::open(dir.path()).expect("backend"), config()).expect("reopen");
    assert_eq!((report.base, report.cut), (None, None));
    assert_eq!(kura.height(), HEIGHTS + 1);
    for height in 1..=HEIGHTS + 1 {
        assert_eq!(
            kura.read(height).expect("read"),
            *chain.block(height),
            "height {height}"
        );
    }
    let (wsv, _) = strict_init(&kura, PluginRegistry::builtin(), None).expect("strict init of the whole store");
    assert_eq!(wsv.state_commitment(), chain.fixture.wsv.state_commitment());
}

#[test]
fn a_crash_during_the_fill_loses_only_unsynced_fill_blocks() {
    let chain = restored();
    let backend = MemoryBackend::new();
    let mut kura = chain.based_store(backend.clone());
    // Blocks 2..=9: chunks 0 and 1 sealed (synced when chunk 2 began), 9 in chunk 2 unsynced.
    for height in 2..=9 {
        kura.append_below(chain.block(height)).expect("append below");
    }
    drop(kura);
    backend.crash();
    let (mut kura, report) = Kura::open(backend, config()).expect("reopen after the crash");
    assert_eq!((report.height, report.base), (HEIGHTS, Some(BASE)));
    assert!(
        report.lower_height >= 8,
        "sealed chunks survive: {}",
        report.lower_height
    );
    for height in report.lower_height + 1..=BASE {
        kura.append_below(chain.block(height)).expect("the fill goes on");
    }
    assert!(kura.is_complete());
}

#[test]
fn a_join_interrupted_before_the_base_record_went_finishes_on_open() {
    let chain = restored();
    let backend = MemoryBackend::new();
    let mut kura = chain.based_store(backend.clone());
    for height in 2..=BASE {
        kura.append_below(chain.block(height)).expect("append below");
    }
    drop(kura);
    // As if the process died after the last block below the base and before the join.
    let record = format::encode_base_record(&format::BaseRecord {
        blocks_per_chunk: BLOCKS_PER_CHUNK,
        base: BASE,
        base_hash: chain.block(BASE).block.hash(),
    });
    let mut disk = backend.clone();
    disk.write_file(format::BASE_FILE, &record).expect("write");
    let (kura, report) = Kura::open(backend.clone(), config()).expect("open");
    assert_eq!((report.base, kura.height()), (None, HEIGHTS));
    assert!(kura.is_complete());
    assert_eq!(backend.read_file(format::BASE_FILE).expect("read"), None);
    // A base record naming another block at the base is corruption, not a join.
    let wrong = format::encode_base_record(&format::BaseRecord {
        blocks_per_chunk: BLOCKS_PER_CHUNK,
        base: BASE,
        base_hash: chain.block(BASE - 1).block.hash(),
    });
    disk.write_file(format::BASE_FILE, &wrong).expect("write");
    assert!(matches!(
        Kura::open(backend, config()),
        Err(KuraError::NotTheBase { .. })
    ));
}

#[test]
fn base_records_and_snapshots_refuse_damage() {
    let record = format::BaseRecord {
        blocks_per_chunk: 100,
        base: 300,
        base_hash: kasane_model::Hash::of(b"block 300"),
    };
    let bytes = format::encode_base_record(&record);
    assert_eq!(format::parse_base_record(&bytes), Ok(record));
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(format::parse_base_record(&damaged).is_err(), "bit {bit}");
    }
    assert!(format::parse_base_record(&bytes[..bytes.len() - 1]).is_err());
    let snapshot = format::encode_base_snapshot(b"header", &[b"one".to_vec(), b"two".to_vec()]);
    let (header, chunks) = format::parse_base_snapshot(&snapshot).expect("parse");
    assert_eq!(
        (header, chunks),
        (b"header".to_vec(), vec![b"one".to_vec(), b"two".to_vec()])
    );
    for cut in 0..snapshot.len() {
        assert!(format::parse_base_snapshot(&snapshot[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = snapshot.clone();
    longer.push(0);
    assert!(format::parse_base_snapshot(&longer).is_err());
}
