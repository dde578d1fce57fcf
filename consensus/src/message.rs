//! Consensus messages (docs/PROTOCOL.md section 3).

pub use kasane_model::block::view_change_message;
use kasane_model::block::{Certificate, ValidatorSignature, ViewChangeProof, Vote};
use kasane_model::codec::Versioned;
use kasane_model::crypto::{verify_one, KeyCache, SignatureError};
use kasane_model::{Block, BlockHeader, CommittedBlock, Hash, KeyPair, SignedTransaction};
use serde::{Deserialize, Serialize};

/// Largest encoded consensus message.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024 + 64 * 1024;
/// Most blocks in one block-sync response: one chunk.
pub const SYNC_BLOCKS_MAX: u64 = 100;
/// Most transactions in one gossip message.
pub const GOSSIP_TRANSACTIONS_MAX: usize = 4096;

/// A vote and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    pub vote: Vote,
    pub signature: ValidatorSignature,
}

impl SignedVote {
    pub fn new(vote: Vote, key: &KeyPair) -> SignedVote {
        SignedVote {
            vote,
            signature: vote.sign(key),
        }
    }

    pub fn verify(&self, cache: &mut KeyCache) -> Result<(), SignatureError> {
        verify_one(
            cache,
            &self.signature.validator,
            &self.vote.signing_message(),
            &self.signature.signature,
        )
    }
}

/// "I suspect the view below `view` at `height`" (R13), with the sender's highest prepare
/// certificate for the height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChangeVote {
    pub height: u64,
    pub view: u64,
    pub highest: Option<Certificate>,
    pub signature: ValidatorSignature,
}

impl ViewChangeVote {
    pub fn new(height: u64, view: u64, highest: Option<Certificate>, key: &KeyPair) -> ViewChangeVote {
        ViewChangeVote {
            height,
            view,
            highest,
            signature: ValidatorSignature {
                validator: key.public_key(),
                signature: key.sign(&view_change_message(height, view)),
            },
        }
    }

    /// The ledger form of a set of votes for one (height, view).
    pub fn proof_of(votes: &[ViewChangeVote]) -> Option<ViewChangeProof> {
        let first = votes.first()?;
        Some(ViewChangeProof {
            height: first.height,
            view: first.view,
            signatures: votes.iter().map(|vote| vote.signature).collect(),
        })
    }

    pub fn verify_signature(&self, cache: &mut KeyCache) -> Result<(), SignatureError> {
        verify_one(
            cache,
            &self.signature.validator,
            &view_change_message(self.height, self.view),
            &self.signature.signature,
        )
    }
}

/// A leader's proposal (R4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub height: u64,
    pub view: u64,
    pub block: Block,
    /// The highest prepare certificate the leader knows for this height; when present, `block`
    /// is that certificate's block.
    pub justify: Option<Certificate>,
    /// For `view > 0`: `q` view-change votes for (height, view).
    pub proof: Vec<ViewChangeVote>,
}

/// A [`Proposal`] as it travels between nodes: the block's header and its transactions'
/// hashes, in order, instead of their bodies, which the peers already hold from gossip. The
/// host rebuilds the proposal from its queue (fetching what it lacks from the sender with
/// [`Message::TransactionsWanted`]) and hands the consensus core the whole proposal, so the core
/// never sees this form; the block's hash is its header's, which commits to the Merkle root of
/// exactly these transaction hashes (docs/PROTOCOL.md section 3, docs/NODE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalDigest {
    pub height: u64,
    pub view: u64,
    pub header: BlockHeader,
    pub transactions: Vec<Hash>,
    pub justify: Option<Certificate>,
    pub proof: Vec<ViewChangeVote>,
}

impl ProposalDigest {
    /// The digest of `proposal`, given its transactions' hashes in block order.
    pub fn of(proposal: &Proposal, transactions: Vec<Hash>) -> ProposalDigest {
        ProposalDigest {
            height: proposal.height,
            view: proposal.view,
            header: proposal.block.header.clone(),
            transactions,
            justify: proposal.justify.clone(),
            proof: proposal.proof.clone(),
        }
    }

    /// The whole proposal, given the bodies of [`ProposalDigest::transactions`] in order.
    pub fn into_proposal(self, transactions: Vec<SignedTransaction>) -> Proposal {
        Proposal {
            height: self.height,
            view: self.view,
            block: Block {
                header: self.header,
                transactions,
            },
            justify: self.justify,
            proof: self.proof,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Proposal(Box<Proposal>),
    Vote(SignedVote),
    PrepareCertificate(Certificate),
    CommitCertificate(Certificate),
    ViewChange(ViewChangeVote),
    /// The sender's committed height and head hash.
    Status {
        height: u64,
        head_hash: Hash,
    },
    BlockSyncRequest {
        from_height: u64,
        count: u64,
    },
    BlockSyncResponse {
        blocks: Vec<CommittedBlock>,
    },
    Transactions(Vec<SignedTransaction>),
    /// A proposal without its transaction bodies (see [`ProposalDigest`]).
    ProposalDigest(Box<ProposalDigest>),
    /// "Send me these transactions (by transaction hash) of the block you proposed."
    TransactionsWanted {
        block: Hash,
        transactions: Vec<Hash>,
    },
    /// The answer to [`Message::TransactionsWanted`]: the bodies the proposer has.
    TransactionsFound {
        block: Hash,
        transactions: Vec<SignedTransaction>,
    },
    /// The `q` view-change votes that moved the sender into their view, sent to a replica that
    /// showed it is behind (R15a). Judged as a whole, however far ahead the view is.
    ViewChangeProof(Vec<ViewChangeVote>),
    /// "Send me the block of this height with this hash": a leader that must re-propose a
    /// certified block it does not hold (R4a).
    BlockWanted {
        height: u64,
        hash: Hash,
    },
    /// The answer to [`Message::BlockWanted`].
    BlockFound(Box<Block>),
    /// "I hold these transactions (by payload hash) in my queue, or they are committed": the
    /// answer to gossip, counted by the replica that admitted them until f + 1 validators hold
    /// each (acknowledgement, docs/PROTOCOL.md section 7.1).
    Held(Vec<Hash>),
    /// "Send me the manifest of your checkpoint at `height`" (state sync, docs/PROTOCOL.md
    /// section 8.1).
    SnapshotWanted {
        height: u64,
    },
    /// The answer to [`Message::SnapshotWanted`]: `None` when the sender does not hold that
    /// checkpoint (a validator keeps only its latest) or has not committed the block after it.
    SnapshotManifest {
        height: u64,
        manifest: Option<SnapshotManifest>,
    },
    /// "Send me chunk `index` of your checkpoint at `height`."
    SnapshotChunkWanted {
        height: u64,
        index: u32,
    },
    /// The answer to [`Message::SnapshotChunkWanted`]: `None` when the sender does not hold it.
    SnapshotChunk {
        height: u64,
        index: u32,
        bytes: Option<Vec<u8>>,
    },
}

/// What a snapshot holds, as a peer states it: the header of the checkpoint block `c`, the hash
/// of each chunk (`kasane_wsv::snapshot::chunk_hash`), the headers of `c + 1` up to the binding
/// block `c + D` (each naming the one before by its previous hash), the binding block's commit
/// certificate, and its ordinary commitment `link`. The root of the chunks bound to `link` must
/// give the certified header's commitment (docs/PROTOCOL.md section 8.1); nothing in it is
/// trusted before that holds and the chunks prove canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub header: BlockHeader,
    pub chunks: Vec<Hash>,
    pub headers: Vec<BlockHeader>,
    pub certificate: Certificate,
    pub link: Hash,
}

impl Versioned for Message {
    const NAME: &'static str = "consensus message";
    /// 2: view-change proofs, blocks fetched by hash, and the rules of docs/PROTOCOL.md as of
    /// that version (round-robin leaders per height); a node of version 1 cannot take part.
    /// 3: [`Message::Held`]; a node of version 2 would never acknowledge its peers' clients.
    /// 4: the snapshot messages, and checkpoint commitments every 100 heights
    /// (docs/PROTOCOL.md section 8.1); a node of version 3 computes other commitments there.
    /// 5: a checkpoint's root is bound 8 blocks after it, not by the next block, and a manifest
    /// carries the headers up to that block, its certificate and its link.
    const VERSION: u8 = 5;
    const ENCODED_BYTES_MAX: usize = MESSAGE_BYTES_MAX;
}

impl Message {
    /// Short name for counters and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Proposal(_) => "proposal",
            Message::Vote(_) => "vote",
            Message::PrepareCertificate(_) => "prepare-certificate",
            Message::CommitCertificate(_) => "commit-certificate",
            Message::ViewChange(_) => "view-change",
            Message::Status { .. } => "status",
            Message::BlockSyncRequest { .. } => "sync-request",
            Message::BlockSyncResponse { .. } => "sync-response",
            Message::Transactions(_) => "transactions",
            Message::ProposalDigest(_) => "proposal-digest",
            Message::TransactionsWanted { .. } => "transactions-wanted",
            Message::TransactionsFound { .. } => "transactions-found",
            Message::ViewChangeProof(_) => "view-change-proof",
            Message::BlockWanted { .. } => "block-wanted",
            Message::BlockFound(_) => "block-found",
            Message::Held(_) => "held",
            Message::SnapshotWanted { .. } => "snapshot-wanted",
            Message::SnapshotManifest { .. } => "snapshot-manifest",
            Message::SnapshotChunkWanted { .. } => "snapshot-chunk-wanted",
            Message::SnapshotChunk { .. } => "snapshot-chunk",
        }
    }
}

/// The encoding of `Message::BlockSyncResponse` built from blocks as Kura stores them (each one
/// [`kasane_model::codec::encode`]d on its own), without decoding them: a peer serving a chunk copies its
/// records instead of decoding up to [`crate::replica::SYNC_RESPONSE_BYTES_MAX`] of blocks and
/// encoding them again on its consensus task. The result is byte for byte what
/// `codec::encode(&Message::BlockSyncResponse { blocks })` gives for the decoded blocks; a
/// record of another block version is refused.
pub fn sync_response_frame(records: &[Vec<u8>]) -> Result<Vec<u8>, kasane_model::codec::CodecError> {
    use kasane_model::codec::{self, CodecError};
    // The variant's tag and an empty list; the list's length is postcard's last byte (zero).
    let mut frame = codec::encode(&Message::BlockSyncResponse { blocks: Vec::new() });
    frame.pop();
    let mut length = records.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            frame.push(byte);
            break;
        }
        frame.push(byte | 0x80);
    }
    frame.reserve(records.iter().map(Vec::len).sum());
    for record in records {
        match record.split_first() {
            Some((&version, body)) if version == <CommittedBlock as Versioned>::VERSION => {
                frame.extend_from_slice(body)
            }
            Some((&version, _)) => {
                return Err(CodecError::UnknownVersion {
                    name: <CommittedBlock as Versioned>::NAME,
                    found: version,
                    supported: <CommittedBlock as Versioned>::VERSION,
                })
            }
            None => {
                return Err(CodecError::Empty {
                    name: <CommittedBlock as Versioned>::NAME,
                })
            }
        }
    }
    Ok(frame)
}
