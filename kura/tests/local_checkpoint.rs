//! Local checkpoints (kura/src/checkpoint.rs): a fast init from one reaches the state a replay
//! from genesis reaches; a file that does not prove itself (torn, of another height, of another
//! state, of another chain, without the block that binds its root) is passed over with the
//! reason, for the one before it or a replay from genesis, never taken for the state.

mod common;

use common::*;
use kasane_kura::checkpoint;
use kasane_kura::init::{fast_init, fast_init_from_checkpoint, strict_init};
use kasane_kura::{Backend, Kura, MemoryBackend};
use kasane_wsv::{PluginRegistry, Wsv};

/// Checkpoints at 100 and 200, bound by blocks 108 and 208.
const HEIGHTS: u64 = 250;
/// The block that binds checkpoint 200.
const BINDS_200: u64 = 208;

/// A local checkpoint file: its height, the encoded header and the chunks.
type File<'a> = (u64, (&'a [u8], &'a [Vec<u8>]));

fn plugins() -> PluginRegistry {
    PluginRegistry::builtin()
}

/// A store of the first `heights` blocks of `chain`, keeping `files` as its local checkpoints.
fn store_with(chain: &Chain, heights: u64, files: &[File]) -> Kura<MemoryBackend> {
    let backend = memory_store(&chain.blocks[..heights as usize]);
    for (height, (header, chunks)) in files {
        checkpoint::save(&mut backend.clone(), *height, header, chunks).expect("save the checkpoint");
    }
    Kura::open(backend, config()).expect("open").0
}

#[track_caller]
fn assert_same_state(wsv: &Wsv, expected: &Wsv) {
    assert_eq!(wsv.height(), expected.height(), "height");
    assert_eq!(wsv.head_hash(), expected.head_hash(), "head hash");
    assert_eq!(wsv.state_commitment(), expected.state_commitment(), "state commitment");
    assert_eq!(wsv.transaction_count(), expected.transaction_count(), "transactions");
}

/// Inits from the local checkpoints, expecting a replay from genesis because they were refused,
/// one of them for a reason that contains `reason_has`.
#[track_caller]
fn expect_refused(kura: &Kura<MemoryBackend>, expected: &Wsv, reason_has: &str) {
    let (wsv, report) = fast_init_from_checkpoint(kura, plugins(), None).expect("init");
    assert_same_state(&wsv, expected);
    assert_eq!(report.started_from, 0, "refused checkpoints mean a replay from genesis");
    assert_eq!(report.blocks, kura.height());
    let reasons = report.checkpoints_refused.join("; ");
    assert!(
        reasons.contains(reason_has),
        "expected a reason with {reason_has:?}, got {reasons:?}"
    );
}

#[test]
fn a_fast_init_from_the_local_checkpoint_reaches_the_state_of_a_replay_from_genesis() {
    let chain = Chain::new(HEIGHTS, 11);
    let kura = store_with(&chain, HEIGHTS, &[(200, chain.checkpoint(200))]);
    let (from_genesis, replay) = fast_init(&kura, plugins(), None).expect("fast init");
    assert_eq!((replay.started_from, replay.blocks), (0, HEIGHTS));
    assert_same_state(&from_genesis, &chain.fixture.wsv);

    let (wsv, report) = fast_init_from_checkpoint(&kura, plugins(), None).expect("init");
    assert_same_state(&wsv, &from_genesis);
    assert_eq!(report.started_from, 200);
    assert!(
        report.checkpoints_refused.is_empty(),
        "{:?}",
        report.checkpoints_refused
    );
    assert_eq!(
        report.blocks,
        HEIGHTS - 200,
        "blocks 201..=208 prove the checkpoint, then 209..=250"
    );
    assert_eq!(
        wsv.checkpoint().map(|checkpoint| checkpoint.height()),
        Some(200),
        "the node serves the checkpoint it started from"
    );

    // Without a file, the same call replays from genesis and says nothing.
    let plain = store_with(&chain, HEIGHTS, &[]);
    let (wsv, report) = fast_init_from_checkpoint(&plain, plugins(), None).expect("init");
    assert_same_state(&wsv, &from_genesis);
    assert_eq!((report.started_from, report.checkpoints_refused.len()), (0, 0));
}

#[test]
fn a_store_without_the_block_binding_its_newest_checkpoint_starts_from_the_one_before() {
    // Found by the soak, when the next block bound the root: a restart at height 1100 kept
    // checkpoint 1100 and no block after it, and replayed 4.5 million transactions from genesis
    // for 20 s. A file is now written only once the binding block is committed, but a crash can
    // still lose blocks that were not synced.
    let chain = Chain::new(HEIGHTS, 11);
    let files = [(100, chain.checkpoint(100)), (200, chain.checkpoint(200))];
    let kura = store_with(&chain, BINDS_200 - 1, &files);
    let expected = fast_init(&kura, plugins(), None).expect("fast init").0;
    let (wsv, report) = fast_init_from_checkpoint(&kura, plugins(), None).expect("init");
    assert_same_state(&wsv, &expected);
    assert_eq!((report.started_from, report.blocks), (100, BINDS_200 - 1 - 100));
    assert_eq!(report.checkpoints_refused.len(), 1, "{:?}", report.checkpoints_refused);
    assert!(report.checkpoints_refused[0].starts_with("checkpoint 200: "));
    assert!(report.checkpoints_refused[0].contains("below block 208, which proves it"));
}

#[test]
fn a_local_checkpoint_that_does_not_prove_itself_is_passed_over() {
    let chain = Chain::new(HEIGHTS, 11);
    let expected = fast_init(&store_with(&chain, HEIGHTS, &[]), plugins(), None)
        .expect("fast init")
        .0;
    let (header, chunks) = chain.checkpoint(200);

    // Torn: the file ends early.
    let backend = memory_store(&chain.blocks);
    checkpoint::save(&mut backend.clone(), 200, header, chunks).expect("save");
    let name = checkpoint::file_name(200);
    let mut bytes = backend.read_file(&name).expect("read").expect("kept");
    bytes.truncate(bytes.len() - 7);
    backend.clone().write_file(&name, &bytes).expect("write");
    expect_refused(&Kura::open(backend, config()).expect("open").0, &expected, "cut short");

    // The header of one checkpoint with the chunks of another.
    let (_, chunks_of_100) = chain.checkpoint(100);
    let kura = store_with(&chain, HEIGHTS, &[(200, (header, chunks_of_100))]);
    expect_refused(&kura, &expected, "snapshot of height 200");

    // A file named for one height that holds another.
    let kura = store_with(&chain, HEIGHTS, &[(200, chain.checkpoint(100))]);
    expect_refused(&kura, &expected, "its header is of height 100");

    // The snapshot of another state at the same height, under this chain's header: it decodes
    // and is canonical, and the blocks executed on it give another commitment (by block 208,
    // which binds the root, at the latest).
    let other = Chain::new(HEIGHTS, 12);
    let (_, other_chunks) = other.checkpoint(200);
    let kura = store_with(&chain, HEIGHTS, &[(200, (header, other_chunks))]);
    expect_refused(&kura, &expected, "executed on it does not give its stored commitment");

    // Another chain's checkpoint, header and all.
    let kura = store_with(&chain, HEIGHTS, &[(200, other.checkpoint(200))]);
    expect_refused(&kura, &expected, "not the stored block");

    // The store ends before the block that binds the only checkpoint: nothing proves it.
    let short = store_with(&chain, BINDS_200 - 1, &[(200, (header, chunks))]);
    let expected_short = fast_init(&store_with(&chain, BINDS_200 - 1, &[]), plugins(), None)
        .expect("fast init")
        .0;
    expect_refused(&short, &expected_short, "below block 208, which proves it");

    // Strict init never reads the files.
    let kura = store_with(&chain, HEIGHTS, &[(200, (header, other_chunks))]);
    let (wsv, report) = strict_init(&kura, plugins(), None).expect("strict init");
    assert_same_state(&wsv, &expected);
    assert_eq!((report.started_from, report.checkpoints_refused.len()), (0, 0));
}

#[test]
fn a_store_from_a_base_starts_from_the_newer_of_its_base_and_its_local_checkpoint() {
    let chain = Chain::new(HEIGHTS, 11);
    let based = |base: u64, file: Option<u64>| {
        let backend = MemoryBackend::new();
        let (mut kura, _) = Kura::open(backend.clone(), config()).expect("open");
        kura.append(&chain.blocks[0]).expect("genesis");
        let (header, chunks) = chain.checkpoint(base);
        kura.rebase(base, chain.hash(base), header, chunks).expect("rebase");
        for block in &chain.blocks[base as usize..] {
            kura.append(block).expect("append above the base");
        }
        if let Some(height) = file {
            let (header, chunks) = chain.checkpoint(height);
            checkpoint::save(&mut backend.clone(), height, header, chunks).expect("save");
        }
        drop(kura);
        Kura::open(backend, config()).expect("reopen").0
    };
    for (base, file, started_from) in [(100, Some(200), 200), (200, Some(100), 200), (100, None, 100)] {
        let (wsv, report) = fast_init_from_checkpoint(&based(base, file), plugins(), None).expect("init");
        assert_same_state(&wsv, &chain.fixture.wsv);
        assert_eq!(
            (report.started_from, report.checkpoints_refused.len()),
            (started_from, 0),
            "base {base}, local checkpoint {file:?}"
        );
    }
}
