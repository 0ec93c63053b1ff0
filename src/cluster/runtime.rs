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
//! peer asks again, or gives its own calls up). The tick comes before what
//! peers send, so a peer that keeps sending cannot starve it. Batches
//! peers send are handed on, at most [`BATCHES_PER_TURN`] between looks at
//! the tick: their answers to the calls that wait for them, their notes to
//! the groups, and each call to its group in a task of its own, at most
//! [`CALLS_SERVING_MAX`] calls and [`SERVING_BYTES_MAX`] bytes of them at
//! once; past either a call is answered `Unavailable` at once rather than
//! queued. A panic of the loop (our bug) is logged as it happens.
//! Shutdown ends this node's own waiting calls at once.
//!
//! The caller builds the groups (on the store and with the durability it
//! owns, the broker's group commit in `serve`) and the links, and closes
//! the store after [`Runtime::shutdown`]. Not here yet: the heal in place
//! of a poisoned store (the Maelstrom node's `heal_in_place`; here it will
//! be a `Runtime::heal` that stops the ticks, answers calls `Unavailable`
//! while the groups restart with `Groups::start_after`, then swaps them).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};

use super::frame::{FRAME_BYTES_MAX, items};
use super::leads::{LEADS_EVERY, Leads};
use super::link::{Links, Received, SendError};
use crate::broker::cluster::{Relayer, RequestHead, ResponseHead};
use crate::log;
use crate::raft::groups::{GROUPS_RUNNING_MAX, Groups};
use crate::raft::transport::{Answer, Batch, Call, Reply, Rpc, Transport};
use crate::raft::types::{Bytes64, NodeId};

/// How often the groups tick and their traffic goes to the links: the
/// Maelstrom node's tick (`node::TICK`), for the same reason. Every batch
/// to a peer carries one tick of every group's traffic, a latency far
/// below an election timeout (250 ms) for one frame per peer per tick
/// however many groups talk.
pub const TICK: Duration = Duration::from_millis(10);

/// Batches from peers handed on in one turn of the loop at most, before it
/// looks at the tick again: a tick is late by at most this many batches'
/// handing on (each only delivers answers and notes and spawns its calls),
/// however fast peers send; and the loop takes them a few at a time rather
/// than one per turn.
pub const BATCHES_PER_TURN: usize = 64;

/// Peers' calls being served at once: a group has at most a replication
/// call (AppendEntries or a snapshot chunk) from its leader and a vote
/// from a candidate in flight to a replica, so twice the groups a node
/// runs covers every group at work at once. Past this, calls are answered
/// [`Reply::Unavailable`] rather than held without bound.
pub const CALLS_SERVING_MAX: usize = 2 * GROUPS_RUNNING_MAX;

/// Bytes of peers' calls being served at once, each counted at its
/// encoded size: a call holds its request until it is answered (the
/// links' incoming budget is released once its batch is handed on), so
/// the count alone would let a stalled store hold thousands of full
/// AppendEntries. Four frames' worth: dozens of full replication calls,
/// far more small ones; past it a call is answered [`Reply::Unavailable`]
/// and its leader backs off.
pub const SERVING_BYTES_MAX: usize = 4 * FRAME_BYTES_MAX;

/// Requests relayed from peers (`Rpc::Relay`: HTTP reads of partitions
/// they hold no replica of) served at once: apart from
/// [`CALLS_SERVING_MAX`], so that relayed long polls (up to 30 s each)
/// never take the room the Raft groups' calls need; past it a relay is
/// answered `Unavailable` and the relaying node answers its client 503.
/// Each answer is at most `RELAY_BODY_BYTES_MAX` (16 MiB): sixteen of them
/// are a quarter of a link's queue.
pub const RELAYS_SERVING_MAX: usize = 16;

/// Relayed reads of a partition's state (`Rpc::Relay` with `state` set)
/// served at once: apart from [`RELAYS_SERVING_MAX`], so that long polls
/// holding all of that room leave descriptions and group lags working,
/// and descriptions never take the fetches' room. Each is a short read of
/// the store, answered in a few hundred bytes; twice what one node asks at
/// once (`node::RELAYED_STATES_AT_ONCE`), so two nodes asking at full
/// speed fit. Past it a state read is answered `Unavailable`, and the
/// asking node tries another replica.
pub const RELAYED_STATES_SERVING_MAX: usize = 16;

/// The cluster loop of one node, running in a task of its own. Dropping it
/// stops the loop and closes the links; [`Runtime::shutdown`] also stops
/// the groups.
pub struct Runtime {
    groups: Arc<Groups>,
    links: Arc<Links>,
    /// What peers report leading ([`Leads`]).
    leads: Arc<Leads>,
    /// What serves requests peers relay, once installed.
    relayer: Arc<OnceLock<Relayer>>,
    /// Set to stop the loop.
    stop: watch::Sender<bool>,
    /// Stops the loop at once, when dropped without a shutdown.
    looping: AbortHandle,
    /// What watches the loop: logs a panic as it happens, and ends with
    /// it. `None` once joined.
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Runtime {
    /// Starts the loop of `groups` over `links`, taking the batches their
    /// peers send from `incoming` (what [`Links::start`] returned). Must be
    /// called within a tokio runtime.
    pub fn start(groups: Arc<Groups>, links: Links, incoming: mpsc::Receiver<Received>) -> Runtime {
        let links = Arc::new(links);
        let leads = Arc::new(Leads::default());
        let relayer = Arc::new(OnceLock::new());
        let (stop, stopped) = watch::channel(false);
        let looping = tokio::spawn(
            Loop {
                groups: Arc::clone(&groups),
                links: Arc::clone(&links),
                serving: Serving::new(CALLS_SERVING_MAX, SERVING_BYTES_MAX),
                refusing: BTreeMap::new(),
                leads: Arc::clone(&leads),
                leads_sent: None,
                relayer: Arc::clone(&relayer),
            }
            .run(incoming, stopped),
        );
        Runtime {
            groups,
            links,
            leads,
            relayer,
            stop,
            looping: looping.abort_handle(),
            task: Some(tokio::spawn(watch_loop(looping))),
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

    /// What peers report leading.
    pub fn leads(&self) -> &Arc<Leads> {
        &self.leads
    }

    /// Installs what serves the requests peers relay here; until then
    /// they are answered `Unavailable`. Only the first call installs.
    pub fn serve_relayed(&self, relayer: Relayer) {
        let _ = self.relayer.set(relayer);
    }

    /// Stops the loop, closes the links, ends this node's calls waiting for
    /// answers at once as unreachable (so its groups do not wait out their
    /// deadlines while they stop), then stops the groups. Peers' calls
    /// still being served here are not waited for: they end with errors
    /// as the groups stop, and their answers go nowhere. The store can
    /// close after this (once its durability has made the groups' last
    /// writes durable). The links and the groups stop either way; an error
    /// says the loop had panicked (our bug, logged when it happened).
    pub async fn shutdown(mut self) -> Result<(), String> {
        self.stop.send_replace(true);
        let ended = match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(format!("the cluster loop's watcher failed: {e}"))),
            None => Ok(()),
        };
        self.links.close();
        self.groups
            .transport
            .close_calls("this node is shutting down");
        self.groups.shutdown().await;
        ended
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.looping.abort();
        self.links.close();
    }
}

/// Waits for the loop to end: a panic (our bug) is logged at once, since
/// the node then stops ticking and sending while its links stay up, and
/// is also what [`Runtime::shutdown`] returns.
async fn watch_loop(looping: JoinHandle<()>) -> Result<(), String> {
    match looping.await {
        Ok(()) => Ok(()),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => {
            let why = format!("the cluster loop failed: {e}");
            log::error(format_args!(
                "{why}; this node no longer ticks or sends to its peers"
            ));
            Err(why)
        }
    }
}

/// What bounds the peers' calls being served: their count
/// ([`CALLS_SERVING_MAX`]) and their bytes ([`SERVING_BYTES_MAX`]).
#[derive(Clone)]
struct Serving {
    calls: Arc<Semaphore>,
    /// Relayed fetches' own room ([`RELAYS_SERVING_MAX`]).
    relays: Arc<Semaphore>,
    /// Relayed state reads' own room ([`RELAYED_STATES_SERVING_MAX`]).
    states: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

impl Serving {
    fn new(calls: usize, bytes: usize) -> Serving {
        Serving {
            calls: Arc::new(Semaphore::new(calls)),
            relays: Arc::new(Semaphore::new(RELAYS_SERVING_MAX)),
            states: Arc::new(Semaphore::new(RELAYED_STATES_SERVING_MAX)),
            bytes: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// The bytes of [`SERVING_BYTES_MAX`] a call holds while served, or
    /// `None` when they are not free.
    fn take_bytes(&self, rpc: &Rpc) -> Option<OwnedSemaphorePermit> {
        let bytes = encoded_bytes(rpc).min(SERVING_BYTES_MAX);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        Arc::clone(&self.bytes).try_acquire_many_owned(permits).ok()
    }
}

/// A call's size as sent (JSON, as in a frame, and a snapshot chunk's
/// data raw beside it), counted without keeping the bytes. One that cannot
/// be encoded counts as a whole frame.
fn encoded_bytes(rpc: &Rpc) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let counted = match rpc {
        // Counted without its data, which is not encoded at all.
        Rpc::Snapshot(request) => {
            count.0 = request.data.len() + super::frame::LENGTH_BYTES;
            let without = Rpc::Snapshot(openraft::raft::InstallSnapshotRequest {
                vote: request.vote,
                meta: request.meta.clone(),
                offset: request.offset,
                data: Vec::new(),
                done: request.done,
            });
            serde_json::to_writer(&mut count, &without)
        }
        _ => serde_json::to_writer(&mut count, rpc),
    };
    match counted {
        Ok(()) => count.0,
        Err(_) => FRAME_BYTES_MAX,
    }
}

/// Why a link refused a batch, for logging a change of reason.
fn reason(refused: &SendError) -> &'static str {
    match refused {
        SendError::UnknownPeer { .. } => "unknown peer",
        SendError::Down { .. } => "down",
        SendError::Full { .. } => "full",
        SendError::TooLarge { .. } => "too large",
    }
}

/// The loop's state.
struct Loop {
    groups: Arc<Groups>,
    links: Arc<Links>,
    serving: Serving,
    /// Peers whose link refused the last batch, and why: logged when
    /// refusals start, when their reason changes and when they end, not
    /// once per tick.
    refusing: BTreeMap<NodeId, &'static str>,
    leads: Arc<Leads>,
    /// When this node last told its peers what it leads.
    leads_sent: Option<Instant>,
    relayer: Arc<OnceLock<Relayer>>,
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
                // Stopping first, then the tick, then what peers sent, as
                // the Maelstrom node orders its timers before its input: a
                // peer that keeps sending must not starve the tick, which
                // alone heartbeats, sends calls and answers, and answers
                // refused calls. Answers that came wait at most a tick.
                biased;
                _ = stopped.wait_for(|&stop| stop) => break,
                _ = tick.tick() => self.on_tick(Instant::now()),
                Some(received) = incoming.recv() => self.on_received(received, &mut incoming),
            }
        }
    }

    /// Hands on `first` and the batches already waiting after it, at most
    /// [`BATCHES_PER_TURN`] in all.
    fn on_received(&mut self, first: Received, incoming: &mut mpsc::Receiver<Received>) {
        let mut next = Some(first);
        for _ in 0..BATCHES_PER_TURN {
            let Some(received) = next.take().or_else(|| incoming.try_recv().ok()) else {
                return;
            };
            self.on_batch(received.from, received.batch);
            // Handed on: its share of the links' budget is free.
            drop(received.budget);
        }
    }

    /// The groups tick, then every peer's batch goes to its link.
    fn on_tick(&mut self, now: Instant) {
        self.groups.tick(now);
        if self
            .leads_sent
            .is_none_or(|at| now.duration_since(at) >= LEADS_EVERY)
        {
            self.leads_sent = Some(now);
            let leads = self.groups.leads();
            let me = self.links.cluster().me;
            for &peer in self.links.cluster().membership.nodes().keys() {
                if peer != me {
                    self.groups.transport.lead(peer, leads.clone());
                }
            }
        }
        for (peer, mut batch) in self.groups.transport.take_batches() {
            // Relayed answers go in a batch of their own, after the
            // groups' traffic: a link with no room for them refuses them
            // alone, never the groups' calls and answers with them. Such
            // an answer is dropped; the relaying node's client gets 503
            // once its wait is over.
            let relayed = take_relayed(&mut batch);
            if !relayed.answers.is_empty()
                && let Err(refused) = self.links.send(peer, relayed)
            {
                log::warn(format_args!("a relayed answer was dropped: {refused}"));
            }
            if batch.is_empty() {
                continue;
            }
            match self.links.send(peer, batch) {
                Ok(()) => {
                    if self.refusing.remove(&peer).is_some() {
                        log::info(format_args!(
                            "the link to node {peer} takes whole batches again"
                        ));
                    }
                }
                Err(refused) => {
                    let why = reason(&refused);
                    if self.refusing.insert(peer, why) != Some(why) {
                        log::warn(format_args!("{}", refusal(&refused)));
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
        if let Some(leads) = batch.leads {
            self.leads.record(from, leads, Instant::now());
        }
        for note in batch.notes {
            self.groups.on_note(from, note);
        }
        for call in batch.calls {
            let (room, max) = match call.rpc {
                Rpc::Relay { state: true, .. } => {
                    (&self.serving.states, RELAYED_STATES_SERVING_MAX)
                }
                Rpc::Relay { .. } => (&self.serving.relays, RELAYS_SERVING_MAX),
                _ => (&self.serving.calls, CALLS_SERVING_MAX),
            };
            let Ok(permit) = Arc::clone(room).try_acquire_owned() else {
                transport.answer(
                    from,
                    call.id,
                    Reply::Unavailable(format!("{max} such calls are being served here")),
                );
                continue;
            };
            let (groups, serving) = (Arc::clone(&self.groups), self.serving.clone());
            let relayer = self.relayer.get().cloned();
            tokio::spawn(async move {
                let (id, reply) = serve(&groups, &serving, relayer, from, call).await;
                // Free before the answer is out: a peer that has its answer
                // finds the room it held.
                drop(permit);
                groups.transport.answer(from, id, reply);
            });
        }
    }
}

/// Serves one peer's call within [`SERVING_BYTES_MAX`]: its id and reply.
/// A relayed request goes to `relayer`, any other call to its group.
async fn serve(
    groups: &Groups,
    serving: &Serving,
    relayer: Option<Relayer>,
    from: NodeId,
    call: Call,
) -> (u64, Reply) {
    let Some(bytes) = serving.take_bytes(&call.rpc) else {
        let why = format!("{SERVING_BYTES_MAX} bytes of calls are being served here");
        return (call.id, Reply::Unavailable(why));
    };
    let reply = match call.rpc {
        Rpc::Relay { head, body, .. } => relayed(relayer, from, &head, body.0).await,
        rpc => groups.serve(from, call.group, rpc).await,
    };
    drop(bytes);
    (call.id, reply)
}

/// The answers of `batch` to relayed requests, taken out of it.
fn take_relayed(batch: &mut Batch) -> Batch {
    let (relayed, rest) = std::mem::take(&mut batch.answers)
        .into_iter()
        .partition(|answer| matches!(answer.reply, Reply::Relayed { .. }));
    batch.answers = rest;
    Batch {
        answers: relayed,
        ..Batch::default()
    }
}

/// Serves a request relayed from `from` with `relayer`.
async fn relayed(relayer: Option<Relayer>, from: NodeId, head: &str, body: Vec<u8>) -> Reply {
    let Some(relayer) = relayer else {
        return Reply::Unavailable("this node does not serve relayed requests yet".into());
    };
    let head: RequestHead = match serde_json::from_str(head) {
        Ok(head) => head,
        Err(e) => return Reply::Unavailable(format!("a relayed request's head: {e}")),
    };
    let (answer, body): (ResponseHead, Vec<u8>) = relayer(from, head, body).await;
    match serde_json::to_string(&answer) {
        Ok(head) => Reply::Relayed {
            head,
            body: Bytes64(body),
        },
        Err(e) => Reply::Unavailable(format!("a relayed answer's head: {e}")),
    }
}

/// What to log when a link starts refusing batches, or for a new reason.
fn refusal(refused: &SendError) -> String {
    match refused {
        SendError::TooLarge { .. } => format!(
            "{refused}; their calls are answered as unreachable, the rest of the batch was \
             queued"
        ),
        _ => format!("{refused}; answering its calls as unreachable until it takes batches again"),
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
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use openraft::BasicNode;
    use openraft::error::{RPCError, RaftError};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{VoteRequest, VoteResponse};
    use tokio::net::TcpListener;

    use super::*;
    use crate::cluster::peers::{Cluster, Membership};
    use crate::cluster::secret::Secret;
    use crate::raft::durability::OwnGroupCommit;
    use crate::raft::groups::TIMING_DEFAULT;
    use crate::raft::transport::Network;
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
            serving: Serving::new(CALLS_SERVING_MAX, SERVING_BYTES_MAX),
            refusing: BTreeMap::new(),
            leads: Arc::new(Leads::default()),
            leads_sent: None,
            relayer: Arc::new(OnceLock::new()),
        };
        (node, two, dir)
    }

    /// Group 0's network over `transport`, its storage (which only a
    /// snapshot's transfer reads) on a store of its own in the directory
    /// returned.
    fn network_of(transport: &Arc<Transport>) -> (Network, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        let store = Arc::new(Mutex::new(store));
        let commit = OwnGroupCommit::start(Arc::clone(&store)).expect("a group commit");
        let records = crate::raft::log_store::Group::open(0, store, Arc::new(commit))
            .expect("a group's storage");
        let network = Network {
            group: 0,
            transport: Arc::clone(transport),
            closed: Arc::new(AtomicBool::new(false)),
            records,
        };
        (network, dir)
    }

    fn vote() -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(1, 1), None)
    }

    /// What a vote call of group 0 to node 2 ends with.
    type VoteEnd = Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

    /// A vote call of group 0 to node 2 over `network`, waiting in
    /// `transport` for its answer once this returns; its deadline is far
    /// past the test's own, so only an answer ends it.
    async fn waiting_vote(network: &mut Network, transport: &Transport) -> JoinHandle<VoteEnd> {
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let option = RPCOption::new(HANG * 100);
        let call = tokio::spawn(async move { client.vote(vote(), option).await });
        while !transport.holds_group(0) {
            tokio::task::yield_now().await;
        }
        call
    }

    /// Review finding of stage 2 ("the transport should answer the calls a
    /// send hands back at once"): a call whose batch the link refuses ends
    /// at the tick that refused it, as unreachable, not at its deadline.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_refused_by_a_down_link_is_answered_at_once() {
        let (mut node, _two, _dir) = node_1("down").await;
        assert!(!node.links.is_up(2));
        let transport = Arc::clone(&node.groups.transport);
        let (mut network, _records) = network_of(&transport);
        let call = waiting_vote(&mut network, &transport).await;
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
        assert_eq!(node.refusing.get(&2), Some(&"down"));
    }

    /// Past [`CALLS_SERVING_MAX`] calls at once, a call is answered
    /// unavailable at once, not queued.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_past_the_serving_limit_is_answered_unavailable() {
        let (mut node, _two, _dir) = node_1("serving").await;
        node.serving = Serving::new(0, SERVING_BYTES_MAX);
        node.on_batch(2, one_call(77));
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

    /// A relayer that holds every fetch of records as a long poll that no
    /// record ends until `released` turns true, and answers anything else
    /// at once, empty.
    fn holding_fetches(released: watch::Receiver<bool>) -> Relayer {
        Arc::new(move |_, head: RequestHead, _| {
            let mut released = released.clone();
            Box::pin(async move {
                if head.uri.contains("/records") {
                    let _ = released.wait_for(|done| *done).await;
                }
                let head = ResponseHead {
                    status: 200,
                    content_type: None,
                };
                (head, Vec::new())
            })
        })
    }

    /// Review finding (routing): a relayed HTTP long poll (`wait_ms` up
    /// to 30 s) held one of the [`CALLS_SERVING_MAX`] serving slots that
    /// the Raft calls of every group share, for as long as it waited:
    /// clients opening that many long polls at nodes without a replica
    /// left none for AppendEntries and votes. Relays have their own room
    /// ([`RELAYS_SERVING_MAX`]); past it only relays are refused.
    #[tokio::test(flavor = "current_thread")]
    async fn relayed_long_polls_do_not_starve_raft_calls() {
        let (mut node, _two, _dir) = node_1("relay-starves").await;
        let (release, released) = watch::channel(false);
        assert!(node.relayer.set(holding_fetches(released)).is_ok());
        let head = serde_json::to_string(&RequestHead {
            method: "GET".into(),
            uri: "/topics/t/partitions/0/records?offset=0&wait_ms=30000".into(),
            content_type: None,
        })
        .expect("a head");
        let polls = Batch {
            calls: (0..(CALLS_SERVING_MAX + RELAYS_SERVING_MAX) as u64)
                .map(|id| Call {
                    group: 7,
                    id: 1_000 + id,
                    rpc: Rpc::Relay {
                        head: head.clone(),
                        body: Bytes64(Vec::new()),
                        state: false,
                    },
                })
                .collect(),
            ..Batch::default()
        };
        node.on_batch(2, polls);
        tokio::task::yield_now().await;
        node.on_batch(2, one_call(79));
        let batches = node.groups.transport.take_batches();
        let refused: Vec<String> = batches
            .iter()
            .flat_map(|(_, batch)| &batch.answers)
            .filter(|answer| answer.id == 79)
            .map(|answer| format!("{:?}", answer.reply))
            .collect();
        let _ = release.send(true);
        assert!(
            refused
                .iter()
                .all(|reply| !reply.contains("being served here")),
            "a vote was refused while relayed long polls wait: {refused:?}"
        );
    }

    /// Review finding (topics-relay): relayed state reads shared the
    /// [`RELAYS_SERVING_MAX`] room of relayed fetches, so long polls
    /// holding all of it had every description and group lag refused.
    /// State reads have room of their own ([`RELAYED_STATES_SERVING_MAX`]).
    #[tokio::test(flavor = "current_thread")]
    async fn relayed_long_polls_do_not_starve_state_reads() {
        let (mut node, _two, _dir) = node_1("relay-states").await;
        let (release, released) = watch::channel(false);
        assert!(node.relayer.set(holding_fetches(released)).is_ok());
        let call = |id: u64, uri: &str, state: bool| Call {
            group: 7,
            id,
            rpc: Rpc::Relay {
                head: serde_json::to_string(&RequestHead {
                    method: "GET".into(),
                    uri: uri.into(),
                    content_type: None,
                })
                .expect("a head"),
                body: Bytes64(Vec::new()),
                state,
            },
        };
        let poll = "/topics/t/partitions/0/records?offset=0&wait_ms=30000";
        let polls = Batch {
            calls: (0..=RELAYS_SERVING_MAX as u64)
                .map(|id| call(1_000 + id, poll, false))
                .collect(),
            ..Batch::default()
        };
        node.on_batch(2, polls);
        tokio::task::yield_now().await;
        // The room of fetches is full: the one past it was refused.
        let refused = node
            .groups
            .transport
            .take_batches()
            .iter()
            .flat_map(|(_, batch)| &batch.answers)
            .filter(|answer| matches!(&answer.reply, Reply::Unavailable(why) if why.contains("being served here")))
            .count();
        assert_eq!(refused, 1, "the long polls past the room of fetches");
        node.on_batch(
            2,
            Batch {
                calls: vec![call(79, "/topics/t/partitions/0", true)],
                ..Batch::default()
            },
        );
        let answers = answers_to_node_2(&node).await;
        let _ = release.send(true);
        let replies: Vec<String> = answers
            .iter()
            .filter(|answer| answer.id == 79)
            .map(|answer| format!("{:?}", answer.reply))
            .collect();
        assert!(
            matches!(&replies[..], [reply] if reply.starts_with("Relayed")),
            "a state read while relayed long polls wait: {replies:?}"
        );
    }

    /// A vote for group 0 from node 2, as a batch of one call.
    fn one_call(id: u64) -> Batch {
        Batch {
            calls: vec![Call {
                group: 0,
                id,
                rpc: Rpc::Vote(vote()),
            }],
            ..Batch::default()
        }
    }

    /// The answers queued for node 2, once there are some (the calls are
    /// served in tasks of their own).
    async fn answers_to_node_2(node: &Loop) -> Vec<Answer> {
        let deadline = Instant::now() + HANG;
        loop {
            let batches = node.groups.transport.take_batches();
            if let [(2, batch)] = &batches[..]
                && !batch.answers.is_empty()
            {
                let [(_, batch)] = <[_; 1]>::try_from(batches).expect("one batch");
                return batch.answers;
            }
            assert!(batches.is_empty(), "not answers for node 2: {batches:?}");
            assert!(Instant::now() < deadline, "no answer came");
            tokio::task::yield_now().await;
        }
    }

    /// Review finding (a serving limit that only counts): past
    /// [`SERVING_BYTES_MAX`] bytes of calls being served, a call is
    /// answered unavailable at once, not served.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_past_the_serving_bytes_is_answered_unavailable() {
        let (mut node, _two, _dir) = node_1("serving-bytes").await;
        node.serving = Serving::new(CALLS_SERVING_MAX, 0);
        node.on_batch(2, one_call(78));
        match &answers_to_node_2(&node).await[..] {
            [
                Answer {
                    id: 78,
                    reply: Reply::Unavailable(why),
                },
            ] => assert!(
                why.contains("bytes of calls are being served here"),
                "{why}"
            ),
            other => panic!("the call was answered {other:?}"),
        }
    }

    /// Review finding (nothing checked that serving gives its room back):
    /// once a call is answered, the call and the bytes it held are free
    /// again, so a leak of either fails here.
    #[tokio::test(flavor = "current_thread")]
    async fn serving_room_comes_back_once_calls_are_answered() {
        let (node, _two, _dir) = node_1("serving-room").await;
        let mut node = node;
        for round in 0..3 {
            node.on_batch(2, one_call(round));
            match &answers_to_node_2(&node).await[..] {
                [Answer { id, reply }] if *id == round => assert!(
                    // No group runs here: the groups answer, not the limit.
                    !format!("{reply:?}").contains("being served here"),
                    "{reply:?}"
                ),
                other => panic!("the call was answered {other:?}"),
            }
            assert_eq!(node.serving.calls.available_permits(), CALLS_SERVING_MAX);
            assert_eq!(node.serving.bytes.available_permits(), SERVING_BYTES_MAX);
        }
    }

    /// Review finding (shutdown left this node's calls to their deadline):
    /// what `Runtime::shutdown` does before stopping the groups ends a
    /// call waiting for its answer at once, and refuses new calls.
    #[tokio::test(flavor = "current_thread")]
    async fn closing_calls_ends_a_waiting_call_at_once() {
        let (node, _two, _dir) = node_1("close-calls").await;
        let transport = Arc::clone(&node.groups.transport);
        let (mut network, _records) = network_of(&transport);
        let call = waiting_vote(&mut network, &transport).await;
        transport.close_calls("this node is shutting down");
        let ended = tokio::time::timeout(HANG, call)
            .await
            .expect("the waiting call was not ended")
            .expect("the call's task");
        match ended {
            Err(RPCError::Unreachable(why)) => {
                assert!(why.to_string().contains("shutting down"), "{why}")
            }
            other => panic!("the waiting call ended as {other:?}"),
        }
        assert!(!transport.holds_group(0), "the call still waits");
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let refused = tokio::time::timeout(HANG, client.vote(vote(), RPCOption::new(HANG * 100)))
            .await
            .expect("a new call was not refused at once");
        assert!(
            matches!(refused, Err(RPCError::Unreachable(_))),
            "{refused:?}"
        );
    }

    /// Review finding (a busy incoming channel starved the tick): with
    /// batches queued when the loop starts, and a call to the down node 2
    /// waiting to go out, the first tick (due at once) refuses and answers
    /// the call while most batches still wait. A loop that takes what
    /// peers send before the tick answers it only once the channel is
    /// empty. Counts, not times.
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_incoming_channel_does_not_starve_the_tick() {
        use crate::raft::standing::Note;
        const QUEUED: usize = 100_000;
        let (node, _two, _dir) = node_1("starve").await;
        let transport = Arc::clone(&node.groups.transport);
        let (mut network, _records) = network_of(&transport);
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let (tx, rx) = mpsc::channel(QUEUED);
        for _ in 0..QUEUED {
            let received = Received {
                from: 2,
                batch: Batch {
                    notes: vec![
                        Note::Probe {
                            group: 7,
                            probing: 1
                        };
                        4
                    ],
                    ..Batch::default()
                },
                budget: crate::cluster::link::Budget::for_test(),
            };
            tx.try_send(received).expect("room for the batch");
        }
        let option = RPCOption::new(HANG * 100);
        let waiting = tx.clone();
        let call = tokio::spawn(async move {
            let ended = client.vote(vote(), option).await;
            // Batches still waiting when the call was answered.
            (ended, QUEUED - waiting.capacity())
        });
        while !transport.holds_group(0) {
            tokio::task::yield_now().await;
        }
        let (_stop, stopped) = watch::channel(false);
        let looping = tokio::spawn(node.run(rx, stopped));
        let (ended, left) = tokio::time::timeout(HANG, call)
            .await
            .expect("the refused call was not answered")
            .expect("the call's task");
        looping.abort();
        assert!(matches!(ended, Err(RPCError::Unreachable(_))), "{ended:?}");
        assert!(
            left > 0,
            "no tick ran until all {QUEUED} batches were handed on"
        );
    }
}
