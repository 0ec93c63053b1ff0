//! Small file-system helpers that make metadata changes durable.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::storage::error::{Error, Result};

/// fsyncs a directory, making the creation, removal or renaming of its
/// entries durable (a new file can vanish after a crash otherwise: KAFKA-3968).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Flushes every dirty page and inode of the file system holding `dir`
/// (`syncfs`), and reports writeback errors it finds.
pub fn sync_file_system(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| rustix::fs::syncfs(&d).map_err(std::io::Error::from))
        .map_err(|e| Error::io("syncfs", dir, e))
}

/// Creates `dir` and any missing parents, and fsyncs the parent of each
/// directory it created, so the new directories survive a power loss.
pub fn create_dir_all_durably(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(path) = next.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        next = path.parent();
    }
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    for created in missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` so that a crash at any point leaves either
/// the old file or the new one: write a temporary file, fsync it, rename it
/// over `path`, fsync the directory.
pub fn rewrite_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let invalid = |what: &str| {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        Error::io("rewrite", path, source)
    };
    let dir = path
        .parent()
        .ok_or_else(|| invalid("no parent directory"))?;
    let mut tmp_name = path
        .file_name()
        .ok_or_else(|| invalid("no file name"))?
        .to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    write_whole(&tmp, bytes, true)?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename over", path, e))?;
    sync_dir(dir)
}

/// Creates (or truncates) `path` holding `bytes`, fsynced with `sync`.
pub fn write_whole(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", path, e))?;
    if sync {
        file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    }
    Ok(())
}
