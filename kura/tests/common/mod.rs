//! Shared helpers of Kura's integration tests: small fixture chains, stores built from them,
//! disk images of a [`MemoryBackend`], record spans, and checks that a store holds exactly a
//! prefix of the original chain.
#![allow(dead_code)]

use std::collections::BTreeMap;

use kasane_kura::backend::Backend;
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::format::{self, CHUNK_HEADER_BYTES};
use kasane_kura::{FsyncPolicy, Kura, KuraConfig, MemoryBackend, OpenReport};
use kasane_model::codec;
use kasane_model::{CommittedBlock, Hash};

/// Blocks per chunk in these tests: 11 blocks make 3 chunks (4 + 4 + 3).
pub const BLOCKS_PER_CHUNK: u32 = 4;

/// A small fixture: `transfer_blocks` transfer blocks after genesis, 2 transfers each.
pub fn small_config(transfer_blocks: u64, seed: u64) -> FixtureConfig {
    FixtureConfig {
        blocks: transfer_blocks,
        transactions_per_block: 2,
        accounts: 4,
        validators: 4,
        seed,
    }
}

/// A fixture chain and its blocks, genesis first: `blocks[h - 1]` is height `h`.
#[derive(Debug)]
pub struct Chain {
    pub fixture: FixtureChain,
    pub blocks: Vec<CommittedBlock>,
    /// `codec::encode` of each block: what Kura stores as the record payload.
    pub encoded: Vec<Vec<u8>>,
    /// The snapshot the fixture's state made at each checkpoint height whose binding block the
    /// chain holds: the encoded header of the checkpoint block and the snapshot's chunks.
    pub checkpoints: BTreeMap<u64, (Vec<u8>, Vec<Vec<u8>>)>,
}

impl Chain {
    /// A chain of `heights` blocks (genesis included) from `seed`.
    pub fn new(heights: u64, seed: u64) -> Chain {
        assert!(heights >= 1);
        let mut fixture = FixtureChain::new(small_config(heights - 1, seed)).expect("fixture");
        let mut blocks = vec![fixture.genesis.clone()];
        let mut checkpoints = BTreeMap::new();
        for _ in 1..heights {
            blocks.push(fixture.next_block().expect("fixture block").0);
            // A checkpoint is held from the block that binds its root on.
            if let Some(checkpoint) = fixture.wsv.checkpoint() {
                let height = checkpoint.height();
                checkpoints.entry(height).or_insert_with(|| {
                    let chunks = (0..checkpoint.chunk_count())
                        .map(|index| checkpoint.chunk(index).expect("chunk").to_vec())
                        .collect();
                    (codec::encode_body(&blocks[height as usize - 1].block.header), chunks)
                });
            }
        }
        let encoded = blocks.iter().map(codec::encode).collect();
        Chain {
            fixture,
            blocks,
            encoded,
            checkpoints,
        }
    }

    /// The snapshot at checkpoint `height`: the encoded header and the chunks.
    pub fn checkpoint(&self, height: u64) -> (&[u8], &[Vec<u8>]) {
        let (header, chunks) = self.checkpoints.get(&height).expect("a checkpoint at that height");
        (header, chunks)
    }

    pub fn hash(&self, height: u64) -> Hash {
        if height == 0 {
            Hash::ZERO
        } else {
            self.blocks[height as usize - 1].block.hash()
        }
    }

    pub fn height(&self) -> u64 {
        self.blocks.len() as u64
    }
}

pub fn config() -> KuraConfig {
    KuraConfig {
        blocks_per_chunk: BLOCKS_PER_CHUNK,
        fsync: FsyncPolicy::Always,
        read_only: false,
    }
}

pub fn config_with(fsync: FsyncPolicy) -> KuraConfig {
    KuraConfig { fsync, ..config() }
}

pub fn read_only() -> KuraConfig {
    KuraConfig {
        read_only: true,
        ..config()
    }
}

/// A memory store holding `blocks` (appended with the default policy), closed again.
pub fn memory_store(blocks: &[CommittedBlock]) -> MemoryBackend {
    let backend = MemoryBackend::new();
    let (mut kura, report) = Kura::open(backend.clone(), config()).expect("open empty");
    assert_eq!(report.height, 0);
    assert!(report.cut.is_none());
    for block in blocks {
        kura.append(block).expect("append");
    }
    backend
}

/// The chunks of a disk, in order, with their bytes.
pub type Image = Vec<(u32, Vec<u8>)>;

pub fn image(backend: &MemoryBackend) -> Image {
    backend
        .list()
        .expect("list")
        .into_iter()
        .map(|chunk| (chunk, backend.chunk_bytes(chunk).expect("listed chunk")))
        .collect()
}

/// A fresh disk holding exactly `image`, all of it synced.
pub fn disk(image: &Image) -> MemoryBackend {
    let backend = MemoryBackend::new();
    for (chunk, bytes) in image {
        backend.set_chunk_bytes(*chunk, bytes.clone());
    }
    backend
}

/// `image` with chunk `chunk` replaced (or added).
pub fn with_chunk(image: &Image, chunk: u32, bytes: Vec<u8>) -> Image {
    let mut out: Image = image.iter().filter(|(number, _)| *number != chunk).cloned().collect();
    out.push((chunk, bytes));
    out.sort_by_key(|(number, _)| *number);
    out
}

/// `image` without chunk `chunk`.
pub fn without_chunk(image: &Image, chunk: u32) -> Image {
    image.iter().filter(|(number, _)| *number != chunk).cloned().collect()
}

pub fn chunk_of(image: &Image, chunk: u32) -> &[u8] {
    &image
        .iter()
        .find(|(number, _)| *number == chunk)
        .expect("chunk in image")
        .1
}

pub fn total_bytes(image: &Image) -> u64 {
    image.iter().map(|(_, bytes)| bytes.len() as u64).sum()
}

/// Where one record lies in its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub height: u64,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn header_end(&self) -> usize {
        self.start + format::RECORD_HEADER_BYTES
    }
}

/// The records of a sound chunk, parsed independently of the store.
pub fn spans(chunk: &[u8]) -> Vec<Span> {
    assert!(format::parse_chunk_header(chunk).is_some(), "sound chunk header");
    let mut out = Vec::new();
    let mut offset = CHUNK_HEADER_BYTES;
    while offset < chunk.len() {
        let header = format::parse_record_header(&chunk[offset..]).expect("sound record header");
        let end = offset + header.record_bytes();
        assert!(end <= chunk.len(), "whole record");
        assert!(header.payload_matches(&chunk[offset + format::RECORD_HEADER_BYTES..end]));
        out.push(Span {
            height: header.height,
            start: offset,
            end,
        });
        offset = end;
    }
    out
}

/// The span of the record of `height` in a sound image.
pub fn span_of(image: &Image, height: u64) -> (u32, Span) {
    for (chunk, bytes) in image {
        if let Some(span) = spans(bytes).into_iter().find(|span| span.height == height) {
            return (*chunk, span);
        }
    }
    panic!("no record of height {height}");
}

pub fn flip_bit(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

/// Asserts that `kura` holds exactly the first `height` blocks of `chain`: height, head hash,
/// every record's bytes, the hash index, and nothing above.
#[track_caller]
pub fn assert_prefix<B: Backend>(kura: &Kura<B>, chain: &Chain, height: u64) {
    assert_eq!(kura.height(), height, "store height");
    assert_eq!(kura.head_hash(), chain.hash(height), "head hash at {height}");
    for h in 1..=height {
        let encoded = kura.read_encoded(h).unwrap_or_else(|error| panic!("read {h}: {error}"));
        assert!(
            encoded == chain.encoded[h as usize - 1],
            "block {h} reads back different bytes"
        );
        assert_eq!(kura.hash_at(h), Some(chain.hash(h)));
        assert_eq!(kura.height_of(&chain.hash(h)), Some(h));
    }
    assert!(kura.read_encoded(height + 1).is_err(), "nothing above {height}");
    if height < chain.height() {
        assert_eq!(
            kura.height_of(&chain.hash(height + 1)),
            None,
            "hash of {} not indexed",
            height + 1
        );
    }
}

/// Opens `backend`, expecting success, and checks the report against the store.
#[track_caller]
pub fn open_ok(backend: &MemoryBackend, config: KuraConfig) -> (Kura<MemoryBackend>, OpenReport) {
    let (kura, report) = Kura::open(backend.clone(), config).unwrap_or_else(|error| panic!("open: {error}"));
    assert_eq!(report.height, kura.height());
    assert_eq!(report.blocks_per_chunk, BLOCKS_PER_CHUNK);
    (kura, report)
}

/// Appends `chain`'s blocks above the store's head, then checks a reopen gives the whole chain.
#[track_caller]
pub fn append_rest_and_reopen(kura: &mut Kura<MemoryBackend>, chain: &Chain) {
    for height in kura.height() + 1..=chain.height() {
        kura.append(&chain.blocks[height as usize - 1])
            .unwrap_or_else(|error| panic!("append {height} after recovery: {error}"));
    }
    assert_prefix(kura, chain, chain.height());
    let (reopened, report) = open_ok(kura.backend(), config());
    assert!(report.cut.is_none(), "clean reopen: {:?}", report.cut);
    assert_prefix(&reopened, chain, chain.height());
    assert_eq!(
        report.bytes,
        total_bytes(&image(kura.backend())),
        "report.bytes is the bytes on disk"
    );
    assert_eq!(
        report.chunks,
        kura.backend().list().expect("list").len(),
        "report.chunks is the chunk files"
    );
}
