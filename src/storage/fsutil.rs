//! Small file-system helpers that make metadata changes durable, over the
//! store's [`Backend`].

use std::path::Path;

use crate::storage::backend::{Backend, OpenMode};
use crate::storage::error::{Error, Result};

/// fsyncs a directory, making the creation, removal or renaming of its
/// entries durable (a new file can vanish after a crash otherwise: KAFKA-3968).
pub fn sync_dir(fs: &dyn Backend, dir: &Path) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Flushes every dirty page and inode of the file system holding `dir`
/// (`syncfs`), and reports writeback errors it finds.
pub fn sync_file_system(fs: &dyn Backend, dir: &Path) -> Result<()> {
    fs.sync_file_system(dir)
        .map_err(|e| Error::io("syncfs", dir, e))
}

/// Whether anything is at `path` (see [`Backend::exists`]).
pub fn exists(fs: &dyn Backend, path: &Path) -> Result<bool> {
    fs.exists(path).map_err(|e| Error::io("stat", path, e))
}

/// Whether a directory is at `path` (see [`Backend::is_dir`]).
pub fn is_dir(fs: &dyn Backend, path: &Path) -> Result<bool> {
    fs.is_dir(path).map_err(|e| Error::io("stat", path, e))
}

/// Writes `bytes`, which the file at `path` holds from its first byte
/// (read from the page cache), over themselves and fdatasyncs the file.
///
/// Recovery does this, instead of a bare fdatasync, for what it trusts
/// without proof that it is durable: after a failed fdatasync Linux may
/// mark pages it could not write clean while keeping them cached, so a
/// process restarted without a reboot reads them as written, and a later
/// fdatasync, finding nothing dirty, writes nothing. Writing the same
/// bytes dirties every page again, so the sync covers them (or fails).
pub fn rewrite_and_sync(fs: &dyn Backend, path: &Path, bytes: &[u8]) -> Result<()> {
    rewrite_in_place(fs, path, bytes, 0, true)
}

/// Like [`rewrite_and_sync`], for the bytes of `bytes` from position
/// `from` on only, and without the sync unless `sync`: for bytes a later
/// sync (a checkpoint's) covers before anything relies on them.
pub fn rewrite_in_place(
    fs: &dyn Backend,
    path: &Path,
    bytes: &[u8],
    from: usize,
    sync: bool,
) -> Result<()> {
    let from = from.min(bytes.len());
    let file = fs
        .open(path, OpenMode::Write)
        .map_err(|e| Error::io("open", path, e))?;
    file.write_all_at(&bytes[from..], from as u64)
        .map_err(|e| Error::io("rewrite", path, e))?;
    if sync {
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", path, e))?;
    }
    Ok(())
}

/// Creates `dir` and any missing parents, and fsyncs the parent of each
/// directory it created, so the new directories survive a power loss.
pub fn create_dir_all_durably(fs: &dyn Backend, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(path) = next.filter(|p| !p.as_os_str().is_empty()) {
        if exists(fs, path)? {
            break;
        }
        missing.push(path);
        next = path.parent();
    }
    for created in missing.iter().rev() {
        match fs.create_dir(created) {
            Ok(()) => {}
            // Another process made it in the meantime: as good, if it is
            // a directory.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && is_dir(fs, created)? => {}
            Err(e) => return Err(Error::io("create", created, e)),
        }
    }
    for created in missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(fs, parent)?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` so that a crash at any point leaves either
/// the old file or the new one: write a temporary file, fsync it, rename it
/// over `path`, fsync the directory.
pub fn rewrite_atomic(fs: &dyn Backend, path: &Path, bytes: &[u8]) -> Result<()> {
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
    write_whole(fs, &tmp, bytes, true)?;
    fs.rename(&tmp, path)
        .map_err(|e| Error::io("rename over", path, e))?;
    sync_dir(fs, dir)
}

/// Creates (or truncates) `path` holding `bytes`, fsynced with `sync`.
pub fn write_whole(fs: &dyn Backend, path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let file = fs
        .open(path, OpenMode::Truncate)
        .map_err(|e| Error::io("create", path, e))?;
    file.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write", path, e))?;
    if sync {
        file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    }
    Ok(())
}

/// Replaces a cache file (an offset or time index) with a header and
/// entries: written to `tmp` and renamed over `path`, so a crash leaves the
/// old file or the new one. No fsync: a cache is rebuilt from the log it
/// describes.
pub fn replace_cache<const N: usize>(
    fs: &dyn Backend,
    path: &Path,
    tmp: &Path,
    header: &[u8],
    entries: impl ExactSizeIterator<Item = [u8; N]>,
) -> Result<()> {
    let mut bytes = Vec::with_capacity(header.len() + entries.len() * N);
    bytes.extend_from_slice(header);
    for entry in entries {
        bytes.extend_from_slice(&entry);
    }
    write_whole(fs, tmp, &bytes, false)?;
    fs.rename(tmp, path)
        .map_err(|e| Error::io("rename over", path, e))
}
