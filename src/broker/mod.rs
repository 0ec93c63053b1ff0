//! The broker core of `seglog serve`: everything the HTTP and Kafka front
//! ends share, in terms of neither. It owns the store as topics of
//! partitions, the topic catalog, consumer group offsets, retention, the
//! group commit that answers a write once durable, the long polls' wake-ups
//! and the metrics. A record produced through one front end is fetched
//! through the other because both go through this state.
//!
//! It knows nothing of HTTP status codes or Kafka error codes: every
//! failure is an [`Error`], which `http/` and `kafka/` each map to their own
//! codes in one place. It imports only [`crate::storage`] and the leaf
//! modules (`lock`, `log`).
//!
//! Locks are taken in one order, catalog then store, and never held across
//! an `await`. A write holds the catalog's read lock while it appends, so a
//! topic deleted meanwhile (under the write lock) cannot get records after
//! its logs were removed.
//!
//! # Layout
//! - [`error`]: the broker's error, with whether a failed write may have happened.
//! - [`catalog`]: the topics, in a small durable file beside the store.
//! - [`cluster`]: what the broker asks of the cluster a node belongs to
//!   (`serve --peers`): topic changes, its status, whether it takes writes.
//! - [`payload`]: what a stored record's bytes mean (JSON text or a Kafka record).
//! - [`groups`]: consumer group offsets as committed offsets of the store.
//! - [`producers`]: idempotent producers' ids and sequence numbers, as
//!   committed offsets of the store too.
//! - [`topics`]: creating and deleting topics, a partition's state, tidying at start.
//! - [`retention`]: deleting old segments by a topic's size and age limits.
//! - [`metrics`]: counters and histograms of what the broker did.
//! - [`time`]: the wall clock as Kafka and the HTTP API count it.
//! - this file: [`Broker`], the shared state; [`Writer`], one write under
//!   the store's lock; [`Durable`], waiting for its sync point; [`LongPoll`],
//!   waiting for new records.

pub mod catalog;
pub mod cluster;
pub mod error;
pub mod groups;
pub mod metrics;
pub mod payload;
pub mod producers;
pub mod retention;
pub mod time;
pub mod topics;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::lock::lock;
use crate::storage::group_commit::{GroupCommit, Outcome, Synced};
use crate::storage::space::Space;
use crate::storage::store::{PoisonFlag, Retention, Store};
use catalog::Catalog;
pub use error::{Error, Result, Written};
use metrics::Metrics;

/// Told the outcome of the sync point that covers a write.
enum Waiter {
    /// A request's write ([`Writer::finish`]).
    Reply(oneshot::Sender<Outcome>),
    /// A callback, run on the group commit's thread ([`Broker::after_sync`]).
    Call(AfterSync),
}

/// What [`Broker::after_sync`] runs with the outcome of a sync point: it
/// must be quick, as it runs on the group commit's thread.
pub type AfterSync = Box<dyn FnOnce(Outcome) + Send>;

/// How long a long poll may wait at most, in milliseconds: a proxy or a
/// client usually gives up on an idle request after 30 to 60 seconds.
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;

/// Delay before a graceful shutdown gives up on requests still running
/// (long polls end at once; produce requests wait for one sync point).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Limits of requests, set by the command line.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest stored record (its payload: timestamp, key and value).
    pub record_bytes: usize,
    /// Largest request (an HTTP body, a Kafka frame), and the most a
    /// request's compressed records may inflate to.
    pub request_bytes: usize,
}

/// The state every request of either front end gets.
pub struct Broker {
    /// The partitions' logs and the committed offsets.
    store: Arc<Mutex<Store>>,
    /// Whether the store is poisoned, without its lock (a reopen holds it).
    poisoned: PoisonFlag,
    /// The free space of the store's file system: writes are refused
    /// while it is short.
    space: Arc<Space>,
    /// The topics; read by every request, written by creations and deletions.
    catalog: RwLock<Catalog>,
    /// The sync points' thread; `None` once shut down.
    group_commit: Mutex<Option<GroupCommit<Waiter>>>,
    /// Counts finished sync points: a long poll waits for it to change.
    published: watch::Sender<u64>,
    /// Set when the server starts shutting down: long polls return at
    /// once and new writes are refused.
    shutdown: watch::Sender<bool>,
    /// What the broker did, for `/metrics`.
    pub metrics: Metrics,
    /// Request limits from the command line.
    pub limits: Limits,
    /// Retention of topics that set none of their own.
    pub default_retention: Retention,
    /// Where the next request's records without key or partition go.
    next_partition: AtomicU32,
    /// The store's count of open keys when last read ([`Broker::open_keys`]).
    open_keys: AtomicUsize,
    /// The cluster this node belongs to, set once at start (`serve --peers`).
    cluster: OnceLock<Arc<dyn cluster::Cluster>>,
}

impl Broker {
    /// The state, with the group commit running.
    pub fn new(
        store: Store,
        catalog: Catalog,
        limits: Limits,
        default_retention: Retention,
        space: Arc<Space>,
    ) -> Result<Arc<Broker>> {
        let poisoned = store.poison_flag();
        let store = Arc::new(Mutex::new(store));
        let broker = Arc::new(Broker {
            store: Arc::clone(&store),
            poisoned,
            space,
            catalog: RwLock::new(catalog),
            group_commit: Mutex::new(None),
            published: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            metrics: Metrics::default(),
            limits,
            default_retention,
            next_partition: AtomicU32::new(0),
            open_keys: AtomicUsize::new(0),
            cluster: OnceLock::new(),
        });
        // The group commit thread answers each batch's waiters itself: a
        // hop through a task of the runtime would cost every write a
        // wake-up. It holds the state weakly, so the state's last owner
        // drops it.
        let weak = Arc::downgrade(&broker);
        let healing = Arc::downgrade(&broker);
        // After a failed sync point the thread reopens the store in place
        // (`storage/group_commit.rs`). What the broker derives from the
        // store is read from it on each request (high watermarks, producer
        // states and ids, group offsets: all the store's records and
        // commits), so nothing needs rebuilding, only counting; the
        // catalog is a file of its own.
        let healed: crate::storage::group_commit::HealReport = Box::new(move |result, _waited| {
            if let Some(broker) = healing.upgrade() {
                let counter = match result {
                    Ok(()) => &broker.metrics.store_heals,
                    Err(_) => &broker.metrics.store_heal_failures,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let report = move |synced| match weak.upgrade() {
            Some(broker) => {
                broker.on_synced(synced);
                true
            }
            None => false,
        };
        let group_commit =
            GroupCommit::start_healing(store, report, healed).map_err(|e| Error::Storage {
                context: "cannot start the group commit".into(),
                source: Arc::new(e),
                written: Written::No,
            })?;
        *lock(&broker.group_commit) = Some(group_commit);
        Ok(broker)
    }

    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        crate::lock::read(&self.catalog)
    }

    pub fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        crate::lock::write(&self.catalog)
    }

    /// Puts `catalog` in place of the topics: what a node of a cluster does
    /// after each change of the cluster's metadata.
    pub fn replace_catalog(&self, catalog: Catalog) {
        *self.catalog_mut() = catalog;
    }

    /// Makes this broker a node of `cluster`; an error if it is one already.
    pub fn join(&self, cluster: Arc<dyn cluster::Cluster>) -> Result<()> {
        self.cluster
            .set(cluster)
            .map_err(|_| Error::Internal("this node belongs to a cluster already".into()))
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn cluster::Cluster>> {
        self.cluster.get()
    }

    /// The store, shared: for the Raft groups of a node of a cluster, which
    /// write it themselves.
    pub fn shared_store(&self) -> Arc<Mutex<Store>> {
        Arc::clone(&self.store)
    }

    /// Runs `done` with the outcome of a sync point that covers every write
    /// applied to the store before this call (at once, with an error, once
    /// the group commit is closed). `done` must be quick: it runs on the
    /// group commit's thread.
    pub fn after_sync(&self, done: AfterSync) {
        // The lock is let go before `done` runs on a closed group commit.
        let refused = match lock(&self.group_commit).as_ref() {
            Some(group_commit) => {
                group_commit.push(Waiter::Call(done));
                return;
            }
            None => done,
        };
        refused(Err(Arc::new(crate::storage::error::Error::Busy(
            "the group commit is closed".into(),
        ))));
    }

    /// The store, for reads; writes go through [`Broker::writer`].
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Whether the store is poisoned (a sync failed; the group commit heals
    /// it in place), read without its lock: for health probes and metrics,
    /// which must answer while a reopen holds the lock.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_set()
    }

    /// How many keys the store holds open, for `/metrics`: read if the
    /// store's lock is free, else the count last read. A scrape must not
    /// wait for the lock, which a heal's reopen holds for as long as
    /// recovery takes, nor add to the writes' waiting for it.
    pub fn open_keys(&self) -> usize {
        match self.store.try_lock() {
            Ok(store) => {
                let count = store.open_key_count();
                self.open_keys.store(count, Ordering::Relaxed);
                count
            }
            Err(_) => self.open_keys.load(Ordering::Relaxed),
        }
    }

    /// The free space of the store's file system, and whether writes are taken.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// A partition for a request's records that name neither a key nor a
    /// partition: successive requests take successive partitions.
    pub fn next_partition(&self, partitions: u32) -> u32 {
        self.next_partition.fetch_add(1, Ordering::Relaxed) % partitions.max(1)
    }

    /// Starts a write that appends records (a produce): as
    /// [`Broker::writer`], and refused while the disk is short of free
    /// space (`storage/space.rs`). Other writes are a few bytes each
    /// (offset commits, producer ids) or free space (DeleteRecords, a
    /// group's deletion, producer expiry), and are taken.
    pub fn records_writer(&self) -> Result<Writer<'_>> {
        // Read before the store's lock is taken (it may call statvfs); a
        // poisoned store's error comes first: a client is told to wait for
        // the heal in place, not for free space.
        let admits = self.space.admits();
        let writer = self.writer()?;
        if !admits {
            self.metrics
                .writes_refused_no_space
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::NoSpace(self.space.refusal()));
        }
        Ok(writer)
    }

    /// Starts a write: takes the store's lock and refuses the write before
    /// anything is applied if the server is shutting down, the store is
    /// poisoned (a failed sync: the group commit is healing it, and the
    /// refusal is one a client may retry), or too many writes wait for a sync point already. Hold
    /// the catalog's read lock across it when the write goes to a topic.
    pub fn writer(&self) -> Result<Writer<'_>> {
        if self.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        if let Some(why) = self.cluster().and_then(|cluster| cluster.refuses_writes()) {
            return Err(Error::Unsupported(why));
        }
        // Refused without waiting for the lock, which a reopen may hold
        // for as long as recovery takes; checked again under it.
        if self.is_poisoned() {
            return Err(Error::refused(crate::storage::error::Error::Poisoned));
        }
        let store = self.store();
        if store.is_poisoned() {
            return Err(Error::refused(crate::storage::error::Error::Poisoned));
        }
        let room = lock(&self.group_commit)
            .as_ref()
            .is_some_and(GroupCommit::has_room);
        if !room {
            return Err(Error::Overloaded);
        }
        Ok(Writer {
            broker: self,
            store,
            records: 0,
            bytes: 0,
            commits: 0,
            changes: 0,
            wait_anyway: false,
        })
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Begins the shutdown: long polls return at once, new writes are refused.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub async fn shutting_down(&self) {
        let mut shutdown = self.shutdown.subscribe();
        // The sender lives as long as the broker, which outlives this call.
        let _ = shutdown.wait_for(|&stopping| stopping).await;
    }

    /// A long poll that ends `wait` from now, at shutdown, or when woken by
    /// a sync point.
    pub fn long_poll(&self, wait: Duration) -> LongPoll<'_> {
        LongPoll {
            published: self.published.subscribe(),
            shutdown: self.shutdown.subscribe(),
            deadline: tokio::time::Instant::now() + wait,
            waiting: &self.metrics.fetches_waiting,
        }
    }

    /// Answers the waiters of a finished sync point and wakes long polls.
    fn on_synced(&self, synced: Synced<Waiter>) {
        match &synced.result {
            Ok(()) => {
                self.metrics.sync_points.fetch_add(1, Ordering::Relaxed);
                self.metrics.sync_latency.observe(synced.took);
            }
            // Writes applied to a run whose sync failed, answered while it
            // heals, or a sync point a failure elsewhere refused: that
            // failure was counted where it happened.
            Err(e) if matches!(**e, crate::storage::error::Error::Poisoned) => {}
            Err(_) => {
                self.metrics.sync_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        for waiter in synced.items {
            match waiter {
                // A waiter whose request was dropped (client gone) is fine.
                Waiter::Reply(tx) => {
                    let _ = tx.send(synced.result.clone());
                }
                Waiter::Call(done) => done(synced.result.clone()),
            }
        }
        self.published.send_modify(|n| *n += 1);
    }

    /// A receiver that changes with every finished sync point, seen as of
    /// now: what a removal that waits for records in flight watches.
    pub fn sync_points(&self) -> watch::Receiver<u64> {
        let mut published = self.published.subscribe();
        published.borrow_and_update();
        published
    }

    /// Stops the group commit: what waits is synced and answered, then the
    /// thread ends.
    pub fn close_group_commit(&self) {
        if let Some(group_commit) = lock(&self.group_commit).as_ref() {
            group_commit.close();
        }
    }

    /// Waits for the group commit thread to end, after
    /// [`Broker::close_group_commit`].
    pub fn join_group_commit(&self) -> Result<()> {
        // Taken out first: the thread's last sync point needs the store,
        // whose holders may wait for this lock.
        let group_commit = lock(&self.group_commit).take();
        match group_commit {
            Some(group_commit) => group_commit.join().map_err(|e| Error::Storage {
                context: "the group commit did not end cleanly".into(),
                source: Arc::new(e),
                written: Written::Maybe,
            }),
            None => Ok(()),
        }
    }
}

/// One write, under the store's lock: appends and commits, then
/// [`Writer::finish`] queues a waiter for the sync point that makes them
/// durable. Dropped without `finish`, what it applied becomes durable with
/// the next sync point, unanswered.
pub struct Writer<'a> {
    broker: &'a Broker,
    store: MutexGuard<'a, Store>,
    /// Records and payload bytes appended, and offsets committed, for the
    /// metrics.
    records: u64,
    bytes: u64,
    commits: u64,
    /// Other commits changed (producer states and ids).
    changes: u64,
    /// Whether [`Writer::finish`] queues a waiter even if nothing was
    /// applied: a reply that repeats an earlier write's (a producer's
    /// retried batch) waits until that write is durable too.
    wait_anyway: bool,
}

impl Writer<'_> {
    /// Appends a partition's records, all or none: an error means none of
    /// them was appended. Returns the first one's offset.
    pub fn append_all(&mut self, key: &str, payloads: &[&[u8]]) -> Result<u64> {
        let first = self
            .store
            .append_all(key, payloads)
            .map_err(Error::refused)?;
        self.records += payloads.len() as u64;
        self.bytes += payloads.iter().map(|p| p.len() as u64).sum::<u64>();
        Ok(first)
    }

    /// Commits a consumer group offset as given, a lower one than before
    /// included (Kafka's rule: a consumer that seeks back commits where it
    /// is), with the commit's metadata string (see [`groups`]).
    /// A commit equal to the latest one (a consumer's auto-commit while
    /// idle) writes nothing: it costs no journal entry and no sync point,
    /// and waits only for the earlier commit if that is not yet durable.
    pub fn commit(&mut self, key: &str, offset: u64, metadata: &str) -> Result<()> {
        groups::check_metadata(metadata)?;
        let unchanged = |c: Option<&crate::storage::offsets::Committed>| {
            c.is_some_and(|c| c.offset == offset && c.value == metadata.as_bytes())
        };
        if unchanged(self.store.committed_latest(key)) {
            if !unchanged(self.store.committed_entry(key)) {
                self.wait_anyway = true;
            }
            return Ok(());
        }
        let change = Some(crate::storage::offsets::Committed {
            offset,
            value: metadata.as_bytes().to_vec(),
        });
        self.store
            .change_committed(key, change)
            .map_err(Error::refused)?;
        self.commits += 1;
        Ok(())
    }

    /// Changes a commit of the store that is not a consumer group's (a
    /// producer's state, the next producer id), durable with the records
    /// appended before it, in the same sync point.
    pub fn change(&mut self, key: &str, change: crate::storage::offsets::Change) -> Result<()> {
        self.store
            .change_committed(key, change)
            .map_err(Error::refused)?;
        self.changes += 1;
        Ok(())
    }

    /// [`Writer::change`] of a commit describing the records of
    /// `records_key` appended before it (a producer's state): journaled
    /// right after them, in the same journal batch.
    pub fn change_after(
        &mut self,
        key: &str,
        change: crate::storage::offsets::Change,
        records_key: &str,
    ) -> Result<()> {
        self.store
            .change_committed_after(key, change, records_key)
            .map_err(Error::refused)?;
        self.changes += 1;
        Ok(())
    }

    /// Makes [`Writer::finish`] queue a waiter even if nothing was
    /// applied: the next sync point covers every write applied before this
    /// one, so its outcome is theirs too.
    pub fn wait_for_earlier_writes(&mut self) {
        self.wait_anyway = true;
    }

    /// The store, for the reads a write's reply needs.
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Ends the write: counts it and, if it applied anything, queues a
    /// waiter for the sync point that covers it (for a Kafka `acks=0`
    /// produce too: a sync point happens only for a waiter).
    pub fn finish(self) -> Option<Durable> {
        let metrics = &self.broker.metrics;
        metrics
            .records_appended
            .fetch_add(self.records, Ordering::Relaxed);
        metrics
            .bytes_appended
            .fetch_add(self.bytes, Ordering::Relaxed);
        metrics
            .offsets_committed
            .fetch_add(self.commits, Ordering::Relaxed);
        self.broker.space.written(self.bytes);
        if self.records == 0 && self.commits == 0 && self.changes == 0 && !self.wait_anyway {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        // Without a group commit (shut down: `writer` refuses writes
        // first), the sender is dropped and the waiter gets an error.
        if let Some(group_commit) = lock(&self.broker.group_commit).as_ref() {
            group_commit.push(Waiter::Reply(tx));
        }
        Some(Durable(rx))
    }
}

/// The outcome of the sync point that covers a write.
pub struct Durable(oneshot::Receiver<Outcome>);

impl Durable {
    /// Waits until the write is durable, or its sync point failed.
    pub async fn wait(self) -> Result<()> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::sync_failed(e)),
            Err(_) => Err(Error::Internal(
                "the group commit thread ended before answering".into(),
            )),
        }
    }
}

/// Waiting for records: a long poll reads, and if it found too little,
/// waits for the next sync point (which publishes new records), the
/// shutdown, or its deadline, and reads again.
pub struct LongPoll<'a> {
    published: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    /// The gauge of long polls waiting now.
    waiting: &'a AtomicU64,
}

impl LongPoll<'_> {
    /// Marks every sync point so far as seen: call before each read, so a
    /// sync point that lands during the read ends the next wait at once.
    pub fn mark_seen(&mut self) {
        self.published.borrow_and_update();
    }

    /// Whether the poll is over whatever it read: its deadline passed or
    /// the server is shutting down.
    pub fn is_over(&mut self) -> bool {
        *self.shutdown.borrow_and_update() || tokio::time::Instant::now() >= self.deadline
    }

    /// Waits for a sync point after the last [`LongPoll::mark_seen`], the
    /// shutdown or the deadline.
    pub async fn wait(&mut self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Counted down however the wait ends, also when the request is
        // dropped mid-wait because its client left.
        let _counted = Counted(self.waiting);
        tokio::select! {
            _ = self.published.changed() => {}
            _ = self.shutdown.changed() => {}
            () = tokio::time::sleep_until(self.deadline) => {}
        }
    }
}

/// Takes one off a gauge when dropped.
struct Counted<'a>(&'a AtomicU64);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The shared state of a server on `store` and `catalog`, with the
/// default limits and no retention: for unit tests of either front end.
#[cfg(test)]
pub(crate) fn test_broker(store: Store, catalog: Catalog) -> Arc<Broker> {
    let limits = Limits {
        record_bytes: 1 << 20,
        request_bytes: 16 << 20,
    };
    let retention = Retention {
        bytes: None,
        age: None,
    };
    let space = Space::watch(&std::env::temp_dir(), Some(0)).expect("free space");
    Broker::new(store, catalog, limits, retention, space).expect("broker")
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::storage::sim::{Fault, FaultOp, SimFs};
    use crate::storage::store::StoreConfig;

    /// A reopen in place holds the store's lock while recovery runs (here
    /// the test holds it): a health probe, a metrics scrape and a write
    /// that is refused anyway must not wait for it.
    #[test]
    fn a_poisoned_store_is_known_and_refuses_writes_without_its_lock() {
        const PATIENCE: Duration = Duration::from_secs(20);
        let dir = tempfile::tempdir().expect("temp dir");
        let fs = SimFs::new();
        let config = StoreConfig {
            fs: fs.clone(),
            ..StoreConfig::default()
        };
        let store = Store::open(Path::new("/data"), config).expect("store");
        let catalog = catalog::Catalog::open(dir.path()).expect("catalog");
        let broker = test_broker(store, catalog);
        assert!(!broker.is_poisoned());
        fs.fail(Fault::new(FaultOp::SyncData).persist());
        {
            let mut store = broker.store();
            store.append("k", b"v").expect("append");
            assert!(store.sync().is_err());
        }
        let open_keys = broker.open_keys();
        assert_eq!(open_keys, 1, "the key appended to");
        let held = broker.store();
        let (tx, rx) = mpsc::channel();
        let probe = Arc::clone(&broker);
        std::thread::spawn(move || {
            let refused = matches!(probe.writer(), Err(e) if e.is_poisoned());
            let _ = tx.send((probe.is_poisoned(), refused, probe.open_keys()));
        });
        assert_eq!(
            rx.recv_timeout(PATIENCE),
            Ok((true, true, open_keys)),
            "answered while the lock was held"
        );
        drop(held);
        fs.heal();
        broker.store().reopen().expect("reopen");
        assert!(!broker.is_poisoned(), "the flag follows the reopened store");
    }
}
