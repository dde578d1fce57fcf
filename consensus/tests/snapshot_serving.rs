//! Serving snapshots (docs/PROTOCOL.md section 8.1): a replica that committed the block binding
//! a checkpoint answers for that checkpoint with the checkpoint block's header, the chunk
//! hashes, the headers up to the binding block, its certificate and link, and with each chunk;
//! what it serves restores a state whose root the certified binding header names. Anything else
//! is answered "not held", never with a panic.

mod common;

use kasane_consensus::replica::{Outbound, Replica};
use kasane_consensus::{Config, Message, SnapshotManifest};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_kura::MemoryBackend;
use kasane_model::{KeyPair, SignedTransaction};
use kasane_wsv::snapshot::{binding_delay, checkpoint_commitment, chunk_hash, root_of, CHECKPOINT_INTERVAL};
use kasane_wsv::{PluginRegistry, Wsv};

/// A chain at `height`, and a replica that opened a store holding it.
fn replica_at(height: u64) -> (FixtureChain, Replica<MemoryBackend>) {
    let (chain, disk) = common::stored_chain(FixtureConfig {
        blocks: height - 1,
        transactions_per_block: 2,
        accounts: 16,
        validators: 4,
        seed: 11,
    });
    let replica = common::replica_on(KeyPair::derive(b"snapshot-serving", 0), Config::default(), disk);
    assert_eq!(replica.wsv().height(), height);
    (chain, replica)
}

/// The block that binds the first checkpoint.
fn binding_height() -> u64 {
    CHECKPOINT_INTERVAL + binding_delay(CHECKPOINT_INTERVAL)
}

/// A chain at the block that binds its first checkpoint, and a replica holding it.
fn replica_past_a_checkpoint() -> (FixtureChain, Replica<MemoryBackend>) {
    replica_at(binding_height())
}

/// The one message `replica` answers `asked` with.
fn answer(replica: &mut Replica<MemoryBackend>, asked: Message) -> Message {
    let peer = KeyPair::derive(b"snapshot-client", 0).public_key();
    let mut out = replica.on_message(0, peer, asked);
    assert_eq!(out.len(), 1, "{out:?}");
    match out.remove(0) {
        Outbound::Send { to, message } if to == peer => message,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_served_snapshot_restores_and_the_binding_block_proves_it() {
    let (chain, mut replica) = replica_past_a_checkpoint();
    let height = CHECKPOINT_INTERVAL;
    let Message::SnapshotManifest {
        height: answered,
        manifest:
            Some(SnapshotManifest {
                header,
                chunks,
                headers,
                certificate,
                link,
            }),
    } = answer(&mut replica, Message::SnapshotWanted { height })
    else {
        panic!("no manifest for the latest checkpoint");
    };
    assert_eq!(answered, height);
    assert_eq!(header.height, height);
    let mut bytes = Vec::new();
    for (index, hash) in chunks.iter().enumerate() {
        let Message::SnapshotChunk { bytes: Some(chunk), .. } = answer(
            &mut replica,
            Message::SnapshotChunkWanted {
                height,
                index: index as u32,
            },
        ) else {
            panic!("chunk {index} not served");
        };
        assert_eq!(chunk_hash(&chunk), *hash, "chunk {index} does not match the manifest");
        bytes.push(chunk);
    }

    // The client's side: the headers lead from the checkpoint to the binding block, whose
    // certified commitment is the root of the chunks bound to the link; the restored state then
    // executes the blocks up to it to the same state as the server's.
    let binding = replica.kura().read(binding_height()).unwrap();
    assert_eq!(headers.len() as u64, binding_delay(CHECKPOINT_INTERVAL));
    assert_eq!(headers.last(), Some(&binding.block.header));
    assert_eq!(certificate, binding.certificate);
    assert_eq!(headers[0].previous_hash, header.hash());
    assert_eq!(
        checkpoint_commitment(&link, &root_of(height, &chunks)),
        binding.block.header.state_commitment
    );
    let mut restored = Wsv::from_snapshot(
        chain.wsv.chain().clone(),
        chain.genesis_key.public_key(),
        PluginRegistry::builtin(),
        CHECKPOINT_INTERVAL,
        &header,
        &bytes,
    )
    .unwrap();
    for at in height + 1..=binding_height() {
        let next = replica.kura().read(at).unwrap();
        let hashes: Vec<_> = next.block.transactions.iter().map(SignedTransaction::hashes).collect();
        restored.apply_block(&next.block, &hashes).unwrap();
    }
    assert_eq!(restored.state_commitment(), replica.wsv().state_commitment());
    assert_eq!(restored.checkpoint_link(), Some(link));
    assert_eq!(restored.head_hash(), replica.wsv().head_hash());
}

#[test]
fn what_is_not_held_is_answered_as_such() {
    let (_, mut replica) = replica_past_a_checkpoint();
    for height in [0, 1, 99, 101, 108, 200, u64::MAX] {
        assert_eq!(
            answer(&mut replica, Message::SnapshotWanted { height }),
            Message::SnapshotManifest { height, manifest: None }
        );
        assert_eq!(
            answer(&mut replica, Message::SnapshotChunkWanted { height, index: 0 }),
            Message::SnapshotChunk {
                height,
                index: 0,
                bytes: None
            }
        );
    }
    let height = CHECKPOINT_INTERVAL;
    assert_eq!(
        answer(
            &mut replica,
            Message::SnapshotChunkWanted {
                height,
                index: u32::MAX
            }
        ),
        Message::SnapshotChunk {
            height,
            index: u32::MAX,
            bytes: None
        }
    );
    // Answers to requests nobody made are dropped (fetching is not built yet).
    let peer = KeyPair::derive(b"snapshot-client", 0).public_key();
    let unasked = Message::SnapshotChunk {
        height,
        index: 0,
        bytes: Some(vec![1, 2, 3]),
    };
    assert!(replica.on_message(0, peer, unasked).is_empty());
    assert_eq!(replica.wsv().height(), binding_height());
}

/// Between a checkpoint and the block that binds it, the checkpoint is being encoded and not
/// yet proven by any block: it is not served, and neither is the one before it, which the
/// replica never held.
#[test]
fn a_checkpoint_not_yet_bound_is_not_served() {
    let (_, mut replica) = replica_at(binding_height() - 1);
    assert!(replica.wsv().checkpoint().is_none());
    assert_eq!(
        answer(
            &mut replica,
            Message::SnapshotWanted {
                height: CHECKPOINT_INTERVAL
            }
        ),
        Message::SnapshotManifest {
            height: CHECKPOINT_INTERVAL,
            manifest: None
        }
    );
}
