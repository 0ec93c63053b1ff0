//! The history of a run: every operation a client invoked, when, and how it ended.
//!
//! This is the only input the checker reads besides the final read, so it records exactly what a
//! client could observe: the request, the invoke and complete times, and an outcome that is `Ok`
//! with the reply's values, a definite `Fail`, `Unknown` (timeout, crash, indefinite error) or
//! `Malformed` (a reply that breaks the protocol).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One record of a key's log as a client sees it: `(offset, value)`.
pub type Record = (u64, u64);

/// The process number of the final reader, distinct from every client's number.
pub const FINAL_READER_PROCESS: u32 = u32::MAX;

/// What a client asked the node to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Request {
    /// Append `value` to `key`'s log.
    Send { key: String, value: u64 },
    /// Read each key's log from the given offset.
    Poll { offsets: BTreeMap<String, u64> },
    /// Record each key as processed up to and including the given offset.
    Commit { offsets: BTreeMap<String, u64> },
    /// Read the committed offsets of the given keys.
    List { keys: Vec<String> },
}

impl Request {
    /// The operation's name, as summaries and the history file print it.
    pub fn kind(&self) -> OpKind {
        match self {
            Request::Send { .. } => OpKind::Send,
            Request::Poll { .. } => OpKind::Poll,
            Request::Commit { .. } => OpKind::Commit,
            Request::List { .. } => OpKind::List,
        }
    }
}

/// The four operation kinds, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    Send,
    Poll,
    Commit,
    List,
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [OpKind::Send, OpKind::Poll, OpKind::Commit, OpKind::List];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Send => "send",
            OpKind::Poll => "poll",
            OpKind::Commit => "commit",
            OpKind::List => "list",
        }
    }
}

/// The values an acknowledged request returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Response {
    Send {
        offset: u64,
    },
    /// Keys with nothing to read are absent, never empty.
    Poll {
        msgs: BTreeMap<String, Vec<Record>>,
    },
    Commit,
    /// Keys the node has no committed offset for are absent.
    List {
        offsets: BTreeMap<String, u64>,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Outcome {
    /// The node acknowledged the request with these values.
    Ok { response: Response },
    /// A definite error: the node promises the request had no effect.
    Fail { code: u64, text: String },
    /// The request may or may not have taken effect: a timeout, the process died, or an
    /// indefinite error code.
    Unknown { reason: String },
    /// The reply broke the protocol (wrong type, extra fields, an empty list in a poll, ...).
    /// Whether the request took effect is unknown; the checker reports it as an anomaly.
    Malformed { reason: String },
}

impl Outcome {
    pub fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Ok { .. } => OutcomeClass::Ok,
            Outcome::Fail { .. } => OutcomeClass::Fail,
            Outcome::Unknown { .. } | Outcome::Malformed { .. } => OutcomeClass::Unknown,
        }
    }
}

/// Outcomes folded into the three classes a summary counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeClass {
    Ok,
    Fail,
    Unknown,
}

/// One operation from invocation to completion.
///
/// Times are nanoseconds since the run started. The invoke time is taken before the request is
/// written and the complete time after the reply is read, so if one operation's `complete_ns` is
/// below another's `invoke_ns`, the first really finished before the second began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Position in the history, so anomalies can name the operations involved.
    pub index: usize,
    /// The client that performed it, or [`FINAL_READER_PROCESS`].
    pub process: u32,
    /// Taken before the request was written.
    pub invoke_ns: u64,
    /// Taken after the reply was read, or when the operation was given up on.
    pub complete_ns: u64,
    pub request: Request,
    pub outcome: Outcome,
}

/// Every key's log as read from offset 0 to its end after the last restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRead {
    /// Each key's records in offset order; keys with nothing to read are absent.
    pub logs: BTreeMap<String, Vec<Record>>,
}

/// One reader's final read through one node, and that node's final listing of committed offsets.
/// A one-node run has one; a cluster run has one per client, each through the client's node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRead {
    /// The node that answered (`n0`, ...).
    pub node: String,
    /// The reader's process in the history.
    pub process: u32,
    /// What the node returned for every key.
    pub read: FinalRead,
    /// The committed offsets the node listed after the read.
    pub committed: BTreeMap<String, u64>,
}

/// Writes the history as JSON lines, one operation per line, for a failed run's post-mortem.
pub fn write_json_lines(history: &[Operation], path: &Path) -> Result<(), String> {
    let file = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut out = BufWriter::new(file);
    for op in history {
        serde_json::to_writer(&mut out, op)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        out.write_all(b"\n")
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    out.flush()
        .map_err(|e| format!("flush {}: {e}", path.display()))
}
