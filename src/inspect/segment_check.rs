//! One segment's `.log`, `.index` and `.timeindex`, read and checked together.

use std::path::PathBuf;

use crate::storage::segment::Scan;

use super::index_file::IndexFile;
use super::log_file::{LogFile, LogSummary};
use super::problem::Problem;
use super::time_index_file::TimeIndexFile;

/// The files of one segment, as found in a directory listing.
#[derive(Clone, Debug)]
pub struct SegmentFiles {
    /// The base offset the file names say, or the log header's when the
    /// file's name is not a segment name.
    pub base_offset: u64,
    /// Whether `base_offset` comes from a file name, so that the header is
    /// checked against it.
    pub named: bool,
    /// The `.log`; `None` when only an `.index` was given.
    pub log: Option<PathBuf>,
    /// Where the `.index` is, or should be.
    pub index: Option<PathBuf>,
    /// Whether this is the last segment of its key, the one appends go to;
    /// only it can have been cut short by a crash.
    pub active: bool,
}

/// A segment's files read into memory.
pub struct LoadedSegment<'a> {
    /// The files read.
    pub files: &'a SegmentFiles,
    /// `None` when the segment has no `.log`.
    pub log: Option<Result<LogFile, Problem>>,
    /// The `.index`, when the segment has a path for one.
    pub index: Option<IndexFile>,
    /// The `.timeindex` beside the `.log`, when the log's name is a segment's.
    pub time_index: Option<TimeIndexFile>,
    /// The engine's scan of the log, when its records decode.
    pub scan: Option<Scan>,
}

impl<'a> LoadedSegment<'a> {
    pub fn load(files: &'a SegmentFiles) -> LoadedSegment<'a> {
        let name_base = files.named.then_some(files.base_offset);
        let log = files
            .log
            .as_ref()
            .map(|path| LogFile::read(path, name_base));
        let scan = log.as_ref().and_then(|log| log.as_ref().ok()?.scan());
        let index = files
            .index
            .as_ref()
            .map(|path| IndexFile::read(path, name_base));
        let time_index = files
            .log
            .as_ref()
            .filter(|_| files.named)
            .map(|path| TimeIndexFile::read(&path.with_extension("timeindex"), name_base));
        LoadedSegment {
            files,
            log,
            index,
            time_index,
            scan,
        }
    }

    /// The log, when there is one and it could be read.
    pub fn log(&self) -> Option<&LogFile> {
        self.log.as_ref()?.as_ref().ok()
    }

    /// Checks everything about the segment.
    pub fn check(&self) -> SegmentReport {
        let mut problems = Vec::new();
        let log = self.log();
        let mut summary = match &self.log {
            Some(Ok(log)) => log.summarize(self.files.active),
            Some(Err(problem)) => {
                problems.push(problem.clone());
                LogSummary::empty(self.files.base_offset)
            }
            None => LogSummary::empty(self.files.base_offset),
        };
        problems.append(&mut summary.problems);
        if let Some(index) = &self.index {
            problems.extend(index.check(log, self.scan.as_ref()));
        }
        if let Some(times) = &self.time_index {
            problems.extend(times.check(self.scan.as_ref(), self.files.active));
        }
        let time_index = self
            .time_index
            .as_ref()
            .filter(|times| times.entries.is_some())
            .map(|times| TimeIndexSummary {
                entries: times.entry_count(),
                range: times.range(),
            });
        SegmentReport {
            base_offset: log.map_or(self.files.base_offset, LogFile::base_offset),
            active: self.files.active,
            log_bytes: log.map(|log| log.bytes.len() as u64),
            decodable: log.is_some_and(|log| log.header.body_decodable),
            index_entries: self.index.as_ref().map_or(0, |index| index.entries().len()),
            time_index,
            summary,
            problems,
        }
    }
}

/// What checking one segment found.
#[derive(Clone, Debug)]
pub struct SegmentReport {
    /// The first offset of the segment, as its header says when it decodes.
    pub base_offset: u64,
    /// Whether it is the last segment of its key.
    pub active: bool,
    /// Size of the `.log`; `None` when there is none or it cannot be read.
    pub log_bytes: Option<u64>,
    /// Whether the log's records could be decoded at all.
    pub decodable: bool,
    /// The log's summary; its problems are moved to `problems`.
    pub summary: LogSummary,
    /// Entries in the `.index` file.
    pub index_entries: usize,
    /// The `.timeindex` file, when there is one.
    pub time_index: Option<TimeIndexSummary>,
    /// Every problem of the segment's files, the chain checks of its key included.
    pub problems: Vec<Problem>,
}

/// What a segment's `.timeindex` holds.
#[derive(Clone, Copy, Debug)]
pub struct TimeIndexSummary {
    /// Entries that decode (0 when the file does not).
    pub entries: usize,
    /// The smallest and largest timestamp its entries hold (each entry
    /// holds its chunk's latest), if any holds one.
    pub range: Option<(i64, i64)>,
}

impl TimeIndexSummary {
    /// The table's cell: `entries: smallest..largest` entry time.
    pub fn cell(&self) -> String {
        match self.range {
            Some((first, last)) => format!("{}: {first}..{last}", self.entries),
            None => format!("{}: no times", self.entries),
        }
    }
}

impl LogSummary {
    /// The summary of a log with no records.
    pub fn empty(base_offset: u64) -> LogSummary {
        LogSummary {
            records: 0,
            first_offset: None,
            last_offset: None,
            next_offset: base_offset,
            problems: Vec::new(),
        }
    }
}
