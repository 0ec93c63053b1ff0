//! The links between a cluster's nodes, over TCP.
//!
//! Each node dials every peer at the address its `--peers` entry gives and
//! keeps that one connection up: re-dialed after a failure with a backoff
//! from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]. A connection is one-way: node
//! A's batches for B travel on the connection A dialed, B's for A on the
//! one B dialed. So a restarted node simply dials again, and no pair of
//! connections ever needs telling apart.
//!
//! A connection starts with the handshake ([`super::handshake`]): the
//! dialing node's hello (cluster id, its id, the node it dialed, a fresh
//! nonce, [`super::frame::Hello`]); the other
//! node answers with its own hello, or refuses ([`REFUSAL`], the reason
//! only in its log) and closes; the dialing node proves it holds the
//! cluster secret, then the other node checks that proof and proves it
//! too (the dialer first, so a stranger gets no proof to test guesses
//! against; what it does learn is in [`super::handshake`]: nothing of the
//! membership). Both sides check the other: a node
//! of another cluster or version, one that cannot prove the secret, or
//! one dialed at an address that another node answers, is refused, logged
//! with its address and counted ([`Links::failures`]), never served.
//! Nothing a peer sends is handed on before both proofs. After them the
//! dialing node sends its `--peers`, always first (the other node
//! compares them with its own and logs how they differ), then batches, and a keepalive when it has had nothing
//! to send for
//! [`KEEPALIVE_EVERY`], so the other side can tell a silent peer from a
//! dead link ([`IDLE_TIMEOUT`]); each carries a tag under the session's
//! key and sequence number, checked before the frame is decoded. A peer
//! that sends anything else (garbage, an oversized frame, a wrong tag, a
//! second hello, bytes on the return path) is disconnected and logged.
//!
//! Everything is bounded: frames and bytes queued for a peer (a send past
//! them fails at once, [`SendError::Full`], handing the batch back),
//! connections before their handshake is done
//! ([`BEFORE_PROOF_CONNECTIONS_MAX`], one without a hello that passed the
//! check, of the source network with the most, closed to make room, each given [`HELLO_TIMEOUT`] for the whole
//! handshake) and after it (one per peer: a peer's new, authenticated
//! connection closes its old one), the
//! bytes of batches received and not yet taken by the node
//! ([`INCOMING_BYTES_MAX`], counted as a body arrives), and every
//! connect, read, write and hand-over has a timeout. While a link is
//! down, sends to that peer fail at once ([`SendError::Down`]) and what was
//! queued is dropped: the Raft groups' calls time out and openraft sends
//! them again, so nothing waits on a dead link.
//!
//! # Layout
//! - this file: the limits, the public types and [`Links`], which starts
//!   the tasks below and queues what the node sends.
//! - `dial`: the outgoing side, one task per peer: dialing, the dialing
//!   side of the handshake, writing the queued frames, dialing again.
//! - `accept`: the incoming side: accepting, the pool of connections
//!   before their proof, the accepting side of the handshake, handing
//!   each peer's batches to the node.
//! - `io`: reading and writing frames on a socket, each step under its
//!   timeout (and the receive budget).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{FRAME_BYTES_MAX, batch_frames, items, merge};
use super::peers::{Cluster, NODES_MAX};
use super::secret::Secret;
use crate::log;
use crate::raft::transport::Batch;
use crate::raft::types::NodeId;
use accept::accept;
use dial::Dialer;

mod accept;
mod dial;
mod io;

/// How long a dial may take: a peer on the same network answers in far
/// less; a peer that is down should not hold the link's retries back.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long each side's whole handshake may take once connected (one
/// deadline over every byte of the hellos and proofs, so a stranger that
/// sends a length and stalls is closed as soon as one that sends nothing).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a write may make no progress: a peer that reads nothing of a
/// [`WRITE_CHUNK_BYTES`] chunk for this long is taken for gone, so the
/// link is dialed again rather than stuck. A slow but live link never
/// hits it, however large the frame.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes written under one [`WRITE_TIMEOUT`]: a frame goes out in chunks
/// of this size, so the timeout measures progress, not a frame's size.
pub const WRITE_CHUNK_BYTES: usize = 64 << 10;

/// How long a sending side stays silent before it sends a keepalive: a
/// fraction of [`IDLE_TIMEOUT`], so a lost keepalive or two do not close a
/// live link.
pub const KEEPALIVE_EVERY: Duration = Duration::from_millis(500);

/// How long a receiving side waits for the next frame before it takes the
/// link for dead: six keepalive intervals. Raft's own timeouts decide who
/// leads; this only decides when to stop waiting on a connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the rest of a frame may take once its length has come: a
/// full frame at 1 MB/s, far below any link a cluster runs on.
pub const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(32);

/// The first wait before dialing a peer again after a failure, doubled
/// after every failure up to [`BACKOFF_MAX`]: a peer that restarts is back
/// within a few tens of milliseconds of listening again.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// The longest wait between dials: a peer that is down for long is tried
/// every two seconds, which costs nothing and is found soon once back.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Frames queued for one peer at most: the groups send one batch per peer
/// per 10 ms tick, so this is over two seconds of batches behind a slow
/// link; past it the link is not keeping up and sends fail.
pub const OUTGOING_FRAMES_MAX: usize = 256;

/// Bytes queued for one peer at most: what a slow peer can make a node
/// hold in memory for it.
pub const OUTGOING_BYTES_MAX: usize = 64 << 20;

/// Batches received and not yet taken by the node: past it, the links stop
/// reading (TCP's flow control pushes back on the peers).
pub const INCOMING_BATCHES_MAX: usize = 1024;

/// How much memory a frame may take once decoded, per byte of its body:
/// JSON is compact for the smallest items (an empty `Unavailable` answer
/// is about 35 bytes of JSON and about six times that in memory, measured
/// by helper-30's review), and the body itself is held while it decodes.
pub const DECODE_FACTOR: usize = 8;

/// Bytes that frames read from all peers may hold at once, counted as
/// [`DECODE_FACTOR`] per body byte until the node takes the batch
/// ([`Received::budget`]): one frame of [`FRAME_BYTES_MAX`] fits, and what
/// peers can make a node hold stays bounded. A frame's length is not
/// authenticated (its tag comes after its body), so the budget is taken
/// as the body's bytes arrive, [`RECEIVE_CHUNK_BYTES`] at a time, never
/// for bytes announced and not sent: a bare length, injected on one link
/// or sent by a peer that stalls, holds nothing and keeps no other peer
/// waiting. A connection waits for room (at most [`DELIVER_TIMEOUT`])
/// before it reads on; one that waits longer is closed and counted
/// ([`Failures::stalls`]).
pub const INCOMING_BYTES_MAX: usize = FRAME_BYTES_MAX * DECODE_FACTOR;

/// Bytes of a frame's body read, and their share of [`INCOMING_BYTES_MAX`]
/// taken, at a time: small enough that what a connection holds follows
/// what it was sent, large enough that a full frame takes only a few
/// hundred steps.
pub const RECEIVE_CHUNK_BYTES: usize = 128 << 10;

/// How long a connection waits for the node to take its batch, or for
/// room in [`INCOMING_BYTES_MAX`]: a node that takes nothing for this long
/// is stuck or stopping; the connection closes and the peer dials again
/// rather than hold a task and its bytes forever.
pub const DELIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepted connections that have not yet proved the cluster secret:
/// strays and peers in the middle of their handshake; twice the most
/// peers a node has, so every peer's dial fits with room to spare. When a
/// connection comes and all are taken, one is closed at random among
/// those whose hello has not passed the check (all, if every one's has),
/// of the source network (a /24 or /64) that has the most: strangers that
/// send no valid hello, from one address or many, never close a peer's
/// handshake; only strangers knowing the cluster id and a member's id can,
/// by the draw. A connection leaves the pool as soon as the dialer's
/// proof checks out. Each is closed within [`HELLO_TIMEOUT`]
/// anyway. Connections past their proof are apart from these: one per
/// peer, the newest (a peer that dials again replaces its old one).
pub const BEFORE_PROOF_CONNECTIONS_MAX: usize = 2 * NODES_MAX;

/// A batch received from a peer, and the share of [`INCOMING_BYTES_MAX`]
/// it holds until it is dropped.
pub struct Received {
    pub from: NodeId,
    pub batch: Batch,
    /// Released when dropped: keep it until the batch has been handed on.
    pub budget: Budget,
}

/// A share of [`INCOMING_BYTES_MAX`], given back when dropped.
pub struct Budget {
    _permit: OwnedSemaphorePermit,
}

#[cfg(test)]
impl Budget {
    /// A share of a budget of its own: for tests that feed a node's loop
    /// batches by hand.
    pub(crate) fn for_test() -> Budget {
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        Budget { _permit: permit }
    }
}

/// Why a batch, or part of it, was not queued for a peer. Each carries
/// the items not queued, so the caller can answer their calls at once
/// (openraft's `Unreachable`, or `PayloadTooLarge` for `TooLarge`) rather
/// than let them time out.
#[derive(Debug)]
pub enum SendError {
    /// The peer is not a member; nothing was queued.
    UnknownPeer { peer: NodeId, unsent: Batch },
    /// The link to the peer is down (being dialed again); nothing was
    /// queued.
    Down { peer: NodeId, unsent: Batch },
    /// The peer's queue has no room for the whole batch: the link does not
    /// keep up. Nothing was queued (a batch is queued whole or not at all).
    Full { peer: NodeId, unsent: Batch },
    /// These items are each too large for a frame alone; the rest of the
    /// batch was queued.
    TooLarge { peer: NodeId, items: Batch },
}

impl SendError {
    /// The peer the batch was for.
    pub fn peer(&self) -> NodeId {
        match self {
            SendError::UnknownPeer { peer, .. }
            | SendError::Down { peer, .. }
            | SendError::Full { peer, .. }
            | SendError::TooLarge { peer, .. } => *peer,
        }
    }

    /// The items not queued.
    pub fn unsent(&self) -> &Batch {
        match self {
            SendError::UnknownPeer { unsent, .. }
            | SendError::Down { unsent, .. }
            | SendError::Full { unsent, .. }
            | SendError::TooLarge { items: unsent, .. } => unsent,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = items(self.unsent());
        match self {
            SendError::UnknownPeer { peer, .. } => {
                write!(f, "node {peer} is not a member ({count} items not sent)")
            }
            SendError::Down { peer, .. } => write!(
                f,
                "the link to node {peer} is down ({count} items not sent)"
            ),
            SendError::Full { peer, .. } => write!(
                f,
                "the link to node {peer} has no room within {OUTGOING_FRAMES_MAX} frames and \
                 {OUTGOING_BYTES_MAX} bytes ({count} items not sent)"
            ),
            SendError::TooLarge { peer, .. } => write!(
                f,
                "{count} items for node {peer} are each over {FRAME_BYTES_MAX} bytes and were \
                 left out"
            ),
        }
    }
}

/// What queues frames for one peer.
struct Outgoing {
    frames: mpsc::Sender<Vec<u8>>,
    /// Bytes in `frames`, against [`OUTGOING_BYTES_MAX`].
    queued_bytes: Arc<AtomicUsize>,
    /// Whether the link is up (handshake done, not failed since).
    up: watch::Receiver<bool>,
}

/// What the links refused since they started, by kind: each refusal is
/// also logged with the remote address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    /// Connections closed before a proof: garbage, a wrong frame, a hello
    /// of another cluster, version or node, no hello and proof in time.
    pub hellos: u64,
    /// Proofs that did not match: a peer without the cluster secret, or a
    /// replayed or reflected exchange.
    pub proofs: u64,
    /// Frames after the proofs with a wrong tag (forged, replayed,
    /// reordered), an impossible length, that do not decode, or out of
    /// place (a second hello; a `--peers` list that is not the first
    /// frame, or a second one).
    pub frames: u64,
    /// Connections closed after the proofs because the frames of all
    /// peers left no room in [`INCOMING_BYTES_MAX`] for [`DELIVER_TIMEOUT`].
    pub stalls: u64,
}

/// [`Failures`], counted by every connection's task.
#[derive(Default)]
struct Counters {
    hellos: AtomicU64,
    proofs: AtomicU64,
    frames: AtomicU64,
    stalls: AtomicU64,
}

impl Counters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A node's links to its peers. Dropping it closes them all.
pub struct Links {
    cluster: Cluster,
    /// What the links refused, for [`Links::failures`].
    counters: Arc<Counters>,
    outgoing: BTreeMap<NodeId, Outgoing>,
    /// The accepting task and each peer's dialing task.
    tasks: Vec<JoinHandle<()>>,
}

impl Links {
    /// Starts node `cluster.me`'s links: accepts its peers on `listener`
    /// (normally bound to its own `--peers` entry) and dials every peer;
    /// every connection, either way, proves `secret` on both ends before
    /// it carries anything. Batches received come out of the returned
    /// receiver, with their sender's id. Must be called within a tokio
    /// runtime.
    pub fn start(
        listener: TcpListener,
        cluster: Cluster,
        secret: Secret,
    ) -> (Links, mpsc::Receiver<Received>) {
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_BATCHES_MAX);
        let counters = Arc::new(Counters::default());
        let secret = Arc::new(secret);
        let mut tasks = vec![tokio::spawn(accept(
            listener,
            Peer {
                cluster: cluster.clone(),
                secret: Arc::clone(&secret),
                counters: Arc::clone(&counters),
            },
            incoming_tx,
        ))];
        let mut outgoing = BTreeMap::new();
        for (&peer, address) in cluster.membership.nodes() {
            if peer == cluster.me {
                continue;
            }
            let (frames_tx, frames_rx) = mpsc::channel(OUTGOING_FRAMES_MAX);
            let (up_tx, up_rx) = watch::channel(false);
            let queued_bytes = Arc::new(AtomicUsize::new(0));
            let dialer = Dialer {
                us: Peer {
                    cluster: cluster.clone(),
                    secret: Arc::clone(&secret),
                    counters: Arc::clone(&counters),
                },
                peer,
                address: address.clone(),
                frames: frames_rx,
                queued_bytes: Arc::clone(&queued_bytes),
                up: up_tx,
            };
            tasks.push(tokio::spawn(dialer.run()));
            outgoing.insert(
                peer,
                Outgoing {
                    frames: frames_tx,
                    queued_bytes,
                    up: up_rx,
                },
            );
        }
        (
            Links {
                cluster,
                counters,
                outgoing,
                tasks,
            },
            incoming_rx,
        )
    }

    /// This node and its cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// What the links refused since they started.
    pub fn failures(&self) -> Failures {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        Failures {
            hellos: load(&self.counters.hellos),
            proofs: load(&self.counters.proofs),
            frames: load(&self.counters.frames),
            stalls: load(&self.counters.stalls),
        }
    }

    /// Queues `batch` for `peer`, as one frame or several when it is over
    /// [`FRAME_BYTES_MAX`], whole or not at all; fails at once when the
    /// link is down or has no room, handing back what was not queued.
    pub fn send(&self, peer: NodeId, batch: Batch) -> Result<(), SendError> {
        let Some(out) = self.outgoing.get(&peer) else {
            return Err(SendError::UnknownPeer {
                peer,
                unsent: batch,
            });
        };
        if !*out.up.borrow() {
            return Err(SendError::Down {
                peer,
                unsent: batch,
            });
        }
        let (frames, too_large) = batch_frames(batch);
        let all_back = |frames: Vec<(Vec<u8>, Batch)>, too_large: Batch| {
            let mut unsent = Batch::default();
            for (_, part) in frames {
                merge(&mut unsent, part);
            }
            merge(&mut unsent, too_large);
            unsent
        };
        let bytes: usize = frames.iter().map(|(frame, _)| frame.len()).sum();
        let before = out.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
        if before + bytes > OUTGOING_BYTES_MAX {
            out.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
            let unsent = all_back(frames, too_large);
            return Err(SendError::Full { peer, unsent });
        }
        let slots = match out.frames.try_reserve_many(frames.len()) {
            Ok(slots) => slots,
            Err(e) => {
                out.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
                let unsent = all_back(frames, too_large);
                return Err(match e {
                    mpsc::error::TrySendError::Full(()) => SendError::Full { peer, unsent },
                    mpsc::error::TrySendError::Closed(()) => SendError::Down { peer, unsent },
                });
            }
        };
        for (slot, (frame, _)) in slots.zip(frames) {
            slot.send(frame);
        }
        if items(&too_large) > 0 {
            log::warn(format_args!(
                "{} items for node {peer} are each over {FRAME_BYTES_MAX} bytes: left out",
                items(&too_large)
            ));
            return Err(SendError::TooLarge {
                peer,
                items: too_large,
            });
        }
        Ok(())
    }

    /// Whether the link to `peer` is up.
    pub fn is_up(&self, peer: NodeId) -> bool {
        self.outgoing.get(&peer).is_some_and(|out| *out.up.borrow())
    }

    /// Waits until the link to `peer` is up (`up`) or down; false for a
    /// peer that is not a member.
    pub async fn wait_until(&self, peer: NodeId, up: bool) -> bool {
        let Some(out) = self.outgoing.get(&peer) else {
            return false;
        };
        let mut state = out.up.clone();
        state.wait_for(|&now| now == up).await.is_ok()
    }
}

impl Links {
    /// Asks every link's task to stop (the accepting task and each peer's
    /// dialing task are aborted; their connections close as they end).
    /// It does not wait for them: until they have ended, [`Links::is_up`]
    /// may still say true and a send may still be queued (it goes
    /// nowhere); once a peer's task has ended, sends to it fail as
    /// [`SendError::Down`]. What dropping the links does, for a holder
    /// that shares them.
    pub fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.close();
    }
}

/// What every connection's task of a node needs: who the node is, the
/// secret it proves, and where it counts what it refused.
#[derive(Clone)]
struct Peer {
    cluster: Cluster,
    /// Shared, not copied: one copy of the key, zeroed when dropped.
    secret: Arc<Secret>,
    counters: Arc<Counters>,
}

/// What an accepting node tells a peer it refuses: no more, since the
/// peer has proved nothing (no cluster id, no node id, no membership);
/// the reason is in the refusing node's log.
pub const REFUSAL: &str = "refused (the reason is in the log of the node dialed)";
