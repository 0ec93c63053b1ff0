//! The committed offsets file of a store (`offsets.journal`), decoded with
//! [`offsets::decode_journal`], the function the store opens it with.
//! (The write-ahead journal is `journal.rs`'s, as in `storage/`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::storage::format::{self, FileKind};
use crate::storage::offsets;

use super::header;
use super::problem::{FileProblems, Problem, ProblemKind};

/// What the journal says and what is wrong with it.
pub struct OffsetsFile {
    /// Where the journal is, or would be.
    pub path: PathBuf,
    /// Size of the file; `None` when it does not exist.
    pub bytes: Option<u64>,
    /// Valid entries, superseded ones included.
    pub entries: usize,
    /// The committed offset of each key: its last entry, as the store
    /// reads it (a key whose last entry is a removal is left out).
    pub committed: BTreeMap<String, u64>,
    /// What is wrong with the file.
    pub problems: Vec<Problem>,
}

impl OffsetsFile {
    /// Reads and checks the journal at `path`.
    pub fn read(path: &Path) -> OffsetsFile {
        let mut journal = OffsetsFile {
            path: path.to_path_buf(),
            bytes: None,
            entries: 0,
            committed: BTreeMap::new(),
            problems: Vec::new(),
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return journal,
            Err(e) => {
                journal.problems.push(Problem::of_file(
                    ProblemKind::Unreadable,
                    path,
                    format!("cannot read: {e}"),
                ));
                return journal;
            }
        };
        journal.bytes = Some(bytes.len() as u64);
        let header = header::check(&bytes, path, FileKind::Offsets, None);
        if let Some(problem) = header.problem {
            let consequence = "; the store refuses to open until it is repaired";
            journal.problems.push(Problem {
                message: format!("does not parse: {}{consequence}", problem.message),
                ..problem
            });
            return journal;
        }
        let scan = match offsets::decode_journal(&bytes) {
            Ok(scan) => scan,
            Err(error) => {
                journal.problems.push(Problem::at(
                    ProblemKind::of_header_error(&error),
                    path,
                    0,
                    format!("does not parse: {error}"),
                ));
                return journal;
            }
        };
        let mut problems = FileProblems::default();
        for entry in &scan.entries {
            journal.entries += 1;
            let position = &entry.position;
            match std::str::from_utf8(entry.key) {
                Ok(key) => match entry.commit {
                    Some((offset, _)) => {
                        journal.committed.insert(key.to_string(), offset);
                    }
                    None => {
                        journal.committed.remove(key);
                    }
                },
                Err(_) => problems.push(Problem::at(
                    ProblemKind::BadKey,
                    path,
                    *position,
                    "the entry's key is not UTF-8; the store refuses to open",
                )),
            }
        }
        if let Some(stop) = &scan.stop {
            let end = scan.end_position;
            let tail = bytes.get(end as usize..).unwrap_or_default();
            let size = tail.len();
            // The same test the store applies when it opens the journal.
            let valid_after = (end as usize + 1..bytes.len()).find(|&p| {
                bytes
                    .get(p..)
                    .is_some_and(|rest| format::decode_record(rest).is_ok())
            });
            let problem = if tail.iter().all(|&b| b == 0) {
                Problem::at(
                    ProblemKind::ZeroFilledTail,
                    path,
                    end,
                    format!(
                        "zero-filled tail: the last {size} bytes are zeros; the store cuts them when it opens"
                    ),
                )
            } else if let Some(valid_at) = valid_after {
                Problem::at(
                    ProblemKind::of_record_error(stop),
                    path,
                    end,
                    format!(
                        "{stop}, but a valid entry follows at position {valid_at}: \
                         the store refuses to open until it is repaired"
                    ),
                )
            } else {
                Problem::at(
                    ProblemKind::TornTail,
                    path,
                    end,
                    format!(
                        "torn tail: the last {size} bytes are not a whole entry ({stop}); \
                         the store cuts them when it opens"
                    ),
                )
            };
            problems.push(problem);
        }
        journal.problems = problems.into_vec();
        journal
    }
}
