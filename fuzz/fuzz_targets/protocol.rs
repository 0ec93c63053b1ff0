//! Any line on stdin: the parser answers or refuses, never panics, and a
//! request it accepts has fields within the named limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seglog::node::protocol::{Incoming, Request, parse_line};
use seglog::storage::{format::MESSAGE_BYTES_MAX, keyname::KEY_BYTES_MAX};

fuzz_target!(|line: &[u8]| {
    if let Ok(Incoming::Request { request, .. }) = parse_line(line) {
        match request {
            Request::Send { key, msg } => {
                assert!(key.len() <= KEY_BYTES_MAX);
                assert!(msg.len() <= MESSAGE_BYTES_MAX);
                assert!(serde_json::from_slice::<serde_json::Value>(&msg).is_ok());
            }
            Request::Poll { offsets } | Request::CommitOffsets { offsets } => {
                assert!(offsets.iter().all(|(key, _)| key.len() <= KEY_BYTES_MAX));
            }
            _ => {}
        }
    }
});
