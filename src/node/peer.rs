//! Node-to-node messages: their fields, how they are parsed, how they are
//! built. `cluster.md` says who sends each one and what a receiver does when
//! one arrives twice, late, or out of order.
//!
//! ```text
//! forward      {sends: [[key, msg], ...]}            non-owner -> owner
//! forward_ok   {results: [offset | {code, text}]}    owner -> non-owner, same order
//! replicate    {boot, logs: {key: [from, [msg, ...]]}, commits: {key: offset}}
//! replicate_ok {boot, ends: {key: durable next offset}}
//! ```

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{self, Object, REQUEST_KEYS_MAX};

/// Sends one `forward` may carry. Forwards are coalesced while one is in
/// flight; at Maelstrom's rate a batch holds a handful, and this bounds the
/// work and the reply one message can ask for.
pub const FORWARD_SENDS_MAX: usize = 1024;

/// A request from another node.
#[derive(Debug, PartialEq)]
pub enum PeerRequest {
    /// Sends a node took from its clients for keys the receiver owns, to be
    /// appended in this order and answered once durable.
    Forward { sends: Vec<(String, Vec<u8>)> },
    /// Records of keys the sender owns, and commits the sender took.
    Replicate(Replicate),
}

/// The body of a `replicate`.
#[derive(Debug, PartialEq)]
pub struct Replicate {
    /// The sender's boot id (see `ReplicateOk`); informative here.
    pub boot: u64,
    /// Runs of consecutive records, one per key.
    pub logs: Vec<LogRun>,
    /// Committed offsets, merged by taking the larger.
    pub commits: Vec<(String, u64)>,
}

/// Consecutive records of one key starting at `from`. An empty run is a
/// probe: the owner asks where the replica stands.
#[derive(Debug, PartialEq)]
pub struct LogRun {
    pub key: String,
    pub from: u64,
    /// Each message as compact JSON text.
    pub msgs: Vec<Vec<u8>>,
}

/// A peer's reply to a request of ours.
#[derive(Debug, PartialEq)]
pub enum PeerReply {
    ForwardOk {
        results: Vec<ForwardResult>,
    },
    ReplicateOk {
        /// Changes each time the replica's process starts: a new value tells
        /// the owner that what it knew of this replica may be gone.
        boot: u64,
        /// The replica's durable next offset for each key the request named.
        ends: Vec<(String, u64)>,
    },
    /// The peer refused the whole request.
    Error {
        code: u32,
        text: String,
    },
}

/// The outcome of one forwarded send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ForwardResult {
    /// Appended at this offset and durable.
    Offset(u64),
    /// Not appended (a definite code) or unknown (an indefinite one).
    Error { code: u32, text: String },
}

/// Parses the body of a peer request of type `kind`; `None` if `kind` is not
/// a peer request.
pub fn parse_request(kind: &str, body: &Object) -> Option<Result<PeerRequest, String>> {
    match kind {
        "forward" => Some(parse_forward(body)),
        "replicate" => Some(parse_replicate(body).map(PeerRequest::Replicate)),
        _ => None,
    }
}

fn parse_forward(body: &Object) -> Result<PeerRequest, String> {
    let sends = body
        .get("sends")
        .and_then(Value::as_array)
        .ok_or("`sends` must be an array of [key, msg]")?;
    if sends.len() > FORWARD_SENDS_MAX {
        return Err(format!(
            "{} sends, more than the maximum of {FORWARD_SENDS_MAX}",
            sends.len()
        ));
    }
    let sends = sends
        .iter()
        .map(|send| match send.as_array().map(Vec::as_slice) {
            Some([Value::String(key), msg]) => {
                fields::check_key(key)?;
                Ok((key.clone(), fields::message_text(msg)?))
            }
            _ => Err("each send must be [key, msg]".to_string()),
        })
        .collect::<Result<_, String>>()?;
    Ok(PeerRequest::Forward { sends })
}

fn parse_replicate(body: &Object) -> Result<Replicate, String> {
    let boot = fields::u64_field(body, "boot")?;
    let logs = body
        .get("logs")
        .and_then(Value::as_object)
        .ok_or("`logs` must be an object of key to [from, [msg, ...]]")?;
    if logs.len() > REQUEST_KEYS_MAX {
        return Err(format!(
            "{} keys, more than the maximum of {REQUEST_KEYS_MAX}",
            logs.len()
        ));
    }
    let logs = logs
        .iter()
        .map(|(key, run)| {
            fields::check_key(key)?;
            let Some([from, Value::Array(msgs)]) = run.as_array().map(Vec::as_slice) else {
                return Err(format!("run of {key:?} must be [from, [msg, ...]]"));
            };
            let from = from
                .as_u64()
                .ok_or_else(|| format!("run of {key:?} must start at a non-negative offset"))?;
            let msgs = msgs
                .iter()
                .map(fields::message_text)
                .collect::<Result<_, _>>()?;
            Ok(LogRun {
                key: key.clone(),
                from,
                msgs,
            })
        })
        .collect::<Result<_, String>>()?;
    let commits = fields::key_offsets(body.get("commits"), "commits")?;
    Ok(Replicate {
        boot,
        logs,
        commits,
    })
}

/// Parses the body of a reply (it has `in_reply_to`).
pub fn parse_reply(body: &Object) -> Result<PeerReply, String> {
    let kind = body
        .get("type")
        .and_then(Value::as_str)
        .ok_or("no string `type`")?;
    match kind {
        "forward_ok" => {
            let results = body.get("results").ok_or("no `results`")?;
            let results: Vec<ForwardResult> =
                serde_json::from_value(results.clone()).map_err(|e| format!("`results`: {e}"))?;
            Ok(PeerReply::ForwardOk { results })
        }
        "replicate_ok" => Ok(PeerReply::ReplicateOk {
            boot: fields::u64_field(body, "boot")?,
            ends: fields::key_offsets(body.get("ends"), "ends")?,
        }),
        "error" => Ok(PeerReply::Error {
            code: body
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|code| u32::try_from(code).ok())
                .ok_or("`code` must be a number")?,
            text: body
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }),
        other => Err(format!("unknown reply type {other:?}")),
    }
}

/// JSON text of a string, quoted and escaped.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// The length of `text` as a JSON string, quotes included (what
/// `quoted` makes of it), without building it.
pub fn quoted_len(text: &str) -> usize {
    2 + text
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

/// Builds the line of a `forward` from `src` to `dest`; each message is
/// already compact JSON text.
pub fn encode_forward<'a>(
    src: &str,
    dest: &str,
    msg_id: u64,
    sends: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<u8> {
    let mut line = Vec::new();
    line.extend_from_slice(
        format!(
            "{{\"src\":{},\"dest\":{},\"body\":{{\"type\":\"forward\",\"msg_id\":{msg_id},\"sends\":[",
            quoted(src),
            quoted(dest)
        )
        .as_bytes(),
    );
    for (i, (key, msg)) in sends.into_iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.push(b'[');
        line.extend_from_slice(quoted(key).as_bytes());
        line.push(b',');
        line.extend_from_slice(msg);
        line.push(b']');
    }
    line.extend_from_slice(b"]}}\n");
    line
}

/// A `replicate` being filled: runs are added as they are read from the
/// store, so records are copied once, into the line.
pub struct ReplicateBuilder {
    /// The `logs` object's members so far, without braces.
    logs: String,
    /// Runs added.
    runs: usize,
    /// The `commits` object's members so far, without braces.
    commits: String,
}

impl Default for ReplicateBuilder {
    fn default() -> Self {
        ReplicateBuilder::new()
    }
}

impl ReplicateBuilder {
    pub fn new() -> ReplicateBuilder {
        ReplicateBuilder {
            logs: String::new(),
            runs: 0,
            commits: String::new(),
        }
    }

    /// Bytes of the message so far, roughly: what budgets compare against.
    pub fn len(&self) -> usize {
        self.logs.len() + self.commits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs == 0 && self.commits.is_empty()
    }

    /// Adds the run of `key` from `from`; `msgs` is the messages' JSON text
    /// joined by commas (empty for a probe).
    pub fn add_run(&mut self, key: &str, from: u64, msgs: &str) {
        if self.runs > 0 {
            self.logs.push(',');
        }
        let _ = write!(self.logs, "{}:[{from},[{msgs}]]", quoted(key));
        self.runs += 1;
    }

    pub fn add_commit(&mut self, key: &str, offset: u64) {
        if !self.commits.is_empty() {
            self.commits.push(',');
        }
        let _ = write!(self.commits, "{}:{offset}", quoted(key));
    }

    /// The whole line, newline included.
    pub fn encode(&self, src: &str, dest: &str, msg_id: u64, boot: u64) -> Vec<u8> {
        format!(
            "{{\"src\":{},\"dest\":{},\"body\":{{\"type\":\"replicate\",\"msg_id\":{msg_id},\"boot\":{boot},\"logs\":{{{}}},\"commits\":{{{}}}}}}}\n",
            quoted(src),
            quoted(dest),
            self.logs,
            self.commits
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::protocol::{Incoming, Request, parse_line};

    #[test]
    fn quoted_len_is_the_length_of_the_json_string() {
        for text in [
            "",
            "a",
            "b\"/\\",
            "\u{1}\n\t\u{1f}\u{7f}",
            "é€😀",
            &"\u{2}".repeat(100),
        ] {
            assert_eq!(quoted_len(text), quoted(text).len(), "{text:?}");
        }
    }

    #[test]
    fn a_forward_round_trips() {
        let line = encode_forward(
            "n1",
            "n0",
            7,
            [("a", &b"1"[..]), ("b\"/", &br#"{"x":[1]}"#[..])],
        );
        let Ok(Incoming::Request { to, request }) = parse_line(&line) else {
            panic!("{}", String::from_utf8_lossy(&line));
        };
        assert_eq!((to.src.as_str(), to.msg_id), ("n1", 7));
        assert_eq!(
            request,
            Request::Peer(PeerRequest::Forward {
                sends: vec![
                    ("a".into(), b"1".to_vec()),
                    ("b\"/".into(), br#"{"x":[1]}"#.to_vec())
                ]
            })
        );
    }

    #[test]
    fn a_replicate_round_trips_with_probes_and_commits() {
        let mut builder = ReplicateBuilder::new();
        assert!(builder.is_empty());
        builder.add_run("k1", 4, "10,11");
        builder.add_run("k2", 9, "");
        builder.add_commit("k1", 5);
        let line = builder.encode("n0", "n2", 3, 99);
        let Ok(Incoming::Request { request, .. }) = parse_line(&line) else {
            panic!("{}", String::from_utf8_lossy(&line));
        };
        assert_eq!(
            request,
            Request::Peer(PeerRequest::Replicate(Replicate {
                boot: 99,
                logs: vec![
                    LogRun {
                        key: "k1".into(),
                        from: 4,
                        msgs: vec![b"10".to_vec(), b"11".to_vec()]
                    },
                    LogRun {
                        key: "k2".into(),
                        from: 9,
                        msgs: vec![]
                    }
                ],
                commits: vec![("k1".into(), 5)]
            }))
        );
    }

    #[test]
    fn replies_parse() {
        let cases = [
            (
                r#"{"src":"n0","dest":"n1","body":{"type":"forward_ok","in_reply_to":2,"results":[3,{"code":11,"text":"no"}]}}"#,
                PeerReply::ForwardOk {
                    results: vec![
                        ForwardResult::Offset(3),
                        ForwardResult::Error {
                            code: 11,
                            text: "no".into(),
                        },
                    ],
                },
            ),
            (
                r#"{"src":"n0","dest":"n1","body":{"type":"replicate_ok","in_reply_to":2,"boot":5,"ends":{"k":3}}}"#,
                PeerReply::ReplicateOk {
                    boot: 5,
                    ends: vec![("k".into(), 3)],
                },
            ),
            (
                r#"{"src":"n0","dest":"n1","body":{"type":"error","in_reply_to":2,"code":11,"text":"t"}}"#,
                PeerReply::Error {
                    code: 11,
                    text: "t".into(),
                },
            ),
        ];
        for (line, expected) in cases {
            match parse_line(line.as_bytes()) {
                Ok(Incoming::Reply {
                    src,
                    in_reply_to,
                    reply,
                }) => {
                    assert_eq!((src.as_str(), in_reply_to), ("n0", 2));
                    assert_eq!(reply, expected);
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn forward_results_serialize_as_numbers_or_objects() {
        let results = [
            ForwardResult::Offset(4),
            ForwardResult::Error {
                code: 13,
                text: "t".into(),
            },
        ];
        assert_eq!(
            serde_json::to_string(&results).expect("serialize"),
            r#"[4,{"code":13,"text":"t"}]"#
        );
    }
}
