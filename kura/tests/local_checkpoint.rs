//! The local checkpoint (kura/src/checkpoint.rs): a fast init from it reaches the state a
//! replay from genesis reaches, and a file that does not prove itself (torn, of another
//! height, of another state, of another chain, with no block after it) is left for a replay
//! from genesis with the reason, never taken for the state.

mod common;

use common::*;
use kasane_kura::checkpoint;
use kasane_kura::init::{fast_init, fast_init_from_checkpoint, strict_init, InitReport};
use kasane_kura::{Kura, MemoryBackend};
use kasane_wsv::{PluginRegistry, Wsv};

/// Checkpoints at 100 and 200.
const HEIGHTS: u64 = 250;

fn plugins() -> PluginRegistry {
    PluginRegistry::builtin()
}

/// A store of the first `heights` blocks of `chain`, keeping `file` as its local checkpoint.
fn store_with(chain: &Chain, heights: u64, file: Option<(&[u8], &[Vec<u8>])>) -> Kura<MemoryBackend> {
    let backend = memory_store(&chain.blocks[..heights as usize]);
    if let Some((header, chunks)) = file {
        checkpoint::save(&mut backend.clone(), header, chunks).expect("save the checkpoint");
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

/// Inits from the checkpoint, expecting a replay from genesis because the file was refused
/// for a reason that contains `reason_has`.
#[track_caller]
fn expect_refused(kura: &Kura<MemoryBackend>, expected: &Wsv, reason_has: &str) {
    let (wsv, report) = fast_init_from_checkpoint(kura, plugins(), None).expect("init");
    assert_same_state(&wsv, expected);
    assert_eq!(
        report.started_from, 0,
        "a refused checkpoint means a replay from genesis"
    );
    assert_eq!(report.blocks, kura.height());
    let reason = report.checkpoint_refused.expect("a reason");
    assert!(
        reason.contains(reason_has),
        "expected a reason with {reason_has:?}, got {reason:?}"
    );
}

#[test]
fn a_fast_init_from_the_local_checkpoint_reaches_the_state_of_a_replay_from_genesis() {
    let chain = Chain::new(HEIGHTS, 11);
    let kura = store_with(&chain, HEIGHTS, Some(chain.checkpoint(200)));
    let (from_genesis, replay) = fast_init(&kura, plugins(), None).expect("fast init");
    assert_eq!((replay.started_from, replay.blocks), (0, HEIGHTS));
    assert_same_state(&from_genesis, &chain.fixture.wsv);

    let (wsv, report): (Wsv, InitReport) = fast_init_from_checkpoint(&kura, plugins(), None).expect("init");
    assert_same_state(&wsv, &from_genesis);
    assert_eq!(report.started_from, 200);
    assert_eq!(report.checkpoint_refused, None);
    assert_eq!(
        report.blocks,
        HEIGHTS - 200,
        "block 201 proves the checkpoint, then 202..250"
    );
    let per_block = from_genesis.transaction_count() / HEIGHTS;
    assert!(report.transactions >= (HEIGHTS - 200) * per_block.saturating_sub(1));
    assert_eq!(
        wsv.checkpoint().map(|checkpoint| checkpoint.height()),
        Some(200),
        "the node serves the checkpoint it started from"
    );

    // Without a file, the same call replays from genesis and says nothing.
    let plain = store_with(&chain, HEIGHTS, None);
    let (wsv, report) = fast_init_from_checkpoint(&plain, plugins(), None).expect("init");
    assert_same_state(&wsv, &from_genesis);
    assert_eq!((report.started_from, report.checkpoint_refused), (0, None));
}

#[test]
fn a_local_checkpoint_that_does_not_prove_itself_means_a_replay_from_genesis() {
    let chain = Chain::new(HEIGHTS, 11);
    let expected = fast_init(&store_with(&chain, HEIGHTS, None), plugins(), None)
        .expect("fast init")
        .0;
    let (header, chunks) = chain.checkpoint(200);

    // Torn: the file ends early.
    let backend = memory_store(&chain.blocks);
    checkpoint::save(&mut backend.clone(), header, chunks).expect("save");
    let mut bytes = kasane_kura::Backend::read_file(&backend, checkpoint::FILE)
        .expect("read")
        .expect("kept");
    bytes.truncate(bytes.len() - 7);
    kasane_kura::Backend::write_file(&mut backend.clone(), checkpoint::FILE, &bytes).expect("write");
    expect_refused(&Kura::open(backend, config()).expect("open").0, &expected, "cut short");

    // The header of one checkpoint with the chunks of another.
    let (_, chunks_of_100) = chain.checkpoint(100);
    let kura = store_with(&chain, HEIGHTS, Some((header, chunks_of_100)));
    expect_refused(&kura, &expected, "snapshot of height 200");

    // The snapshot of another state at the same height, under this chain's header: it decodes
    // and is canonical, and block 201 executed on it gives another commitment.
    let other = Chain::new(HEIGHTS, 12);
    let (_, other_chunks) = other.checkpoint(200);
    let kura = store_with(&chain, HEIGHTS, Some((header, other_chunks)));
    expect_refused(&kura, &expected, "block 201 executed on it");

    // Another chain's checkpoint, header and all.
    let kura = store_with(&chain, HEIGHTS, Some(other.checkpoint(200)));
    expect_refused(&kura, &expected, "not the stored block");

    // The store ends at the checkpoint (a crash right after it): no block proves it.
    let short = store_with(&chain, 200, Some((header, chunks)));
    let expected_at_200 = fast_init(&store_with(&chain, 200, None), plugins(), None)
        .expect("fast init")
        .0;
    expect_refused(&short, &expected_at_200, "no block after it");

    // Strict init never reads the file.
    let kura = store_with(&chain, HEIGHTS, Some((header, other_chunks)));
    let (wsv, report) = strict_init(&kura, plugins(), None).expect("strict init");
    assert_same_state(&wsv, &expected);
    assert_eq!((report.started_from, report.checkpoint_refused), (0, None));
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
            checkpoint::save(&mut backend.clone(), header, chunks).expect("save");
        }
        drop(kura);
        Kura::open(backend, config()).expect("reopen").0
    };
    for (base, file, started_from) in [(100, Some(200), 200), (200, Some(100), 200), (100, None, 100)] {
        let (wsv, report) = fast_init_from_checkpoint(&based(base, file), plugins(), None).expect("init");
        assert_same_state(&wsv, &chain.fixture.wsv);
        assert_eq!(
            (report.started_from, report.checkpoint_refused),
            (started_from, None),
            "base {base}, local checkpoint {file:?}"
        );
    }
}
