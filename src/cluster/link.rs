//! The links between a cluster's nodes, over TCP.
//!
//! Each node dials every peer at the address its `--peers` entry gives and
//! keeps that one connection up: re-dialed after a failure with a backoff
//! from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]. A connection is one-way: node
//! A's batches for B travel on the connection A dialed, B's for A on the
//! one B dialed. So a restarted node simply dials again, and no pair of
//! connections ever needs telling apart.
//!
//! A connection starts with the dialing node's hello (its id and the whole
//! membership, [`super::frame::Hello`]); the other node answers with its
//! own, or refuses with the reason and closes. Both sides check the other:
//! a node started with another `--peers`, or dialed at an address that
//! another node answers, is refused and logged, never served. After the
//! hello the dialing node sends batches, and a keepalive when it has had
//! nothing to send for [`KEEPALIVE_EVERY`], so the other side can tell a
//! silent peer from a dead link ([`IDLE_TIMEOUT`]). A peer that sends
//! anything else (garbage, an oversized frame, a second hello, bytes on
//! the return path) is disconnected and logged.
//!
//! Everything is bounded: frames and bytes queued for a peer (a send past
//! them fails at once, [`SendError::Full`]), connections open at once,
//! batches waiting for the node to take them (reading stops until it
//! does), and every connect, read and write has a timeout. While a link is
//! down, sends to that peer fail at once ([`SendError::Down`]) and what was
//! queued is dropped: the Raft groups' calls time out and openraft sends
//! them again, so nothing waits on a dead link.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::frame::{
    FRAME_BYTES_MAX, Frame, FrameError, HELLO_BYTES_MAX, Hello, LENGTH_BYTES, batch_frames,
    body_length, decode, encode,
};
use super::peers::{Cluster, Membership, NODES_MAX};
use crate::log;
use crate::raft::transport::Batch;
use crate::raft::types::NodeId;

/// How long a dial may take: a peer on the same network answers in far
/// less; a peer that is down should not hold the link's retries back.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long each side waits for the other's hello once connected.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// How long writing one frame may take: a peer that stops reading for
/// this long (a full 32 MiB frame at under 7 MB/s) is taken for gone, so
/// the link is dialed again rather than stuck.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Connections accepted and open at once: each peer keeps one, and a
/// restarted peer's old one lasts until its idle timeout; the rest of the
/// room is for strays, each closed within [`HELLO_TIMEOUT`].
pub const INCOMING_CONNECTIONS_MAX: usize = 4 * NODES_MAX;

/// Why a batch was not queued for a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The peer is not a member.
    UnknownPeer(NodeId),
    /// The link to the peer is down (being dialed again).
    Down(NodeId),
    /// The peer's queue is full: the link does not keep up.
    Full(NodeId),
    /// Items of the batch too large for a frame each were left out; the
    /// rest was queued.
    TooLarge { peer: NodeId, dropped: usize },
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::UnknownPeer(peer) => write!(f, "node {peer} is not a member"),
            SendError::Down(peer) => write!(f, "the link to node {peer} is down"),
            SendError::Full(peer) => write!(
                f,
                "the link to node {peer} has {OUTGOING_FRAMES_MAX} frames or {OUTGOING_BYTES_MAX} bytes queued"
            ),
            SendError::TooLarge { peer, dropped } => write!(
                f,
                "{dropped} items for node {peer} are each over {FRAME_BYTES_MAX} bytes and were left out"
            ),
        }
    }
}

/// What queues frames for one peer.
struct Outgoing {
    frames: mpsc::Sender<Vec<u8>>,
    /// Bytes in `frames`, against [`OUTGOING_BYTES_MAX`].
    queued_bytes: Arc<AtomicUsize>,
    /// Whether the link is up (hello exchanged, not failed since).
    up: watch::Receiver<bool>,
}

/// A node's links to its peers. Dropping it closes them all.
pub struct Links {
    cluster: Cluster,
    outgoing: BTreeMap<NodeId, Outgoing>,
    /// The accepting task and each peer's dialing task.
    tasks: Vec<JoinHandle<()>>,
}

impl Links {
    /// Starts node `cluster.me`'s links: accepts its peers on `listener`
    /// (normally bound to its own `--peers` entry) and dials every peer.
    /// Batches received come out of the returned receiver, with their
    /// sender's id. Must be called within a tokio runtime.
    pub fn start(
        listener: TcpListener,
        cluster: Cluster,
    ) -> (Links, mpsc::Receiver<(NodeId, Batch)>) {
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_BATCHES_MAX);
        let mut tasks = vec![tokio::spawn(accept(listener, cluster.clone(), incoming_tx))];
        let mut outgoing = BTreeMap::new();
        for (&peer, address) in cluster.membership.nodes() {
            if peer == cluster.me {
                continue;
            }
            let (frames_tx, frames_rx) = mpsc::channel(OUTGOING_FRAMES_MAX);
            let (up_tx, up_rx) = watch::channel(false);
            let queued_bytes = Arc::new(AtomicUsize::new(0));
            let dialer = Dialer {
                me: cluster.me,
                membership: cluster.membership.clone(),
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

    /// Queues `batch` for `peer`, as one frame or several when it is over
    /// [`FRAME_BYTES_MAX`]; fails at once when the link is down or full.
    pub fn send(&self, peer: NodeId, batch: Batch) -> Result<(), SendError> {
        let Some(out) = self.outgoing.get(&peer) else {
            return Err(SendError::UnknownPeer(peer));
        };
        if !*out.up.borrow() {
            return Err(SendError::Down(peer));
        }
        let (frames, dropped) = batch_frames(batch);
        for frame in frames {
            let bytes = frame.len();
            let before = out.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
            if before + bytes > OUTGOING_BYTES_MAX {
                out.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
                return Err(SendError::Full(peer));
            }
            if out.frames.try_send(frame).is_err() {
                out.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
                return Err(SendError::Full(peer));
            }
        }
        if dropped > 0 {
            return Err(SendError::TooLarge { peer, dropped });
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

/// Reads one frame of at most `body_max` bytes, waiting at most `idle` for
/// it to start.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle: Duration,
    body_max: usize,
) -> Result<Frame, ReadError> {
    let mut field = [0u8; LENGTH_BYTES];
    match timeout(idle, reader.read_exact(&mut field)).await {
        Err(_) => return Err(ReadError::Timeout(idle)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ReadError::Closed);
        }
        Ok(Err(e)) => return Err(ReadError::Io(e)),
        Ok(Ok(_)) => {}
    }
    let length = body_length(field).map_err(ReadError::Frame)?;
    if length > body_max {
        return Err(ReadError::Frame(FrameError::Length(length as u64)));
    }
    // Bounded by `body_max`, checked above before allocating.
    let mut body = vec![0; length];
    match timeout(FRAME_READ_TIMEOUT, reader.read_exact(&mut body)).await {
        Err(_) => return Err(ReadError::Timeout(FRAME_READ_TIMEOUT)),
        Ok(Err(e)) => return Err(ReadError::Io(e)),
        Ok(Ok(_)) => {}
    }
    decode(&body).map_err(ReadError::Frame)
}

/// Writes one encoded frame within [`WRITE_TIMEOUT`].
async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> Result<(), String> {
    match timeout(WRITE_TIMEOUT, writer.write_all(frame)).await {
        Err(_) => Err(format!(
            "a frame was not written within {} ms",
            WRITE_TIMEOUT.as_millis()
        )),
        Ok(Err(e)) => Err(format!("writing: {e}")),
        Ok(Ok(())) => Ok(()),
    }
}

/// The largest frame before the hello is checked: a stranger cannot make
/// a node allocate more than a hello's worth.
const BEFORE_HELLO_BYTES_MAX: usize = HELLO_BYTES_MAX + 1;

fn kind_of(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Refuse(_) => "refuse",
        Frame::Batch(_) => "batch",
        Frame::Keepalive => "keepalive",
    }
}

/// One peer's dialing side: keeps the link up and writes what is queued.
struct Dialer {
    me: NodeId,
    membership: Membership,
    peer: NodeId,
    address: String,
    frames: mpsc::Receiver<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    up: watch::Sender<bool>,
}

/// Why a dial did not give a link.
enum DialError {
    /// The peer refused this node's hello, or answered as another node
    /// or cluster: a misconfiguration an operator must see.
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
                Ok(stream) => {
                    backoff = BACKOFF_MIN;
                    last_failure.clear();
                    self.up.send_replace(true);
                    log::info(format_args!(
                        "link to node {} at {} is up",
                        self.peer, self.address
                    ));
                    let ended = self.carry(stream).await;
                    self.up.send_replace(false);
                    self.drain();
                    match ended {
                        Ended::Stopped => return,
                        Ended::Lost(why) => log::warn(format_args!(
                            "link to node {} at {} lost: {why}; dialing again",
                            self.peer, self.address
                        )),
                    }
                }
                Err(DialError::Refused(why)) => log::warn(format_args!(
                    "link to node {} at {}: {why}",
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
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connects and exchanges hellos.
    async fn dial(&self) -> Result<TcpStream, DialError> {
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
        let hello = encode(&Frame::Hello(Hello::new(self.me, &self.membership)))
            .map_err(|e| failed(format!("encoding the hello: {e}")))?;
        write_frame(&mut stream, &hello).await.map_err(failed)?;
        match read_frame(&mut stream, HELLO_TIMEOUT, BEFORE_HELLO_BYTES_MAX).await {
            Ok(Frame::Hello(theirs)) => theirs
                .check(self.me, &self.membership, Some(self.peer))
                .map(|()| stream)
                .map_err(|why| DialError::Refused(format!("the node there {why}"))),
            Ok(Frame::Refuse(why)) => Err(DialError::Refused(format!("refused: {why}"))),
            Ok(other) => Err(DialError::Refused(format!(
                "answered the hello with a {} frame",
                kind_of(&other)
            ))),
            Err(e) => Err(failed(format!("no hello back: {e}"))),
        }
    }

    /// Writes queued frames, and keepalives when idle, until the link
    /// fails or the node drops its links.
    async fn carry(&mut self, stream: TcpStream) -> Ended {
        let (mut reader, mut writer) = stream.into_split();
        let keepalive = match encode(&Frame::Keepalive) {
            Ok(bytes) => bytes,
            Err(e) => return Ended::Lost(format!("encoding a keepalive: {e}")),
        };
        let mut probe = [0u8; 1];
        loop {
            tokio::select! {
                frame = self.frames.recv() => {
                    let Some(frame) = frame else {
                        return Ended::Stopped;
                    };
                    self.queued_bytes.fetch_sub(frame.len(), Ordering::SeqCst);
                    if let Err(why) = write_frame(&mut writer, &frame).await {
                        return Ended::Lost(why);
                    }
                }
                () = tokio::time::sleep(KEEPALIVE_EVERY) => {
                    if let Err(why) = write_frame(&mut writer, &keepalive).await {
                        return Ended::Lost(why);
                    }
                }
                // Nothing comes back on a link after the hello: a read
                // ends only when the peer closes it or misbehaves.
                read = reader.read(&mut probe) => {
                    return Ended::Lost(match read {
                        Ok(0) => "the peer closed it".into(),
                        Ok(_) => "the peer sent bytes on the return path".into(),
                        Err(e) => format!("reading: {e}"),
                    });
                }
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

/// Accepts peers' connections and reads each in a task of its own.
async fn accept(listener: TcpListener, cluster: Cluster, incoming: mpsc::Sender<(NodeId, Batch)>) {
    let permits = Arc::new(Semaphore::new(INCOMING_CONNECTIONS_MAX));
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
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            log::warn(format_args!(
                "closed a connection from {from}: {INCOMING_CONNECTIONS_MAX} peer connections are open"
            ));
            continue;
        };
        let (cluster, incoming) = (cluster.clone(), incoming.clone());
        connections.spawn(async move {
            let _permit = permit;
            match receive(stream, &cluster, &incoming).await {
                Ok(Some(peer)) => {
                    log::info(format_args!("link from node {peer} ({from}) closed"));
                }
                Ok(None) => {}
                Err(why) => log::warn(format_args!("connection from {from} closed: {why}")),
            }
        });
    }
}

/// Reads one peer's connection: its hello, then its batches. Returns the
/// peer's id when the link ended normally.
async fn receive(
    mut stream: TcpStream,
    cluster: &Cluster,
    incoming: &mpsc::Sender<(NodeId, Batch)>,
) -> Result<Option<NodeId>, String> {
    let _ = stream.set_nodelay(true);
    let hello = match read_frame(&mut stream, HELLO_TIMEOUT, BEFORE_HELLO_BYTES_MAX).await {
        Ok(Frame::Hello(hello)) => hello,
        Ok(other) => {
            return Err(format!(
                "it sent a {} frame before a hello",
                kind_of(&other)
            ));
        }
        Err(ReadError::Closed) => return Ok(None),
        Err(e) => return Err(format!("before its hello: {e}")),
    };
    if let Err(why) = hello.check(cluster.me, &cluster.membership, None) {
        let refusal = Frame::Refuse(format!("node {} refuses a peer that {why}", cluster.me));
        if let Ok(bytes) = encode(&refusal) {
            let _ = write_frame(&mut stream, &bytes).await;
        }
        return Err(format!("refused: the peer {why}"));
    }
    let peer = hello.from;
    let ours = encode(&Frame::Hello(Hello::new(cluster.me, &cluster.membership)))
        .map_err(|e| format!("encoding the hello: {e}"))?;
    write_frame(&mut stream, &ours).await?;
    log::info(format_args!("link from node {peer} is up"));
    loop {
        match read_frame(&mut stream, IDLE_TIMEOUT, FRAME_BYTES_MAX).await {
            Ok(Frame::Batch(batch)) => {
                if incoming.send((peer, batch)).await.is_err() {
                    // The node stopped taking batches: it is shutting down.
                    return Ok(Some(peer));
                }
            }
            Ok(Frame::Keepalive) => {}
            Ok(other) => {
                return Err(format!(
                    "node {peer} sent a {} frame after its hello",
                    kind_of(&other)
                ));
            }
            Err(ReadError::Closed) => return Ok(Some(peer)),
            Err(e) => return Err(format!("node {peer}: {e}")),
        }
    }
}
