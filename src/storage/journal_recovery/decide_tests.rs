//! The decide step of the journal's recovery, one test per row of the
//! decision table it follows: journal files built as bytes in memory, the
//! commands [`decide_live_files`] and [`decide_file`] return compared with
//! the row's action. No disk.

use std::path::{Path, PathBuf};

use crate::storage::checkpoint::Found;
use crate::storage::format::{self, FILE_HEADER_SIZE};
use crate::storage::journal::{self, BATCH_HEADER_SIZE, BatchBuilder, ENTRY_HEADER_SIZE};
use crate::storage::recovery::{Refusal, Row, Step};

use super::decide::{ends_with_marker, holds_no_batch};
use super::{Command, EntryAt, RecoveredJournal, decide_file, decide_live_files};

/// The journal directory the decisions name (never touched).
const JOURNAL_DIR: &str = "/data/journal";

fn path(seq: u64) -> PathBuf {
    Path::new(JOURNAL_DIR).join(journal::file_name(seq))
}

/// One batch numbered `number` holding what `build` adds.
fn batch(number: u64, build: impl FnOnce(&mut BatchBuilder)) -> Vec<u8> {
    let mut builder = BatchBuilder::new(number);
    build(&mut builder);
    builder.finish().0
}

/// Journal file `seq`: its header, then `batches`.
fn file(seq: u64, batches: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = journal::file_header(seq).to_vec();
    for batch in batches {
        bytes.extend_from_slice(batch);
    }
    bytes
}

/// Frames of records `first..end` of one byte each.
fn frames(first: u64, end: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for offset in first..end {
        format::encode_record(&mut out, offset, b"r");
    }
    out
}

/// A batch whose CRC is wrong: what a torn write leaves.
fn torn_batch(number: u64) -> Vec<u8> {
    let mut bytes = batch(number, |b| b.add_commit("k", 9));
    bytes[5] ^= 0xFF;
    bytes
}

fn decide(seq: u64, bytes: &[u8], last_file: bool, unclean: bool) -> super::FileDecision {
    decide_file(
        Path::new(JOURNAL_DIR),
        seq,
        bytes,
        last_file,
        unclean,
        &mut RecoveredJournal::default(),
    )
}

/// The refusal that ends `steps`, with its row.
fn refusal(steps: &[Step<Command>]) -> (Option<Row>, &Refusal) {
    match steps.last() {
        Some(Step {
            row,
            command: Command::Refuse(refusal),
        }) => (*row, refusal),
        other => panic!("expected a refusal last, got {other:?}"),
    }
}

#[test]
fn files_a_checkpoint_covers_are_deleted_after_the_data_directory_is_synced() {
    let files = decide_live_files(Path::new(JOURNAL_DIR), &[5, 6, 7, 8], &Found::FirstLive(7));
    let covered = |command| Step::new(Row::CoveredJournalFiles, command);
    assert_eq!(
        files.steps,
        [
            covered(Command::SyncDataDir),
            covered(Command::RemoveFile { seq: 5 }),
            covered(Command::RemoveFile { seq: 6 }),
        ]
    );
    assert_eq!(files.live, [7, 8]);
}

#[test]
fn a_damaged_or_missing_checkpoint_replays_every_file_present() {
    let damaged = Found::Damaged("bad CRC".into());
    let files = decide_live_files(Path::new(JOURNAL_DIR), &[3, 4], &damaged);
    let why = "damaged (bad CRC)".to_string();
    let replay = Command::ReplayEveryFile { why };
    assert_eq!(files.steps, [Step::new(Row::CheckpointDamaged, replay)]);
    assert_eq!(files.live, [3, 4]);
    let files = decide_live_files(Path::new(JOURNAL_DIR), &[3, 4], &Found::Missing);
    let why = "missing".to_string();
    let replay = Command::ReplayEveryFile { why };
    assert_eq!(files.steps, [Step::new(Row::CheckpointDamaged, replay)]);
    assert_eq!(files.live, [3, 4]);
}

#[test]
fn the_file_the_checkpoint_names_missing_refuses_the_store() {
    let files = decide_live_files(Path::new(JOURNAL_DIR), &[8], &Found::FirstLive(7));
    let (row, refusal) = refusal(&files.steps);
    assert_eq!(row, Some(Row::JournalFileMissing));
    assert_eq!((refusal.file.clone(), refusal.position), (path(7), 0));
}

#[test]
fn a_file_missing_between_live_ones_refuses_the_store() {
    let files = decide_live_files(Path::new(JOURNAL_DIR), &[7, 9], &Found::FirstLive(7));
    let (row, refusal) = refusal(&files.steps);
    assert_eq!(row, Some(Row::JournalFileMissing));
    assert_eq!(refusal.file, path(8));
}

#[test]
fn a_whole_last_file_after_a_clean_stop_needs_nothing_and_is_indexed() {
    let records = frames(0, 2);
    let bytes = file(
        7,
        &[
            batch(0, |b| b.add_records("k", 0, &records)),
            batch(1, |b| b.add_commit("k", 1)),
        ],
    );
    let mut recovered = RecoveredJournal::default();
    let decision = decide_file(
        Path::new(JOURNAL_DIR),
        7,
        &bytes,
        true,
        false,
        &mut recovered,
    );
    assert!(decision.steps.is_empty(), "{:?}", decision.steps);
    assert_eq!(decision.end, bytes.len() as u64);
    let start = FILE_HEADER_SIZE + BATCH_HEADER_SIZE + ENTRY_HEADER_SIZE + 1;
    assert!(
        matches!(
            recovered.keys["k"][..],
            [EntryAt::Records { file: 0, start: s, end: e, first: 0 }]
                if s == start && e == start + records.len()
        ),
        "{:?}",
        recovered.keys["k"]
    );
    assert_eq!(
        recovered.commits,
        [(
            "k".to_string(),
            Some(crate::storage::offsets::Committed {
                offset: 1,
                value: Vec::new()
            }),
            false
        )]
    );
    assert!(recovered.has_batches);
    assert_eq!(recovered.next_batch, 2);
}

#[test]
fn after_an_unclean_stop_a_live_file_is_rewritten_and_synced() {
    let bytes = file(7, &[batch(0, |b| b.add_commit("k", 1))]);
    let decision = decide(7, &bytes, true, true);
    let len = bytes.len() as u64;
    let rewrite = Command::RewriteAndSync { seq: 7, len };
    assert_eq!(decision.steps, [Step::new(Row::UncleanJournal, rewrite)]);
}

#[test]
fn a_zero_filled_tail_of_the_last_file_is_cut() {
    let whole = file(7, &[batch(0, |b| b.add_commit("k", 1))]);
    let mut bytes = whole.clone();
    bytes.extend([0; 50]);
    let decision = decide(7, &bytes, true, false);
    assert_eq!(decision.end, whole.len() as u64);
    match &decision.steps[..] {
        [
            Step {
                row: Some(Row::JournalZeroTail),
                command:
                    Command::CutFile {
                        seq: 7,
                        len,
                        tail_bytes: 50,
                        ..
                    },
            },
        ] => assert_eq!(*len, whole.len() as u64),
        steps => panic!("expected a cut, got {steps:?}"),
    }
}

#[test]
fn a_torn_tail_of_the_last_file_is_cut_then_rewritten_after_an_unclean_stop() {
    let whole = file(7, &[batch(0, |b| b.add_commit("k", 1))]);
    let mut bytes = whole.clone();
    bytes.extend(torn_batch(1));
    let decision = decide(7, &bytes, true, true);
    let len = whole.len() as u64;
    assert!(matches!(
        &decision.steps[..],
        [
            Step {
                row: Some(Row::JournalTornTail),
                command: Command::CutFile { seq: 7, len: cut, .. },
            },
            Step {
                row: Some(Row::UncleanJournal),
                command: Command::RewriteAndSync { seq: 7, len: rewritten },
            },
        ] if *cut == len && *rewritten == len
    ));
}

#[test]
fn an_invalid_batch_followed_by_a_valid_one_is_a_hole() {
    let whole = file(7, &[batch(0, |b| b.add_commit("k", 1))]);
    let mut bytes = whole.clone();
    bytes.extend(torn_batch(1));
    bytes.extend(batch(2, |b| b.add_commit("k", 2)));
    let decision = decide(7, &bytes, true, false);
    let (row, refusal) = refusal(&decision.steps);
    assert_eq!(row, Some(Row::JournalHole));
    assert_eq!(
        (refusal.file.clone(), refusal.position),
        (path(7), whole.len() as u64)
    );
    assert_eq!(decision.steps.len(), 1, "nothing is cut before refusing");
}

#[test]
fn an_invalid_batch_in_a_file_before_the_last_is_a_hole() {
    let mut bytes = file(7, &[batch(0, |b| b.add_commit("k", 1))]);
    bytes.extend(torn_batch(1));
    let decision = decide(7, &bytes, false, false);
    let (row, refusal) = refusal(&decision.steps);
    assert_eq!(row, Some(Row::JournalHole));
    assert!(
        refusal.why.contains("later journal files exist"),
        "{}",
        refusal.why
    );
}

#[test]
fn batch_numbers_that_do_not_run_on_across_files_are_a_hole() {
    let mut recovered = RecoveredJournal::default();
    let first = file(7, &[batch(0, |b| b.add_next_file(8))]);
    let decision = decide_file(
        Path::new(JOURNAL_DIR),
        7,
        &first,
        false,
        false,
        &mut recovered,
    );
    assert!(decision.steps.is_empty(), "{:?}", decision.steps);
    recovered.files.push(std::sync::Arc::new(first));
    let second = file(8, &[batch(2, |b| b.add_commit("k", 1))]);
    let decision = decide_file(
        Path::new(JOURNAL_DIR),
        8,
        &second,
        true,
        false,
        &mut recovered,
    );
    let (row, refusal) = refusal(&decision.steps);
    assert_eq!(row, Some(Row::JournalHole));
    assert_eq!(refusal.position, FILE_HEADER_SIZE as u64);
    assert!(
        refusal.why.contains("batch 2 where 1 was due"),
        "{}",
        refusal.why
    );
}

#[test]
fn a_marker_in_the_last_file_names_a_missing_file() {
    let bytes = file(7, &[batch(0, |b| b.add_next_file(8))]);
    let decision = decide(7, &bytes, true, false);
    let (row, refusal) = refusal(&decision.steps);
    assert_eq!(row, Some(Row::JournalFileMissing));
    assert_eq!(refusal.file, path(8));
}

#[test]
fn damage_no_crash_leaves_is_refused_without_a_row() {
    let cases = [
        // A file before the last without the marker that ends it.
        (
            file(7, &[batch(0, |b| b.add_commit("k", 1))]),
            false,
            "no marker",
        ),
        // A marker naming a file other than the next.
        (file(7, &[batch(0, |b| b.add_next_file(9))]), false, "not 8"),
        // A batch after the marker.
        (
            file(
                7,
                &[
                    batch(0, |b| b.add_next_file(8)),
                    batch(1, |b| b.add_commit("k", 1)),
                ],
            ),
            false,
            "after the marker",
        ),
        // A header naming another file.
        (file(6, &[]), true, "header names journal file 6"),
    ];
    for (bytes, last_file, why) in cases {
        let decision = decide(7, &bytes, last_file, false);
        let (row, refusal) = refusal(&decision.steps);
        assert_eq!(row, None, "{why}");
        assert!(refusal.why.contains(why), "{} lacks {why}", refusal.why);
    }
}

#[test]
fn a_removed_entry_voids_the_entries_of_the_key_before_it() {
    let before = frames(0, 3);
    let after = frames(0, 1);
    let bytes = file(
        7,
        &[
            batch(0, |b| b.add_records("k", 0, &before)),
            batch(1, |b| b.add_removed("k")),
            batch(2, |b| b.add_records("k", 0, &after)),
        ],
    );
    let mut recovered = RecoveredJournal::default();
    decide_file(
        Path::new(JOURNAL_DIR),
        7,
        &bytes,
        true,
        false,
        &mut recovered,
    );
    assert!(recovered.has_removals);
    assert!(
        matches!(
            recovered.keys["k"][..],
            [EntryAt::Removed, EntryAt::Records { first: 0, .. }]
        ),
        "{:?}",
        recovered.keys["k"]
    );
}

#[test]
fn an_interrupted_rotation_leaves_a_file_without_a_batch_after_one_without_a_marker() {
    // What the last file may hold after a crash while it was created.
    assert!(holds_no_batch(&journal::file_header(8)));
    assert!(holds_no_batch(&journal::file_header(8)[..10]));
    assert!(holds_no_batch(&[0; FILE_HEADER_SIZE + 40]));
    assert!(!holds_no_batch(&file(
        8,
        &[batch(3, |b| b.add_commit("k", 1))]
    )));
    // The file before it: a rotation that wrote its marker is not undone.
    assert!(ends_with_marker(&file(
        7,
        &[batch(2, |b| b.add_next_file(8))]
    )));
    assert!(!ends_with_marker(&file(
        7,
        &[batch(2, |b| b.add_commit("k", 1))]
    )));
}
