//! Storage benchmark: `cargo bench --bench storage`. Prints, in one run on one
//! disk (the repository's `target/`, or `SEGLOG_BENCH_DIR`):
//!
//! 1. appends of 100-byte records with an fdatasync every 1,000 records,
//!    seglog beside the `commitlog` crate (same records, same sync points;
//!    commitlog's `flush()` does not sync data, so its segment file is
//!    fdatasynced here);
//! 2. read-back throughput, seglog through its maps, commitlog through its API;
//! 3. reopening a store of 10,000 keys holding about 1 GB after an unclean
//!    stop and after a clean one: the open itself (recovery is per key, on
//!    first use) and the open plus the first use of every key;
//! 4. ListOffsets by timestamp on a partition of 10 million Kafka records
//!    (timestamps partly out of order): `Store::find_time` (the time
//!    index's search, which both front ends call), p50/p99 of 10,000
//!    searches, and the same searches as Kafka ListOffsets requests over
//!    TCP to `seglog serve --kafka`, timed by the client.
//!
//! Arguments after `--bench` choose sections by name (`appends`, `reads`,
//! `reopen`, `time`): `cargo bench --bench storage -- time` runs only the
//! fourth.
//! Figures are printed, never asserted. `SEGLOG_BENCH_SCALE=0.1` shrinks
//! every count for a quick look.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use commitlog::message::MessageSet;
use commitlog::{CommitLog, LogOptions, ReadLimit};
use seglog::{Store, StoreConfig};

/// Records per append run.
const APPEND_RECORDS: usize = 1_000_000;
/// Records between two fdatasyncs.
const RECORDS_PER_SYNC: usize = 1_000;
/// Payload size of every record.
const RECORD_BYTES: usize = 100;
/// Keys in the reopen benchmark.
const REOPEN_KEYS: usize = 10_000;
/// Records per key in the reopen benchmark: 10,000 keys × 1,000 records of
/// 100 bytes (116 on disk) is about 1.16 GB.
const REOPEN_RECORDS_PER_KEY: usize = 1_000;
/// Runs of each append and read measurement; the best is reported, the
/// others show the noise.
const RUNS: usize = 3;

fn scale() -> f64 {
    std::env::var("SEGLOG_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

fn bench_root() -> PathBuf {
    let root = std::env::var_os("SEGLOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    std::fs::create_dir_all(&root).expect("create bench dir");
    root
}

/// A fresh, empty directory under the bench root.
fn fresh(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A 100-byte JSON string payload; the number keeps records distinct.
fn payload(i: usize) -> Vec<u8> {
    let mut text = format!("\"{i:012}");
    while text.len() < RECORD_BYTES - 1 {
        text.push('x');
    }
    text.push('"');
    text.into_bytes()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn seglog_append(dir: &Path, records: usize) -> Duration {
    let mut store = Store::open(dir, StoreConfig::default()).expect("open");
    let payloads: Vec<Vec<u8>> = (0..RECORDS_PER_SYNC).map(payload).collect();
    let started = Instant::now();
    for i in 0..records {
        store
            .append("bench", &payloads[i % RECORDS_PER_SYNC])
            .expect("append");
        if (i + 1) % RECORDS_PER_SYNC == 0 {
            store.sync().expect("sync");
        }
    }
    store.sync().expect("sync");
    started.elapsed()
}

fn commitlog_append(dir: &Path, records: usize) -> Duration {
    let mut log = CommitLog::new(LogOptions::new(dir)).expect("commitlog open");
    let payloads: Vec<Vec<u8>> = (0..RECORDS_PER_SYNC).map(payload).collect();
    let started = Instant::now();
    let mut segment: Option<(u64, File)> = None;
    for i in 0..records {
        log.append_msg(&payloads[i % RECORDS_PER_SYNC])
            .expect("append");
        if (i + 1) % RECORDS_PER_SYNC == 0 {
            commitlog_sync(dir, &mut log, &mut segment);
        }
    }
    commitlog_sync(dir, &mut log, &mut segment);
    started.elapsed()
}

/// commitlog's flush writes its buffers but does not fdatasync: do that to
/// its newest segment file, keeping the descriptor open as seglog does.
fn commitlog_sync(dir: &Path, log: &mut CommitLog, segment: &mut Option<(u64, File)>) {
    log.flush().expect("flush");
    let newest = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .expect("a segment");
    if segment.as_ref().map(|(base, _)| *base) != Some(newest) {
        let path = dir.join(format!("{newest:020}.log"));
        *segment = Some((newest, File::open(path).expect("open segment")));
    }
    if let Some((_, file)) = segment {
        file.sync_data().expect("fdatasync");
    }
}

fn seglog_read(dir: &Path, records: usize) -> Duration {
    let mut store = Store::open(dir, StoreConfig::default()).expect("open");
    // Recover the key first (the reopen figures below time recovery): this
    // times reading.
    store.durable_next_offset("bench").expect("recover the key");
    let started = Instant::now();
    let mut count = 0;
    let mut bytes = 0;
    store
        .read("bench", 0, &mut |_, payload| {
            count += 1;
            bytes += payload.len();
            true
        })
        .expect("read");
    let elapsed = started.elapsed();
    assert_eq!(count, records, "read back every record");
    assert_eq!(bytes, records * RECORD_BYTES);
    elapsed
}

fn commitlog_read(dir: &Path, records: usize) -> Duration {
    let log = CommitLog::new(LogOptions::new(dir)).expect("commitlog open");
    let started = Instant::now();
    let mut count = 0;
    let mut offset = 0;
    while count < records {
        let messages = log
            .read(offset, ReadLimit::max_bytes(1 << 20))
            .expect("commitlog read");
        let mut last = None;
        for message in messages.iter() {
            count += 1;
            last = Some(message.offset());
        }
        offset = last.expect("progress") + 1;
    }
    started.elapsed()
}

fn best(runs: impl Iterator<Item = Duration>) -> (Duration, Vec<Duration>) {
    let all: Vec<Duration> = runs.collect();
    (*all.iter().min().expect("a run"), all)
}

fn print_rate(what: &str, records: usize, (best, all): &(Duration, Vec<Duration>)) {
    let runs: Vec<String> = all
        .iter()
        .map(|d| format!("{:.0}", rate(records, *d)))
        .collect();
    println!(
        "  {what:<34} {:>12.0} records/s   (runs: {})",
        rate(records, *best),
        runs.join(", ")
    );
}

fn reopen_bench(root: &Path) {
    let keys = scaled(REOPEN_KEYS);
    let per_key = REOPEN_RECORDS_PER_KEY;
    let dir = fresh(root, "reopen");
    let started = Instant::now();
    {
        let mut store = Store::open(&dir, StoreConfig::default()).expect("open");
        let payloads: Vec<Vec<u8>> = (0..per_key).map(payload).collect();
        // Key after key, a sync point every 10 keys (10,000 records).
        for key in 0..keys {
            let name = format!("key-{key}");
            for payload in &payloads {
                store.append(&name, payload).expect("append");
            }
            if key % 10 == 9 {
                store.sync().expect("sync");
            }
        }
        store.sync().expect("sync");
        // Dropped without close: an unclean stop.
    }
    let bytes = dir_bytes(&dir);
    println!(
        "  store of {keys} keys x {per_key} records = {:.2} GB written in {:.1} s",
        bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    for (label, clean) in [("unclean stop", false), ("clean stop", true)] {
        if clean {
            Store::open(&dir, StoreConfig::default())
                .expect("open")
                .close()
                .expect("close");
        }
        let started = Instant::now();
        let mut store = Store::open(&dir, StoreConfig::default()).expect("reopen");
        let opened = started.elapsed();
        assert_eq!(store.opened_clean(), clean);
        let mut total = 0;
        for key in 0..keys {
            total += store
                .durable_next_offset(&format!("key-{key}"))
                .expect("recover key");
        }
        let recovered = started.elapsed();
        assert_eq!(total as usize, keys * per_key, "every record recovered");
        println!(
            "  reopen after {label:<13} open {:>9.3} ms, open + recover all {keys} keys {:>9.3} ms",
            opened.as_secs_f64() * 1e3,
            recovered.as_secs_f64() * 1e3
        );
        drop(store);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Records in the search-by-time benchmark: the partition of 10
/// million (about 1.1 GB on disk).
const TIME_RECORDS: usize = 10_000_000;
/// Searches by time measured, at random times across the partition's.
const TIME_SEARCHES: usize = 10_000;
/// Records appended between two sync points while the partition is built.
const TIME_RECORDS_PER_SYNC: usize = 100_000;
/// The first record's timestamp (ms); each next is one ms later, but one
/// in ten goes back up to ten seconds (CreateTime out of order).
const TIME_START_MS: i64 = 1_700_000_000_000;

/// The timestamp of record `i`, as a producer with a skewed clock would set
/// it: rising, one in ten from up to ten seconds before.
fn record_time(i: usize) -> i64 {
    let jitter = (i as i64).wrapping_mul(2_654_435_761) % 10_000;
    TIME_START_MS + i as i64 - if i % 10 == 7 { jitter.abs() } else { 0 }
}

/// A Kafka record payload of about RECORD_BYTES with `timestamp`.
fn kafka_payload(i: usize, timestamp: i64) -> Vec<u8> {
    let value = format!("{i:012}{}", "x".repeat(RECORD_BYTES - 34));
    let mut out = Vec::new();
    seglog::broker::payload::encode_kafka(
        &mut out,
        &seglog::broker::payload::KafkaRecord {
            timestamp,
            key: None,
            value: Some(value.as_bytes()),
            headers: Vec::new(),
        },
    );
    out
}

/// p50 and p99 of `samples`, in microseconds.
fn percentiles_us(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (
        us(at(0.50)),
        us(at(0.99)),
        us(*samples.last().expect("a sample")),
    )
}

/// Times to search for: uniform over the partition's times, from a fixed seed.
fn search_times(records: usize) -> Vec<i64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..scaled(TIME_SEARCHES))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            TIME_START_MS - 10_000 + (x % (records as u64 + 10_000)) as i64
        })
        .collect()
}

/// ListOffsets by timestamp on a partition of 10 million records: the
/// store's search (`Store::find_time`, what both front ends call), then
/// Kafka ListOffsets requests over TCP to `seglog serve --kafka` on the
/// same directory, each timed from send to reply by this client.
fn time_search_bench(root: &Path) {
    use seglog::broker::catalog::{Catalog, NewTopic};
    let records = scaled(TIME_RECORDS);
    let dir = fresh(root, "time-search");
    std::fs::create_dir_all(&dir).expect("create the data directory");
    let mut catalog = Catalog::open(&dir).expect("catalog");
    let topic = catalog
        .create(
            NewTopic {
                name: "times".into(),
                partitions: 1,
                retention_ms: None,
                retention_bytes: None,
                replication_factor: None,
            },
            seglog::broker::time::now_ms(),
        )
        .expect("topic");
    drop(catalog);
    let key = topic.key(0);
    let started = Instant::now();
    let mut store = Store::open(&dir, StoreConfig::default()).expect("open");
    for i in 0..records {
        store
            .append(&key, &kafka_payload(i, record_time(i)))
            .expect("append");
        if i % TIME_RECORDS_PER_SYNC == TIME_RECORDS_PER_SYNC - 1 {
            store.sync().expect("sync");
        }
    }
    store.sync().expect("sync");
    println!(
        "  partition of {records} Kafka records ({:.2} GB, timestamps 1 ms apart, one in ten up \
         to 10 s back) written through the store in {:.1} s",
        dir_bytes(&dir) as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    store.close().expect("close");
    let times = search_times(records);
    let mut store = Store::open(&dir, StoreConfig::default()).expect("reopen");
    // The first search past every record reads each segment's time index
    // once (their largest times are kept after that).
    let started = Instant::now();
    assert_eq!(store.find_time(&key, i64::MAX).expect("search"), None);
    println!(
        "  store: first search after open (reads every segment's time index) {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut samples = Vec::with_capacity(times.len());
    let mut answers = Vec::with_capacity(times.len());
    for &t in &times {
        let started = Instant::now();
        let found = store.find_time(&key, t).expect("search");
        samples.push(started.elapsed());
        answers.push(found.map_or(-1, |(offset, _)| offset as i64));
    }
    let (p50, p99, max) = percentiles_us(&mut samples);
    println!(
        "  store: Store::find_time, {} searches: p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us",
        times.len()
    );
    drop(store);
    match list_offsets_over_kafka(&dir, &topic.name, &times, &answers) {
        Ok(mut samples) => {
            let (p50, p99, max) = percentiles_us(&mut samples);
            println!(
                "  kafka: ListOffsets v7 by timestamp over TCP to seglog serve, {} requests \
                 (answers equal the store's): p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us",
                samples.len()
            );
        }
        Err(e) => println!("  kafka: ListOffsets over TCP not measured: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `seglog serve --kafka` on `dir` and sends one ListOffsets request
/// per time in `times`, one at a time; checks each answer against
/// `expected` and returns the round trips.
fn list_offsets_over_kafka(
    dir: &Path,
    topic: &str,
    times: &[i64],
    expected: &[i64],
) -> Result<Vec<Duration>, String> {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use bytes::{Buf, BytesMut};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{
        ApiKey, ListOffsetsRequest, ListOffsetsResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    const VERSION: i16 = 7;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args(["serve", "--listen", "127.0.0.1:0", "--kafka"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start seglog serve: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = server.kill();
                return Err(format!("seglog serve did not listen: {e}"));
            }
        }
    };
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(times.len());
    let mut result = Ok(());
    for (i, (&t, &want)) in times.iter().zip(expected).enumerate() {
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::ListOffsets as i16;
        header.request_api_version = VERSION;
        header.correlation_id = i as i32;
        header.client_id = Some(StrBytes::from_static_str("bench"));
        let mut partition = ListOffsetsPartition::default();
        partition.partition_index = 0;
        partition.timestamp = t;
        let mut wanted = ListOffsetsTopic::default();
        wanted.name = TopicName(StrBytes::from_string(topic.to_string()));
        wanted.partitions = vec![partition];
        let mut request = ListOffsetsRequest::default();
        request.replica_id = (-1).into();
        request.topics = vec![wanted];
        let mut body = BytesMut::new();
        header
            .encode(
                &mut body,
                ApiKey::ListOffsets.request_header_version(VERSION),
            )
            .and_then(|()| request.encode(&mut body, VERSION))
            .map_err(|e| format!("encode: {e}"))?;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let started = Instant::now();
        let reply = stream.write_all(&frame).and_then(|()| {
            let mut size = [0u8; 4];
            stream.read_exact(&mut size)?;
            let mut reply = vec![0u8; u32::from_be_bytes(size) as usize];
            stream.read_exact(&mut reply)?;
            Ok(reply)
        });
        samples.push(started.elapsed());
        let mut reply = match reply {
            Ok(reply) => bytes::Bytes::from(reply),
            Err(e) => {
                result = Err(format!("request {i}: {e}"));
                break;
            }
        };
        let decoded = ResponseHeader::decode(
            &mut reply,
            ApiKey::ListOffsets.response_header_version(VERSION),
        )
        .and_then(|_| ListOffsetsResponse::decode(&mut reply, VERSION));
        let offset = decoded.ok().and_then(|r| {
            let p = r.topics.first()?.partitions.first()?;
            (p.error_code == 0).then_some(p.offset)
        });
        if offset != Some(want) || reply.has_remaining() {
            result = Err(format!(
                "ListOffsets at {t} answered {offset:?}, the store {want}"
            ));
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    result.map(|()| samples)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with
    // no such flag: do nothing then, the figures need a release build.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs = |section: &str| chosen.is_empty() || chosen.iter().any(|c| c == section);
    let root = bench_root();
    let records = scaled(APPEND_RECORDS);
    println!(
        "seglog storage benchmark: {} records of {RECORD_BYTES} bytes, fdatasync every {RECORDS_PER_SYNC}; data in {}",
        records,
        root.display()
    );
    let seglog_dir = fresh(&root, "seglog-append");
    let commitlog_dir = fresh(&root, "commitlog-append");
    if runs("appends") || runs("reads") {
        println!("appends (best of {RUNS}):");
        let seglog = best((0..RUNS).map(|_| {
            let _ = std::fs::remove_dir_all(&seglog_dir);
            seglog_append(&seglog_dir, records)
        }));
        let commitlog = best((0..RUNS).map(|_| {
            let _ = std::fs::remove_dir_all(&commitlog_dir);
            commitlog_append(&commitlog_dir, records)
        }));
        print_rate("seglog", records, &seglog);
        print_rate("commitlog 0.2 (+ fdatasync)", records, &commitlog);
        println!(
            "  seglog / commitlog: {:.2}x",
            commitlog.0.as_secs_f64() / seglog.0.as_secs_f64()
        );
    }
    if runs("reads") {
        println!("read back from page cache (best of {RUNS}):");
        let seglog_reads = best((0..RUNS).map(|_| seglog_read(&seglog_dir, records)));
        let commitlog_reads = best((0..RUNS).map(|_| commitlog_read(&commitlog_dir, records)));
        print_rate("seglog (mmap, CRC checked)", records, &seglog_reads);
        print_rate("commitlog 0.2", records, &commitlog_reads);
    }
    let _ = std::fs::remove_dir_all(&seglog_dir);
    let _ = std::fs::remove_dir_all(&commitlog_dir);
    if runs("reopen") {
        println!("reopen:");
        reopen_bench(&root);
    }
    if runs("time") {
        println!("search by time (ListOffsets by timestamp):");
        time_search_bench(&root);
    }
}
