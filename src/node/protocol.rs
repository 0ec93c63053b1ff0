//! Maelstrom protocol types: the envelope, the requests seglog understands,
//! and the replies it writes. Parsing checks every field so that a bad
//! request is answered with an error and never half-applied.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::storage::format::MESSAGE_BYTES_MAX;
use crate::storage::keyname::KEY_BYTES_MAX;

/// Maelstrom error codes used by the node (see `maelstrom.md`).
pub mod code {
    /// Indefinite: the request may or may not have taken effect.
    pub const CRASH: u32 = 13;
    /// Definite: the request type is unknown.
    pub const NOT_SUPPORTED: u32 = 10;
    /// Definite: the node cannot serve the request now (not initialised,
    /// store poisoned, disk full); nothing was changed.
    pub const TEMPORARILY_UNAVAILABLE: u32 = 11;
    /// Definite: the request is malformed; nothing was changed.
    pub const MALFORMED_REQUEST: u32 = 12;
}

/// Keys one poll, commit or list request may name. The workload keeps about
/// ten keys active per client and the final read names every key it knows,
/// a few thousand in a long run; 100,000 bounds the work one line can ask for.
pub const REQUEST_KEYS_MAX: usize = 100_000;

/// A request the node understands, with its fields checked.
#[derive(Debug, PartialEq)]
pub enum Request {
    Init {
        node_id: String,
    },
    Send {
        key: String,
        /// The message as compact JSON text: what the log stores.
        msg: Vec<u8>,
    },
    Poll {
        offsets: Vec<(String, u64)>,
    },
    CommitOffsets {
        offsets: Vec<(String, u64)>,
    },
    ListCommittedOffsets {
        keys: Vec<String>,
    },
}

/// Who a request came from, so it can be answered.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyTo {
    /// The sender, which becomes the reply's `dest`.
    pub src: String,
    /// This node's id as the sender addressed it, the reply's `src`.
    pub dest: String,
    pub msg_id: u64,
}

/// Why a line could not be turned into a [`Request`].
#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// Not even the sender and `msg_id` could be read: nobody to answer.
    Unanswerable(String),
    /// The request is identified but wrong: answer with this code and text.
    Rejected {
        to: ReplyTo,
        code: u32,
        text: String,
    },
}

/// Parses one line of stdin.
pub fn parse_line(line: &[u8]) -> Result<(ReplyTo, Request), ParseError> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| ParseError::Unanswerable(format!("not JSON: {e}")))?;
    let envelope = value
        .as_object()
        .ok_or_else(|| ParseError::Unanswerable("not a JSON object".into()))?;
    let src = envelope.get("src").and_then(Value::as_str);
    let dest = envelope.get("dest").and_then(Value::as_str);
    let body = envelope.get("body").and_then(Value::as_object);
    let msg_id = body.and_then(|b| b.get("msg_id")).and_then(Value::as_u64);
    let (Some(src), Some(body), Some(msg_id)) = (src, body, msg_id) else {
        return Err(ParseError::Unanswerable(
            "no src, body or msg_id: cannot tell whom to answer".into(),
        ));
    };
    let to = ReplyTo {
        src: src.to_string(),
        dest: dest.unwrap_or_default().to_string(),
        msg_id,
    };
    let reject = |code: u32, text: String| ParseError::Rejected {
        to: to.clone(),
        code,
        text,
    };
    let malformed = |text: String| reject(code::MALFORMED_REQUEST, text);
    let Some(kind) = body.get("type").and_then(Value::as_str) else {
        return Err(malformed("body has no string `type`".into()));
    };
    let request = match kind {
        "init" => Request::Init {
            node_id: string_field(body, "node_id").map_err(malformed)?,
        },
        "send" => {
            let key = key_field(body, "key").map_err(malformed)?;
            let msg = body
                .get("msg")
                .ok_or_else(|| malformed("send has no `msg`".into()))?;
            let msg = serde_json::to_vec(msg).map_err(|e| malformed(format!("msg: {e}")))?;
            if msg.len() > MESSAGE_BYTES_MAX {
                return Err(malformed(format!(
                    "msg is {} bytes of JSON, more than the maximum of {MESSAGE_BYTES_MAX}",
                    msg.len()
                )));
            }
            Request::Send { key, msg }
        }
        "poll" => Request::Poll {
            // A negative offset asks for the first existing offset at or after it: 0.
            offsets: offsets_field(body, |n| Some(n.as_i64()?.max(0) as u64)).map_err(malformed)?,
        },
        "commit_offsets" => Request::CommitOffsets {
            offsets: offsets_field(body, Value::as_u64).map_err(malformed)?,
        },
        "list_committed_offsets" => {
            let keys = body
                .get("keys")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("`keys` must be an array of strings".into()))?;
            if keys.len() > REQUEST_KEYS_MAX {
                return Err(malformed(format!(
                    "{} keys, more than the maximum of {REQUEST_KEYS_MAX}",
                    keys.len()
                )));
            }
            let keys = keys
                .iter()
                .map(|key| match key.as_str() {
                    Some(key) => check_key(key),
                    None => Err("`keys` must be an array of strings".into()),
                })
                .collect::<Result<_, _>>()
                .map_err(malformed)?;
            Request::ListCommittedOffsets { keys }
        }
        other => {
            return Err(reject(
                code::NOT_SUPPORTED,
                format!("unknown request type {other:?}"),
            ));
        }
    };
    Ok((to, request))
}

type Object = serde_json::Map<String, Value>;

fn string_field(body: &Object, name: &str) -> Result<String, String> {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("`{name}` must be a string"))
}

fn check_key(key: &str) -> Result<String, String> {
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "key is {} bytes, more than the maximum of {KEY_BYTES_MAX}",
            key.len()
        ));
    }
    Ok(key.to_string())
}

fn key_field(body: &Object, name: &str) -> Result<String, String> {
    check_key(&string_field(body, name)?)
}

/// Reads an `offsets` object of key to offset, converting each offset with
/// `offset` (which returns `None` for a value it does not accept).
fn offsets_field(
    body: &Object,
    offset: impl Fn(&Value) -> Option<u64>,
) -> Result<Vec<(String, u64)>, String> {
    let map = body
        .get("offsets")
        .and_then(Value::as_object)
        .ok_or("`offsets` must be an object of key to offset")?;
    if map.len() > REQUEST_KEYS_MAX {
        return Err(format!(
            "{} keys, more than the maximum of {REQUEST_KEYS_MAX}",
            map.len()
        ));
    }
    map.iter()
        .map(|(key, value)| {
            let key = check_key(key)?;
            let value = offset(value)
                .ok_or_else(|| format!("offset of {key:?} must be a non-negative integer"))?;
            Ok((key, value))
        })
        .collect()
}

/// The body of a reply.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyBody<'a> {
    InitOk {
        in_reply_to: u64,
    },
    SendOk {
        in_reply_to: u64,
        offset: u64,
    },
    PollOk {
        in_reply_to: u64,
        /// `{key: [[offset, msg], ...]}`, built as JSON text by the node.
        msgs: &'a RawValue,
    },
    CommitOffsetsOk {
        in_reply_to: u64,
    },
    ListCommittedOffsetsOk {
        in_reply_to: u64,
        offsets: BTreeMap<&'a str, u64>,
    },
    Error {
        in_reply_to: u64,
        code: u32,
        text: &'a str,
    },
}

#[derive(Serialize)]
struct Envelope<'a> {
    src: &'a str,
    dest: &'a str,
    body: &'a ReplyBody<'a>,
}

/// Encodes a reply to `to` as one line of JSON, newline included.
pub fn encode_reply(to: &ReplyTo, body: &ReplyBody<'_>) -> Vec<u8> {
    let envelope = Envelope {
        src: &to.dest,
        dest: &to.src,
        body,
    };
    let mut line = serde_json::to_vec(&envelope).expect("replies always serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(ReplyTo, Request), ParseError> {
        parse_line(text.as_bytes())
    }

    #[test]
    fn send_keeps_the_message_as_json_text() {
        let (to, request) =
            parse(r#"{"src":"c1","dest":"n0","body":{"type":"send","msg_id":3,"key":"k","msg":{"a": [1, 2]}}}"#)
                .expect("valid send");
        assert_eq!(to.msg_id, 3);
        assert_eq!(
            request,
            Request::Send {
                key: "k".into(),
                msg: br#"{"a":[1,2]}"#.to_vec()
            }
        );
    }

    #[test]
    fn bad_requests_are_rejected_with_the_right_code() {
        let cases = [
            (
                r#"{"src":"c1","body":{"msg_id":1}}"#,
                code::MALFORMED_REQUEST,
            ),
            (
                r#"{"src":"c1","body":{"type":"nope","msg_id":1}}"#,
                code::NOT_SUPPORTED,
            ),
            (
                r#"{"src":"c1","body":{"type":"send","msg_id":1,"key":5,"msg":1}}"#,
                code::MALFORMED_REQUEST,
            ),
            (
                r#"{"src":"c1","body":{"type":"send","msg_id":1,"key":"k"}}"#,
                code::MALFORMED_REQUEST,
            ),
            (
                r#"{"src":"c1","body":{"type":"poll","msg_id":1,"offsets":{"k":"x"}}}"#,
                code::MALFORMED_REQUEST,
            ),
            (
                r#"{"src":"c1","body":{"type":"commit_offsets","msg_id":1,"offsets":{"k":-1}}}"#,
                code::MALFORMED_REQUEST,
            ),
            (
                r#"{"src":"c1","body":{"type":"list_committed_offsets","msg_id":1,"keys":[1]}}"#,
                code::MALFORMED_REQUEST,
            ),
        ];
        for (line, expected) in cases {
            match parse(line) {
                Err(ParseError::Rejected { code, .. }) => assert_eq!(code, expected, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn unidentifiable_lines_are_unanswerable() {
        for line in ["", "{", "[1]", r#"{"body":{"type":"send"}}"#] {
            assert!(
                matches!(parse(line), Err(ParseError::Unanswerable(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn replies_swap_source_and_destination() {
        let to = ReplyTo {
            src: "c1".into(),
            dest: "n0".into(),
            msg_id: 9,
        };
        let line = encode_reply(
            &to,
            &ReplyBody::SendOk {
                in_reply_to: 9,
                offset: 4,
            },
        );
        assert_eq!(
            String::from_utf8(line).expect("utf-8"),
            "{\"src\":\"n0\",\"dest\":\"c1\",\"body\":{\"type\":\"send_ok\",\"in_reply_to\":9,\"offset\":4}}\n"
        );
    }
}
