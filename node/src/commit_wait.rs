//! `POST /v1/transactions?wait=commit`: the answer waits until every accepted transaction is in
//! a committed block, and carries each one's height, outcome and Merkle inclusion proof; or it
//! is a `504 commit_timeout` error that says what is known of each (docs/API.md).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use kasane_model::transaction::TransactionHashes;
use kasane_model::CommittedBlock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::api::{inclusion_json, read_block, ApiError, SubmitResult};
use super::runtime::Shared;
use super::state::{ChainEvent, TxState};

/// How long `?wait=commit` waits when the request does not say.
pub const COMMIT_WAIT_DEFAULT: Duration = Duration::from_secs(10);
/// The longest `timeout_ms` a request may ask for.
pub const COMMIT_WAIT_MAX: Duration = Duration::from_secs(120);
/// How often the wait looks at the transaction table besides being woken by commits (a woken
/// waiter may have lagged behind the event stream).
const POLL: Duration = Duration::from_millis(50);

/// The query of a submission: `wait=commit` (or `wait=ack`, the default) and `timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub commit: bool,
    pub timeout: Duration,
}

impl Wait {
    pub fn parse(query: Option<&str>) -> Result<Wait, ApiError> {
        let mut wait = Wait {
            commit: false,
            timeout: COMMIT_WAIT_DEFAULT,
        };
        let mut timeout_given = false;
        for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "wait" => {
                    wait.commit = match value {
                        "commit" => true,
                        "ack" => false,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "wait={other:?}: the choices are \"ack\" (the default) and \"commit\""
                            )))
                        }
                    }
                }
                "timeout_ms" => {
                    let millis: u64 = value.parse().map_err(|_| {
                        ApiError::bad_request(format!("timeout_ms={value:?} is not a number of milliseconds"))
                    })?;
                    if millis == 0 || millis > COMMIT_WAIT_MAX.as_millis() as u64 {
                        return Err(ApiError::bad_request(format!(
                            "timeout_ms={millis}: it must be between 1 and {}",
                            COMMIT_WAIT_MAX.as_millis()
                        )));
                    }
                    wait.timeout = Duration::from_millis(millis);
                    timeout_given = true;
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter {other:?}; this endpoint takes wait and timeout_ms"
                    )))
                }
            }
        }
        if timeout_given && !wait.commit {
            return Err(ApiError::bad_request("timeout_ms applies only with wait=commit"));
        }
        Ok(wait)
    }
}

/// Where a transaction was committed: its block, its outcome there, and the proof that the
/// block's transaction Merkle root holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inclusion {
    pub height: u64,
    pub block_hash: String,
    /// "committed", or "rejected" (in the block, its instructions refused).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    pub proof: Value,
}

/// What the table says of a payload: in a block (height, rejection reason), or not yet.
fn in_block(state: &TxState) -> Option<(u64, Option<String>)> {
    match state {
        TxState::Committed { height } => Some((*height, None)),
        TxState::Rejected {
            reason,
            height: Some(height),
        } => Some((*height, Some(reason.clone()))),
        _ => None,
    }
}

/// Waits until every accepted result's transaction is in a committed block, then fills in
/// [`SubmitResult::block`]; past `timeout`, answers what is known instead.
pub async fn wait_for_commit(
    shared: &Shared,
    results: &mut [SubmitResult],
    hashes: &[TransactionHashes],
    mut commits: broadcast::Receiver<ChainEvent>,
    timeout: Duration,
) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let waiting: Vec<usize> = (0..results.len()).filter(|index| results[*index].accepted).collect();
    let mut found: BTreeMap<usize, (u64, Option<String>)> = BTreeMap::new();
    loop {
        {
            let table = shared.transactions.lock().map_err(|_| ApiError::unavailable())?;
            for index in &waiting {
                if let Some((_, state)) = table.get(&hashes[*index].payload) {
                    if let Some(place) = in_block(&state) {
                        found.insert(*index, place);
                    }
                }
            }
        }
        if found.len() == waiting.len() {
            break;
        }
        tokio::select! {
            received = commits.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = received {
                    return Err(ApiError::unavailable());
                }
            }
            () = tokio::time::sleep(POLL) => {}
            () = tokio::time::sleep_until(deadline) => {
                return Err(timed_out(shared, results, hashes, &waiting, &found, timeout));
            }
        }
    }
    let mut blocks: BTreeMap<u64, CommittedBlock> = BTreeMap::new();
    for (index, (height, reason)) in found {
        if let std::collections::btree_map::Entry::Vacant(entry) = blocks.entry(height) {
            entry.insert(read_block(shared, height).await?);
        }
        let committed = &blocks[&height];
        results[index].block = Some(Inclusion {
            height,
            block_hash: committed.block.hash().to_hex(),
            outcome: if reason.is_some() { "rejected" } else { "committed" }.to_string(),
            reason,
            proof: inclusion_json(shared, committed, hashes[index].transaction)?,
        });
    }
    Ok(())
}

fn timed_out(
    shared: &Shared,
    results: &[SubmitResult],
    hashes: &[TransactionHashes],
    waiting: &[usize],
    found: &BTreeMap<usize, (u64, Option<String>)>,
    timeout: Duration,
) -> ApiError {
    let table = shared.transactions.lock().ok();
    let height = shared.status.borrow().height;
    let known: Vec<Value> = waiting
        .iter()
        .map(|index| {
            let state = match found.get(index) {
                Some((height, _)) => json!({"in_block": height}),
                None => table
                    .as_ref()
                    .and_then(|table| table.get(&hashes[*index].payload))
                    .map_or(json!("not known to this node"), |(_, state)| json!(state)),
            };
            json!({"hash": results[*index].hash, "payload_hash": results[*index].payload_hash, "accepted": true, "state": state})
        })
        .collect();
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "commit_timeout",
        format!(
            "{} of {} accepted transactions were in committed blocks after {} ms (this node is at height {height}); \
             they stay acknowledged and may still commit",
            found.len(),
            waiting.len(),
            timeout.as_millis()
        ),
    )
    .with_details(json!({ "transactions": known }))
}
