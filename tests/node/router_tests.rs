//! Tests of the router with stand-in nodes, so its node-to-node paths (delivery, order, delay,
//! loss, partitions, down nodes, forbidden destinations, message counts) are proven before any
//! real node sends a peer message.
//!
//! A stand-in node is a thread on an in-process pipe pair behind a real [`Connection`]. Asked by
//! a client to `relay` to another node, it sends that node a `hop`; the other node answers with a
//! `hop_ok`, and the first answers the client with `relay_ok`: one operation, two client messages
//! and two node messages.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, PipeReader, PipeWriter, Write};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::workload::connection::{
    CallError, Connection, Network, ProtocolErrors, ReaderHandle, Reply, Wiring, lock,
};
use crate::workload::partition::Partition;
use crate::workload::router::{NetworkConfig, Router};
use crate::workload::traffic::{NetworkCounts, TrafficCounts};

/// How long a test waits for an event that must happen (a reply, a counter reaching a value);
/// only a broken router makes a test wait this long.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Between checks of a counter that is expected to change.
const CHECK_INTERVAL: Duration = Duration::from_millis(1);

/// Messages sent back to back in the ordering tests: enough that a reordering router could not
/// keep them in order by chance.
const BURST: u64 = 200;

/// The client every request comes from.
const CLIENT: &str = "c1";

/// Sequence numbers a stand-in node received in `hop`s, per sending node.
type Received = Arc<Mutex<HashMap<String, Vec<u64>>>>;

/// One stand-in node and the connection clients and the router use to reach it.
struct FakeNode {
    connection: Arc<Connection>,
    reader: ReaderHandle,
    thread: JoinHandle<()>,
    received: Received,
}

impl FakeNode {
    fn start(id: &str, wiring: &Wiring) -> FakeNode {
        let (node_stdin, to_node) = std::io::pipe().expect("pipe");
        let (from_node, node_stdout) = std::io::pipe().expect("pipe");
        let (connection, reader) =
            Connection::start(id, to_node, from_node, wiring.clone()).expect("connection");
        let received = Received::default();
        let thread = {
            let (id, received) = (id.to_owned(), Arc::clone(&received));
            thread::spawn(move || serve(&id, node_stdin, node_stdout, &received))
        };
        if let Some(network) = &wiring.network {
            network.attach(id, &connection);
        }
        FakeNode {
            connection,
            reader,
            thread,
            received,
        }
    }

    /// Sends `body` from [`CLIENT`] without waiting; the reply arrives on the returned channel.
    fn submit(&self, body: Value) -> Receiver<Reply> {
        let (sender, receiver) = mpsc::channel();
        self.connection
            .submit(CLIENT, body, sender)
            .expect("submit to a stand-in node");
        receiver
    }

    fn relay(&self, to: &str, seq: u64) -> Result<Reply, CallError> {
        self.connection
            .call(CLIENT, relay_body(to, seq), EVENT_TIMEOUT)
    }

    fn received_from(&self, src: &str) -> Vec<u64> {
        lock(&self.received).get(src).cloned().unwrap_or_default()
    }

    /// Closes the node's stdin and waits for its thread and reader to end.
    fn stop(self) {
        self.connection.close_stdin();
        self.thread.join().expect("stand-in node thread");
        assert!(self.reader.wait_exit(EVENT_TIMEOUT), "stdout did not close");
        self.reader.join();
    }
}

fn relay_body(to: &str, seq: u64) -> Value {
    json!({"type": "relay", "to": to, "seq": seq})
}

/// The stand-in node's loop: one JSON message per line in, one per line out.
fn serve(id: &str, stdin: PipeReader, mut stdout: PipeWriter, received: &Received) {
    // Relays waiting for their hop_ok: reference -> (client, msg_id).
    let mut pending: HashMap<u64, (String, u64)> = HashMap::new();
    let mut next_ref = 0_u64;
    for line in BufReader::new(stdin).lines() {
        let Ok(line) = line else { return };
        let message: Value = serde_json::from_str(&line).expect("the harness writes JSON");
        let src = message["src"].as_str().expect("src").to_owned();
        let body = &message["body"];
        let mut send = |dest: &str, body: Value| {
            let line = json!({"src": id, "dest": dest, "body": body}).to_string();
            // A closed stdout means the test is over.
            let _ = writeln!(stdout, "{line}");
        };
        match body["type"].as_str().expect("type") {
            "relay" => {
                let reference = next_ref;
                next_ref += 1;
                let msg_id = body["msg_id"].as_u64().expect("msg_id");
                pending.insert(reference, (src, msg_id));
                let to = body["to"].as_str().expect("to");
                send(
                    to,
                    json!({"type": "hop", "ref": reference, "seq": body["seq"]}),
                );
            }
            "hop" => {
                let seq = body["seq"].as_u64().expect("seq");
                lock(received).entry(src.clone()).or_default().push(seq);
                send(&src, json!({"type": "hop_ok", "ref": body["ref"]}));
            }
            "hop_ok" => {
                let reference = body["ref"].as_u64().expect("ref");
                if let Some((client, msg_id)) = pending.remove(&reference) {
                    send(&client, json!({"type": "relay_ok", "in_reply_to": msg_id}));
                }
            }
            // Asked to use a service or another destination that is not a peer.
            "message" => {
                let dest = body["dest"].as_str().expect("dest");
                send(dest, json!({"type": "read", "key": "x", "msg_id": 1}));
                let msg_id = body["msg_id"].as_u64().expect("msg_id");
                send(&src, json!({"type": "message_ok", "in_reply_to": msg_id}));
            }
            // Answers the wrong client.
            "misreply" => {
                let msg_id = body["msg_id"].as_u64().expect("msg_id");
                send("c9", json!({"type": "misreply_ok", "in_reply_to": msg_id}));
            }
            other => panic!("stand-in node got {other}"),
        }
    }
}

/// A router between `nodes` stand-in nodes.
struct Cluster {
    router: Arc<Router>,
    wiring: Wiring,
    nodes: Vec<FakeNode>,
}

impl Cluster {
    fn start(nodes: usize, config: NetworkConfig) -> Cluster {
        let ids: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
        let protocol_errors = ProtocolErrors::default();
        let router = Router::start(
            ids.clone(),
            config,
            StdRng::seed_from_u64(7),
            protocol_errors.clone(),
        )
        .expect("router");
        let wiring = Wiring {
            protocol_errors,
            traffic: Arc::default(),
            network: Some(Arc::clone(&router) as Arc<dyn Network>),
        };
        let nodes = ids.iter().map(|id| FakeNode::start(id, &wiring)).collect();
        Cluster {
            router,
            wiring,
            nodes,
        }
    }

    fn traffic(&self) -> TrafficCounts {
        self.wiring.traffic.snapshot()
    }

    fn protocol_errors(&self) -> Vec<String> {
        lock(&self.wiring.protocol_errors).clone()
    }

    /// Waits until the router's counters satisfy `done`.
    fn wait_for_counts(&self, what: &str, done: impl Fn(&NetworkCounts) -> bool) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while !done(&self.router.counts()) {
            assert!(
                Instant::now() < deadline,
                "{what} never happened: {:?}",
                self.router.counts()
            );
            thread::sleep(CHECK_INTERVAL);
        }
    }

    fn stop(self) {
        self.router.stop();
        for node in self.nodes {
            node.stop();
        }
    }
}

fn expect_relay_ok(reply: Result<Reply, CallError>) {
    let reply = reply.expect("a reply to the relay");
    assert_eq!(reply.body["type"], "relay_ok", "{}", reply.body);
}

fn wait_reply(receiver: &Receiver<Reply>) -> Reply {
    receiver
        .recv_timeout(EVENT_TIMEOUT)
        .expect("a reply to a pipelined relay")
}

#[test]
fn node_messages_are_delivered_and_counted_like_maelstrom() {
    let cluster = Cluster::start(3, NetworkConfig::PERFECT);
    let relays = 30;
    for i in 0..relays {
        let from = usize::try_from(i % 3).expect("index");
        let to = format!("n{}", (from + 1) % 3);
        expect_relay_ok(cluster.nodes[from].relay(&to, i));
    }
    let counts = cluster.router.counts();
    // Every relay is a hop and a hop_ok.
    assert_eq!((counts.sent, counts.delivered), (2 * relays, 2 * relays));
    assert_eq!(
        (counts.lost, counts.partitioned, counts.undeliverable),
        (0, 0, 0)
    );
    let traffic = cluster.traffic();
    assert_eq!(traffic.client_msgs, 2 * relays);
    assert_eq!(traffic.server_msgs, 2 * relays);
    let ops = usize::try_from(relays).expect("count");
    assert_eq!(traffic.all_per_op(ops), 4.0);
    assert_eq!(traffic.servers_per_op(ops), 2.0);
    assert!(
        cluster.protocol_errors().is_empty(),
        "{:?}",
        cluster.protocol_errors()
    );
    cluster.stop();
}

/// With one delay for every message, due times follow send order: FIFO per pair.
#[test]
fn constant_delay_keeps_each_pair_in_order() {
    let delay = Duration::from_millis(2);
    let config = NetworkConfig {
        delay_min: delay,
        delay_max: delay,
        loss: 0.0,
    };
    let cluster = Cluster::start(2, config);
    let replies: Vec<_> = (0..BURST)
        .map(|seq| cluster.nodes[0].submit(relay_body("n1", seq)))
        .collect();
    for reply in &replies {
        assert_eq!(wait_reply(reply).body["type"], "relay_ok");
    }
    let expected: Vec<u64> = (0..BURST).collect();
    assert_eq!(cluster.nodes[1].received_from("n0"), expected);
    cluster.stop();
}

/// With a delay range messages may overtake each other, but none is lost or duplicated.
#[test]
fn delay_range_delivers_every_message_once() {
    let config = NetworkConfig {
        delay_min: Duration::ZERO,
        delay_max: Duration::from_millis(20),
        loss: 0.0,
    };
    let cluster = Cluster::start(2, config);
    let replies: Vec<_> = (0..BURST)
        .map(|seq| cluster.nodes[0].submit(relay_body("n1", seq)))
        .collect();
    for reply in &replies {
        assert_eq!(wait_reply(reply).body["type"], "relay_ok");
    }
    let mut received = cluster.nodes[1].received_from("n0");
    received.sort_unstable();
    assert_eq!(received, (0..BURST).collect::<Vec<_>>());
    cluster.stop();
}

#[test]
fn partition_drops_messages_across_it_both_ways_until_healed() {
    let cluster = Cluster::start(3, NetworkConfig::PERFECT);
    cluster
        .router
        .partition(Partition::from_groups(3, &[vec![0]]));
    // Within the majority side, messages flow.
    expect_relay_ok(cluster.nodes[1].relay("n2", 0));
    // n0's hop to n1 is dropped, and so is n2's hop to n0.
    let _unanswered = cluster.nodes[0].submit(relay_body("n1", 1));
    cluster.wait_for_counts("n0 -> n1 dropped", |counts| counts.partitioned == 1);
    let _unanswered = cluster.nodes[2].submit(relay_body("n0", 2));
    cluster.wait_for_counts("n2 -> n0 dropped", |counts| counts.partitioned == 2);
    assert!(cluster.nodes[1].received_from("n0").is_empty());
    assert!(cluster.nodes[0].received_from("n2").is_empty());
    cluster.router.heal();
    expect_relay_ok(cluster.nodes[0].relay("n1", 3));
    expect_relay_ok(cluster.nodes[2].relay("n0", 4));
    assert_eq!(cluster.router.counts().partitions, 1);
    cluster.stop();
}

#[test]
fn certain_loss_drops_every_message() {
    let config = NetworkConfig {
        loss: 1.0,
        ..NetworkConfig::PERFECT
    };
    let cluster = Cluster::start(2, config);
    let _unanswered = cluster.nodes[0].submit(relay_body("n1", 0));
    cluster.wait_for_counts("the hop lost", |counts| counts.lost == 1);
    assert_eq!(cluster.router.counts().delivered, 0);
    assert!(cluster.nodes[1].received_from("n0").is_empty());
    cluster.stop();
}

#[test]
fn messages_to_a_down_node_are_undeliverable_until_it_is_back() {
    let cluster = Cluster::start(2, NetworkConfig::PERFECT);
    let n1 = &cluster.nodes[1].connection;
    cluster.router.detach("n1", n1);
    let _unanswered = cluster.nodes[0].submit(relay_body("n1", 0));
    cluster.wait_for_counts("the hop undeliverable", |counts| counts.undeliverable == 1);
    cluster.router.attach("n1", n1);
    expect_relay_ok(cluster.nodes[0].relay("n1", 1));
    assert_eq!(cluster.nodes[1].received_from("n0"), vec![1]);
    cluster.stop();
}

/// The cluster design forbids Maelstrom's services, and a node may only message its peers.
#[test]
fn messages_to_services_and_unknown_nodes_are_protocol_errors() {
    let cluster = Cluster::start(2, NetworkConfig::PERFECT);
    for dest in ["lin-kv", "seq-kv", "n7"] {
        let reply = cluster.nodes[0]
            .connection
            .call(
                CLIENT,
                json!({"type": "message", "dest": dest}),
                EVENT_TIMEOUT,
            )
            .expect("message_ok");
        assert_eq!(reply.body["type"], "message_ok");
    }
    let errors = cluster.protocol_errors();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].contains("to lin-kv") && errors[0].contains("forbids"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("to seq-kv") && errors[1].contains("forbids"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("to n7") && errors[2].contains("not a node"),
        "{errors:?}"
    );
    assert_eq!(cluster.router.counts().delivered, 0);
    cluster.stop();
}

#[test]
fn a_lone_node_messaging_a_peer_is_a_protocol_error() {
    let wiring = Wiring::default();
    let node = FakeNode::start("n0", &wiring);
    let _unanswered = node.submit(relay_body("n1", 0));
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while lock(&wiring.protocol_errors).is_empty() {
        assert!(Instant::now() < deadline, "no protocol error");
        thread::sleep(CHECK_INTERVAL);
    }
    let errors = lock(&wiring.protocol_errors).clone();
    assert!(
        errors[0].contains("a lone node may only answer clients"),
        "{errors:?}"
    );
    node.stop();
}

#[test]
fn a_reply_to_another_client_is_a_protocol_error() {
    let wiring = Wiring::default();
    let node = FakeNode::start("n0", &wiring);
    let reply = node
        .connection
        .call(CLIENT, json!({"type": "misreply"}), EVENT_TIMEOUT)
        .expect("the misdirected reply is still delivered");
    assert_eq!(reply.body["type"], "misreply_ok");
    let errors = lock(&wiring.protocol_errors).clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("reply to c1's request sent to c9"),
        "{errors:?}"
    );
    node.stop();
}
