//! Recovery on open (docs/KURA-FORMAT.md, "Recovery on open"), on a MemoryBackend: damage to
//! the last record loses exactly that block; damage anywhere before it is `Corrupt` naming its
//! height and cuts nothing; torn chunk headers, crashes under every fsync policy, read-only
//! opens and garbage files.

mod common;

use common::*;
use kasane_kura::backend::Backend;
use kasane_kura::format::{self, CHUNK_HEADER_BYTES, RECORD_HEADER_BYTES};
use kasane_kura::{FsyncPolicy, Kura, KuraError, MemoryBackend};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

/// Heights of the stores most tests use: 11 (chunks of 4, 4 and 3 records) and 9 (the last
/// record alone in the last chunk, right after the chunk header).
const STORE_HEIGHTS: [u64; 2] = [11, 9];

/// Checks what a successful recovery must leave on disk: every chunk before the last kept
/// record's chunk untouched, the store's chunk files exactly those holding its blocks, and the
/// report's byte count equal to the bytes on disk.
#[track_caller]
fn assert_disk_after_cut(backend: &MemoryBackend, original: &Image, kept_height: u64, report_bytes: u64) {
    let after = image(backend);
    let expected_chunks = kept_height.div_ceil(u64::from(BLOCKS_PER_CHUNK)) as usize;
    assert_eq!(
        after.len(),
        expected_chunks,
        "chunk files after the cut: {:?}",
        after.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    for (chunk, bytes) in &after {
        let sound = chunk_of(original, *chunk);
        let end = spans(sound)
            .iter()
            .filter(|span| span.height <= kept_height)
            .map(|span| span.end)
            .max()
            .expect("a kept chunk holds a kept record");
        assert!(
            bytes[..] == sound[..end],
            "chunk {chunk} is the original up to block {kept_height}"
        );
    }
    assert_eq!(report_bytes, total_bytes(&after), "report.bytes is the bytes on disk");
}

#[test]
fn truncating_the_last_record_at_every_offset_loses_exactly_that_block() {
    for heights in STORE_HEIGHTS {
        let chain = Chain::new(heights, 1);
        let original = image(&memory_store(&chain.blocks));
        assert_eq!(original.len(), 3, "three chunks");
        let (chunk, last) = span_of(&original, heights);
        assert_eq!(chunk, 2);
        for len in last.start..last.end {
            let torn = with_chunk(&original, 2, chunk_of(&original, 2)[..len].to_vec());
            let backend = disk(&torn);
            let (mut kura, report) = open_ok(&backend, config());
            assert_prefix(&kura, &chain, heights - 1);
            if len == last.start && last.start > CHUNK_HEADER_BYTES {
                // The file ends exactly after the previous record: nothing is torn.
                assert_eq!(report.cut, None, "len {len}");
            } else {
                let cut = report
                    .cut
                    .clone()
                    .unwrap_or_else(|| panic!("len {len}: a cut is reported"));
                assert_eq!(cut.chunk, 2, "len {len}");
                if last.start > CHUNK_HEADER_BYTES {
                    assert_eq!(cut.offset, last.start as u64, "len {len}");
                    assert_eq!(cut.bytes_cut, (len - last.start) as u64, "len {len}");
                    assert!(cut.chunks_removed.is_empty(), "len {len}");
                } else {
                    // The cut leaves no record in the last chunk: the whole file goes.
                    assert_eq!(cut.chunks_removed, vec![2], "len {len}");
                    assert_eq!(cut.bytes_cut, len as u64, "len {len}");
                }
                assert!(!cut.reason.is_empty());
            }
            assert_eq!(
                report.chunks,
                2 + usize::from(last.start > CHUNK_HEADER_BYTES),
                "len {len}"
            );
            assert_disk_after_cut(&backend, &original, heights - 1, report.bytes);
            append_rest_and_reopen(&mut kura, &chain);
            assert_eq!(
                image(&backend),
                original,
                "len {len}: the re-appended store is the original, byte for byte"
            );
        }
    }
}

#[test]
fn flipping_any_bit_of_the_last_record_loses_exactly_that_block() {
    for heights in STORE_HEIGHTS {
        let chain = Chain::new(heights, 1);
        let original = image(&memory_store(&chain.blocks));
        let (_, last) = span_of(&original, heights);
        for bit in last.start * 8..last.end * 8 {
            let mut damaged = chunk_of(&original, 2).to_vec();
            flip_bit(&mut damaged, bit);
            let backend = disk(&with_chunk(&original, 2, damaged));
            let (mut kura, report) = open_ok(&backend, config());
            assert_prefix(&kura, &chain, heights - 1);
            let cut = report
                .cut
                .clone()
                .unwrap_or_else(|| panic!("bit {bit}: a cut is reported"));
            assert_eq!(cut.chunk, 2);
            assert_eq!(cut.offset, last.start as u64, "bit {bit}");
            if last.start > CHUNK_HEADER_BYTES {
                assert_eq!(cut.bytes_cut, (last.end - last.start) as u64, "bit {bit}");
                assert!(cut.chunks_removed.is_empty());
            } else {
                assert_eq!(cut.bytes_cut, last.end as u64, "bit {bit}");
                assert_eq!(cut.chunks_removed, vec![2], "bit {bit}");
            }
            assert_disk_after_cut(&backend, &original, heights - 1, report.bytes);
            append_rest_and_reopen(&mut kura, &chain);
            assert_eq!(image(&backend), original, "bit {bit}");
        }
    }
}

/// Bits worth flipping in one record: magic, length, height, hash, both checksums, and the
/// first, middle and last payload bits.
fn bits_of(span: Span) -> Vec<usize> {
    let start = span.start * 8;
    vec![
        start,
        start + format::RECORD_LEN_OFFSET * 8 + 3,
        start + format::RECORD_HEIGHT_OFFSET * 8,
        start + format::RECORD_HASH_OFFSET * 8 + 17,
        start + format::RECORD_PAYLOAD_CRC_OFFSET * 8 + 1,
        start + format::RECORD_HEADER_CRC_OFFSET * 8 + 31,
        span.header_end() * 8,
        (span.header_end() + span.end) / 2 * 8 + 5,
        span.end * 8 - 1,
    ]
}

#[track_caller]
fn assert_corrupt_at(damaged: &Image, height: u64, what: &str) {
    let backend = disk(damaged);
    match Kura::open(backend.clone(), config()) {
        Err(KuraError::Corrupt { height: found, .. }) => assert_eq!(found, height, "{what}"),
        Err(other) => panic!("{what}: expected corrupt record at height {height}, got {other}"),
        Ok((_, report)) => panic!("{what}: expected corrupt record at height {height}, opened at {report:?}"),
    }
    assert!(image(&backend) == *damaged, "{what}: a failed open changes nothing");
    match Kura::open(backend.clone(), read_only()) {
        Err(KuraError::Corrupt { height: found, .. }) => assert_eq!(found, height, "{what} (read-only)"),
        Err(other) => panic!("{what} (read-only): got {other}"),
        Ok((_, report)) => panic!("{what} (read-only): opened at {report:?}"),
    }
    assert!(
        image(&backend) == *damaged,
        "{what}: a failed read-only open changes nothing"
    );
}

#[test]
fn damage_before_the_last_record_is_corrupt_at_its_height_and_cuts_nothing() {
    let chain = Chain::new(11, 1);
    let original = image(&memory_store(&chain.blocks));
    // 1: the first record of the store; 4 and 8: last records of sealed chunks; 6: inside a
    // sealed chunk; 9 and 10: records of the last chunk followed by a sound one.
    for height in [1, 4, 6, 8, 9, 10] {
        let (chunk, span) = span_of(&original, height);
        for bit in bits_of(span) {
            let mut bytes = chunk_of(&original, chunk).to_vec();
            flip_bit(&mut bytes, bit);
            let what = format!("block {height}, chunk {chunk}, bit {bit}");
            assert_corrupt_at(&with_chunk(&original, chunk, bytes), height, &what);
        }
    }
    // A damaged chunk header with records after it names the chunk's first height.
    for (chunk, first) in [(0u32, 1u64), (1, 5), (2, 9)] {
        for bit in [
            0,
            8 * format::CHUNK_FIRST_HEIGHT_OFFSET,
            8 * format::CHUNK_CRC_OFFSET + 7,
        ] {
            let mut bytes = chunk_of(&original, chunk).to_vec();
            flip_bit(&mut bytes, bit);
            assert_corrupt_at(
                &with_chunk(&original, chunk, bytes),
                first,
                &format!("chunk {chunk} header, bit {bit}"),
            );
        }
    }
}

#[test]
fn two_damaged_records_before_a_sound_one_are_corrupt() {
    // The documented rule searches the rest of the chunk byte by byte for any valid record,
    // not only right after the damaged one.
    let chain = Chain::new(11, 1);
    let original = image(&memory_store(&chain.blocks));
    let (_, nine) = span_of(&original, 9);
    let (_, ten) = span_of(&original, 10);
    let (_, eleven) = span_of(&original, 11);
    let cases = [
        (
            "payloads of 9 and 10",
            nine.header_end() * 8 + 9,
            ten.header_end() * 8 + 9,
        ),
        (
            "payload of 9, header of 10",
            nine.header_end() * 8 + 9,
            ten.start * 8 + 100,
        ),
        (
            "header of 9, payload of 10",
            nine.start * 8 + 100,
            ten.header_end() * 8 + 9,
        ),
        ("headers of 9 and 10", nine.start * 8 + 100, ten.start * 8 + 100),
    ];
    for (what, first, second) in cases {
        let mut bytes = chunk_of(&original, 2).to_vec();
        flip_bit(&mut bytes, first);
        flip_bit(&mut bytes, second);
        assert_corrupt_at(&with_chunk(&original, 2, bytes.clone()), 9, what);
        // With block 11 torn as well, nothing valid follows: a torn tail, cut back to 8.
        bytes.truncate(eleven.end - 1);
        let backend = disk(&with_chunk(&original, 2, bytes));
        let (mut kura, report) = open_ok(&backend, config());
        assert_prefix(&kura, &chain, 8);
        assert_eq!(
            report.cut.as_ref().map(|cut| cut.offset),
            Some(nine.start as u64),
            "{what}"
        );
        assert_disk_after_cut(&backend, &original, 8, report.bytes);
        append_rest_and_reopen(&mut kura, &chain);
    }
}

#[test]
fn a_torn_last_chunk_header_removes_the_chunk() {
    // An 11-block store whose last chunk lost everything after k header bytes.
    let chain = Chain::new(11, 1);
    let original = image(&memory_store(&chain.blocks));
    for k in 0..CHUNK_HEADER_BYTES {
        let backend = disk(&with_chunk(&original, 2, chunk_of(&original, 2)[..k].to_vec()));
        let (mut kura, report) = open_ok(&backend, config());
        assert_prefix(&kura, &chain, 8);
        let cut = report.cut.clone().expect("cut");
        assert_eq!((cut.chunk, cut.offset, cut.bytes_cut), (2, 0, k as u64), "k {k}");
        assert_eq!(cut.chunks_removed, vec![2]);
        assert_disk_after_cut(&backend, &original, 8, report.bytes);
        append_rest_and_reopen(&mut kura, &chain);
        assert_eq!(image(&backend), original);
    }
    // A 12-block store ends exactly at a chunk boundary; the append of block 13 created chunk 3
    // and crashed with k bytes of its header written (k = 32: the header, but no record).
    let chain = Chain::new(13, 1);
    let full = image(&memory_store(&chain.blocks));
    let at_boundary = image(&memory_store(&chain.blocks[..12]));
    assert_eq!(at_boundary.len(), 3);
    for k in 0..=CHUNK_HEADER_BYTES {
        let header = format::encode_chunk_header(BLOCKS_PER_CHUNK, 3);
        let backend = disk(&with_chunk(&at_boundary, 3, header[..k].to_vec()));
        let (mut kura, report) = open_ok(&backend, config());
        assert_prefix(&kura, &chain, 12);
        let cut = report.cut.clone().unwrap_or_else(|| panic!("k {k}: cut"));
        assert_eq!(cut.chunk, 3);
        assert_eq!(cut.chunks_removed, vec![3], "k {k}");
        assert_eq!(cut.bytes_cut, k as u64, "k {k}");
        assert_eq!(report.chunks, 3);
        assert_disk_after_cut(&backend, &full, 12, report.bytes);
        append_rest_and_reopen(&mut kura, &chain);
        assert_eq!(image(&backend), full);
    }
}

/// Heights whose bytes are durable after appending `appended` blocks under `policy`, per the
/// write protocol: a sync after every N appends (Every), before every return (Always), and of
/// the previous chunk whenever a chunk is created.
fn durable_height(policy: FsyncPolicy, appended: u64) -> u64 {
    let mut durable = 0;
    let mut since_sync = 0;
    for height in 1..=appended {
        if height > 1 && (height - 1) % u64::from(BLOCKS_PER_CHUNK) == 0 {
            durable = height - 1;
            since_sync = 0;
        }
        since_sync += 1;
        let sync = match policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Every(count) => since_sync >= count,
            FsyncPolicy::Never => false,
        };
        if sync {
            durable = height;
            since_sync = 0;
        }
    }
    durable
}

#[test]
fn with_fsync_always_a_crash_loses_nothing_acknowledged() {
    let chain = Chain::new(13, 2);
    let backend = MemoryBackend::new();
    let (mut kura, _) = open_ok(&backend, config_with(FsyncPolicy::Always));
    for height in 1..=chain.height() {
        kura.append(&chain.blocks[height as usize - 1]).expect("append");
        let before = image(&backend);
        let crashed = backend.snapshot();
        crashed.crash();
        assert!(
            image(&crashed) == before,
            "height {height}: every appended byte was synced"
        );
        let (mut reopened, report) = open_ok(&crashed, config());
        assert!(report.cut.is_none());
        assert_prefix(&reopened, &chain, height);
        append_rest_and_reopen(&mut reopened, &chain);
    }
}

/// After every append under `policy`: a crash keeps exactly the durable blocks, and a torn
/// write keeping any number of the unsynced bytes reopens at a whole block, never below the
/// durable height.
fn crash_at_every_point(policy: FsyncPolicy, seed: u64) {
    let chain = Chain::new(13, seed);
    let backend = MemoryBackend::new();
    let (mut kura, _) = open_ok(&backend, config_with(policy));
    for appended in 1..=chain.height() {
        kura.append(&chain.blocks[appended as usize - 1]).expect("append");
        assert_eq!(kura.height(), appended);
        let durable = durable_height(policy, appended);

        let crashed = backend.snapshot();
        crashed.crash();
        let (mut reopened, _) = open_ok(&crashed, config());
        assert_prefix(&reopened, &chain, durable);
        append_rest_and_reopen(&mut reopened, &chain);

        // The last chunk before the crash, and how much of it was synced.
        let full = image(&backend);
        let (last_chunk, last_bytes) = full.last().cloned().expect("a chunk");
        let synced_len = {
            let synced = backend.snapshot();
            synced.crash();
            synced
                .chunk_bytes(last_chunk)
                .expect("created chunks are durable")
                .len()
        };
        let before_last = u64::from(last_chunk) * u64::from(BLOCKS_PER_CHUNK);
        let last_spans = spans(&last_bytes);
        for keep in 0..=last_bytes.len() - synced_len {
            let torn = backend.snapshot();
            torn.crash_keeping(keep);
            let kept_len = synced_len + keep;
            let expected = if kept_len < CHUNK_HEADER_BYTES {
                before_last
            } else {
                before_last + last_spans.iter().filter(|span| span.end <= kept_len).count() as u64
            };
            let what = format!("{policy}: {appended} appended, keeping {keep} unsynced bytes");
            let (mut reopened, report) =
                Kura::open(torn.clone(), config()).unwrap_or_else(|error| panic!("{what}: open: {error}"));
            assert!(report.height >= durable, "{what}: lost a durable block");
            assert_eq!(report.height, expected, "{what}");
            assert_prefix(&reopened, &chain, expected);
            assert_eq!(report.bytes, total_bytes(&image(&torn)), "{what}");
            append_rest_and_reopen(&mut reopened, &chain);
        }
    }
}

#[test]
fn with_fsync_every_3_a_crash_keeps_every_synced_block() {
    crash_at_every_point(FsyncPolicy::Every(3), 3);
}

#[test]
fn with_fsync_never_a_crash_keeps_every_sealed_chunk() {
    crash_at_every_point(FsyncPolicy::Never, 4);
}

#[test]
fn sync_makes_every_appended_block_durable() {
    let chain = Chain::new(7, 5);
    for policy in [FsyncPolicy::Every(3), FsyncPolicy::Never] {
        let backend = MemoryBackend::new();
        let (mut kura, _) = open_ok(&backend, config_with(policy));
        for block in &chain.blocks {
            kura.append(block).expect("append");
        }
        kura.sync().expect("sync");
        backend.crash();
        let (reopened, report) = open_ok(&backend, config());
        assert!(report.cut.is_none());
        assert_prefix(&reopened, &chain, 7);
    }
}

#[test]
fn a_read_only_open_reports_a_torn_tail_but_changes_nothing() {
    let chain = Chain::new(13, 1);
    let original = image(&memory_store(&chain.blocks[..11]));
    let (_, last) = span_of(&original, 11);
    let torn_record = with_chunk(&original, 2, chunk_of(&original, 2)[..last.start + 70].to_vec());
    let twelve = image(&memory_store(&chain.blocks[..12]));
    let torn_header = with_chunk(
        &twelve,
        3,
        format::encode_chunk_header(BLOCKS_PER_CHUNK, 3)[..10].to_vec(),
    );
    for (damaged, kept, removed) in [(torn_record, 10, vec![]), (torn_header, 12, vec![3])] {
        let backend = disk(&damaged);
        let (mut kura, report) = open_ok(&backend, read_only());
        let cut = report.cut.clone().expect("the cut is reported");
        assert_eq!(cut.chunks_removed, removed);
        assert_prefix(&kura, &chain, kept);
        assert!(image(&backend) == damaged, "read-only: the bytes are unchanged");
        assert!(
            kura.append(&chain.blocks[kept as usize]).is_err(),
            "read-only refuses appends"
        );
        assert!(image(&backend) == damaged);
        assert_eq!(kura.height(), kept);
        // A read-write open then makes the same cut.
        let (mut writable, writable_report) = open_ok(&backend, config());
        assert_eq!(writable_report.cut, Some(cut));
        assert_prefix(&writable, &chain, kept);
        append_rest_and_reopen(&mut writable, &chain);
    }
}

/// Bytes from a seed that hold no record magic.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    while let Some(at) = out.windows(4).position(|window| window == format::RECORD_MAGIC) {
        out[at] ^= 0x80;
    }
    out
}

#[test]
fn empty_or_garbage_chunk_files_after_the_last_record_are_cut() {
    let chain = Chain::new(13, 1);
    for stored in [11u64, 12] {
        let sound = image(&memory_store(&chain.blocks[..stored as usize]));
        let extra_files = [
            Vec::new(),
            garbage(7, 1),
            garbage(31, 2),
            garbage(32, 3),
            garbage(2000, 4),
        ];
        for (case, extra) in extra_files.into_iter().enumerate() {
            let damaged = with_chunk(&sound, 3, extra.clone());
            let backend = disk(&damaged);
            let (mut kura, report) = open_ok(&backend, config());
            let what = format!("{stored} blocks, extra chunk case {case}");
            assert_prefix(&kura, &chain, stored);
            let cut = report.cut.clone().unwrap_or_else(|| panic!("{what}: cut"));
            assert_eq!(cut.chunks_removed, vec![3], "{what}");
            assert_eq!(cut.bytes_cut, extra.len() as u64, "{what}");
            assert_eq!(report.chunks, 3, "{what}");
            assert!(image(&backend) == sound, "{what}: the store is the sound one again");
            assert_eq!(report.bytes, total_bytes(&sound), "{what}: report.bytes");
            assert_eq!(kura.bytes(), total_bytes(&sound), "{what}: kura.bytes()");
            append_rest_and_reopen(&mut kura, &chain);
        }
    }
    // Garbage after the last record of the last chunk.
    let sound = image(&memory_store(&chain.blocks[..11]));
    for len in [1, 55, 56, 57, 3000] {
        let mut bytes = chunk_of(&sound, 2).to_vec();
        bytes.extend_from_slice(&garbage(len, len as u64));
        let backend = disk(&with_chunk(&sound, 2, bytes));
        let (mut kura, report) = open_ok(&backend, config());
        assert_prefix(&kura, &chain, 11);
        let cut = report.cut.clone().expect("cut");
        assert_eq!(
            (cut.chunk, cut.offset, cut.bytes_cut),
            (2, chunk_of(&sound, 2).len() as u64, len as u64)
        );
        assert!(image(&backend) == sound);
        assert_eq!(report.bytes, total_bytes(&sound));
        append_rest_and_reopen(&mut kura, &chain);
    }
}

#[test]
fn a_missing_chunk_is_corrupt_unless_nothing_valid_follows() {
    let chain = Chain::new(11, 1);
    let sound = image(&memory_store(&chain.blocks));
    // Chunk 1 of 3 gone, chunk 2 holds valid records: corrupt at the first missing height.
    assert_corrupt_at(&without_chunk(&sound, 1), 5, "chunk 1 missing");
    assert_corrupt_at(&without_chunk(&sound, 0), 1, "chunk 0 missing");
    // Chunk 1 gone and chunk 2 holds no valid record: a torn tail, the store ends at 4.
    let no_valid_after = [
        Vec::new(),
        format::encode_chunk_header(BLOCKS_PER_CHUNK, 2).to_vec(),
        chunk_of(&sound, 2)[..CHUNK_HEADER_BYTES + RECORD_HEADER_BYTES + 10].to_vec(),
        garbage(500, 9),
    ];
    for (case, bytes) in no_valid_after.into_iter().enumerate() {
        let damaged = with_chunk(&without_chunk(&sound, 1), 2, bytes.clone());
        let backend = disk(&damaged);
        let (mut kura, report) = open_ok(&backend, config());
        assert_prefix(&kura, &chain, 4);
        let cut = report.cut.clone().unwrap_or_else(|| panic!("case {case}: cut"));
        assert_eq!(cut.chunk, 2, "case {case}");
        assert_eq!(cut.chunks_removed, vec![2], "case {case}");
        assert_eq!(cut.bytes_cut, bytes.len() as u64, "case {case}");
        assert_disk_after_cut(&backend, &sound, 4, report.bytes);
        append_rest_and_reopen(&mut kura, &chain);
        assert_eq!(image(&backend), sound);
    }
}

#[test]
fn a_short_sealed_chunk_before_a_valid_one_is_corrupt() {
    let chain = Chain::new(11, 1);
    let sound = image(&memory_store(&chain.blocks));
    // Chunk 1 lost its last record (a sealed chunk is never torn): block 8 is missing while
    // chunk 2 holds 9..11.
    let (_, eight) = span_of(&sound, 8);
    let short = with_chunk(&sound, 1, chunk_of(&sound, 1)[..eight.start].to_vec());
    assert_corrupt_at(&short, 8, "chunk 1 without block 8");
}

/// What the documented rule says of the last chunk of the 11-block store damaged into
/// `damaged`: `Ok(height)` after a cut, or `Err(height)` for corrupt at that height.
fn expected_outcome(sound: &[u8], damaged: &[u8]) -> Result<u64, u64> {
    let records = spans(sound);
    let intact =
        |span: &Span| span.end <= damaged.len() && damaged[span.start..span.end] == sound[span.start..span.end];
    let header_sound =
        damaged.len() >= CHUNK_HEADER_BYTES && damaged[..CHUNK_HEADER_BYTES] == sound[..CHUNK_HEADER_BYTES];
    if !header_sound {
        return if records.iter().any(intact) { Err(9) } else { Ok(8) };
    }
    match records.iter().position(|span| !intact(span)) {
        None => Ok(11),
        Some(first_bad) if records[first_bad + 1..].iter().any(intact) => Err(records[first_bad].height),
        Some(first_bad) => Ok(records[first_bad].height - 1),
    }
}

#[test]
fn random_damage_to_the_last_chunk_never_panics_and_never_returns_a_wrong_block() {
    let chain = Chain::new(11, 6);
    let sound = image(&memory_store(&chain.blocks));
    let last = chunk_of(&sound, 2).to_vec();
    let strategy = (
        proptest::option::weighted(0.6, any::<Index>()),
        proptest::collection::vec(any::<Index>(), 0..5),
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(truncate, flips)| {
            let mut damaged = last.clone();
            for flip in &flips {
                flip_bit(&mut damaged, flip.index(last.len() * 8));
            }
            if let Some(at) = truncate {
                damaged.truncate(at.index(last.len() + 1));
            }
            let image_before = with_chunk(&sound, 2, damaged.clone());
            let backend = disk(&image_before);
            let opened = std::panic::catch_unwind(|| Kura::open(backend.clone(), config()));
            let opened = opened.map_err(|_| TestCaseError::fail("open panicked"))?;
            match (opened, expected_outcome(&last, &damaged)) {
                (Ok((mut kura, report)), Ok(height)) => {
                    prop_assert_eq!(report.height, height);
                    assert_prefix(&kura, &chain, height);
                    assert_disk_after_cut(&backend, &sound, height, report.bytes);
                    append_rest_and_reopen(&mut kura, &chain);
                }
                (Err(KuraError::Corrupt { height, .. }), Err(expected)) => {
                    prop_assert_eq!(height, expected);
                    prop_assert!(image(&backend) == image_before, "a failed open changes nothing");
                }
                (Ok((_, report)), Err(expected)) => {
                    return Err(TestCaseError::fail(format!(
                        "expected corrupt at {expected}, opened {report:?}"
                    )));
                }
                (Err(error), expected) => {
                    return Err(TestCaseError::fail(format!("expected {expected:?}, got {error}")));
                }
            }
            Ok(())
        })
        .unwrap_or_else(|error| panic!("{error}"));
}

#[test]
fn a_failed_append_refuses_more_appends_until_a_reopen_recovers() {
    let chain = Chain::new(13, 1);
    let backend = memory_store(&chain.blocks[..11]);
    let (mut kura, _) = open_ok(&backend, config());
    // The last chunk vanishes under the open store: the next append fails half-way.
    backend.clone().remove(2).expect("remove chunk 2");
    assert!(matches!(kura.append(&chain.blocks[11]), Err(KuraError::Io(_))));
    assert!(kura.append(&chain.blocks[11]).is_err(), "an earlier append failed");
    assert_eq!(kura.height(), 11, "the index is unchanged");
    let (mut reopened, report) = open_ok(&backend, config());
    assert!(report.cut.is_none());
    assert_prefix(&reopened, &chain, 8);
    append_rest_and_reopen(&mut reopened, &chain);
}

#[test]
fn an_existing_store_keeps_its_chunk_size() {
    let chain = Chain::new(13, 1);
    let backend = memory_store(&chain.blocks[..11]);
    let (mut kura, report) = Kura::open(backend.clone(), kasane_kura::KuraConfig::default()).expect("open");
    assert_eq!(
        (report.blocks_per_chunk, kura.blocks_per_chunk()),
        (BLOCKS_PER_CHUNK, BLOCKS_PER_CHUNK)
    );
    for block in &chain.blocks[11..] {
        kura.append(block).expect("append");
    }
    assert_eq!(
        backend.list().expect("list"),
        vec![0, 1, 2, 3],
        "block 13 starts chunk 3"
    );
    let (reopened, _) = open_ok(&backend, config());
    assert_prefix(&reopened, &chain, 13);
}
