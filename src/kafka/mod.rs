//! The Kafka wire protocol, beside the HTTP API in `seglog serve
//! --kafka ADDR`: the clients people already use with Kafka (kcat,
//! librdkafka and its bindings, kafka-python) produce to and consume from
//! seglog. It works on the shared [`Broker`]: the same store, topic
//! catalog, consumer group offsets and group commit as the HTTP front end,
//! so a record produced through one is fetched through the other.
//!
//! Messages are encoded and decoded by the `kafka-protocol` crate,
//! generated from Kafka's own message schemas; this module decides what the
//! broker does with them. It imports [`crate::broker`] (and the leaf
//! modules), never [`crate::http`]; it maps the broker's errors to Kafka
//! error codes in [`error`], in one place.
//!
//! # Layout
//! - [`batch`]: record batches (magic 2) in and out, headers kept exactly.
//! - [`connection`]: frames in and out of one TCP connection, in order, and
//!   the dispatch of each request to its handler.
//! - [`reply`]: what a handler gives back: a reply now, later, or none.
//! - [`error`]: the broker's errors as Kafka error codes.
//! - [`versions`]: the APIs and versions served, and ApiVersions.
//! - [`topics`]: Metadata, CreateTopics, DeleteTopics.
//! - [`produce`]: Produce, answered once the records are durable; an
//!   idempotent producer's retried batch is answered, not appended again.
//! - [`producers`]: InitProducerId, and the expiry of producers' states.
//! - [`fetch`]: Fetch with long polls, and ListOffsets.
//! - [`groups`]: FindCoordinator and the consumer group protocol (JoinGroup,
//!   SyncGroup, Heartbeat, LeaveGroup), membership in memory.
//! - [`offsets`]: OffsetCommit and OffsetFetch, on the broker's group offsets.
//! - [`admin`]: the admin APIs of topics and the cluster: DescribeConfigs,
//!   AlterConfigs, IncrementalAlterConfigs, CreatePartitions, DeleteRecords,
//!   DescribeCluster.
//! - [`admin_groups`]: ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//! - [`sasl`]: SaslHandshake and SaslAuthenticate (PLAIN, SCRAM-SHA-256/512)
//!   with `serve --users`; nothing else before them.
//! - [`authorize`]: a user's topic prefixes on each request: the topics it
//!   may not touch are taken out and answered TOPIC_AUTHORIZATION_FAILED.
//! - [`refusals`]: Kafka's error for a request of an API not served (the
//!   transaction and ACL APIs, SaslHandshake without `--users`), instead of
//!   a closed connection.

pub mod admin;
pub mod admin_groups;
pub mod authorize;
pub mod batch;
pub mod connection;
pub mod error;
pub mod fetch;
pub mod groups;
pub mod offsets;
pub mod produce;
pub mod producers;
pub mod refusals;
pub mod reply;
pub mod sasl;
pub mod topics;
pub mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::auth::tls::Tls;
use crate::broker::Broker;
use crate::log;

/// The one broker's id: seglog serve is a single node.
pub const NODE_ID: i32 = 0;

/// Most client connections at once: each holds a task, buffers and up to
/// `connection::IN_FLIGHT_MAX` requests; 1,024 is far more than the
/// clients of one node need and keeps the server within a normal file
/// descriptor limit beside the store's open logs.
pub const CONNECTIONS_MAX: usize = 1024;

/// Cluster id reported by Metadata.
pub const CLUSTER_ID: &str = "seglog";

/// What the Kafka handlers share: the broker, the address clients are
/// told to connect to, and the consumer groups' membership.
pub struct Context {
    /// The store, catalog, group commit and limits, shared with HTTP.
    pub broker: Arc<Broker>,
    /// Host and port that Metadata and FindCoordinator give out.
    pub advertised: (String, i32),
    /// Members, generations and assignments of the consumer groups
    /// (in memory: a restart makes every consumer join again).
    pub groups: groups::Coordinator,
    /// Partitions of a topic a Metadata request creates on first use (0:
    /// such requests get UNKNOWN_TOPIC_OR_PARTITION instead).
    pub auto_create_partitions: u32,
    /// How long an idempotent producer's state in a partition is kept
    /// after its last batch there (`--producer-expiry`).
    pub producer_expiry: std::time::Duration,
    /// The users (`--users`): connections authenticate with SASL first.
    /// `None`: no SASL, every connection may do everything.
    pub auth: Option<Arc<Authenticator>>,
    /// TLS on the listener (`--tls-cert`, `--tls-key`), or plain TCP.
    pub tls: Option<Tls>,
}

/// Accepts connections until the broker's shutdown begins, one task each.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    let sweeper = tokio::spawn(groups::sweep_loop(Arc::clone(&ctx)));
    let expiry = tokio::spawn(producers::expiry_loop(Arc::clone(&ctx)));
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        log::warn(format_args!(
                            "kafka: {peer} refused: {CONNECTIONS_MAX} connections are open"
                        ));
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        log::warn(format_args!("kafka: cannot set TCP_NODELAY: {e}"));
                    }
                    let ctx = Arc::clone(&ctx);
                    tokio::spawn(async move {
                        match &ctx.tls {
                            None => {
                                let (reader, writer) = stream.into_split();
                                connection::run(reader, writer, peer, Arc::clone(&ctx)).await;
                            }
                            Some(tls) => match tls.accept(stream).await {
                                Ok(stream) => {
                                    let (reader, writer) = tokio::io::split(stream);
                                    connection::run(reader, writer, peer, Arc::clone(&ctx)).await;
                                }
                                Err(e) => log::warn(format_args!("kafka: {peer}: {e}")),
                            },
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of descriptors, for example: wait a moment rather
                    // than spin.
                    log::warn(format_args!("kafka: accept failed: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            () = ctx.broker.shutting_down() => break,
        }
    }
    sweeper.abort();
    expiry.abort();
}

/// The address to advertise: the one given, else the listener's own (an
/// unspecified IP such as 0.0.0.0 becomes 127.0.0.1, which clients on
/// this machine can reach).
pub fn advertised(given: Option<&str>, bound: SocketAddr) -> Result<(String, i32), String> {
    match given {
        Some(text) => {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| format!("--kafka-advertise is HOST:PORT, not {text:?}"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("--kafka-advertise has a bad port: {text:?}"))?;
            Ok((host.to_string(), i32::from(port)))
        }
        None => {
            let ip = if bound.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                bound.ip().to_string()
            };
            Ok((ip, i32::from(bound.port())))
        }
    }
}
