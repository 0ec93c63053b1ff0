//! What the broker asks of the cluster a node of `seglog serve --peers`
//! belongs to. The cluster layer (`src/cluster/`) implements it and knows
//! the broker; the broker knows only this trait, so that neither front end
//! nor the broker imports the Raft groups.
//!
//! A node of a cluster reads its topics from a catalog the cluster
//! replaces after each change of its metadata ([`super::Broker::replace_catalog`]),
//! and changes them only through the cluster ([`Cluster::create_topic`],
//! [`Cluster::delete_topic`]), which answers once the change is in this
//! node's catalog.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::catalog::{NewTopic, Topic};
use super::error::Result;
use super::producers::Sequenced;

/// A future the trait's methods return: boxed, so that the trait can be
/// held as `dyn Cluster`.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The most bytes of body a relayed request or answer carries
/// ([`Cluster::relay`]): in base64 (4/3) with its head, within one frame of
/// the peer links (32 MiB, `cluster::frame::FRAME_BYTES_MAX`; a test there
/// checks it), so that the link never refuses a relayed answer for its size.
pub const RELAY_BODY_BYTES_MAX: usize = 16 << 20;

/// What of an HTTP request is relayed to another node besides its body.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Path and query, as the client sent them.
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// What of an HTTP answer is relayed back besides its body.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// What kind of read a relayed request is: the receiving node serves each
/// kind in room of its own, so that short state reads neither wait behind
/// nor crowd out long polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayKind {
    /// A fetch of records, which may long-poll (`wait_ms`).
    Fetch,
    /// A partition's state (`GET /topics/{t}/partitions/{p}`): short, no
    /// long poll. The relaying node bounds how many it has out at once,
    /// and asks the partition's other replicas where one answers other
    /// than 200 (say, 404 for a topic it has not applied yet).
    State,
}

/// Serves a request another node relayed here (from the node with the
/// given id): the HTTP layer's routes, installed once they exist
/// ([`Cluster::serve_relayed`]).
pub type Relayer = Arc<
    dyn Fn(u64, RequestHead, Vec<u8>) -> Pending<'static, (ResponseHead, Vec<u8>)> + Send + Sync,
>;

/// The cluster a node belongs to.
pub trait Cluster: Send + Sync + 'static {
    /// Creates a topic through the cluster's metadata; `Ok` once this
    /// node's catalog holds it.
    fn create_topic(&self, new: NewTopic) -> Pending<'_, Result<Topic>>;

    /// Deletes a topic through the cluster's metadata; `Ok` once this
    /// node's catalog no longer holds it.
    fn delete_topic(&self, name: String) -> Pending<'_, Result<Topic>>;

    /// The cluster as this node sees it, for `GET /cluster`.
    fn status(&self) -> serde_json::Value;

    /// Appends `payloads` (records as stored: JSON text) to partition
    /// `partition` of `topic` through the partition's Raft group, at its
    /// leader: each record's offset, once the records are committed
    /// (durable on a majority of the partition's replicas) and applied.
    fn append(
        &self,
        topic: &str,
        partition: u32,
        payloads: Vec<Vec<u8>>,
    ) -> Pending<'_, Result<Vec<u64>>>;

    /// Starts appending one partition's records of a Kafka produce (as
    /// stored), with an idempotent producer's `sequence`, through the
    /// partition's group: refused at once (`Error::NotLeader`) unless this
    /// node leads it. The records are in the group's queue when this
    /// returns, so a connection's batches enter the log in the order it
    /// sent them; the future resolves once they are committed (durable on
    /// a majority of the replicas) and applied.
    fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Vec<u8>>,
        sequence: Option<Sequenced>,
    ) -> Result<Pending<'static, Result<Produced>>>;

    /// Whether this node serves Kafka's reads of partition `partition` of
    /// `topic`: its leader does, and says whether it has applied every
    /// entry it holds (if not, an offset past its end may be of records
    /// committed and not applied yet); another node refuses
    /// (`Error::NotLeader`), as Kafka's followers refuse consumers.
    fn reads_at(&self, topic: &str, partition: u32) -> Result<bool>;

    /// A producer id unique in the cluster, for Kafka's InitProducerId.
    fn producer_id(&self) -> Pending<'_, Result<u64>>;

    /// Commits consumer groups' offsets through the cluster's metadata
    /// group: each change names an offset key (`broker::groups::offset_key`)
    /// and the commit to record there, or `None` to remove it. `Ok` once
    /// committed and applied on this node, so that this node's reads see
    /// it; several proposals for a long list, not atomic across them.
    fn commit_offsets(&self, changes: Vec<OffsetChange>) -> Pending<'_, Result<()>>;

    /// The node that coordinates consumer groups (Kafka's FindCoordinator):
    /// the metadata group's leader, if this node knows one.
    fn coordinator(&self) -> Option<u64>;

    /// Why this node refuses writes to partitions other than
    /// [`Cluster::append`]'s, if it does.
    fn refuses_writes(&self) -> Option<String>;

    /// This node's id in the cluster.
    fn node_id(&self) -> u64;

    /// The replication factor of the topics this cluster creates.
    fn replication_factor(&self) -> u32;

    /// The cluster's registered nodes, by id.
    fn members(&self) -> Vec<Member>;

    /// Where partition `partition` of `topic` lives, as this node knows:
    /// `None` for a partition the cluster's metadata does not have.
    fn placement(&self, topic: &str, partition: u32) -> Option<Placement>;

    /// Relays a read of partition `partition` of `topic`, which has no
    /// replica on this node, to a node that has one (its leader where
    /// known), which answers it as its own; waits at most `patience`.
    /// `Error::Unavailable` when no replica could be reached.
    fn relay(
        &self,
        topic: &str,
        partition: u32,
        head: RequestHead,
        kind: RelayKind,
        patience: std::time::Duration,
    ) -> Pending<'_, Result<(ResponseHead, Vec<u8>)>>;

    /// Installs what serves the requests other nodes relay here; until
    /// then they are refused (the relaying node tries another replica).
    fn serve_relayed(&self, relayer: Relayer);
}

/// A change of one consumer group offset: its key, and the offset and
/// metadata string to record (`None`: remove it).
pub type OffsetChange = (String, Option<(u64, String)>);

/// A registered node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Where Kafka clients reach it (`host:port`), if it serves Kafka.
    pub kafka: Option<String>,
}

/// Where a partition lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Its replicas, the preferred leader first.
    pub replicas: Vec<u64>,
    /// Its leader, if this node runs a replica and knows one.
    pub leader: Option<u64>,
}

/// What a produce through the cluster did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Produced {
    /// The records were appended from this offset on.
    Appended(u64),
    /// An idempotent producer's batch appended before, from this offset:
    /// nothing appended now.
    Duplicate(u64),
    /// Refused: a newer epoch of the producer took over.
    Fenced { current: i16 },
    /// Refused: the batch's sequence does not follow the producer's last.
    OutOfOrder { expected: i32 },
}
