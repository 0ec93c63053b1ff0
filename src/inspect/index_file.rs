//! One `.index` file, and whether it agrees with its log.
//!
//! The engine never trusts an index over its log (`index.rs`): it checks an
//! entry against the record it points at before using it, and rebuilds an
//! index that is missing or wrong. So an index problem loses no data; it is
//! reported because it says something wrote or kept bytes it should not have.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::storage::format::{
    self, DecodeError, FILE_HEADER_SIZE, FileKind, INDEX_ENTRY_SIZE, IndexEntry,
};
use crate::storage::segment::Scan;

use super::header::{self, HeaderCheck};
use super::log_file::LogFile;
use super::problem::{FileProblems, Problem, ProblemKind};

/// An `.index` file as found on disk.
pub struct IndexFile {
    /// Where the index is, or would be.
    pub path: PathBuf,
    /// What reading it found.
    pub state: IndexState,
}

/// Whether the index file could be read, and what it holds.
pub enum IndexState {
    /// No file at the path.
    Missing,
    /// The file exists but cannot be read.
    Unreadable(Problem),
    /// The file was read.
    Read {
        header: HeaderCheck,
        /// The whole entries after the header (none when the header says
        /// the layout is unknown).
        entries: Vec<IndexEntry>,
        /// Bytes after the last whole entry.
        partial_bytes: usize,
    },
}

impl IndexFile {
    /// Reads the index at `path`, whose file name says `name_base`.
    pub fn read(path: &Path, name_base: Option<u64>) -> IndexFile {
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let header = header::check(&bytes, path, FileKind::Index, name_base);
                let body = bytes.get(FILE_HEADER_SIZE..).unwrap_or_default();
                let whole = body.len() - body.len() % INDEX_ENTRY_SIZE;
                let entries = if header.body_decodable {
                    // Whole entries only, so decoding cannot fail.
                    format::decode_index_entries(&body[..whole]).unwrap_or_default()
                } else {
                    Vec::new()
                };
                IndexState::Read {
                    partial_bytes: if header.body_decodable {
                        body.len() - whole
                    } else {
                        0
                    },
                    header,
                    entries,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => IndexState::Missing,
            Err(e) => IndexState::Unreadable(Problem::of_file(
                ProblemKind::Unreadable,
                path,
                format!("cannot read: {e}"),
            )),
        };
        IndexFile {
            path: path.to_path_buf(),
            state,
        }
    }

    /// The decoded entries; empty when there are none to show.
    pub fn entries(&self) -> &[IndexEntry] {
        match &self.state {
            IndexState::Read { entries, .. } => entries,
            IndexState::Missing | IndexState::Unreadable(_) => &[],
        }
    }

    /// Checks the file, and its entries against `log` (the log this index
    /// belongs to, when there is one) and `scan` (the engine's scan of that
    /// log, which yields the index the log calls for).
    pub fn check(&self, log: Option<&LogFile>, scan: Option<&Scan>) -> Vec<Problem> {
        let mut problems = FileProblems::default();
        match &self.state {
            IndexState::Missing => {
                if let Some(scan) = scan {
                    problems.push(Problem::of_file(
                        ProblemKind::IndexMissing,
                        &self.path,
                        format!(
                            "the index is missing; the log calls for {}; \
                             the engine rebuilds it when it next opens the segment",
                            entries_phrase(scan.index.entries().len())
                        ),
                    ));
                } else if log.is_some() {
                    problems.push(Problem::of_file(
                        ProblemKind::IndexMissing,
                        &self.path,
                        "the index is missing; the engine rebuilds it when it next opens the segment",
                    ));
                }
            }
            IndexState::Unreadable(problem) => problems.push(problem.clone()),
            IndexState::Read {
                header,
                entries,
                partial_bytes,
                ..
            } => {
                if let Some(problem) = &header.problem {
                    problems.push(problem.clone());
                }
                if !header.body_decodable {
                    // No entries to check: the header problem says it all.
                    return problems.into_vec();
                }
                if *partial_bytes > 0 {
                    problems.push(Problem::at(
                        ProblemKind::IndexPartialEntry,
                        &self.path,
                        entry_position(entries.len()),
                        format!(
                            "the last {partial_bytes} bytes are not a whole {INDEX_ENTRY_SIZE}-byte entry"
                        ),
                    ));
                }
                self.check_order(entries, &mut problems);
                if let Some(log) = log.filter(|log| log.header.body_decodable) {
                    let disagreeing = self.check_agreement(entries, log, &mut problems);
                    if disagreeing == 0
                        && let Some(scan) = scan
                    {
                        self.compare_with_scan(entries, scan, log.base_offset(), &mut problems);
                    }
                }
            }
        }
        problems.into_vec()
    }

    fn check_order(&self, entries: &[IndexEntry], problems: &mut FileProblems) {
        for (i, pair) in entries.windows(2).enumerate() {
            let (before, after) = (pair[0], pair[1]);
            if before.relative_offset >= after.relative_offset || before.position >= after.position
            {
                problems.push(Problem::at(
                    ProblemKind::IndexUnordered,
                    &self.path,
                    entry_position(i + 1),
                    format!(
                        "entry {} (relative offset {}, position {}) does not come after \
                         entry {i} (relative offset {}, position {})",
                        i + 1,
                        after.relative_offset,
                        after.position,
                        before.relative_offset,
                        before.position
                    ),
                ));
            }
        }
    }

    /// Reports each entry that does not point at its record; returns how many.
    fn check_agreement(
        &self,
        entries: &[IndexEntry],
        log: &LogFile,
        problems: &mut FileProblems,
    ) -> usize {
        let mut disagreeing = 0;
        for (i, entry) in entries.iter().enumerate() {
            let agreement = agreement(log, *entry);
            if agreement != Agreement::Agrees {
                disagreeing += 1;
                problems.push(Problem::at(
                    ProblemKind::IndexMismatch,
                    &self.path,
                    entry_position(i),
                    format!(
                        "entry {i} says offset {} is at position {}, but {agreement}",
                        log.base_offset()
                            .saturating_add(u64::from(entry.relative_offset)),
                        entry.position
                    ),
                ));
            }
        }
        disagreeing
    }

    /// Compares the entries with those the log calls for, up to where the
    /// engine's scan of the log stopped: past a damaged record the log calls
    /// for nothing, and entries there that still agree are harmless.
    fn compare_with_scan(
        &self,
        entries: &[IndexEntry],
        scan: &Scan,
        base: u64,
        problems: &mut FileProblems,
    ) {
        let offset = |entry: &IndexEntry| base.saturating_add(u64::from(entry.relative_offset));
        let on_disk: Vec<IndexEntry> = entries
            .iter()
            .copied()
            .filter(|entry| u64::from(entry.position) < scan.end_position)
            .collect();
        let called = scan.index.entries();
        if on_disk == called {
            return;
        }
        let i = on_disk
            .iter()
            .zip(called)
            .take_while(|(a, b)| a == b)
            .count();
        let problem = match (on_disk.get(i), called.get(i)) {
            (None, Some(missing)) => Problem::at(
                ProblemKind::IndexShort,
                &self.path,
                entry_position(i),
                format!(
                    "the index has {} where the log calls for {}; the first missing one is \
                     offset {} at position {}",
                    entries_phrase(on_disk.len()),
                    entries_phrase(called.len()),
                    offset(missing),
                    missing.position
                ),
            ),
            (Some(extra), None) => Problem::at(
                ProblemKind::IndexDiffers,
                &self.path,
                entry_position(i),
                format!(
                    "entry {i} (offset {}, position {}) is one the log does not call \
                     for (it calls for {})",
                    offset(extra),
                    extra.position,
                    entries_phrase(called.len())
                ),
            ),
            (Some(found), Some(due)) => Problem::at(
                ProblemKind::IndexDiffers,
                &self.path,
                entry_position(i),
                format!(
                    "entry {i} is offset {} at position {}, where the log calls for \
                     offset {} at position {}",
                    offset(found),
                    found.position,
                    offset(due),
                    due.position
                ),
            ),
            (None, None) => return,
        };
        problems.push(problem);
    }
}

/// Position of entry `i` in an index file.
pub fn entry_position(i: usize) -> u64 {
    (FILE_HEADER_SIZE + i * INDEX_ENTRY_SIZE) as u64
}

/// "no entries", "1 entry", "3 entries".
pub fn entries_phrase(count: usize) -> String {
    match count {
        0 => "no entries".to_string(),
        1 => "1 entry".to_string(),
        n => format!("{n} entries"),
    }
}

/// Whether an index entry points at the record it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agreement {
    Agrees,
    /// The position is inside the file header.
    InHeader,
    /// The position is at or past the end of the log.
    PastEnd {
        log_bytes: u64,
    },
    /// No valid record starts at the position.
    NoRecord(DecodeError),
    /// A valid record starts there, with another offset.
    WrongOffset {
        found: u64,
    },
}

/// Checks `entry` against `log`.
pub fn agreement(log: &LogFile, entry: IndexEntry) -> Agreement {
    let position = entry.position as usize;
    if position < FILE_HEADER_SIZE {
        return Agreement::InHeader;
    }
    let Some(bytes) = log.bytes.get(position..).filter(|bytes| !bytes.is_empty()) else {
        return Agreement::PastEnd {
            log_bytes: log.bytes.len() as u64,
        };
    };
    let offset = log
        .base_offset()
        .saturating_add(u64::from(entry.relative_offset));
    match format::decode_log_record(bytes) {
        Err(error) => Agreement::NoRecord(error),
        Ok(record) if record.offset != offset => Agreement::WrongOffset {
            found: record.offset,
        },
        Ok(_) => Agreement::Agrees,
    }
}

impl fmt::Display for Agreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Agreement::Agrees => write!(f, "the record there has that offset"),
            Agreement::InHeader => write!(f, "that position is inside the file header"),
            Agreement::PastEnd { log_bytes } => write!(f, "the log is only {log_bytes} bytes"),
            Agreement::NoRecord(error) => write!(f, "no valid record starts there ({error})"),
            Agreement::WrongOffset { found } => write!(f, "the record there has offset {found}"),
        }
    }
}
