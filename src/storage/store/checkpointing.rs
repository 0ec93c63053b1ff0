//! Checkpoints as the store starts them: when one is due, the journal
//! rotation under the lock (one fdatasync), and the lists of files and
//! directories it syncs, handed to `checkpoint::Job`, which runs its steps
//! outside the lock (`storage/checkpoint.rs`). A checkpoint rides on a sync
//! point that starts when no other is in flight, and is done before that
//! sync point completes.

use std::path::PathBuf;
use std::sync::Arc;

use crate::log;
use crate::storage::checkpoint::{CHECKPOINT_FILES_MAX, Job};
use crate::storage::error::{Error, Result};
use crate::storage::journal::JournalWriter;

use super::{Store, SyncPlan};

impl Store {
    /// One sync point with a checkpoint riding on it, whatever the journal's
    /// size: the segments then hold everything durably and the journal only
    /// what comes next. Fails if another sync point is in flight.
    pub fn checkpoint(&mut self) -> Result<()> {
        if self.in_flight > 0 {
            return Err(Error::Busy(
                "a checkpoint waits for the sync points in flight".into(),
            ));
        }
        let plan = self.prepare(true, None)?;
        let executed = plan.execute();
        self.complete_sync(plan, executed)
    }

    /// A sync point with a checkpoint riding on it, prepared only, for
    /// tests that look at what it covers before executing it (complete it
    /// like any plan).
    #[doc(hidden)]
    pub fn prepare_checkpoint(&mut self) -> Result<SyncPlan> {
        self.prepare(true, None)
    }

    /// For crash tests: starts a checkpoint and stops after `steps` of its
    /// steps (the rotation's two, then those of `checkpoint::Job::run`),
    /// leaving the store as a crash there would, fit only to be dropped.
    #[doc(hidden)]
    pub fn checkpoint_interrupted(&mut self, steps: usize) -> Result<()> {
        let plan = self.prepare(true, Some(steps))?;
        let journal_steps = steps.saturating_sub(2);
        plan.sync()?;
        if let Some((job, _)) = &plan.checkpoint {
            job.run(Some(journal_steps))?;
        }
        self.poisoned = true;
        Ok(())
    }

    /// Whether a checkpoint is due: the live journal, or what was written to
    /// segments since the last one, reached the checkpoint size, too many
    /// segment files await a sync, or the oldest batch is too old.
    pub(super) fn checkpoint_due(&self) -> bool {
        let live = self.older_journal_bytes + self.journal.len();
        let has_batches = self.oldest_batch_at.is_some() || !self.older_journals.is_empty();
        (has_batches && live >= self.config.checkpoint_bytes)
            || self.dirty_bytes >= self.config.checkpoint_bytes
            || self.dirty_files.len() >= CHECKPOINT_FILES_MAX
            || self
                .oldest_batch_at
                .is_some_and(|at| at.elapsed() >= self.config.checkpoint_age)
    }

    /// Prepares a checkpoint under the lock (no plan is in flight): applies
    /// what the recovered journal still holds for unopened keys, rotates the
    /// journal, and takes the lists of what to sync. `steps` stops part way
    /// (a test's crash point): the rotation's two steps count first.
    pub(super) fn start_checkpoint(&mut self, steps: Option<usize>) -> Result<Option<Job>> {
        self.checkpointing = true;
        let replayed = self.replay_recovered();
        self.checkpointing = false;
        if let Err(why) = replayed {
            log::warn(format_args!(
                "checkpoints are off until the store is reopened: {why}"
            ));
            self.checkpoint_blocked = Some(why);
            return Ok(None);
        }
        if steps == Some(0) {
            return Ok(None);
        }
        let new = self.create_next_journal_file()?;
        if steps == Some(1) {
            return Ok(Some(self.job(Vec::new())));
        }
        // One fdatasync per checkpoint, under the lock.
        self.switch_journal_file(new)?;
        self.mentioned.clear();
        self.oldest_batch_at = None;
        let stale = self.older_journals.clone();
        Ok(Some(self.job(stale)))
    }

    /// The checkpoint's lists of what to sync, taken (and cleared) now;
    /// `stale` are the journal files it deletes.
    fn job(&mut self, stale: Vec<PathBuf>) -> Job {
        self.dirty_bytes = 0;
        self.dirty_sealed.clear();
        let mut files: Vec<PathBuf> = self.dirty_files.drain().collect();
        files.sort();
        let mut dirs: Vec<PathBuf> = self.dirty_dirs.drain().map(|(dir, _)| dir).collect();
        dirs.sort();
        Job {
            files,
            dirs,
            offsets: self.offsets.checkpoint_write(false),
            data_dir: self.dir.clone(),
            first_live: self.journal.seq(),
            stale,
            pool: Arc::clone(&self.sync_pool),
            fs: Arc::clone(&self.fs),
        }
    }

    /// Recovers every key the recovered journal still holds records for,
    /// so the checkpoint that deletes those files finds them in segments.
    fn replay_recovered(&mut self) -> std::result::Result<(), String> {
        let keys: Vec<String> = self.recovered.keys.keys().cloned().collect();
        for key in keys {
            // Creates the directory only for keys the journal holds records
            // for (`key_log` decides).
            if let Err(e) = self.key_log(&key, false) {
                return Err(format!("key {key:?} cannot be recovered: {e}"));
            }
            self.evict_to(self.config.open_keys_max);
        }
        self.recovered.files.clear();
        Ok(())
    }

    /// Creates the journal file after the current one, its first batch
    /// numbered after the marker that the switch writes next to the old
    /// file (the marker takes one batch number).
    pub(super) fn create_next_journal_file(&self) -> Result<JournalWriter> {
        JournalWriter::create(
            &*self.fs,
            &self.journal_dir,
            self.journal.seq() + 1,
            self.journal.next_batch() + 1,
        )
    }

    /// Ends the current journal file with a next-file marker naming `new`
    /// (created and durable), fdatasyncs it, and continues in `new`; the
    /// old file stays live until a checkpoint deletes it. The marker is
    /// durable before any batch goes to the new file: recovery refuses a
    /// journal whose later file holds batches when the earlier one has no
    /// marker naming it.
    pub(super) fn switch_journal_file(&mut self, new: JournalWriter) -> Result<()> {
        let mut marker = self.journal.builder();
        marker.add_next_file(new.seq());
        self.journal.append(marker)?;
        self.journal
            .file()
            .sync_data()
            .map_err(|e| Error::io("fdatasync", self.journal.path(), e))?;
        let old = std::mem::replace(&mut self.journal, new);
        self.older_journals.push(old.path().to_path_buf());
        self.older_journal_bytes += old.len();
        self.journal_synced = self.journal.len();
        Ok(())
    }
}
