//! The verifier stages: signature checks off the consensus task.
//!
//! A verifier stage per traffic class takes the class's messages in arrival order, hashes the
//! transactions they carry and checks their signatures in batches on tokio's blocking pool, then
//! hands each message to the consensus task with what it found ([`PreparedHashes`]): the replica
//! reuses the hashes and skips its own check of every signature the stage vouched for. The API
//! checks client batches the same way ([`preverify_transactions`]).

use kasane_consensus::replica::{PreparedBlock, PreparedHashes, PreparedTransaction};
use kasane_consensus::Message;
use kasane_model::crypto::{verify_batch, KeyCache, SignedMessage};
use kasane_model::transaction::{SigningMessages, TransactionHashes};
use kasane_model::{PublicKey, SignedTransaction};
use kasane_plasma::ledger::InputSignature;
use tokio::sync::mpsc;

use super::runtime::Prepared;

/// Most transactions whose signatures a verifier stage checks in one batch: batches amortise
/// (docs/BENCHMARKS.md), so a stage drains what is waiting, up to this, before checking.
const VERIFY_BATCH_TRANSACTIONS: usize = 1024;

/// The transaction lists a message carries, each with whether a verifier stage checks its
/// signatures: a proposal's block and a gossip batch are checked; the blocks of a sync response
/// come with commit certificates, and the replica checks their signatures itself only when the
/// certified-block rule is off (R19), so they are only hashed.
fn checked_lists(message: &Message) -> Vec<(&[SignedTransaction], bool)> {
    match message {
        Message::Proposal(proposal) => vec![(&proposal.block.transactions, true)],
        Message::Transactions(transactions) | Message::TransactionsFound { transactions, .. } => {
            vec![(transactions, true)]
        }
        Message::BlockSyncResponse { blocks } => blocks
            .iter()
            .map(|block| (&block.block.transactions[..], false))
            .collect(),
        _ => Vec::new(),
    }
}

fn hash_all(transactions: &[SignedTransaction]) -> Vec<TransactionHashes> {
    transactions.iter().map(SignedTransaction::hashes).collect()
}

/// [`hash_all`], keeping the encodings the hashing made: the hold log writes queued
/// transactions as they are (docs/NODE.md, "Durability").
fn hash_and_encode_all(transactions: &[SignedTransaction]) -> (Vec<TransactionHashes>, Vec<Vec<u8>>) {
    transactions.iter().map(SignedTransaction::hashes_and_encoding).unzip()
}

/// Checks the signatures of `transactions` (with their hashes) into `cache`, skipping what it
/// already verified: one batch for all; when it fails, one batch per transaction, so the good
/// ones still count. Returns, per transaction, whether all its signatures verified; bad ones are
/// left for the replica to judge.
fn verify_signatures<'a>(
    cache: &mut KeyCache,
    transactions: impl Iterator<Item = (&'a SignedTransaction, &'a TransactionHashes)>,
) -> Vec<bool> {
    let signing: Vec<(&SignedTransaction, SigningMessages)> = transactions
        .map(|(transaction, hashes)| (transaction, SigningMessages::for_payload_hash(&hashes.payload)))
        .collect();
    let items: Vec<SignedMessage> = signing
        .iter()
        .flat_map(|(transaction, messages)| messages.items(transaction))
        .collect();
    preverify_plasma(cache, signing.iter().map(|(transaction, _)| *transaction));
    if verify_batch(cache, &items).is_ok() {
        return vec![true; signing.len()];
    }
    signing
        .iter()
        .map(|(transaction, messages)| {
            let items: Vec<SignedMessage> = messages.items(transaction).collect();
            verify_batch(cache, &items).is_ok()
        })
        .collect()
}

/// Checks the input signatures of the plasma transfers among `transactions` into `cache`, in
/// one batch (per transaction when the batch fails), so the plasma plugin finds them verified
/// (docs/PLASMA.md). A signature that fails is left for the plugin, which rejects its
/// transaction; this only moves work off the consensus task and into batches.
fn preverify_plasma<'a>(cache: &mut KeyCache, transactions: impl Iterator<Item = &'a SignedTransaction>) {
    let per_transaction: Vec<Vec<(kasane_model::Hash, InputSignature)>> = transactions
        .map(kasane_plasma::chain::input_signatures)
        .filter(|found| !found.is_empty())
        .collect();
    let items = |found: &'_ [(kasane_model::Hash, InputSignature)]| -> Vec<(PublicKey, kasane_model::Hash, kasane_model::Signature)> {
        found.iter().map(|(hash, signed)| (signed.key, *hash, signed.signature)).collect()
    };
    let check = |cache: &mut KeyCache, owned: &[(PublicKey, kasane_model::Hash, kasane_model::Signature)]| {
        let batch: Vec<SignedMessage> = owned
            .iter()
            .map(|(key, hash, signature)| SignedMessage {
                key,
                message: hash.as_bytes(),
                signature,
            })
            .collect();
        verify_batch(cache, &batch).is_ok()
    };
    let all: Vec<_> = per_transaction.iter().flat_map(|found| items(found)).collect();
    if all.is_empty() || check(cache, &all) {
        return;
    }
    for found in &per_transaction {
        check(cache, &items(found));
    }
}

/// Hashes the transactions of several messages and checks the signatures of their proposals'
/// and gossip batches' transactions in one batch into `cache` (the replica's, shared). A block
/// of a sync response is not checked here (R19: the replica checks its signatures itself only
/// when the certified-block rule is off).
pub fn preverify(cache: &mut KeyCache, messages: &[Message]) -> Vec<PreparedHashes> {
    // Gossip goes into the queue and the hold log: its encodings are kept.
    let mut encodings: Vec<Option<Vec<Vec<u8>>>> = Vec::with_capacity(messages.len());
    let hashes: Vec<Vec<Vec<TransactionHashes>>> = messages
        .iter()
        .map(|message| match message {
            Message::Transactions(list) => {
                let (hashes, encoded) = hash_and_encode_all(list);
                encodings.push(Some(encoded));
                vec![hashes]
            }
            _ => {
                encodings.push(None);
                checked_lists(message).iter().map(|(list, _)| hash_all(list)).collect()
            }
        })
        .collect();
    let pairs = messages.iter().zip(&hashes).flat_map(|(message, lists)| {
        checked_lists(message)
            .into_iter()
            .zip(lists)
            .filter(|((_, checked), _)| *checked)
            .flat_map(|((transactions, _), hashes)| transactions.iter().zip(hashes))
    });
    let mut verified = verify_signatures(cache, pairs).into_iter();
    messages
        .iter()
        .zip(hashes)
        .zip(encodings)
        .map(|((message, lists), encodings)| {
            let mut lists = checked_lists(message)
                .into_iter()
                .zip(lists)
                .map(|((_, checked), hashes)| {
                    let flags: Vec<bool> = if checked {
                        verified.by_ref().take(hashes.len()).collect()
                    } else {
                        vec![false; hashes.len()]
                    };
                    (hashes, flags)
                });
            match message {
                Message::Transactions(_) | Message::TransactionsFound { .. } => {
                    lists.next().map_or(PreparedHashes::None, |(hashes, flags)| {
                        PreparedHashes::Transactions(prepared_transactions(hashes, flags, encodings))
                    })
                }
                Message::Proposal(proposal) => {
                    PreparedHashes::Blocks(block_hashes([&proposal.block].into_iter(), lists))
                }
                Message::BlockSyncResponse { blocks } => {
                    PreparedHashes::Blocks(block_hashes(blocks.iter().map(|block| &block.block), lists))
                }
                _ => PreparedHashes::None,
            }
        })
        .collect()
}

fn prepared_transactions(
    hashes: Vec<TransactionHashes>,
    verified: Vec<bool>,
    encodings: Option<Vec<Vec<u8>>>,
) -> Vec<PreparedTransaction> {
    let mut encodings = encodings.map(Vec::into_iter);
    hashes
        .into_iter()
        .zip(verified)
        .map(|(hashes, signatures_verified)| PreparedTransaction {
            hashes,
            signatures_verified,
            encoding: encodings.as_mut().and_then(Iterator::next),
        })
        .collect()
}

fn block_hashes<'a>(
    blocks: impl Iterator<Item = &'a kasane_model::Block>,
    lists: impl Iterator<Item = (Vec<TransactionHashes>, Vec<bool>)>,
) -> Vec<PreparedBlock> {
    blocks
        .zip(lists)
        .map(|(block, (transactions, verified))| PreparedBlock {
            hash: block.hash(),
            signatures_verified: verified.iter().all(|ok| *ok),
            transactions,
        })
        .collect()
}

/// Hashes client transactions and checks their signatures (see `verify_signatures`).
pub fn preverify_transactions(cache: &mut KeyCache, transactions: &[SignedTransaction]) -> Vec<PreparedTransaction> {
    let (hashes, encodings) = hash_and_encode_all(transactions);
    let verified = verify_signatures(cache, transactions.iter().zip(&hashes));
    prepared_transactions(hashes, verified, Some(encodings))
}

fn carries_signatures(message: &Message) -> bool {
    matches!(
        message,
        Message::Proposal(_)
            | Message::BlockSyncResponse { .. }
            | Message::Transactions(_)
            | Message::TransactionsFound { .. }
    )
}

fn transaction_count(message: &Message) -> usize {
    checked_lists(message)
        .iter()
        .filter(|(_, checked)| *checked)
        .map(|(list, _)| list.len())
        .sum()
}

/// How far below the cluster height a node checks transaction gossip. Tighter than the API's
/// [`super::api::CATCHING_UP_BLOCKS`]: a node a few blocks behind reaches the tip in a second or
/// two, by when the cluster has committed what was gossiped now, and checking it took a quarter
/// of a restored node's processor while it executed its last blocks (docs/TESTNET.md).
pub const GOSSIP_CHECKED_WITHIN_BLOCKS: u64 = 5;

/// Whether a message is gossip a node that is catching up drops unchecked: transactions it
/// could neither propose nor judge against an old state, which the cluster commits meanwhile.
/// Their senders count other holders (R18a); answers to a digest it asked for still go through.
fn dropped_while_catching_up(status: &super::state::Status, message: &Message) -> bool {
    status.cluster_height > status.height + GOSSIP_CHECKED_WITHIN_BLOCKS && matches!(message, Message::Transactions(_))
}

/// The verifier stage of one traffic class: in order, so the replica sees a class's messages in
/// the order they arrived. It takes what is waiting (up to `VERIFY_BATCH_TRANSACTIONS`) and
/// checks it in one batch on the blocking pool. With `gossip` (the gossip class), transaction
/// gossip is dropped before any work while the node is more than
/// [`GOSSIP_CHECKED_WITHIN_BLOCKS`] below the cluster height (counted in
/// `kasane_gossip_dropped_catching_up_total`): a wiped node spent a quarter of its processor
/// checking signatures of transactions committed before it could use them.
pub async fn verifier(
    mut inbound: mpsc::Receiver<(PublicKey, Message)>,
    out: mpsc::Sender<Prepared>,
    cache: KeyCache,
    gossip: Option<std::sync::Arc<super::runtime::Shared>>,
) {
    while let Some(first) = inbound.recv().await {
        if let Some(shared) = &gossip {
            let dropped = dropped_while_catching_up(&shared.status.borrow(), &first.1);
            if dropped {
                super::state::Metrics::add(&shared.metrics.gossip_dropped_catching_up, 1);
                continue;
            }
        }
        let mut transactions = transaction_count(&first.1);
        let mut group = vec![first];
        while transactions < VERIFY_BATCH_TRANSACTIONS {
            match inbound.try_recv() {
                Ok(next) => {
                    transactions += transaction_count(&next.1);
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let (senders, messages): (Vec<PublicKey>, Vec<Message>) = group.into_iter().unzip();
        let (messages, hashes) = if messages.iter().any(carries_signatures) {
            let mut cache = cache.clone();
            match tokio::task::spawn_blocking(move || {
                let hashes = preverify(&mut cache, &messages);
                (messages, hashes)
            })
            .await
            {
                Ok(done) => done,
                Err(_) => continue,
            }
        } else {
            let none = messages.iter().map(|_| PreparedHashes::None).collect();
            (messages, none)
        };
        for ((from, message), hashes) in senders.into_iter().zip(messages).zip(hashes) {
            if out.send(Prepared { from, message, hashes }).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kasane_consensus::message::Proposal;
    use kasane_model::{Block, BlockHeader, Hash, KeyPair};

    use super::*;
    use kasane_harness::transfer;

    fn transfers() -> Vec<SignedTransaction> {
        let chain = "verifier-tests".parse().expect("chain id");
        let mut transactions: Vec<SignedTransaction> = (0..3)
            .map(|index| transfer(&chain, index, index + 1, 1, 0, 1_000))
            .collect();
        // The middle one's signature is over another message.
        transactions[1].signatures[0].signature = transactions[0].signatures[0].signature;
        transactions
    }

    fn proposal(transactions: Vec<SignedTransaction>) -> Message {
        let key = KeyPair::derive(b"verifier-tests", 0);
        Message::Proposal(Box::new(Proposal {
            height: 2,
            view: 0,
            block: Block {
                header: BlockHeader {
                    height: 2,
                    previous_hash: Hash::ZERO,
                    view: 0,
                    proposer: key.public_key(),
                    tx_merkle_root: Hash::ZERO,
                    state_commitment: Hash::ZERO,
                    timestamp_ms: 0,
                    view_change_proof: None,
                },
                transactions,
            },
            justify: None,
            proof: Vec::new(),
        }))
    }

    #[test]
    fn gossip_is_dropped_only_while_catching_up() {
        let mut status = crate::state::Status {
            chain: String::new(),
            public_key: String::new(),
            height: 100,
            head_hash: String::new(),
            view: 0,
            role: String::new(),
            leader: String::new(),
            queue_len: 0,
            validators: 4,
            transactions: 0,
            cluster_height: 100 + GOSSIP_CHECKED_WITHIN_BLOCKS,
            replay_entries: 0,
            holding: 0,
            store_base: None,
            store_lower_height: 100,
        };
        let gossip = Message::Transactions(transfers());
        let answer = Message::TransactionsFound {
            block: Hash([0; 32]),
            transactions: transfers(),
        };
        assert!(!dropped_while_catching_up(&status, &gossip), "within the bound: kept");
        status.cluster_height += 1;
        assert!(dropped_while_catching_up(&status, &gossip));
        assert!(
            !dropped_while_catching_up(&status, &answer),
            "an answer it asked for is kept"
        );
    }

    /// The replica skips its own signature checks on what the stage vouches for, so a flag
    /// must be true only for a transaction whose every signature verified.
    #[test]
    fn the_stage_vouches_only_for_signatures_that_verified() {
        let transactions = transfers();
        let mut cache = KeyCache::new();
        let prepared = preverify_transactions(&mut cache, &transactions);
        let flags: Vec<bool> = prepared.iter().map(|one| one.signatures_verified).collect();
        assert_eq!(flags, [true, false, true]);
        assert_eq!(prepared[2].hashes, transactions[2].hashes());

        let messages = vec![
            Message::Transactions(transactions.clone()),
            proposal(transactions.clone()),
            proposal(vec![transactions[0].clone(), transactions[2].clone()]),
        ];
        let prepared = preverify(&mut KeyCache::new(), &messages);
        match &prepared[0] {
            PreparedHashes::Transactions(list) => {
                let flags: Vec<bool> = list.iter().map(|one| one.signatures_verified).collect();
                assert_eq!(flags, [true, false, true]);
            }
            other => panic!("expected transactions, got {other:?}"),
        }
        for (index, expected) in [(1, false), (2, true)] {
            match &prepared[index] {
                PreparedHashes::Blocks(blocks) => {
                    assert_eq!(blocks.len(), 1);
                    assert_eq!(blocks[0].signatures_verified, expected);
                    let Message::Proposal(proposal) = &messages[index] else {
                        unreachable!()
                    };
                    assert_eq!(blocks[0].hash, proposal.block.hash());
                    assert_eq!(blocks[0].transactions.len(), proposal.block.transactions.len());
                }
                other => panic!("expected a block, got {other:?}"),
            }
        }
    }

    /// Plasma input signatures are checked into the shared memory with the transactions'
    /// own: a good one is then found verified (what the plugin relies on), a bad one is not,
    /// and a bad one does not stop the others of the same request from being remembered.
    #[test]
    fn plasma_input_signatures_are_checked_in_batches_into_the_memory() {
        use kasane_model::crypto::verify_one;
        use kasane_plasma::chain::L2Call;
        use kasane_plasma::ledger::{Output, PlasmaTx, Position};

        let chain = "verifier-tests".parse().expect("chain id");
        let owner = KeyPair::derive(b"verifier-tests", 7);
        let sender = kasane_harness::test_account(0).1;
        let plasma_tx = |number: u64| {
            PlasmaTx::sign(
                vec![Position::Deposit { number }],
                vec![Output {
                    owner: owner.public_key(),
                    asset: "coin#test".parse().expect("asset"),
                    amount: 5,
                }],
                &[&owner],
            )
        };
        let envelope = |tx: &PlasmaTx| {
            let mut payload = transfer(&chain, 0, 1, 1, 0, 1_000).payload;
            payload.instructions = vec![L2Call::Transfer(tx.clone()).instruction()];
            SignedTransaction::sign(payload, &[&sender])
        };
        let good_tx = plasma_tx(0);
        // The second transfer's signature claims a key that did not make it.
        let mut bad_tx = plasma_tx(1);
        bad_tx.signatures[0].key = KeyPair::derive(b"verifier-tests", 8).public_key();
        let (good, bad) = (envelope(&good_tx), envelope(&bad_tx));

        let cache = KeyCache::new();
        let before = cache.verified_len();
        let prepared = preverify_transactions(&mut cache.clone(), &[good, bad]);
        assert!(
            prepared.iter().all(|one| one.signatures_verified),
            "the envelopes are sound"
        );
        // Two envelope signatures and one plasma signature were remembered.
        assert_eq!(cache.verified_len(), before + 3);
        let (hash, signatures) = good_tx.signed_messages();
        let mut fresh = cache.clone();
        assert!(verify_one(
            &mut fresh,
            &owner.public_key(),
            hash.as_bytes(),
            &signatures[0].signature
        )
        .is_ok());
    }
}
