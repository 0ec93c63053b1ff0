//! Deleting records: retention's truncation of a key's oldest segments and
//! the removal of a whole key. Each is made durable in the journal (a
//! log-start or removed entry, fdatasynced) before any file is deleted, so
//! a crash while deleting leaves what recovery deletes again, never records
//! it would serve (`segment-format.md`, "Retention and removal").

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::log;
use crate::storage::error::{Error, Result};
use crate::storage::fsutil;
use crate::storage::journal::BatchBuilder;
use crate::storage::keyname;

use super::{Retention, Store, check_key};

impl Store {
    /// Deletes the key's sealed segments whose records are all below
    /// `before` (oldest first, never the active one); returns the new log
    /// start. Offsets never change: a read from below the log start
    /// delivers from it on.
    ///
    /// The new log start is durable when this returns: a log-start entry
    /// goes into the journal and is fdatasynced before any file is deleted,
    /// so a crash while deleting leaves files that recovery deletes again
    /// (with the journal records of the deleted range, which it neither
    /// replays nor checks). The deletions themselves are made durable by
    /// the next checkpoint, which fsyncs the key directory before it
    /// deletes the journal file holding the entry. A failure while deleting
    /// poisons the store (reopening finishes the deletion).
    pub fn truncate_front(&mut self, key: &str, before: u64) -> Result<u64> {
        self.check_open()?;
        self.check_not_poisoned()?;
        check_key(key)?;
        let Some(log) = self.key_log(key, false)? else {
            return Ok(0);
        };
        let start = log.log_start();
        let new_start = log.start_after_truncation(before);
        if new_start <= start {
            return Ok(start);
        }
        self.write_durable(|batch| batch.add_log_start(key, new_start))?;
        let log = &mut self.open.get_mut(key).expect("opened above").log;
        let dir = log.dir().to_path_buf();
        let deleted = match log.truncate_front(before) {
            Ok(deleted) => deleted,
            Err(e) => {
                self.poison(&e);
                return Err(e);
            }
        };
        let start = log.log_start();
        debug_assert_eq!(start, new_start, "deleted what was planned");
        log::info(format_args!(
            "{}: {} segment(s) deleted, the log starts at offset {start}",
            dir.display(),
            deleted.len()
        ));
        self.forget_files(&dir, &deleted);
        self.mark_dir_dirty(dir);
        Ok(start)
    }

    /// Applies `retention` to the key at time `now`: sealed segments
    /// entirely past the limits are deleted, oldest first, never the active
    /// one, as [`Store::truncate_front`] deletes them (durable likewise).
    /// Size rule (as Kafka's): delete the oldest sealed segment while the
    /// log's total bytes (its `.log` files) minus that segment's bytes is
    /// still at least the limit. Age rule: delete the oldest sealed segment
    /// while its last modification is older than `now - age`. Records carry
    /// no timestamp: a segment's age is its `.log` file's modification time,
    /// the time of its last append (recovery rewriting a segment makes it
    /// look younger, never older). Returns the new log start.
    pub fn enforce_retention(
        &mut self,
        key: &str,
        retention: Retention,
        now: std::time::SystemTime,
    ) -> Result<u64> {
        self.check_open()?;
        self.check_not_poisoned()?;
        let segments = self.segments(key)?;
        match crate::storage::retention::retention_before(&segments, retention, now) {
            Some(before) => self.truncate_front(key, before),
            None => self.log_start(key),
        }
    }

    /// Removes the key's log entirely (all segments, its directory). After
    /// it the key has no log: reads deliver nothing, `next_offset` is 0, and
    /// a new append starts a new log at 0. Committed offsets are a separate
    /// namespace and stay.
    ///
    /// Durable when it returns: a removed entry is fdatasynced in the
    /// journal first (recovery then voids the key's earlier entries and
    /// finishes the removal), then the directory is renamed to `rm.<name>`,
    /// logs/ fsynced, the directory deleted and logs/ fsynced again. A crash
    /// leaves the key whole (the entry was not durable) or gone.
    ///
    /// Refused with [`Error::Busy`] while the key has records no sync point
    /// has made durable and published (appended, or in a sync point in
    /// flight): remove it after they are, or they would be acknowledged for
    /// a log that is gone. A failure after the entry is durable poisons the
    /// store (reopening finishes the removal). A key with no log is left
    /// alone and nothing is written.
    pub fn remove_key(&mut self, key: &str) -> Result<()> {
        self.check_open()?;
        self.check_not_poisoned()?;
        check_key(key)?;
        if self
            .open
            .get(key)
            .is_some_and(|open| open.log.has_pending())
        {
            return Err(Error::Busy(format!(
                "key {key:?} has records awaiting a sync point; remove it once they are durable"
            )));
        }
        let dir = self.key_dir(key, false)?;
        if dir.is_none() && !self.open.contains_key(key) && !self.recovered.keys.contains_key(key) {
            return Ok(());
        }
        self.write_durable(|batch| batch.add_removed(key))?;
        self.open.remove(key);
        self.recovered.keys.remove(key);
        // The next records of the key go through the journal (a direct sync
        // point needs a segment), which mentions it again.
        self.mentioned.remove(key);
        if let Some(dir) = dir {
            self.forget_dir(&dir);
            if let Err(e) = self.delete_key_dir(&dir) {
                self.poison(&e);
                return Err(e);
            }
            log::info(format_args!("{}: key {key:?} removed", dir.display()));
        }
        Ok(())
    }

    /// Appends one batch that `build` fills to the journal and fdatasyncs
    /// the file at once, under the lock: for the log-start and removed
    /// entries, which must be durable before any file is deleted. It also
    /// makes durable every batch written before it. A failure poisons the
    /// store, as a failed sync point does.
    fn write_durable(&mut self, build: impl FnOnce(&mut BatchBuilder)) -> Result<()> {
        self.check_not_poisoned()?;
        let mut builder = self.journal.builder();
        build(&mut builder);
        let written = self.journal.append(builder).and_then(|()| {
            self.journal
                .file()
                .sync_data()
                .map_err(|e| Error::io("fdatasync", self.journal.path(), e))
        });
        if let Err(e) = written {
            self.sync_failed.store(true, Ordering::SeqCst);
            self.poison(&e);
            return Err(e);
        }
        // A plan's fdatasync of the same file that failed meanwhile may have
        // taken the error for pages this one then reported clean.
        if self.sync_failed.load(Ordering::SeqCst) {
            self.poison(&Error::Poisoned);
            return Err(Error::Poisoned);
        }
        self.journal_synced = self.journal_synced.max(self.journal.len());
        self.oldest_batch_at.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Drops deleted segment files from what the next checkpoint and direct
    /// sync points sync.
    fn forget_files(&mut self, key_dir: &Path, deleted: &[PathBuf]) {
        for path in deleted {
            self.dirty_files.remove(path);
        }
        if let Some((sealed, _)) = self.dirty_sealed.get_mut(key_dir) {
            for path in deleted {
                sealed.remove(path);
            }
            if sealed.is_empty() {
                self.dirty_sealed.remove(key_dir);
            }
        }
    }

    /// Drops a removed key directory from everything that would sync it.
    fn forget_dir(&mut self, key_dir: &Path) {
        self.dirty_files.retain(|path| !path.starts_with(key_dir));
        self.dirty_sealed.remove(key_dir);
        self.dirty_dirs.remove(key_dir);
    }

    /// Deletes a key's directory so that a crash at any point leaves it
    /// whole at its name, or gone from it: renamed to `rm.<name>`, logs/
    /// fsynced (so nothing in it is deleted while a power loss could still
    /// bring the old name back), deleted, and logs/ fsynced again (so no
    /// `rm.` directory outlives the journal entry that explains it).
    pub(super) fn delete_key_dir(&mut self, dir: &Path) -> Result<()> {
        let name = dir
            .file_name()
            .and_then(|name| name.to_str())
            .expect("key directory names are UTF-8");
        let grave = self.logs_dir.join(keyname::removed_name(name));
        let fs = &*self.fs;
        if fsutil::exists(fs, &grave)? {
            fs.remove_dir_all(&grave)
                .map_err(|e| Error::io("remove", &grave, e))?;
        }
        fs.rename(dir, &grave)
            .map_err(|e| Error::io("rename to", &grave, e))?;
        fsutil::sync_dir(fs, &self.logs_dir)?;
        fs.remove_dir_all(&grave)
            .map_err(|e| Error::io("remove", &grave, e))?;
        fsutil::sync_dir(fs, &self.logs_dir)
    }
}
