//! What every request shares: the store, the catalog, the group commit and
//! the signals long polls wait on.
//!
//! Locks are taken in one order, catalog then store, and never held across
//! an `await`. A write holds the catalog's read lock while it appends, so a
//! topic deleted meanwhile (under the write lock) cannot get records after
//! its logs were removed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{oneshot, watch};

use super::catalog::Catalog;
use super::error::{ApiError, code};
use super::metrics::Metrics;
use crate::node::syncer::{Synced, Syncer, lock};
use crate::storage::store::{Retention, Store};

/// Told the outcome of the sync point that covers a write.
pub type Waiter = oneshot::Sender<Result<(), String>>;

/// Limits of requests, set by the command line.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest stored record (its payload: timestamp, key and value as JSON).
    pub record_bytes: usize,
    /// Largest request body.
    pub request_bytes: usize,
}

/// The state every handler gets.
pub struct App {
    pub store: Arc<Mutex<Store>>,
    catalog: RwLock<Catalog>,
    syncer: Mutex<Option<Syncer<Waiter>>>,
    /// Counts finished sync points: a long poll waits for it to change.
    pub published: watch::Sender<u64>,
    /// Set when the server starts shutting down: long polls return at once.
    pub shutdown: watch::Sender<bool>,
    pub metrics: Metrics,
    pub limits: Limits,
    /// Retention of topics that set none of their own.
    pub default_retention: Retention,
    /// Where the next request's records without key or partition go.
    next_partition: AtomicU32,
}

impl App {
    /// The state, with the group commit running.
    pub fn new(
        store: Arc<Mutex<Store>>,
        catalog: Catalog,
        limits: Limits,
        default_retention: Retention,
    ) -> Result<Arc<App>, String> {
        let app = Arc::new(App {
            store: Arc::clone(&store),
            catalog: RwLock::new(catalog),
            syncer: Mutex::new(None),
            published: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            metrics: Metrics::default(),
            limits,
            default_retention,
            next_partition: AtomicU32::new(0),
        });
        // The syncer thread answers each batch's waiters itself: a hop
        // through a task of the runtime would cost every write a wake-up.
        // It holds the state weakly, so the state's last owner drops it.
        let weak = Arc::downgrade(&app);
        let syncer = Syncer::start_with(store, move |synced| match weak.upgrade() {
            Some(app) => {
                app.on_synced(synced);
                true
            }
            None => false,
        })?;
        *lock(&app.syncer) = Some(syncer);
        Ok(app)
    }

    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// A partition for a request's records that name neither a key nor a
    /// partition: successive requests take successive partitions.
    pub fn next_partition(&self, partitions: u32) -> u32 {
        self.next_partition.fetch_add(1, Ordering::Relaxed) % partitions.max(1)
    }

    /// Refuses a write before it is applied if the store or the queue of
    /// writes waiting for a sync point cannot take it.
    pub fn check_writable(&self, store: &Store) -> Result<(), ApiError> {
        if *self.shutdown.borrow() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::SHUTTING_DOWN,
                "the server is shutting down",
            ));
        }
        if store.is_poisoned() {
            return Err(ApiError::from_store(
                &crate::storage::error::Error::Poisoned,
            ));
        }
        let room = lock(&self.syncer).as_ref().is_some_and(Syncer::has_room);
        if !room {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::OVERLOADED,
                "too many writes wait for the disk; try again shortly",
            ));
        }
        Ok(())
    }

    /// Queues a waiter for writes just applied to the store (call with the
    /// store locked, after the writes); the receiver gets the outcome of the
    /// sync point that covers them.
    pub fn wait_for_sync(&self) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        if let Some(syncer) = lock(&self.syncer).as_ref() {
            syncer.push(tx);
        }
        // Without a syncer (shut down: `check_writable` refuses writes
        // first), the sender is dropped and the waiter gets an error.
        rx
    }

    /// Waits for the outcome `wait_for_sync` promised.
    pub async fn durable(rx: oneshot::Receiver<Result<(), String>>) -> Result<(), ApiError> {
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::STORAGE,
                format!(
                    "the sync point failed, so the write may or may not be durable \
                     (the store takes no writes until seglog restarts): {e}"
                ),
            )),
            Err(_) => Err(ApiError::internal(
                "the group commit thread ended before answering",
            )),
        }
    }

    /// Answers the waiters of a finished sync point and wakes long polls.
    fn on_synced(&self, synced: Synced<Waiter>) {
        match &synced.result {
            Ok(()) => {
                self.metrics.sync_points.fetch_add(1, Ordering::Relaxed);
                self.metrics.sync_latency.observe(synced.took);
            }
            Err(_) => {
                self.metrics.sync_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        for waiter in synced.items {
            // A waiter whose request was dropped (client gone) is fine.
            let _ = waiter.send(synced.result.clone());
        }
        self.published.send_modify(|n| *n += 1);
    }

    /// Stops the group commit: what waits is synced and answered, then the
    /// thread ends.
    pub fn close_syncer(&self) {
        if let Some(syncer) = lock(&self.syncer).as_ref() {
            syncer.close();
        }
    }

    /// Waits for the syncer thread to end, after [`App::close_syncer`].
    pub fn join_syncer(&self) -> Result<(), String> {
        // Taken out first: the thread's last sync point needs the store,
        // whose holders may wait for this lock.
        let syncer = lock(&self.syncer).take();
        match syncer {
            Some(syncer) => syncer.join(),
            None => Ok(()),
        }
    }
}

/// How long a long poll may wait at most, in milliseconds: a proxy or a
/// client usually gives up on an idle request after 30 to 60 seconds.
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;

/// Delay before a graceful shutdown gives up on requests still running
/// (long polls end at once; produce requests wait for one sync point).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
