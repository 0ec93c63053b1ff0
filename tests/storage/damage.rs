//! Damaged files: garbage, flipped bits, zero-filled tails, broken indexes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use seglog::{Error, Store};
use tempfile::TempDir;

use crate::common::*;

const KEY: &str = "damaged";
/// Segment size for these tests: a few records each, several index entries
/// only with bigger segments (see the index tests).
const SMALL: u64 = 512;

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("append bytes");
}

fn flip_bit(path: &Path, position: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[position as usize] ^= 0x10;
    fs::write(path, bytes).expect("write");
}

fn expect_messages(store: &mut Store, count: u64) {
    let records = read_ok(store, KEY);
    let expected: Vec<_> = (0..count).map(|i| (i, message(i))).collect();
    assert_eq!(records, expected);
}

/// A store holding records 0 to 9 of `KEY`, checkpointed (so the segment
/// is their only copy: the journal no longer holds them) and closed
/// uncleanly, and the path of its one segment's `.log`.
fn ten_records() -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    fill(&mut store, KEY, 10);
    store.checkpoint().expect("checkpoint");
    drop(store);
    let log = segment_logs(&key_dir(dir.path(), KEY)).remove(0);
    (dir, log)
}

/// Writes ten records, appends `tail` to the active segment, reopens, and
/// checks that the records survive, the tail is cut, and appends go on.
fn assert_tail_is_cut(tail: &[u8]) {
    let (dir, log) = ten_records();
    let valid_len = fs::metadata(&log).expect("stat").len();
    append_bytes(&log, tail);
    let mut store = Store::open(dir.path(), Default::default()).expect("reopen");
    expect_messages(&mut store, 10);
    assert_eq!(fs::metadata(&log).expect("stat").len(), valid_len);
    assert_eq!(store.append(KEY, b"10").expect("append"), 10);
}

/// Guards against: garbage after the last record being read as records, or
/// making the key unreadable (commitlog's CorruptLog on every read).
#[test]
fn garbage_after_the_tail_is_cut() {
    assert_tail_is_cut(b"\xff\x13garbage that is not a record at all\x01\x02");
}

/// Guards against: preallocated zeros decoding as records (Redpanda #4113,
/// Iggy's resurrected tails).
#[test]
fn zero_filled_tail_is_not_mistaken_for_records() {
    assert_tail_is_cut(&[0u8; 8192]);
}

/// Guards against: a flipped bit in the last record being served, or taking
/// the records before it down with it.
#[test]
fn flipped_bit_in_the_tail_cuts_only_the_last_record() {
    let (dir, log) = ten_records();
    let bounds = record_bounds(&log);
    flip_bit(&log, bounds[9] + 20);
    let mut store = Store::open(dir.path(), Default::default()).expect("reopen");
    expect_messages(&mut store, 9);
    assert_eq!(store.append(KEY, b"9").expect("append"), 9);
}

/// Guards against: cutting acknowledged records after a damaged one in the
/// middle of the active segment, then reusing their offsets.
#[test]
fn flipped_bit_in_the_middle_of_the_active_segment_refuses_the_key() {
    let dir = TempDir::new().expect("tempdir");
    {
        let mut store = Store::open(dir.path(), Default::default()).expect("open");
        fill(&mut store, KEY, 10);
        fill(&mut store, "other", 3);
        store.checkpoint().expect("checkpoint");
    }
    let log = segment_logs(&key_dir(dir.path(), KEY)).remove(0);
    let bounds = record_bounds(&log);
    let before = fs::read(&log).expect("read");
    flip_bit(&log, bounds[4] + 18);
    let mut store = Store::open(dir.path(), Default::default()).expect("reopen");
    match read_all(&mut store, KEY, 0).1 {
        Some(Error::Corrupt { position, .. }) => assert_eq!(position, bounds[4]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.append(KEY, b"x"),
        Err(Error::Corrupt { .. })
    ));
    let mut damaged = before;
    damaged[bounds[4] as usize + 18] ^= 0x10;
    assert_eq!(fs::read(&log).expect("read"), damaged, "nothing was cut");
    assert_eq!(
        read_ok(&mut store, "other").len(),
        3,
        "other keys unaffected"
    );
}

/// Guards against: a corrupt record in a sealed segment being served, or the
/// records before it being lost (commitlog fails the whole read).
#[test]
fn flipped_bit_in_a_sealed_segment_serves_the_prefix_and_reports_the_rest() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), small_segments(SMALL)).expect("open");
    fill(&mut store, KEY, 40);
    store.checkpoint().expect("checkpoint");
    drop(store);
    let logs = segment_logs(&key_dir(dir.path(), KEY));
    assert!(logs.len() >= 3);
    let sealed = &logs[1];
    let bounds = record_bounds(sealed);
    let base: u64 = sealed
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base offset");
    flip_bit(sealed, bounds[2] + 17);
    let mut store = Store::open(dir.path(), small_segments(SMALL)).expect("reopen");
    let (records, error) = read_all(&mut store, KEY, 0);
    assert_eq!(
        records.len() as u64,
        base + 2,
        "records before the damage are served"
    );
    match error {
        Some(Error::Corrupt { file, position, .. }) => {
            assert_eq!((file, position), (sealed.clone(), bounds[2]));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let next_segment_base = base + (bounds.len() as u64 - 1);
    let (later, error) = read_all(&mut store, KEY, next_segment_base);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(later.first().map(|r| r.0), Some(next_segment_base));
    assert_eq!(later.len() as u64, 40 - next_segment_base);
    assert_eq!(store.append(KEY, b"40").expect("appends go on"), 40);
}

/// The index states recovery must survive, each checked on the active
/// segment and on a sealed one.
fn damage_index(path: &Path, how: &str) {
    match how {
        "deleted" => fs::remove_file(path).expect("delete index"),
        "truncated" => {
            let len = fs::metadata(path).expect("stat").len();
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(len - 5))
                .expect("truncate index");
        }
        "header only" => {
            let len = seglog::storage::format::FILE_HEADER_SIZE as u64;
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(len))
                .expect("truncate index");
        }
        "garbage" => {
            let len = fs::metadata(path).expect("stat").len() as usize;
            let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            fs::write(path, garbage).expect("garbage index");
        }
        "wrong positions" => {
            // A well-formed index whose entries point into the middle of records.
            let mut bytes = fs::read(path).expect("read");
            let header = seglog::storage::format::FILE_HEADER_SIZE;
            for entry in bytes[header..].chunks_exact_mut(8) {
                let position = u32::from_le_bytes(entry[4..8].try_into().expect("4 bytes"));
                entry[4..8].copy_from_slice(&(position + 3).to_le_bytes());
            }
            fs::write(path, bytes).expect("write");
        }
        other => unreachable!("{other}"),
    }
}

const INDEX_DAMAGE: &[&str] = &[
    "deleted",
    "truncated",
    "header only",
    "garbage",
    "wrong positions",
];

/// Guards against: a missing index panicking on open (commitlog, Redpanda
/// #10118) and a wrong index being trusted over the log.
#[test]
fn damaged_indexes_are_rebuilt_from_the_log() {
    // Messages of ~100 bytes and 64 KiB segments: each segment has ~15 index entries.
    const SEGMENT: u64 = 64 * 1024;
    const COUNT: u64 = 1500;
    let payload = |i: u64| format!("{{\"i\":{i},\"pad\":\"{}\"}}", "p".repeat(80)).into_bytes();
    for how in INDEX_DAMAGE {
        for clean in [false, true] {
            let dir = TempDir::new().expect("tempdir");
            {
                let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("open");
                for i in 0..COUNT {
                    store.append(KEY, &payload(i)).expect("append");
                }
                store.sync().expect("sync");
                if clean {
                    store.close().expect("close");
                }
            }
            let kdir = key_dir(dir.path(), KEY);
            let logs = segment_logs(&kdir);
            assert!(logs.len() >= 2);
            let originals: Vec<Vec<u8>> = logs
                .iter()
                .map(|log| fs::read(log.with_extension("index")).expect("index"))
                .collect();
            assert!(originals[0].len() > 5 * 8 + 24, "sealed index has entries");
            for log in [&logs[0], logs.last().expect("active")] {
                damage_index(&log.with_extension("index"), how);
            }
            let mut store = Store::open(dir.path(), small_segments(SEGMENT)).expect("reopen");
            // Reads starting everywhere, so every index entry is used.
            for from in (0..COUNT).step_by(37).chain([COUNT - 1]) {
                let mut first = None;
                store
                    .read(KEY, from, &mut |offset, bytes| {
                        first = Some((offset, bytes.to_vec()));
                        false
                    })
                    .unwrap_or_else(|e| panic!("{how}, clean {clean}: read from {from}: {e}"));
                assert_eq!(first, Some((from, payload(from))), "{how}, clean {clean}");
            }
            for (log, original) in [&logs[0], logs.last().expect("active")]
                .into_iter()
                .zip([&originals[0], originals.last().expect("active")])
            {
                let rebuilt = fs::read(log.with_extension("index")).expect("rebuilt index");
                assert_eq!(
                    &rebuilt,
                    original,
                    "{how}, clean {clean}: {}",
                    log.display()
                );
            }
            assert_eq!(store.append(KEY, b"1").expect("append"), COUNT);
        }
    }
}

/// Guards against: a clean-shutdown marker making recovery trust a tail that
/// was damaged after the close.
#[test]
fn clean_close_still_checks_the_tail() {
    let dir = TempDir::new().expect("tempdir");
    {
        let mut store = Store::open(dir.path(), Default::default()).expect("open");
        fill(&mut store, KEY, 10);
        store.close().expect("close");
    }
    assert!(dir.path().join("CLEAN").exists());
    let log = segment_logs(&key_dir(dir.path(), KEY)).remove(0);
    append_bytes(&log, b"torn after close");
    let mut store = Store::open(dir.path(), Default::default()).expect("reopen");
    assert!(store.opened_clean());
    assert!(!dir.path().join("CLEAN").exists(), "marker removed on open");
    expect_messages(&mut store, 10);
    assert_eq!(store.append(KEY, b"10").expect("append"), 10);
}
