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
/// (commitlog), or recovery resuming at the wrong offset after a cut. The
/// records cut here were written by a direct sync point that never synced
/// (the only writes that reach a segment before they are durable).
#[test]
fn cut_active_segment_at_every_byte_keeps_the_valid_prefix() {
    let pristine = TempDir::new().expect("tempdir");
    {
        let mut store = Store::open(pristine.path(), Default::default()).expect("open");
        fill(&mut store, KEY, RECORDS - TAIL_RECORDS as u64 - 1);
        store.checkpoint().expect("checkpoint");
        // The key's first sync point after the checkpoint is a journal one;
        // only a key the journal mentions durably gets direct ones.
        let mentioned = RECORDS - TAIL_RECORDS as u64 - 1;
        store.append(KEY, &message(mentioned)).expect("append");
        store.sync().expect("sync");
        for i in RECORDS - TAIL_RECORDS as u64..RECORDS {
            store.append(KEY, &message(i)).expect("append");
        }
        let plan = store.prepare_sync().expect("prepare");
        assert!(plan.is_direct(), "one key, no commits: a direct sync point");
        // Dropped before the fdatasync: a crash in the middle of the sync point.
    }
    let log = segment_logs(&key_dir(pristine.path(), KEY)).remove(0);
    let bounds = record_bounds(&log);
    assert_eq!(bounds.len() as u64, RECORDS + 1);
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
        assert_survivors(copy.path(), survivors, cut);
    }
}

/// Guards against: a crash that tears the segment's unsynced tail losing
/// records whose journal batch was durable. Every cut of the records the
/// journal holds is repaired from it.
#[test]
fn cut_journaled_segment_at_every_byte_is_repaired_from_the_journal() {
    let pristine = TempDir::new().expect("tempdir");
    {
        let mut store = Store::open(pristine.path(), Default::default()).expect("open");
        fill(&mut store, KEY, RECORDS);
        // Dropped without close: the reopen below takes the unclean path.
    }
    let log = segment_logs(&key_dir(pristine.path(), KEY)).remove(0);
    let bounds = record_bounds(&log);
    let end = *bounds.last().expect("bounds");
    for cut in (0..end).step_by(7).chain(end - 20..end) {
        let copy = TempDir::new().expect("tempdir");
        copy_dir(pristine.path(), copy.path());
        let copied_log = segment_logs(&key_dir(copy.path(), KEY)).remove(0);
        OpenOptions::new()
            .write(true)
            .open(&copied_log)
            .and_then(|f| f.set_len(cut))
            .expect("cut");
        assert_survivors(copy.path(), RECORDS, cut);
    }
}

/// Reopens the store in `dir`, expects exactly the first `survivors` test
/// messages of `KEY`, appends one more, and expects it after another reopen.
fn assert_survivors(dir: &std::path::Path, survivors: u64, cut: u64) {
    let mut store = Store::open(dir, Default::default()).expect("reopen");
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
    let mut store = Store::open(dir, Default::default()).expect("reopen again");
    let records = read_ok(&mut store, KEY);
    assert_eq!(records.len() as u64, survivors + 1, "cut at {cut}");
    assert_eq!(
        records.last().map(|r| r.1.as_slice()),
        Some(&b"\"next\""[..])
    );
}

/// Guards against: a checkpoint interrupted while it appends to the
/// offsets file leaving commits lost or the store unable to open. The
/// journal still holds every commit the torn entries carried.
#[test]
fn cut_offsets_journal_at_every_byte_keeps_every_commit() {
    let pristine = TempDir::new().expect("tempdir");
    let commits: Vec<(String, u64)> = (0..8).map(|i| (format!("key-{}", i % 3), i * 10)).collect();
    let offsets_path = pristine
        .path()
        .join(seglog::storage::offsets::OFFSETS_FILE_NAME);
    let before;
    {
        let mut store = Store::open(pristine.path(), Default::default()).expect("open");
        for (key, offset) in &commits[..2] {
            store.commit(key, *offset).expect("commit");
        }
        store.sync().expect("sync");
        store.checkpoint().expect("checkpoint");
        before = fs::metadata(&offsets_path).expect("stat").len();
        for (key, offset) in &commits[2..] {
            store.commit(key, *offset).expect("commit");
            store.sync().expect("sync");
        }
        // The rotation's two steps, then segments, directories, offsets:
        // the checkpoint stops with the offsets written, no checkpoint file.
        store
            .checkpoint_interrupted(5)
            .expect("interrupted checkpoint");
    }
    let bytes = fs::read(&offsets_path).expect("read offsets");
    assert!(
        bytes.len() as u64 > before,
        "the checkpoint appended entries"
    );
    let mut expected = std::collections::HashMap::new();
    for (key, offset) in &commits {
        expected.insert(key.clone(), *offset);
    }
    for cut in before..bytes.len() as u64 {
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
        store.checkpoint().expect("checkpoint after recovery");
        drop(store);
        let store = Store::open(copy.path(), Default::default()).expect("reopen again");
        assert_eq!(store.committed("key-0"), Some(1000), "cut at {cut}");
        assert_eq!(store.committed("key-1"), expected.get("key-1").copied());
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
