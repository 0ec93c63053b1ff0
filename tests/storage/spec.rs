//! The code's constants and bytes against `segment-format.md`.

use seglog::storage::format::*;
use seglog::storage::index::INDEX_INTERVAL_BYTES;
use seglog::storage::keyname::{KEY_BYTES_MAX, NAME_BYTES_MAX};

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/segment-format.md"))
        .expect("segment-format.md is readable")
}

fn assert_spec_says(spec: &str, text: &str) {
    assert!(spec.contains(text), "segment-format.md should say: {text}");
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn constants_match_the_spec() {
    let spec = spec();
    assert_spec_says(&spec, &format!("Header size: **{FILE_HEADER_SIZE} bytes**"));
    assert_spec_says(
        &spec,
        &format!("Record header size: **{RECORD_HEADER_SIZE} bytes**"),
    );
    assert_spec_says(&spec, &format!("Entry size: **{INDEX_ENTRY_SIZE} bytes**"));
    assert_spec_says(
        &spec,
        &format!("Entry size: **{TIME_INDEX_ENTRY_SIZE} bytes** (`TIME_INDEX_ENTRY_SIZE`)"),
    );
    assert_eq!(
        (TIME_ENTRY_RELATIVE_OFFSET_POS, TIME_ENTRY_CRC_POS),
        (8, 12)
    );
    assert_spec_says(&spec, " 0                 8        12       16");
    assert_eq!(NO_TIMESTAMP, -1);
    assert_spec_says(&spec, "or -1 (`NO_TIMESTAMP`)");
    assert_spec_says(
        &spec,
        &format!("**{INDEX_INTERVAL_BYTES} bytes** (`INDEX_INTERVAL_BYTES`)"),
    );
    assert_spec_says(
        &spec,
        &format!("This document describes version `{FORMAT_VERSION}`"),
    );
    assert_spec_says(&spec, "1 to 1,048,576 (`MESSAGE_BYTES_MAX`");
    assert_eq!(MESSAGE_BYTES_MAX, 1_048_576);
    assert_spec_says(
        &spec,
        &format!("up to {KEY_BYTES_MAX} bytes, `KEY_BYTES_MAX`"),
    );
    assert_spec_says(
        &spec,
        &format!("most {NAME_BYTES_MAX} bytes (`NAME_BYTES_MAX`)"),
    );
    assert_eq!(seglog::storage::store::SEGMENT_BYTES_DEFAULT, 8 << 20);
    assert_spec_says(&spec, "(8 MiB by default, `SEGMENT_BYTES_DEFAULT`");
    assert_eq!(seglog::storage::offsets::COMPACT_BYTES_MIN, 4 << 20);
    assert_spec_says(
        &spec,
        "past 4 MiB (`COMPACT_BYTES_MIN`) and past 4 times (`COMPACT_RATIO`)",
    );
    assert_eq!(seglog::storage::offsets::COMPACT_RATIO, 4);
    for (name, magic) in [
        ("log", LOG_MAGIC),
        ("index", INDEX_MAGIC),
        ("time index", TIME_INDEX_MAGIC),
        ("journal", OFFSETS_MAGIC),
    ] {
        assert_spec_says(&spec, &format!("({})", hex(&magic)));
        let text = std::str::from_utf8(&magic[..7]).expect("ascii magic");
        assert_spec_says(&spec, &format!("`{text}\\0`"));
        let _ = name;
    }
    let zero_crc = crc32fast::hash(&[0u8; 12]);
    assert_spec_says(&spec, &format!("twelve zero bytes is `0x{zero_crc:08X}`"));
    // The header field positions in the diagram.
    assert_eq!(
        (
            HEADER_VERSION_POS,
            HEADER_FLAGS_POS,
            HEADER_BASE_OFFSET_POS,
            HEADER_CRC_POS
        ),
        (8, 10, 12, 20)
    );
    assert_spec_says(&spec, " 0        8     10     12                20      24");
    assert_eq!((RECORD_CRC_POS, RECORD_OFFSET_POS), (4, 8));
    assert_spec_says(&spec, " 0        4        8                 16");
}

#[test]
fn record_bytes_match_the_spec_example() {
    let mut bytes = Vec::new();
    encode_record(&mut bytes, 5, b"42");
    let spec = spec();
    assert_spec_says(&spec, &format!("`{}`", hex(&bytes)));
    let header = encode_header(&FileHeader {
        kind: FileKind::Log,
        version: 1,
        base_offset: 0,
    });
    assert_spec_says(&spec, &format!("`{}`", hex(&header)));
}

#[test]
fn time_index_bytes_match_the_spec_example() {
    let spec = spec();
    let entry = encode_time_entry(TimeEntry {
        timestamp: 1_795_860_000_000,
        relative_offset: 42,
    });
    assert_spec_says(&spec, &format!("`{}`", hex(&entry)));
    let header = seglog::storage::timeindex::time_index_header(0);
    assert_spec_says(&spec, &format!("`{}`", hex(&header)));
    assert_eq!(FORMAT_VERSION, 5, "the example's header says version 5");
}

#[test]
fn decision_table_is_the_one_in_the_spec() {
    let spec = spec();
    for rule in seglog::storage::recovery::DECISION_TABLE {
        assert_spec_says(&spec, &format!("| {} | {} |", rule.state, rule.action));
    }
}

#[test]
fn crc_is_crc32_ieee() {
    // The check value of CRC-32/IEEE (zlib's crc32) for "123456789".
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}

#[test]
fn journal_and_checkpoint_constants_match_the_spec() {
    use seglog::storage::checkpoint::{CHECKPOINT_BYTES_DEFAULT, CHECKPOINT_FILES_MAX};
    use seglog::storage::journal::{BATCH_BYTES_MAX, BATCH_HEADER_SIZE, ENTRY_HEADER_SIZE};
    let spec = spec();
    assert_spec_says(
        &spec,
        &format!("Batch header size: **{BATCH_HEADER_SIZE} bytes**"),
    );
    assert_spec_says(
        &spec,
        &format!("Entry header size: **{ENTRY_HEADER_SIZE} bytes**"),
    );
    assert_eq!(BATCH_BYTES_MAX, 16 << 20);
    assert_spec_says(&spec, "16,777,216 (`BATCH_BYTES_MAX`, 16 MiB)");
    assert_eq!(CHECKPOINT_BYTES_DEFAULT, 64 << 20);
    assert_spec_says(&spec, "64 MiB (`CHECKPOINT_BYTES_DEFAULT`");
    assert_spec_says(
        &spec,
        &format!("{CHECKPOINT_FILES_MAX} (`CHECKPOINT_FILES_MAX`)"),
    );
    for magic in [JOURNAL_MAGIC, CHECKPOINT_MAGIC] {
        assert_spec_says(&spec, &format!("({})", hex(&magic)));
    }
    let zero_crc = crc32fast::hash(&[0u8; 20]);
    assert_spec_says(&spec, &format!("twenty zero bytes is `0x{zero_crc:08X}`"));
    // The examples: a journal file's header, a batch, a checkpoint.
    let journal_header = seglog::storage::journal::file_header(7);
    assert_spec_says(&spec, &format!("`{}`", hex(&journal_header)));
    let mut builder = seglog::storage::journal::BatchBuilder::new(0);
    builder.add_commit("k", 5);
    let (batch, _) = builder.finish();
    assert_spec_says(&spec, &format!("`{}`", hex(&batch)));
    let checkpoint = seglog::storage::checkpoint::encode(7);
    assert_spec_says(&spec, &format!("`{}`", hex(&checkpoint)));
    assert_spec_says(&spec, "5 minutes");
    assert_eq!(
        seglog::storage::checkpoint::CHECKPOINT_AGE_DEFAULT,
        std::time::Duration::from_secs(300)
    );
}

/// The version 3 entry kinds (retention's log start, a key's removal): their
/// byte examples and kind numbers are the spec's.
#[test]
fn log_start_and_removed_entries_match_the_spec() {
    use seglog::storage::journal::{BatchBuilder, ENTRY_KIND_POS, Entry, decode_batch};
    let spec = spec();
    assert_eq!(FORMAT_VERSION, 5);
    assert_eq!(SUPPORTED_VERSIONS, &[1, 2, 3, 4, 5]);
    assert_spec_says(&spec, "4 next file, 5 log\n  start, 6 removed");
    let mut builder = BatchBuilder::new(3);
    builder.add_log_start("k", 4096);
    let (log_start, _) = builder.finish();
    assert_spec_says(&spec, &format!("`{}`", hex(&log_start)));
    let entry = &log_start[seglog::storage::journal::BATCH_HEADER_SIZE..];
    assert_eq!(entry[ENTRY_KIND_POS], 5);
    let mut builder = BatchBuilder::new(4);
    builder.add_removed("k");
    let (removed, _) = builder.finish();
    assert_spec_says(&spec, &format!("`{}`", hex(&removed)));
    let entry = &removed[seglog::storage::journal::BATCH_HEADER_SIZE..];
    assert_eq!(entry[ENTRY_KIND_POS], 6);
    assert_eq!(
        decode_batch(&removed).expect("decodes").entries,
        vec![Entry::Removed { key: "k" }]
    );
    assert_spec_says(&spec, "## Retention and removal");
    assert_spec_says(&spec, &seglog::storage::keyname::removed_name("<name>"));
}

/// The version 5 commit values and removals: the uncommitted entry kind,
/// the offsets entry layout and its examples are the spec's.
#[test]
fn commit_values_and_removals_match_the_spec() {
    use seglog::storage::journal::{BatchBuilder, ENTRY_KIND_POS, Entry, decode_batch};
    use seglog::storage::offsets::{
        COMMIT_VALUE_BYTES_MAX, Committed, ENTRY_FLAG_REMOVED, ENTRY_KEY_POS, encode_entry,
    };
    let spec = spec();
    assert_spec_says(&spec, "6 removed, 7 uncommitted");
    assert_eq!(COMMIT_VALUE_BYTES_MAX, 4096);
    assert_spec_says(&spec, "0 to 4096,\n  `COMMIT_VALUE_BYTES_MAX`");
    assert_eq!((ENTRY_KEY_POS, ENTRY_FLAG_REMOVED), (3, 1));
    assert_spec_says(&spec, " 0       1          3          3+k");
    let mut set = Vec::new();
    encode_entry(
        &mut set,
        "k",
        &Some(Committed {
            offset: 5,
            value: b"meta".to_vec(),
        }),
    );
    assert_spec_says(&spec, &format!("`{}`", hex(&set)));
    let mut removed = Vec::new();
    encode_entry(&mut removed, "k", &None);
    assert_spec_says(&spec, &format!("`{}`", hex(&removed)));
    let mut builder = BatchBuilder::new(0);
    builder.add_uncommitted("k");
    let (batch, _) = builder.finish();
    let entry = &batch[seglog::storage::journal::BATCH_HEADER_SIZE..];
    assert_eq!(entry[ENTRY_KIND_POS], 7);
    assert_eq!(
        decode_batch(&batch).expect("decodes").entries,
        vec![Entry::Uncommitted { key: "k" }]
    );
}
