//! Group commit: a thread that makes buffered writes durable in sync points
//! and reports each batch back to the event loop.
//!
//! The event loop appends to the store and then queues what must be
//! answered once the append is durable. The syncer takes everything queued,
//! runs one sync point (buffers written under the store lock, fdatasyncs
//! without it, published under it again) and sends the batch back with the
//! outcome. Everything queued before the take was appended before the sync
//! point was prepared, so the sync point covers it; writes that arrive during
//! a sync wait for the next one.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::log;
use crate::storage::store::Store;

/// Writes that may wait for a sync point at once. A sync point takes a few
/// milliseconds, and Maelstrom's rate is about 1,000 requests a second, so
/// the queue normally holds tens; 65,536 leaves room for bursts and bounds
/// what a stalled disk makes the node hold. Past it, writes are refused with
/// a definite error before they are applied.
pub const WAITING_MAX: usize = 65_536;

/// Locks a mutex, going on if a thread panicked while holding it: the data it
/// guards is only ever changed through methods that leave it consistent.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A batch of writes and whether the sync point that covered them made
/// them durable. Readers see them by the time this arrives.
pub struct Synced<T> {
    pub items: Vec<T>,
    /// `Err` holds why the sync point failed: the writes may or may not be durable.
    pub result: Result<(), String>,
    /// How long the sync point took to make them durable (zero when it
    /// could not be prepared): for metrics.
    pub took: Duration,
}
/// Writes that wait for the next sync point.
struct Waiting<T> {
    items: Vec<T>,
    /// Set at end of input: the syncer drains what is waiting and exits.
    closing: bool,
    /// Whether the syncer thread sleeps on the condition variable. Only then
    /// does a push wake it: while it runs a sync point, it takes the next
    /// batch when done, and a wake-up per write would cost a system call each.
    asleep: bool,
}

struct Shared<T> {
    waiting: Mutex<Waiting<T>>,
    /// Signalled when a write is queued or the node closes.
    wake: Condvar,
}

/// The handle the event loop keeps.
pub struct Syncer<T> {
    shared: Arc<Shared<T>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// A write refused because [`WAITING_MAX`] writes already wait.
#[derive(Debug)]
pub struct QueueFull;

impl<T: Send + 'static> Syncer<T> {
    /// Starts the syncer thread over `store`; batches go back on `done`.
    pub fn start(
        store: Arc<Mutex<Store>>,
        done: UnboundedSender<Synced<T>>,
    ) -> Result<Syncer<T>, String> {
        Syncer::start_with(store, move |synced| done.send(synced).is_ok())
    }

    /// Starts the syncer thread over `store`; it hands each batch to
    /// `report`, on its own thread, which returns false once nobody is left
    /// to answer (the thread then ends). `report` must be quick: the next
    /// sync point waits for it.
    pub fn start_with(
        store: Arc<Mutex<Store>>,
        report: impl FnMut(Synced<T>) -> bool + Send + 'static,
    ) -> Result<Syncer<T>, String> {
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
            .name("syncer".into())
            .spawn(move || sync_loop(&thread_shared, &store, report))
            .map_err(|e| format!("cannot start the syncer thread: {e}"))?;
        Ok(Syncer {
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
    /// arrives on `done`, then the channel closes.
    pub fn close(&self) {
        lock(&self.shared.waiting).closing = true;
        self.shared.wake.notify_one();
    }

    /// Waits for the thread to end (after [`Syncer::close`]).
    pub fn join(mut self) -> Result<(), String> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| "the syncer thread panicked".to_string()),
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
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
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
                let result = Err(e.to_string());
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
        let result = executed.as_ref().map(|_| ()).map_err(|e| e.to_string());
        if !report(Synced {
            items,
            result,
            took,
        }) {
            // The event loop is gone: nobody is left to answer.
            return;
        }
        let keys = plan.key_count();
        if let Err(e) = lock(store).complete_sync(plan, executed) {
            log::warn(format_args!("publishing a sync point failed: {e}"));
        }
        log::info(format_args!(
            "sync of {keys} keys: durable after {took:?}, published after {:?}",
            started.elapsed()
        ));
    }
}
