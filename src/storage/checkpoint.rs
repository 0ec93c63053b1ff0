//! Checkpoints: making the segments hold, durably, everything the journal
//! files up to a point hold, so those files can be deleted.
//!
//! A checkpoint starts when the live journal passes [`CHECKPOINT_BYTES_DEFAULT`]
//! (configurable), when it is older than [`CHECKPOINT_AGE_DEFAULT`], or when
//! [`CHECKPOINT_FILES_MAX`] segment files await a sync. `store/checkpointing.rs` first
//! rotates the journal: it creates the next journal file (synced, with its
//! directory entry) and ends the current one with a next-file marker. Every
//! batch in the old files has been written to the segments by then (a
//! checkpoint starts only when no sync point is in flight). Then [`Job::run`],
//! outside the store's lock, takes the steps below; a crash between any two
//! leaves a state recovery handles (`segment-format.md`, "Checkpoint").
//!
//! 1. fdatasync every segment file written since the last checkpoint, each
//!    on its own, so that a writeback error of any of them fails the
//!    checkpoint (`segment-format.md`, "Checkpoint", says why not `syncfs`);
//! 2. fsync every directory that gained an entry (new segments, new keys);
//! 3. append the commits since the last checkpoint to `offsets.journal`, or
//!    compact it, and make that durable;
//! 4. write `checkpoint.tmp` naming the first journal file still needed,
//!    and fsync it;
//! 5. rename it over `checkpoint`;
//! 6. fsync the data directory;
//! 7. delete the journal files below the one named, one by one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::storage::backend::{Backend, Fs, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{self, FILE_HEADER_SIZE, FORMAT_VERSION, FileHeader, FileKind};
use crate::storage::fsutil;
use crate::storage::offsets::OffsetsWrite;
use crate::storage::syncpool::{SyncJob, SyncPool};

/// Name of the checkpoint file in the data directory.
pub const CHECKPOINT_FILE_NAME: &str = "checkpoint";
/// Name of the checkpoint being written, before its rename.
pub const CHECKPOINT_TMP_NAME: &str = "checkpoint.tmp";

/// Live journal size that starts a checkpoint. Recovery after a crash reads
/// the live journal and the segment bytes it covers, about 100 MB/s of
/// checking at worst on this machine: 64 MiB keeps that near half a second,
/// and at the node's rates (about 10 MB/s of records) a checkpoint comes
/// every few seconds.
pub const CHECKPOINT_BYTES_DEFAULT: u64 = 64 << 20;

/// Age of the oldest live journal batch that starts a checkpoint, so a
/// quiet store does not keep segment data unsynced, and journal files
/// around, for ever.
pub const CHECKPOINT_AGE_DEFAULT: Duration = Duration::from_secs(300);

/// Segment files awaiting a sync that start a checkpoint. A checkpoint
/// fdatasyncs each (32 at a time, `syncpool.rs`: about 0.3 s for 4,096 on
/// this disk), and recovery after a crash replays at most the keys the live
/// journal mentions before the first checkpoint: both stay bounded.
pub const CHECKPOINT_FILES_MAX: usize = 4096;

/// Environment variable that overrides the default checkpoint size, for
/// tests that want checkpoints during short runs of the node binary.
pub const CHECKPOINT_BYTES_VAR: &str = "SEGLOG_CHECKPOINT_BYTES";

/// What the data directory's checkpoint file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No checkpoint file: a version 1 store, or a new one.
    Missing,
    /// Journal files numbered below this one are covered by segments.
    FirstLive(u64),
    /// The file exists but does not decode (it is only ever replaced by a
    /// rename, so this is damage): why.
    Damaged(String),
}

/// The bytes of a checkpoint naming `first_live`: a file header whose base
/// offset field is the sequence number of the first journal file needed.
pub fn encode(first_live: u64) -> [u8; FILE_HEADER_SIZE] {
    format::encode_header(&FileHeader {
        kind: FileKind::Checkpoint,
        version: FORMAT_VERSION,
        base_offset: first_live,
    })
}

/// Reads the checkpoint of the data directory `dir`.
pub fn read(fs: &dyn Backend, dir: &Path) -> Result<Found> {
    let path = dir.join(CHECKPOINT_FILE_NAME);
    let bytes = match fs.read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    Ok(decode(&bytes))
}

/// Decodes a checkpoint file's bytes.
pub fn decode(bytes: &[u8]) -> Found {
    match format::decode_header(bytes) {
        Ok(header) if header.kind != FileKind::Checkpoint => {
            Found::Damaged(format!("not a checkpoint ({:?})", header.kind))
        }
        Ok(_) if bytes.len() != FILE_HEADER_SIZE => Found::Damaged(format!(
            "{} bytes, a checkpoint is {FILE_HEADER_SIZE}",
            bytes.len()
        )),
        Ok(header) => Found::FirstLive(header.base_offset),
        Err(e) => Found::Damaged(e.to_string()),
    }
}

/// Writes the checkpoint naming `first_live` atomically, all steps at once
/// (used when a store is created or converted).
pub fn write(fs: &dyn Backend, dir: &Path, first_live: u64) -> Result<()> {
    fsutil::rewrite_atomic(fs, &dir.join(CHECKPOINT_FILE_NAME), &encode(first_live))
}

/// One checkpoint's work, prepared under the store's lock.
pub struct Job {
    /// Segment `.log` files written since the last checkpoint.
    pub files: Vec<PathBuf>,
    /// Directories that gained entries since the last checkpoint.
    pub dirs: Vec<PathBuf>,
    /// The commits since the last checkpoint, for `offsets.journal`.
    pub offsets: Option<OffsetsWrite>,
    /// The data directory, where the checkpoint file lives.
    pub data_dir: PathBuf,
    /// The first journal file the checkpoint keeps.
    pub first_live: u64,
    /// Journal files below `first_live`, deleted last.
    pub stale: Vec<PathBuf>,
    /// Threads for the many fdatasyncs of step 1.
    pub pool: Arc<SyncPool>,
    /// The store's backend.
    pub fs: Fs,
}

impl Job {
    /// Takes the steps of the module comment in order; with `steps`, only
    /// that many (a test's crash point), returning whether all were taken.
    pub fn run(&self, steps: Option<usize>) -> Result<bool> {
        let mut budget = steps.unwrap_or(usize::MAX);
        let step = |done: &mut usize| {
            if *done == 0 {
                return false;
            }
            *done -= 1;
            true
        };
        if !step(&mut budget) {
            return Ok(false);
        }
        let jobs: Vec<SyncJob> = self
            .files
            .iter()
            .map(|path| {
                let path = path.clone();
                let fs = Arc::clone(&self.fs);
                Box::new(move || {
                    match fs
                        .open(&path, OpenMode::Read)
                        .and_then(|file| file.sync_data())
                    {
                        // Deleted since by retention or a key's removal (only
                        // seglog deletes segments), which made the deletion
                        // durable in the journal first: nothing to sync.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        result => result.map_err(|e| Error::io("fdatasync", &path, e)),
                    }
                }) as SyncJob
            })
            .collect();
        self.pool.run_all(jobs)?;
        if !step(&mut budget) {
            return Ok(false);
        }
        let jobs: Vec<SyncJob> = self
            .dirs
            .iter()
            .map(|dir| {
                let dir = dir.clone();
                let fs = Arc::clone(&self.fs);
                Box::new(move || {
                    match fs.sync_dir(&dir) {
                        // A key directory removed since: its removal fsynced
                        // logs/ itself.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        result => result.map_err(|e| Error::io("fsync directory", &dir, e)),
                    }
                }) as SyncJob
            })
            .collect();
        self.pool.run_all(jobs)?;
        if !step(&mut budget) {
            return Ok(false);
        }
        if let Some(offsets) = &self.offsets {
            offsets.run(&*self.fs)?;
        }
        if !step(&mut budget) {
            return Ok(false);
        }
        let tmp = self.data_dir.join(CHECKPOINT_TMP_NAME);
        fsutil::write_whole(&*self.fs, &tmp, &encode(self.first_live), true)?;
        if !step(&mut budget) {
            return Ok(false);
        }
        let path = self.data_dir.join(CHECKPOINT_FILE_NAME);
        self.fs
            .rename(&tmp, &path)
            .map_err(|e| Error::io("rename over", &path, e))?;
        if !step(&mut budget) {
            return Ok(false);
        }
        fsutil::sync_dir(&*self.fs, &self.data_dir)?;
        for stale in &self.stale {
            if !step(&mut budget) {
                return Ok(false);
            }
            match self.fs.remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", stale, e)),
            }
        }
        Ok(true)
    }
}
