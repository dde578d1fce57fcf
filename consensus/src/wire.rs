//! Proposals on the wire as digests (docs/PROTOCOL.md section 3, docs/NODE.md "Proposals
//! travel as digests").
//!
//! Every validator already holds almost every transaction of a proposal: they reach it by
//! gossip before the leader picks them. So a replica broadcasts its proposal as a
//! [`ProposalDigest`] (header and transaction hashes); a peer rebuilds the proposal from its own
//! queue ([`Replica::assemble`](crate::replica::Replica::assemble)), asks the sender once for
//! the transactions it lacks, and hands the consensus core the whole proposal, exactly as if it
//! had come in one piece. The replica driver runs this protocol, so the node and sim-net
//! exchange proposals the same way.
//!
//! Memory is bounded: one served proposal (this replica's last), and one digest waiting for
//! bodies per sender, so a peer that is not the leader cannot push the leader's digest out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kasane_model::{Hash, PublicKey, SignedTransaction};

use crate::message::{Message, Proposal, ProposalDigest};
use crate::replica::{PreparedHashes, PreparedTransaction};

/// The bodies of the last proposal this replica broadcast as a digest, for peers that lack
/// some.
#[derive(Debug)]
pub struct Served {
    block: Hash,
    transactions: Vec<SignedTransaction>,
    /// Transaction hash to index in `transactions`.
    index: HashMap<Hash, usize, ahash::RandomState>,
}

impl Served {
    /// The bodies asked for that belong to `block`, in the order asked; `None` when this replica
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

/// A digest waiting for the transactions this replica asked its sender for.
#[derive(Debug)]
pub struct Pending {
    pub block: Hash,
    pub digest: ProposalDigest,
    pub missing: Vec<Hash>,
}

/// The bodies and checks found for a digest, by transaction hash.
pub type Found = BTreeMap<Hash, (SignedTransaction, PreparedTransaction)>;

/// Counts of the wire protocol's work, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCounts {
    /// Proposals rebuilt from digests.
    pub rebuilt: u64,
    /// Digests that needed bodies fetched from their sender.
    pub fetches: u64,
    /// Digests given up because their sender did not send the bodies asked for.
    pub abandoned: u64,
}

/// The wire state of one replica.
#[derive(Debug, Default)]
pub struct Wire {
    served: Option<Served>,
    pending: BTreeMap<PublicKey, Pending>,
    pub counts: WireCounts,
}

impl Wire {
    /// The digest of `proposal`, given its transactions' hashes in block order (computed when
    /// they are not given or do not match), and keeps its bodies to answer for it.
    pub fn compact(&mut self, proposal: Box<Proposal>, hashes: Option<Vec<Hash>>) -> Message {
        let block = proposal.block.hash();
        let count = proposal.block.transactions.len();
        let hashes = hashes.filter(|hashes| hashes.len() == count).unwrap_or_else(|| {
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
        self.served = Some(Served {
            block,
            transactions: proposal.block.transactions,
            index,
        });
        Message::ProposalDigest(Box::new(digest))
    }

    /// The answer to a peer's [`Message::TransactionsWanted`], if this replica serves `block`.
    pub fn answer(&self, block: &Hash, wanted: &[Hash]) -> Option<Message> {
        let transactions = self.served.as_ref()?.answer(block, wanted)?;
        Some(Message::TransactionsFound {
            block: *block,
            transactions,
        })
    }

    /// Keeps `digest` from `from` until its missing bodies arrive (replacing only an earlier
    /// digest of the same sender), and gives the request to send.
    pub fn hold(&mut self, from: PublicKey, digest: ProposalDigest, missing: Vec<Hash>) -> Message {
        self.counts.fetches += 1;
        let block = digest.header.hash();
        let request = Message::TransactionsWanted {
            block,
            transactions: missing.clone(),
        };
        self.pending.insert(from, Pending { block, digest, missing });
        request
    }

    /// The digest `from` owes bodies for, when `block` is its block.
    pub fn take_pending(&mut self, from: &PublicKey, block: &Hash) -> Option<Pending> {
        match self.pending.get(from) {
            Some(pending) if pending.block == *block => self.pending.remove(from),
            _ => None,
        }
    }

    /// Drops the digests of senders that are no longer validators, and those of an earlier
    /// height (bounded by the validators either way).
    pub fn retain(&mut self, validators: &BTreeSet<PublicKey>, height: u64) {
        self.pending
            .retain(|sender, pending| validators.contains(sender) && pending.digest.height >= height);
    }
}

/// The transactions of a [`Message::TransactionsFound`] that were asked for, with what the
/// host computed for them (hashes computed here, signatures left unchecked, when it gave
/// nothing that matches).
pub fn found(transactions: Vec<SignedTransaction>, prepared: PreparedHashes, missing: &[Hash]) -> Found {
    let prepared: Vec<PreparedTransaction> = match prepared {
        PreparedHashes::Transactions(list) if list.len() == transactions.len() => list,
        _ => transactions
            .iter()
            .map(|transaction| PreparedTransaction {
                hashes: transaction.hashes(),
                signatures_verified: false,
                encoding: None,
            })
            .collect(),
    };
    let wanted: BTreeSet<&Hash> = missing.iter().collect();
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
    use kasane_kura::fixture::{FixtureChain, FixtureConfig};
    use kasane_model::KeyPair;

    fn transactions() -> Vec<SignedTransaction> {
        let mut chain = FixtureChain::new(FixtureConfig {
            blocks: 1,
            transactions_per_block: 3,
            accounts: 4,
            validators: 4,
            seed: 8,
        })
        .expect("fixture");
        chain.next_block().expect("block").0.block.transactions
    }

    #[test]
    fn found_keeps_only_what_was_asked_for_and_served_answers_only_its_block() {
        let transactions = transactions();
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

    #[test]
    fn a_digest_waits_per_sender_so_another_peer_cannot_push_it_out() {
        let digest = |height: u64, timestamp_ms: u64| ProposalDigest {
            height,
            view: 0,
            header: kasane_model::BlockHeader {
                height,
                previous_hash: Hash::ZERO,
                view: 0,
                proposer: KeyPair::derive(b"wire", 0).public_key(),
                tx_merkle_root: Hash::ZERO,
                state_commitment: Hash::ZERO,
                timestamp_ms,
                view_change_proof: None,
            },
            transactions: vec![Hash::of(b"tx")],
            justify: None,
            proof: Vec::new(),
        };
        let leader = KeyPair::derive(b"wire", 1).public_key();
        let other = KeyPair::derive(b"wire", 2).public_key();
        let mut wire = Wire::default();
        let leaders = digest(2, 1);
        let block = leaders.header.hash();
        wire.hold(leader, leaders, vec![Hash::of(b"tx")]);
        // Another validator's digest, even for the same height, does not replace the leader's.
        wire.hold(other, digest(2, 2), vec![Hash::of(b"tx")]);
        assert!(wire.take_pending(&other, &block).is_none());
        assert!(wire.take_pending(&leader, &block).is_some());
        assert!(wire.take_pending(&leader, &block).is_none(), "taken once");
        // Digests of senders that left the validator set, or of past heights, are dropped.
        wire.hold(leader, digest(2, 3), vec![]);
        wire.hold(other, digest(3, 4), vec![]);
        wire.retain(&[other].into(), 3);
        assert_eq!(wire.pending.len(), 1);
        assert_eq!(wire.counts.fetches, 4);
    }
}
