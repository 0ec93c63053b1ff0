//! Maelstrom's envelope and the client side of the kafka workload: the
//! requests seglog understands, and the replies it writes. Parsing checks
//! every field so that a bad request is answered with an error and never
//! half-applied. Node-to-node bodies are parsed and built in `peer.rs`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::fields::{
    check_key, key_field, message_field, offsets_field, string_field, string_list_field,
};
use super::peer::{self, PeerReply, PeerRequest};

/// Maelstrom error codes used by the node (see `maelstrom.md`).
pub mod code {
    /// Indefinite: the request timed out; it may or may not have taken effect.
    pub const TIMEOUT: u32 = 0;
    /// Indefinite: the request may or may not have taken effect.
    pub const CRASH: u32 = 13;
    /// Definite: the request type is unknown.
    pub const NOT_SUPPORTED: u32 = 10;
    /// Definite: the node cannot serve the request now (not initialised,
    /// store poisoned, disk full, owner unreachable); nothing was changed.
    pub const TEMPORARILY_UNAVAILABLE: u32 = 11;
    /// Definite: the request is malformed; nothing was changed.
    pub const MALFORMED_REQUEST: u32 = 12;

    /// Whether an error with this code promises the request had no effect.
    pub fn is_definite(code: u32) -> bool {
        !matches!(code, TIMEOUT | CRASH) && code < 1000
    }
}

/// A request the node understands, with its fields checked.
#[derive(Debug, PartialEq)]
pub enum Request {
    Init {
        node_id: String,
        /// Every node of the cluster, this one included, as Maelstrom sent them.
        node_ids: Vec<String>,
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
    /// seglog's own, not Maelstrom's: the Raft groups and the leader of
    /// each as this node knows it (for tests and people; `cluster.md`).
    Topology,
    /// A request from another node of the cluster.
    Peer(PeerRequest),
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

/// One line of input, decoded.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A request to answer: from a client, or from a peer node.
    Request { to: ReplyTo, request: Request },
    /// A peer's reply to a request this node sent.
    Reply {
        src: String,
        in_reply_to: u64,
        reply: PeerReply,
    },
}

/// Why a line could not be turned into an [`Incoming`].
#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// Not even the sender and `msg_id` could be read, or a reply could not
    /// be understood: nobody to answer.
    Unanswerable(String),
    /// The request is identified but wrong: answer with this code and text.
    Rejected {
        to: ReplyTo,
        code: u32,
        text: String,
    },
}

/// Parses one line of input.
pub fn parse_line(line: &[u8]) -> Result<Incoming, ParseError> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| ParseError::Unanswerable(format!("not JSON: {e}")))?;
    let envelope = value
        .as_object()
        .ok_or_else(|| ParseError::Unanswerable("not a JSON object".into()))?;
    let src = envelope.get("src").and_then(Value::as_str);
    let dest = envelope.get("dest").and_then(Value::as_str);
    let body = envelope.get("body").and_then(Value::as_object);
    let (Some(src), Some(body)) = (src, body) else {
        return Err(ParseError::Unanswerable(
            "no src or body: cannot tell who sent it".into(),
        ));
    };
    if let Some(in_reply_to) = body.get("in_reply_to") {
        let in_reply_to = in_reply_to
            .as_u64()
            .ok_or_else(|| ParseError::Unanswerable("in_reply_to is not a number".into()))?;
        let reply = peer::parse_reply(body).map_err(|why| {
            ParseError::Unanswerable(format!("reply from {src} to {in_reply_to}: {why}"))
        })?;
        return Ok(Incoming::Reply {
            src: src.to_string(),
            in_reply_to,
            reply,
        });
    }
    let Some(msg_id) = body.get("msg_id").and_then(Value::as_u64) else {
        return Err(ParseError::Unanswerable(
            "no msg_id: cannot tell what to answer".into(),
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
            node_ids: string_list_field(body, "node_ids").map_err(malformed)?,
        },
        "send" => Request::Send {
            key: key_field(body, "key").map_err(malformed)?,
            msg: message_field(body, "msg").map_err(malformed)?,
        },
        "poll" => Request::Poll {
            offsets: offsets_field(body).map_err(malformed)?,
        },
        "commit_offsets" => Request::CommitOffsets {
            offsets: offsets_field(body).map_err(malformed)?,
        },
        "list_committed_offsets" => {
            let keys = string_list_field(body, "keys").map_err(malformed)?;
            for key in &keys {
                check_key(key).map_err(malformed)?;
            }
            Request::ListCommittedOffsets { keys }
        }
        "topology" => Request::Topology,
        other => match peer::parse_request(other, body) {
            Some(parsed) => Request::Peer(parsed.map_err(malformed)?),
            None => {
                return Err(reject(
                    code::NOT_SUPPORTED,
                    format!("unknown request type {other:?}"),
                ));
            }
        },
    };
    Ok(Incoming::Request { to, request })
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
    TopologyOk {
        in_reply_to: u64,
        /// Group `g`'s leader at index `g`, `null` where none is known.
        leaders: Vec<Option<&'a str>>,
        /// Whether this node votes in each group (false while it rejoins
        /// after losing its disk).
        votes: Vec<bool>,
    },
    Error {
        in_reply_to: u64,
        code: u32,
        text: &'a str,
    },
}

#[derive(Serialize)]
struct Envelope<'a, B> {
    src: &'a str,
    dest: &'a str,
    body: B,
}

/// Encodes a message from `src` to `dest` as one line of JSON, newline included.
pub fn encode<B: Serialize>(src: &str, dest: &str, body: B) -> Vec<u8> {
    let envelope = Envelope { src, dest, body };
    let mut line = serde_json::to_vec(&envelope).expect("messages always serialize");
    line.push(b'\n');
    line
}

/// Encodes a reply to `to` as one line of JSON, newline included.
pub fn encode_reply(to: &ReplyTo, body: &ReplyBody<'_>) -> Vec<u8> {
    encode(&to.dest, &to.src, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Incoming, ParseError> {
        parse_line(text.as_bytes())
    }

    fn request(text: &str) -> (ReplyTo, Request) {
        match parse(text) {
            Ok(Incoming::Request { to, request }) => (to, request),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn send_keeps_the_message_as_json_text() {
        let (to, request) = request(
            r#"{"src":"c1","dest":"n0","body":{"type":"send","msg_id":3,"key":"k","msg":{"a": [1, 2]}}}"#,
        );
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
    fn init_carries_every_node_id() {
        let (_, request) = request(
            r#"{"src":"c0","dest":"n1","body":{"type":"init","msg_id":1,"node_id":"n1","node_ids":["n0","n1"]}}"#,
        );
        assert_eq!(
            request,
            Request::Init {
                node_id: "n1".into(),
                node_ids: vec!["n0".into(), "n1".into()]
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
                r#"{"src":"c1","body":{"type":"init","msg_id":1,"node_id":"n0"}}"#,
                code::MALFORMED_REQUEST,
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
                r#"{"src":"c1","body":{"type":"poll","msg_id":1,"offsets":{"k":-1}}}"#,
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
            (
                r#"{"src":"n1","body":{"type":"batch","msg_id":1,"forwards":[{"group":0}]}}"#,
                code::MALFORMED_REQUEST,
            ),
            (
                r#"{"src":"n1","body":{"type":"forward","msg_id":1,"sends":[["k"]]}}"#,
                code::NOT_SUPPORTED,
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
        for line in [
            "",
            "{",
            "[1]",
            r#"{"body":{"type":"send"}}"#,
            r#"{"src":"c1","body":{"type":"send"}}"#,
            r#"{"src":"n1","body":{"type":"forward_ok","in_reply_to":-4}}"#,
            r#"{"src":"n1","body":{"type":"what_ok","in_reply_to":4}}"#,
        ] {
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

    #[test]
    fn definite_codes_are_those_maelstrom_names() {
        for definite in [1, 10, 11, 12, 14, 20, 21, 22, 30] {
            assert!(code::is_definite(definite), "{definite}");
        }
        for indefinite in [0, 13, 1000, 5000] {
            assert!(!code::is_definite(indefinite), "{indefinite}");
        }
    }
}
