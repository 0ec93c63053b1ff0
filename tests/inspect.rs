//! `seglog inspect`, run as the real binary: every option, every kind of
//! damage reported at the right file and position, JSON that parses, safety
//! on a store in use, a closed pipe, the output pinned on the committed
//! format-v1 sample in `data/`, and the engine still reading that sample.

// The sample's contents, shared with the generator that wrote `data/`.
#[path = "../examples/sample/contents.rs"]
mod sample;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use seglog::storage::format::{self, FILE_HEADER_SIZE, FileHeader, FileKind};
use seglog::storage::keyname;
use seglog::{Store, StoreConfig};
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_seglog");

/// The name the store in a test's temporary directory is given, so that the
/// paths in the output are short and do not depend on the temporary directory.
const STORE: &str = "store";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What one run of `seglog inspect` did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `seglog inspect ARGS` in `cwd`.
fn inspect(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .current_dir(cwd)
        .arg("inspect")
        .args(args)
        .output()
        .expect("seglog runs");
    Run {
        code: output.status.code().expect("seglog exits, not killed"),
        stdout: String::from_utf8(output.stdout).expect("output is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("errors are UTF-8"),
    }
}

/// Parses every line of a `--json` run; each must be a JSON object with a type.
fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(value["type"].is_string(), "no type: {line}");
            value
        })
        .collect()
}

/// A problem as `--json` reports it.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    kind: String,
    file: String,
    position: Option<u64>,
    message: String,
}

/// Runs `--verify --json` on the store of `dir` and returns its problems,
/// after checking that the exit status says whether there were any.
fn problems(dir: &Path) -> Vec<Found> {
    let run = inspect(dir, &[STORE, "--verify", "--json"]);
    let found: Vec<Found> = json_lines(&run)
        .into_iter()
        .filter(|line| line["type"] == "problem")
        .map(|line| Found {
            kind: line["kind"].as_str().expect("kind").to_string(),
            file: line["file"].as_str().expect("file").to_string(),
            position: line["position"].as_u64(),
            message: line["message"].as_str().expect("message").to_string(),
        })
        .collect();
    let expected_code = if found.is_empty() { 0 } else { 1 };
    assert_eq!(run.code, expected_code, "{}{}", run.stdout, run.stderr);
    found
}

/// Asserts that exactly one problem of `kind` was found, in `file` (relative
/// to the store) at `position`, and returns its message.
fn assert_one(found: &[Found], kind: &str, file: &str, position: Option<u64>) -> String {
    let matching: Vec<&Found> = found.iter().filter(|f| f.kind == kind).collect();
    assert_eq!(matching.len(), 1, "one {kind} expected in {found:#?}");
    assert_eq!(matching[0].file, format!("{STORE}/{file}"), "{found:#?}");
    assert_eq!(matching[0].position, position, "{found:#?}");
    matching[0].message.clone()
}

/// Writes the sample's contents with the current engine into `DIR/store`.
fn write_store(dir: &Path) -> PathBuf {
    let path = dir.join(STORE);
    let config = StoreConfig {
        segment_bytes: sample::SEGMENT_BYTES,
        ..StoreConfig::default()
    };
    let mut store = Store::open(&path, config).expect("open a new store");
    for step in sample::steps() {
        match step {
            sample::Step::Append(key, message) => {
                store.append(key, message.as_bytes()).expect("append");
            }
            sample::Step::Commit(key, offset) => store.commit(key, offset).expect("commit"),
            sample::Step::Sync => store.sync().expect("sync"),
            sample::Step::Checkpoint => store.checkpoint().expect("checkpoint"),
        }
    }
    store.close().expect("close");
    path
}

/// A temporary directory holding a freshly written store.
fn fresh() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().expect("temporary directory");
    let store = write_store(tmp.path());
    (tmp, store)
}

/// The directory name of `key`'s log, relative to the store.
fn key_dir(key: &str) -> String {
    format!("logs/{}", keyname::escaped_name(key).expect("short key"))
}

/// The path of segment `base`'s file of `key`, relative to the store.
fn segment_file(key: &str, base: u64, log: bool) -> String {
    let name = if log {
        format::log_file_name(base)
    } else {
        format::index_file_name(base)
    };
    format!("{}/{name}", key_dir(key))
}

/// Base offsets of `key`'s segments in `store`.
fn bases(store: &Path, key: &str) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(store.join(key_dir(key)))
        .expect("key directory")
        .filter_map(|entry| {
            let name = entry.expect("entry").file_name();
            format::parse_segment_file_name(name.to_str()?).filter(|(_, log)| *log)
        })
        .map(|(base, _)| base)
        .collect();
    bases.sort_unstable();
    bases
}

/// One record of a log file: position, offset, size.
#[derive(Clone, Copy, Debug)]
struct At {
    position: u64,
    offset: u64,
    size: usize,
}

/// The records of a valid log file.
fn records(log: &Path) -> Vec<At> {
    let bytes = fs::read(log).expect("read log");
    let mut position = FILE_HEADER_SIZE;
    let mut found = Vec::new();
    while position < bytes.len() {
        let record = format::decode_record(&bytes[position..]).expect("valid record");
        found.push(At {
            position: position as u64,
            offset: record.offset,
            size: record.size(),
        });
        position += record.size();
    }
    found
}

/// Every file under `dir` with its contents, to prove nothing was changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = fs::read(&path).expect("read");
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// Copies a directory tree of plain files.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

// ---- The committed format-v1 sample ----

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

// ---- Options ----

#[test]
fn records_lists_every_record_with_position_size_crc_and_message() {
    let (tmp, store) = fresh();
    let run = inspect(tmp.path(), &[STORE, "--records"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let record_lines = run
        .stdout
        .lines()
        .filter(|line| line.contains(" yes "))
        .count();
    assert_eq!(record_lines, 270, "{}", run.stdout);
    let log = store.join(segment_file(sample::KEY_LONG_LOG, 119, true));
    let first = records(&log)[0];
    let crc = {
        let bytes = fs::read(&log).expect("read");
        format::decode_record(&bytes[first.position as usize..])
            .expect("record")
            .crc
    };
    let line = format!(
        "     119        24    {}  {crc:#010x}  yes    {}",
        first.size,
        sample::order(119)
    );
    assert!(run.stdout.contains(&line), "{line}\n{}", run.stdout);
}

#[test]
fn index_lists_entries_and_whether_each_agrees() {
    let (tmp, _store) = fresh();
    let run = inspect(
        tmp.path(),
        &[STORE, "--index", "--key", sample::KEY_LONG_LOG],
    );
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("      0     114      4132  yes\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("(1 entry; the log calls for 1)"),
        "{}",
        run.stdout
    );
}

#[test]
fn key_from_and_max_narrow_the_listing() {
    let (tmp, _store) = fresh();
    let run = inspect(
        tmp.path(),
        &[
            STORE,
            "--records",
            "--key",
            "orders",
            "--from",
            "117",
            "--max",
            "4",
        ],
    );
    assert_eq!(run.code, 0);
    let offsets: Vec<u64> = run
        .stdout
        .lines()
        .filter(|line| line.contains(" yes "))
        .map(|line| {
            line.split_whitespace()
                .next()
                .expect("offset")
                .parse()
                .expect("number")
        })
        .collect();
    assert_eq!(offsets, [117, 118, 119, 120], "{}", run.stdout);
    assert!(run.stdout.contains("… more records not listed (--max 4)"));
    // Only the selected key is listed.
    assert!(!run.stdout.contains("a/b"), "{}", run.stdout);
    let run = inspect(tmp.path(), &[STORE, "--from", "200", "--key", "orders"]);
    assert!(!run.stdout.contains("\n  orders     0 "), "{}", run.stdout);
    assert!(run.stdout.contains("\n  orders   119 "), "{}", run.stdout);
    let run = inspect(tmp.path(), &[STORE, "--max", "1", "--key", "orders"]);
    assert!(
        run.stdout.contains("2 more segments not listed (--max 1)"),
        "{}",
        run.stdout
    );
    // The committed offsets are narrowed to the key too.
    assert!(!run.stdout.contains("ключ"), "{}", run.stdout);
}

#[test]
fn full_shows_long_messages_and_keys_whole() {
    let (tmp, _store) = fresh();
    let long = "The quick brown fox jumps over the lazy dog.";
    let run = inspect(
        tmp.path(),
        &[STORE, "--records", "--key", sample::KEY_CYRILLIC],
    );
    assert!(!run.stdout.contains(long), "{}", run.stdout);
    assert!(run.stdout.contains("… (150 bytes)"), "{}", run.stdout);
    let run = inspect(tmp.path(), &[STORE, "--records", "--full"]);
    assert!(run.stdout.contains(long), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("\"{}\"", sample::KEY_HASHED)));
}

#[test]
fn json_lines_all_parse_and_carry_the_same_information() {
    let (tmp, _store) = fresh();
    for args in [
        &[STORE, "--json"][..],
        &[STORE, "--json", "--records", "--index"],
        &[STORE, "--json", "--verify"],
        &[
            STORE,
            "--json",
            "--records",
            "--full",
            "--key",
            "orders",
            "--from",
            "5",
            "--max",
            "3",
        ],
    ] {
        let run = inspect(tmp.path(), args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        let lines = json_lines(&run);
        let last = lines.last().expect("a summary");
        assert_eq!(last["type"], "summary");
        assert_eq!(last["valid"], true);
    }
    let run = inspect(tmp.path(), &[STORE, "--json", "--records", "--index"]);
    let lines = json_lines(&run);
    let count = |kind: &str| lines.iter().filter(|line| line["type"] == kind).count();
    assert_eq!(count("store"), 1);
    assert_eq!(count("segment"), 6);
    assert_eq!(count("record"), 270);
    assert_eq!(count("index"), 6);
    assert_eq!(count("index_entry"), 2);
    assert_eq!(count("committed"), 3);
    let record = lines
        .iter()
        .find(|line| line["type"] == "record" && line["key"] == sample::KEY_CYRILLIC)
        .expect("a record of ключ");
    assert_eq!(record["offset"], 0);
    assert_eq!(record["position"], 24);
    assert_eq!(record["message"], "\"привет\"");
    assert_eq!(record["valid"], true);
    let segment = lines
        .iter()
        .find(|line| line["type"] == "segment" && line["key"] == sample::KEY_HASHED)
        .expect("the hashed key, named by its KEY file");
    assert_eq!(segment["records"], 2);
}

#[test]
fn a_single_log_or_index_file_can_be_inspected() {
    let (tmp, _store) = fresh();
    let log = format!("{STORE}/{}", segment_file("orders", 119, true));
    let run = inspect(tmp.path(), &[&log, "--verify", "--records"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("records of orders, 00000000000000000119.log (sealed")
    );
    assert!(
        run.stdout
            .contains("1 key, 1 segment, 116 records, 1 index entry"),
        "{}",
        run.stdout
    );
    let index = format!("{STORE}/{}", segment_file("orders", 119, false));
    let run = inspect(tmp.path(), &[&index]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("      0     230      4131  yes\n"),
        "{}",
        run.stdout
    );
    let run = inspect(tmp.path(), &[&format!("{STORE}/{}", key_dir("a/b"))]);
    assert!(
        run.stdout
            .contains("\n  a/b     0     4        5    114  active   valid\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_data_directory_of_nodes_is_inspected_node_by_node() {
    let tmp = TempDir::new().expect("temporary directory");
    write_store(&tmp.path().join("data").join("n0"));
    copy_dir(
        &tmp.path().join("data/n0/store"),
        &tmp.path().join("data/n1"),
    );
    copy_dir(
        &tmp.path().join("data/n0/store"),
        &tmp.path().join("data/n2"),
    );
    fs::remove_dir_all(tmp.path().join("data/n0")).expect("remove");
    let run = inspect(tmp.path(), &["data"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("store data/n1: closed cleanly; 4 keys"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("store data/n2: closed cleanly; 4 keys"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("checked 2 stores, 8 keys, 12 segments"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_path_with_no_seglog_data_is_an_error_with_status_2() {
    let tmp = TempDir::new().expect("temporary directory");
    let run = inspect(tmp.path(), &["."]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no seglog data here"), "{}", run.stderr);
    let run = inspect(tmp.path(), &["missing"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("missing: No such file"),
        "{}",
        run.stderr
    );
}

// ---- Damage, each reported with its file and position ----

#[test]
fn a_clean_store_has_no_problems() {
    let (tmp, _store) = fresh();
    assert_eq!(problems(tmp.path()), []);
}

#[test]
fn torn_tail_is_reported_at_the_record_it_cuts() {
    let (tmp, store) = fresh();
    let file = segment_file("orders", 235, true);
    let last = *records(&store.join(&file)).last().expect("records");
    let bytes = fs::read(store.join(&file)).expect("read");
    fs::write(store.join(&file), &bytes[..last.position as usize + 5]).expect("tear");
    let found = problems(tmp.path());
    let message = assert_one(&found, "torn_tail", &file, Some(last.position));
    assert!(message.contains("the last 5 bytes"), "{message}");
    assert!(message.contains("recovery cuts it"), "{message}");
    // The index is not at fault, nor any other file.
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn zero_filled_tail_is_reported_where_the_zeros_start() {
    let (tmp, store) = fresh();
    let file = segment_file("a/b", 0, true);
    let mut bytes = fs::read(store.join(&file)).expect("read");
    let end = bytes.len() as u64;
    bytes.extend_from_slice(&[0; 100]);
    fs::write(store.join(&file), &bytes).expect("write");
    let message = assert_one(&problems(tmp.path()), "zero_filled_tail", &file, Some(end));
    assert!(message.contains("100 bytes are zeros"), "{message}");
}

#[test]
fn flipped_bit_in_a_sealed_segment_is_a_crc_mismatch_at_its_record() {
    let (tmp, store) = fresh();
    let file = segment_file("orders", 0, true);
    let victim = records(&store.join(&file))[40];
    let mut bytes = fs::read(store.join(&file)).expect("read");
    bytes[victim.position as usize + format::RECORD_HEADER_SIZE + 3] ^= 0x10;
    fs::write(store.join(&file), &bytes).expect("write");
    let found = problems(tmp.path());
    let message = assert_one(&found, "crc_mismatch", &file, Some(victim.position));
    let next = victim.position + victim.size as u64;
    assert!(
        message.contains(&format!("next valid record is at position {next}")),
        "{message}"
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    // Decoding went on past the damage: one record lost, not the rest.
    let run = inspect(tmp.path(), &[STORE, "--json", "--key", "orders"]);
    let segment = json_lines(&run)
        .into_iter()
        .find(|line| line["type"] == "segment" && line["base_offset"] == 0)
        .expect("segment 0");
    assert_eq!(segment["records"], 118);
    assert_eq!(segment["last_offset"], 118);
}

#[test]
fn flipped_bit_in_the_active_segment_is_a_hole_recovery_refuses() {
    let (tmp, store) = fresh();
    let file = segment_file("a/b", 0, true);
    let victim = records(&store.join(&file))[2];
    let mut bytes = fs::read(store.join(&file)).expect("read");
    bytes[victim.position as usize + format::RECORD_HEADER_SIZE] ^= 0x01;
    fs::write(store.join(&file), &bytes).expect("write");
    let message = assert_one(
        &problems(tmp.path()),
        "crc_mismatch",
        &file,
        Some(victim.position),
    );
    assert!(
        message.contains("recovery refuses to open this key"),
        "{message}"
    );
}

#[test]
fn offsets_not_consecutive_within_a_segment() {
    let (tmp, store) = fresh();
    let file = segment_file("orders", 0, true);
    let victim = records(&store.join(&file))[10];
    let mut bytes = fs::read(store.join(&file)).expect("read");
    let start = victim.position as usize;
    let payload = format::decode_record(&bytes[start..])
        .expect("record")
        .payload
        .to_vec();
    let mut rewritten = Vec::new();
    format::encode_record(&mut rewritten, victim.offset + 5, &payload);
    bytes[start..start + victim.size].copy_from_slice(&rewritten);
    fs::write(store.join(&file), &bytes).expect("write");
    let found = problems(tmp.path());
    let gaps: Vec<&Found> = found.iter().filter(|f| f.kind == "offset_gap").collect();
    assert_eq!(gaps[0].position, Some(victim.position), "{found:#?}");
    assert_eq!(gaps[0].file, format!("{STORE}/{file}"));
    assert!(
        gaps[0].message.contains("offset 15 where 10 was expected"),
        "{found:#?}"
    );
}

#[test]
fn offsets_not_consecutive_across_segments() {
    let (tmp, store) = fresh();
    assert_eq!(bases(&store, "orders"), [0, 119, 235]);
    fs::remove_file(store.join(segment_file("orders", 119, true))).expect("remove");
    fs::remove_file(store.join(segment_file("orders", 119, false))).expect("remove");
    let file = segment_file("orders", 235, true);
    let message = assert_one(
        &problems(tmp.path()),
        "segment_gap",
        &file,
        Some(format::HEADER_BASE_OFFSET_POS as u64),
    );
    assert!(
        message.contains("offsets 119 to 234 are missing"),
        "{message}"
    );
}

/// A log whose first segment starts past 0 is what retention leaves: the
/// inspector names its log start and reports no problem (it used to call
/// it missing segments). A gap after the first segment is still a problem.
#[test]
fn a_truncated_log_is_explained_not_reported() {
    let (tmp, store) = fresh();
    fs::remove_file(store.join(segment_file("orders", 0, true))).expect("remove");
    fs::remove_file(store.join(segment_file("orders", 0, false))).expect("remove");
    let run = inspect(tmp.path(), &[STORE, "--verify"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let run = inspect(tmp.path(), &[STORE]);
    assert!(
        run.stdout
            .contains("log start 119: the key's first segment starts there"),
        "{}",
        run.stdout
    );
    let run = inspect(tmp.path(), &[STORE, "--json"]);
    assert!(
        run.stdout
            .lines()
            .any(|line| line.contains("\"base_offset\":235") && line.contains("\"log_start\":119")),
        "{}",
        run.stdout
    );
    // A removal interrupted while deleting leaves an rm. directory: explained.
    fs::create_dir(store.join("logs/rm.k.gone")).expect("rm. dir");
    let run = inspect(tmp.path(), &[STORE]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("a removed key's directory"),
        "{}",
        run.stdout
    );
}

#[test]
fn index_entry_pointing_at_another_record_disagrees() {
    let (tmp, store) = fresh();
    let index = segment_file("orders", 0, false);
    let log = segment_file("orders", 0, true);
    let third = records(&store.join(&log))[3];
    let mut bytes = fs::read(store.join(&index)).expect("read");
    let position = FILE_HEADER_SIZE + format::INDEX_POSITION_POS;
    bytes[position..position + 4].copy_from_slice(&(third.position as u32).to_le_bytes());
    fs::write(store.join(&index), &bytes).expect("write");
    let found = problems(tmp.path());
    let message = assert_one(
        &found,
        "index_mismatch",
        &index,
        Some(FILE_HEADER_SIZE as u64),
    );
    assert!(
        message.contains("the record there has offset 3"),
        "{message}"
    );
    let run = inspect(tmp.path(), &[STORE, "--index", "--key", "orders"]);
    assert!(
        run.stdout.contains(&format!(
            "      0     114  {:>8}  no: the record there has offset 3",
            third.position
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn index_entry_past_the_log_disagrees() {
    let (tmp, store) = fresh();
    let index = segment_file("orders", 119, false);
    let mut bytes = fs::read(store.join(&index)).expect("read");
    let position = FILE_HEADER_SIZE + format::INDEX_POSITION_POS;
    bytes[position..position + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
    fs::write(store.join(&index), &bytes).expect("write");
    let message = assert_one(
        &problems(tmp.path()),
        "index_mismatch",
        &index,
        Some(FILE_HEADER_SIZE as u64),
    );
    assert!(message.contains("the log is only 4316 bytes"), "{message}");
}

#[test]
fn missing_index_is_reported() {
    let (tmp, store) = fresh();
    let index = segment_file("orders", 0, false);
    fs::remove_file(store.join(&index)).expect("remove");
    let message = assert_one(&problems(tmp.path()), "index_missing", &index, None);
    assert!(message.contains("the log calls for 1 entry"), "{message}");
}

#[test]
fn garbage_index_is_reported() {
    let (tmp, store) = fresh();
    let index = segment_file("orders", 0, false);
    fs::write(store.join(&index), [0xab; 100]).expect("write");
    let found = problems(tmp.path());
    let message = assert_one(&found, "bad_magic", &index, Some(0));
    assert!(message.contains("unknown magic"), "{message}");
    assert_eq!(found.len(), 1, "the header problem says it all: {found:#?}");
}

#[test]
fn short_index_and_partial_entry_are_reported() {
    let (tmp, store) = fresh();
    let index = segment_file("orders", 0, false);
    let bytes = fs::read(store.join(&index)).expect("read");
    fs::write(store.join(&index), &bytes[..FILE_HEADER_SIZE]).expect("write");
    let message = assert_one(
        &problems(tmp.path()),
        "index_short",
        &index,
        Some(FILE_HEADER_SIZE as u64),
    );
    assert!(
        message.contains("the first missing one is offset 114 at position 4132"),
        "{message}"
    );
    let mut bytes = bytes;
    bytes.extend_from_slice(&[1, 2, 3]);
    fs::write(store.join(&index), &bytes).expect("write");
    let end = (FILE_HEADER_SIZE + format::INDEX_ENTRY_SIZE) as u64;
    let message = assert_one(
        &problems(tmp.path()),
        "index_partial_entry",
        &index,
        Some(end),
    );
    assert!(message.contains("the last 3 bytes"), "{message}");
}

#[test]
fn unknown_magic_in_a_log_is_reported_and_the_records_still_decoded() {
    let (tmp, store) = fresh();
    let file = segment_file("orders", 119, true);
    let mut bytes = fs::read(store.join(&file)).expect("read");
    bytes[..8].copy_from_slice(b"NOTSEGLG");
    fs::write(store.join(&file), &bytes).expect("write");
    let found = problems(tmp.path());
    let message = assert_one(&found, "bad_magic", &file, Some(0));
    assert!(message.contains("unknown magic \"NOTSEGLG\""), "{message}");
    assert_eq!(found.len(), 1, "{found:#?}");
    let run = inspect(tmp.path(), &[STORE, "--key", "orders"]);
    assert!(
        run.stdout.contains(
            "  orders   119   234      116   4316  sealed   invalid: unknown magic at 0\n"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn unknown_version_in_a_log_is_reported_and_nothing_decoded() {
    let (tmp, store) = fresh();
    let file = segment_file("a/b", 0, true);
    let mut bytes = fs::read(store.join(&file)).expect("read");
    let header = format::encode_header(&FileHeader {
        kind: FileKind::Log,
        version: format::FORMAT_VERSION + 1,
        base_offset: 0,
    });
    bytes[..FILE_HEADER_SIZE].copy_from_slice(&header);
    fs::write(store.join(&file), &bytes).expect("write");
    let found = problems(tmp.path());
    let message = assert_one(
        &found,
        "unsupported_version",
        &file,
        Some(format::HEADER_VERSION_POS as u64),
    );
    let unknown = format!("format version {}", format::FORMAT_VERSION + 1);
    assert!(message.contains(&unknown), "{message}");
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn garbage_offsets_journal_does_not_parse() {
    let (tmp, store) = fresh();
    fs::write(
        store.join("offsets.journal"),
        b"this is not a journal at all, just text",
    )
    .expect("write");
    let message = assert_one(
        &problems(tmp.path()),
        "bad_magic",
        "offsets.journal",
        Some(0),
    );
    assert!(message.starts_with("does not parse"), "{message}");
    let run = inspect(tmp.path(), &[STORE]);
    assert!(
        run.stdout
            .contains("  none readable (see the problems below)"),
        "{}",
        run.stdout
    );
}

#[test]
fn torn_offsets_journal_tail_is_reported() {
    let (tmp, store) = fresh();
    let path = store.join("offsets.journal");
    let bytes = fs::read(&path).expect("read");
    let scan = seglog::storage::offsets::decode_journal(&bytes).expect("journal");
    let (_, _, last) = *scan.entries.last().expect("entries");
    fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
    let message = assert_one(
        &problems(tmp.path()),
        "torn_tail",
        "offsets.journal",
        Some(last),
    );
    assert!(
        message.contains("the store cuts them when it opens"),
        "{message}"
    );
}

#[test]
fn missing_key_file_of_a_hashed_key_is_reported() {
    let (tmp, store) = fresh();
    let dir = fs::read_dir(store.join("logs"))
        .expect("logs")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.join("KEY").exists())
        .expect("a hashed key directory");
    fs::remove_file(dir.join("KEY")).expect("remove");
    let found = problems(tmp.path());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].kind, "bad_key");
}

// ---- Safety ----

/// The inspector reads a store in use without changing a byte of it, and
/// the store keeps working.
#[test]
fn a_running_store_is_inspected_without_change() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join(STORE);
    let mut store = Store::open(&dir, StoreConfig::default()).expect("open");
    for i in 0..50u32 {
        store
            .append("live", i.to_string().as_bytes())
            .expect("append");
    }
    store.commit("live", 10).expect("commit");
    store.sync().expect("sync");
    let before = snapshot(&dir);
    for args in [
        &[STORE][..],
        &[STORE, "--verify"],
        &[STORE, "--records", "--index", "--json"],
        &[STORE, "--records", "--index", "--verify", "--full"],
    ] {
        let run = inspect(tmp.path(), args);
        assert_eq!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.stderr, "");
    }
    let run = inspect(tmp.path(), &[STORE]);
    assert!(
        run.stdout
            .contains("not closed cleanly (no CLEAN marker): running"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  live     0    49       50"),
        "{}",
        run.stdout
    );
    assert_eq!(snapshot(&dir), before, "inspect changed the store's files");
    store
        .append("live", b"after")
        .expect("append after inspecting");
    store.sync().expect("sync after inspecting");
    let mut last = None;
    store
        .read("live", 50, &mut |offset, payload| {
            last = Some((offset, payload.to_vec()));
            true
        })
        .expect("read");
    assert_eq!(last, Some((50, b"after".to_vec())));
    assert_eq!(store.committed("live"), Some(10));
}

/// `seglog inspect ... | head`: the reader leaving is not an error.
#[test]
fn closed_pipe_exits_quietly() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join(STORE);
    let mut store = Store::open(&dir, StoreConfig::default()).expect("open");
    let message = "m".repeat(100);
    for _ in 0..20_000 {
        store.append("big", message.as_bytes()).expect("append");
    }
    store.close().expect("close");
    // Far more output than a pipe buffers, so the writer meets the closed pipe.
    let mut child = Command::new(BIN)
        .current_dir(tmp.path())
        .args(["inspect", STORE, "--records", "--full"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("first line");
    assert!(first.starts_with("store store:"), "{first}");
    // The reader is dropped here, closing the pipe.
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

/// Inspecting a store while it appends, syncs and rolls segments never
/// fails: whatever half-written state it catches is reported as problems
/// (exit status 1), never as an error or a crash.
#[test]
fn inspecting_a_store_while_it_writes_never_fails() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join(STORE);
    let config = StoreConfig {
        segment_bytes: 600,
        ..StoreConfig::default()
    };
    let mut store = Store::open(&dir, config).expect("open");
    store.append("busy", b"first").expect("append");
    store.sync().expect("sync");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = if i.is_multiple_of(3) { "busy" } else { "other" };
                store.append(key, i.to_string().as_bytes()).expect("append");
                if i.is_multiple_of(10) {
                    store.commit(key, i).expect("commit");
                    store.sync().expect("sync");
                }
                i += 1;
            }
            store
        })
    };
    for _ in 0..10 {
        let run = inspect(
            tmp.path(),
            &[STORE, "--verify", "--json", "--records", "--index"],
        );
        assert!(
            run.code == 0 || run.code == 1,
            "{}{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(run.stderr, "");
        json_lines(&run);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let store = writer.join().expect("writer");
    store.close().expect("close");
    assert_eq!(problems(tmp.path()), [], "a closed store is valid");
}
