//! The Raft groups' network: RPCs of every group bound for one peer wait
//! in that peer's batch, and the front end sends each batch as one message
//! when it flushes (every tick), with the answers to that peer's calls in
//! the same message. One message per peer per tick however many groups
//! talk: what multi-Raft systems do to keep traffic proportional to nodes,
//! not groups, and what keeps Maelstrom's msgs-per-op low.
//!
//! A call is answered by its id; a call whose answer does not come within
//! openraft's deadline for it fails as a timeout, and its late answer is
//! dropped. The wire format is the front end's: batches are plain serde
//! data.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::groups::ProposeError;
use super::log_store::Group;
use super::snapshot::{Manifest, StreamReader};
use super::standing::Note;
use super::types::{Bytes64, NodeId, OpResult, Proposal, TypeConfig};
use crate::lock::lock;
use crate::log;

/// Calls waiting for an answer at once, over all peers and groups: each
/// group has at most a few RPCs in flight per peer (one replication
/// stream, votes, a snapshot chunk), so this bounds a misbehaving peer's
/// cost and is far above any real need.
pub const CALLS_WAITING_MAX: usize = 65_536;

/// Bytes of snapshot chunks one peer's batch carries at most (at least one
/// chunk always goes); the other chunks wait for the next flush. Every
/// group catching a node up sends its chunk in the same tick: `seglog
/// serve`'s 4 MiB chunks of a dozen groups would be
/// over a peer link's queue, which refuses a batch whole, the groups'
/// other traffic with it; and several leaders' large frames at once would
/// stall each other in the receiver's incoming budget. One serve chunk,
/// or sixteen of the Maelstrom node's, a flush (every 10 ms) is still
/// 400 MB/s to a peer.
pub const SNAPSHOT_BYTES_PER_BATCH_MAX: usize = 4 << 20;

/// A request of one group to its Raft instance on a peer.
#[derive(Serialize, Deserialize, Debug)]
pub enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// A chunk's data as base64 in JSON ([`crate::raft::types::snapshot_chunk`]),
    /// as the Maelstrom node's messages carry it; `seglog serve`'s frames
    /// carry it raw beside the JSON (`cluster::frame`).
    Snapshot(
        #[serde(with = "crate::raft::types::snapshot_chunk")] InstallSnapshotRequest<TypeConfig>,
    ),
    /// A proposal forwarded to the node believed to lead the group
    /// ([`crate::raft::groups::Groups::propose_at_leader`]): served by the
    /// groups, which propose it there as its own.
    Propose(Proposal),
    /// A request of the layer above the groups, opaque here: `seglog
    /// serve`'s HTTP requests for a partition this node holds no replica
    /// of, relayed to one that does (`cluster::relay`). Never served by a
    /// group; the Maelstrom node never sends one.
    Relay {
        head: String,
        body: Bytes64,
        /// A read of a partition's state, not a fetch: served in room of
        /// its own (`cluster::runtime::RELAYED_STATES_SERVING_MAX`). Set
        /// by the sender; the receiver's relayer still checks the route,
        /// so a peer that lies here only picks the other room.
        #[serde(default)]
        state: bool,
    },
}

/// What the peer's Raft instance answered.
#[derive(Serialize, Deserialize, Debug)]
pub enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// What proposing a forwarded proposal at the peer came to.
    Proposed(Result<(u64, Vec<OpResult>), ProposeError>),
    /// The peer could not hand the call to a Raft instance (not started
    /// yet, no such group, shutting down).
    Unavailable(String),
    /// What the layer above answered a [`Rpc::Relay`].
    Relayed {
        head: String,
        body: Bytes64,
    },
}

/// A group the sender of a batch leads, as it stood when sent: what lets
/// a node that runs no replica of the group know its leader, and every
/// node show how far each replica is behind (`cluster::leads`). Only
/// `seglog serve` sends these; the Maelstrom node runs every group on
/// every node and has no use for them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    pub group: u32,
    /// The leader's term.
    pub term: u64,
    /// The index of the leader's last log entry.
    pub last: u64,
    /// The last index each follower is known to hold (absent: not known yet).
    pub matched: BTreeMap<NodeId, u64>,
}

/// One call in a batch.
#[derive(Serialize, Deserialize, Debug)]
pub struct Call {
    pub group: u32,
    pub id: u64,
    pub rpc: Rpc,
}

/// One answer in a batch.
#[derive(Serialize, Deserialize, Debug)]
pub struct Answer {
    pub id: u64,
    pub reply: Reply,
}

/// What one message to a peer carries.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Batch {
    #[serde(default)]
    pub calls: Vec<Call>,
    #[serde(default)]
    pub answers: Vec<Answer>,
    /// Where nodes stand in groups ([`super::standing`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// The groups the sender leads ([`Lead`]), when it reports them (an
    /// empty list: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leads: Option<Vec<Lead>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
            && self.answers.is_empty()
            && self.notes.is_empty()
            && self.leads.is_none()
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// What waits to go to each peer.
    outgoing: BTreeMap<NodeId, Batch>,
    /// Calls sent and not answered: their peer, their group and who waits.
    waiting: HashMap<u64, (NodeId, u32, oneshot::Sender<Reply>)>,
    /// When each group last sent AppendEntries to each peer: a leader
    /// whose replication keeps a follower busy needs no heartbeat to it.
    last_append: HashMap<(u32, NodeId), Instant>,
    /// Set by [`Transport::close_calls`]: why new calls are refused.
    calls_closed: Option<String>,
}

/// The node's end of the groups' network.
pub struct Transport {
    me: NodeId,
    inner: Mutex<Inner>,
}

impl Transport {
    pub fn new(me: NodeId) -> Arc<Transport> {
        Transport::starting_at(me, 0)
    }

    /// The transport of groups started again in the same process (over a
    /// store reopened in place): its call ids go on after `previous`'s,
    /// so that a late answer to a call of the stopped groups is never
    /// taken for the answer to a new call, even if the clock stepped back.
    pub fn new_after(previous: &Transport) -> Arc<Transport> {
        Transport::starting_at(previous.me, lock(&previous.inner).next_id)
    }

    fn starting_at(me: NodeId, after: u64) -> Arc<Transport> {
        // Call ids start at the time in microseconds, so that a late answer
        // to a call of this node's previous process is not taken for the
        // answer to one of this process.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        let next_id = clock.max(after);
        Arc::new(Transport {
            me,
            inner: Mutex::new(Inner {
                next_id,
                ..Inner::default()
            }),
        })
    }

    /// Queues a call; the receiver gets its answer (or is dropped when the
    /// call is given up). Refused once `closed` is set: checked under the
    /// lock [`Transport::forget_group`] takes after setting it, so no call
    /// of a removed group is queued after it was forgotten.
    fn call(
        &self,
        target: NodeId,
        group: u32,
        rpc: Rpc,
        closed: &AtomicBool,
    ) -> Result<(u64, oneshot::Receiver<Reply>), String> {
        let mut inner = lock(&self.inner);
        if closed.load(Ordering::SeqCst) {
            return Err(format!("group {group} was removed here"));
        }
        if let Some(why) = &inner.calls_closed {
            return Err(why.clone());
        }
        if inner.waiting.len() >= CALLS_WAITING_MAX {
            return Err(format!("{CALLS_WAITING_MAX} calls wait for answers"));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        if matches!(rpc, Rpc::Append(_)) {
            inner.last_append.insert((group, target), Instant::now());
        }
        let (tx, rx) = oneshot::channel();
        inner.waiting.insert(id, (target, group, tx));
        inner
            .outgoing
            .entry(target)
            .or_default()
            .calls
            .push(Call { group, id, rpc });
        Ok((id, rx))
    }

    /// Calls `target` with `rpc` of group `group` and waits at most `ttl`
    /// for its answer. `closed` is the group's flag, as for its clients'
    /// calls.
    pub async fn ask(
        &self,
        target: NodeId,
        group: u32,
        rpc: Rpc,
        closed: &AtomicBool,
        ttl: Duration,
    ) -> Result<Reply, NoAnswer> {
        let (id, rx) = self
            .call(target, group, rpc, closed)
            .map_err(NoAnswer::Unreachable)?;
        // However this call ends (answered, timed out, or dropped by its
        // caller, as openraft drops a stopped replication stream's), it
        // stops waiting.
        let _forget = Forget {
            transport: self,
            id,
        };
        match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(Reply::Unavailable(why))) => Err(NoAnswer::Unreachable(why)),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(NoAnswer::Unreachable("the call was dropped".into())),
            Err(_) => Err(NoAnswer::Timeout(ttl)),
        }
    }

    /// Why new calls are refused, once [`Transport::close_calls`] ran.
    pub fn calls_closed(&self) -> Option<String> {
        lock(&self.inner).calls_closed.clone()
    }

    /// Forgets a call given up on.
    fn forget(&self, id: u64) {
        lock(&self.inner).waiting.remove(&id);
    }

    /// Queues the answer to a peer's call.
    pub fn answer(&self, peer: NodeId, id: u64, reply: Reply) {
        lock(&self.inner)
            .outgoing
            .entry(peer)
            .or_default()
            .answers
            .push(Answer { id, reply });
    }

    /// Queues for `peer` the groups this node leads (all of them, maybe
    /// none), in place of any queued before and not sent yet.
    pub fn lead(&self, peer: NodeId, leads: Vec<Lead>) {
        lock(&self.inner).outgoing.entry(peer).or_default().leads = Some(leads);
    }

    /// Queues a note about standing for a peer; dropped once `closed` (its
    /// group's) is set. Checked under the lock [`Transport::forget_group`]
    /// takes after setting it, as `Transport::call` does: a task that
    /// took the group before its removal (answering a probe, asking about
    /// standing) queues nothing of it after it was forgotten.
    pub fn note(&self, peer: NodeId, note: Note, closed: &AtomicBool) {
        let mut inner = lock(&self.inner);
        if closed.load(Ordering::SeqCst) {
            return;
        }
        inner.outgoing.entry(peer).or_default().notes.push(note);
    }

    /// Hands answers from `peer` to the calls that wait for them; answers
    /// to calls given up on, or from the wrong peer, are dropped.
    pub fn deliver(&self, peer: NodeId, answers: Vec<Answer>) {
        let mut inner = lock(&self.inner);
        for answer in answers {
            match inner.waiting.remove(&answer.id) {
                Some((target, _, tx)) if target == peer => {
                    let _ = tx.send(answer.reply);
                }
                Some(other) => {
                    inner.waiting.insert(answer.id, other);
                }
                None => {}
            }
        }
    }

    /// Forgets everything of group `group`, which stopped here for good (it
    /// was removed, and its network's `closed` is set): its calls waiting to
    /// go out and its notes are dropped, its calls waiting for answers end
    /// (a late answer is dropped like any answer to a call given up on),
    /// and when it last sent to each peer is forgotten. Answers to peers'
    /// calls of the group still go out: the peers wait for them.
    pub fn forget_group(&self, group: u32) {
        let mut inner = lock(&self.inner);
        inner.waiting.retain(|_, (_, g, _)| *g != group);
        inner.last_append.retain(|(g, _), _| *g != group);
        for batch in inner.outgoing.values_mut() {
            batch.calls.retain(|call| call.group != group);
            batch.notes.retain(|note| note.group() != group);
        }
    }

    /// Ends every call of this node at once, as unreachable for `why`, and
    /// refuses new ones: for a node that stops, whose groups would
    /// otherwise wait out each call's deadline as they shut down. Calls
    /// waiting to go out are dropped; answers to peers' calls and notes
    /// still go out if anything takes them.
    pub fn close_calls(&self, why: &str) {
        let mut inner = lock(&self.inner);
        inner.calls_closed = Some(why.to_owned());
        for (_, (_, _, tx)) in inner.waiting.drain() {
            let _ = tx.send(Reply::Unavailable(why.to_owned()));
        }
        for batch in inner.outgoing.values_mut() {
            batch.calls.clear();
        }
    }

    /// Whether anything of group `group` waits here: a call to go out or
    /// for its answer, or a note to go out.
    pub fn holds_group(&self, group: u32) -> bool {
        let inner = lock(&self.inner);
        inner.waiting.values().any(|(_, g, _)| *g == group)
            || inner.outgoing.values().any(|batch| {
                batch.calls.iter().any(|call| call.group == group)
                    || batch.notes.iter().any(|note| note.group() == group)
            })
    }

    /// Takes every batch waiting to go out, one per peer.
    pub fn take_batches(&self) -> Vec<(NodeId, Batch)> {
        let mut inner = lock(&self.inner);
        let outgoing = std::mem::take(&mut inner.outgoing);
        let mut batches = Vec::with_capacity(outgoing.len());
        for (peer, mut batch) in outgoing {
            let held = hold_back_chunks(&mut batch);
            if !held.is_empty() {
                inner.outgoing.insert(
                    peer,
                    Batch {
                        calls: held,
                        ..Batch::default()
                    },
                );
            }
            if !batch.is_empty() {
                batches.push((peer, batch));
            }
        }
        batches
    }

    /// When group `group` last sent AppendEntries to `peer`.
    pub fn last_append(&self, group: u32, peer: NodeId) -> Option<Instant> {
        lock(&self.inner).last_append.get(&(group, peer)).copied()
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }
}

/// Takes out of `batch` the snapshot chunks past
/// [`SNAPSHOT_BYTES_PER_BATCH_MAX`] (the first always stays), in order.
fn hold_back_chunks(batch: &mut Batch) -> Vec<Call> {
    let mut bytes = 0;
    let mut held = Vec::new();
    let mut kept = Vec::with_capacity(batch.calls.len());
    for call in std::mem::take(&mut batch.calls) {
        if let Rpc::Snapshot(request) = &call.rpc {
            if bytes > 0 && bytes + request.data.len() > SNAPSHOT_BYTES_PER_BATCH_MAX {
                held.push(call);
                continue;
            }
            bytes += request.data.len().max(1);
        }
        kept.push(call);
    }
    batch.calls = kept;
    held
}

/// Hands a peer's call to this node's Raft instance of its group.
pub async fn serve(raft: &Raft<TypeConfig>, rpc: Rpc) -> Reply {
    match rpc {
        Rpc::Append(request) => Reply::Append(raft.append_entries(request).await),
        Rpc::Vote(request) => Reply::Vote(raft.vote(request).await),
        Rpc::Snapshot(request) => Reply::Snapshot(raft.install_snapshot(request).await),
        // `Groups::serve` proposes these itself; one reaching here is a bug
        // of ours, answered rather than panicked on.
        Rpc::Propose(_) => {
            Reply::Unavailable("a forwarded proposal reached one Raft instance".into())
        }
        Rpc::Relay { .. } => {
            Reply::Unavailable("a relayed request reached one Raft instance".into())
        }
    }
}

/// The network openraft gives one group: clients to each peer.
#[derive(Clone)]
pub struct Network {
    pub group: u32,
    pub transport: Arc<Transport>,
    /// Set when the group is removed: its clients call nobody after it.
    pub closed: Arc<AtomicBool>,
    /// The group's storage, where a snapshot's records are read as they
    /// are sent ([`Client::full_snapshot`]).
    pub records: Arc<Group>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Client {
        Client {
            group: self.group,
            target,
            transport: Arc::clone(&self.transport),
            closed: Arc::clone(&self.closed),
            records: Arc::clone(&self.records),
        }
    }
}

/// One group's client to one peer.
pub struct Client {
    group: u32,
    target: NodeId,
    transport: Arc<Transport>,
    closed: Arc<AtomicBool>,
    records: Arc<Group>,
}

/// Times one part of a snapshot is sent again when it could not be sent
/// (the link down, the peer not running the group yet) before the whole
/// transfer is given up (openraft then starts it again later, from the
/// first part): openraft's own chunked sender allows as many. A part that
/// was sent and not answered in time is not sent again: it may still be
/// queued or acted on, and a second copy would only add to the backlog;
/// the transfer is given up, and openraft's replication learns where the
/// follower stands before it sends anything more.
const SNAPSHOT_PART_TRIES: u32 = 5;

/// The slowest install a snapshot's last part waits for: the follower
/// answers that part once it has installed the whole stream, which it
/// does at about 350 MB/s here; the wait grows by a second for each 32 MiB
/// sent, ten times that, so that a large partition's install is not taken
/// for a lost answer (and sent again).
const INSTALL_BYTES_PER_SECOND_MIN: u64 = 32 << 20;

/// The pause before a part is sent again, doubled at each try: a link
/// that dropped is dialed again within a few ticks.
const SNAPSHOT_PART_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Forgets a call when dropped, so that a call openraft gave up on does
/// not wait for an answer forever (answered calls are already forgotten).
struct Forget<'a> {
    transport: &'a Transport,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.transport.forget(self.id);
    }
}

/// Why a call got no answer.
#[derive(Debug)]
pub enum NoAnswer {
    /// Not sent, or the peer could not hand it on ([`Reply::Unavailable`]),
    /// or given up on here: the peer did not act on it, except for a call
    /// this node's [`Transport::close_calls`] ended after sending it.
    Unreachable(String),
    /// No answer within the deadline: the peer may have acted on it.
    Timeout(Duration),
}

impl Client {
    async fn send(&self, rpc: Rpc, ttl: Duration) -> Result<Reply, NoAnswer> {
        self.transport
            .ask(self.target, self.group, rpc, &self.closed, ttl)
            .await
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        why: NoAnswer,
    ) -> RPCError<NodeId, BasicNode, E> {
        match why {
            NoAnswer::Unreachable(why) => {
                RPCError::Unreachable(Unreachable::new(&AnyError::error(why)))
            }
            NoAnswer::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.transport.me,
                target: self.target,
                timeout,
            }),
        }
    }

    fn mismatch<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Network(NetworkError::new(&AnyError::error(
            "the peer answered a call with a reply of another kind",
        )))
    }
}

impl RaftNetwork<TypeConfig> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(Rpc::Append(rpc), option.hard_ttl()).await {
            Ok(Reply::Append(Ok(response))) => Ok(response),
            Ok(Reply::Append(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(why) => Err(self.rpc_error(RPCTypes::AppendEntries, why)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.send(Rpc::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Reply::Snapshot(Ok(response))) => Ok(response),
            Ok(Reply::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(why) => Err(self.rpc_error(RPCTypes::InstallSnapshot, why)),
        }
    }

    /// Sends a snapshot by the parts of its stream
    /// ([`super::snapshot::StreamReader`]), read from the group's store as
    /// they go, one part per round trip: openraft's own sender would read
    /// the snapshot's bytes, which are its manifest alone. The follower
    /// assembles the parts as openraft's chunks (`Raft::install_snapshot`)
    /// and installs the stream whole.
    async fn full_snapshot(
        &mut self,
        vote: openraft::Vote<NodeId>,
        snapshot: openraft::Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let (group, target) = (self.group, self.target);
        let local = move |what: String| {
            // Not a storage error: openraft stops the whole group on one.
            // The transfer is given up, and tried again later.
            NetworkError::new(&AnyError::error(format!(
                "group {group}'s snapshot for node {target}: {what}"
            )))
        };
        let (manifest, _) = Manifest::decode(snapshot.snapshot.get_ref()).map_err(&local)?;
        let part_bytes = option
            .snapshot_chunk_size()
            .unwrap_or(super::groups::SNAPSHOT_CHUNK_BYTES as usize);
        let mut cancel = std::pin::pin!(cancel);
        // The records the manifest names are durable once a sync point
        // after it has passed: the builder waited for one, and an installed
        // snapshot's records are appended before it is held.
        self.records.synced().await.map_err(&local)?;
        let mut reader = StreamReader::new(&manifest);
        let mut offset = 0;
        let mut restarted = false;
        loop {
            let data = {
                let mut store = self.records.store().map_err(&local)?;
                reader.next_part(&mut store, part_bytes).map_err(&local)?
            };
            let done = reader.done();
            let len = data.len() as u64;
            let mut tries = 0;
            let response = loop {
                let request = InstallSnapshotRequest {
                    vote,
                    meta: snapshot.meta.clone(),
                    offset,
                    data: data.clone(),
                    done,
                };
                let option = if done {
                    let install =
                        Duration::from_secs((offset + len) / INSTALL_BYTES_PER_SECOND_MIN);
                    RPCOption::new(option.hard_ttl() + install)
                } else {
                    option.clone()
                };
                let sent = tokio::select! {
                    biased;
                    closed = &mut cancel => return Err(closed.into()),
                    sent = self.install_snapshot(request, option) => sent,
                };
                let error: StreamingError<TypeConfig, Fatal<NodeId>> = match sent {
                    Ok(response) => break Some(response),
                    Err(RPCError::RemoteError(RemoteError {
                        target,
                        target_node,
                        source: RaftError::Fatal(fatal),
                    })) => {
                        return Err(RemoteError {
                            target,
                            target_node,
                            source: fatal,
                        }
                        .into());
                    }
                    // The follower holds another transfer (it started one
                    // from another leader since, or restarted): from the
                    // first part again, once.
                    Err(RPCError::RemoteError(RemoteError {
                        source: RaftError::APIError(InstallSnapshotError::SnapshotMismatch(why)),
                        ..
                    })) if offset > 0 && !restarted => {
                        log::debug(format_args!(
                            "group {group}'s snapshot for node {target}: {why}; sent again \
                             from the start"
                        ));
                        reader = StreamReader::new(&manifest);
                        offset = 0;
                        restarted = true;
                        break None;
                    }
                    Err(RPCError::RemoteError(e)) => {
                        return Err(NetworkError::new(&e).into());
                    }
                    Err(RPCError::PayloadTooLarge(e)) => return Err(NetworkError::new(&e).into()),
                    Err(RPCError::Network(e)) => return Err(e.into()),
                    Err(RPCError::Timeout(e)) => return Err(e.into()),
                    Err(RPCError::Unreachable(e)) => e.into(),
                };
                tries += 1;
                if tries >= SNAPSHOT_PART_TRIES {
                    return Err(error);
                }
                tokio::select! {
                    biased;
                    closed = &mut cancel => return Err(closed.into()),
                    () = tokio::time::sleep(SNAPSHOT_PART_RETRY_PAUSE * 2u32.pow(tries - 1)) => {}
                }
            };
            let Some(response) = response else {
                continue;
            };
            if response.vote > vote || done {
                return Ok(SnapshotResponse::new(response.vote));
            }
            offset += len;
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(Ok(response))) => Ok(response),
            Ok(Reply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(self.mismatch()),
            Err(why) => Err(self.rpc_error(RPCTypes::Vote, why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_started_again_never_reuses_a_call_id_of_the_previous() {
        let previous = Transport::new(1);
        // As if the clock stepped back after the previous run's calls.
        lock(&previous.inner).next_id = u64::MAX / 4;
        let (old_id, _old) = previous
            .call(
                2,
                0,
                Rpc::Vote(VoteRequest::new(openraft::Vote::new(1, 1), None)),
                &AtomicBool::new(false),
            )
            .expect("a call");
        let next = Transport::new_after(&previous);
        let (new_id, _new) = next
            .call(
                2,
                0,
                Rpc::Vote(VoteRequest::new(openraft::Vote::new(1, 1), None)),
                &AtomicBool::new(false),
            )
            .expect("a call");
        assert!(
            new_id > old_id,
            "call id {new_id} of the new run is not after {old_id} of the old"
        );
        // The old run's late answer is not taken for the new call's.
        next.deliver(
            2,
            vec![Answer {
                id: old_id,
                reply: Reply::Unavailable("late".into()),
            }],
        );
        assert!(lock(&next.inner).waiting.contains_key(&new_id));
    }

    fn chunk(bytes: usize) -> Rpc {
        Rpc::Snapshot(InstallSnapshotRequest {
            vote: openraft::Vote::new(1, 1),
            meta: openraft::SnapshotMeta::default(),
            offset: 0,
            data: vec![7; bytes],
            done: false,
        })
    }

    /// Review finding (restart, 2): every group's 4 MiB chunk for a peer
    /// went in one batch, a dozen of them over the link's queue, which
    /// refused the batch whole. A batch carries one chunk's worth; the
    /// rest go at the next flushes, in order, with nothing else held.
    #[test]
    fn a_batch_carries_snapshot_chunks_up_to_its_bound_and_the_rest_follow() {
        let transport = Transport::new(1);
        let open = AtomicBool::new(false);
        let chunk_bytes = SNAPSHOT_BYTES_PER_BATCH_MAX / 2 + 1;
        let mut ids = Vec::new();
        for group in 1..=5 {
            let (id, _answer) = transport
                .call(2, group, chunk(chunk_bytes), &open)
                .expect("a chunk");
            ids.push(id);
            let vote = Rpc::Vote(VoteRequest::new(openraft::Vote::new(1, 1), None));
            transport.call(2, group, vote, &open).expect("a vote");
        }
        let mut sent = Vec::new();
        for flush in 0..5 {
            let batches = transport.take_batches();
            assert_eq!(batches.len(), 1, "flush {flush}");
            let calls = &batches[0].1.calls;
            let chunks: Vec<u64> = calls
                .iter()
                .filter(|c| matches!(c.rpc, Rpc::Snapshot(_)))
                .map(|c| c.id)
                .collect();
            assert_eq!(chunks.len(), 1, "one chunk a batch, flush {flush}");
            let votes = calls.len() - chunks.len();
            assert_eq!(votes, if flush == 0 { 5 } else { 0 }, "votes go at once");
            sent.extend(chunks);
        }
        assert_eq!(sent, ids, "every chunk, in order");
        assert!(transport.take_batches().is_empty());
        // Small chunks share a batch up to the bound.
        for group in 1..=20 {
            transport
                .call(2, group, chunk(256 << 10), &open)
                .expect("a chunk");
        }
        let first = transport.take_batches();
        assert_eq!(
            first[0].1.calls.len(),
            SNAPSHOT_BYTES_PER_BATCH_MAX / (256 << 10)
        );
    }

    /// Found by the review of streamed snapshots: a part whose answer timed
    /// out was sent again, but a timed-out call is not withdrawn from the
    /// peer's queue (forgetting a call only stops waiting for its answer),
    /// so every retry queued one more copy of the same part. openraft's own
    /// sender does not retry a timed-out chunk either.
    #[tokio::test(flavor = "current_thread")]
    async fn a_timed_out_part_is_queued_once() {
        use crate::raft::durability::OwnGroupCommit;
        use crate::storage::store::{Store, StoreConfig};
        let dir = tempfile::tempdir().expect("a directory");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        store.append_all("k", &[b"a", b"b"]).expect("appends");
        store.sync().expect("a sync");
        let held = super::super::snapshot::Keys::matching(|key| key == "k");
        let manifest = Manifest::plan(&mut store, &held).expect("a plan");
        let store = Arc::new(Mutex::new(store));
        let commit = OwnGroupCommit::start(Arc::clone(&store)).expect("a group commit");
        let records = Group::open(0, store, Arc::new(commit)).expect("a group");
        let transport = Transport::new(1);
        let mut network = Network {
            group: 0,
            transport: Arc::clone(&transport),
            closed: Arc::new(AtomicBool::new(false)),
            records,
        };
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let snapshot = openraft::Snapshot {
            meta: openraft::SnapshotMeta::default(),
            snapshot: Box::new(std::io::Cursor::new(manifest.encode())),
        };
        // Nobody takes the batches: each try times out.
        let sent = client
            .full_snapshot(
                openraft::Vote::new(1, 1),
                snapshot,
                std::future::pending::<ReplicationClosed>(),
                RPCOption::new(Duration::from_millis(20)),
            )
            .await;
        assert!(sent.is_err(), "no answer came");
        let parts: usize = transport
            .take_batches()
            .iter()
            .flat_map(|(_, batch)| &batch.calls)
            .filter(|call| matches!(call.rpc, Rpc::Snapshot(_)))
            .count();
        assert_eq!(parts, 1, "copies of the one part queued for the peer");
    }

    /// Review finding 4: a note queued by a task that took its group
    /// before the group was removed must not bring the group's traffic
    /// back after the transport forgot it.
    #[test]
    fn a_late_note_of_a_forgotten_group_is_dropped() {
        let transport = Transport::new(1);
        let closed = AtomicBool::new(false);
        transport.note(
            2,
            Note::Probe {
                group: 3,
                probing: 1,
            },
            &closed,
        );
        assert!(transport.holds_group(3));
        // What a removal does: close the group's network, then forget it.
        closed.store(true, Ordering::SeqCst);
        transport.forget_group(3);
        assert!(!transport.holds_group(3));
        transport.note(2, Note::Rejoin { group: 3 }, &closed);
        assert!(
            !transport.holds_group(3),
            "a late note recreated a forgotten group's traffic"
        );
        assert!(transport.take_batches().is_empty());
    }
}
