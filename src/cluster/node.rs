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
//! Partitions are not replicated yet (stage 4 of the design): the node
//! refuses writes to partitions ([`Cluster::refuses_writes`]).
//!
//! The data directory remembers whose it is ([`claim_dir`]): a node's
//! directory is never started as another node's, nor as a single node's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::link::Links;
use super::metadata::{
    self, METADATA_GROUP, MetaOp, Metadata, NodeInfo, PartitionOf, Refusal, TopicConfig, Verdict,
};
use super::peers::Cluster;
use super::runtime::Runtime;
use super::secret::Secret;
use crate::broker::catalog::{
    CATALOG_FILE_NAME, Catalog, KeyOwner, NewTopic, Topic, check_name, partition_key,
};
use crate::broker::cluster::{self, Member, Pending, Placement};
use crate::broker::time::now_ms;
use crate::broker::{Broker, Error, Result, Written};
use crate::broker::{producers, topics};
use crate::lock::lock;
use crate::log;
use crate::raft::durability::{Done, Durability};
use crate::raft::groups::{GroupSpec, Groups, ProposeError, TIMING_DEFAULT};
use crate::raft::log::{marked_removed, stored_groups};
use crate::raft::snapshot::Keys;
use crate::raft::types::{NodeId, Op, OpResult, Proposal};

/// How long a change waits for group 0 to take it: several elections'
/// worth (an election takes about a second), so a change made while the
/// leader is replaced waits it out rather than failing.
pub const PROPOSE_PATIENCE: Duration = Duration::from_secs(10);

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

/// Bytes of records one proposal to a partition's group carries at most
/// (a request with more is proposed in several): an AppendEntries carries
/// up to `ENTRIES_PER_APPEND_MAX` (16) entries, and their JSON, text
/// escaped within text, must stay within a peer frame (32 MiB) with room.
/// At least one record goes in each, whatever its size.
pub const PROPOSAL_BYTES_MAX: usize = 512 << 10;

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
    /// The offset of the next record to fold, as folded here.
    progress: watch::Sender<u64>,
    /// `None` once shut down.
    runtime: Mutex<Option<Runtime>>,
    /// The follower and the registration.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

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
        )?;
        let groups = Arc::new(groups);
        // What this node folded before it stopped: the topics whose groups
        // it ran, so what it holds of others is a crash's leftovers.
        let mut metadata = Metadata::new();
        let followed = metadata.follow(&mut broker.store());
        if let Some(stop) = followed.stopped {
            return Err(format!(
                "cannot fold the cluster's metadata stored here: {stop}"
            ));
        }
        finish_removals(&groups, &metadata, broker).await?;
        groups
            .add(GroupSpec {
                group: METADATA_GROUP,
                replicas: nodes.keys().copied().collect(),
                keys: metadata::keys(),
            })
            .await
            .map_err(|e| format!("cannot start the metadata group: {e}"))?;
        let (links, incoming) = Links::start(listener, cluster.clone(), secret);
        let runtime = Runtime::start(Arc::clone(&groups), links, incoming);
        let node = Arc::new(ClusterNode {
            cluster,
            addresses,
            groups,
            broker: Arc::downgrade(broker),
            progress: watch::Sender::new(metadata.next_offset()),
            folded: Mutex::new(Folded {
                metadata,
                verdicts: VecDeque::new(),
                stopped: None,
            }),
            runtime: Mutex::new(Some(runtime)),
            tasks: Mutex::new(Vec::new()),
        });
        broker.replace_catalog(lock(&node.folded).metadata.catalog());
        node.follow_once(broker);
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
    /// broker is gone.
    async fn follow(self: Arc<Self>, mut sync_points: watch::Receiver<u64>) {
        loop {
            tokio::select! {
                changed = sync_points.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(FOLLOW_IDLE) => {}
            }
            let Some(broker) = self.broker.upgrade() else {
                return;
            };
            self.follow_once(&broker);
        }
    }

    /// Folds what is durable of the metadata log and not folded yet; puts
    /// the new catalog in the broker if anything was folded.
    fn follow_once(&self, broker: &Broker) {
        let mut folded = lock(&self.folded);
        let followed = folded.metadata.follow(&mut broker.store());
        if !followed.verdicts.is_empty() {
            broker.replace_catalog(folded.metadata.catalog());
            for (offset, verdict) in followed.verdicts {
                report(offset, &verdict);
                if folded.verdicts.len() == VERDICTS_KEPT {
                    folded.verdicts.pop_front();
                }
                folded.verdicts.push_back((offset, verdict));
            }
            self.progress.send_replace(folded.metadata.next_offset());
        }
        match followed.stopped {
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
    }

    /// Runs the partition groups the metadata gives this node, and no
    /// others: after every fold, and every [`RECONCILE_RETRY`] while a
    /// change failed.
    async fn reconcile(self: Arc<Self>) {
        let mut progress = self.progress.subscribe();
        let mut failing = BTreeMap::new();
        loop {
            let wanted = lock(&self.folded).metadata.groups_on(self.cluster.me);
            let settled = self.reconcile_once(&wanted, &mut failing).await;
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
    /// list (their topic was deleted), then adds those it lists that do
    /// not run; whether all went through. A failure is logged when it
    /// first happens (`failing` remembers each group's last one).
    async fn reconcile_once(
        &self,
        wanted: &BTreeMap<u32, PartitionOf>,
        failing: &mut BTreeMap<u32, String>,
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
            settled &= noted(g, "remove", removed, failing);
        }
        for (&g, of) in wanted.iter().filter(|(g, _)| !running.contains(g)) {
            let spec = GroupSpec {
                group: g,
                replicas: of.replicas.clone(),
                keys: partition_keys(&of.key),
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
        let info = NodeInfo {
            http: self.addresses.http.clone(),
            kafka: self.addresses.kafka.clone(),
            peer: self.addresses.peer.clone(),
        };
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
                Err(e) => {
                    log::info(format_args!(
                        "registering this node with the cluster: {e}; trying again"
                    ));
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
            }
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
        let folded =
            tokio::time::timeout(FOLD_PATIENCE, progress.wait_for(|&next| next > offset)).await;
        let stopped = || {
            lock(&self.folded)
                .stopped
                .as_ref()
                .map(|why| format!(" (the fold stopped: {why})"))
                .unwrap_or_default()
        };
        if !matches!(folded, Ok(Ok(_))) {
            return Err(Error::Unavailable {
                why: format!(
                    "the change is at offset {offset} of the cluster's metadata, which this \
                     node has not folded within {FOLD_PATIENCE:?}{}",
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
        check_name(&new.name).map_err(Error::Invalid)?;
        let nodes = u32::try_from(self.cluster.membership.len()).unwrap_or(u32::MAX);
        let factor = REPLICATION_FACTOR_DEFAULT.min(nodes);
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

    /// [`cluster::Cluster::append`].
    async fn append(
        &self,
        topic: String,
        partition: u32,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<u64>> {
        let (group, key) = {
            let folded = lock(&self.folded);
            let meta =
                folded
                    .metadata
                    .topics()
                    .get(&topic)
                    .ok_or_else(|| Error::TopicNotFound {
                        topic: topic.clone(),
                    })?;
            let of = meta.partitions.get(partition as usize).ok_or_else(|| {
                Error::PartitionNotFound {
                    topic: topic.clone(),
                    partition: u64::from(partition),
                    partitions: u32::try_from(meta.partitions.len()).unwrap_or(u32::MAX),
                }
            })?;
            (of.group, partition_key(&topic, meta.id, partition))
        };
        let total = payloads.len();
        let mut offsets = Vec::with_capacity(total);
        for chunk in proposals(payloads) {
            let ops = chunk
                .into_iter()
                .map(|payload| {
                    String::from_utf8(payload).map(|msg| Op::Send {
                        key: key.clone(),
                        msg,
                    })
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| {
                    Error::Unsupported(
                        "records that are not text (Kafka's) are not replicated yet".into(),
                    )
                })?;
            let proposal = Proposal {
                id: self.groups.next_proposal_id(),
                ops,
            };
            let proposed = self
                .groups
                .propose_at_leader(group, proposal, PROPOSE_PATIENCE)
                .await;
            match proposed {
                Ok((_, results)) => offsets.extend(results.iter().filter_map(|r| match r {
                    OpResult::Offset(offset) => Some(*offset),
                    OpResult::Committed => None,
                })),
                Err(e) if offsets.is_empty() => return Err(unavailable(e)),
                Err(e) => {
                    return Err(Error::Unavailable {
                        why: format!(
                            "{} of the {total} records were committed, the others not: {}",
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
        let folded = lock(&self.folded);
        let runtime = lock(&self.runtime);
        let peers: Vec<serde_json::Value> = self
            .cluster
            .membership
            .nodes()
            .iter()
            .map(|(&id, address)| {
                let up = if id == self.cluster.me {
                    true
                } else {
                    runtime.as_ref().is_some_and(|r| r.links().is_up(id))
                };
                json!({"id": id, "address": address, "linked": up})
            })
            .collect();
        let nodes: Vec<serde_json::Value> = folded
            .metadata
            .nodes()
            .iter()
            .map(|(id, info)| {
                json!({"id": id, "http": info.http, "kafka": info.kafka, "peer": info.peer})
            })
            .collect();
        let partitions: Vec<serde_json::Value> = folded
            .metadata
            .topics()
            .iter()
            .flat_map(|(name, topic)| {
                topic.partitions.iter().enumerate().map(move |(p, of)| {
                    json!({"topic": name, "partition": p, "group": of.group,
                        "replicas": of.replicas, "leader": self.groups.leader(of.group)})
                })
            })
            .collect();
        json!({
            "node_id": self.cluster.me,
            "groups": self.groups.ids(),
            "partitions": partitions,
            "cluster_id": self.cluster.id,
            "metadata_leader": self.groups.leader(METADATA_GROUP),
            "metadata_offset": folded.metadata.next_offset(),
            "metadata_stopped": folded.stopped,
            "peers": peers,
            "nodes": nodes,
        })
    }

    fn node_id(&self) -> u64 {
        self.cluster.me
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
            leader: self.groups.leader(group.group),
            replicas: group.replicas,
        })
    }

    fn append(
        &self,
        topic: &str,
        partition: u32,
        payloads: Vec<Vec<u8>>,
    ) -> Pending<'_, Result<Vec<u64>>> {
        Box::pin(self.append(topic.to_string(), partition, payloads))
    }

    fn refuses_writes(&self) -> Option<String> {
        Some(
            "this node is part of a cluster, which replicates only HTTP produce so far (issue \
             20, stage 4): Kafka produce, offset commits and record deletions are refused"
                .into(),
        )
    }
}

/// A proposal group 0 did not take (or may not have) as the broker's error.
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
    let log_start = topics::deleted_before_key(key);
    Keys::matching(move |k| {
        k == log
            || k == log_start
            || (producers::is_state_key(k)
                && k.strip_prefix("producer ")
                    .and_then(|rest| rest.split_once(' '))
                    .is_some_and(|(_, of)| of == log))
    })
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

/// Finishes the removals a crash cut short (logs marked `Removed`, which
/// would make every `add` refused), then removes what this node holds of
/// partitions whose topic its metadata no longer has: left by a crash in
/// a removal before its mark. A removed group's keys are those of its
/// partition if the metadata still names it, else its log alone (its
/// partition's keys are then removed as dead).
async fn finish_removals(
    groups: &Arc<Groups>,
    metadata: &Metadata,
    broker: &Broker,
) -> std::result::Result<(), String> {
    let stored = stored_groups(&broker.store()).map_err(|e| e.to_string())?;
    let wanted = metadata.groups_on(groups.me());
    for g in stored {
        let marked = marked_removed(&mut broker.store(), g).map_err(|e| e.to_string())?;
        if !marked {
            continue;
        }
        let keys = match wanted.get(&g) {
            Some(of) => partition_keys(&of.key),
            None => Keys::matching(|_| false),
        };
        groups.delete_stored(g, &keys).await?;
        log::info(format_args!("group {g}: finished its removal, cut short"));
    }
    let catalog = metadata.catalog();
    let mut store = broker.store();
    for key in store.keys().map_err(|e| e.to_string())? {
        if catalog.owner_of(&key) == KeyOwner::Dead {
            match store.remove_key(&key) {
                Ok(()) => log::info(format_args!("removed {key}: its topic was deleted")),
                Err(e) => log::warn(format_args!("cannot remove {key} of a deleted topic: {e}")),
            }
        }
    }
    Ok(())
}

/// `payloads` cut into proposals of at most [`PROPOSAL_BYTES_MAX`] each
/// (at least one record each), in order.
fn proposals(payloads: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut bytes = 0;
    for payload in payloads {
        match out.last_mut() {
            Some(last) if bytes + payload.len() <= PROPOSAL_BYTES_MAX => {
                bytes += payload.len();
                last.push(payload);
            }
            _ => {
                bytes = payload.len();
                out.push(vec![payload]);
            }
        }
    }
    out
}
