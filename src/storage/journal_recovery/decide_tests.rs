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

/// Regression (found by the cluster's Kafka failover test): a commit's
/// value was left out of where the next entry starts, so the records of a
/// key after a producer's state in the same batch (another partition's,
/// or a Raft group's applied record) were indexed that many bytes early,
/// and their replay wrote the state's bytes into the key's segment.
#[test]
fn records_after_a_commit_with_a_value_are_indexed_where_they_are() {
    let first = frames(0, 2);
    let second = frames(0, 3);
    let value = [7u8; 60];
    let bytes = file(
        7,
        &[batch(0, |b| {
            b.add_records("a", 0, &first);
            b.add_commit_value("producer 1 a", 1, &value);
            b.add_records("b", 0, &second);
        })],
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
    let [EntryAt::Records { start, end, .. }] = recovered.keys["b"][..] else {
        panic!("{:?}", recovered.keys["b"]);
    };
    assert_eq!(&bytes[start..end], &second[..]);
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

/// One sync point of several batches numbered from `first`: each closure
/// fills one batch, all but the last flagged continued, as a sync point
/// over 16 MiB is written (`split_batch` stands for the size limit).
fn sync_point(first: u64, batches: &[&dyn Fn(&mut BatchBuilder)]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(first);
    for (i, build) in batches.iter().enumerate() {
        if i > 0 {
            builder.split_batch();
        }
        build(&mut builder);
    }
    builder.finish().0
}

/// Journal file 7: batch 0 (a commit of `c`), then a sync point of three
/// batches (1 and 2 flagged continued, 3 not): records of `a`, records of
/// `b`, a commit of `a`. Returns the file and where batches 1 and 3 start.
fn file_with_a_sync_point_of_three_batches() -> (Vec<u8>, usize, usize) {
    let before = file(7, &[batch(0, |b| b.add_commit("c", 4))]);
    let (a, b) = (frames(0, 3), frames(0, 2));
    let group = sync_point(
        1,
        &[
            &|builder: &mut BatchBuilder| builder.add_records("a", 0, &a),
            &|builder: &mut BatchBuilder| builder.add_records("b", 0, &b),
            &|builder: &mut BatchBuilder| builder.add_commit("a", 2),
        ],
    );
    let first = journal::decode_batch(&group).expect("batch 1");
    let second = journal::decode_batch(&group[first.size..]).expect("batch 2");
    let last = before.len() + first.size + second.size;
    let mut bytes = before.clone();
    bytes.extend_from_slice(&group);
    (bytes, before.len(), last)
}

/// Guards against: a sync point of several batches torn by a crash keeping
/// the batches before its torn last one (records of one key kept, those
/// of another and the commit lost: the sync point in part). Its last batch
/// torn, cut short or missing, none of it is kept, and the file is cut
/// where it starts, so the next sync point does not follow the orphans.
#[test]
fn a_sync_point_whose_last_batch_is_torn_keeps_none_of_its_batches() {
    let (whole, group_at, last_at) = file_with_a_sync_point_of_three_batches();
    let mut torn = whole.clone();
    torn[last_at + 5] ^= 0xFF;
    let cut_short = whole[..whole.len() - 3].to_vec();
    let missing = whole[..last_at].to_vec();
    let mut zeroed = whole.clone();
    zeroed[last_at..].fill(0);
    for (bytes, what) in [
        (torn, "torn"),
        (cut_short, "cut short"),
        (missing, "missing"),
        (zeroed, "zeroed"),
    ] {
        let mut recovered = RecoveredJournal::default();
        let decision = decide_file(
            Path::new(JOURNAL_DIR),
            7,
            &bytes,
            true,
            true,
            &mut recovered,
        );
        let group = group_at as u64;
        let tail = (bytes.len() - group_at) as u64;
        match &decision.steps[..] {
            [
                Step {
                    row: Some(Row::JournalTornSyncPoint),
                    command:
                        Command::CutFile {
                            seq: 7,
                            len,
                            tail_bytes,
                            ..
                        },
                },
                Step {
                    row: Some(Row::UncleanJournal),
                    command:
                        Command::RewriteAndSync {
                            seq: 7,
                            len: rewritten,
                        },
                },
            ] => assert_eq!(
                (*len, *tail_bytes, *rewritten),
                (group, tail, group),
                "{what}"
            ),
            steps => panic!("{what}: expected the sync point cut, got {steps:?}"),
        }
        assert_eq!(decision.end, group, "{what}");
        assert!(recovered.keys.is_empty(), "{what}: {:?}", recovered.keys);
        assert_eq!(offsets(&recovered), [("c".to_string(), 4)], "{what}");
        assert_eq!(
            recovered.next_batch, 1,
            "{what}: numbers go on after batch 0"
        );
    }
}

/// The same sync point whole: all three batches are kept, as one.
#[test]
fn a_whole_sync_point_of_several_batches_is_kept() {
    let (bytes, _, _) = file_with_a_sync_point_of_three_batches();
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
    assert!(matches!(
        recovered.keys["a"][..],
        [EntryAt::Records { first: 0, .. }]
    ));
    assert!(matches!(
        recovered.keys["b"][..],
        [EntryAt::Records { first: 0, .. }]
    ));
    assert_eq!(
        offsets(&recovered),
        [("c".to_string(), 4), ("a".to_string(), 2)]
    );
    assert_eq!(recovered.next_batch, 4);
}

/// Guards against: damage in the middle taken for a torn sync point. An
/// unfinished sync point followed by a valid batch is a hole, refused
/// before anything is cut: after a torn last batch, or directly, with the
/// batch that would have ended it missing from the numbering.
#[test]
fn an_unfinished_sync_point_followed_by_a_whole_batch_is_a_hole() {
    let (whole, group_at, last_at) = file_with_a_sync_point_of_three_batches();
    let mut torn_then_whole = whole.clone();
    torn_then_whole[last_at + 5] ^= 0xFF;
    torn_then_whole.extend(batch(4, |b| b.add_commit("c", 5)));
    let mut skipped = whole[..last_at].to_vec();
    skipped.extend(batch(4, |b| b.add_commit("c", 5)));
    for (bytes, position, why) in [
        (torn_then_whole, last_at, "a valid batch follows"),
        (skipped, last_at, "batch 4 where 3 was due"),
    ] {
        let decision = decide(7, &bytes, true, false);
        let (row, refusal) = refusal(&decision.steps);
        assert_eq!(row, Some(Row::JournalHole), "{why}");
        assert_eq!(refusal.position, position as u64, "{why}");
        assert!(refusal.why.contains(why), "{} lacks {why}", refusal.why);
        assert_eq!(decision.steps.len(), 1, "nothing is cut before refusing");
    }
    // In a file before the last, an unfinished sync point is a hole too
    // (one never spans two files).
    let unfinished = whole[..last_at].to_vec();
    let decision = decide(7, &unfinished, false, false);
    let (row, refusal) = refusal(&decision.steps);
    assert_eq!(row, Some(Row::JournalHole));
    assert_eq!(refusal.position, group_at as u64);
    assert!(
        refusal.why.contains("later journal files exist"),
        "{}",
        refusal.why
    );
}

/// Guards against: a sync point that spans two journal files being taken
/// as whole. The writer never makes one (a builder's batches go to one
/// file, and nothing follows its marker); a marker in a batch flagged
/// continued would be one, and is refused as damage no crash leaves.
#[test]
fn a_next_file_marker_in_a_continued_batch_is_refused() {
    let mut builder = BatchBuilder::new(0);
    builder.add_next_file(8);
    builder.split_batch();
    let (marker, _) = builder.finish();
    assert!(journal::decode_batch(&marker).expect("decodes").continued);
    for last_file in [false, true] {
        let decision = decide(7, &file(7, std::slice::from_ref(&marker)), last_file, false);
        let (row, refusal) = refusal(&decision.steps);
        assert_eq!(row, None);
        assert!(
            refusal
                .why
                .contains("marker in a batch whose sync point goes on"),
            "{}",
            refusal.why
        );
        assert_eq!(decision.steps.len(), 1, "nothing is cut before refusing");
    }
}

/// A journal written before the flag existed (the field reserved, 0):
/// every batch is a whole sync point, as it was. The bytes are the spec's
/// examples (batches 3 and 4), which that version wrote; a torn tail after
/// them cuts only the tail.
#[test]
fn a_journal_written_before_the_flag_reads_as_before() {
    let hex = |text: &str| -> Vec<u8> {
        text.split(' ')
            .map(|byte| u8::from_str_radix(byte, 16).expect("hex"))
            .collect()
    };
    let log_start = hex(
        "15 00 00 00 00 D2 08 7F 03 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 05 00 01 00 \
         00 00 00 00 00 10 00 00 00 00 00 00 00 00 00 00 6B",
    );
    let removed = hex(
        "15 00 00 00 C0 D4 3C 3C 04 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 06 00 01 00 \
         00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 6B",
    );
    for old in [&log_start, &removed] {
        assert!(!journal::decode_batch(old).expect("decodes").continued);
    }
    let whole = file(7, &[log_start, removed]);
    let mut bytes = whole.clone();
    bytes.extend(torn_batch(5));
    let mut recovered = RecoveredJournal::default();
    let decision = decide_file(
        Path::new(JOURNAL_DIR),
        7,
        &bytes,
        true,
        false,
        &mut recovered,
    );
    let len = whole.len() as u64;
    assert!(
        matches!(
            &decision.steps[..],
            [Step {
                row: Some(Row::JournalTornTail),
                command: Command::CutFile { seq: 7, len: cut, .. },
            }] if *cut == len
        ),
        "{:?}",
        decision.steps
    );
    assert_eq!(recovered.next_batch, 5);
    assert!(matches!(recovered.keys["k"][..], [EntryAt::Removed]));
}

/// The recovered commits as key and offset (none of these tests removes
/// one or gives a value).
fn offsets(recovered: &RecoveredJournal) -> Vec<(String, u64)> {
    recovered
        .commits
        .iter()
        .map(|(key, change, _)| {
            let offset = change.as_ref().map_or(u64::MAX, |c| c.offset);
            (key.clone(), offset)
        })
        .collect()
}
