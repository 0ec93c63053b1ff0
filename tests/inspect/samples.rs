//! The committed samples in `data/`: the inspector's output on them pinned,
//! and the engine still reading (and converting) them.

use std::fs;

use seglog::{Store, StoreConfig};
use serde_json::Value;
use tempfile::TempDir;

use crate::common::*;
use crate::sample;
use crate::support::dirs::copy_dir;

const SAMPLE_DEFAULT: &str = r#"store data/sample-v1: closed cleanly; 4 keys

  key                                 base  last  records  bytes  segment  status
  a/b                                    0     4        5    114  active   valid
  orders                                 0   118      119   4317  sealed   valid
  orders                               119   234      116   4316  sealed   valid
  orders                               235   259       25    949  active   valid
  ключ                                   0     2        3    244  active   valid
  "очень длинный ключ, имя которог…"     0     1        2     58  active   valid

committed offsets (offsets.journal: 5 entries, 130 bytes)
  key     offset
  a/b          4
  orders     199
  ключ         2

checked 1 store, 4 keys, 6 segments, 270 records, 2 index entries, 1 offsets journal: no problems
"#;

const SAMPLE_VERIFY: &str = "checked 1 store, 4 keys, 6 segments, 270 records, 2 index entries, \
                             1 offsets journal: no problems\n";

const TORN_PROBLEM: &str = "  data/sample-v1-torn/logs/k.orders/00000000000000000235.log, position 912: \
    torn tail: the last 18 bytes are not a whole record (torn: needs 37 bytes, 18 present); \
    expected in the active segment after a crash or during an append: recovery cuts it\n";

const FLIPPED_PROBLEM: &str = "  data/sample-v1-flipped/logs/k.orders/00000000000000000000.log, position 2138: \
    CRC mismatch: stored 0x7061d7a1, computed 0xb1ef0861; the next valid record is at \
    position 2174, so 36 bytes are unreadable; reads of this key that reach it fail\n";

const DAMAGED_SUMMARY: &str = "checked 1 store, 4 keys, 6 segments, 269 records, 2 index entries, \
                               1 offsets journal: 1 problem\n";

const TORN_DEFAULT_TABLE: &str = r#"store data/sample-v1-torn: not closed cleanly (no CLEAN marker): running, or stopped by a crash; 4 keys

  key                                 base  last  records  bytes  segment  status
  a/b                                    0     4        5    114  active   valid
  orders                                 0   118      119   4317  sealed   valid
  orders                               119   234      116   4316  sealed   valid
  orders                               235   258       24    930  active   invalid: torn tail at 912
  ключ                                   0     2        3    244  active   valid
  "очень длинный ключ, имя которог…"     0     1        2     58  active   valid
"#;

const FLIPPED_DEFAULT_TABLE: &str = r#"store data/sample-v1-flipped: closed cleanly; 4 keys

  key                                 base  last  records  bytes  segment  status
  a/b                                    0     4        5    114  active   valid
  orders                                 0   118      118   4317  sealed   invalid: CRC mismatch at 2138
  orders                               119   234      116   4316  sealed   valid
  orders                               235   259       25    949  active   valid
  ключ                                   0     2        3    244  active   valid
  "очень длинный ключ, имя которог…"     0     1        2     58  active   valid
"#;

const COMMITTED: &str = r#"committed offsets (offsets.journal: 5 entries, 130 bytes)
  key     offset
  a/b          4
  orders     199
  ключ         2
"#;

#[test]
fn default_and_verify_output_of_the_clean_sample_are_pinned() {
    let run = inspect(repo(), &["data/sample-v1"]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, SAMPLE_DEFAULT, "")
    );
    let run = inspect(repo(), &["data/sample-v1", "--verify"]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, SAMPLE_VERIFY, "")
    );
}

#[test]
fn default_and_verify_output_of_the_torn_sample_are_pinned() {
    let run = inspect(repo(), &["data/sample-v1-torn"]);
    let expected = format!(
        "{TORN_DEFAULT_TABLE}\n{COMMITTED}\nproblems (1):\n{TORN_PROBLEM}\n{DAMAGED_SUMMARY}"
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, expected.as_str()));
    let run = inspect(repo(), &["data/sample-v1-torn", "--verify"]);
    let expected = format!("problems (1):\n{TORN_PROBLEM}\n{DAMAGED_SUMMARY}");
    assert_eq!((run.code, run.stdout.as_str()), (1, expected.as_str()));
}

#[test]
fn default_and_verify_output_of_the_flipped_sample_are_pinned() {
    let run = inspect(repo(), &["data/sample-v1-flipped"]);
    let expected = format!(
        "{FLIPPED_DEFAULT_TABLE}\n{COMMITTED}\nproblems (1):\n{FLIPPED_PROBLEM}\n{DAMAGED_SUMMARY}"
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, expected.as_str()));
    let run = inspect(repo(), &["data/sample-v1-flipped", "--verify"]);
    let expected = format!("problems (1):\n{FLIPPED_PROBLEM}\n{DAMAGED_SUMMARY}");
    assert_eq!((run.code, run.stdout.as_str()), (1, expected.as_str()));
}

#[test]
fn records_and_index_listings_of_the_sample_are_pinned() {
    let run = inspect(
        repo(),
        &["data/sample-v1", "--records", "--key", "a/b", "--verify"],
    );
    let expected = "records of a/b, 00000000000000000000.log (active, 114 bytes)
  offset  position  size  crc         valid  message
       0        24    18  0xd0518a74  yes    10
       1        42    18  0x14beb289  yes    20
       2        60    18  0xe69238cb  yes    30
       3        78    18  0x4611c532  yes    40
       4        96    18  0xbdd6ef0a  yes    50

checked 1 store, 1 key, 1 segment, 5 records, 1 offsets journal: no problems
";
    assert_eq!((run.code, run.stdout.as_str()), (0, expected));
    let run = inspect(
        repo(),
        &["data/sample-v1", "--index", "--key", "orders", "--verify"],
    );
    let expected = "index of orders, 00000000000000000000.index (1 entry; the log calls for 1)
  entry  offset  position  agrees with log
      0     114      4132  yes

index of orders, 00000000000000000119.index (1 entry; the log calls for 1)
  entry  offset  position  agrees with log
      0     230      4131  yes

index of orders, 00000000000000000235.index (no entries; the log calls for none)

checked 1 store, 1 key, 3 segments, 260 records, 2 index entries, 1 offsets journal: no problems
";
    assert_eq!((run.code, run.stdout.as_str()), (0, expected));
}

/// Asserts `store` holds the samples' logs record for record and their
/// commits; `what` names the store in failures.
fn assert_holds_the_sample(store: &mut Store, what: &str) {
    for (key, messages) in sample::expected_logs() {
        let mut read = Vec::new();
        store
            .read(key, 0, &mut |offset, payload| {
                read.push((offset, String::from_utf8(payload.to_vec()).expect("UTF-8")));
                true
            })
            .expect("read the whole log");
        let expected: Vec<(u64, String)> = (0..).zip(messages).collect();
        assert_eq!(read, expected, "{what}: key {key}");
        assert_eq!(
            store.durable_next_offset(key).expect("length"),
            expected.len() as u64
        );
    }
    for (key, offset) in sample::expected_commits() {
        assert_eq!(
            store.committed(key),
            Some(offset),
            "{what}: commit of {key}"
        );
    }
}

/// Any later change of the format must keep reading version 1, or fail here.
#[test]
fn the_engine_still_reads_the_v1_sample() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join("sample-v1");
    copy_dir(&repo().join("data/sample-v1"), &dir);
    let mut store = Store::open(&dir, StoreConfig::default()).expect("the v1 sample opens");
    assert!(store.opened_clean(), "the sample was closed cleanly");
    assert_holds_the_sample(&mut store, "sample-v1");
    assert_eq!(store.committed(sample::KEY_HASHED), None);
}

/// A crash while the v1 sample is converted (journal/ made, no checkpoint
/// yet, file 0 missing or torn; `CLEAN` already removed) leaves a store
/// that is converted again, as a v1 store after a crash, and reads record
/// for record.
#[test]
fn an_interrupted_conversion_of_the_v1_sample_converts_again() {
    for file_0 in [None, Some(&b""[..]), Some(&b"SGLGW"[..])] {
        let tmp = TempDir::new().expect("temporary directory");
        let dir = tmp.path().join("sample-v1");
        copy_dir(&repo().join("data/sample-v1"), &dir);
        std::fs::remove_file(dir.join("CLEAN")).expect("open removes CLEAN first");
        std::fs::create_dir(dir.join("journal")).expect("journal/");
        if let Some(bytes) = file_0 {
            std::fs::write(dir.join("journal/00000000000000000000.wal"), bytes).expect("file 0");
        }
        let mut store =
            Store::open(&dir, StoreConfig::default()).unwrap_or_else(|e| panic!("{file_0:?}: {e}"));
        assert_holds_the_sample(&mut store, &format!("{file_0:?}"));
        store.close().expect("close");
        assert!(dir.join("checkpoint").exists(), "converted");
    }
}

/// Any later change of the format must keep reading version 2: the sample
/// stopped by a crash with records and commits only in its journal, and the
/// copy whose segments lost everything since the checkpoint, both read
/// record for record, and leave a store `--verify` finds valid.
#[test]
fn the_engine_reads_the_v2_samples_replaying_their_journal() {
    for name in ["sample-v2", "sample-v2-replay"] {
        let tmp = TempDir::new().expect("temporary directory");
        let dir = tmp.path().join(name);
        copy_dir(&repo().join("data").join(name), &dir);
        let mut store = Store::open(&dir, StoreConfig::default()).expect("the v2 sample opens");
        assert!(!store.opened_clean(), "{name} was left by a crash");
        assert_holds_the_sample(&mut store, name);
        store.close().expect("close");
        let run = inspect(tmp.path(), &[name, "--verify"]);
        assert_eq!(run.code, 0, "{}", run.stdout);
    }
}

/// The journal of the v2 sample as the inspector lists it, batch by batch.
#[test]
fn the_v2_sample_journal_is_listed_and_verified() {
    let run = inspect(repo(), &["data/sample-v2", "--verify"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (
            0,
            "checked 1 store, 4 keys, 6 segments, 270 records, 2 index entries, 1 offsets journal, \
             1 journal file, 2 journal batches: no problems\n"
        )
    );
    let run = inspect(
        repo(),
        &[
            "data/sample-v2/journal/00000000000000000001.wal",
            "--records",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    for expected in [
        "  00000000000000000001.wal        2      165        3   6529  live: valid",
        "batches of 00000000000000000001.wal",
        "commit a/b 4; commit orders 199; commit ключ 2",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} in\n{}",
            run.stdout
        );
    }
    let run = inspect(repo(), &["data/sample-v2", "--json", "--records"]);
    let lines = json_lines(&run);
    let batches: Vec<&Value> = lines
        .iter()
        .filter(|line| line["type"] == "journal_batch")
        .collect();
    assert_eq!(batches.len(), 2);
}

/// A torn journal tail is reported where the store cuts it.
#[test]
fn torn_journal_tail_is_reported() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join(STORE);
    copy_dir(&repo().join("data/sample-v2"), &dir);
    let wal = dir.join("journal/00000000000000000001.wal");
    let bytes = fs::read(&wal).expect("read");
    fs::write(&wal, &bytes[..bytes.len() - 7]).expect("write");
    let found = problems(tmp.path());
    let scan = seglog::storage::journal::scan_file(&bytes).expect("journal");
    let last = scan.batches.last().expect("batches").0;
    let message = assert_one(
        &found,
        "torn_tail",
        "journal/00000000000000000001.wal",
        Some(last),
    );
    assert!(message.contains("the store cuts it"), "{message}");
    fs::remove_file(&wal).expect("delete");
    let found = problems(tmp.path());
    assert_one(
        &found,
        "journal_missing",
        "journal/00000000000000000001.wal",
        None,
    );
}

/// Recovery of the torn v1 sample cuts the half record and keeps the rest.
#[test]
fn the_engine_recovers_the_torn_v1_sample() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join("sample-v1-torn");
    copy_dir(&repo().join("data/sample-v1-torn"), &dir);
    let mut store = Store::open(&dir, StoreConfig::default()).expect("the torn sample opens");
    let mut read = Vec::new();
    store
        .read(sample::KEY_LONG_LOG, 0, &mut |_, payload| {
            read.push(String::from_utf8(payload.to_vec()).expect("UTF-8"));
            true
        })
        .expect("read");
    let mut expected = sample::expected_logs()
        .remove(sample::KEY_LONG_LOG)
        .expect("long log");
    expected.pop();
    assert_eq!(read, expected);
    drop(store);
    // What recovery left is valid.
    let run = inspect(tmp.path(), &["sample-v1-torn", "--verify"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
}
