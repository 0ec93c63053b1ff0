//! Fields of a JSON message body, decoded and checked against their
//! limits: what client requests ([`super::protocol`]) and node-to-node
//! messages ([`super::peer`]) are made of. An error is the sentence the
//! node answers a malformed request with.

use serde_json::Value;

use crate::storage::format::MESSAGE_BYTES_MAX;
use crate::storage::keyname::KEY_BYTES_MAX;

/// Keys one poll, commit or list request may name. The workload keeps about
/// ten keys active per client and the final read names every key it knows,
/// a few thousand in a long run; 100,000 bounds the work one line can ask for.
pub const REQUEST_KEYS_MAX: usize = 100_000;

/// A message body: a JSON object.
pub type Object = serde_json::Map<String, Value>;

pub fn string_field(body: &Object, name: &str) -> Result<String, String> {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("`{name}` must be a string"))
}

pub fn u64_field(body: &Object, name: &str) -> Result<u64, String> {
    body.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("`{name}` must be a non-negative integer"))
}

/// An array of at most [`REQUEST_KEYS_MAX`] strings.
pub fn string_list_field(body: &Object, name: &str) -> Result<Vec<String>, String> {
    let list = body
        .get(name)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("`{name}` must be an array of strings"))?;
    if list.len() > REQUEST_KEYS_MAX {
        return Err(format!(
            "{} entries in `{name}`, more than the maximum of {REQUEST_KEYS_MAX}",
            list.len()
        ));
    }
    list.iter()
        .map(|item| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{name}` must be an array of strings"))
        })
        .collect()
}

pub fn check_key(key: &str) -> Result<(), String> {
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "key is {} bytes, more than the maximum of {KEY_BYTES_MAX}",
            key.len()
        ));
    }
    Ok(())
}

pub fn key_field(body: &Object, name: &str) -> Result<String, String> {
    let key = string_field(body, name)?;
    check_key(&key)?;
    Ok(key)
}

/// The largest message a send may carry, as compact JSON text: a send
/// travels inside a Raft log entry, itself one record of the store (at
/// most [`MESSAGE_BYTES_MAX`]) in which the message is a JSON string, so
/// escaped (at worst twice as long) among the entry's other fields.
/// A sixteenth of the record limit (64 KiB) keeps a proposal of one such
/// send within `server::PROPOSAL_BYTES_MAX`, and an AppendEntries of
/// `ENTRIES_PER_APPEND_MAX` entries within a node's line limit.
pub const SEND_MSG_BYTES_MAX: usize = MESSAGE_BYTES_MAX / 16;

/// A message as compact JSON text, within [`SEND_MSG_BYTES_MAX`].
pub fn message_text(msg: &Value) -> Result<Vec<u8>, String> {
    let text = serde_json::to_vec(msg).map_err(|e| format!("msg: {e}"))?;
    if text.len() > SEND_MSG_BYTES_MAX {
        return Err(format!(
            "msg is {} bytes of JSON, more than the maximum of {SEND_MSG_BYTES_MAX}",
            text.len()
        ));
    }
    Ok(text)
}

pub fn message_field(body: &Object, name: &str) -> Result<Vec<u8>, String> {
    message_text(body.get(name).ok_or_else(|| format!("no `{name}`"))?)
}

/// Reads an object of key to offset (a non-negative integer), with at most
/// [`REQUEST_KEYS_MAX`] keys. A negative offset is refused: no log has one,
/// and reading it as 0 would hide a client's bug.
pub fn key_offsets(value: Option<&Value>, name: &str) -> Result<Vec<(String, u64)>, String> {
    let map = value
        .and_then(Value::as_object)
        .ok_or_else(|| format!("`{name}` must be an object of key to offset"))?;
    if map.len() > REQUEST_KEYS_MAX {
        return Err(format!(
            "{} keys, more than the maximum of {REQUEST_KEYS_MAX}",
            map.len()
        ));
    }
    map.iter()
        .map(|(key, value)| {
            check_key(key)?;
            let value = value
                .as_u64()
                .ok_or_else(|| format!("offset of {key:?} must be a non-negative integer"))?;
            Ok((key.clone(), value))
        })
        .collect()
}

pub fn offsets_field(body: &Object) -> Result<Vec<(String, u64)>, String> {
    key_offsets(body.get("offsets"), "offsets")
}
