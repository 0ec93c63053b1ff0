//! One `.timeindex` file, and whether it agrees with its log.
//!
//! Like the offset index, the time index is a cache the engine rebuilds
//! from the log whenever it is missing or wrong (`storage/timeindex.rs`),
//! so a problem here loses no data. A missing file is not a problem at all:
//! directories from before the time index have none, and the engine builds
//! one when a search by time first needs it.

use std::path::{Path, PathBuf};

use crate::storage::format::{self, FILE_HEADER_SIZE, FileKind, TIME_INDEX_ENTRY_SIZE, TimeEntry};
use crate::storage::segment::Scan;

use super::header;
use super::problem::{Problem, ProblemKind};

/// A `.timeindex` file as found on disk.
pub struct TimeIndexFile {
    /// Where the file is, or would be.
    pub path: PathBuf,
    /// Its entries when it was read and they decode, or why not; `None`
    /// when there is no file.
    pub entries: Option<Result<Vec<TimeEntry>, Problem>>,
}

impl TimeIndexFile {
    /// Reads the time index at `path`, whose file name says `name_base`.
    pub fn read(path: &Path, name_base: Option<u64>) -> TimeIndexFile {
        let entries = match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(Problem::of_file(
                ProblemKind::Unreadable,
                path,
                format!("cannot read: {e}"),
            ))),
            Ok(bytes) => Some(decode(&bytes, path, name_base)),
        };
        TimeIndexFile {
            path: path.to_path_buf(),
            entries,
        }
    }

    /// Entries in the file (0 when it is missing or does not decode).
    pub fn entry_count(&self) -> usize {
        match &self.entries {
            Some(Ok(entries)) => entries.len(),
            _ => 0,
        }
    }

    /// The smallest and largest timestamp the entries hold (each its
    /// chunk's latest), if any holds one.
    pub fn range(&self) -> Option<(i64, i64)> {
        let Some(Ok(entries)) = &self.entries else {
            return None;
        };
        let times = entries
            .iter()
            .map(|e| e.timestamp)
            .filter(|&t| t != format::NO_TIMESTAMP);
        Some((times.clone().min()?, times.max()?))
    }

    /// Checks the file against `scan`, the engine's scan of its log, when
    /// the log decodes whole: the entries must be the ones the log calls
    /// for (one per closed chunk; a sealed segment's last chunk is closed).
    pub fn check(&self, scan: Option<&Scan>, active: bool) -> Vec<Problem> {
        let entries = match &self.entries {
            None => return Vec::new(),
            Some(Err(problem)) => return vec![problem.clone()],
            Some(Ok(entries)) => entries,
        };
        let Some(scan) = scan.filter(|scan| scan.stop.is_none()) else {
            return Vec::new();
        };
        let called = if active {
            scan.times.clone()
        } else {
            scan.sealed_time_index().entries().to_vec()
        };
        if *entries == called {
            return Vec::new();
        }
        let i = entries
            .iter()
            .zip(&called)
            .take_while(|(a, b)| a == b)
            .count();
        let why = match (entries.get(i), called.get(i)) {
            (Some(found), Some(due)) => format!(
                "entry {i} says timestamp {} from relative offset {}, where the log calls for \
                 timestamp {} from relative offset {}",
                found.timestamp, found.relative_offset, due.timestamp, due.relative_offset
            ),
            _ => format!(
                "{} entries where the log calls for {} (one per closed chunk)",
                entries.len(),
                called.len()
            ),
        };
        vec![Problem::at(
            ProblemKind::TimeIndexDiffers,
            &self.path,
            (FILE_HEADER_SIZE + i * TIME_INDEX_ENTRY_SIZE) as u64,
            format!("{why}; the engine rebuilds it when a search by time first needs it"),
        )]
    }
}

/// The entries of a time index file's bytes, or the first problem.
fn decode(bytes: &[u8], path: &Path, name_base: Option<u64>) -> Result<Vec<TimeEntry>, Problem> {
    let checked = header::check(bytes, path, FileKind::TimeIndex, name_base);
    if let Some(problem) = checked.problem {
        return Err(problem);
    }
    let body = bytes.get(FILE_HEADER_SIZE..).unwrap_or_default();
    let mut entries = Vec::with_capacity(body.len() / TIME_INDEX_ENTRY_SIZE);
    for (i, raw) in body.chunks(TIME_INDEX_ENTRY_SIZE).enumerate() {
        let position = (FILE_HEADER_SIZE + i * TIME_INDEX_ENTRY_SIZE) as u64;
        let entry = if raw.len() < TIME_INDEX_ENTRY_SIZE {
            Err(format!(
                "the last {} bytes are not a whole {TIME_INDEX_ENTRY_SIZE}-byte entry",
                raw.len()
            ))
        } else {
            format::decode_time_entry(raw).map_err(|e| format!("entry {i}: {e}"))
        };
        match entry {
            Ok(entry) => entries.push(entry),
            Err(why) => {
                return Err(Problem::at(
                    ProblemKind::TimeIndexDiffers,
                    path,
                    position,
                    format!("{why}; the engine rebuilds it when a search by time first needs it"),
                ));
            }
        }
    }
    Ok(entries)
}
