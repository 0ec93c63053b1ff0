//! Record payloads: what the bytes a front end stores in a log mean.
//!
//! The store reads nothing of a payload but its timestamp, for the time
//! index (`storage/timestamp.rs`, re-exported here as [`timestamp_of`]). Two
//! encodings exist, told apart by the first byte (`segment-format.md`, "Record payloads"):
//! - **JSON text**, written by the Maelstrom node (a message) and the HTTP
//!   front end (`{"timestamp":T,"key":K,"value":V}`). JSON text starts with
//!   whitespace or a value's first character, never a byte below 0x09.
//! - **A Kafka record** ([`KAFKA_RECORD_TAG`]), written by the Kafka front
//!   end: a timestamp, a key and a value of any bytes (each nullable) and
//!   headers, kept exactly.
//!
//! Both front ends read both: [`as_kafka`] gives any payload as a Kafka
//! record, [`push_http_fields`] any payload as the HTTP front end's JSON.

use serde::Deserialize;
use serde_json::value::RawValue;

pub use crate::storage::timestamp::{
    KAFKA_KEY_OFFSET, KAFKA_PREFIX_BYTES, KAFKA_RECORD_TAG, KAFKA_RECORD_VERSION,
    KAFKA_TIMESTAMP_OFFSET, timestamp_of,
};

/// The length field of a null key, value or header value.
pub const NULL_LENGTH: u32 = u32::MAX;

/// A Kafka record's fields, borrowed from wherever they are.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KafkaRecord<'a> {
    /// Milliseconds since the Unix epoch (-1: none, as Kafka has it).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Names and values; a name is UTF-8 in Kafka but kept as bytes here.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Bytes a Kafka record takes as a payload.
pub fn kafka_encoded_len(record: &KafkaRecord<'_>) -> usize {
    let field = |f: Option<&[u8]>| 4 + f.map_or(0, <[u8]>::len);
    KAFKA_KEY_OFFSET
        + field(record.key)
        + field(record.value)
        + 4
        + record
            .headers
            .iter()
            .map(|(name, value)| 4 + name.len() + field(*value))
            .sum::<usize>()
}

/// Appends the payload of a Kafka record to `out`. Every length fits in a
/// u32: the caller bounds records far below 4 GiB (the store's record limit).
pub fn encode_kafka(out: &mut Vec<u8>, record: &KafkaRecord<'_>) {
    fn push_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
        match field {
            None => out.extend_from_slice(&NULL_LENGTH.to_le_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&len_u32(bytes.len()).to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    out.reserve(kafka_encoded_len(record));
    out.push(KAFKA_RECORD_TAG);
    out.push(KAFKA_RECORD_VERSION);
    out.extend_from_slice(&record.timestamp.to_le_bytes());
    push_field(out, record.key);
    push_field(out, record.value);
    out.extend_from_slice(&len_u32(record.headers.len()).to_le_bytes());
    for (name, value) in &record.headers {
        push_field(out, Some(name));
        push_field(out, *value);
    }
}

fn len_u32(len: usize) -> u32 {
    // Lengths below NULL_LENGTH only: a record is at most the store's
    // limit of 1 MiB, checked before encoding.
    assert!(len < NULL_LENGTH as usize, "a field of {len} bytes");
    len as u32
}

/// Why a Kafka record payload does not decode.
#[derive(Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// The version byte is not one this seglog reads.
    Version(u8),
    /// The bytes end inside the field named, which starts at `position`.
    Truncated {
        field: &'static str,
        position: usize,
    },
    /// Bytes follow the last header.
    Trailing { position: usize },
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::Version(v) => write!(
                f,
                "Kafka record version {v}; this seglog reads {KAFKA_RECORD_VERSION}"
            ),
            PayloadError::Truncated { field, position } => {
                write!(f, "the payload ends inside the {field} at byte {position}")
            }
            PayloadError::Trailing { position } => {
                write!(f, "bytes follow the last header, from byte {position}")
            }
        }
    }
}

/// Reads fields off a payload, front to back.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PayloadError> {
        let truncated = PayloadError::Truncated {
            field,
            position: self.position,
        };
        let end = self.position.checked_add(n).ok_or(truncated)?;
        let taken = self
            .bytes
            .get(self.position..end)
            .ok_or(PayloadError::Truncated {
                field,
                position: self.position,
            })?;
        self.position = end;
        Ok(taken)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PayloadError> {
        let bytes = self.take(4, field)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn field(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, PayloadError> {
        match self.u32(field)? {
            NULL_LENGTH => Ok(None),
            len => self.take(len as usize, field).map(Some),
        }
    }
}

/// Decodes a payload that starts with [`KAFKA_RECORD_TAG`].
pub fn decode_kafka(payload: &[u8]) -> Result<KafkaRecord<'_>, PayloadError> {
    let mut reader = Reader {
        bytes: payload,
        position: 0,
    };
    let prefix = reader.take(KAFKA_PREFIX_BYTES, "tag and version")?;
    if prefix[1] != KAFKA_RECORD_VERSION {
        return Err(PayloadError::Version(prefix[1]));
    }
    let ts = reader.take(8, "timestamp")?;
    let timestamp = i64::from_le_bytes([ts[0], ts[1], ts[2], ts[3], ts[4], ts[5], ts[6], ts[7]]);
    let key = reader.field("key")?;
    let value = reader.field("value")?;
    let count = reader.u32("header count")?;
    // Each header takes at least 8 bytes: a count past what remains is
    // refused before anything is allocated for it.
    let remaining = payload.len() - reader.position;
    if count as usize > remaining / 8 {
        return Err(PayloadError::Truncated {
            field: "headers",
            position: reader.position,
        });
    }
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name = reader
            .field("header name")?
            .ok_or(PayloadError::Truncated {
                field: "header name (null)",
                position: reader.position,
            })?;
        headers.push((name, reader.field("header value")?));
    }
    if reader.position != payload.len() {
        return Err(PayloadError::Trailing {
            position: reader.position,
        });
    }
    Ok(KafkaRecord {
        timestamp,
        key,
        value,
        headers,
    })
}

/// Whether a payload is a Kafka record (else JSON text, or anything an
/// older writer stored).
pub fn is_kafka(payload: &[u8]) -> bool {
    payload.first() == Some(&KAFKA_RECORD_TAG)
}

/// The HTTP front end's stored object, borrowed.
#[derive(Deserialize)]
struct HttpRecord<'a> {
    timestamp: Option<i64>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    value: &'a RawValue,
}

/// Any payload as a Kafka record: a Kafka payload as written; the HTTP
/// front end's JSON object as its timestamp and the JSON text of its key
/// (null for `null`) and value; anything else as a value of its bytes with
/// no timestamp. `Err` only for a Kafka payload that does not decode.
pub fn as_kafka(payload: &[u8]) -> Result<KafkaRecord<'_>, PayloadError> {
    if is_kafka(payload) {
        return decode_kafka(payload);
    }
    if let Ok(record) = serde_json::from_slice::<HttpRecord>(payload) {
        return Ok(KafkaRecord {
            timestamp: record.timestamp.unwrap_or(-1),
            key: record
                .key
                .map(|k| k.get().as_bytes())
                .filter(|k| *k != b"null"),
            value: Some(record.value.get().as_bytes()),
            headers: Vec::new(),
        });
    }
    Ok(KafkaRecord {
        timestamp: -1,
        key: None,
        value: Some(payload),
        headers: Vec::new(),
    })
}

/// Appends, for the HTTP front end, the fields of a Kafka record payload
/// after `"offset":N`: `,"timestamp":T,"key":K,"value":V` and, when it has
/// headers, `,"headers":[{"key":NAME,"value_base64":B}]`. A key or value
/// that is JSON text goes out as that JSON; other bytes as `null` with
/// `"key_base64"` / `"value_base64"` beside it. A payload that does not
/// decode goes out as `"value":null,"value_base64":<the whole payload>`
/// and `"error"`.
pub fn push_http_fields(out: &mut Vec<u8>, payload: &[u8]) {
    let record = match decode_kafka(payload) {
        Ok(record) => record,
        Err(e) => {
            out.extend_from_slice(
                b",\"timestamp\":null,\"key\":null,\"value\":null,\"value_base64\":\"",
            );
            push_base64(out, payload);
            out.extend_from_slice(b"\",\"error\":");
            let message = serde_json::to_string(&e.to_string()).unwrap_or_default();
            out.extend_from_slice(message.as_bytes());
            out.push(b'}');
            return;
        }
    };
    out.extend_from_slice(b",\"timestamp\":");
    out.extend_from_slice(record.timestamp.to_string().as_bytes());
    push_json_or_base64(out, "key", record.key);
    push_json_or_base64(out, "value", record.value);
    if !record.headers.is_empty() {
        out.extend_from_slice(b",\"headers\":[");
        for (i, (name, value)) in record.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"key\":");
            let name = String::from_utf8_lossy(name);
            out.extend_from_slice(serde_json::to_string(&name).unwrap_or_default().as_bytes());
            out.extend_from_slice(b",\"value_base64\":");
            match value {
                None => out.extend_from_slice(b"null"),
                Some(value) => {
                    out.push(b'"');
                    push_base64(out, value);
                    out.push(b'"');
                }
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// `,"name":JSON` when `field` is JSON text, else `,"name":null` and,
/// unless the field is null, `,"name_base64":"..."`.
fn push_json_or_base64(out: &mut Vec<u8>, name: &str, field: Option<&[u8]>) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    match field {
        None => out.extend_from_slice(b"null"),
        // Valid JSON text goes out as it is, whitespace included.
        Some(bytes) if is_json_text(bytes) => out.extend_from_slice(bytes),
        Some(bytes) => {
            out.extend_from_slice(b"null,\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"_base64\":\"");
            push_base64(out, bytes);
            out.push(b'"');
        }
    }
}

/// Whether `bytes` are one JSON value (UTF-8, nothing after it).
pub fn is_json_text(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&RawValue>(bytes).is_ok()
}

/// Appends standard base64 (RFC 4648, with padding). Written out rather
/// than taken from a crate: it is these few lines, encoding only.
pub fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol = |index: u32| ALPHABET[(index & 63) as usize];
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(symbol(n >> 18));
        out.push(symbol(n >> 12));
        out.push(if chunk.len() > 1 {
            symbol(n >> 6)
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 { symbol(n) } else { b'=' });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KafkaRecord<'static> {
        KafkaRecord {
            timestamp: 1_700_000_000_123,
            key: Some(b"k\x00\xff"),
            value: None,
            headers: vec![
                (b"trace", Some(b"\x01\x02")),
                (b"empty", None),
                (b"", Some(b"")),
            ],
        }
    }

    #[test]
    fn a_timestamp_is_read_alone_as_the_whole_record_has_it() {
        let mut kafka = Vec::new();
        encode_kafka(&mut kafka, &sample());
        let mut untimed = Vec::new();
        encode_kafka(
            &mut untimed,
            &KafkaRecord {
                timestamp: -1,
                ..sample()
            },
        );
        let http: &[u8] = br#"{"timestamp":1795860000000,"key":null,"value":{"a":1}}"#;
        for (payload, want) in [
            (kafka.as_slice(), Some(1_700_000_000_123)),
            (untimed.as_slice(), None),
            (http, Some(1_795_860_000_000)),
            (br#"{"key":1,"value":2}"#.as_slice(), None),
            (br#"{"timestamp":12"#.as_slice(), None),
            (
                br#"{"timestamp":99999999999999999999,"value":1}"#.as_slice(),
                None,
            ),
            (b"\x01".as_slice(), None),
            (b"".as_slice(), None),
        ] {
            assert_eq!(timestamp_of(payload), want, "{payload:?}");
            let whole = as_kafka(payload).map_or(-1, |r| r.timestamp);
            if (0..i64::MAX).contains(&whole) {
                assert_eq!(timestamp_of(payload), Some(whole), "{payload:?}");
            }
        }
    }

    #[test]
    fn a_kafka_record_round_trips_and_its_length_is_known() {
        let record = sample();
        let mut payload = Vec::new();
        encode_kafka(&mut payload, &record);
        assert_eq!(payload.len(), kafka_encoded_len(&record));
        assert_eq!(payload[0], KAFKA_RECORD_TAG);
        assert_eq!(payload[1], KAFKA_RECORD_VERSION);
        assert_eq!(decode_kafka(&payload), Ok(record));
    }

    #[test]
    fn every_cut_and_a_trailing_byte_are_errors() {
        let mut payload = Vec::new();
        encode_kafka(&mut payload, &sample());
        for cut in 0..payload.len() {
            assert!(decode_kafka(&payload[..cut]).is_err(), "cut at {cut}");
        }
        payload.push(0);
        assert!(matches!(
            decode_kafka(&payload),
            Err(PayloadError::Trailing { .. })
        ));
        payload.pop();
        payload[1] = 2;
        assert_eq!(decode_kafka(&payload), Err(PayloadError::Version(2)));
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_panic_the_decoders(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let mut tagged = vec![KAFKA_RECORD_TAG, KAFKA_RECORD_VERSION];
            tagged.extend_from_slice(&bytes);
            let _ = decode_kafka(&tagged);
            let _ = as_kafka(&bytes);
            let mut out = Vec::new();
            push_http_fields(&mut out, &tagged);
            let mut json = b"{\"offset\":0".to_vec();
            json.extend_from_slice(&out);
            let parsed = serde_json::from_slice::<serde_json::Value>(&json);
            proptest::prop_assert!(parsed.is_ok(), "{}", String::from_utf8_lossy(&json));
        }
    }

    #[test]
    fn a_huge_header_count_is_refused_without_allocating() {
        let mut payload = vec![KAFKA_RECORD_TAG, KAFKA_RECORD_VERSION];
        payload.extend_from_slice(&0i64.to_le_bytes());
        payload.extend_from_slice(&NULL_LENGTH.to_le_bytes());
        payload.extend_from_slice(&NULL_LENGTH.to_le_bytes());
        payload.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_kafka(&payload).is_err());
    }

    #[test]
    fn http_records_read_as_kafka_records() {
        let http = br#"{"timestamp":17,"key":"bob","value":{"n":1}}"#;
        let record = as_kafka(http).expect("decodes");
        assert_eq!(record.timestamp, 17);
        assert_eq!(record.key, Some(&b"\"bob\""[..]));
        assert_eq!(record.value, Some(&b"{\"n\":1}"[..]));
        let keyless = as_kafka(br#"{"timestamp":1,"key":null,"value":2}"#).expect("decodes");
        assert_eq!(keyless.key, None);
        let other = as_kafka(b"[1,2]").expect("decodes");
        assert_eq!((other.timestamp, other.value), (-1, Some(&b"[1,2]"[..])));
    }

    #[test]
    fn kafka_records_read_as_json_with_base64_for_other_bytes() {
        let mut payload = Vec::new();
        encode_kafka(
            &mut payload,
            &KafkaRecord {
                timestamp: 5,
                key: Some(b"\"k\""),
                value: Some(b"\xff\x00a"),
                headers: vec![(b"h", Some(b"hi"))],
            },
        );
        let mut out = b"{\"offset\":0".to_vec();
        push_http_fields(&mut out, &payload);
        let json: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({"offset":0,"timestamp":5,"key":"k","value":null,
                "value_base64":"/wBh","headers":[{"key":"h","value_base64":"aGk="}]})
        );
    }

    #[test]
    fn the_spec_example_is_what_the_code_writes() {
        let spec = include_str!("../../segment-format.md");
        let hex = "01 01 05 00 00 00 00 00 00 00 01 00 00 00 6B FF FF FF FF \
                   01 00 00 00 01 00 00 00 68 01 00 00 00 78";
        assert!(spec.contains(hex), "segment-format.md lacks the example");
        let mut payload = Vec::new();
        encode_kafka(
            &mut payload,
            &KafkaRecord {
                timestamp: 5,
                key: Some(b"k"),
                value: None,
                headers: vec![(b"h", Some(b"x"))],
            },
        );
        let written: Vec<String> = payload.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(written.join(" "), hex);
        assert_eq!(
            (KAFKA_RECORD_TAG, KAFKA_RECORD_VERSION, KAFKA_KEY_OFFSET),
            (0x01, 1, 10)
        );
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            push_base64(&mut out, plain.as_bytes());
            assert_eq!(out, encoded.as_bytes(), "{plain}");
        }
    }
}
