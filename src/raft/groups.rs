//! The Raft groups of one node: one openraft instance per group, on one
//! store and one transport, and what a front end asks of them: which
//! group a key is in, who leads it, how far it has applied, and proposing
//! operations to it.
//!
//! Every node is a voter of every group (a cluster's groups replicate on
//! all its nodes). Group `g` is first led by the node at index
//! `g % nodes`, which initializes it at a fresh start, so that leaders
//! spread over the nodes; openraft elects another when that one fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};

use super::durability::Durability;
use super::log_store::{Group, LogStore, Proposals};
use super::snapshot::group_of;
use super::standing::{ASK_EVERY_MS, Note, PROBE_AFTER_MS, REJOIN_UNANSWERED_MS, Standing};
use super::state_machine::StateMachine;
use super::transport::{self, Network, Reply, Rpc, Transport};
use super::types::{NodeId, Proposal, ProposalId, TypeConfig};
use crate::lock::lock;
use crate::storage::store::Store;

/// Most groups a cluster may have: each is an openraft instance with its
/// own tasks and timers on every node; 64 is far more than a cluster of a
/// few nodes needs to spread its leaders.
pub const GROUPS_MAX: u32 = 64;

/// Timing of the groups, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often a leader tells its followers it is alive.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a time between these starts an
    /// election.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

/// The defaults: heartbeats every 100 ms (to idle followers only),
/// elections after 250 to 500 ms of silence. openraft adds a leader lease
/// of the longest election timeout: a follower that heard from its leader
/// starts an election only after 750 to 1,000 ms of silence, and voters
/// refuse candidates for as long as their own lease runs, so a dead
/// leader's groups take writes again about a second after it died (the
/// failover test measures it). That is still dozens of Maelstrom's round
/// trips with `--latency 20` (20 ms each way on average), so a slow
/// message does not depose a live leader.
pub const TIMING_DEFAULT: Timing = Timing {
    heartbeat_ms: 100,
    election_min_ms: 250,
    election_max_ms: 500,
};

/// Entries a group applies between snapshots: a snapshot lets it purge
/// its log, which is kept in memory.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 5_000;

/// Entries kept in the log below a snapshot, so a follower a little behind
/// catches up from the log rather than by a snapshot.
pub const LOG_KEPT_BELOW_SNAPSHOT: u64 = 1_000;

/// Entries one AppendEntries carries at most: with proposals of at most
/// about 130 KiB each (the Maelstrom node's `PROPOSAL_BYTES_MAX`, or one
/// send of the largest size), one call stays near 2 MiB, within a node's
/// 4 MiB line limit; a follower catching up takes 16 entries (usually a
/// tick's writes each) per round trip.
pub const ENTRIES_PER_APPEND_MAX: u64 = 16;

/// Bytes of a snapshot one InstallSnapshot chunk carries.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 256 << 10;

/// The groups of one node.
pub struct Groups {
    me: NodeId,
    /// Every node's name, by id.
    nodes: Vec<String>,
    pub transport: Arc<Transport>,
    rafts: Vec<Raft<TypeConfig>>,
    state: Vec<Arc<Group>>,
    /// The next proposal's sequence number.
    next_proposal: Mutex<u64>,
    timing: Timing,
    /// When each group last asked its Raft instance for a heartbeat.
    heartbeat_asked: Mutex<Vec<Option<std::time::Instant>>>,
    /// Whether this node may vote in each group ([`super::standing`]),
    /// when it last asked its peers about it, and since when it has been
    /// rejoining without an answer from a leader.
    standing: Mutex<Vec<GroupStanding>>,
    /// Groups whose initialization was started here.
    initialized: Mutex<BTreeSet<u32>>,
    /// When the groups started.
    started: Instant,
    /// Set by [`Groups::shutdown`]: no standing is written after it.
    stopping: std::sync::atomic::AtomicBool,
}

/// A group's standing here, when this node last asked its peers about it,
/// and since when it has been rejoining without a leader's answer.
type GroupStanding = (Standing, Option<Instant>, Option<Instant>);

/// How long a node waits, after its group has no leader and it votes,
/// before it initializes the group although another node should have
/// (that node may never have started).
pub const INIT_FALLBACK: Duration = Duration::from_secs(3);

/// Why a proposal did not take effect, or may not have.
#[derive(Debug)]
pub enum ProposeError {
    /// This node is not the group's leader (the leader it knows of, if
    /// any): nothing was appended.
    NotLeader(Option<NodeId>),
    /// Appended here, then lost its place (a new leader's log replaced
    /// it): it may still be committed by another leader.
    Unknown(String),
    /// The group stopped here (its storage failed). If a failed write or
    /// sync poisoned the store, the node starts its groups again over the
    /// store reopened in place; a group that stopped otherwise stays
    /// stopped until the node restarts. `appended`: the proposal was in
    /// its log, so another node, or this one after a heal, may still
    /// commit it.
    Failed { appended: bool, why: String },
}

/// What a node's groups carry over when they are started again in the same
/// process over a store reopened in place ([`Groups::start_after`]).
struct Carried {
    /// Each group's record of recent proposals: which were appended here
    /// and the published outcomes (durable applies), so that a proposal in
    /// flight across the restart is still told apart from one that cannot
    /// have taken effect, and answered if it was applied.
    proposals: Vec<Proposals>,
    /// The last proposal sequence number used, so ids are never reused.
    next_proposal: u64,
    /// The stopped groups' transport, whose call ids the new one goes on
    /// after ([`Transport::new_after`]).
    transport: Arc<Transport>,
}

impl Groups {
    /// Starts `count` groups for node `me` of `nodes`, on `store`.
    pub async fn start(
        me: NodeId,
        nodes: Vec<String>,
        count: u32,
        store: Arc<Mutex<Store>>,
        durability: Arc<dyn Durability>,
        timing: Timing,
    ) -> Result<Groups, String> {
        Groups::start_carrying(me, nodes, count, store, durability, timing, None).await
    }

    /// Starts the groups of `previous` again, after [`Groups::retire`] and
    /// [`Groups::shutdown`], on `store` reopened in place: each group's
    /// log, vote and applied state come back from the store as at a
    /// restart; what this node knows of its recent proposals is kept.
    pub async fn start_after(
        previous: &Groups,
        store: Arc<Mutex<Store>>,
        durability: Arc<dyn Durability>,
    ) -> Result<Groups, String> {
        let carried = Carried {
            proposals: previous
                .state
                .iter()
                .map(|group| lock(&group.proposals).clone())
                .collect(),
            next_proposal: *lock(&previous.next_proposal),
            transport: Arc::clone(&previous.transport),
        };
        // Copied, not taken: a start that fails leaves them with
        // `previous` for the next attempt.
        Groups::start_carrying(
            previous.me,
            previous.nodes.clone(),
            previous.count(),
            store,
            durability,
            previous.timing,
            Some(carried),
        )
        .await
    }

    /// Makes every group's storage refuse all further reads and writes,
    /// before the groups are stopped to reopen the store in place: nothing
    /// of this run may reach the reopened store (openraft may run a queued
    /// apply after its shutdown).
    pub fn retire(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for group in &self.state {
            group.retire();
        }
    }

    async fn start_carrying(
        me: NodeId,
        nodes: Vec<String>,
        count: u32,
        store: Arc<Mutex<Store>>,
        durability: Arc<dyn Durability>,
        timing: Timing,
        mut carried: Option<Carried>,
    ) -> Result<Groups, String> {
        if count == 0 || count > GROUPS_MAX {
            return Err(format!(
                "a cluster has 1 to {GROUPS_MAX} groups, not {count}"
            ));
        }
        let config = Config {
            cluster_name: "seglog".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            max_payload_entries: ENTRIES_PER_APPEND_MAX,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
            max_in_snapshot_log_to_keep: LOG_KEPT_BELOW_SNAPSHOT,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            // Heartbeats are sent by `heartbeat_idle` only to followers
            // that replication has left idle: under load they would be
            // messages of their own for nothing.
            enable_heartbeat: false,
            ..Config::default()
        }
        .validate()
        .map_err(|e| format!("the Raft configuration: {e}"))?;
        let config = Arc::new(config);
        let transport = match &carried {
            Some(carried) => Transport::new_after(&carried.transport),
            None => Transport::new(me),
        };
        let mut rafts = Vec::new();
        let mut state = Vec::new();
        let mut standing = Vec::new();
        let started = Groups::start_each(
            me,
            count,
            &store,
            &durability,
            &config,
            &transport,
            carried.as_mut(),
            (&mut rafts, &mut state, &mut standing),
        )
        .await;
        if let Err(e) = started {
            // Those started stop again: none may run on without a node,
            // nor write after a reopen that follows.
            for group in &state {
                group.retire();
            }
            for raft in &rafts {
                let _ = raft.shutdown().await;
            }
            return Err(e);
        }
        let started_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let next_proposal = carried.map_or(started_us, |c| c.next_proposal.max(started_us));
        Ok(Groups {
            me,
            nodes,
            transport,
            rafts,
            state,
            next_proposal: Mutex::new(next_proposal),
            timing,
            heartbeat_asked: Mutex::new(vec![None; count as usize]),
            standing: Mutex::new(standing),
            initialized: Mutex::new(BTreeSet::new()),
            started: Instant::now(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Opens and starts each group, pushing each into `out` as it starts.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one start, in one place"
    )]
    async fn start_each(
        me: NodeId,
        count: u32,
        store: &Arc<Mutex<Store>>,
        durability: &Arc<dyn Durability>,
        config: &Arc<Config>,
        transport: &Arc<Transport>,
        mut carried: Option<&mut Carried>,
        out: (
            &mut Vec<Raft<TypeConfig>>,
            &mut Vec<Arc<Group>>,
            &mut Vec<GroupStanding>,
        ),
    ) -> Result<(), String> {
        let (rafts, state, standing) = out;
        for g in 0..count {
            let group = Group::open(g, Arc::clone(store), Arc::clone(durability))
                .map_err(|e| format!("opening group {g}'s log: {e}"))?;
            if let Some(carried) = carried.as_deref_mut()
                && let Some(proposals) = carried.proposals.get_mut(g as usize)
            {
                *lock(&group.proposals) = std::mem::take(proposals);
            }
            let log_store = LogStore {
                group: Arc::clone(&group),
            };
            let state_machine = StateMachine::new(Arc::clone(&group), count);
            let network = Network {
                group: g,
                transport: Arc::clone(transport),
            };
            let (has_state, rejoining) = {
                let log = lock(&group.log);
                let has_state =
                    log.vote.is_some() || log.last_log_id().is_some() || log.applied.is_some();
                (has_state, log.rejoining.is_some())
            };
            let group_standing = Standing::at_start(has_state && !rejoining);
            if !has_state && !rejoining {
                // Durable before the group writes anything: a restart finds
                // it, and probes again, whatever the group wrote meanwhile.
                group
                    .save_standing(false)
                    .await
                    .map_err(|e| format!("group {g}: {e}"))?;
            }
            let raft = Raft::new(me, Arc::clone(config), network, log_store, state_machine)
                .await
                .map_err(|e| format!("starting group {g}: {e}"))?;
            if !group_standing.votes() {
                raft.runtime_config().elect(false);
            }
            standing.push((group_standing, None, None));
            rafts.push(raft);
            state.push(group);
        }
        Ok(())
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Every node's name, by id.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// How many groups there are.
    pub fn count(&self) -> u32 {
        self.rafts.len() as u32
    }

    /// The group of a client key.
    pub fn group_of(&self, key: &str) -> u32 {
        group_of(key, self.count())
    }

    /// Group `g`'s Raft instance.
    pub fn raft(&self, g: u32) -> Option<&Raft<TypeConfig>> {
        self.rafts.get(g as usize)
    }

    /// The node group `g` leads first.
    pub fn preferred_leader(&self, g: u32) -> NodeId {
        u64::from(g) % self.nodes.len().max(1) as u64
    }

    /// Group `g`'s state shared by its log and state machine.
    pub fn group_state(&self, g: u32) -> Option<Arc<Group>> {
        self.state.get(g as usize).cloned()
    }

    /// The leader of group `g` as this node knows it.
    pub fn leader(&self, g: u32) -> Option<NodeId> {
        self.raft(g)?.metrics().borrow().current_leader
    }

    /// Group `g`'s current term here.
    pub fn term(&self, g: u32) -> u64 {
        self.raft(g)
            .map_or(0, |raft| raft.metrics().borrow().current_term)
    }

    /// The term of the last entry group `g` applied here.
    pub fn applied_term(&self, g: u32) -> u64 {
        self.raft(g).map_or(0, |raft| {
            raft.metrics()
                .borrow()
                .last_applied
                .map_or(0, |id| id.leader_id.term)
        })
    }

    /// The index of the last entry group `g` applied here.
    pub fn applied(&self, g: u32) -> Option<u64> {
        self.raft(g)?
            .metrics()
            .borrow()
            .last_applied
            .map(|id| id.index)
    }

    /// Whether group `g` has any state here: a vote, an entry, or an
    /// applied entry (a group never initialized here has none).
    fn has_state(&self, g: u32) -> bool {
        self.state.get(g as usize).is_some_and(|group| {
            let log = lock(&group.log);
            log.vote.is_some() || log.last_log_id().is_some() || log.applied.is_some()
        })
    }

    /// The membership every group starts with: every node a voter.
    fn members(&self) -> BTreeMap<NodeId, BasicNode> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(id, name)| (id as u64, BasicNode::new(name)))
            .collect()
    }

    /// A new proposal id of this node.
    pub fn next_proposal_id(&self) -> ProposalId {
        let mut next = lock(&self.next_proposal);
        *next += 1;
        ProposalId {
            node: self.me,
            seq: *next,
        }
    }

    /// Proposes `proposal` to group `g`, which this node must lead; returns
    /// the index of its entry and the results of its operations, once
    /// committed and applied here.
    pub async fn propose(
        &self,
        g: u32,
        proposal: Proposal,
    ) -> Result<(u64, Vec<super::types::OpResult>), ProposeError> {
        let Some(raft) = self.raft(g) else {
            return Err(ProposeError::NotLeader(None));
        };
        let id = proposal.id;
        match raft.client_write(proposal).await {
            Ok(response) => Ok((response.log_id.index, response.data.results)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                if self.was_appended(g, id) {
                    Err(ProposeError::Unknown(format!(
                        "the entry lost its place in group {g}'s log; another leader may commit it"
                    )))
                } else {
                    Err(ProposeError::NotLeader(forward.leader_id))
                }
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Unknown(format!("group {g}: {e}"))),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Failed {
                appended: self.was_appended(g, id),
                why: format!("group {g} stopped: {e}"),
            }),
        }
    }

    /// Whether a proposal was appended to group `g`'s log here.
    pub fn was_appended(&self, g: u32, id: ProposalId) -> bool {
        self.state
            .get(g as usize)
            .is_some_and(|group| lock(&group.proposals).was_appended(id))
    }

    /// The entry index and results of a proposal applied here.
    pub fn outcome(&self, g: u32, id: ProposalId) -> Option<(u64, Vec<super::types::OpResult>)> {
        self.state
            .get(g as usize)
            .and_then(|group| lock(&group.proposals).outcome(id))
    }

    /// Every node's id.
    pub fn node_ids(&self) -> BTreeSet<NodeId> {
        (0..self.nodes.len() as u64).collect()
    }

    /// Every other node's id.
    fn peers(&self) -> BTreeSet<NodeId> {
        (0..self.nodes.len() as u64)
            .filter(|&id| id != self.me)
            .collect()
    }

    /// Whether this node votes in group `g` ([`super::standing`]).
    pub fn votes(&self, g: u32) -> bool {
        lock(&self.standing)
            .get(g as usize)
            .is_some_and(|(standing, ..)| standing.votes())
    }

    /// This node's last log id in group `g`.
    fn last_log_id(&self, g: u32) -> Option<super::types::LogId> {
        self.state
            .get(g as usize)
            .and_then(|group| lock(&group.log).last_log_id())
    }

    /// Hands a peer's call to this node's instance of its group. A vote
    /// is refused while this node may not vote there: the candidate
    /// counts it as a node it could not reach.
    pub async fn serve(&self, g: u32, rpc: Rpc) -> Reply {
        let Some(raft) = self.raft(g) else {
            return Reply::Unavailable(format!("no group {g}"));
        };
        if matches!(rpc, Rpc::Vote(_)) && !self.votes(g) {
            return Reply::Unavailable(format!("rejoining group {g}: votes nowhere yet"));
        }
        let leader_term = match &rpc {
            Rpc::Append(request) => Some(request.vote.leader_id().term),
            Rpc::Snapshot(request) => Some(request.vote.leader_id().term),
            Rpc::Vote(_) => None,
        };
        if let Some(term) = leader_term
            && !lock(&self.standing)
                .get(g as usize)
                .is_some_and(|(standing, ..)| standing.follows(term))
        {
            return Reply::Unavailable(format!(
                "rejoining group {g}: follows no leader of term {term} yet"
            ));
        }
        transport::serve(raft, rpc).await
    }

    /// A peer's note about standing.
    pub fn on_note(&self, peer: NodeId, note: Note) {
        match note {
            Note::Probe { group } => {
                let Some(pristine) = lock(&self.standing)
                    .get(group as usize)
                    .map(|(standing, ..)| standing.pristine(self.last_log_id(group)))
                else {
                    return;
                };
                let term = self.state.get(group as usize).map_or(0, |state| {
                    lock(&state.log)
                        .vote
                        .map_or(0, |(_, vote)| vote.leader_id().term)
                });
                self.transport.note(
                    peer,
                    Note::Known {
                        group,
                        pristine,
                        term,
                    },
                );
            }
            Note::Known {
                group,
                pristine,
                term,
            } => {
                // An answer this process cannot have asked for yet is stale
                // (a probe of a previous process of this node).
                if self.started.elapsed() < Duration::from_millis(PROBE_AFTER_MS) {
                    return;
                }
                if let Some((standing, ..)) = lock(&self.standing).get_mut(group as usize) {
                    standing.known(peer, pristine, term);
                }
            }
            Note::Rejoin { group } => {
                if self.leader(group) == Some(self.me)
                    && let Some(upto) = self.last_log_id(group)
                {
                    crate::log::info(format_args!(
                        "group {group}: node {peer} rejoins; it votes again once it holds entry {upto}"
                    ));
                    self.transport.note(peer, Note::Readmit { group, upto });
                }
            }
            Note::Readmit { group, upto } => {
                if let Some((standing, ..)) = lock(&self.standing).get_mut(group as usize) {
                    standing.readmit(upto);
                }
            }
        }
    }

    /// Group `g` may now vote here: the switch is made durable (with the
    /// log it caught up on), then elections go on, and the group is
    /// initialized here if this node leads it first and it is new.
    fn admit(self: &Arc<Self>, g: u32) {
        let groups = Arc::clone(self);
        tokio::spawn(async move {
            let Some(group) = groups.group_state(g) else {
                return;
            };
            if groups.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if let Err(e) = group.save_standing(true).await {
                crate::log::warn(format_args!(
                    "group {g}: recording that this node votes: {e}"
                ));
                return;
            }
            if let Some((standing, ..)) = lock(&groups.standing).get_mut(g as usize) {
                standing.admitted();
            }
            crate::log::info(format_args!("group {g}: this node votes"));
            if let Some(raft) = groups.raft(g) {
                raft.runtime_config().elect(true);
            }
            if groups.preferred_leader(g) == groups.me && !groups.has_state(g) {
                groups.initialize_in_task(g);
            }
        });
    }

    /// Initializes group `g` in a task of its own, once per process.
    fn initialize_in_task(&self, g: u32) {
        if !lock(&self.initialized).insert(g) {
            return;
        }
        let Some(raft) = self.raft(g).cloned() else {
            return;
        };
        let members = self.members();
        tokio::spawn(async move {
            if let Err(e) = raft.initialize(members).await {
                crate::log::info(format_args!("initializing group {g}: {e}"));
            }
            let _ = raft.trigger().elect().await;
        });
    }

    /// What the groups do every tick: ask about standing, heartbeats where
    /// replication is idle, and initialize groups still without a leader
    /// long after the start.
    pub fn tick(self: &Arc<Self>, now: Instant) {
        self.ask_standing(now);
        self.heartbeat_idle(now);
        if now.duration_since(self.started) >= INIT_FALLBACK {
            for g in 0..self.count() {
                if self.votes(g) && self.leader(g).is_none() && !self.has_state(g) {
                    self.initialize_in_task(g);
                }
            }
        }
    }

    /// Probes and rejoin requests, every [`ASK_EVERY_MS`] per group (probes
    /// only from [`PROBE_AFTER_MS`] after the start); and what their
    /// answers allow.
    fn ask_standing(self: &Arc<Self>, now: Instant) {
        let every = Duration::from_millis(ASK_EVERY_MS);
        let probing_allowed =
            now.duration_since(self.started) >= Duration::from_millis(PROBE_AFTER_MS);
        let peers = self.peers();
        let nodes = self.nodes.len();
        let mut admitted = Vec::new();
        let mut standing = lock(&self.standing);
        for (g, (group_standing, asked, unanswered)) in standing.iter_mut().enumerate() {
            let g = g as u32;
            if group_standing.votes() || *group_standing == Standing::Admitting {
                continue;
            }
            // A floor that no leader reaches (it came from a peer that
            // has since gone) would keep this node rejoining for good: it
            // probes afresh instead; a new sample is as sound as the old.
            if matches!(group_standing, Standing::Rejoining { upto: None, .. }) {
                let since = *unanswered.get_or_insert(now);
                if now.duration_since(since) >= Duration::from_millis(REJOIN_UNANSWERED_MS) {
                    crate::log::info(format_args!(
                        "group {g}: no leader readmitted this node; probing again"
                    ));
                    *group_standing = Standing::at_start(false);
                    *unanswered = None;
                }
            } else {
                *unanswered = None;
            }
            let last = self.last_log_id(g);
            group_standing.sent_history(last);
            if group_standing.settle(&peers, nodes) || group_standing.caught_up(last) {
                admitted.push(g);
                continue;
            }
            if asked.is_some_and(|at| now.duration_since(at) < every) {
                continue;
            }
            let note = match group_standing {
                Standing::Probing { .. } if probing_allowed => Note::Probe { group: g },
                Standing::Rejoining { .. } => Note::Rejoin { group: g },
                _ => continue,
            };
            *asked = Some(now);
            for &peer in &peers {
                self.transport.note(peer, note.clone());
            }
        }
        drop(standing);
        for g in admitted {
            self.admit(g);
        }
    }

    /// Asks each group this node leads for a heartbeat where some
    /// follower has had no AppendEntries for a heartbeat interval (a
    /// follower hearing nothing for an election timeout starts an
    /// election). Call it every tick.
    fn heartbeat_idle(&self, now: Instant) {
        let interval = Duration::from_millis(self.timing.heartbeat_ms);
        let mut asked = lock(&self.heartbeat_asked);
        for (g, raft) in self.rafts.iter().enumerate() {
            if raft.metrics().borrow().current_leader != Some(self.me) {
                continue;
            }
            if asked[g].is_some_and(|at| now.duration_since(at) < interval / 2) {
                continue;
            }
            let idle = (0..self.nodes.len() as u64)
                .filter(|&peer| peer != self.me)
                .any(|peer| {
                    self.transport
                        .last_append(g as u32, peer)
                        .is_none_or(|at| now.duration_since(at) >= interval)
                });
            if idle {
                asked[g] = Some(now);
                let raft = raft.clone();
                tokio::spawn(async move {
                    let _ = raft.trigger().heartbeat().await;
                });
            }
        }
    }

    /// Stops every group.
    pub async fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for raft in &self.rafts {
            let _ = raft.shutdown().await;
        }
    }
}
