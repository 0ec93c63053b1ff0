//! The client side of the kafka RPCs: request bodies out, reply bodies in.
//!
//! Decoding is strict on purpose. Maelstrom's schemas are closed maps and its kafka checker throws
//! on an empty list in `poll_ok`, so anything the real bench would choke on becomes
//! [`Outcome::Malformed`] here rather than passing quietly.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::history::{Outcome, Record, Request, Response};

/// Error codes that do not promise the request had no effect: 0 timeout and 13 crash.
const INDEFINITE_CODES: [u64; 2] = [0, 13];

/// Custom error codes start here and are all indefinite.
const CUSTOM_CODE_MIN: u64 = 1000;

/// Body fields every reply may carry besides its own.
const ENVELOPE_FIELDS: [&str; 3] = ["type", "msg_id", "in_reply_to"];

/// The request body for `request`, without `msg_id` (the connection adds it).
pub fn request_body(request: &Request) -> Value {
    match request {
        Request::Send { key, value } => json!({"type": "send", "key": key, "msg": value}),
        Request::Poll { offsets } => json!({"type": "poll", "offsets": offsets}),
        Request::Commit { offsets } => json!({"type": "commit_offsets", "offsets": offsets}),
        Request::List { keys } => json!({"type": "list_committed_offsets", "keys": keys}),
    }
}

/// Whether an error code leaves the request's effect unknown.
pub fn is_indefinite(code: u64) -> bool {
    INDEFINITE_CODES.contains(&code) || code >= CUSTOM_CODE_MIN
}

/// Classifies the reply `body` to `request`.
pub fn decode_reply(request: &Request, body: &Value) -> Outcome {
    match decode(request, body) {
        Ok(outcome) => outcome,
        Err(reason) => Outcome::Malformed {
            reason: format!("{reason}; reply body {body}"),
        },
    }
}

fn decode(request: &Request, body: &Value) -> Result<Outcome, String> {
    let fields = body.as_object().ok_or("body is not an object")?;
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .ok_or("body has no string `type`")?;
    if kind == "error" {
        return decode_error(fields);
    }
    let response = match request {
        Request::Send { .. } => {
            expect_shape(fields, kind, "send_ok", &["offset"])?;
            Response::Send {
                offset: u64_field(fields, "offset")?,
            }
        }
        Request::Poll { offsets } => {
            expect_shape(fields, kind, "poll_ok", &["msgs"])?;
            Response::Poll {
                msgs: decode_msgs(fields.get("msgs"), offsets)?,
            }
        }
        Request::Commit { .. } => {
            expect_shape(fields, kind, "commit_offsets_ok", &[])?;
            Response::Commit
        }
        Request::List { keys } => {
            expect_shape(fields, kind, "list_committed_offsets_ok", &["offsets"])?;
            Response::List {
                offsets: decode_offsets(fields.get("offsets"), keys)?,
            }
        }
    };
    Ok(Outcome::Ok { response })
}

fn decode_error(fields: &Map<String, Value>) -> Result<Outcome, String> {
    let code = u64_field(fields, "code")?;
    let text = fields
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if is_indefinite(code) {
        Ok(Outcome::Unknown {
            reason: format!("indefinite error {code}: {text}"),
        })
    } else {
        Ok(Outcome::Fail { code, text })
    }
}

/// Checks the reply type and that the body has exactly the envelope plus `own` fields.
fn expect_shape(
    fields: &Map<String, Value>,
    kind: &str,
    expected: &str,
    own: &[&str],
) -> Result<(), String> {
    if kind != expected {
        return Err(format!("expected type {expected}, got {kind}"));
    }
    if let Some(extra) = fields
        .keys()
        .find(|name| !ENVELOPE_FIELDS.contains(&name.as_str()) && !own.contains(&name.as_str()))
    {
        return Err(format!("unexpected field `{extra}` in {kind}"));
    }
    Ok(())
}

fn u64_field(fields: &Map<String, Value>, name: &str) -> Result<u64, String> {
    fields
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("field `{name}` is not a non-negative integer"))
}

/// Decodes `poll_ok.msgs`: only asked-for keys, each with a non-empty list of `[offset, msg]`.
fn decode_msgs(
    msgs: Option<&Value>,
    asked: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, Vec<Record>>, String> {
    let msgs = msgs
        .and_then(Value::as_object)
        .ok_or("`msgs` is not an object")?;
    let mut decoded = BTreeMap::new();
    for (key, records) in msgs {
        if !asked.contains_key(key) {
            return Err(format!("poll returned key {key:?} that was not asked for"));
        }
        let records = records
            .as_array()
            .ok_or_else(|| format!("msgs[{key:?}] is not a list"))?;
        if records.is_empty() {
            return Err(format!(
                "msgs[{key:?}] is an empty list; a key with nothing must be left out"
            ));
        }
        let records = records
            .iter()
            .map(|pair| decode_record(key, pair))
            .collect::<Result<Vec<_>, _>>()?;
        decoded.insert(key.clone(), records);
    }
    Ok(decoded)
}

fn decode_record(key: &str, pair: &Value) -> Result<Record, String> {
    match pair.as_array().map(Vec::as_slice) {
        Some([offset, msg]) => match (offset.as_u64(), msg.as_u64()) {
            (Some(offset), Some(msg)) => Ok((offset, msg)),
            _ => Err(format!(
                "record {pair} of {key:?} is not [offset, integer msg]"
            )),
        },
        _ => Err(format!("record {pair} of {key:?} is not a pair")),
    }
}

/// Decodes `list_committed_offsets_ok.offsets`: only asked-for keys, each a non-negative integer.
fn decode_offsets(
    offsets: Option<&Value>,
    asked: &[String],
) -> Result<BTreeMap<String, u64>, String> {
    let offsets = offsets
        .and_then(Value::as_object)
        .ok_or("`offsets` is not an object")?;
    let mut decoded = BTreeMap::new();
    for (key, offset) in offsets {
        if !asked.contains(key) {
            return Err(format!(
                "list_committed_offsets returned key {key:?} that was not asked for"
            ));
        }
        let offset = offset
            .as_u64()
            .ok_or_else(|| format!("committed offset {offset} of {key:?} is not an integer"))?;
        decoded.insert(key.clone(), offset);
    }
    Ok(decoded)
}
