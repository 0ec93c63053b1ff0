//! `seglog serve --kafka` through real Kafka clients: kcat (librdkafka),
//! confluent-kafka (librdkafka) and kafka-python, run as processes against
//! the real binary on free local ports; and raw frames for bad input.
//!
//! The clients are installed by `scripts/test-setup.sh` (kcat from Debian,
//! the Python packages pinned in `tests/kafka_clients/requirements.txt`).
//! When one is missing the test that needs it fails, naming the command that
//! installs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub(crate) use crate::support::kafka_wire::{frame, raw_batch, raw_record, reply, request};
use crate::support::serve_process::{PATIENCE, Server};
use crate::support::tools;

pub(crate) const CLIENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/kafka_clients/clients.py"
);

/// Starts `seglog serve` with a Kafka listener on a port the server picks
/// (port 0: a port picked here and freed could be taken by another test's
/// server before this one binds it); returns it and the bootstrap address.
fn start(dir: &Path) -> (Server, String) {
    start_with(dir, &[])
}

pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> (Server, String) {
    let (server, advertised, _) = start_bound(dir, extra);
    (server, advertised)
}

/// [`start_with`], returning the address the Kafka listener is bound to
/// besides the one it advertises.
pub(crate) fn start_bound(dir: &Path, extra: &[&str]) -> (Server, String, String) {
    let mut args = vec!["--kafka", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Server::start(dir, &args);
    // "seglog: Kafka protocol on 127.0.0.1:P, advertised as 127.0.0.1:P"
    let line = server
        .log_line("Kafka protocol on")
        .expect("no Kafka listener");
    let advertised = line
        .rsplit("advertised as ")
        .next()
        .expect("the advertised address")
        .trim()
        .to_string();
    let bound = line
        .split("Kafka protocol on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the bound address")
        .trim()
        .to_string();
    (server, advertised, bound)
}

/// Runs `scenario` of the Python clients script (which needs `module`)
/// against a fresh server started with `server_args`, on `topic`; it prints
/// "ok ..." when every check of the scenario passed.
fn python_scenario(module: &str, scenario: &str, topic: &str, server_args: &[&str]) {
    tools::require_python_module(module);
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, bootstrap) = start_with(dir.path(), server_args);
    let out = run(
        Command::new("python3").args([CLIENTS, scenario, &bootstrap, topic]),
        None,
    );
    assert!(out.starts_with("ok "), "{out}");
}

/// Runs a command with a deadline; returns its stdout, or panics with its stderr.
pub(crate) fn run(command: &mut Command, input: Option<&[u8]>) -> String {
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write to the client");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed: {stderr}");
    eprintln!("{stderr}");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[test]
fn kcat_produces_consumes_and_lists_metadata() {
    tools::require_kcat();
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, bootstrap) = start(dir.path());
    // A topic created on first use, with keys and a header.
    let lines = (0..50)
        .map(|i| format!("k{}:value {i}\n", i % 3))
        .collect::<String>();
    run(
        Command::new("kcat").args([
            "-b",
            &bootstrap,
            "-P",
            "-t",
            "kc",
            "-K:",
            "-H",
            "source=kcat",
            "-X",
            "acks=all",
        ]),
        Some(lines.as_bytes()),
    );
    let out = run(
        Command::new("kcat").args([
            "-b",
            &bootstrap,
            "-C",
            "-t",
            "kc",
            "-e",
            "-f",
            "%p %o %k %s %h\\n",
        ]),
        None,
    );
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 50, "{out}");
    for (i, line) in got.iter().enumerate() {
        assert_eq!(
            *line,
            format!("0 {i} k{} value {i} source=kcat", i % 3),
            "record {i}"
        );
    }
    // acks=0 gets no reply, but its records go through a sync point all
    // the same: a consumer waits for all ten (-c 10, no -e).
    let lines = (0..10).map(|i| format!("fire {i}\n")).collect::<String>();
    run(
        Command::new("kcat").args(["-b", &bootstrap, "-P", "-t", "acks0", "-X", "acks=0"]),
        Some(lines.as_bytes()),
    );
    let out = run(
        Command::new("kcat").args([
            "-b", &bootstrap, "-C", "-t", "acks0", "-c", "10", "-f", "%o %s\n",
        ]),
        None,
    );
    let want = (0..10)
        .map(|i| format!("{i} fire {i}\n"))
        .collect::<String>();
    assert_eq!(out, want);
    let metadata = run(
        Command::new("kcat").args(["-b", &bootstrap, "-L", "-t", "kc"]),
        None,
    );
    assert!(metadata.contains("1 brokers:"), "{metadata}");
    assert!(
        metadata.contains("topic \"kc\" with 1 partitions"),
        "{metadata}"
    );
    // The HTTP front end serves the same records, bytes as base64 beside
    // JSON null (the values are not JSON text).
    let records = server.fetch("kc", 0, "offset=0&max_records=1");
    assert_eq!(records[0]["value_base64"], "dmFsdWUgMA==", "{records:?}");
    assert_eq!(records[0]["headers"][0]["key"], "source");
    // And kcat reads what HTTP produced: its JSON key and value as bytes.
    server.create_topic("from-http", 1);
    let (status, body) = server.post(
        "/topics/from-http",
        serde_json::json!({"records": [{"key": "bob", "value": {"n": 1}, "timestamp": 1234}]}),
    );
    assert_eq!(status, 200, "{body}");
    let out = run(
        Command::new("kcat").args([
            "-b",
            &bootstrap,
            "-C",
            "-t",
            "from-http",
            "-e",
            "-f",
            "%k|%s|%T\\n",
        ]),
        None,
    );
    assert_eq!(out, "\"bob\"|{\"n\":1}|1234\n");
}

#[test]
fn confluent_kafka_produces_and_a_group_resumes_from_its_commits() {
    python_scenario("confluent_kafka", "confluent-groups", "cg", &[]);
}

#[test]
fn confluent_kafka_consumers_of_one_group_split_and_hand_over_partitions() {
    python_scenario("confluent_kafka", "confluent-rebalance", "rb", &[]);
}

#[test]
fn a_batch_with_a_record_over_the_limit_is_refused_whole() {
    python_scenario(
        "confluent_kafka",
        "confluent-too-large",
        "big",
        &["--max-record-bytes", "1000"],
    );
}

#[test]
fn kafka_python_produces_and_a_group_resumes_from_its_commits() {
    python_scenario("kafka", "kafka-python-groups", "kp", &[]);
}

/// Offsets as Kafka has them: a group commits 8, seeks back and commits 3
/// with a metadata string; 3 and the string are what it has, and they
/// survive a restart (issue 21, item 3).
#[test]
fn a_commit_back_is_stored_with_its_metadata_and_survives_a_restart() {
    tools::require_python_module("confluent_kafka");
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, bootstrap) = start(dir.path());
    server.create_topic("seek", 1);
    let out = run(
        Command::new("python3").args([CLIENTS, "confluent-seek-commit", &bootstrap, "seek"]),
        None,
    );
    assert!(out.starts_with("ok "), "{out}");
    server.kill();
    let (_server, bootstrap) = start(dir.path());
    let out = run(
        Command::new("python3").args([CLIENTS, "confluent-committed-check", &bootstrap, "seek"]),
        None,
    );
    assert!(out.starts_with("ok "), "{out}");
}

#[test]
fn kafka_python_commits_back_with_metadata() {
    python_scenario("kafka", "kafka-python-seek-commit", "kps", &[]);
}

#[test]
fn every_acknowledged_record_survives_kill_9() {
    tools::require_python_module("confluent_kafka");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let acked = dir.path().join("acked.jsonl");
    let (server, bootstrap) = start(&data);
    server.create_topic("crash", 1);
    // The producer runs while the server is killed under it: it writes each
    // acknowledgement to the file as it arrives.
    let mut producer = Command::new("python3")
        .args([CLIENTS, "confluent-acked", &bootstrap, "crash"])
        .arg(&acked)
        .arg("100000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the producer");
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::fs::read_to_string(&acked).map_or(0, |t| t.lines().count()) < 500 {
        assert!(std::time::Instant::now() < deadline, "no acknowledgements");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    let _ = producer.kill();
    let _ = producer.wait();
    let count = std::fs::read_to_string(&acked)
        .expect("acks")
        .lines()
        .count();
    let (_server, bootstrap) = start(&data);
    let out = run(
        Command::new("python3")
            .args([CLIENTS, "confluent-read-all", &bootstrap, "crash"])
            .arg(&acked),
        None,
    );
    assert!(out.starts_with("ok "), "{out}");
    eprintln!("{count} acknowledged before kill -9: {out}");
}

/// An ApiVersions v0 request (header v1: key, version, correlation id, client id).
fn api_versions(correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    frame(&body)
}

/// Sends `bytes`; returns what the server sent back before closing (or
/// before a reply to a following ApiVersions, when `probe` is set).
fn exchange(address: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

#[test]
fn bad_frames_close_the_connection_and_the_server_serves_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, address) = start(dir.path());
    // Each closes the connection with nothing sent back.
    let oversized = (17i32 << 20).to_be_bytes().to_vec();
    let negative = (-5i32).to_be_bytes().to_vec();
    let unknown_key = frame(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
    let unserved_version = frame(&[0, 0, 0x7f, 0, 0, 0, 0, 1, 0xff, 0xff]);
    let short = frame(&[0, 18]);
    // A Produce v3 header and then garbage where the body should be.
    let garbage = frame(&[0, 0, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0xde, 0xad]);
    // A Produce v3 request whose array count asks kafka-protocol 0.18 for
    // a 62 GB vector before anything is read (found by fuzzing): without
    // the binary's lazy allocator (src/lazy_alloc.rs) the process aborts.
    let huge_array = frame(&[
        0x00, 0x00, 0x00, 0x03, 0xff, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xff, 0xff, 0x09, 0x12, 0x00, 0x00, 0x00, 0x00, 0x3a, 0x00, 0x00, 0x01, 0xff, 0x00,
        0x09, 0xff, 0xff, 0x12, 0x00, 0x00, 0x00, 0x3a, 0x00, 0x00, 0x01, 0xfe, 0x00,
    ]);
    for (name, bytes) in [
        ("an array count far past the frame", huge_array),
        ("oversized", oversized),
        ("negative size", negative),
        ("unknown API key", unknown_key),
        ("unserved version", unserved_version),
        ("shorter than a header", short),
        ("a body that does not decode", garbage),
    ] {
        let reply = exchange(&address, &bytes);
        assert!(reply.is_empty(), "{name}: {reply:?}");
    }
    // A client that leaves in the middle of a request.
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream.write_all(&100i32.to_be_bytes()).expect("size");
    stream.write_all(&[0, 18, 0]).expect("part of it");
    drop(stream);
    assert!(server.wait_for_log("left in the middle"));
    // ApiVersions of an unknown version gets UNSUPPORTED_VERSION (35) in v0.
    let mut too_new = api_versions(9);
    too_new[7] = 99;
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(&too_new).expect("send");
    let mut head = [0u8; 10];
    stream.read_exact(&mut head).expect("reply");
    assert_eq!(&head[4..8], &9i32.to_be_bytes(), "correlation id");
    assert_eq!(&head[8..10], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
    // And the server still answers a good request.
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(&api_versions(7)).expect("send");
    let mut head = [0u8; 10];
    stream.read_exact(&mut head).expect("reply");
    assert_eq!(&head[4..8], &7i32.to_be_bytes());
    assert_eq!(&head[8..10], &0i16.to_be_bytes());
    assert_eq!(server.get("/health").0, 200);
}

/// The pid of the `seglog serve` whose command line names `dir`, found in
/// /proc (the server's handle keeps its child private).
fn server_pid(dir: &Path) -> u32 {
    let wanted = dir.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let entry = entry.expect("a /proc entry");
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|arg| arg == wanted) {
            return pid;
        }
    }
    panic!("no process serves {}", dir.display());
}

/// A process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A Produce v3 request (acks=-1) of `records` to partition 0 of `topic`.
fn produce_request(topic: &'static str, correlation_id: i32, records: Vec<u8>) -> Vec<u8> {
    produce_request_acks(topic, correlation_id, records, -1)
}

/// A Produce v3 request with `acks` of `records` to partition 0 of `topic`.
fn produce_request_acks(
    topic: &'static str,
    correlation_id: i32,
    records: Vec<u8>,
    acks: i16,
) -> Vec<u8> {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::StrBytes;
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(bytes::Bytes::from(records)));
    let topic = TopicProduceData::default()
        .with_name(StrBytes::from_static_str(topic).into())
        .with_partition_data(vec![partition]);
    let body = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![topic]);
    request(3, correlation_id, &body)
}

/// The error code of partition 0 of the first topic of a Produce v3 reply.
fn produce_error(body: bytes::Bytes) -> i16 {
    use kafka_protocol::messages::ProduceResponse;
    use kafka_protocol::protocol::Decodable;
    let response = ProduceResponse::decode(&mut body.clone(), 3).expect("a Produce reply");
    response.responses[0].partition_responses[0].error_code
}

/// Regression: a 200 KiB gzip batch of 200 MiB of zeros was inflated
/// whole into memory (kafka-protocol's decompressor has no bound) before
/// any record was looked at. It is refused with MESSAGE_TOO_LARGE once it
/// passes --max-request-bytes (16 MiB), nothing of it is appended, the
/// server's peak memory stays far below the bomb, and it serves on.
#[test]
fn a_gzip_bomb_is_refused_without_inflating_it() {
    use flate2::write::GzEncoder;
    const BOMB_BYTES: usize = 200 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, address) = start(dir.path());
    server.create_topic("bomb", 1);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..BOMB_BYTES >> 20 {
        gz.write_all(&zeros).expect("compress");
    }
    let bomb = gz.finish().expect("compress");
    eprintln!("{BOMB_BYTES} bytes of zeros gzip to {} bytes", bomb.len());
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
        .write_all(&produce_request("bomb", 1, raw_batch(1, 1, &bomb)))
        .expect("send");
    const MESSAGE_TOO_LARGE: i16 = 10;
    assert_eq!(produce_error(reply(&mut stream, 1)), MESSAGE_TOO_LARGE);
    let peak_kib = peak_rss_kib(server_pid(dir.path()));
    eprintln!("peak RSS after the bomb: {peak_kib} KiB");
    assert!(
        peak_kib < (BOMB_BYTES as u64 >> 10) / 4,
        "peak RSS {peak_kib} KiB for a {BOMB_BYTES}-byte bomb"
    );
    // Gzip records within the limit are taken, on the same connection.
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw_record(0, b"small")).expect("compress");
    let small = gz.finish().expect("compress");
    stream
        .write_all(&produce_request("bomb", 2, raw_batch(1, 1, &small)))
        .expect("send");
    assert_eq!(produce_error(reply(&mut stream, 2)), 0);
    let records = server.fetch("bomb", 0, "offset=0");
    assert_eq!(records.len(), 1, "{records:?}");
}

/// A Fetch v4 request of partition 0 of `topic` from offset 0, answered at
/// once, of up to 64 MiB.
fn fetch_request(topic: &'static str, correlation_id: i32) -> Vec<u8> {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::protocol::StrBytes;
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(64 << 20);
    let topic = FetchTopic::default()
        .with_topic(StrBytes::from_static_str(topic).into())
        .with_partitions(vec![partition]);
    let body = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(64 << 20)
        .with_topics(vec![topic]);
    request(4, correlation_id, &body)
}

/// Regression: each pipelined request's reply waited in memory for the
/// writer, whatever its size, so 64 fetches of 16 MB from a client that
/// does not read held 1 GB (2.35 GB with 64 MiB replies). A connection's
/// fetches now reserve their reply's bytes before they read, out of
/// `REPLY_BYTES_MAX` (64 MiB), given back once each reply is sent.
#[test]
fn pipelined_fetches_of_a_client_that_does_not_read_hold_one_reply() {
    const RECORDS: usize = 16;
    const VALUE_BYTES: usize = 1_000_000;
    const FETCHES: i32 = 64;
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, address) = start(dir.path());
    server.create_topic("wide", 1);
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    for i in 0..RECORDS {
        let value = vec![b'a' + i as u8; VALUE_BYTES];
        let batch = raw_batch(0, 1, &raw_record(0, &value));
        stream
            .write_all(&produce_request("wide", i as i32, batch))
            .expect("send");
        assert_eq!(produce_error(reply(&mut stream, i as i32)), 0);
    }
    let pid = server_pid(dir.path());
    let before_kib = peak_rss_kib(pid);
    let fetches: Vec<u8> = (0..FETCHES)
        .flat_map(|i| fetch_request("wide", 1000 + i))
        .collect();
    stream.write_all(&fetches).expect("send the fetches");
    // The first fetch has read its records; without a bound the others
    // read theirs at the same time, each into a reply that waits.
    let deadline = std::time::Instant::now() + PATIENCE;
    while server.metric("seglog_records_fetched_total") < RECORDS as u64 {
        assert!(std::time::Instant::now() < deadline, "no fetch was served");
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..FETCHES {
        let body = reply(&mut stream, 1000 + i);
        assert!(
            body.len() > RECORDS * VALUE_BYTES,
            "fetch {i}: {} bytes",
            body.len()
        );
    }
    let after_kib = peak_rss_kib(pid);
    let grown_mib = (after_kib.saturating_sub(before_kib)) >> 10;
    eprintln!(
        "peak RSS {before_kib} KiB before the fetches, {after_kib} KiB after: +{grown_mib} MiB"
    );
    // One 16 MB reply (two while one is written and the next encoded),
    // the records read for it, and slack; far from the 64 replies' 1 GB.
    assert!(grown_mib < 160, "peak RSS grew by {grown_mib} MiB");
}

/// Regression: a Produce with acks other than 0, 1 or -1 was taken (and
/// answered as acks=1). Kafka answers INVALID_REQUIRED_ACKS and appends
/// nothing.
#[test]
fn a_produce_with_acks_other_than_0_1_or_minus_1_is_refused() {
    const INVALID_REQUIRED_ACKS: i16 = 21;
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, address) = start(dir.path());
    server.create_topic("acks", 1);
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    for (i, acks) in [2i16, -2, 5].into_iter().enumerate() {
        let batch = raw_batch(0, 1, &raw_record(0, b"refused"));
        stream
            .write_all(&produce_request_acks("acks", i as i32, batch, acks))
            .expect("send");
        assert_eq!(
            produce_error(reply(&mut stream, i as i32)),
            INVALID_REQUIRED_ACKS,
            "acks={acks}"
        );
    }
    let batch = raw_batch(0, 1, &raw_record(0, b"taken"));
    stream
        .write_all(&produce_request_acks("acks", 9, batch, 1))
        .expect("send");
    assert_eq!(produce_error(reply(&mut stream, 9)), 0);
    let records = server.fetch("acks", 0, "offset=0");
    assert_eq!(records.len(), 1, "only the acks=1 record: {records:?}");
}

/// Regression: CreateTopics with validate_only accepted any partition
/// count (0, or past the catalog's 4,096), and the real creation told a
/// bad count from a bad name by searching the catalog's message for
/// "partitions". The count is now checked first, for both, as
/// INVALID_PARTITIONS; a bad name is INVALID_TOPIC_EXCEPTION.
#[test]
fn create_topics_refuses_a_bad_partition_count_even_when_only_validating() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    const INVALID_PARTITIONS: i16 = 37;
    const INVALID_TOPIC_EXCEPTION: i16 = 17;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, address) = start(dir.path());
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let cases = [
        ("zero", 0, INVALID_PARTITIONS),
        ("many", 5000, INVALID_PARTITIONS),
        ("bad/partitions", 1, INVALID_TOPIC_EXCEPTION),
        ("fine", 3, 0),
    ];
    let mut id = 0;
    for validate_only in [true, false] {
        for (name, partitions, code) in cases {
            id += 1;
            let topic = CreatableTopic::default()
                .with_name(StrBytes::from_static_str(name).into())
                .with_num_partitions(partitions)
                .with_replication_factor(1);
            let body = CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(10_000)
                .with_validate_only(validate_only);
            stream.write_all(&request(2, id, &body)).expect("send");
            let response = CreateTopicsResponse::decode(&mut reply(&mut stream, id), 2)
                .expect("a CreateTopics reply");
            assert_eq!(
                response.topics[0].error_code, code,
                "{name} with {partitions} partitions, validate_only {validate_only}"
            );
        }
    }
}

/// confluent-kafka's AdminClient through every admin API served (and
/// kafka-python's for OffsetDelete, which confluent-kafka lacks).
#[test]
fn the_admin_client_describes_alters_and_deletes() {
    tools::require_python_module("kafka");
    python_scenario("confluent_kafka", "confluent-admin", "adm", &[]);
}

/// Requests of APIs not served get Kafka's error where the protocol has
/// one, and the connection stays open: a transaction API gets
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53), an ACL API SECURITY_DISABLED
/// (54), SaslHandshake UNSUPPORTED_SASL_MECHANISM (33).
#[test]
fn unserved_apis_get_kafkas_error_not_a_closed_connection() {
    use kafka_protocol::messages::{
        AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiVersionsResponse, DescribeAclsRequest,
        DescribeAclsResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    };
    use kafka_protocol::protocol::Decodable;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, address) = start(dir.path());
    let mut s = TcpStream::connect(&address).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(&request(0, 1, &AddOffsetsToTxnRequest::default()))
        .expect("send");
    let txn = AddOffsetsToTxnResponse::decode(&mut reply(&mut s, 1), 0).expect("a reply");
    assert_eq!(txn.error_code, 53);
    s.write_all(&request(1, 2, &DescribeAclsRequest::default()))
        .expect("send");
    let acls = DescribeAclsResponse::decode(&mut reply(&mut s, 2), 1).expect("a reply");
    assert_eq!(acls.error_code, 54);
    s.write_all(&request(1, 3, &SaslHandshakeRequest::default()))
        .expect("send");
    let sasl = SaslHandshakeResponse::decode(&mut reply(&mut s, 3), 1).expect("a reply");
    assert_eq!((sasl.error_code, sasl.mechanisms.len()), (33, 0));
    // Still open, and ApiVersions does not list what was refused.
    s.write_all(&api_versions(4)).expect("send");
    let versions = ApiVersionsResponse::decode(&mut reply(&mut s, 4), 0).expect("a reply");
    let listed: Vec<i16> = versions.api_keys.iter().map(|k| k.api_key).collect();
    for refused in [25, 29, 17] {
        assert!(
            !listed.contains(&refused),
            "API {refused} listed: {listed:?}"
        );
    }
    for served in [22, 32, 33, 37, 44, 21, 60, 16, 15, 42, 47] {
        assert!(
            listed.contains(&served),
            "API {served} not listed: {listed:?}"
        );
    }
}

/// DeleteRecords inside a segment: the new log start holds for Kafka and
/// HTTP reads alike, and survives kill -9 (it is a commit of the store).
#[test]
fn a_log_start_set_by_delete_records_holds_for_both_front_ends_after_kill_9() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, address) = start(dir.path());
    server.create_topic("dr", 1);
    let values: Vec<serde_json::Value> = (0..5).map(|i| serde_json::json!(i)).collect();
    server.produce("dr", 0, &values);
    let mut s = TcpStream::connect(&address).expect("connect");
    let body = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(StrBytes::from_static_str("dr").into())
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(3),
                ]),
        ]);
    s.write_all(&request(1, 1, &body)).expect("send");
    let response = DeleteRecordsResponse::decode(&mut reply(&mut s, 1), 1).expect("a reply");
    let p = &response.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 3));
    let first_offset = |server: &Server| server.fetch("dr", 0, "offset=0")[0]["offset"].clone();
    assert_eq!(first_offset(&server), 3);
    server.kill();
    let (server, _) = start(dir.path());
    assert_eq!(first_offset(&server), 3, "after kill -9");
    let (_, topic) = server.get("/topics/dr");
    assert_eq!(topic["partitions"][0]["log_start_offset"], 3, "{topic}");
}
