//! Records as the HTTP front end stores and serves them.
//!
//! A record is a value (any JSON), an optional key (any JSON) and a
//! timestamp (milliseconds since the Unix epoch: the client's, or the time
//! the server received it). The store's payload is the compact JSON object
//! `{"timestamp":T,"key":K,"value":V}`, in that order, with `"key":null`
//! when there is none. A fetch serves each record as
//! `{"topic":..,"partition":..,"offset":..,` followed by the stored object
//! without its opening brace, so records go out without being parsed.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A record as a produce request gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordIn<'a> {
    #[serde(default, borrow)]
    pub key: Option<&'a RawValue>,
    #[serde(borrow)]
    pub value: &'a RawValue,
    #[serde(default)]
    pub partition: Option<u32>,
    #[serde(default)]
    pub timestamp: Option<u64>,
}

/// Encodes the stored payload of a record.
pub fn encode(key: Option<&RawValue>, value: &RawValue, timestamp: u64) -> Vec<u8> {
    let key = key.map_or("null", RawValue::get);
    let value = value.get();
    let mut out = Vec::with_capacity(40 + key.len() + value.len());
    out.extend_from_slice(b"{\"timestamp\":");
    out.extend_from_slice(timestamp.to_string().as_bytes());
    out.extend_from_slice(b",\"key\":");
    push_compact(&mut out, key);
    out.extend_from_slice(b",\"value\":");
    push_compact(&mut out, value);
    out.push(b'}');
    out
}

/// Appends `json`, which is valid JSON text, without the whitespace between
/// its tokens. Whitespace inside strings is kept: a string starts and ends
/// at an unescaped `"`.
pub fn push_compact(out: &mut Vec<u8>, json: &str) {
    let bytes = json.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        out.extend_from_slice(bytes);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
        }
    }
}

/// The partition a keyed record goes to: FNV-1a (64-bit) of the key's
/// compact JSON text, modulo the partition count. Stable across versions
/// and machines, so a key's records stay in one partition, in order.
pub fn partition_for_key(key: &RawValue, partitions: u32) -> u32 {
    let mut compact = Vec::with_capacity(key.get().len());
    push_compact(&mut compact, key.get());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &compact {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// Appends one fetched record to `out` as a JSON object. `topic` is a valid
/// topic name, which needs no escaping. A Kafka record payload goes out as
/// [`crate::broker::payload::push_http_fields`] has it; a payload that is not a JSON
/// object of at least one member (nothing this front end writes) is served
/// whole as the value.
pub fn push_fetched(out: &mut Vec<u8>, topic: &str, partition: u32, offset: u64, payload: &[u8]) {
    out.extend_from_slice(b"{\"topic\":\"");
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(b"\",\"partition\":");
    out.extend_from_slice(partition.to_string().as_bytes());
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(offset.to_string().as_bytes());
    if crate::broker::payload::is_kafka(payload) {
        // Written by the Kafka front end: binary fields, decoded.
        crate::broker::payload::push_http_fields(out, payload);
    } else if payload.len() > 2 && payload.starts_with(b"{\"") && payload.ends_with(b"}") {
        out.push(b',');
        out.extend_from_slice(&payload[1..]);
    } else {
        out.extend_from_slice(b",\"timestamp\":null,\"key\":null,\"value\":");
        out.extend_from_slice(payload);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).expect("valid JSON")
    }

    #[test]
    fn whitespace_between_tokens_goes_and_inside_strings_stays() {
        let mut out = Vec::new();
        push_compact(
            &mut out,
            " { \"a b\" : [ 1 , \"x\\\" y\" ] ,\n\"c\":\t{} } ",
        );
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{"a b":[1,"x\" y"],"c":{}}"#
        );
    }

    #[test]
    fn a_fetched_record_is_valid_json_with_every_field() {
        let payload = encode(Some(&raw("\"k 1\"")), &raw("{ \"n\": 1 }"), 1700);
        let mut out = Vec::new();
        push_fetched(&mut out, "orders", 3, 42, &payload);
        let record: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            record,
            serde_json::json!({"topic":"orders","partition":3,"offset":42,
                "timestamp":1700,"key":"k 1","value":{"n":1}})
        );
        let mut other = Vec::new();
        push_fetched(&mut other, "t", 0, 1, b"[1]");
        let record: serde_json::Value = serde_json::from_slice(&other).expect("JSON");
        assert_eq!(record["value"], serde_json::json!([1]));
    }

    #[test]
    fn a_key_goes_to_the_same_partition_however_it_is_spaced() {
        let a = partition_for_key(&raw("{\"user\":7}"), 100);
        let b = partition_for_key(&raw("{ \"user\" : 7 }"), 100);
        assert_eq!(a, b);
        assert!(a < 100);
        // Pinned (computed independently in Python): changing the hash
        // would move every key's records.
        assert_eq!(partition_for_key(&raw("\"alice\""), 100), 99);
    }
}
