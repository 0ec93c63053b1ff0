//! The decide step of a journaled key's recovery, one test per row of the
//! decision table it follows: segments and journal built as bytes in
//! memory, scanned without a disk ([`scan_chain`]), and the commands
//! [`decide`] returns compared with the row's action.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::storage::error::Result;
use crate::storage::format::{self, FILE_HEADER_SIZE, FORMAT_VERSION, FileHeader, FileKind};

use super::journaled::{scan_chain, scan_segment};
use super::journaled_decide::{
    Chain, Command, Decision, JournalEntry, JournalView, REWRITE_PAGE_BYTES, Tail, decide,
};
use super::table::{Refusal, Row, Step};

/// The key directory the decisions name (never touched).
const DIR: &str = "/data/logs/k.key";

/// Payload of the records the segments hold; a journal record with another
/// payload has another CRC.
const SEGMENT_PAYLOAD: &[u8] = b"s";

/// Bytes a one-byte record takes.
const RECORD_BYTES: u64 = 17;

fn frame(offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    format::encode_record(&mut out, offset, payload);
    out
}

/// Where record `n` of a segment of one-byte records starts.
fn position(n: u64) -> u64 {
    FILE_HEADER_SIZE as u64 + n * RECORD_BYTES
}

/// A segment file starting at `base` that holds the records `base..end`.
fn segment(base: u64, end: u64) -> Vec<u8> {
    segment_of(base, end, SEGMENT_PAYLOAD)
}

fn segment_of(base: u64, end: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = format::encode_header(&FileHeader {
        kind: FileKind::Log,
        version: FORMAT_VERSION,
        base_offset: base,
    })
    .to_vec();
    for offset in base..end {
        format::encode_record(&mut bytes, offset, payload);
    }
    bytes
}

/// Bytes of a torn write: a record header whose CRC is wrong.
fn torn() -> Vec<u8> {
    let mut bytes = frame(999, SEGMENT_PAYLOAD);
    bytes[5] ^= 0xFF;
    bytes
}

/// The chain over `segments` (by base offset), as recovery observes it.
fn observe(segments: &[(u64, Vec<u8>)], j0: u64, log_start: u64) -> Chain {
    let files: HashMap<u64, Vec<u8>> = segments.iter().cloned().collect();
    let bases = segments.iter().map(|(base, _)| *base).collect();
    let read = |base: u64| -> Result<Vec<u8>> { Ok(files[&base].clone()) };
    scan_chain(bases, j0, log_start, read).expect("reads from memory")
}

/// Journal frames for `offsets`, with the segments' payload (same CRC) or
/// another one.
fn journal_frames(offsets: std::ops::Range<u64>, payload: &[u8]) -> Vec<u8> {
    offsets.flat_map(|offset| frame(offset, payload)).collect()
}

fn records(first: u64, frames: &[u8]) -> JournalEntry<'_> {
    JournalEntry::Records { first, frames }
}

fn log_path(base: u64) -> PathBuf {
    Path::new(DIR).join(format::log_file_name(base))
}

fn rewrite(row: Row, base: u64, from: u64, sync: bool) -> Step<Command> {
    Step::new(row, Command::RewriteSegment { base, from, sync })
}

fn replayed(decision: &Decision<'_>) -> Vec<u64> {
    decision.replay.iter().map(|(offset, _)| *offset).collect()
}

fn refusal<'d>(decision: &'d Decision<'_>) -> (Option<Row>, &'d Refusal) {
    match &decision.steps[..] {
        [
            Step {
                row,
                command: Command::Refuse(refusal),
            },
        ] => (*row, refusal),
        steps => panic!("expected one refusal, got {steps:?}"),
    }
}

#[test]
fn segment_ahead_or_equal_replays_nothing() {
    let frames = journal_frames(3..5, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(3, &frames)]);
    let chain = observe(&[(0, segment(0, 5))], 3, 0);
    let decision = decide(Path::new(DIR), &journal, &chain);
    assert_eq!(decision.case, Row::SegmentAhead);
    // Nothing cut or replayed; the file is only rewritten for the
    // checkpoint to sync (its first page holds record 3).
    assert_eq!(
        decision.steps,
        [rewrite(Row::MentionedKeySync, 0, 0, false)]
    );
    assert!(decision.replay.is_empty());
    assert_eq!((decision.sealed, decision.active), (vec![], Some(0)));
    assert_eq!(decision.unsynced, [0]);
}

#[test]
fn segment_behind_is_cut_after_its_last_valid_record_and_replayed() {
    let frames = journal_frames(2..6, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(2, &frames)]);
    let mut bytes = segment(0, 3);
    bytes.extend(torn());
    let chain = observe(&[(0, bytes)], 2, 0);
    let decision = decide(Path::new(DIR), &journal, &chain);
    assert_eq!(decision.case, Row::SegmentBehind);
    let cut = Command::CutSegment {
        base: 0,
        position: position(3),
    };
    assert_eq!(
        decision.steps,
        [
            Step::new(Row::SegmentBehind, cut),
            rewrite(Row::MentionedKeySync, 0, 0, false)
        ]
    );
    assert_eq!(replayed(&decision), [3, 4, 5]);
}

#[test]
fn segment_behind_deletes_the_later_segment_files_newest_first() {
    let frames = journal_frames(2..9, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(2, &frames)]);
    // Segment 3's header was never written; segment 6 is whole but the
    // journal replays it from 3 on anyway.
    let segments = [(0, segment(0, 3)), (3, vec![0; 10]), (6, segment(6, 8))];
    let chain = observe(&segments, 2, 0);
    assert_eq!(chain.stop.as_ref().map(|stop| stop.tail), Some(Tail::Hole));
    let decision = decide(Path::new(DIR), &journal, &chain);
    assert_eq!(decision.case, Row::SegmentBehind);
    assert_eq!(
        decision.steps,
        [
            Step::new(Row::SegmentBehind, Command::RemoveSegment { base: 6 }),
            Step::new(Row::SegmentBehind, Command::RemoveSegment { base: 3 }),
            Step::new(Row::SegmentBehind, Command::SyncKeyDir),
            rewrite(Row::MentionedKeySync, 0, 0, false),
        ]
    );
    assert_eq!(decision.active, Some(0));
    assert_eq!(replayed(&decision), [3, 4, 5, 6, 7, 8]);
}

#[test]
fn a_record_whose_crc_differs_is_cut_and_the_journal_replayed() {
    let frames = journal_frames(2..4, b"j");
    let journal = JournalView::new(&[records(2, &frames)]);
    let chain = observe(&[(0, segment(0, 4))], 2, 0);
    let decision = decide(Path::new(DIR), &journal, &chain);
    assert_eq!(decision.case, Row::CrcDiffers);
    let cut = Command::CutSegment {
        base: 0,
        position: position(2),
    };
    assert_eq!(decision.steps[0], Step::new(Row::CrcDiffers, cut));
    assert_eq!(replayed(&decision), [2, 3]);
    assert_eq!(decision.replay[0].1, &frames[..RECORD_BYTES as usize]);
}

#[test]
fn no_segment_means_every_journaled_record_is_written() {
    let frames = journal_frames(0..3, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(0, &frames)]);
    let decision = decide(Path::new(DIR), &journal, &observe(&[], 0, 0));
    assert_eq!(decision.case, Row::NoSegment);
    assert!(decision.steps.is_empty());
    assert_eq!((decision.active, decision.unsynced.len()), (None, 0));
    assert_eq!(replayed(&decision), [0, 1, 2]);
}

#[test]
fn no_segment_past_a_log_start_replays_from_it() {
    let frames = journal_frames(4096..4098, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(4096, &frames)]);
    let decision = decide(Path::new(DIR), &journal, &observe(&[], 4096, 4096));
    assert_eq!(decision.case, Row::NoSegment);
    assert_eq!(replayed(&decision), [4096, 4097]);
}

#[test]
fn segments_that_end_before_the_first_journaled_offset_refuse_the_key() {
    let frames = journal_frames(5..7, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(5, &frames)]);
    let mut bytes = segment(0, 2);
    bytes.extend(torn());
    let decision = decide(Path::new(DIR), &journal, &observe(&[(0, bytes)], 5, 0));
    assert_eq!(decision.case, Row::SyncedRecordsMissing);
    let (row, refusal) = refusal(&decision);
    assert_eq!(row, Some(Row::SyncedRecordsMissing));
    assert_eq!(
        (refusal.file.clone(), refusal.position),
        (log_path(0), position(2))
    );
    assert!(refusal.why.contains("before offset 5"), "{}", refusal.why);
}

#[test]
fn journal_records_that_do_not_follow_the_segments_refuse_the_key() {
    let two = frame(2, SEGMENT_PAYLOAD);
    let five = frame(5, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(2, &two), records(5, &five)]);
    let decision = decide(
        Path::new(DIR),
        &journal,
        &observe(&[(0, segment(0, 3))], 2, 0),
    );
    let (row, refusal) = refusal(&decision);
    assert_eq!(row, Some(Row::SyncedRecordsMissing));
    assert!(refusal.why.contains("offset 3"), "{}", refusal.why);
}

#[test]
fn damage_followed_by_a_valid_record_past_the_journal_is_a_hole() {
    let frames = journal_frames(1..3, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(1, &frames)]);
    let mut bytes = segment(0, 3);
    bytes.extend(torn());
    bytes.extend(frame(4, SEGMENT_PAYLOAD));
    let decision = decide(Path::new(DIR), &journal, &observe(&[(0, bytes)], 1, 0));
    let (row, refusal) = refusal(&decision);
    assert_eq!(row, Some(Row::Hole));
    assert_eq!(refusal.position, position(3));
    assert!(refusal.why.contains("not a torn tail"), "{}", refusal.why);
}

#[test]
fn direct_records_past_the_journal_are_kept_and_synced_now() {
    let journal = JournalView::new(&[JournalEntry::Direct { from: 2 }]);
    let decision = decide(
        Path::new(DIR),
        &journal,
        &observe(&[(0, segment(0, 5))], 2, 0),
    );
    assert_eq!(decision.case, Row::DirectRecords);
    assert_eq!(
        decision.steps,
        [
            rewrite(Row::DirectRecords, 0, 0, true),
            Step::new(Row::DirectRecords, Command::SyncKeyDir),
            Step::new(Row::DirectRecords, Command::SyncLogsDir),
        ]
    );
    assert!(decision.replay.is_empty());
}

#[test]
fn a_torn_tail_after_direct_records_is_cut() {
    let journal = JournalView::new(&[JournalEntry::Direct { from: 2 }]);
    let mut bytes = segment(0, 4);
    bytes.extend(torn());
    let decision = decide(Path::new(DIR), &journal, &observe(&[(0, bytes)], 2, 0));
    assert_eq!(decision.case, Row::DirectRecords);
    let cut = Command::CutSegment {
        base: 0,
        position: position(4),
    };
    assert_eq!(decision.steps[0], Step::new(Row::TornTail, cut));
    assert_eq!(decision.steps[1], rewrite(Row::DirectRecords, 0, 0, true));
}

#[test]
fn a_zero_filled_tail_after_direct_records_is_cut() {
    let journal = JournalView::new(&[JournalEntry::Direct { from: 2 }]);
    let mut bytes = segment(0, 4);
    bytes.extend([0; 100]);
    let decision = decide(Path::new(DIR), &journal, &observe(&[(0, bytes)], 2, 0));
    let cut = Command::CutSegment {
        base: 0,
        position: position(4),
    };
    assert_eq!(decision.steps[0], Step::new(Row::ZeroTail, cut));
}

/// Regression: zeros after a sealed segment's last record were taken for
/// a zero-filled tail even with a later segment after them, so recovery
/// cut them and deleted the later segment, whose records a direct sync
/// point had acknowledged. Zeros before a later segment are a hole.
#[test]
fn zeros_in_a_sealed_segment_before_direct_records_refuse_the_key() {
    let journal = JournalView::new(&[JournalEntry::Direct { from: 2 }]);
    let mut sealed = segment(0, 4);
    sealed.extend([0; 64]);
    let chain = observe(&[(0, sealed), (4, segment(4, 9))], 2, 0);
    let decision = decide(Path::new(DIR), &journal, &chain);
    let (row, refusal) = refusal(&decision);
    assert_eq!(row, Some(Row::Hole));
    assert_eq!(refusal.position, position(4));
    assert!(
        !decision
            .steps
            .iter()
            .any(|step| matches!(step.command, Command::RemoveSegment { .. })),
        "{:?}",
        decision.steps
    );
}

/// The same zeros, when the journal holds the records after them, are
/// repaired from the journal as any segment behind it is.
#[test]
fn zeros_in_a_sealed_segment_before_journaled_records_are_replayed() {
    let frames = journal_frames(2..9, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(2, &frames)]);
    let mut sealed = segment(0, 4);
    sealed.extend([0; 64]);
    let chain = observe(&[(0, sealed), (4, segment(4, 9))], 2, 0);
    let decision = decide(Path::new(DIR), &journal, &chain);
    assert_eq!(replayed(&decision), (4..9).collect::<Vec<u64>>());
}

#[test]
fn a_last_segment_created_but_never_written_is_deleted() {
    let frames = journal_frames(3..5, SEGMENT_PAYLOAD);
    let journal = JournalView::new(&[records(3, &frames)]);
    let segments = [(0, segment(0, 5)), (5, vec![0; 10])];
    let decision = decide(Path::new(DIR), &journal, &observe(&segments, 3, 0));
    assert_eq!(decision.case, Row::SegmentAhead);
    assert_eq!(
        decision.steps,
        [
            Step::new(Row::TornCreation, Command::RemoveSegment { base: 5 }),
            Step::new(Row::TornCreation, Command::SyncKeyDir),
            rewrite(Row::MentionedKeySync, 0, 0, false),
        ]
    );
    assert_eq!((decision.sealed, decision.active), (vec![], Some(0)));
}

#[test]
fn the_first_rewrite_starts_at_the_page_of_the_first_journaled_record() {
    // Records of 1,000 bytes: record 10 starts on the third page.
    let payload = [b's'; 1000];
    let frames: Vec<u8> = (10..22).flat_map(|o| frame(o, &payload)).collect();
    let journal = JournalView::new(&[records(10, &frames)]);
    let segments = [
        (0, segment_of(0, 20, &payload)),
        (20, segment_of(20, 22, &payload)),
    ];
    let decision = decide(Path::new(DIR), &journal, &observe(&segments, 10, 0));
    assert_eq!(decision.case, Row::SegmentAhead);
    let j0_position = FILE_HEADER_SIZE as u64 + 10 * 1016;
    let page = j0_position - j0_position % REWRITE_PAGE_BYTES;
    assert_eq!(page, 2 * REWRITE_PAGE_BYTES);
    assert_eq!(
        decision.steps,
        [
            rewrite(Row::MentionedKeySync, 0, page, false),
            rewrite(Row::MentionedKeySync, 20, 0, false),
        ]
    );
    assert_eq!((decision.sealed, decision.active), (vec![0], Some(20)));
    assert_eq!(decision.unsynced, [0, 20]);
}

#[test]
fn the_journal_view_starts_at_the_lowest_entry_and_keeps_a_record_once() {
    let first = journal_frames(4..6, SEGMENT_PAYLOAD);
    let again = journal_frames(5..7, b"j");
    let journal = JournalView::new(&[
        records(4, &first),
        JournalEntry::Direct { from: 3 },
        records(5, &again),
    ]);
    assert_eq!(journal.j0, 3);
    assert_eq!(
        journal.records.keys().copied().collect::<Vec<_>>(),
        [4, 5, 6]
    );
    assert_eq!(journal.records[&5], &first[RECORD_BYTES as usize..]);
}

#[test]
fn a_segment_scan_tells_zeros_a_torn_tail_and_a_hole_apart() {
    let scan = |bytes: &[u8], more: bool| {
        let mut found = Vec::new();
        let (next, stop) = scan_segment(bytes, 0, 0, more, &mut found);
        (
            next,
            found.len(),
            stop.map(|stop| (stop.position, stop.tail)),
        )
    };
    assert_eq!(scan(&segment(0, 3), false), (3, 3, None));
    let mut zeros = segment(0, 3);
    zeros.extend([0; 40]);
    assert_eq!(
        scan(&zeros, false),
        (3, 3, Some((position(3), Tail::Zeros)))
    );
    let mut torn_tail = segment(0, 3);
    torn_tail.extend(torn());
    assert_eq!(
        scan(&torn_tail, false),
        (3, 3, Some((position(3), Tail::Torn)))
    );
    // The same bytes before a later segment are not a tail.
    assert_eq!(
        scan(&torn_tail, true),
        (3, 3, Some((position(3), Tail::Hole)))
    );
    let mut hole = torn_tail.clone();
    hole.extend(frame(4, SEGMENT_PAYLOAD));
    assert_eq!(scan(&hole, false), (3, 3, Some((position(3), Tail::Hole))));
    // Zeros before a later segment are not a tail either.
    assert_eq!(scan(&zeros, true), (3, 3, Some((position(3), Tail::Hole))));
    // A header that names another segment stops the chain at position 0.
    assert_eq!(scan(&segment(7, 9), false).2.map(|(p, _)| p), Some(0));
}
