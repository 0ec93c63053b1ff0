//! The write-ahead journal after crashes and damage: cut at every byte of
//! its last batches, garbage, zeros and flipped bits, deleted files,
//! half-written checkpoints, and segments ahead of, behind or missing from
//! what it holds.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use seglog::storage::journal;
use seglog::{Error, Store};
use tempfile::TempDir;

use crate::common::*;

/// The key whose records the journal holds past a checkpoint.
const KEY: &str = "j";
/// A key first written after the checkpoint: only the journal knows it.
const NEW_KEY: &str = "new";
/// A key only committed.
const COMMITTED: &str = "c";
/// Records of `KEY` before the checkpoint.
const BEFORE: u64 = 5;
/// Sync points after the checkpoint, each one journal batch.
const BATCHES: u64 = 4;
/// Records of `KEY` per batch.
const PER_BATCH: u64 = 2;

/// The live journal file of the store in `dir` (the only one).
fn live_journal(dir: &Path) -> PathBuf {
    let journal_dir = dir.join(journal::JOURNAL_DIR_NAME);
    let seqs =
        journal::list_files(&seglog::storage::backend::RealFs, &journal_dir).expect("list journal");
    assert_eq!(seqs.len(), 1, "{seqs:?}");
    journal_dir.join(journal::file_name(seqs[0]))
}

/// Positions where each batch of a journal file starts, and its end.
fn batch_bounds(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).expect("read journal");
    let scan = journal::scan_file(&bytes).expect("journal decodes");
    assert!(scan.stop.is_none());
    let mut bounds: Vec<u64> = scan.batches.iter().map(|(p, _)| *p).collect();
    bounds.push(scan.end_position);
    bounds
}

/// A store with `BEFORE` records of `KEY` checkpointed, then `BATCHES`
/// journal sync points each adding `PER_BATCH` records of `KEY`, one of
/// `NEW_KEY` and a commit of `COMMITTED`; dropped uncleanly. Returns it and
/// a copy of its `logs/` taken at the checkpoint: the segments as a power
/// loss could leave them, every write since lost.
fn journaled_store() -> (TempDir, TempDir) {
    let dir = TempDir::new().expect("tempdir");
    let at_checkpoint = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    fill(&mut store, KEY, BEFORE);
    store.checkpoint().expect("checkpoint");
    copy_dir(&dir.path().join("logs"), at_checkpoint.path());
    for batch in 0..BATCHES {
        for i in 0..PER_BATCH {
            let offset = BEFORE + batch * PER_BATCH + i;
            store.append(KEY, &message(offset)).expect("append");
        }
        store.append(NEW_KEY, &message(batch)).expect("append");
        store.commit(COMMITTED, batch * 10).expect("commit");
        let plan = store.prepare_sync().expect("prepare");
        assert!(!plan.is_direct());
        let executed = plan.execute();
        store.complete_sync(plan, executed).expect("complete");
    }
    (dir, at_checkpoint)
}

/// A copy of `pristine`, with `logs/` replaced by `segments` if given.
fn copy_of(pristine: &Path, segments: Option<&Path>) -> TempDir {
    let copy = TempDir::new().expect("tempdir");
    copy_dir(pristine, copy.path());
    if let Some(segments) = segments {
        fs::remove_dir_all(copy.path().join("logs")).expect("remove logs");
        copy_dir(segments, &copy.path().join("logs"));
    }
    copy
}

fn cut_file(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("cut");
}

/// Expects the store in `dir` to hold the first `batches` journal batches:
/// the records and commit they carry, nothing after.
fn assert_batches(dir: &Path, batches: u64, what: &str) {
    assert_records_and_commits(dir, batches, batches, what);
}

/// Expects the records of the first `batches` batches and the commit of
/// the first `commit_batches`.
fn assert_records_and_commits(dir: &Path, batches: u64, commit_batches: u64, what: &str) {
    let mut store = Store::open(dir, Default::default()).expect("reopen");
    let records = read_ok(&mut store, KEY);
    let expected: Vec<_> = (0..BEFORE + batches * PER_BATCH)
        .map(|i| (i, message(i)))
        .collect();
    assert_eq!(records, expected, "{what}");
    let new: Vec<_> = (0..batches).map(|i| (i, message(i))).collect();
    assert_eq!(read_ok(&mut store, NEW_KEY), new, "{what}");
    let commit = commit_batches.checked_sub(1).map(|b| b * 10);
    assert_eq!(store.committed(COMMITTED), commit, "{what}");
    // Appends go on after what survived, and survive a reopen.
    let next = BEFORE + batches * PER_BATCH;
    assert_eq!(
        store.append(KEY, b"\"more\"").expect("append"),
        next,
        "{what}"
    );
    store.sync().expect("sync");
    store.checkpoint().expect("checkpoint");
    drop(store);
    let mut store = Store::open(dir, Default::default()).expect("reopen again");
    assert_eq!(read_ok(&mut store, KEY).len() as u64, next + 1, "{what}");
}

/// Guards against: a torn journal batch losing the batches before it, or
/// being replayed in part. With the segments as a power loss leaves them
/// (every write since the checkpoint lost), a cut at any byte of the last
/// batches keeps exactly the whole batches before it.
#[test]
fn cut_journal_at_every_byte_keeps_the_whole_batches() {
    let (pristine, at_checkpoint) = journaled_store();
    let wal = live_journal(pristine.path());
    let bounds = batch_bounds(&wal);
    let end = *bounds.last().expect("bounds");
    let first_cut = bounds[bounds.len() - 3];
    for cut in first_cut..end {
        let copy = copy_of(pristine.path(), Some(at_checkpoint.path()));
        cut_file(&live_journal(copy.path()), cut);
        let whole = bounds.iter().filter(|&&b| b <= cut).count() as u64 - 1;
        // The first batch after the checkpoint's rotation is its own
        // (empty of records here): count only the test's batches.
        let batches = whole.saturating_sub(bounds.len() as u64 - 1 - BATCHES);
        assert_batches(copy.path(), batches, &format!("cut at {cut}"));
    }
}

/// Guards against: a journal cut short of what the segments hold (the
/// segments' writes survived, the journal's last batch did not) losing the
/// segments' records: they are kept (and synced). The last batch's commit
/// was only in the journal: it goes, as an unacknowledged commit may.
#[test]
fn segments_ahead_of_a_cut_journal_are_kept() {
    let (pristine, _) = journaled_store();
    let wal = live_journal(pristine.path());
    let bounds = batch_bounds(&wal);
    for cut in [bounds[bounds.len() - 2], bounds[bounds.len() - 2] + 5] {
        let copy = copy_of(pristine.path(), None);
        cut_file(&live_journal(copy.path()), cut);
        let what = format!("cut at {cut}");
        assert_records_and_commits(copy.path(), BATCHES, BATCHES - 1, &what);
    }
}

/// Guards against: garbage or preallocated zeros after the last batch
/// being read as batches or making the store unopenable; and a flipped bit
/// in the last batch being replayed.
#[test]
fn garbage_zeros_and_a_flipped_last_batch_are_cut() {
    let (pristine, at_checkpoint) = journaled_store();
    for tail in [
        &b"\x13\x00\x00\x00garbage, not a batch"[..],
        &[0u8; 8192][..],
    ] {
        let copy = copy_of(pristine.path(), Some(at_checkpoint.path()));
        let wal = live_journal(copy.path());
        let len = fs::metadata(&wal).expect("stat").len();
        OpenOptions::new()
            .append(true)
            .open(&wal)
            .and_then(|mut f| f.write_all(tail))
            .expect("append");
        assert_batches(copy.path(), BATCHES, "tail after the last batch");
        let reopened = Store::open(copy.path(), Default::default()).expect("reopen");
        drop(reopened);
        assert!(fs::metadata(&wal).map_or(true, |m| m.len() >= len));
    }
    let copy = copy_of(pristine.path(), Some(at_checkpoint.path()));
    let wal = live_journal(copy.path());
    let bounds = batch_bounds(&wal);
    flip_bit(&wal, bounds[bounds.len() - 2] + 30);
    assert_batches(copy.path(), BATCHES - 1, "flipped bit in the last batch");
}

/// Guards against: damage in the middle of the journal being taken for a
/// torn tail, which would drop acknowledged batches after it.
#[test]
fn flipped_bit_in_a_middle_batch_refuses_to_open() {
    let (pristine, _) = journaled_store();
    let copy = copy_of(pristine.path(), None);
    let wal = live_journal(copy.path());
    let bounds = batch_bounds(&wal);
    let damaged = bounds[bounds.len() - 3];
    flip_bit(&wal, damaged + 30);
    match Store::open(copy.path(), Default::default()) {
        Err(Error::Corrupt { file, position, .. }) => {
            assert_eq!((file, position), (wal, damaged));
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("opened over a hole in the journal"),
    }
}

/// Guards against: a deleted live journal file going unnoticed (its
/// acknowledged records and commits would be lost without a word), and a
/// stale one (covered by a checkpoint) being trouble.
#[test]
fn deleted_journal_file_refused_before_a_checkpoint_harmless_after() {
    let (pristine, _) = journaled_store();
    let copy = copy_of(pristine.path(), None);
    let wal = live_journal(copy.path());
    fs::remove_file(&wal).expect("delete");
    match Store::open(copy.path(), Default::default()) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, wal),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("opened without its live journal"),
    }
    // A checkpoint that stopped just before deleting the old journal file
    // leaves it stale: deleting it, or leaving it, loses nothing.
    for delete_stale in [false, true] {
        let copy = copy_of(pristine.path(), None);
        let old = live_journal(copy.path());
        let mut store = Store::open(copy.path(), Default::default()).expect("open");
        // Two rotation steps and six job steps: all but the deletion.
        store
            .checkpoint_interrupted(8)
            .expect("interrupted checkpoint");
        drop(store);
        assert!(old.exists(), "the stale file is left");
        if delete_stale {
            fs::remove_file(&old).expect("delete stale");
        }
        assert_batches(
            copy.path(),
            BATCHES,
            &format!("stale deleted: {delete_stale}"),
        );
        assert!(!old.exists(), "the stale file is gone after the reopen");
    }
}

/// Guards against: a half-written checkpoint (only ever `checkpoint.tmp`)
/// or a damaged one making the store unopenable or losing records.
#[test]
fn half_written_or_damaged_checkpoint_loses_nothing() {
    let (pristine, _) = journaled_store();
    let copy = copy_of(pristine.path(), None);
    fs::write(copy.path().join("checkpoint.tmp"), b"SGLGCK").expect("write tmp");
    assert_batches(copy.path(), BATCHES, "checkpoint.tmp left");
    assert!(!copy.path().join("checkpoint.tmp").exists());
    let copy = copy_of(pristine.path(), None);
    fs::write(copy.path().join("checkpoint"), b"garbage").expect("damage");
    assert_batches(copy.path(), BATCHES, "damaged checkpoint");
}

/// Guards against: a segment behind the journal (records the last
/// checkpoint synced are gone, and the journal starts after them) being
/// served with a gap or silently extended.
#[test]
fn segment_behind_the_journal_refuses_the_key() {
    let (pristine, _) = journaled_store();
    let copy = copy_of(pristine.path(), None);
    let log = segment_logs(&key_dir(copy.path(), KEY)).remove(0);
    let bounds = record_bounds(&log);
    cut_file(&log, bounds[2]);
    let mut store = Store::open(copy.path(), Default::default()).expect("open");
    assert!(matches!(
        read_all(&mut store, KEY, 0).1,
        Some(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.append(KEY, b"1"),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(read_ok(&mut store, NEW_KEY).len() as u64, BATCHES);
    // The journal keeps the key's records: no checkpoint may drop them.
    let seq = store.journal_seq();
    store.checkpoint().expect("the sync point runs");
    assert_eq!(store.journal_seq(), seq, "no rotation, no deletion");
    drop(store);
    assert_eq!(
        live_journal(copy.path()),
        live_journal(pristine.path())
            .file_name()
            .map(|n| copy.path().join("journal").join(n))
            .expect("name")
    );
}

/// Guards against: a power loss that lost a page in the middle of the
/// segment's unsynced records (later pages kept) being refused as a hole:
/// the journal holds those records, so they are replayed.
#[test]
fn hole_in_journaled_records_is_repaired_from_the_journal() {
    let (pristine, _) = journaled_store();
    let copy = copy_of(pristine.path(), None);
    let log = segment_logs(&key_dir(copy.path(), KEY)).remove(0);
    let bounds = record_bounds(&log);
    let mut bytes = fs::read(&log).expect("read");
    let (from, to) = (bounds[BEFORE as usize + 1], bounds[BEFORE as usize + 3]);
    bytes[from as usize..to as usize].fill(0);
    fs::write(&log, bytes).expect("write");
    assert_batches(copy.path(), BATCHES, "hole in journaled records");
}

/// Guards against: a key whose directory a power loss took (created after
/// the last checkpoint, never fsynced) losing its journaled records.
#[test]
fn key_directory_missing_is_rebuilt_from_the_journal() {
    let (pristine, _) = journaled_store();
    let copy = copy_of(pristine.path(), None);
    fs::remove_dir_all(key_dir(copy.path(), NEW_KEY)).expect("remove");
    let store = Store::open(copy.path(), Default::default()).expect("open");
    let mut keys = store.keys().expect("keys");
    keys.sort();
    assert_eq!(keys, vec![KEY.to_string(), NEW_KEY.to_string()]);
    drop(store);
    assert_batches(copy.path(), BATCHES, "key directory missing");
}

/// Guards against: a checkpoint deleting journal files whose records a
/// lazily opened key has not yet had replayed into its segments.
#[test]
fn checkpoint_replays_unopened_keys_before_deleting_the_journal() {
    let (pristine, at_checkpoint) = journaled_store();
    let copy = copy_of(pristine.path(), Some(at_checkpoint.path()));
    let mut store = Store::open(copy.path(), Default::default()).expect("open");
    store.append("other", b"1").expect("append");
    store.sync().expect("sync");
    store.checkpoint().expect("checkpoint");
    drop(store);
    let old = journal::list_files(
        &seglog::storage::backend::RealFs,
        &copy.path().join(journal::JOURNAL_DIR_NAME),
    )
    .expect("list");
    assert_eq!(old.len(), 1, "the old journal files are gone: {old:?}");
    assert_batches(copy.path(), BATCHES, "after a checkpoint that replayed");
}

fn flip_bit(path: &Path, position: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[position as usize] ^= 0x10;
    fs::write(path, bytes).expect("write");
}

/// The keys of the sync point over 16 MiB.
const BIG_KEYS: [&str; 2] = ["big-a", "big-b"];
/// Records of each of `BIG_KEYS` before it, in an earlier sync point.
const SMALL: u64 = 3;
/// Records of each key in it: two keys of this many 512 KiB records pass
/// `BATCH_BYTES_MAX` (16 MiB), so it is written as two batches or more.
const BIG_PER_KEY: u64 = 20;
/// The key committed before it (at 1) and in it (at 7).
const BIG_COMMITTED: &str = "big-c";

/// A record of about 512 KiB: a JSON string.
fn big_message(i: u64) -> Vec<u8> {
    format!("\"{i}:{}\"", "x".repeat(512 << 10)).into_bytes()
}

/// A store whose `SMALL` records of each of `BIG_KEYS` and a commit are
/// durable, and whose last journal sync point, prepared but never synced
/// (the crash came before its fdatasync returned), holds `BIG_PER_KEY`
/// records of each and a commit over several batches; nothing of it is in
/// a segment. Returns it and where that sync point's batches start in the
/// live journal file.
fn store_with_a_sync_point_of_several_batches() -> (TempDir, Vec<u64>) {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    for key in BIG_KEYS {
        for i in 0..SMALL {
            assert_eq!(store.append(key, &message(i)).expect("append"), i);
        }
    }
    store.commit(BIG_COMMITTED, 1).expect("commit");
    store.sync().expect("sync");
    let before = fs::metadata(live_journal(dir.path())).expect("stat").len();
    for i in 0..BIG_PER_KEY {
        for key in BIG_KEYS {
            store.append(key, &big_message(i)).expect("append");
        }
    }
    store.commit(BIG_COMMITTED, 7).expect("commit");
    let plan = store.prepare_sync().expect("prepare");
    assert!(!plan.is_direct());
    // The crash: the batches are written, never synced nor published.
    drop(plan);
    drop(store);
    let bytes = fs::read(live_journal(dir.path())).expect("read journal");
    let scan = journal::scan_file(&bytes).expect("journal decodes");
    assert!(scan.stop.is_none());
    let group: Vec<_> = scan
        .batches
        .iter()
        .filter(|(position, _)| *position >= before)
        .collect();
    assert!(group.len() >= 2, "{} batches", group.len());
    let (last, rest) = group.split_last().expect("batches");
    assert!(rest.iter().all(|(_, batch)| batch.continued));
    assert!(!last.1.continued);
    let starts = group.iter().map(|(position, _)| *position).collect();
    (dir, starts)
}

/// Guards against: a sync point over 16 MiB (several journal batches) torn
/// by a crash being recovered in part: the whole batches before its torn
/// last one kept, so that one key gets records of the sync point while
/// another, or the commit written under the same hold of the lock, does
/// not (the Raft state machine's sends without their `Applied` record).
/// Cut anywhere in or before its last batch, none of it is kept; the file
/// is cut where it started, and later writes take the offsets after the
/// records before it and survive a reopen.
#[test]
fn torn_sync_point_of_several_batches_keeps_none_of_it() {
    let (pristine, starts) = store_with_a_sync_point_of_several_batches();
    let wal = live_journal(pristine.path());
    let end = fs::metadata(&wal).expect("stat").len();
    let last = *starts.last().expect("starts");
    let group = starts[0];
    // Whole, it is kept whole.
    let copy = copy_of(pristine.path(), None);
    let mut store = Store::open(copy.path(), Default::default()).expect("open");
    for key in BIG_KEYS {
        let records = read_ok(&mut store, key);
        assert_eq!(records.len() as u64, SMALL + BIG_PER_KEY, "{key}");
        assert_eq!(records.last().map(|r| &r.1), Some(&big_message(19)));
    }
    assert_eq!(store.committed(BIG_COMMITTED), Some(7));
    drop(store);
    for cut in [last, last + 10, (last + end) / 2, end - 1] {
        let what = format!("cut at {cut} (sync point from {group}, last batch at {last})");
        let copy = copy_of(pristine.path(), None);
        let wal = live_journal(copy.path());
        cut_file(&wal, cut);
        let mut store = Store::open(copy.path(), Default::default()).expect("reopen");
        for key in BIG_KEYS {
            let expected: Vec<_> = (0..SMALL).map(|i| (i, message(i))).collect();
            assert_eq!(read_ok(&mut store, key), expected, "{what}: {key}");
        }
        assert_eq!(store.committed(BIG_COMMITTED), Some(1), "{what}");
        assert_eq!(
            fs::metadata(&wal).expect("stat").len(),
            group,
            "{what}: cut where the sync point starts"
        );
        // Later writes take the next offsets, in a sync point over both
        // keys that a reopen after a crash keeps.
        for key in BIG_KEYS {
            assert_eq!(store.append(key, b"\"after\"").expect("append"), SMALL);
        }
        store.commit(BIG_COMMITTED, 2).expect("commit");
        store.sync().expect("sync");
        drop(store);
        let mut store = Store::open(copy.path(), Default::default()).expect("reopen again");
        for key in BIG_KEYS {
            let mut expected: Vec<_> = (0..SMALL).map(|i| (i, message(i))).collect();
            expected.push((SMALL, b"\"after\"".to_vec()));
            assert_eq!(read_ok(&mut store, key), expected, "{what}: {key} after");
        }
        assert_eq!(store.committed(BIG_COMMITTED), Some(2), "{what}");
    }
}

/// A partition's record bytes (what `GET /topics/{t}` shows) are the same
/// once a sync point is confirmed, before its records are written out of
/// the journal, as after: only records coming change them.
#[test]
fn record_bytes_do_not_change_when_records_are_written_out() {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    assert_eq!(store.record_bytes(KEY).expect("bytes"), 0);
    store.append(KEY, &message(0)).expect("append");
    store.append(NEW_KEY, &message(0)).expect("append");
    assert_eq!(
        store.record_bytes(KEY).expect("bytes"),
        0,
        "not durable yet"
    );
    let mut plan = store.prepare_sync().expect("prepare");
    assert!(!plan.is_direct());
    let executed = plan.execute();
    assert!(executed.is_ok());
    store.confirm_sync(&mut plan).expect("confirm");
    let confirmed = store.record_bytes(KEY).expect("bytes");
    assert!(confirmed > message(0).len() as u64, "{confirmed}");
    store.complete_sync(plan, executed).expect("complete");
    assert_eq!(
        store.record_bytes(KEY).expect("bytes"),
        confirmed,
        "written out"
    );
    store.checkpoint().expect("checkpoint");
    drop(store);
    let mut store = Store::open(dir.path(), Default::default()).expect("open");
    assert_eq!(
        store.record_bytes(KEY).expect("bytes"),
        confirmed,
        "reopened"
    );
}
