//! The cluster runtime (`src/cluster/runtime.rs`): three nodes in this
//! process, each with its own store in a temporary directory, its Raft
//! groups and its links over real loopback sockets, running group 0 over
//! all three. Every link goes through a proxy of its own (one per
//! direction of each pair), so a test can cut one node off from the
//! others. A test waits for the groups to get somewhere, polling each
//! [`TICK`]; [`PATIENCE`] only turns a hang into a failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seglog::cluster::link::Links;
use seglog::cluster::peers::{Cluster, Membership};
use seglog::cluster::runtime::{Runtime, TICK};
use seglog::lock::lock;
use seglog::raft::durability::OwnGroupCommit;
use seglog::raft::groups::{GroupSpec, Groups, ProposeError, TIMING_DEFAULT};
use seglog::raft::snapshot::Keys;
use seglog::raft::types::{NodeId, Op, Proposal};
use seglog::{Store, StoreConfig};
use tempfile::TempDir;

use crate::links::{address, cluster_id, listener, secret};
use crate::proxy::Proxy;

/// How long a test waits for the groups to get somewhere (an election
/// from a fresh start takes about two seconds; one after a cut, about one;
/// a link cut and healed is dialed again within two) before it fails
/// rather than hang. Generous for a loaded machine; no test passes by
/// waiting.
const PATIENCE: Duration = Duration::from_secs(60);

/// The nodes' ids: sparse, never indexes.
const NODES: [NodeId; 3] = [2, 5, 9];

/// The group every node runs.
const GROUP: u32 = 0;

/// The key the tests' proposals append to.
const KEY: &str = "runtime-test";

/// One node: its store, the group commit its groups sync with, and its
/// runtime.
struct Node {
    store: Arc<Mutex<Store>>,
    group_commit: Arc<OwnGroupCommit>,
    runtime: Runtime,
    _dir: TempDir,
}

impl Node {
    fn groups(&self) -> &Groups {
        self.runtime.groups()
    }

    /// The messages of [`KEY`] in this node's store.
    fn messages(&self) -> Vec<String> {
        let mut messages = Vec::new();
        lock(&self.store)
            .read(KEY, 0, &mut |_, bytes| {
                messages.push(String::from_utf8_lossy(bytes).into_owned());
                true
            })
            .expect("reading the key");
        messages
    }
}

/// Three nodes, and the proxy each node dials each other node through.
struct Nodes {
    nodes: BTreeMap<NodeId, Node>,
    /// By (from, to): what `from` dials to reach `to`.
    proxies: BTreeMap<(NodeId, NodeId), Proxy>,
}

impl Nodes {
    /// Starts [`NODES`], each running group [`GROUP`] over all three.
    async fn start() -> Nodes {
        let mut listeners = BTreeMap::new();
        for id in NODES {
            listeners.insert(id, listener().await);
        }
        let mut proxies = BTreeMap::new();
        for from in NODES {
            for (&to, to_listener) in &listeners {
                if from != to {
                    let target = to_listener.local_addr().expect("a listener's address");
                    proxies.insert((from, to), Proxy::start(target).await);
                }
            }
        }
        let names: BTreeMap<NodeId, String> =
            NODES.iter().map(|&id| (id, format!("node-{id}"))).collect();
        let mut nodes = BTreeMap::new();
        for (me, own) in listeners {
            // Each node reaches each other through its own proxy: the
            // lists differ in addresses only, which the links allow.
            let membership = Membership::new(NODES.iter().map(|&id| {
                let at = match proxies.get(&(me, id)) {
                    Some(proxy) => proxy.address().to_string(),
                    None => address(&own),
                };
                (id, at)
            }))
            .expect("a valid membership");
            nodes.insert(me, start_node(me, &names, own, membership).await);
        }
        Nodes { nodes, proxies }
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// Waits until every one of `among` knows the same leader of
    /// [`GROUP`], one of `among` and not `not`.
    async fn leader(&self, among: &[NodeId], not: Option<NodeId>) -> NodeId {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leaders: Vec<Option<NodeId>> = among
                .iter()
                .map(|&id| self.node(id).groups().leader(GROUP))
                .collect();
            if let Some(Some(leader)) = leaders.first()
                && among.contains(leader)
                && Some(*leader) != not
                && leaders.iter().all(|l| l == &Some(*leader))
            {
                return *leader;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {among:?} agree on no leader of group {GROUP} (other than {not:?}) \
                 after {PATIENCE:?}: they know {leaders:?}"
            );
            tokio::time::sleep(TICK).await;
        }
    }

    /// Appends `msg` to [`KEY`] through the leader `among` agree on,
    /// until one takes it; returns the entry's index once every one of
    /// `among` applied it.
    async fn commit(&self, among: &[NodeId], msg: &str) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        let index = loop {
            let leader = self.node(self.leader(among, None).await).groups();
            let proposal = Proposal {
                id: leader.next_proposal_id(),
                ops: vec![Op::Send {
                    key: KEY.into(),
                    msg: msg.into(),
                }],
            };
            match leader.propose(GROUP, proposal).await {
                Ok((index, _)) => break index,
                // Nothing was appended: leadership moved; propose again.
                Err(
                    ProposeError::NotLeader(_)
                    | ProposeError::Failed {
                        appended: false, ..
                    },
                ) if Instant::now() < deadline => {
                    tokio::time::sleep(TICK).await;
                }
                Err(e) => panic!("proposing {msg} to group {GROUP}: {e:?}"),
            }
        };
        for &id in among {
            self.applied(id, index).await;
        }
        index
    }

    /// Waits until node `id` applied [`GROUP`]'s entry `index`.
    async fn applied(&self, id: NodeId, index: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.node(id).groups().applied(GROUP) < Some(index) {
            assert!(
                Instant::now() < deadline,
                "node {id} applied group {GROUP} up to {:?}, not entry {index}, after {PATIENCE:?}",
                self.node(id).groups().applied(GROUP)
            );
            tokio::time::sleep(TICK).await;
        }
    }

    /// Waits until node `id`'s store holds `messages` in [`KEY`] (what it
    /// applied becomes durable at its next sync point).
    async fn holds(&self, id: NodeId, messages: &[&str]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let held = self.node(id).messages();
            if held == messages {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} holds {held:?} in {KEY}, not {messages:?}, after {PATIENCE:?}"
            );
            tokio::time::sleep(TICK).await;
        }
    }

    /// Cuts node `id` off from every other node, both ways.
    fn cut(&self, id: NodeId) {
        for ((from, to), proxy) in &self.proxies {
            if *from == id || *to == id {
                proxy.cut();
            }
        }
    }

    /// Lets every link through again.
    fn heal(&self) {
        for proxy in self.proxies.values() {
            proxy.resume();
        }
    }

    /// Stops every node: its runtime (loop, links, groups), then its group
    /// commit after a last sync point.
    async fn stop(self) {
        for (id, node) in self.nodes {
            node.runtime
                .shutdown()
                .await
                .unwrap_or_else(|e| panic!("stopping node {id}: {e}"));
            let group_commit = node.group_commit;
            tokio::task::spawn_blocking(move || group_commit.close_and_join())
                .await
                .expect("the group commit's closing task")
                .unwrap_or_else(|e| panic!("closing node {id}'s group commit: {e}"));
        }
    }
}

/// Node `me`: a store in a fresh directory, groups running [`GROUP`] over
/// [`NODES`] (led first by the first), links on `own` to `membership`.
async fn start_node(
    me: NodeId,
    names: &BTreeMap<NodeId, String>,
    own: tokio::net::TcpListener,
    membership: Membership,
) -> Node {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("opening a store");
    let store = Arc::new(Mutex::new(store));
    let group_commit =
        Arc::new(OwnGroupCommit::start(Arc::clone(&store)).expect("starting a group commit"));
    let groups = Groups::new(
        me,
        names.clone(),
        Arc::clone(&store),
        group_commit.clone(),
        TIMING_DEFAULT,
    )
    .expect("the groups");
    groups
        .add(GroupSpec {
            group: GROUP,
            replicas: NODES.to_vec(),
            keys: Keys::hashed(GROUP, 1),
            appender: None,
        })
        .await
        .unwrap_or_else(|e| panic!("adding group {GROUP} on node {me}: {e}"));
    let cluster = Cluster {
        id: cluster_id(),
        me,
        membership,
    };
    let (links, incoming) = Links::start(own, cluster, secret());
    Node {
        store,
        group_commit,
        runtime: Runtime::start(Arc::new(groups), links, incoming),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runtimes_elect_a_leader_and_commit_on_all() {
    let nodes = Nodes::start().await;
    let leader = nodes.leader(&NODES, None).await;
    assert!(NODES.contains(&leader));
    let first = nodes.commit(&NODES, "\"first\"").await;
    let second = nodes.commit(&NODES, "\"second\"").await;
    assert!(second > first, "entry {second} is not after {first}");
    for id in NODES {
        assert!(nodes.node(id).groups().applied(GROUP) >= Some(second));
        nodes.holds(id, &["\"first\"", "\"second\""]).await;
    }
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_is_replaced_and_catches_up_once_healed() {
    let nodes = Nodes::start().await;
    let old = nodes.leader(&NODES, None).await;
    nodes.commit(&NODES, "\"before\"").await;
    let others: Vec<NodeId> = NODES.iter().copied().filter(|&id| id != old).collect();

    nodes.cut(old);
    nodes.leader(&others, Some(old)).await;
    let index = nodes.commit(&others, "\"during\"").await;
    for &id in &others {
        nodes.holds(id, &["\"before\"", "\"during\""]).await;
    }
    assert!(
        nodes.node(old).groups().applied(GROUP) < Some(index),
        "node {old}, cut off, applied entry {index}"
    );

    nodes.heal();
    nodes.applied(old, index).await;
    nodes.holds(old, &["\"before\"", "\"during\""]).await;
    // All three commit together again, the old leader among them.
    nodes.commit(&NODES, "\"after\"").await;
    for id in NODES {
        nodes
            .holds(id, &["\"before\"", "\"during\"", "\"after\""])
            .await;
    }
    nodes.stop().await;
}
