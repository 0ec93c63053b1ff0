//! The write-ahead journal of a store (format versions 2 and 3): its checkpoint,
//! its files and their batches, checked with the decoders the store
//! recovers them with ([`journal::scan_file`]) and the same rules, without
//! changing anything. Rendering is `output.rs`'s.

use std::path::{Path, PathBuf};

use crate::storage::backend::RealFs;
use crate::storage::checkpoint::{self, Found};
use crate::storage::format::DecodeError;
use crate::storage::journal::{self, Entry, FileScan};

use super::problem::{FileProblems, Note, Problem, ProblemKind};

/// One entry of a batch, as listed.
#[derive(Clone, Debug)]
pub enum EntrySummary {
    Records {
        key: String,
        first: u64,
        count: u32,
    },
    Commit {
        key: String,
        offset: u64,
        value_bytes: usize,
    },
    Uncommitted {
        key: String,
    },
    Direct {
        key: String,
        from: u64,
    },
    NextFile {
        seq: u64,
    },
    LogStart {
        key: String,
        offset: u64,
    },
    Removed {
        key: String,
    },
}

/// One valid batch.
#[derive(Clone, Debug)]
pub struct BatchSummary {
    pub number: u64,
    pub position: u64,
    pub size: u64,
    /// More batches of its sync point follow (the continued flag).
    pub continued: bool,
    pub entries: Vec<EntrySummary>,
}

/// One journal file checked.
#[derive(Debug)]
pub struct WalFile {
    pub path: PathBuf,
    /// Sequence number from the name (or the header, for a renamed copy).
    pub seq: Option<u64>,
    /// Size of the file; `None` when it cannot be read.
    pub bytes: Option<u64>,
    /// Whether the checkpoint covers it (the store deletes it when it opens).
    pub stale: bool,
    pub batches: Vec<BatchSummary>,
    pub records: u64,
    pub commits: u64,
    pub problems: Vec<Problem>,
}

/// What the inspector found of a store's journal.
#[derive(Debug, Default)]
pub struct JournalReport {
    /// The first live file the checkpoint names, if it could be read.
    pub first_live: Option<u64>,
    pub files: Vec<WalFile>,
    pub problems: Vec<Problem>,
    pub notes: Vec<Note>,
}

/// Checks the journal of the store in `store_dir`, if it has one.
pub fn read_store(store_dir: &Path) -> Option<JournalReport> {
    let journal_dir = store_dir.join(journal::JOURNAL_DIR_NAME);
    if !journal_dir.is_dir() {
        return None;
    }
    let mut report = JournalReport::default();
    let checkpoint_path = store_dir.join(checkpoint::CHECKPOINT_FILE_NAME);
    match checkpoint::read(&RealFs, store_dir) {
        Ok(Found::FirstLive(seq)) => report.first_live = Some(seq),
        Ok(Found::Missing) => report.notes.push(Note::new(
            &checkpoint_path,
            "missing: the store replays every journal file present",
        )),
        Ok(Found::Damaged(why)) => report.problems.push(Problem::at(
            ProblemKind::HeaderCrcMismatch,
            &checkpoint_path,
            0,
            format!("does not parse ({why}); the store replays every journal file present"),
        )),
        Err(e) => report.problems.push(Problem::of_file(
            ProblemKind::Unreadable,
            &checkpoint_path,
            format!("cannot read: {e}"),
        )),
    }
    let tmp = store_dir.join(checkpoint::CHECKPOINT_TMP_NAME);
    if tmp.exists() {
        report.notes.push(Note::new(
            &tmp,
            "a checkpoint interrupted before its rename; the store deletes it",
        ));
    }
    let seqs = match journal::list_files(&RealFs, &journal_dir) {
        Ok(seqs) => seqs,
        Err(e) => {
            report.problems.push(Problem::of_file(
                ProblemKind::Unreadable,
                &journal_dir,
                format!("cannot list: {e}"),
            ));
            return Some(report);
        }
    };
    let first_live = report
        .first_live
        .unwrap_or_else(|| seqs.first().copied().unwrap_or(0));
    let live: Vec<u64> = seqs.iter().copied().filter(|&s| s >= first_live).collect();
    if report.first_live.is_some() && live.first() != Some(&first_live) {
        report.problems.push(Problem::of_file(
            ProblemKind::JournalMissing,
            &journal_dir.join(journal::file_name(first_live)),
            "missing: the checkpoint names this journal file; the store refuses to open",
        ));
    }
    for (i, &seq) in live.iter().enumerate() {
        let due = first_live + i as u64;
        if seq != due && live.first() == Some(&first_live) {
            report.problems.push(Problem::of_file(
                ProblemKind::JournalMissing,
                &journal_dir.join(journal::file_name(due)),
                "missing between live journal files; the store refuses to open",
            ));
            break;
        }
    }
    let mut expected_batch = None;
    for &seq in &seqs {
        let path = journal_dir.join(journal::file_name(seq));
        let last = live.last() == Some(&seq);
        let mut file = read_file(&path, last, &mut expected_batch);
        file.seq = Some(seq);
        file.stale = seq < first_live;
        if file.stale {
            report.notes.push(Note::new(
                &path,
                "covered by the checkpoint; the store deletes it when it opens",
            ));
            file.problems.clear();
        }
        report.files.push(file);
    }
    Some(report)
}

/// Checks one journal file. `last` says whether it is the newest live one
/// (where a torn tail is expected), `expected_batch` carries the batch
/// numbering across files.
pub fn read_file(path: &Path, last: bool, expected_batch: &mut Option<u64>) -> WalFile {
    let mut file = WalFile {
        path: path.to_path_buf(),
        seq: None,
        bytes: None,
        stale: false,
        batches: Vec::new(),
        records: 0,
        commits: 0,
        problems: Vec::new(),
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            file.problems.push(Problem::of_file(
                ProblemKind::Unreadable,
                path,
                format!("cannot read: {e}"),
            ));
            return file;
        }
    };
    file.bytes = Some(bytes.len() as u64);
    let scan = match journal::scan_file(&bytes) {
        Ok(scan) => scan,
        Err(error) => {
            file.problems.push(Problem::at(
                ProblemKind::of_header_error(&error),
                path,
                0,
                format!("header does not parse: {error}; the store refuses to open"),
            ));
            return file;
        }
    };
    file.seq = Some(scan.seq);
    let mut problems = FileProblems::default();
    let mut marker = false;
    for (position, batch) in &scan.batches {
        if let Some(due) = *expected_batch
            && batch.number != due
        {
            problems.push(Problem::at(
                ProblemKind::OffsetGap,
                path,
                *position,
                format!(
                    "batch {} where {due} was due; the store refuses to open",
                    batch.number
                ),
            ));
        }
        *expected_batch = Some(batch.number + 1);
        let mut entries = Vec::with_capacity(batch.entries.len());
        for entry in &batch.entries {
            entries.push(match entry {
                Entry::Records {
                    key, first, count, ..
                } => {
                    file.records += u64::from(*count);
                    EntrySummary::Records {
                        key: (*key).to_string(),
                        first: *first,
                        count: *count,
                    }
                }
                Entry::Commit { key, offset, value } => {
                    file.commits += 1;
                    EntrySummary::Commit {
                        key: (*key).to_string(),
                        offset: *offset,
                        value_bytes: value.len(),
                    }
                }
                Entry::Uncommitted { key } => {
                    file.commits += 1;
                    EntrySummary::Uncommitted {
                        key: (*key).to_string(),
                    }
                }
                Entry::Direct { key, from } => EntrySummary::Direct {
                    key: (*key).to_string(),
                    from: *from,
                },
                Entry::NextFile { seq } => EntrySummary::NextFile { seq: *seq },
                Entry::LogStart { key, offset } => EntrySummary::LogStart {
                    key: (*key).to_string(),
                    offset: *offset,
                },
                Entry::Removed { key } => EntrySummary::Removed {
                    key: (*key).to_string(),
                },
            });
        }
        marker = matches!(batch.entries.last(), Some(Entry::NextFile { .. }));
        file.batches.push(BatchSummary {
            number: batch.number,
            position: *position,
            size: batch.size as u64,
            continued: batch.continued,
            entries,
        });
    }
    let whole = scan.whole_sync_point_batches();
    if whole < scan.batches.len() {
        problems.push(unfinished_problem(path, &bytes, &scan, whole, last));
    } else if let Some(stop) = &scan.stop {
        problems.push(tail_problem(path, &bytes, scan.end_position, stop, last));
    }
    if !last && !marker && scan.stop.is_none() {
        problems.push(Problem::of_file(
            ProblemKind::JournalMissing,
            path,
            "no marker naming the next journal file, yet later files exist",
        ));
    }
    file.problems = problems.into_vec();
    file
}

/// The problem with the bytes after the last valid batch, judged as the
/// store judges them when it opens.
fn tail_problem(path: &Path, bytes: &[u8], end: u64, stop: &DecodeError, last: bool) -> Problem {
    let tail = bytes.get(end as usize..).unwrap_or_default();
    let size = tail.len();
    if tail.iter().all(|&b| b == 0) {
        return Problem::at(
            ProblemKind::ZeroFilledTail,
            path,
            end,
            format!(
                "zero-filled tail: the last {size} bytes are zeros; the store cuts them when it opens"
            ),
        );
    }
    if let Some(valid_at) = journal::find_batch_after(bytes, end) {
        return Problem::at(
            ProblemKind::of_record_error(stop),
            path,
            end,
            format!(
                "{stop}, but a valid batch follows at position {valid_at}: \
                 the store refuses to open until it is repaired"
            ),
        );
    }
    let consequence = if last {
        "expected after a crash during a sync point: the store cuts it when it opens"
    } else {
        "and later journal files exist: the store refuses to open"
    };
    Problem::at(
        ProblemKind::TornTail,
        path,
        end,
        format!("torn tail: the last {size} bytes are not a whole batch ({stop}); {consequence}"),
    )
}

/// The problem with valid batches at the end of a file that say their sync
/// point goes on (from `scan.batches[whole]` on) when no batch ending it
/// follows, judged as the store judges them when it opens: it drops the
/// whole sync point with its torn or missing last batch.
fn unfinished_problem(
    path: &Path,
    bytes: &[u8],
    scan: &FileScan<'_>,
    whole: usize,
    last: bool,
) -> Problem {
    let end = scan.end_position;
    if let Some(stop) = &scan.stop {
        let tail = bytes.get(end as usize..).unwrap_or_default();
        if !tail.iter().all(|&b| b == 0) && journal::find_batch_after(bytes, end).is_some() {
            // A hole: reported as such, where the invalid batch is.
            return tail_problem(path, bytes, end, stop, last);
        }
    }
    let (position, first) = scan
        .batches
        .get(whole)
        .map_or((end, 0), |(position, batch)| (*position, batch.number));
    let final_number = scan.batches.last().map_or(first, |(_, batch)| batch.number);
    let after = match &scan.stop {
        Some(stop) => format!("the batch after them is not whole ({stop})"),
        None => "the file ends after them".to_string(),
    };
    let consequence = if last {
        "expected after a crash during a sync point: the store cuts the whole sync point when \
         it opens, and keeps none of it"
    } else {
        "and later journal files exist: the store refuses to open"
    };
    Problem::at(
        ProblemKind::TornTail,
        path,
        position,
        format!(
            "incomplete sync point: batches {first} to {final_number} say more of their sync \
             point follows, and {after}; {consequence}"
        ),
    )
}
