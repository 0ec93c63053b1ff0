//! One key's directory under `logs/`: which key it holds, and its segments.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::storage::format::{self, SegmentFile};
use crate::storage::keyname::{self, DecodedName, KEY_FILE_NAME};

use super::problem::{Note, Problem, ProblemKind};
use super::segment_check::SegmentFiles;

/// Suffix of the temporary file an index rebuild writes before renaming it
/// over the index (`SparseIndex::write_file`).
const INDEX_TMP_SUFFIX: &str = ".index.tmp";

/// A key directory as listed.
pub struct KeyDir {
    /// The directory, as reached from PATH.
    pub dir: PathBuf,
    /// The key whose log it holds.
    pub key: KeyLabel,
    /// The segments, by increasing base offset.
    pub segments: Vec<SegmentFiles>,
    /// Problems with the directory itself or its `KEY` file.
    pub problems: Vec<Problem>,
    /// Files in the directory that are not the key's segments.
    pub notes: Vec<Note>,
}

/// The key of a directory, or what stands for it when it is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLabel {
    /// The key, when the directory name or its `KEY` file says it.
    pub key: Option<String>,
    /// The directory's name, shown when the key is unknown.
    pub dir_name: String,
}

impl KeyLabel {
    /// Orders known keys by key, then unknown ones by directory name.
    pub fn sort_key(&self) -> (bool, &str) {
        match &self.key {
            Some(key) => (false, key),
            None => (true, &self.dir_name),
        }
    }
}

impl KeyDir {
    /// Lists the key directory `dir`.
    pub fn open(dir: &Path) -> KeyDir {
        let (key, mut problems) = resolve_key(dir);
        let mut notes = Vec::new();
        // Per base offset: whether a .log, an .index and a .timeindex are present.
        let mut found: BTreeMap<u64, (bool, bool, bool)> = BTreeMap::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let name = entry.file_name();
                    let name = name.to_str().unwrap_or_default();
                    match format::parse_segment_file_name(name) {
                        Some((base, SegmentFile::Log)) => found.entry(base).or_default().0 = true,
                        Some((base, SegmentFile::Index)) => found.entry(base).or_default().1 = true,
                        Some((base, SegmentFile::TimeIndex)) => {
                            found.entry(base).or_default().2 = true;
                        }
                        None if name == KEY_FILE_NAME => {}
                        None if name.ends_with(INDEX_TMP_SUFFIX) => notes.push(Note::new(
                            &path,
                            "a temporary index left by an interrupted rebuild; \
                             the next rebuild overwrites it",
                        )),
                        None => notes.push(Note::new(&path, "not a seglog file; skipped")),
                    }
                }
            }
            Err(e) => problems.push(Problem::of_file(
                ProblemKind::Unreadable,
                dir,
                format!("cannot list: {e}"),
            )),
        }
        let last_log = found
            .iter()
            .rev()
            .find(|(_, (log, _, _))| *log)
            .map(|(&base, _)| base);
        let mut segments = Vec::new();
        for (&base, &(log, index, times)) in &found {
            if log {
                segments.push(SegmentFiles {
                    base_offset: base,
                    named: true,
                    log: Some(dir.join(format::log_file_name(base))),
                    index: Some(dir.join(format::index_file_name(base))),
                    active: Some(base) == last_log,
                });
            } else if times && !index {
                notes.push(Note::new(
                    &dir.join(format::time_index_file_name(base)),
                    "a time index without its .log, left by a build from before the time index \
                     that deleted the segment; the engine ignores it",
                ));
            } else {
                notes.push(Note::new(
                    &dir.join(format::index_file_name(base)),
                    "an index without its .log, left where a segment created but never synced \
                     was removed; the engine ignores it",
                ));
            }
        }
        KeyDir {
            dir: dir.to_path_buf(),
            key,
            segments,
            problems,
            notes,
        }
    }
}

/// Whether a directory name is one the store gives a key's directory.
pub fn is_key_dir_name(name: &str) -> bool {
    keyname::decode_name(name).is_some()
}

/// The key whose log is in `dir`: decoded from the directory name, or read
/// from the `KEY` file of a hashed name, and the problems in doing so.
pub fn resolve_key(dir: &Path) -> (KeyLabel, Vec<Problem>) {
    let dir_name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let label = |key| KeyLabel {
        key,
        dir_name: dir_name.clone(),
    };
    match dir
        .file_name()
        .and_then(OsStr::to_str)
        .and_then(keyname::decode_name)
    {
        Some(DecodedName::Key(key)) => (label(Some(key)), Vec::new()),
        Some(DecodedName::Hashed) => {
            let (key, problems) = read_key_file(dir, &dir_name);
            (label(key), problems)
        }
        None => (label(None), Vec::new()),
    }
}

/// Reads and checks the `KEY` file of the hashed directory `dir`, named `name`.
fn read_key_file(dir: &Path, name: &str) -> (Option<String>, Vec<Problem>) {
    let path = dir.join(KEY_FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                None,
                vec![Problem::of_file(
                    ProblemKind::BadKey,
                    &path,
                    "missing: nothing names the key of this hashed directory, \
                     so the store cannot find its log",
                )],
            );
        }
        Err(e) => {
            return (
                None,
                vec![Problem::of_file(
                    ProblemKind::Unreadable,
                    &path,
                    format!("cannot read: {e}"),
                )],
            );
        }
    };
    let Ok(key) = String::from_utf8(bytes) else {
        return (
            None,
            vec![Problem::at(
                ProblemKind::BadKey,
                &path,
                0,
                "the key is not UTF-8",
            )],
        );
    };
    let counter = name
        .rsplit_once('.')
        .and_then(|(_, counter)| counter.parse::<u32>().ok())
        .unwrap_or_default();
    let mut problems = Vec::new();
    if keyname::hashed_name(&key, counter) != name {
        problems.push(Problem::at(
            ProblemKind::BadKey,
            &path,
            0,
            "the key's hash does not match the directory name, so the store never looks here",
        ));
    } else if keyname::escaped_name(&key).is_some() {
        problems.push(Problem::at(
            ProblemKind::BadKey,
            &path,
            0,
            "the key is short enough for a k. name, so the store never looks here",
        ));
    }
    (Some(key), problems)
}
