//! Keys and messages made to fit on one line of a table.
//!
//! Control characters are escaped so that one record is one line whatever
//! its message holds; long keys and messages are shortened unless `--full`
//! is given. JSON output never shortens: scripts get the exact bytes.

use std::fmt::Write as _;

/// Characters of a message shown before it is shortened: with the offset,
/// position, size, CRC and validity columns in front, a line stays within
/// about 120 columns.
pub const MESSAGE_DISPLAY_CHARS_MAX: usize = 60;

/// Characters of a key shown before it is shortened. Keys may be up to
/// 4 KiB (`KEY_BYTES_MAX`); 32 characters tell typical keys apart and keep
/// the segment table narrow.
pub const KEY_DISPLAY_CHARS_MAX: usize = 32;

/// Bytes of a message that is not UTF-8 shown in hex before it is shortened.
pub const HEX_DISPLAY_BYTES_MAX: usize = 16;

/// A key for a table cell: as it is when it is plain, quoted and escaped
/// when it is empty or holds spaces, quotes or control characters.
pub fn key(key: &str, full: bool) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"');
    let shown = if full {
        key.to_string()
    } else {
        shorten(key, KEY_DISPLAY_CHARS_MAX)
    };
    if plain { shown } else { format!("{shown:?}") }
}

/// A message for a table cell: its text with control characters escaped,
/// or hex when it is not UTF-8; shortened with its size said, unless `full`.
/// A Kafka record payload is shown decoded, as the HTTP front end serves it
/// (`{"kafka":1,"timestamp":..,"key":..,"value":..}`, base64 for bytes that
/// are not JSON text).
pub fn message(payload: &[u8], full: bool) -> String {
    let decoded;
    let text = if crate::broker::payload::is_kafka(payload) {
        let mut json = b"{\"kafka\":1".to_vec();
        crate::broker::payload::push_http_fields(&mut json, payload);
        decoded = String::from_utf8_lossy(&json).into_owned();
        decoded.as_str()
    } else {
        let Ok(text) = std::str::from_utf8(payload) else {
            return hex(payload, full);
        };
        text
    };
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    if full || escaped.chars().count() <= MESSAGE_DISPLAY_CHARS_MAX {
        return escaped;
    }
    format!(
        "{} ({} bytes)",
        shorten(&escaped, MESSAGE_DISPLAY_CHARS_MAX),
        payload.len()
    )
}

/// Bytes that are not UTF-8, in hex.
fn hex(payload: &[u8], full: bool) -> String {
    let shown = if full {
        payload
    } else {
        &payload[..payload.len().min(HEX_DISPLAY_BYTES_MAX)]
    };
    let mut out = format!("<{} bytes, not UTF-8:", payload.len());
    for byte in shown {
        // Writing to a String cannot fail.
        let _ = write!(out, " {byte:02x}");
    }
    if shown.len() < payload.len() {
        out.push_str(" …");
    }
    out.push('>');
    out
}

/// Cuts `text` to `max` characters, the last being an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_records_are_shown_decoded() {
        let mut payload = Vec::new();
        crate::broker::payload::encode_kafka(
            &mut payload,
            &crate::broker::payload::KafkaRecord {
                timestamp: 7,
                key: Some(b"\"k\""),
                value: Some(b"\x00\xff"),
                headers: vec![(b"h", None)],
            },
        );
        assert_eq!(
            message(&payload, true),
            r#"{"kafka":1,"timestamp":7,"key":"k","value":null,"value_base64":"AP8=","headers":[{"key":"h","value_base64":null}]}"#
        );
        // Shortened like any other message, with the payload's size.
        assert!(message(&payload, false).ends_with(&format!("({} bytes)", payload.len())));
    }

    #[test]
    fn plain_keys_stay_bare_and_odd_ones_are_quoted() {
        assert_eq!(key("a/b", false), "a/b");
        assert_eq!(key("ключ", false), "ключ");
        assert_eq!(key("", false), "\"\"");
        assert_eq!(key("two words", false), "\"two words\"");
        assert_eq!(key("line\nbreak", false), "\"line\\nbreak\"");
    }

    #[test]
    fn long_keys_and_messages_are_shortened_unless_full() {
        let long = "x".repeat(100);
        assert_eq!(key(&long, false).chars().count(), KEY_DISPLAY_CHARS_MAX);
        assert_eq!(key(&long, true), long);
        let shown = message(long.as_bytes(), false);
        assert!(shown.ends_with("… (100 bytes)"), "{shown}");
        assert_eq!(message(long.as_bytes(), true), long);
    }

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(message(b"a\nb\tc", false), "a\\nb\\tc");
        assert_eq!(message(&[0xff, 0x00], false), "<2 bytes, not UTF-8: ff 00>");
    }
}
