//! Every kind of damage, each reported at its file and position.

use std::fs;

use seglog::storage::format::{self, FILE_HEADER_SIZE, FileHeader, FileKind};

use crate::common::*;

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
            "  orders   119   234      116   4316  sealed   2: no times  invalid: unknown magic at 0\n"
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
    let last = scan.entries.last().expect("entries").position;
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

/// A sync point over 16 MiB (several journal batches) torn in its last
/// batch: its batches show the continued flag, and the whole ones are
/// reported as an incomplete sync point where it starts, which the store
/// cuts whole.
#[test]
fn torn_sync_point_of_several_batches_is_reported_where_it_starts() {
    let tmp = tempfile::TempDir::new().expect("temporary directory");
    let dir = tmp.path().join(STORE);
    let mut store = seglog::Store::open(&dir, seglog::StoreConfig::default()).expect("open");
    for key in ["a", "b"] {
        store.append(key, b"1").expect("append");
    }
    store.sync().expect("sync");
    let wal_name = "journal/00000000000000000000.wal";
    let wal = dir.join(wal_name);
    let group = fs::metadata(&wal).expect("stat").len();
    let message = format!("\"{}\"", "x".repeat(512 << 10));
    for _ in 0..20 {
        for key in ["a", "b"] {
            store.append(key, message.as_bytes()).expect("append");
        }
    }
    // Written, never synced: the crash comes before the fdatasync returns.
    let plan = store.prepare_sync().expect("prepare");
    drop(plan);
    drop(store);
    let bytes = fs::read(&wal).expect("read");
    let scan = seglog::storage::journal::scan_file(&bytes).expect("journal");
    let (last, _) = *scan.batches.last().expect("batches");
    fs::write(&wal, &bytes[..last as usize + 100]).expect("tear the last batch");
    let found = problems(tmp.path());
    assert_eq!(found.len(), 1, "{found:#?}");
    let message = assert_one(&found, "torn_tail", wal_name, Some(group));
    assert!(message.contains("incomplete sync point"), "{message}");
    assert!(message.contains("keeps none of it"), "{message}");
    let run = inspect(tmp.path(), &[&format!("{STORE}/{wal_name}"), "--records"]);
    assert!(run.stdout.contains("sync point"), "{}", run.stdout);
    assert!(run.stdout.contains("continued"), "{}", run.stdout);
    let run = inspect(tmp.path(), &[STORE, "--json", "--records"]);
    let flags: Vec<bool> = json_lines(&run)
        .iter()
        .filter(|line| line["type"] == "journal_batch")
        .map(|line| line["continued"].as_bool().expect("continued"))
        .collect();
    // The first sync point's batch, then the whole batches of the torn one.
    assert!(flags.len() >= 2, "{flags:?}");
    assert!(!flags[0] && flags[1..].iter().all(|&c| c), "{flags:?}");
}

/// Guards against: a time index that disagrees with its log passing
/// `--verify`, and the segment table not saying what a time index holds.
#[test]
fn a_time_index_is_shown_and_checked_against_its_log() {
    let tmp = tempfile::TempDir::new().expect("temporary directory");
    let config = seglog::StoreConfig {
        segment_bytes: 64 * 1024,
        ..seglog::StoreConfig::default()
    };
    let mut store = seglog::Store::open(&tmp.path().join(STORE), config).expect("open");
    for i in 0..2_000u64 {
        let record = format!("{{\"timestamp\":{},\"key\":null,\"value\":{i}}}", 1_000 + i);
        store.append("t", record.as_bytes()).expect("append");
    }
    store.close().expect("close");
    assert_eq!(problems(tmp.path()), []);
    let run = inspect(tmp.path(), &[STORE, "--key", "t"]);
    let first = run
        .stdout
        .lines()
        .find(|line| line.contains(" sealed "))
        .expect("a sealed segment");
    let path = tmp.path().join(STORE).join(time_file(0));
    let original = fs::read(&path).expect("read");
    let entries = format::decode_time_entries(&original[FILE_HEADER_SIZE..]).expect("entries");
    assert!(entries.len() > 5, "{entries:?}");
    // Each entry holds its chunk's latest time; the cell shows the range.
    let last = 1_000
        + first
            .split_whitespace()
            .nth(2)
            .expect("last")
            .parse::<i64>()
            .expect("n");
    assert!(
        first.contains(&format!(
            "  {}: {}..{last}  valid",
            entries.len(),
            entries[0].timestamp
        )),
        "{}",
        run.stdout
    );
    let second = FILE_HEADER_SIZE + format::TIME_INDEX_ENTRY_SIZE;
    // A flipped bit: the entry's CRC says so.
    let mut flipped = original.clone();
    flipped[second + 3] ^= 0x04;
    fs::write(&path, &flipped).expect("write");
    let message = assert_one(
        &problems(tmp.path()),
        "time_index_differs",
        &time_file(0),
        Some(second as u64),
    );
    assert!(message.contains("entry 1: CRC mismatch"), "{message}");
    // A whole, valid entry with another time: the log says otherwise.
    let mut wrong = original;
    wrong[second..second + format::TIME_INDEX_ENTRY_SIZE].copy_from_slice(
        &format::encode_time_entry(format::TimeEntry {
            timestamp: 5,
            relative_offset: format::decode_time_entry(
                &flipped[second..second + format::TIME_INDEX_ENTRY_SIZE],
            )
            .map_or(0, |e| e.relative_offset),
        }),
    );
    fs::write(&path, &wrong).expect("write");
    let found = problems(tmp.path());
    let message = assert_one(
        &found,
        "time_index_differs",
        &time_file(0),
        Some(second as u64),
    );
    assert!(message.contains("entry 1 says timestamp 5"), "{message}");
}

/// The path of segment `base`'s `.timeindex` of key `t`, relative to the store.
fn time_file(base: u64) -> String {
    format!("{}/{}", key_dir("t"), format::time_index_file_name(base))
}
