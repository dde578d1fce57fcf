//! What goes in and out of the consensus core: inputs, effects, timers, the durable lock record,
//! configuration and counters.

use std::collections::{BTreeMap, BTreeSet};

use kasane_model::block::{Certificate, ViewChangeProof};
use kasane_model::{Block, CommittedBlock, Hash, PublicKey};
use serde::{Deserialize, Serialize};

use crate::message::{Message, ViewChangeVote};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a leader waits for more transactions before proposing (R4).
    pub block_time_ms: u64,
    /// Base commit timeout; doubles with each view (R16).
    pub commit_timeout_ms: u64,
    /// How many times the commit timeout doubles at most (R16).
    pub timeout_doublings_max: u64,
    /// A leader proposes at once when its queue holds this many transactions.
    pub block_txs_max: usize,
    pub status_interval_ms: u64,
    /// How long a block-sync request may stay unanswered.
    pub sync_timeout_ms: u64,
    /// Test-only switch: without locking (R6, R8) the single-vote fork is possible, and sim-net's
    /// agreement checker must catch it. Always true outside tests.
    pub locking: bool,
    /// Byzantine switch for simulations: as proxy tail, do not commit the blocks it certifies,
    /// and never fetch blocks by sync, so the replica stays at the height and can take part in a
    /// conflicting view change (the withholding attack). Always false for an honest replica.
    pub byzantine_skip_own_commit: bool,
    /// A block committed on its commit certificate without having been validated here (block
    /// sync, or a certificate that outran its proposal) is checked for its chain, Merkle root
    /// and state commitment, but its transaction signatures are not verified again: the
    /// certificate's signers include f + 1 honest validators that verified them (R19,
    /// docs/PROTOCOL.md section 8). False: such blocks re-verify every signature.
    pub certified_blocks_skip_signatures: bool,
    /// A replica more than two checkpoints behind the cluster restores the state of a recent
    /// checkpoint from its peers and appends the blocks below it without executing them
    /// (docs/PROTOCOL.md section 8.1). False: it executes every block it syncs.
    pub state_sync: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            block_time_ms: 100,
            commit_timeout_ms: 1_000,
            timeout_doublings_max: 5,
            block_txs_max: 1_000,
            status_interval_ms: 1_000,
            sync_timeout_ms: 2_000,
            locking: true,
            byzantine_skip_own_commit: false,
            certified_blocks_skip_signatures: true,
            state_sync: true,
        }
    }
}

impl Config {
    /// R16: the commit timeout of `view`: doubling per view, up to 2^timeout_doublings_max
    /// times the base.
    pub fn commit_timeout(&self, view: u64) -> u64 {
        let doublings = view.min(self.timeout_doublings_max).min(16);
        self.commit_timeout_ms.saturating_mul(1 << doublings)
    }

    /// How long a view may go without a commit while there is work (R11, R18).
    pub fn view_timeout(&self, view: u64) -> u64 {
        self.block_time_ms.saturating_add(self.commit_timeout(view))
    }
}

/// Timers are data: the core asks for them, the host fires them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The leader's block timer (R4).
    BlockTime { height: u64, view: u64 },
    /// No commit in this view while there was work: suspect it (R11, R18).
    View { height: u64, view: u64 },
    /// Broadcast status (R19).
    Status,
    /// The block-sync request to `peer` for blocks from `from_height` went unanswered (R19).
    Sync { peer: PublicKey, from_height: u64 },
    /// Judge a block again that was too far ahead of this replica's clock to vote for (R5).
    Revalidate { height: u64, hash: Hash },
    /// Commit the next block received by block sync (R19), scheduled with no delay after each
    /// synced commit: one block per step, so the requests for the next chunks and every other
    /// message go out between blocks, not after a whole chunk was applied.
    ApplySynced,
    /// Sync the replica's hold store, then answer `Held` for what it made durable (R18b). The
    /// replica's own timer: the core ignores it.
    SyncHolds,
    /// Look after a restore from a snapshot: requests that timed out, a stalled restore
    /// (docs/PROTOCOL.md section 8.1). The replica's own timer: the core ignores it.
    Restore,
}

/// The host's verdict on a block (R5). Validity is a function of the chain alone; only the
/// moment of a vote may depend on the local clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// Valid by the chain, but stamped more than the allowed skew ahead of this replica's clock:
    /// no vote yet; judge again after `retry_after_ms`.
    Early {
        retry_after_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A message from an authenticated peer.
    Message {
        from: PublicKey,
        message: Message,
    },
    TimerFired(Timer),
    /// The transaction queue's length changed ("transaction seen").
    QueueLength(usize),
    /// Answer to `BuildProposal`: a block of queued transactions, executed, header filled in.
    ProposalBuilt {
        height: u64,
        view: u64,
        block: Block,
    },
    /// Answer to `BuildProposal` when the queue turned out empty.
    NothingToPropose {
        height: u64,
        view: u64,
    },
    /// Answer to `ValidateBlock`.
    BlockValidated {
        height: u64,
        hash: Hash,
        verdict: Verdict,
    },
    /// Answer to `CommitBlock`: the block is durable in Kura and applied; `validators` is the
    /// validator set after it and `demoted` those of them who lead last at the next height (R1,
    /// leader reputation: `Wsv::demoted`).
    BlockCommitted {
        height: u64,
        hash: Hash,
        validators: BTreeSet<PublicKey>,
        demoted: BTreeSet<PublicKey>,
    },
    /// Answer to `CommitBlock` when the block did not apply (only possible for synced blocks).
    CommitFailed {
        height: u64,
        hash: Hash,
    },
    /// State sync installed a state restored at `height`, the block with `hash` (docs/PROTOCOL.md
    /// section 8.1): the replica moves on to `height + 1` as if it had committed every block up
    /// to it. Ignored unless it is above the committed height.
    Restored {
        height: u64,
        hash: Hash,
        validators: BTreeSet<PublicKey>,
        demoted: BTreeSet<PublicKey>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send {
        to: PublicKey,
        message: Message,
    },
    /// To every validator but this one.
    Broadcast {
        message: Message,
    },
    ScheduleTimer {
        timer: Timer,
        after_ms: u64,
    },
    /// Validate the block against the committed state (signatures, Merkle root, execution,
    /// state commitment) and its timestamp against the local clock, and answer
    /// `BlockValidated`.
    ValidateBlock {
        block: Block,
    },
    /// Build a block from the queue for (height, view) and answer `ProposalBuilt`.
    BuildProposal {
        height: u64,
        view: u64,
        max_transactions: usize,
        /// For a view above 0, the view-change proof the block's header must carry.
        view_change_proof: Option<ViewChangeProof>,
    },
    /// Make the record durable before carrying out any effect after this one (R17).
    PersistLock {
        record: LockRecord,
    },
    /// Append to Kura, apply to the world state, drop the block's transactions from the queue,
    /// and answer `BlockCommitted` (or `CommitFailed`).
    CommitBlock {
        block: CommittedBlock,
    },
    /// Read committed blocks from Kura and send them to `to` as a `BlockSyncResponse`.
    ServeBlocks {
        to: PublicKey,
        from_height: u64,
        count: u64,
    },
    /// Informational: the replica entered a view (for metrics and traces).
    ViewChanged {
        height: u64,
        view: u64,
    },
}

/// The consensus write-ahead record (R17): what a restarted replica must remember.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub height: u64,
    pub view: u64,
    /// The view-change votes that made `view` (empty for view 0), so a restarted replica can
    /// show other replicas how it got there (R15a) and, as leader, build a block of that view.
    pub proof: Vec<ViewChangeVote>,
    pub lock: Option<Certificate>,
    /// The block `lock` certifies: a locked replica must be able to re-propose it after a
    /// restart, or a cluster whose every replica lost power could stay locked on a block nobody
    /// holds (R4, R17).
    pub block: Option<Block>,
    pub voted_prepare: Option<u64>,
    pub voted_commit: Option<u64>,
}

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    NotAValidator,
    StaleHeight,
    FutureHeight,
    StaleView,
    FutureView,
    NotTheLeader,
    /// A vote sent to a replica that collects none in its view (R7).
    NotACollector,
    SignerIsNotSender,
    BadSignature,
    BadCertificate,
    BadProposal,
    BadProof,
    Duplicate,
    /// A block, or more view-change votes, that nobody asked for.
    Unsolicited,
    Unexpected,
    Full,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub dropped: BTreeMap<DropReason, u64>,
    pub view_changes: u64,
    pub proposals: u64,
    pub commits: u64,
    pub suspicions: u64,
}

impl Counters {
    pub fn drop_count(&self) -> u64 {
        self.dropped.values().sum()
    }
}
