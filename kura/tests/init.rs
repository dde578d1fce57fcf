//! Init into a world state (docs/KURA-FORMAT.md, "Init into a world state"): fast and strict
//! init rebuild the fixture's own state; the auditor compares with a live state; and a store
//! with one block altered (records and checksums sound, so only the semantic checks can catch
//! it) fails at exactly that height, in the modes that check what was altered.

mod common;

use common::*;
use kasane_kura::init::InitMode;
use kasane_kura::{
    audit, audit_to, fast_init, strict_init, AuditTarget, InitError, InitReport, Kura, KuraError, MemoryBackend,
};
use kasane_model::block::{quorum, tx_merkle_root};
use kasane_model::instruction::Instruction;
use kasane_model::{codec, Certificate, CommittedBlock, Hash, KeyPair};
use kasane_wsv::{PluginRegistry, Wsv};

const HEIGHT: u64 = 11;

fn plugins() -> PluginRegistry {
    PluginRegistry::builtin()
}

/// A store holding `blocks` as they are, each record's header naming the block's own hash.
/// Kura checks that each block's previous hash is its head; a tampered previous hash is
/// written with the head as the claimed previous, so the store accepts it as is.
fn store_of(blocks: &[CommittedBlock]) -> Kura<MemoryBackend> {
    let (mut kura, _) = Kura::open(MemoryBackend::new(), config()).expect("open");
    for block in blocks {
        let head = kura.head_hash();
        let payload = codec::encode(block);
        kura.append_encoded(block.block.header.height, &head, &block.block.hash(), &payload)
            .expect("append");
    }
    assert_eq!(kura.height(), blocks.len() as u64);
    kura
}

#[track_caller]
fn assert_same_state(wsv: &Wsv, expected: &Wsv) {
    assert_eq!(wsv.height(), expected.height(), "height");
    assert_eq!(wsv.head_hash(), expected.head_hash(), "head hash");
    assert_eq!(wsv.state_commitment(), expected.state_commitment(), "state commitment");
}

#[track_caller]
fn expect_bad(result: Result<(Wsv, InitReport), InitError>, height: u64, reason_has: &str, what: &str) {
    match result {
        Err(error) => {
            assert_eq!(error.bad_height(), Some(height), "{what}: {error}");
            match &error {
                InitError::BadBlock { height: found, reason } => {
                    assert_eq!(*found, height, "{what}");
                    assert!(
                        reason.contains(reason_has),
                        "{what}: reason {reason:?} lacks {reason_has:?}"
                    );
                }
                other => panic!("{what}: expected a bad block, got {other}"),
            }
        }
        Ok((wsv, _)) => panic!(
            "{what}: expected first bad height {height}, init reached {}",
            wsv.height()
        ),
    }
}

/// Re-signs block `height`'s commit certificate by the fixture's quorum, as the fixture does.
fn recertify(chain: &Chain, blocks: &mut [CommittedBlock], height: u64) {
    let validators = &chain.fixture.validators;
    let signers: Vec<&KeyPair> = validators.iter().take(quorum(validators.len())).collect();
    let block = &mut blocks[height as usize - 1];
    block.certificate = Certificate::sign(CommittedBlock::expected_vote_for(&block.block), &signers);
}

/// After block `height` changed: re-links every later block to its new predecessor and
/// re-certifies them all, so the hash chain and certificates hold from `height` on.
fn relink_from(chain: &Chain, blocks: &mut [CommittedBlock], height: u64) {
    assert!(height >= 2, "genesis is certified by the genesis key");
    for h in height..=blocks.len() as u64 {
        if h > height {
            blocks[h as usize - 1].block.header.previous_hash = blocks[h as usize - 2].block.hash();
        }
        recertify(chain, blocks, h);
    }
}

fn remerkle(block: &mut CommittedBlock) {
    let hashes: Vec<Hash> = block.block.transactions.iter().map(|tx| tx.hash()).collect();
    block.block.header.tx_merkle_root = tx_merkle_root(&hashes);
}

fn total_transactions(chain: &Chain) -> u64 {
    chain
        .blocks
        .iter()
        .map(|block| block.block.transactions.len() as u64)
        .sum()
}

fn total_signatures(chain: &Chain) -> u64 {
    chain
        .blocks
        .iter()
        .flat_map(|block| &block.block.transactions)
        .map(|tx| tx.signatures.len() as u64)
        .sum()
}

#[test]
fn fast_and_strict_init_rebuild_the_fixture_state() {
    let chain = Chain::new(HEIGHT, 1);
    let kura = store_of(&chain.blocks);
    let transactions = total_transactions(&chain);
    assert_eq!(
        transactions,
        chain.blocks[0].block.transactions.len() as u64 + 2 * (HEIGHT - 1)
    );

    let mut seen = Vec::new();
    let mut progress = |applied: u64, target: u64| seen.push((applied, target));
    let (wsv, report) = fast_init(&kura, plugins(), Some(&mut progress)).expect("fast init");
    assert_same_state(&wsv, &chain.fixture.wsv);
    assert_eq!(report.mode, InitMode::Fast);
    assert_eq!((report.height, report.blocks), (HEIGHT, HEIGHT));
    assert_eq!(report.transactions, transactions);
    assert_eq!(report.rejected_transactions, 0);
    assert_eq!(report.signatures_verified, 0, "fast init verifies no signatures");
    assert_eq!(seen.last(), Some(&(HEIGHT, HEIGHT)));
    assert!(
        seen.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "progress moves forward: {seen:?}"
    );

    let (wsv, report) = strict_init(&kura, plugins(), None).expect("strict init");
    assert_same_state(&wsv, &chain.fixture.wsv);
    assert_eq!(report.mode, InitMode::Strict);
    assert_eq!((report.height, report.blocks), (HEIGHT, HEIGHT));
    assert_eq!(report.transactions, transactions);
    assert_eq!(report.rejected_transactions, 0);
    assert_eq!(report.signatures_verified, total_signatures(&chain));
    assert!(report.signatures_verified >= transactions);
}

#[test]
fn init_of_an_empty_store_is_empty() {
    let (kura, _) = Kura::open(MemoryBackend::new(), config()).expect("open");
    assert!(matches!(fast_init(&kura, plugins(), None), Err(InitError::Empty)));
    assert!(matches!(strict_init(&kura, plugins(), None), Err(InitError::Empty)));
}

#[test]
fn audit_compares_the_store_with_the_live_state() {
    let chain = Chain::new(HEIGHT, 1);
    let kura = store_of(&chain.blocks);
    let report = audit(&kura, &chain.fixture.wsv, plugins()).expect("audit of the same chain");
    assert_eq!((report.mode, report.height), (InitMode::Strict, HEIGHT));
    assert_eq!(report.signatures_verified, total_signatures(&chain));
    // The same with one worker, against a target (a node's background audit), and a target
    // whose commitment is another's.
    let target = AuditTarget {
        height: HEIGHT,
        head_hash: chain.fixture.wsv.head_hash(),
        state_commitment: chain.fixture.wsv.state_commitment(),
    };
    let report = audit_to(&kura, &target, plugins(), 1).expect("audit with one worker");
    assert_eq!(report.signatures_verified, total_signatures(&chain));
    let wrong = AuditTarget {
        state_commitment: kasane_model::Hash::of(b"another state"),
        ..target
    };
    assert!(matches!(
        audit_to(&kura, &wrong, plugins(), 1),
        Err(InitError::AuditMismatch {
            what: "state commitment",
            ..
        })
    ));

    // A live state one block behind the store: audited up to its height, and equal.
    let shorter = Chain::new(HEIGHT - 1, 1);
    assert!(
        shorter.blocks[..] == chain.blocks[..HEIGHT as usize - 1],
        "fixtures are deterministic"
    );
    let report = audit(&kura, &shorter.fixture.wsv, plugins()).expect("audit of a live state one block behind");
    assert_eq!(report.height, HEIGHT - 1);

    // The store one block behind the live state.
    let behind = store_of(&chain.blocks[..HEIGHT as usize - 1]);
    match audit(&behind, &chain.fixture.wsv, plugins()) {
        Err(InitError::StoreBehind { live, stored }) => assert_eq!((live, stored), (HEIGHT, HEIGHT - 1)),
        other => panic!("expected store behind, got {other:?}"),
    }

    // A live state of another chain at the same height.
    let other = Chain::new(HEIGHT, 2);
    assert_ne!(other.fixture.wsv.head_hash(), chain.fixture.wsv.head_hash());
    match audit(&kura, &other.fixture.wsv, plugins()) {
        Err(error @ InitError::AuditMismatch { .. }) => {
            assert_eq!(error.bad_height(), Some(HEIGHT));
            let InitError::AuditMismatch { what, stored, live, .. } = error else {
                unreachable!()
            };
            assert_eq!(what, "head hash");
            assert_eq!(
                (stored, live),
                (chain.fixture.wsv.head_hash(), other.fixture.wsv.head_hash())
            );
        }
        other => panic!("expected an audit mismatch, got {other:?}"),
    }
}

#[test]
fn a_flipped_transaction_signature_fails_strict_init_only() {
    let chain = Chain::new(HEIGHT, 1);
    for k in [2, 6, HEIGHT] {
        // As stored: the transaction hash covers the signatures, so the Merkle root catches it.
        let mut blocks = chain.blocks.clone();
        blocks[k as usize - 1].block.transactions[1].signatures[0].signature.0[5] ^= 0x04;
        let kura = store_of(&blocks);
        expect_bad(
            strict_init(&kura, plugins(), None),
            k,
            "Merkle root",
            &format!("flipped signature at {k}"),
        );
        // Fast init checks no signatures, but applying a block checks its Merkle root against
        // the transaction hashes, which cover the signatures.
        expect_bad(
            fast_init(&kura, plugins(), None),
            k,
            "Merkle root",
            &format!("fast, flipped signature at {k}"),
        );

        // With the Merkle root recomputed and the chain re-linked and re-certified from k on,
        // only the signature check is left to catch it.
        let mut blocks = chain.blocks.clone();
        blocks[k as usize - 1].block.transactions[1].signatures[0].signature.0[5] ^= 0x04;
        remerkle(&mut blocks[k as usize - 1]);
        relink_from(&chain, &mut blocks, k);
        let kura = store_of(&blocks);
        expect_bad(
            strict_init(&kura, plugins(), None),
            k,
            "transaction 1",
            &format!("re-merkled signature at {k}"),
        );
        let (wsv, report) = fast_init(&kura, plugins(), None).expect("fast init ignores signatures");
        assert_eq!(report.signatures_verified, 0);
        assert_eq!(wsv.height(), HEIGHT);
        assert_eq!(wsv.state_commitment(), chain.fixture.wsv.state_commitment());
        assert_eq!(wsv.head_hash(), blocks[HEIGHT as usize - 1].block.hash());
    }
}

#[test]
fn a_changed_previous_hash_fails_both_inits_at_its_height() {
    let chain = Chain::new(HEIGHT, 1);
    for k in [2, 6, HEIGHT] {
        for recertified in [false, true] {
            let mut blocks = chain.blocks.clone();
            blocks[k as usize - 1].block.header.previous_hash = Hash::of(b"another chain");
            if recertified {
                recertify(&chain, &mut blocks, k);
            }
            // Kura itself refuses such an append.
            let mut refusing = store_of(&blocks[..k as usize - 1]);
            match refusing.append(&blocks[k as usize - 1]) {
                Err(KuraError::WrongPrevious { height, .. }) => assert_eq!(height, k),
                other => panic!("expected a wrong previous hash, got {other:?}"),
            }
            let kura = store_of(&blocks);
            let what = format!("previous hash at {k}, recertified {recertified}");
            expect_bad(fast_init(&kura, plugins(), None), k, "previous hash", &what);
            let reason = if recertified {
                "previous hash"
            } else {
                "commit certificate"
            };
            expect_bad(strict_init(&kura, plugins(), None), k, reason, &what);
            assert_eq!(
                audit(&kura, &chain.fixture.wsv, plugins())
                    .map(|_| ())
                    .err()
                    .and_then(|e| e.bad_height()),
                Some(k)
            );
        }
    }
}

#[test]
fn a_block_stored_at_another_height_fails_at_that_height() {
    let chain = Chain::new(HEIGHT, 1);
    // Block 5 stored a second time, as height 6: its record is sound, its block says 5.
    let (mut kura, _) = Kura::open(MemoryBackend::new(), config()).expect("open");
    for block in &chain.blocks[..5] {
        kura.append(block).expect("append");
    }
    let head = kura.head_hash();
    let payload = codec::encode(&chain.blocks[4]);
    kura.append_encoded(6, &head, &Hash::of(b"sixth"), &payload)
        .expect("append");
    expect_bad(
        fast_init(&kura, plugins(), None),
        6,
        "block says height 5",
        "block 5 at 6",
    );
    expect_bad(
        strict_init(&kura, plugins(), None),
        6,
        "block says height 5",
        "block 5 at 6",
    );
}

#[test]
fn a_changed_state_commitment_fails_both_inits_at_its_height() {
    let chain = Chain::new(HEIGHT, 1);
    for k in [2, 6, HEIGHT] {
        for relinked in [false, true] {
            let mut blocks = chain.blocks.clone();
            blocks[k as usize - 1].block.header.state_commitment = Hash::of(b"another state");
            if relinked {
                relink_from(&chain, &mut blocks, k);
            }
            let kura = store_of(&blocks);
            let what = format!("state commitment at {k}, relinked {relinked}");
            expect_bad(fast_init(&kura, plugins(), None), k, "state commitment", &what);
            let reason = if relinked {
                "state commitment"
            } else {
                "commit certificate"
            };
            expect_bad(strict_init(&kura, plugins(), None), k, reason, &what);
        }
    }
}

#[test]
fn a_changed_amount_without_resigning_fails_at_its_height() {
    let chain = Chain::new(HEIGHT, 1);
    for k in [2, 6, HEIGHT] {
        for remerkled in [false, true] {
            let mut blocks = chain.blocks.clone();
            match &mut blocks[k as usize - 1].block.transactions[0].payload.instructions[0] {
                Instruction::Transfer { amount, .. } => *amount += 1,
                other => panic!("fixture transactions are transfers, got {other:?}"),
            }
            if remerkled {
                remerkle(&mut blocks[k as usize - 1]);
                relink_from(&chain, &mut blocks, k);
            }
            let kura = store_of(&blocks);
            let what = format!("amount at {k}, re-merkled {remerkled}");
            let reason = if remerkled { "transaction 0" } else { "Merkle root" };
            expect_bad(strict_init(&kura, plugins(), None), k, reason, &what);
            // Fast init catches the stale Merkle root, or else executes the altered transfer
            // and finds the state differs from the header's.
            let fast_reason = if remerkled { "state commitment" } else { "Merkle root" };
            expect_bad(fast_init(&kura, plugins(), None), k, fast_reason, &what);
        }
    }
}

#[test]
fn a_certificate_below_quorum_fails_strict_init_only() {
    let chain = Chain::new(HEIGHT, 1);
    for k in [1, 2, 6, HEIGHT] {
        let mut blocks = chain.blocks.clone();
        let removed = blocks[k as usize - 1].certificate.signatures.pop();
        assert!(removed.is_some());
        let kura = store_of(&blocks);
        let what = format!("certificate at {k}");
        expect_bad(strict_init(&kura, plugins(), None), k, "commit certificate", &what);
        match audit(&kura, &chain.fixture.wsv, plugins()) {
            Err(error) => assert_eq!(error.bad_height(), Some(k), "{what}: audit: {error}"),
            Ok(_) => panic!("{what}: audit passed"),
        }
        let (wsv, _) = fast_init(&kura, plugins(), None).expect("fast init ignores certificates");
        assert_same_state(&wsv, &chain.fixture.wsv);
    }
    // A certificate with a quorum but a damaged signature.
    let mut blocks = chain.blocks.clone();
    blocks[6].certificate.signatures[1].signature.0[0] ^= 0x01;
    expect_bad(
        strict_init(&store_of(&blocks), plugins(), None),
        7,
        "commit certificate",
        "bad vote signature",
    );
}

#[test]
fn a_record_damaged_after_open_fails_both_inits_at_its_height() {
    let chain = Chain::new(HEIGHT, 1);
    let kura = store_of(&chain.blocks);
    // Bit rot behind the open store's back, in the payload of block 6 (sealed chunk 1).
    let sound = image(kura.backend());
    let (chunk, six) = span_of(&sound, 6);
    let mut bytes = chunk_of(&sound, chunk).to_vec();
    flip_bit(&mut bytes, six.header_end() * 8 + 77);
    kura.backend().set_chunk_bytes(chunk, bytes);
    for result in [fast_init(&kura, plugins(), None), strict_init(&kura, plugins(), None)] {
        expect_bad(result, 6, "checksum", "payload bit rot at 6");
    }
}
