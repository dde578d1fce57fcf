//! Real QUIC networks on loopback, in one process: delivery per class, pinned identities,
//! hostile frames, fault rules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kasane_consensus::Message;
use kasane_model::{Hash, KeyPair, PublicKey};
use kasane_p2p::identity::{client_tls, Identity, Membership};
use kasane_p2p::{FaultRule, FaultRules, Inbound, Network, NetworkConfig, Peer};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn free_udp_port() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address")
}

struct Node {
    key: KeyPair,
    network: Network,
    inbound: Inbound,
}

/// Starts `count` member nodes that all know each other.
async fn cluster(count: u64, faults: FaultRules) -> Vec<Node> {
    let keys: Vec<KeyPair> = (0..count).map(|index| KeyPair::derive(b"p2p-test", index)).collect();
    let addresses: Vec<SocketAddr> = keys.iter().map(|_| free_udp_port()).collect();
    let members: Vec<PublicKey> = keys.iter().map(KeyPair::public_key).collect();
    let peers: Vec<Peer> = keys
        .iter()
        .zip(&addresses)
        .map(|(key, address)| Peer {
            key: key.public_key(),
            address: *address,
        })
        .collect();
    keys.into_iter()
        .zip(addresses)
        .map(|(key, listen)| {
            let mut config = NetworkConfig::new(listen, peers.clone(), members.clone());
            config.faults = faults.clone();
            let (network, inbound) = Network::start(&key, config).expect("network");
            Node { key, network, inbound }
        })
        .collect()
}

fn status(height: u64) -> Message {
    Message::Status {
        height,
        head_hash: Hash::of(&height.to_le_bytes()),
    }
}

async fn receive(receiver: &mut mpsc::Receiver<(PublicKey, Message)>) -> (PublicKey, Message) {
    tokio::time::timeout(WAIT, receiver.recv())
        .await
        .expect("a message within the bound")
        .expect("channel open")
}

async fn wait_connected(nodes: &[Node]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes
        .iter()
        .any(|node| node.network.peers_connected() < nodes.len() - 1)
    {
        assert!(tokio::time::Instant::now() < deadline, "nodes did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_every_class_arrive_on_their_own_channel() {
    let mut nodes = cluster(3, FaultRules::default()).await;
    wait_connected(&nodes).await;
    let from = nodes[0].key.public_key();
    nodes[0].network.broadcast(&status(7));
    nodes[0].network.send(
        &nodes[1].key.public_key(),
        &Message::BlockSyncRequest {
            from_height: 3,
            count: 2,
        },
    );
    nodes[0].network.broadcast(&Message::Transactions(Vec::new()));
    for node in &mut nodes[1..] {
        assert_eq!(receive(&mut node.inbound.consensus).await, (from, status(7)));
        assert_eq!(
            receive(&mut node.inbound.gossip).await,
            (from, Message::Transactions(Vec::new()))
        );
    }
    let (sender, request) = receive(&mut nodes[1].inbound.sync).await;
    assert_eq!(sender, from);
    assert_eq!(
        request,
        Message::BlockSyncRequest {
            from_height: 3,
            count: 2
        }
    );
    let stats = nodes[0].network.stats();
    assert_eq!(stats.peers_connected, 2);
    assert_eq!(stats.frames_sent, 5);
    assert!(stats.bytes_sent > 0);
    for node in &nodes {
        node.network.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_the_membership_is_refused_at_the_handshake() {
    let mut nodes = cluster(2, FaultRules::default()).await;
    wait_connected(&nodes).await;
    // The outsider knows the members' addresses and keys, but the members do not know it.
    let outsider = KeyPair::derive(b"p2p-outsider", 0);
    let mut members: Vec<PublicKey> = nodes.iter().map(|node| node.key.public_key()).collect();
    members.push(outsider.public_key());
    let peers: Vec<Peer> = nodes
        .iter()
        .map(|node| Peer {
            key: node.key.public_key(),
            address: node.network.local_addr().expect("address"),
        })
        .collect();
    let (intruder, _inbound) =
        Network::start(&outsider, NetworkConfig::new(free_udp_port(), peers, members)).expect("network");
    tokio::time::sleep(Duration::from_millis(600)).await;
    intruder.broadcast(&status(99));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(intruder.peers_connected(), 0, "an outsider connected");
    assert!(nodes[0].network.stats().handshakes_refused > 0);
    // The members still talk.
    nodes[1].network.broadcast(&status(1));
    let (from, message) = receive(&mut nodes[0].inbound.consensus).await;
    assert_eq!((from, message), (nodes[1].key.public_key(), status(1)));
    assert!(
        nodes[0].inbound.consensus.try_recv().is_err(),
        "the outsider's message arrived"
    );
    intruder.shutdown().await;
    for node in &nodes {
        node.network.shutdown().await;
    }
}

/// Starts a network on an address a stopped one just released (retrying while the old socket
/// is still being dropped).
async fn restart(key: &KeyPair, config: NetworkConfig) -> (Network, Inbound) {
    for _ in 0..50 {
        if let Ok(started) = Network::start(key, config.clone()) {
            return started;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not bind {} again", config.listen);
}

/// A raw QUIC client holding a member's key, for sending hand-made bytes.
async fn raw_connection(key: &KeyPair, membership: Membership, to: &Node) -> (quinn::Endpoint, quinn::Connection) {
    let identity = Identity::from_key(key).expect("identity");
    let tls = client_tls(&identity, membership, to.key.public_key()).expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    let connection = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            to.network.local_addr().expect("address"),
            "kasane",
        )
        .expect("connect")
        .await
        .expect("handshake");
    (endpoint, connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_oversized_and_garbage_frames_close_only_that_connection() {
    let mut nodes = cluster(2, FaultRules::default()).await;
    wait_connected(&nodes).await;
    // A third member key that is not running a node: the hostile sender.
    let hostile = KeyPair::derive(b"p2p-hostile", 0);
    let membership = Membership::new([nodes[0].key.public_key(), hostile.public_key()]);
    let members: Vec<PublicKey> = vec![
        nodes[0].key.public_key(),
        nodes[1].key.public_key(),
        hostile.public_key(),
    ];
    // Restart node 0 so that the hostile key is a member.
    let listen = nodes[0].network.local_addr().expect("address");
    let peers = vec![Peer {
        key: nodes[1].key.public_key(),
        address: nodes[1].network.local_addr().expect("address"),
    }];
    let old = nodes.remove(0);
    old.network.shutdown().await;
    let key = old.key.clone();
    drop(old);
    let (network, inbound) = restart(&key, NetworkConfig::new(listen, peers, members)).await;
    nodes.insert(0, Node { key, network, inbound });

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown class", vec![9, 0, 0, 0, 0]),
        ("oversized length", {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(&u32::MAX.to_le_bytes());
            bytes
        }),
        ("garbage body", {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(&5u32.to_le_bytes());
            bytes.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff]);
            bytes
        }),
        ("unknown version", {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(&2u32.to_le_bytes());
            bytes.extend_from_slice(&[77, 5]);
            bytes
        }),
        ("truncated frame", {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(&100u32.to_le_bytes());
            bytes.extend_from_slice(&[1, 5, 0]);
            bytes
        }),
    ];
    for (index, (name, bytes)) in cases.iter().enumerate() {
        let (endpoint, connection) = raw_connection(&hostile, membership.clone(), &nodes[0]).await;
        let mut stream = connection.open_uni().await.expect("stream");
        stream.write_all(bytes).await.expect("write");
        stream.finish().expect("finish");
        let closed = tokio::time::timeout(WAIT, connection.closed()).await;
        assert!(closed.is_ok(), "{name}: the node kept the connection open");
        let malformed = nodes[0].network.stats().malformed;
        assert_eq!(malformed, index as u64 + 1, "{name}: malformed count");
        endpoint.close(quinn::VarInt::from_u32(0), b"done");
    }
    // The honest peer's traffic still flows both ways.
    wait_connected(&nodes).await;
    nodes[1].network.broadcast(&status(5));
    assert_eq!(
        receive(&mut nodes[0].inbound.consensus).await,
        (nodes[1].key.public_key(), status(5))
    );
    nodes[0].network.broadcast(&status(6));
    assert_eq!(
        receive(&mut nodes[1].inbound.consensus).await,
        (nodes[0].key.public_key(), status(6))
    );
    for node in &nodes {
        node.network.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_the_endpoint() {
    let mut nodes = cluster(2, FaultRules::default()).await;
    wait_connected(&nodes).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = nodes[0].network.local_addr().expect("address");
    for size in [0usize, 1, 7, 64, 1200, 1500, 9000] {
        let junk: Vec<u8> = (0..size).map(|index| (index * 31 + size) as u8).collect();
        socket.send_to(&junk, target).expect("send");
    }
    nodes[1].network.broadcast(&status(3));
    assert_eq!(
        receive(&mut nodes[0].inbound.consensus).await,
        (nodes[1].key.public_key(), status(3))
    );
    for node in &nodes {
        node.network.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_set_at_runtime_partitions_and_healing_restores() {
    let mut nodes = cluster(2, FaultRules::default()).await;
    wait_connected(&nodes).await;
    let other = nodes[1].key.public_key();
    let mut rules = FaultRules::default();
    rules.peers.insert(
        other.to_hex(),
        FaultRule {
            cut: true,
            ..FaultRule::default()
        },
    );
    nodes[0].network.set_faults(rules).expect("rules");
    // Both directions are cut on node 0 alone.
    nodes[1].network.broadcast(&status(1));
    nodes[0].network.broadcast(&status(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(nodes[0].inbound.consensus.try_recv().is_err());
    assert!(nodes[1].inbound.consensus.try_recv().is_err());
    assert_eq!(nodes[0].network.stats().dropped_fault, 2);
    nodes[0].network.set_faults(FaultRules::default()).expect("heal");
    nodes[1].network.broadcast(&status(3));
    assert_eq!(receive(&mut nodes[0].inbound.consensus).await, (other, status(3)));
    for node in &nodes {
        node.network.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_restarts_is_reconnected() {
    let mut nodes = cluster(2, FaultRules::default()).await;
    wait_connected(&nodes).await;
    let address = nodes[1].network.local_addr().expect("address");
    nodes[1].network.shutdown().await;
    drop(nodes.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys: Vec<KeyPair> = (0..2).map(|index| KeyPair::derive(b"p2p-test", index)).collect();
    let members: Vec<PublicKey> = keys.iter().map(KeyPair::public_key).collect();
    let peers = vec![Peer {
        key: keys[0].public_key(),
        address: nodes[0].network.local_addr().expect("address"),
    }];
    let (network, mut inbound) = restart(&keys[1], NetworkConfig::new(address, peers, members)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !nodes[0].network.is_connected(&keys[1].public_key()) {
        assert!(tokio::time::Instant::now() < deadline, "no reconnection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[0].network.broadcast(&status(4));
    assert_eq!(receive(&mut inbound.consensus).await, (keys[0].public_key(), status(4)));
    assert!(nodes[0].network.stats().connects >= 2);
    network.shutdown().await;
    nodes[0].network.shutdown().await;
}
