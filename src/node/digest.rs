//! Proposals on the wire as digests (docs/NODE.md, "Proposals travel as digests").
//!
//! Every validator already holds almost every transaction of a proposal: they reach it by
//! gossip before the leader picks them. So a node broadcasts its proposal as a
//! [`ProposalDigest`] (header and transaction hashes); a peer rebuilds the proposal from its own
//! queue ([`Replica::assemble`](kasane_consensus::replica::Replica::assemble)), asks the sender
//! once for the transactions it lacks, and hands the consensus core the whole proposal, exactly
//! as if it had come in one piece. Each peer then skips decoding, hashing and looking up the
//! signatures of a block's worth of transactions it already checked, and the leader stops
//! sending every body to every peer a second time.

use std::collections::{BTreeMap, HashMap};

use kasane_consensus::message::{Proposal, ProposalDigest};
use kasane_consensus::replica::{PreparedHashes, PreparedTransaction};
use kasane_consensus::Message;
use kasane_model::{Hash, PublicKey, SignedTransaction};

use super::runtime::NodeReplica;

/// The bodies of the last proposal this node broadcast as a digest, for peers that lack some.
#[derive(Debug)]
pub struct Served {
    block: Hash,
    transactions: Vec<SignedTransaction>,
    /// Transaction hash to index in `transactions`.
    index: HashMap<Hash, usize, ahash::RandomState>,
}

impl Served {
    /// The bodies asked for that belong to `block`, in the order asked; `None` when this node
    /// no longer serves that block (the asker's view timer will move on).
    pub fn answer(&self, block: &Hash, wanted: &[Hash]) -> Option<Vec<SignedTransaction>> {
        if *block != self.block {
            return None;
        }
        Some(
            wanted
                .iter()
                .filter_map(|hash| self.index.get(hash))
                .map(|&index| self.transactions[index].clone())
                .collect(),
        )
    }
}

/// A digest waiting for the transactions this node asked its sender for.
#[derive(Debug)]
pub struct Pending {
    pub from: PublicKey,
    pub block: Hash,
    pub digest: ProposalDigest,
    pub missing: Vec<Hash>,
}

/// The bodies and checks found for a digest, by transaction hash.
pub type Found = BTreeMap<Hash, (SignedTransaction, PreparedTransaction)>;

/// The digest of a proposal this node broadcasts, and what it keeps to answer for it. The
/// transaction hashes come from the replica, which computed them when it built or validated the
/// block, or are computed here.
pub fn compact(replica: &NodeReplica, proposal: Box<Proposal>) -> (Message, Served) {
    let block = proposal.block.hash();
    let count = proposal.block.transactions.len();
    let hashes = replica
        .block_transaction_hashes(&block)
        .filter(|hashes| hashes.len() == count)
        .unwrap_or_else(|| {
            proposal
                .block
                .transactions
                .iter()
                .map(|transaction| transaction.hashes().transaction)
                .collect()
        });
    let digest = ProposalDigest::of(&proposal, hashes.clone());
    let index = hashes
        .into_iter()
        .enumerate()
        .map(|(index, hash)| (hash, index))
        .collect();
    let served = Served {
        block,
        transactions: proposal.block.transactions,
        index,
    };
    (Message::ProposalDigest(Box::new(digest)), served)
}

/// The transactions of a [`Message::TransactionsFound`] that were asked for, with what the
/// verifier stage computed for them (hashes computed here, signatures left unchecked, when the
/// stage gave nothing that matches).
pub fn found(transactions: Vec<SignedTransaction>, prepared: PreparedHashes, missing: &[Hash]) -> Found {
    let prepared: Vec<PreparedTransaction> = match prepared {
        PreparedHashes::Transactions(list) if list.len() == transactions.len() => list,
        _ => transactions
            .iter()
            .map(|transaction| PreparedTransaction {
                hashes: transaction.hashes(),
                signatures_verified: false,
            })
            .collect(),
    };
    let wanted: std::collections::BTreeSet<&Hash> = missing.iter().collect();
    transactions
        .into_iter()
        .zip(prepared)
        .filter(|(_, prepared)| wanted.contains(&prepared.hashes.transaction))
        .map(|(transaction, prepared)| (prepared.hashes.transaction, (transaction, prepared)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::transfer;

    #[test]
    fn found_keeps_only_what_was_asked_for_and_served_answers_only_its_block() {
        let chain = "digest-tests".parse().expect("chain id");
        let transactions: Vec<SignedTransaction> = (0..3)
            .map(|index| transfer(&chain, index, index + 1, 1, 0, 1_000))
            .collect();
        let hashes: Vec<Hash> = transactions.iter().map(|tx| tx.hashes().transaction).collect();

        let kept = found(transactions.clone(), PreparedHashes::None, &[hashes[2], hashes[0]]);
        assert_eq!(kept.len(), 2);
        assert!(kept.contains_key(&hashes[0]) && kept.contains_key(&hashes[2]));
        assert!(kept.values().all(|(_, prepared)| !prepared.signatures_verified));

        let served = Served {
            block: Hash::of(b"block"),
            transactions: transactions.clone(),
            index: hashes.iter().enumerate().map(|(index, hash)| (*hash, index)).collect(),
        };
        assert_eq!(
            served.answer(&Hash::of(b"block"), &[hashes[1], Hash::ZERO]),
            Some(vec![transactions[1].clone()])
        );
        assert_eq!(served.answer(&Hash::of(b"other"), &[hashes[1]]), None);
    }
}
