//! Regression tests for bugs found in review, each named after the bug.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use seglog::storage::journal;
use seglog::{Error, Store, StoreConfig};

use tempfile::TempDir;

use crate::common::*;

/// A second sync plan made while the first is in flight must fdatasync the
/// journal file the first wrote to: completing the second publishes its own
/// records, which must not be durable only if the first's sync succeeds.
/// (Before the journal, the same rule held for new directories.)
#[test]
fn plan_made_while_another_is_in_flight_still_fsyncs_the_journal() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    store.append("a", b"1").expect("append");
    let first = store.prepare_sync().expect("first plan");
    assert!(
        !first.is_direct(),
        "a new key's first records go through the journal"
    );
    assert_eq!(
        first.dirs().count(),
        0,
        "the journal stands in for directory syncs"
    );
    let journal_files: Vec<String> = first.files().map(str::to_string).collect();
    assert_eq!(journal_files.len(), 1);
    assert!(journal_files[0].ends_with(".wal"), "{journal_files:?}");
    store.append("b", b"2").expect("append");
    let second = store.prepare_sync().expect("second plan");
    let second_files: Vec<String> = second.files().map(str::to_string).collect();
    assert_eq!(second_files, journal_files, "still unsynced");
    let executed = second.execute();
    store
        .complete_sync(second, executed)
        .expect("second completes");
    assert_eq!(read_ok(&mut store, "b").len(), 1);
    assert_eq!(
        read_ok(&mut store, "a").len(),
        0,
        "the first plan publishes its own"
    );
    let executed = first.execute();
    store
        .complete_sync(first, executed)
        .expect("first completes");
    assert_eq!(read_ok(&mut store, "a").len(), 1);
    let third = store.prepare_sync().expect("third plan");
    assert_eq!(third.files().count(), 0, "nothing left unsynced");
    let executed = third.execute();
    store
        .complete_sync(third, executed)
        .expect("third completes");
}

/// A direct sync point (one key, nothing else) fsyncs the directory
/// entries its key's files still need, once: the records are not in the
/// journal, so a segment whose entry vanished would lose them.
#[test]
fn direct_sync_point_fsyncs_the_directories_its_key_needs_once() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    store.append("a", b"1").expect("append");
    store
        .sync()
        .expect("first sync: a new segment, through the journal");
    store.append("a", b"2").expect("append");
    let plan = store.prepare_sync().expect("direct plan");
    assert!(plan.is_direct());
    let dirs: Vec<_> = plan.dirs().map(|d| d.to_path_buf()).collect();
    assert_eq!(
        dirs,
        vec![dir.path().join("logs"), key_dir(dir.path(), "a")]
    );
    let files: Vec<String> = plan.files().map(str::to_string).collect();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with(".log"), "{files:?}");
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("complete");
    store.append("a", b"3").expect("append");
    let plan = store.prepare_sync().expect("direct plan");
    assert!(plan.is_direct());
    assert_eq!(plan.dirs().count(), 0, "synced by the plan before");
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("complete");
    assert_eq!(read_ok(&mut store, "a").len(), 3);
}

/// Completing one plan must publish only the commits it covered, not those
/// of a later plan that has not run.
#[test]
fn completing_one_plan_does_not_publish_a_later_plans_commits() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    store.commit("a", 1).expect("commit");
    let first = store.prepare_sync().expect("first plan");
    store.commit("a", 7).expect("commit");
    let second = store.prepare_sync().expect("second plan");
    let executed = first.execute();
    store
        .complete_sync(first, executed)
        .expect("first completes");
    assert_eq!(store.committed("a"), Some(1));
    let executed = second.execute();
    store
        .complete_sync(second, executed)
        .expect("second completes");
    assert_eq!(store.committed("a"), Some(7));
}

/// A zeroed header on the last segment, with valid records after it, is
/// damage, not a torn creation: deleting the file would lose acknowledged
/// records and hand their offsets out again.
#[test]
fn zeroed_header_before_valid_records_refuses_the_key_instead_of_deleting() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), small_segments(256)).expect("open");
    fill(&mut store, "k", 20);
    // The segments are the records' only copy once a checkpoint has run.
    store.checkpoint().expect("checkpoint");
    drop(store);
    let last = segment_logs(&key_dir(dir.path(), "k"))
        .pop()
        .expect("segments");
    let file = OpenOptions::new().write(true).open(&last).expect("open");
    file.write_all_at(&[0u8; seglog::storage::format::FILE_HEADER_SIZE], 0)
        .expect("zero the header");
    let mut store = Store::open(dir.path(), small_segments(256)).expect("reopen");
    assert!(matches!(
        read_all(&mut store, "k", 0).1,
        Some(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.append("k", b"x"),
        Err(Error::Corrupt { .. })
    ));
    assert!(last.exists(), "the damaged segment is kept for an operator");
}

/// After a clean close only the last index entry of the active segment is
/// checked on open; an earlier wrong entry must be caught when used and the
/// index rebuilt, not trusted.
#[test]
fn wrong_early_index_entry_after_clean_close_is_caught_when_used() {
    const COUNT: u64 = 400;
    let payload = |i: u64| format!("{{\"i\":{i},\"pad\":\"{}\"}}", "p".repeat(80)).into_bytes();
    let dir = TempDir::new().expect("tempdir");
    {
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        for i in 0..COUNT {
            store.append("k", &payload(i)).expect("append");
        }
        store.close().expect("close");
    }
    let index = segment_logs(&key_dir(dir.path(), "k"))
        .remove(0)
        .with_extension("index");
    let original = fs::read(&index).expect("index");
    let entries = (original.len() - seglog::storage::format::FILE_HEADER_SIZE) / 8;
    assert!(entries >= 3, "{entries} entries");
    // Move the first entry one record on, keeping the index ordered.
    let mut damaged = original.clone();
    let at = seglog::storage::format::FILE_HEADER_SIZE;
    let relative = u32::from_le_bytes(damaged[at..at + 4].try_into().expect("4 bytes"));
    let position = u32::from_le_bytes(damaged[at + 4..at + 8].try_into().expect("4 bytes"));
    let record = seglog::storage::format::record_size(payload(u64::from(relative)).len()) as u32;
    damaged[at..at + 4].copy_from_slice(&(relative - 1).to_le_bytes());
    damaged[at + 4..at + 8].copy_from_slice(&(position + record).to_le_bytes());
    fs::write(&index, damaged).expect("write");
    let mut store = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
    for from in [u64::from(relative), u64::from(relative) + 1, COUNT - 1] {
        let (records, error) = read_all(&mut store, "k", from);
        assert!(error.is_none(), "read from {from}: {error:?}");
        assert_eq!(records.first().map(|r| r.0), Some(from));
        assert_eq!(records.first().map(|r| r.1.clone()), Some(payload(from)));
    }
    assert_eq!(fs::read(&index).expect("index"), original, "rebuilt");
}

/// Compaction is due when the offsets file is several times what one entry
/// per key needs; with long keys a fixed per-key estimate made every
/// checkpoint rewrite the file.
#[test]
fn journal_of_long_keys_is_not_compacted_on_every_sync() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    let key = |i: usize| format!("{i:04}{}", "k".repeat(3996));
    for i in 0..1200 {
        store.commit(&key(i), 1).expect("commit");
    }
    store.sync().expect("sync");
    store.checkpoint().expect("checkpoint");
    let journal = dir.path().join(seglog::storage::offsets::OFFSETS_FILE_NAME);
    let mut len = fs::metadata(&journal).expect("stat").len();
    assert!(len > seglog::storage::offsets::COMPACT_BYTES_MIN);
    for round in 0..10u64 {
        store.commit(&key(0), 2 + round).expect("commit");
        store.sync().expect("sync");
        store.checkpoint().expect("checkpoint");
        let now = fs::metadata(&journal).expect("stat").len();
        // One entry: a record frame of flags, key length and the key.
        let entry = seglog::storage::format::record_size(
            seglog::storage::offsets::ENTRY_KEY_POS + key(0).len(),
        ) as u64;
        assert_eq!(now, len + entry, "round {round}: appended, not rewritten");
        len = now;
    }
    drop(store);
    let store = Store::open(dir.path(), Default::default()).expect("reopen");
    assert_eq!(store.committed(&key(0)), Some(11));
    assert_eq!(store.committed(&key(1199)), Some(1));
}

/// After a crash, a key whose segments already match the journal has
/// nothing replayed, yet the crashed run may never have synced those
/// segments, nor the key's directory entries: the checkpoint that deletes
/// the journal must sync them, or a power loss after it loses acknowledged
/// records that nothing can bring back.
#[test]
fn checkpoint_after_a_crash_syncs_segments_that_already_matched_the_journal() {
    let dir = TempDir::new().expect("tempdir");
    let config = small_segments(256);
    let mut store = Store::open(dir.path(), config.clone()).expect("open");
    fill(&mut store, "k", 20);
    let logs = segment_logs(&key_dir(dir.path(), "k"));
    assert!(logs.len() > 2, "several segments: {logs:?}");
    drop(store); // kill -9: the segments are written, not synced
    let mut store = Store::open(dir.path(), config).expect("reopen");
    assert_eq!(read_ok(&mut store, "k").len(), 20, "nothing to replay");
    let plan = store.prepare_checkpoint().expect("checkpoint plan");
    let (files, dirs) = plan.checkpoint_syncs();
    for log in &logs {
        assert!(files.contains(log), "{log:?} not in {files:?}");
    }
    for needed in [key_dir(dir.path(), "k"), dir.path().join("logs")] {
        assert!(dirs.contains(&needed), "{needed:?} not in {dirs:?}");
    }
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("checkpoint");
    assert_eq!(read_ok(&mut store, "k").len(), 20);
}

/// A direct sync point fdatasyncs the key's active segment. While a segment
/// sealed since the last checkpoint is unsynced, a power loss can cut it
/// short, and recovery then replays the journal from there and deletes the
/// later segments, direct records and all: so a direct sync point for such
/// a key fdatasyncs those segments too (once), and after a crash, the
/// segments recovery found.
#[test]
fn direct_sync_point_also_syncs_segments_sealed_since_the_checkpoint() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), small_segments(256)).expect("open");
    fill(&mut store, "k", 10);
    let logs = segment_logs(&key_dir(dir.path(), "k"));
    assert!(logs.len() > 1, "sealed");
    let log_names: Vec<String> = logs.iter().map(|p| p.display().to_string()).collect();
    store.append("k", &message(10)).expect("append");
    let plan = store.prepare_sync().expect("plan");
    assert!(plan.is_direct());
    let mut files: Vec<String> = plan.files().map(str::to_string).collect();
    files.sort();
    assert_eq!(files, log_names, "the sealed segments too");
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("complete");
    store.append("k", &message(11)).expect("append");
    let plan = store.prepare_sync().expect("plan");
    assert!(plan.is_direct());
    assert_eq!(plan.files().count(), 1, "synced once is enough");
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("complete");
    // After a crash, recovery cannot tell which segments the run synced.
    fill_more(&mut store, "k", 12);
    drop(store);
    let mut store = Store::open(dir.path(), small_segments(256)).expect("reopen");
    assert_eq!(read_ok(&mut store, "k").len(), 12 + 12);
    store.append("k", b"2").expect("append");
    let plan = store.prepare_sync().expect("plan");
    assert!(plan.is_direct());
    assert!(plan.files().count() > 1, "recovered segments are synced");
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("complete");
}

/// Appends `count` more messages to `key` through one sync point.
fn fill_more(store: &mut Store, key: &str, count: u64) {
    for i in 0..count {
        store.append(key, &message(i)).expect("append");
    }
    store.sync().expect("sync");
}

/// A crash while a rotation creates the next journal file can leave it
/// empty, shorter than its header or zero-filled, next to a file with no
/// marker naming it: no batch was ever written to it, so the store opens
/// with every record of the file before.
#[test]
fn rotation_interrupted_while_creating_the_file_opens() {
    for (what, damage) in [
        ("empty", None),
        ("short", Some(10)),
        ("zero-filled", Some(0)),
    ] {
        let dir = TempDir::new().expect("tempdir");
        let mut store = Store::open(dir.path(), Default::default()).expect("open");
        store.append("a", b"1").expect("append");
        store.append("b", b"2").expect("append");
        store.sync().expect("sync");
        store
            .checkpoint_interrupted(1)
            .expect("create the next file only");
        drop(store);
        let journal_dir = dir.path().join(journal::JOURNAL_DIR_NAME);
        let seqs =
            journal::list_files(&seglog::storage::backend::RealFs, &journal_dir).expect("list");
        assert_eq!(seqs.len(), 2, "{what}: {seqs:?}");
        let new = journal_dir.join(journal::file_name(seqs[1]));
        match damage {
            None => fs::write(&new, b"").expect("empty"),
            Some(0) => fs::write(&new, [0u8; 24]).expect("zeros"),
            Some(len) => {
                let bytes = fs::read(&new).expect("read");
                fs::write(&new, &bytes[..len]).expect("short");
            }
        }
        let mut store =
            Store::open(dir.path(), Default::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(read_ok(&mut store, "a"), vec![(0, b"1".to_vec())], "{what}");
        assert_eq!(read_ok(&mut store, "b"), vec![(0, b"2".to_vec())], "{what}");
        assert!(!new.exists(), "{what}: the unused file is removed");
        store.append("a", b"3").expect("append");
        store.sync().expect("sync");
        store.close().expect("close");
        let mut store = Store::open(dir.path(), Default::default()).expect("reopen");
        assert_eq!(read_ok(&mut store, "a").len(), 2, "{what}");
    }
}

/// A crash while a store is created leaves `journal/` without a
/// checkpoint, perhaps without file 0 or with file 0 torn: the store is
/// created again instead of refusing to open.
#[test]
fn store_creation_interrupted_is_created_again() {
    for file_0 in [None, Some(&b""[..]), Some(&[0u8; 24][..])] {
        let dir = TempDir::new().expect("tempdir");
        let journal_dir = dir.path().join(journal::JOURNAL_DIR_NAME);
        fs::create_dir_all(&journal_dir).expect("journal dir");
        if let Some(bytes) = file_0 {
            fs::write(journal_dir.join(journal::file_name(0)), bytes).expect("file 0");
        }
        let mut store = Store::open(dir.path(), Default::default())
            .unwrap_or_else(|e| panic!("{file_0:?}: {e}"));
        store.append("a", b"1").expect("append");
        store.sync().expect("sync");
        drop(store);
        let mut store = Store::open(dir.path(), Default::default()).expect("reopen");
        assert_eq!(read_ok(&mut store, "a"), vec![(0, b"1".to_vec())]);
    }
}

/// Once a sync point failed (the store is poisoned), no plan may be
/// confirmed: the failed fdatasync may have dropped pages a later one
/// reports clean. The syncer acknowledges only what `confirm_sync` accepts.
#[test]
fn poisoned_store_confirms_no_plan() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    store.append("a", b"1").expect("append");
    store.append("b", b"1").expect("append");
    let mut plan = store.prepare_sync().expect("plan");
    plan.execute().expect("execute");
    // Stands in for a sync point of another thread failing meanwhile: the
    // interrupted checkpoint leaves the store poisoned.
    store.checkpoint_interrupted(0).expect("poison");
    assert!(store.is_poisoned());
    assert!(matches!(
        store.confirm_sync(&mut plan),
        Err(Error::Poisoned)
    ));
    assert!(read_ok(&mut store, "a").is_empty(), "never shown");
    assert!(store.complete_sync(plan, Ok(())).is_err());
}

/// Two plans in flight share the journal file; when the first one's sync
/// fails, the second's may succeed on pages the failure dropped. It must
/// not be confirmed, even before the first plan is completed (the node's
/// syncer confirms without waiting for other plans).
#[test]
fn no_plan_is_confirmed_once_another_plans_sync_failed() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    store.append("a", b"1").expect("append");
    store.sync().expect("sync");
    store.append("a", b"2").expect("append");
    let first = store.prepare_sync().expect("first plan");
    assert!(
        first.dirs().count() > 0,
        "it fsyncs the key's new directory"
    );
    store.append("b", b"3").expect("append");
    let mut second = store.prepare_sync().expect("second plan");
    // The first plan's directory fsync fails: the directory is not there.
    let key_dir = key_dir(dir.path(), "a");
    let moved = key_dir.with_extension("moved");
    fs::rename(&key_dir, &moved).expect("move");
    let failed = first.execute();
    fs::rename(&moved, &key_dir).expect("move back");
    assert!(failed.is_err(), "the first plan failed");
    assert!(second.execute().is_err(), "a later execute refuses too");
    assert!(matches!(
        store.confirm_sync(&mut second),
        Err(Error::Poisoned)
    ));
    assert!(read_ok(&mut store, "b").is_empty(), "never shown");
}

/// A version 2 store whose checkpoint file was deleted after a checkpoint
/// left its journal without a batch looks like an interrupted creation: it
/// is converted again, and keeps every record and commit (found in review
/// of the creation fix).
#[test]
fn store_without_checkpoint_and_no_journal_batch_keeps_its_data() {
    for clean in [true, false] {
        let dir = TempDir::new().expect("tempdir");
        let mut store = Store::open(dir.path(), small_segments(256)).expect("open");
        fill(&mut store, "k", 30);
        store.commit("k", 7).expect("commit");
        store.sync().expect("sync");
        if clean {
            store.close().expect("close");
        } else {
            store.checkpoint().expect("checkpoint");
            drop(store);
        }
        fs::remove_file(dir.path().join("checkpoint")).expect("remove the checkpoint");
        let mut store = Store::open(dir.path(), small_segments(256)).expect("reopen");
        assert_eq!(read_ok(&mut store, "k").len(), 30, "clean={clean}");
        assert_eq!(store.committed("k"), Some(7));
        store.append("k", b"1").expect("append");
        store.sync().expect("sync");
        drop(store);
        let mut store = Store::open(dir.path(), small_segments(256)).expect("reopen");
        assert_eq!(read_ok(&mut store, "k").len(), 31, "clean={clean}");
    }
}
