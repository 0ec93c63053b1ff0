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
//! dialing node's hello (cluster id, its id, the node it dialed, a digest
//! of its `--peers`, a fresh nonce, [`super::frame::Hello`]); the other
//! node answers with its own hello, or refuses ([`REFUSAL`], the reason
//! only in its log) and closes; the dialing node proves it holds the
//! cluster secret, then the other node checks that proof and proves it
//! too (the dialer first, so a stranger gets no proof to test guesses
//! against, and no address either). Both sides check the other: a node
//! of another cluster or version, one that cannot prove the secret, or
//! one dialed at an address that another node answers, is refused, logged
//! with its address and counted ([`Links::failures`]), never served.
//! Nothing a peer sends is handed on before both proofs. After them the
//! dialing node sends its `--peers` when the digests differ (the other
//! node logs how), then batches, and a keepalive when it has had nothing
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
//! ([`BEFORE_PROOF_CONNECTIONS_MAX`], one of the source address with the
//! most closed to make room, each given [`HELLO_TIMEOUT`] for the whole
//! handshake) and after it (one per peer: a peer's new, authenticated
//! connection closes its old one), the
//! bytes of batches received and not yet taken by the node
//! ([`INCOMING_BYTES_MAX`], counted as a body arrives), and every
//! connect, read, write and hand-over has a timeout. While a link is
//! down, sends to that peer fail at once ([`SendError::Down`]) and what was
//! queued is dropped: the Raft groups' calls time out and openraft sends
//! them again, so nothing waits on a dead link.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::timeout;

use super::frame::{
    FRAME_BYTES_MAX, Frame, FrameError, Hello, LENGTH_BYTES, batch_frames, body_length, decode,
    decode_handshake, differences, encode, handshake_length, items, merge, seal,
};
use super::handshake::{Role, Session, Transcript, nonce};
use super::peers::{Cluster, NODES_MAX};
use super::secret::Secret;
use crate::log;
use crate::raft::transport::Batch;
use crate::raft::types::NodeId;

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
/// those of the source address that has the most: a stranger flooding
/// connections from one address closes only its own, and strangers from
/// many addresses close a peer's handshake (one connection of its
/// address) only by the luck of the draw, never by simply being newer,
/// as closing the oldest did. Each is closed within [`HELLO_TIMEOUT`]
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
    /// place (a second hello; a `--peers` list missing, not due, or not
    /// the one the hello's digest was of).
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

impl Drop for Links {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Why reading a frame failed.
enum ReadError {
    /// The connection closed between frames.
    Closed,
    /// Nothing came for this long.
    Timeout(Duration),
    Io(std::io::Error),
    Frame(FrameError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "the connection closed"),
            ReadError::Timeout(wait) => write!(f, "nothing came for {} ms", wait.as_millis()),
            ReadError::Io(e) => write!(f, "reading: {e}"),
            ReadError::Frame(e) => write!(f, "the peer sent {e}"),
        }
    }
}

/// Reads a frame's length field, waiting at most `idle` for it; the
/// caller checks the length against its limit.
async fn read_length_field<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle: Duration,
) -> Result<[u8; LENGTH_BYTES], ReadError> {
    let mut field = [0u8; LENGTH_BYTES];
    match timeout(idle, reader.read_exact(&mut field)).await {
        Err(_) => return Err(ReadError::Timeout(idle)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ReadError::Closed);
        }
        Ok(Err(e)) => return Err(ReadError::Io(e)),
        Ok(Ok(_)) => {}
    }
    Ok(field)
}

/// Reads a frame's body of `length` bytes (at most [`FRAME_BYTES_MAX`],
/// checked by [`body_length`]), not yet decoded.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    length: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = vec![0; length];
    match timeout(FRAME_READ_TIMEOUT, reader.read_exact(&mut body)).await {
        Err(_) => return Err(ReadError::Timeout(FRAME_READ_TIMEOUT)),
        Ok(Err(e)) => return Err(ReadError::Io(e)),
        Ok(Ok(_)) => {}
    }
    Ok(body)
}

/// Why a frame's body was not read whole.
enum BodyError {
    /// The node dropped its links (the budget is closed).
    Stopping,
    /// No room in [`INCOMING_BYTES_MAX`] for the next chunk within
    /// [`DELIVER_TIMEOUT`], `had` bytes of the body read.
    NoRoom {
        had: usize,
    },
    Read(ReadError),
}

/// Reads a frame's body of `length` bytes (checked by [`body_length`]) in
/// chunks of [`RECEIVE_CHUNK_BYTES`], taking each chunk's share of
/// `budget` ([`DECODE_FACTOR`] per byte) before reading it: the body and
/// its share. The whole body within [`FRAME_READ_TIMEOUT`]; each wait for
/// room within [`DELIVER_TIMEOUT`].
async fn read_budgeted_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    length: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), BodyError> {
    let deadline = tokio::time::Instant::now() + FRAME_READ_TIMEOUT;
    let mut body = Vec::new();
    // An empty share, which each chunk's joins.
    let mut held = Arc::clone(budget)
        .acquire_many_owned(0)
        .await
        .map_err(|_| BodyError::Stopping)?;
    while body.len() < length {
        let had = body.len();
        let chunk = (length - had).min(RECEIVE_CHUNK_BYTES);
        // At most RECEIVE_CHUNK_BYTES * DECODE_FACTOR: it fits.
        let share = u32::try_from(chunk * DECODE_FACTOR).unwrap_or(u32::MAX);
        let permit = match timeout(
            DELIVER_TIMEOUT,
            Arc::clone(budget).acquire_many_owned(share),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(BodyError::Stopping),
            Err(_) => return Err(BodyError::NoRoom { had }),
        };
        held.merge(permit);
        // Grown as it fills: never more memory than the bytes read (at
        // most doubled by the vector's growth) and their share covers.
        body.resize(had + chunk, 0);
        let unread = body.get_mut(had..).unwrap_or_default();
        match tokio::time::timeout_at(deadline, reader.read_exact(unread)).await {
            Err(_) => return Err(BodyError::Read(ReadError::Timeout(FRAME_READ_TIMEOUT))),
            Ok(Err(e)) => return Err(BodyError::Read(ReadError::Io(e))),
            Ok(Ok(_)) => {}
        }
    }
    Ok((body, held))
}

/// Reads one frame of the handshake (a hello, a proof or a refusal): its
/// body as sent, for the transcript, and the frame decoded; nothing over
/// [`super::frame::HANDSHAKE_BYTES_MAX`] is allocated, and a frame of
/// another kind is refused by its kind byte, unparsed. The caller bounds
/// the whole handshake by [`HELLO_TIMEOUT`].
async fn read_handshake_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<(Vec<u8>, Frame), ReadError> {
    let field = read_length_field(reader, HELLO_TIMEOUT).await?;
    let length = handshake_length(field).map_err(ReadError::Frame)?;
    let body = read_body(reader, length).await?;
    let frame = decode_handshake(&body).map_err(ReadError::Frame)?;
    Ok((body, frame))
}

/// Seals an encoded frame with the session's next tag.
fn seal_next(session: &mut Session, frame: &mut Vec<u8>) {
    let tag = session.seal(frame.get(LENGTH_BYTES..).unwrap_or_default());
    seal(frame, &tag);
}

/// Writes one encoded frame, in chunks of [`WRITE_CHUNK_BYTES`] each
/// within [`WRITE_TIMEOUT`].
async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> Result<(), String> {
    for chunk in frame.chunks(WRITE_CHUNK_BYTES) {
        match timeout(WRITE_TIMEOUT, writer.write_all(chunk)).await {
            Err(_) => {
                return Err(format!(
                    "the peer read nothing for {} ms",
                    WRITE_TIMEOUT.as_millis()
                ));
            }
            Ok(Err(e)) => return Err(format!("writing: {e}")),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
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

/// One peer's dialing side: keeps the link up and writes what is queued.
struct Dialer {
    us: Peer,
    peer: NodeId,
    address: String,
    frames: mpsc::Receiver<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    up: watch::Sender<bool>,
}

/// Why a dial did not give a link.
enum DialError {
    /// The peer refused this node's hello, or answered as another node
    /// or cluster, or without proving the secret: a misconfiguration (or
    /// an impostor) an operator must see.
    Refused(String),
    /// Not reachable, closed, timed out: the peer may be down.
    Failed(String),
}

/// Why a link ended.
enum Ended {
    /// The node dropped its links.
    Stopped,
    Lost(String),
}

impl Dialer {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut last_failure = String::new();
        loop {
            match self.dial().await {
                Ok((stream, session)) => {
                    last_failure.clear();
                    let since = tokio::time::Instant::now();
                    self.up.send_replace(true);
                    log::info(format_args!(
                        "link to node {} at {} is up",
                        self.peer, self.address
                    ));
                    let ended = self.carry(stream, session).await;
                    self.up.send_replace(false);
                    // A link that stayed up a while starts its dials over
                    // from the shortest wait; one that keeps failing right
                    // after its hello backs off like a failed dial.
                    if since.elapsed() >= IDLE_TIMEOUT {
                        backoff = BACKOFF_MIN;
                    }
                    self.drain();
                    match ended {
                        Ended::Stopped => return,
                        Ended::Lost(why) => log::warn(format_args!(
                            "link to node {} at {} lost: {why}; dialing again",
                            self.peer, self.address
                        )),
                    }
                }
                // Peer-supplied text (a refusal, at most REFUSE_BYTES_MAX)
                // escaped, so it cannot forge log lines.
                Err(DialError::Refused(why)) => log::warn(format_args!(
                    "link to node {} at {}: {why:?}",
                    self.peer, self.address
                )),
                // A peer that is down fails every dial the same way: said
                // once, then only when the reason changes.
                Err(DialError::Failed(why)) => {
                    if why != last_failure {
                        log::info(format_args!(
                            "link to node {} at {}: {why}; dialing again",
                            self.peer, self.address
                        ));
                        last_failure = why;
                    }
                }
            }
            // Frames queued by a send that raced the link going down.
            self.drain();
            // Between half the backoff and all of it, so peers that lost
            // each other at once do not dial again in step.
            // No randomness from the OS: no jitter, the plain backoff.
            let jitter =
                getrandom::u32().map_or(0.0, |draw| f64::from(draw) / f64::from(u32::MAX) * 0.5);
            tokio::time::sleep(backoff.mul_f64(1.0 - jitter)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connects and runs the dialing side of the handshake: the link's
    /// stream and its session, once the peer has proved the secret.
    async fn dial(&self) -> Result<(TcpStream, Session), DialError> {
        let failed = DialError::Failed;
        let mut stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address)).await {
            Err(_) => {
                return Err(failed(format!(
                    "no connection within {} ms",
                    CONNECT_TIMEOUT.as_millis()
                )));
            }
            Ok(Err(e)) => return Err(failed(format!("connecting: {e}"))),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        // One deadline over the whole exchange: a peer that accepts and
        // stalls mid-handshake costs this link no more than one that is
        // down.
        let (theirs, mut session) = match timeout(HELLO_TIMEOUT, self.handshake(&mut stream)).await
        {
            Err(_) => {
                return Err(failed(format!(
                    "no hello and proof back within {} ms",
                    HELLO_TIMEOUT.as_millis()
                )));
            }
            Ok(done) => done?,
        };
        // Both sides tell from the digests whether the lists differ; then
        // this node's list is the link's first frame, sealed, and the
        // node there logs how they differ (and this node logs how, on
        // that node's link to this one).
        let ours = self.us.cluster.membership.nodes();
        if theirs.members_differ(&self.us.cluster.membership) {
            log::warn(format_args!(
                "node {}'s --peers differ from this node's (the log of each says how)",
                self.peer
            ));
            let mut frame = encode(&Frame::Members(ours.clone()))
                .map_err(|e| failed(format!("encoding this node's --peers: {e}")))?;
            seal_next(&mut session, &mut frame);
            write_frame(&mut stream, &frame).await.map_err(failed)?;
        }
        Ok((stream, session))
    }

    /// The dialing side's hello, the peer's hello and proof checked, this
    /// side's proof: the peer's hello and the session.
    async fn handshake(&self, stream: &mut TcpStream) -> Result<(Hello, Session), DialError> {
        let (failed, refused) = (DialError::Failed, DialError::Refused);
        let us = &self.us;
        let nonce = nonce().map_err(failed)?;
        let ours = encode(&Frame::Hello(Hello::new(&us.cluster, self.peer, nonce)))
            .map_err(|e| failed(format!("encoding the hello: {e}")))?;
        write_frame(stream, &ours).await.map_err(failed)?;
        let answer = |e: ReadError| failed(format!("no hello or proof back: {e}"));
        let unexpected = |frame: Frame| match frame {
            Frame::Refuse(why) => refused(format!("refused: {why}")),
            other => {
                Counters::count(&us.counters.hellos);
                refused(format!("answered the hello with a {} frame", other.kind()))
            }
        };
        let (body, theirs) = match read_handshake_frame(stream).await.map_err(answer)? {
            (body, Frame::Hello(theirs)) => (body, theirs),
            (_, other) => return Err(unexpected(other)),
        };
        if let Err(why) = theirs.check(&us.cluster, Some(self.peer)) {
            Counters::count(&us.counters.hellos);
            return Err(refused(format!("the node there {why}")));
        }
        // This side proves first: the node dialed is the one at a
        // configured address, and the acceptor proves nothing to anyone
        // who has not proved the secret to it.
        let transcript = Transcript::new(ours.get(LENGTH_BYTES..).unwrap_or_default(), &body);
        let proof = encode(&Frame::Proof(transcript.proof(&us.secret, Role::Dialer)))
            .map_err(|e| failed(format!("encoding the proof: {e}")))?;
        write_frame(stream, &proof).await.map_err(failed)?;
        let proof = match read_handshake_frame(stream).await.map_err(answer)? {
            (_, Frame::Proof(proof)) => proof,
            (_, other) => return Err(unexpected(other)),
        };
        if !transcript.verify(&us.secret, Role::Acceptor, &proof) {
            Counters::count(&us.counters.proofs);
            return Err(refused(
                "the node there does not prove it holds the cluster secret (do both nodes' \
                 --cluster-secret-file hold the same secret?)"
                    .into(),
            ));
        }
        Ok((theirs, transcript.session(&us.secret)))
    }

    /// Writes queued frames, and keepalives when idle, each sealed with
    /// its tag, until the link fails or the node drops its links.
    async fn carry(&mut self, stream: TcpStream, mut session: Session) -> Ended {
        let (mut reader, mut writer) = stream.into_split();
        let keepalive = match encode(&Frame::Keepalive) {
            Ok(bytes) => bytes,
            Err(e) => return Ended::Lost(format!("encoding a keepalive: {e}")),
        };
        let mut probe = [0u8; 1];
        loop {
            let mut frame = tokio::select! {
                frame = self.frames.recv() => {
                    let Some(frame) = frame else {
                        return Ended::Stopped;
                    };
                    self.queued_bytes.fetch_sub(frame.len(), Ordering::SeqCst);
                    frame
                }
                () = tokio::time::sleep(KEEPALIVE_EVERY) => keepalive.clone(),
                // Nothing comes back on a link after the handshake: a read
                // ends only when the peer closes it or misbehaves.
                read = reader.read(&mut probe) => {
                    return Ended::Lost(match read {
                        Ok(0) => "the peer closed it".into(),
                        Ok(_) => "the peer sent bytes on the return path".into(),
                        Err(e) => format!("reading: {e}"),
                    });
                }
            };
            seal_next(&mut session, &mut frame);
            if let Err(why) = write_frame(&mut writer, &frame).await {
                return Ended::Lost(why);
            }
        }
    }

    /// Drops what is queued (the link it was for is gone).
    fn drain(&mut self) {
        while let Ok(frame) = self.frames.try_recv() {
            self.queued_bytes.fetch_sub(frame.len(), Ordering::SeqCst);
        }
    }
}

/// The accepted connections, by where they stand.
#[derive(Default)]
struct Accepted {
    /// Numbers the connections, so a task finds its own entry.
    next: u64,
    /// Connections before their proof: number, source address, task.
    before_proof: Vec<(u64, IpAddr, AbortHandle)>,
    /// Each peer's connection past its proof.
    peers: BTreeMap<NodeId, (u64, AbortHandle)>,
}

impl Accepted {
    /// Takes out a connection before its proof to make room for one more
    /// ([`BEFORE_PROOF_CONNECTIONS_MAX`]): one at random among those of
    /// the source address with the most; `None` while there is room.
    fn evict(&mut self) -> Option<(IpAddr, AbortHandle)> {
        if self.before_proof.len() < BEFORE_PROOF_CONNECTIONS_MAX {
            return None;
        }
        let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (_, source, _) in &self.before_proof {
            *counts.entry(*source).or_default() += 1;
        }
        let most = counts.values().copied().max().unwrap_or_default();
        let candidates: Vec<usize> = (0..self.before_proof.len())
            .filter(|&at| counts.get(&self.before_proof[at].1) == Some(&most))
            .collect();
        // No randomness from the OS: the first candidate, still one of
        // the busiest address's.
        let draw = getrandom::u32().map_or(0, |draw| draw as usize);
        let at = candidates.get(draw % candidates.len().max(1)).copied()?;
        let (_, source, task) = self.before_proof.swap_remove(at);
        Some((source, task))
    }
}

type Shared = Arc<Mutex<Accepted>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Accepted> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection's place in [`Accepted`], given up when its task ends or
/// is aborted.
struct Place {
    shared: Shared,
    number: u64,
}

impl Place {
    /// Moves this connection from the ones before their proof to `peer`'s,
    /// closing the one `peer` had; false when it was closed meanwhile.
    fn promote(&self, peer: NodeId) -> bool {
        let replaced = {
            let mut accepted = lock(&self.shared);
            let Some(at) = accepted
                .before_proof
                .iter()
                .position(|(number, _, _)| *number == self.number)
            else {
                return false;
            };
            let (number, _, task) = accepted.before_proof.swap_remove(at);
            accepted.peers.insert(peer, (number, task))
        };
        if let Some((_, old)) = replaced {
            // Its batches already handed on stay ahead of this one's; the
            // rest are dropped, and openraft sends again what matters.
            old.abort();
            log::info(format_args!(
                "node {peer} connected again: its previous connection is closed"
            ));
        }
        true
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut accepted = lock(&self.shared);
        accepted
            .before_proof
            .retain(|(number, _, _)| *number != self.number);
        accepted
            .peers
            .retain(|_, (number, _)| *number != self.number);
    }
}

/// Accepts peers' connections and reads each in a task of its own.
async fn accept(listener: TcpListener, us: Peer, incoming: mpsc::Sender<Received>) {
    let budget = Arc::new(Semaphore::new(INCOMING_BYTES_MAX));
    let shared = Shared::default();
    // Dropped with this task, which aborts every connection's task.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                log::warn(format_args!("accepting a peer's connection: {e}"));
                tokio::time::sleep(BACKOFF_MAX).await;
                continue;
            }
        };
        let evicted = {
            // Held while the task is spawned and listed, so the task
            // cannot look for its entry before it is there.
            let mut accepted = lock(&shared);
            let evicted = accepted.evict();
            let place = Place {
                shared: Arc::clone(&shared),
                number: accepted.next,
            };
            accepted.next += 1;
            let (us, incoming, budget) = (us.clone(), incoming.clone(), Arc::clone(&budget));
            let number = place.number;
            let task = connections.spawn(async move {
                match receive(stream, &us, &incoming, &budget, &place).await {
                    Ok(Some(peer)) => {
                        log::info(format_args!("link from node {peer} ({from}) closed"));
                    }
                    Ok(None) => {}
                    Err(why) => log::warn(format_args!("connection from {from} closed: {why}")),
                }
            });
            accepted.before_proof.push((number, from.ip(), task));
            evicted
        };
        if let Some((source, task)) = evicted {
            task.abort();
            log::warn(format_args!(
                "closed a connection from {source} still without its proof: \
                 {BEFORE_PROOF_CONNECTIONS_MAX} are open, the most of them from there"
            ));
        }
    }
}

/// Reads one peer's connection: its handshake, then its batches. Returns
/// the peer's id when the link ended normally.
async fn receive(
    mut stream: TcpStream,
    us: &Peer,
    incoming: &mpsc::Sender<Received>,
    budget: &Arc<Semaphore>,
    place: &Place,
) -> Result<Option<NodeId>, String> {
    let _ = stream.set_nodelay(true);
    // One deadline over the whole handshake, as for the dialing side.
    let (hello, mut session) = match timeout(HELLO_TIMEOUT, accept_handshake(&mut stream, us)).await
    {
        Err(_) => {
            Counters::count(&us.counters.hellos);
            return Err(format!(
                "no hello and proof within {} ms",
                HELLO_TIMEOUT.as_millis()
            ));
        }
        Ok(Ok(Some(authenticated))) => authenticated,
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(why)) => return Err(why),
    };
    let peer = hello.from;
    // Only now, the peer proven: a stranger claiming its id cannot close
    // its real connection.
    if !place.promote(peer) {
        return Err(format!(
            "node {peer}'s proof came after its connection was closed"
        ));
    }
    log::info(format_args!("link from node {peer} is up"));
    // When the hellos' digests of the two --peers differ, the peer's list
    // is its first frame.
    let mut members_due = hello.members_differ(&us.cluster.membership);
    loop {
        let length = read_length_field(&mut stream, IDLE_TIMEOUT)
            .await
            .and_then(|field| body_length(field).map_err(ReadError::Frame));
        let length = match length {
            Ok(length) => length,
            Err(ReadError::Closed) => return Ok(Some(peer)),
            Err(e @ ReadError::Frame(_)) => {
                Counters::count(&us.counters.frames);
                return Err(format!("node {peer}: {e}"));
            }
            Err(e) => return Err(format!("node {peer}: {e}")),
        };
        // Taken as the body arrives, given back when the node drops the
        // batch (or this connection closes).
        let (sealed, permit) = match read_budgeted_body(&mut stream, length, budget).await {
            Ok(read) => read,
            Err(BodyError::Stopping) => return Ok(Some(peer)),
            Err(BodyError::NoRoom { had }) => {
                Counters::count(&us.counters.stalls);
                return Err(format!(
                    "node {peer}: no room for more than {had} of a frame's {length} bytes for \
                     {} ms",
                    DELIVER_TIMEOUT.as_millis()
                ));
            }
            Err(BodyError::Read(e)) => return Err(format!("node {peer}: {e}")),
        };
        // The tag first: nothing unauthenticated is decoded.
        let frame = session.open(&sealed).and_then(|body| {
            decode(body).map_err(|e| format!("an authenticated frame that does not decode: {e}"))
        });
        let frame = match frame {
            Ok(frame) => frame,
            Err(why) => {
                Counters::count(&us.counters.frames);
                return Err(format!("node {peer}: {why}"));
            }
        };
        if members_due != matches!(frame, Frame::Members(_)) {
            Counters::count(&us.counters.frames);
            return Err(format!(
                "node {peer} sent a {} frame where its --peers {}",
                frame.kind(),
                if members_due { "were due" } else { "were not" }
            ));
        }
        members_due = false;
        match frame {
            Frame::Members(theirs) => {
                if let Err(why) = hello.check_members(&theirs) {
                    Counters::count(&us.counters.frames);
                    return Err(format!("node {peer} {why}"));
                }
                // Peer-supplied addresses: escaped by `differences`.
                let how = differences(&theirs, &us.cluster.membership).unwrap_or_default();
                log::warn(format_args!(
                    "node {peer}'s --peers differ from this node's: it {how}"
                ));
            }
            Frame::Batch(batch) => {
                let received = Received {
                    from: peer,
                    batch,
                    budget: Budget { _permit: permit },
                };
                match timeout(DELIVER_TIMEOUT, incoming.send(received)).await {
                    Ok(Ok(())) => {}
                    // The node stopped taking batches: it is shutting down.
                    Ok(Err(_)) => return Ok(Some(peer)),
                    Err(_) => {
                        return Err(format!(
                            "node {peer}: the node took no batch for {} ms",
                            DELIVER_TIMEOUT.as_millis()
                        ));
                    }
                }
            }
            Frame::Keepalive => {}
            other => {
                Counters::count(&us.counters.frames);
                return Err(format!(
                    "node {peer} sent a {} frame after the handshake",
                    other.kind()
                ));
            }
        }
    }
}

/// The accepting side of the handshake: the peer's hello checked, this
/// node's hello and proof, the peer's proof checked. The peer's hello and
/// the session; `None` when it closed before sending anything. A refusal
/// is counted, and said to the peer (tersely) when it is about its hello
/// or proof.
async fn accept_handshake(
    stream: &mut TcpStream,
    us: &Peer,
) -> Result<Option<(Hello, Session)>, String> {
    let count = |counter: &AtomicU64, why: String| {
        Counters::count(counter);
        why
    };
    let (body, hello) = match read_handshake_frame(stream).await {
        Ok((body, Frame::Hello(hello))) => (body, hello),
        Ok((_, other)) => {
            return Err(count(
                &us.counters.hellos,
                format!("it sent a {} frame before a hello", other.kind()),
            ));
        }
        Err(ReadError::Closed) => return Ok(None),
        Err(e) => return Err(count(&us.counters.hellos, format!("before its hello: {e}"))),
    };
    if let Err(why) = hello.check(&us.cluster, None) {
        refuse(stream).await;
        return Err(count(
            &us.counters.hellos,
            format!("refused: the peer {why}"),
        ));
    }
    let peer = hello.from;
    let ours = encode(&Frame::Hello(Hello::new(&us.cluster, peer, nonce()?)))
        .map_err(|e| format!("encoding the hello: {e}"))?;
    let transcript = Transcript::new(&body, ours.get(LENGTH_BYTES..).unwrap_or_default());
    // The dialer proves first: a stranger gets no proof of this node's to
    // test guesses of the secret against.
    write_frame(stream, &ours).await?;
    match read_handshake_frame(stream).await {
        Ok((_, Frame::Proof(proof))) if transcript.verify(&us.secret, Role::Dialer, &proof) => {
            let proof = encode(&Frame::Proof(transcript.proof(&us.secret, Role::Acceptor)))
                .map_err(|e| format!("encoding the proof: {e}"))?;
            write_frame(stream, &proof).await?;
            Ok(Some((hello, transcript.session(&us.secret))))
        }
        Ok((_, Frame::Proof(_))) => {
            refuse(stream).await;
            Err(count(
                &us.counters.proofs,
                format!(
                    "refused: the peer, which said it is node {peer}, does not prove it holds \
                     the cluster secret"
                ),
            ))
        }
        Ok((_, other)) => Err(count(
            &us.counters.hellos,
            format!(
                "node {peer} (unproven) sent a {} frame instead of its proof",
                other.kind()
            ),
        )),
        Err(e) => Err(count(
            &us.counters.hellos,
            format!("node {peer} (unproven), before its proof: {e}"),
        )),
    }
}

/// What an accepting node tells a peer it refuses: no more, since the
/// peer has proved nothing (no cluster id, no node id, no membership);
/// the reason is in the refusing node's log.
pub const REFUSAL: &str = "refused (the reason is in the log of the node dialed)";

/// Tells the peer it is refused, if it listens within [`HELLO_TIMEOUT`];
/// the connection closes either way.
async fn refuse(stream: &mut TcpStream) {
    if let Ok(bytes) = encode(&Frame::Refuse(REFUSAL.into())) {
        let _ = timeout(HELLO_TIMEOUT, write_frame(stream, &bytes)).await;
    }
}
