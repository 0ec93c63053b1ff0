//! Three `seglog serve` processes as one cluster (issue 20), for the tests
//! that run the real binary with `--peers`. Each node has its own data
//! directory and its own HTTP, Kafka and peer ports, which it keeps across
//! a restart; each node reaches each other through a proxy of its own (one
//! per direction of each pair, as `tests/cluster/runtime.rs` has), so a
//! test can cut one node off from both others and heal it. The proxies run
//! on a small tokio runtime the cluster owns; the test stays synchronous
//! and talks to each node over HTTP ([`Server`]) and Kafka (kcat).
//!
//! A test waits for the cluster to get somewhere with [`wait_until`],
//! asking again every [`POLL`]; [`PATIENCE`] only turns a hang into a
//! failure, which says what each node answered last.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::resume_unwind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::proxy::Proxy;
use crate::support::dirs::scratch_dir;
use crate::support::serve_process::Server;
use crate::support::tools;

/// A node's id, as `--node-id` and `--peers` give it.
pub type NodeId = u64;

/// The nodes' ids: sparse, so an id taken for an index shows.
pub const NODES: [NodeId; 3] = [2, 5, 9];

/// Every node's `--cluster-id`.
pub const CLUSTER_ID: &str = "procs-test";

/// How long a test waits for the cluster to get somewhere before it fails
/// rather than hang: an election from a fresh start takes about two
/// seconds, one after a kill about one (`tests/cluster/runtime.rs`); three
/// processes starting on a loaded two-core machine take longer. No test
/// passes by waiting.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How often [`wait_until`] asks again.
pub const POLL: Duration = Duration::from_millis(50);

/// How long one request of a poll may take: a running node answers reads
/// at once, so one that holds a read this long is hung, and the poll says
/// so rather than wait with it.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long kcat may wait for a node's Metadata (its `-m`, in seconds),
/// and how long its process may run before the poll calls it hung.
const KCAT_METADATA_SECS: u64 = 5;
const KCAT_HANG: Duration = Duration::from_secs(30);

/// Random bytes of the cluster secret (the binary needs at least 32).
const SECRET_BYTES: usize = 32;

/// One node: where it listens, its directory, and its process while it
/// runs.
struct Node {
    /// Its data directory, kept across a kill and a restart.
    dir: TempDir,
    /// Its HTTP listener (`--listen`).
    http: SocketAddr,
    /// Its Kafka listener (`--kafka`), which it also advertises.
    kafka: SocketAddr,
    /// Where it listens for its peers: its own `--peers` entry.
    peer: SocketAddr,
    /// The running process; `None` once killed, until restarted.
    server: Option<Server>,
}

/// Three nodes of one cluster, and the proxy each dials each other through.
pub struct Cluster {
    /// By id. Dropped first: the processes are killed before the proxies.
    nodes: BTreeMap<NodeId, Node>,
    /// By (from, to): what `from` dials to reach `to`.
    proxies: BTreeMap<(NodeId, NodeId), Proxy>,
    /// Runs the proxies' tasks; dropped after them.
    _runtime: tokio::runtime::Runtime,
    /// The secret file every node reads.
    secret: PathBuf,
    _secret_dir: TempDir,
}

impl Cluster {
    /// Starts [`NODES`] as one cluster, all three processes at once (a
    /// node may wait for its peers before it answers); returns once each
    /// says where it listens. Nothing is waited for beyond that: a test
    /// waits for what it needs (a leader, the nodes registered).
    pub fn start() -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the proxies");
        let secret_dir = tempfile::tempdir().expect("a directory for the secret");
        let secret = write_secret(secret_dir.path());
        let (ports, held) = free_ports(3 * NODES.len());
        let mut ports = ports.into_iter();
        let mut nodes = BTreeMap::new();
        for id in NODES {
            let mut port = || ports.next().expect("enough free ports");
            let node = Node {
                dir: scratch_dir(),
                http: port(),
                kafka: port(),
                peer: port(),
                server: None,
            };
            nodes.insert(id, node);
        }
        let mut proxies = BTreeMap::new();
        for from in NODES {
            for to in NODES.into_iter().filter(|&to| to != from) {
                let target = nodes[&to].peer;
                proxies.insert((from, to), runtime.block_on(Proxy::start(target)));
            }
        }
        // The proxies have their ports: the nodes' are freed for them.
        drop(held);
        let mut cluster = Cluster {
            nodes,
            proxies,
            _runtime: runtime,
            secret,
            _secret_dir: secret_dir,
        };
        let started: Vec<(NodeId, Server)> = thread::scope(|scope| {
            let cluster = &cluster;
            let starting: Vec<_> = NODES
                .map(|id| (id, scope.spawn(move || cluster.spawn(id))))
                .into_iter()
                .collect();
            starting
                .into_iter()
                // A node that failed to start fails the test with its reason.
                .map(|(id, start)| (id, start.join().unwrap_or_else(|e| resume_unwind(e))))
                .collect()
        });
        for (id, server) in started {
            cluster.node_mut(id).server = Some(server);
        }
        cluster
    }

    /// Starts node `id`'s process with its arguments; waits until it says
    /// where it listens.
    fn spawn(&self, id: NodeId) -> Server {
        Server::start_args(&format!("node {id}"), &self.args(id))
    }

    /// Node `id`'s command line after `serve`: the same at every start.
    fn args(&self, id: NodeId) -> Vec<OsString> {
        let node = &self.nodes[&id];
        let peers: Vec<String> = NODES
            .iter()
            .map(|&to| format!("{to}={}", self.peer_address(id, to)))
            .collect();
        let args: [OsString; 14] = [
            "--listen".into(),
            node.http.to_string().into(),
            "--kafka".into(),
            node.kafka.to_string().into(),
            "--data-dir".into(),
            node.dir.path().into(),
            "--node-id".into(),
            id.to_string().into(),
            "--peers".into(),
            peers.join(",").into(),
            "--cluster-id".into(),
            CLUSTER_ID.into(),
            "--cluster-secret-file".into(),
            self.secret.clone().into(),
        ];
        args.into()
    }

    /// What `from` dials to reach `to`: its own peer listener for itself,
    /// else the proxy between them.
    fn peer_address(&self, from: NodeId, to: NodeId) -> SocketAddr {
        match self.proxies.get(&(from, to)) {
            Some(proxy) => proxy.address(),
            None => self.nodes[&to].peer,
        }
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Node `id`'s process; the test fails if it is not running.
    pub fn server(&self, id: NodeId) -> &Server {
        self.nodes[&id]
            .server
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Node `id`'s HTTP address, `host:port`.
    pub fn http(&self, id: NodeId) -> String {
        self.nodes[&id].http.to_string()
    }

    /// Node `id`'s Kafka address, `host:port`: bound and advertised.
    pub fn kafka(&self, id: NodeId) -> String {
        self.nodes[&id].kafka.to_string()
    }

    /// Node `id`'s peer listener, `host:port`: its own `--peers` entry.
    pub fn peer(&self, id: NodeId) -> String {
        self.nodes[&id].peer.to_string()
    }

    /// Kills node `id` with SIGKILL; its directory stays for a restart.
    pub fn kill9(&mut self, id: NodeId) {
        let server = self.node_mut(id).server.take();
        server
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .kill();
    }

    /// Starts node `id` again on its directory and ports.
    pub fn restart(&mut self, id: NodeId) {
        assert!(
            self.nodes[&id].server.is_none(),
            "node {id} is still running"
        );
        let server = self.spawn(id);
        self.node_mut(id).server = Some(server);
    }

    /// Empties node `id`'s data directory, as a lost disk replaced by a
    /// blank one: the directory stays, everything in it goes. The node
    /// must be stopped ([`Cluster::kill9`]); [`Cluster::restart`] then
    /// starts it on the empty directory with the same flags.
    pub fn wipe(&mut self, id: NodeId) {
        let node = &self.nodes[&id];
        assert!(node.server.is_none(), "node {id} is still running");
        let dir = node.dir.path();
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("listing node {id}'s directory {dir:?}: {e}"));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|e| panic!("removing {path:?}: {e}"));
        }
    }

    /// Cuts node `id` off from both others, both ways: every link to or
    /// from it is closed, and every new one, until [`Cluster::heal`].
    pub fn cut(&self, id: NodeId) {
        self.links_of(id).for_each(Proxy::cut);
    }

    /// Lets node `id`'s links through again (the nodes dial again).
    pub fn heal(&self, id: NodeId) {
        self.links_of(id).for_each(Proxy::resume);
    }

    fn links_of(&self, id: NodeId) -> impl Iterator<Item = &Proxy> {
        self.proxies
            .iter()
            .filter(move |((from, to), _)| *from == id || *to == id)
            .map(|(_, proxy)| proxy)
    }

    /// A request to node `id` with a JSON body or none; its status and
    /// JSON reply (`null` when empty), or what went wrong, as text. No
    /// answer within `timeout` is such an error.
    pub fn try_request(
        &self,
        id: NodeId,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(u16, Value), String> {
        let body = body.map(Value::to_string);
        let (status, text) = self
            .server(id)
            .try_request_text(method, path, body.as_deref(), timeout)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if text.is_empty() {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {path}: {status} and not JSON ({e}): {text}"))?;
        Ok((status, value))
    }

    /// `GET path` on node `id`: the reply of a 200, else what it got.
    pub fn get(&self, id: NodeId, path: &str) -> Result<Value, String> {
        match self.try_request(id, "GET", path, None, ASK_TIMEOUT)? {
            (200, value) => Ok(value),
            (status, value) => Err(format!("GET {path}: {status} {value}")),
        }
    }

    /// Node `id`'s `GET /cluster`.
    pub fn view(&self, id: NodeId) -> Result<Value, String> {
        self.get(id, "/cluster")
    }

    /// The metadata leader node `id` knows (`null`: none).
    pub fn metadata_leader(&self, id: NodeId) -> Result<Option<NodeId>, String> {
        let view = self.view(id)?;
        match &view["metadata_leader"] {
            Value::Null => Ok(None),
            leader => leader
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("metadata_leader is not a node id: {view}")),
        }
    }

    /// Waits until every one of `among` knows the same metadata leader,
    /// one of `among` and not `not`; returns it.
    pub fn leader(&self, among: &[NodeId], not: Option<NodeId>) -> NodeId {
        let what = format!("nodes {among:?} agree on a metadata leader among them, not {not:?}");
        wait_until(&what, PATIENCE, || {
            let known: Vec<Result<Option<NodeId>, String>> =
                among.iter().map(|&id| self.metadata_leader(id)).collect();
            match known.first() {
                Some(Ok(Some(leader)))
                    if among.contains(leader)
                        && Some(*leader) != not
                        && known.iter().all(|k| k == &Ok(Some(*leader))) =>
                {
                    Ok(*leader)
                }
                _ => Err(each(among, &known)),
            }
        })
    }

    /// The topic names node `id`'s `GET /topics` lists, sorted.
    pub fn topics(&self, id: NodeId) -> Result<Vec<String>, String> {
        let reply = self.get(id, "/topics")?;
        let mut names: Vec<String> = reply
            .as_array()
            .and_then(|names| names.iter().map(|n| n.as_str().map(String::from)).collect())
            .ok_or_else(|| format!("GET /topics is not a list of names: {reply}"))?;
        names.sort();
        Ok(names)
    }

    /// Waits until `GET /topics` on every one of `among` lists exactly
    /// `names`.
    pub fn wait_for_topics(&self, among: &[NodeId], names: &[&str]) {
        let mut want: Vec<String> = names.iter().map(|&n| n.to_string()).collect();
        want.sort();
        wait_until(
            &format!("GET /topics on {among:?} is {want:?}"),
            PATIENCE,
            || {
                let got: Vec<Result<Vec<String>, String>> =
                    among.iter().map(|&id| self.topics(id)).collect();
                if got.iter().all(|g| g.as_ref() == Ok(&want)) {
                    Ok(())
                } else {
                    Err(each(among, &got))
                }
            },
        );
    }

    /// The topics node `id`'s Kafka `Metadata` lists, with their
    /// partition counts.
    pub fn kafka_topics(&self, id: NodeId) -> Result<BTreeMap<String, usize>, String> {
        kafka_topics_at(&self.kafka(id))
    }

    /// Waits until Kafka `Metadata` on every one of `among` lists exactly
    /// `want` (topic names and partition counts).
    pub fn wait_for_kafka_topics(&self, among: &[NodeId], want: &BTreeMap<String, usize>) {
        tools::require_kcat();
        wait_until(
            &format!("Kafka Metadata on {among:?} is {want:?}"),
            PATIENCE,
            || {
                let got: Vec<Result<BTreeMap<String, usize>, String>> =
                    among.iter().map(|&id| self.kafka_topics(id)).collect();
                if got.iter().all(|g| g.as_ref() == Ok(want)) {
                    Ok(())
                } else {
                    Err(each(among, &got))
                }
            },
        );
    }

    /// `POST /topics` on node `id`, asked again while it answers 503 (the
    /// metadata group has no leader yet); its last status and reply. A
    /// request that gets no answer fails the test: whether it created
    /// the topic is then unknown.
    pub fn create_topic(&self, id: NodeId, name: &str, partitions: u32) -> (u16, Value) {
        self.create_topic_as(id, &json!({"name": name, "partitions": partitions}))
    }

    /// [`Cluster::create_topic`] with the whole body of `POST /topics`.
    pub fn create_topic_as(&self, id: NodeId, body: &Value) -> (u16, Value) {
        let mut last = None;
        let what = format!("node {id} answers POST /topics {body} with other than 503");
        wait_until(&what, PATIENCE, || {
            match self.try_request(id, "POST", "/topics", Some(body), PATIENCE) {
                Ok((503, reply)) => {
                    let why = format!("503 {reply}");
                    last = Some(why.clone());
                    Err(why)
                }
                Ok(answer) => Ok(answer),
                Err(e) => panic!("{e} (after {last:?})"),
            }
        })
    }

    /// [`Cluster::create_topic`], which must succeed: 201, and the topic
    /// listed by the node that answered as soon as it answers.
    pub fn create_topic_ok(&self, id: NodeId, name: &str, partitions: u32) {
        let (status, reply) = self.create_topic(id, name, partitions);
        assert_eq!(status, 201, "node {id}: POST /topics {name}: {reply}");
        let topics = self.topics(id);
        assert!(
            topics.as_ref().is_ok_and(|t| t.iter().any(|t| t == name)),
            "node {id} answered 201 for {name} but does not list it: {topics:?}"
        );
    }
}

/// Asks `probe` every [`POLL`] until it gives a value; fails the test
/// after `patience` with what was waited for and the probe's last answer
/// (which should say what each node returned: see [`each`]).
pub fn wait_until<T>(
    what: &str,
    patience: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "waited {patience:?} for: {what}; last: {last}"
            ),
        }
        thread::sleep(POLL);
    }
}

/// The topics the Kafka broker at `address` lists in its `Metadata` (as
/// kcat `-L -J` prints it), with their partition counts.
pub fn kafka_topics_at(address: &str) -> Result<BTreeMap<String, usize>, String> {
    let metadata = kafka_metadata_at(address)?;
    let topics = metadata["topics"]
        .as_array()
        .ok_or_else(|| format!("no topics in {metadata}"))?;
    topics
        .iter()
        .map(|topic| {
            let name = topic["topic"].as_str();
            let partitions = topic["partitions"].as_array().map(Vec::len);
            name.zip(partitions)
                .map(|(name, partitions)| (name.to_string(), partitions))
                .ok_or_else(|| format!("a topic without a name or partitions: {topic}"))
        })
        .collect()
}

/// The Kafka `Metadata` of the broker at `address`, as kcat `-L -J`
/// prints it.
pub fn kafka_metadata_at(address: &str) -> Result<Value, String> {
    let timeout = KCAT_METADATA_SECS.to_string();
    let out = run_client(Command::new("kcat").args(["-b", address, "-L", "-J", "-m", &timeout]))?;
    serde_json::from_str(&out).map_err(|e| format!("kcat -L -J printed no JSON ({e}): {out}"))
}

/// What each of `ids` answered, one `node N: ...` per node, for a failure.
pub fn each<T: std::fmt::Debug>(ids: &[NodeId], answers: &[Result<T, String>]) -> String {
    ids.iter()
        .zip(answers)
        .map(|(id, answer)| match answer {
            Ok(value) => format!("node {id}: {value:?}"),
            Err(e) => format!("node {id}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `count` distinct free loopback ports for the nodes to listen on (fixed,
/// so a restarted node is found at the same address), with the listeners
/// that hold them: the caller frees them once its proxies have their own
/// ports, which could otherwise be one of these (the OS hands a port just
/// freed to the next bind of port 0: a node's `--peers` then named one
/// address twice). Another process could take one in between; the node
/// then fails to start, saying so.
fn free_ports(count: usize) -> (Vec<SocketAddr>, Vec<TcpListener>) {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().expect("a listener's address"))
        .collect();
    (ports, listeners)
}

/// A cluster secret file in `dir`: [`SECRET_BYTES`] random bytes as hex,
/// mode 0600 from its creation (the binary refuses one others may read).
fn write_secret(dir: &Path) -> PathBuf {
    let path = dir.join("cluster-secret");
    let bytes: [u8; SECRET_BYTES] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("creating the secret file");
    writeln!(file, "{hex}").expect("writing the secret file");
    path
}

/// Runs a client to its end; its stdout, or its exit and stderr as the
/// error. Killed after [`KCAT_HANG`].
fn run_client(command: &mut Command) -> Result<String, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?} did not start: {e}"))?;
    let mut stdout = child.stdout.take().expect("a piped stdout");
    let mut stderr = child.stderr.take().expect("a piped stderr");
    // Read both while it runs, so a full pipe cannot stop it.
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + KCAT_HANG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a client") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{command:?} still running after {KCAT_HANG:?}"));
        }
        thread::sleep(POLL);
    };
    let out = out.join().expect("reading stdout");
    let err = err.join().expect("reading stderr");
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{command:?}: {status}: {err}"))
    }
}
