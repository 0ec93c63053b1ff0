//! The router: a small Maelstrom network between the node processes of a cluster run.
//!
//! Every line a node writes to another node reaches the router through the sender's connection
//! ([`Network::forward`]). The router then does what Maelstrom's `maelstrom.net` does:
//!
//! - **Loss.** Each message is dropped with probability [`NetworkConfig::loss`], decided when it
//!   is sent (Maelstrom's `p-loss`).
//! - **Delay.** Each message that survives gets its own delay, drawn uniformly from
//!   [`NetworkConfig::delay_min`]..=[`NetworkConfig::delay_max`], and waits in its
//!   destination's queue ordered by due time (Maelstrom's per-node `PriorityBlockingQueue`).
//! - **Partitions.** When a message comes due, it is dropped if a [`Partition`] then separates
//!   its source from its destination (Maelstrom checks its partition table on receipt too).
//! - **Down nodes.** A message due while its destination is down (killed, not yet restarted) is
//!   lost. A restarted node gets messages sent to its predecessor that come due after it started,
//!   as datagrams to an address would: a node must not mistake them for its own.
//!
//! **Ordering.** Messages are delivered in due-time order, ties in send order. With a constant
//! delay that is FIFO per (source, destination) pair; with a delay range it is not: a later
//! message with a shorter delay overtakes an earlier one, as in Maelstrom, whose network does not
//! promise FIFO either. The nodes must not rely on it, so the cluster scenarios use a range.
//!
//! Client traffic does not pass through here: like Maelstrom, which gives client messages zero
//! latency because delaying them hides anomalies, clients write to a node's stdin directly and
//! its replies go straight back to them. Lines to anything that is neither a client nor a node of
//! the cluster (a Maelstrom service such as `lin-kv`, or an unknown node) are protocol errors:
//! the cluster design forbids services.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use super::connection::{Connection, Network, ProtocolErrors, lock};
use super::partition::Partition;
use super::traffic::NetworkCounts;

/// Messages waiting for one destination. At Maelstrom's 1000 operations a second, a node
/// sending even ten messages per operation to a peer queues 10,000 a second; this many
/// undelivered means delivery has been stuck for seconds or a node floods its peers. Beyond it a
/// message is dropped and a protocol error recorded, rather than memory growing without bound.
const QUEUED_PER_NODE_MAX: usize = 100_000;

/// Maelstrom's service names, named in the protocol error a node gets for using one.
const SERVICES: [&str; 4] = ["lin-kv", "seq-kv", "lww-kv", "lin-tso"];

/// How the network treats node-to-node messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkConfig {
    /// The shortest delay a message gets.
    pub delay_min: Duration,
    /// The longest; equal to `delay_min` for a constant delay (FIFO per pair).
    pub delay_max: Duration,
    /// Probability that a message is lost, in [0, 1].
    pub loss: f64,
}

impl NetworkConfig {
    /// Maelstrom's default network: no delay, no loss.
    pub const PERFECT: NetworkConfig = NetworkConfig {
        delay_min: Duration::ZERO,
        delay_max: Duration::ZERO,
        loss: 0.0,
    };
}

/// One message on its way to a node.
struct InFlight {
    /// When it may be delivered.
    due: Instant,
    /// Send order, breaking ties between equal due times.
    sequence: u64,
    /// The sending node's index, for the partition check on delivery.
    src: usize,
    /// The whole line, newline included, as the sender wrote it.
    line: Vec<u8>,
}

impl InFlight {
    fn order_key(&self) -> (Instant, u64) {
        (self.due, self.sequence)
    }
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.order_key() == other.order_key()
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.order_key().cmp(&other.order_key())
    }
}

/// One destination node's side of the network.
struct Inbox {
    state: Mutex<InboxState>,
    /// Signalled when a message is queued, the node changes, or the router stops.
    changed: Condvar,
}

struct InboxState {
    /// Messages not yet due or not yet taken, earliest first.
    queue: BinaryHeap<Reverse<InFlight>>,
    /// The node's current process; `None` while it is down.
    connection: Option<Arc<Connection>>,
    /// Set by [`Router::stop`]: the delivery thread ends.
    stopped: bool,
    /// Set when the queue first hit [`QUEUED_PER_NODE_MAX`], so the error is recorded once.
    overflowed: bool,
}

/// Event counters, updated by reader and delivery threads.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    partitioned: AtomicU64,
    undeliverable: AtomicU64,
    partitions: AtomicU64,
}

/// The network of one cluster run.
pub struct Router {
    /// `n0`, `n1`, ...: a node's index is its position here.
    node_ids: Vec<String>,
    config: NetworkConfig,
    /// Seeded from the run's seed: loss and delays replay with it (thread timing aside).
    rng: Mutex<StdRng>,
    /// One per node, indexed like `node_ids`.
    inboxes: Vec<Inbox>,
    /// The partition in force; checked when each message comes due.
    partition: Mutex<Partition>,
    next_sequence: AtomicU64,
    counters: Counters,
    /// Where a node's messages to services or unknown nodes are reported.
    protocol_errors: ProtocolErrors,
    /// The delivery threads, one per node; joined by [`Router::stop`].
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Router {
    /// A network between `node_ids` with one delivery thread per node.
    pub fn start(
        node_ids: Vec<String>,
        config: NetworkConfig,
        rng: StdRng,
        protocol_errors: ProtocolErrors,
    ) -> Result<Arc<Router>, String> {
        assert!(
            config.delay_min <= config.delay_max && (0.0..=1.0).contains(&config.loss),
            "bad network config {config:?}"
        );
        let nodes = node_ids.len();
        let router = Arc::new(Router {
            node_ids,
            config,
            rng: Mutex::new(rng),
            inboxes: (0..nodes)
                .map(|_| Inbox {
                    state: Mutex::new(InboxState {
                        queue: BinaryHeap::new(),
                        connection: None,
                        stopped: false,
                        overflowed: false,
                    }),
                    changed: Condvar::new(),
                })
                .collect(),
            partition: Mutex::new(Partition::healed(nodes)),
            next_sequence: AtomicU64::new(0),
            counters: Counters::default(),
            protocol_errors,
            threads: Mutex::new(Vec::new()),
        });
        for dest in 0..nodes {
            let thread_router = Arc::clone(&router);
            let spawned = thread::Builder::new()
                .name(format!("router-to-{}", router.node_ids[dest]))
                .spawn(move || thread_router.deliver_loop(dest));
            match spawned {
                Ok(handle) => lock(&router.threads).push(handle),
                Err(e) => {
                    router.stop();
                    return Err(format!("spawn router thread: {e}"));
                }
            }
        }
        Ok(router)
    }

    pub fn node_ids(&self) -> &[String] {
        &self.node_ids
    }

    /// Puts `partition` in force: from now on, messages coming due across it are dropped.
    pub fn partition(&self, partition: Partition) {
        if !partition.is_healed() {
            self.counters.partitions.fetch_add(1, Ordering::Relaxed);
        }
        *lock(&self.partition) = partition;
    }

    /// Lifts any partition.
    pub fn heal(&self) {
        *lock(&self.partition) = Partition::healed(self.node_ids.len());
    }

    pub fn counts(&self) -> NetworkCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        NetworkCounts {
            sent: load(&self.counters.sent),
            delivered: load(&self.counters.delivered),
            lost: load(&self.counters.lost),
            partitioned: load(&self.counters.partitioned),
            undeliverable: load(&self.counters.undeliverable),
            partitions: load(&self.counters.partitions),
        }
    }

    /// Ends the delivery threads and lets go of every connection, breaking the cycle between
    /// the router and the connections that forward to it. Messages still queued are dropped.
    pub fn stop(&self) {
        for inbox in &self.inboxes {
            let mut state = lock(&inbox.state);
            state.stopped = true;
            state.connection = None;
            state.queue.clear();
            inbox.changed.notify_all();
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            // A panic there is a harness bug whose message is already on stderr.
            let _ = thread.join();
        }
    }

    fn index_of(&self, node_id: &str) -> Option<usize> {
        self.node_ids.iter().position(|id| id == node_id)
    }

    /// Draws whether a message is lost and, if not, its delay.
    fn draw_fate(&self) -> Option<Duration> {
        let mut rng = lock(&self.rng);
        if self.config.loss > 0.0 && rng.gen_bool(self.config.loss) {
            return None;
        }
        if self.config.delay_min == self.config.delay_max {
            return Some(self.config.delay_min);
        }
        Some(rng.gen_range(self.config.delay_min..=self.config.delay_max))
    }

    fn protocol_error(&self, error: String) {
        lock(&self.protocol_errors).push(error);
    }

    /// Runs on the delivery thread of node `dest`: takes each message when it comes due.
    fn deliver_loop(&self, dest: usize) {
        let inbox = &self.inboxes[dest];
        let mut state = lock(&inbox.state);
        loop {
            if state.stopped {
                return;
            }
            let now = Instant::now();
            let wait = match state.queue.peek() {
                None => None,
                Some(Reverse(next)) if next.due > now => Some(next.due - now),
                Some(_) => {
                    let Some(Reverse(message)) = state.queue.pop() else {
                        continue;
                    };
                    let connection = state.connection.clone();
                    // Written without the lock: a node slow to read its stdin must not stop
                    // senders from queueing.
                    drop(state);
                    self.deliver(dest, &message, connection.as_deref());
                    state = lock(&inbox.state);
                    continue;
                }
            };
            state = match wait {
                None => inbox
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(wait) => match inbox.changed.wait_timeout(state, wait) {
                    Ok((state, _)) => state,
                    Err(poisoned) => poisoned.into_inner().0,
                },
            };
        }
    }

    fn deliver(&self, dest: usize, message: &InFlight, connection: Option<&Connection>) {
        if lock(&self.partition).blocks(message.src, dest) {
            self.counters.partitioned.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Counted before the line is written: the node may act on it (and
        // its effects reach a test) before this thread runs again.
        self.counters.delivered.fetch_add(1, Ordering::SeqCst);
        let delivered =
            connection.is_some_and(|connection| connection.deliver(&message.line).is_ok());
        if !delivered {
            self.counters.delivered.fetch_sub(1, Ordering::SeqCst);
            self.counters.undeliverable.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Network for Router {
    fn forward(&self, src: &str, dest: &str, line: &[u8]) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let (Some(src_index), Some(dest_index)) = (self.index_of(src), self.index_of(dest)) else {
            let why = if SERVICES.contains(&dest) {
                "the cluster design forbids Maelstrom services"
            } else {
                "not a node of this cluster"
            };
            let text = String::from_utf8_lossy(line);
            self.protocol_error(format!(
                "{src}: message to {dest} ({why}): {}",
                text.trim_end()
            ));
            return;
        };
        let Some(delay) = self.draw_fate() else {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut line = line.to_vec();
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let message = InFlight {
            due: Instant::now() + delay,
            sequence: self.next_sequence.fetch_add(1, Ordering::Relaxed),
            src: src_index,
            line,
        };
        let inbox = &self.inboxes[dest_index];
        let mut state = lock(&inbox.state);
        if state.stopped {
            return;
        }
        if state.queue.len() >= QUEUED_PER_NODE_MAX {
            let first = !std::mem::replace(&mut state.overflowed, true);
            drop(state);
            self.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
            if first {
                self.protocol_error(format!(
                    "router: {QUEUED_PER_NODE_MAX} messages queued for {dest}; dropping more"
                ));
            }
            return;
        }
        state.queue.push(Reverse(message));
        inbox.changed.notify_all();
    }

    fn attach(&self, node_id: &str, connection: &Arc<Connection>) {
        if let Some(index) = self.index_of(node_id) {
            let inbox = &self.inboxes[index];
            let mut state = lock(&inbox.state);
            if !state.stopped {
                state.connection = Some(Arc::clone(connection));
            }
            inbox.changed.notify_all();
        }
    }

    fn detach(&self, node_id: &str, connection: &Arc<Connection>) {
        if let Some(index) = self.index_of(node_id) {
            let mut state = lock(&self.inboxes[index].state);
            if state
                .connection
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, connection))
            {
                state.connection = None;
            }
        }
    }
}
