//! Opening and closing a store: the lock, the `CLEAN` mark, the journal
//! recovered (or created, or converted from version 1, or continued in a
//! file of this version), interrupted key removals finished; and the clean
//! close that lets the next open skip the journal.
//!
//! The order of the steps is what the crash analysis of
//! `segment-format.md` relies on: nothing is written before the lock is
//! held, and the `CLEAN` mark is gone before the first write, so a crash
//! from then on is seen as unclean.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::log;
use crate::storage::backend::{Backend, Fs, LockGuard};
use crate::storage::checkpoint;
use crate::storage::error::{Error, Result};
use crate::storage::format::FORMAT_VERSION;
use crate::storage::fsutil;
use crate::storage::journal::{JOURNAL_DIR_NAME, JournalWriter};
use crate::storage::journal_recovery::{self, RecoveredJournal};
use crate::storage::keyname;
use crate::storage::offsets::{CommittedOffsets, OFFSETS_FILE_NAME};
use crate::storage::segment::SEGMENT_BYTES_LIMIT;
use crate::storage::syncpool::SyncPool;

use super::{CLEAN_FILE_NAME, LOCK_FILE_NAME, LOGS_DIR_NAME, Store, StoreConfig, VIEW_DRAIN_WAIT};

impl Store {
    /// Opens (creating if needed) the store in `dir`, taking its lock, and
    /// recovers its journal (keys are recovered when first used). Each step
    /// is a function below, run in this order.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store> {
        check_config(&config)?;
        let fs = Arc::clone(&config.fs);
        fsutil::create_dir_all_durably(&*fs, dir)?;
        let lock = take_lock(&*fs, dir)?;
        Store::open_locked(dir, config, lock).map_err(|(e, _lock)| e)
    }

    /// Reopens a poisoned store in place, as a restart after `kill -9`
    /// would, without giving up its lock: the journal is recovered as
    /// after an unclean stop (every live journal file written over itself
    /// and fdatasynced before anything is served, each key the journal
    /// mentions checked and rewritten from it when first opened), and what
    /// this run held in memory (records and commits not durable, open
    /// keys, bookkeeping of what the next checkpoint must sync) is dropped.
    /// On success the store takes writes again; on failure it is left as
    /// it was, poisoned, its reads served as before, and may be reopened
    /// again (`segment-format.md`, "Healing in place", says why this
    /// cannot serve or checkpoint away a byte a lost writeback dropped).
    ///
    /// Refused while a sync plan is in flight, or a detached checkpoint
    /// runs: its thread could still write to (or delete) files the new run
    /// recovers.
    pub fn reopen(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::Busy("the store is closed".into()));
        }
        if self.in_flight > 0 {
            return Err(Error::Busy(format!(
                "{} sync points in flight; reopen once they complete",
                self.in_flight
            )));
        }
        if self.checkpoint_running {
            // Its thread could still delete journal files the new run
            // recovers from.
            return Err(Error::Busy(
                "a checkpoint is running; reopen once it finishes".into(),
            ));
        }
        // No reader of this run may still map a file that recovery cuts.
        let live = self.views.close_and_drain(VIEW_DRAIN_WAIT);
        if live > 0 {
            return Err(Error::Busy(format!(
                "{live} reads of the failed run still hold views of its files; \
                 reopen once they end"
            )));
        }
        let lock = std::mem::replace(&mut self._lock, Box::new(Released));
        let (dir, config) = (self.dir.clone(), self.config.clone());
        match Store::open_locked(&dir, config, lock) {
            Ok(mut store) => {
                // Handles to the flags follow the new run: no thread of the
                // old one can set them any more (no plan is in flight, no
                // checkpoint runs).
                store.sync_failed = Arc::clone(&self.sync_failed);
                store.poisoned_flag = Arc::clone(&self.poisoned_flag);
                store.sync_failed.store(false, Ordering::SeqCst);
                store.poisoned_flag.store(false, Ordering::SeqCst);
                // The old run's open files and maps close here, after the
                // new run is in place; dropping them writes nothing.
                *self = store;
                log::info(format_args!(
                    "{}: store reopened in place after a failed sync: taking writes again",
                    dir.display()
                ));
                Ok(())
            }
            Err((e, lock)) => {
                self._lock = lock;
                // This run goes on serving reads.
                self.views.open();
                Err(e)
            }
        }
    }

    /// [`Store::open`] once the lock is held; on failure the lock is
    /// handed back with the error, for [`Store::reopen`] to keep.
    fn open_locked(
        dir: &Path,
        config: StoreConfig,
        lock: Box<dyn LockGuard>,
    ) -> std::result::Result<Store, (Error, Box<dyn LockGuard>)> {
        let opened = match recover_files(&config.fs, dir) {
            Ok(opened) => opened,
            Err(e) => return Err((e, lock)),
        };
        let journal_version = opened.journal_version;
        let mut store = Store::build(dir, config, lock, opened);
        let finished = (|| {
            if journal_version < FORMAT_VERSION {
                store.upgrade_journal(journal_version)?;
            }
            store.finish_removals()
        })();
        match finished {
            Ok(()) => Ok(store),
            Err(e) => {
                let lock = std::mem::replace(&mut store._lock, Box::new(Released));
                Err((e, lock))
            }
        }
    }

    /// The store around what the steps of [`Store::open`] found, with
    /// nothing in memory yet but the recovered journal's bookkeeping.
    fn build(dir: &Path, config: StoreConfig, lock: Box<dyn LockGuard>, opened: Opened) -> Store {
        let Opened {
            opened_clean,
            legacy_unclean,
            offsets,
            journal,
            recovered,
            journal_version: _,
        } = opened;
        let fs = Arc::clone(&config.fs);
        let (older_journals, older_journal_bytes) = older_journals(&recovered);
        let mentioned = mentioned_keys(&recovered);
        let journal_synced = journal.len();
        let oldest_batch_at = recovered.has_batches.then(Instant::now);
        log::info(format_args!(
            "{}: journal file {} recovered, {} keys to replay, {} commits",
            dir.display(),
            journal.seq(),
            recovered.keys.len(),
            recovered.commits.len()
        ));
        let sync_pool = Arc::new(SyncPool::new(fs.parallel_syncs()));
        Store {
            fs,
            dir: dir.to_path_buf(),
            logs_dir: dir.join(LOGS_DIR_NAME),
            journal_dir: dir.join(JOURNAL_DIR_NAME),
            config,
            _lock: lock,
            opened_clean,
            legacy_unclean,
            open: HashMap::default(),
            clock: 0,
            offsets,
            poisoned: false,
            sync_pool,
            journal,
            journal_synced,
            older_journals,
            older_journal_bytes,
            oldest_batch_at,
            recovered,
            mentioned,
            dirty_files: HashSet::new(),
            dirty_sealed: HashMap::new(),
            sync_failed: Arc::default(),
            poisoned_flag: Arc::default(),
            dirty_bytes: 0,
            dirty_dirs: HashMap::new(),
            dir_generation: 0,
            in_flight: 0,
            pending_bytes: 0,
            together: false,
            checkpointing: false,
            checkpoint_running: false,
            checkpoint_blocked: None,
            closed: false,
            views: Arc::default(),
        }
    }

    /// Continues a journal whose current file an older format version
    /// created in a new file of this version: rotates as a checkpoint does
    /// (the new file made durable, then the old one's next-file marker),
    /// without the checkpoint; the next checkpoint deletes both old files.
    /// A build of the older version then refuses the journal instead of
    /// taking a batch with an entry kind it does not know for a torn tail.
    fn upgrade_journal(&mut self, version: u16) -> Result<()> {
        let old_seq = self.journal.seq();
        log::info(format_args!(
            "{}: journal file {old_seq} has format version {version}: continuing in file {} \
             of version {FORMAT_VERSION}",
            self.dir.display(),
            old_seq + 1
        ));
        let new = self.create_next_journal_file()?;
        self.switch_journal_file(new)?;
        self.oldest_batch_at.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Finishes the key removals the live journal holds (`remove_key`
    /// durable, then a crash): deletes every `rm.` directory (a removal
    /// interrupted while deleting), and the directory of every key whose
    /// removal no later record follows (the removal may not have reached
    /// it); for the others, the directory at the key's name is the new log's
    /// (the removal was durable before it was created) and the entries
    /// after the removal recover it.
    fn finish_removals(&mut self) -> Result<()> {
        if !self.recovered.has_removals {
            return Ok(());
        }
        let entries = self
            .fs
            .list(&self.logs_dir)
            .map_err(|e| Error::io("list", &self.logs_dir, e))?;
        for entry in entries {
            if entry
                .name
                .to_str()
                .is_some_and(|name| name.starts_with(keyname::REMOVED_PREFIX))
            {
                let path = self.logs_dir.join(&entry.name);
                log::warn(format_args!(
                    "removing {}: a key removal interrupted while deleting",
                    path.display()
                ));
                self.fs
                    .remove_dir_all(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
            }
        }
        let removed: Vec<String> = self
            .recovered
            .keys
            .iter()
            .filter(|(_, at)| matches!(at.first(), Some(journal_recovery::EntryAt::Removed)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in removed {
            let at = self.recovered.keys.remove(&key).unwrap_or_default();
            if journal_recovery::removed_only(&at) {
                if let Some(dir) = self.key_dir(&key, false)? {
                    log::warn(format_args!(
                        "{}: finishing the removal of key {key:?}",
                        dir.display()
                    ));
                    self.delete_key_dir(&dir)?;
                }
            } else {
                self.recovered.keys.insert(key, at[1..].to_vec());
            }
        }
        fsutil::sync_dir(&*self.fs, &self.logs_dir)
    }

    /// Syncs everything, checkpoints and marks the shutdown clean, so the
    /// next open has no journal to replay and skips the full check of
    /// active segments.
    pub fn close(mut self) -> Result<()> {
        self.shut_down()
    }

    /// [`Store::close`] for a store others may still reference: syncs,
    /// checkpoints and marks the clean shutdown, after which every write is
    /// refused with [`Error::Busy`] (anything written after the mark would
    /// be missed by the next open's clean-start checks).
    pub fn shut_down(&mut self) -> Result<()> {
        self.check_open()?;
        self.sync()?;
        self.checkpoint()?;
        self.closed = true;
        if let Some(why) = &self.checkpoint_blocked {
            // The journal still holds records no segment has: the next open
            // must treat it as after a crash.
            log::warn(format_args!(
                "{}: closed without the clean mark, no checkpoint could run: {why}",
                self.dir.display()
            ));
            return Ok(());
        }
        let clean_path = self.dir.join(CLEAN_FILE_NAME);
        fsutil::write_whole(&*self.fs, &clean_path, b"seglog closed cleanly\n", true)?;
        fsutil::sync_dir(&*self.fs, &self.dir)
    }
}

/// What the steps of [`Store::open`] opened, for [`Store::build`].
struct Opened {
    /// Whether the last run ended with a clean close.
    opened_clean: bool,
    /// Whether this run recovers a version 1 store left by a crash.
    legacy_unclean: bool,
    /// The committed offsets, the journal's included.
    offsets: CommittedOffsets,
    /// The journal file batches go to next.
    journal: JournalWriter,
    /// What the live journal held.
    recovered: RecoveredJournal,
    /// The format version of the journal file batches go to.
    journal_version: u16,
}

/// A stand-in for the lock while [`Store::reopen`] hands the real one to
/// the store it opens.
struct Released;

impl LockGuard for Released {}

/// The steps of [`Store::open`] once the lock is held, up to the recovered
/// journal: the directory layout, the `CLEAN` mark, the committed offsets
/// and the journal, in this order.
fn recover_files(fs: &Fs, dir: &Path) -> Result<Opened> {
    let version_1 = prepare_dirs(&**fs, dir)?;
    let opened_clean = take_clean_mark(&**fs, dir)?;
    let legacy_unclean = version_1 && !opened_clean;
    if legacy_unclean {
        sync_version_1(&**fs, dir)?;
    }
    let mut offsets = CommittedOffsets::open(Arc::clone(fs), dir, !opened_clean)?;
    let (journal, recovered, journal_version) =
        open_journal(&**fs, dir, opened_clean, version_1, &mut offsets)?;
    for (key, change, forward_only) in &recovered.commits {
        offsets.recovered(key, change.clone(), *forward_only);
    }
    Ok(Opened {
        opened_clean,
        legacy_unclean,
        offsets,
        journal,
        recovered,
        journal_version,
    })
}

/// Refuses a configuration no store can run with.
fn check_config(config: &StoreConfig) -> Result<()> {
    let minimum = (crate::storage::format::FILE_HEADER_SIZE
        + crate::storage::format::RECORD_HEADER_SIZE) as u64;
    if config.segment_bytes < minimum || config.segment_bytes > SEGMENT_BYTES_LIMIT {
        return Err(Error::Config(format!(
            "segment size {} is outside {minimum}..={SEGMENT_BYTES_LIMIT}",
            config.segment_bytes
        )));
    }
    if config.open_keys_max == 0 {
        return Err(Error::Config("at least one key must be kept open".into()));
    }
    Ok(())
}

/// Takes the data directory's lock: one process per store, before anything
/// in it is read or written.
fn take_lock(fs: &dyn Backend, dir: &Path) -> Result<Box<dyn LockGuard>> {
    let lock_path = dir.join(LOCK_FILE_NAME);
    match fs.try_lock(&lock_path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(Error::Locked { path: lock_path }),
        Err(e) => Err(Error::io("lock", &lock_path, e)),
    }
}

/// Readies the directory layout and tells whether format version 1 wrote
/// the store: an interrupted creation is undone so that it runs again, and
/// `logs/` is created if it is missing.
fn prepare_dirs(fs: &dyn Backend, dir: &Path) -> Result<bool> {
    let logs_dir = dir.join(LOGS_DIR_NAME);
    let journal_dir = dir.join(JOURNAL_DIR_NAME);
    let has_checkpoint = undo_interrupted_creation(fs, dir, &journal_dir)?;
    // A store with neither a checkpoint nor a journal directory was
    // written by format version 1 (or is new).
    let version_1 = !has_checkpoint
        && !fsutil::exists(fs, &journal_dir)?
        && (fsutil::exists(fs, &logs_dir)? || fsutil::exists(fs, &dir.join(OFFSETS_FILE_NAME))?);
    if !fsutil::is_dir(fs, &logs_dir)? {
        fs.create_dir(&logs_dir)
            .map_err(|e| Error::io("create", &logs_dir, e))?;
        fsutil::sync_dir(fs, dir)?;
    }
    Ok(version_1)
}

/// The checkpoint is written last when a store is created or converted
/// from version 1: without one, a journal that holds no batch is what an
/// interrupted creation left (a store that ever took a write has a
/// checkpoint), and it is removed to be made again. Returns whether the
/// store has a checkpoint.
fn undo_interrupted_creation(fs: &dyn Backend, dir: &Path, journal_dir: &Path) -> Result<bool> {
    let has_checkpoint = fsutil::exists(fs, &dir.join(checkpoint::CHECKPOINT_FILE_NAME))?;
    let has_journal = fsutil::exists(fs, journal_dir)?;
    if !has_checkpoint && has_journal && !journal_recovery::any_batch(fs, journal_dir)? {
        log::warn(format_args!(
            "{}: no checkpoint and no journal batch: store creation was interrupted, \
             creating the journal again",
            dir.display()
        ));
        fs.remove_dir_all(journal_dir)
            .map_err(|e| Error::io("remove", journal_dir, e))?;
        fsutil::sync_dir(fs, dir)?;
    }
    Ok(has_checkpoint)
}

/// Removes the clean-shutdown mark, if the last run left one, and says
/// whether it did. It is gone before the first write, so a crash from now
/// on is seen as unclean.
fn take_clean_mark(fs: &dyn Backend, dir: &Path) -> Result<bool> {
    let clean_path = dir.join(CLEAN_FILE_NAME);
    let opened_clean = fsutil::exists(fs, &clean_path)?;
    if opened_clean {
        fs.remove_file(&clean_path)
            .map_err(|e| Error::io("remove", &clean_path, e))?;
        fsutil::sync_dir(fs, dir)?;
    }
    Ok(opened_clean)
}

/// Version 1 wrote records to segments before syncing them: after a kill
/// -9 the page cache holds written, unsynced records, commits and directory
/// entries anywhere, where recovery would find them valid and serve them.
/// One syncfs makes all of them durable before anything is read. Version 2
/// needs no such thing (the journal says what may be unsynced).
fn sync_version_1(fs: &dyn Backend, dir: &Path) -> Result<()> {
    log::warn(format_args!(
        "{}: a format version 1 store stopped uncleanly: syncing its file system",
        dir.display()
    ));
    fsutil::sync_file_system(fs, dir)
}

/// The journal, recovered, or created for a new store or a version 1 one;
/// with what the live journal held and the format version of the file
/// batches go to.
fn open_journal(
    fs: &dyn Backend,
    dir: &Path,
    opened_clean: bool,
    version_1: bool,
    offsets: &mut CommittedOffsets,
) -> Result<(JournalWriter, RecoveredJournal, u16)> {
    let journal_dir = dir.join(JOURNAL_DIR_NAME);
    if !fsutil::exists(fs, &journal_dir)? {
        return create_journal(fs, dir, &journal_dir, version_1, offsets);
    }
    let recovered = journal_recovery::recover(fs, dir, &journal_dir, !opened_clean)?;
    let version = recovered.last_version;
    let journal = JournalWriter::open(
        fs,
        &journal_dir,
        recovered.last_seq,
        recovered.last_len,
        recovered.next_batch,
    )?;
    Ok((journal, recovered, version))
}

/// Creates the journal of a new store, or of a version 1 one, converting
/// it: the offsets file is rewritten with a version 2 header first, so that
/// a version 1 build refuses the directory rather than ignore the journal.
/// The checkpoint naming file 0 is written last (see
/// [`undo_interrupted_creation`]).
fn create_journal(
    fs: &dyn Backend,
    dir: &Path,
    journal_dir: &Path,
    version_1: bool,
    offsets: &mut CommittedOffsets,
) -> Result<(JournalWriter, RecoveredJournal, u16)> {
    if version_1 && let Some(write) = offsets.checkpoint_write(true) {
        write.run(fs)?;
        offsets.checkpointed(&write)?;
    }
    fs.create_dir(journal_dir)
        .map_err(|e| Error::io("create", journal_dir, e))?;
    fsutil::sync_dir(fs, dir)?;
    let journal = JournalWriter::create(fs, journal_dir, 0, 0)?;
    checkpoint::write(fs, dir, 0)?;
    Ok((journal, RecoveredJournal::default(), FORMAT_VERSION))
}

/// The live journal files before the current one, and their bytes: the
/// next checkpoint deletes them.
fn older_journals(recovered: &RecoveredJournal) -> (Vec<PathBuf>, u64) {
    let paths = recovered
        .paths
        .iter()
        .take(recovered.paths.len().saturating_sub(1))
        .cloned()
        .collect();
    let bytes = recovered
        .files
        .iter()
        .take(recovered.files.len().saturating_sub(1))
        .map(|bytes| bytes.len() as u64)
        .sum();
    (paths, bytes)
}

/// The keys whose recovery will check them against the journal: a key
/// whose entries are only a log start (or records all below it) is
/// recovered as if the journal did not mention it, so a direct sync point
/// for it must write its note first.
fn mentioned_keys(recovered: &RecoveredJournal) -> HashSet<String> {
    recovered
        .keys
        .iter()
        .filter(|(_, at)| {
            !journal_recovery::entries(&recovered.files, at)
                .entries
                .is_empty()
        })
        .map(|(key, _)| key.clone())
        .collect()
}
