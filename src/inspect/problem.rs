//! A problem the inspector found, tied to a file and, where one applies, a
//! byte position, so that an operator can look at the exact bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::storage::format::DecodeError;

/// Problems listed per file before the rest are summed up in one line: a
/// garbage index can disagree with its log at every entry, and a thousand
/// lines saying so help nobody.
pub const PROBLEMS_PER_FILE_MAX: usize = 20;

/// What kind of problem, as a stable word for scripts (`--json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The file or directory cannot be read (permissions, or it was removed
    /// while being inspected).
    Unreadable,
    /// A file shorter than its header: created, never synced.
    ShortHeader,
    /// A header of zero bytes: allocated, never written.
    ZeroedHeader,
    /// A header whose magic is none of seglog's.
    BadMagic,
    /// A header of a format version this build cannot read.
    UnsupportedVersion,
    /// A header whose CRC does not match its bytes.
    HeaderCrcMismatch,
    /// A header with reserved flags set.
    BadFlags,
    /// Another kind of seglog file where this one was expected.
    WrongFileKind,
    /// A header base offset that differs from the file name's.
    BaseOffsetMismatch,
    /// Bytes after the last valid record that no valid record follows.
    TornTail,
    /// Zero bytes after the last valid record.
    ZeroFilledTail,
    /// A record whose CRC does not match, with valid records after it.
    CrcMismatch,
    /// A record that does not decode for another reason, with valid records after it.
    BadRecord,
    /// A record whose offset is not the one after the previous record's.
    OffsetGap,
    /// A segment whose base offset is not the previous segment's last offset + 1.
    SegmentGap,
    /// No `.index` beside a `.log`.
    IndexMissing,
    /// An `.index` ending in part of an entry.
    IndexPartialEntry,
    /// Index entries not in increasing offset and position order.
    IndexUnordered,
    /// An index entry that names a position not holding its offset.
    IndexMismatch,
    /// An index with fewer entries than its log calls for.
    IndexShort,
    /// An index whose entries agree with the log but are not the ones it calls for.
    IndexDiffers,
    /// A `.timeindex` that does not decode (header, a partial entry, an
    /// entry's CRC) or whose entries are not the ones its log calls for.
    TimeIndexDiffers,
    /// A live write-ahead journal file that is missing (deleted), or one
    /// that lacks the marker naming the file after it.
    JournalMissing,
    /// A key that cannot be known: a missing or wrong `KEY` file, or a
    /// journal entry whose key is not UTF-8.
    BadKey,
}

impl ProblemKind {
    /// A few words for the status column of the segment table.
    pub fn label(self) -> &'static str {
        match self {
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::ShortHeader => "short header",
            ProblemKind::ZeroedHeader => "zeroed header",
            ProblemKind::BadMagic => "unknown magic",
            ProblemKind::UnsupportedVersion => "unsupported version",
            ProblemKind::HeaderCrcMismatch => "header CRC mismatch",
            ProblemKind::BadFlags => "unknown flags",
            ProblemKind::WrongFileKind => "wrong file kind",
            ProblemKind::BaseOffsetMismatch => "base offset mismatch",
            ProblemKind::TornTail => "torn tail",
            ProblemKind::ZeroFilledTail => "zero-filled tail",
            ProblemKind::CrcMismatch => "CRC mismatch",
            ProblemKind::BadRecord => "bad record",
            ProblemKind::OffsetGap => "offsets not consecutive",
            ProblemKind::SegmentGap => "gap between segments",
            ProblemKind::IndexMissing => "index missing",
            ProblemKind::IndexPartialEntry => "index ends mid-entry",
            ProblemKind::IndexUnordered => "index out of order",
            ProblemKind::IndexMismatch => "index disagrees with log",
            ProblemKind::IndexShort => "index short",
            ProblemKind::IndexDiffers => "index differs",
            ProblemKind::TimeIndexDiffers => "time index differs",
            ProblemKind::BadKey => "bad key",
            ProblemKind::JournalMissing => "journal file missing",
        }
    }

    /// The kind of a header that does not decode.
    pub fn of_header_error(error: &DecodeError) -> ProblemKind {
        match error {
            DecodeError::Truncated { .. } => ProblemKind::ShortHeader,
            DecodeError::Zeroed => ProblemKind::ZeroedHeader,
            DecodeError::BadMagic { .. } => ProblemKind::BadMagic,
            DecodeError::UnsupportedVersion { .. } => ProblemKind::UnsupportedVersion,
            DecodeError::BadFlags { .. } => ProblemKind::BadFlags,
            DecodeError::ChecksumMismatch { .. } => ProblemKind::HeaderCrcMismatch,
            DecodeError::LengthTooLarge { .. }
            | DecodeError::EmptyPayload
            | DecodeError::BadBatch { .. }
            | DecodeError::BadEntry { .. } => ProblemKind::BadRecord,
        }
    }

    /// The kind of a record that does not decode, with valid records after it.
    pub fn of_record_error(error: &DecodeError) -> ProblemKind {
        match error {
            DecodeError::ChecksumMismatch { .. } => ProblemKind::CrcMismatch,
            _ => ProblemKind::BadRecord,
        }
    }
}

/// One problem: what, in which file, at which byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem, for scripts and the status column.
    pub kind: ProblemKind,
    /// The file it is in, as reached from PATH.
    pub file: PathBuf,
    /// Byte position in `file`; `None` when the problem is the file as a
    /// whole (a missing index, a missing segment).
    pub position: Option<u64>,
    /// A sentence saying what is wrong and what follows from it.
    pub message: String,
}

impl Problem {
    /// A problem at byte `position` of `file`.
    pub fn at(
        kind: ProblemKind,
        file: &Path,
        position: u64,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            kind,
            file: file.to_path_buf(),
            position: Some(position),
            message: message.into(),
        }
    }

    /// A problem of `file` as a whole.
    pub fn of_file(kind: ProblemKind, file: &Path, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            file: file.to_path_buf(),
            position: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(position) => write!(
                f,
                "{}, position {position}: {}",
                self.file.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Something worth knowing that is not wrong: a leftover temporary file, a
/// directory the inspector skipped. Notes never fail `--verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The file or directory it is about.
    pub file: PathBuf,
    /// A sentence saying what it is.
    pub message: String,
}

impl Note {
    pub fn new(file: &Path, message: impl Into<String>) -> Note {
        Note {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// Collects the problems of one file, keeping at most
/// [`PROBLEMS_PER_FILE_MAX`] and counting the rest.
#[derive(Debug, Default)]
pub struct FileProblems {
    /// The first problems, listed.
    listed: Vec<Problem>,
    /// Problems found beyond the limit, and the kind of the first of them.
    unlisted: Option<(usize, ProblemKind)>,
}

impl FileProblems {
    pub fn push(&mut self, problem: Problem) {
        if self.listed.len() < PROBLEMS_PER_FILE_MAX {
            self.listed.push(problem);
        } else {
            let (count, _) = self.unlisted.get_or_insert((0, problem.kind));
            *count += 1;
        }
    }

    /// The problems, with one more summing up those not listed.
    pub fn into_vec(self) -> Vec<Problem> {
        let mut problems = self.listed;
        if let (Some((count, kind)), Some(last)) = (self.unlisted, problems.last()) {
            let file = last.file.clone();
            problems.push(Problem::of_file(
                kind,
                &file,
                format!("and {count} more problems in this file, not listed"),
            ));
        }
        problems
    }
}
