//! What PATH names, found by looking at names and magic numbers, never by
//! opening anything for writing.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::storage::format::{self, FileKind, SegmentFile};
use crate::storage::keyname::KEY_FILE_NAME;
use crate::storage::offsets::OFFSETS_FILE_NAME;
use crate::storage::store::LOGS_DIR_NAME;

use super::key_dir::is_key_dir_name;

/// Bytes read to identify a file whose name says nothing: the magic.
const MAGIC_BYTES: u64 = 8;

/// What the inspector was pointed at.
#[derive(Debug)]
pub enum Target {
    /// A directory of node directories (`DATA/n0/`, `DATA/n1/`), each a store.
    DataDir(Vec<StoreLayout>),
    /// One store directory.
    Store(StoreLayout),
    /// One key's log directory.
    KeyDir(PathBuf),
    /// One `.log` file.
    LogFile(PathBuf),
    /// One `.index` file.
    IndexFile(PathBuf),
    /// One committed offsets file (`offsets.journal`).
    Offsets(PathBuf),
    /// One write-ahead journal file.
    JournalFile(PathBuf),
}

/// Where a store keeps its parts.
#[derive(Clone, Debug)]
pub struct StoreLayout {
    /// The store directory.
    pub dir: PathBuf,
    /// Its `logs/` directory, one subdirectory per key.
    pub logs_dir: PathBuf,
    /// Its committed offsets file; `None` when PATH was a bare `logs/`.
    pub offsets: Option<PathBuf>,
}

impl StoreLayout {
    fn of_store(dir: &Path) -> StoreLayout {
        StoreLayout {
            dir: dir.to_path_buf(),
            logs_dir: dir.join(LOGS_DIR_NAME),
            offsets: Some(dir.join(OFFSETS_FILE_NAME)),
        }
    }
}

/// Works out what `path` is.
pub fn resolve(path: &Path) -> io::Result<Target> {
    let meta = fs::metadata(path).map_err(|e| with_path(path, e))?;
    if meta.is_file() {
        return resolve_file(path);
    }
    if is_store_dir(path) {
        return Ok(Target::Store(StoreLayout::of_store(path)));
    }
    if is_key_dir(path) {
        return Ok(Target::KeyDir(path.to_path_buf()));
    }
    let mut stores = Vec::new();
    let mut holds_key_dirs = false;
    for entry in fs::read_dir(path).map_err(|e| with_path(path, e))? {
        let entry = entry.map_err(|e| with_path(path, e))?;
        let child = entry.path();
        if !child.is_dir() {
            continue;
        }
        if is_store_dir(&child) {
            stores.push(StoreLayout::of_store(&child));
        } else if entry.file_name().to_str().is_some_and(is_key_dir_name) {
            holds_key_dirs = true;
        }
    }
    if !stores.is_empty() {
        stores.sort_by(|a, b| a.dir.cmp(&b.dir));
        return Ok(Target::DataDir(stores));
    }
    if holds_key_dirs {
        // A bare logs/ directory: its keys, without the store's offsets file.
        return Ok(Target::Store(StoreLayout {
            dir: path.to_path_buf(),
            logs_dir: path.to_path_buf(),
            offsets: None,
        }));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{}: no seglog data here; expected a data directory, a store directory \
             (logs/, offsets.journal), a key directory (logs/k.… or logs/h.…), \
             or a .log, .index or offsets.journal file",
            path.display()
        ),
    ))
}

fn resolve_file(path: &Path) -> io::Result<Target> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name == OFFSETS_FILE_NAME {
        return Ok(Target::Offsets(path.to_path_buf()));
    }
    if crate::storage::journal::parse_file_name(name).is_some() {
        return Ok(Target::JournalFile(path.to_path_buf()));
    }
    if let Some((_, file)) = format::parse_segment_file_name(name) {
        return Ok(match file {
            SegmentFile::Log => Target::LogFile(path.to_path_buf()),
            SegmentFile::Index => Target::IndexFile(path.to_path_buf()),
            // Shown with its segment, which the .log stands for.
            SegmentFile::TimeIndex => Target::LogFile(path.with_extension("log")),
        });
    }
    let mut magic = Vec::new();
    fs::File::open(path)
        .and_then(|file| file.take(MAGIC_BYTES).read_to_end(&mut magic))
        .map_err(|e| with_path(path, e))?;
    match FileKind::from_magic(&magic) {
        Some(FileKind::Log) => Ok(Target::LogFile(path.to_path_buf())),
        Some(FileKind::Index) => Ok(Target::IndexFile(path.to_path_buf())),
        Some(FileKind::TimeIndex) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: a time index under another name; inspect its segment's .log",
                path.display()
            ),
        )),
        Some(FileKind::Offsets) => Ok(Target::Offsets(path.to_path_buf())),
        Some(FileKind::Journal) => Ok(Target::JournalFile(path.to_path_buf())),
        Some(FileKind::Checkpoint) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: a checkpoint file; inspect the store directory it is in",
                path.display()
            ),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not a seglog file: its name is not a segment's or offsets.journal, \
                 and it starts with no seglog magic",
                path.display()
            ),
        )),
    }
}

/// A store directory holds `logs/` or the committed-offsets journal.
pub fn is_store_dir(dir: &Path) -> bool {
    dir.join(LOGS_DIR_NAME).is_dir() || dir.join(OFFSETS_FILE_NAME).is_file()
}

/// A key directory has a name the store gives keys, a `KEY` file, or segments.
fn is_key_dir(dir: &Path) -> bool {
    if dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_key_dir_name)
        || dir.join(KEY_FILE_NAME).is_file()
    {
        return true;
    }
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(format::parse_segment_file_name)
                .is_some()
        })
    })
}

/// Puts the path into an I/O error's message, which alone names no file.
pub fn with_path(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}
