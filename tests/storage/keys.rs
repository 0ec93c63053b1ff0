//! Hostile key names and lock ownership.

use std::fs;
use std::path::Path;

use seglog::{Error, Store};
use tempfile::TempDir;

use crate::common::*;

fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        ".",
        "..",
        "../../etc/passwd",
        "a/b",
        "/abs",
        "NUL",
        "k\u{0}",
        "CON.txt",
        "%2F",
        "k.x",
        "h.0000000000000000.0",
        "tmp.x",
        "LOCK",
        "offsets.journal",
        " ",
        "\n",
        "é",
        "日本語",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push("ключ".repeat(250)); // 1,000 characters, 2,000 bytes
    keys.push("🦀".repeat(1000)); // 1,000 characters, 4,000 bytes
    keys.push("/".repeat(300)); // escapes to 900 bytes: a hashed name
    keys
}

/// Every file and directory under `root`, relative, to check none escapes.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        assert!(
            path.starts_with(root),
            "{} outside {}",
            path.display(),
            root.display()
        );
        out.push(
            path.strip_prefix(root)
                .expect("prefix")
                .display()
                .to_string(),
        );
        if entry.file_type().expect("type").is_dir() {
            walk(root, &path, out);
        }
    }
}

/// Guards against: keys that collide on disk, escape the data directory, or
/// cannot be stored at all.
#[test]
fn hostile_key_names_are_stored_apart_and_inside_the_data_directory() {
    let parent = TempDir::new().expect("tempdir");
    let data = parent.path().join("data");
    let keys = hostile_keys();
    {
        let mut store = Store::open(&data, Default::default()).expect("open");
        for (i, key) in keys.iter().enumerate() {
            for n in 0..=i as u64 {
                store
                    .append(key, format!("[{i},{n}]").as_bytes())
                    .expect("append");
            }
            store.commit(key, i as u64).expect("commit");
        }
        store.sync().expect("sync");
    }
    let mut store = Store::open(&data, Default::default()).expect("reopen");
    for (i, key) in keys.iter().enumerate() {
        let records = read_ok(&mut store, key);
        let expected: Vec<_> = (0..=i as u64)
            .map(|n| (n, format!("[{i},{n}]").into_bytes()))
            .collect();
        assert_eq!(records, expected, "key {key:?}");
        assert_eq!(store.committed(key), Some(i as u64), "key {key:?}");
    }
    let mut paths = Vec::new();
    walk(&data, &data, &mut paths);
    let siblings: Vec<_> = fs::read_dir(parent.path()).expect("read").collect();
    assert_eq!(
        siblings.len(),
        1,
        "nothing written beside the data directory"
    );
    let key_dirs = fs::read_dir(data.join("logs")).expect("logs").count();
    assert_eq!(key_dirs, keys.len(), "one directory per key");
    let too_long = "x".repeat(seglog::storage::keyname::KEY_BYTES_MAX + 1);
    assert!(matches!(
        store.append(&too_long, b"1"),
        Err(Error::KeyTooLong { .. })
    ));
}

/// Guards against: two processes writing one directory (the second would
/// cut the first's unsynced tail as "torn").
#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path(), Default::default()).expect("open");
    match Store::open(dir.path(), Default::default()) {
        Err(Error::Locked { path }) => assert!(path.ends_with("LOCK")),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open succeeded"),
    }
    drop(store);
    Store::open(dir.path(), Default::default()).expect("open after the first closed");
}

/// Guards against: empty or oversized messages being written.
#[test]
fn message_sizes_are_checked() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    assert!(matches!(
        store.append("k", b""),
        Err(Error::BadMessageSize { .. })
    ));
    let huge = vec![b'1'; seglog::storage::format::MESSAGE_BYTES_MAX + 1];
    assert!(matches!(
        store.append("k", &huge),
        Err(Error::BadMessageSize { .. })
    ));
    let largest = vec![b'1'; seglog::storage::format::MESSAGE_BYTES_MAX];
    assert_eq!(store.append("k", &largest).expect("largest message"), 0);
    store.sync().expect("sync");
    assert_eq!(read_ok(&mut store, "k")[0].1.len(), largest.len());
}

/// `append_all` appends a key's records all or none: one record too large
/// anywhere in the list, or an empty one, and none of them is appended.
#[test]
fn append_all_appends_every_record_or_none() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    assert_eq!(store.append_all("k", &[b"1", b"2"]).expect("append"), 0);
    let huge = vec![b'7'; seglog::storage::format::MESSAGE_BYTES_MAX + 1];
    let with_huge: [&[u8]; 3] = [b"3", &huge, b"4"];
    let with_empty: [&[u8]; 2] = [b"3", b""];
    for bad in [&with_huge[..], &with_empty[..]] {
        let refused = store.append_all("k", bad);
        assert!(
            matches!(refused, Err(Error::BadMessageSize { .. })),
            "{refused:?}"
        );
        assert_eq!(store.next_offset("k").expect("next"), 2, "nothing appended");
    }
    assert_eq!(store.append_all("k", &[]).expect("nothing to append"), 2);
    assert_eq!(store.append_all("k", &[b"3", b"4"]).expect("append"), 2);
    store.sync().expect("sync");
    let mut read = Vec::new();
    store
        .read("k", 0, &mut |_, payload| {
            read.push(payload.to_vec());
            true
        })
        .expect("read");
    assert_eq!(read, [b"1", b"2", b"3", b"4"].map(|p| p.to_vec()));
}
