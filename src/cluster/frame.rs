//! The peer link's frames, and their codec (no I/O here).
//!
//! Every frame is a length and a body; all integers are big-endian:
//!
//! ```text
//! * 4 bytes: length, the body's bytes (1 to FRAME_BYTES_MAX)
//! * 1 byte:  kind (1 Hello, 2 Refuse, 3 Batch, 4 Keepalive, 5 Proof)
//! * payload
//!     Hello      JSON {"protocol": "seglog-peer", "version": 2, "cluster": "ID",
//!                      "from": N, "to": M, "nodes": {"1": "HOST:PORT", ...},
//!                      "nonce": 64 hex digits}
//!     Refuse     UTF-8 text, terse: the reason is in the refusing node's log
//!                (at most REFUSE_BYTES_MAX)
//!     Proof      32 bytes: HMAC-SHA-256 (`handshake.rs`)
//!     Batch      JSON of a `raft::transport::Batch`
//!     Keepalive  empty
//! * 32 bytes:  tag, on Batch and Keepalive only (every frame after the
//!              proofs): HMAC-SHA-256 under the session key of the
//!              frame's sequence number and its kind and payload
//! ```
//!
//! A link starts with the dialing node's Hello; the other node answers
//! with its own Hello, or with a Refuse and closes; the dialing node sends
//! its Proof, and the other node checks it and sends its own, or refuses
//! ([`super::handshake`]
//! spells the exchange out). Then only the dialing node sends: Batches,
//! and a Keepalive when it has had nothing to send for a while, each
//! sealed with its tag. A frame that breaks any of this is a reason to
//! close the connection; nothing a peer sends is trusted before it is
//! checked, and nothing after the hello is decoded before its tag is.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::handshake::{TAG_BYTES, Tag, is_nonce};
use super::peers::{Cluster, Membership};
use crate::raft::transport::Batch;
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

/// Longest hello: the membership of `NODES_MAX` nodes with host names of
/// at most 253 bytes fits well within it.
pub const HELLO_BYTES_MAX: usize = 16 << 10;

/// The protocol name a hello carries: a stray client of another protocol
/// is told apart from a peer of another version.
pub const PROTOCOL: &str = "seglog-peer";

/// The link protocol's version; a peer of another version is refused.
/// Version 2 authenticates peers and frames (version 1 trusted a hello).
pub const VERSION: u32 = 2;

const KIND_HELLO: u8 = 1;
const KIND_REFUSE: u8 = 2;
const KIND_BATCH: u8 = 3;
const KIND_KEEPALIVE: u8 = 4;
const KIND_PROOF: u8 = 5;

/// Who a node is, which node it means to talk to, which cluster it
/// believes it is in, and its nonce for this connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: String,
    pub version: u32,
    /// The sender's `--cluster-id`.
    pub cluster: String,
    pub from: NodeId,
    /// The node it is for: the dialed node, or the one that dialed.
    pub to: NodeId,
    /// The sender's `--peers`: compared, and a difference logged.
    pub nodes: BTreeMap<NodeId, String>,
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
            nodes: cluster.membership.nodes().clone(),
            nonce,
        }
    }

    /// Whether node `cluster.me` takes this hello, which should come from
    /// `expected` when this node dialed it; the error is the reason, for
    /// the log and the Refuse frame. Two nodes' `--peers` may differ, as
    /// long as each lists the other ([`Hello::differences`] says how).
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
        if !self.nodes.contains_key(&me) {
            return Err(format!(
                "has --peers of {} nodes without node {me}",
                self.nodes.len()
            ));
        }
        if !is_nonce(&self.nonce) {
            return Err("has no valid nonce".into());
        }
        Ok(())
    }

    /// How the sender's `--peers` differ from `ours`, for the log once
    /// the sender is authenticated; `None` when they are the same.
    pub fn differences(&self, ours: &Membership) -> Option<String> {
        let mut parts = Vec::new();
        for (id, address) in ours.nodes() {
            match self.nodes.get(id) {
                None => parts.push(format!("lacks node {id}")),
                Some(theirs) if theirs != address => {
                    parts.push(format!("has node {id} at {theirs:?}, not {address}"));
                }
                Some(_) => {}
            }
        }
        for (id, address) in &self.nodes {
            if !ours.contains(*id) {
                parts.push(format!(
                    "has node {id} at {address:?}, which this node lacks"
                ));
            }
        }
        // At most NODES_MAX nodes and a hello of HELLO_BYTES_MAX: short.
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// One frame.
#[derive(Debug)]
pub enum Frame {
    Hello(Hello),
    Refuse(String),
    Proof(Tag),
    Batch(Batch),
    Keepalive,
}

/// Why bytes are not a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A length of zero, or over [`FRAME_BYTES_MAX`].
    Length(u64),
    /// A kind byte no frame has.
    Kind(u8),
    /// The payload does not decode as its kind's.
    Payload { kind: &'static str, why: String },
    /// A frame to send is over [`FRAME_BYTES_MAX`] and cannot be split.
    TooLarge(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Length(length) => write!(
                f,
                "a frame length of {length} bytes (1 to {FRAME_BYTES_MAX})"
            ),
            FrameError::Kind(kind) => write!(f, "an unknown frame kind {kind}"),
            FrameError::Payload { kind, why } => {
                write!(f, "a {kind} frame that does not decode: {why}")
            }
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

/// A frame's bytes, its length field included (and room for a tag,
/// [`seal`]).
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let (kind, payload) = match frame {
        Frame::Hello(hello) => (KIND_HELLO, json(hello)?),
        Frame::Refuse(why) => {
            let mut end = why.len().min(REFUSE_BYTES_MAX);
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            (KIND_REFUSE, why.as_bytes()[..end].to_vec())
        }
        Frame::Proof(proof) => (KIND_PROOF, proof.to_vec()),
        Frame::Batch(batch) => (KIND_BATCH, json(batch)?),
        Frame::Keepalive => (KIND_KEEPALIVE, Vec::new()),
    };
    let body = payload.len() + 1;
    // Room for the tag a frame after the proofs carries.
    if body + TAG_BYTES > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(body + TAG_BYTES));
    }
    let length = u32::try_from(body).map_err(|_| FrameError::TooLarge(body))?;
    let mut bytes = Vec::with_capacity(LENGTH_BYTES + body + TAG_BYTES);
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.push(kind);
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    serde_json::to_vec(value).map_err(|e| FrameError::Payload {
        kind: "outgoing",
        why: e.to_string(),
    })
}

/// Decodes a frame's body (its bytes after the length field).
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    let Some((&kind, payload)) = body.split_first() else {
        return Err(FrameError::Length(0));
    };
    let bad = |kind: &'static str, why: String| FrameError::Payload { kind, why };
    match kind {
        KIND_HELLO => {
            if payload.len() > HELLO_BYTES_MAX {
                return Err(bad("hello", format!("{} bytes", payload.len())));
            }
            serde_json::from_slice(payload)
                .map(Frame::Hello)
                .map_err(|e| bad("hello", e.to_string()))
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
        KIND_BATCH => serde_json::from_slice(payload)
            .map(Frame::Batch)
            .map_err(|e| bad("batch", e.to_string())),
        KIND_KEEPALIVE if payload.is_empty() => Ok(Frame::Keepalive),
        KIND_KEEPALIVE => Err(bad("keepalive", format!("{} payload bytes", payload.len()))),
        other => Err(FrameError::Kind(other)),
    }
}

/// Appends `tag` to an encoded frame (from [`encode`], whose limit left
/// room for it) and counts it in the length field.
pub fn seal(frame: &mut Vec<u8>, tag: &Tag) {
    frame.extend_from_slice(tag);
    let body = frame.len() - LENGTH_BYTES;
    let length = u32::try_from(body).expect("encode leaves room for a tag within u32");
    frame[..LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
}

/// How many calls, answers and notes a batch holds.
pub fn items(batch: &Batch) -> usize {
    batch.calls.len() + batch.answers.len() + batch.notes.len()
}

/// A batch cut in two: the first half of its items (calls first, then
/// answers, then notes), and the rest. Every item stays whole.
pub fn split(mut batch: Batch) -> (Batch, Batch) {
    let mut left = items(&batch) / 2;
    let calls = left.min(batch.calls.len());
    left -= calls;
    let answers = left.min(batch.answers.len());
    left -= answers;
    let notes = left.min(batch.notes.len());
    let first = Batch {
        calls: batch.calls.drain(..calls).collect(),
        answers: batch.answers.drain(..answers).collect(),
        notes: batch.notes.drain(..notes).collect(),
    };
    (first, batch)
}

/// Appends `more`'s items to `batch`'s, each kind in order.
pub fn merge(batch: &mut Batch, more: Batch) {
    batch.calls.extend(more.calls);
    batch.answers.extend(more.answers);
    batch.notes.extend(more.notes);
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
        let frame = Frame::Batch(batch);
        let encoded = encode(&frame);
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
            &encode(&Frame::Hello(hello.clone())).expect("a frame encodes"),
        ))
        .expect("a frame decodes") else {
            panic!("not a hello")
        };
        assert_eq!(back, hello);
        let batch = Batch {
            notes: vec![Note::Probe { group: 7 }],
            ..Batch::default()
        };
        let Frame::Batch(back) = decode(body(
            &encode(&Frame::Batch(batch)).expect("a frame encodes"),
        ))
        .expect("a frame decodes") else {
            panic!("not a batch")
        };
        assert_eq!(format!("{:?}", back.notes), "[Probe { group: 7 }]");
        assert!(matches!(
            decode(body(&encode(&Frame::Keepalive).expect("a frame encodes")))
                .expect("a frame decodes"),
            Frame::Keepalive
        ));
        assert!(matches!(
            decode(body(&encode(&Frame::Proof([7; TAG_BYTES])).expect("a frame encodes")))
                .expect("a frame decodes"),
            Frame::Proof(proof) if proof == [7; TAG_BYTES]
        ));
        let mut sealed = encode(&Frame::Keepalive).expect("a frame encodes");
        seal(&mut sealed, &[9; TAG_BYTES]);
        assert_eq!(
            body(&sealed),
            [&[KIND_KEEPALIVE][..], &[9; TAG_BYTES]].concat()
        );
        let long = "é".repeat(REFUSE_BYTES_MAX);
        let Frame::Refuse(why) = decode(body(
            &encode(&Frame::Refuse(long)).expect("a frame encodes"),
        ))
        .expect("a frame decodes") else {
            panic!("not a refusal")
        };
        assert!(why.len() <= REFUSE_BYTES_MAX && why.chars().all(|c| c == 'é'));
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
                Hello::new(
                    &node(
                        1,
                        &Membership::new([(1, "a:1".into()), (3, "c:3".into())])
                            .expect("a valid membership"),
                    ),
                    2,
                    "0a".repeat(32),
                ),
                None,
                "has --peers of 2 nodes without node 2",
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
        assert_eq!(
            hello.differences(&ours).as_deref(),
            Some(
                "has node 2 at \"b:9\", not b:2; lacks node 3; has node 4 at \"d:4\", which \
                 this node lacks"
            )
        );
        assert_eq!(self::hello(1, 2).differences(&ours), None);
    }

    #[test]
    fn a_split_keeps_every_item_in_order() {
        let batch = Batch {
            notes: (0..5).map(|group| Note::Probe { group }).collect(),
            ..Batch::default()
        };
        let (first, second) = split(batch);
        assert_eq!(
            format!("{:?}", first.notes),
            "[Probe { group: 0 }, Probe { group: 1 }]"
        );
        assert_eq!(second.notes.len(), 3);
    }
}
