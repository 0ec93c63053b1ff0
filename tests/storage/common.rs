//! Helpers shared by the storage tests.

use std::fs;
use std::path::{Path, PathBuf};

use seglog::{Store, StoreConfig};

pub use crate::support::dirs::copy_dir;

/// A store config with small segments, so a few records span several.
pub fn small_segments(segment_bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_bytes,
        ..StoreConfig::default()
    }
}

/// Every durable record of `key` from `from` on, or the error that stopped the read
/// together with what came before it.
pub fn read_all(
    store: &mut Store,
    key: &str,
    from: u64,
) -> (Vec<(u64, Vec<u8>)>, Option<seglog::Error>) {
    let mut out = Vec::new();
    let result = store.read(key, from, &mut |offset, payload| {
        out.push((offset, payload.to_vec()));
        true
    });
    (out, result.err())
}

/// Every durable record of `key`, asserting the read had no error.
pub fn read_ok(store: &mut Store, key: &str) -> Vec<(u64, Vec<u8>)> {
    let (records, error) = read_all(store, key, 0);
    assert!(error.is_none(), "read of {key:?} failed: {error:?}");
    records
}

/// A copy of the golden sample `data/<name>` in `tmp`, to open and change.
pub fn copy_sample(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(name),
        &dir,
    );
    dir
}

/// The message written as the `i`th record of a test key.
pub fn message(i: u64) -> Vec<u8> {
    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat((i % 7) as usize)).into_bytes()
}

/// Appends `count` messages to `key` and syncs.
pub fn fill(store: &mut Store, key: &str, count: u64) {
    for i in 0..count {
        let offset = store.append(key, &message(i)).expect("append");
        assert_eq!(offset, i);
    }
    store.sync().expect("sync");
}

/// The directory of a short key's log.
pub fn key_dir(data: &Path, key: &str) -> PathBuf {
    data.join("logs")
        .join(seglog::storage::keyname::escaped_name(key).expect("short key"))
}

/// The segment files of a key, `.log` paths ascending.
pub fn segment_logs(dir: &Path) -> Vec<PathBuf> {
    seglog::storage::recovery::list_segments(&seglog::storage::backend::RealFs, dir)
        .expect("list segments")
        .into_iter()
        .map(|base| dir.join(seglog::storage::format::log_file_name(base)))
        .collect()
}

/// Positions where each record of a `.log` file starts, and the file's end.
pub fn record_bounds(log: &Path) -> Vec<u64> {
    let bytes = fs::read(log).expect("read log");
    let mut position = seglog::storage::format::FILE_HEADER_SIZE;
    let mut bounds = vec![position as u64];
    while position < bytes.len() {
        let record =
            seglog::storage::format::decode_record(&bytes[position..]).expect("valid record");
        position += record.size();
        bounds.push(position as u64);
    }
    bounds
}
