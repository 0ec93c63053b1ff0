//! Several nodes in one process, wired by an in-process router through
//! `seglog::node::serve`: forwarding, replication, commits on any node,
//! partitions and restarts, checked message by message. (The process-level
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
    /// Directed pairs whose messages wait here until released.
    held: HashMap<(String, String), Vec<Vec<u8>>>,
    /// Node-to-node messages delivered, by body type.
    delivered: BTreeMap<String, usize>,
    /// Node-to-node messages dropped by a cut.
    dropped: usize,
    /// The msg_id of every node-to-node request, by sender, in order.
    request_ids: HashMap<String, Vec<u64>>,
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
            groups: None,
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
                        if let Some(id) = message["body"]["msg_id"].as_u64() {
                            net.request_ids.entry(src_id.clone()).or_default().push(id);
                        }
                        let pair = (src_id.clone(), dest.clone());
                        if net.cut.contains(&pair) {
                            net.dropped += 1;
                            continue;
                        }
                        if let Some(held) = net.held.get_mut(&pair) {
                            held.push(line.into_bytes());
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

    /// Holds messages from `src` to `dest` until [`TestCluster::release`].
    fn hold(&self, src: &str, dest: &str) {
        lock(&self.network)
            .held
            .entry((src.into(), dest.into()))
            .or_default();
    }

    /// Delivers what was held from `src` to `dest`, and stops holding.
    fn release(&self, src: &str, dest: &str) {
        let held = lock(&self.network)
            .held
            .remove(&(src.to_string(), dest.to_string()))
            .unwrap_or_default();
        let target = lock(&self.inputs).get(dest).cloned().expect("dest is up");
        for mut line in held {
            line.push(b'\n');
            target.send(line).expect("dest input open");
        }
    }

    /// Waits until `count` `forward_ok`s from `src` to `dest` are held.
    async fn await_held_forward_oks(&self, src: &str, dest: &str, count: usize) {
        let pair = (src.to_string(), dest.to_string());
        let deadline = Instant::now() + WAIT;
        loop {
            let held = lock(&self.network).held.get(&pair).map_or(0, |lines| {
                lines
                    .iter()
                    .filter(|l| String::from_utf8_lossy(l).contains("\"forward_ok\""))
                    .count()
            });
            if held >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{held} forward_ok held, not {count}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

    /// Owner of `key`, as the nodes compute it: FNV-1a over the sorted ids.
    fn owner(&self, key: &str) -> String {
        let hash = seglog::storage::keyname::fnv1a64(key.as_bytes());
        let mut ids = self.ids.clone();
        ids.sort();
        ids[(hash % ids.len() as u64) as usize].clone()
    }

    /// Keys owned by `owner`.
    fn keys_of(&self, owner: &str, count: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("k{i}"))
            .filter(|k| self.owner(k) == owner)
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
    // Every node forwarded sends it does not own; nobody used lin-kv or seq-kv
    // (the router would have had nowhere to deliver them).
    assert!(c.delivered("forward") > 0);
    assert!(c.delivered("replicate") > 0);
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
async fn a_burst_of_sends_for_one_owner_shares_few_forwards() {
    let mut c = TestCluster::start(2).await;
    let keys = c.keys_of("n1", 10);
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
    // The first forward leaves alone; the rest were queued behind it.
    let forwards = c.delivered("forward");
    assert!(forwards <= 10, "{forwards} forwards for 200 sends");
}

#[tokio::test]
async fn a_cut_off_owner_costs_availability_not_correctness_and_catches_up() {
    let mut c = TestCluster::start(3).await;
    let isolated_key = c.keys_of("n2", 1).remove(0);
    let reachable_key = c.keys_of("n0", 1).remove(0);
    assert_eq!(offset(&c.send("n0", &isolated_key, 1).await), 0);
    c.cut("n2", "n0");
    c.cut("n2", "n1");
    // Sends for n2's key through n0 fail: never with an acknowledgement, and
    // with a definite code only if the send was never forwarded.
    let reply = c.send("n0", &isolated_key, 2).await;
    let code = error_code(&reply).expect("an error while the owner is cut off");
    assert!(code == 0 || code == 11, "{reply}");
    // The rest of the cluster works, and n2 keeps serving its own keys.
    assert_eq!(offset(&c.send("n1", &reachable_key, 10).await), 0);
    assert_eq!(offset(&c.send("n2", &isolated_key, 3).await), 1);
    c.heal();
    // After the partition n2 gets n0's records and n0 gets n2's, including
    // the send that timed out, if n2 appended it: either way the logs agree.
    let reply = c.send("n0", &isolated_key, 4).await;
    let last = offset(&reply);
    let owners_log = c.read_all("n2", &isolated_key).await;
    assert_eq!(
        owners_log.len() as u64,
        last + 1,
        "read your acknowledged writes"
    );
    for id in ["n0", "n1"] {
        c.await_log(id, &isolated_key, &owners_log).await;
    }
    c.await_log("n2", &reachable_key, &[(0, json!(10))]).await;
    assert!(lock(&c.network).dropped > 0, "the cut dropped messages");
}

#[tokio::test]
async fn a_restarted_owner_keeps_its_offsets_and_its_replicas_catch_up() {
    let mut c = TestCluster::start(3).await;
    let key = c.keys_of("n1", 1).remove(0);
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
        .call("n0", json!({"type": "forward", "sends": [["k", 1]]}))
        .await;
    assert_eq!(error_code(&reply), Some(10), "{reply}");
    let reply = c
        .call(
            "n0",
            json!({"type": "replicate", "boot": 1, "logs": {"k": [0, [1]]}, "commits": {}}),
        )
        .await;
    assert_eq!(error_code(&reply), Some(10), "{reply}");
    let polled = c.read_all("n0", "k").await;
    assert!(polled.is_empty(), "{polled:?}");
}

/// Regression: message ids restarted at 1 with each process, so a peer's
/// late answer to a forward of the previous process could be taken for the
/// answer to the new process's forward with the same id, and its clients
/// told offsets of other messages.
#[tokio::test]
async fn regression_a_late_reply_to_a_previous_process_is_not_taken() {
    let mut c = TestCluster::start(2).await;
    let key = c.keys_of("n1", 1).remove(0);
    c.hold("n1", "n0");
    let lost = c.request("n0", json!({"type": "send", "key": key, "msg": 100}));
    c.await_held_forward_oks("n1", "n0", 1).await;
    c.stop("n0").await;
    drop(lost);
    let old_ids = lock(&c.network)
        .request_ids
        .remove("n0")
        .unwrap_or_default();
    c.boot("n0").await;
    let fresh = c.request("n0", json!({"type": "send", "key": key, "msg": 200}));
    // Both answers wait for the new n0, the stale one first.
    c.await_held_forward_oks("n1", "n0", 2).await;
    let new_ids = lock(&c.network)
        .request_ids
        .get("n0")
        .cloned()
        .unwrap_or_default();
    let (old_max, new_min) = (old_ids.iter().max(), new_ids.iter().min());
    assert!(
        new_min > old_max,
        "the new process reuses ids: old up to {old_max:?}, new from {new_min:?}"
    );
    c.release("n1", "n0");
    let reply = timeout(WAIT, fresh).await.expect("reply").expect("channel");
    assert_eq!(offset(&reply), 1, "the second send is at offset 1: {reply}");
    let log = c.read_all("n1", &key).await;
    assert_eq!(log, vec![(0, json!(100)), (1, json!(200))]);
}
