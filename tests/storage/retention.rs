//! Retention (`truncate_front`, `enforce_retention`) and key removal
//! (`remove_key`) on real files: what they delete, what reads see, what
//! reopening sees, and what recovery makes of a crash at each of their steps
//! (`segment-format.md`, "Retention and removal"). A crash is simulated by
//! dropping the store without closing it, and its partial states are built
//! by hand: the store's files before the operation with the journal after
//! it, and any subset of the deletions done, undone or only half there.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use seglog::storage::store::{Retention, SegmentInfo};
use seglog::{Error, Store, StoreConfig};
use tempfile::TempDir;

use crate::common::{copy_dir, copy_sample, key_dir};

/// Small segments: a few records each, so 60 records span many.
const SEGMENT_BYTES: u64 = 256;
const KEY: &str = "orders";

fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes: SEGMENT_BYTES,
        ..StoreConfig::default()
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, config()).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

fn message(i: u64) -> Vec<u8> {
    format!("{{\"n\":{i}}}").into_bytes()
}

/// Appends messages `from..to` to `key` (offsets must follow on) and syncs.
fn fill(store: &mut Store, key: &str, from: u64, to: u64) {
    for i in from..to {
        assert_eq!(store.append(key, &message(i)).expect("append"), i);
    }
    store.sync().expect("sync");
}

/// Every record read from `from`, checked contiguous, as offsets.
fn offsets_from(store: &mut Store, key: &str, from: u64) -> Vec<u64> {
    let mut out = Vec::new();
    store
        .read(key, from, &mut |offset, payload| {
            assert_eq!(payload, message(offset), "payload of {offset}");
            out.push(offset);
            true
        })
        .unwrap_or_else(|e| panic!("read {key} from {from}: {e}"));
    for pair in out.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "contiguous");
    }
    out
}

/// Asserts the log of `key` is exactly `start..end`, read from 0 and from
/// its start, with `log_start` agreeing.
fn assert_log(store: &mut Store, key: &str, start: u64, end: u64) {
    assert_eq!(store.log_start(key).expect("log start"), start, "log start");
    let expected: Vec<u64> = (start..end).collect();
    assert_eq!(offsets_from(store, key, 0), expected, "read from 0");
    assert_eq!(offsets_from(store, key, start), expected, "read from start");
    assert_eq!(store.next_offset(key).expect("next"), end, "next offset");
}

/// [`assert_log`], then a crash (the store dropped unclosed) and a reopen,
/// then `assert_log` again; returns the reopened store.
fn assert_log_across_crash(mut store: Store, dir: &Path, key: &str, start: u64, end: u64) -> Store {
    assert_log(&mut store, key, start, end);
    drop(store);
    let mut store = open(dir);
    assert_log(&mut store, key, start, end);
    store
}

fn bases_on_disk(dir: &Path) -> Vec<u64> {
    seglog::storage::recovery::list_segments(&seglog::storage::backend::RealFs, dir).expect("list")
}

fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(seglog::storage::format::log_file_name(base))
}

/// `pristine`'s files with `after`'s journal: a crash right after the
/// operation's journal entry was durable, before any file was touched.
fn entry_only(pristine: &Path, after: &Path, to: &Path) {
    copy_dir(pristine, to);
    fs::remove_dir_all(to.join("journal")).expect("drop old journal");
    copy_dir(&after.join("journal"), &to.join("journal"));
}

/// A store with 60 records of `KEY` in many segments, its journal still
/// holding them all (no checkpoint yet), and a copy of it taken then.
struct Fixture {
    _tmp: TempDir,
    store: Store,
    segments: Vec<SegmentInfo>,
    /// The store's directory.
    dir: PathBuf,
    /// The copy taken after the 60 records.
    pristine: PathBuf,
    /// Where further copies go.
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = TempDir::new().expect("tmp");
        let mut store = open(&tmp.path().join("a"));
        fill(&mut store, KEY, 0, 60);
        let segments = store.segments(KEY).expect("segments");
        assert!(segments.len() >= 6, "{} segments", segments.len());
        copy_dir(&tmp.path().join("a"), &tmp.path().join("pristine"));
        Fixture {
            dir: tmp.path().join("a"),
            pristine: tmp.path().join("pristine"),
            root: tmp.path().to_path_buf(),
            _tmp: tmp,
            store,
            segments,
        }
    }
}

#[test]
fn segments_are_listed_oldest_first_and_chain() {
    let f = Fixture::new();
    let segments = &f.segments;
    assert_eq!(segments[0].base, 0);
    for pair in segments.windows(2) {
        assert_eq!(pair[0].end, pair[1].base, "ends where the next starts");
        assert!(pair[0].sealed);
    }
    let last = segments.last().expect("active");
    assert!(!last.sealed);
    assert_eq!(last.end, 60);
    for segment in segments {
        let on_disk =
            fs::metadata(log_path(&key_dir(&f.dir.clone(), KEY), segment.base)).expect("stat");
        assert_eq!(segment.bytes, on_disk.len());
    }
}

#[test]
fn truncate_front_deletes_whole_sealed_segments_and_reads_start_there() {
    let mut f = Fixture::new();
    let dir = key_dir(&f.dir.clone(), KEY);
    let third = f.segments[2].base;
    // Inside the third segment: only the first two go.
    let start = f.store.truncate_front(KEY, third + 1).expect("truncate");
    assert_eq!(start, third);
    assert_log(&mut f.store, KEY, third, 60);
    assert_eq!(bases_on_disk(&dir)[0], third);
    assert!(
        !dir.join(seglog::storage::format::index_file_name(0))
            .exists()
    );
    assert_eq!(f.store.segments(KEY).expect("segments")[0].base, third);
    // Nothing below the start, or a start not past it: nothing changes.
    assert_eq!(f.store.truncate_front(KEY, 1).expect("again"), third);
    assert_eq!(f.store.truncate_front(KEY, third).expect("again"), third);
    // Never the active segment, whatever `before` is.
    let active = f.segments.last().expect("active").base;
    assert_eq!(f.store.truncate_front(KEY, u64::MAX).expect("all"), active);
    assert_log(&mut f.store, KEY, active, 60);
    // Appends go on at the same offsets.
    fill(&mut f.store, KEY, 60, 70);
    assert_log(&mut f.store, KEY, active, 70);
    // Reopened after a crash (journal replay over a truncated log), after a
    // checkpoint, and after a clean close.
    drop(f.store);
    let mut store = open(&f.dir.clone());
    assert_log(&mut store, KEY, active, 70);
    store.checkpoint().expect("checkpoint");
    drop(store);
    let mut store = open(&f.dir.clone());
    assert_log(&mut store, KEY, active, 70);
    store.close().expect("close");
    let mut store = open(&f.dir.clone());
    assert!(store.opened_clean());
    assert_log(&mut store, KEY, active, 70);
    assert_eq!(bases_on_disk(&dir)[0], active);
}

#[test]
fn a_key_with_no_log_has_start_zero_and_no_segments() {
    let tmp = TempDir::new().expect("tmp");
    let mut store = open(tmp.path());
    assert_eq!(store.log_start("none").expect("start"), 0);
    assert!(store.segments("none").expect("segments").is_empty());
    assert_eq!(store.truncate_front("none", 10).expect("truncate"), 0);
    store.remove_key("none").expect("remove nothing");
    assert!(!key_dir(tmp.path(), "none").exists());
}

/// The journal since the last checkpoint holds records of the deleted range:
/// recovery neither re-creates them nor calls the key corrupt, and
/// checkpoints go on (the bug this guards against: replaying the journal
/// into the first segment and deleting everything after it).
#[test]
fn journal_records_of_a_deleted_range_do_not_come_back() {
    let mut f = Fixture::new();
    let start = f.segments[3].base;
    assert_eq!(f.store.truncate_front(KEY, start).expect("truncate"), start);
    drop(f.store);
    let mut store = open(&f.dir.clone());
    assert_log(&mut store, KEY, start, 60);
    let dir = key_dir(&f.dir.clone(), KEY);
    assert_eq!(bases_on_disk(&dir)[0], start);
    store.checkpoint().expect("checkpoint after recovery");
    // Another key the journal holds records for, never opened before the
    // checkpoint: the checkpoint recovers it.
    fill(&mut store, "other", 0, 30);
    let other_start = store.segments("other").expect("segments")[2].base;
    store
        .truncate_front("other", other_start)
        .expect("truncate");
    drop(store);
    let mut store = open(&f.dir.clone());
    store.checkpoint().expect("checkpoint recovers other first");
    assert_log(&mut store, "other", other_start, 30);
    assert_log(&mut store, KEY, start, 60);
}

/// A crash at each step of a truncation, built from the files before it
/// and the journal after it: the entry durable and no file deleted; any
/// subset of the deletions done (a power loss undoes unfsynced unlinks in
/// any order); a deleted file brought back only partly there. Each reopens
/// to the new log start with every record from it on; nothing below it is
/// served.
#[test]
fn a_crash_at_each_step_of_a_truncation_recovers_the_new_start() {
    let mut f = Fixture::new();
    let start = f.segments[4].base;
    let deleted: Vec<u64> = f.segments[..4].iter().map(|s| s.base).collect();
    f.store.truncate_front(KEY, start).expect("truncate");
    f.store.sync().expect("sync");
    // The operation's files are as a crash would leave them; the store is gone.
    drop(f.store);
    let after = f.root.join("a");
    let subsets: Vec<Vec<u64>> = vec![
        vec![],           // entry durable, nothing deleted yet
        vec![deleted[0]], // kill -9 after the first deletion
        vec![deleted[0], deleted[1], deleted[2]],
        vec![deleted[1], deleted[3]], // power loss: any subset undone
        deleted.clone(),              // all deleted, directory not fsynced
    ];
    for (i, gone) in subsets.iter().enumerate() {
        let dir = f.root.join(format!("case{i}"));
        entry_only(&f.pristine.clone(), &after, &dir);
        let kd = key_dir(&dir, KEY);
        for &base in gone {
            fs::remove_file(log_path(&kd, base)).expect("delete");
        }
        let mut store = open(&dir);
        assert_log(&mut store, KEY, start, 60);
        assert_eq!(
            bases_on_disk(&kd)[0],
            start,
            "case {i}: below the start deleted"
        );
        store.checkpoint().expect("checkpoint");
        drop(store);
        let mut store = open(&dir);
        assert_log(&mut store, KEY, start, 60);
    }
    // A deleted segment brought back with only part of its bytes (a power
    // loss that kept the unlink undone but not the file's unsynced pages).
    for cut in [0usize, 10, 40] {
        let dir = f.root.join(format!("partial{cut}"));
        copy_dir(&after, &dir);
        let kd = key_dir(&dir, KEY);
        let pristine_kd = key_dir(&f.pristine.clone(), KEY);
        let bytes = fs::read(log_path(&pristine_kd, deleted[2])).expect("read");
        fs::write(log_path(&kd, deleted[2]), &bytes[..cut.min(bytes.len())]).expect("write");
        let mut store = open(&dir);
        assert_log(&mut store, KEY, start, 60);
        assert_eq!(bases_on_disk(&kd)[0], start);
    }
    // The entry not durable (the journal before it): the old start, every
    // record whole.
    let mut store = open(&f.pristine.clone());
    assert_log(&mut store, KEY, 0, 60);
}

/// A truncation's deletion of the segments made durable only by the
/// checkpoint: a checkpoint prepared before the truncation (its list of
/// files to sync names the deleted ones) still completes.
#[test]
fn a_checkpoint_in_flight_skips_segments_deleted_since() {
    let mut f = Fixture::new();
    let plan = f.store.prepare_checkpoint().expect("prepare");
    let (files, _) = plan.checkpoint_syncs();
    assert!(!files.is_empty(), "the checkpoint syncs the new segments");
    let start = f.segments[3].base;
    f.store
        .truncate_front(KEY, start)
        .expect("truncate during a checkpoint");
    fill(&mut f.store, "removed", 0, 20);
    let executed = plan.execute();
    f.store
        .complete_sync(plan, executed)
        .expect("checkpoint completes");
    let plan = f.store.prepare_checkpoint().expect("prepare");
    f.store
        .remove_key("removed")
        .expect("remove during a checkpoint");
    let executed = plan.execute();
    f.store
        .complete_sync(plan, executed)
        .expect("checkpoint completes");
    let mut store = assert_log_across_crash(f.store, &f.dir, KEY, start, 60);
    assert_eq!(store.next_offset("removed").expect("next"), 0);
}

fn set_mtime(path: &Path, time: SystemTime) {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for set_modified");
    file.set_modified(time).expect("set_modified");
}

#[test]
fn retention_by_size_keeps_at_least_the_limit() {
    let mut f = Fixture::new();
    let total: u64 = f.segments.iter().map(|s| s.bytes).sum();
    let now = SystemTime::now();
    let none = Retention::default();
    assert_eq!(f.store.enforce_retention(KEY, none, now).expect("none"), 0);
    // Exactly the first two segments can go and leave the limit.
    let limit = total - f.segments[0].bytes - f.segments[1].bytes;
    let by_size = Retention {
        bytes: Some(limit),
        age: None,
    };
    let start = f.store.enforce_retention(KEY, by_size, now).expect("size");
    assert_eq!(start, f.segments[2].base);
    let left: u64 = f
        .store
        .segments(KEY)
        .expect("segments")
        .iter()
        .map(|s| s.bytes)
        .sum();
    assert!(left >= limit);
    assert!(left - f.segments[2].bytes < limit, "the next one must stay");
    // Idempotent; a limit of 0 deletes every sealed segment.
    assert_eq!(
        f.store.enforce_retention(KEY, by_size, now).expect("again"),
        start
    );
    let zero = Retention {
        bytes: Some(0),
        age: None,
    };
    let active = f.segments.last().expect("active").base;
    assert_eq!(
        f.store.enforce_retention(KEY, zero, now).expect("zero"),
        active
    );
    assert_log_across_crash(f.store, &f.dir, KEY, active, 60);
}

#[test]
fn retention_by_age_goes_by_the_segment_files_modification_time() {
    let mut f = Fixture::new();
    let dir = key_dir(&f.dir.clone(), KEY);
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    // The first three segments last written three hours ago, the fourth two
    // hours ago, the rest now.
    for (i, segment) in f.segments.iter().enumerate() {
        let age = match i {
            0..=2 => 3 * hour,
            3 => 2 * hour,
            _ => Duration::ZERO,
        };
        set_mtime(&log_path(&dir, segment.base), now - age);
    }
    let listed = f.store.segments(KEY).expect("segments");
    assert_eq!(listed[0].modified, now - 3 * hour);
    let by_age = |age| Retention {
        bytes: None,
        age: Some(age),
    };
    assert_eq!(
        f.store
            .enforce_retention(KEY, by_age(4 * hour), now)
            .expect("4h"),
        0
    );
    let start = f
        .store
        .enforce_retention(KEY, by_age(150 * hour / 60), now)
        .expect("2.5h");
    assert_eq!(start, f.segments[3].base);
    let start = f
        .store
        .enforce_retention(KEY, by_age(hour), now)
        .expect("1h");
    assert_eq!(start, f.segments[4].base);
    // The active segment is never deleted, however old.
    let active = f.segments.last().expect("active").base;
    set_mtime(&log_path(&dir, active), now - 10 * hour);
    for segment in &f.segments[4..] {
        set_mtime(&log_path(&dir, segment.base), now - 10 * hour);
    }
    assert_eq!(
        f.store
            .enforce_retention(KEY, by_age(hour), now)
            .expect("old"),
        active
    );
    assert_log_across_crash(f.store, &f.dir, KEY, active, 60);
}

#[test]
fn remove_key_then_append_starts_a_new_log_at_zero() {
    let mut f = Fixture::new();
    f.store.commit(KEY, 42).expect("commit");
    fill(&mut f.store, "kept", 0, 5);
    f.store.remove_key(KEY).expect("remove");
    let dir = key_dir(&f.dir.clone(), KEY);
    assert!(!dir.exists());
    assert!(offsets_from(&mut f.store, KEY, 0).is_empty());
    assert_eq!(f.store.next_offset(KEY).expect("next"), 0);
    assert_eq!(f.store.durable_next_offset(KEY).expect("durable"), 0);
    assert!(f.store.segments(KEY).expect("segments").is_empty());
    assert!(!f.store.keys().expect("keys").contains(&KEY.to_string()));
    assert_eq!(
        f.store.committed(KEY),
        Some(42),
        "commits are another namespace"
    );
    // Reopened after a crash: the journal's records of the old log stay void.
    drop(f.store);
    let mut store = open(&f.dir.clone());
    assert!(!dir.exists());
    assert_eq!(store.next_offset(KEY).expect("next"), 0);
    assert!(!store.keys().expect("keys").contains(&KEY.to_string()));
    assert_eq!(store.committed(KEY), Some(42));
    assert_log(&mut store, "kept", 0, 5);
    // A new log: first through the journal (a new segment), then direct
    // sync points into its active segment; a crash keeps exactly it.
    fill(&mut store, KEY, 0, 1);
    fill(&mut store, KEY, 1, 3);
    drop(store);
    let mut store = open(&f.dir.clone());
    assert_log(&mut store, KEY, 0, 3);
    fill(&mut store, KEY, 3, 20);
    store.checkpoint().expect("checkpoint");
    drop(store);
    let mut store = open(&f.dir.clone());
    assert_log(&mut store, KEY, 0, 20);
    store.close().expect("close");
    let mut store = open(&f.dir.clone());
    assert_log(&mut store, KEY, 0, 20);
    assert_log(&mut store, "kept", 0, 5);
}

#[test]
fn removing_a_key_with_records_awaiting_a_sync_is_refused() {
    let mut f = Fixture::new();
    f.store.append(KEY, &message(60)).expect("append");
    match f.store.remove_key(KEY) {
        Err(Error::Busy(why)) => assert!(why.contains("awaiting a sync point"), "{why}"),
        other => panic!("expected busy, got {other:?}"),
    }
    assert!(key_dir(&f.dir.clone(), KEY).exists(), "nothing touched");
    f.store.sync().expect("sync");
    f.store.remove_key(KEY).expect("remove once durable");
    assert_eq!(f.store.next_offset(KEY).expect("next"), 0);
}

#[test]
fn a_poisoned_store_refuses_retention_and_removal() {
    let mut f = Fixture::new();
    f.store.checkpoint_interrupted(0).expect("poison");
    assert!(f.store.is_poisoned());
    assert!(matches!(
        f.store.truncate_front(KEY, 30),
        Err(Error::Poisoned)
    ));
    let zero = Retention {
        bytes: Some(0),
        age: None,
    };
    let now = SystemTime::now();
    assert!(matches!(
        f.store.enforce_retention(KEY, zero, now),
        Err(Error::Poisoned)
    ));
    assert!(matches!(f.store.remove_key(KEY), Err(Error::Poisoned)));
    assert_eq!(
        bases_on_disk(&key_dir(&f.dir.clone(), KEY)).len(),
        f.segments.len()
    );
}

/// A crash at each step of a removal: the entry durable and the directory
/// untouched, or half deleted at its name, or renamed to `rm.<name>` with
/// part of its files gone. Each reopens to a key with no log and no
/// directory, and a new append starts at 0.
#[test]
fn a_crash_at_each_step_of_a_removal_leaves_the_key_gone() {
    let mut f = Fixture::new();
    f.store.remove_key(KEY).expect("remove");
    drop(f.store);
    let after = f.root.join("a");
    let name = seglog::storage::keyname::escaped_name(KEY).expect("short");
    let grave = seglog::storage::keyname::removed_name(&name);
    for case in [
        "untouched",
        "half at its name",
        "renamed",
        "renamed, half deleted",
    ] {
        let dir = f.root.join(case.replace([' ', ','], "_"));
        entry_only(&f.pristine.clone(), &after, &dir);
        let kd = key_dir(&dir, KEY);
        let bases = bases_on_disk(&kd);
        if case.contains("half") {
            for &base in bases.iter().step_by(2) {
                fs::remove_file(log_path(&kd, base)).expect("delete");
            }
        }
        if case.starts_with("renamed") {
            fs::rename(&kd, dir.join("logs").join(&grave)).expect("rename");
        }
        let mut store = open(&dir);
        assert!(!kd.exists(), "{case}: directory gone");
        assert!(!dir.join("logs").join(&grave).exists(), "{case}: rm. gone");
        assert_eq!(store.next_offset(KEY).expect("next"), 0, "{case}");
        assert!(offsets_from(&mut store, KEY, 0).is_empty(), "{case}");
        assert!(!store.keys().expect("keys").contains(&KEY.to_string()));
        store.checkpoint().expect("checkpoint");
        fill(&mut store, KEY, 0, 4);
        drop(store);
        let mut store = open(&dir);
        assert_log(&mut store, KEY, 0, 4);
    }
}

/// Truncation and removal in one journal, in both orders, then crashes:
/// the removal voids the earlier log start, and a log start of the new log
/// applies to it alone.
#[test]
fn truncation_and_removal_in_one_journal_replay_in_order() {
    let mut f = Fixture::new();
    f.store
        .truncate_front(KEY, f.segments[2].base)
        .expect("truncate");
    f.store.remove_key(KEY).expect("remove");
    fill(&mut f.store, KEY, 0, 40);
    let new_segments = f.store.segments(KEY).expect("segments");
    let start = new_segments[3].base;
    f.store
        .truncate_front(KEY, start)
        .expect("truncate the new log");
    drop(f.store);
    let mut store = open(&f.dir.clone());
    assert_log(&mut store, KEY, start, 40);
    store.checkpoint().expect("checkpoint");
    drop(store);
    let mut store = open(&f.dir.clone());
    assert_log(&mut store, KEY, start, 40);
}

/// A version 2 store (the sample) opens, continues its journal in a new
/// file of the current version, and takes a truncation and a removal that
/// survive a crash.
#[test]
fn a_version_2_store_continues_in_a_current_version_journal() {
    let tmp = TempDir::new().expect("tmp");
    let dir = copy_sample(tmp.path(), "sample-v2");
    let before = seglog::storage::journal::list_files(
        &seglog::storage::backend::RealFs,
        &dir.join("journal"),
    )
    .expect("list");
    let mut store = Store::open(&dir, StoreConfig::default()).expect("open");
    let seq = store.journal_seq();
    assert_eq!(Some(&(seq - 1)), before.last(), "one new journal file");
    let path = dir
        .join("journal")
        .join(seglog::storage::journal::file_name(seq));
    let header =
        seglog::storage::format::decode_header(&fs::read(&path).expect("read")).expect("header");
    assert_eq!(header.version, seglog::storage::format::FORMAT_VERSION);
    let keys = store.keys().expect("keys");
    let victim = keys.first().expect("a key").clone();
    store.remove_key(&victim).expect("remove");
    drop(store);
    let mut store = Store::open(&dir, StoreConfig::default()).expect("reopen");
    assert_eq!(store.next_offset(&victim).expect("next"), 0);
    store.close().expect("close");
}

/// Only a log-start entry alone leaves a lost key directory uncreated: a
/// key whose only journal entry is a direct note, whose directory vanished,
/// is still refused as records a checkpoint synced gone missing (not taken
/// for a key with no log).
#[test]
fn a_lost_directory_with_a_direct_note_is_still_refused() {
    let tmp = TempDir::new().expect("tmp");
    let dir = tmp.path().join("a");
    let mut store = open(&dir);
    fill(&mut store, KEY, 0, 3);
    store.checkpoint().expect("checkpoint");
    fill(&mut store, KEY, 3, 4);
    drop(store);
    fs::remove_dir_all(key_dir(&dir, KEY)).expect("lose the directory");
    let mut store = open(&dir);
    match store.read(KEY, 0, &mut |_, _| true) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("missing"), "{what}"),
        other => panic!("expected a corrupt key, got {other:?}"),
    }
}

/// `Store::shut_down`, the close of a store others still reference (the
/// HTTP server's): marked clean, and every later write refused, since one
/// would follow the clean mark.
#[test]
fn a_shut_down_store_is_clean_and_refuses_every_write() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(dir.path());
    fill(&mut store, KEY, 0, 30);
    store.commit(KEY, 3).expect("commit");
    store.shut_down().expect("shut down");
    assert!(dir.path().join("CLEAN").exists());
    let refused = |result: Result<(), Error>| {
        assert!(matches!(result, Err(Error::Busy(_))), "{result:?}");
    };
    refused(store.append(KEY, b"1").map(drop));
    refused(store.commit(KEY, 4));
    refused(store.truncate_front(KEY, 20).map(drop));
    refused(
        store
            .enforce_retention(KEY, Retention::default(), SystemTime::now())
            .map(drop),
    );
    refused(store.remove_key(KEY));
    refused(store.shut_down());
    // Reads still work.
    assert_log(&mut store, KEY, 0, 30);
    drop(store);
    let mut store = open(dir.path());
    assert!(store.opened_clean());
    assert_log(&mut store, KEY, 0, 30);
    assert_eq!(store.committed(KEY), Some(3));
}

/// Review find (helper-12): at open, a key whose only journal entry was a
/// log start counted as mentioned, so a direct sync point skipped its note;
/// the next open recovered the key without checking the segment, served a
/// record never synced, and after a power loss refused the key, with
/// acknowledged records behind it. (A key's first sync point after a
/// checkpoint is now a journal one, which mentions it: the log start alone
/// must not count.)
#[test]
fn a_key_the_journal_names_only_by_a_log_start_is_checked_after_a_crash() {
    let tmp = TempDir::new().expect("ok");
    let dir = tmp.path().join("a");
    // Run 1: 60 records in many segments, checkpointed (all synced), then a truncation; crash.
    let mut store = open(&dir);
    for i in 0..60 {
        store.append(KEY, &message(i)).expect("ok");
    }
    store.sync().expect("ok");
    store.checkpoint().expect("ok");
    let segs = store.segments(KEY).expect("ok");
    let active = segs.last().expect("ok").base;
    let start = store.truncate_front(KEY, segs[2].base).expect("ok");
    assert_eq!(start, segs[2].base);
    drop(store); // crash (kill -9: page cache survives)
    let active_log = key_dir(&dir, KEY).join(seglog::storage::format::log_file_name(active));
    let len_synced = fs::metadata(&active_log).expect("ok").len();

    // Run 2: one record of KEY, its first sync point since the log start: a
    // journal one, killed after the journal write, before its fdatasync.
    let mut store = open(&dir);
    let journal_before: u64 = fs::read_dir(dir.join("journal"))
        .expect("ok")
        .map(|e| e.expect("ok").metadata().expect("ok").len())
        .sum();
    assert_eq!(store.append(KEY, &message(60)).expect("ok"), 60);
    let plan = store.prepare_sync().expect("ok");
    assert!(
        !plan.is_direct(),
        "a journal sync point: the log start does not mention the key"
    );
    let journal_after: u64 = fs::read_dir(dir.join("journal"))
        .expect("ok")
        .map(|e| e.expect("ok").metadata().expect("ok").len())
        .sum();
    assert!(
        journal_after > journal_before,
        "the sync point wrote its batch: {journal_before}/{journal_after}"
    );
    std::mem::forget(plan);
    drop(store); // kill -9 before the fdatasync
    assert_eq!(
        fs::metadata(&active_log).expect("ok").len(),
        len_synced,
        "record 60 is in the journal only, in the page cache"
    );

    // Run 3: recovery serves record 60 (never acknowledged, never synced);
    // then two acknowledged records through the journal (two keys in one sync point).
    let mut store = open(&dir);
    assert_eq!(offsets_from(&mut store, KEY, 0).last(), Some(&60));
    // Recovery wrote record 60 from the journal, which it rewrote and
    // fdatasynced before serving it: from here a power loss keeps it.
    let len_recovered = fs::metadata(&active_log).expect("ok").len();
    assert_eq!(store.append(KEY, &message(61)).expect("ok"), 61);
    assert_eq!(store.append(KEY, &message(62)).expect("ok"), 62);
    store.append("other", b"1").expect("ok");
    let plan = store.prepare_sync().expect("ok");
    assert!(!plan.is_direct());
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("ok"); // 61 and 62 acknowledged
    drop(store); // crash

    // Power loss: what went to the segment after recovery's fdatasync
    // (records 61 and 62, which the journal holds) is lost.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&active_log)
        .expect("ok");
    f.set_len(len_recovered).expect("ok");
    drop(f);

    // Run 4: records 61 and 62 were acknowledged.
    let mut store = match Store::open(&dir, config()) {
        Ok(s) => s,
        Err(e) => panic!("open after power loss: {e}"),
    };
    let after = offsets_from(&mut store, KEY, 0);
    assert_eq!(
        after,
        (start..63).collect::<Vec<u64>>(),
        "lost acknowledged records"
    );
}

/// Review find (helper-11, helper-12): a lookup of a long key stopped at the
/// first free `h.<hash>.<n>`, so removing a key hid another key of the same
/// hash stored after it, whose next append then started a new log at 0. A
/// directory naming another key stands in for a real 64-bit collision.
#[test]
fn removing_a_hashed_key_does_not_hide_a_colliding_key_after_it() {
    let dir = TempDir::new().expect("temp dir");
    let key = format!("long-{}", "k".repeat(300));
    let mut store = open(dir.path());
    drop(store);
    // Slot 0 of the key's hash holds another key (as a collision would).
    let slot0 = dir
        .path()
        .join("logs")
        .join(seglog::storage::keyname::hashed_name(&key, 0));
    fs::create_dir_all(&slot0).expect("slot 0");
    fs::write(slot0.join("KEY"), "another key that hashes the same").expect("KEY");
    store = open(dir.path());
    fill(&mut store, &key, 0, 5);
    let slot1 = dir
        .path()
        .join("logs")
        .join(seglog::storage::keyname::hashed_name(&key, 1));
    assert!(slot1.is_dir(), "the key took slot 1");
    // Checkpointed: the journal no longer names the key's records.
    store.checkpoint().expect("checkpoint");
    drop(store);
    // The other key is removed: slot 0 is free again.
    fs::remove_dir_all(&slot0).expect("remove slot 0");
    let mut store = open(dir.path());
    assert_log(&mut store, &key, 0, 5);
    assert_eq!(store.append(&key, &message(5)).expect("append"), 5);
    assert!(!slot0.exists(), "no new log started in the gap");
}
