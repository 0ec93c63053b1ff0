//! The incoming side of the links: accepts peers' connections, bounds
//! those still before their proof ([`BEFORE_PROOF_CONNECTIONS_MAX`]), runs
//! the accepting side of the handshake (the peer proves first), keeps one
//! connection per proven peer, and hands each peer's batches to the node
//! once their tags hold.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::timeout;

use super::io::{
    BodyError, ReadError, read_budgeted_body, read_handshake_frame, read_length_field, write_frame,
};
use super::{
    BACKOFF_MAX, BEFORE_PROOF_CONNECTIONS_MAX, Budget, Counters, DELIVER_TIMEOUT, HELLO_TIMEOUT,
    IDLE_TIMEOUT, INCOMING_BYTES_MAX, Peer, REFUSAL, Received,
};
use crate::cluster::frame::{
    Frame, FrameError, Hello, LENGTH_BYTES, body_length, decode, differences, encode,
};
use crate::cluster::handshake::{Role, Session, Transcript, nonce};
use crate::log;
use crate::raft::types::NodeId;

/// The accepted connections, by where they stand.
#[derive(Default)]
struct Accepted {
    /// Numbers the connections, so a task finds its own entry.
    next: u64,
    /// Connections before their proof: number, source prefix
    /// ([`prefix`]), whether its hello passed the check, task.
    before_proof: Vec<(u64, IpAddr, bool, AbortHandle)>,
    /// Each peer's connection past its proof.
    peers: BTreeMap<NodeId, (u64, AbortHandle)>,
}

impl Accepted {
    /// Takes out a connection before its proof to make room for one more
    /// ([`BEFORE_PROOF_CONNECTIONS_MAX`]): among those whose hello has not
    /// passed the check (all, when every one's has), one at random of the
    /// source prefix with the most; `None` while there is room.
    fn evict(&mut self) -> Option<(IpAddr, AbortHandle)> {
        if self.before_proof.len() < BEFORE_PROOF_CONNECTIONS_MAX {
            return None;
        }
        let unchecked = self.before_proof.iter().any(|(_, _, checked, _)| !checked);
        let eligible = |checked: bool| !unchecked || !checked;
        let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (_, source, checked, _) in &self.before_proof {
            if eligible(*checked) {
                *counts.entry(*source).or_default() += 1;
            }
        }
        let most = counts.values().copied().max().unwrap_or_default();
        let candidates: Vec<usize> = (0..self.before_proof.len())
            .filter(|&at| {
                let (_, source, checked, _) = &self.before_proof[at];
                eligible(*checked) && counts.get(source) == Some(&most)
            })
            .collect();
        // No randomness from the OS: the first candidate, still one of
        // the busiest address's.
        let draw = getrandom::u32().map_or(0, |draw| draw as usize);
        let at = candidates.get(draw % candidates.len().max(1)).copied()?;
        let (_, source, _, task) = self.before_proof.swap_remove(at);
        Some((source, task))
    }
}

/// Bits of an IPv4 source that make its group: a /24, so that a stranger
/// holding many addresses of one network counts as one source.
const PREFIX_V4_BITS: u32 = 24;

/// Bits of an IPv6 source that make its group: a /64, the least a host
/// or site is usually given.
const PREFIX_V6_BITS: u32 = 64;

/// The group of a source address for eviction: its network prefix.
fn prefix(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => {
            let mask = u32::MAX << (32 - PREFIX_V4_BITS);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - PREFIX_V6_BITS);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
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
    /// Marks this connection's hello as having passed the check: it is
    /// evicted only when every connection before its proof has one.
    fn checked(&self) {
        let mut accepted = lock(&self.shared);
        if let Some(entry) = accepted
            .before_proof
            .iter_mut()
            .find(|(number, _, _, _)| *number == self.number)
        {
            entry.2 = true;
        }
    }

    /// Moves this connection from the ones before their proof to `peer`'s,
    /// closing the one `peer` had; false when it was closed meanwhile.
    fn promote(&self, peer: NodeId) -> bool {
        let replaced = {
            let mut accepted = lock(&self.shared);
            let Some(at) = accepted
                .before_proof
                .iter()
                .position(|(number, _, _, _)| *number == self.number)
            else {
                return false;
            };
            let (number, _, _, task) = accepted.before_proof.swap_remove(at);
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
            .retain(|(number, _, _, _)| *number != self.number);
        accepted
            .peers
            .retain(|_, (number, _)| *number != self.number);
    }
}

/// Accepts peers' connections and reads each in a task of its own.
pub(super) async fn accept(listener: TcpListener, us: Peer, incoming: mpsc::Sender<Received>) {
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
            accepted
                .before_proof
                .push((number, prefix(from.ip()), false, task));
            evicted
        };
        if let Some((source, task)) = evicted {
            task.abort();
            log::warn(format_args!(
                "closed a connection from network {source} still without its proof: \
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
    let (hello, mut session) =
        match timeout(HELLO_TIMEOUT, accept_handshake(&mut stream, us, place)).await {
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
    log::info(format_args!("link from node {peer} is up"));
    // The peer's list is always its first frame.
    let mut members_due = true;
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
                "node {peer} sent a {} frame where {}",
                frame.kind(),
                if members_due {
                    "its --peers come first"
                } else {
                    "they came already"
                }
            ));
        }
        members_due = false;
        match frame {
            Frame::Members(theirs) => {
                // Peer-supplied addresses: escaped by `differences`.
                if let Some(how) = differences(&theirs, &us.cluster.membership) {
                    log::warn(format_args!(
                        "node {peer}'s --peers differ from this node's: it {how}"
                    ));
                }
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
    place: &Place,
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
        // Another version's hello, told by its protocol and version alone.
        Err(ReadError::Frame(e @ FrameError::Version { .. })) => {
            refuse(stream).await;
            return Err(count(&us.counters.hellos, format!("refused: it sent {e}")));
        }
        Err(e) => return Err(count(&us.counters.hellos, format!("before its hello: {e}"))),
    };
    if let Err(why) = hello.check(&us.cluster, None) {
        refuse(stream).await;
        return Err(count(
            &us.counters.hellos,
            format!("refused: the peer {why}"),
        ));
    }
    place.checked();
    let peer = hello.from;
    let ours = encode(&mut Frame::Hello(Hello::new(&us.cluster, peer, nonce()?)))
        .map_err(|e| format!("encoding the hello: {e}"))?;
    let transcript = Transcript::new(&body, ours.get(LENGTH_BYTES..).unwrap_or_default());
    // The dialer proves first: a stranger gets no proof of this node's to
    // test guesses of the secret against.
    write_frame(stream, &ours).await?;
    match read_handshake_frame(stream).await {
        Ok((_, Frame::Proof(proof))) if transcript.verify(&us.secret, Role::Dialer, &proof) => {
            // Only now, the peer proven, and at once: a stranger claiming
            // its id cannot close its real connection, and no flood can
            // evict it while this side's proof is written.
            if !place.promote(peer) {
                return Err(format!(
                    "node {peer}'s proof came after its connection was closed"
                ));
            }
            let proof = encode(&mut Frame::Proof(
                transcript.proof(&us.secret, Role::Acceptor),
            ))
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

/// Tells the peer it is refused, if it listens within [`HELLO_TIMEOUT`];
/// the connection closes either way.
async fn refuse(stream: &mut TcpStream) {
    if let Ok(bytes) = encode(&mut Frame::Refuse(REFUSAL.into())) {
        let _ = timeout(HELLO_TIMEOUT, write_frame(stream, &bytes)).await;
    }
}
