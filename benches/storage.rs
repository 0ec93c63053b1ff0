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
//!    first use) and the open plus the first use of every key.
//!
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

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with
    // no such flag: do nothing then, the figures need a release build.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = bench_root();
    let records = scaled(APPEND_RECORDS);
    println!(
        "seglog storage benchmark: {} records of {RECORD_BYTES} bytes, fdatasync every {RECORDS_PER_SYNC}; data in {}",
        records,
        root.display()
    );
    println!("appends (best of {RUNS}):");
    let seglog_dir = fresh(&root, "seglog-append");
    let seglog = best((0..RUNS).map(|_| {
        let _ = std::fs::remove_dir_all(&seglog_dir);
        seglog_append(&seglog_dir, records)
    }));
    let commitlog_dir = fresh(&root, "commitlog-append");
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
    println!("read back from page cache (best of {RUNS}):");
    let seglog_reads = best((0..RUNS).map(|_| seglog_read(&seglog_dir, records)));
    let commitlog_reads = best((0..RUNS).map(|_| commitlog_read(&commitlog_dir, records)));
    print_rate("seglog (mmap, CRC checked)", records, &seglog_reads);
    print_rate("commitlog 0.2", records, &commitlog_reads);
    let _ = std::fs::remove_dir_all(&seglog_dir);
    let _ = std::fs::remove_dir_all(&commitlog_dir);
    println!("reopen:");
    reopen_bench(&root);
}
