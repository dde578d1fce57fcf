//! The world state view: the committed world, its height and commitment, replay protection and
//! recent transactions; block execution and atomic commit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use kasane_model::block::{tx_merkle_root, BLOCK_TRANSACTIONS_MAX, BLOCK_TRANSACTION_BYTES_MAX};
use kasane_model::ids::{AccountId, DomainId, Name};
use kasane_model::transaction::{
    ChainId, Payloads, StatelessError, TransactionHashes, FUTURE_SKEW_MS_MAX, TRANSACTION_BYTES_MAX, TTL_MS_MAX,
};
use kasane_model::{Block, BlockHeader, Hash, PublicKey, SignedTransaction};

use crate::commitment;
use crate::execute::{Executor, InstructionError};
use crate::layer::{BlockChanges, Layered};
use crate::plugin::{PluginContext, PluginRegistry, Verdict, DEFAULT_PLUGIN};
use crate::replay::ReplayGuard;
use crate::snapshot::{self, Snapshot, SnapshotError, CHECKPOINT_INTERVAL};
use crate::world::{Account, Domain, Metadata, StateMap, World};

/// How many heights per validator a validator that led a failed view stays demoted (R1, leader
/// reputation): with four validators, 40 heights, so a crashed validator costs one view change
/// per 40 heights, not one per 4.
pub const DEMOTION_HEIGHTS_PER_VALIDATOR: u64 = 10;
/// Recent transactions remembered per creator account.
pub const RECENT_TRANSACTIONS_PER_ACCOUNT: usize = 32;
/// Name of the domain holding the genesis authority.
pub const GENESIS_DOMAIN: &str = "genesis";
/// Name of the genesis authority's account, in [`GENESIS_DOMAIN`].
pub const GENESIS_ACCOUNT: &str = "genesis";

/// The genesis account's metadata key that says what the chain takes: [`PAYLOADS_OPAQUE`] makes
/// it a chain of [`Payloads::Opaque`]; only the genesis block may set it (docs/PROTOCOL.md
/// section 1.2).
pub const PAYLOADS_KEY: &str = "payloads";
/// The value of [`PAYLOADS_KEY`] for a chain that takes opaque payloads.
pub const PAYLOADS_OPAQUE: &str = "opaque";

/// The genesis authority's account, `genesis@genesis`.
pub(crate) fn genesis_account() -> AccountId {
    AccountId::new(GENESIS_ACCOUNT, GENESIS_DOMAIN).expect("constant names are valid")
}

/// Why a transaction was rejected. It stays in its block, rejected, and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectionReason {
    #[error("{0}")]
    Stateless(#[from] kasane_model::transaction::StatelessError),
    #[error("expired at {expires_at_ms} ms, block time is {block_time_ms} ms")]
    Expired { expires_at_ms: u64, block_time_ms: u64 },
    #[error("created at {created_at_ms} ms, too far after block time {block_time_ms} ms")]
    FromTheFuture { created_at_ms: u64, block_time_ms: u64 },
    #[error("payload already committed (replay)")]
    Replayed,
    #[error("creator {0} does not exist")]
    NoSuchCreator(AccountId),
    #[error("signed by {key}, which is not a signatory of {account}")]
    NotASignatory { account: AccountId, key: PublicKey },
    #[error("{account} needs {required} signatures, has {found}")]
    NotEnoughSignatures {
        account: AccountId,
        required: u8,
        found: usize,
    },
    #[error("validator plugin {plugin}: {reason}")]
    Plugin { plugin: Name, reason: String },
    #[error("instruction {index}: {error}")]
    Instruction { index: usize, error: InstructionError },
}

/// What became of one transaction of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionOutcome {
    Committed,
    Rejected(RejectionReason),
}

/// Why a block could not be applied. The world state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("block height {found}, expected {expected}")]
    WrongHeight { expected: u64, found: u64 },
    #[error("block {height}: previous hash {found}, expected {expected}")]
    WrongPreviousHash { height: u64, expected: Hash, found: Hash },
    #[error("block {height}: timestamp {found} ms is before the previous block's {previous} ms")]
    TimeWentBack { height: u64, previous: u64, found: u64 },
    #[error("block {height}: {count} transactions, over the limit of {BLOCK_TRANSACTIONS_MAX}")]
    TooManyTransactions { height: u64, count: usize },
    #[error("block {height}: transactions of {bytes} bytes, over the limit of {BLOCK_TRANSACTION_BYTES_MAX}")]
    TooManyBytes { height: u64, bytes: usize },
    #[error("block {height}: {hashes} transaction hashes for {transactions} transactions")]
    HashCountMismatch {
        height: u64,
        hashes: usize,
        transactions: usize,
    },
    #[error("block {height}: the transaction Merkle root does not match the transaction hashes")]
    MerkleRootMismatch { height: u64 },
    #[error("block {height}: state commitment {computed} after execution, header says {claimed}")]
    StateCommitmentMismatch { height: u64, claimed: Hash, computed: Hash },
    #[error("block {height}, transaction {index}: validator plugin {plugin} failed: {reason}")]
    ExecutionFailure {
        height: u64,
        index: usize,
        plugin: Name,
        reason: String,
    },
}

/// A block executed against the world but not committed: what a proposer needs to fill in a
/// header, and what [`Wsv::commit`] applies.
#[derive(Debug)]
pub struct ExecutedBlock {
    pub height: u64,
    pub timestamp_ms: u64,
    pub state_commitment: Hash,
    pub outcomes: Vec<TransactionOutcome>,
    /// The ordinary commitment, before a checkpoint root is bound to it.
    link: Hash,
    changes: BlockChanges,
    replay_entries: Vec<(Hash, u64)>,
    recent: Vec<(AccountId, Hash)>,
}

fn count_rejected(outcomes: &[TransactionOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|outcome| matches!(outcome, TransactionOutcome::Rejected(_)))
        .count()
}

impl ExecutedBlock {
    pub fn rejected_count(&self) -> usize {
        count_rejected(&self.outcomes)
    }

    /// Number of state keys the block writes.
    pub fn write_count(&self) -> usize {
        self.changes.len()
    }
}

/// What applying a block did: its place in the chain and each transaction's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedBlock {
    pub height: u64,
    pub timestamp_ms: u64,
    pub state_commitment: Hash,
    pub outcomes: Vec<TransactionOutcome>,
}

impl AppliedBlock {
    pub fn rejected_count(&self) -> usize {
        count_rejected(&self.outcomes)
    }
}

/// One entry of an account's recent transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentTransaction {
    pub hash: Hash,
    pub height: u64,
}

/// The world state view of one chain.
#[derive(Debug, Clone)]
pub struct Wsv {
    pub(crate) world: World,
    chain: ChainId,
    genesis_key: PublicKey,
    genesis_authority: AccountId,
    height: u64,
    head_hash: Hash,
    commitment: Hash,
    last_timestamp_ms: u64,
    /// Transactions in the applied blocks, genesis included, rejected ones included.
    transactions: u64,
    replay: ReplayGuard,
    recent: StateMap<AccountId, VecDeque<RecentTransaction>>,
    /// Per recent height committed after a failed view, the leaders of its failed views (R1,
    /// leader reputation; [`Wsv::demoted`]).
    leader_failures: VecDeque<(u64, Vec<PublicKey>)>,
    plugins: PluginRegistry,
    /// Heights between checkpoints (wsv/src/snapshot.rs); the same on every node of a chain.
    checkpoint_interval: u64,
    /// The newest checkpoint whose root a committed block binds, or the one this view was
    /// restored from: the state at its height, encoded, served to nodes that restore.
    checkpoint: Option<Arc<Snapshot>>,
    /// The ordinary commitment (`link`) of the block that bound `checkpoint`, once this view
    /// committed that block: a manifest states it, so that a restoring node can check the root
    /// against the certified header.
    checkpoint_link: Option<Hash>,
    /// The checkpoint taken at the last checkpoint height and not bound yet, encoding on its
    /// own thread.
    encoding: Option<Encoding>,
}

/// A checkpoint's snapshot being encoded on its own thread, from a copy of the state taken when
/// its height was committed. Copies of the view share it; the first to need the result waits
/// for the thread.
#[derive(Clone)]
struct Encoding {
    height: u64,
    thread: Arc<Mutex<Option<JoinHandle<Snapshot>>>>,
    done: Arc<OnceLock<Arc<Snapshot>>>,
}

impl Encoding {
    fn start(wsv: &Wsv) -> Encoding {
        let height = wsv.height;
        let done = Arc::new(OnceLock::new());
        let (world, replay) = (wsv.world.clone(), wsv.replay.frozen());
        let (last_timestamp_ms, transactions) = (wsv.last_timestamp_ms, wsv.transactions);
        let leader_failures = wsv.leader_failures.clone();
        let spawned = std::thread::Builder::new()
            .name("kasane-checkpoint".into())
            .spawn(move || {
                Snapshot::encode(
                    height,
                    &world,
                    &replay,
                    last_timestamp_ms,
                    transactions,
                    &leader_failures,
                )
            });
        let thread = match spawned {
            Ok(handle) => Some(handle),
            // No thread to be had: encode here, as before the delay existed.
            Err(_) => {
                let _ = done.set(Arc::new(wsv.encode_snapshot()));
                None
            }
        };
        Encoding {
            height,
            thread: Arc::new(Mutex::new(thread)),
            done,
        }
    }

    /// The snapshot, waiting for the thread if it is still encoding.
    fn wait(&self) -> Arc<Snapshot> {
        if let Some(snapshot) = self.done.get() {
            return snapshot.clone();
        }
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = thread.take() {
            // The encoder has no input but our own state: a panic there is a bug, raised here.
            let snapshot = handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let _ = self.done.set(Arc::new(snapshot));
        }
        self.done
            .get()
            .expect("the thread that took the handle set the snapshot before releasing the lock")
            .clone()
    }
}

impl std::fmt::Debug for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoding")
            .field("height", &self.height)
            .field("done", &self.done.get().is_some())
            .finish()
    }
}

impl Wsv {
    /// The state before the genesis block: the genesis domain and the genesis authority
    /// `genesis@genesis`, whose one signatory is `genesis_key`.
    pub fn new(chain: ChainId, genesis_key: PublicKey, plugins: PluginRegistry) -> Wsv {
        let genesis_authority = genesis_account();
        let mut world = World::default();
        world.domains.insert(
            genesis_authority.domain.clone(),
            Domain {
                id: genesis_authority.domain.clone(),
                owner: genesis_authority.clone(),
                validator: Name::new(DEFAULT_PLUGIN).expect("constant names are valid"),
                metadata: Metadata::new(),
                account_count: 1,
                asset_definition_count: 0,
            },
        );
        world.accounts.insert(
            genesis_authority.clone(),
            Account {
                id: genesis_authority.clone(),
                signatories: [genesis_key].into(),
                signatures_required: 1,
                metadata: Metadata::new(),
                permissions: Default::default(),
                held_asset_count: 0,
            },
        );
        Wsv {
            world,
            commitment: commitment::initial_commitment(&chain, &genesis_key),
            chain,
            genesis_key,
            genesis_authority,
            height: 0,
            head_hash: Hash::ZERO,
            last_timestamp_ms: 0,
            transactions: 0,
            replay: ReplayGuard::default(),
            recent: StateMap::default(),
            leader_failures: VecDeque::new(),
            plugins,
            checkpoint_interval: CHECKPOINT_INTERVAL,
            checkpoint: None,
            checkpoint_link: None,
            encoding: None,
        }
    }

    /// Sets the heights between checkpoints (at least 1), before the first block is applied.
    /// Every node of a chain must use the same interval: one that differs computes another
    /// commitment for the block after the first checkpoint and cannot follow the chain.
    pub fn with_checkpoint_interval(mut self, interval: u64) -> Wsv {
        self.checkpoint_interval = interval.max(1);
        self
    }

    pub fn checkpoint_interval(&self) -> u64 {
        self.checkpoint_interval
    }

    /// The encoded state at the newest checkpoint whose root a block this view committed binds
    /// (or the one it was restored from), if any.
    pub fn checkpoint(&self) -> Option<&Arc<Snapshot>> {
        self.checkpoint.as_ref()
    }

    /// The ordinary commitment of the block that bound [`Wsv::checkpoint`], once this view
    /// committed that block (`link` in wsv/src/snapshot.rs).
    pub fn checkpoint_link(&self) -> Option<Hash> {
        self.checkpoint_link
    }

    /// The state a snapshot holds, headed by `header` (the checkpoint block, whose hash the
    /// caller knows from the certified binding block and the headers between). Checks the
    /// structure and that the chunks are the canonical encoding of the restored state; whether
    /// that state is the chain's is proven by the binding block's commitment, which binds the
    /// snapshot's root (the caller checks it against a stated link, or executes the blocks up to
    /// it: [`Wsv::apply_block`] does). On error nothing is built.
    pub fn from_snapshot<C: AsRef<[u8]>>(
        chain: ChainId,
        genesis_key: PublicKey,
        plugins: PluginRegistry,
        checkpoint_interval: u64,
        header: &BlockHeader,
        chunks: &[C],
    ) -> Result<Wsv, SnapshotError> {
        let mut wsv = Wsv::new(chain, genesis_key, plugins).with_checkpoint_interval(checkpoint_interval);
        snapshot::check_checkpoint_height(header, wsv.checkpoint_interval)?;
        let restored = snapshot::restore(header.height, chunks)?;
        wsv.world = restored.world;
        wsv.replay = restored.replay;
        wsv.last_timestamp_ms = restored.last_timestamp_ms;
        wsv.transactions = restored.transactions;
        wsv.leader_failures = restored.leader_failures;
        wsv.height = header.height;
        wsv.head_hash = header.hash();
        wsv.commitment = header.state_commitment;
        let encoded = wsv.encode_snapshot();
        let manifest: Vec<Hash> = chunks
            .iter()
            .map(|chunk| snapshot::chunk_hash(chunk.as_ref()))
            .collect();
        let received = snapshot::root_of(header.height, &manifest);
        if encoded.root() != received {
            return Err(SnapshotError::NotCanonical {
                received,
                computed: encoded.root(),
            });
        }
        wsv.checkpoint = Some(Arc::new(encoded));
        Ok(wsv)
    }

    fn encode_snapshot(&self) -> Snapshot {
        Snapshot::encode(
            self.height,
            &self.world,
            &self.replay.frozen(),
            self.last_timestamp_ms,
            self.transactions,
            &self.leader_failures,
        )
    }

    /// The commitment of block `height` whose ordinary commitment is `link`: bound to the root
    /// of the checkpoint it binds, if it binds one (wsv/src/snapshot.rs).
    fn sealed_commitment(&self, height: u64, link: Hash) -> Hash {
        let Some(checkpoint) = snapshot::bound_checkpoint(height, self.checkpoint_interval) else {
            return link;
        };
        let root = match (&self.encoding, &self.checkpoint) {
            (Some(encoding), _) if encoding.height == checkpoint => encoding.wait().root(),
            (_, Some(snapshot)) if snapshot.height() == checkpoint => snapshot.root(),
            // A view reaches a checkpoint height by committing it (which starts the encoding)
            // or by being restored at it, and the binding delay is at most the interval, so the
            // checkpoint a block binds is always the one encoding or the one held.
            _ => panic!("block {height} binds checkpoint {checkpoint}, which this view never took"),
        };
        snapshot::checkpoint_commitment(&link, &root)
    }

    pub fn chain(&self) -> &ChainId {
        &self.chain
    }

    pub fn genesis_key(&self) -> &PublicKey {
        &self.genesis_key
    }

    pub fn genesis_authority(&self) -> &AccountId {
        &self.genesis_authority
    }

    /// What this chain takes as transactions, as its genesis block set it (the genesis
    /// account's [`PAYLOADS_KEY`]).
    pub fn payloads(&self) -> Payloads {
        let value = self
            .world
            .account(&self.genesis_authority)
            .and_then(|genesis| genesis.metadata.get(PAYLOADS_KEY));
        match value {
            Some(value) if value == PAYLOADS_OPAQUE => Payloads::Opaque,
            _ => Payloads::Signed,
        }
    }

    /// Height of the last applied block; 0 before genesis.
    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn head_hash(&self) -> Hash {
        self.head_hash
    }

    /// The state commitment after the last applied block.
    pub fn state_commitment(&self) -> Hash {
        self.commitment
    }

    pub fn last_timestamp_ms(&self) -> u64 {
        self.last_timestamp_ms
    }

    /// Transactions in the blocks applied so far, rejected ones included.
    pub fn transaction_count(&self) -> u64 {
        self.transactions
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn plugins(&self) -> &PluginRegistry {
        &self.plugins
    }

    /// Whether a payload is committed and still within replay memory at `now_ms`.
    pub fn is_committed_payload(&self, payload: &Hash, now_ms: u64) -> bool {
        self.replay.seen(payload, now_ms)
    }

    pub fn replay_entries(&self) -> usize {
        self.replay.len()
    }

    /// Bytes held by the replay memory and by the accounts' recent transactions (estimates).
    pub fn footprint(&self) -> (usize, usize) {
        use kasane_model::footprint::{deque_bytes, map_bytes};
        let recent = map_bytes(&self.recent) + self.recent.values().map(deque_bytes).sum::<usize>();
        (self.replay.footprint(), recent)
    }

    /// The validators that certify the block after the current head: the registered peers, or,
    /// before genesis is applied, the genesis authority alone.
    pub fn validators(&self) -> std::collections::BTreeSet<PublicKey> {
        if self.height == 0 {
            [self.genesis_key].into()
        } else {
            self.world.peers.clone()
        }
    }

    pub(crate) fn recent_of(&self, account: &AccountId) -> Option<&VecDeque<RecentTransaction>> {
        self.recent.get(account)
    }

    /// Checks the header against the head, executes the block, checks the claimed state
    /// commitment, and commits. On any error nothing changes.
    ///
    /// `hashes` are the transactions' hashes in block order (computed once by the caller, who
    /// needs them anyway). Signatures are NOT verified here: the caller verifies them (in
    /// batches, once per transaction); this checks that the signers satisfy each creator's
    /// signing condition.
    pub fn apply_block(&mut self, block: &Block, hashes: &[TransactionHashes]) -> Result<AppliedBlock, ApplyError> {
        let executed = self.verify_block(block, hashes)?;
        Ok(self.commit(executed, block.hash(), block.header.view))
    }

    /// Everything [`Wsv::apply_block`] checks (header, Merkle root, execution, the claimed
    /// commitment), without changing anything: the block executed, ready for [`Wsv::commit`].
    pub fn verify_block(&self, block: &Block, hashes: &[TransactionHashes]) -> Result<ExecutedBlock, ApplyError> {
        self.check_header(&block.header)?;
        check_hash_count(block.header.height, &block.transactions, hashes)?;
        let transaction_hashes: Vec<Hash> = hashes.iter().map(|hash| hash.transaction).collect();
        if tx_merkle_root(&transaction_hashes) != block.header.tx_merkle_root {
            return Err(ApplyError::MerkleRootMismatch {
                height: block.header.height,
            });
        }
        let executed = self.execute(
            block.header.height,
            block.header.timestamp_ms,
            &block.transactions,
            hashes,
        )?;
        if executed.state_commitment != block.header.state_commitment {
            return Err(ApplyError::StateCommitmentMismatch {
                height: block.header.height,
                claimed: block.header.state_commitment,
                computed: executed.state_commitment,
            });
        }
        Ok(executed)
    }

    /// Checks the fields of a header that follow from the head: height, previous hash, time.
    pub fn check_header(&self, header: &BlockHeader) -> Result<(), ApplyError> {
        let expected = self.height + 1;
        if header.height != expected {
            return Err(ApplyError::WrongHeight {
                expected,
                found: header.height,
            });
        }
        if header.previous_hash != self.head_hash {
            return Err(ApplyError::WrongPreviousHash {
                height: header.height,
                expected: self.head_hash,
                found: header.previous_hash,
            });
        }
        if header.timestamp_ms < self.last_timestamp_ms {
            return Err(ApplyError::TimeWentBack {
                height: header.height,
                previous: self.last_timestamp_ms,
                found: header.timestamp_ms,
            });
        }
        Ok(())
    }

    /// Executes `transactions` as block `height` at `timestamp_ms` without changing anything.
    pub fn execute(
        &self,
        height: u64,
        timestamp_ms: u64,
        transactions: &[SignedTransaction],
        hashes: &[TransactionHashes],
    ) -> Result<ExecutedBlock, ApplyError> {
        if transactions.len() > BLOCK_TRANSACTIONS_MAX {
            return Err(ApplyError::TooManyTransactions {
                height,
                count: transactions.len(),
            });
        }
        check_hash_count(height, transactions, hashes)?;
        let bytes = hashes.iter().map(|hash| hash.encoded_bytes).sum::<usize>();
        if bytes > BLOCK_TRANSACTION_BYTES_MAX {
            return Err(ApplyError::TooManyBytes { height, bytes });
        }
        let mut state = Layered::new(&self.world);
        let mut outcomes = Vec::with_capacity(transactions.len());
        let mut replay_entries = Vec::with_capacity(transactions.len());
        let mut in_block: StateMap<Hash, ()> = StateMap::default();
        in_block.reserve(transactions.len());
        let mut recent = Vec::with_capacity(transactions.len());
        // Fixed by the genesis block (a later block may not change it), so read once a block.
        let payloads = self.payloads();
        for (index, (transaction, hash)) in transactions.iter().zip(hashes).enumerate() {
            let payload = &transaction.payload;
            let outcome = if self.replay.seen(&hash.payload, timestamp_ms) || in_block.contains_key(&hash.payload) {
                TransactionOutcome::Rejected(RejectionReason::Replayed)
            } else if let Err(reason) = self.authorize(&state, timestamp_ms, payloads, transaction, hash) {
                TransactionOutcome::Rejected(reason)
            } else {
                // Authorized: the payload is spent, whether its instructions succeed or not.
                let expiry = payload.expires_at_ms();
                // Authorization bounds the time-to-live and the creation time, and with them
                // how long replay memory holds the entry.
                assert!(expiry <= timestamp_ms.saturating_add(FUTURE_SKEW_MS_MAX + TTL_MS_MAX));
                in_block.insert(hash.payload, ());
                replay_entries.push((hash.payload, expiry));
                recent.push((payload.creator.clone(), hash.transaction));
                match self.run_authorized(&mut state, height, transaction) {
                    Ok(()) => TransactionOutcome::Committed,
                    Err(Failure::Rejected(reason)) => TransactionOutcome::Rejected(reason),
                    Err(Failure::Execution { plugin, reason }) => {
                        return Err(ApplyError::ExecutionFailure {
                            height,
                            index,
                            plugin,
                            reason,
                        })
                    }
                }
            };
            outcomes.push(outcome);
        }
        let changes = state.into_changes();
        let link = commitment::next_commitment(&self.commitment, &changes);
        let state_commitment = self.sealed_commitment(height, link);
        Ok(ExecutedBlock {
            height,
            timestamp_ms,
            state_commitment,
            outcomes,
            link,
            changes,
            replay_entries,
            recent,
        })
    }

    /// Validates and runs one transaction; its writes stay only if it is committed.
    /// The checks that decide whether the payload is spent: limits, time, and signatures that
    /// satisfy the creator's signing condition. A transaction that fails them is rejected but
    /// not remembered for replay protection, so (say) a multisig payload included before all
    /// its signatures were collected can still be committed later, fully signed.
    fn authorize(
        &self,
        state: &Layered<'_>,
        timestamp_ms: u64,
        payloads: Payloads,
        transaction: &SignedTransaction,
        hash: &TransactionHashes,
    ) -> Result<(), RejectionReason> {
        let payload = &transaction.payload;
        if hash.encoded_bytes > TRANSACTION_BYTES_MAX {
            return Err(StatelessError::TooLarge {
                bytes: hash.encoded_bytes,
            }
            .into());
        }
        transaction.check_stateless(&self.chain, payloads)?;
        if timestamp_ms > payload.expires_at_ms() {
            return Err(RejectionReason::Expired {
                expires_at_ms: payload.expires_at_ms(),
                block_time_ms: timestamp_ms,
            });
        }
        if payload.created_at_ms > timestamp_ms.saturating_add(FUTURE_SKEW_MS_MAX) {
            return Err(RejectionReason::FromTheFuture {
                created_at_ms: payload.created_at_ms,
                block_time_ms: timestamp_ms,
            });
        }
        if transaction.is_unsigned_opaque() {
            // Past `check_stateless`, so the chain takes opaque payloads: no creator to
            // authorize, nothing to run.
            return Ok(());
        }
        let creator = state
            .account(&payload.creator)
            .ok_or_else(|| RejectionReason::NoSuchCreator(payload.creator.clone()))?;
        check_signing_condition(creator, transaction)
    }

    /// Consults the creator's domain plugin and runs the instructions of an authorized
    /// transaction; its writes stay only if every instruction succeeds.
    fn run_authorized(
        &self,
        state: &mut Layered<'_>,
        height: u64,
        transaction: &SignedTransaction,
    ) -> Result<(), Failure> {
        let payload = &transaction.payload;
        if transaction.is_unsigned_opaque() {
            return Ok(());
        }
        let domain = state
            .domain(&payload.creator.domain)
            .ok_or_else(|| Failure::Rejected(RejectionReason::NoSuchCreator(payload.creator.clone())))?;
        if domain.validator.as_str() != DEFAULT_PLUGIN {
            self.consult_plugin(state, height, domain, transaction)?;
        }
        state.begin();
        let mut executor = Executor {
            state,
            authority: &payload.creator,
            genesis_authority: &self.genesis_authority,
            plugins: &self.plugins,
            height,
        };
        for (index, instruction) in payload.instructions.iter().enumerate() {
            if let Err(error) = executor.execute(instruction) {
                executor.state.undo();
                return Err(Failure::Rejected(RejectionReason::Instruction { index, error }));
            }
        }
        executor.state.keep();
        Ok(())
    }

    fn consult_plugin(
        &self,
        state: &Layered<'_>,
        height: u64,
        domain: &Domain,
        transaction: &SignedTransaction,
    ) -> Result<(), Failure> {
        let plugin_name = domain.validator.clone();
        let Some(plugin) = self.plugins.get(plugin_name.as_str()) else {
            // A domain can only name a plugin this node knew when the domain was registered;
            // a node started without it cannot decide, which is an execution failure, not a
            // verdict on the transaction.
            return Err(Failure::Execution {
                plugin: plugin_name,
                reason: "plugin is not registered on this node".to_string(),
            });
        };
        let context = PluginContext { state, height };
        match plugin.validate(&context, domain, transaction) {
            Verdict::Valid => Ok(()),
            Verdict::Invalid(reason) => Err(Failure::Rejected(RejectionReason::Plugin {
                plugin: plugin_name,
                reason,
            })),
            Verdict::ExecutionFailure(reason) => Err(Failure::Execution {
                plugin: plugin_name,
                reason,
            }),
        }
    }

    /// Applies an executed block, committed in `view`: every write of the block at once, and
    /// the leaders of the views before `view` recorded as failed (leader reputation, R1).
    pub fn commit(&mut self, executed: ExecutedBlock, block_hash: Hash, view: u64) -> AppliedBlock {
        let ExecutedBlock {
            height,
            timestamp_ms,
            state_commitment,
            outcomes,
            link,
            changes,
            replay_entries,
            recent,
        } = executed;
        assert_eq!(height, self.height + 1, "commit of an executed block out of order");
        self.record_failed_leaders(height, view);
        let removed_accounts: Vec<AccountId> = changes
            .accounts
            .iter()
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        changes.apply_to(&mut self.world);
        self.replay.record_block(replay_entries, timestamp_ms);
        for (account, hash) in recent {
            // Only accounts that exist keep a list: a rejected transaction by a made-up creator
            // must not make every node remember that name forever.
            if !self.world.accounts.contains_key(&account) {
                continue;
            }
            let list = self.recent.entry(account).or_default();
            if list.len() == RECENT_TRANSACTIONS_PER_ACCOUNT {
                list.pop_front();
            }
            list.push_back(RecentTransaction { hash, height });
        }
        for account in removed_accounts {
            self.recent.remove(&account);
        }
        self.height = height;
        self.head_hash = block_hash;
        self.commitment = state_commitment;
        self.last_timestamp_ms = timestamp_ms;
        self.transactions += outcomes.len() as u64;
        if let Some(checkpoint) = snapshot::bound_checkpoint(height, self.checkpoint_interval) {
            if let Some(encoding) = self.encoding.take_if(|encoding| encoding.height == checkpoint) {
                self.checkpoint = Some(encoding.wait());
            }
            if self.checkpoint.as_ref().is_some_and(|held| held.height() == checkpoint) {
                self.checkpoint_link = Some(link);
            }
        }
        if height % self.checkpoint_interval == 0 {
            self.encoding = Some(Encoding::start(self));
        }
        AppliedBlock {
            height,
            timestamp_ms,
            state_commitment,
            outcomes,
        }
    }

    /// R1, leader reputation: the validators that led a view which failed (a view below the one
    /// its height was committed in) in the last [`DEMOTION_HEIGHTS_PER_VALIDATOR`] * n heights,
    /// the most recent first, at most `f` of them and validators only. The topology of the next
    /// height puts them behind the others, so a crashed validator costs one view change per
    /// window instead of one every n heights. Derived from the chain alone (the views in the
    /// headers): fast and strict init rebuild it by replaying from genesis. At most `f`, so
    /// that `f` Byzantine validators failing views on purpose demote no more honest ones than
    /// there are Byzantine ones, and every view still rotates through all validators (R2).
    pub fn demoted(&self) -> std::collections::BTreeSet<PublicKey> {
        let validators = self.validators();
        let limit = kasane_model::block::max_faulty(validators.len());
        let mut demoted = std::collections::BTreeSet::new();
        let recent_first = self
            .leader_failures
            .iter()
            .rev()
            .flat_map(|(_, failed)| failed.iter().rev());
        for key in recent_first {
            if demoted.len() >= limit {
                break;
            }
            if validators.contains(key) {
                demoted.insert(*key);
            }
        }
        demoted
    }

    /// Before block `height` changes the validator set: the leaders of its views below `view`,
    /// by the order its topology had; then forget what fell out of the window.
    fn record_failed_leaders(&mut self, height: u64, view: u64) {
        let validators = self.validators();
        if view > 0 && !validators.is_empty() {
            let order = kasane_model::block::view_zero_order(&validators, height, &self.demoted());
            let n = order.len() as u64;
            let failed: Vec<PublicKey> = (0..view.min(n)).map(|view| order[(view % n) as usize]).collect();
            self.leader_failures.push_back((height, failed));
        }
        let window = DEMOTION_HEIGHTS_PER_VALIDATOR * (validators.len().max(1) as u64);
        while self
            .leader_failures
            .front()
            .is_some_and(|(failed_at, _)| failed_at + window <= height)
        {
            self.leader_failures.pop_front();
        }
    }

    /// Domains, for queries.
    pub(crate) fn domain_ids(&self) -> impl Iterator<Item = &DomainId> {
        self.world.domains.keys()
    }
}

enum Failure {
    Rejected(RejectionReason),
    Execution { plugin: Name, reason: String },
}

fn check_hash_count(
    height: u64,
    transactions: &[SignedTransaction],
    hashes: &[TransactionHashes],
) -> Result<(), ApplyError> {
    if hashes.len() != transactions.len() {
        return Err(ApplyError::HashCountMismatch {
            height,
            hashes: hashes.len(),
            transactions: transactions.len(),
        });
    }
    Ok(())
}

fn check_signing_condition(creator: &Account, transaction: &SignedTransaction) -> Result<(), RejectionReason> {
    for key in transaction.signers() {
        if !creator.signatories.contains(key) {
            return Err(RejectionReason::NotASignatory {
                account: creator.id.clone(),
                key: *key,
            });
        }
    }
    // Signers are distinct (checked statelessly) and all signatories, so their count is the
    // number of distinct signatories that signed.
    let found = transaction.signatures.len();
    if found < usize::from(creator.signatures_required) {
        return Err(RejectionReason::NotEnoughSignatures {
            account: creator.id.clone(),
            required: creator.signatures_required,
            found,
        });
    }
    Ok(())
}
