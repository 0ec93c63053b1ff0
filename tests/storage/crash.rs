//! Crashes at every byte: a cut anywhere in the unsynced tail keeps the
//! valid prefix, and appends continue at the right offset.

use std::fs::{self, OpenOptions};

use seglog::Store;
use tempfile::TempDir;

use crate::common::*;

const KEY: &str = "cut";
/// Records written before the cut; the last `TAIL_RECORDS` are cut at every byte.
const RECORDS: u64 = 12;
const TAIL_RECORDS: usize = 4;

/// Guards against: a torn last record making the whole log unreadable
/// (commitlog), or recovery resuming at the wrong offset after a cut.
#[test]
fn cut_active_segment_at_every_byte_keeps_the_valid_prefix() {
    let pristine = TempDir::new().expect("tempdir");
    {
        let mut store = Store::open(pristine.path(), Default::default()).expect("open");
        fill(&mut store, KEY, RECORDS);
        // Dropped without close: the reopen below takes the unclean path.
    }
    let log = segment_logs(&key_dir(pristine.path(), KEY)).remove(0);
    let bounds = record_bounds(&log);
    let first_cut = bounds[bounds.len() - 1 - TAIL_RECORDS];
    let end = *bounds.last().expect("bounds");
    for cut in first_cut..end {
        let copy = TempDir::new().expect("tempdir");
        copy_dir(pristine.path(), copy.path());
        let copied_log = segment_logs(&key_dir(copy.path(), KEY)).remove(0);
        OpenOptions::new()
            .write(true)
            .open(&copied_log)
            .and_then(|f| f.set_len(cut))
            .expect("cut");
        let survivors = bounds.iter().filter(|&&b| b <= cut).count() as u64 - 1;
        let mut store = Store::open(copy.path(), Default::default()).expect("reopen");
        let records = read_ok(&mut store, KEY);
        assert_eq!(records.len() as u64, survivors, "cut at {cut}");
        for (i, (offset, payload)) in records.iter().enumerate() {
            assert_eq!(
                (*offset, payload),
                (i as u64, &message(i as u64)),
                "cut at {cut}"
            );
        }
        assert_eq!(
            store.append(KEY, b"\"next\"").expect("append"),
            survivors,
            "cut at {cut}"
        );
        store.sync().expect("sync");
        drop(store);
        let mut store = Store::open(copy.path(), Default::default()).expect("reopen again");
        let records = read_ok(&mut store, KEY);
        assert_eq!(records.len() as u64, survivors + 1, "cut at {cut}");
        assert_eq!(
            records.last().map(|r| r.1.as_slice()),
            Some(&b"\"next\""[..])
        );
    }
}

/// Guards against: a crash during a commit leaving a journal that loses
/// earlier commits or cannot be opened.
#[test]
fn cut_offsets_journal_at_every_byte_keeps_the_earlier_commits() {
    let pristine = TempDir::new().expect("tempdir");
    let commits: Vec<(String, u64)> = (0..8).map(|i| (format!("key-{}", i % 3), i * 10)).collect();
    {
        let mut store = Store::open(pristine.path(), Default::default()).expect("open");
        for (key, offset) in &commits {
            store.commit(key, *offset).expect("commit");
            store.sync().expect("sync");
        }
    }
    let journal = pristine
        .path()
        .join(seglog::storage::offsets::OFFSETS_FILE_NAME);
    let bytes = fs::read(&journal).expect("read journal");
    // Entry boundaries, from the same decoder the store uses.
    let scan = seglog::storage::offsets::decode_journal(&bytes).expect("journal decodes");
    assert_eq!(scan.entries.len(), commits.len());
    let first_cut = scan.entries[commits.len() - 3].2;
    for cut in first_cut..bytes.len() as u64 {
        let copy = TempDir::new().expect("tempdir");
        copy_dir(pristine.path(), copy.path());
        let copied = copy
            .path()
            .join(seglog::storage::offsets::OFFSETS_FILE_NAME);
        OpenOptions::new()
            .write(true)
            .open(&copied)
            .and_then(|f| f.set_len(cut))
            .expect("cut");
        let whole = scan
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                scan.entries
                    .get(i + 1)
                    .map_or(bytes.len() as u64, |next| next.2)
                    <= cut
            })
            .count();
        let mut expected = std::collections::HashMap::new();
        for (key, offset) in &commits[..whole] {
            expected.insert(key.clone(), *offset);
        }
        let mut store = Store::open(copy.path(), Default::default()).expect("reopen");
        for key in ["key-0", "key-1", "key-2"] {
            assert_eq!(
                store.committed(key),
                expected.get(key).copied(),
                "cut at {cut}, {key}"
            );
        }
        store.commit("key-0", 1000).expect("commit after recovery");
        store.sync().expect("sync");
        drop(store);
        let store = Store::open(copy.path(), Default::default()).expect("reopen again");
        assert_eq!(store.committed("key-0"), Some(1000), "cut at {cut}");
    }
}

/// Guards against: unsynced appends becoming visible to readers, which a
/// crash could then take away (KAFKA-10101 "phantom" reads).
#[test]
fn appends_are_invisible_until_synced() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    store.append(KEY, b"1").expect("append");
    assert!(read_ok(&mut store, KEY).is_empty());
    assert_eq!(store.durable_next_offset(KEY).expect("next"), 0);
    store.commit(KEY, 0).expect("commit");
    assert_eq!(store.committed(KEY), None);
    let plan = store.prepare_sync().expect("prepare");
    store.append(KEY, b"2").expect("append during sync");
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("complete");
    assert_eq!(read_ok(&mut store, KEY), vec![(0, b"1".to_vec())]);
    assert_eq!(store.committed(KEY), Some(0));
    store.sync().expect("sync");
    assert_eq!(read_ok(&mut store, KEY).len(), 2);
}

/// Guards against: a crash between creating a segment file and syncing it
/// leaving a headerless file that makes the key unreadable.
#[test]
fn torn_segment_creation_is_removed() {
    let dir = TempDir::new().expect("tempdir");
    {
        let mut store = Store::open(dir.path(), small_segments(256)).expect("open");
        fill(&mut store, KEY, 20);
    }
    let kdir = key_dir(dir.path(), KEY);
    let logs = segment_logs(&kdir);
    assert!(logs.len() > 2, "small segments roll");
    let next_base: u64 = 20;
    for torn in [&b""[..], &[0u8; 10][..], &[0u8; 24][..], &b"SGLGL"[..]] {
        let path = kdir.join(seglog::storage::format::log_file_name(next_base));
        fs::write(&path, torn).expect("write torn segment");
        let mut store = Store::open(dir.path(), small_segments(256)).expect("reopen");
        assert_eq!(read_ok(&mut store, KEY).len(), 20);
        assert!(!path.exists(), "torn segment {torn:?} removed");
        assert_eq!(store.durable_next_offset(KEY).expect("next"), 20);
    }
    let mut store = Store::open(dir.path(), small_segments(256)).expect("reopen");
    assert_eq!(store.append(KEY, b"20").expect("append"), 20);
    store.sync().expect("sync");
    assert_eq!(read_ok(&mut store, KEY).len(), 21);
}
