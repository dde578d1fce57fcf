//! The HTTP API (axum), versioned under /v1, plus /metrics, and the admin router for the
//! loopback-only admin listener. Every error is JSON: `{"error": {"code": ..., "message": ...}}`.
//! Bodies are parsed by hand so a malformed body gets that JSON error too, never a panic.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use kasane_consensus::message::GOSSIP_TRANSACTIONS_MAX;
use kasane_kura::KuraError;
use kasane_model::codec::{self, Versioned};
use kasane_model::hash::Blake2bMerkle;
use kasane_model::ids::{AccountId, DomainId, Name};
use kasane_model::transaction::TransactionHashes;
use kasane_model::{merkle, CommittedBlock, Hash, SignedTransaction};
use kasane_p2p::FaultRules;
use kasane_wsv::query::{Page, PAGE_LIMIT_MAX};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

use super::commit_wait::Wait;
use super::runtime::{Command, Shared};
use super::state::{Metrics, TxState};
use super::verifier::preverify_transactions;

/// A postcard body of POST /v1/transactions: a versioned list of signed transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionBatch(pub Vec<SignedTransaction>);

impl Versioned for TransactionBatch {
    const NAME: &'static str = "transaction batch";
    const VERSION: u8 = 1;
    const ENCODED_BYTES_MAX: usize = 64 << 20;
}

/// The content type of postcard bodies.
pub const POSTCARD: &str = "application/x-postcard";

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// More fields of the error object, when there is more to say than the message.
    details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// This error with `details` (a JSON object) merged into its error object.
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(super) fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node is shutting down",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(Value::Object(details)), Value::Object(fields)) = (self.details, &mut error) {
            fields.extend(details);
        }
        let body = json!({ "error": error });
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn parse_hash(text: &str) -> Result<Hash, ApiError> {
    Hash::from_hex(text).map_err(|error| ApiError::bad_request(format!("{text:?} is not a 32-byte hex hash: {error}")))
}

fn parse_height(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a block height")))
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

pub fn router(shared: Arc<Shared>) -> Router {
    let body_limit = shared.body_bytes_max;
    Router::new()
        .route("/v1/transactions", post(submit))
        .route("/v1/transactions/{hash}", get(transaction))
        .route("/v1/status", get(status))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/blocks/{height}/proof/{tx_hash}", get(proof))
        .route("/v1/accounts", get(accounts))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/domains", get(domains))
        .route("/v1/peers", get(peers))
        .route("/v1/contracts/{name}/entries", get(contract_entries))
        .route("/v1/contracts/{name}/entries/{key}", get(contract_entry))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shared)
}

pub fn admin_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route("/admin/network", get(network_stats))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(shared)
}

/// Reads a whole body within the limit, answering 413 past it.
async fn body_bytes(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the limit of {limit} bytes"),
        )
    })
}

fn parse_transactions(headers: &HeaderMap, body: &[u8]) -> Result<Vec<SignedTransaction>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json");
    let transactions = if content_type.starts_with(POSTCARD) || content_type.starts_with("application/octet-stream") {
        codec::decode::<TransactionBatch>(body)
            .map_err(|error| ApiError::bad_request(error.to_string()))?
            .0
    } else if content_type.starts_with("application/json") {
        let value: Value =
            serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("malformed JSON: {error}")))?;
        if value.is_array() {
            serde_json::from_value(value)
        } else {
            serde_json::from_value(value).map(|transaction| vec![transaction])
        }
        .map_err(|error| ApiError::bad_request(format!("not a signed transaction or a list of them: {error}")))?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type {content_type:?}: send application/json or {POSTCARD}"),
        ));
    };
    if transactions.is_empty() {
        return Err(ApiError::bad_request("no transactions"));
    }
    if transactions.len() > GOSSIP_TRANSACTIONS_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_transactions",
            format!(
                "{} transactions in one request; the limit is {GOSSIP_TRANSACTIONS_MAX}",
                transactions.len()
            ),
        ));
    }
    Ok(transactions)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitResult {
    pub hash: String,
    pub payload_hash: String,
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// With `?wait=commit`: the committed block that holds it, its outcome and its proof.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub block: Option<super::commit_wait::Inclusion>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub accepted: usize,
    pub rejected: usize,
    pub results: Vec<SubmitResult>,
}

/// Takes back a request's transactions from the count of those being admitted when the
/// request ends, however it ends.
struct Admitting<'a> {
    counter: &'a AtomicUsize,
    count: usize,
}

impl Drop for Admitting<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.count, Ordering::AcqRel);
    }
}

/// The `503` of a full queue, counted.
fn queue_full(shared: &Shared, queued: usize, in_flight: usize) -> ApiError {
    Metrics::add(&shared.metrics.queue_full_responses, 1);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_full",
        format!(
            "the transaction queue is full ({queued} of {} waiting for a block, {in_flight} of {} being admitted); retry later",
            shared.queue_capacity,
            2 * shared.queue_capacity
        ),
    )
}

async fn submit(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let wait = Wait::parse(query.as_deref())?;
    let body = body_bytes(body, shared.body_bytes_max).await?;
    // Admission bounds what waits in the queue by the queue's capacity, and, separately, what
    // earlier requests are still bringing to it (being checked, or waiting for the consensus
    // task) by twice that. Without the second bound a burst of requests would all pass a queue
    // that has not seen them yet and pile up work (and signatures checked far ahead, which the
    // bounded signature memory may forget before their block needs them) instead of being
    // refused. It is looser than the first because requests wait for the consensus task while
    // it executes a block; a tighter one refused load the node then went on to carry.
    let (queued, height, cluster_height) = {
        let status = shared.status.borrow();
        (status.queue_len, status.height, status.cluster_height)
    };
    // A node far behind its peers (wiped, or back from a long stop) would queue what it cannot
    // propose and check replays against an old state: it sends clients elsewhere until it has
    // caught up, before any work is done.
    if cluster_height > height + CATCHING_UP_BLOCKS {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "catching_up",
            format!(
                "this node is catching up (height {height}, f + 1 validators report {cluster_height}); submit to another node or retry later"
            ),
        ));
    }
    // A full queue refuses before the body is decoded: under overload most requests end here,
    // and decoding them was a visible share of a saturated node's processor.
    if queued >= shared.queue_capacity {
        return Err(queue_full(&shared, queued, shared.admitting.load(Ordering::Acquire)));
    }
    let transactions = parse_transactions(&headers, &body)?;
    let in_flight = shared.admitting.fetch_add(transactions.len(), Ordering::AcqRel);
    let admitting = Admitting {
        counter: &shared.admitting,
        count: transactions.len(),
    };
    if in_flight >= 2 * shared.queue_capacity {
        return Err(queue_full(&shared, queued, in_flight));
    }
    // Hashing and signature checks run on the blocking pool, not on the consensus task.
    let mut cache = shared.key_cache.clone();
    let (transactions, prepared) = tokio::task::spawn_blocking(move || {
        let prepared = preverify_transactions(&mut cache, &transactions);
        (transactions, prepared)
    })
    .await
    .map_err(|_| ApiError::unavailable())?;
    let hashes: Vec<TransactionHashes> = prepared.iter().map(|prepared| prepared.hashes).collect();
    // Subscribed before the transactions go in, so no commit is missed.
    let commits = wait.commit.then(|| shared.events.subscribe());
    let (reply, answer) = oneshot::channel();
    let (held, acknowledged) = oneshot::channel();
    shared
        .commands
        .send(Command::Submit {
            transactions,
            prepared,
            reply,
            held,
        })
        .await
        .map_err(|_| ApiError::unavailable())?;
    let mut outcomes = answer.await.map_err(|_| ApiError::unavailable())?;
    // Admitted (or refused): from here on they count in the queue, not as being admitted, so a
    // request waiting for its holders or its commit does not hold back the admission of others.
    drop(admitting);
    // What this node did with each, recorded now (its commit may come before the holders).
    {
        let now = std::time::Instant::now();
        let mut table = shared.transactions.lock().map_err(|_| ApiError::unavailable())?;
        for (outcome, hash) in outcomes.iter().zip(&hashes) {
            match outcome {
                Ok(()) => table.queued(hash.payload, hash.transaction, now),
                Err(reason) => table.refused(hash.payload, hash.transaction, reason.clone()),
            }
        }
    }
    // A transaction is acknowledged once f + 1 validators hold it, not when this node queued it
    // (docs/PROTOCOL.md section 7.1).
    if outcomes.iter().any(Result::is_ok) {
        acknowledge(&shared, &hashes, &mut outcomes, acknowledged).await?;
    }
    Metrics::add(&shared.metrics.submitted, outcomes.len() as u64);
    let mut results: Vec<SubmitResult> = outcomes
        .into_iter()
        .zip(&hashes)
        .map(|(outcome, hash)| SubmitResult {
            hash: hash.transaction.to_hex(),
            payload_hash: hash.payload.to_hex(),
            accepted: outcome.is_ok(),
            error: outcome.err(),
            block: None,
        })
        .collect();
    let accepted = results.iter().filter(|result| result.accepted).count();
    Metrics::add(&shared.metrics.admission_refused, (results.len() - accepted) as u64);
    let all_refused_for = |prefix: &str| {
        accepted == 0
            && results
                .iter()
                .all(|result| result.error.as_deref().is_some_and(|error| error.starts_with(prefix)))
    };
    if all_refused_for(NOT_HELD) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_held",
            format!(
                "{} within {} ms; they may still commit, and resubmitting them is safe",
                results
                    .first()
                    .and_then(|result| result.error.clone())
                    .unwrap_or_default(),
                shared.hold_wait.as_millis()
            ),
        ));
    }
    if all_refused_for("the queue is full") {
        Metrics::add(&shared.metrics.queue_full_responses, 1);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            "the transaction queue is full; retry later",
        ));
    }
    if let Some(commits) = commits {
        if accepted > 0 {
            super::commit_wait::wait_for_commit(&shared, &mut results, &hashes, commits, wait.timeout).await?;
        }
    }
    let response = SubmitResponse {
        accepted,
        rejected: results.len() - accepted,
        results,
    };
    Ok(Json(response).into_response())
}

/// How the error of an admitted transaction that was not acknowledged in time begins.
pub const NOT_HELD: &str = "not held by f + 1 validators";

/// How many blocks below the height `f + 1` validators report a node may be and still take
/// client transactions (`503 catching_up` beyond it). Peers' status comes every
/// `status_interval_ms`, so a healthy node is often a block or two behind what they said.
pub const CATCHING_UP_BLOCKS: u64 = 20;

/// Waits up to `api.hold_wait_ms` for every admitted transaction to be held by f + 1
/// validators; those still short of it turn into errors that say how many hold them.
async fn acknowledge(
    shared: &Shared,
    hashes: &[TransactionHashes],
    outcomes: &mut [Result<(), String>],
    acknowledged: oneshot::Receiver<()>,
) -> Result<(), ApiError> {
    if let Ok(Ok(())) = tokio::time::timeout(shared.hold_wait, acknowledged).await {
        return Ok(());
    }
    let payloads: Vec<Hash> = hashes.iter().map(|hash| hash.payload).collect();
    let holders = shared
        .read(move |replica| {
            payloads
                .iter()
                .map(|payload| replica.holders(payload))
                .collect::<Vec<_>>()
        })
        .await
        .ok_or_else(ApiError::unavailable)?;
    for (outcome, holders) in outcomes.iter_mut().zip(holders) {
        // `None`: no longer counting, so held (or committed) by now.
        if let (Ok(()), Some((held, needed))) = (&outcome, holders) {
            Metrics::add(&shared.metrics.not_held, 1);
            *outcome = Err(format!("{NOT_HELD} (held by {held} of the {needed} needed)"));
        }
    }
    Ok(())
}

async fn transaction(State(shared): State<Arc<Shared>>, Path(hash): Path<String>) -> ApiResult {
    let hash = parse_hash(&hash)?;
    let known = shared
        .transactions
        .lock()
        .map_err(|_| ApiError::unavailable())?
        .get(&hash);
    if let Some((payload, state)) = known {
        return Ok(Json(json!({"payload_hash": payload.to_hex(), "state": state})).into_response());
    }
    // Gossiped to this node and still waiting: the replica's queue knows it by payload hash.
    let queued = shared
        .read(move |replica| replica.is_queued(&hash))
        .await
        .ok_or_else(ApiError::unavailable)?;
    if queued {
        return Ok(Json(json!({"payload_hash": hash.to_hex(), "state": TxState::Queued})).into_response());
    }
    Err(ApiError::not_found(format!(
        "transaction {hash} is not known to this node"
    )))
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status.borrow().clone();
    let mut value = serde_json::to_value(&status).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("peers_connected".into(), json!(shared.network.peers_connected()));
        object.insert(
            "auditing".into(),
            json!(shared.auditing.load(std::sync::atomic::Ordering::Relaxed)),
        );
        object.insert("commits".into(), json!(Metrics::get(&shared.metrics.commits)));
        object.insert("view_changes".into(), json!(Metrics::get(&shared.metrics.view_changes)));
    }
    Json(value).into_response()
}

/// The (transaction hash, payload hash) of each transaction of a block: from the node's memory
/// of recent commits when it has the block, else computed.
fn block_hashes(shared: &Shared, committed: &CommittedBlock) -> Vec<(Hash, Hash)> {
    let hash = committed.block.hash();
    let remembered = shared.recent_blocks.lock().ok().and_then(|recent| {
        recent
            .get(&committed.block.header.height)
            .filter(|block| block.hash == hash && block.transactions.len() == committed.block.transactions.len())
            .map(|block| block.transactions.clone())
    });
    remembered.unwrap_or_else(|| {
        committed
            .block
            .transactions
            .iter()
            .map(|transaction| {
                let hashes = transaction.hashes();
                (hashes.transaction, hashes.payload)
            })
            .collect()
    })
}

/// The JSON form of a committed block, given its transactions' hashes.
pub fn block_json(committed: &CommittedBlock, hashes: &[(Hash, Hash)]) -> Value {
    let block = &committed.block;
    let header = &block.header;
    let tx_hashes: Vec<String> = hashes.iter().map(|(transaction, _)| transaction.to_hex()).collect();
    let certificate = &committed.certificate;
    json!({
        "height": header.height,
        "hash": block.hash().to_hex(),
        "previous_hash": header.previous_hash.to_hex(),
        "view": header.view,
        "proposer": header.proposer.to_hex(),
        "tx_merkle_root": header.tx_merkle_root.to_hex(),
        "state_commitment": header.state_commitment.to_hex(),
        "timestamp_ms": header.timestamp_ms,
        "view_change_proof": header.view_change_proof.as_ref().map(|proof| json!({
            "view": proof.view,
            "signers": proof.signatures.iter().map(|signature| signature.validator.to_hex()).collect::<Vec<_>>(),
        })),
        "tx_hashes": tx_hashes,
        "certificate": {
            "kind": format!("{:?}", certificate.vote.kind).to_lowercase(),
            "height": certificate.vote.height,
            "view": certificate.vote.view,
            "block_hash": certificate.vote.block_hash.to_hex(),
            "signers": certificate.signatures.iter().map(|signature| signature.validator.to_hex()).collect::<Vec<_>>(),
        },
    })
}

pub(super) async fn read_block(shared: &Shared, height: u64) -> Result<CommittedBlock, ApiError> {
    let read = shared
        .read(move |replica| {
            let kura = replica.kura();
            (height >= 1 && height <= kura.height()).then(|| match kura.read(height) {
                Err(KuraError::NotFilled { .. }) => Err(None),
                read => read.map_err(Some),
            })
        })
        .await
        .ok_or_else(ApiError::unavailable)?;
    match read {
        None => Err(ApiError::not_found(format!("no block at height {height}"))),
        Some(Ok(block)) => Ok(block),
        // A store restored from a snapshot fetches the blocks below it in the background.
        Some(Err(None)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_stored_yet",
            format!("block {height} is not stored on this node yet: it restored a snapshot and fetches the blocks below it in the background; ask another node or later"),
        )),
        Some(Err(Some(error))) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            format!("reading block {height}: {error}"),
        )),
    }
}

/// A committed block as JSON, or, when the request accepts `application/x-postcard`, as its
/// postcard encoding (`CommittedBlock`, transactions included).
async fn block(State(shared): State<Arc<Shared>>, headers: HeaderMap, Path(height): Path<String>) -> ApiResult {
    let height = parse_height(&height)?;
    let committed = read_block(&shared, height).await?;
    let wants_postcard = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(POSTCARD));
    if wants_postcard {
        return Ok(([(header::CONTENT_TYPE, POSTCARD)], codec::encode(&committed)).into_response());
    }
    let worker = shared.clone();
    let value = tokio::task::spawn_blocking(move || {
        let hashes = block_hashes(&worker, &committed);
        let mut value = block_json(&committed, &hashes);
        // Each transaction's outcome, as far as this node remembers it (it does for every block
        // it committed since it started, within the table's bound): "committed", "rejected:
        // <reason>", or null when unknown.
        let outcomes: Vec<Value> = match worker.transactions.lock() {
            Ok(table) => hashes
                .iter()
                .map(|(_, payload)| match table.get(payload) {
                    Some((_, TxState::Committed { height: at })) if at == height => json!("committed"),
                    Some((_, TxState::Committed { .. })) => json!("rejected: committed at another height"),
                    Some((
                        _,
                        TxState::Rejected {
                            reason,
                            height: Some(at),
                        },
                    )) if at == height => {
                        json!(format!("rejected: {reason}"))
                    }
                    _ => Value::Null,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if let Some(object) = value.as_object_mut() {
            object.insert("outcomes".into(), json!(outcomes));
        }
        value
    })
    .await
    .map_err(|_| ApiError::unavailable())?;
    Ok(Json(value).into_response())
}

async fn proof(State(shared): State<Arc<Shared>>, Path((height, tx_hash)): Path<(String, String)>) -> ApiResult {
    let height = parse_height(&height)?;
    let tx_hash = parse_hash(&tx_hash)?;
    let committed = read_block(&shared, height).await?;
    Ok(Json(inclusion_json(&shared, &committed, tx_hash)?).into_response())
}

/// The Merkle inclusion proof of `tx_hash` in `committed`, as JSON.
pub(super) fn inclusion_json(shared: &Shared, committed: &CommittedBlock, tx_hash: Hash) -> Result<Value, ApiError> {
    let height = committed.block.header.height;
    let hashes: Vec<Hash> = block_hashes(shared, committed)
        .into_iter()
        .map(|(transaction, _)| transaction)
        .collect();
    let index = hashes
        .iter()
        .position(|hash| *hash == tx_hash)
        .ok_or_else(|| ApiError::not_found(format!("transaction {tx_hash} is not in block {height}")))?;
    let leaves: Vec<Hash> = hashes
        .iter()
        .map(|hash| merkle::leaf_hash::<Blake2bMerkle>(hash.as_bytes()))
        .collect();
    let proof = merkle::inclusion_proof_from_leaf_hashes::<Blake2bMerkle>(&leaves, index)
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "proof_error", error.to_string()))?;
    Ok(json!({
        "height": height,
        "tx_hash": tx_hash.to_hex(),
        "leaf_index": proof.leaf_index,
        "tree_size": proof.tree_size,
        "path": proof.path.iter().map(Hash::to_hex).collect::<Vec<_>>(),
        "tx_merkle_root": committed.block.header.tx_merkle_root.to_hex(),
    }))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
    domain: Option<String>,
}

impl PageQuery {
    fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(Page::default().limit);
        if limit == 0 || limit > PAGE_LIMIT_MAX {
            return Err(ApiError::bad_request(format!(
                "limit must be within 1..={PAGE_LIMIT_MAX}"
            )));
        }
        Ok(Page {
            offset: self.offset.unwrap_or(0),
            limit,
        })
    }
}

#[derive(Debug, Deserialize)]
struct EntriesQuery {
    prefix: Option<String>,
    value_prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

fn parse_hex(what: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(text).map_err(|error| ApiError::bad_request(format!("{what} {text:?} is not hex: {error}")))
}

fn parse_contract(text: &str) -> Result<Name, ApiError> {
    text.parse()
        .map_err(|error| ApiError::bad_request(format!("contract {text:?}: {error}")))
}

/// A contract's entries whose key starts with `prefix` (hex) and value with `value_prefix`
/// (hex), after `after` (hex), in key order: `{"height", "entries": [{"key", "value"}]}`, keys
/// and values in hex. It scans the contract's section: for wallets and tools.
async fn contract_entries(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(query_error)?;
    let contract = parse_contract(&name)?;
    let prefix = parse_hex("prefix", query.prefix.as_deref().unwrap_or(""))?;
    let after = query
        .after
        .as_deref()
        .map(|text| parse_hex("after", text))
        .transpose()?;
    let value_prefix = query
        .value_prefix
        .as_deref()
        .map(|text| parse_hex("value_prefix", text))
        .transpose()?;
    let limit = query.limit.unwrap_or(Page::default().limit);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be within 1..={PAGE_LIMIT_MAX}"
        )));
    }
    let (height, entries) = shared
        .read(move |replica| {
            let wsv = replica.wsv();
            let entries = wsv
                .world()
                .store_scan(&contract, &prefix, value_prefix.as_deref(), after.as_deref(), limit);
            (wsv.height(), entries)
        })
        .await
        .ok_or_else(ApiError::unavailable)?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|(key, value)| json!({"key": hex::encode(key), "value": hex::encode(value)}))
        .collect();
    Ok(Json(json!({"height": height, "entries": entries})).into_response())
}

/// One entry of a contract: `{"height", "key", "value"}`, or 404.
async fn contract_entry(State(shared): State<Arc<Shared>>, Path((name, key)): Path<(String, String)>) -> ApiResult {
    let contract = parse_contract(&name)?;
    let key = parse_hex("key", &key)?;
    let lookup = key.clone();
    let (height, value) = shared
        .read(move |replica| {
            let wsv = replica.wsv();
            (
                wsv.height(),
                wsv.world().store_value(&contract, &lookup).map(<[u8]>::to_vec),
            )
        })
        .await
        .ok_or_else(ApiError::unavailable)?;
    match value {
        Some(value) => {
            Ok(Json(json!({"height": height, "key": hex::encode(&key), "value": hex::encode(value)})).into_response())
        }
        None => Err(ApiError::not_found(format!(
            "contract {name} has no entry {}",
            hex::encode(&key)
        ))),
    }
}

fn query_error(error: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request(format!("query string: {error}"))
}

async fn accounts(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(query_error)?;
    let page = query.page()?;
    let domain = match &query.domain {
        Some(text) => Some(
            text.parse::<DomainId>()
                .map_err(|error| ApiError::bad_request(format!("domain {text:?}: {error}")))?,
        ),
        None => None,
    };
    let ids = shared
        .read(move |replica| replica.wsv().accounts(domain.as_ref(), page))
        .await
        .ok_or_else(ApiError::unavailable)?;
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    Ok(Json(json!({"offset": page.offset, "limit": page.limit, "accounts": ids})).into_response())
}

async fn account(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(query_error)?;
    let page = query.page()?;
    let id: AccountId = id
        .parse()
        .map_err(|error| ApiError::bad_request(format!("account {id:?}: {error}")))?;
    let lookup = id.clone();
    let found = shared
        .read(move |replica| {
            let wsv = replica.wsv();
            wsv.account(&lookup).map(|account| {
                json!({
                    "id": account.id.to_string(),
                    "signatories": account.signatories.iter().map(|key| key.to_hex()).collect::<Vec<_>>(),
                    "signatures_required": account.signatures_required,
                    "balances": wsv.balances(&lookup, page).into_iter().map(|(definition, amount)| json!({
                        "asset": definition.to_string(),
                        // u128 amounts as strings: JSON numbers lose precision past 2^53.
                        "amount": amount.to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
        })
        .await
        .ok_or_else(ApiError::unavailable)?;
    match found {
        Some(value) => Ok(Json(value).into_response()),
        None => Err(ApiError::not_found(format!("no account {id}"))),
    }
}

async fn domains(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(query_error)?;
    let page = query.page()?;
    let ids = shared
        .read(move |replica| replica.wsv().domains(page))
        .await
        .ok_or_else(ApiError::unavailable)?;
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    Ok(Json(json!({"offset": page.offset, "limit": page.limit, "domains": ids})).into_response())
}

async fn peers(State(shared): State<Arc<Shared>>) -> ApiResult {
    let keys = shared
        .read(|replica| replica.wsv().peers())
        .await
        .ok_or_else(ApiError::unavailable)?;
    let peers: Vec<Value> = keys
        .iter()
        .map(|key| json!({"key": key.to_hex(), "connected": shared.network.is_connected(key)}))
        .collect();
    Ok(Json(json!({ "peers": peers })).into_response())
}

/// Server-sent events: committed blocks, transaction outcomes and view changes. A subscriber
/// that falls behind by more than the buffer gets a `lagged` event saying how many it missed.
async fn events(State(shared): State<Arc<Shared>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = shared.events.subscribe();
    let stop = shared.stop.clone();
    let stream = futures_util::stream::unfold((receiver, stop), |(mut receiver, mut stop)| async move {
        let event = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return None,
            received = receiver.recv() => match received {
                Ok(event) => Event::default()
                    .event(match &event {
                        super::state::ChainEvent::Block { .. } => "block",
                        super::state::ChainEvent::Transaction { .. } => "transaction",
                        super::state::ChainEvent::ViewChange { .. } => "view_change",
                    })
                    .json_data(&event)
                    .unwrap_or_default(),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(missed.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), (receiver, stop)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn write_summary(out: &mut String, name: &str, help: &str, latency: &super::state::Latency) {
    let (count, sum, quantiles) = latency.summary();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    for (quantile, seconds) in quantiles {
        let _ = writeln!(out, "{name}{{quantile=\"{quantile}\"}} {seconds}");
    }
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
}

fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// Prometheus text exposition format.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.status.borrow().clone();
    let metrics = &shared.metrics;
    let network = shared.network.stats();
    let mut out = String::with_capacity(4096);
    write_metric(&mut out, "kasane_height", "gauge", "Committed height.", status.height);
    let tx_table = shared.transactions.lock().map(|table| table.len()).unwrap_or(0);
    let recent_block_transactions: usize = shared
        .recent_blocks
        .lock()
        .map(|recent| recent.values().map(|block| block.transactions.len()).sum())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP kasane_table_entries Entries of the node's in-memory tables.\n# TYPE kasane_table_entries gauge"
    );
    for (table, entries) in [
        ("queue", status.queue_len),
        ("replay", status.replay_entries),
        ("holding", status.holding),
        ("transactions", tx_table),
        ("recent_block_transactions", recent_block_transactions),
        ("keys", shared.key_cache.len()),
        ("verified_signatures", shared.key_cache.verified_len()),
    ] {
        let _ = writeln!(out, "kasane_table_entries{{table=\"{table}\"}} {entries}");
    }
    if let Some((bytes, buffered)) = shared.read(|replica| replica.footprint()).await {
        let _ = writeln!(
            out,
            "# HELP kasane_table_bytes Estimated bytes held by the node's tables (capacity, not entries).\n# TYPE kasane_table_bytes gauge"
        );
        let cache = shared.key_cache.footprint();
        for (table, value) in bytes.iter().chain(cache.iter()) {
            let _ = writeln!(out, "kasane_table_bytes{{table=\"{table}\"}} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP kasane_buffered Messages, blocks and transactions waiting in the consensus task's buffers.\n# TYPE kasane_buffered gauge"
        );
        for (buffer, value) in buffered {
            let _ = writeln!(out, "kasane_buffered{{buffer=\"{buffer}\"}} {value}");
        }
    }
    write_metric(
        &mut out,
        "kasane_view",
        "gauge",
        "Current view at the next height.",
        status.view,
    );
    write_metric(
        &mut out,
        "kasane_commits_total",
        "counter",
        "Blocks committed by this node since start.",
        Metrics::get(&metrics.commits),
    );
    write_metric(
        &mut out,
        "kasane_view_changes_total",
        "counter",
        "View changes since start.",
        Metrics::get(&metrics.view_changes),
    );
    write_metric(
        &mut out,
        "kasane_queue_length",
        "gauge",
        "Transactions waiting for a block.",
        status.queue_len as u64,
    );
    write_metric(
        &mut out,
        "kasane_transactions_committed_total",
        "counter",
        "Transactions committed in blocks.",
        Metrics::get(&metrics.transactions_committed),
    );
    write_metric(
        &mut out,
        "kasane_transactions_rejected_total",
        "counter",
        "Transactions rejected in blocks.",
        Metrics::get(&metrics.transactions_rejected),
    );
    write_metric(
        &mut out,
        "kasane_transactions_submitted_total",
        "counter",
        "Transactions received by the API.",
        Metrics::get(&metrics.submitted),
    );
    write_metric(
        &mut out,
        "kasane_admission_refused_total",
        "counter",
        "Transactions refused at admission.",
        Metrics::get(&metrics.admission_refused),
    );
    write_metric(
        &mut out,
        "kasane_queue_full_responses_total",
        "counter",
        "Submissions answered 503 because the queue was full.",
        Metrics::get(&metrics.queue_full_responses),
    );
    write_metric(
        &mut out,
        "kasane_transactions_not_held_total",
        "counter",
        "Admitted transactions not acknowledged: f + 1 validators did not hold them in time.",
        Metrics::get(&metrics.not_held),
    );
    write_metric(
        &mut out,
        "kasane_gossip_dropped_catching_up_total",
        "counter",
        "Transaction gossip dropped unchecked while the node was catching up.",
        Metrics::get(&metrics.gossip_dropped_catching_up),
    );
    write_metric(
        &mut out,
        "kasane_hold_sync_failures_total",
        "counter",
        "Syncs of the hold log that failed: what they carried was not answered as held.",
        Metrics::get(&metrics.hold_sync_failures),
    );
    write_metric(
        &mut out,
        "kasane_holds_restored_total",
        "counter",
        "Transactions queued again from the hold log when the node started.",
        Metrics::get(&metrics.holds_restored),
    );
    write_metric(
        &mut out,
        "kasane_state_sync_restores_total",
        "counter",
        "Checkpoint snapshots restored, proven by the certified block binding their root, and installed (state sync).",
        Metrics::get(&metrics.state_sync_restores),
    );
    write_metric(
        &mut out,
        "kasane_state_sync_abandoned_total",
        "counter",
        "Restores from a snapshot abandoned; block sync executes instead.",
        Metrics::get(&metrics.state_sync_abandoned),
    );
    write_metric(
        &mut out,
        "kasane_backfilled_blocks_total",
        "counter",
        "Blocks appended below a restored checkpoint without execution.",
        Metrics::get(&metrics.backfilled_blocks),
    );
    write_metric(
        &mut out,
        "kasane_local_checkpoint_height",
        "gauge",
        "The newest checkpoint saved beside the block store, which a restart replays from (0: none).",
        Metrics::get(&metrics.local_checkpoint_height),
    );
    write_metric(
        &mut out,
        "kasane_local_checkpoint_failures_total",
        "counter",
        "Saves of the local checkpoint that failed.",
        Metrics::get(&metrics.local_checkpoint_failures),
    );
    write_metric(
        &mut out,
        "kasane_proposal_digests_total",
        "counter",
        "Proposals received as digests and rebuilt from the queue.",
        Metrics::get(&metrics.proposal_digests),
    );
    write_metric(
        &mut out,
        "kasane_proposal_fetches_total",
        "counter",
        "Proposal digests that needed transactions fetched from their sender.",
        Metrics::get(&metrics.proposal_fetches),
    );
    for (name, help, counter) in [
        (
            "kasane_gossip_admitted_total",
            "Transactions gossiped by peers and queued here.",
            &metrics.gossip_admitted,
        ),
        (
            "kasane_gossip_already_held_total",
            "Transactions gossiped by peers that were already queued or committed here: duplicates.",
            &metrics.gossip_already_held,
        ),
        (
            "kasane_gossip_queue_full_total",
            "Transactions gossiped by peers and refused because the queue was full.",
            &metrics.gossip_queue_full,
        ),
        (
            "kasane_gossip_refused_total",
            "Transactions gossiped by peers and refused for another reason (signature, expiry, chain).",
            &metrics.gossip_refused,
        ),
    ] {
        write_metric(&mut out, name, "counter", help, Metrics::get(counter));
    }
    write_summary(
        &mut out,
        "kasane_proposal_step_seconds",
        "Consensus task time per received proposal (validation, execution, vote).",
        &metrics.proposal_step,
    );
    write_summary(
        &mut out,
        "kasane_commit_latency_seconds",
        "Admission to commit, for transactions submitted to this node.",
        &metrics.commit_latency,
    );
    write_metric(
        &mut out,
        "kasane_p2p_peers_connected",
        "gauge",
        "Peers with a live outgoing connection.",
        network.peers_connected as u64,
    );
    write_metric(
        &mut out,
        "kasane_p2p_bytes_sent_total",
        "counter",
        "Frame bytes written to peers.",
        network.bytes_sent,
    );
    write_metric(
        &mut out,
        "kasane_p2p_bytes_received_total",
        "counter",
        "Frame bytes read from peers.",
        network.bytes_received,
    );
    write_metric(
        &mut out,
        "kasane_p2p_malformed_total",
        "counter",
        "Frames refused as malformed or oversized.",
        network.malformed,
    );
    write_metric(
        &mut out,
        "kasane_p2p_handshakes_refused_total",
        "counter",
        "Incoming connections refused.",
        network.handshakes_refused,
    );
    let _ = writeln!(out, "# HELP kasane_p2p_dropped_total Messages dropped, by class and reason.\n# TYPE kasane_p2p_dropped_total counter");
    for (class, count) in &network.dropped_full {
        let _ = writeln!(
            out,
            "kasane_p2p_dropped_total{{class=\"{class}\",reason=\"queue_full\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "kasane_p2p_dropped_total{{class=\"any\",reason=\"fault_rule\"}} {}",
        network.dropped_fault
    );
    let _ = writeln!(
        out,
        "kasane_p2p_dropped_total{{class=\"any\",reason=\"connection_lost\"}} {}",
        network.dropped_unsent
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.network.faults()).into_response()
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: axum::body::Body) -> ApiResult {
    let body = body_bytes(body, 1 << 20).await?;
    let rules: FaultRules =
        serde_json::from_slice(&body).map_err(|error| ApiError::bad_request(format!("fault rules: {error}")))?;
    shared
        .network
        .set_faults(rules.clone())
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    tracing::warn!(rules = ?rules.peers, "fault rules replaced");
    Ok(Json(rules).into_response())
}

async fn network_stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.network.stats()).into_response()
}
