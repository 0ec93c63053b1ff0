//! Several nodes in one process, wired by an in-process router through
//! `seglog::node::serve`: sends and commits through any node of the Raft
//! groups, partitions, leaders cut off and restarted, checked request by
//! request. (The process-level
//! workload with a checker and kill -9 is in the cluster workload tests.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use seglog::lock::lock;
use seglog::node::{NodeArgs, serve};
use seglog::raft::snapshot::group_of;

use crate::support::dirs::copy_dir;

/// How long a test waits for a reply or for replication before failing.
const WAIT: Duration = Duration::from_secs(10);

/// Bytes buffered in each in-process pipe: room for every line a test
/// writes at once, so a burst of requests is all queued before the node
/// answers any of it.
const PIPE_BYTES: usize = 4 << 20;

/// Which node pairs cannot talk, and what crossed between nodes.
#[derive(Default)]
struct Network {
    /// Directed pairs (src, dest) whose messages are dropped.
    cut: HashSet<(String, String)>,
    /// Node-to-node messages delivered, by body type.
    delivered: BTreeMap<String, usize>,
    /// Node-to-node messages dropped by a cut.
    dropped: usize,
}

/// A running node: where to write its input, and its task.
struct NodeHandle {
    input: mpsc::UnboundedSender<Vec<u8>>,
    task: JoinHandle<Result<(), String>>,
}

/// Node id to where its input goes now (it changes when a node restarts).
type Inputs = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Vec<u8>>>>>;

/// N nodes, a router between them, and a client that talks to any node.
struct TestCluster {
    ids: Vec<String>,
    root: TempDir,
    nodes: HashMap<String, NodeHandle>,
    /// Shared with every router task.
    inputs: Inputs,
    network: Arc<Mutex<Network>>,
    /// Replies to the client, by msg_id.
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next_msg_id: u64,
    /// How many times each node has been started.
    boots: HashMap<String, u32>,
}

impl TestCluster {
    async fn start(count: usize) -> TestCluster {
        let ids: Vec<String> = (0..count).map(|i| format!("n{i}")).collect();
        let mut cluster = TestCluster {
            ids: ids.clone(),
            root: TempDir::new().expect("tempdir"),
            nodes: HashMap::new(),
            inputs: Arc::default(),
            network: Arc::default(),
            waiting: Arc::default(),
            next_msg_id: 0,
            boots: HashMap::new(),
        };
        for id in &ids {
            cluster.boot(id).await;
        }
        cluster
    }

    /// The data directory of start number `boot` (the node keeps its files
    /// in `<data dir>/<id>/`).
    fn data_dir(&self, boot: u32) -> PathBuf {
        self.root.path().join(format!("boot-{boot}"))
    }

    /// Starts node `id` and initialises it; started again, on a copy of the
    /// files it left. Not on the files themselves: a process another test of
    /// this binary is starting holds a copy of this process's descriptors
    /// until its exec, the stopped node's directory lock among them.
    async fn boot(&mut self, id: &str) {
        let boot = *self
            .boots
            .entry(id.to_string())
            .and_modify(|boots| *boots += 1)
            .or_insert(0);
        if boot > 0 {
            copy_dir(
                &self.data_dir(boot - 1).join(id),
                &self.data_dir(boot).join(id),
            );
        }
        let (node_in, mut test_in) = tokio::io::duplex(PIPE_BYTES);
        let (node_out, test_out) = tokio::io::duplex(PIPE_BYTES);
        let args = NodeArgs {
            data_dir: Some(self.data_dir(boot)),
            segment_bytes: 4096,
            // One group per node, so that each node leads one.
            groups: Some(self.ids.len() as u32),
            min_free_bytes: None,
            verbose: 0,
        };
        let task = tokio::spawn(serve(BufReader::new(node_in), node_out, args));
        let (input, mut input_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(line) = input_rx.recv().await {
                if test_in.write_all(&line).await.is_err() {
                    return;
                }
            }
            // Every sender gone: the node's input ends.
        });
        self.route_output(id, test_out);
        lock(&self.inputs).insert(id.to_string(), input.clone());
        self.nodes
            .insert(id.to_string(), NodeHandle { input, task });
        let reply = self
            .call(
                id,
                json!({"type": "init", "node_id": id, "node_ids": self.ids}),
            )
            .await;
        assert_eq!(reply["type"], "init_ok", "{reply}");
    }

    /// Reads everything node `id` writes and delivers it: to another node
    /// unless the pair is cut, or to the client.
    fn route_output(&self, id: &str, output: DuplexStream) {
        let network = Arc::clone(&self.network);
        let waiting = Arc::clone(&self.waiting);
        let inputs = Arc::clone(&self.inputs);
        let src_id = id.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(output).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let message: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("{src_id} wrote a line that is not JSON ({e}): {line}")
                });
                assert_eq!(message["src"], json!(src_id), "{line}");
                let dest = message["dest"].as_str().expect("dest").to_string();
                if dest.starts_with('n') {
                    let kind = message["body"]["type"].as_str().unwrap_or("?").to_string();
                    {
                        let mut net = lock(&network);
                        let pair = (src_id.clone(), dest.clone());
                        if net.cut.contains(&pair) {
                            net.dropped += 1;
                            continue;
                        }
                        *net.delivered.entry(kind).or_default() += 1;
                    }
                    // A node that is down loses what is sent to it.
                    let target = lock(&inputs).get(&dest).cloned();
                    if let Some(target) = target {
                        let mut bytes = line.into_bytes();
                        bytes.push(b'\n');
                        let _ = target.send(bytes);
                    }
                } else {
                    let in_reply_to = message["body"]["in_reply_to"].as_u64().expect("a reply");
                    if let Some(tx) = lock(&waiting).remove(&in_reply_to) {
                        let _ = tx.send(message["body"].clone());
                    }
                }
            }
        });
    }

    /// Sends a request body to node `id` and returns the reply body.
    async fn call(&mut self, id: &str, body: Value) -> Value {
        let rx = self.request(id, body);
        timeout(WAIT, rx)
            .await
            .unwrap_or_else(|_| panic!("no reply from {id} within {WAIT:?}"))
            .expect("reply channel")
    }

    /// Sends a request without waiting; the receiver gets its reply.
    fn request(&mut self, id: &str, mut body: Value) -> oneshot::Receiver<Value> {
        self.next_msg_id += 1;
        let msg_id = self.next_msg_id;
        body["msg_id"] = json!(msg_id);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(msg_id, tx);
        let mut line = json!({"src": "c1", "dest": id, "body": body})
            .to_string()
            .into_bytes();
        line.push(b'\n');
        self.nodes[id].input.send(line).expect("node input open");
        rx
    }

    async fn send(&mut self, id: &str, key: &str, msg: i64) -> Value {
        self.call(id, json!({"type": "send", "key": key, "msg": msg}))
            .await
    }

    /// Every record node `id` returns for `key`, polling from 0 until the log ends.
    async fn read_all(&mut self, id: &str, key: &str) -> Vec<(u64, Value)> {
        let mut out: Vec<(u64, Value)> = Vec::new();
        loop {
            let from = out.len() as u64;
            let reply = self
                .call(id, json!({"type": "poll", "offsets": {key: from}}))
                .await;
            assert_eq!(reply["type"], "poll_ok", "{reply}");
            let Some(records) = reply["msgs"][key].as_array() else {
                return out;
            };
            for record in records {
                let offset = record[0].as_u64().expect("offset");
                assert_eq!(offset, out.len() as u64, "contiguous from {from}: {reply}");
                out.push((offset, record[1].clone()));
            }
        }
    }

    /// Waits until `id` holds exactly `expected` for `key`.
    async fn await_log(&mut self, id: &str, key: &str, expected: &[(u64, Value)]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.read_all(id, key).await;
            assert!(
                expected.starts_with(&got),
                "{id} holds {got:?} for {key}, not a prefix of {expected:?}"
            );
            if got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} has {} of {} records of {key} after {WAIT:?}",
                got.len(),
                expected.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn cut(&self, a: &str, b: &str) {
        let mut net = lock(&self.network);
        net.cut.insert((a.into(), b.into()));
        net.cut.insert((b.into(), a.into()));
    }

    fn heal(&self) {
        lock(&self.network).cut.clear();
    }

    fn delivered(&self, kind: &str) -> usize {
        lock(&self.network)
            .delivered
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// Ends node `id`'s input and waits for its clean exit.
    async fn stop(&mut self, id: &str) {
        let node = self.nodes.remove(id).expect("running");
        lock(&self.inputs).remove(id);
        drop(node.input);
        timeout(WAIT, node.task)
            .await
            .expect("node exits")
            .expect("node task")
            .expect("clean shutdown");
    }

    /// Each group's leader as node `via` knows it, once it knows one for every group.
    async fn leaders(&mut self, via: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let reply = self.call(via, json!({"type": "topology"})).await;
            assert_eq!(reply["type"], "topology_ok", "{reply}");
            let leaders: Option<Vec<String>> = reply["leaders"]
                .as_array()
                .expect("leaders")
                .iter()
                .map(|leader| leader.as_str().map(str::to_string))
                .collect();
            if let Some(leaders) = leaders {
                return leaders;
            }
            assert!(
                Instant::now() < deadline,
                "no leader for every group: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keys whose group `leader` leads (every node starts a group it leads first).
    async fn keys_led_by(&mut self, leader: &str, count: usize) -> Vec<String> {
        let leaders = self.leaders(leader).await;
        let groups = leaders.len() as u32;
        (0..)
            .map(|i| format!("k{i}"))
            .filter(|k| leaders[group_of(k, groups) as usize] == leader)
            .take(count)
            .collect()
    }
}

fn offset(reply: &Value) -> u64 {
    assert_eq!(reply["type"], "send_ok", "{reply}");
    reply["offset"].as_u64().expect("offset")
}

fn error_code(reply: &Value) -> Option<u64> {
    (reply["type"] == "error").then(|| reply["code"].as_u64().expect("code"))
}

#[tokio::test]
async fn sends_through_any_node_get_one_gapless_sequence_per_key_and_every_node_serves_it() {
    let mut c = TestCluster::start(3).await;
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    let mut expected: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    for round in 0..4 {
        for (i, key) in keys.iter().enumerate() {
            let via = c.ids[(i + round) % 3].clone();
            let msg = (round * 100 + i) as i64;
            let got = offset(&c.send(&via, key, msg).await);
            let log = expected.entry(key.clone()).or_default();
            assert_eq!(got, log.len() as u64, "{key} via {via}");
            log.push((got, json!(msg)));
        }
    }
    for id in c.ids.clone() {
        for (key, log) in &expected {
            c.await_log(&id, key, log).await;
        }
    }
    // The nodes talked in batches only; nobody used lin-kv or seq-kv (the
    // router would have had nowhere to deliver them).
    assert!(c.delivered("batch") > 0);
    assert_eq!(lock(&c.network).delivered.len(), 1, "only batches");
}

#[tokio::test]
async fn commits_taken_by_any_node_reach_every_node_and_never_go_back() {
    let mut c = TestCluster::start(3).await;
    let reply = c
        .call(
            "n0",
            json!({"type": "commit_offsets", "offsets": {"a": 5, "b": 2}}),
        )
        .await;
    assert_eq!(reply["type"], "commit_offsets_ok", "{reply}");
    let reply = c
        .call(
            "n2",
            json!({"type": "commit_offsets", "offsets": {"a": 3, "c": 9}}),
        )
        .await;
    assert_eq!(reply["type"], "commit_offsets_ok", "{reply}");
    let expected = json!({"a": 5, "b": 2, "c": 9});
    for id in c.ids.clone() {
        let deadline = Instant::now() + WAIT;
        loop {
            let reply = c
                .call(
                    &id,
                    json!({"type": "list_committed_offsets", "keys": ["a", "b", "c", "d"]}),
                )
                .await;
            if reply["offsets"] == expected {
                break;
            }
            assert!(Instant::now() < deadline, "{id}: {reply}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_burst_of_sends_through_a_follower_keeps_each_keys_offsets_gapless() {
    let mut c = TestCluster::start(2).await;
    let keys = c.keys_led_by("n1", 10).await;
    let replies: Vec<_> = (0..200)
        .map(|i| {
            let key = keys[i % keys.len()].clone();
            c.request("n0", json!({"type": "send", "key": key, "msg": i}))
        })
        .collect();
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (i, reply) in replies.into_iter().enumerate() {
        let reply = timeout(WAIT, reply).await.expect("reply").expect("channel");
        per_key
            .entry(keys[i % keys.len()].clone())
            .or_default()
            .push(offset(&reply));
    }
    for (key, offsets) in &per_key {
        let want: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, &want, "{key}: in request order, no gaps");
    }
    // Forwards ride in the batches of ticks: far fewer messages than sends.
    let batches = c.delivered("batch");
    assert!(batches < 200, "{batches} batches for 200 sends");
}

#[tokio::test]
async fn a_cut_off_leader_costs_its_side_availability_and_the_majority_elects_another() {
    let mut c = TestCluster::start(3).await;
    let isolated_key = c.keys_led_by("n2", 1).await.remove(0);
    assert_eq!(offset(&c.send("n0", &isolated_key, 1).await), 0);
    c.cut("n2", "n0");
    c.cut("n2", "n1");
    // n2 cannot commit alone: a send through it fails, never with an
    // acknowledgement.
    let reply = c.send("n2", &isolated_key, 2).await;
    let code = error_code(&reply).expect("an error from a leader cut off from its majority");
    assert!(code == 0 || code == 11, "{reply}");
    // n0 and n1 elect a leader of n2's group and take its writes; a send
    // that failed while they did so is tried again, as a client would.
    let deadline = Instant::now() + WAIT;
    let taken = loop {
        let reply = c.send("n0", &isolated_key, 3).await;
        if reply["type"] == "send_ok" {
            break offset(&reply);
        }
        assert!(
            Instant::now() < deadline,
            "the majority never took the key back: {reply}"
        );
    };
    assert!(taken >= 1, "after the record acknowledged before the cut");
    c.heal();
    // After the partition every node holds the same log, n2's unacknowledged
    // send at most once.
    let log = c.read_all("n0", &isolated_key).await;
    assert_eq!(log[0], (0, json!(1)));
    for id in ["n1", "n2"] {
        c.await_log(id, &isolated_key, &log).await;
    }
    assert!(lock(&c.network).dropped > 0, "the cut dropped messages");
}

#[tokio::test]
async fn a_restarted_leader_keeps_its_offsets_and_the_others_catch_up() {
    let mut c = TestCluster::start(3).await;
    let key = c.keys_led_by("n1", 1).await.remove(0);
    let mut log = Vec::new();
    for i in 0..5 {
        log.push((offset(&c.send("n0", &key, i).await), json!(i)));
    }
    // n2 misses what n1 writes next, then n1 restarts.
    c.cut("n1", "n2");
    for i in 5..8 {
        log.push((offset(&c.send("n1", &key, i).await), json!(i)));
    }
    c.stop("n1").await;
    c.boot("n1").await;
    c.heal();
    log.push((offset(&c.send("n2", &key, 8).await), json!(8)));
    assert_eq!(
        log.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    for id in c.ids.clone() {
        c.await_log(&id, &key, &log).await;
    }
    for id in c.ids.clone() {
        c.stop(&id).await;
    }
}

#[tokio::test]
async fn node_to_node_requests_from_clients_are_refused() {
    let mut c = TestCluster::start(2).await;
    let reply = c
        .call(
            "n0",
            json!({"type": "batch", "forwards": [{"group": 0, "id": {"node": 1, "seq": 1}, "ops": [{"Send": {"key": "k", "msg": "1"}}]}]}),
        )
        .await;
    assert_eq!(error_code(&reply), Some(10), "{reply}");
    let polled = c.read_all("n0", "k").await;
    assert!(polled.is_empty(), "{polled:?}");
}
