//! A node of `seglog serve --peers`: its Raft groups over the broker's
//! store and group commit, its peer links and the runtime that joins them,
//! and the cluster's metadata, folded from group 0's log and handed to the
//! broker as its catalog after each change.
//!
//! At start the node runs group 0 (every node a replica, the lowest id its
//! first leader), folds what its store holds of the metadata log already
//! (so a restarted node lists its topics at once), and registers its
//! addresses ([`MetaOp::RegisterNode`]) until the group takes them. A
//! follower task folds the log again after every sync point of the
//! broker's group commit (a record is folded once durable here) and
//! replaces the broker's catalog when something changed.
//!
//! A change (a topic created or deleted) is proposed to group 0 at its
//! leader, forwarded there over the links if this node does not lead it
//! ([`Groups::propose_at_leader`]), and answered once this node has folded
//! the record: the verdict the fold gave it, the same on every node, and a
//! catalog that already shows it.
//!
//! HTTP produce goes through the partition's Raft group at its leader
//! ([`ClusterNode`]'s `append`); the other writes to partitions (Kafka
//! produce, offset commits, record deletions) are refused until they do
//! too ([`cluster::Cluster::refuses_writes`]).
//!
//! The data directory remembers whose it is ([`claim_dir`]): a node's
//! directory is never started as another node's, nor as a single node's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::frame::FRAME_BYTES_MAX;
use super::leads::{Leads, Reported};
use super::link::Links;
use super::metadata::{
    self, METADATA_GROUP, MetaOp, Metadata, NodeInfo, PartitionOf, Refusal, TopicConfig, Verdict,
};
use super::partition;
use super::peers::Cluster;
use super::runtime::Runtime;
use super::secret::Secret;
use crate::broker::catalog::{
    CATALOG_FILE_NAME, Catalog, KeyOwner, NewTopic, Topic, check_name, partition_key,
};
use crate::broker::cluster::{
    self, Member, OffsetChange, Pending, Placement, Produced, RelayKind, Relayer, RequestHead,
    ResponseHead,
};
use crate::broker::producers::Sequenced;
use crate::broker::time::now_ms;
use crate::broker::{Broker, Error, Result, Written};
use crate::broker::{producers, topics};
use crate::lock::lock;
use crate::log;
use crate::raft::durability::{Done, Durability, synced};
use crate::raft::groups::{FORWARDED_PATIENCE, GroupSpec, Groups, ProposeError, TIMING_DEFAULT};
use crate::raft::log::stored_groups;
use crate::raft::snapshot::{Keys, is_reserved};
use crate::raft::transport::{NoAnswer, Reply, Rpc};
use crate::raft::types::{Bytes64, NodeId, Op, OpResult, Proposal};
use crate::storage::format::MESSAGE_BYTES_MAX;
use crate::storage::store::Store;

/// How long a change waits for group 0 to take it: several elections'
/// worth (an election takes about a second), so a change made while the
/// leader is replaced waits it out rather than failing. The leader serving
/// a forwarded one waits as long ([`FORWARDED_PATIENCE`]).
pub const PROPOSE_PATIENCE: Duration = FORWARDED_PATIENCE;

/// How long a change committed by group 0 waits for this node to fold it
/// (its record must be durable here first: a sync point or two).
pub const FOLD_PATIENCE: Duration = Duration::from_secs(10);

/// How often the follower folds when no sync point wakes it: a record
/// replicated here becomes durable with a sync point, which wakes it, so
/// this only bounds how late a missed wake-up is seen.
pub const FOLLOW_IDLE: Duration = Duration::from_millis(100);

/// Verdicts kept for the proposers that wait for theirs: a proposer looks
/// for its own within a sync point or two of the fold, and far fewer
/// changes than this are folded meanwhile.
pub const VERDICTS_KEPT: usize = 4096;

/// How long the registration waits between tries while group 0 has no
/// leader.
pub const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// Bytes one proposal to a partition's group gives its records at most, as
/// its Raft entry carries them (each a base64 JSON string,
/// [`partition::entry_bytes`]): an entry is one record of the store (at
/// most `MESSAGE_BYTES_MAX`, 1 MiB), which also holds the entry's log id,
/// proposal id and key, given the 64 KiB left. An HTTP request with more
/// is proposed in several; a Kafka batch with more is refused. The largest
/// record of a cluster's topic is about three quarters of this (720 KiB).
/// An AppendEntries of `ENTRIES_PER_APPEND_MAX` (16) entries stays within
/// half a peer frame (32 MiB).
pub const PROPOSAL_BYTES_MAX: usize = MESSAGE_BYTES_MAX - (64 << 10);

/// Bytes of a snapshot one InstallSnapshot chunk carries between nodes
/// (the Maelstrom node's `SNAPSHOT_CHUNK_BYTES`, 256 KiB, is sized for its
/// 4 MiB lines). A node restarted with an empty directory is caught up by
/// its groups' snapshots, one chunk per round trip of the peer link (a
/// tick or two each way) in each group, so the chunk sets the catch-up
/// speed: 4 MiB a round trip is the 100 MB/s the design asks for (10 s
/// per GB). A chunk travels as base64 (`raft::types::snapshot_chunk`), a
/// third larger, so four groups' chunks with their envelopes fit one
/// peer frame (a batch that holds more is sent as several,
/// `frame::batch_frames`).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;
const _: () = assert!(4 * SNAPSHOT_CHUNK_BYTES as usize / 3 + (1 << 20) <= FRAME_BYTES_MAX / 4);

/// Producer ids a node takes from the cluster's metadata at a time
/// (Kafka's `AllocateProducerIds` hands out blocks of 1,000 too): one
/// metadata record per thousand producers; a restart forgets the rest of
/// its block, which the 2^63 ids can afford.
pub const PRODUCER_IDS_BLOCK: u64 = 1_000;

/// How long the reconciler waits before trying again to add or remove a
/// partition group that failed (a removal still under way, a store
/// error), when no new fold wakes it first.
pub const RECONCILE_RETRY: Duration = Duration::from_secs(1);

/// A topic's replication factor when none is asked for: Kafka's usual 3,
/// or every node of a smaller cluster.
pub const REPLICATION_FACTOR_DEFAULT: u32 = 3;

/// The file of the data directory that says whose it is.
pub const IDENTITY_FILE_NAME: &str = "cluster.json";

/// The version of [`IDENTITY_FILE_NAME`] this build writes and reads.
const IDENTITY_VERSION: u32 = 1;

/// Whose a data directory is.
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
struct Identity {
    version: u32,
    cluster_id: String,
    node_id: NodeId,
}

/// Claims `dir` for node `cluster.me` of cluster `cluster.id`: written at
/// the first start (durably), checked at every later one. Refused when it
/// belongs to another node or cluster, or holds a single node's topics: a
/// directory carries one node's logs, and those of a single node would
/// be taken for the cluster's.
pub fn claim_dir(dir: &Path, cluster: &Cluster) -> std::result::Result<(), String> {
    let ours = Identity {
        version: IDENTITY_VERSION,
        cluster_id: cluster.id.clone(),
        node_id: cluster.me,
    };
    match read_identity(dir)? {
        Some(found) if found == ours => Ok(()),
        Some(found) => Err(format!(
            "{} belongs to node {} of cluster {:?}, not node {} of cluster {:?}: start each \
             node on its own directory",
            dir.display(),
            found.node_id,
            found.cluster_id,
            ours.node_id,
            ours.cluster_id
        )),
        None => {
            let single = Catalog::open(dir)?;
            if !single.is_empty() {
                return Err(format!(
                    "{} holds the topics of a single node ({}); a node of a cluster starts on \
                     an empty directory",
                    dir.display(),
                    CATALOG_FILE_NAME
                ));
            }
            let mut bytes = serde_json::to_vec_pretty(&ours)
                .map_err(|e| format!("encoding {IDENTITY_FILE_NAME}: {e}"))?;
            bytes.push(b'\n');
            crate::storage::fsutil::rewrite_atomic(
                &crate::storage::backend::RealFs,
                &dir.join(IDENTITY_FILE_NAME),
                &bytes,
            )
            .map_err(|e| format!("cannot write {IDENTITY_FILE_NAME}: {e}"))
        }
    }
}

/// Refuses to start a node's directory as a single node: its topics live
/// in the cluster's metadata, which a single node would not follow.
pub fn check_single_dir(dir: &Path) -> std::result::Result<(), String> {
    match read_identity(dir)? {
        None => Ok(()),
        Some(found) => Err(format!(
            "{} belongs to node {} of cluster {:?}: start it with --node-id {} and the \
             cluster's --peers, --cluster-id and --cluster-secret-file",
            dir.display(),
            found.node_id,
            found.cluster_id,
            found.node_id
        )),
    }
}

fn read_identity(dir: &Path) -> std::result::Result<Option<Identity>, String> {
    let path = dir.join(IDENTITY_FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let identity: Identity = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a node's identity: {e}", path.display()))?;
    if identity.version != IDENTITY_VERSION {
        return Err(format!(
            "{} has version {}; this seglog reads version {IDENTITY_VERSION}",
            path.display(),
            identity.version
        ));
    }
    Ok(Some(identity))
}

/// The addresses a node registers: where clients and peers reach it.
#[derive(Clone, Debug)]
pub struct Addresses {
    pub http: String,
    pub kafka: Option<String>,
    pub peer: String,
}

/// The broker's group commit as the groups' durability. Weak: the broker
/// holds the node, which holds the groups.
struct BrokerSync(Weak<Broker>);

impl Durability for BrokerSync {
    fn after_sync(&self, done: Done) {
        match self.0.upgrade() {
            Some(broker) => broker.after_sync(done),
            None => done(Err(Arc::new(crate::storage::error::Error::Busy(
                "the broker has stopped".into(),
            )))),
        }
    }
}

/// How far the fold got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    /// The offset of the next record to fold.
    next: u64,
    /// Whether the fold has stopped (a newer record, a gap): it goes no
    /// further until its cause is gone.
    stopped: bool,
}

/// The metadata as folded here, with the latest verdicts.
struct Folded {
    metadata: Metadata,
    /// The latest verdicts by offset, oldest first.
    verdicts: VecDeque<(u64, Verdict)>,
    /// Why the fold stopped, while it does.
    stopped: Option<String>,
}

/// A running node of a cluster.
pub struct ClusterNode {
    cluster: Cluster,
    addresses: Addresses,
    groups: Arc<Groups>,
    broker: Weak<Broker>,
    folded: Mutex<Folded>,
    /// How far the fold got here: what proposers and the reconciler wait on.
    progress: watch::Sender<Progress>,
    /// `None` once shut down.
    runtime: Mutex<Option<Runtime>>,
    /// What peers report leading (the runtime's).
    leads: Arc<Leads>,
    /// The follower and the registration.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The producer ids this node has yet to hand out, of the last block
    /// the metadata gave it.
    producer_ids: tokio::sync::Mutex<std::ops::Range<u64>>,
    /// Held while one Kafka batch's proposals are submitted, so that no
    /// other batch's come between them.
    submitting: Mutex<()>,
    /// Turns of the partition states this node asks of others at once
    /// ([`RELAYED_STATES_AT_ONCE`]), whichever requests ask them.
    relaying_states: Arc<tokio::sync::Semaphore>,
}

/// Partition states this node asks of other nodes at once, over every
/// request it serves (a topic's description and groups' lags ask one per
/// partition held elsewhere): half the room a node keeps for serving them
/// (`runtime::RELAYED_STATES_SERVING_MAX`), so that two nodes asking at
/// full speed fit in it, and a client that loops over descriptions costs
/// a replica at most this many at once from one node.
pub const RELAYED_STATES_AT_ONCE: usize = 8;

impl ClusterNode {
    /// Starts node `cluster.me` over `broker`'s store: its groups, its
    /// links (listening on its own `--peers` entry), the runtime, the
    /// follower and the registration of `addresses`; then makes the broker
    /// a node of it. Must be called within a tokio runtime.
    pub async fn start(
        cluster: Cluster,
        secret: Secret,
        broker: &Arc<Broker>,
        addresses: Addresses,
    ) -> std::result::Result<Arc<ClusterNode>, String> {
        let me = cluster.me;
        let listener = tokio::net::TcpListener::bind(&addresses.peer)
            .await
            .map_err(|e| format!("cannot listen for peers on {}: {e}", addresses.peer))?;
        let durability = Arc::new(BrokerSync(Arc::downgrade(broker)));
        let nodes = cluster.membership.nodes().clone();
        let groups = Groups::new(
            me,
            nodes.clone(),
            broker.shared_store(),
            durability,
            TIMING_DEFAULT,
        )?
        .with_snapshot_chunk_bytes(SNAPSHOT_CHUNK_BYTES)?;
        let groups = Arc::new(groups);
        // What this node folded before it stopped: the topics whose groups
        // it ran, so what it holds of others is a crash's leftovers.
        let metadata = fold_stored(&mut broker.store())?;
        finish_removals(&groups, &metadata, &broker.shared_store()).await?;
        groups
            .add(GroupSpec {
                group: METADATA_GROUP,
                replicas: nodes.keys().copied().collect(),
                keys: metadata::keys(),
                appender: None,
            })
            .await
            .map_err(|e| format!("cannot start the metadata group: {e}"))?;
        let (links, incoming) = Links::start(listener, cluster.clone(), secret);
        let runtime = Runtime::start(Arc::clone(&groups), links, incoming);
        let leads = Arc::clone(runtime.leads());
        let node = Arc::new(ClusterNode {
            leads,
            cluster,
            addresses,
            groups,
            broker: Arc::downgrade(broker),
            progress: watch::Sender::new(Progress {
                next: metadata.next_offset(),
                stopped: false,
            }),
            folded: Mutex::new(Folded {
                metadata,
                verdicts: VecDeque::new(),
                stopped: None,
            }),
            runtime: Mutex::new(Some(runtime)),
            tasks: Mutex::new(Vec::new()),
            producer_ids: tokio::sync::Mutex::new(0..0),
            submitting: Mutex::new(()),
            relaying_states: Arc::new(tokio::sync::Semaphore::new(RELAYED_STATES_AT_ONCE)),
        });
        broker.replace_catalog(lock(&node.folded).metadata.catalog());
        broker
            .join(Arc::clone(&node) as Arc<dyn cluster::Cluster>)
            .map_err(|e| e.to_string())?;
        let follower = tokio::spawn(Arc::clone(&node).follow(broker.sync_points()));
        let registration = tokio::spawn(Arc::clone(&node).register());
        let reconciler = tokio::spawn(Arc::clone(&node).reconcile());
        lock(&node.tasks).extend([follower, registration, reconciler]);
        Ok(node)
    }

    /// Stops the follower and the registration, then the runtime (links,
    /// then groups). The broker's group commit and store close after this.
    pub async fn shutdown(&self) -> std::result::Result<(), String> {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let runtime = lock(&self.runtime).take();
        match runtime {
            Some(runtime) => runtime.shutdown().await,
            None => Ok(()),
        }
    }

    /// Folds after every sync point (and every [`FOLLOW_IDLE`]) until the
    /// broker is gone, on a worker thread (the store's lock may be held
    /// long, by a reopen in place). Only when group 0 applied something
    /// since, or records were left that were not durable yet: produce
    /// makes sync points by the thousand.
    async fn follow(self: Arc<Self>, mut sync_points: watch::Receiver<u64>) {
        let mut seen = None;
        let mut pending = true;
        loop {
            tokio::select! {
                changed = sync_points.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(FOLLOW_IDLE) => {}
            }
            let applied = self.groups.applied(METADATA_GROUP);
            if applied == seen && !pending {
                continue;
            }
            seen = applied;
            let Some(broker) = self.broker.upgrade() else {
                return;
            };
            let node = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || node.follow_once(&broker)).await {
                Ok(left) => pending = left,
                Err(e) => {
                    log::error(format_args!("the metadata fold failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Folds what is durable of the metadata log and not folded yet (all of
    /// it, in steps); puts the new catalog in the broker if anything was
    /// folded. Whether records are left to fold (not durable yet, or past a
    /// stop).
    fn follow_once(&self, broker: &Broker) -> bool {
        let mut folded = lock(&self.folded);
        let before = folded.metadata.next_offset();
        let (stopped, end) = loop {
            let mut store = broker.store();
            let followed = folded.metadata.follow(&mut store);
            for (offset, verdict) in followed.verdicts {
                report(offset, &verdict);
                if folded.verdicts.len() == VERDICTS_KEPT {
                    folded.verdicts.pop_front();
                }
                folded.verdicts.push_back((offset, verdict));
            }
            if followed.caught_up || followed.stopped.is_some() {
                let end = store.next_offset(metadata::METADATA_KEY).unwrap_or(0);
                break (followed.stopped, end);
            }
        };
        if folded.metadata.next_offset() != before {
            broker.replace_catalog(folded.metadata.catalog());
        }
        match &stopped {
            Some(stop) => {
                let why = stop.to_string();
                if folded.stopped.as_deref() != Some(why.as_str()) {
                    log::error(format_args!(
                        "the cluster's metadata is not followed past offset {}: {why}",
                        folded.metadata.next_offset()
                    ));
                }
                folded.stopped = Some(why);
            }
            None => folded.stopped = None,
        }
        let now = Progress {
            next: folded.metadata.next_offset(),
            stopped: stopped.is_some(),
        };
        self.progress.send_if_modified(|progress| {
            let changed = *progress != now;
            *progress = now;
            changed
        });
        end > folded.metadata.next_offset()
    }

    /// Runs the partition groups the metadata gives this node, and no
    /// others: after every fold, and every [`RECONCILE_RETRY`] while a
    /// change failed.
    async fn reconcile(self: Arc<Self>) {
        let mut progress = self.progress.subscribe();
        let mut failing = BTreeMap::new();
        let mut unfinished = BTreeSet::new();
        loop {
            let wanted = lock(&self.folded).metadata.groups_on(self.cluster.me);
            let settled = self
                .reconcile_once(&wanted, &mut failing, &mut unfinished)
                .await;
            let changed = if settled {
                progress.changed().await
            } else {
                tokio::select! {
                    changed = progress.changed() => changed,
                    () = tokio::time::sleep(RECONCILE_RETRY) => Ok(()),
                }
            };
            if changed.is_err() {
                return;
            }
        }
    }

    /// Removes the partition groups running here that `wanted` does not
    /// list (their topic was deleted), deletes the storage of those whose
    /// removal failed (`unfinished`: a marked log left would refuse every
    /// add), then adds those it lists that do not run; whether all went
    /// through. A failure is logged when it first happens (`failing`
    /// remembers each group's last one).
    async fn reconcile_once(
        &self,
        wanted: &BTreeMap<u32, PartitionOf>,
        failing: &mut BTreeMap<u32, String>,
        unfinished: &mut BTreeSet<u32>,
    ) -> bool {
        let running: BTreeSet<u32> = self
            .groups
            .ids()
            .into_iter()
            .filter(|&g| g != METADATA_GROUP)
            .collect();
        let mut settled = true;
        for &g in running.iter().filter(|g| !wanted.contains_key(g)) {
            let removed = self.groups.remove(g).await;
            if removed.is_err() {
                // It runs no more: its storage is deleted below, or a
                // marked log left would refuse every add.
                unfinished.insert(g);
            }
            settled &= noted(g, "remove", removed, failing);
        }
        for g in std::mem::take(unfinished) {
            // Its topic is deleted: its partition's keys are dead, swept
            // at the next start if not deleted with it here.
            let deleted = self
                .groups
                .delete_stored(g, &Keys::matching(|_| false))
                .await;
            if deleted.is_err() {
                unfinished.insert(g);
            }
            settled &= noted(g, "delete the storage of", deleted, failing);
        }
        failing
            .retain(|g, _| wanted.contains_key(g) || unfinished.contains(g) || running.contains(g));
        for (&g, of) in wanted.iter().filter(|(g, _)| !running.contains(g)) {
            let spec = GroupSpec {
                group: g,
                replicas: of.replicas.clone(),
                keys: partition_keys(&of.key),
                appender: Some(Arc::new(partition::PartitionAppender)),
            };
            let added = self.groups.add(spec).await;
            if added.is_ok() {
                log::debug(format_args!(
                    "group {g}: partition {} of '{}' runs here",
                    of.partition, of.topic
                ));
            }
            settled &= noted(g, "add", added, failing);
        }
        settled
    }

    /// Registers this node's addresses, trying again until group 0 takes
    /// them (a registration is the same change however often it is made).
    async fn register(self: Arc<Self>) {
        let info = self.registration();
        if lock(&self.folded).metadata.nodes().get(&self.cluster.me) == Some(&info) {
            return;
        }
        let op = MetaOp::RegisterNode {
            id: self.cluster.me,
            http: info.http,
            kafka: info.kafka,
            peer: info.peer,
        };
        loop {
            match self.propose(&op).await {
                Ok(Verdict::Accepted(_)) => return,
                Ok(Verdict::Refused(refusal)) => {
                    log::error(format_args!(
                        "the cluster refused this node's addresses: {refusal}; clients will \
                         not be sent here until it is restarted with others"
                    ));
                    return;
                }
                // Committed, perhaps, but not folded here: proposing it
                // again could add a record each time, for ever.
                Err(e) if e.written() == Written::Maybe => {
                    if lock(&self.folded).stopped.is_some() {
                        log::error(format_args!(
                            "this node's registration may be committed, but the node \
                             cannot fold the cluster's metadata to see it: {e}"
                        ));
                        return;
                    }
                    log::info(format_args!("registering this node: {e}; checking again"));
                    tokio::time::sleep(REGISTER_RETRY).await;
                    if lock(&self.folded).metadata.nodes().get(&self.cluster.me)
                        == Some(&self.registration())
                    {
                        return;
                    }
                }
                Err(e) => {
                    log::info(format_args!(
                        "registering this node with the cluster: {e}; trying again"
                    ));
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
            }
        }
    }

    /// The addresses this node registers.
    fn registration(&self) -> NodeInfo {
        NodeInfo {
            http: self.addresses.http.clone(),
            kafka: self.addresses.kafka.clone(),
            peer: self.addresses.peer.clone(),
        }
    }

    /// Proposes `op` to group 0 and waits for this node to fold it: the
    /// fold's verdict on it.
    async fn propose(&self, op: &MetaOp) -> Result<Verdict> {
        let proposal = Proposal {
            id: self.groups.next_proposal_id(),
            ops: vec![metadata::send(op)],
        };
        let proposed = self
            .groups
            .propose_at_leader(METADATA_GROUP, proposal, PROPOSE_PATIENCE)
            .await;
        let offset = match proposed {
            Ok((_, results)) => match results.as_slice() {
                [OpResult::Offset(offset)] => *offset,
                other => {
                    return Err(Error::Internal(format!(
                        "a metadata change was applied with the results {other:?}"
                    )));
                }
            },
            Err(e) => return Err(unavailable(e)),
        };
        let mut progress = self.progress.subscribe();
        let folded = tokio::time::timeout(
            FOLD_PATIENCE,
            progress.wait_for(|p| p.next > offset || p.stopped),
        )
        .await;
        let folded = match folded {
            Ok(Ok(p)) if p.next > offset => Ok(()),
            _ => Err(()),
        };
        let stopped = || {
            lock(&self.folded)
                .stopped
                .as_ref()
                .map(|why| format!(" (the fold stopped: {why})"))
                .unwrap_or_default()
        };
        if folded.is_err() {
            return Err(Error::Unavailable {
                why: format!(
                    "the change is at offset {offset} of the cluster's metadata, which this \
                     node has not folded (within {FOLD_PATIENCE:?}){}",
                    stopped()
                ),
                written: Written::Maybe,
            });
        }
        let folded = lock(&self.folded);
        let verdict = folded
            .verdicts
            .iter()
            .find(|(at, _)| *at == offset)
            .map(|(_, verdict)| verdict.clone());
        verdict.ok_or_else(|| {
            Error::Internal(format!(
                "the verdict on offset {offset} of the cluster's metadata is no longer kept"
            ))
        })
    }

    async fn create(&self, new: NewTopic) -> Result<Topic> {
        // What the fold would refuse is refused before it is proposed: a
        // refusal still costs a record of the metadata log.
        check_name(&new.name).map_err(Error::Invalid)?;
        if is_reserved(&partition_key(&new.name, 0, 0)) {
            return Err(Error::Invalid(format!(
                "a topic of a cluster may not be named '{}': its partitions' keys would be \
                 the Raft groups' own",
                new.name
            )));
        }
        if new.partitions == 0 || new.partitions > metadata::PARTITIONS_MAX {
            return Err(Error::Invalid(format!(
                "a topic of a cluster has 1 to {} partitions, not {}",
                metadata::PARTITIONS_MAX,
                new.partitions
            )));
        }
        for value in [new.retention_ms, new.retention_bytes]
            .into_iter()
            .flatten()
        {
            if value > metadata::INT64_MAX {
                return Err(Error::Invalid(format!(
                    "a retention of {value} is over Kafka's int64 {}",
                    metadata::INT64_MAX
                )));
            }
        }
        let nodes = u32::try_from(self.cluster.membership.len()).unwrap_or(u32::MAX);
        let factor = new
            .replication_factor
            .unwrap_or_else(|| cluster::Cluster::replication_factor(self));
        if factor == 0 || factor > nodes {
            return Err(Error::Invalid(format!(
                "replication factor {factor}: this cluster's topics have 1 to its {nodes} nodes"
            )));
        }
        let op = {
            let folded = lock(&self.folded);
            let assignment = folded
                .metadata
                .assign(new.partitions, factor)
                .map_err(|refusal| refused(refusal, nodes))?;
            MetaOp::CreateTopic {
                name: new.name.clone(),
                partitions: new.partitions,
                replication_factor: factor,
                config: TopicConfig {
                    retention_ms: new.retention_ms,
                    retention_bytes: new.retention_bytes,
                },
                assignment,
                created_ms: now_ms(),
            }
        };
        match self.propose(&op).await? {
            Verdict::Accepted(_) => self.topic(&new.name),
            Verdict::Refused(refusal) => Err(refused(refusal, nodes)),
        }
    }

    async fn delete(&self, name: String) -> Result<Topic> {
        let topic = self.topic(&name)?;
        let op = MetaOp::DeleteTopic { name: name.clone() };
        match self.propose(&op).await? {
            Verdict::Accepted(_) => Ok(topic),
            Verdict::Refused(refusal) => Err(refused(refusal, 0)),
        }
    }

    /// The group, store key and replicas of partition `partition` of
    /// `topic`.
    fn partition_of(&self, topic: &str, partition: u32) -> Result<(u32, String, Vec<NodeId>)> {
        let folded = lock(&self.folded);
        let meta = folded
            .metadata
            .topics()
            .get(topic)
            .ok_or_else(|| Error::TopicNotFound {
                topic: topic.to_string(),
            })?;
        let of =
            meta.partitions
                .get(partition as usize)
                .ok_or_else(|| Error::PartitionNotFound {
                    topic: topic.to_string(),
                    partition: u64::from(partition),
                    partitions: u32::try_from(meta.partitions.len()).unwrap_or(u32::MAX),
                })?;
        Ok((
            of.group,
            partition_key(topic, meta.id, partition),
            of.replicas.clone(),
        ))
    }

    /// [`ClusterNode::partition_of`], for a partition that must have a
    /// replica on this node.
    fn partition_here(&self, topic: &str, partition: u32) -> Result<(u32, String, Vec<NodeId>)> {
        let (group, key, replicas) = self.partition_of(topic, partition)?;
        if !replicas.contains(&self.cluster.me) {
            return Err(Error::NotLeader(format!(
                "this node holds no replica of partition {partition} of '{topic}': its \
                 replicas are nodes {replicas:?}"
            )));
        }
        Ok((group, key, replicas))
    }

    /// Group `g`'s leader: as this node's instance of the group knows it,
    /// or, for a group that does not run here (or knows none yet), as the
    /// leader last reported to this node ([`Leads`]).
    fn leader_of(&self, g: u32) -> Option<NodeId> {
        self.groups.leader(g).or_else(|| self.reported_leader(g))
    }

    /// Group `g`'s leader as last reported to this node.
    fn reported_leader(&self, g: u32) -> Option<NodeId> {
        self.leads.of(g, Instant::now()).map(|held| held.leader)
    }

    /// [`cluster::Cluster::append`].
    async fn append(
        &self,
        topic: String,
        partition: u32,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<u64>> {
        // A node without a replica forwards the proposals to the leader
        // its peers report, as a replica forwards them to the leader it
        // follows.
        let (group, key, _) = self.partition_of(&topic, partition)?;
        check_record_sizes(&payloads)?;
        let total = payloads.len();
        let at_ms = now_ms();
        let mut offsets = Vec::with_capacity(total);
        for chunk in proposals(payloads) {
            let count = chunk.len() as u64;
            let proposal = Proposal {
                id: self.groups.next_proposal_id(),
                ops: vec![partition::append_op(&key, chunk, None, at_ms)],
            };
            let reported = || self.reported_leader(group);
            let proposed = self
                .groups
                .propose_at(group, proposal, PROPOSE_PATIENCE, &reported)
                .await;
            match proposed.map(|(_, results)| results) {
                Ok(results) => match results.as_slice() {
                    [OpResult::Offset(base)] => offsets.extend(*base..base + count),
                    other => {
                        return Err(Error::Internal(format!(
                            "an append was applied with the results {other:?}"
                        )));
                    }
                },
                Err(e) if offsets.is_empty() => return Err(unavailable(e)),
                Err(e) => {
                    return Err(Error::Unavailable {
                        why: format!(
                            "{} of the {total} records were committed, the others may or may \
                             not be: {}",
                            offsets.len(),
                            unavailable(e)
                        ),
                        written: Written::Maybe,
                    });
                }
            }
        }
        Ok(offsets)
    }

    /// [`cluster::Cluster::produce`]: what can be refused is refused here,
    /// and the proposals are in the group's queue before this returns.
    fn start_produce(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Vec<u8>>,
        sequence: Option<Sequenced>,
    ) -> Result<Pending<'static, Result<Produced>>> {
        let (group, key, replicas) = self.partition_here(topic, partition)?;
        let me = self.cluster.me;
        let leader = self.groups.leader(group);
        if leader != Some(me) {
            return Err(Error::NotLeader(match leader {
                Some(leader) => format!(
                    "node {leader} leads partition {partition} of '{topic}', not this node {me}"
                ),
                None => format!(
                    "partition {partition} of '{topic}' has no leader now (its replicas are \
                     nodes {replicas:?})"
                ),
            }));
        }
        // An idempotent producer's batch is judged whole, so it is one
        // proposal; a client splits one refused as too large (Java's does;
        // librdkafka's fails it). Another batch is cut into proposals that
        // are submitted together, so that they take consecutive entries
        // and their records consecutive offsets, as the reply's one base
        // offset says (`partition::produced` checks it).
        check_record_sizes(&records)?;
        let chunks = match sequence {
            Some(_) => {
                let bytes = partition::entry_bytes(&records);
                if bytes > PROPOSAL_BYTES_MAX {
                    return Err(Error::TooLarge(format!(
                        "an idempotent producer's batch of {} records taking {bytes} bytes in a \
                         Raft entry, over the {PROPOSAL_BYTES_MAX} one entry of a partition's \
                         group carries (records travel in base64): send smaller batches \
                         (batch.size of about 700000 or less)",
                        records.len()
                    )));
                }
                vec![records]
            }
            None => proposals(records),
        };
        let at_ms = now_ms();
        let sequence = sequence.map(partition::sequence);
        let _together = lock(&self.submitting);
        let submitted: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let count = chunk.len() as u64;
                let proposal = Proposal {
                    id: self.groups.next_proposal_id(),
                    ops: vec![partition::append_op(&key, chunk, sequence, at_ms)],
                };
                (count, self.groups.submit(group, proposal))
            })
            .collect();
        Ok(Box::pin(partition::produced(submitted, PROPOSE_PATIENCE)))
    }

    /// [`cluster::Cluster::commit_offsets`].
    async fn commit_offsets(&self, changes: Vec<OffsetChange>) -> Result<()> {
        let total = changes.len();
        let mut done = 0;
        // A key twice over (JSON escaping), the metadata in base64, fields.
        let weight = |(key, commit): &OffsetChange| {
            2 * key.len() + commit.as_ref().map_or(0, |(_, m)| m.len().div_ceil(3) * 4) + 64
        };
        for chunk in chunks(changes, weight, PROPOSAL_BYTES_MAX) {
            let count = chunk.len();
            let ops = chunk
                .into_iter()
                .map(|(key, commit)| Op::SetCommit {
                    key,
                    commit: commit
                        .map(|(offset, metadata)| (offset, Bytes64(metadata.into_bytes()))),
                })
                .collect();
            let proposal = Proposal {
                id: self.groups.next_proposal_id(),
                ops,
            };
            let proposed = self
                .groups
                .propose_at_leader(METADATA_GROUP, proposal, PROPOSE_PATIENCE)
                .await;
            let index = match proposed {
                Ok((index, _)) => index,
                Err(e) if done == 0 => return Err(unavailable(e)),
                Err(e) => {
                    return Err(Error::Unavailable {
                        why: format!(
                            "{done} of the {total} offsets were committed, the others may or may \
                             not be: {}",
                            unavailable(e)
                        ),
                        written: Written::Maybe,
                    });
                }
            };
            // Reads show durable commits: once applied here, the next sync
            // point of this node's store makes them so.
            let applied = self
                .groups
                .wait_applied(METADATA_GROUP, index, FOLD_PATIENCE)
                .await;
            let durable = if applied {
                let here = BrokerSync(self.broker.clone());
                match tokio::time::timeout(FOLD_PATIENCE, synced(&here)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("this node's sync point failed ({e})")),
                    Err(_) => Err(format!("not made durable here within {FOLD_PATIENCE:?}")),
                }
            } else {
                Err(format!("not applied here within {FOLD_PATIENCE:?}"))
            };
            if let Err(why) = durable {
                return Err(Error::Unavailable {
                    why: format!(
                        "the offsets were committed, but {why}: this node's reads may not show \
                         them yet"
                    ),
                    written: Written::Maybe,
                });
            }
            done += count;
        }
        Ok(())
    }

    /// [`cluster::Cluster::producer_id`].
    async fn producer_id(&self) -> Result<u64> {
        let mut ids = self.producer_ids.lock().await;
        if ids.is_empty() {
            let op = MetaOp::AllocateProducerIds {
                node: self.cluster.me,
                count: PRODUCER_IDS_BLOCK,
            };
            match self.propose(&op).await? {
                Verdict::Accepted(metadata::Change::ProducerIds { ids: block, .. }) => {
                    *ids = block;
                }
                Verdict::Accepted(other) => {
                    return Err(Error::Internal(format!(
                        "a block of producer ids was folded as {other:?}"
                    )));
                }
                Verdict::Refused(refusal) => return Err(refused(refusal, 0)),
            }
        }
        ids.next()
            .ok_or_else(|| Error::Internal("an empty block of producer ids".into()))
    }

    /// [`cluster::Cluster::relay`]: to the partition's leader as known
    /// here, then to each other replica whose link is up, until one takes
    /// it. A state read waits its turn among this node's
    /// [`RELAYED_STATES_AT_ONCE`] within `patience`, and goes on to the next
    /// replica where one answers other than 200: a replica that has not
    /// applied the topic's creation yet (or has applied its deletion)
    /// answers 404, another may know it. The first such answer other than
    /// a 404 is then the one given, else the 404.
    async fn relay(
        &self,
        topic: String,
        partition: u32,
        head: RequestHead,
        kind: RelayKind,
        patience: Duration,
    ) -> Result<(ResponseHead, Vec<u8>)> {
        let (group, _, replicas) = self.partition_of(&topic, partition)?;
        let deadline = Instant::now() + patience;
        let _turn = match kind {
            RelayKind::Fetch => None,
            RelayKind::State => Some(
                tokio::time::timeout(patience, Arc::clone(&self.relaying_states).acquire_owned())
                    .await
                    .map_err(|_| Error::Unavailable {
                        why: format!(
                            "{RELAYED_STATES_AT_ONCE} partition states are being asked of other \
                             nodes from here, and none finished within {patience:?}: retry"
                        ),
                        written: Written::No,
                    })?
                    .map_err(|e| Error::Internal(format!("relaying partition states: {e}")))?,
            ),
        };
        let state = kind == RelayKind::State;
        let mut answered: Option<(ResponseHead, Vec<u8>)> = None;
        let me = self.cluster.me;
        let head = serde_json::to_string(&head)
            .map_err(|e| Error::Internal(format!("a relayed request's head: {e}")))?;
        let leader = self
            .leader_of(group)
            .filter(|l| *l != me && replicas.contains(l));
        let mut targets: Vec<NodeId> = leader.into_iter().collect();
        targets.extend(replicas.iter().filter(|&&r| r != me && Some(r) != leader));
        let mut refusals = Vec::new();
        // Not a group's call: nothing here closes it but the transport.
        let closed = std::sync::atomic::AtomicBool::new(false);
        for target in targets {
            if !self.linked(target) {
                refusals.push(format!("node {target}: its link is down"));
                continue;
            }
            let rpc = Rpc::Relay {
                head: head.clone(),
                body: Bytes64(Vec::new()),
                state,
            };
            let ttl = deadline.saturating_duration_since(Instant::now());
            match self
                .groups
                .transport
                .ask(target, group, rpc, &closed, ttl)
                .await
            {
                Ok(Reply::Relayed { head, body }) => {
                    let head: ResponseHead = serde_json::from_str(&head).map_err(|e| {
                        Error::Internal(format!("node {target}'s relayed answer's head: {e}"))
                    })?;
                    if !state || head.status == 200 {
                        return Ok((head, body.0));
                    }
                    refusals.push(format!("node {target} answered {}", head.status));
                    if answered.as_ref().is_none_or(|(kept, _)| kept.status == 404) {
                        answered = Some((head, body.0));
                    }
                }
                Ok(other) => refusals.push(format!(
                    "node {target} answered with a reply of another kind ({})",
                    reply_kind(&other)
                )),
                Err(NoAnswer::Unreachable(why)) => refusals.push(format!("node {target}: {why}")),
                Err(NoAnswer::Timeout(ttl)) => {
                    refusals.push(format!("node {target} did not answer within {ttl:?}"));
                    break;
                }
            }
        }
        if let Some(answer) = answered {
            return Ok(answer);
        }
        Err(Error::Unavailable {
            why: format!(
                "this node holds no replica of partition {partition} of '{topic}', and none of \
                 its replicas (nodes {replicas:?}) took the request: {}",
                refusals.join("; ")
            ),
            written: Written::No,
        })
    }

    /// Whether this node's link to `peer` is up.
    fn linked(&self, peer: NodeId) -> bool {
        lock(&self.runtime)
            .as_ref()
            .is_some_and(|runtime| runtime.links().is_up(peer))
    }

    /// Topic `name` as the broker's catalog has it now.
    fn topic(&self, name: &str) -> Result<Topic> {
        let broker = self.broker.upgrade().ok_or(Error::ShuttingDown)?;
        let found = broker.catalog().get(name).cloned();
        found.ok_or_else(|| Error::TopicNotFound {
            topic: name.to_string(),
        })
    }
}

impl cluster::Cluster for ClusterNode {
    fn create_topic(&self, new: NewTopic) -> Pending<'_, Result<Topic>> {
        Box::pin(self.create(new))
    }

    fn delete_topic(&self, name: String) -> Pending<'_, Result<Topic>> {
        Box::pin(self.delete(name))
    }

    fn status(&self) -> serde_json::Value {
        // A node is up, as this one sees it, when their link is.
        let up = |id: NodeId| id == self.cluster.me || self.linked(id);
        let peers: Vec<serde_json::Value> = self
            .cluster
            .membership
            .nodes()
            .iter()
            .map(|(&id, address)| json!({"id": id, "address": address, "linked": up(id)}))
            .collect();
        let folded = lock(&self.folded);
        let nodes: Vec<serde_json::Value> = folded
            .metadata
            .nodes()
            .iter()
            .map(|(&id, info)| {
                json!({"id": id, "http": info.http, "kafka": info.kafka, "peer": info.peer,
                    "up": up(id)})
            })
            .collect();
        let mut partitions: Vec<serde_json::Value> = folded
            .metadata
            .topics()
            .iter()
            .flat_map(|(name, topic)| {
                topic.partitions.iter().enumerate().map(move |(p, of)| {
                    json!({"topic": name, "partition": p, "group": of.group,
                        "replicas": of.replicas})
                })
            })
            .collect();
        let (offset, stopped) = (folded.metadata.next_offset(), folded.stopped.clone());
        drop(folded);
        // Each group's Raft state is read with the fold's lock let go.
        let now = Instant::now();
        let led_here: BTreeMap<u32, Reported> = self
            .groups
            .leads()
            .into_iter()
            .map(|lead| (lead.group, Reported::of_lead(self.cluster.me, lead, now)))
            .collect();
        for partition in &mut partitions {
            let Some(g) = partition["group"]
                .as_u64()
                .and_then(|g| u32::try_from(g).ok())
            else {
                continue;
            };
            let leader = self.leader_of(g);
            partition["leader"] = json!(leader);
            // Whether this node's replica votes: `false` while it rejoins
            // (it lost its state, or started after the others had written;
            // `raft::standing`), `null` where it holds no replica. A
            // partition whose replicas do not all vote survives no failure
            // of one that does.
            partition["votes_here"] = if self.groups.ids().contains(&g) {
                json!(self.groups.votes(g))
            } else {
                serde_json::Value::Null
            };
            // How many entries each replica is behind the leader: as the
            // leader itself knows, here or as it last reported; `null` for
            // a replica not known to have matched anything yet.
            let reported = led_here.get(&g).cloned().or_else(|| self.leads.of(g, now));
            if let Some(reported) = reported.filter(|r| Some(r.leader) == leader) {
                let lag: serde_json::Map<String, serde_json::Value> = partition["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(serde_json::Value::as_u64)
                    .map(|replica| (replica.to_string(), json!(reported.lag(replica))))
                    .collect();
                partition["lag"] = serde_json::Value::Object(lag);
            } else {
                partition["lag"] = serde_json::Value::Null;
            }
        }
        json!({
            "node_id": self.cluster.me,
            "groups": self.groups.ids(),
            "partitions": partitions,
            "cluster_id": self.cluster.id,
            "metadata_leader": self.groups.leader(METADATA_GROUP),
            "metadata_offset": offset,
            "metadata_stopped": stopped,
            "peers": peers,
            "nodes": nodes,
        })
    }

    fn node_id(&self) -> u64 {
        self.cluster.me
    }

    fn replication_factor(&self) -> u32 {
        let nodes = u32::try_from(self.cluster.membership.len()).unwrap_or(u32::MAX);
        REPLICATION_FACTOR_DEFAULT.min(nodes)
    }

    fn members(&self) -> Vec<Member> {
        let folded = lock(&self.folded);
        folded
            .metadata
            .nodes()
            .iter()
            .map(|(&id, info)| Member {
                id,
                kafka: info.kafka.clone(),
            })
            .collect()
    }

    fn placement(&self, topic: &str, partition: u32) -> Option<Placement> {
        let group = {
            let folded = lock(&self.folded);
            let meta = folded.metadata.topics().get(topic)?;
            meta.partitions
                .get(usize::try_from(partition).ok()?)?
                .clone()
        };
        Some(Placement {
            leader: self.leader_of(group.group),
            replicas: group.replicas,
        })
    }

    fn relay(
        &self,
        topic: &str,
        partition: u32,
        head: RequestHead,
        kind: RelayKind,
        patience: Duration,
    ) -> Pending<'_, Result<(ResponseHead, Vec<u8>)>> {
        Box::pin(self.relay(topic.to_string(), partition, head, kind, patience))
    }

    fn serve_relayed(&self, relayer: Relayer) {
        if let Some(runtime) = lock(&self.runtime).as_ref() {
            runtime.serve_relayed(relayer);
        }
    }

    fn append(
        &self,
        topic: &str,
        partition: u32,
        payloads: Vec<Vec<u8>>,
    ) -> Pending<'_, Result<Vec<u64>>> {
        Box::pin(self.append(topic.to_string(), partition, payloads))
    }

    fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Vec<u8>>,
        sequence: Option<Sequenced>,
    ) -> Result<Pending<'static, Result<Produced>>> {
        self.start_produce(topic, partition, records, sequence)
    }

    fn reads_at(&self, topic: &str, partition: u32) -> Result<bool> {
        let (group, _, replicas) = self.partition_here(topic, partition)?;
        self.groups.leads_applied(group).ok_or_else(|| {
            let leader = self.groups.leader(group);
            Error::NotLeader(format!(
                "partition {partition} of '{topic}' is read at its leader ({}), not at node {}",
                leader.map_or_else(
                    || format!("none now, of nodes {replicas:?}"),
                    |l| format!("node {l}")
                ),
                self.cluster.me
            ))
        })
    }

    fn producer_id(&self) -> Pending<'_, Result<u64>> {
        Box::pin(self.producer_id())
    }

    fn commit_offsets(&self, changes: Vec<OffsetChange>) -> Pending<'_, Result<()>> {
        Box::pin(self.commit_offsets(changes))
    }

    fn coordinator(&self) -> Option<u64> {
        self.groups.leader(METADATA_GROUP)
    }

    fn refuses_writes(&self) -> Option<String> {
        Some(
            "this node is part of a cluster, which replicates produce and offset commits only \
             so far (issue 20): record deletions, group and offset deletions, new partitions \
             and config changes are refused"
                .into(),
        )
    }
}

/// A proposal group 0 did not take (or may not have) as the broker's error.
/// What kind of reply `reply` is, for an error message.
fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Append(_) => "append",
        Reply::Vote(_) => "vote",
        Reply::Snapshot(_) => "snapshot",
        Reply::Proposed(_) => "proposed",
        Reply::Unavailable(_) => "unavailable",
        Reply::Relayed { .. } => "relayed",
    }
}

fn unavailable(e: ProposeError) -> Error {
    let (why, written) = match e {
        ProposeError::NotLeader(_) => (
            format!(
                "the cluster's metadata group has no leader within {PROPOSE_PATIENCE:?}: are a \
                 majority of the nodes up and linked?"
            ),
            Written::No,
        ),
        ProposeError::NoGroup(why) => (why, Written::No),
        ProposeError::Unknown(why) => (
            format!("the change may or may not take effect: {why}"),
            Written::Maybe,
        ),
        ProposeError::Failed { appended, why } => (
            why,
            if appended {
                Written::Maybe
            } else {
                Written::No
            },
        ),
    };
    Error::Unavailable { why, written }
}

/// The fold's refusal as the broker's error. A replication factor over
/// the registered nodes, in a cluster of `nodes`, means some have not
/// registered yet: worth a retry.
fn refused(refusal: Refusal, nodes: u32) -> Error {
    match refusal {
        Refusal::TopicExists(topic) => Error::TopicExists { topic },
        Refusal::UnknownTopic(topic) => Error::TopicNotFound { topic },
        Refusal::ReplicationFactor(why) if nodes > 0 => Error::Unavailable {
            why: format!("{why} (not every node of the {nodes} has registered yet)"),
            written: Written::No,
        },
        other => Error::Invalid(other.to_string()),
    }
}

/// Logs what a folded record changed (at info) or why it was refused.
fn report(offset: u64, verdict: &Verdict) {
    match verdict {
        Verdict::Accepted(change) => {
            log::info(format_args!("metadata {offset}: {change:?}"));
        }
        Verdict::Refused(refusal) => {
            log::debug(format_args!("metadata {offset}: refused: {refusal}"));
        }
    }
}

/// The keys of the partition whose log is `key`: its log, its log start
/// (Kafka's DeleteRecords) and its idempotent producers' states.
fn partition_keys(key: &str) -> Keys {
    let log = key.to_string();
    Keys::matching(move |k| partition_of(k) == log)
}

/// Logs a reconciler's change of group `g` that failed, once per reason;
/// whether it went through.
fn noted(
    g: u32,
    what: &str,
    result: std::result::Result<(), String>,
    failing: &mut BTreeMap<u32, String>,
) -> bool {
    match result {
        Ok(()) => {
            failing.remove(&g);
            true
        }
        Err(why) => {
            if failing.get(&g) != Some(&why) {
                log::warn(format_args!(
                    "cannot {what} group {g} here: {why}; trying again"
                ));
                failing.insert(g, why);
            }
            false
        }
    }
}

/// Folds every record of the metadata log `store` holds. An error if the
/// fold stops before the end (a record of a newer seglog, a gap): what
/// this node may remove at start depends on the whole of it.
fn fold_stored(store: &mut Store) -> std::result::Result<Metadata, String> {
    let mut metadata = Metadata::new();
    loop {
        let followed = metadata.follow(store);
        if let Some(stop) = followed.stopped {
            return Err(format!(
                "cannot fold the cluster's metadata stored here (a newer seglog may have \
                 written it: upgrade this node): {stop}"
            ));
        }
        if followed.caught_up {
            return Ok(metadata);
        }
    }
}

/// Removes, before any group runs, what this node holds of groups and
/// partitions its metadata (`metadata`, every stored record folded) no
/// longer places here: the storage of every group stored here that it
/// does not place here (a removal a crash cut short, marked or not yet:
/// a group is added only after its topic is folded here, so a stored group
/// the whole fold does not place here belongs to a deleted topic), then
/// every partition's keys the fold's catalog calls dead, and their log
/// starts and producer states. A marked log left would make every `add`
/// refused.
async fn finish_removals(
    groups: &Arc<Groups>,
    metadata: &Metadata,
    store: &Mutex<Store>,
) -> std::result::Result<(), String> {
    let stored = stored_groups(&lock(store)).map_err(|e| e.to_string())?;
    let wanted = metadata.groups_on(groups.me());
    for g in stored {
        if g == METADATA_GROUP || wanted.contains_key(&g) {
            continue;
        }
        // Its partition's keys are dead, and swept below.
        groups.delete_stored(g, &Keys::matching(|_| false)).await?;
        log::info(format_args!("group {g}: removed what its removal left"));
    }
    let catalog = metadata.catalog();
    let mut store = lock(store);
    for key in store.keys().map_err(|e| e.to_string())? {
        if catalog.owner_of(partition_of(&key)) == KeyOwner::Dead {
            match store.remove_key(&key) {
                Ok(()) => log::info(format_args!("removed {key}: its topic was deleted")),
                Err(e) => log::warn(format_args!("cannot remove {key} of a deleted topic: {e}")),
            }
        }
    }
    Ok(())
}

/// The partition key a store key belongs to: its own, or that of the
/// partition whose log start or producer state it is.
fn partition_of(key: &str) -> &str {
    if let Some(of) = key.strip_prefix(topics::LOG_START_PREFIX) {
        return of;
    }
    if producers::is_state_key(key)
        && let Some((_, of)) = key["producer ".len()..].split_once(' ')
    {
        return of;
    }
    key
}

/// Refuses a record too large for one proposal.
fn check_record_sizes(records: &[Vec<u8>]) -> Result<()> {
    let bytes = |r: &Vec<u8>| partition::entry_bytes(std::slice::from_ref(r));
    match records.iter().find(|r| bytes(r) > PROPOSAL_BYTES_MAX) {
        Some(large) => Err(Error::TooLarge(format!(
            "a record of {} bytes stored: a record of a cluster's topic takes at most \
             {PROPOSAL_BYTES_MAX} bytes in base64 in its Raft group's entry (about {} stored)",
            large.len(),
            PROPOSAL_BYTES_MAX / 4 * 3
        ))),
        None => Ok(()),
    }
}

/// `payloads` cut into proposals of at most [`PROPOSAL_BYTES_MAX`] each
/// as their entry carries them (at least one record each), in order.
fn proposals(payloads: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let weight = |r: &Vec<u8>| partition::entry_bytes(std::slice::from_ref(r));
    chunks(payloads, weight, PROPOSAL_BYTES_MAX)
}

/// `items` cut into runs of at most `max` bytes by `weight` (at least one
/// item each), in order.
fn chunks<T>(items: Vec<T>, weight: impl Fn(&T) -> usize, max: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let w = weight(&item);
        match out.last_mut() {
            Some(last) if bytes + w <= max => {
                bytes += w;
                last.push(item);
            }
            _ => {
                bytes = w;
                out.push(vec![item]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::test_broker;
    use crate::raft::durability::OwnGroupCommit;
    use crate::storage::store::StoreConfig;

    fn register(id: NodeId) -> MetaOp {
        MetaOp::RegisterNode {
            id,
            http: format!("127.0.0.1:{}", 1000 + id),
            kafka: None,
            peer: format!("127.0.0.1:{}", 2000 + id),
        }
    }

    fn create(name: &str) -> MetaOp {
        MetaOp::CreateTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            config: TopicConfig::default(),
            assignment: vec![vec![1]],
            created_ms: 0,
        }
    }

    /// Appends `op` to the metadata log of `store`, as group 0's apply does.
    fn append(store: &mut Store, op: &MetaOp) {
        store
            .append(metadata::METADATA_KEY, metadata::encode(op).as_bytes())
            .expect("an append");
    }

    /// Found by the stage 4 review (its probe): one `follow` folds at most
    /// `FOLLOW_RECORDS_MAX` records, and a start that swept with what it
    /// folded would call a later topic's partitions dead.
    #[test]
    fn a_start_folds_every_stored_record() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        for _ in 0..=metadata::FOLLOW_RECORDS_MAX {
            append(&mut store, &register(1));
        }
        append(&mut store, &create("late"));
        store.sync().expect("a sync");
        let metadata = fold_stored(&mut store).expect("the fold");
        let late = &metadata.topics()["late"];
        let key = partition_key("late", late.id, 0);
        assert_eq!(metadata.catalog().owner_of(&key), KeyOwner::Live);
    }

    /// A partition's group holds its log, log start and producer states,
    /// and nothing of another partition's, whatever their names share.
    #[test]
    fn a_partitions_keys_are_its_own_only() {
        let key = partition_key("a", 1, 0);
        let keys = partition_keys(&key);
        for own in [
            key.clone(),
            topics::deleted_before_key(&key),
            producers::state_key(-1, &key),
            producers::state_key(7, &key),
        ] {
            assert!(keys.holds(&own), "{own}");
        }
        for other in [
            partition_key("a", 1, 1),
            partition_key("a", 11, 0),
            partition_key("a", 1, 10),
            partition_key("a.1", 1, 0),
            partition_key("b.a", 1, 0),
            partition_key("a-1", 1, 0),
            "xa.1-0".to_string(),
            metadata::METADATA_KEY.to_string(),
        ] {
            assert!(!keys.holds(&other), "{other}");
            assert!(!keys.holds(&producers::state_key(7, &other)), "{other}");
            assert!(!keys.holds(&topics::deleted_before_key(&other)), "{other}");
        }
        // Names whose partitions' keys would be the groups' own are
        // refused before they are proposed.
        assert!(is_reserved(&partition_key("seglog.raft", 0, 0)));
    }

    /// What a crash in a removal leaves (a group's storage, its partition's
    /// keys), before or after the removal's mark, is deleted at the next
    /// start; what the metadata places here is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_start_removes_what_removals_cut_short_left() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        append(&mut store, &register(1));
        append(&mut store, &create("kept"));
        append(&mut store, &create("gone"));
        append(
            &mut store,
            &MetaOp::DeleteTopic {
                name: "gone".into(),
            },
        );
        store.sync().expect("a sync");
        let metadata = fold_stored(&mut store).expect("the fold");
        let kept = partition_key("kept", metadata.topics()["kept"].id, 0);
        let gone = partition_key("gone", 1, 0);
        assert_eq!(metadata.catalog().owner_of(&gone), KeyOwner::Dead);
        let store = Arc::new(Mutex::new(store));
        let group_commit =
            Arc::new(OwnGroupCommit::start(Arc::clone(&store)).expect("a group commit"));
        let nodes = BTreeMap::from([(1, "node-1".to_string())]);
        let groups = Arc::new(
            Groups::new(
                1,
                nodes.clone(),
                Arc::clone(&store),
                group_commit.clone(),
                TIMING_DEFAULT,
            )
            .expect("groups"),
        );
        // Ticked as the runtime ticks them (a lone node elects itself so).
        let ticking = Arc::clone(&groups);
        let ticker = tokio::spawn(async move {
            loop {
                ticking.tick(std::time::Instant::now());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        // The groups of both partitions ran here, and wrote; then the node
        // stopped before its removal of "gone"'s group began.
        for (group, key) in [(1, &kept), (2, &gone)] {
            groups
                .add(GroupSpec {
                    group,
                    replicas: vec![1],
                    keys: partition_keys(key),
                    appender: None,
                })
                .await
                .expect("a group");
            while groups.leader(group) != Some(1) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let proposal = Proposal {
                id: groups.next_proposal_id(),
                ops: vec![Op::Send {
                    key: key.clone(),
                    msg: "{}".into(),
                }],
            };
            groups.propose(group, proposal).await.expect("a record");
        }
        ticker.abort();
        groups.shutdown().await;
        let groups = Arc::new(
            Groups::new(
                1,
                nodes,
                Arc::clone(&store),
                group_commit.clone(),
                TIMING_DEFAULT,
            )
            .expect("groups"),
        );
        let broker_store = Arc::clone(&store);
        let keys = || lock(&broker_store).keys().expect("the keys");
        assert!(keys().contains(&gone));
        finish_removals(&groups, &metadata, &store)
            .await
            .expect("the tidying");
        let left = keys();
        assert!(left.contains(&kept), "{left:?}");
        assert!(left.contains(&crate::raft::log::log_key(1)), "{left:?}");
        assert!(!left.contains(&gone), "{left:?}");
        assert!(!left.contains(&crate::raft::log::log_key(2)), "{left:?}");
        groups.shutdown().await;
        group_commit
            .close_and_join()
            .expect("the group commit's end");
    }

    /// Found by the stage 3b review (its probe): a node whose fold stopped
    /// (at a record of a newer version, as a rolling upgrade writes) and
    /// whose addresses changed since it registered would see its
    /// registration committed but never folded, and propose it again
    /// every ten seconds, for ever. It must give up at once instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registration_a_stopped_fold_cannot_see_is_not_proposed_again() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        let broker = test_broker(store, Catalog::replica(0, []));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let peer = format!("127.0.0.1:{port}");
        let cluster = crate::cluster::peers::parse("test", 1, &format!("1={peer}")).expect("peers");
        let addresses = |http: &str| Addresses {
            http: http.into(),
            kafka: None,
            peer: peer.clone(),
        };
        let secret = Secret::new(&[7; 32]).expect("a secret");
        let node = ClusterNode::start(cluster.clone(), secret, &broker, addresses("127.0.0.1:1"))
            .await
            .expect("a node");
        while lock(&node.folded).metadata.nodes().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let newer = Proposal {
            id: node.groups.next_proposal_id(),
            ops: vec![Op::Send {
                key: metadata::METADATA_KEY.to_string(),
                msg: r#"{"version":2,"op":{"Something":{}}}"#.to_string(),
            }],
        };
        node.groups
            .propose_at_leader(METADATA_GROUP, newer, PROPOSE_PATIENCE)
            .await
            .expect("the newer record");
        while lock(&node.folded).stopped.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The node as restarted on another HTTP port: its registration,
        // over the same groups, with a fold that stops at the same record.
        let restarted = Arc::new(ClusterNode {
            cluster,
            addresses: addresses("127.0.0.1:2"),
            groups: Arc::clone(&node.groups),
            broker: Arc::downgrade(&broker),
            folded: Mutex::new(Folded {
                metadata: Metadata::new(),
                verdicts: VecDeque::new(),
                stopped: None,
            }),
            progress: watch::Sender::new(Progress {
                next: 0,
                stopped: false,
            }),
            runtime: Mutex::new(None),
            leads: Arc::new(Leads::default()),
            tasks: Mutex::new(Vec::new()),
            producer_ids: tokio::sync::Mutex::new(0..0),
            submitting: Mutex::new(()),
            relaying_states: Arc::new(tokio::sync::Semaphore::new(RELAYED_STATES_AT_ONCE)),
        });
        restarted.follow_once(&broker);
        let end = || {
            broker
                .store()
                .next_offset(metadata::METADATA_KEY)
                .expect("the end")
        };
        let before = end();
        // PROPOSE_PATIENCE only turns a hang into a failure.
        tokio::time::timeout(PROPOSE_PATIENCE, Arc::clone(&restarted).register())
            .await
            .expect("the registration gave up");
        assert_eq!(end() - before, 1, "registrations appended");
        node.shutdown().await.expect("the node's shutdown");
    }

    /// Found by the review of Kafka produce: an entry is one record of the
    /// store, so a proposal within the bound must encode within
    /// `MESSAGE_BYTES_MAX` however small its records (each costs its
    /// base64, quotes and a comma) or large.
    #[test]
    fn a_proposal_within_the_bound_fits_one_stored_log_record() {
        use crate::raft::log::Record;
        use crate::raft::types::{Entry, LogId, ProposalId};
        let key = "a-topic-name-of-some-length-0000000000000001.0";
        for size in [1, 2, 3, 40, 1000, PROPOSAL_BYTES_MAX / 4 * 3 - 3] {
            let count = (PROPOSAL_BYTES_MAX / (size.div_ceil(3) * 4 + 3)).max(1) + 10;
            let chunks = proposals(vec![vec![b'x'; size]; count]);
            assert!(
                chunks.len() > 1 || count == 11,
                "size {size}: one chunk of {count}"
            );
            for chunk in chunks {
                let entry = Entry {
                    log_id: LogId::default(),
                    payload: openraft::EntryPayload::Normal(Proposal {
                        id: ProposalId {
                            node: u64::MAX,
                            seq: u64::MAX,
                        },
                        ops: vec![partition::append_op(key, chunk, None, u64::MAX)],
                    }),
                };
                let stored = Record::Entry(entry).encode().len();
                assert!(
                    stored <= MESSAGE_BYTES_MAX,
                    "records of {size} bytes: an entry of {stored} bytes"
                );
            }
        }
        let large = vec![vec![b'x'; PROPOSAL_BYTES_MAX / 4 * 3 + 1]];
        assert!(matches!(
            check_record_sizes(&large),
            Err(Error::TooLarge(_))
        ));
    }
}
