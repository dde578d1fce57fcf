//! The store on real files (FileBackend in a temporary directory): file names and headers,
//! reads by height, hash and range (sealed chunks through a memory map), recovery from a
//! truncated last file, and damage found on read.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use kasane_kura::format::{self, CHUNK_HEADER_BYTES};
use kasane_kura::{FileBackend, Kura, KuraError, OpenReport};
use kasane_model::Hash;

fn open_dir(dir: &Path) -> (Kura<FileBackend>, OpenReport) {
    let backend = FileBackend::open(dir).expect("backend");
    Kura::open(backend, config()).unwrap_or_else(|error| panic!("open {}: {error}", dir.display()))
}

fn chunk_path(dir: &Path, chunk: u32) -> std::path::PathBuf {
    dir.join(format::chunk_file_name(chunk))
}

/// The file names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").file_name().into_string().expect("utf-8 name"))
        .collect();
    out.sort();
    out
}

/// Every file in `dir` with its bytes, sorted by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names(dir)
        .into_iter()
        .map(|name| {
            let bytes = fs::read(dir.join(&name)).expect("read file");
            (name, bytes)
        })
        .collect()
}

/// A directory holding `chain`'s first `height` blocks, appended with fsync always.
fn file_store(chain: &Chain, height: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut kura, report) = open_dir(dir.path());
    assert_eq!(report.height, 0);
    for block in &chain.blocks[..height as usize] {
        kura.append(block).expect("append");
    }
    dir
}

#[test]
fn chunk_files_are_named_and_headed_as_documented() {
    let chain = Chain::new(11, 1);
    let dir = file_store(&chain, 11);
    assert_eq!(
        names(dir.path()),
        ["chunk-00000000.kura", "chunk-00000001.kura", "chunk-00000002.kura"]
    );
    let on_disk = files(dir.path());
    for (chunk, (_, bytes)) in on_disk.iter().enumerate() {
        let chunk = chunk as u32;
        assert_eq!(
            bytes[..CHUNK_HEADER_BYTES],
            format::encode_chunk_header(BLOCKS_PER_CHUNK, chunk),
            "chunk {chunk}"
        );
        let header = format::parse_chunk_header(bytes).expect("sound header");
        assert_eq!(header.first_height, u64::from(chunk) * 4 + 1);
        let heights: Vec<u64> = spans(bytes).iter().map(|span| span.height).collect();
        let expected: Vec<u64> = (header.first_height..=(header.first_height + 3).min(11)).collect();
        assert_eq!(heights, expected, "chunk {chunk} holds its heights in order");
        for span in spans(bytes) {
            let record = format::parse_record_header(&bytes[span.start..]).expect("record header");
            assert_eq!(
                record.block_hash,
                chain.hash(span.height),
                "the record header names the block hash"
            );
            assert!(bytes[span.header_end()..span.end] == chain.encoded[span.height as usize - 1]);
        }
    }
    let (kura, report) = open_dir(dir.path());
    assert_eq!(report.cut, None);
    assert_eq!((report.height, report.chunks), (11, 3));
    let disk_bytes: u64 = on_disk.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    assert_eq!(report.bytes, disk_bytes);
    assert_eq!(kura.bytes(), disk_bytes);
    assert_eq!(kura.chunk_count(), 3);
}

#[test]
fn reads_by_height_hash_and_range_return_the_original_blocks() {
    let chain = Chain::new(11, 1);
    let dir = file_store(&chain, 11);
    let (kura, _) = open_dir(dir.path());
    assert_prefix(&kura, &chain, 11);
    for height in 1..=11u64 {
        let block = &chain.blocks[height as usize - 1];
        assert_eq!(&kura.read(height).expect("read"), block);
        assert_eq!(
            kura.read_by_hash(&chain.hash(height)).expect("read by hash").as_ref(),
            Some(block)
        );
        assert_eq!(kura.height_of(&chain.hash(height)), Some(height));
    }
    assert!(kura
        .read_by_hash(&Hash::of(b"no such block"))
        .expect("lookup")
        .is_none());
    assert_eq!(kura.height_of(&Hash::ZERO), None);
    for height in [0, 12, u64::MAX] {
        match kura.read(height) {
            Err(KuraError::NoSuchHeight {
                height: found,
                store_height: 11,
            }) => assert_eq!(found, height),
            other => panic!("read({height}): {other:?}"),
        }
    }
    // Ranges within and across chunks: 1..=4 and 5..=8 are sealed (mapped), 9..=11 open.
    for from in 0..=13u64 {
        for count in 0..=9usize {
            let range = kura.read_range_encoded(from, count).expect("range");
            let expected: Vec<Vec<u8>> = if from == 0 {
                Vec::new()
            } else {
                (from..from + count.min(BLOCKS_PER_CHUNK as usize) as u64)
                    .filter(|height| *height <= 11)
                    .map(|height| chain.encoded[height as usize - 1].clone())
                    .collect()
            };
            assert!(range.len() <= BLOCKS_PER_CHUNK as usize);
            assert!(range == expected, "read_range_encoded({from}, {count})");
        }
    }
}

#[test]
fn appends_after_reopen_seal_the_open_chunk_and_read_back_through_the_map() {
    let chain = Chain::new(13, 2);
    let dir = file_store(&chain, 10);
    let (mut kura, report) = open_dir(dir.path());
    assert_eq!(report.height, 10);
    // Chunk 2 is open: 9 and 10 are read with pread, then 11 and 12 fill it, and 13 seals it.
    assert!(kura.read_range_encoded(9, 4).expect("range") == chain.encoded[8..10]);
    for block in &chain.blocks[10..] {
        kura.append(block).expect("append");
        assert_prefix(&kura, &chain, block.block.header.height);
    }
    assert_eq!(names(dir.path()).len(), 4);
    assert!(kura.read_range_encoded(9, 4).expect("range") == chain.encoded[8..12]);
    assert!(kura.read_range_encoded(11, 4).expect("range") == chain.encoded[10..13]);
    let (reopened, report) = open_dir(dir.path());
    assert_eq!((report.height, report.chunks, report.cut.is_none()), (13, 4, true));
    assert_prefix(&reopened, &chain, 13);
}

#[test]
fn a_truncated_last_file_is_cut_back_to_the_last_whole_block() {
    let chain = Chain::new(11, 1);
    let pristine = file_store(&chain, 11);
    let original = files(pristine.path());
    let last_chunk = &original[2].1;
    let eleven = spans(last_chunk)[2];
    assert_eq!(eleven.height, 11);
    let cases = [
        (0, 8),
        (10, 8),
        (CHUNK_HEADER_BYTES, 8),
        (CHUNK_HEADER_BYTES + 1, 8),
        (eleven.start, 10),
        (eleven.start + 1, 10),
        (eleven.header_end() - 1, 10),
        (eleven.header_end(), 10),
        (eleven.header_end() + 1, 10),
        (eleven.end - 1, 10),
    ];
    for (len, kept) in cases {
        let dir = file_store(&chain, 11);
        let path = chunk_path(dir.path(), 2);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open chunk")
            .set_len(len as u64)
            .expect("truncate");
        let (mut kura, report) = open_dir(dir.path());
        assert_prefix(&kura, &chain, kept);
        if len == eleven.start {
            assert_eq!(report.cut, None, "len {len}: ends at a record boundary");
        } else {
            assert!(report.cut.is_some(), "len {len}");
        }
        if kept == 8 {
            assert!(!path.exists(), "len {len}: a chunk left without records is removed");
        } else {
            assert_eq!(fs::read(&path).expect("read").len(), eleven.start, "len {len}");
        }
        let disk_bytes: u64 = files(dir.path()).iter().map(|(_, bytes)| bytes.len() as u64).sum();
        assert_eq!(report.bytes, disk_bytes, "len {len}");
        for block in &chain.blocks[kept as usize..] {
            kura.append(block)
                .unwrap_or_else(|error| panic!("len {len}: append after the cut: {error}"));
        }
        drop(kura);
        assert!(
            files(dir.path()) == original,
            "len {len}: re-appending restores the store byte for byte"
        );
        let (reopened, report) = open_dir(dir.path());
        assert_eq!(report.cut, None);
        assert_prefix(&reopened, &chain, 11);
    }
}

#[test]
fn a_read_only_open_leaves_a_torn_file_alone() {
    let chain = Chain::new(11, 1);
    let dir = file_store(&chain, 11);
    let path = chunk_path(dir.path(), 2);
    let len = fs::metadata(&path).expect("metadata").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(len - 3)
        .expect("truncate");
    let before = files(dir.path());
    let backend = FileBackend::open(dir.path()).expect("backend");
    let (mut kura, report) = Kura::open(backend, read_only()).expect("read-only open");
    assert!(report.cut.is_some());
    assert_prefix(&kura, &chain, 10);
    assert!(kura.append(&chain.blocks[10]).is_err());
    assert!(files(dir.path()) == before);
}

#[test]
fn a_missing_middle_file_is_corrupt_and_nothing_is_removed() {
    let chain = Chain::new(11, 1);
    let dir = file_store(&chain, 11);
    fs::remove_file(chunk_path(dir.path(), 1)).expect("remove chunk 1");
    let before = files(dir.path());
    let backend = FileBackend::open(dir.path()).expect("backend");
    match Kura::open(backend, config()) {
        Err(KuraError::Corrupt { height, .. }) => assert_eq!(height, 5),
        other => panic!("expected corrupt at 5, got {:?}", other.map(|(_, report)| report)),
    }
    assert!(files(dir.path()) == before);
}

#[test]
fn other_files_in_the_directory_are_not_chunks() {
    let chain = Chain::new(11, 1);
    let dir = file_store(&chain, 11);
    for name in [
        "notes.txt",
        "chunk-3.kura",
        "chunk-00000003.kura.tmp",
        "chunk-0000000x.kura",
    ] {
        fs::write(dir.path().join(name), b"KREC not a chunk").expect("write");
    }
    let before = files(dir.path());
    let (kura, report) = open_dir(dir.path());
    assert_eq!(report.cut, None);
    assert_eq!(report.chunks, 3);
    assert_prefix(&kura, &chain, 11);
    assert!(files(dir.path()) == before);
}

#[test]
fn damage_after_open_is_found_on_read_and_names_the_height() {
    let chain = Chain::new(11, 1);
    let dir = file_store(&chain, 11);
    let (kura, _) = open_dir(dir.path());
    let sealed = fs::read(chunk_path(dir.path(), 0)).expect("read");
    let two = spans(&sealed)[1];
    let mut damaged = sealed.clone();
    damaged[two.header_end() + 40] ^= 0x10;
    fs::write(chunk_path(dir.path(), 0), &damaged).expect("write");
    let open_chunk = fs::read(chunk_path(dir.path(), 2)).expect("read");
    let ten = spans(&open_chunk)[1];
    let mut damaged = open_chunk.clone();
    damaged[ten.start + format::RECORD_HASH_OFFSET] ^= 0x01;
    fs::write(chunk_path(dir.path(), 2), &damaged).expect("write");
    for (height, range_from) in [(2u64, 1u64), (10, 9)] {
        match kura.read_encoded(height) {
            Err(KuraError::Corrupt { height: found, .. }) => assert_eq!(found, height),
            other => panic!("read {height}: {other:?}"),
        }
        match kura.read_range_encoded(range_from, 4) {
            Err(KuraError::Corrupt { height: found, .. }) => assert_eq!(found, height),
            other => panic!("range from {range_from}: {:?}", other.map(|range| range.len())),
        }
    }
    assert!(kura.read_encoded(1).expect("read 1") == chain.encoded[0]);
    assert!(kura.read_encoded(11).expect("read 11") == chain.encoded[10]);
}
