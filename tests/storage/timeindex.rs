//! The time index: searches by time agree with a scan of every record,
//! across segments, with timestamps out of order and records without one,
//! after a clean close and after a crash, and a damaged, truncated or
//! missing `.timeindex` is rebuilt from the log with the answers unchanged.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seglog::Store;
use seglog::broker::payload::{KafkaRecord, encode_kafka};
use seglog::storage::format::{FILE_HEADER_SIZE, TIME_INDEX_ENTRY_SIZE};
use seglog::storage::timeindex::time_index_header;
use tempfile::TempDir;

use crate::common::{key_dir, segment_logs, small_segments};

const KEY: &str = "orders.1-0";
/// Small segments, so that a few thousand records span several, each of
/// several chunks (a chunk is about 4 KiB of records).
const SEGMENT: u64 = 64 * 1024;

/// A payload with timestamp `t` (none for `None`): a Kafka record, the HTTP
/// front end's object, or (without one) a Maelstrom message.
fn payload(t: Option<i64>, i: u64, rng: &mut StdRng) -> Vec<u8> {
    let pad = "p".repeat(rng.gen_range(10..200));
    match t {
        Some(t) if i.is_multiple_of(2) => {
            let mut out = Vec::new();
            let value = format!("{i}{pad}");
            encode_kafka(
                &mut out,
                &KafkaRecord {
                    timestamp: t,
                    key: None,
                    value: Some(value.as_bytes()),
                    headers: Vec::new(),
                },
            );
            out
        }
        Some(t) => {
            format!("{{\"timestamp\":{t},\"key\":null,\"value\":\"{i}{pad}\"}}").into_bytes()
        }
        None => format!("{{\"n\":{i},\"pad\":\"{pad}\"}}").into_bytes(),
    }
}

/// Timestamps as producers send them: mostly rising, some far back or far
/// ahead (CreateTime out of order), some records with none.
fn timestamps(count: u64, rng: &mut StdRng) -> Vec<Option<i64>> {
    let mut now = 1_700_000_000_000i64;
    (0..count)
        .map(|_| {
            now += rng.gen_range(0..20);
            match rng.gen_range(0..100) {
                0..5 => None,
                5..10 => Some(now - rng.gen_range(0..50_000)),
                10..12 => Some(now + rng.gen_range(0..50_000)),
                _ => Some(now),
            }
        })
        .collect()
}

/// The answer a search must give: the first record at or after `t`.
fn linear(times: &[Option<i64>], t: i64) -> Option<(u64, i64)> {
    times
        .iter()
        .enumerate()
        .find_map(|(i, ts)| ts.filter(|&ts| ts >= t).map(|ts| (i as u64, ts)))
}

/// Times to search for: before, between and after the records', and every
/// record's own.
fn targets(times: &[Option<i64>], rng: &mut StdRng) -> Vec<i64> {
    let known: Vec<i64> = times.iter().flatten().copied().collect();
    let (low, high) = (known.iter().min().copied(), known.iter().max().copied());
    let (low, high) = (low.unwrap_or(0), high.unwrap_or(0));
    let mut out = vec![-5, 0, low - 1, low, high, high + 1, i64::MAX];
    out.extend((0..200).map(|_| rng.gen_range(low - 100..high + 100)));
    out.extend(known.iter().step_by(7));
    out
}

fn check_all(store: &mut Store, times: &[Option<i64>], targets: &[i64], what: &str) {
    for &t in targets {
        let found = store
            .find_time(KEY, t)
            .unwrap_or_else(|e| panic!("{what}: search for {t}: {e}"));
        assert_eq!(found, linear(times, t), "{what}: search for {t}");
    }
}

/// Writes `count` records with random timestamps and syncs; returns them.
fn write(store: &mut Store, count: u64, rng: &mut StdRng) -> Vec<Option<i64>> {
    let times = timestamps(count, rng);
    for (i, &t) in times.iter().enumerate() {
        store
            .append(KEY, &payload(t, i as u64, rng))
            .expect("append");
    }
    store.sync().expect("sync");
    times
}

/// Guards against: the index giving another record than a scan of every
/// record would, when timestamps are out of order (Kafka allows any
/// CreateTime), when records have none, in the active segment and in
/// records durable but not yet written out, and after the store reopens
/// cleanly or after a crash.
#[test]
fn searches_by_time_equal_a_scan_of_every_record() {
    for seed in 0..4 {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = TempDir::new().expect("tempdir");
        let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("open");
        assert_eq!(store.find_time(KEY, 0).expect("no log"), None);
        let mut times = write(&mut store, 3_000, &mut rng);
        assert!(segment_logs(&key_dir(dir.path(), KEY)).len() >= 3);
        let targets = targets(&times, &mut rng);
        check_all(&mut store, &times, &targets, "written");
        // Records appended but not durable are never an answer.
        store
            .append(KEY, &payload(Some(i64::MAX - 1), 0, &mut rng))
            .expect("append");
        check_all(&mut store, &times, &targets, "one not durable");
        store.sync().expect("sync");
        times.push(Some(i64::MAX - 1));
        check_all(&mut store, &times, &targets, "synced");
        store.close().expect("close");

        let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("reopen");
        check_all(&mut store, &times, &targets, "after a clean close");
        times.extend(write(&mut store, 500, &mut rng));
        check_all(&mut store, &times, &targets, "appended after reopening");
        drop(store);

        let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("reopen");
        check_all(&mut store, &times, &targets, "after a crash");
    }
}

/// Guards against: a log whose records have no timestamp (the Maelstrom
/// node's) answering anything, or its time index holding a time.
#[test]
fn records_without_timestamps_are_never_found() {
    let mut rng = StdRng::seed_from_u64(7);
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("open");
    let times: Vec<Option<i64>> = vec![None; 2_000];
    for i in 0..times.len() {
        store
            .append(KEY, &payload(None, i as u64, &mut rng))
            .expect("append");
    }
    store.sync().expect("sync");
    for t in [-1, 0, 1_700_000_000_000, i64::MAX] {
        assert_eq!(store.find_time(KEY, t).expect("search"), None, "{t}");
    }
    store.close().expect("close");
    // Every entry says "no timestamp" (-1).
    for log in segment_logs(&key_dir(dir.path(), KEY)) {
        let bytes = fs::read(log.with_extension("timeindex")).expect("time index");
        for entry in bytes[FILE_HEADER_SIZE..].chunks_exact(TIME_INDEX_ENTRY_SIZE) {
            assert_eq!(entry[..8], (-1i64).to_le_bytes(), "{}", log.display());
        }
    }
}

/// How a `.timeindex` is damaged before the store reopens.
fn damage(path: &Path, how: &str) {
    let len = fs::metadata(path).map_or(0, |m| m.len());
    let cut = |to: u64| {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(to))
            .expect("truncate time index");
    };
    match how {
        "deleted" => fs::remove_file(path).expect("delete time index"),
        "cut mid-entry" => cut(len - 5),
        "last entry lost" => cut(len - TIME_INDEX_ENTRY_SIZE as u64),
        "header only" => cut(FILE_HEADER_SIZE as u64),
        "empty" => cut(0),
        "zero-filled tail" => {
            let mut bytes = fs::read(path).expect("read");
            let from = bytes.len() - 3 * TIME_INDEX_ENTRY_SIZE;
            bytes[from..].fill(0);
            fs::write(path, bytes).expect("write");
        }
        "garbage appended" => {
            let mut bytes = fs::read(path).expect("read");
            bytes.extend((0..TIME_INDEX_ENTRY_SIZE * 2).map(|i| (i * 7 + 3) as u8));
            fs::write(path, bytes).expect("write");
        }
        "timestamp bit flipped" => {
            // Bit 40 of the first entry's timestamp, set in every time of
            // these tests: the entry says 2^40 ms earlier, which would send
            // a search past the chunk that holds its answer to a later one
            // whose entry is right. The entry's CRC catches it.
            let mut bytes = fs::read(path).expect("read");
            assert_eq!(bytes[FILE_HEADER_SIZE + 5] & 0x01, 0x01);
            bytes[FILE_HEADER_SIZE + 5] ^= 0x01;
            fs::write(path, bytes).expect("write");
        }
        "an entry of another chunk" => {
            // Two whole, valid entries swapped: each names another chunk.
            let mut bytes = fs::read(path).expect("read");
            let (a, b) = (FILE_HEADER_SIZE, FILE_HEADER_SIZE + TIME_INDEX_ENTRY_SIZE);
            let first: Vec<u8> = bytes[a..b].to_vec();
            bytes.copy_within(b..b + TIME_INDEX_ENTRY_SIZE, a);
            bytes[b..b + TIME_INDEX_ENTRY_SIZE].copy_from_slice(&first);
            fs::write(path, bytes).expect("write");
        }
        "another segment's" => {
            // A whole, valid file whose header names another base offset.
            let mut bytes = fs::read(path).expect("read");
            bytes[..FILE_HEADER_SIZE].copy_from_slice(&time_index_header(7));
            fs::write(path, bytes).expect("write");
        }
        other => unreachable!("{other}"),
    }
}

const DAMAGE: &[&str] = &[
    "deleted",
    "cut mid-entry",
    "last entry lost",
    "header only",
    "empty",
    "zero-filled tail",
    "garbage appended",
    "timestamp bit flipped",
    "an entry of another chunk",
    "another segment's",
];

/// Size of the active segment's `.log`.
fn active_bytes(data: &Path) -> u64 {
    let logs = segment_logs(&key_dir(data, KEY));
    fs::metadata(logs.last().expect("a segment")).map_or(0, |m| m.len())
}

/// Guards against: a damaged, short or missing time index (a crash, bit
/// rot, an older build's directory, which has none) being trusted, making
/// a search miss records or panic, instead of being rebuilt from the log.
#[test]
fn damaged_time_indexes_are_rebuilt_from_the_log() {
    for how in DAMAGE {
        for clean in [false, true] {
            let mut rng = StdRng::seed_from_u64(11);
            let dir = TempDir::new().expect("tempdir");
            let mut times;
            {
                let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("open");
                times = write(&mut store, 2_500, &mut rng);
                // The active segment too has several chunks to damage.
                while active_bytes(dir.path()) < SEGMENT / 3 {
                    times.extend(write(&mut store, 50, &mut rng));
                }
                if clean {
                    store.close().expect("close");
                }
            }
            let logs = segment_logs(&key_dir(dir.path(), KEY));
            let damaged: Vec<PathBuf> = [&logs[0], logs.last().expect("active")]
                .into_iter()
                .map(|log| log.with_extension("timeindex"))
                .collect();
            let originals: Vec<Vec<u8>> = damaged
                .iter()
                .map(|path| fs::read(path).expect("time index"))
                .collect();
            assert!(
                originals[0].len() > FILE_HEADER_SIZE + 5 * TIME_INDEX_ENTRY_SIZE,
                "the sealed segment's time index has entries"
            );
            for path in &damaged {
                damage(path, how);
            }
            let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("reopen");
            let targets = targets(&times, &mut rng);
            check_all(
                &mut store,
                &times,
                &targets,
                &format!("{how}, clean {clean}"),
            );
            // Searches reached both segments (every record's time was
            // searched for), so both files are rebuilt as they were.
            for (path, original) in damaged.iter().zip(&originals) {
                let rebuilt = fs::read(path).expect("rebuilt time index");
                assert_eq!(
                    &rebuilt,
                    original,
                    "{how}, clean {clean}: {}",
                    path.display()
                );
            }
        }
    }
}

/// Guards against: retention leaving a deleted segment's `.timeindex`
/// behind, and a search by time reaching into deleted segments.
#[test]
fn retention_deletes_time_indexes_with_their_segments() {
    let mut rng = StdRng::seed_from_u64(3);
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("open");
    let times = write(&mut store, 3_000, &mut rng);
    let kdir = key_dir(dir.path(), KEY);
    let logs = segment_logs(&kdir);
    let second: u64 = logs[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base offset");
    store.truncate_front(KEY, second).expect("truncate");
    assert!(!logs[0].with_extension("timeindex").exists());
    assert!(logs[1].with_extension("timeindex").exists());
    let kept: Vec<Option<i64>> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| t.filter(|_| i as u64 >= second))
        .collect();
    let targets = targets(&times, &mut rng);
    check_all(&mut store, &kept, &targets, "after retention");
}

/// Guards against: an active segment reopened without its `.timeindex`
/// (a directory an older build wrote) taking appends that the search then
/// trusts a short file for, instead of building the index whole on the
/// first search.
#[test]
fn appends_after_reopening_without_a_time_index_are_found() {
    let mut rng = StdRng::seed_from_u64(12);
    let dir = TempDir::new().expect("tempdir");
    let mut times;
    {
        let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("open");
        times = write(&mut store, 200, &mut rng);
        store.close().expect("close");
    }
    let logs = segment_logs(&key_dir(dir.path(), KEY));
    let active = logs.last().expect("a segment").with_extension("timeindex");
    fs::remove_file(&active).expect("delete the active time index");
    let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("reopen");
    // Several chunks, and a roll or more, before any search.
    times.extend(write(&mut store, 2_000, &mut rng));
    let targets = targets(&times, &mut rng);
    check_all(
        &mut store,
        &times,
        &targets,
        "appended after reopening without it",
    );
    store.close().expect("close");
    let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("reopen");
    check_all(&mut store, &times, &targets, "reopened once more");
}
