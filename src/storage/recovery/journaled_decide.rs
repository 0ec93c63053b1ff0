//! The decide step of recovering a key the live journal mentions
//! (`journaled.rs` observes and applies): from the chain of valid records
//! the key's segments hold and the journal's records for the key, the
//! commands the decision table's journal rows prescribe, each with its
//! [`Row`]. Plain data in, commands out: no I/O, so each row is tested
//! without a disk (`journaled_tests.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::storage::format::{self, FILE_HEADER_SIZE};
use crate::storage::journal;

use super::table::{Refusal, Row, Step};

/// Granularity of the page cache, at which a rewrite after a crash starts:
/// a lost writeback loses whole pages.
pub const REWRITE_PAGE_BYTES: u64 = 4096;

/// What the live journal says about one key, in journal order.
#[derive(Clone, Copy, Debug)]
pub enum JournalEntry<'a> {
    /// Records from offset `first`, their frames as in a `.log`.
    Records { first: u64, frames: &'a [u8] },
    /// A direct sync point may have written records from `from` on into the
    /// key's segments without journaling them.
    Direct { from: u64 },
}

impl JournalEntry<'_> {
    fn first(&self) -> u64 {
        match self {
            JournalEntry::Records { first, .. } => *first,
            JournalEntry::Direct { from } => *from,
        }
    }
}

/// The journal's side of one key, as `decide` reads it.
#[derive(Clone, Debug, Default)]
pub struct JournalView<'a> {
    /// The key's first journaled offset: of its first records, or the first
    /// a direct sync point may have written.
    pub j0: u64,
    /// The journal's records by offset. A record journaled twice (again by
    /// a batch made while a direct sync point was in flight) is the same
    /// frame.
    pub records: BTreeMap<u64, &'a [u8]>,
}

impl<'a> JournalView<'a> {
    /// The view of `entries`, which are not empty.
    pub fn new(entries: &[JournalEntry<'a>]) -> JournalView<'a> {
        let j0 = entries
            .iter()
            .map(JournalEntry::first)
            .min()
            .expect("the journal mentions the key");
        let mut records = BTreeMap::new();
        for entry in entries {
            if let JournalEntry::Records { first, frames } = entry {
                for (offset, frame) in journal::frames(*first, frames) {
                    records.entry(offset).or_insert(frame);
                }
            }
        }
        JournalView { j0, records }
    }
}

/// One valid record of the chain: where it is and its CRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// Index into the key's segment list.
    pub segment: usize,
    pub position: u64,
    pub crc: u32,
}

/// What follows the place where the chain of valid records stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Only zero bytes to the end of the file, and no later segment
    /// (zeros before a later segment are a [`Tail::Hole`]).
    Zeros,
    /// Invalid bytes with no valid record after them, and no later
    /// segment: torn.
    Torn,
    /// A valid record, or a later segment, follows: not a torn tail.
    Hole,
}

/// Where and why the chain stopped before the end of the segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainStop {
    /// Index into the key's segment list.
    pub segment: usize,
    /// Position in that segment (0 when its header is what stopped it).
    pub position: u64,
    /// What was found there instead of the next record.
    pub why: String,
    /// What follows it.
    pub tail: Tail,
}

/// What `journaled::observe` found in a key's segments: `decide`'s input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Base offsets of the key's segments, ascending.
    pub bases: Vec<u64>,
    /// Index into `bases` of the segment the chain starts in: the last one
    /// starting at or before `j0` (0 when none does).
    pub start: usize,
    /// Offset of the chain's first record: that segment's base offset, or
    /// the key's log start (at most `j0`) when no segment holds `j0`.
    pub chain_base: u64,
    /// The chain's records, at consecutive offsets from `chain_base`.
    pub found: Vec<Found>,
    /// Where the chain stopped before the end of the segments, if it did.
    pub stop: Option<ChainStop>,
}

/// What recovering a key does, as `decide` prescribes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Delete a segment's `.index`, then its `.log` (no directory fsync).
    RemoveSegment { base: u64 },
    /// Truncate a segment's `.log` to `position` if it is longer, and
    /// fsync it, so the cut bytes cannot come back behind new records.
    CutSegment { base: u64, position: u64 },
    /// fsync the key directory.
    SyncKeyDir,
    /// Write a segment's bytes from position `from` on over themselves
    /// (`fsutil::rewrite_in_place`), and fdatasync it when `sync`.
    RewriteSegment { base: u64, from: u64, sync: bool },
    /// fsync `logs/`, which holds the key directory's own entry.
    SyncLogsDir,
    /// Refuse the key: nothing before this step changed anything.
    Refuse(Refusal),
}

/// What `decide` prescribes for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The row the key's state matched.
    pub case: Row,
    /// The commands, in the order they run.
    pub steps: Vec<Step<Command>>,
    /// Base offsets of the sealed segments left.
    pub sealed: Vec<u64>,
    /// Base offset of the active segment left, if any is.
    pub active: Option<u64>,
    /// The journal's records the segments lack, to write after them.
    pub replay: Vec<(u64, &'a [u8])>,
    /// Base offsets of the segments the crashed run may have left
    /// unsynced: the next checkpoint syncs them.
    pub unsynced: Vec<u64>,
}

impl Decision<'_> {
    /// A decision that refuses the key, by the row `row`.
    fn refuse(row: Row, refusal: Refusal) -> Self {
        Decision {
            case: row,
            steps: vec![Step::new(row, Command::Refuse(refusal))],
            sealed: Vec::new(),
            active: None,
            replay: Vec::new(),
            unsynced: Vec::new(),
        }
    }
}

/// The decision table's journal rows, applied to what `observe` found in
/// the key directory `dir` and what the journal holds for the key. Pure:
/// `dir` only names files.
pub(crate) fn decide<'a>(dir: &Path, journal: &JournalView<'a>, chain: &Chain) -> Decision<'a> {
    let j0 = journal.j0;
    let chain_end = chain.chain_base + chain.found.len() as u64;
    // Keep the chain up to the first record the journal holds differently.
    let differs = first_difference(journal, chain);
    let keep_end = differs.unwrap_or(chain_end);
    // How far the journal's records carry on from there.
    let mut reach = keep_end;
    while journal.records.contains_key(&reach) {
        reach += 1;
    }
    if let Some(refusal) = refusal(dir, journal, chain, keep_end, reach) {
        return refusal;
    }
    // Which row a cut follows: a journal record that differs, journal
    // records past the kept ones, or else the segment tail rules.
    let cut_row = match (differs, &chain.stop) {
        (Some(_), _) => Row::CrcDiffers,
        _ if reach > keep_end => Row::SegmentBehind,
        (_, Some(stop)) if stop.tail == Tail::Zeros => Row::ZeroTail,
        (_, Some(stop)) if stop.position == 0 => Row::TornCreation,
        _ => Row::TornTail,
    };
    let (mut steps, active_index) = cut_steps(chain, keep_end, cut_row);
    // Records from j0 on the journal lacks were written by a direct sync
    // point: served from now on, so synced now.
    let unjournaled = (j0..keep_end).any(|offset| !journal.records.contains_key(&offset));
    let bases = &chain.bases;
    let unsynced: Vec<u64> = match active_index {
        Some(last) => bases[chain.start.min(last)..=last].to_vec(),
        None => Vec::new(),
    };
    rewrite_unsynced(&mut steps, chain, j0, active_index, &unsynced, unjournaled);
    let case = match differs {
        _ if bases.is_empty() => Row::NoSegment,
        Some(_) => Row::CrcDiffers,
        None if reach > keep_end => Row::SegmentBehind,
        None if unjournaled => Row::DirectRecords,
        None => Row::SegmentAhead,
    };
    Decision {
        case,
        steps,
        sealed: active_index.map_or(Vec::new(), |last| bases[..last].to_vec()),
        active: active_index.map(|last| bases[last]),
        replay: (keep_end..reach)
            .map(|offset| (offset, journal.records[&offset]))
            .collect(),
        unsynced,
    }
}

/// The offset of the first record of the chain that the journal holds with
/// another CRC, if there is one: the journal was durable first, so it wins.
fn first_difference(journal: &JournalView<'_>, chain: &Chain) -> Option<u64> {
    chain.found.iter().enumerate().find_map(|(i, record)| {
        let offset = chain.chain_base + i as u64;
        let frame = journal.records.get(&offset)?;
        let crc = format::decode_record(frame).map(|r| r.crc).ok();
        (crc != Some(record.crc)).then_some(offset)
    })
}

/// The steps that cut the segments after the records kept (those below
/// `keep_end`), by the row `row`, and the index of the segment that is
/// active afterwards (`None` when none is left).
fn cut_steps(chain: &Chain, keep_end: u64, row: Row) -> (Vec<Step<Command>>, Option<usize>) {
    let bases = &chain.bases;
    // Where the kept records end: (segment index, position).
    let cut_at = match chain.found.get((keep_end - chain.chain_base) as usize) {
        Some(record) => Some((record.segment, record.position)),
        None => chain
            .stop
            .as_ref()
            .map(|stop| (stop.segment, stop.position)),
    };
    let mut steps = Vec::new();
    let Some((i, position)) = cut_at else {
        return (steps, bases.len().checked_sub(1));
    };
    // Segments after the cut hold only records the journal replays (or
    // torn bytes): remove them, newest first.
    for &base in bases[i + 1..].iter().rev() {
        steps.push(Step::new(row, Command::RemoveSegment { base }));
    }
    let active_index = if position < FILE_HEADER_SIZE as u64 {
        steps.push(Step::new(row, Command::RemoveSegment { base: bases[i] }));
        i.checked_sub(1)
    } else {
        let base = bases[i];
        steps.push(Step::new(row, Command::CutSegment { base, position }));
        Some(i)
    };
    if steps
        .iter()
        .any(|step| matches!(step.command, Command::RemoveSegment { .. }))
    {
        steps.push(Step::new(row, Command::SyncKeyDir));
    }
    (steps, active_index)
}

/// The refusals of the table's journal rows, checked before anything is
/// changed: records a checkpoint synced that the segments lack, journal
/// records that do not follow on from the segments, and damage after the
/// chain that no journal record replaces.
fn refusal<'a>(
    dir: &Path,
    journal: &JournalView<'a>,
    chain: &Chain,
    keep_end: u64,
    reach: u64,
) -> Option<Decision<'a>> {
    let j0 = journal.j0;
    let chain_end = chain.chain_base + chain.found.len() as u64;
    let (file, position) = stop_place(dir, &chain.bases, chain.stop.as_ref());
    let refuse = |row, why: String| {
        let refusal = Refusal {
            file: file.clone(),
            position,
            why,
        };
        Some(Decision::refuse(row, refusal))
    };
    if keep_end < j0 {
        return refuse(
            Row::SyncedRecordsMissing,
            format!(
                "the segments end at offset {keep_end}, before offset {j0}, the first the \
                 journal holds for this key: records synced by a checkpoint are missing"
            ),
        );
    }
    if let Some((&last, _)) = journal.records.iter().next_back()
        && last >= reach
    {
        return refuse(
            Row::SyncedRecordsMissing,
            format!(
                "the journal holds offset {last} for this key, but neither it nor the \
                 segments hold offset {reach}"
            ),
        );
    }
    // Invalid bytes after the chain that no journal record replaces: the
    // tail rules of a segment written without the journal.
    if let Some(stop) = &chain.stop
        && stop.tail == Tail::Hole
        && keep_end == chain_end
        && reach == chain_end
    {
        let why = format!("{}, and valid records follow: not a torn tail", stop.why);
        return refuse(Row::Hole, why);
    }
    None
}

/// Adds the rewrites of the segments the crashed run wrote from the key's
/// first journaled offset on, which may not be durable; their writeback may
/// even have failed, leaving clean pages a bare fdatasync would not write
/// (`fsutil::rewrite_and_sync`). They are rewritten, so that a sync covers
/// them: at once when they hold records the journal does not
/// (`unjournaled`: a direct sync point's), served from now on; otherwise by
/// the checkpoint that deletes the journal, which syncs every file in
/// `unsynced`.
fn rewrite_unsynced(
    steps: &mut Vec<Step<Command>>,
    chain: &Chain,
    j0: u64,
    active_index: Option<usize>,
    unsynced: &[u64],
    unjournaled: bool,
) {
    // The crashed run's writes start at record j0 (the checkpoint the live
    // journal starts after synced everything before it), so the first file
    // is rewritten from j0's page on: the work is bounded by what the
    // journal and the direct sync points since that checkpoint wrote.
    let j0_page = match j0
        .checked_sub(chain.chain_base)
        .and_then(|i| usize::try_from(i).ok())
        .map(|i| chain.found.get(i))
    {
        Some(Some(record)) if record.segment == chain.start => {
            record.position - record.position % REWRITE_PAGE_BYTES
        }
        // The segments end just before j0: what the crashed run wrote
        // after it was cut above, and the journal's records are written
        // again below.
        Some(None) => u64::MAX,
        _ => 0,
    };
    let row = if unjournaled {
        Row::DirectRecords
    } else {
        Row::MentionedKeySync
    };
    for (n, &base) in unsynced.iter().enumerate() {
        let from = if n == 0 && chain.start <= active_index.unwrap_or(0) {
            j0_page
        } else {
            0
        };
        let sync = unjournaled;
        steps.push(Step::new(row, Command::RewriteSegment { base, from, sync }));
    }
    if unjournaled && !unsynced.is_empty() {
        // Their directory entries too: served from now on, and no journal
        // entry would bring them back.
        steps.push(Step::new(Row::DirectRecords, Command::SyncKeyDir));
        steps.push(Step::new(Row::DirectRecords, Command::SyncLogsDir));
    }
}

/// The file and position an error about the chain's end names.
fn stop_place(dir: &Path, bases: &[u64], stop: Option<&ChainStop>) -> (PathBuf, u64) {
    match stop {
        Some(stop) => (
            dir.join(format::log_file_name(bases[stop.segment])),
            stop.position,
        ),
        None => match bases.last() {
            Some(&base) => (dir.join(format::log_file_name(base)), 0),
            None => (dir.to_path_buf(), 0),
        },
    }
}
