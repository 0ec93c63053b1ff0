//! Every option of `seglog inspect`: records, index, key, from, max, full,
//! JSON, single files, node directories, and a path with no data.

use std::fs;

use seglog::storage::format;
use tempfile::TempDir;

use crate::common::*;
use crate::sample;
use crate::support::dirs::copy_dir;

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
            .contains("\n  a/b     0     4        5    114  active   0: no times  valid\n"),
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
