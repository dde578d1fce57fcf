//! The certified-block rule (R19, docs/PROTOCOL.md section 8): a block that arrives by block sync
//! is committed on its commit certificate after its chain, Merkle root and state commitment are
//! checked; its transaction signatures are verified again only when the rule is off.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use kasane_consensus::{Config, Message};
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_model::block::{quorum, tx_merkle_root, BlockHeader, Certificate};
use kasane_model::transaction::TransactionHashes;
use kasane_model::{Block, CommittedBlock, Hash, KeyPair, SignedTransaction};

/// A chain of genesis and one certified block, and a copy of that block whose first
/// transaction signature is broken, re-executed and certified again by the same quorum.
fn chains() -> (FixtureChain, CommittedBlock, CommittedBlock) {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block: 8,
        accounts: 16,
        validators: 4,
        seed: 3,
    })
    .unwrap();
    let mut at_genesis = chain.wsv.clone();
    let (genuine, _) = chain.next_block().unwrap();

    let mut transactions: Vec<SignedTransaction> = genuine.block.transactions.clone();
    transactions[0].signatures[0].signature.0[5] ^= 0x20;
    let hashes: Vec<TransactionHashes> = transactions.iter().map(SignedTransaction::hashes).collect();
    let header = &genuine.block.header;
    let executed = at_genesis
        .execute(header.height, header.timestamp_ms, &transactions, &hashes)
        .unwrap();
    let block = Block {
        header: BlockHeader {
            tx_merkle_root: tx_merkle_root(&hashes.iter().map(|hash| hash.transaction).collect::<Vec<Hash>>()),
            state_commitment: executed.state_commitment,
            ..header.clone()
        },
        transactions,
    };
    let signers: Vec<&KeyPair> = chain.validators.iter().take(quorum(chain.validators.len())).collect();
    let certificate = Certificate::sign(CommittedBlock::expected_vote_for(&block), &signers);
    at_genesis.commit(executed, block.hash(), block.header.view);
    (chain, genuine, CommittedBlock { block, certificate })
}

/// A replica holding only genesis, told by a validator that the chain is longer, then sent
/// `block` by that validator. Returns the replica's height afterwards.
fn sync_one(chain: &FixtureChain, block: &CommittedBlock, skip_signatures: bool) -> u64 {
    let config = Config {
        certified_blocks_skip_signatures: skip_signatures,
        ..Config::default()
    };
    let mut replica = common::replica_at_genesis(chain, b"certified-sync", config);
    let peer = chain.validators[0].public_key();
    let now = block.block.header.timestamp_ms + 1_000;
    replica.on_message(
        now,
        peer,
        Message::Status {
            height: 3,
            head_hash: Hash::of(b"a later head"),
        },
    );
    replica.on_message(
        now,
        peer,
        Message::BlockSyncResponse {
            blocks: vec![block.clone()],
        },
    );
    replica.wsv().height()
}

#[test]
fn a_synced_block_is_committed_on_its_certificate() {
    let (chain, genuine, _) = chains();
    assert_eq!(sync_one(&chain, &genuine, true), 2);
    assert_eq!(sync_one(&chain, &genuine, false), 2);
}

#[test]
fn signatures_of_synced_blocks_are_checked_only_with_the_rule_off() {
    let (chain, _, tampered) = chains();
    // Only f + 1 Byzantine validators could certify such a block (beyond the fault model); with
    // the rule on the receiver trusts the certificate, with it off it finds the bad signature.
    assert_eq!(sync_one(&chain, &tampered, true), 2);
    assert_eq!(sync_one(&chain, &tampered, false), 1);
}

#[test]
fn a_synced_block_without_a_quorum_certificate_is_refused_either_way() {
    let (chain, genuine, _) = chains();
    let mut forged = genuine.clone();
    forged
        .certificate
        .signatures
        .truncate(quorum(chain.validators.len()) - 1);
    assert_eq!(sync_one(&chain, &forged, true), 1);
    assert_eq!(sync_one(&chain, &forged, false), 1);
    // A block whose transactions were changed after certification no longer matches its
    // Merkle root.
    let mut altered = genuine.clone();
    altered.block.transactions.pop();
    assert_eq!(sync_one(&chain, &altered, true), 1);
}

/// The height a node tells clients it is catching up to: what f + 1 validators claim, so one
/// peer claiming a far height (n = 4, f = 1) moves nothing, and non-validators never count.
#[test]
fn the_cluster_height_needs_f_plus_one_validators() {
    let (chain, _, _) = chains();
    let mut replica = common::replica_at_genesis(&chain, b"cluster-height", Config::default());
    let status = |height: u64| Message::Status {
        height,
        head_hash: Hash::of(b"a later head"),
    };
    let now = chain.genesis.block.header.timestamp_ms + 1_000;
    assert_eq!(replica.core().cluster_height(), 0);
    replica.on_message(now, chain.validators[0].public_key(), status(1_000_000));
    assert_eq!(replica.core().cluster_height(), 0, "one liar alone");
    replica.on_message(now, KeyPair::derive(b"outsider", 0).public_key(), status(900));
    assert_eq!(replica.core().cluster_height(), 0, "an outsider does not count");
    replica.on_message(now, chain.validators[1].public_key(), status(40));
    assert_eq!(replica.core().cluster_height(), 40);
    replica.on_message(now, chain.validators[2].public_key(), status(50));
    assert_eq!(replica.core().cluster_height(), 50);
}
