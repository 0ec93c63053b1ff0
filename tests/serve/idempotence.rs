//! Idempotent producers (issue 21, item 1): InitProducerId, and a retried
//! batch answered with its first attempt's offsets and never appended twice,
//! also after a kill -9; gaps and fenced epochs refused with Kafka's codes;
//! and real clients with idempotence on (confluent-kafka, kafka-python 3 with
//! its defaults, kafkajs) producing through a proxy that cuts the connection
//! instead of passing on a fraction of produce replies, with every record
//! found exactly once afterwards.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::kafka::{CLIENTS, raw_batch, raw_record, reply, request, run, start_bound, start_with};
use crate::support::kafka_wire::produce_v3;
use crate::support::tier::pick;
use crate::support::tools;

/// Kafka error codes the tests expect.
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// A batch of an idempotent producer: `values`, with producer id, epoch and
/// first sequence number set (the CRC, which covers them, recomputed).
fn sequenced_batch(producer_id: i64, epoch: i16, first_seq: i32, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<u8> = values
        .iter()
        .enumerate()
        .flat_map(|(i, v)| raw_record(i as i64, v))
        .collect();
    let mut b = raw_batch(0, values.len() as i32, &records);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&first_seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// InitProducerId v1: (error code, producer id, epoch).
fn init_producer_id(
    stream: &mut TcpStream,
    correlation_id: i32,
    transactional_id: Option<&'static str>,
) -> (i16, i64, i16) {
    let body = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|t| StrBytes::from_static_str(t).into()))
        .with_transaction_timeout_ms(60_000);
    stream
        .write_all(&request(1, correlation_id, &body))
        .expect("send");
    let response = InitProducerIdResponse::decode(&mut reply(stream, correlation_id), 1)
        .expect("an InitProducerId reply");
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

/// Produce v3 (acks=-1) of `batch` to partition 0 of `topic`: (error code,
/// base offset).
fn produce(
    stream: &mut TcpStream,
    correlation_id: i32,
    topic: &'static str,
    batch: Vec<u8>,
) -> (i16, i64) {
    produce_v3(stream, correlation_id, topic, 0, batch)
}

#[test]
fn a_retried_batch_is_answered_with_its_offset_also_after_kill_9_and_gaps_and_old_epochs_are_refused()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, address) = start_with(dir.path(), &[]);
    server.create_topic("idem", 1);
    let mut s = TcpStream::connect(&address).expect("connect");
    let (error, pid, epoch) = init_producer_id(&mut s, 1, None);
    assert_eq!((error, epoch), (0, 0));
    let (_, second, _) = init_producer_id(&mut s, 2, None);
    assert!(second > pid, "ids are not reused: {pid} then {second}");
    let first = || sequenced_batch(pid, 0, 0, &[b"a", b"b", b"c"]);
    assert_eq!(produce(&mut s, 3, "idem", first()), (0, 0));
    // The retry: its first offset again, nothing appended.
    assert_eq!(produce(&mut s, 4, "idem", first()), (0, 0));
    assert_eq!(
        produce(&mut s, 5, "idem", sequenced_batch(pid, 0, 3, &[b"d", b"e"])),
        (0, 3)
    );
    // A gap, and a batch older than the last ones: refused, nothing appended.
    assert_eq!(
        produce(&mut s, 6, "idem", sequenced_batch(pid, 0, 9, &[b"x"])).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    // A new epoch starts at 0; the old one is fenced from then on.
    let bumped = || sequenced_batch(pid, 1, 0, &[b"f"]);
    assert_eq!(produce(&mut s, 7, "idem", bumped()), (0, 5));
    assert_eq!(
        produce(&mut s, 8, "idem", sequenced_batch(pid, 0, 5, &[b"y"])).0,
        INVALID_PRODUCER_EPOCH
    );
    // Transactions are refused with Kafka's code, not a closed connection.
    assert_eq!(
        init_producer_id(&mut s, 9, Some("tx")).0,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    drop(s);
    assert_eq!(server.fetch("idem", 0, "offset=0").len(), 6);
    server.kill();

    // The producer's state was durable with the batch it acknowledged.
    let (server, address) = start_with(dir.path(), &[]);
    let mut s = TcpStream::connect(&address).expect("connect");
    assert_eq!(
        produce(&mut s, 1, "idem", bumped()),
        (0, 5),
        "after kill -9"
    );
    assert_eq!(
        produce(&mut s, 2, "idem", sequenced_batch(pid, 1, 1, &[b"g"])),
        (0, 6)
    );
    let (_, third, _) = init_producer_id(&mut s, 3, None);
    assert!(third > second, "ids are not reused after a restart");
    let values: Vec<String> = server
        .fetch("idem", 0, "offset=0")
        .iter()
        .map(|r| {
            r["value"]
                .as_str()
                .map_or_else(|| r["value"].to_string(), str::to_string)
        })
        .collect();
    assert_eq!(values.len(), 7, "{values:?}");
}

/// A TCP proxy in front of a Kafka listener that, for one produce reply in
/// [`DROP_EVERY`], cuts both connections instead of passing the reply on:
/// the server appended the batch, the client never hears so and sends it
/// again on a new connection (with the replies of the requests pipelined
/// behind it, which are lost too). It reads frames both ways to know which
/// reply answers a Produce request. The choice is by count, not random, so
/// a run of more than [`DROP_EVERY`] produce requests always drops some.
struct Proxy {
    address: String,
    /// Produce replies dropped so far.
    dropped: Arc<AtomicU64>,
    /// Produce replies passed on.
    passed: Arc<AtomicU64>,
}

/// Produce's API key.
const PRODUCE_KEY: i16 = 0;

/// Reads one frame (size and body) from `stream`; `None` at its end.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(size)).ok()?];
    stream.read_exact(&mut body).ok()?;
    let mut frame = size.to_vec();
    frame.extend_from_slice(&body);
    Some(frame)
}

impl Proxy {
    /// Listens on a free port; forwards to `upstream` once started.
    fn bind() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let address = listener.local_addr().expect("address").to_string();
        (listener, address)
    }

    fn start(listener: TcpListener, upstream: String) -> Proxy {
        let address = listener.local_addr().expect("address").to_string();
        let dropped = Arc::new(AtomicU64::new(0));
        let passed = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let (d, p) = (Arc::clone(&dropped), Arc::clone(&passed));
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (d, p, seen) = (Arc::clone(&d), Arc::clone(&p), Arc::clone(&seen));
                thread::spawn(move || connection(client, server, &seen, &d, &p));
            }
        });
        Proxy {
            address,
            dropped,
            passed,
        }
    }
}

/// Relays one client connection: requests up, replies down, cutting both
/// at a produce reply chosen to be dropped.
fn connection(
    client: TcpStream,
    server: TcpStream,
    seen: &AtomicU64,
    dropped: &AtomicU64,
    passed: &AtomicU64,
) {
    let keys: Arc<Mutex<HashMap<i32, i16>>> = Arc::default();
    let (mut client_in, mut server_out) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let up_keys = Arc::clone(&keys);
    let up = thread::spawn(move || {
        while let Some(frame) = read_frame(&mut client_in) {
            if frame.len() >= 12 {
                let key = i16::from_be_bytes([frame[4], frame[5]]);
                let correlation = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                up_keys.lock().expect("keys").insert(correlation, key);
            }
            if server_out.write_all(&frame).is_err() {
                break;
            }
        }
        let _ = server_out.shutdown(Shutdown::Both);
    });
    let (mut server_in, mut client_out) = (server, client);
    while let Some(frame) = read_frame(&mut server_in) {
        let correlation = frame
            .get(4..8)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        let key = correlation.and_then(|c| keys.lock().expect("keys").remove(&c));
        if key == Some(PRODUCE_KEY) {
            if seen.fetch_add(1, Ordering::Relaxed) % DROP_EVERY == DROP_EVERY - 1 {
                dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            passed.fetch_add(1, Ordering::Relaxed);
        }
        if client_out.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = server_in.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// The proxy drops one produce reply in this many: the 5%.
const DROP_EVERY: u64 = 20;

/// Runs `scenario` of the Python clients (or `node` with the kafkajs
/// script) producing `count` records through the proxy; it prints its
/// counts of duplicates and losses, which must both be 0, and the proxy
/// must have dropped some replies (else nothing was tested).
fn through_the_proxy(client: &[&str], topic: &str, count: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (listener, proxy_address) = Proxy::bind();
    let (server, _, bound) = start_bound(dir.path(), &["--kafka-advertise", &proxy_address]);
    server.create_topic(topic, 3);
    let proxy = Proxy::start(listener, bound);
    let mut command = Command::new(client[0]);
    command
        .args(&client[1..])
        .args([proxy.address.as_str(), topic, &count.to_string()]);
    let out = run(&mut command, None);
    let dropped = proxy.dropped.load(Ordering::Relaxed);
    let passed = proxy.passed.load(Ordering::Relaxed);
    eprintln!(
        "{}: produce replies dropped {dropped}, passed {passed}; {out}",
        client.join(" ")
    );
    assert!(
        out.contains(&format!("records {count} ")) && out.contains(" duplicates 0 losses 0"),
        "{out}"
    );
    assert!(
        dropped > 0,
        "the proxy dropped no reply: nothing was retried"
    );
    let answered = server.metric("seglog_kafka_duplicate_batches_total");
    eprintln!("retried batches answered without appending them again: {answered}");
    assert!(answered > 0, "no retry reached the server as a duplicate");
}

/// A pipelined idempotent producer (confluent-kafka, five requests in
/// flight, one record a batch) straight to the server: its batches arrive
/// while the one before is in a sync point in flight, and each must be
/// judged against that one's state. No batch is refused as out of order,
/// so the producer never asks for a new id (librdkafka bumps its epoch
/// with a new InitProducerId after such an error).
#[test]
fn a_pipelined_idempotent_producer_is_never_refused_out_of_order() {
    tools::require_python_module("confluent_kafka");
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, _, bound) = start_bound(dir.path(), &[]);
    server.create_topic("pipe", 1);
    let count = pick(3_000, 20_000);
    let mut command = Command::new("python3");
    command.args([
        CLIENTS,
        "confluent-pipelined",
        &bound,
        "pipe",
        &count.to_string(),
    ]);
    let out = run(&mut command, None);
    eprintln!("{out}");
    assert!(
        out.contains(&format!("records {count} acknowledged {count} "))
            && out.contains(" duplicates 0 losses 0 reordered 0"),
        "{out}"
    );
    assert_eq!(server.metric("seglog_kafka_refused_sequences_total"), 0);
    assert_eq!(server.metric("seglog_kafka_producer_ids_total"), 1);
}

/// The goal: 100,000 records (10,000 in the default tier) through
/// the proxy dropping 5% of produce replies, zero duplicates, zero losses.
#[test]
fn confluent_kafka_idempotent_through_a_proxy_that_drops_replies() {
    tools::require_python_module("confluent_kafka");
    through_the_proxy(
        &["python3", CLIENTS, "confluent-idempotent"],
        "ci",
        pick(20_000, 100_000),
    );
}

/// kafkajs with `idempotent: true`, then a consumer of it in a group.
#[test]
fn kafkajs_idempotent_through_a_proxy_that_drops_replies() {
    let dir = std::path::Path::new(KAFKAJS_DIR);
    tools::require_node_package(dir, "kafkajs");
    let script = dir.join("kafkajs.mjs");
    through_the_proxy(
        &["node", script.to_str().expect("a UTF-8 path")],
        "kjs",
        pick(5_000, 20_000),
    );
}

/// Where the kafkajs script and its locked package are.
const KAFKAJS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka_clients");

/// kafka-python 3 with its default settings (idempotence on).
#[test]
fn kafka_python_with_its_defaults_through_a_proxy_that_drops_replies() {
    tools::require_python_module("kafka");
    tools::require_python_module("confluent_kafka");
    through_the_proxy(
        &["python3", CLIENTS, "kafka-python-idempotent"],
        "kpi",
        pick(5_000, 20_000),
    );
}
