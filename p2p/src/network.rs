//! The QUIC network of one node.
//!
//! Every node dials every peer it knows and uses that connection only to send; what it receives
//! arrives on the connections its peers dialled. So there is no dial race to settle and one
//! direction's trouble never tears down the other's. Each outgoing connection carries three
//! long-lived unidirectional streams, one per [`Class`], so a burst of gossip or a large block
//! sync cannot hold up votes. A stream carries frames: a little-endian u32 length, then one
//! versioned [`Message`] encoding of at most [`FRAME_BYTES_MAX`] bytes.
//!
//! Overload policy: each peer has a bounded queue per class. When a gossip queue is full the
//! message is dropped and counted; when a consensus or sync queue is full the message is dropped,
//! counted and logged at warn level (the protocol recovers lost messages by timers and block
//! sync, but an operator must see it happen).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kasane_consensus::Message;
use kasane_model::codec::{self, Versioned};
use kasane_model::{KeyPair, PublicKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use crate::faults::{Fate, FaultRuleError, FaultRules, Faults};
use crate::identity::{certificate_key, client_tls, server_tls, Identity, IdentityError, Membership};

/// Largest frame body accepted: one consensus message at its own limit.
pub const FRAME_BYTES_MAX: usize = Message::ENCODED_BYTES_MAX;

/// Most bytes gathered from a queue into one stream write.
const WRITE_BATCH_BYTES: usize = 1 << 20;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The traffic classes, each on its own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Proposals, votes, certificates, view changes, status.
    Consensus = 0,
    /// Block-sync requests and responses.
    Sync = 1,
    /// Transaction gossip.
    Gossip = 2,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Consensus, Class::Sync, Class::Gossip];

    pub fn of(message: &Message) -> Class {
        match message {
            Message::BlockSyncRequest { .. }
            | Message::BlockSyncResponse { .. }
            | Message::SnapshotWanted { .. }
            | Message::SnapshotManifest { .. }
            | Message::SnapshotChunkWanted { .. }
            | Message::SnapshotChunk { .. } => Class::Sync,
            Message::Transactions(_) => Class::Gossip,
            _ => Class::Consensus,
        }
    }

    fn from_byte(byte: u8) -> Option<Class> {
        Class::ALL.get(byte as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Consensus => "consensus",
            Class::Sync => "sync",
            Class::Gossip => "gossip",
        }
    }
}

/// A peer to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub key: PublicKey,
    pub address: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub listen: SocketAddr,
    /// The peers this node sends to (itself excluded).
    pub peers: Vec<Peer>,
    /// Every key allowed to connect: the cluster's validators and observers.
    pub members: Vec<PublicKey>,
    /// Frames queued per peer and class before the overload policy applies.
    pub queue_frames: [usize; 3],
    /// Messages received and not yet taken by the node, per class. Kept short for gossip: a
    /// node that cannot keep up should push back on its peers (who then drop gossip, counted)
    /// rather than hold seconds of transactions it has not checked yet.
    pub inbound_frames: [usize; 3],
    pub faults: FaultRules,
}

impl NetworkConfig {
    pub fn new(listen: SocketAddr, peers: Vec<Peer>, members: Vec<PublicKey>) -> NetworkConfig {
        NetworkConfig {
            listen,
            peers,
            members,
            queue_frames: [4096, 256, 256],
            inbound_frames: [4096, 64, 64],
            faults: FaultRules::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("QUIC configuration: {0}")]
    Quic(String),
    #[error("cannot bind the p2p address {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Faults(#[from] FaultRuleError),
}

/// Counters of the network, all monotonic.
#[derive(Debug, Default)]
struct Counters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    dropped_full: [AtomicU64; 3],
    dropped_fault: AtomicU64,
    dropped_unsent: AtomicU64,
    malformed: AtomicU64,
    oversized: AtomicU64,
    handshakes_refused: AtomicU64,
    connects: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkStats {
    pub peers_connected: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    /// Messages dropped because a peer's queue was full, per class.
    pub dropped_full: BTreeMap<&'static str, u64>,
    /// Messages dropped by fault rules.
    pub dropped_fault: u64,
    /// Queued messages lost when a connection broke.
    pub dropped_unsent: u64,
    /// Frames or streams refused as malformed or oversized.
    pub malformed: u64,
    /// Messages of our own not sent because they were over the frame limit.
    pub oversized: u64,
    /// Incoming connections refused (unknown key, bad certificate, wrong protocol).
    pub handshakes_refused: u64,
    /// Outgoing connections established, reconnections included.
    pub connects: u64,
}

struct PeerLink {
    queues: [mpsc::Sender<Bytes>; 3],
    connected: Arc<AtomicBool>,
}

struct Shared {
    me: PublicKey,
    links: BTreeMap<PublicKey, PeerLink>,
    counters: Counters,
    faults: Faults,
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
}

/// What arrives from peers, one receiver per class.
#[derive(Debug)]
pub struct Inbound {
    pub consensus: mpsc::Receiver<(PublicKey, Message)>,
    pub sync: mpsc::Receiver<(PublicKey, Message)>,
    pub gossip: mpsc::Receiver<(PublicKey, Message)>,
}

/// The handle of a running network. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("me", &self.shared.me)
            .field("peers", &self.shared.links.len())
            .finish()
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(Class::ALL.len() as u32 * 2))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(0))
        .keep_alive_interval(Some(Duration::from_millis(500)))
        .stream_receive_window(quinn::VarInt::from_u32(16 << 20))
        .receive_window(quinn::VarInt::from_u32(64 << 20))
        .send_window(64 << 20);
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(3)) {
        transport.max_idle_timeout(Some(idle));
    }
    Arc::new(transport)
}

impl Network {
    /// Binds the endpoint, starts accepting members and dialling peers. Must be called inside a
    /// tokio runtime.
    pub fn start(key: &KeyPair, config: NetworkConfig) -> Result<(Network, Inbound), NetworkError> {
        let identity = Identity::from_key(key)?;
        let membership = Membership::new(config.members.iter().copied());
        let server_tls = server_tls(&identity, membership.clone())?;
        let server_crypto =
            QuicServerConfig::try_from(server_tls).map_err(|error| NetworkError::Quic(error.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(transport());
        let endpoint = quinn::Endpoint::server(server_config, config.listen).map_err(|source| NetworkError::Bind {
            address: config.listen,
            source,
        })?;
        let faults = Faults::new(config.faults.clone())?;
        let (shutdown, _) = watch::channel(false);

        let mut links = BTreeMap::new();
        let mut dialers = Vec::new();
        for peer in &config.peers {
            if peer.key == key.public_key() || links.contains_key(&peer.key) {
                continue;
            }
            let (consensus_tx, consensus_rx) = mpsc::channel(config.queue_frames[0]);
            let (sync_tx, sync_rx) = mpsc::channel(config.queue_frames[1]);
            let (gossip_tx, gossip_rx) = mpsc::channel(config.queue_frames[2]);
            let connected = Arc::new(AtomicBool::new(false));
            let client_tls = client_tls(&identity, membership.clone(), peer.key)?;
            let client_crypto =
                QuicClientConfig::try_from(client_tls).map_err(|error| NetworkError::Quic(error.to_string()))?;
            let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
            client_config.transport_config(transport());
            links.insert(
                peer.key,
                PeerLink {
                    queues: [consensus_tx, sync_tx, gossip_tx],
                    connected: connected.clone(),
                },
            );
            dialers.push((
                peer.clone(),
                client_config,
                [consensus_rx, sync_rx, gossip_rx],
                connected,
            ));
        }

        let shared = Arc::new(Shared {
            me: key.public_key(),
            links,
            counters: Counters::default(),
            faults,
            endpoint,
            shutdown,
        });
        let (consensus_tx, consensus) = mpsc::channel(config.inbound_frames[0]);
        let (sync_tx, sync) = mpsc::channel(config.inbound_frames[1]);
        let (gossip_tx, gossip) = mpsc::channel(config.inbound_frames[2]);
        tokio::spawn(accept_loop(shared.clone(), [consensus_tx, sync_tx, gossip_tx]));
        for (peer, client_config, queues, connected) in dialers {
            tokio::spawn(dial_loop(shared.clone(), peer, client_config, queues, connected));
        }
        Ok((
            Network { shared },
            Inbound {
                consensus,
                sync,
                gossip,
            },
        ))
    }

    pub fn me(&self) -> PublicKey {
        self.shared.me
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.endpoint.local_addr().ok()
    }

    /// Queues `message` for one peer. Unknown peers and the node itself are ignored.
    pub fn send(&self, to: &PublicKey, message: &Message) {
        if let Some(link) = self.shared.links.get(to) {
            if let Some(frame) = self.frame(message) {
                self.enqueue(to, link, Class::of(message), frame);
            }
        }
    }

    /// Queues a message that is already encoded (see `kasane_consensus::message::
    /// sync_response_frame`) on the stream of `class`, under the same frame limit as [`Network::send`].
    pub fn send_frame(&self, to: &PublicKey, class: Class, frame: Vec<u8>) {
        if frame.len() > FRAME_BYTES_MAX {
            self.shared.counters.oversized.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                bytes = frame.len(),
                limit = FRAME_BYTES_MAX,
                "frame over the limit: not sent"
            );
            return;
        }
        if let Some(link) = self.shared.links.get(to) {
            self.enqueue(to, link, class, Bytes::from(frame));
        }
    }

    /// Queues `message` for every peer, encoding it once.
    pub fn broadcast(&self, message: &Message) {
        let class = Class::of(message);
        let Some(frame) = self.frame(message) else {
            return;
        };
        for (to, link) in &self.shared.links {
            self.enqueue(to, link, class, frame.clone());
        }
    }

    /// The encoding of a message, or None (logged and counted) when it is over the frame limit:
    /// a peer would refuse it as malformed and drop the whole connection.
    fn frame(&self, message: &Message) -> Option<Bytes> {
        let frame = codec::encode(message);
        if frame.len() > FRAME_BYTES_MAX {
            self.shared.counters.oversized.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                kind = message.kind(),
                bytes = frame.len(),
                limit = FRAME_BYTES_MAX,
                "message over the frame limit: not sent"
            );
            return None;
        }
        Some(Bytes::from(frame))
    }

    fn enqueue(&self, to: &PublicKey, link: &PeerLink, class: Class, frame: Bytes) {
        let counters = &self.shared.counters;
        if self.shared.faults.outgoing(to) == Fate::Drop {
            counters.dropped_fault.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if link.queues[class as usize].try_send(frame).is_err() {
            let dropped = counters.dropped_full[class as usize].fetch_add(1, Ordering::Relaxed) + 1;
            if class != Class::Gossip && dropped.is_power_of_two() {
                tracing::warn!(
                    peer = %to,
                    class = class.name(),
                    dropped,
                    connected = link.connected.load(Ordering::Relaxed),
                    "send queue full: message dropped"
                );
            }
        }
    }

    /// Peers with a live outgoing connection.
    pub fn peers_connected(&self) -> usize {
        self.shared
            .links
            .values()
            .filter(|link| link.connected.load(Ordering::Relaxed))
            .count()
    }

    pub fn is_connected(&self, peer: &PublicKey) -> bool {
        self.shared
            .links
            .get(peer)
            .is_some_and(|link| link.connected.load(Ordering::Relaxed))
    }

    pub fn stats(&self) -> NetworkStats {
        let counters = &self.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetworkStats {
            peers_connected: self.peers_connected(),
            bytes_sent: load(&counters.bytes_sent),
            bytes_received: load(&counters.bytes_received),
            frames_sent: load(&counters.frames_sent),
            frames_received: load(&counters.frames_received),
            dropped_full: Class::ALL
                .iter()
                .map(|class| (class.name(), load(&counters.dropped_full[*class as usize])))
                .collect(),
            dropped_fault: load(&counters.dropped_fault),
            dropped_unsent: load(&counters.dropped_unsent),
            malformed: load(&counters.malformed),
            oversized: load(&counters.oversized),
            handshakes_refused: load(&counters.handshakes_refused),
            connects: load(&counters.connects),
        }
    }

    pub fn faults(&self) -> FaultRules {
        self.shared.faults.get()
    }

    pub fn set_faults(&self, rules: FaultRules) -> Result<(), FaultRuleError> {
        self.shared.faults.set(rules)
    }

    /// Closes every connection and stops dialling; waits (bounded) for the close to be sent.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        self.shared.endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
    }
}

/// Keeps one outgoing connection to `peer` alive and pumps the three queues into its streams.
async fn dial_loop(
    shared: Arc<Shared>,
    peer: Peer,
    client_config: quinn::ClientConfig,
    mut queues: [mpsc::Receiver<Bytes>; 3],
    connected: Arc<AtomicBool>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = BACKOFF_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let connection = match connect(&shared.endpoint, &client_config, peer.address).await {
            Ok(connection) => connection,
            Err(reason) => {
                tracing::debug!(peer = %peer.key, address = %peer.address, %reason, ?backoff, "dial failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        // TLS 1.3 lets the client finish its handshake before the server has judged the client
        // certificate, so the link counts as up only once the peer says it accepted us.
        if let Err(reason) = await_welcome(&connection).await {
            tracing::debug!(peer = %peer.key, address = %peer.address, %reason, ?backoff, "not accepted");
            connection.close(quinn::VarInt::from_u32(0), b"not accepted");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        backoff = BACKOFF_MIN;
        shared.counters.connects.fetch_add(1, Ordering::Relaxed);
        connected.store(true, Ordering::Relaxed);
        tracing::info!(peer = %peer.key, address = %peer.address, "connected");
        let reason = tokio::select! {
            reason = pump(&shared, &connection, &mut queues) => reason,
            _ = shutdown.changed() => "shutdown".to_string(),
        };
        connected.store(false, Ordering::Relaxed);
        connection.close(quinn::VarInt::from_u32(0), b"closing");
        tracing::info!(peer = %peer.key, %reason, "disconnected");
        // Whatever was queued while the link was down is stale for consensus (timers and block
        // sync recover it); drop it so a reconnect does not start with a burst of old traffic.
        for queue in &mut queues {
            while queue.try_recv().is_ok() {
                shared.counters.dropped_unsent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The byte an accepting node sends on a stream of its own once it has pinned the dialler's key.
const WELCOME: u8 = 0x4b;

async fn await_welcome(connection: &quinn::Connection) -> Result<(), String> {
    let welcome = async {
        let mut stream = connection.accept_uni().await.map_err(|error| error.to_string())?;
        stream.read_u8().await.map_err(|error| error.to_string())
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, welcome).await {
        Ok(Ok(WELCOME)) => Ok(()),
        Ok(Ok(other)) => Err(format!("unexpected welcome byte {other}")),
        Ok(Err(error)) => Err(error),
        Err(_) => Err("no welcome from the peer".to_string()),
    }
}

async fn connect(
    endpoint: &quinn::Endpoint,
    client_config: &quinn::ClientConfig,
    address: SocketAddr,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect_with(client_config.clone(), address, "kasane")
        .map_err(|error| error.to_string())?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("handshake timed out".to_string()),
    }
}

/// Opens the three class streams and writes queued frames until the connection breaks.
async fn pump(shared: &Shared, connection: &quinn::Connection, queues: &mut [mpsc::Receiver<Bytes>; 3]) -> String {
    let mut streams = Vec::with_capacity(3);
    for class in Class::ALL {
        match connection.open_uni().await {
            Ok(mut stream) => {
                if let Err(error) = stream.write_all(&[class as u8]).await {
                    return error.to_string();
                }
                streams.push(stream);
            }
            Err(error) => return error.to_string(),
        }
    }
    let [consensus_queue, sync_queue, gossip_queue] = queues;
    let mut streams = streams.into_iter();
    let (Some(consensus), Some(sync), Some(gossip)) = (streams.next(), streams.next(), streams.next()) else {
        return "stream setup".to_string();
    };
    tokio::select! {
        reason = write_loop(shared, consensus, consensus_queue) => reason,
        reason = write_loop(shared, sync, sync_queue) => reason,
        reason = write_loop(shared, gossip, gossip_queue) => reason,
        error = connection.closed() => error.to_string(),
    }
}

async fn write_loop(shared: &Shared, mut stream: quinn::SendStream, queue: &mut mpsc::Receiver<Bytes>) -> String {
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        let Some(first) = queue.recv().await else {
            return "network stopped".to_string();
        };
        buffer.clear();
        let mut frames = 0u64;
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            buffer.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&frame);
            frames += 1;
            if buffer.len() < WRITE_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if let Err(error) = stream.write_all(&buffer).await {
            shared.counters.dropped_unsent.fetch_add(frames, Ordering::Relaxed);
            return error.to_string();
        }
        shared.counters.frames_sent.fetch_add(frames, Ordering::Relaxed);
        shared
            .counters
            .bytes_sent
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
    }
}

type InboundSenders = [mpsc::Sender<(PublicKey, Message)>; 3];

async fn accept_loop(shared: Arc<Shared>, inbound: InboundSenders) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let incoming = tokio::select! {
            incoming = shared.endpoint.accept() => incoming,
            _ = shutdown.changed() => return,
        };
        let Some(incoming) = incoming else {
            return;
        };
        tokio::spawn(serve_connection(shared.clone(), incoming, inbound.clone()));
    }
}

/// The key a connection was authenticated with.
fn peer_key(connection: &quinn::Connection) -> Option<PublicKey> {
    let identity = connection.peer_identity()?;
    let certificates = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certificate_key(certificates.first()?)
}

async fn serve_connection(shared: Arc<Shared>, incoming: quinn::Incoming, inbound: InboundSenders) {
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            shared.counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, %error, "incoming connection refused");
            return;
        }
    };
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            shared.counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, %error, "handshake refused");
            return;
        }
        Err(_) => {
            shared.counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, "handshake timed out");
            return;
        }
    };
    let Some(from) = peer_key(&connection) else {
        // The verifiers already pinned the key; a connection without one is refused all the same.
        shared.counters.handshakes_refused.fetch_add(1, Ordering::Relaxed);
        connection.close(quinn::VarInt::from_u32(1), b"no identity");
        return;
    };
    match connection.open_uni().await {
        Ok(mut stream) => {
            if stream.write_all(&[WELCOME]).await.is_err() || stream.finish().is_err() {
                return;
            }
        }
        Err(_) => return,
    }
    loop {
        match connection.accept_uni().await {
            Ok(stream) => {
                tokio::spawn(read_stream(
                    shared.clone(),
                    connection.clone(),
                    from,
                    stream,
                    inbound.clone(),
                ));
            }
            Err(error) => {
                tracing::debug!(peer = %from, %error, "incoming connection closed");
                return;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("stream ended")]
    Ended,
    #[error("read: {0}")]
    Read(String),
    #[error("unknown stream class {0}")]
    UnknownClass(u8),
    #[error("frame of {0} bytes is over the limit of {FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("truncated frame: {0}")]
    Truncated(String),
    #[error("{0}")]
    Decode(#[from] codec::CodecError),
}

fn read_error(error: std::io::Error) -> FrameError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Ended
    } else {
        FrameError::Read(error.to_string())
    }
}

/// Reads frames of one stream and hands decoded messages to the node. A malformed or oversized
/// frame closes the whole connection: the peer is faulty or hostile, and it may reconnect.
async fn read_stream(
    shared: Arc<Shared>,
    connection: quinn::Connection,
    from: PublicKey,
    mut stream: quinn::RecvStream,
    inbound: InboundSenders,
) {
    let result = async {
        let class_byte = stream.read_u8().await.map_err(read_error)?;
        let class = Class::from_byte(class_byte).ok_or(FrameError::UnknownClass(class_byte))?;
        let sender = &inbound[class as usize];
        let mut body = Vec::new();
        loop {
            let length = match stream.read_u32_le().await {
                Ok(length) => length as usize,
                Err(error) => return Err(read_error(error)),
            };
            if length > FRAME_BYTES_MAX {
                return Err(FrameError::TooLarge(length));
            }
            // Grows with what arrives, so a length prefix alone reserves nothing.
            body.clear();
            let read = (&mut stream)
                .take(length as u64)
                .read_to_end(&mut body)
                .await
                .map_err(|error| FrameError::Truncated(error.to_string()))?;
            if read != length {
                return Err(FrameError::Truncated(format!(
                    "{read} of {length} bytes before the stream ended"
                )));
            }
            shared.counters.frames_received.fetch_add(1, Ordering::Relaxed);
            shared
                .counters
                .bytes_received
                .fetch_add(4 + length as u64, Ordering::Relaxed);
            let message: Message = codec::decode(&body)?;
            match shared.faults.incoming(&from) {
                Fate::Drop => {
                    shared.counters.dropped_fault.fetch_add(1, Ordering::Relaxed);
                }
                Fate::Deliver => {
                    if sender.send((from, message)).await.is_err() {
                        return Ok(());
                    }
                }
                Fate::Delay(delay) => {
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = sender.send((from, message)).await;
                    });
                }
            }
        }
    }
    .await;
    match result {
        Ok(()) | Err(FrameError::Ended) => {}
        Err(FrameError::Read(reason)) => tracing::debug!(peer = %from, %reason, "stream closed"),
        Err(error) => {
            shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %from, %error, "malformed frame: closing the connection");
            connection.close(quinn::VarInt::from_u32(2), b"malformed frame");
        }
    }
}
