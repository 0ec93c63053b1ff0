//! What `seglog serve` runs beside its listeners in cluster mode: the loop
//! that joins the node's Raft groups ([`Groups`]) to its peer links
//! ([`Links`]), as the Maelstrom node's loop joins them to stdin and
//! stdout (`node/server.rs`).
//!
//! Every [`TICK`] the groups tick (standing, idle heartbeats, late
//! initialization) and each peer's batch of the transport goes to its
//! link. A batch a link refuses (down, full, too large) does not leave its
//! calls to time out: each is answered at once, here, as one the peer
//! could not take ([`Reply::Unavailable`], which the groups' network gives
//! openraft as `Unreachable`, so the replication stream backs off rather
//! than waiting out its deadline); its notes and answers are dropped (the
//! peer asks again, or gives its own calls up). Each batch a peer sends is
//! handed on as it arrives: its answers to the calls that wait for them,
//! its notes to the groups, and each call to its group in a task of its
//! own, at most [`CALLS_SERVING_MAX`] at once; past that a call is answered
//! `Unavailable` at once rather than queued.
//!
//! The caller builds the groups (on the store and with the durability it
//! owns, the broker's group commit in `serve`) and the links, and closes
//! the store after [`Runtime::shutdown`]. Not here yet: the heal in place
//! of a poisoned store (the Maelstrom node's `heal_in_place`; here it will
//! be a `Runtime::heal` that stops the ticks, answers calls `Unavailable`
//! while the groups restart with `Groups::start_after`, then swaps them).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::items;
use super::link::{Links, Received, SendError};
use crate::log;
use crate::raft::groups::{GROUPS_RUNNING_MAX, Groups};
use crate::raft::transport::{Answer, Batch, Reply, Transport};
use crate::raft::types::NodeId;

/// How often the groups tick and their traffic goes to the links: the
/// Maelstrom node's tick (`node::TICK`), for the same reason. Every batch
/// to a peer carries one tick of every group's traffic, a latency far
/// below an election timeout (250 ms) for one frame per peer per tick
/// however many groups talk.
pub const TICK: Duration = Duration::from_millis(10);

/// Peers' calls being served at once: a group has at most a replication
/// call (AppendEntries or a snapshot chunk) from its leader and a vote
/// from a candidate in flight to a replica, so twice the groups a node
/// runs covers every group at work at once. Each holds its request (up to
/// a frame) until answered; past this, calls are answered
/// [`Reply::Unavailable`] rather than held without bound.
pub const CALLS_SERVING_MAX: usize = 2 * GROUPS_RUNNING_MAX;

/// The cluster loop of one node, running in a task of its own. Dropping it
/// stops the loop and closes the links; [`Runtime::shutdown`] also stops
/// the groups.
pub struct Runtime {
    groups: Arc<Groups>,
    links: Arc<Links>,
    /// Set to stop the loop.
    stop: watch::Sender<bool>,
    /// The loop; `None` once joined.
    task: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Starts the loop of `groups` over `links`, taking the batches their
    /// peers send from `incoming` (what [`Links::start`] returned). Must be
    /// called within a tokio runtime.
    pub fn start(groups: Arc<Groups>, links: Links, incoming: mpsc::Receiver<Received>) -> Runtime {
        let links = Arc::new(links);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(
            Loop {
                groups: Arc::clone(&groups),
                links: Arc::clone(&links),
                serving: Arc::new(Semaphore::new(CALLS_SERVING_MAX)),
                refusing: BTreeSet::new(),
            }
            .run(incoming, stopped),
        );
        Runtime {
            groups,
            links,
            stop,
            task: Some(task),
        }
    }

    /// The node's groups.
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    /// The node's links (which peers are up, what they refused).
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Stops the loop, closes the links, then stops the groups. Calls
    /// still being served end as the groups stop; what they answer goes
    /// nowhere. The store can close after this (once its durability has
    /// made the groups' last writes durable). The links and the groups
    /// stop either way; an error says the loop had panicked (our bug).
    pub async fn shutdown(mut self) -> Result<(), String> {
        self.stop.send_replace(true);
        let ended = match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| format!("the cluster loop failed: {e}")),
            None => Ok(()),
        };
        self.links.close();
        self.groups.shutdown().await;
        ended
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.links.close();
    }
}

/// The loop's state.
struct Loop {
    groups: Arc<Groups>,
    links: Arc<Links>,
    /// Permits for peers' calls being served ([`CALLS_SERVING_MAX`]).
    serving: Arc<Semaphore>,
    /// Peers whose link refused the last batch: logged when refusals start
    /// and when they end, not once per tick.
    refusing: BTreeSet<NodeId>,
}

impl Loop {
    async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Received>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Stopping first, then what peers sent (answers end calls
                // that would otherwise time out), then the tick.
                biased;
                _ = stopped.wait_for(|&stop| stop) => break,
                Some(received) = incoming.recv() => {
                    self.on_batch(received.from, received.batch);
                    // Handed on: its share of the links' budget is free.
                    drop(received.budget);
                }
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
        }
    }

    /// The groups tick, then every peer's batch goes to its link.
    fn on_tick(&mut self, now: Instant) {
        self.groups.tick(now);
        for (peer, batch) in self.groups.transport.take_batches() {
            match self.links.send(peer, batch) {
                Ok(()) => {
                    if self.refusing.remove(&peer) {
                        log::info(format_args!("the link to node {peer} takes batches again"));
                    }
                }
                Err(refused) => {
                    if self.refusing.insert(peer) {
                        log::warn(format_args!(
                            "{refused}; answering its calls as unreachable until it takes \
                             batches again"
                        ));
                    }
                    answer_unsent(&self.groups.transport, &refused);
                }
            }
        }
    }

    /// Hands a peer's batch on: answers to the calls waiting here, notes
    /// to the groups, and each call to its group in a task of its own.
    fn on_batch(&mut self, from: NodeId, batch: Batch) {
        let transport = &self.groups.transport;
        transport.deliver(from, batch.answers);
        for note in batch.notes {
            self.groups.on_note(from, note);
        }
        for call in batch.calls {
            let Ok(permit) = Arc::clone(&self.serving).try_acquire_owned() else {
                transport.answer(
                    from,
                    call.id,
                    Reply::Unavailable(format!("{CALLS_SERVING_MAX} calls are being served here")),
                );
                continue;
            };
            let groups = Arc::clone(&self.groups);
            tokio::spawn(async move {
                let reply = groups.serve(from, call.group, call.rpc).await;
                groups.transport.answer(from, call.id, reply);
                drop(permit);
            });
        }
    }
}

/// Answers at once, as unreachable, the calls of a batch `refused` hands
/// back: their callers learn now, not at their deadline, that the peer
/// did not get them. The batch's answers and notes are dropped: the peer
/// gives up its calls at their deadline, and notes are sent again.
fn answer_unsent(transport: &Transport, refused: &SendError) {
    let unsent: &Batch = refused.unsent();
    if unsent.calls.is_empty() {
        return;
    }
    let why = format!("not sent: {refused}");
    let answers = unsent
        .calls
        .iter()
        .map(|call| Answer {
            id: call.id,
            reply: Reply::Unavailable(why.clone()),
        })
        .collect();
    transport.deliver(refused.peer(), answers);
    log::debug(format_args!(
        "answered {} calls to node {} as unreachable ({} items not sent)",
        unsent.calls.len(),
        refused.peer(),
        items(unsent)
    ));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use openraft::BasicNode;
    use openraft::error::RPCError;
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::VoteRequest;
    use tokio::net::TcpListener;

    use super::*;
    use crate::cluster::peers::{Cluster, Membership};
    use crate::cluster::secret::Secret;
    use crate::raft::durability::OwnGroupCommit;
    use crate::raft::groups::TIMING_DEFAULT;
    use crate::raft::transport::{Call, Network, Rpc};
    use crate::raft::types::Vote;
    use crate::storage::store::{Store, StoreConfig};

    /// Longer than any step of these tests takes: only turns a hang into
    /// a failure.
    const HANG: Duration = Duration::from_secs(60);

    /// Node 1 of nodes 1 and 2, its groups running none, and its loop (not
    /// running: the test drives it). Node 2's listener is returned and
    /// never accepts: node 1's link to it is never up.
    async fn node_1(why: &str) -> (Loop, TcpListener, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        let store = Arc::new(Mutex::new(store));
        let commit = OwnGroupCommit::start(Arc::clone(&store)).expect("a group commit");
        let names: BTreeMap<NodeId, String> = [(1, "one".into()), (2, "two".into())].into();
        let groups =
            Groups::new(1, names, store, Arc::new(commit), TIMING_DEFAULT).expect("groups");
        let bind = || TcpListener::bind("127.0.0.1:0");
        let (one, two) = (bind().await.expect("a port"), bind().await.expect("a port"));
        let address = |l: &TcpListener| l.local_addr().expect("an address").to_string();
        let membership =
            Membership::new([(1, address(&one)), (2, address(&two))]).expect("a membership");
        let cluster = Cluster {
            id: format!("runtime-unit-{why}"),
            me: 1,
            membership,
        };
        let secret =
            Secret::new(b"the runtime's unit tests' secret, 32 bytes or more").expect("a secret");
        let (links, _incoming) = Links::start(one, cluster, secret);
        let node = Loop {
            groups: Arc::new(groups),
            links: Arc::new(links),
            serving: Arc::new(Semaphore::new(CALLS_SERVING_MAX)),
            refusing: BTreeSet::new(),
        };
        (node, two, dir)
    }

    fn vote() -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(1, 1), None)
    }

    /// Review finding of stage 2 ("the transport should answer the calls a
    /// send hands back at once"): a call whose batch the link refuses ends
    /// at the tick that refused it, as unreachable, not at its deadline.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_refused_by_a_down_link_is_answered_at_once() {
        let (mut node, _two, _dir) = node_1("down").await;
        assert!(!node.links.is_up(2));
        let transport = Arc::clone(&node.groups.transport);
        let mut network = Network {
            group: 0,
            transport: Arc::clone(&transport),
            closed: Arc::new(AtomicBool::new(false)),
        };
        let mut client = network.new_client(2, &BasicNode::default()).await;
        // A deadline far past the test's own: only an answer ends the call.
        let option = RPCOption::new(HANG * 100);
        let call = tokio::spawn(async move { client.vote(vote(), option).await });
        while !transport.holds_group(0) {
            tokio::task::yield_now().await;
        }
        node.on_tick(Instant::now());
        let ended = tokio::time::timeout(HANG, call)
            .await
            .expect("the refused call was not answered")
            .expect("the call's task");
        match ended {
            Err(RPCError::Unreachable(why)) => assert!(
                why.to_string().contains("the link to node 2 is down"),
                "answered as unreachable for another reason: {why}"
            ),
            other => panic!("the refused call ended as {other:?}"),
        }
        assert!(!transport.holds_group(0), "the call still waits");
        assert!(node.refusing.contains(&2));
    }

    /// Past [`CALLS_SERVING_MAX`] calls at once, a call is answered
    /// unavailable at once, not queued.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_past_the_serving_limit_is_answered_unavailable() {
        let (mut node, _two, _dir) = node_1("serving").await;
        node.serving = Arc::new(Semaphore::new(0));
        let batch = Batch {
            calls: vec![Call {
                group: 0,
                id: 77,
                rpc: Rpc::Vote(vote()),
            }],
            ..Batch::default()
        };
        node.on_batch(2, batch);
        let batches = node.groups.transport.take_batches();
        let [(2, answered)] = &batches[..] else {
            panic!("not one batch for node 2: {batches:?}");
        };
        match &answered.answers[..] {
            [
                Answer {
                    id: 77,
                    reply: Reply::Unavailable(why),
                },
            ] => {
                assert!(why.contains("calls are being served here"), "{why}");
            }
            other => panic!("the call was answered {other:?}"),
        }
    }
}
