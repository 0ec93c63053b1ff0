//! `seglog serve`: topics of partitions, produce, fetch and consumer group
//! offsets over HTTP/1.1 and JSON, on the storage engine the Maelstrom node
//! uses, with the same group commit: a write is answered once durable.
//!
//! # Layout
//! - [`catalog`]: the topics, in a small durable file beside the store.
//! - [`records`]: what a stored record holds, and how replies serve it.
//! - [`app`]: the state handlers share, and waiting for a sync point.
//! - [`api`]: the routes.
//! - [`error`]: error replies and their stable codes.
//! - [`metrics`]: counters and histograms for `GET /metrics`.
//!
//! This module starts it all: it opens the store and the catalog, removes
//! partition logs of deleted topics, runs retention on a timer, serves
//! until Ctrl-C or SIGTERM, then finishes what is in flight, syncs and
//! closes the store cleanly.

pub mod api;
pub mod app;
pub mod catalog;
pub mod error;
pub mod metrics;
pub mod records;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::log;
use crate::storage::format::MESSAGE_BYTES_MAX;
use crate::storage::store::{Retention, SEGMENT_BYTES_DEFAULT, Store, StoreConfig};
use app::{App, Limits, SHUTDOWN_GRACE};
use catalog::{Catalog, KeyOwner, Topic};

/// Default largest request body: room for a batch of many records, small
/// enough that a few at once do not strain memory.
pub const REQUEST_BYTES_DEFAULT: usize = 16 << 20;

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
    #[arg(long, value_name = "N", default_value_t = crate::kafka::topics::PARTITIONS_DEFAULT)]
    pub kafka_auto_create_partitions: u32,
    /// More logs on stderr (-v: lifecycle and syncs, -vv: every error reply).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Runs the server until Ctrl-C or SIGTERM, then shuts down gracefully.
pub fn run(args: &ServeArgs) -> Result<(), String> {
    log::init(args.verbose);
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
    let dir = data_dir(args.data_dir.as_deref())?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = runtime
        .enable_all()
        .thread_name("seglog-http")
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    runtime.block_on(serve(args, &dir))
}

/// The data directory: the one given, or a per-user default, created if missing.
fn data_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => {
            let dir = match (std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME")) {
                (Some(data), _) if !data.is_empty() => PathBuf::from(data).join("seglog"),
                (_, Some(home)) if !home.is_empty() => {
                    PathBuf::from(home).join(".local/share/seglog")
                }
                _ => PathBuf::from("seglog-data"),
            };
            eprintln!("seglog: no --data-dir given; using {}", dir.display());
            dir
        }
    };
    crate::storage::fsutil::create_dir_all_durably(&crate::storage::backend::RealFs, &dir)
        .map_err(|e| format!("cannot create the data directory: {e}"))?;
    Ok(dir)
}

async fn serve(args: &ServeArgs, dir: &Path) -> Result<(), String> {
    let config = StoreConfig {
        segment_bytes: args.segment_bytes,
        ..StoreConfig::default()
    };
    let store = Store::open(dir, config).map_err(|e| format!("cannot open the store: {e}"))?;
    log::info(format_args!(
        "opened {} ({})",
        dir.display(),
        if store.opened_clean() {
            "clean"
        } else {
            "recovered"
        }
    ));
    let catalog = Catalog::open(dir)?;
    let store = Arc::new(Mutex::new(store));
    remove_dead_keys(&store, &catalog);
    let limits = Limits {
        record_bytes: args.max_record_bytes,
        request_bytes: args.max_request_bytes,
    };
    let default_retention = Retention {
        bytes: args.retention_bytes,
        age: args.retention_ms.map(Duration::from_millis),
    };
    let app = App::new(store, catalog, limits, default_retention)?;
    let retention = tokio::spawn(retention_loop(
        Arc::clone(&app),
        Duration::from_millis(args.retention_check_ms),
    ));

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    // Always printed: a user (or a test that asked for port 0) needs it.
    eprintln!(
        "seglog: listening on http://{address}, data in {}",
        dir.display()
    );

    let kafka = match args.kafka {
        Some(address) => Some(start_kafka(args, address, &app).await?),
        None => None,
    };

    // Replies go out whole, at once: Nagle's algorithm would hold a reply's
    // tail back waiting for the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            log::warn(format_args!("cannot set TCP_NODELAY: {e}"));
        }
    });
    let router = api::router(Arc::clone(&app));
    let stopping = Arc::clone(&app);
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        eprintln!("seglog: shutting down: finishing requests in flight");
        // Long polls return at once; new writes are refused.
        stopping.shutdown.send_replace(true);
    });
    let served = server.await.map_err(|e| format!("serving failed: {e}"));

    retention.abort();
    let _ = retention.await;
    if let Some(kafka) = kafka {
        // The listener stops on the shutdown signal; connections finish
        // what waits on the syncer, closed below.
        let _ = kafka.await;
    }
    app.close_syncer();
    let joining = Arc::clone(&app);
    let joined = tokio::time::timeout(
        SHUTDOWN_GRACE,
        tokio::task::spawn_blocking(move || joining.join_syncer()),
    )
    .await;
    match joined {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => return Err(format!("joining the group commit thread: {e}")),
        Err(_) => {
            return Err(
                "the last sync point did not finish in time; the store is not marked clean".into(),
            );
        }
    }
    // Connection tasks may still hold the state for a moment after the
    // server returns; the store refuses writes once shut down.
    app.store()
        .shut_down()
        .map_err(|e| format!("closing the store: {e}"))?;
    eprintln!("seglog: closed cleanly");
    served
}

/// Binds the Kafka listener and serves it in a task of its own.
async fn start_kafka(
    args: &ServeArgs,
    address: SocketAddr,
    app: &Arc<App>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for Kafka: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the Kafka listening address: {e}"))?;
    let advertised = crate::kafka::advertised(args.kafka_advertise.as_deref(), bound)?;
    let partitions = args.kafka_auto_create_partitions;
    if partitions > catalog::PARTITIONS_MAX {
        return Err(format!(
            "--kafka-auto-create-partitions is at most {}",
            catalog::PARTITIONS_MAX
        ));
    }
    // Always printed, like the HTTP address.
    eprintln!(
        "seglog: Kafka protocol on {bound}, advertised as {}:{}",
        advertised.0, advertised.1
    );
    let broker = Arc::new(crate::kafka::Broker {
        app: Arc::clone(app),
        advertised,
        groups: crate::kafka::groups::Coordinator::default(),
        auto_create_partitions: partitions,
    });
    Ok(tokio::spawn(crate::kafka::serve(listener, broker)))
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

/// Removes the partition logs of topics no longer in the catalog: a crash
/// during a deletion can leave them, since the catalog changes first.
fn remove_dead_keys(store: &Mutex<Store>, catalog: &Catalog) {
    let mut store = crate::node::syncer::lock(store);
    let keys = match store.keys() {
        Ok(keys) => keys,
        Err(e) => {
            log::warn(format_args!("cannot list the store's keys to tidy it: {e}"));
            return;
        }
    };
    for key in keys {
        match catalog.owner_of(&key) {
            KeyOwner::Live => {}
            KeyOwner::Dead => match store.remove_key(&key) {
                Ok(()) => log::info(format_args!("removed {key}: its topic was deleted")),
                Err(e) => log::warn(format_args!("cannot remove {key} of a deleted topic: {e}")),
            },
            KeyOwner::Foreign => log::warn(format_args!(
                "key {key:?} is not a partition of any topic; left alone"
            )),
        }
    }
}

/// The retention a topic gets: its own, else the server's default.
pub fn retention_of(topic: &Topic, default: Retention) -> Retention {
    Retention {
        bytes: topic.retention_bytes.or(default.bytes),
        age: topic
            .retention_ms
            .map(Duration::from_millis)
            .or(default.age),
    }
}

/// Applies retention to every partition of every topic that has one, on a timer.
async fn retention_loop(app: Arc<App>, every: Duration) {
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let worker = Arc::clone(&app);
        if tokio::task::spawn_blocking(move || enforce_retention(&worker))
            .await
            .is_err()
        {
            log::warn(format_args!("a retention pass failed"));
        }
    }
}

/// One retention pass over a snapshot of the topics. Each partition is
/// done under the catalog's read lock and the store's lock, taken for it
/// alone: the topic is checked to be still there (not deleted and created
/// again meanwhile), and requests go on between partitions.
fn enforce_retention(app: &App) {
    let topics: Vec<Topic> = app.catalog().topics().cloned().collect();
    let now = SystemTime::now();
    for topic in topics {
        let retention = retention_of(&topic, app.default_retention);
        if retention.bytes.is_none() && retention.age.is_none() {
            continue;
        }
        for partition in 0..topic.partitions {
            let catalog = app.catalog();
            if catalog.get(&topic.name).map(|t| t.id) != Some(topic.id) {
                break;
            }
            let key = topic.key(partition);
            let mut store = app.store();
            let before = match store.segments(&key) {
                Ok(segments) if segments.len() > 1 => segments.len(),
                Ok(_) => continue,
                Err(e) => {
                    log::warn(format_args!("retention: cannot list {key}: {e}"));
                    continue;
                }
            };
            match store
                .enforce_retention(&key, retention, now)
                .and_then(|start| Ok((start, store.segments(&key)?.len())))
            {
                Ok((start, after)) if after < before => {
                    app.metrics
                        .segments_deleted
                        .fetch_add((before - after) as u64, Ordering::Relaxed);
                    log::info(format_args!(
                        "retention: deleted {} segments of {key}; it starts at {start}",
                        before - after
                    ));
                }
                Ok(_) => {}
                Err(e) => log::warn(format_args!("retention of {key} failed: {e}")),
            }
        }
    }
    app.metrics.retention_passes.fetch_add(1, Ordering::Relaxed);
}
