//! A small client of the node API, shared by `kasane up`, `client`, `load` and `demo`.

use std::time::Duration;

use anyhow::{bail, Context};
use kasane_model::{codec, SignedTransaction};
use serde_json::Value;

use kasane_node::api::{SubmitResponse, TransactionBatch, POSTCARD};

#[derive(Debug, Clone)]
pub struct ApiClient {
    client: reqwest::Client,
    base: String,
}

/// What a submission came back with.
#[derive(Debug)]
pub enum Submitted {
    Answered(SubmitResponse),
    /// 503: the node's queue is full.
    QueueFull,
    /// 503: admitted, but f + 1 validators did not hold the transactions in time; they may
    /// still commit, and resubmitting them is safe. The node's message.
    NotHeld(String),
    /// 503: the node is catching up with its peers and takes no transactions now.
    CatchingUp(String),
}

impl ApiClient {
    pub fn new(base: &str) -> anyhow::Result<ApiClient> {
        ApiClient::with_timeout(base, Duration::from_secs(30))
    }

    /// A client whose requests give up after `timeout` (for probing nodes that may be stopped).
    pub fn with_timeout(base: &str, timeout: Duration) -> anyhow::Result<ApiClient> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()
            .context("building the HTTP client")?;
        Ok(ApiClient {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET a JSON document; a non-2xx answer is an error carrying the node's message.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        json_answer("GET", &url, self.client.get(&url)).await
    }

    /// GET a JSON document that may not exist: `None` on 404.
    pub async fn get_json_optional(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        answer("GET", &url, self.client.get(&url), true).await
    }

    /// GET a committed block with its transactions (postcard).
    pub async fn block(&self, height: u64) -> anyhow::Result<kasane_model::CommittedBlock> {
        let url = format!("{}/v1/blocks/{height}", self.base);
        let response = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, POSTCARD)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("GET {url}: reading the body"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
        }
        codec::decode(&body).with_context(|| format!("GET {url}: not a committed block"))
    }

    /// PUT a JSON document; a non-2xx answer is an error carrying the node's message.
    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = self
            .client
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?);
        json_answer("PUT", &url, request).await
    }

    pub async fn status(&self) -> anyhow::Result<Value> {
        self.get_json("/v1/status").await
    }

    /// POSTs transactions as one postcard batch.
    pub async fn submit(&self, transactions: Vec<SignedTransaction>) -> anyhow::Result<Submitted> {
        self.submit_with(transactions, "").await
    }

    /// [`ApiClient::submit`] with a query (`?wait=commit&timeout_ms=...`, docs/API.md).
    pub async fn submit_with(&self, transactions: Vec<SignedTransaction>, query: &str) -> anyhow::Result<Submitted> {
        let url = format!("{}/v1/transactions{query}", self.base);
        let body = codec::encode(&TransactionBatch(transactions));
        let response = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("POST {url}: reading the body"))?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && text.contains("queue_full") {
            return Ok(Submitted::QueueFull);
        }
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && text.contains("not_held") {
            return Ok(Submitted::NotHeld(text));
        }
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && text.contains("catching_up") {
            return Ok(Submitted::CatchingUp(text));
        }
        if !status.is_success() {
            bail!("POST {url}: {status}: {text}");
        }
        let response = serde_json::from_str(&text).with_context(|| format!("POST {url}: unexpected answer {text}"))?;
        Ok(Submitted::Answered(response))
    }
}

/// Sends `request` and reads its JSON answer; a non-2xx answer is an error with the body.
async fn json_answer(method: &str, url: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    answer(method, url, request, false)
        .await?
        .with_context(|| format!("{method} {url}: not found"))
}

/// [`json_answer`], with 404 read as `None` when `absent_ok`.
async fn answer(
    method: &str,
    url: &str,
    request: reqwest::RequestBuilder,
    absent_ok: bool,
) -> anyhow::Result<Option<Value>> {
    let response = request.send().await.with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("{method} {url}: reading the body"))?;
    if absent_ok && status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        bail!("{method} {url}: {status}: {text}");
    }
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{method} {url}: the body is not JSON"))
}

/// A small async runtime for the client commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}
