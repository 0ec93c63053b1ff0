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
use std::time::Instant;

use crate::log;
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

use super::{CLEAN_FILE_NAME, LOCK_FILE_NAME, LOGS_DIR_NAME, Store, StoreConfig};

impl Store {
    /// Opens (creating if needed) the store in `dir`, taking its lock, and
    /// recovers its journal (keys are recovered when first used).
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store> {
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
        let fs = Arc::clone(&config.fs);
        fsutil::create_dir_all_durably(&*fs, dir)?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = match fs.try_lock(&lock_path) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Err(Error::Locked { path: lock_path }),
            Err(e) => return Err(Error::io("lock", &lock_path, e)),
        };
        let logs_dir = dir.join(LOGS_DIR_NAME);
        let journal_dir = dir.join(JOURNAL_DIR_NAME);
        // The checkpoint is written last when a store is created or
        // converted from version 1: without one, a journal that holds no
        // batch is what an interrupted creation left (a store that ever
        // took a write has a checkpoint), and it is made again.
        let has_checkpoint = fsutil::exists(&*fs, &dir.join(checkpoint::CHECKPOINT_FILE_NAME))?;
        let has_journal = fsutil::exists(&*fs, &journal_dir)?;
        if !has_checkpoint && has_journal && !journal_recovery::any_batch(&*fs, &journal_dir)? {
            log::warn(format_args!(
                "{}: no checkpoint and no journal batch: store creation was interrupted, \
                 creating the journal again",
                dir.display()
            ));
            fs.remove_dir_all(&journal_dir)
                .map_err(|e| Error::io("remove", &journal_dir, e))?;
            fsutil::sync_dir(&*fs, dir)?;
        }
        // A store with neither a checkpoint nor a journal directory was
        // written by format version 1 (or is new).
        let version_1 = !has_checkpoint
            && !fsutil::exists(&*fs, &journal_dir)?
            && (fsutil::exists(&*fs, &logs_dir)?
                || fsutil::exists(&*fs, &dir.join(OFFSETS_FILE_NAME))?);
        if !fsutil::is_dir(&*fs, &logs_dir)? {
            fs.create_dir(&logs_dir)
                .map_err(|e| Error::io("create", &logs_dir, e))?;
            fsutil::sync_dir(&*fs, dir)?;
        }
        let clean_path = dir.join(CLEAN_FILE_NAME);
        let opened_clean = fsutil::exists(&*fs, &clean_path)?;
        if opened_clean {
            // Gone before the first write, so a crash from now on is seen as unclean.
            fs.remove_file(&clean_path)
                .map_err(|e| Error::io("remove", &clean_path, e))?;
            fsutil::sync_dir(&*fs, dir)?;
        }
        let legacy_unclean = version_1 && !opened_clean;
        if legacy_unclean {
            // Version 1 wrote records to segments before syncing them: after
            // a kill -9 the page cache holds written, unsynced records,
            // commits and directory entries anywhere, where recovery would
            // find them valid and serve them. One syncfs makes all of them
            // durable before anything is read. Version 2 needs no such thing
            // (the journal says what may be unsynced).
            log::warn(format_args!(
                "{}: a format version 1 store stopped uncleanly: syncing its file system",
                dir.display()
            ));
            fsutil::sync_file_system(&*fs, dir)?;
        }
        let mut offsets = CommittedOffsets::open(Arc::clone(&fs), dir, !opened_clean)?;
        let (journal, recovered, journal_version) = if fsutil::exists(&*fs, &journal_dir)? {
            let recovered = journal_recovery::recover(&*fs, dir, &journal_dir, !opened_clean)?;
            let version = recovered.last_version;
            let journal = JournalWriter::open(
                &*fs,
                &journal_dir,
                recovered.last_seq,
                recovered.last_len,
                recovered.next_batch,
            )?;
            (journal, recovered, version)
        } else {
            // A new store, or a version 1 one: convert it. The offsets file
            // is rewritten with a version 2 header first, so that a version
            // 1 build refuses the directory rather than ignore the journal.
            if version_1 && let Some(write) = offsets.checkpoint_write(true) {
                write.run(&*fs)?;
                offsets.checkpointed(&write)?;
            }
            fs.create_dir(&journal_dir)
                .map_err(|e| Error::io("create", &journal_dir, e))?;
            fsutil::sync_dir(&*fs, dir)?;
            let journal = JournalWriter::create(&*fs, &journal_dir, 0, 0)?;
            checkpoint::write(&*fs, dir, 0)?;
            (journal, RecoveredJournal::default(), FORMAT_VERSION)
        };
        for (key, offset) in &recovered.commits {
            offsets.recovered(key, *offset);
        }
        let older_journals: Vec<PathBuf> = recovered
            .paths
            .iter()
            .take(recovered.paths.len().saturating_sub(1))
            .cloned()
            .collect();
        let older_journal_bytes = recovered
            .files
            .iter()
            .take(recovered.files.len().saturating_sub(1))
            .map(|bytes| bytes.len() as u64)
            .sum();
        // The keys whose recovery will check them against the journal: a
        // key whose entries are only a log start (or records all below it)
        // is recovered as if the journal did not mention it, so a direct
        // sync point for it must write its note first.
        let mentioned: HashSet<String> = recovered
            .keys
            .iter()
            .filter(|(_, at)| {
                !journal_recovery::entries(&recovered.files, at)
                    .entries
                    .is_empty()
            })
            .map(|(key, _)| key.clone())
            .collect();
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
        let mut store = Store {
            fs,
            dir: dir.to_path_buf(),
            logs_dir,
            journal_dir,
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
            dirty_bytes: 0,
            dirty_dirs: HashMap::new(),
            dir_generation: 0,
            in_flight: 0,
            pending_bytes: 0,
            checkpointing: false,
            checkpoint_blocked: None,
            closed: false,
        };
        if journal_version < FORMAT_VERSION {
            store.upgrade_journal(journal_version)?;
        }
        store.finish_removals()?;
        Ok(store)
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
        let new = JournalWriter::create(
            &*self.fs,
            &self.journal_dir,
            old_seq + 1,
            self.journal.next_batch() + 1,
        )?;
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
