//! Several nodes' groups in one process, each node on its own store in a
//! temporary directory, joined by a router that carries every node's
//! transport batches to their peers each tick, as a front end does: node
//! ids that are not indexes, a group on some of the nodes only, and groups
//! added and removed while the nodes run.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use openraft::raft::VoteRequest;

use super::durability::{Done, Durability, OwnGroupCommit, synced};
use super::groups::{FORWARD_RETRY, GroupSpec, Groups, ProposeError, TIMING_DEFAULT};
use super::log::{GroupLog, Record, log_key, stored_groups};
use super::snapshot::Keys;
use super::standing::{Note, PROBE_AFTER_MS};
use super::transport::{Reply, Rpc};
use super::types::{NodeId, Op, OpResult, Proposal, ProposalId};
use crate::lock::lock;
use crate::storage::store::{Store, StoreConfig};

/// How long a test waits for the groups to get somewhere (an election
/// takes about two seconds from a fresh start: a second before a node
/// without state probes, then the election) before it fails rather than
/// hang. Generous for a loaded machine; no test passes by waiting.
const PATIENCE: Duration = Duration::from_secs(60);

/// How often the router carries the batches, as the Maelstrom node ticks.
const TICK: Duration = Duration::from_millis(10);

/// One node: its store, group commit and groups.
struct Node {
    _dir: tempfile::TempDir,
    store: Arc<Mutex<Store>>,
    group_commit: Arc<OwnGroupCommit>,
    /// What its groups wait on for sync points: the group commit's.
    gate: Arc<Gate>,
    groups: Arc<Groups>,
}

/// A durability over a node's group commit that, while closed, holds the
/// sync points asked for: a test stops an add or a removal at its sync
/// point for as long as it likes, and lets it go on, without timing.
struct Gate {
    group_commit: Arc<OwnGroupCommit>,
    /// The sync points asked for while closed; `None` while open.
    held: Mutex<Option<Vec<Done>>>,
    /// How many are held.
    count: tokio::sync::watch::Sender<usize>,
}

impl Durability for Gate {
    fn after_sync(&self, done: Done) {
        let mut held = lock(&self.held);
        match &mut *held {
            Some(waiting) => {
                waiting.push(done);
                self.count.send_replace(waiting.len());
            }
            None => {
                drop(held);
                self.group_commit.after_sync(done);
            }
        }
    }
}

impl Gate {
    fn close(&self) {
        *lock(&self.held) = Some(Vec::new());
        self.count.send_replace(0);
    }

    /// Waits until the gate holds `count` sync points.
    async fn holding(&self, count: usize) {
        let mut held = self.count.subscribe();
        tokio::time::timeout(PATIENCE, held.wait_for(|&n| n >= count))
            .await
            .unwrap_or_else(|_| panic!("the gate never held {count} sync points"))
            .expect("the gate");
    }

    /// Lets the sync points held go on, and those asked for later.
    fn open(&self) {
        let held = lock(&self.held).take();
        for done in held.into_iter().flatten() {
            self.group_commit.after_sync(done);
        }
    }
}

impl Node {
    fn start(me: NodeId, names: &BTreeMap<NodeId, String>) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("store");
        Node::on(dir, Arc::new(Mutex::new(store)), me, names)
    }

    fn on(
        dir: tempfile::TempDir,
        store: Arc<Mutex<Store>>,
        me: NodeId,
        names: &BTreeMap<NodeId, String>,
    ) -> Node {
        let group_commit = Arc::new(OwnGroupCommit::start(Arc::clone(&store)).expect("commit"));
        let gate = Arc::new(Gate {
            group_commit: Arc::clone(&group_commit),
            held: Mutex::new(None),
            count: tokio::sync::watch::Sender::new(0),
        });
        let groups = Groups::new(
            me,
            names.clone(),
            Arc::clone(&store),
            gate.clone(),
            TIMING_DEFAULT,
        )
        .expect("groups");
        Node {
            _dir: dir,
            store,
            group_commit,
            gate,
            groups: Arc::new(groups),
        }
    }

    fn keys(&self) -> Vec<String> {
        lock(&self.store).keys().expect("keys")
    }

    async fn stop(self) -> (tempfile::TempDir, Arc<Mutex<Store>>) {
        self.groups.shutdown().await;
        self.group_commit.close_and_join().expect("group commit");
        (self._dir, self.store)
    }
}

/// What the router carried: (from, to, group) of every call and note.
type Carried = Arc<Mutex<Vec<(NodeId, NodeId, u32)>>>;

/// Nodes and the router between them.
struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    carried: Carried,
    router: tokio::task::JoinHandle<()>,
}

impl Cluster {
    fn start(ids: &[NodeId]) -> Cluster {
        let names: BTreeMap<NodeId, String> =
            ids.iter().map(|&id| (id, format!("node-{id}"))).collect();
        let nodes: BTreeMap<NodeId, Node> = ids
            .iter()
            .map(|&id| (id, Node::start(id, &names)))
            .collect();
        let groups: BTreeMap<NodeId, Arc<Groups>> = nodes
            .iter()
            .map(|(&id, node)| (id, Arc::clone(&node.groups)))
            .collect();
        let carried = Carried::default();
        let router = tokio::spawn(route(groups, Arc::clone(&carried)));
        Cluster {
            nodes,
            carried,
            router,
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    async fn add(&self, on: &[NodeId], spec: &GroupSpec) {
        for id in on {
            self.node(*id)
                .groups
                .add(spec.clone())
                .await
                .unwrap_or_else(|e| panic!("adding group {} on node {id}: {e}", spec.group));
        }
    }

    /// Waits until every one of `replicas` knows the same leader of `g`.
    async fn leader(&self, g: u32, replicas: &[NodeId]) -> NodeId {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leaders: Vec<Option<NodeId>> = replicas
                .iter()
                .map(|id| self.node(*id).groups.leader(g))
                .collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
            {
                return *leader;
            }
            assert!(
                Instant::now() < deadline,
                "group {g} has no leader all of {replicas:?} know: {leaders:?}"
            );
            tokio::time::sleep(TICK).await;
        }
    }

    /// Proposes `ops` to group `g` at its leader until one takes them;
    /// waits until every replica applied the entry; returns the results.
    async fn commit(&self, g: u32, replicas: &[NodeId], ops: Vec<Op>) -> Vec<OpResult> {
        let deadline = Instant::now() + PATIENCE;
        let (index, results) = loop {
            let leader = self.node(self.leader(g, replicas).await);
            let proposal = Proposal {
                id: leader.groups.next_proposal_id(),
                ops: ops.clone(),
            };
            match leader.groups.propose(g, proposal).await {
                Ok(done) => break done,
                Err(ProposeError::NotLeader(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(TICK).await;
                }
                Err(e) => panic!("proposing to group {g}: {e:?}"),
            }
        };
        for id in replicas {
            while self.node(*id).groups.applied(g) < Some(index) {
                assert!(
                    Instant::now() < deadline,
                    "node {id} did not apply entry {index} of group {g}"
                );
                tokio::time::sleep(TICK).await;
            }
        }
        results
    }

    /// Whether the router carried a call or note of group `g` to or from
    /// `node`.
    fn carried_any(&self, g: u32, node: NodeId) -> bool {
        lock(&self.carried)
            .iter()
            .any(|&(from, to, group)| group == g && (from == node || to == node))
    }

    async fn stop(self) {
        self.router.abort();
        for node in self.nodes.into_values() {
            node.stop().await;
        }
    }
}

/// Every tick, each node's groups tick and its batches go to their peers:
/// answers to the calls that wait for them, notes to the groups, calls to
/// the groups in tasks whose replies go back in the next batch.
async fn route(groups: BTreeMap<NodeId, Arc<Groups>>, carried: Carried) {
    loop {
        let now = Instant::now();
        for (&from, node) in &groups {
            node.tick(now);
            for (to, batch) in node.transport.take_batches() {
                let Some(peer) = groups.get(&to) else {
                    continue;
                };
                {
                    let mut carried = lock(&carried);
                    carried.extend(batch.calls.iter().map(|call| (from, to, call.group)));
                    carried.extend(batch.notes.iter().map(|note| (from, to, note.group())));
                }
                peer.transport.deliver(from, batch.answers);
                for note in batch.notes {
                    peer.on_note(from, note);
                }
                for call in batch.calls {
                    let peer = Arc::clone(peer);
                    tokio::spawn(async move {
                        let reply = peer.serve(from, call.group, call.rpc).await;
                        peer.transport.answer(from, call.id, reply);
                    });
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Marks group `g`'s log in `store` (which no group commit serves any
/// more) removed, durably: as if the node died right after its removal
/// marked it.
async fn mark_removed(store: &Arc<Mutex<Store>>, g: u32) {
    let commit = OwnGroupCommit::start(Arc::clone(store)).expect("commit");
    lock(store)
        .append(&log_key(g), &Record::Removed.encode())
        .expect("marked");
    synced(&commit).await.expect("durable");
    commit.close_and_join().expect("closed");
}

/// Whether group `g`'s log in `node`'s store is marked removed, durably.
fn marked(node: &Node, g: u32) -> bool {
    let mut store = lock(&node.store);
    GroupLog::recover(&mut store, &log_key(g))
        .expect("the log")
        .removed
}

/// Polls `future` once: its output if it finished; `None` if it waits,
/// and then it is dropped mid-way, as when its caller goes away.
async fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        Poll::Ready(match future.as_mut().poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await
}

fn spec(group: u32, replicas: &[NodeId], prefix: &'static str) -> GroupSpec {
    GroupSpec {
        group,
        replicas: replicas.to_vec(),
        keys: Keys::matching(move |key| key.starts_with(prefix)),
        appender: None,
    }
}

fn send(key: &str, msg: &str) -> Op {
    Op::Send {
        key: key.into(),
        msg: msg.into(),
    }
}

fn vote() -> Rpc {
    Rpc::Vote(VoteRequest::new(openraft::Vote::new(u64::MAX / 2, 1), None))
}

fn unavailable(reply: Reply) -> String {
    match reply {
        Reply::Unavailable(why) => why,
        other => panic!("served: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_on_some_of_sparse_nodes_elects_and_commits_and_the_others_get_nothing() {
    let cluster = Cluster::start(&[7, 42, 1000]);
    // Group 5 on two of the three nodes, led first by 1000; group 9 on all.
    let five = spec(5, &[1000, 42], "five.");
    let nine = spec(9, &[7, 42, 1000], "nine.");
    cluster.add(&[42, 1000], &five).await;
    cluster.add(&[7, 42, 1000], &nine).await;
    let refused = cluster.node(7).groups.add(five.clone()).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("not a replica")),
        "{refused:?}"
    );

    let results = cluster
        .commit(
            5,
            &[1000, 42],
            vec![send("five.a", "1"), send("five.a", "2")],
        )
        .await;
    assert_eq!(results, [OpResult::Offset(0), OpResult::Offset(1)]);
    cluster
        .commit(9, &[7, 42, 1000], vec![send("nine.a", "1")])
        .await;
    for id in [42, 1000] {
        let node = cluster.node(id);
        assert_eq!(
            lock(&node.store).next_offset("five.a").expect("offset"),
            2,
            "node {id}"
        );
        let raft = node.groups.raft(5).expect("group 5");
        let voters: Vec<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        assert_eq!(voters, [42, 1000], "node {id}'s group 5");
    }

    // Node 7 has nothing of group 5, and refuses it clearly.
    let seven = cluster.node(7);
    assert_eq!(seven.groups.ids(), [9]);
    let keys = seven.keys();
    assert!(
        !keys.iter().any(|k| k == "five.a" || *k == log_key(5)),
        "{keys:?}"
    );
    assert!(keys.contains(&log_key(9)), "{keys:?}");
    assert!(
        !cluster.carried_any(5, 7),
        "group 5's traffic reached node 7"
    );
    let why = unavailable(seven.groups.serve(42, 5, vote()).await);
    assert!(why.contains("does not run here"), "{why}");
    let proposal = Proposal {
        id: seven.groups.next_proposal_id(),
        ops: vec![send("five.a", "3")],
    };
    match seven.groups.propose(5, proposal).await {
        Err(ProposeError::NoGroup(why)) => assert!(why.contains("does not run here"), "{why}"),
        other => panic!("proposed to a group not here: {other:?}"),
    }
    // Nor does a replica take group 5's calls from node 7.
    let why = unavailable(cluster.node(42).groups.serve(7, 5, vote()).await);
    assert!(why.contains("not a replica"), "{why}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_added_and_removed_while_the_nodes_run() {
    let all = [3, 8, 21];
    let cluster = Cluster::start(&all);
    let one = spec(1, &[3, 8, 21], "one.");
    cluster.add(&all, &one).await;
    cluster
        .commit(
            1,
            &all,
            vec![
                send("one.a", "1"),
                Op::Commit {
                    key: "one.a".into(),
                    offset: 0,
                },
            ],
        )
        .await;

    // Added while group 1 runs.
    let two = spec(2, &[8, 21, 3], "two.");
    cluster.add(&all, &two).await;
    cluster.commit(2, &all, vec![send("two.a", "1")]).await;
    let again = cluster.node(3).groups.add(two.clone()).await;
    assert!(
        again.as_ref().is_err_and(|e| e.contains("already")),
        "{again:?}"
    );
    let stranger = cluster.node(3).groups.add(spec(6, &[3, 99], "six.")).await;
    assert!(
        stranger
            .as_ref()
            .is_err_and(|e| e.contains("not a node of the cluster")),
        "{stranger:?}"
    );

    for id in all {
        let node = cluster.node(id);
        node.groups
            .remove(1)
            .await
            .unwrap_or_else(|e| panic!("removing group 1 on node {id}: {e}"));
    }
    for id in all {
        let node = cluster.node(id);
        assert_eq!(node.groups.ids(), [2], "node {id}");
        let keys = node.keys();
        assert!(
            !keys.iter().any(|k| k == "one.a" || *k == log_key(1)),
            "node {id} kept {keys:?}"
        );
        {
            let store = lock(&node.store);
            assert_eq!(store.committed_highest("one.a"), None, "node {id}");
            assert_eq!(stored_groups(&store).expect("groups"), [2], "node {id}");
        }
        assert!(
            !node.groups.transport.holds_group(1),
            "node {id}'s transport"
        );
        let proposal = Proposal {
            id: node.groups.next_proposal_id(),
            ops: vec![send("one.a", "2")],
        };
        match node.groups.propose(1, proposal).await {
            Err(ProposeError::NoGroup(why)) => assert!(why.contains("does not run"), "{why}"),
            other => panic!("node {id} proposed to a removed group: {other:?}"),
        }
        let why = unavailable(node.groups.serve(3, 1, vote()).await);
        assert!(why.contains("does not run here"), "{why}");
        let twice = node.groups.remove(1).await;
        assert!(
            twice.as_ref().is_err_and(|e| e.contains("does not run")),
            "{twice:?}"
        );
        let again = node.groups.add(one.clone()).await;
        assert!(
            again
                .as_ref()
                .is_err_and(|e| e.contains("was removed here")),
            "node {id} added a removed group again: {again:?}"
        );
        assert_eq!(node.groups.ids(), [2], "node {id}");
    }
    // The group left runs on.
    let results = cluster.commit(2, &all, vec![send("two.a", "2")]).await;
    assert_eq!(results, [OpResult::Offset(1)]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_cut_short_is_never_started_again_and_is_finished() {
    let names = BTreeMap::from([(5, "lone".to_string())]);
    let node = Node::start(5, &names);
    let four = spec(4, &[5], "four.");
    node.groups.add(four.clone()).await.expect("added");
    let ticks = tokio::spawn(route(
        BTreeMap::from([(5, Arc::clone(&node.groups))]),
        Carried::default(),
    ));
    let deadline = Instant::now() + PATIENCE;
    let proposal = |groups: &Groups| Proposal {
        id: groups.next_proposal_id(),
        ops: vec![send("four.a", "1")],
    };
    loop {
        match node.groups.propose(4, proposal(&node.groups)).await {
            Ok(_) => break,
            Err(ProposeError::NotLeader(_)) if Instant::now() < deadline => {
                tokio::time::sleep(TICK).await;
            }
            Err(e) => panic!("proposing: {e:?}"),
        }
    }
    let running = node.groups.delete_stored(4, &four.keys).await;
    assert!(
        running.as_ref().is_err_and(|e| e.contains("runs here")),
        "{running:?}"
    );
    ticks.abort();
    let (dir, store) = node.stop().await;
    mark_removed(&store, 4).await;

    let node = Node::on(dir, store, 5, &names);
    let refused = node.groups.add(four.clone()).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("being removed")),
        "{refused:?}"
    );
    assert!(node.groups.ids().is_empty());
    assert_eq!(stored_groups(&lock(&node.store)).expect("groups"), [4]);
    node.groups
        .delete_stored(4, &four.keys)
        .await
        .expect("deleted");
    assert_eq!(
        stored_groups(&lock(&node.store)).expect("groups"),
        Vec::<u32>::new()
    );
    assert!(node.keys().is_empty(), "{:?}", node.keys());
    // Its mark is gone with its storage; the id is still refused.
    let again = node.groups.add(four.clone()).await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.contains("was removed here")),
        "{again:?}"
    );
    assert!(node.keys().is_empty(), "{:?}", node.keys());
    node.stop().await;
}

/// A removed group's id is never added again: not in the process that
/// removed it, nor in the groups a heal in place starts after it over the
/// reopened store (which holds nothing of the group any more). A group
/// started under it could meet the old group's votes, entries and calls
/// on replicas that have not removed it yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_group_id_is_never_added_again_even_after_a_heal_in_place() {
    let names = BTreeMap::from([(5, "lone".to_string()), (6, "other".to_string())]);
    let node = Node::start(5, &names);
    let four = spec(4, &[5, 6], "four.");
    node.groups.add(four.clone()).await.expect("added");
    node.groups.remove(4).await.expect("removed");
    let again = node.groups.add(four.clone()).await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.contains("was removed here")),
        "{again:?}"
    );
    let why = unavailable(node.groups.serve(6, 4, vote()).await);
    assert!(why.contains("it was removed"), "{why}");

    // The heal in place: stopped, the store reopened, started after.
    node.groups.retire();
    node.groups.shutdown().await;
    node.group_commit.close_and_join().expect("group commit");
    lock(&node.store).reopen().expect("reopened");
    let commit = Arc::new(OwnGroupCommit::start(Arc::clone(&node.store)).expect("commit"));
    let after = Groups::start_after(&node.groups, Arc::clone(&node.store), commit.clone())
        .await
        .expect("started after");
    assert!(
        stored_groups(&lock(&node.store))
            .expect("groups")
            .is_empty()
    );
    let again = after.add(four.clone()).await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.contains("was removed here")),
        "added again after a heal: {again:?}"
    );
    assert!(after.ids().is_empty());
    assert!(!node.keys().contains(&log_key(4)), "{:?}", node.keys());
    // Another id is added as ever.
    after
        .add(spec(6, &[5, 6], "six."))
        .await
        .expect("a new id added");
    assert_eq!(after.ids(), [6]);
    after.shutdown().await;
    commit.close_and_join().expect("group commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_waiting_in_a_group_that_is_removed_fails_saying_so() {
    let both = [11, 12];
    let cluster = Cluster::start(&both);
    let three = spec(3, &both, "three.");
    cluster.add(&both, &three).await;
    cluster.commit(3, &both, vec![send("three.a", "1")]).await;
    let leader = cluster.leader(3, &both).await;
    // Cut off: nothing the leader proposes now can commit.
    cluster.router.abort();
    let groups = Arc::clone(&cluster.node(leader).groups);
    let proposal = Proposal {
        id: groups.next_proposal_id(),
        ops: vec![send("three.a", "2")],
    };
    let id = proposal.id;
    let waiting = tokio::spawn({
        let groups = Arc::clone(&groups);
        async move { groups.propose(3, proposal).await }
    });
    let deadline = Instant::now() + PATIENCE;
    while !groups.was_appended(3, id) {
        assert!(Instant::now() < deadline, "the proposal was never appended");
        tokio::time::sleep(TICK).await;
    }
    groups.remove(3).await.expect("removed");
    match waiting.await.expect("the proposal's task") {
        Err(ProposeError::Failed { appended, why }) => {
            assert!(appended, "it was in the log");
            assert!(why.contains("was removed"), "{why}");
        }
        other => panic!("a proposal in a removed group: {other:?}"),
    }
    cluster.stop().await;
}

/// An add under way when the groups are retired and shut down (a heal)
/// either ran before them, and was retired with them, or is refused: no
/// group of it runs on, writing to a store reopened after them.
///
/// The add must be caught under way: on a node where it finished before
/// the test saw it starting, the test shuts that node down and tries again
/// on a new one, up to [`RACE_ATTEMPTS`] times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_racing_retire_and_shutdown_leaves_no_live_group() {
    /// Nodes the test may start before it catches an add under way; it
    /// nearly always does on the first (the add waits for a sync point).
    const RACE_ATTEMPTS: usize = 20;
    let names = BTreeMap::from([(5, "lone".to_string()), (6, "other".to_string())]);
    let mut caught = None;
    for _ in 0..RACE_ATTEMPTS {
        let node = Node::start(5, &names);
        let adding = tokio::spawn({
            let groups = Arc::clone(&node.groups);
            let seven = spec(7, &[5, 6], "seven.");
            async move { groups.add(seven).await }
        });
        let deadline = Instant::now() + PATIENCE;
        let under_way = loop {
            match node.groups.serve(6, 7, vote()).await {
                Reply::Unavailable(why) if why.contains("still starting") => break true,
                // Not started yet: look again.
                Reply::Unavailable(why) if why.contains("does not run here") => {}
                // It runs already: too late on this node.
                Reply::Unavailable(_) => break false,
                other => panic!("{other:?}"),
            }
            assert!(Instant::now() < deadline, "the add neither started nor ran");
            tokio::task::yield_now().await;
        };
        if under_way {
            caught = Some((node, adding));
            break;
        }
        adding.await.expect("task").expect("added");
        node.groups.retire();
        node.groups.shutdown().await;
    }
    let Some((node, adding)) = caught else {
        panic!("never saw the add under way in {RACE_ATTEMPTS} attempts");
    };
    node.groups.retire();
    node.groups.shutdown().await;
    let added = adding.await.expect("task");
    assert!(
        added.is_err()
            || node
                .groups
                .group_state(7)
                .is_some_and(|s| s.store().is_err()),
        "an add racing retire left a live, unretired group: {added:?}"
    );
    if added.is_err() {
        assert_eq!(node.groups.ids(), Vec::<u32>::new());
    } else {
        // Its Raft stopped with the others: its metrics channel is closed.
        assert!(
            node.groups
                .raft(7)
                .is_none_or(|raft| raft.metrics().has_changed().is_err()),
            "an add racing shutdown left group 7's Raft running"
        );
    }
}

/// A removal on groups retired and shut down for a heal is refused: it
/// must not delete storage under the groups started after them, which
/// keep group 4's acknowledged record. Each refusal is the `stopping`
/// check of its own call (the store's check behind it is not reached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_on_groups_stopped_for_a_heal_is_refused() {
    let (node, ticks) = lone_with_record(None).await;
    ticks.abort();
    node.groups.retire();
    node.groups.shutdown().await;
    let after = Groups::start_after(
        &node.groups,
        Arc::clone(&node.store),
        node.group_commit.clone(),
    )
    .await
    .expect("started after");
    assert_eq!(after.ids(), [4]);
    let removed = node.groups.remove(4).await;
    assert!(
        removed
            .as_ref()
            .is_err_and(|e| e.contains("not removed: the groups are stopping")),
        "removed on stopped groups: {removed:?}"
    );
    // Group 9 runs in neither: only the stopping check refuses it here.
    let deleted = node
        .groups
        .delete_stored(9, &spec(9, &[5], "nine.").keys)
        .await;
    assert!(
        deleted
            .as_ref()
            .is_err_and(|e| e.contains("not deleted: the groups are stopping")),
        "deleted on stopped groups: {deleted:?}"
    );
    let deleted = node
        .groups
        .delete_stored(4, &spec(4, &[5], "four.").keys)
        .await;
    assert!(deleted.is_err(), "deleted on stopped groups: {deleted:?}");
    {
        let mut store = lock(&node.store);
        let log = super::log::GroupLog::recover(&mut store, &log_key(4)).expect("group 4's log");
        assert!(
            !log.removed,
            "group 4's log was marked removed under the new groups"
        );
    }
    assert!(node.keys().contains(&"four.a".to_string()));
    after.shutdown().await;
    node.stop().await;
}

/// A single node running group 4 over `four.` (and `also`, added before
/// anything is stored), with `four.a` committed and acknowledged, and the
/// router ticking it.
async fn lone_with_record(also: Option<GroupSpec>) -> (Node, tokio::task::JoinHandle<()>) {
    let names = BTreeMap::from([(5, "lone".to_string())]);
    let node = Node::start(5, &names);
    node.groups
        .add(spec(4, &[5], "four."))
        .await
        .expect("added");
    if let Some(also) = also {
        node.groups.add(also).await.expect("added");
    }
    let ticks = tokio::spawn(route(
        BTreeMap::from([(5, Arc::clone(&node.groups))]),
        Carried::default(),
    ));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let proposal = Proposal {
            id: node.groups.next_proposal_id(),
            ops: vec![send("four.a", "1")],
        };
        match node.groups.propose(4, proposal).await {
            Ok(_) => break,
            Err(ProposeError::NotLeader(_)) if Instant::now() < deadline => {
                tokio::time::sleep(TICK).await;
            }
            Err(e) => panic!("proposing: {e:?}"),
        }
    }
    assert!(node.keys().contains(&"four.a".to_string()));
    (node, ticks)
}

/// Deleting the storage of a group that does not run never deletes a key
/// a running group holds: refused, and the record kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_stored_keys_a_running_group_holds_is_refused() {
    let (node, ticks) = lone_with_record(None).await;
    let deleted = node
        .groups
        .delete_stored(9, &spec(9, &[5], "four.").keys)
        .await;
    assert!(
        deleted
            .as_ref()
            .is_err_and(|e| e.contains("\"four.a\" is held by group 4")),
        "{deleted:?}"
    );
    assert!(node.keys().contains(&"four.a".to_string()));
    ticks.abort();
    node.stop().await;
}

/// A group over stored keys a running group holds is not added; and the
/// removal of a group whose overlap its add could not see (nothing was
/// stored then) refuses to delete a key the other group holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_over_keys_a_running_group_holds_is_refused() {
    let (node, ticks) = lone_with_record(Some(spec(9, &[5], "four."))).await;
    assert_eq!(node.groups.ids(), [4, 9]);
    let added = node.groups.add(spec(10, &[5], "four.")).await;
    assert!(
        added
            .as_ref()
            .is_err_and(|e| e.contains("\"four.a\" is group 4's")),
        "{added:?}"
    );
    assert_eq!(node.groups.ids(), [4, 9]);
    let removed = node.groups.remove(9).await;
    assert!(
        removed
            .as_ref()
            .is_err_and(|e| e.contains("\"four.a\" is held by group 4")),
        "{removed:?}"
    );
    assert!(node.keys().contains(&"four.a".to_string()));
    assert_eq!(node.groups.ids(), [4]);
    ticks.abort();
    node.stop().await;
}

/// A lone node (id 5) running `specs`, with the router never ticking it:
/// its groups never vote, so they write nothing after their adds, and a
/// removal is then the only one asking for sync points.
async fn quiet(specs: &[GroupSpec]) -> Node {
    let names = BTreeMap::from([(5, "lone".to_string())]);
    let node = Node::start(5, &names);
    for spec in specs {
        node.groups.add(spec.clone()).await.expect("added");
    }
    node
}

/// Stores `four.a` on `node`, as a group holding it would.
fn store_four_a(node: &Node) {
    lock(&node.store).append("four.a", b"1").expect("four.a");
}

/// Starts group `g`'s removal on `node` and holds it where it waits for
/// the sync point that makes its log's mark durable.
async fn removal_held(node: &Node, g: u32) -> tokio::task::JoinHandle<Result<(), String>> {
    node.gate.close();
    let removal = tokio::spawn({
        let groups = Arc::clone(&node.groups);
        async move { groups.remove(g).await }
    });
    node.gate.holding(1).await;
    removal
}

/// A removal cut short leaves the removed group's keys stored, its log
/// marked; a group added over those keys would take their records for its
/// own (offsets and all), and finishing the removal would then delete
/// them under it. So no group is added until the removal is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_group_is_added_while_a_removal_cut_short_is_left() {
    let node = quiet(&[spec(4, &[5], "four.")]).await;
    store_four_a(&node);
    let names = node.groups.nodes().clone();
    let (dir, store) = node.stop().await;
    mark_removed(&store, 4).await;
    let node = Node::on(dir, store, 5, &names);
    // A new group over the old group's key, and any other new group:
    // which keys the old group held is not known here.
    for (g, prefix) in [(6, "four."), (7, "seven.")] {
        let added = node.groups.add(spec(g, &[5], prefix)).await;
        assert!(
            added
                .as_ref()
                .is_err_and(|e| e.contains("the removal of group 4 was cut short")),
            "group {g}: {added:?}"
        );
        assert!(!node.keys().contains(&log_key(g)), "{:?}", node.keys());
    }
    assert!(node.groups.ids().is_empty());
    node.groups
        .delete_stored(4, &spec(4, &[5], "four.").keys)
        .await
        .expect("finished");
    assert!(!node.keys().contains(&"four.a".to_string()));
    node.groups
        .add(spec(6, &[5], "four."))
        .await
        .expect("added once the removal was finished");
    assert_eq!(node.groups.ids(), [6]);
    node.stop().await;
}

/// A removal that finds the groups stopped (a heal) where it next writes
/// deletes nothing more: its store refuses it once the groups stop. The
/// groups started after them run the other groups again, the mark left
/// notwithstanding, and refuse new ones until the removal is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_cut_short_by_a_heal_deletes_nothing_more() {
    let node = quiet(&[spec(4, &[5], "four."), spec(9, &[5], "nine.")]).await;
    store_four_a(&node);
    let removal = removal_held(&node, 4).await;
    node.groups.retire();
    node.gate.open();
    let removed = removal.await.expect("the removal's task");
    assert!(
        removed
            .as_ref()
            .is_err_and(|e| e.contains("the removal was cut short")),
        "{removed:?}"
    );
    assert!(node.keys().contains(&"four.a".to_string()));
    assert!(marked(&node, 4));

    node.groups.shutdown().await;
    node.group_commit.close_and_join().expect("group commit");
    lock(&node.store).reopen().expect("reopened");
    let commit = Arc::new(OwnGroupCommit::start(Arc::clone(&node.store)).expect("commit"));
    let after = Arc::new(
        Groups::start_after(&node.groups, Arc::clone(&node.store), commit.clone())
            .await
            .expect("started after"),
    );
    assert_eq!(after.ids(), [9]);
    let added = after.add(spec(7, &[5], "seven.")).await;
    assert!(
        added
            .as_ref()
            .is_err_and(|e| e.contains("the removal of group 4 was cut short")),
        "{added:?}"
    );
    after
        .delete_stored(4, &spec(4, &[5], "four.").keys)
        .await
        .expect("finished");
    assert!(!node.keys().contains(&"four.a".to_string()));
    after.add(spec(7, &[5], "seven.")).await.expect("added");
    after.shutdown().await;
    commit.close_and_join().expect("group commit");
}

/// No group is added while a removal is under way: the removal checked
/// the keys it deletes against the groups there were when it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_group_is_added_while_a_removal_is_under_way() {
    let node = quiet(&[spec(4, &[5], "four.")]).await;
    let removal = removal_held(&node, 4).await;
    let added = poll_once(node.groups.add(spec(7, &[5], "seven."))).await;
    assert!(
        added.as_ref().is_some_and(|added| added
            .as_ref()
            .is_err_and(|e| e.contains("group 4 is being removed here"))),
        "{added:?}"
    );
    node.gate.open();
    removal.await.expect("task").expect("removed");
    node.groups
        .add(spec(7, &[5], "seven."))
        .await
        .expect("added once the removal ended");
    node.stop().await;
}

/// A removal checks its keys again where it deletes them: a group running
/// over the same keys (its add saw none of them stored) may have written
/// one since the first check. Refused then, the key kept; the log stays
/// marked, so no group is added until that is sorted out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_during_a_removal_by_a_group_holding_it_is_kept() {
    let node = quiet(&[spec(4, &[5], "four."), spec(9, &[5], "four.")]).await;
    let removal = removal_held(&node, 9).await;
    // Written by group 4 meanwhile (its add saw no `four.` key stored).
    store_four_a(&node);
    node.gate.open();
    let removed = removal.await.expect("task");
    assert!(
        removed
            .as_ref()
            .is_err_and(|e| e.contains("\"four.a\" is held by group 4")),
        "{removed:?}"
    );
    assert!(node.keys().contains(&"four.a".to_string()));
    assert!(
        marked(&node, 9),
        "refused by the first check, before the mark"
    );
    node.stop().await;
}

/// An add whose caller goes away mid-way (a request cancelled) ends: its
/// id is not left "still starting", refused for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_dropped_mid_way_leaves_the_id_addable() {
    let node = quiet(&[]).await;
    node.gate.close();
    let added = poll_once(node.groups.add(spec(7, &[5], "seven."))).await;
    assert!(added.is_none(), "the add did not wait: {added:?}");
    node.gate.open();
    let why = unavailable(node.groups.serve(5, 7, vote()).await);
    assert!(why.contains("does not run here"), "{why}");
    node.groups
        .add(spec(7, &[5], "seven."))
        .await
        .expect("added again");
    assert_eq!(node.groups.ids(), [7]);
    node.stop().await;
}

/// A removal whose caller goes away mid-way finishes all the same: the
/// group's storage is deleted, and its entry does not refuse adds for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_dropped_mid_way_finishes() {
    let node = quiet(&[spec(4, &[5], "four.")]).await;
    store_four_a(&node);
    node.gate.close();
    let removed = poll_once(node.groups.remove(4)).await;
    assert!(removed.is_none(), "the removal did not wait: {removed:?}");
    node.gate.open();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let why = unavailable(node.groups.serve(5, 4, vote()).await);
        if !why.contains("being removed") {
            assert!(why.contains("it was removed"), "{why}");
            break;
        }
        assert!(Instant::now() < deadline, "the removal never ended");
        tokio::time::sleep(TICK).await;
    }
    let keys = node.keys();
    assert!(
        !keys.iter().any(|k| k == "four.a" || *k == log_key(4)),
        "{keys:?}"
    );
    node.groups
        .add(spec(7, &[5], "seven."))
        .await
        .expect("added after the removal");
    node.stop().await;
}

/// A removal cut short by a heal *before* its mark (the groups retired
/// while its task has not written the mark yet) leaves the removed group's
/// keys stored and its log unmarked: the groups started after the heal
/// still refuse every add until `delete_stored` finished it. One thread,
/// so the removal's task runs only when this test waits: deterministic.
/// (Review groups4, finding 1.)
#[tokio::test(flavor = "current_thread")]
async fn a_removal_cut_short_by_a_heal_before_its_mark_is_finished_before_any_add() {
    let node = quiet(&[spec(4, &[5], "four."), spec(9, &[5], "nine.")]).await;
    store_four_a(&node);
    // One poll: group 4 leaves `running`, its removal's task is spawned and
    // has not run (one thread); then the heal retires the groups.
    assert!(poll_once(node.groups.remove(4)).await.is_none());
    node.groups.retire();
    node.groups.shutdown().await;
    node.group_commit.close_and_join().expect("group commit");
    lock(&node.store).reopen().expect("reopened");
    assert!(!marked(&node, 4), "the mark was never written");
    assert!(node.keys().contains(&"four.a".to_string()));
    let commit = Arc::new(OwnGroupCommit::start(Arc::clone(&node.store)).expect("commit"));
    let after = Arc::new(
        Groups::start_after(&node.groups, Arc::clone(&node.store), commit.clone())
            .await
            .expect("started after"),
    );
    assert_eq!(after.ids(), [9]);
    let refused = after.add(spec(6, &[5], "four.")).await;
    let kept = node.keys().contains(&"four.a".to_string());
    let finished = after.delete_stored(4, &spec(4, &[5], "four.").keys).await;
    let gone = !node.keys().contains(&"four.a".to_string());
    let added = after.add(spec(6, &[5], "four.")).await;
    after.shutdown().await;
    commit.close_and_join().expect("group commit");
    let why = refused.expect_err("group 6 was added over group 4's stored key four.a");
    assert!(why.contains("removal of group 4 was cut short"), "{why}");
    assert!(kept, "the refused add touched four.a");
    finished.expect("the removal finished");
    assert!(gone, "delete_stored left four.a");
    added.expect("added once the removal finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_made_at_a_follower_is_forwarded_to_the_leader() {
    let cluster = Cluster::start(&[7, 42, 1000]);
    let five = spec(5, &[1000, 42], "five.");
    cluster.add(&[42, 1000], &five).await;
    let leader = cluster.leader(5, &[1000, 42]).await;
    let follower = if leader == 42 { 1000 } else { 42 };
    let groups = &cluster.node(follower).groups;
    let proposal = Proposal {
        id: groups.next_proposal_id(),
        ops: vec![send("five.a", "1"), send("five.a", "2")],
    };
    let (index, results) = groups
        .propose_at_leader(5, proposal, PATIENCE)
        .await
        .expect("a forwarded proposal");
    assert_eq!(results, [OpResult::Offset(0), OpResult::Offset(1)]);
    assert!(cluster.carried_any(5, follower));
    while cluster.node(follower).groups.applied(5) < Some(index) {
        tokio::time::sleep(TICK).await;
    }

    // Node 7 runs no replica of group 5 and knows no leader of it: after
    // its patience, a definite refusal, and nothing appended.
    let seven = &cluster.node(7).groups;
    let proposal = Proposal {
        id: seven.next_proposal_id(),
        ops: vec![send("five.a", "3")],
    };
    let refused = seven
        .propose_at_leader(5, proposal, 4 * FORWARD_RETRY)
        .await;
    assert!(
        matches!(refused, Err(ProposeError::NotLeader(None))),
        "{refused:?}"
    );
    // A forward from a node that is not of the cluster is not taken.
    let stranger = Proposal {
        id: ProposalId { node: 99, seq: 1 },
        ops: vec![send("five.a", "4")],
    };
    let why = unavailable(
        cluster
            .node(leader)
            .groups
            .serve(99, 5, Rpc::Propose(stranger))
            .await,
    );
    assert!(why.contains("not a node of the cluster"), "{why}");
    assert_eq!(
        lock(&cluster.node(leader).store)
            .next_offset("five.a")
            .expect("offset"),
        2
    );
    cluster.stop().await;
}

/// Group 5 of nodes 42 and 1000 once its leader is left alone: the
/// follower stopped for good. The cluster, the leader, the follower.
async fn leader_without_majority() -> (Cluster, NodeId, NodeId) {
    let mut cluster = Cluster::start(&[42, 1000]);
    let five = spec(5, &[1000, 42], "five.");
    cluster.add(&[42, 1000], &five).await;
    let leader = cluster.leader(5, &[1000, 42]).await;
    let follower = if leader == 42 { 1000 } else { 42 };
    let stopped = cluster.nodes.remove(&follower).expect("the follower");
    stopped.stop().await;
    (cluster, leader, follower)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_its_leader_cannot_commit_ends_at_its_patience_as_unknown() {
    let (cluster, leader, _) = leader_without_majority().await;
    let groups = &cluster.node(leader).groups;
    let proposal = Proposal {
        id: groups.next_proposal_id(),
        ops: vec![send("five.a", "1")],
    };
    // Without its own deadline the proposal would wait as long as the
    // majority is gone; PATIENCE only turns that into a failure.
    let outcome = tokio::time::timeout(
        PATIENCE,
        groups.propose_at_leader(5, proposal, 10 * FORWARD_RETRY),
    )
    .await
    .expect("the proposal ended at its patience");
    assert!(
        matches!(&outcome, Err(ProposeError::Unknown(why)) if why.contains("did not commit")),
        "{outcome:?}"
    );
    cluster.stop().await;
}

/// Found by the stage 3b review (its probe): the forwarder gives up at its
/// deadline, so the leader must too, or the served call (and in `serve`
/// its serving slot and bytes) stays as long as the majority is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_forward_ends_at_its_patience_when_its_leader_cannot_commit() {
    let (cluster, leader, follower) = leader_without_majority().await;
    let forwarded = Proposal {
        id: ProposalId {
            node: follower,
            seq: 1,
        },
        ops: vec![send("five.a", "1")],
    };
    let served = tokio::time::timeout(
        PATIENCE,
        cluster
            .node(leader)
            .groups
            .serve(follower, 5, Rpc::Propose(forwarded)),
    )
    .await
    .expect("the served forward ended at its patience");
    match served {
        Reply::Proposed(Err(ProposeError::Unknown(why))) => {
            assert!(why.contains("forwarded"), "{why}");
        }
        other => panic!("a forward its leader could not commit answered {other:?}"),
    }
    cluster.stop().await;
}

/// What `Groups::submit` relies on: openraft hands a proposal to the
/// group's core in the first poll of `client_write`, so proposals
/// submitted one after another get log indexes in that order even when
/// their outcomes are awaited in the reverse order, after every one was
/// submitted (a Kafka connection's pipelined batches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_proposals_enter_the_log_in_order() {
    const PROPOSALS: usize = 50;
    let (node, ticks) = lone_with_record(None).await;
    let submitted: Vec<_> = (0..PROPOSALS)
        .map(|i| {
            let proposal = Proposal {
                id: node.groups.next_proposal_id(),
                ops: vec![send("four.order", &i.to_string())],
            };
            node.groups.submit(4, proposal)
        })
        .collect();
    let mut outcomes = Vec::new();
    for proposed in submitted.into_iter().rev() {
        outcomes.push(proposed.await.expect("committed"));
    }
    outcomes.reverse();
    let indexes: Vec<u64> = outcomes.iter().map(|(index, _)| *index).collect();
    assert!(
        indexes.windows(2).all(|w| w[0] < w[1]),
        "log indexes out of submission order: {indexes:?}"
    );
    let offsets: Vec<OpResult> = outcomes.into_iter().flat_map(|(_, r)| r).collect();
    let expected: Vec<OpResult> = (0..PROPOSALS as u64).map(OpResult::Offset).collect();
    assert_eq!(offsets, expected);
    ticks.abort();
}

/// A node without a group's state waits [`PROBE_AFTER_MS`] from the start
/// of its groups, not of the group: a group added later (as `seglog serve`
/// adds partitions once the metadata names them) probes at once. And only
/// answers naming this probing count: answers to a previous process's
/// probes (a history at a high term, here) are dropped, so that the fresh
/// answers (a new group) settle it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_added_late_probes_at_once_and_takes_only_answers_to_its_own_probes() {
    let names: BTreeMap<NodeId, String> = [1, 2, 3]
        .iter()
        .map(|&id| (id, format!("node-{id}")))
        .collect();
    let node = Node::start(1, &names);
    // Past the wait that follows the groups' start (not a race: the wait
    // is what the test is about).
    tokio::time::sleep(Duration::from_millis(PROBE_AFTER_MS)).await;
    node.groups
        .add(spec(5, &[1, 2, 3], "k"))
        .await
        .expect("adding group 5");
    assert!(!node.groups.votes(5), "no state: it probes first");
    node.groups.tick(Instant::now());
    let mut probing = None;
    let batches = node.groups.transport.take_batches();
    for peer in [2, 3] {
        let notes: Vec<&Note> = batches
            .iter()
            .filter(|(to, _)| *to == peer)
            .flat_map(|(_, batch)| &batch.notes)
            .collect();
        let [
            Note::Probe {
                group: 5,
                probing: p,
            },
        ] = notes[..]
        else {
            panic!("node {peer} was sent {notes:?}, not one probe of group 5");
        };
        probing = Some(*p);
    }
    let probing = probing.expect("probes went");
    for peer in [2, 3] {
        node.groups.on_note(
            peer,
            Note::Known {
                group: 5,
                probing: probing.wrapping_sub(1),
                pristine: false,
                term: 99,
            },
        );
    }
    node.groups.tick(Instant::now());
    for peer in [2, 3] {
        node.groups.on_note(
            peer,
            Note::Known {
                group: 5,
                probing,
                pristine: true,
                term: 0,
            },
        );
    }
    node.groups.tick(Instant::now());
    let deadline = Instant::now() + PATIENCE;
    while !node.groups.votes(5) {
        assert!(
            Instant::now() < deadline,
            "the fresh answers (a new group) never let it vote: a stale one was taken"
        );
        tokio::time::sleep(TICK).await;
    }
    node.stop().await;
}
