//! A record's timestamp: the one thing the store reads inside a payload,
//! for the time index (`segment-format.md`, "Time index" and "Record
//! payloads").
//!
//! The front ends own the payload encodings (`broker/payload.rs`); the
//! store knows only where each puts its timestamp, so that a time index
//! rebuilt from a segment is the same whoever opened the store. A payload
//! without a timestamp (a Maelstrom message, a Kafka record sent without
//! one) has none, and the time index skips it.

/// First byte of a Kafka record payload. Below 0x09 (tab), so no JSON text
/// starts with it.
pub const KAFKA_RECORD_TAG: u8 = 0x01;
/// The Kafka record encoding's own version, the payload's second byte.
pub const KAFKA_RECORD_VERSION: u8 = 1;
/// Bytes before the timestamp: the tag and the version.
pub const KAFKA_PREFIX_BYTES: usize = 2;
/// The timestamp, milliseconds since the Unix epoch, i64 little-endian.
pub const KAFKA_TIMESTAMP_OFFSET: usize = KAFKA_PREFIX_BYTES;
/// Where the key's length starts.
pub const KAFKA_KEY_OFFSET: usize = KAFKA_TIMESTAMP_OFFSET + 8;

/// The HTTP front end's stored object starts so, its timestamp next
/// (`http/records.rs` writes it first, always).
const HTTP_TIMESTAMP_PREFIX: &[u8] = b"{\"timestamp\":";

/// A payload's timestamp (milliseconds since the Unix epoch, never
/// negative), read without decoding the rest of it: a Kafka record's, or
/// the one the HTTP front end's object starts with. `None` for a payload
/// without one: a Kafka record whose timestamp is -1 (none, as Kafka has
/// it) or of an encoding version this build does not know, a Maelstrom
/// message, anything else.
pub fn timestamp_of(payload: &[u8]) -> Option<i64> {
    if payload.first() == Some(&KAFKA_RECORD_TAG) {
        if payload.get(1) != Some(&KAFKA_RECORD_VERSION) {
            return None;
        }
        let bytes = payload.get(KAFKA_TIMESTAMP_OFFSET..KAFKA_KEY_OFFSET)?;
        let timestamp = i64::from_le_bytes(bytes.try_into().ok()?);
        return (timestamp >= 0).then_some(timestamp);
    }
    let rest = payload.strip_prefix(HTTP_TIMESTAMP_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(rest.get(..digits)?).ok()?.parse().ok()
}
