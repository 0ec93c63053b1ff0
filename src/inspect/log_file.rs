//! One `.log` file decoded frame by frame, past damage.
//!
//! Where a record does not decode, the walk looks for the next valid record
//! with [`segment::find_record_after`], the test recovery uses to tell a hole
//! from a torn tail, and resumes there; so one flipped bit costs one record,
//! not the rest of the file.

use std::path::{Path, PathBuf};

use crate::storage::format::{
    self, DecodeError, FILE_HEADER_SIZE, FileKind, MESSAGE_BYTES_MAX, RECORD_CRC_POS,
    RECORD_HEADER_SIZE, RECORD_LENGTH_POS, RECORD_OFFSET_POS, Record,
};
use crate::storage::segment::{self, Scan};

use super::header::{self, HeaderCheck, read_u32, read_u64};
use super::problem::{FileProblems, Problem, ProblemKind};

/// A `.log` file read into memory.
pub struct LogFile {
    /// Where the file is.
    pub path: PathBuf,
    /// The whole file as it was when read.
    pub bytes: Vec<u8>,
    /// What its header says, and whether the records after it decode.
    pub header: HeaderCheck,
}

impl LogFile {
    /// Reads the log at `path`, whose file name says `name_base`.
    pub fn read(path: &Path, name_base: Option<u64>) -> Result<LogFile, Problem> {
        let bytes = std::fs::read(path).map_err(|e| {
            Problem::of_file(ProblemKind::Unreadable, path, format!("cannot read: {e}"))
        })?;
        let header = header::check(&bytes, path, FileKind::Log, name_base);
        Ok(LogFile {
            path: path.to_path_buf(),
            bytes,
            header,
        })
    }

    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Every frame after the header; none when the header says the layout
    /// is unknown.
    pub fn frames(&self) -> Frames<'_> {
        Frames {
            bytes: &self.bytes,
            position: FILE_HEADER_SIZE as u64,
            expected: self.base_offset(),
            done: !self.header.body_decodable,
        }
    }

    /// The engine's own scan: valid records with consecutive offsets from
    /// the start, and the index they call for.
    pub fn scan(&self) -> Option<Scan> {
        self.header
            .body_decodable
            .then(|| segment::scan_records(&self.bytes, self.base_offset()))
    }

    /// Counts the records and checks every frame. `active` says whether this
    /// is the last segment of its key, which a crash may have cut short.
    pub fn summarize(&self, active: bool) -> LogSummary {
        let mut problems = FileProblems::default();
        if let Some(problem) = &self.header.problem {
            problems.push(problem.clone());
        }
        let mut summary = LogSummary {
            records: 0,
            first_offset: None,
            last_offset: None,
            next_offset: self.base_offset(),
            problems: Vec::new(),
        };
        for frame in self.frames() {
            if let Frame::Record { record, .. } = &frame {
                summary.records += 1;
                summary.first_offset.get_or_insert(record.offset);
                summary.last_offset = Some(record.offset);
                summary.next_offset = record.offset.saturating_add(1);
            }
            if let Some(message) = frame.problem(active) {
                problems.push(Problem::at(
                    frame.problem_kind(),
                    &self.path,
                    frame.position(),
                    message,
                ));
            }
        }
        summary.problems = problems.into_vec();
        summary
    }
}

/// What a walk over a whole log found.
#[derive(Clone, Debug)]
pub struct LogSummary {
    /// Valid records (CRC matches), wherever they are.
    pub records: u64,
    /// Offset of the first valid record.
    pub first_offset: Option<u64>,
    /// Offset of the last valid record.
    pub last_offset: Option<u64>,
    /// The offset after the last valid record: what the next segment's base
    /// offset must be.
    pub next_offset: u64,
    /// The header's problem and every damaged or out-of-place frame.
    pub problems: Vec<Problem>,
}

/// One stretch of a log: a valid record, or bytes that are not one.
pub enum Frame<'a> {
    /// A record whose CRC matches.
    Record {
        position: u64,
        record: Record<'a>,
        /// The offset that was due here; differs from `record.offset` where
        /// offsets are not consecutive.
        expected: u64,
    },
    /// Bytes that do not decode as a record, up to the next valid record or
    /// the end of the file.
    Damaged(Damage<'a>),
}

/// Bytes that do not decode as a record.
pub struct Damage<'a> {
    /// Where the bytes that do not decode start.
    pub position: u64,
    /// Bytes from `position` to the next valid record or the end of the file.
    pub size: u64,
    /// Why the bytes at `position` are not a record.
    pub error: DecodeError,
    /// The offset that was due at `position`.
    pub expected: u64,
    /// Position of the next valid record; `None` when none follows (a tail).
    pub resumes_at: Option<u64>,
    /// Whether every byte from `position` to the end is zero.
    pub zero_filled: bool,
    /// The frame fields as they are on disk, where the bytes reach.
    pub raw: RawFrame<'a>,
}

/// The fields of a frame read without any checking, for display.
pub struct RawFrame<'a> {
    /// The CRC field.
    pub crc: Option<u32>,
    /// The offset field.
    pub offset: Option<u64>,
    /// The payload, when the length field is plausible and the bytes reach.
    pub payload: Option<&'a [u8]>,
}

impl<'a> RawFrame<'a> {
    fn read(bytes: &'a [u8]) -> RawFrame<'a> {
        let length = read_u32(bytes, RECORD_LENGTH_POS).map(|l| l as usize);
        RawFrame {
            crc: read_u32(bytes, RECORD_CRC_POS),
            offset: read_u64(bytes, RECORD_OFFSET_POS),
            payload: length
                .filter(|&l| l <= MESSAGE_BYTES_MAX)
                .and_then(|l| bytes.get(RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + l)),
        }
    }
}

impl Frame<'_> {
    pub fn position(&self) -> u64 {
        match self {
            Frame::Record { position, .. } => *position,
            Frame::Damaged(damage) => damage.position,
        }
    }

    /// Bytes the frame spans.
    pub fn size(&self) -> u64 {
        match self {
            Frame::Record { record, .. } => record.size() as u64,
            Frame::Damaged(damage) => damage.size,
        }
    }

    /// The kind of problem the frame is, if it is one.
    pub fn problem_kind(&self) -> ProblemKind {
        match self {
            Frame::Record { .. } => ProblemKind::OffsetGap,
            Frame::Damaged(damage) if damage.zero_filled => ProblemKind::ZeroFilledTail,
            Frame::Damaged(damage) if damage.resumes_at.is_none() => ProblemKind::TornTail,
            Frame::Damaged(damage) => ProblemKind::of_record_error(&damage.error),
        }
    }

    /// What is wrong with the frame, in a sentence, if anything. `active`
    /// says whether the segment is the last of its key, which decides what
    /// recovery will do about it.
    pub fn problem(&self, active: bool) -> Option<String> {
        match self {
            Frame::Record {
                record, expected, ..
            } => (record.offset != *expected).then(|| {
                format!(
                    "offsets not consecutive: offset {} where {expected} was expected",
                    record.offset
                )
            }),
            Frame::Damaged(damage) => Some(damage.describe(active)),
        }
    }
}

impl Damage<'_> {
    fn describe(&self, active: bool) -> String {
        let size = self.size;
        let plural = if size == 1 { "" } else { "s" };
        let consequence = match (self.resumes_at, active) {
            (None, true) => {
                "; expected in the active segment after a crash or during an append: \
                 recovery cuts it"
            }
            (None, false) => {
                "; this segment is sealed, and sealed segments were synced whole: \
                 the bytes were damaged later, and reads of this key stop here"
            }
            (Some(_), true) => {
                "; recovery refuses to open this key, since it is a hole and not a torn tail"
            }
            (Some(_), false) => "; reads of this key that reach it fail",
        };
        match self.resumes_at {
            None if self.zero_filled => format!(
                "zero-filled tail: the last {size} byte{plural} are zeros, \
                 allocated but never written{consequence}"
            ),
            None => format!(
                "torn tail: the last {size} byte{plural} are not a whole record ({}){consequence}",
                self.error
            ),
            Some(next) => format!(
                "{}; the next valid record is at position {next}, \
                 so {size} byte{plural} are unreadable{consequence}",
                self.error
            ),
        }
    }
}

/// The frames of a log, from the first after the header to the end.
pub struct Frames<'a> {
    /// The whole file.
    bytes: &'a [u8],
    /// Where the next frame starts.
    position: u64,
    /// Offset the next record should have.
    expected: u64,
    /// Set at a tail, after which nothing decodes.
    done: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let rest = self.bytes.get(self.position as usize..)?;
        if self.done || rest.is_empty() {
            return None;
        }
        let position = self.position;
        let expected = self.expected;
        match format::decode_log_record(rest) {
            Ok(record) => {
                self.position += record.size() as u64;
                // Follow the log's own numbering after a gap, so that one
                // out-of-place record is one problem, not all that follow.
                self.expected = record.offset.saturating_add(1);
                Some(Frame::Record {
                    position,
                    record,
                    expected,
                })
            }
            Err(error) => {
                let zero_filled = rest.iter().all(|&b| b == 0);
                let resumes_at = if zero_filled {
                    None
                } else {
                    segment::find_record_after(self.bytes, position, expected)
                };
                let end = match resumes_at {
                    Some(next) => {
                        self.position = next;
                        // The damaged bytes held the offsets up to this record's.
                        self.expected = self
                            .bytes
                            .get(next as usize..)
                            .and_then(|bytes| format::decode_log_record(bytes).ok())
                            .map_or(expected, |record| record.offset);
                        next
                    }
                    None => {
                        self.done = true;
                        self.bytes.len() as u64
                    }
                };
                let size = end - position;
                // The raw fields never reach into the next valid record.
                let span = rest.get(..size as usize).unwrap_or(rest);
                Some(Frame::Damaged(Damage {
                    position,
                    size,
                    error,
                    expected,
                    resumes_at,
                    zero_filled,
                    raw: RawFrame::read(span),
                }))
            }
        }
    }
}
