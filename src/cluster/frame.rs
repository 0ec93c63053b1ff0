//! The peer link's frames, and their codec (no I/O here).
//!
//! Every frame is a length and a body; all integers are big-endian:
//!
//! ```text
//! * 4 bytes: length, the body's bytes (1 to FRAME_BYTES_MAX)
//! * 1 byte:  kind (1 Hello, 2 Refuse, 3 Batch, 4 Keepalive, 5 Proof,
//!            6 Members)
//! * payload
//!     Hello      JSON {"protocol": "seglog-peer", "version": 3, "cluster": "ID",
//!                      "from": N, "to": M, "nonce": 64 hex digits}
//!                (at most HELLO_BYTES_MAX)
//!     Refuse     UTF-8 text, terse: the reason is in the refusing node's log
//!                (at most REFUSE_BYTES_MAX)
//!     Proof      32 bytes: HMAC-SHA-256 (`handshake.rs`)
//!     Members    JSON {"1": "HOST:PORT", ...}, the sender's --peers
//!                (at most MEMBERS_BYTES_MAX)
//!     Batch      4 bytes: the JSON's length; JSON of a
//!                `raft::transport::Batch` whose snapshot chunks' data
//!                are left empty; then each of those chunks' data, in the
//!                order of the calls, as 4 bytes of length and the bytes
//!                (raw: no base64 to encode, escape and hash a third more of)
//!     Keepalive  empty
//! * 32 bytes:  tag, on Members, Batch and Keepalive only (every frame after
//!              the proofs): HMAC-SHA-256 under the session key of the
//!              frame's sequence number and its kind and payload
//! ```
//!
//! A link starts with the dialing node's Hello; the other node answers
//! with its own Hello, or with a Refuse and closes; the dialing node sends
//! its Proof, and the other node checks it and sends its own, or refuses
//! ([`super::handshake`] spells the exchange out). Then only the dialing
//! node sends: first its Members (the other node compares them with its
//! own `--peers` and logs how they differ), then Batches, and a Keepalive when it has had nothing
//! to send for a while, each sealed with its tag. A frame that breaks any
//! of this is a reason to close the connection; nothing a peer sends is
//! trusted before it is checked: before the proofs only a Hello, Proof or
//! Refuse is decoded ([`decode_handshake`], the kind byte checked first),
//! and after them nothing is decoded before its tag is checked.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::handshake::{TAG_BYTES, Tag, is_nonce};
use super::peers::{Cluster, Membership};
use crate::raft::transport::{Batch, Rpc};
use crate::raft::types::NodeId;

/// Largest frame body: twice `seglog serve`'s default request limit (16
/// MiB), so that one produce's entry fits a frame with the overhead of its
/// encoding once partitions are replicated, and what a peer can make a
/// node allocate per connection stays bounded. A batch over it is sent as
/// several frames ([`split`]).
pub const FRAME_BYTES_MAX: usize = 32 << 20;

/// Bytes of a frame's length field.
pub const LENGTH_BYTES: usize = 4;

/// Longest refusal text: one sentence, and a misbehaving peer cannot make
/// the refused side log much.
pub const REFUSE_BYTES_MAX: usize = 1024;

/// Longest hello: its fields are a cluster id of at most
/// `CLUSTER_ID_BYTES_MAX` (64), two ids, and two 64-digit hex strings,
/// about 250 bytes of JSON; the rest is room for names a later version
/// adds. All a stranger can make a node read before any proof.
pub const HELLO_BYTES_MAX: usize = 1024;

/// Longest members frame: the `--peers` of `NODES_MAX` (16) nodes, each
/// with a host name of at most 253 bytes, fits well within it.
pub const MEMBERS_BYTES_MAX: usize = 16 << 10;

/// Longest frame body before the proofs: a hello or a refusal, and the
/// kind byte (a proof is 33 bytes). What a node allocates for a peer that
/// has proved nothing.
pub const HANDSHAKE_BYTES_MAX: usize = 1 + if HELLO_BYTES_MAX > REFUSE_BYTES_MAX {
    HELLO_BYTES_MAX
} else {
    REFUSE_BYTES_MAX
};

/// The protocol name a hello carries: a stray client of another protocol
/// is told apart from a peer of another version.
pub const PROTOCOL: &str = "seglog-peer";

/// The link protocol's version; a peer of another version is refused,
/// told apart by the hello's `protocol` and `version` alone, read before
/// anything else of it. Version 2 authenticated peers and frames (version
/// 1 trusted a hello); version 3 no longer carries a digest of `--peers`
/// in the hello (the dialer's list is always its first sealed frame);
/// version 4 batches carry relayed requests and leads, and snapshot
/// chunks' data in base64, which version 3 cannot read; version 5
/// snapshots are binary streams of records read from the segments
/// (`raft::snapshot`), where version 4's were JSON documents; version 6
/// batches carry snapshot chunks' data raw after the JSON, probes name
/// the probing their answers belong to (`raft::standing`), and relayed
/// requests say whether they are reads of a partition's state.
pub const VERSION: u32 = 6;

const KIND_HELLO: u8 = 1;
const KIND_REFUSE: u8 = 2;
const KIND_BATCH: u8 = 3;
const KIND_KEEPALIVE: u8 = 4;
const KIND_PROOF: u8 = 5;
const KIND_MEMBERS: u8 = 6;

/// Who a node is, which node it means to talk to, which cluster it
/// believes it is in, and its nonce for this connection: nothing of its
/// `--peers`, which a stranger would be answered with before any proof. A node says hello only to a node its `--peers` lists (the
/// one it dialed, or one that dialed it and is listed): `to` is the list
/// entry the receiver checks is its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: String,
    pub version: u32,
    /// The sender's `--cluster-id`.
    pub cluster: String,
    pub from: NodeId,
    /// The node it is for: the dialed node, or the one that dialed.
    pub to: NodeId,
    /// Fresh for each connection (hex of `handshake::NONCE_BYTES`): what
    /// makes this exchange's proofs its own.
    pub nonce: String,
}

impl Hello {
    /// Node `cluster.me`'s hello to node `to`, with `nonce`.
    pub fn new(cluster: &Cluster, to: NodeId, nonce: String) -> Hello {
        Hello {
            protocol: PROTOCOL.into(),
            version: VERSION,
            cluster: cluster.id.clone(),
            from: cluster.me,
            to,
            nonce,
        }
    }

    /// Whether node `cluster.me` takes this hello, which should come from
    /// `expected` when this node dialed it; the error is the reason, for
    /// the log (the Refuse frame is terse). Two nodes' `--peers` may
    /// differ, as long as each lists the other ([`differences`] says how,
    /// after the proofs).
    pub fn check(&self, cluster: &Cluster, expected: Option<NodeId>) -> Result<(), String> {
        let me = cluster.me;
        if self.protocol != PROTOCOL || self.version != VERSION {
            // Peer-supplied: escaped and cut short for the log.
            let protocol: String = self.protocol.chars().take(64).collect();
            return Err(format!(
                "speaks {protocol:?} version {}, not {PROTOCOL} version {VERSION}",
                self.version
            ));
        }
        if self.cluster != cluster.id {
            let theirs: String = self.cluster.chars().take(64).collect();
            return Err(format!(
                "is of cluster {theirs:?}, not {:?} (compare the nodes' --cluster-id)",
                cluster.id
            ));
        }
        if let Some(expected) = expected
            && self.from != expected
        {
            return Err(format!(
                "is node {}, not node {expected} whose address was dialed",
                self.from
            ));
        }
        if self.from == me {
            return Err(format!("is node {me}, as this node is"));
        }
        if self.to != me {
            return Err(format!("said hello to node {}, not to node {me}", self.to));
        }
        if !cluster.membership.contains(self.from) {
            // The membership is not echoed: the refusal goes to whoever
            // connected, member or not.
            return Err(format!(
                "is node {}, which is not in this node's --peers",
                self.from
            ));
        }
        if !is_nonce(&self.nonce) {
            return Err("has no valid nonce".into());
        }
        Ok(())
    }
}

/// How a peer's `--peers` (`theirs`, sent after the proofs) differ from
/// `ours`, for the log; `None` when they are the same.
pub fn differences(theirs: &BTreeMap<NodeId, String>, ours: &Membership) -> Option<String> {
    let mut parts = Vec::new();
    for (id, address) in ours.nodes() {
        match theirs.get(id) {
            None => parts.push(format!("lacks node {id}")),
            Some(theirs) if theirs != address => {
                parts.push(format!("has node {id} at {theirs:?}, not {address}"));
            }
            Some(_) => {}
        }
    }
    for (id, address) in theirs {
        if !ours.contains(*id) {
            parts.push(format!(
                "has node {id} at {address:?}, which this node lacks"
            ));
        }
    }
    // At most MEMBERS_BYTES_MAX of peer-supplied addresses: short.
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// One frame.
#[derive(Debug)]
pub enum Frame {
    Hello(Hello),
    Refuse(String),
    Proof(Tag),
    /// The dialing node's `--peers`: always its first frame after the
    /// proofs.
    Members(BTreeMap<NodeId, String>),
    Batch(Batch),
    Keepalive,
}

impl Frame {
    /// The frame's kind, for the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Refuse(_) => "refuse",
            Frame::Proof(_) => "proof",
            Frame::Members(_) => "members",
            Frame::Batch(_) => "batch",
            Frame::Keepalive => "keepalive",
        }
    }
}

/// Why bytes are not a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A length of zero, or over [`FRAME_BYTES_MAX`].
    Length(u64),
    /// A length over [`HANDSHAKE_BYTES_MAX`] before the proofs.
    HandshakeLength(u64),
    /// A kind byte no frame has.
    Kind(u8),
    /// A frame of a kind the handshake has no place for (a batch, say),
    /// before the proofs: not decoded.
    NotHandshake(u8),
    /// The payload does not decode as its kind's.
    Payload { kind: &'static str, why: String },
    /// A frame to send is over [`FRAME_BYTES_MAX`] and cannot be split.
    TooLarge(usize),
    /// A hello of another protocol or version (its `protocol`, cut short,
    /// and its `version`): not decoded further, since another version's
    /// hello may have other fields.
    Version { protocol: String, version: u64 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Length(length) => write!(
                f,
                "a frame length of {length} bytes (1 to {FRAME_BYTES_MAX})"
            ),
            FrameError::HandshakeLength(length) => write!(
                f,
                "a frame length of {length} bytes in the handshake (1 to {HANDSHAKE_BYTES_MAX})"
            ),
            FrameError::Kind(kind) => write!(f, "an unknown frame kind {kind}"),
            FrameError::NotHandshake(kind) => write!(
                f,
                "a frame of kind {kind} in the handshake, which has only hello, proof and refuse"
            ),
            FrameError::Payload { kind, why } => {
                write!(f, "a {kind} frame that does not decode: {why}")
            }
            FrameError::Version { protocol, version } => write!(
                f,
                "a hello of {protocol:?} version {version}, not {PROTOCOL} version {VERSION}"
            ),
            FrameError::TooLarge(bytes) => write!(
                f,
                "a frame of {bytes} bytes, over the {FRAME_BYTES_MAX}-byte limit"
            ),
        }
    }
}

/// The body length a frame's length field announces, checked before
/// anything is allocated for it.
pub fn body_length(field: [u8; LENGTH_BYTES]) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(field);
    match usize::try_from(length) {
        Ok(length) if (1..=FRAME_BYTES_MAX).contains(&length) => Ok(length),
        _ => Err(FrameError::Length(u64::from(length))),
    }
}

/// The body length a frame's length field announces before the proofs:
/// at most [`HANDSHAKE_BYTES_MAX`], checked before anything is allocated.
pub fn handshake_length(field: [u8; LENGTH_BYTES]) -> Result<usize, FrameError> {
    let length = body_length(field).map_err(|e| match e {
        FrameError::Length(length) => FrameError::HandshakeLength(length),
        other => other,
    })?;
    if length > HANDSHAKE_BYTES_MAX {
        return Err(FrameError::HandshakeLength(length as u64));
    }
    Ok(length)
}

/// A frame's bytes, its length field included (and room for a tag,
/// [`seal`]). A batch's snapshot chunks lend their data while it is
/// encoded: the batch is as it was after.
pub fn encode(frame: &mut Frame) -> Result<Vec<u8>, FrameError> {
    let mut bytes = vec![0; LENGTH_BYTES];
    match frame {
        Frame::Hello(hello) => {
            bytes.push(KIND_HELLO);
            json(&mut bytes, hello)?;
        }
        Frame::Refuse(why) => {
            let mut end = why.len().min(REFUSE_BYTES_MAX);
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            bytes.push(KIND_REFUSE);
            bytes.extend_from_slice(&why.as_bytes()[..end]);
        }
        Frame::Proof(proof) => {
            bytes.push(KIND_PROOF);
            bytes.extend_from_slice(proof);
        }
        Frame::Members(nodes) => {
            bytes.push(KIND_MEMBERS);
            json(&mut bytes, nodes)?;
        }
        Frame::Batch(batch) => {
            bytes.push(KIND_BATCH);
            encode_batch(&mut bytes, batch)?;
        }
        Frame::Keepalive => bytes.push(KIND_KEEPALIVE),
    }
    let body = bytes.len() - LENGTH_BYTES;
    // Room for the tag a frame after the proofs carries.
    if body + TAG_BYTES > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(body + TAG_BYTES));
    }
    let length = u32::try_from(body).map_err(|_| FrameError::TooLarge(body))?;
    bytes[..LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
    // A queued frame is counted by its length (`link::OUTGOING_BYTES_MAX`):
    // it keeps no slack from the buffer's growth, only its tag's room.
    bytes.shrink_to(bytes.len() + TAG_BYTES);
    bytes.reserve_exact(TAG_BYTES);
    Ok(bytes)
}

fn json<T: Serialize>(bytes: &mut Vec<u8>, value: &T) -> Result<(), FrameError> {
    serde_json::to_writer(bytes, value).map_err(|e| FrameError::Payload {
        kind: "outgoing",
        why: e.to_string(),
    })
}

/// The snapshot chunks' data of a batch's calls, in order.
fn chunks(batch: &mut Batch) -> impl Iterator<Item = &mut Vec<u8>> {
    batch
        .calls
        .iter_mut()
        .filter_map(|call| match &mut call.rpc {
            Rpc::Snapshot(request) => Some(&mut request.data),
            _ => None,
        })
}

/// A batch's payload: its JSON without the snapshot chunks' data, then
/// that data raw (the layout is in the module's comment).
fn encode_batch(bytes: &mut Vec<u8>, batch: &mut Batch) -> Result<(), FrameError> {
    let lent: Vec<Vec<u8>> = chunks(batch).map(std::mem::take).collect();
    let at = bytes.len();
    bytes.extend_from_slice(&[0; LENGTH_BYTES]);
    let encoded = json(bytes, &*batch);
    for (data, lent) in chunks(batch).zip(lent) {
        *data = lent;
    }
    encoded?;
    let json_bytes = bytes.len() - at - LENGTH_BYTES;
    bytes[at..at + LENGTH_BYTES].copy_from_slice(&length_field(json_bytes)?);
    // The chunks go in room made for them exactly: a frame of them is not
    // copied again to shed the slack of a doubling.
    let raw: usize = chunks(batch).map(|data| LENGTH_BYTES + data.len()).sum();
    bytes.reserve_exact(raw + TAG_BYTES);
    for data in chunks(batch) {
        bytes.extend_from_slice(&length_field(data.len())?);
        bytes.extend_from_slice(data);
    }
    Ok(())
}

/// A length of a frame's part, in its field: a part too long for one is
/// too long for a frame.
fn length_field(length: usize) -> Result<[u8; LENGTH_BYTES], FrameError> {
    u32::try_from(length)
        .map(u32::to_be_bytes)
        .map_err(|_| FrameError::TooLarge(length))
}

/// A batch's payload decoded: its JSON, then its snapshot chunks' data,
/// each checked against what is left of the payload before it is copied.
fn decode_batch(payload: &[u8]) -> Result<Batch, FrameError> {
    let bad = |why: String| FrameError::Payload { kind: "batch", why };
    let mut rest = payload;
    let mut part = |what: &str| -> Result<&[u8], FrameError> {
        let Some((field, after)) = rest.split_first_chunk::<LENGTH_BYTES>() else {
            return Err(bad(format!(
                "{} bytes left for {what}'s length",
                rest.len()
            )));
        };
        let length = u32::from_be_bytes(*field) as usize;
        if length > after.len() {
            return Err(bad(format!(
                "{what} of {length} bytes, with {} left",
                after.len()
            )));
        }
        let (part, after) = after.split_at(length);
        rest = after;
        Ok(part)
    };
    let json = part("the JSON")?;
    let mut batch: Batch = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    for data in chunks(&mut batch) {
        if !data.is_empty() {
            return Err(bad("a snapshot chunk's data inside the JSON".into()));
        }
        *data = part("a snapshot chunk")?.to_vec();
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the last chunk", rest.len())));
    }
    Ok(batch)
}

/// Decodes a frame's body before the proofs: its kind byte checked first,
/// and only a hello, a proof or a refusal decoded; any other kind (a
/// batch's JSON, say) is refused unread.
pub fn decode_handshake(body: &[u8]) -> Result<Frame, FrameError> {
    match body.first() {
        None => Err(FrameError::Length(0)),
        Some(&(KIND_HELLO | KIND_PROOF | KIND_REFUSE)) => decode(body),
        Some(&kind @ (KIND_BATCH | KIND_KEEPALIVE | KIND_MEMBERS)) => {
            Err(FrameError::NotHandshake(kind))
        }
        Some(&other) => Err(FrameError::Kind(other)),
    }
}

/// Decodes a frame's body (its bytes after the length field): after the
/// proofs, once its tag holds ([`decode_handshake`] before them).
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    let Some((&kind, payload)) = body.split_first() else {
        return Err(FrameError::Length(0));
    };
    let bad = |kind: &'static str, why: String| FrameError::Payload { kind, why };
    match kind {
        KIND_HELLO => {
            // The protocol and version first: another version's hello is
            // refused as such, whatever its other fields.
            let greeting: Greeting = json_at_most("hello", payload, HELLO_BYTES_MAX)?;
            if greeting.protocol != PROTOCOL || greeting.version != u64::from(VERSION) {
                // Peer-supplied: cut short for the log (escaped there).
                let protocol = greeting.protocol.chars().take(64).collect();
                return Err(FrameError::Version {
                    protocol,
                    version: greeting.version,
                });
            }
            json_at_most("hello", payload, HELLO_BYTES_MAX).map(Frame::Hello)
        }
        KIND_REFUSE => {
            if payload.len() > REFUSE_BYTES_MAX {
                return Err(bad("refuse", format!("{} bytes", payload.len())));
            }
            std::str::from_utf8(payload)
                .map(|why| Frame::Refuse(why.to_string()))
                .map_err(|e| bad("refuse", e.to_string()))
        }
        KIND_PROOF => Tag::try_from(payload)
            .map(Frame::Proof)
            .map_err(|_| bad("proof", format!("{} bytes, not {TAG_BYTES}", payload.len()))),
        KIND_MEMBERS => json_at_most("members", payload, MEMBERS_BYTES_MAX).map(Frame::Members),
        KIND_BATCH => decode_batch(payload).map(Frame::Batch),
        KIND_KEEPALIVE if payload.is_empty() => Ok(Frame::Keepalive),
        KIND_KEEPALIVE => Err(bad("keepalive", format!("{} payload bytes", payload.len()))),
        other => Err(FrameError::Kind(other)),
    }
}

/// What every version's hello starts with: read before the rest, so that
/// a peer of another version is told so, whatever else its hello holds.
#[derive(Deserialize)]
struct Greeting {
    protocol: String,
    version: u64,
}

/// A payload of JSON of at most `max` bytes, decoded as `kind`'s.
fn json_at_most<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    payload: &[u8],
    max: usize,
) -> Result<T, FrameError> {
    let bad = |why: String| FrameError::Payload { kind, why };
    if payload.len() > max {
        return Err(bad(format!("{} bytes", payload.len())));
    }
    serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))
}

/// Appends `tag` to an encoded frame (from [`encode`], whose limit left
/// room for it) and counts it in the length field.
pub fn seal(frame: &mut Vec<u8>, tag: &Tag) {
    frame.extend_from_slice(tag);
    let body = frame.len() - LENGTH_BYTES;
    let length = u32::try_from(body).expect("encode leaves room for a tag within u32");
    frame[..LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
}

/// How many calls, answers and notes a batch holds, its leads counting as
/// one item (they go whole).
pub fn items(batch: &Batch) -> usize {
    batch.calls.len() + batch.answers.len() + batch.notes.len() + usize::from(batch.leads.is_some())
}

/// A batch cut in two: the first half of its items (calls first, then
/// answers, then notes, then leads), and the rest. Every item stays whole.
pub fn split(mut batch: Batch) -> (Batch, Batch) {
    let mut left = items(&batch) / 2;
    let calls = left.min(batch.calls.len());
    left -= calls;
    let answers = left.min(batch.answers.len());
    left -= answers;
    let notes = left.min(batch.notes.len());
    left -= notes;
    let first = Batch {
        calls: batch.calls.drain(..calls).collect(),
        answers: batch.answers.drain(..answers).collect(),
        notes: batch.notes.drain(..notes).collect(),
        leads: if left > 0 { batch.leads.take() } else { None },
    };
    (first, batch)
}

/// Appends `more`'s items to `batch`'s, each kind in order.
pub fn merge(batch: &mut Batch, more: Batch) {
    batch.calls.extend(more.calls);
    batch.answers.extend(more.answers);
    batch.notes.extend(more.notes);
    if more.leads.is_some() {
        batch.leads = more.leads;
    }
}

/// The frames that carry `batch`: one, or several when it is over
/// [`FRAME_BYTES_MAX`] (cut in halves until each fits), each with the part
/// of the batch it carries (so that a part that cannot be queued can be
/// handed back); and the items left out, each too large for a frame alone.
pub fn batch_frames(batch: Batch) -> (Vec<(Vec<u8>, Batch)>, Batch) {
    let mut frames = Vec::new();
    let mut left_out = Batch::default();
    let mut waiting = vec![batch];
    while let Some(batch) = waiting.pop() {
        if items(&batch) == 0 {
            continue;
        }
        let mut frame = Frame::Batch(batch);
        let encoded = encode(&mut frame);
        let Frame::Batch(batch) = frame else {
            unreachable!("the frame was built as a batch above")
        };
        match encoded {
            Ok(bytes) => frames.push((bytes, batch)),
            Err(_) if items(&batch) >= 2 => {
                let (first, second) = split(batch);
                // Popped in order: the first half goes out first.
                waiting.push(second);
                waiting.push(first);
            }
            Err(_) => merge(&mut left_out, batch),
        }
    }
    (frames, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::peers::{CLUSTER_ID_BYTES_MAX, NODE_ID_MAX};
    use crate::raft::standing::Note;

    fn membership() -> Membership {
        Membership::new([(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into())])
            .expect("a valid membership")
    }

    fn node(me: NodeId, membership: &Membership) -> Cluster {
        Cluster {
            id: "test".into(),
            me,
            membership: membership.clone(),
        }
    }

    fn hello(from: NodeId, to: NodeId) -> Hello {
        Hello::new(&node(from, &membership()), to, "0a".repeat(32))
    }

    fn body(bytes: &[u8]) -> &[u8] {
        let length = body_length(bytes[..LENGTH_BYTES].try_into().expect("four bytes"))
            .expect("a valid length");
        assert_eq!(length, bytes.len() - LENGTH_BYTES);
        &bytes[LENGTH_BYTES..]
    }

    #[test]
    fn frames_round_trip() {
        let hello = hello(2, 1);
        let Frame::Hello(back) = decode(body(
            &encode(&mut Frame::Hello(hello.clone())).expect("a frame encodes"),
        ))
        .expect("a frame decodes") else {
            panic!("not a hello")
        };
        assert_eq!(back, hello);
        let batch = Batch {
            notes: vec![Note::Probe {
                group: 7,
                probing: 1,
            }],
            ..Batch::default()
        };
        let Frame::Batch(back) = decode(body(
            &encode(&mut Frame::Batch(batch)).expect("a frame encodes"),
        ))
        .expect("a frame decodes") else {
            panic!("not a batch")
        };
        assert_eq!(
            format!("{:?}", back.notes),
            "[Probe { group: 7, probing: 1 }]"
        );
        assert!(matches!(
            decode(body(
                &encode(&mut Frame::Keepalive).expect("a frame encodes")
            ))
            .expect("a frame decodes"),
            Frame::Keepalive
        ));
        assert!(matches!(
            decode(body(&encode(&mut Frame::Proof([7; TAG_BYTES])).expect("a frame encodes")))
                .expect("a frame decodes"),
            Frame::Proof(proof) if proof == [7; TAG_BYTES]
        ));
        let mut sealed = encode(&mut Frame::Keepalive).expect("a frame encodes");
        seal(&mut sealed, &[9; TAG_BYTES]);
        assert_eq!(
            body(&sealed),
            [&[KIND_KEEPALIVE][..], &[9; TAG_BYTES]].concat()
        );
        let long = "é".repeat(REFUSE_BYTES_MAX);
        let Frame::Refuse(why) = decode(body(
            &encode(&mut Frame::Refuse(long)).expect("a frame encodes"),
        ))
        .expect("a frame decodes") else {
            panic!("not a refusal")
        };
        assert!(why.len() <= REFUSE_BYTES_MAX && why.chars().all(|c| c == 'é'));
    }

    fn snapshot_call(id: u64, data: Vec<u8>) -> crate::raft::transport::Call {
        crate::raft::transport::Call {
            group: 3,
            id,
            rpc: Rpc::Snapshot(openraft::raft::InstallSnapshotRequest {
                vote: openraft::Vote::new(1, 1),
                meta: openraft::SnapshotMeta::default(),
                offset: id,
                data,
                done: false,
            }),
        }
    }

    fn chunk_data(batch: &Batch) -> Vec<(u64, Vec<u8>)> {
        batch
            .calls
            .iter()
            .filter_map(|call| match &call.rpc {
                Rpc::Snapshot(request) => Some((call.id, request.data.clone())),
                _ => None,
            })
            .collect()
    }

    /// Snapshot chunks' data go raw after the JSON, each back in its own
    /// call, and the batch encoded is left as it was.
    #[test]
    fn snapshot_chunks_travel_raw_and_come_back_in_their_calls() {
        let first: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        let mut frame = Frame::Batch(Batch {
            calls: vec![
                snapshot_call(1, first.clone()),
                crate::raft::transport::Call {
                    group: 4,
                    id: 2,
                    rpc: Rpc::Relay {
                        head: "GET /".into(),
                        body: crate::raft::types::Bytes64(Vec::new()),
                        state: false,
                    },
                },
                snapshot_call(3, Vec::new()),
                snapshot_call(4, b"last".to_vec()),
            ],
            notes: vec![Note::Probe {
                group: 7,
                probing: 1,
            }],
            ..Batch::default()
        });
        let bytes = encode(&mut frame).expect("a frame encodes");
        let Frame::Batch(sent) = frame else {
            panic!("not a batch")
        };
        let expected = vec![(1, first.clone()), (3, Vec::new()), (4, b"last".to_vec())];
        assert_eq!(chunk_data(&sent), expected, "the batch is as it was");
        // The data once, raw, and at the end: no base64 of it in the JSON.
        let json_length = u32::from_be_bytes(bytes[5..9].try_into().expect("4 bytes")) as usize;
        let raw = &bytes[9 + json_length..];
        assert_eq!(raw.len(), 3 * LENGTH_BYTES + first.len() + 4);
        assert_eq!(&raw[LENGTH_BYTES..LENGTH_BYTES + first.len()], &first[..]);
        assert!(bytes.len() < first.len() + 1024);
        let Frame::Batch(back) = decode(body(&bytes)).expect("a frame decodes") else {
            panic!("not a batch")
        };
        assert_eq!(chunk_data(&back), expected);
        assert_eq!(back.calls.len(), 4);
        assert_eq!(back.notes, sent.notes);
    }

    /// Lengths that point past the payload, bytes after the last chunk,
    /// or data inside the JSON: a batch that does not decode, and nothing
    /// allocated for a length before it is checked against the payload.
    #[test]
    fn a_batch_with_bad_chunk_lengths_is_an_error() {
        let bytes = encode(&mut Frame::Batch(Batch {
            calls: vec![snapshot_call(1, vec![5; 100])],
            ..Batch::default()
        }))
        .expect("a frame encodes");
        let good = body(&bytes).to_vec();
        assert!(decode(&good).is_ok());
        let is_bad_batch =
            |body: &[u8]| matches!(decode(body), Err(FrameError::Payload { kind: "batch", .. }));
        // The chunk's length, the last field before its data, made larger.
        let field = good.len() - 100 - LENGTH_BYTES;
        let mut longer = good.clone();
        longer[field..field + LENGTH_BYTES].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(is_bad_batch(&longer));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(is_bad_batch(&trailing));
        assert!(is_bad_batch(&good[..good.len() - 1]));
        let mut json_over = good.clone();
        json_over[1..1 + LENGTH_BYTES].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(is_bad_batch(&json_over));
        // A chunk whose data came inside the JSON (as base64), as the
        // Maelstrom node's messages carry it: not this frame's layout.
        let json = serde_json::to_vec(&Batch {
            calls: vec![snapshot_call(1, vec![5; 3])],
            ..Batch::default()
        })
        .expect("JSON encodes");
        let mut inside = vec![KIND_BATCH];
        inside.extend_from_slice(&(json.len() as u32).to_be_bytes());
        inside.extend_from_slice(&json);
        inside.extend_from_slice(&0u32.to_be_bytes());
        assert!(is_bad_batch(&inside));
    }

    #[test]
    fn bad_lengths_and_bodies_are_errors() {
        assert_eq!(body_length([0; 4]), Err(FrameError::Length(0)));
        let over = u32::try_from(FRAME_BYTES_MAX + 1).expect("small");
        assert_eq!(
            body_length(over.to_be_bytes()),
            Err(FrameError::Length(u64::from(over)))
        );
        assert_eq!(
            body_length(u32::MAX.to_be_bytes()),
            Err(FrameError::Length(u64::from(u32::MAX)))
        );
        assert!(matches!(decode(&[9]), Err(FrameError::Kind(9))));
        assert!(matches!(
            decode(&[KIND_BATCH, b'{', b'x']),
            Err(FrameError::Payload { kind: "batch", .. })
        ));
        assert!(matches!(
            decode(&[KIND_HELLO, b'[']),
            Err(FrameError::Payload { kind: "hello", .. })
        ));
        assert!(matches!(
            decode(&[KIND_REFUSE, 0xff]),
            Err(FrameError::Payload { kind: "refuse", .. })
        ));
        assert!(matches!(
            decode(&[KIND_KEEPALIVE, 0]),
            Err(FrameError::Payload { .. })
        ));
        assert!(matches!(
            decode(&[KIND_PROOF, 1, 2]),
            Err(FrameError::Payload { kind: "proof", .. })
        ));
    }

    #[test]
    fn a_hello_from_another_cluster_or_for_another_node_is_refused() {
        let ours = membership();
        let me = node(2, &ours);
        let good = hello(1, 2);
        assert_eq!(good.check(&me, None), Ok(()));
        assert_eq!(good.check(&me, Some(1)), Ok(()));
        let cases = [
            (
                Hello {
                    version: 1,
                    ..good.clone()
                },
                None,
                "version 1",
            ),
            (
                Hello {
                    protocol: "http".into(),
                    ..good.clone()
                },
                None,
                "speaks \"http\"",
            ),
            (
                Hello {
                    cluster: "staging".into(),
                    ..good.clone()
                },
                None,
                "is of cluster \"staging\", not \"test\"",
            ),
            (good.clone(), Some(3), "not node 3"),
            (hello(2, 2), None, "as this node is"),
            (hello(1, 3), None, "said hello to node 3, not to node 2"),
            (
                Hello {
                    from: 9,
                    ..good.clone()
                },
                None,
                "not in this node's --peers",
            ),
            (
                Hello {
                    nonce: "00".into(),
                    ..good.clone()
                },
                None,
                "no valid nonce",
            ),
        ];
        for (hello, expected, says) in cases {
            let why = hello.check(&me, expected).expect_err("refused");
            assert!(why.contains(says), "{why:?} does not say {says:?}");
        }
    }

    #[test]
    fn different_peer_lists_that_list_each_other_are_taken_and_described() {
        let ours = membership();
        let theirs = Membership::new([(1, "a:1".into()), (2, "b:9".into()), (4, "d:4".into())])
            .expect("a valid membership");
        let hello = Hello::new(&node(1, &theirs), 2, "0a".repeat(32));
        assert_eq!(hello.check(&node(2, &ours), Some(1)), Ok(()));
        // The hello carries nothing of the membership: the list comes
        // after the proofs, sealed.
        let bytes = encode(&mut Frame::Hello(hello.clone())).expect("a frame encodes");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("b:9") && !text.contains("d:4"), "{text}");
        assert!(!text.contains("members"), "{text}");
        assert_eq!(
            differences(theirs.nodes(), &ours).as_deref(),
            Some(
                "has node 2 at \"b:9\", not b:2; lacks node 3; has node 4 at \"d:4\", which \
                 this node lacks"
            )
        );
        assert_eq!(differences(ours.nodes(), &ours), None);
        let Frame::Members(back) = decode(body(
            &encode(&mut Frame::Members(theirs.nodes().clone())).expect("a frame encodes"),
        ))
        .expect("a frame decodes") else {
            panic!("not a members frame")
        };
        assert_eq!(&back, theirs.nodes());
    }

    /// Before the proofs the kind byte is read first: a batch (even one
    /// that would decode) or a members frame is refused unparsed, and a
    /// length is bound by the handshake's limit, not a frame's.
    #[test]
    fn the_handshake_decodes_only_its_own_frames() {
        let batch = encode(&mut Frame::Batch(Batch {
            notes: vec![Note::Probe {
                group: 7,
                probing: 1,
            }],
            ..Batch::default()
        }))
        .expect("a frame encodes");
        assert!(matches!(decode(body(&batch)), Ok(Frame::Batch(_))));
        assert_eq!(
            decode_handshake(body(&batch)).err(),
            Some(FrameError::NotHandshake(KIND_BATCH))
        );
        // Not JSON at all: still refused by its kind, not by a parse.
        assert_eq!(
            decode_handshake(&[KIND_BATCH, b'{', b'x']).err(),
            Some(FrameError::NotHandshake(KIND_BATCH))
        );
        for kind in [KIND_KEEPALIVE, KIND_MEMBERS] {
            assert_eq!(
                decode_handshake(&[kind]).err(),
                Some(FrameError::NotHandshake(kind))
            );
        }
        assert_eq!(decode_handshake(&[9]).err(), Some(FrameError::Kind(9)));
        let proof = encode(&mut Frame::Proof([7; TAG_BYTES])).expect("a frame encodes");
        assert!(matches!(
            decode_handshake(body(&proof)),
            Ok(Frame::Proof(_))
        ));
        let hello = encode(&mut Frame::Hello(hello(2, 1))).expect("a frame encodes");
        assert!(matches!(
            decode_handshake(body(&hello)),
            Ok(Frame::Hello(_))
        ));
        let over = u32::try_from(HANDSHAKE_BYTES_MAX + 1).expect("small");
        let why = handshake_length(over.to_be_bytes()).expect_err("over");
        assert_eq!(why, FrameError::HandshakeLength(u64::from(over)));
        assert!(
            why.to_string()
                .contains(&format!("1 to {HANDSHAKE_BYTES_MAX}"))
        );
        assert_eq!(
            handshake_length([0; 4]),
            Err(FrameError::HandshakeLength(0))
        );
        let at = u32::try_from(HANDSHAKE_BYTES_MAX).expect("small");
        assert_eq!(handshake_length(at.to_be_bytes()), Ok(HANDSHAKE_BYTES_MAX));
        // The largest hello a node makes fits its limit.
        let biggest = Hello {
            cluster: "c".repeat(CLUSTER_ID_BYTES_MAX),
            from: NODE_ID_MAX,
            to: NODE_ID_MAX,
            ..self::hello(2, 1)
        };
        let bytes = encode(&mut Frame::Hello(biggest)).expect("a frame encodes");
        assert!(bytes.len() - LENGTH_BYTES - 1 <= HELLO_BYTES_MAX / 2);
    }

    /// A hello of another version or protocol is refused by those two
    /// fields alone, before its other fields are decoded (an older
    /// version's hello has others).
    #[test]
    fn a_hello_of_another_version_is_refused_as_such() {
        let hello_body = |json: serde_json::Value| {
            let mut body = vec![KIND_HELLO];
            body.extend(serde_json::to_vec(&json).expect("JSON encodes"));
            body
        };
        // Shaped as version 2 sent it: a digest, and no field this
        // version wants in its place would matter.
        let old = hello_body(serde_json::json!({
            "protocol": PROTOCOL, "version": 2, "cluster": "test", "from": 2, "to": 1,
            "members": "0a".repeat(32), "nonce": "0a".repeat(32),
        }));
        let why = decode_handshake(&old).expect_err("another version");
        assert_eq!(
            why,
            FrameError::Version {
                protocol: PROTOCOL.into(),
                version: 2
            }
        );
        assert!(
            why.to_string()
                .contains(&format!("version 2, not {PROTOCOL} version {VERSION}")),
            "{why}"
        );
        // A hello of nothing but another protocol's name and version.
        let stray = hello_body(serde_json::json!({"protocol": "http", "version": 1}));
        assert_eq!(
            decode_handshake(&stray).err(),
            Some(FrameError::Version {
                protocol: "http".into(),
                version: 1
            })
        );
        // This version with a field missing is a payload error, not a
        // version's.
        let missing = hello_body(serde_json::json!({"protocol": PROTOCOL, "version": VERSION}));
        assert!(matches!(
            decode_handshake(&missing),
            Err(FrameError::Payload { kind: "hello", .. })
        ));
    }

    #[test]
    fn a_split_keeps_every_item_in_order() {
        let batch = Batch {
            notes: (0..5)
                .map(|group| Note::Probe { group, probing: 1 })
                .collect(),
            ..Batch::default()
        };
        let (first, second) = split(batch);
        assert_eq!(
            first.notes.iter().map(Note::group).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(second.notes.len(), 3);
    }

    fn leads(count: u32) -> Vec<crate::raft::transport::Lead> {
        (0..count)
            .map(|group| crate::raft::transport::Lead {
                group,
                term: 1,
                last: 9,
                matched: [(2, 7)].into(),
            })
            .collect()
    }

    #[test]
    fn leads_go_whole_in_one_half_and_alone_in_a_frame() {
        let batch = Batch {
            notes: (0..3)
                .map(|group| Note::Probe { group, probing: 1 })
                .collect(),
            leads: Some(leads(4)),
            ..Batch::default()
        };
        assert_eq!(items(&batch), 4, "three notes, and the leads as one");
        let (first, second) = split(batch);
        assert_eq!((first.notes.len(), first.leads), (2, None));
        assert_eq!(second.notes.len(), 1);
        let (first, second) = split(second);
        assert_eq!((first.notes.len(), first.leads), (1, None));
        assert_eq!(
            (second.notes.len(), second.leads.clone()),
            (0, Some(leads(4)))
        );
        // A batch of leads alone still goes out, an empty list too (the
        // sender leads nothing now).
        let (frames, left_out) = batch_frames(second);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].1.leads, Some(leads(4)));
        assert_eq!(items(&left_out), 0);
        let nothing = Batch {
            leads: Some(Vec::new()),
            ..Batch::default()
        };
        assert_eq!(batch_frames(nothing).0.len(), 1);
    }

    #[test]
    fn a_relayed_answer_at_its_bound_fits_one_frame() {
        use crate::broker::cluster::RELAY_BODY_BYTES_MAX;
        use crate::raft::transport::{Answer, Reply};
        use crate::raft::types::Bytes64;
        let batch = Batch {
            answers: vec![Answer {
                id: u64::MAX,
                reply: Reply::Relayed {
                    head: r#"{"status":200,"content_type":"application/json"}"#.into(),
                    body: Bytes64(vec![0xff; RELAY_BODY_BYTES_MAX]),
                },
            }],
            ..Batch::default()
        };
        let (frames, left_out) = batch_frames(batch);
        assert_eq!((frames.len(), items(&left_out)), (1, 0));
        assert!(frames[0].0.len() + TAG_BYTES <= FRAME_BYTES_MAX + LENGTH_BYTES);
    }

    /// Found by helper-74's review (a probe, held): a batch of snapshot
    /// chunks too large for one frame is split; every frame decodes with
    /// each chunk's data back in its call, and the parts handed back (as
    /// after a refused send) still hold their data; a chunk over a frame
    /// alone is left out with its data.
    #[test]
    fn split_batches_of_chunks_keep_their_data() {
        let big = |n: u8| vec![n; 12 << 20];
        let batch = Batch {
            calls: vec![
                snapshot_call(1, big(1)),
                snapshot_call(2, big(2)),
                snapshot_call(3, big(3)),
                snapshot_call(4, vec![4; FRAME_BYTES_MAX]),
            ],
            notes: vec![Note::Probe {
                group: 9,
                probing: 5,
            }],
            ..Batch::default()
        };
        let (frames, left_out) = batch_frames(batch);
        assert!(frames.len() >= 2, "{} frames", frames.len());
        let mut sent = Vec::new();
        let mut decoded = Vec::new();
        for (bytes, part) in &frames {
            assert!(bytes.len() - LENGTH_BYTES + TAG_BYTES <= FRAME_BYTES_MAX);
            sent.extend(chunk_data(part));
            let Frame::Batch(back) = decode(body(bytes)).expect("a frame decodes") else {
                panic!("not a batch")
            };
            decoded.extend(chunk_data(&back));
        }
        let expected = vec![(1, big(1)), (2, big(2)), (3, big(3))];
        assert!(sent == expected, "parts handed back lost data");
        assert!(decoded == expected, "frames decoded wrong");
        let left = chunk_data(&left_out);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 4);
        assert!(left[0].1.len() == FRAME_BYTES_MAX && left[0].1.iter().all(|&b| b == 4));
    }

    /// From helper-74's review (a probe, held): any byte of a batch frame
    /// changed to any value, and any truncation, decodes or fails: never
    /// panics.
    #[test]
    fn mangled_batches_never_panic() {
        let bytes = encode(&mut Frame::Batch(Batch {
            calls: vec![
                snapshot_call(1, vec![5; 40]),
                snapshot_call(2, Vec::new()),
                snapshot_call(3, vec![6; 7]),
            ],
            notes: vec![Note::Probe {
                group: 9,
                probing: 5,
            }],
            ..Batch::default()
        }))
        .expect("a frame encodes");
        let good = body(&bytes).to_vec();
        for at in 0..good.len() {
            for value in [0u8, 1, 2, 0x22, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] = value;
                let _ = decode(&bad);
            }
            let _ = decode(&good[..at]);
        }
    }

    /// Found by helper-74's review (low): a frame's buffer grew by doubling
    /// and kept its slack, up to twice its length, while the link counts
    /// queued frames by their length (`OUTGOING_BYTES_MAX`). A frame holds
    /// its length and its tag's room.
    #[test]
    fn an_encoded_frame_holds_no_more_memory_than_its_bytes() {
        let notes = Batch {
            notes: (0..150_000)
                .map(|group| Note::Probe { group, probing: 1 })
                .collect(),
            ..Batch::default()
        };
        let chunks = Batch {
            calls: (1..=3)
                .map(|id| snapshot_call(id, vec![7; 1_400_000]))
                .collect(),
            ..Batch::default()
        };
        let mut over = Vec::new();
        for (what, batch) in [("notes", notes), ("chunks", chunks)] {
            let bytes = encode(&mut Frame::Batch(batch)).expect("a frame encodes");
            if bytes.capacity() > bytes.len() + TAG_BYTES {
                over.push(format!(
                    "{what}: {} bytes held for a frame of {}",
                    bytes.capacity(),
                    bytes.len()
                ));
            }
        }
        assert!(over.is_empty(), "{over:?}");
    }
}
