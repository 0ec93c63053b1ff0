//! The outgoing side of the links: one task per peer dials it, runs the
//! dialing side of the handshake (this side proves first), sends its
//! `--peers` when they differ, then writes what the node queued for that
//! peer, sealed, with keepalives when idle, until the link fails; then it
//! drops what was queued and dials again after a backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::io::{ReadError, read_handshake_frame, seal_next, write_frame};
use super::{
    BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, Counters, HELLO_TIMEOUT, IDLE_TIMEOUT,
    KEEPALIVE_EVERY, Peer,
};
use crate::cluster::frame::{Frame, FrameError, Hello, LENGTH_BYTES, encode};
use crate::cluster::handshake::{Role, Session, Transcript, nonce};
use crate::log;
use crate::raft::types::NodeId;

/// One peer's dialing side: keeps the link up and writes what is queued.
pub(super) struct Dialer {
    /// This node: its cluster, secret and failure counters.
    pub(super) us: Peer,
    /// The peer this task keeps a link to.
    pub(super) peer: NodeId,
    /// Where it is dialed: its `--peers` entry.
    pub(super) address: String,
    /// The frames the node queued for it ([`super::Links::send`]).
    pub(super) frames: mpsc::Receiver<Vec<u8>>,
    /// Bytes in `frames`, shared with the sending side.
    pub(super) queued_bytes: Arc<AtomicUsize>,
    /// Whether the link is up, for the sending side.
    pub(super) up: watch::Sender<bool>,
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
    /// Keeps the link up until the node drops its links.
    pub(super) async fn run(mut self) {
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
        let (_, mut session) = match timeout(HELLO_TIMEOUT, self.handshake(&mut stream)).await {
            Err(_) => {
                return Err(failed(format!(
                    "no hello and proof back within {} ms",
                    HELLO_TIMEOUT.as_millis()
                )));
            }
            Ok(done) => done?,
        };
        // This node's list is always the link's first frame, sealed: the
        // node there compares it with its own and logs how they differ
        // (and this node logs how, on that node's link to this one).
        let ours = self.us.cluster.membership.nodes();
        let mut frame = encode(&mut Frame::Members(ours.clone()))
            .map_err(|e| failed(format!("encoding this node's --peers: {e}")))?;
        seal_next(&mut session, &mut frame);
        write_frame(&mut stream, &frame).await.map_err(failed)?;
        Ok((stream, session))
    }

    /// The dialing side's hello, the peer's hello and proof checked, this
    /// side's proof: the peer's hello and the session.
    async fn handshake(&self, stream: &mut TcpStream) -> Result<(Hello, Session), DialError> {
        let (failed, refused) = (DialError::Failed, DialError::Refused);
        let us = &self.us;
        let nonce = nonce().map_err(failed)?;
        let ours = encode(&mut Frame::Hello(Hello::new(&us.cluster, self.peer, nonce)))
            .map_err(|e| failed(format!("encoding the hello: {e}")))?;
        write_frame(stream, &ours).await.map_err(failed)?;
        let answer = |e: ReadError| match e {
            // The node there speaks another version: refused, as such.
            ReadError::Frame(e @ FrameError::Version { .. }) => {
                Counters::count(&us.counters.hellos);
                refused(format!("the node there answered with {e}"))
            }
            e => failed(format!("no hello or proof back: {e}")),
        };
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
        let proof = encode(&mut Frame::Proof(
            transcript.proof(&us.secret, Role::Dialer),
        ))
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
        let keepalive = match encode(&mut Frame::Keepalive) {
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
