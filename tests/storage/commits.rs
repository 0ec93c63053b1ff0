//! Committed offsets as Kafka has them (format version 5): a commit stores
//! the offset given, lower ones included, with a value beside it, and may
//! be removed; each survives a crash (the journal) and a checkpoint (the
//! offsets file), and a store of an older version takes them after its
//! offsets file is rewritten with the new layout. The node's rule (offsets
//! only move forward) stays with `Store::commit`.

use std::fs;
use std::path::Path;

use seglog::storage::offsets::{COMMIT_VALUE_BYTES_MAX, Committed, OFFSETS_FILE_NAME};
use seglog::{Store, StoreConfig};
use tempfile::TempDir;

use crate::common::copy_sample;

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreConfig::default()).expect("open")
}

fn committed(offset: u64, value: &[u8]) -> Option<Committed> {
    Some(Committed {
        offset,
        value: value.to_vec(),
    })
}

/// Back, forward, a value, and a removal: each as the last change left it,
/// in memory, after a crash (replayed from the journal) and after a
/// checkpoint and a crash (read from the offsets file).
#[test]
fn the_last_change_wins_through_a_crash_and_a_checkpoint() {
    let tmp = TempDir::new().expect("tmp");
    let dir = tmp.path();
    let mut store = open(dir);
    store
        .change_committed("back", committed(10, b"first"))
        .expect("commit");
    store
        .change_committed("gone", committed(3, b""))
        .expect("commit");
    store.sync().expect("sync");
    store
        .change_committed("back", committed(4, b"seeked"))
        .expect("commit");
    store.change_committed("gone", None).expect("remove");
    store.sync().expect("sync");
    let expect = |store: &Store, what: &str| {
        assert_eq!(
            store.committed_entry("back"),
            committed(4, b"seeked").as_ref(),
            "{what}"
        );
        assert_eq!(store.committed("gone"), None, "{what}");
        assert_eq!(store.committed_count(), 1, "{what}");
    };
    expect(&store, "in memory");
    drop(store);
    let mut store = open(dir);
    expect(&store, "replayed from the journal");
    store.checkpoint().expect("checkpoint");
    drop(store);
    let store = open(dir);
    expect(&store, "read from the offsets file");
    store.close().expect("close");
    let store = open(dir);
    expect(&store, "after a clean close");
}

/// The node's commit keeps its rule: a lower offset changes nothing.
#[test]
fn the_node_commit_still_only_moves_forward() {
    let tmp = TempDir::new().expect("tmp");
    let mut store = open(tmp.path());
    store.commit("k", 7).expect("commit");
    store.commit("k", 2).expect("commit");
    store.sync().expect("sync");
    assert_eq!(store.committed("k"), Some(7));
}

/// A plan prepared first and completed last (the group commit's, while an
/// append ran a sync point of its own) does not undo the later change it
/// did not cover.
#[test]
fn an_older_plan_completed_late_does_not_undo_a_later_change() {
    let tmp = TempDir::new().expect("tmp");
    let dir = tmp.path();
    let mut store = open(dir);
    store
        .change_committed("k", committed(10, b""))
        .expect("commit");
    let older = store.prepare_sync().expect("prepare");
    store
        .change_committed("k", committed(2, b""))
        .expect("commit");
    store.sync().expect("the later sync point");
    let executed = older.execute();
    store.complete_sync(older, executed).expect("complete");
    assert_eq!(store.committed("k"), Some(2));
    drop(store);
    assert_eq!(open(dir).committed("k"), Some(2), "as the journal says");
}

/// A change a sync point took is the latest while it fdatasyncs (the group
/// commit releases the lock meanwhile): a writer building on it (the next
/// producer id, a producer's state) must not see the older durable one.
#[test]
fn a_change_in_a_sync_point_in_flight_is_the_latest() {
    let tmp = TempDir::new().expect("tmp");
    let mut store = open(tmp.path());
    store
        .change_committed("k", committed(5, b"meta"))
        .expect("commit");
    let plan = store.prepare_sync().expect("prepare");
    assert_eq!(store.committed_latest("k"), committed(5, b"meta").as_ref());
    assert_eq!(store.committed("k"), None, "not durable yet");
    let executed = plan.execute();
    store.complete_sync(plan, executed).expect("complete");
    assert_eq!(store.committed("k"), Some(5));
}

/// The node's rule holds against a higher commit in a sync point in
/// flight: a lower commit meanwhile, synced first, changes nothing.
#[test]
fn the_node_commit_does_not_go_back_below_one_in_flight() {
    let tmp = TempDir::new().expect("tmp");
    let dir = tmp.path();
    let mut store = open(dir);
    store.commit("k", 10).expect("commit");
    let older = store.prepare_sync().expect("prepare");
    store.commit("k", 5).expect("commit");
    store.sync().expect("the later sync point");
    let executed = older.execute();
    store.complete_sync(older, executed).expect("complete");
    assert_eq!(store.committed("k"), Some(10));
    drop(store);
    assert_eq!(open(dir).committed("k"), Some(10), "as the journal says");
}

/// A commit attached to a key's records (a producer's state) goes into the
/// journal batch of their last entry, also when the sync point spans
/// several batches: a crash that keeps the records keeps the state. Here
/// three keys of 6 MiB each need two batches; without the attachment the
/// state of the first would follow the third's records, in the second.
#[test]
fn a_state_shares_the_journal_batch_of_its_records() {
    use seglog::storage::journal::{self, Entry};
    let tmp = TempDir::new().expect("tmp");
    let dir = tmp.path();
    let mut store = open(dir);
    let record = vec![b'r'; 1 << 20];
    for key in ["a", "b", "c"] {
        for _ in 0..6 {
            store.append(key, &record).expect("append");
        }
    }
    store
        .change_committed_after("producer 1 a", committed(5, b"state"), "a")
        .expect("state");
    store
        .change_committed("plain", committed(1, b""))
        .expect("commit");
    store.sync().expect("sync");
    let mut batch_of = std::collections::HashMap::new();
    let mut batches = 0;
    for entry in fs::read_dir(dir.join(journal::JOURNAL_DIR_NAME)).expect("journal") {
        let bytes = fs::read(entry.expect("entry").path()).expect("read");
        let scan = journal::scan_file(&bytes).expect("scan");
        for (_, batch) in &scan.batches {
            batches += 1;
            for entry in &batch.entries {
                let name = match entry {
                    Entry::Records { key, .. } => format!("records {key}"),
                    Entry::Commit { key, .. } => format!("commit {key}"),
                    _ => continue,
                };
                batch_of.insert(name, batch.number);
            }
        }
    }
    assert!(batches >= 2, "the sync point spans batches: {batch_of:?}");
    assert_eq!(
        batch_of["commit producer 1 a"], batch_of["records a"],
        "{batch_of:?}"
    );
    drop(store);
    assert_eq!(
        open(dir).committed_entry("producer 1 a"),
        committed(5, b"state").as_ref()
    );
}

/// A value over the limit is refused, and nothing changes.
#[test]
fn a_value_over_the_limit_is_refused() {
    let tmp = TempDir::new().expect("tmp");
    let mut store = open(tmp.path());
    let value = vec![b'v'; COMMIT_VALUE_BYTES_MAX + 1];
    assert!(store.change_committed("k", committed(1, &value)).is_err());
    store.sync().expect("sync");
    assert_eq!(store.committed("k"), None);
}

/// A version 2 store (the sample) keeps its commits, takes values, and
/// its first checkpoint rewrites the offsets file with a version 5 header
/// rather than append version 5 entries an older build would misread.
#[test]
fn an_older_offsets_file_is_rewritten_before_it_holds_values() {
    let tmp = TempDir::new().expect("tmp");
    let dir = copy_sample(tmp.path(), "sample-v2");
    let version = |dir: &Path| {
        let bytes = fs::read(dir.join(OFFSETS_FILE_NAME)).expect("read");
        seglog::storage::format::decode_header(&bytes)
            .expect("header")
            .version
    };
    assert!(version(&dir) < seglog::storage::format::FORMAT_VERSION);
    let mut store = open(&dir);
    let before: Vec<(String, u64)> = {
        let mut all: Vec<_> = store
            .committed_offsets()
            .map(|(k, o)| (k.to_string(), o))
            .collect();
        all.sort();
        all
    };
    assert!(!before.is_empty(), "the sample has commits");
    store
        .change_committed("new", committed(1, b"meta"))
        .expect("commit");
    store.checkpoint().expect("checkpoint");
    assert_eq!(version(&dir), seglog::storage::format::FORMAT_VERSION);
    drop(store);
    let store = open(&dir);
    for (key, offset) in &before {
        assert_eq!(store.committed(key), Some(*offset), "{key}");
    }
    assert_eq!(store.committed_entry("new"), committed(1, b"meta").as_ref());
}
