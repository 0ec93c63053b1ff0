//! Group commit: a thread that makes the store's buffered writes durable
//! in sync points and reports each batch of writes back with the outcome.
//!
//! A front end appends to the store and then queues what must be answered
//! once the append is durable (a reply to a client, a waiter). The thread
//! takes everything queued, runs one sync point (buffers written under the
//! store lock, fdatasyncs without it, published under it again) and hands
//! the batch to the front end's `report` with the outcome. Everything
//! queued before the take was appended before the sync point was prepared,
//! so the sync point covers it; writes that arrive during a sync wait for
//! the next one.
//!
//! The Maelstrom node and `seglog serve` (through [`crate::broker`]) use it
//! the same way: [`GroupCommit::start`] with a `report` callback,
//! [`GroupCommit::has_room`] before applying a write,
//! [`GroupCommit::push`] after, [`GroupCommit::close`] and
//! [`GroupCommit::join`] at shutdown.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::store::Store;
use crate::lock::lock;
use crate::log;

/// Writes that may wait for a sync point at once. A sync point takes a few
/// milliseconds, and Maelstrom's rate is about 1,000 requests a second, so
/// the queue normally holds tens; 65,536 leaves room for bursts and bounds
/// what a stalled disk makes a server hold. Past it, writes are refused
/// with a definite error before they are applied.
pub const WAITING_MAX: usize = 65_536;

/// The outcome of a sync point, shared by every write it covered: `Err`
/// holds why it failed, and then the writes may or may not be durable.
pub type Outcome = std::result::Result<(), Arc<Error>>;

/// A batch of writes and whether the sync point that covered them made
/// them durable. Readers see them by the time this arrives.
pub struct Synced<T> {
    pub items: Vec<T>,
    /// `Err` holds why the sync point failed: the writes may or may not be durable.
    pub result: Outcome,
    /// How long the sync point took to make them durable (zero when it
    /// could not be prepared): for metrics.
    pub took: Duration,
}

/// Writes that wait for the next sync point.
struct Waiting<T> {
    items: Vec<T>,
    /// Set by [`GroupCommit::close`]: the thread drains what is waiting and exits.
    closing: bool,
    /// Whether the thread sleeps on the condition variable. Only then
    /// does a push wake it: while it runs a sync point, it takes the next
    /// batch when done, and a wake-up per write would cost a system call each.
    asleep: bool,
}

struct Shared<T> {
    waiting: Mutex<Waiting<T>>,
    /// Signalled when a write is queued or the front end closes the group commit.
    wake: Condvar,
}

/// The handle a front end keeps.
pub struct GroupCommit<T> {
    shared: Arc<Shared<T>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the thread over `store`; it hands each batch to `report`, on
    /// its own thread, which returns false once nobody is left to answer
    /// (the thread then ends). `report` must be quick: the next sync point
    /// waits for it.
    pub fn start(
        store: Arc<Mutex<Store>>,
        report: impl FnMut(Synced<T>) -> bool + Send + 'static,
    ) -> Result<GroupCommit<T>> {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Waiting {
                items: Vec::new(),
                closing: false,
                asleep: false,
            }),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || sync_loop(&thread_shared, &store, report))
            .map_err(|source| Error::Io {
                context: "start the group commit thread".into(),
                source,
            })?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Whether another write may be queued; check before applying it, so a
    /// refused write changes nothing.
    pub fn has_room(&self) -> bool {
        lock(&self.shared.waiting).items.len() < WAITING_MAX
    }

    /// Queues a write the store has applied, to be reported once durable.
    pub fn push(&self, item: T) {
        let mut waiting = lock(&self.shared.waiting);
        waiting.items.push(item);
        if waiting.asleep {
            waiting.asleep = false;
            drop(waiting);
            self.shared.wake.notify_one();
        }
    }

    /// Asks the thread to drain what is waiting and exit; its last batch
    /// still goes to `report`.
    pub fn close(&self) {
        lock(&self.shared.waiting).closing = true;
        self.shared.wake.notify_one();
    }

    /// Waits for the thread to end (after [`GroupCommit::close`]).
    pub fn join(mut self) -> Result<()> {
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| Error::Panicked {
                what: "the group commit thread".into(),
            }),
            None => Ok(()),
        }
    }
}

fn sync_loop<T>(
    shared: &Shared<T>,
    store: &Mutex<Store>,
    mut report: impl FnMut(Synced<T>) -> bool,
) {
    loop {
        let items = {
            let mut waiting = lock(&shared.waiting);
            while waiting.items.is_empty() && !waiting.closing {
                waiting.asleep = true;
                waiting = shared
                    .wake
                    .wait(waiting)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            waiting.asleep = false;
            if waiting.items.is_empty() {
                return;
            }
            std::mem::take(&mut waiting.items)
        };
        let mut plan = match lock(store).prepare_sync() {
            Ok(plan) => plan,
            Err(e) => {
                let result = Err(Arc::new(e));
                let took = Duration::ZERO;
                if !report(Synced {
                    items,
                    result,
                    took,
                }) {
                    return;
                }
                continue;
            }
        };
        let started = Instant::now();
        // Durable: readable and acknowledged now, unless the store refuses
        // (a sync that failed meanwhile poisons it: then nothing is
        // acknowledged); the segment writes that publish the records
        // follow, without holding up the answers.
        let executed = plan
            .execute()
            .and_then(|()| lock(store).confirm_sync(&mut plan));
        let took = started.elapsed();
        let keys = plan.key_count();
        if let Err(e) = executed {
            // Logged here: the store logs only the first poisoning, which a
            // write that took the lock first may have caused, naming no cause.
            log::warn(format_args!("a sync point of {keys} keys failed: {e}"));
            // The store is poisoned before anyone hears of the failure, so
            // a write retried at once is refused rather than taken by a
            // store whose page cache is in doubt.
            let error = lock(store)
                .complete_sync(plan, Err(e))
                .err()
                .unwrap_or(Error::Poisoned);
            if !report(Synced {
                items,
                result: Err(Arc::new(error)),
                took,
            }) {
                return;
            }
            continue;
        }
        if !report(Synced {
            items,
            result: Ok(()),
            took,
        }) {
            // The front end is gone: nobody is left to answer.
            return;
        }
        if let Err(e) = lock(store).complete_sync(plan, Ok(())) {
            log::warn(format_args!("publishing a sync point failed: {e}"));
        }
        log::info(format_args!(
            "sync of {keys} keys: durable after {took:?}, published after {:?}",
            started.elapsed()
        ));
    }
}
