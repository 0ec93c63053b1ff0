//! Poll replies, built straight from the store's mapped bytes.
//!
//! Each record's message goes from the segment's map into the reply line,
//! once: no intermediate strings, no re-parsing. The store's lock is held
//! only to take a view of each key's records (`Store::read_view`: the
//! segments' maps and bounds); the records are decoded and the line built
//! without it, so a large poll holds up no write. The messages were valid
//! compact JSON when they were appended (the protocol parser wrote them),
//! and every record is CRC-checked as it is read, so what is copied is
//! what was written.

use std::cell::Cell;
use std::io::Write as _;
use std::sync::Mutex;

use super::protocol::ReplyTo;
use crate::lock::lock;
use crate::log;
use crate::storage::keylog::read_by_views;
use crate::storage::store::Store;

/// Records returned per key by one poll. The workload writes at most 16 per
/// key, so this never cuts its final catch-up read short, and it bounds the
/// work one poll of a long log can ask for.
pub const POLL_RECORDS_PER_KEY_MAX: usize = 1024;

/// Message bytes in one poll reply. 1 MiB lets the final read fetch hundreds
/// of short keys per round trip while keeping a reply line a size that a
/// JSON parser on the other end handles quickly.
pub const POLL_REPLY_BYTES_MAX: usize = 1 << 20;

/// JSON text of a string, quoted and escaped.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// The whole `poll_ok` line to `to` (newline included): for each key, the
/// durable records at or after its offset, within the poll limits. Keys with
/// no records are left out (an empty list breaks Maelstrom's checker).
pub fn poll_reply(store: &Mutex<Store>, to: &ReplyTo, offsets: &[(String, u64)]) -> Vec<u8> {
    let mut line = format!(
        "{{\"src\":{},\"dest\":{},\"body\":{{\"type\":\"poll_ok\",\"in_reply_to\":{},\"msgs\":{{",
        quoted(&to.dest),
        quoted(&to.src),
        to.msg_id
    )
    .into_bytes();
    // Shared by the visitor, which spends it, and `take_view`, which asks
    // for views no larger than what is left of it.
    let budget = Cell::new(POLL_REPLY_BYTES_MAX);
    let mut keys_written = 0;
    for (key, from) in offsets {
        if budget.get() == 0 {
            break;
        }
        let key_start = line.len();
        let mut count = 0;
        let mut take_view = |from| lock(store).read_view(key, from, budget.get() as u64);
        let result = read_by_views(*from, &mut take_view, &mut |offset, msg| {
            // Always take one record, so a poll of one huge message progresses.
            if count > 0 && msg.len() > budget.get() {
                budget.set(0);
                return false;
            }
            budget.set(budget.get().saturating_sub(msg.len()));
            if count == 0 {
                if keys_written > 0 {
                    line.push(b',');
                }
                line.extend_from_slice(quoted(key).as_bytes());
                line.extend_from_slice(b":[");
            } else {
                line.push(b',');
            }
            let _ = write!(line, "[{offset},");
            line.extend_from_slice(msg);
            line.push(b']');
            count += 1;
            count < POLL_RECORDS_PER_KEY_MAX && budget.get() > 0
        });
        if let Err(e) = result {
            log::warn(format_args!("poll of key {key:?} stopped: {e}"));
        }
        if count > 0 {
            line.push(b']');
            keys_written += 1;
        } else {
            line.truncate(key_start);
        }
    }
    line.extend_from_slice(b"}}}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::StoreConfig;

    #[test]
    fn the_reply_is_one_valid_line_with_only_keys_that_have_records() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        for i in 0..3 {
            store
                .append("a\"b", format!("{{\"n\":{i}}}").as_bytes())
                .expect("append");
        }
        store.append("c", b"[1,\"x\"]").expect("append");
        store.sync().expect("sync");
        let store = Mutex::new(store);
        let to = ReplyTo {
            src: "c1".into(),
            dest: "n0".into(),
            msg_id: 7,
        };
        let offsets = [
            ("a\"b".to_string(), 1),
            ("empty".to_string(), 0),
            ("c".to_string(), 0),
            ("c".to_string(), 5),
        ];
        let line = poll_reply(&store, &to, &offsets);
        assert_eq!(line.last(), Some(&b'\n'));
        let reply: serde_json::Value = serde_json::from_slice(&line).expect("valid JSON");
        assert_eq!(
            reply,
            serde_json::json!({"src": "n0", "dest": "c1", "body": {
                "type": "poll_ok", "in_reply_to": 7,
                "msgs": {"a\"b": [[1, {"n": 1}], [2, {"n": 2}]], "c": [[0, [1, "x"]]]}
            }})
        );
        let none = poll_reply(&store, &to, &[("empty".to_string(), 0)]);
        let reply: serde_json::Value = serde_json::from_slice(&none).expect("valid JSON");
        assert_eq!(reply["body"]["msgs"], serde_json::json!({}));
    }
}
