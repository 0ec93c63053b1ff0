//! What a replica needs from the store: appends at offsets another store
//! assigned, the next offset including pending records, and the list of keys.

use seglog::{Error, Store};
use tempfile::TempDir;

use crate::common::{self, message, read_ok, small_segments};

#[test]
fn append_at_takes_only_the_next_offset_and_survives_reopen() {
    let tmp = TempDir::new().expect("tempdir");
    let mut store = Store::open(tmp.path(), small_segments(256)).expect("open");
    assert_eq!(store.next_offset("k").expect("next"), 0);
    for i in 0..20 {
        store.append_at("k", i, &message(i)).expect("append_at");
        assert_eq!(store.next_offset("k").expect("next"), i + 1);
    }
    // Pending records count for the next offset, not for readers.
    assert_eq!(store.durable_next_offset("k").expect("durable"), 0);
    for wrong in [0, 19, 21, 1000] {
        match store.append_at("k", wrong, b"1") {
            Err(Error::NotNextOffset { expected: 20, got }) => assert_eq!(got, wrong),
            other => panic!("append_at {wrong}: {other:?}"),
        }
    }
    // A refused append_at changed nothing and did not poison the store.
    assert!(!store.is_poisoned());
    store.sync().expect("sync");
    assert_eq!(store.durable_next_offset("k").expect("durable"), 20);
    store.close().expect("close");

    let mut store = Store::open(tmp.path(), small_segments(256)).expect("reopen");
    let records = read_ok(&mut store, "k");
    assert_eq!(records.len(), 20);
    for (i, (offset, payload)) in records.into_iter().enumerate() {
        assert_eq!(offset, i as u64);
        assert_eq!(payload, message(i as u64));
    }
    assert_eq!(store.next_offset("k").expect("next"), 20);
}

#[test]
fn keys_lists_every_key_with_a_log_short_long_and_odd() {
    let tmp = TempDir::new().expect("tempdir");
    let mut store = Store::open(tmp.path(), small_segments(1 << 20)).expect("open");
    let long = "ключ/".repeat(100);
    let mut expected = vec!["a".to_string(), "..".to_string(), "x/y z".to_string(), long];
    for key in &expected {
        store.append(key, b"1").expect("append");
    }
    // Commits alone make no log.
    store.commit("only-committed", 3).expect("commit");
    store.sync().expect("sync");
    let mut keys = store.keys().expect("keys");
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected);
    let committed: Vec<_> = store.committed_offsets().collect();
    assert_eq!(committed, vec![("only-committed", 3)]);
}

/// Records a sync point made durable are readable once it is confirmed,
/// before the segment writes that publish them: acknowledgements and
/// reads go out without waiting for those writes.
#[test]
fn confirmed_records_are_readable_before_they_are_published() {
    let tmp = TempDir::new().expect("tempdir");
    let mut store = Store::open(tmp.path(), small_segments(256)).expect("open");
    for i in 0..5 {
        store.append("k", &message(i)).expect("append");
    }
    store.append("other", b"1").expect("append");
    store.commit("k", 2).expect("commit");
    let mut plan = store.prepare_sync().expect("prepare");
    let executed = plan.execute();
    assert!(executed.is_ok());
    assert!(
        read_ok(&mut store, "k").is_empty(),
        "nothing before confirmation"
    );
    assert_eq!(store.committed("k"), None);
    store.confirm_sync(&mut plan).expect("confirm");
    assert_eq!(store.durable_next_offset("k").expect("end"), 5);
    let confirmed = read_ok(&mut store, "k");
    assert_eq!(confirmed.len(), 5);
    assert_eq!(confirmed[3], (3, message(3)));
    assert_eq!(store.committed("k"), Some(2));
    // Appends after the plan are not readable; reads from the middle work.
    store.append("k", &message(5)).expect("append");
    let (tail, error) = common::read_all(&mut store, "k", 3);
    assert!(error.is_none());
    assert_eq!(tail.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![3, 4]);
    store.complete_sync(plan, executed).expect("complete");
    assert_eq!(read_ok(&mut store, "k"), confirmed);
    store.sync().expect("sync");
    store.close().expect("close");
    let mut store = Store::open(tmp.path(), small_segments(256)).expect("reopen");
    let all = read_ok(&mut store, "k");
    assert_eq!(all.len(), 6);
    assert_eq!(store.committed("k"), Some(2));
}
