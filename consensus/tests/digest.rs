//! Proposals that travel as digests (docs/NODE.md): a replica rebuilds the proposal from its
//! queue, names exactly what it lacks, and takes the rest from what its host fetched.

mod common;

use kasane_consensus::message::{Proposal, ProposalDigest};
use kasane_consensus::replica::PreparedTransaction;
use kasane_consensus::Config;
use kasane_kura::fixture::{FixtureChain, FixtureConfig};
use kasane_model::{Hash, SignedTransaction};

#[test]
fn a_digest_is_rebuilt_from_the_queue_and_what_was_fetched() {
    let mut chain = FixtureChain::new(FixtureConfig {
        blocks: 1,
        transactions_per_block: 8,
        accounts: 16,
        validators: 4,
        seed: 5,
    })
    .unwrap();
    let (committed, _) = chain.next_block().unwrap();
    let block = committed.block;
    let now_ms = block.header.timestamp_ms;

    let mut replica = common::replica_at_genesis(&chain, b"digest-tests", Config::default());
    // Six of the eight transactions reached this replica by gossip.
    let (admitted, _) = replica.submit(now_ms, block.transactions[..6].to_vec());
    assert!(admitted.iter().all(Result::is_ok), "{admitted:?}");

    let hashes: Vec<Hash> = block
        .transactions
        .iter()
        .map(|transaction| transaction.hashes().transaction)
        .collect();
    let proposal = Proposal {
        height: block.header.height,
        view: 0,
        block: block.clone(),
        justify: None,
        proof: Vec::new(),
    };
    let digest = ProposalDigest::of(&proposal, hashes.clone());

    let (digest, missing) = replica.assemble(digest, &Default::default()).unwrap_err();
    assert_eq!(missing, hashes[6..]);

    // The fetched two: one whose signatures the host verified, one it could not vouch for.
    let found = block.transactions[6..]
        .iter()
        .zip([true, false])
        .map(|(transaction, signatures_verified): (&SignedTransaction, bool)| {
            let prepared = PreparedTransaction {
                hashes: transaction.hashes(),
                signatures_verified,
                encoding: None,
            };
            (prepared.hashes.transaction, (transaction.clone(), prepared))
        })
        .collect();
    let (rebuilt, prepared) = replica.assemble(digest.clone(), &found).unwrap();
    assert_eq!(rebuilt, proposal);
    assert_eq!(prepared.hash, block.hash());
    assert_eq!(
        prepared
            .transactions
            .iter()
            .map(|hashes| hashes.transaction)
            .collect::<Vec<Hash>>(),
        hashes
    );
    assert!(
        !prepared.signatures_verified,
        "one fetched transaction was not vouched for"
    );

    let mut all_verified = found;
    for (_, prepared) in all_verified.values_mut() {
        prepared.signatures_verified = true;
    }
    let (_, prepared) = replica.assemble(digest, &all_verified).unwrap();
    assert!(prepared.signatures_verified);
}
