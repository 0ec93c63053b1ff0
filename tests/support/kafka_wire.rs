//! Raw Kafka frames for the tests that speak the protocol themselves
//! rather than through a client: a request encoded by kafka-protocol, its
//! reply read back, and record batches built byte by byte (so a test can
//! set what a client would not: a producer's sequence, a codec, a bad
//! CRC).

use std::io::{Read, Write};
use std::net::TcpStream;

/// A request frame: size, then the bytes.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// One request frame encoded by kafka-protocol: header v1 (or v2 for
/// flexible versions), then the body.
pub fn request<R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::Request>(
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Vec<u8> {
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut out = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("seglog tests")))
        .encode(&mut out, R::header_version(version))
        .expect("header encodes");
    body.encode(&mut out, version).expect("body encodes");
    frame(&out)
}

/// Reads one reply frame; returns its body after the correlation id
/// (header v0), checking that id.
pub fn reply(stream: &mut TcpStream, correlation_id: i32) -> bytes::Bytes {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("a reply");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("the reply's body");
    assert_eq!(body[..4], correlation_id.to_be_bytes(), "correlation id");
    bytes::Bytes::from(body).slice(4..)
}

/// A record batch (magic 2) of `count` records whose records field is
/// `records` as given, compressed with `codec` (attributes bits 0-2).
pub fn raw_batch(codec: i16, count: i32, records: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&0i32.to_be_bytes()); // length, below
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    b.extend_from_slice(&codec.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    b.extend_from_slice(&0i64.to_be_bytes()); // base timestamp
    b.extend_from_slice(&0i64.to_be_bytes()); // max timestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(records);
    let length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// One uncompressed record (offset delta `i`) holding `value`.
pub fn raw_record(i: i64, value: &[u8]) -> Vec<u8> {
    let zigzag = |out: &mut Vec<u8>, v: i64| {
        let mut raw = ((v << 1) ^ (v >> 63)) as u64;
        while raw >= 0x80 {
            out.push((raw as u8 & 0x7f) | 0x80);
            raw >>= 7;
        }
        out.push(raw as u8);
    };
    let mut body = vec![0u8]; // attributes
    zigzag(&mut body, 0); // timestamp delta
    zigzag(&mut body, i); // offset delta
    zigzag(&mut body, -1); // null key
    zigzag(&mut body, value.len() as i64);
    body.extend_from_slice(value);
    zigzag(&mut body, 0); // no headers
    let mut out = Vec::new();
    zigzag(&mut out, body.len() as i64);
    out.extend_from_slice(&body);
    out
}

/// Sends a Produce v3 (acks=-1) of `batch` to `partition` of `topic` on
/// `stream` and reads its reply: (error code, base offset).
pub fn produce_v3(
    stream: &mut TcpStream,
    correlation_id: i32,
    topic: &str,
    partition: i32,
    batch: Vec<u8>,
) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let partition = PartitionProduceData::default()
        .with_index(partition)
        .with_records(Some(bytes::Bytes::from(batch)));
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(StrBytes::from_string(topic.to_string()).into())
                .with_partition_data(vec![partition]),
        ]);
    stream
        .write_all(&request(3, correlation_id, &body))
        .expect("send");
    let response =
        ProduceResponse::decode(&mut reply(stream, correlation_id), 3).expect("a Produce reply");
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}
