//! The I/O backend: every file operation durability depends on goes through
//! [`Backend`] and [`FileIo`], so that a test can put a simulated disk under
//! the real engine (one that keeps what is durable apart from what is only
//! written, drops what a power loss may drop, and fails any operation on a
//! countdown).
//!
//! # Contract
//! An implementation behaves as Linux's ext4 does for the engine's calls;
//! a simulated one must keep these rules, or the engine takes branches it
//! would not take on a real disk:
//! - **Error kinds carry meaning.** `NotFound` is returned exactly when
//!   nothing is at the path (the engine takes it for absence: a file
//!   already deleted, no journal yet); `AlreadyExists` exactly from
//!   [`Backend::create_dir`] and [`OpenMode::CreateNew`] on an existing
//!   name. An injected fault must use neither kind (EIO and ENOSPC are the
//!   faults of a disk).
//! - **What a sync makes durable.** A file's bytes and its length become
//!   durable through that file's [`FileIo::sync_data`] or
//!   [`FileIo::sync_all`] (through any handle of it). Creating a name
//!   ([`OpenMode::CreateNew`], [`OpenMode::Truncate`] of a missing file,
//!   [`Backend::create_dir`]), [`Backend::rename`], [`Backend::remove_file`]
//!   and [`Backend::remove_dir_all`] become durable only through
//!   [`Backend::sync_dir`] of the directory holding the name; a file's sync
//!   does not make its name durable, and a directory's sync does not make
//!   its own name in its parent durable. [`Backend::sync_file_system`] makes
//!   everything durable. What a power loss may keep of the rest is the model
//!   in `segment-format.md` ("Assumptions about the file system").
//! - **A failed sync decides nothing.** After a failed `sync_data`,
//!   `sync_all` or `sync_dir`, what it covered may or may not be durable,
//!   and may stay undetermined even after a later sync succeeds (Linux can
//!   drop the dirty pages and mark them clean): the store poisons.
//!
//! The store chooses its backend at open ([`crate::storage::store::StoreConfig`]
//! carries it) and hands it to every part that touches files; nothing else
//! in the engine knows which one it has. [`RealFs`] is the file system;
//! its reads of segments go through memory maps ([`MappedFile`]), while a
//! simulated backend serves the same reads from its own image.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::storage::mmap::MappedFile;

/// The backend a store and its parts share.
pub type Fs = Arc<dyn Backend>;

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading and syncing.
    Read,
    /// An existing file, for reading, writing, cutting and syncing.
    Write,
    /// A new file, for reading and writing; `AlreadyExists` if the name
    /// exists.
    CreateNew,
    /// A file created if missing and cut to nothing if not, for reading and
    /// writing.
    Truncate,
}

/// What [`Backend::stat`] tells of a path.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub is_dir: bool,
    pub len: u64,
    /// Last modification, where the backend keeps one.
    pub modified: Option<SystemTime>,
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: std::ffi::OsString,
    pub is_dir: bool,
}

/// An open file. Positions are absolute; writes never move a cursor, so a
/// file can be shared between the writer and the sync threads.
pub trait FileIo: Send + Sync {
    /// Writes all of `bytes` at `position`, or fails. A failure may leave
    /// any prefix of `bytes` written (as a short write followed by an error
    /// does).
    fn write_all_at(&self, bytes: &[u8], position: u64) -> io::Result<()>;
    /// Sets the file's length, cutting or zero-extending it.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the file's data and the size needed to read it are durable.
    fn sync_data(&self) -> io::Result<()>;
    /// fsync: as [`FileIo::sync_data`], and every other attribute too.
    fn sync_all(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// The first `len` bytes as written (not only what is durable), for
    /// reading; `len` is at most [`FileIo::size`]. The caller promises not
    /// to write, cut or extend those bytes while the returned value lives
    /// (see `mmap.rs`), so a copy taken now reads the same as a live map.
    fn map(&self, len: usize) -> io::Result<MappedFile>;
}

/// The file-system operations of a store. Paths are the engine's own, under
/// its data directory.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Opens `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileIo>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// What is at `path`; `NotFound` when nothing is.
    fn stat(&self, path: &Path) -> io::Result<Stat>;
    /// The entries of a directory, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Creates one directory, whose parent exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it, entry by entry: not
    /// atomic, so a failure or a power loss can leave any part of the
    /// tree. Symbolic links are removed, not followed.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames the file or directory `from` to `to` (in the same directory,
    /// as the engine does), replacing `to` if it is a file or an empty
    /// directory. Atomic: after a crash exactly one of the two names holds
    /// it, the new one once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync of a directory: the creations, removals and renames of its
    /// entries so far are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// syncfs: every written byte and entry of the file system holding `dir`
    /// is durable.
    fn sync_file_system(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of the file `path` (created if missing), held
    /// until the returned value is dropped; `Ok(None)` if another holder has
    /// it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;

    /// Whether a sync point may hand its fdatasyncs to a pool of threads.
    /// The real disk folds concurrent syncs into fewer journal commits; a
    /// simulated one gains nothing and must see its operations in one
    /// order to replay a run exactly.
    fn parallel_syncs(&self) -> bool {
        true
    }

    /// Whether anything is at `path`: `Ok(false)` only when nothing is
    /// (`NotFound`). Any other failure to look is an error, never taken
    /// for absence: a store that took an unreadable checkpoint for a
    /// missing one would start its journal again.
    fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a directory is at `path`, with the errors of
    /// [`Backend::exists`].
    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        match self.stat(path) {
            Ok(stat) => Ok(stat.is_dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A held lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync {}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl RealFs {
    /// A shared handle on the real file system.
    pub fn shared() -> Fs {
        Arc::new(RealFs)
    }
}

struct RealFile(File);

impl FileIo for RealFile {
    fn write_all_at(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, position)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn map(&self, len: usize) -> io::Result<MappedFile> {
        MappedFile::map(&self.0, len)
    }
}

impl LockGuard for File {}

impl Backend for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileIo>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::Write => {
                options.write(true);
            }
            OpenMode::CreateNew => {
                options.write(true).create_new(true);
            }
            OpenMode::Truncate => {
                options.write(true).create(true).truncate(true);
            }
        }
        Ok(Arc::new(RealFile(options.open(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn stat(&self, path: &Path) -> io::Result<Stat> {
        let meta = fs::metadata(path)?;
        Ok(Stat {
            is_dir: meta.is_dir(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let is_dir = match entry.file_type() {
                Ok(kind) => kind.is_dir(),
                // Gone since the listing read it: not an entry any more,
                // and not a reason to report the directory as missing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            entries.push(DirEntry {
                name: entry.file_name(),
                is_dir,
            });
        }
        Ok(entries)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn sync_file_system(&self, dir: &Path) -> io::Result<()> {
        let dir = File::open(dir)?;
        rustix::fs::syncfs(&dir).map_err(io::Error::from)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
