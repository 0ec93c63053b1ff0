//! Node-to-node messages: their fields, how they are parsed, how they are
//! built. `cluster.md` says who sends each one and what a receiver does.
//!
//! One kind of message, at most one per tick to each peer, carrying all
//! that waits for it:
//!
//! ```text
//! batch {raft: {calls: [...], answers: [...]},      the groups' RPCs, and answers to the peer's
//!        forwards: [{group, id, ops}],              operations for groups the peer leads
//!        outcomes: [[id, outcome]]}                 what became of the peer's forwards
//! ```
//!
//! A `batch` is never answered by a reply: answers travel in later batches
//! of the other direction, by call id and proposal id. Peers are trusted
//! no further than clients: every field is parsed and checked, and a
//! message that does not parse is dropped with a log line.

use serde::{Deserialize, Serialize};

use serde_json::Value;

use super::fields::Object;
use crate::raft::transport::Batch;
use crate::raft::types::{Op, OpResult, ProposalId};

/// Batches one `forward` may carry: at most one per group, so bounded by
/// the number of groups; this bounds what a peer can ask for.
pub const FORWARD_BATCHES_MAX: usize = 1024;

/// Operations one forwarded batch may carry: a node forwards what its
/// clients sent in one tick, at Maelstrom's rate a handful.
pub const FORWARD_OPS_MAX: usize = 4096;

/// A request from another node: everything one message carries.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerRequest {
    /// Raft RPCs of every group, and answers to this node's.
    #[serde(default)]
    pub raft: Batch,
    /// Operations for groups the receiver leads, each batch to be
    /// proposed as one entry under the forwarder's proposal id.
    #[serde(default)]
    pub forwards: Vec<ForwardBatch>,
    /// What became of the receiver's forwards, by proposal id.
    #[serde(default)]
    pub outcomes: Vec<(ProposalId, ForwardOutcome)>,
}

impl PeerRequest {
    pub fn is_empty(&self) -> bool {
        self.raft.is_empty() && self.forwards.is_empty() && self.outcomes.is_empty()
    }
}

impl PeerRequest {
    /// When its line of `bytes` is over `target`, the request cut in two
    /// halves (each of its lists halved) to send as two messages; `None`
    /// when it fits or holds one item only.
    pub fn split_if_over(&self, bytes: usize, target: usize) -> Option<(PeerRequest, PeerRequest)> {
        let items = self.raft.calls.len()
            + self.raft.answers.len()
            + self.raft.notes.len()
            + self.forwards.len()
            + self.outcomes.len();
        if bytes <= target || items < 2 {
            return None;
        }
        // The request is rebuilt from its serialized form: openraft's
        // messages cannot be cloned.
        let value = serde_json::to_value(self).ok()?;
        let (mut first, mut second) = (value.clone(), value);
        // The first half takes the first `items / 2` items, list by list.
        let mut left = items / 2;
        for path in [
            &["raft", "calls"][..],
            &["raft", "answers"],
            &["raft", "notes"],
            &["forwards"],
            &["outcomes"],
        ] {
            let (Some(a), Some(b)) = (list_at(&mut first, path), list_at(&mut second, path)) else {
                continue;
            };
            let taken = a.len().min(left);
            a.truncate(taken);
            b.drain(..taken);
            left -= taken;
        }
        Some((
            PeerRequest::deserialize(first).ok()?,
            PeerRequest::deserialize(second).ok()?,
        ))
    }
}

/// The list at `path` in a request's JSON form.
fn list_at<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Vec<Value>> {
    let mut at = value;
    for name in path {
        at = at.get_mut(*name)?;
    }
    at.as_array_mut()
}

impl PartialEq for PeerRequest {
    /// Equal when they say the same: by their wire form (the openraft
    /// messages a batch holds have no equality of their own).
    fn eq(&self, other: &PeerRequest) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

/// One forwarded batch: one group's operations, one proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardBatch {
    pub group: u32,
    pub id: ProposalId,
    pub ops: Vec<Op>,
}

/// What became of one forwarded batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardOutcome {
    /// Committed as entry `index`, with these results.
    Applied { index: u64, results: Vec<OpResult> },
    /// Not appended: the receiver does not lead the group (it names the
    /// leader it knows).
    NotLeader { leader: Option<u64> },
    /// Appended, then its fate became unknown: it may still be committed.
    Unknown { why: String },
    /// Not appended, and not to be tried elsewhere: the leader refuses
    /// writes for now (its disk is short of free space).
    Refused { why: String },
}

/// A peer's reply to a request of ours: peers answer nothing by reply
/// but a refusal of a whole message.
#[derive(Debug, PartialEq)]
pub enum PeerReply {
    Error { code: u32, text: String },
}

/// Parses the body of a peer request of type `kind`; `None` if `kind` is not
/// a peer request.
pub fn parse_request(kind: &str, body: &Object) -> Option<Result<PeerRequest, String>> {
    if kind != "batch" {
        return None;
    }
    let request =
        PeerRequest::deserialize(&Value::Object(body.clone())).map_err(|e| format!("a batch: {e}"));
    Some(request.and_then(|request| check(&request).map(|()| request)))
}

/// The estimated weight of an operation in a proposal's entry: its key and
/// message twice over (JSON escaping at worst doubles a string) and its
/// fields.
pub fn op_bytes(op: &Op) -> usize {
    const FIELDS: usize = 64;
    match op {
        Op::Send { key, msg } => 2 * (key.len() + msg.len()) + FIELDS,
        Op::Commit { key, .. } => 2 * key.len() + FIELDS,
        // Base64 makes four bytes of three.
        Op::Append { key, records, .. } => {
            2 * key.len() + records.iter().map(|r| r.0.len() * 4 / 3 + 4).sum::<usize>() + FIELDS
        }
        Op::SetCommit { key, commit } => {
            2 * key.len() + commit.as_ref().map_or(0, |(_, v)| v.0.len() * 4 / 3 + 4) + FIELDS
        }
    }
}

/// Checks a batch's forwards against the limits a client's requests have.
fn check(request: &PeerRequest) -> Result<(), String> {
    if request.forwards.len() > FORWARD_BATCHES_MAX {
        return Err(format!(
            "{} forwarded batches, more than the maximum of {FORWARD_BATCHES_MAX}",
            request.forwards.len()
        ));
    }
    for batch in &request.forwards {
        if batch.ops.len() > FORWARD_OPS_MAX {
            return Err(format!(
                "a batch of {} operations, more than the maximum of {FORWARD_OPS_MAX}",
                batch.ops.len()
            ));
        }
        let weight: usize = batch.ops.iter().map(op_bytes).sum();
        if batch.ops.len() > 1 && weight > super::server::PROPOSAL_BYTES_MAX {
            // One entry of it might not fit a record of the store: a
            // node forwards no more than one proposal's weight at once.
            return Err(format!(
                "a forwarded batch of {weight} bytes, more than a proposal's {}",
                super::server::PROPOSAL_BYTES_MAX
            ));
        }
        for op in &batch.ops {
            match op {
                Op::Send { key, msg } => {
                    super::fields::check_key(key)?;
                    if msg.len() > super::fields::SEND_MSG_BYTES_MAX
                        || serde_json::from_str::<serde::de::IgnoredAny>(msg).is_err()
                    {
                        return Err(format!(
                            "a forwarded message for {key:?} that is not JSON within the size limit"
                        ));
                    }
                }
                Op::Commit { key, .. } => super::fields::check_key(key)?,
                Op::Append { key, .. } | Op::SetCommit { key, .. } => {
                    return Err(format!(
                        "a forwarded operation on {key:?} that is not one of the Maelstrom node's"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Parses the body of a reply (it has `in_reply_to`).
pub fn parse_reply(body: &Object) -> Result<PeerReply, String> {
    let kind = body
        .get("type")
        .and_then(Value::as_str)
        .ok_or("no string `type`")?;
    match kind {
        "error" => Ok(PeerReply::Error {
            code: body
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok())
                .ok_or("`code` must be an integer")?,
            text: body
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }),
        other => Err(format!("unknown reply type {other:?}")),
    }
}

/// The body of a `batch` message.
#[derive(Serialize)]
pub struct BatchBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub msg_id: u64,
    #[serde(flatten)]
    pub request: &'a PeerRequest,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::standing::Note;

    fn request(notes: usize, outcomes: usize) -> PeerRequest {
        let mut request = PeerRequest::default();
        request.raft.notes = (0..notes as u32)
            .map(|group| Note::Probe { group, probing: 1 })
            .collect();
        request.outcomes = (0..outcomes as u64)
            .map(|seq| {
                (
                    ProposalId { node: 1, seq },
                    ForwardOutcome::NotLeader { leader: None },
                )
            })
            .collect();
        request
    }

    #[test]
    fn a_request_over_the_target_splits_into_halves_that_hold_every_item_once() {
        let whole = request(3, 2);
        assert!(whole.split_if_over(10, 100).is_none(), "under the target");
        let (first, second) = whole.split_if_over(200, 100).expect("split");
        assert_eq!(first.raft.notes.len() + first.outcomes.len(), 2);
        assert_eq!(second.raft.notes.len() + second.outcomes.len(), 3);
        let mut notes = first.raft.notes.clone();
        notes.extend(second.raft.notes.clone());
        assert_eq!(notes, whole.raft.notes);
        let mut outcomes = first.outcomes.clone();
        outcomes.extend(second.outcomes.clone());
        assert_eq!(outcomes, whole.outcomes);
    }

    #[test]
    fn a_forward_heavier_than_a_proposal_is_refused_but_one_large_send_is_not() {
        let send = |bytes: usize| Op::Send {
            key: "k".into(),
            msg: format!("\"{}\"", "m".repeat(bytes)),
        };
        let forward = |ops: Vec<Op>| PeerRequest {
            forwards: vec![ForwardBatch {
                group: 0,
                id: ProposalId { node: 1, seq: 1 },
                ops,
            }],
            ..PeerRequest::default()
        };
        let big = crate::node::fields::SEND_MSG_BYTES_MAX - 2;
        assert!(check(&forward(vec![send(big)])).is_ok());
        assert!(check(&forward(vec![send(big), send(big)])).is_err());
        assert!(check(&forward(vec![send(10), send(10)])).is_ok());
    }

    #[test]
    fn single_items_of_different_lists_split_too_and_one_item_does_not() {
        let (first, second) = request(1, 1).split_if_over(200, 100).expect("split");
        assert_eq!((first.raft.notes.len(), first.outcomes.len()), (1, 0));
        assert_eq!((second.raft.notes.len(), second.outcomes.len()), (0, 1));
        assert!(request(1, 0).split_if_over(200, 100).is_none());
    }
}
