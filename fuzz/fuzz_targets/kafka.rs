//! Bytes a Kafka client sends that seglog's own code decodes: the record
//! batches of a Produce and a stored record payload. Each decoder answers
//! or refuses, never panics; a payload served over HTTP is always valid
//! JSON.
//!
//! The request messages themselves are decoded by kafka-protocol 0.18,
//! which is left out: its array decoder reserves memory for the element
//! count a frame announces before reading any element, so a 43-byte
//! Produce frame asks for 62 GB (found by this target; kafka-protocol-rs
//! pull requests 152, 161 and 200 fix it, unreleased). The seglog binary
//! survives it through its allocator (`src/lazy_alloc.rs`, pinned by
//! tests/serve/kafka.rs); under libFuzzer it would abort every run.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use seglog::kafka::batch;
use seglog::broker::payload;

fuzz_target!(|data: &[u8]| {
    // Record batches, as in a Produce request's records field.
    let _ = batch::decode(&Bytes::copy_from_slice(data));

    // A stored payload, tagged as a Kafka record or not.
    let _ = payload::as_kafka(data);
    let mut tagged = vec![payload::KAFKA_RECORD_TAG, payload::KAFKA_RECORD_VERSION];
    tagged.extend_from_slice(data);
    let mut json = b"{\"offset\":0".to_vec();
    payload::push_http_fields(&mut json, &tagged);
    assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
});
