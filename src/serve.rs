//! `seglog serve`: its arguments, its start, its listeners and its
//! shutdown, above both front ends. It opens the store and the topic
//! catalog, removes partition logs of deleted topics, builds the
//! [`Broker`], runs retention on a timer, serves HTTP (and Kafka with
//! `--kafka`) until Ctrl-C or SIGTERM, then finishes what is in flight,
//! syncs and closes the store cleanly. With `--tls-cert`/`--tls-key` both
//! listeners speak TLS; with `--users` both ask for a user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;
use crate::auth::tls::Tls;
use crate::auth::users::Users;
use crate::broker::catalog::{Catalog, PARTITIONS_MAX};
use crate::broker::{Broker, Limits, SHUTDOWN_GRACE, retention, topics};
use crate::cluster::node::{Addresses, ClusterNode, check_single_dir, claim_dir};
use crate::cluster::peers::Cluster;
use crate::cluster::secret::Secret;
use crate::log;
use crate::storage::format::MESSAGE_BYTES_MAX;
use crate::storage::space::Space;
use crate::storage::store::{Retention, SEGMENT_BYTES_DEFAULT, Store, StoreConfig};

/// Default largest request body: room for a batch of many records, small
/// enough that a few at once do not strain memory.
pub const REQUEST_BYTES_DEFAULT: usize = 16 << 20;

/// Default `--producer-expiry`, in milliseconds
/// ([`crate::broker::producers::EXPIRY_DEFAULT`], 7 days).
pub const PRODUCER_EXPIRY_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// Default time between retention passes (Kafka's
/// `log.retention.check.interval.ms` is five minutes; one is as cheap here,
/// since a pass lists each partition's segments from memory).
pub const RETENTION_CHECK_MS_DEFAULT: u64 = 60_000;

/// Options of `seglog serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the address is
    /// logged on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Keep data in DIR. Without it: $XDG_DATA_HOME/seglog, else
    /// ~/.local/share/seglog, else ./seglog-data; the choice is logged.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Segment size in bytes at which a partition's segment is sealed.
    #[arg(long, value_name = "BYTES", default_value_t = SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,
    /// Largest record, as stored (its timestamp, key and value as JSON).
    #[arg(long, value_name = "BYTES", default_value_t = MESSAGE_BYTES_MAX)]
    pub max_record_bytes: usize,
    /// Largest request body.
    #[arg(long, value_name = "BYTES", default_value_t = REQUEST_BYTES_DEFAULT)]
    pub max_request_bytes: usize,
    /// Delete a partition's sealed segments whose last write is older than
    /// this, for topics that set no retention_ms of their own.
    #[arg(long, value_name = "MS")]
    pub retention_ms: Option<u64>,
    /// Delete a partition's oldest sealed segments while it holds more than
    /// this without them, for topics that set no retention_bytes of their own.
    #[arg(long, value_name = "BYTES")]
    pub retention_bytes: Option<u64>,
    /// Time between retention passes.
    #[arg(long, value_name = "MS", default_value_t = RETENTION_CHECK_MS_DEFAULT)]
    pub retention_check_ms: u64,
    /// Threads serving requests (default: one per core). Group commit,
    /// fsyncs and large reads run on threads of their own besides.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Also serve the Kafka wire protocol on ADDR (for example
    /// 127.0.0.1:9092); port 0 picks a free port (logged on stderr).
    #[arg(long, value_name = "ADDR")]
    pub kafka: Option<SocketAddr>,
    /// HOST:PORT that Kafka clients are told to connect to (default: the
    /// --kafka address, with 127.0.0.1 for an unspecified IP).
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_advertise: Option<String>,
    /// Partitions of a topic that a Kafka client's Metadata request creates
    /// on first use, as Kafka's auto.create.topics.enable does; 0 turns
    /// that off.
    #[arg(long, value_name = "N", default_value_t = crate::kafka::topics::NUM_PARTITIONS_DEFAULT)]
    pub kafka_auto_create_partitions: u32,
    /// How long an idempotent Kafka producer's state in a partition (its
    /// last batches' sequence numbers) is kept after its last batch there:
    /// a retry after longer is appended as new. Kafka's 7 days by default.
    #[arg(long = "producer-expiry", value_name = "MS", default_value_t = PRODUCER_EXPIRY_MS_DEFAULT)]
    pub producer_expiry_ms: u64,
    /// Let the console (the web page at /ui) create and delete topics; it
    /// is read-only without this. The HTTP API itself takes changes from
    /// any client either way.
    #[arg(long)]
    pub console_writable: bool,
    /// Refuse writes (HTTP 507, Kafka KAFKA_STORAGE_ERROR) while the data
    /// directory's file system has fewer free bytes than this, and take
    /// them again by themselves once space is back; reads go on (default:
    /// 1 GiB or 5% of the file system, the larger, at most a quarter of
    /// it; 0 turns it off; `src/storage/space.rs`). Produce only: commits
    /// and deletions go on.
    #[arg(long, value_name = "BYTES")]
    pub min_free_bytes: Option<u64>,
    /// Serve TLS on both listeners with this certificate chain (PEM);
    /// needs --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Ask every client for a user of this users file (made with `seglog
    /// users add`): SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) on Kafka,
    /// basic auth on HTTP. Read at start; a change takes a restart.
    #[arg(long, value_name = "PATH", env = "SEGLOG_USERS")]
    pub users: Option<PathBuf>,
    /// This node's id in a cluster (with --peers; see the README's
    /// "Running a cluster").
    #[arg(long, value_name = "N", requires = "peers")]
    pub node_id: Option<u64>,
    /// Every node of the cluster, this one included: ID=HOST:PORT,... (a
    /// node listens for its peers on its own entry).
    #[arg(
        long,
        value_name = "ID=HOST:PORT,...",
        requires_all = ["node_id", "cluster_id", "cluster_secret_file"]
    )]
    pub peers: Option<String>,
    /// The cluster's id, the same on every node (with --peers): a node of
    /// another cluster is refused even if it holds the same secret.
    #[arg(long, value_name = "NAME", requires = "peers")]
    pub cluster_id: Option<String>,
    /// A file (mode 0600) holding the secret every node of the cluster
    /// proves it holds before its peers take anything from it (with
    /// --peers; at least 32 random bytes).
    #[arg(long, value_name = "PATH", requires = "peers")]
    pub cluster_secret_file: Option<PathBuf>,
    /// More logs on stderr (-v: lifecycle and syncs, -vv: every error reply).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Runs the server until Ctrl-C or SIGTERM, then shuts down gracefully.
/// The error is the sentence `main` prints.
pub fn run(args: &ServeArgs) -> Result<(), String> {
    log::init(args.verbose);
    check(args)?;
    let dir = crate::data_dir::resolve(args.data_dir.as_deref(), crate::data_dir::Default::PerUser)
        .map_err(|e| format!("cannot create the data directory: {e}"))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = runtime
        .enable_all()
        .thread_name("seglog-serve")
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    runtime.block_on(serve(args, &dir, shutdown_signal()))
}

/// The arguments' values that clap's types do not rule out.
fn check(args: &ServeArgs) -> Result<(), String> {
    if args.max_record_bytes == 0 || args.max_record_bytes > MESSAGE_BYTES_MAX {
        return Err(format!(
            "--max-record-bytes is 1 to {MESSAGE_BYTES_MAX} (the store's record limit), not {}",
            args.max_record_bytes
        ));
    }
    if args.max_request_bytes == 0 {
        return Err("--max-request-bytes must be positive".into());
    }
    if args.retention_check_ms == 0 {
        return Err("--retention-check-ms must be positive".into());
    }
    if args.kafka.is_some() && args.kafka_auto_create_partitions > PARTITIONS_MAX {
        return Err(format!(
            "--kafka-auto-create-partitions is at most {PARTITIONS_MAX}"
        ));
    }
    cluster_args(args)?;
    Ok(())
}

/// The cluster this node belongs to and its secret, with `--peers` (clap
/// makes the four cluster flags go together).
fn cluster_args(args: &ServeArgs) -> Result<Option<(Cluster, Secret)>, String> {
    match (
        args.node_id,
        &args.peers,
        &args.cluster_id,
        &args.cluster_secret_file,
    ) {
        (Some(me), Some(peers), Some(id), Some(secret)) => Ok(Some((
            crate::cluster::peers::parse(id, me, peers)?,
            Secret::read(secret)?,
        ))),
        _ => Ok(None),
    }
}

/// Serves the store in `dir` until `shutdown` resolves, then shuts down
/// gracefully: no new connections, long polls answered at once, writes in
/// flight synced and answered, the store marked clean.
pub async fn serve(
    args: &ServeArgs,
    dir: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // Checked before the store opens: a bad certificate or users file is
    // the operator's to fix, and says so at once.
    let security = security(args)?;
    let cluster = cluster_args(args)?;
    let broker = open(args, dir, cluster.as_ref().map(|(cluster, _)| cluster))?;
    // A cluster's partitions are not replicated yet, so a node of one
    // holds none to trim.
    let retention = cluster.is_none().then(|| {
        tokio::spawn(retention::run(
            Arc::clone(&broker),
            Duration::from_millis(args.retention_check_ms),
        ))
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let kafka_listener = match args.kafka {
        Some(address) => Some(bind_kafka(args, address, cluster.as_ref()).await?),
        None => None,
    };
    // Joined before either front end serves: a request in between would
    // find a single node's catalog.
    let node = match cluster {
        Some((cluster, secret)) => {
            let addresses = Addresses {
                http: advertise(address, &cluster),
                kafka: kafka_listener
                    .as_ref()
                    .map(|k| host_port(&k.advertised.0, k.advertised.1)),
                peer: cluster
                    .membership
                    .address(cluster.me)
                    .unwrap_or_default()
                    .to_string(),
            };
            crate::log::notice(format_args!(
                "node {} of cluster {}, peers on {}",
                cluster.me, cluster.id, addresses.peer
            ));
            Some(ClusterNode::start(cluster, secret, &broker, addresses).await?)
        }
        None => None,
    };
    // Always printed: a user (or a test that asked for port 0) needs it.
    let scheme = if security.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!(
        "seglog: listening on {scheme}://{address}, data in {}; console at {scheme}://{address}/ui/",
        dir.display()
    );
    let kafka = kafka_listener.map(|bound| start_kafka(args, bound, &broker, &security));

    let stopping = Arc::clone(&broker);
    let console = crate::http::Console {
        writable: args.console_writable,
    };
    let served = crate::http::serve(
        listener,
        Arc::clone(&broker),
        console,
        security.http,
        async move {
            shutdown.await;
            crate::log::notice(format_args!("shutting down: finishing requests in flight"));
            // Long polls return at once; new writes are refused; the Kafka
            // listener stops accepting.
            stopping.begin_shutdown();
        },
    )
    .await
    .map_err(|e| format!("serving failed: {e}"));

    if let Some(retention) = retention {
        retention.abort();
        let _ = retention.await;
    }
    if let Some(kafka) = kafka {
        // Its connections finish what waits on the group commit, closed below.
        let _ = kafka.await;
    }
    if let Some(node) = node {
        // Its groups' last writes are made durable by the group commit's
        // last sync point, below.
        if let Err(e) = node.shutdown().await {
            log::error(format_args!("stopping the cluster node: {e}"));
        }
    }
    close(&broker).await?;
    crate::log::notice(format_args!("closed cleanly"));
    served
}

/// TLS and users for both front ends.
struct Security {
    http: crate::http::Security,
    /// Kafka's TLS: the same certificate, without HTTP's ALPN.
    kafka_tls: Option<Tls>,
}

/// Reads the certificate, key and users file the arguments name; each
/// error names the file and what is wrong with it.
fn security(args: &ServeArgs) -> Result<Security, String> {
    let (http_tls, kafka_tls) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (
            Some(Tls::load(cert, key, &[b"http/1.1"])?),
            Some(Tls::load(cert, key, &[])?),
        ),
        (None, None) => (None, None),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let auth = match &args.users {
        Some(path) => {
            let users = Users::load(path)?;
            if users.is_empty() {
                return Err(format!(
                    "the users file {} has no users; add one with `seglog users add NAME \
                     --users {}`",
                    path.display(),
                    path.display()
                ));
            }
            if http_tls.is_none() {
                log::warn(format_args!(
                    "--users without --tls-cert: SASL/PLAIN and HTTP basic auth send \
                     passwords in the clear"
                ));
            }
            let auth = Authenticator::new(users)?;
            crate::log::notice(format_args!(
                "{} users from {}: Kafka asks for SASL, HTTP for basic auth",
                auth.user_count(),
                path.display()
            ));
            Some(Arc::new(auth))
        }
        None => None,
    };
    Ok(Security {
        http: crate::http::Security {
            tls: http_tls,
            auth,
        },
        kafka_tls,
    })
}

/// Opens the store and the catalog, tidies the store, and builds the
/// broker. A node of a cluster starts with no topics: its catalog comes
/// from the cluster's metadata, and its store's keys are the groups'.
fn open(args: &ServeArgs, dir: &Path, cluster: Option<&Cluster>) -> Result<Arc<Broker>, String> {
    let config = StoreConfig {
        segment_bytes: args.segment_bytes,
        ..StoreConfig::default()
    };
    let mut store = Store::open(dir, config).map_err(|e| format!("cannot open the store: {e}"))?;
    log::info(format_args!(
        "opened {} ({})",
        dir.display(),
        if store.opened_clean() {
            "clean"
        } else {
            "recovered"
        }
    ));
    // Whose the directory is, checked once the store's lock is held (two
    // processes cannot both claim it), before anything is removed.
    let catalog = match cluster {
        Some(cluster) => {
            claim_dir(dir, cluster)?;
            Catalog::replica(0, [])
        }
        None => {
            check_single_dir(dir)?;
            let catalog = Catalog::open(dir)?;
            topics::remove_dead_keys(&mut store, &catalog);
            catalog
        }
    };
    let limits = Limits {
        record_bytes: args.max_record_bytes,
        request_bytes: args.max_request_bytes,
    };
    let default_retention = Retention {
        bytes: args.retention_bytes,
        age: args.retention_ms.map(Duration::from_millis),
    };
    let space = Space::watch(dir, args.min_free_bytes)
        .map_err(|e| format!("cannot read the free space of {}: {e}", dir.display()))?;
    Broker::new(store, catalog, limits, default_retention, space).map_err(|e| e.to_string())
}

/// The Kafka listener, bound, and the address clients are told.
struct KafkaListener {
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
    advertised: (String, i32),
}

/// Binds the Kafka listener. A node of a cluster whose listener is on an
/// unspecified IP advertises the host of its own `--peers` entry, where
/// the other nodes reach it, unless `--kafka-advertise` says otherwise.
async fn bind_kafka(
    args: &ServeArgs,
    address: SocketAddr,
    cluster: Option<&(Cluster, Secret)>,
) -> Result<KafkaListener, String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for Kafka: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the Kafka listening address: {e}"))?;
    let given = match (&args.kafka_advertise, cluster) {
        (Some(given), _) => Some(given.clone()),
        (None, Some((cluster, _))) => Some(advertise(bound, cluster)),
        (None, None) => None,
    };
    let advertised = crate::kafka::advertised(given.as_deref(), bound)?;
    Ok(KafkaListener {
        listener,
        bound,
        advertised,
    })
}

/// Serves Kafka on `bound` in a task of its own, until the broker's
/// shutdown begins.
fn start_kafka(
    args: &ServeArgs,
    bound: KafkaListener,
    broker: &Arc<Broker>,
    security: &Security,
) -> tokio::task::JoinHandle<()> {
    // Always printed, like the HTTP address.
    crate::log::notice(format_args!(
        "Kafka protocol on {}, advertised as {}:{}",
        bound.bound, bound.advertised.0, bound.advertised.1
    ));
    let protocol = match (&security.kafka_tls, &security.http.auth) {
        (None, None) => "PLAINTEXT",
        (Some(_), None) => "SSL",
        (None, Some(_)) => "SASL_PLAINTEXT",
        (Some(_), Some(_)) => "SASL_SSL",
    };
    crate::log::notice(format_args!(
        "Kafka clients connect with security.protocol={protocol}"
    ));
    let ctx = Arc::new(crate::kafka::Context {
        broker: Arc::clone(broker),
        advertised: bound.advertised,
        groups: crate::kafka::groups::Coordinator::default(),
        auto_create_partitions: args.kafka_auto_create_partitions,
        producer_expiry: Duration::from_millis(args.producer_expiry_ms),
        auth: security.http.auth.clone(),
        tls: security.kafka_tls.clone(),
    });
    tokio::spawn(crate::kafka::serve(bound.listener, ctx))
}

/// Where a node of `cluster` listening on `bound` is reached: `bound`,
/// or on an unspecified IP the host of the node's own `--peers` entry.
fn advertise(bound: SocketAddr, cluster: &Cluster) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let own = cluster.membership.address(cluster.me).unwrap_or_default();
    let host = own.rsplit_once(':').map_or(own, |(host, _)| host);
    format!("{host}:{}", bound.port())
}

/// `host:port`, an IPv6 host in brackets.
fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Drains the group commit and closes the store, marked clean. Gives up
/// after [`SHUTDOWN_GRACE`] if the last sync point does not finish (a
/// stalled disk): the store is then left unmarked, recovered at the next
/// start.
async fn close(broker: &Arc<Broker>) -> Result<(), String> {
    broker.close_group_commit();
    let joining = Arc::clone(broker);
    let joined = tokio::time::timeout(
        SHUTDOWN_GRACE,
        tokio::task::spawn_blocking(move || joining.join_group_commit()),
    )
    .await;
    match joined {
        Ok(Ok(result)) => result.map_err(|e| e.to_string())?,
        Ok(Err(e)) => return Err(format!("joining the group commit thread: {e}")),
        Err(_) => {
            return Err(
                "the last sync point did not finish in time; the store is not marked clean".into(),
            );
        }
    }
    // Connection tasks may still hold the broker for a moment after the
    // listeners return; the store refuses writes once shut down.
    broker
        .store()
        .shut_down()
        .map_err(|e| format!("closing the store: {e}"))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                log::warn(format_args!(
                    "cannot watch for SIGTERM ({e}); Ctrl-C still works"
                ));
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
