//! The Raft groups of one node: one openraft instance per group, on one
//! store and one transport, and what a front end asks of them: who leads a
//! group, how far it has applied, proposing operations to it, and adding
//! and removing groups while the node runs.
//!
//! Node ids are the front end's own (the Maelstrom node's index in
//! `node_ids`, `seglog serve`'s `--node-id`): any `u64`, never taken for
//! an index. Each group has its own replicas, its voters: some of the
//! nodes, this one among them. The first replica leads the group first,
//! initializing it at a fresh start, so that a front end spreads leaders by
//! the order it gives; openraft elects another when that one fails. A node
//! that is not a replica of a group runs nothing of it, answers none of
//! its calls or notes, and takes none from a node that is not a replica.
//!
//! A group is added with its replicas and the client keys its state
//! machine holds ([`Groups::add`]), and removed ([`Groups::remove`], on
//! this node only: a group removed from a majority of its replicas is
//! stopped for good): stopped, its traffic forgotten by the transport, and
//! its storage deleted: its log key (log, vote, applied state and
//! standing) and its keys with their committed offsets; its id is never
//! added again. A proposal, a call or a note for a group that does not run
//! here (never added, still starting, being removed, removed) is refused
//! with an error that says which.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};

use super::durability::{Durability, synced};
use super::log::{Record, log_key, marked_removed, stored_groups};
use super::log_store::{Group, LogStore, Proposals};
use super::snapshot::Keys;
use super::standing::{ASK_EVERY_MS, Note, PROBE_AFTER_MS, REJOIN_UNANSWERED_MS, Standing};
use super::state_machine::{Appender, StateMachine};
use super::transport::{self, Lead, Network, NoAnswer, Reply, Rpc, Transport};
use super::types::{NodeId, OpResult, Proposal, ProposalId, TypeConfig};
use crate::lock::{lock, read, write};
use crate::storage::store::Store;

/// Most groups the Maelstrom node spreads its keys over (`--groups`): each
/// is an openraft instance with its own tasks and timers on every node;
/// 64 is far more than a cluster of a few nodes needs to spread its
/// leaders.
pub const GROUPS_MAX: u32 = 64;

/// Most groups running on one node at once (`seglog serve`: one per
/// partition it replicates, and the metadata group). Each is an openraft
/// instance with its own tasks and timers; the design (issue 20) sizes
/// this at a few thousand until idle groups are measured and quiesced.
pub const GROUPS_RUNNING_MAX: usize = 4_096;

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

/// Removed group ids one node remembers, so that [`Groups::add`] refuses
/// them: groups are removed at the rate topics are deleted, so 65,536 (a
/// few hundred KiB) outlasts any process. Past it the lowest id goes first
/// (the oldest, as the metadata group assigns ids from a counter); an id
/// forgotten is then kept out only by the front end's contract that ids
/// are never reused, as after a restart.
pub const REMOVED_REMEMBERED_MAX: usize = 65_536;

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

/// Bytes of a snapshot one InstallSnapshot chunk carries, unless the
/// front end sets its own ([`Groups::with_snapshot_chunk_bytes`]): sized
/// for the Maelstrom node, whose messages are lines of at most 4 MiB.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 256 << 10;

/// A group as a front end asks for it.
#[derive(Clone)]
pub struct GroupSpec {
    /// Its id, unique over the cluster's life: a removed group's late
    /// traffic must never reach a group added after it.
    pub group: u32,
    /// Its voters, the first the node that leads it first. Every one is a
    /// node of the cluster; this node is one of them.
    pub replicas: Vec<NodeId>,
    /// The client keys its state machine holds. Two groups of a node
    /// never share a key: a group's removal deletes its keys, and two
    /// groups writing one key would break its offsets. `add` refuses a
    /// group over a stored key another group holds, and a removal refuses
    /// to delete one; but `Keys` are rules, so keys not stored yet cannot
    /// be compared: the front end keeps them apart.
    pub keys: Keys,
    /// How its state machine applies appends (`Op::Append`), if it takes
    /// any.
    pub appender: Option<Arc<dyn Appender>>,
}

impl std::fmt::Debug for GroupSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSpec")
            .field("group", &self.group)
            .field("replicas", &self.replicas)
            .field("appender", &self.appender.is_some())
            .finish_non_exhaustive()
    }
}

/// A proposal submitted to a group ([`Groups::submit`]): its log index and
/// results once committed and applied here.
pub type Submitted =
    Pin<Box<dyn Future<Output = Result<(u64, Vec<OpResult>), ProposeError>> + Send>>;

/// The groups of one node.
pub struct Groups {
    me: NodeId,
    /// Every node's name (what the groups' memberships show), by id.
    nodes: BTreeMap<NodeId, String>,
    pub transport: Arc<Transport>,
    store: Arc<Mutex<Store>>,
    durability: Arc<dyn Durability>,
    config: Arc<Config>,
    timing: Timing,
    /// The groups running here, by id. Taken before `changing`, never
    /// held across an await.
    running: RwLock<BTreeMap<u32, Arc<Running>>>,
    /// Groups being added or removed: not running yet, or no longer, and
    /// refused another change until this one ends. An entry never outlives
    /// its change, even when the caller goes away mid-way: an add's goes
    /// with its future ([`AddUnderWay`]), and a removal runs to its end in
    /// a task of its own.
    changing: Mutex<BTreeMap<u32, Change>>,
    /// The storage of groups being added, from its opening until the group
    /// runs: [`Groups::retire`] retires it too, so that an instance started
    /// while the groups stop never writes to a store reopened after them.
    starting: Mutex<BTreeMap<u32, Arc<Group>>>,
    /// What a heal in place carries over, by group: taken by each group's
    /// start ([`Groups::start_after`]).
    carried: Mutex<BTreeMap<u32, Proposals>>,
    /// The groups removed here, or whose storage was deleted here, in this
    /// process and the groups it healed from: never added again
    /// ([`Groups::add`] says why). Taken after `changing`; at most
    /// [`REMOVED_REMEMBERED_MAX`].
    removed: Mutex<BTreeSet<u32>>,
    /// The removals left to finish: groups whose log key in the store is
    /// marked `Removed` (cut short before these groups started, found by
    /// [`Groups::new`], or under way or cut short since), and, after a
    /// heal, groups removed here whose log is still stored though the heal
    /// cut their removal short before its mark ([`Groups::start_after`]).
    /// No group is added while one is ([`Groups::add`] says why). Taken
    /// after `changing`.
    marked: Mutex<BTreeSet<u32>>,
    /// The next proposal's sequence number.
    next_proposal: Mutex<u64>,
    /// When these groups started: probes wait [`PROBE_AFTER_MS`] after it
    /// ([`super::standing`]), whenever a group was added.
    started: Instant,
    /// Names these groups' probes ([`Note::Probe`]): random, so distinct
    /// for each process and heal whatever the clock does.
    probing: u64,
    /// Set by [`Groups::shutdown`] and [`Groups::retire`]: no standing is
    /// written after it, no group is added or removed, no stored group
    /// deleted, and a removal under way writes nothing more to the store.
    stopping: AtomicBool,
}

/// A change to one group in progress.
#[derive(Clone, Debug)]
enum Change {
    /// Being added, over these client keys: a removal must not delete
    /// them, nor another add take them.
    Adding(Keys),
    Removing,
}

/// The client keys of the groups running or being added here, by group:
/// read under the `running` and `changing` locks, so before the store's.
fn keys_in_use(
    running: &BTreeMap<u32, Arc<Running>>,
    changing: &BTreeMap<u32, Change>,
) -> Vec<(u32, Keys)> {
    let adding = changing.iter().filter_map(|(&g, change)| match change {
        Change::Adding(keys) => Some((g, keys.clone())),
        Change::Removing => None,
    });
    running
        .iter()
        .map(|(&g, group)| (g, group.keys.clone()))
        .chain(adding)
        .collect()
}

/// The first of `keys` one of the groups `in_use` holds, with that group.
fn shared<'k>(
    keys: impl IntoIterator<Item = &'k String>,
    in_use: &[(u32, Keys)],
) -> Option<(&'k String, u32)> {
    keys.into_iter().find_map(|key| {
        in_use
            .iter()
            .find(|(_, held)| held.holds(key))
            .map(|&(g, _)| (key, g))
    })
}

/// Refuses another change to group `g` while one is under way.
fn unchanging(changing: &BTreeMap<u32, Change>, g: u32) -> Result<(), String> {
    match changing.get(&g) {
        Some(Change::Adding(_)) => Err(format!(
            "group {g} is still starting here: change it once its add returned"
        )),
        Some(Change::Removing) => Err(format!(
            "group {g} is being removed here: change it once its removal ended"
        )),
        None => Ok(()),
    }
}

/// Why group `g`, whose log is marked `Removed`, is not started.
fn cut_short(g: u32) -> String {
    format!(
        "group {g} was being removed here and its removal was cut short: its storage must be deleted (Groups::delete_stored), never started again"
    )
}

/// An add under way: its entry in `changing` and, once its storage is
/// open, in `starting`. If the add's caller goes away at an await (a
/// request cancelled, a `select!`), dropping this ends the add: both
/// entries go, so the id is not refused for good, and the storage is
/// retired, so that an instance half started never writes.
struct AddUnderWay<'a> {
    groups: &'a Groups,
    g: u32,
    /// Set once the add took its entries out itself.
    ended: bool,
}

impl Drop for AddUnderWay<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Retired under the lock `retire` walks this map under, as when an
        // add takes its group out. Taken out before the `changing` entry
        // goes: until then no other add of this id gets past its check,
        // so the entry taken out here is this add's, never the next one's.
        if let Some(group) = lock(&self.groups.starting).remove(&self.g) {
            group.retire();
        }
        lock(&self.groups.changing).remove(&self.g);
    }
}

/// The groups whose log in `store` is marked `Removed`.
fn marked_logs(store: &Mutex<Store>) -> Result<BTreeSet<u32>, String> {
    let mut store = lock(store);
    let failed = |e| format!("finding the removals cut short: {e}");
    let mut marked = BTreeSet::new();
    for g in stored_groups(&store).map_err(failed)? {
        if marked_removed(&mut store, g).map_err(failed)? {
            marked.insert(g);
        }
    }
    Ok(marked)
}

/// The keys, then the commits, of group `g`'s state machine (`keys`) in
/// `store`: what its removal deletes. Refused if one of them is held by a
/// group `in_use` (running or being added here): two groups never share
/// keys, and a removal never deletes a key another group holds.
fn deletable(
    g: u32,
    store: &Store,
    keys: &Keys,
    in_use: &[(u32, Keys)],
) -> Result<(Vec<String>, Vec<String>), String> {
    let commits: Vec<String> = store
        .committed_latest_keys()
        .filter(|key| keys.holds(key))
        .map(str::to_string)
        .collect();
    let held: Vec<String> = store
        .keys()
        .map_err(|e| format!("removing group {g}'s storage: listing the keys: {e}"))?
        .into_iter()
        .filter(|key| keys.holds(key))
        .collect();
    if let Some((key, other)) = shared(held.iter().chain(&commits), in_use) {
        return Err(format!(
            "group {g}'s storage not deleted: its key {key:?} is held by group {other}, which runs here (two groups never share keys); nothing of it was deleted, and nothing is until group {other} is removed"
        ));
    }
    Ok((commits, held))
}

/// One group running here.
struct Running {
    raft: Raft<TypeConfig>,
    /// What its log store and state machine share.
    state: Arc<Group>,
    /// Its voters, the first the node that leads it first.
    replicas: Vec<NodeId>,
    /// The client keys its state machine holds.
    keys: Keys,
    /// How its state machine applies appends.
    appender: Option<Arc<dyn Appender>>,
    /// Set when it is removed: its network calls nobody after it.
    closed: Arc<AtomicBool>,
    /// Whether this node may vote in it ([`super::standing`]), when it last
    /// asked its peers about it, and since when it has been rejoining
    /// without an answer from a leader.
    standing: Mutex<GroupStanding>,
    /// When it last asked its Raft instance for a heartbeat.
    heartbeat_asked: Mutex<Option<Instant>>,
    /// Whether its initialization was started here.
    initialized: AtomicBool,
    /// When it started here: the initialization fallback waits for
    /// [`INIT_FALLBACK`] after it.
    started: Instant,
}

impl Running {
    /// Whether `node` is one of the group's replicas.
    fn has_replica(&self, node: NodeId) -> bool {
        self.replicas.contains(&node)
    }

    /// The group's other replicas.
    fn peers(&self, me: NodeId) -> BTreeSet<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|&id| id != me)
            .collect()
    }

    /// Whether the group has any state here: a vote, an entry, or an
    /// applied entry (a group never initialized here has none).
    fn has_state(&self) -> bool {
        let log = lock(&self.state.log);
        log.vote.is_some() || log.last_log_id().is_some() || log.applied.is_some()
    }

    fn votes(&self) -> bool {
        lock(&self.standing).0.votes()
    }

    fn last_log_id(&self) -> Option<super::types::LogId> {
        lock(&self.state.log).last_log_id()
    }
}

/// A group's standing here, when this node last asked its peers about it,
/// and since when it has been rejoining without a leader's answer.
type GroupStanding = (Standing, Option<Instant>, Option<Instant>);

/// How often [`Groups::propose_at_leader`] tries again while a group has
/// no leader, or its leader refused: about an election's step, so that a
/// proposal waits out an election with a few tries, not hundreds.
pub const FORWARD_RETRY: Duration = Duration::from_millis(50);

/// How long a leader waits for a forwarded proposal to commit before it
/// answers `Unknown`: as long as a forwarder waits at most (the cluster
/// node's `PROPOSE_PATIENCE`). The forwarder has given up by then; what
/// this bounds is how long the call holds its serving slot here.
pub const FORWARDED_PATIENCE: Duration = Duration::from_secs(10);

/// How long a node waits, after its group has no leader and it votes,
/// before it initializes the group although another node should have
/// (that node may never have started).
pub const INIT_FALLBACK: Duration = Duration::from_secs(3);

/// Why a proposal did not take effect, or may not have. Serializable: a
/// forwarded proposal's outcome travels back to the node that forwarded it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// This node is not the group's leader (the leader it knows of, if
    /// any): nothing was appended.
    NotLeader(Option<NodeId>),
    /// The group does not run here (never added, still starting, being
    /// removed, or removed): nothing was appended. Says which.
    NoGroup(String),
    /// Appended here, then lost its place (a new leader's log replaced
    /// it): it may still be committed by another leader.
    Unknown(String),
    /// The group stopped here (its storage failed, or it was removed while
    /// the proposal waited). If a failed write or sync poisoned the store,
    /// the node starts its groups again over the store reopened in place;
    /// a group that stopped otherwise stays stopped until the node
    /// restarts. `appended`: the proposal was in its log, so another node,
    /// or this one after a heal, may still commit it.
    Failed { appended: bool, why: String },
}

impl Groups {
    /// The groups of node `me` of `nodes` (names by id, `me` among them),
    /// on `store`, with none running yet: [`Groups::add`] starts each.
    pub fn new(
        me: NodeId,
        nodes: BTreeMap<NodeId, String>,
        store: Arc<Mutex<Store>>,
        durability: Arc<dyn Durability>,
        timing: Timing,
    ) -> Result<Groups, String> {
        Groups::new_carrying(me, nodes, store, durability, timing, Transport::new(me))
    }

    fn new_carrying(
        me: NodeId,
        nodes: BTreeMap<NodeId, String>,
        store: Arc<Mutex<Store>>,
        durability: Arc<dyn Durability>,
        timing: Timing,
        transport: Arc<Transport>,
    ) -> Result<Groups, String> {
        if !nodes.contains_key(&me) {
            return Err(format!("node {me} is not among the cluster's nodes"));
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
        let marked = marked_logs(&store)?;
        let started_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Ok(Groups {
            me,
            nodes,
            transport,
            store,
            durability,
            config: Arc::new(config),
            timing,
            running: RwLock::new(BTreeMap::new()),
            changing: Mutex::new(BTreeMap::new()),
            starting: Mutex::new(BTreeMap::new()),
            carried: Mutex::new(BTreeMap::new()),
            removed: Mutex::new(BTreeSet::new()),
            marked: Mutex::new(marked),
            next_proposal: Mutex::new(started_us),
            started: Instant::now(),
            probing: getrandom::u64()
                .map_err(|e| format!("drawing the groups' probing id: {e}"))?,
            stopping: AtomicBool::new(false),
        })
    }

    /// Starts node `me`'s groups `specs` of `nodes`, on `store`; if one
    /// fails to start, those started stop again (none may run on without
    /// a node, nor write after a reopen that follows). Refused while a
    /// removal cut short is left in `store` ([`Groups::add`]): a front end
    /// that removes groups starts with [`Groups::new`], finishes those
    /// with [`Groups::delete_stored`], then adds its groups.
    pub async fn start(
        me: NodeId,
        nodes: BTreeMap<NodeId, String>,
        specs: Vec<GroupSpec>,
        store: Arc<Mutex<Store>>,
        durability: Arc<dyn Durability>,
        timing: Timing,
    ) -> Result<Groups, String> {
        let groups = Groups::new(me, nodes, store, durability, timing)?;
        groups.add_all(specs, false).await?;
        Ok(groups)
    }

    /// Adds `specs` one after another (`healed` as for
    /// [`Groups::add_one`]); on a failure, stops those added.
    async fn add_all(&self, specs: Vec<GroupSpec>, healed: bool) -> Result<(), String> {
        for spec in specs {
            if let Err(e) = self.add_one(spec, healed).await {
                self.retire();
                self.shutdown().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The same groups, their snapshots sent in chunks of `bytes` rather
    /// than [`SNAPSHOT_CHUNK_BYTES`]: a front end whose transport carries
    /// larger messages catches an empty replica up in fewer round trips,
    /// one chunk per round trip. Called before any group is added; kept
    /// by [`Groups::start_after`].
    pub fn with_snapshot_chunk_bytes(mut self, bytes: u64) -> Result<Groups, String> {
        if bytes == 0 {
            return Err("a snapshot chunk of 0 bytes would never end a snapshot".into());
        }
        // Each chunk's call waits at least a second per MiB it carries
        // (openraft's 200 ms default is for small chunks; a timeout starts
        // the whole snapshot over, and the last chunk's answer also waits
        // for the install).
        let per_chunk_ms = bytes.div_ceil(1 << 20).saturating_mul(1000);
        let config = Config {
            snapshot_max_chunk_size: bytes,
            install_snapshot_timeout: self.config.install_snapshot_timeout.max(per_chunk_ms),
            ..(*self.config).clone()
        }
        .validate()
        .map_err(|e| format!("the Raft configuration: {e}"))?;
        self.config = Arc::new(config);
        Ok(self)
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
        let groups = Groups::new_carrying(
            previous.me,
            previous.nodes.clone(),
            store,
            durability,
            previous.timing,
            Transport::new_after(&previous.transport),
        )?
        .with_snapshot_chunk_bytes(previous.config.snapshot_max_chunk_size)?;
        let running = read(&previous.running).clone();
        {
            let mut next = lock(&groups.next_proposal);
            *next = (*next).max(*lock(&previous.next_proposal));
        }
        // Copied, not taken: a start that fails leaves them with
        // `previous` for the next attempt.
        *lock(&groups.carried) = running
            .iter()
            .map(|(&g, group)| (g, lock(&group.state.proposals).clone()))
            .collect();
        // Every removal of `previous` is here, `remove` and
        // `delete_stored` alike: each checked `stopping` and recorded its
        // group under one hold of the `running` lock for writing, which
        // `retire` takes (to read) after setting `stopping`, so one that
        // found it unset recorded its group before `retire` returned.
        *lock(&groups.removed) = lock(&previous.removed).clone();
        // A removal the heal cut short before it marked its log left the
        // log unmarked, which `Groups::new`'s scan cannot tell from a
        // group's: it is a removal left to finish all the same, and no
        // group may be added over its keys until `delete_stored` did.
        let stored = {
            let store = lock(&groups.store);
            stored_groups(&store).map_err(|e| format!("finding the groups stored: {e}"))?
        };
        let removed = lock(&groups.removed).clone();
        lock(&groups.marked).extend(stored.into_iter().filter(|g| removed.contains(g)));
        let specs = running
            .iter()
            .map(|(&g, group)| GroupSpec {
                group: g,
                replicas: group.replicas.clone(),
                keys: group.keys.clone(),
                appender: group.appender.clone(),
            })
            .collect();
        groups.add_all(specs, true).await?;
        Ok(groups)
    }

    /// Makes every group's storage refuse all further reads and writes,
    /// before the groups are stopped to reopen the store in place: nothing
    /// of this run may reach the reopened store (openraft may run a queued
    /// apply after its shutdown).
    pub fn retire(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for group in read(&self.running).values() {
            group.state.retire();
        }
        // A group still starting is retired here, or sees `stopping` when
        // it registers (under this lock) or when it would run (under the
        // `running` lock, after it left this map): never missed. A group
        // taken out of `running` or `starting` (removed, or refused) is
        // retired before that lock is released, so none is retired late:
        // when this returns, no group of this run can write.
        for group in lock(&self.starting).values() {
            group.retire();
        }
    }

    /// Checks a group's replicas: at least one, none twice, each a node of
    /// the cluster, this node among them.
    fn check_replicas(&self, g: u32, replicas: &[NodeId]) -> Result<(), String> {
        if replicas.is_empty() {
            return Err(format!("group {g} has no replicas"));
        }
        let unique: BTreeSet<NodeId> = replicas.iter().copied().collect();
        if unique.len() != replicas.len() {
            return Err(format!("group {g} names a replica twice: {replicas:?}"));
        }
        if let Some(unknown) = replicas.iter().find(|id| !self.nodes.contains_key(id)) {
            return Err(format!(
                "replica {unknown} of group {g} is not a node of the cluster"
            ));
        }
        if !unique.contains(&self.me) {
            return Err(format!(
                "this node ({}) is not a replica of group {g} ({replicas:?}): it runs only its own groups",
                self.me
            ));
        }
        Ok(())
    }

    /// Why group `g` does not run here.
    fn absent(&self, g: u32) -> String {
        match lock(&self.changing).get(&g) {
            Some(Change::Adding(_)) => format!("group {g} is still starting here"),
            Some(Change::Removing) => format!("group {g} is being removed here"),
            None if lock(&self.removed).contains(&g) => {
                format!("group {g} does not run here: it was removed")
            }
            None => format!("group {g} does not run here"),
        }
    }

    /// Records that group `g` was removed here; called under the
    /// `changing` lock that marks its removal, before `retire` can stop the
    /// groups, so that [`Groups::start_after`] carries it over.
    fn remember_removed(&self, g: u32) {
        let mut removed = lock(&self.removed);
        if removed.len() >= REMOVED_REMEMBERED_MAX && !removed.contains(&g) {
            removed.pop_first();
        }
        removed.insert(g);
    }

    /// Group `g` if it runs here.
    fn running(&self, g: u32) -> Option<Arc<Running>> {
        read(&self.running).get(&g).cloned()
    }

    /// Starts group `spec.group` here, on the log, vote and state its log
    /// key holds (none if it is new here: then it probes its peers before
    /// it votes, as after a lost disk; [`super::standing`]).
    ///
    /// A group id removed here is refused: while this process (or one it
    /// healed from) remembers removing it, or its log key still holds the
    /// `Removed` mark of a removal cut short. A group started under an old
    /// id could meet what is left of the old group: replicas that have not
    /// removed it yet, with its votes and log entries, and their calls and
    /// notes still under way, which would take the new group's fresh
    /// storage for a disk lost by one of its own replicas and fill it with
    /// the old group's entries. Refusing is the smallest sound rule, since
    /// nothing here can tell an old group's traffic from a new one's; a
    /// group moved away from this node and back would come back under a
    /// new id. After a restart that followed a finished removal nothing of
    /// the id is left here, and only the front end's contract (ids come
    /// from a counter and are never reused, [`GroupSpec::group`]) keeps it
    /// out.
    ///
    /// Also refused while a removal is under way here, and if a stored key
    /// it holds is held by a group running or being added here.
    ///
    /// And refused while a log stored here is marked `Removed` (a removal
    /// cut short, by a crash or a failed write, left the group's keys):
    /// the front end finishes it with [`Groups::delete_stored`] first. A
    /// group added over those keys would take their records for its own,
    /// and the deletion would then delete its keys. Only the front end
    /// knows which keys the removed group held (`Keys` are rules, and
    /// those rules are gone with the group), so whether the new group's
    /// keys hold one of them cannot be told here: every add is refused,
    /// which costs little, as such a removal is rare and one call ends it.
    /// The groups a heal in place starts again ([`Groups::start_after`])
    /// are the exception: they ran beside the removed group, so they hold
    /// none of its keys, and refusing them would stop the heal.
    ///
    /// An add refused after its group opened may leave what it wrote: a
    /// log key whose one record says this node does not vote yet. That is
    /// what an add of a group new here writes first anyway (a later add
    /// finds it and probes before voting, [`super::standing`]), and it
    /// holds no client key; deleting it would take writes a refusal for
    /// stopping groups must not make.
    pub async fn add(&self, spec: GroupSpec) -> Result<(), String> {
        self.add_one(spec, false).await
    }

    /// [`Groups::add`]; `healed`: the group ran in the groups this node
    /// heals from, beside any group whose removal was cut short.
    async fn add_one(&self, spec: GroupSpec, healed: bool) -> Result<(), String> {
        let g = spec.group;
        self.check_replicas(g, &spec.replicas)?;
        // `Keys` are rules, not sets: only the keys stored already can be
        // compared. Two groups never share keys; this catches a front end
        // that breaks that over keys that hold records. Listed before the
        // locks: a key stored after the listing was written by a group
        // running here, and could as well have been right after the add.
        let stored = lock(&self.store)
            .keys()
            .map_err(|e| format!("group {g} not added: listing the keys: {e}"))?;
        let mut under_way = {
            let running = read(&self.running);
            let mut changing = lock(&self.changing);
            self.addable(g, &running, &changing, healed)?;
            let held = stored.iter().filter(|key| spec.keys.holds(key));
            if let Some((key, other)) = shared(held, &keys_in_use(&running, &changing)) {
                return Err(format!(
                    "group {g} not added: its key {key:?} is group {other}'s, and two groups never share keys"
                ));
            }
            changing.insert(g, Change::Adding(spec.keys.clone()));
            AddUnderWay {
                groups: self,
                g,
                ended: false,
            }
        };
        let started = self.start_group(spec).await;
        let refused = {
            let mut running = write(&self.running);
            lock(&self.changing).remove(&g);
            // Held until the group runs or is retired: `retire` walks this
            // map without the `running` lock.
            let mut starting = lock(&self.starting);
            starting.remove(&g);
            under_way.ended = true;
            let group = started?;
            // Checked again under the lock `retire` and `shutdown` walk
            // the running groups under: stopped meanwhile, they never saw
            // this one, which must not run on. Retired before the lock is
            // released, so that `retire` never returns before it is.
            if !self.stopping.load(Ordering::SeqCst) {
                running.insert(g, group);
                return Ok(());
            }
            group.state.retire();
            group.closed.store(true, Ordering::SeqCst);
            group
        };
        let _ = refused.raft.shutdown().await;
        Err(format!(
            "group {g} not added: the groups stopped while it started"
        ))
    }

    /// Refuses to add group `g` (`healed` as for [`Groups::add_one`]) for
    /// any reason but a key another group holds.
    fn addable(
        &self,
        g: u32,
        running: &BTreeMap<u32, Arc<Running>>,
        changing: &BTreeMap<u32, Change>,
        healed: bool,
    ) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(format!("group {g} not added: the groups are stopping"));
        }
        if running.contains_key(&g) {
            return Err(format!("group {g} runs here already"));
        }
        unchanging(changing, g)?;
        if lock(&self.removed).contains(&g) {
            return Err(format!(
                "group {g} was removed here: a removed group's id is never added again (its old replicas may still hold its votes and entries, and their calls and notes may still come)"
            ));
        }
        let adding = changing
            .values()
            .filter(|c| matches!(c, Change::Adding(_)))
            .count();
        if running.len() + adding >= GROUPS_RUNNING_MAX {
            return Err(format!(
                "group {g} not added: {GROUPS_RUNNING_MAX} groups run here already"
            ));
        }
        // A removal checks the keys it deletes against the groups running
        // or being added when it starts: none may come after.
        if let Some(removing) = changing
            .iter()
            .find_map(|(&r, c)| matches!(c, Change::Removing).then_some(r))
        {
            return Err(format!(
                "group {g} not added: group {removing} is being removed here; add it once the removal ended"
            ));
        }
        let marked = lock(&self.marked);
        if marked.contains(&g) {
            return Err(cut_short(g));
        }
        if let Some(m) = marked.first().filter(|_| !healed) {
            return Err(format!(
                "group {g} not added: the removal of group {m} was cut short here and left its keys; finish it with Groups::delete_stored first: a group added now could take those keys' records, which the deletion would then delete"
            ));
        }
        Ok(())
    }

    /// Opens group `spec.group`'s log and starts its Raft instance.
    async fn start_group(&self, spec: GroupSpec) -> Result<Arc<Running>, String> {
        let g = spec.group;
        let group = Group::open(g, Arc::clone(&self.store), Arc::clone(&self.durability))
            .map_err(|e| format!("opening group {g}'s log: {e}"))?;
        if lock(&group.log).removed {
            group.retire();
            return Err(cut_short(g));
        }
        {
            let mut starting = lock(&self.starting);
            if self.stopping.load(Ordering::SeqCst) {
                group.retire();
                return Err(format!("group {g} not added: the groups are stopping"));
            }
            starting.insert(g, Arc::clone(&group));
        }
        if let Some(proposals) = lock(&self.carried).remove(&g) {
            *lock(&group.proposals) = proposals;
        }
        let started = self.start_raft(&spec, &group).await;
        if started.is_err() {
            // Nothing of an instance that did not start may write later.
            group.retire();
        }
        let (raft, standing, closed) = started?;
        Ok(Arc::new(Running {
            raft,
            state: group,
            replicas: spec.replicas,
            keys: spec.keys,
            appender: spec.appender,
            closed,
            standing: Mutex::new((standing, None, None)),
            heartbeat_asked: Mutex::new(None),
            initialized: AtomicBool::new(false),
            started: Instant::now(),
        }))
    }

    /// Starts the Raft instance of `group`, and says whether it votes.
    async fn start_raft(
        &self,
        spec: &GroupSpec,
        group: &Arc<Group>,
    ) -> Result<(Raft<TypeConfig>, Standing, Arc<AtomicBool>), String> {
        let g = spec.group;
        let log_store = LogStore {
            group: Arc::clone(group),
        };
        let state_machine =
            StateMachine::new(Arc::clone(group), spec.keys.clone(), spec.appender.clone());
        let closed = Arc::new(AtomicBool::new(false));
        let network = Network {
            group: g,
            transport: Arc::clone(&self.transport),
            closed: Arc::clone(&closed),
            records: Arc::clone(group),
        };
        let (has_state, rejoining) = {
            let log = lock(&group.log);
            let has_state =
                log.vote.is_some() || log.last_log_id().is_some() || log.applied.is_some();
            (has_state, log.rejoining.is_some())
        };
        let standing = Standing::at_start(has_state && !rejoining);
        if !has_state && !rejoining {
            // Durable before the group writes anything: a restart finds
            // it, and probes again, whatever the group wrote meanwhile.
            group
                .save_standing(false)
                .await
                .map_err(|e| format!("group {g}: {e}"))?;
        }
        let raft = Raft::new(
            self.me,
            Arc::clone(&self.config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| format!("starting group {g}: {e}"))?;
        if !standing.votes() {
            raft.runtime_config().elect(false);
        }
        Ok((raft, standing, closed))
    }

    /// Stops group `g` here and deletes its storage: its log key (log,
    /// vote, applied state, standing) and the keys its state machine holds
    /// with their committed offsets. From the moment it is called, the
    /// group's proposals, calls and notes are refused; proposals waiting
    /// in it fail ([`ProposeError::Failed`]), and the transport drops its
    /// calls. A removal cut short by a crash leaves the log key marked, so
    /// that the group is never started again on what is left; the front end
    /// finishes it with [`Groups::delete_stored`]. The id is never added
    /// again here ([`Groups::add`] says why). Its storage is not deleted
    /// (the group stops all the same) if one of its keys is held by a group
    /// running or being added here. Refused once the groups stop (retire or
    /// shutdown). Once begun, it runs to its end even if the caller goes
    /// away.
    ///
    /// Removal is local to this node: nothing is proposed to the group,
    /// and its other replicas run it on until their own front ends remove
    /// it. To them this node is a replica that stopped answering. Removed
    /// from a minority of its replicas, the group commits on without them;
    /// removed from a majority, it can elect no leader and commit nothing
    /// ever again, and the replicas still running it only keep its storage
    /// until they remove it too: it is stopped for good.
    pub async fn remove(self: &Arc<Self>, g: u32) -> Result<(), String> {
        let group = {
            let mut running = write(&self.running);
            let mut changing = lock(&self.changing);
            if self.stopping.load(Ordering::SeqCst) {
                return Err(format!("group {g} not removed: the groups are stopping"));
            }
            unchanging(&changing, g)?;
            let Some(group) = running.remove(&g) else {
                return Err(format!("group {g} does not run here"));
            };
            changing.insert(g, Change::Removing);
            self.remember_removed(g);
            // Nothing of it writes once retired (checked under the store's
            // lock), not even a command openraft runs after its shutdown;
            // and its network calls nobody once closed. Done before the
            // lock is released, so that `retire`, which reads `running`
            // under it, never returns while the group can still write.
            group.state.retire();
            group.closed.store(true, Ordering::SeqCst);
            group
        };
        self.removal_in_task(g, group.keys.clone(), Some(group.raft.clone()))
            .await
    }

    /// Deletes the storage of group `g`, which does not run here: what a
    /// removal cut short by a crash left (its log key is marked), or a
    /// group that stopped replicating here while the node was down. `keys`
    /// are the keys its state machine held. The id is never added again
    /// here ([`Groups::add`] says why). Refused if one of its keys is held
    /// by a group running or being added here, and once the groups stop
    /// (retire or shutdown): then the groups that run next finish it. Once
    /// begun, it runs to its end even if the caller goes away.
    pub async fn delete_stored(self: &Arc<Self>, g: u32, keys: &Keys) -> Result<(), String> {
        {
            // For writing, though nothing is written to it: see
            // `start_after`, which relies on it.
            let running = write(&self.running);
            let mut changing = lock(&self.changing);
            if self.stopping.load(Ordering::SeqCst) {
                return Err(format!(
                    "group {g}'s storage not deleted: the groups are stopping"
                ));
            }
            if running.contains_key(&g) {
                return Err(format!("group {g} runs here: remove it instead"));
            }
            unchanging(&changing, g)?;
            changing.insert(g, Change::Removing);
            self.remember_removed(g);
        }
        self.removal_in_task(g, keys.clone(), None).await
    }

    /// The rest of group `g`'s removal, once its entry in `changing` is
    /// made: stops its Raft instance (`raft`, if it ran here), deletes its
    /// storage (`keys` the keys its state machine holds), and takes the
    /// entry out. Done in a task of its own that the caller waits for, so
    /// that a removal half done (the group stopped, its storage marked or
    /// partly deleted) finishes even if the caller goes away at an await
    /// (a request cancelled, a `select!`): its entry, which refuses every
    /// add meanwhile, never outlives it.
    async fn removal_in_task(
        self: &Arc<Self>,
        g: u32,
        keys: Keys,
        raft: Option<Raft<TypeConfig>>,
    ) -> Result<(), String> {
        let groups = Arc::clone(self);
        let removal = tokio::spawn(async move {
            let ran = raft.is_some();
            if let Some(raft) = raft {
                let _ = raft.shutdown().await;
                groups.transport.forget_group(g);
            }
            let deleted = groups.delete_storage(g, &keys).await;
            lock(&groups.changing).remove(&g);
            if ran {
                crate::log::info(format_args!("group {g}: removed from this node"));
            }
            deleted
        });
        removal
            .await
            .map_err(|e| format!("removing group {g}'s storage: its task failed: {e}"))?
    }

    /// The store, for the writes of group `g`'s removal; refused once the
    /// groups stop (checked under the store's lock, which a reopen holds),
    /// so that a removal on groups stopped for a heal never deletes
    /// storage under the groups started after them.
    fn store(&self, g: u32) -> Result<MutexGuard<'_, Store>, String> {
        let store = lock(&self.store);
        if self.stopping.load(Ordering::SeqCst) {
            return Err(format!(
                "removing group {g}'s storage: the groups stopped (a heal or a shutdown) and the removal was cut short: the group runs no more, and what is left of its storage is for Groups::delete_stored on the groups that run next"
            ));
        }
        Ok(store)
    }

    /// Deletes group `g`'s storage, which nothing writes any more: first a
    /// `Removed` record in its log key, durable before anything goes (so a
    /// crash never leaves a log that claims state that is gone), then its
    /// keys and their commits, and its log key last.
    async fn delete_storage(&self, g: u32, keys: &Keys) -> Result<(), String> {
        let log = log_key(g);
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            format!("removing group {g}'s storage: {what}: {e}")
        };
        // No group is added while this removal is under way, so no group
        // but these may hold a key it would delete.
        let in_use = {
            let running = read(&self.running);
            let changing = lock(&self.changing);
            keys_in_use(&running, &changing)
        };
        {
            // Refused before the mark, so that a refusal leaves the group's
            // storage as it was; checked again where the keys go, as a
            // running group may have written a key since.
            let store = self.store(g)?;
            deletable(g, &store, keys, &in_use)?;
        }
        // Recorded before the mark is written, as a failed append may
        // still have stored it: while recorded, no group is added.
        lock(&self.marked).insert(g);
        self.store(g)?
            .append(&log, &Record::Removed.encode())
            .map_err(|e| failed("marking its log removed", &e))?;
        // The sync point that makes the mark durable publishes its records
        // (and the group's last ones) only after telling its waiters, and a
        // key is removed only once nothing of it waits to be published: the
        // next sync point comes after that.
        for _ in 0..2 {
            synced(&*self.durability)
                .await
                .map_err(|e| failed("a sync point", &e))?;
        }
        let held: Vec<String> = {
            let mut store = self.store(g)?;
            let (commits, held) = deletable(g, &store, keys, &in_use)?;
            for key in commits {
                store
                    .change_committed(&key, None)
                    .map_err(|e| failed(&format!("the commit of {key:?}"), &e))?;
            }
            held
        };
        // One key at a time, the store's lock let go between: each removal
        // fdatasyncs the journal and fsyncs logs/ twice (a group of 1,000
        // keys held the lock for 0.9 s in one go, about an election timeout
        // of the other groups, whose appends and sync points wait for it).
        // Nothing else writes these keys (the group is retired, no group
        // holding one of them runs, checked above, and none is added while
        // a removal is under way), and a removal stopped between two leaves
        // the marked log to finish.
        for key in held {
            self.store(g)?
                .remove_key(&key)
                .map_err(|e| failed(&format!("key {key:?}"), &e))?;
            tokio::task::yield_now().await;
        }
        // The commits' removal is durable before the mark goes.
        synced(&*self.durability)
            .await
            .map_err(|e| failed("a sync point", &e))?;
        self.store(g)?
            .remove_key(&log)
            .map_err(|e| failed("its log key", &e))?;
        lock(&self.marked).remove(&g);
        Ok(())
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Every node's name, by id.
    pub fn nodes(&self) -> &BTreeMap<NodeId, String> {
        &self.nodes
    }

    /// Every node's id.
    pub fn node_ids(&self) -> BTreeSet<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The groups running here, in order.
    pub fn ids(&self) -> Vec<u32> {
        read(&self.running).keys().copied().collect()
    }

    /// Group `g`'s replicas, the first the node that leads it first, if it
    /// runs here.
    pub fn replicas(&self, g: u32) -> Option<Vec<NodeId>> {
        Some(self.running(g)?.replicas.clone())
    }

    /// Group `g`'s Raft instance.
    pub fn raft(&self, g: u32) -> Option<Raft<TypeConfig>> {
        Some(self.running(g)?.raft.clone())
    }

    /// The node group `g` leads first.
    pub fn preferred_leader(&self, g: u32) -> Option<NodeId> {
        self.running(g)?.replicas.first().copied()
    }

    /// Group `g`'s state shared by its log and state machine.
    pub fn group_state(&self, g: u32) -> Option<Arc<Group>> {
        Some(Arc::clone(&self.running(g)?.state))
    }

    /// The leader of group `g` as this node knows it.
    /// Waits at most `patience` until this node has applied group `g`'s
    /// log up to `index`: what it then reads of the group's state includes
    /// that entry. Whether it did.
    pub async fn wait_applied(&self, g: u32, index: u64, patience: Duration) -> bool {
        let Some(running) = self.running(g) else {
            return false;
        };
        running
            .raft
            .wait(Some(patience))
            .applied_index_at_least(Some(index), "a proposal applied here")
            .await
            .is_ok()
    }

    /// Whether this node leads group `g` and has applied every entry of
    /// its log: a read of its state machine then sees everything the group
    /// committed. (A leader newly elected, or one with entries in flight,
    /// may hold committed entries not applied yet.)
    pub fn leads_applied(&self, g: u32) -> Option<bool> {
        let running = self.running(g)?;
        let metrics = running.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.current_leader != Some(self.me) {
            return None;
        }
        Some(metrics.last_applied.map(|id| id.index) >= metrics.last_log_index)
    }

    pub fn leader(&self, g: u32) -> Option<NodeId> {
        self.running(g)?.raft.metrics().borrow().current_leader
    }

    /// The groups this node leads now, each with its term, its last log
    /// index and how far each follower is known to have matched it.
    pub fn leads(&self) -> Vec<Lead> {
        read(&self.running)
            .iter()
            .filter_map(|(&g, group)| {
                let watched = group.raft.metrics();
                let metrics = watched.borrow();
                if metrics.current_leader != Some(self.me) {
                    return None;
                }
                let matched = metrics
                    .replication
                    .iter()
                    .flatten()
                    .filter_map(|(&node, log_id)| Some((node, log_id.as_ref()?.index)))
                    .collect();
                Some(Lead {
                    group: g,
                    term: metrics.current_term,
                    last: metrics.last_log_index.unwrap_or(0),
                    matched,
                })
            })
            .collect()
    }

    /// Group `g`'s current term here.
    pub fn term(&self, g: u32) -> u64 {
        self.running(g)
            .map_or(0, |group| group.raft.metrics().borrow().current_term)
    }

    /// The term of the last entry group `g` applied here.
    pub fn applied_term(&self, g: u32) -> u64 {
        self.running(g).map_or(0, |group| {
            group
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |id| id.leader_id.term)
        })
    }

    /// The index of the last entry group `g` applied here.
    pub fn applied(&self, g: u32) -> Option<u64> {
        self.running(g)?
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|id| id.index)
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
    ) -> Result<(u64, Vec<OpResult>), ProposeError> {
        let Some(group) = self.running(g) else {
            return Err(ProposeError::NoGroup(self.absent(g)));
        };
        let id = proposal.id;
        let appended = || lock(&group.state.proposals).was_appended(id);
        match group.raft.client_write(proposal).await {
            Ok(response) => Ok((response.log_id.index, response.data.results)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                if appended() {
                    Err(ProposeError::Unknown(format!(
                        "the entry lost its place in group {g}'s log; another leader may commit it"
                    )))
                } else {
                    Err(ProposeError::NotLeader(forward.leader_id))
                }
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Unknown(format!("group {g}: {e}"))),
            Err(RaftError::Fatal(e)) if group.closed.load(Ordering::SeqCst) => {
                Err(ProposeError::Failed {
                    appended: appended(),
                    why: format!("group {g} was removed here while the proposal waited ({e})"),
                })
            }
            Err(RaftError::Fatal(e)) => Err(ProposeError::Failed {
                appended: appended(),
                why: format!("group {g} stopped: {e}"),
            }),
        }
    }

    /// [`Groups::propose`], started before this returns: openraft 0.9's
    /// `client_write` hands the proposal to the group's core (an unbounded
    /// channel's send) in its first poll, which this makes, so proposals
    /// submitted one after another enter the log in that order when this
    /// node leads the group, whenever their futures are awaited. That is
    /// what keeps a Kafka connection's pipelined batches in the order it
    /// sent them (`submitted_proposals_enter_the_log_in_order` checks the
    /// openraft behaviour this relies on).
    pub fn submit(self: &Arc<Self>, g: u32, proposal: Proposal) -> Submitted {
        let groups = Arc::clone(self);
        let mut proposed = Box::pin(async move { groups.propose(g, proposal).await });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match proposed.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(outcome) => Box::pin(std::future::ready(outcome)),
            std::task::Poll::Pending => proposed,
        }
    }

    /// Proposes `proposal` to group `g` at its leader: here if this node
    /// leads it, else forwarded to the leader this node knows of, over the
    /// groups' transport. While the group has no leader, or leadership
    /// moves before the proposal is appended, it tries again every
    /// [`FORWARD_RETRY`] until `patience` has passed, then fails with the
    /// last refusal (`NotLeader`: nothing was appended). A forward that gets
    /// no answer in time, or a proposal here not committed in time, ends as
    /// [`ProposeError::Unknown`]: the leader may have appended it (and may
    /// still commit it), so it is never sent twice.
    pub async fn propose_at_leader(
        &self,
        g: u32,
        proposal: Proposal,
        patience: Duration,
    ) -> Result<(u64, Vec<OpResult>), ProposeError> {
        self.propose_at(g, proposal, patience, &|| None).await
    }

    /// [`Groups::propose_at_leader`], for a group that need not run here:
    /// where this node knows no leader of it, `reported` may name one
    /// (what the leader told its peers; `cluster::leads`).
    pub async fn propose_at(
        &self,
        g: u32,
        proposal: Proposal,
        patience: Duration,
        reported: &(dyn Fn() -> Option<NodeId> + Sync),
    ) -> Result<(u64, Vec<OpResult>), ProposeError> {
        let deadline = Instant::now() + patience;
        loop {
            let attempt = match self.leader(g).or_else(reported) {
                Some(leader) if leader == self.me => {
                    // A leader cut off from its majority may not learn so
                    // for as long as the cut lasts: its proposal waits.
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    tokio::time::timeout(remaining, self.propose(g, proposal.clone()))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ProposeError::Unknown(format!(
                                "group {g} did not commit the proposal within {patience:?} \
                                 (this node, its leader, may be cut off from its majority)"
                            )))
                        })
                }
                Some(leader) => self.forward(leader, g, proposal.clone(), deadline).await,
                None => Err(ProposeError::NotLeader(None)),
            };
            match attempt {
                Err(ProposeError::NotLeader(_)) if Instant::now() + FORWARD_RETRY < deadline => {
                    tokio::time::sleep(FORWARD_RETRY).await;
                }
                other => return other,
            }
        }
    }

    /// Sends `proposal` to `leader` and waits until `deadline` for what
    /// proposing it there came to. Group `g` need not run here.
    async fn forward(
        &self,
        leader: NodeId,
        g: u32,
        proposal: Proposal,
        deadline: Instant,
    ) -> Result<(u64, Vec<OpResult>), ProposeError> {
        if let Some(why) = self.transport.calls_closed() {
            return Err(ProposeError::NoGroup(why));
        }
        let closed = match self.running(g) {
            Some(group) => Arc::clone(&group.closed),
            None => Arc::new(AtomicBool::new(false)),
        };
        let ttl = deadline.saturating_duration_since(Instant::now());
        let asked = self
            .transport
            .ask(leader, g, Rpc::Propose(proposal), &closed, ttl)
            .await;
        match asked {
            Ok(Reply::Proposed(outcome)) => outcome,
            Ok(_) => Err(ProposeError::Unknown(format!(
                "node {leader} answered a forwarded proposal with a reply of another kind"
            ))),
            // Closed here after it was sent: node `leader` may have it.
            Err(NoAnswer::Unreachable(why)) if self.transport.calls_closed().is_some() => {
                Err(ProposeError::Unknown(why))
            }
            // Not sent, or not handed to a Raft instance there: try again.
            Err(NoAnswer::Unreachable(why)) => {
                crate::log::debug(format_args!(
                    "group {g}: a proposal forwarded to node {leader} was not taken: {why}"
                ));
                Err(ProposeError::NotLeader(None))
            }
            Err(NoAnswer::Timeout(ttl)) => Err(ProposeError::Unknown(format!(
                "node {leader}, which led group {g}, did not answer a forwarded proposal \
                 within {ttl:?}"
            ))),
        }
    }

    /// Proposes here a proposal `from` forwarded: any node of the cluster
    /// may forward one, replica of the group or not.
    async fn serve_forwarded(&self, from: NodeId, g: u32, proposal: Proposal) -> Reply {
        if !self.nodes.contains_key(&from) {
            return Reply::Unavailable(format!("node {from} is not a node of the cluster"));
        }
        // The forwarder waits at most its own patience; a leader cut off
        // from its majority would keep this call, and its serving slot,
        // for as long as the cut lasts.
        let proposed = tokio::time::timeout(FORWARDED_PATIENCE, self.propose(g, proposal)).await;
        Reply::Proposed(proposed.unwrap_or_else(|_| {
            Err(ProposeError::Unknown(format!(
                "group {g} did not commit a forwarded proposal within {FORWARDED_PATIENCE:?} \
                 (node {}, its leader, may be cut off from its majority)",
                self.me
            )))
        }))
    }

    /// Whether a proposal was appended to group `g`'s log here.
    pub fn was_appended(&self, g: u32, id: ProposalId) -> bool {
        self.running(g)
            .is_some_and(|group| lock(&group.state.proposals).was_appended(id))
    }

    /// The entry index and results of a proposal applied here.
    pub fn outcome(&self, g: u32, id: ProposalId) -> Option<(u64, Vec<OpResult>)> {
        lock(&self.running(g)?.state.proposals).outcome(id)
    }

    /// Whether this node votes in group `g` ([`super::standing`]).
    pub fn votes(&self, g: u32) -> bool {
        self.running(g).is_some_and(|group| group.votes())
    }

    /// Hands `from`'s call to this node's instance of its group. Refused
    /// (the caller counts this node as one it could not reach) when the
    /// group does not run here, when `from` is not one of its replicas,
    /// and a vote while this node may not vote there.
    pub async fn serve(&self, from: NodeId, g: u32, rpc: Rpc) -> Reply {
        if let Rpc::Propose(proposal) = rpc {
            return self.serve_forwarded(from, g, proposal).await;
        }
        if matches!(rpc, Rpc::Relay { .. }) {
            return Reply::Unavailable("a relayed request is not the groups' to serve".into());
        }
        let Some(group) = self.running(g) else {
            return Reply::Unavailable(self.absent(g));
        };
        if !group.has_replica(from) {
            return Reply::Unavailable(format!("node {from} is not a replica of group {g}"));
        }
        if matches!(rpc, Rpc::Vote(_)) && !group.votes() {
            return Reply::Unavailable(format!("rejoining group {g}: votes nowhere yet"));
        }
        let leader_term = match &rpc {
            Rpc::Append(request) => Some(request.vote.leader_id().term),
            Rpc::Snapshot(request) => Some(request.vote.leader_id().term),
            Rpc::Vote(_) | Rpc::Propose(_) | Rpc::Relay { .. } => None,
        };
        if let Some(term) = leader_term
            && !lock(&group.standing).0.follows(term)
        {
            return Reply::Unavailable(format!(
                "rejoining group {g}: follows no leader of term {term} yet"
            ));
        }
        transport::serve(&group.raft, rpc).await
    }

    /// A peer's note about standing. Ignored for a group that does not run
    /// here, and from a peer that is not one of its replicas.
    pub fn on_note(&self, peer: NodeId, note: Note) {
        let g = note.group();
        let Some(group) = self.running(g) else {
            return;
        };
        if !group.has_replica(peer) {
            return;
        }
        match note {
            Note::Probe { probing, .. } => {
                let pristine = lock(&group.standing).0.pristine(group.last_log_id());
                let term = lock(&group.state.log)
                    .vote
                    .map_or(0, |(_, vote)| vote.leader_id().term);
                self.transport.note(
                    peer,
                    Note::Known {
                        group: g,
                        probing,
                        pristine,
                        term,
                    },
                    &group.closed,
                );
            }
            Note::Known {
                probing,
                pristine,
                term,
                ..
            } => {
                // An answer to a probe of a previous process of this node
                // (or of the groups before a heal) is stale: it may predate
                // the end of an election that counted this node's vote.
                if probing != self.probing {
                    return;
                }
                lock(&group.standing).0.known(peer, pristine, term);
            }
            Note::Rejoin { .. } => {
                if group.raft.metrics().borrow().current_leader == Some(self.me)
                    && let Some(upto) = group.last_log_id()
                {
                    crate::log::info(format_args!(
                        "group {g}: node {peer} rejoins; it votes again once it holds entry {upto}"
                    ));
                    self.transport
                        .note(peer, Note::Readmit { group: g, upto }, &group.closed);
                }
            }
            Note::Readmit { upto, .. } => lock(&group.standing).0.readmit(upto),
        }
    }

    /// Group `g` may now vote here: the switch is made durable (with the
    /// log it caught up on), then elections go on, and the group is
    /// initialized here if this node leads it first and it is new.
    fn admit(self: &Arc<Self>, g: u32) {
        let groups = Arc::clone(self);
        tokio::spawn(async move {
            let Some(group) = groups.running(g) else {
                return;
            };
            if groups.stopping.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = group.state.save_standing(true).await {
                crate::log::warn(format_args!(
                    "group {g}: recording that this node votes: {e}"
                ));
                return;
            }
            lock(&group.standing).0.admitted();
            crate::log::info(format_args!("group {g}: this node votes"));
            group.raft.runtime_config().elect(true);
            if group.replicas.first() == Some(&groups.me) && !group.has_state() {
                initialize_in_task(g, &group, &groups.nodes);
            }
        });
    }

    /// What the groups do every tick: ask about standing, heartbeats where
    /// replication is idle, and initialize groups still without a leader
    /// long after they started.
    pub fn tick(self: &Arc<Self>, now: Instant) {
        let running: Vec<(u32, Arc<Running>)> = read(&self.running)
            .iter()
            .map(|(&g, group)| (g, Arc::clone(group)))
            .collect();
        for (g, group) in running {
            self.ask_standing(g, &group, now);
            self.heartbeat_idle(g, &group, now);
            if now.duration_since(group.started) >= INIT_FALLBACK
                && group.votes()
                && group.raft.metrics().borrow().current_leader.is_none()
                && !group.has_state()
            {
                initialize_in_task(g, &group, &self.nodes);
            }
        }
    }

    /// Probes and rejoin requests of group `g` to its other replicas, every
    /// [`ASK_EVERY_MS`] (probes only from [`PROBE_AFTER_MS`] after the
    /// groups started); and what their answers allow.
    fn ask_standing(self: &Arc<Self>, g: u32, group: &Running, now: Instant) {
        let every = Duration::from_millis(ASK_EVERY_MS);
        let probing_allowed =
            now.saturating_duration_since(self.started) >= Duration::from_millis(PROBE_AFTER_MS);
        let peers = group.peers(self.me);
        let last = group.last_log_id();
        let mut standing = lock(&group.standing);
        let (group_standing, asked, unanswered) = &mut *standing;
        if group_standing.votes() || *group_standing == Standing::Admitting {
            return;
        }
        // A floor that no leader reaches (it came from a peer that has
        // since gone) would keep this node rejoining for good: it probes
        // afresh instead; a new sample is as sound as the old.
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
        group_standing.sent_history(last);
        if group_standing.settle(&peers, group.replicas.len()) || group_standing.caught_up(last) {
            drop(standing);
            self.admit(g);
            return;
        }
        if asked.is_some_and(|at| now.duration_since(at) < every) {
            return;
        }
        let note = match group_standing {
            Standing::Probing { .. } if probing_allowed => Note::Probe {
                group: g,
                probing: self.probing,
            },
            Standing::Rejoining { .. } => Note::Rejoin { group: g },
            _ => return,
        };
        *asked = Some(now);
        drop(standing);
        for &peer in &peers {
            self.transport.note(peer, note.clone(), &group.closed);
        }
    }

    /// Asks group `g`, if this node leads it, for a heartbeat where some
    /// follower has had no AppendEntries for a heartbeat interval (a
    /// follower hearing nothing for an election timeout starts an
    /// election). Called every tick.
    fn heartbeat_idle(&self, g: u32, group: &Running, now: Instant) {
        let interval = Duration::from_millis(self.timing.heartbeat_ms);
        if group.raft.metrics().borrow().current_leader != Some(self.me) {
            return;
        }
        let mut asked = lock(&group.heartbeat_asked);
        if asked.is_some_and(|at| now.duration_since(at) < interval / 2) {
            return;
        }
        let idle = group.peers(self.me).into_iter().any(|peer| {
            self.transport
                .last_append(g, peer)
                .is_none_or(|at| now.duration_since(at) >= interval)
        });
        if idle {
            *asked = Some(now);
            let raft = group.raft.clone();
            tokio::spawn(async move {
                let _ = raft.trigger().heartbeat().await;
            });
        }
    }

    /// Stops every group.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let rafts: Vec<Raft<TypeConfig>> = read(&self.running)
            .values()
            .map(|group| group.raft.clone())
            .collect();
        for raft in rafts {
            let _ = raft.shutdown().await;
        }
    }
}

/// Initializes group `g` in a task of its own, once per process, with its
/// replicas as voters.
fn initialize_in_task(g: u32, group: &Running, nodes: &BTreeMap<NodeId, String>) {
    if group.initialized.swap(true, Ordering::SeqCst) {
        return;
    }
    let members: BTreeMap<NodeId, BasicNode> = group
        .replicas
        .iter()
        .map(|id| {
            let name = nodes.get(id).map_or("", String::as_str);
            (*id, BasicNode::new(name))
        })
        .collect();
    let raft = group.raft.clone();
    tokio::spawn(async move {
        if let Err(e) = raft.initialize(members).await {
            crate::log::info(format_args!("initializing group {g}: {e}"));
        }
        let _ = raft.trigger().elect().await;
    });
}
