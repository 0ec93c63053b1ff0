//! The node after `init`: serves each client request through the Raft
//! groups (`cluster.md`), and drives their traffic between nodes.
//!
//! A send or commit becomes a *part*: one operation for one group. Each
//! tick, parts go where their group's leader is: proposed here as one
//! entry per group when this node leads it, else forwarded in one message
//! per leader, as one entry per group under a proposal id this node picks.
//! A part is answered once its proposal is applied *here*, so a client
//! that polls this node next sees what it wrote; the results come from
//! this node's own state machine, which records every proposal it applies.
//!
//! Errors say whether the write may have happened. A part whose proposal
//! was never appended anywhere (no leader, or the leader says it is not
//! one) is routed again until its deadline, then refused with a definite
//! error; a part whose proposal may still commit is answered only by its
//! outcome or, at the deadline, by an indefinite error.
//!
//! A failed write or sync poisons the store; the node then heals it in
//! place ([`Server::on_tick`]): it stops every group, closes the group
//! commit, reopens the store (recovery from the journal, as at a
//! restart) with the group commit's backoff, and starts the groups again
//! over it. Meanwhile writes are refused with a definite error and reads
//! go on; parts waiting for a leader are refused, and proposals in flight
//! are answered by their outcome or with an indefinite error.
//!
//! Everything here runs on the event loop's task; proposals run in tasks
//! of their own and report back as [`Event`]s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lines::Outbox;
use super::members::Cluster;
use super::peer::{BatchBody, ForwardBatch, ForwardOutcome, PeerReply, PeerRequest, op_bytes};
use super::poll;
use super::protocol::{self, ReplyBody, ReplyTo, Request, code};
use crate::lock::lock;
use crate::log;
use crate::raft::durability::OwnGroupCommit;
use crate::raft::groups::{GroupSpec, Groups, ProposeError, TIMING_DEFAULT};
use crate::raft::log::RESERVED_KEY_PREFIX;
use crate::raft::snapshot::{Keys, group_of};
use crate::raft::transport::{Batch, Reply};
use crate::raft::types::{NodeId, Op, OpResult, Proposal, ProposalId};
use crate::storage::error::Result;
use crate::storage::group_commit::HealBackoff;
use crate::storage::space::Space;
use crate::storage::store::{Store, StoreConfig};

/// How long a client's write may take before it is answered with an
/// error: Maelstrom's clients give up after 5 s, and an answer that comes
/// later counts for nothing.
pub const CLIENT_DEADLINE: Duration = Duration::from_millis(4000);

/// Forward message ids remembered per peer, to drop a forward that arrives
/// twice (only a duplicating network delivers one twice; a duplicate past
/// this window would be proposed twice).
pub const FORWARD_IDS_REMEMBERED: usize = 4096;

/// Parts waiting for a leader, for a proposal or a forward at once: what a
/// stalled cluster makes a node hold. Past it, writes are refused at once
/// with a definite error.
pub const PARTS_WAITING_MAX: usize = 65_536;

/// How long a leader may be silent before this node stops forwarding
/// writes to it: three heartbeat intervals (a leader sends every follower
/// something at least once per interval, see `cluster.md`), so a slow
/// message or two do not count, and well under the election timeout that
/// replaces a leader really gone.
pub const LEADER_SILENCE: Duration = Duration::from_millis(3 * TIMING_DEFAULT.heartbeat_ms);

/// The most a proposal's operations may weigh, estimated as their keys and
/// messages twice over (JSON escaping at worst doubles a string) plus
/// fields: its entry is one record of the store (at most 1 MiB) and up to
/// 16 entries travel in one AppendEntries. A tick's writes for a group
/// that weigh more become several proposals.
pub const PROPOSAL_BYTES_MAX: usize = 128 << 10;

/// The size a peer message is kept under when it can be split: well below
/// a node's 4 MiB line limit, which only a single oversized call (an
/// AppendEntries of 16 entries of the largest size) may come near.
pub const BATCH_BYTES_TARGET: usize = 1 << 20;

/// Proposals this node may have in a group's `client_write` at once.
/// openraft 0.9 appends each client write to the log on its own, and its
/// core waits for that append's sync point before it takes the next one,
/// so a proposal per request would cost a sync point per request. Parts
/// that arrive while this many are in flight wait, and go together as the
/// next proposal: a group commit at the proposal level. Two keep the core
/// busy (one appending while the one before it applies) with the largest
/// batches.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

/// Why a write is refused while the store heals.
const HEALING: &str =
    "this node's store failed a write or sync and is being reopened in place; retry shortly";

/// What a task of the groups reports to the event loop.
pub enum Event {
    /// A proposal of this node's clients' parts finished.
    Proposed {
        id: ProposalId,
        group: u32,
        result: std::result::Result<(u64, Vec<OpResult>), ProposeError>,
    },
    /// A group's state changed here (an entry applied, a new leader): parts
    /// waiting for it may be answered.
    Progress,
    /// A batch a peer forwarded was proposed here.
    ProposedForPeer {
        peer: NodeId,
        id: ProposalId,
        outcome: ForwardOutcome,
    },
    /// The heal in place ended: the groups started again over the
    /// reopened store, and their group commit; `None` if it was called off
    /// (the node is stopping), the store still poisoned.
    Healed(Option<Box<(Groups, Arc<OwnGroupCommit>)>>),
}

/// A heal in place in progress.
struct Healing {
    /// When the poisoning was seen.
    since: Instant,
    /// Set to call the heal off.
    cancel: watch::Sender<bool>,
}

/// One operation of a client request, for one group.
struct Part {
    /// The client request it belongs to.
    token: u64,
    group: u32,
    op: Op,
    deadline: Instant,
    /// Whether a proposal holding it may have been committed: then it is
    /// never proposed again (a send would be appended twice), only waited
    /// for.
    maybe: bool,
}

/// A client request waiting for its parts.
enum ClientOp {
    Send {
        to: ReplyTo,
    },
    Commit {
        to: ReplyTo,
        left: usize,
        /// The first failure, and whether any part was or may have been
        /// applied: then a failure is answered indefinitely, never with a
        /// definite error, as the commit partly took effect.
        failed: Option<String>,
        maybe: bool,
    },
}

/// A proposal in flight, here or at a leader, and its parts.
struct Awaiting {
    group: u32,
    parts: Vec<Part>,
    /// Proposed here (else forwarded).
    local: bool,
    /// The leader it went to, and the group's term here when it went.
    leader: NodeId,
    term: u64,
    /// A local proposal's `client_write` has returned. Until it has, the
    /// proposal may be appended at any moment (openraft's core may be busy
    /// with a sync), so it is never failed with a definite error.
    returned: bool,
}

/// Proposal ids recently forwarded here, so that one forwarded twice is
/// proposed once.
#[derive(Default)]
struct RecentIds {
    set: HashSet<ProposalId>,
    order: VecDeque<ProposalId>,
}

impl RecentIds {
    /// Remembers `id`; false if it was already remembered.
    fn insert(&mut self, id: ProposalId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > FORWARD_IDS_REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The Maelstrom node's groups: `count` groups over which keys are hashed
/// (`cluster.md`), each with every one of the `nodes` (ids `0..nodes`) a
/// voter, group `g` led first by node `g % nodes`, so that leaders spread.
fn hashed_groups(nodes: u64, count: u32) -> Vec<GroupSpec> {
    (0..count)
        .map(|g| GroupSpec {
            group: g,
            replicas: (0..nodes).map(|i| (u64::from(g) + i) % nodes).collect(),
            keys: Keys::hashed(g, count),
            appender: None,
        })
        .collect()
}

/// An initialised node.
pub struct Server {
    cluster: Cluster,
    store: Arc<Mutex<Store>>,
    /// The free space of the store's file system: writes are refused
    /// while it is short.
    space: Arc<Space>,
    group_commit: Arc<OwnGroupCommit>,
    groups: Arc<Groups>,
    /// How many groups the keys are spread over (`--groups`): a key's
    /// group is its name's hash modulo this.
    group_count: u32,
    out: Outbox,
    events: UnboundedSender<Event>,
    /// The id of the last message this node sent to a peer: starts at the
    /// time of start-up in microseconds, so a restarted node never reuses
    /// one of its previous process.
    last_msg_id: u64,
    next_token: u64,
    ops: HashMap<u64, ClientOp>,
    /// Parts whose group has no leader known yet (or must be routed again).
    unrouted: Vec<Part>,
    /// Proposals in flight, by id.
    awaiting: HashMap<ProposalId, Awaiting>,
    /// Per group, this node's proposals whose `client_write` has not
    /// returned ([`PROPOSALS_IN_FLIGHT_MAX`]).
    proposing: HashMap<u32, usize>,
    /// What waits to go to each peer with the next batch: forwards, and
    /// the outcomes of the peer's forwards (the groups' RPCs wait in their
    /// transport).
    outgoing: BTreeMap<NodeId, PeerRequest>,
    /// Proposals forwarded here lately.
    forwards_seen: RecentIds,
    /// When each peer's last batch arrived.
    heard: HashMap<NodeId, Instant>,
    /// Set while the store is healed in place.
    healing: Option<Healing>,
    /// The waits between reopens, kept across heals.
    backoff: Arc<Mutex<HealBackoff>>,
    /// The tasks that wake the loop on each group's outcomes, replaced
    /// with the groups.
    watchers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Opens the store in `dir`, starts the groups, and initializes the
    /// groups this node leads first if the store is new.
    pub async fn start(
        cluster: Cluster,
        dir: &std::path::Path,
        config: StoreConfig,
        groups: u32,
        min_free: Option<u64>,
        out: Outbox,
        events: UnboundedSender<Event>,
    ) -> std::result::Result<Server, String> {
        let store = Store::open(dir, config).map_err(|e| e.to_string())?;
        log::info(format_args!(
            "store open at {} ({} shutdown)",
            dir.display(),
            if store.opened_clean() {
                "clean"
            } else {
                "unclean"
            },
        ));
        let space = Space::watch(dir, min_free)
            .map_err(|e| format!("cannot read the free space of {}: {e}", dir.display()))?;
        let store = Arc::new(Mutex::new(store));
        let group_commit =
            Arc::new(OwnGroupCommit::start(Arc::clone(&store)).map_err(|e| e.to_string())?);
        let group_count = groups;
        let groups = Groups::start(
            cluster.my_index(),
            cluster.by_raft_id(),
            hashed_groups(cluster.ids().len() as u64, group_count),
            Arc::clone(&store),
            group_commit.clone(),
            TIMING_DEFAULT,
        )
        .await?;
        let mut server = Server {
            cluster,
            store,
            space,
            group_commit,
            groups: Arc::new(groups),
            group_count,
            out,
            events,
            last_msg_id: first_msg_id(),
            next_token: 0,
            ops: HashMap::new(),
            unrouted: Vec::new(),
            awaiting: HashMap::new(),
            proposing: HashMap::new(),
            outgoing: BTreeMap::new(),
            forwards_seen: RecentIds::default(),
            heard: HashMap::new(),
            healing: None,
            backoff: Arc::default(),
            watchers: Vec::new(),
        };
        server.watch_outcomes();
        Ok(server)
    }

    /// Each group's outcomes wake the loop, so that a part is answered as
    /// soon as its entry's apply here is durable, not at the next tick.
    fn watch_outcomes(&mut self) {
        for watcher in self.watchers.drain(..) {
            watcher.abort();
        }
        for g in self.groups.ids() {
            if let Some(group) = self.groups.group_state(g) {
                let events = self.events.clone();
                self.watchers.push(tokio::spawn(async move {
                    loop {
                        group.outcomes_ready.notified().await;
                        if events.send(Event::Progress).is_err() {
                            break;
                        }
                    }
                }));
            }
        }
    }

    /// Whether the store is being healed in place.
    pub fn is_healing(&self) -> bool {
        self.healing.is_some()
    }

    /// Calls off a heal in progress (the node stops); false if none is.
    /// The loop hears [`Event::Healed`] once it has ended.
    pub fn cancel_heal(&self) -> bool {
        match &self.healing {
            Some(healing) => {
                let _ = healing.cancel.send(true);
                true
            }
            None => false,
        }
    }

    /// The store was found poisoned: stops the groups' storage at once,
    /// then heals in a task (see [`heal_in_place`]).
    fn start_heal(&mut self) {
        log::warn(format_args!(
            "the store is poisoned (a write or sync failed): stopping the Raft groups to reopen it in place"
        ));
        lock(&self.backoff).ran_until_now();
        // Before anything else of the groups runs: nothing of this run may
        // reach the store once it is reopened.
        self.groups.retire();
        let (cancel, cancelled) = watch::channel(false);
        self.healing = Some(Healing {
            since: Instant::now(),
            cancel,
        });
        let task = HealTask {
            store: Arc::clone(&self.store),
            groups: Arc::clone(&self.groups),
            group_commit: Arc::clone(&self.group_commit),
            backoff: Arc::clone(&self.backoff),
            cancelled,
        };
        let events = self.events.clone();
        tokio::spawn(async move {
            let healed = heal_in_place(task).await;
            let _ = events.send(Event::Healed(healed.map(Box::new)));
        });
    }

    /// The heal ended: the new groups take over, or, called off, the old
    /// ones stay (stopped) for the node's shutdown.
    fn healed(&mut self, healed: Option<Box<(Groups, Arc<OwnGroupCommit>)>>) {
        let Some(healing) = self.healing.take() else {
            return;
        };
        let Some(healed) = healed else {
            log::warn(format_args!(
                "the heal in place was called off: the node stops with its store poisoned"
            ));
            return;
        };
        let (groups, group_commit) = *healed;
        self.groups = Arc::new(groups);
        self.group_commit = group_commit;
        self.watch_outcomes();
        log::warn(format_args!(
            "store healed in place {:?} after it was found poisoned: the groups are started again and take writes",
            healing.since.elapsed()
        ));
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Serves one request (not `init`, which the event loop handles).
    pub fn handle(&mut self, to: ReplyTo, request: Request, now: Instant) {
        match request {
            Request::Init { .. } => unreachable!("init is handled by the event loop"),
            Request::Send { key, msg } => {
                self.send(to, key, msg, now);
                // At once, not at the next tick: a write's latency is a few
                // ticks, and every tick saved is throughput.
                self.route(now);
            }
            Request::Poll { offsets } => {
                let line = poll::poll_reply(&self.store, &to, &offsets);
                self.out.send(line);
            }
            Request::CommitOffsets { offsets } => {
                self.commit(to, offsets, now);
                self.route(now);
            }
            Request::ListCommittedOffsets { keys } => {
                let store = lock(&self.store);
                let offsets: BTreeMap<&str, u64> = keys
                    .iter()
                    .filter_map(|key| Some((key.as_str(), store.committed_highest(key)?)))
                    .collect();
                let line = protocol::encode_reply(
                    &to,
                    &ReplyBody::ListCommittedOffsetsOk {
                        in_reply_to: to.msg_id,
                        offsets,
                    },
                );
                drop(store);
                self.out.send(line);
            }
            Request::Topology => {
                let groups = &self.groups;
                let leaders = (0..self.group_count)
                    .map(|g| groups.leader(g).and_then(|id| self.cluster.name_of(id)))
                    .collect();
                let votes = (0..self.group_count).map(|g| groups.votes(g)).collect();
                self.reply(
                    &to,
                    &ReplyBody::TopologyOk {
                        in_reply_to: to.msg_id,
                        leaders,
                        votes,
                    },
                );
            }
            Request::Peer(_) if !self.cluster.is_peer(&to.src) => self.reply_error(
                &to,
                code::NOT_SUPPORTED,
                "node-to-node requests are taken from other nodes of the cluster only",
            ),
            Request::Peer(request) => self.on_peer(&to.src, request),
        }
    }

    fn reserved(&self, to: &ReplyTo, key: &str) -> bool {
        if key.starts_with(RESERVED_KEY_PREFIX) {
            self.reply_error(
                to,
                code::MALFORMED_REQUEST,
                &format!("keys starting with {RESERVED_KEY_PREFIX:?} are the cluster's own"),
            );
            return true;
        }
        false
    }

    /// Refuses a write at once, with a definite error, once this node's
    /// store is poisoned (a failed sync or write) and until it is healed
    /// in place: its groups cannot append meanwhile. (The heal is checked
    /// first: a reopen holds the store's lock.)
    fn poisoned(&self, to: &ReplyTo) -> bool {
        if self.healing.is_some() || lock(&self.store).is_poisoned() {
            self.reply_error(to, code::TEMPORARILY_UNAVAILABLE, HEALING);
            return true;
        }
        false
    }

    /// Refuses a write at once, with a definite error, while the disk is
    /// short of free space ([`Space`]); counts what a write taken will cost:
    /// its bytes go to disk twice as its Raft entry and twice again as
    /// the records the entry's apply appends (each a journal batch, then a
    /// segment), which [`Space::written`] counts as two.
    fn no_space(&self, to: &ReplyTo, bytes: usize) -> bool {
        if !self.space.admits() {
            self.reply_error(to, code::TEMPORARILY_UNAVAILABLE, &self.space.refusal());
            return true;
        }
        self.space.written(2 * bytes as u64);
        false
    }

    fn room(&self, to: &ReplyTo, parts: usize) -> bool {
        let waiting =
            self.unrouted.len() + self.awaiting.values().map(|a| a.parts.len()).sum::<usize>();
        if waiting + parts > PARTS_WAITING_MAX {
            self.reply_error(
                to,
                code::TEMPORARILY_UNAVAILABLE,
                "too many writes are waiting for the cluster",
            );
            return false;
        }
        true
    }

    fn send(&mut self, to: ReplyTo, key: String, msg: Vec<u8>, now: Instant) {
        if self.reserved(&to, &key)
            || !self.room(&to, 1)
            || self.poisoned(&to)
            || self.no_space(&to, key.len() + msg.len())
        {
            return;
        }
        // The parser made the message compact JSON text.
        let msg = String::from_utf8_lossy(&msg).into_owned();
        let token = self.token();
        self.ops.insert(token, ClientOp::Send { to });
        self.add_part(token, key.clone(), Op::Send { key, msg }, now);
    }

    /// Queues one operation of request `token` for its key's group.
    fn add_part(&mut self, token: u64, key: String, op: Op, now: Instant) {
        let group = group_of(&key, self.group_count);
        self.unrouted.push(Part {
            token,
            group,
            op,
            deadline: now + CLIENT_DEADLINE,
            maybe: false,
        });
    }

    fn commit(&mut self, to: ReplyTo, offsets: Vec<(String, u64)>, now: Instant) {
        if offsets.iter().any(|(key, _)| self.reserved(&to, key))
            || !self.room(&to, offsets.len())
            || self.poisoned(&to)
            || self.no_space(&to, offsets.iter().map(|(key, _)| key.len() + 8).sum())
        {
            return;
        }
        if offsets.is_empty() {
            self.reply(
                &to,
                &ReplyBody::CommitOffsetsOk {
                    in_reply_to: to.msg_id,
                },
            );
            return;
        }
        let token = self.token();
        self.ops.insert(
            token,
            ClientOp::Commit {
                to,
                left: offsets.len(),
                failed: None,
                maybe: false,
            },
        );
        for (key, offset) in offsets {
            self.add_part(token, key.clone(), Op::Commit { key, offset }, now);
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn next_msg_id(&mut self) -> u64 {
        self.last_msg_id += 1;
        self.last_msg_id
    }

    /// A peer's batch: answers to this node's Raft calls, calls to this
    /// node's groups (each served in a task; their answers go out with a
    /// later batch), forwards to propose, outcomes of this node's forwards.
    fn on_peer(&mut self, src: &str, request: PeerRequest) {
        let Some(peer) = self.cluster.index_of(src) else {
            return;
        };
        self.heard.insert(peer, Instant::now());
        let PeerRequest {
            raft,
            forwards,
            outcomes,
        } = request;
        self.on_raft(peer, raft);
        for batch in forwards {
            self.forwarded(peer, batch);
        }
        for (id, outcome) in outcomes {
            self.on_outcome(id, outcome);
        }
        // What the batch committed may have been applied here by now.
        self.check_awaiting(Instant::now());
    }

    fn on_raft(&mut self, peer: NodeId, batch: Batch) {
        let transport = Arc::clone(&self.groups.transport);
        transport.deliver(peer, batch.answers);
        if self.healing.is_some() {
            // The groups are stopped: the peer counts this node as one it
            // could not reach, as while it restarts.
            for call in batch.calls {
                transport.answer(peer, call.id, Reply::Unavailable(HEALING.into()));
            }
            return;
        }
        for note in batch.notes {
            self.groups.on_note(peer, note);
        }
        for call in batch.calls {
            let groups = Arc::clone(&self.groups);
            let transport = Arc::clone(&transport);
            tokio::spawn(async move {
                let reply = groups.serve(peer, call.group, call.rpc).await;
                transport.answer(peer, call.id, reply);
            });
        }
    }

    /// A peer forwards a batch for a group it thinks this node leads.
    fn forwarded(&mut self, peer: NodeId, batch: ForwardBatch) {
        if !self.forwards_seen.insert(batch.id) {
            log::warn(format_args!(
                "proposal {}:{} forwarded twice: dropped the repeat",
                batch.id.node, batch.id.seq
            ));
            return;
        }
        let leader = self.groups.leader(batch.group);
        if self.healing.is_some() {
            // Not proposed: the peer routes it again, to the next leader.
            self.outgoing
                .entry(peer)
                .or_default()
                .outcomes
                .push((batch.id, ForwardOutcome::NotLeader { leader: None }));
            return;
        }
        if leader != Some(self.groups.me()) || !self.hears_majority(Instant::now()) {
            self.outgoing
                .entry(peer)
                .or_default()
                .outcomes
                .push((batch.id, ForwardOutcome::NotLeader { leader }));
            return;
        }
        if !self.space.admits() {
            let why = self.space.refusal();
            self.outgoing
                .entry(peer)
                .or_default()
                .outcomes
                .push((batch.id, ForwardOutcome::Refused { why }));
            return;
        }
        let bytes = batch.ops.iter().map(op_bytes).sum::<usize>();
        self.space.written(2 * bytes as u64);
        let groups = Arc::clone(&self.groups);
        let events = self.events.clone();
        tokio::spawn(async move {
            let id = batch.id;
            let proposal = Proposal { id, ops: batch.ops };
            let outcome = match groups.propose(batch.group, proposal).await {
                Ok((index, results)) => ForwardOutcome::Applied { index, results },
                Err(ProposeError::NotLeader(leader)) => ForwardOutcome::NotLeader { leader },
                // Never appended: a definite refusal.
                Err(ProposeError::NoGroup(why)) => ForwardOutcome::Refused { why },
                Err(ProposeError::Failed {
                    appended: false, ..
                }) => ForwardOutcome::NotLeader { leader: None },
                Err(ProposeError::Unknown(why) | ProposeError::Failed { why, .. }) => {
                    ForwardOutcome::Unknown { why }
                }
            };
            let _ = events.send(Event::ProposedForPeer { peer, id, outcome });
        });
    }

    /// What became of one of this node's forwards.
    fn on_outcome(&mut self, id: ProposalId, outcome: ForwardOutcome) {
        match outcome {
            // Answered once applied here too (`on_tick`).
            ForwardOutcome::Applied { .. } => {}
            ForwardOutcome::NotLeader { .. } => self.route_again(id),
            ForwardOutcome::Refused { why } => {
                if let Some(awaiting) = self.awaiting.remove(&id) {
                    for part in awaiting.parts {
                        self.fail(part, &format!("the leader refused it: {why}"));
                    }
                }
            }
            ForwardOutcome::Unknown { why } => {
                log::info(format_args!(
                    "forwarded proposal {}:{}: {why}",
                    id.node, id.seq
                ));
                self.mark_maybe(id);
            }
        }
    }

    /// A task of the groups finished.
    pub fn on_event(&mut self, event: Event) {
        // A proposal that returned applied frees a slot for the parts that
        // wait; one refused is routed again at the next tick, not at once
        // (this node may still believe it leads).
        let proposed = matches!(event, Event::Proposed { result: Ok(_), .. });
        self.on_event_only(event);
        let now = Instant::now();
        self.check_awaiting(now);
        if proposed {
            // Room for the parts that waited for one in flight to return.
            self.route(now);
        }
    }

    fn on_event_only(&mut self, event: Event) {
        match event {
            Event::Progress => {}
            Event::Proposed { id, group, result } => {
                if let Some(count) = self.proposing.get_mut(&group) {
                    *count = count.saturating_sub(1);
                }
                self.on_proposed(id, result);
            }
            Event::ProposedForPeer { peer, id, outcome } => {
                self.outgoing
                    .entry(peer)
                    .or_default()
                    .outcomes
                    .push((id, outcome));
            }
            Event::Healed(healed) => self.healed(healed),
        }
    }

    /// A local proposal's `client_write` returned.
    fn on_proposed(
        &mut self,
        id: ProposalId,
        result: std::result::Result<(u64, Vec<OpResult>), ProposeError>,
    ) {
        match result {
            // Answered once its apply here is durable (`check_awaiting`).
            Ok(_) => {
                if let Some(awaiting) = self.awaiting.get_mut(&id) {
                    awaiting.returned = true;
                }
            }
            Err(ProposeError::NotLeader(_)) => self.route_again(id),
            // Never appended (the node's groups are all started before it
            // serves, and never removed, so this is a bug guard).
            Err(ProposeError::NoGroup(why)) => {
                log::warn(format_args!("proposal {}:{}: {why}", id.node, id.seq));
                if let Some(awaiting) = self.awaiting.remove(&id) {
                    for part in awaiting.parts {
                        self.fail(part, &why);
                    }
                }
            }
            // The group is gone here: answer at once, indefinitely if
            // the proposal was in its log (another node may commit it).
            Err(ProposeError::Failed { appended, why }) => {
                log::warn(format_args!("proposal {}:{}: {why}", id.node, id.seq));
                if let Some(awaiting) = self.awaiting.remove(&id) {
                    // Applied here before the group stopped: answered by
                    // its outcome, not a needless crash (13).
                    if let Some((_, results)) = self.groups.outcome(awaiting.group, id) {
                        self.complete(awaiting.parts, &results);
                        return;
                    }
                    for mut part in awaiting.parts {
                        part.maybe |= appended;
                        self.fail_crashed(part, &why);
                    }
                }
            }
            Err(ProposeError::Unknown(why)) => {
                log::info(format_args!("proposal {}:{}: {why}", id.node, id.seq));
                self.mark_maybe(id);
            }
        }
    }

    /// A peer's reply to a message of ours: only a refusal of a whole
    /// batch, which a peer sends when it is not started yet; what the batch
    /// carried is given up on like a lost message.
    pub fn on_reply(&mut self, src: &str, in_reply_to: u64, reply: PeerReply, _now: Instant) {
        log::debug(format_args!(
            "{src} refused message {in_reply_to}: {reply:?}"
        ));
    }

    /// A proposal that was certainly not appended: its parts go to the
    /// group's leader again, unless this node's state machine has applied
    /// it after all.
    fn route_again(&mut self, id: ProposalId) {
        let Some(awaiting) = self.awaiting.remove(&id) else {
            return;
        };
        if let Some((_, results)) = self.groups.outcome(awaiting.group, id) {
            self.complete(awaiting.parts, &results);
            return;
        }
        self.unrouted.extend(awaiting.parts);
    }

    /// A proposal that may have been committed: its parts wait for its
    /// outcome and are never proposed again.
    fn mark_maybe(&mut self, id: ProposalId) {
        if let Some(awaiting) = self.awaiting.get_mut(&id) {
            for part in &mut awaiting.parts {
                part.maybe = true;
            }
        }
    }

    /// Routing, proposals and forwards, answers that are due, and one
    /// batch to each peer with everything for it.
    pub fn on_tick(&mut self, now: Instant) {
        if self.healing.is_none() && lock(&self.store).is_poisoned() {
            self.start_heal();
        }
        if self.healing.is_none() {
            self.groups.tick(now);
        }
        self.check_awaiting(now);
        self.route(now);
        self.flush();
    }

    /// Answers the parts whose proposals this node has applied, and fails
    /// those past their deadline.
    fn check_awaiting(&mut self, now: Instant) {
        let mut applied = Vec::new();
        let mut expired = Vec::new();
        for (id, awaiting) in &self.awaiting {
            if let Some((_, results)) = self.groups.outcome(awaiting.group, *id) {
                applied.push((*id, results));
            } else if awaiting.parts.iter().all(|p| now >= p.deadline) || self.superseded(awaiting)
            {
                expired.push(*id);
            }
        }
        for (id, results) in applied {
            if let Some(awaiting) = self.awaiting.remove(&id) {
                self.complete(awaiting.parts, &results);
            }
        }
        for id in expired {
            if let Some(awaiting) = self.awaiting.remove(&id) {
                // A proposal made here whose `client_write` returned
                // without appending it cannot commit: definite. One still
                // on its way to the log, or forwarded, may.
                let appended = !awaiting.local
                    || !awaiting.returned
                    || self.groups.was_appended(awaiting.group, id);
                for mut part in awaiting.parts {
                    part.maybe |= appended;
                    self.fail(part, "no outcome in time, or its leader was replaced");
                }
            }
        }
    }

    /// Whether a proposal went to a leader that has since been replaced,
    /// and this node has applied an entry of a later term than the one
    /// it went in: had it been committed, it would have been applied
    /// before that entry. It is answered at once rather than at its
    /// deadline, with an indefinite error since its outcome may still be
    /// on its way, so that the client can go on (its next write goes to
    /// the new leader).
    fn superseded(&self, awaiting: &Awaiting) -> bool {
        let g = awaiting.group;
        self.groups
            .leader(g)
            .is_some_and(|leader| leader != awaiting.leader)
            && self.groups.applied_term(g) > awaiting.term
    }

    /// Whether `peer` has sent nothing for [`LEADER_SILENCE`]: a leader
    /// sends every follower something at least every heartbeat interval,
    /// so one this silent is dead or cut off. Writes for its groups wait
    /// here for a new leader rather than go where they would be lost (and
    /// answered with an indefinite error).
    fn silent(&self, peer: NodeId, now: Instant) -> bool {
        self.heard
            .get(&peer)
            .is_none_or(|at| now.duration_since(*at) >= LEADER_SILENCE)
    }

    /// Whether this node has heard from a majority of the cluster (itself
    /// included) within [`LEADER_SILENCE`]. openraft 0.9 keeps a leader
    /// cut off from its majority a leader (it has no check-quorum), so
    /// such a leader proposes nothing: its writes would wait for a commit
    /// that cannot come, and be answered with an indefinite error. They
    /// wait unproposed instead, and fail with a definite one if the
    /// partition outlasts their deadline.
    fn hears_majority(&self, now: Instant) -> bool {
        let nodes = self.cluster.ids().len();
        let heard = (0..nodes as NodeId)
            .filter(|&peer| peer != self.groups.me() && !self.silent(peer, now))
            .count();
        2 * (heard + 1) > nodes
    }

    /// Sends each waiting part to its group's leader.
    fn route(&mut self, now: Instant) {
        if self.healing.is_some() {
            // Never proposed, so refused definitely: the groups are
            // stopped, and come back only after a reopen and an election.
            for part in std::mem::take(&mut self.unrouted) {
                self.fail(part, HEALING);
            }
            return;
        }
        let me = self.groups.me();
        let mut local: BTreeMap<u32, Vec<Part>> = BTreeMap::new();
        let mut forward: BTreeMap<NodeId, BTreeMap<u32, Vec<Part>>> = BTreeMap::new();
        for part in std::mem::take(&mut self.unrouted) {
            if now >= part.deadline {
                self.fail(
                    part,
                    "no leader of its group could take it in time (none known, or its proposals here still in flight)",
                );
                continue;
            }
            match self.groups.leader(part.group) {
                Some(leader) if leader == me && !self.hears_majority(now) => {
                    self.unrouted.push(part)
                }
                Some(leader) if leader == me => local.entry(part.group).or_default().push(part),
                Some(leader) if self.silent(leader, now) => self.unrouted.push(part),
                Some(leader) => forward
                    .entry(leader)
                    .or_default()
                    .entry(part.group)
                    .or_default()
                    .push(part),
                None => self.unrouted.push(part),
            }
        }
        // Parts taken before the disk ran short wait here no longer: while
        // it is short they are refused (never proposed, so definitely).
        if !local.is_empty() && !self.space.admits() {
            let why = self.space.refusal();
            for part in std::mem::take(&mut local).into_values().flatten() {
                self.fail(part, &why);
            }
        }
        for (group, parts) in local
            .into_iter()
            .flat_map(|(group, parts)| sized(parts).into_iter().map(move |parts| (group, parts)))
        {
            let proposing = self.proposing.entry(group).or_default();
            if *proposing >= PROPOSALS_IN_FLIGHT_MAX {
                // Proposed together once one in flight returns (`on_event`).
                self.unrouted.extend(parts);
                continue;
            }
            *proposing += 1;
            let id = self.groups.next_proposal_id();
            let proposal = Proposal {
                id,
                ops: parts.iter().map(|p| p.op.clone()).collect(),
            };
            self.awaiting.insert(
                id,
                Awaiting {
                    group,
                    parts,
                    local: true,
                    leader: me,
                    term: self.groups.term(group),
                    returned: false,
                },
            );
            let groups = Arc::clone(&self.groups);
            let events = self.events.clone();
            tokio::spawn(async move {
                // A client_write can wait for good: openraft answers it when
                // its index is applied or truncated here, and a snapshot that
                // skips past it does neither. Its slot must come back.
                let result =
                    match tokio::time::timeout(CLIENT_DEADLINE, groups.propose(group, proposal))
                        .await
                    {
                        Ok(result) => result,
                        Err(_) => Err(ProposeError::Unknown(format!(
                            "no answer from group {group} within {CLIENT_DEADLINE:?}"
                        ))),
                    };
                let _ = events.send(Event::Proposed { id, group, result });
            });
        }
        for (leader, by_group) in forward {
            for (group, parts) in by_group.into_iter().flat_map(|(group, parts)| {
                sized(parts).into_iter().map(move |parts| (group, parts))
            }) {
                let id = self.groups.next_proposal_id();
                let batch = ForwardBatch {
                    group,
                    id,
                    ops: parts.iter().map(|p| p.op.clone()).collect(),
                };
                self.outgoing
                    .entry(leader)
                    .or_default()
                    .forwards
                    .push(batch);
                self.awaiting.insert(
                    id,
                    Awaiting {
                        group,
                        parts,
                        local: false,
                        leader,
                        term: self.groups.term(group),
                        returned: false,
                    },
                );
            }
        }
    }

    /// Sends one batch to each peer that has anything waiting: the groups'
    /// RPCs and answers, forwards, and outcomes of the peer's forwards.
    fn flush(&mut self) {
        for (peer, raft) in self.groups.transport.take_batches() {
            self.outgoing.entry(peer).or_default().raft = raft;
        }
        let me = self.cluster.me().to_string();
        for (peer, request) in std::mem::take(&mut self.outgoing) {
            if request.is_empty() {
                continue;
            }
            let Some(dest) = self.cluster.name_of(peer).map(str::to_string) else {
                continue;
            };
            let mut waiting = vec![request];
            while let Some(request) = waiting.pop() {
                let msg_id = self.next_msg_id();
                let line = protocol::encode(
                    &me,
                    &dest,
                    BatchBody {
                        kind: "batch",
                        msg_id,
                        request: &request,
                    },
                );
                match request.split_if_over(line.len(), BATCH_BYTES_TARGET) {
                    Some((first, second)) => {
                        waiting.push(second);
                        waiting.push(first);
                    }
                    None => self.out.send(line),
                }
            }
        }
    }

    /// Answers the parts of an applied proposal with its results, in order.
    fn complete(&mut self, parts: Vec<Part>, results: &[OpResult]) {
        for (part, result) in parts.into_iter().zip(results) {
            match (self.ops.remove(&part.token), result) {
                (Some(ClientOp::Send { to }), OpResult::Offset(offset)) => self.reply(
                    &to,
                    &ReplyBody::SendOk {
                        in_reply_to: to.msg_id,
                        offset: *offset,
                    },
                ),
                (
                    Some(ClientOp::Commit {
                        to,
                        left,
                        failed,
                        maybe: _,
                    }),
                    _,
                ) => {
                    // Applied: a later part's failure cannot be definite.
                    self.commit_part_done(part.token, to, left, failed, true);
                }
                (Some(other), result) => {
                    log::warn(format_args!(
                        "a part got the result {result:?} of another kind"
                    ));
                    self.ops.insert(part.token, other);
                }
                (None, _) => {}
            }
        }
    }

    /// Fails a part whose group stopped here: definite unless its proposal
    /// may have been applied, then `crash` (13) rather than a timeout.
    fn fail_crashed(&mut self, part: Part, why: &str) {
        if let Some(ClientOp::Send { to }) = self.ops.get(&part.token)
            && part.maybe
        {
            let to = to.clone();
            self.ops.remove(&part.token);
            self.reply_error(&to, code::CRASH, &format!("group {}: {why}", part.group));
            return;
        }
        self.fail(part, why);
    }

    /// Fails a part: definite unless its proposal may have been applied.
    fn fail(&mut self, part: Part, why: &str) {
        let Some(op) = self.ops.remove(&part.token) else {
            return;
        };
        let text = format!("group {}: {why}", part.group);
        match op {
            ClientOp::Send { to } => {
                let code = if part.maybe {
                    code::TIMEOUT
                } else {
                    code::TEMPORARILY_UNAVAILABLE
                };
                self.reply_error(&to, code, &text);
            }
            ClientOp::Commit {
                to,
                left,
                failed,
                maybe,
            } => {
                let failed = failed.or(Some(text));
                self.commit_part_done(part.token, to, left, failed, maybe || part.maybe);
            }
        }
    }

    /// One part of a commit is done; the commit is answered with its last.
    fn commit_part_done(
        &mut self,
        token: u64,
        to: ReplyTo,
        left: usize,
        failed: Option<String>,
        maybe: bool,
    ) {
        if left > 1 {
            self.ops.insert(
                token,
                ClientOp::Commit {
                    to,
                    left: left - 1,
                    failed,
                    maybe,
                },
            );
            return;
        }
        match failed {
            None => self.reply(
                &to,
                &ReplyBody::CommitOffsetsOk {
                    in_reply_to: to.msg_id,
                },
            ),
            Some(text) => {
                let code = if maybe {
                    code::TIMEOUT
                } else {
                    code::TEMPORARILY_UNAVAILABLE
                };
                self.reply_error(&to, code, &text);
            }
        }
    }

    /// Stops the groups, then waits for a sync point after everything they
    /// wrote, so that none is in flight when the store closes.
    pub async fn stop_groups(groups: Arc<Groups>, group_commit: Arc<OwnGroupCommit>) {
        groups.shutdown().await;
        if let Err(e) = crate::raft::durability::synced(&*group_commit).await {
            log::warn(format_args!(
                "the last sync point before closing failed: {e}"
            ));
        }
        // The thread finishes the sync point it reported (publishing it)
        // before it ends.
        if let Err(e) = tokio::task::spawn_blocking(move || group_commit.close_and_join()).await {
            log::warn(format_args!("closing the group commit: {e}"));
        }
    }

    /// The group commit, for the last sync point before closing.
    pub fn group_commit(&self) -> Arc<OwnGroupCommit> {
        Arc::clone(&self.group_commit)
    }

    /// The groups, for stopping them.
    pub fn groups(&self) -> Arc<Groups> {
        Arc::clone(&self.groups)
    }

    /// Closes the store cleanly (after the groups stopped).
    pub fn shut_down(self) -> Result<()> {
        let Server {
            group_commit,
            store,
            groups,
            ..
        } = self;
        drop(groups);
        drop(group_commit);
        // The groups' tasks may hold the store a moment longer: shut it
        // down in place.
        lock(&store).shut_down()
    }

    fn reply(&self, to: &ReplyTo, body: &ReplyBody<'_>) {
        self.out.send(protocol::encode_reply(to, body));
    }

    fn reply_error(&self, to: &ReplyTo, code: u32, text: &str) {
        log::debug(format_args!(
            "error {code} to {} msg {}: {text}",
            to.src, to.msg_id
        ));
        self.reply(
            to,
            &ReplyBody::Error {
                in_reply_to: to.msg_id,
                code,
                text,
            },
        );
    }
}

/// What a heal in place works on.
struct HealTask {
    store: Arc<Mutex<Store>>,
    /// The groups of the poisoned run, retired.
    groups: Arc<Groups>,
    group_commit: Arc<OwnGroupCommit>,
    backoff: Arc<Mutex<HealBackoff>>,
    cancelled: watch::Receiver<bool>,
}

/// Heals the poisoned store in place: stops the groups (their storage is
/// retired already), closes their group commit (what waits is answered
/// with the poisoned store's error, and no sync point is in flight once
/// its thread has ended), then reopens the store and starts a group
/// commit and the groups over it, as at a restart, waiting as the shared
/// [`HealBackoff`] says before each attempt. Returns the new groups and
/// group commit, or `None` if called off.
async fn heal_in_place(mut task: HealTask) -> Option<(Groups, Arc<OwnGroupCommit>)> {
    task.groups.shutdown().await;
    let group_commit = Arc::clone(&task.group_commit);
    match tokio::task::spawn_blocking(move || group_commit.close_and_join()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn(format_args!("closing the poisoned run's group commit: {e}")),
        Err(e) => log::warn(format_args!("closing the poisoned run's group commit: {e}")),
    }
    for attempt in 1.. {
        let wait = lock(&task.backoff).wait();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = task.cancelled.wait_for(|cancelled| *cancelled) => return None,
        }
        log::warn(format_args!(
            "reopening the poisoned store in place, attempt {attempt} (after waiting {wait:?})"
        ));
        let started = Instant::now();
        let result = reopen_and_start(&task).await;
        lock(&task.backoff).attempted();
        match result {
            Ok(healed) => {
                lock(&task.backoff).healed();
                log::warn(format_args!(
                    "attempt {attempt}: the store is reopened and the groups started in {:?}",
                    started.elapsed()
                ));
                return Some(healed);
            }
            Err(e) => log::warn(format_args!(
                "attempt {attempt} to heal the store in place failed, trying again in {:?}: {e}",
                lock(&task.backoff).wait()
            )),
        }
    }
    unreachable!("the attempts run out")
}

/// One attempt of [`heal_in_place`]: the reopen, then a group commit and
/// the groups over the reopened store.
async fn reopen_and_start(
    task: &HealTask,
) -> std::result::Result<(Groups, Arc<OwnGroupCommit>), String> {
    let store = Arc::clone(&task.store);
    tokio::task::spawn_blocking(move || lock(&store).reopen())
        .await
        .map_err(|e| format!("the reopen's thread: {e}"))?
        .map_err(|e| format!("reopening: {e}"))?;
    let group_commit = Arc::new(
        OwnGroupCommit::start(Arc::clone(&task.store))
            .map_err(|e| format!("starting the group commit: {e}"))?,
    );
    let durability: Arc<dyn crate::raft::durability::Durability> = group_commit.clone();
    match Groups::start_after(&task.groups, Arc::clone(&task.store), durability).await {
        Ok(groups) => Ok((groups, group_commit)),
        Err(e) => {
            // A store poisoned again while the groups started: the next
            // attempt reopens it again, with no sync point in flight.
            let closing = Arc::clone(&group_commit);
            let _ = tokio::task::spawn_blocking(move || closing.close_and_join()).await;
            Err(format!("starting the groups: {e}"))
        }
    }
}

/// Parts cut into proposals of at most [`PROPOSAL_BYTES_MAX`] each (a part
/// heavier than that alone in its own), in order.
fn sized(parts: Vec<Part>) -> Vec<Vec<Part>> {
    let mut out: Vec<Vec<Part>> = Vec::new();
    let mut weight = 0;
    for part in parts {
        let bytes = op_bytes(&part.op);
        match out.last_mut() {
            Some(last) if weight + bytes <= PROPOSAL_BYTES_MAX => last.push(part),
            _ => {
                out.push(vec![part]);
                weight = 0;
            }
        }
        weight += bytes;
    }
    out
}

/// Where this process's peer message ids start: microseconds since the
/// epoch. The ids of the previous process of this node stayed below it
/// unless it sent more than one message per microsecond of its life; and it
/// stays below 2^53 (exact in every JSON parser) until the year 2255.
fn first_msg_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(token: u64, msg_bytes: usize) -> Part {
        Part {
            token,
            group: 0,
            op: Op::Send {
                key: "k".into(),
                msg: "m".repeat(msg_bytes),
            },
            deadline: Instant::now(),
            maybe: false,
        }
    }

    #[test]
    fn a_ticks_parts_become_proposals_within_the_weight_limit_in_order() {
        let small = PROPOSAL_BYTES_MAX / 8;
        let parts: Vec<Part> = (0..20).map(|token| part(token, small)).collect();
        let proposals = sized(parts);
        assert!(proposals.len() > 1);
        for proposal in &proposals {
            assert!(proposal.iter().map(|p| op_bytes(&p.op)).sum::<usize>() <= PROPOSAL_BYTES_MAX);
        }
        let tokens: Vec<u64> = proposals.iter().flatten().map(|p| p.token).collect();
        assert_eq!(tokens, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn a_part_heavier_than_the_limit_is_a_proposal_of_its_own() {
        let proposals = sized(vec![part(0, 1), part(1, PROPOSAL_BYTES_MAX), part(2, 1)]);
        let sizes: Vec<usize> = proposals.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1]);
    }

    /// A one-node server on a fresh store in the returned directory, and
    /// its output and events.
    async fn one_node_server() -> (
        tempfile::TempDir,
        Server,
        Outbox,
        tokio::sync::mpsc::UnboundedReceiver<Event>,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = Cluster::new("n0", &["n0".to_string()]).expect("cluster");
        let (events, heard) = tokio::sync::mpsc::unbounded_channel();
        let out = Outbox::default();
        let server = Server::start(
            cluster,
            dir.path(),
            StoreConfig::default(),
            2,
            None,
            out.clone(),
            events,
        )
        .await
        .expect("server");
        (dir, server, out, heard)
    }

    /// A commit of which one part was applied and another then failed
    /// (never proposed: the heal refused it) took effect in part: it is
    /// answered with the indefinite error, never a definite one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_commit_partly_applied_is_never_failed_definitely() {
        let (_dir, mut server, out, _heard) = one_node_server().await;
        let to = ReplyTo {
            src: "c1".into(),
            dest: "n0".into(),
            msg_id: 7,
        };
        let token = server.token();
        server.ops.insert(
            token,
            ClientOp::Commit {
                to,
                left: 2,
                failed: None,
                maybe: false,
            },
        );
        let commit = |key: &str| Part {
            token,
            group: 0,
            op: Op::Commit {
                key: key.into(),
                offset: 1,
            },
            deadline: Instant::now(),
            maybe: false,
        };
        server.complete(vec![commit("a")], &[OpResult::Committed]);
        assert!(out.take().is_empty(), "answered before its last part");
        server.fail(commit("b"), HEALING);
        let reply: serde_json::Value =
            serde_json::from_slice(&out.take()).expect("one reply, as JSON");
        assert_eq!(reply["body"]["type"], "error", "{reply}");
        assert_eq!(reply["body"]["code"], code::TIMEOUT, "{reply}");
        assert_eq!(reply["body"]["in_reply_to"], 7, "{reply}");
    }

    /// A vote saved through `group`'s log storage, as openraft would.
    async fn save_vote(group: Arc<crate::raft::log_store::Group>) -> bool {
        use openraft::storage::RaftLogStorage;
        let mut log_store = crate::raft::log_store::LogStore { group };
        log_store
            .save_vote(&crate::raft::types::Vote::new(u64::MAX / 2, 0))
            .await
            .is_ok()
    }

    /// Nothing of a stopped run may reach the reopened store: the heal
    /// retires the old groups' storage before its task can run the reopen
    /// (the test's runtime has one thread, so the spawned heal has not run
    /// when `start_heal` returns).
    #[tokio::test(flavor = "current_thread")]
    async fn a_heal_retires_the_old_groups_storage_before_the_reopen() {
        let (_dir, mut server, _out, mut heard) = one_node_server().await;
        let old = Arc::clone(&server.groups);
        for g in old.ids() {
            let group = old.group_state(g).expect("group");
            assert!(
                save_vote(group).await,
                "group {g} takes a vote before the heal"
            );
        }
        server.start_heal();
        for g in old.ids() {
            let group = old.group_state(g).expect("group");
            assert!(
                !save_vote(group).await,
                "group {g}'s old storage still writes once the heal started"
            );
        }
        loop {
            if let Event::Healed(healed) = heard.recv().await.expect("the server's events") {
                assert!(healed.is_some(), "the heal was not called off");
                server.healed(healed);
                break;
            }
        }
        assert!(!server.is_healing());
        for g in old.ids() {
            let old_group = old.group_state(g).expect("group");
            assert!(
                !save_vote(old_group).await,
                "group {g}'s old storage writes after the heal"
            );
            let new_group = server.groups.group_state(g).expect("group");
            assert!(
                save_vote(new_group).await,
                "group {g} takes a vote after the heal"
            );
        }
    }
}
