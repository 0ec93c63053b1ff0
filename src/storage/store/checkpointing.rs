//! Checkpoints as the store starts them: when one is due, the journal
//! rotation under the lock (one fdatasync), and the lists of files and
//! directories it syncs, handed to `checkpoint::Job`, which runs its steps
//! outside the lock (`storage/checkpoint.rs`). A checkpoint starts with a
//! sync point when no other is in flight. It either rides on that sync
//! point, done before it completes ([`Store::sync`], [`Store::checkpoint`]),
//! or is detached from it ([`Store::detach_checkpoint`]) and runs on a
//! thread of its own while later sync points go on in the new journal file,
//! as the group commit does: the segment fdatasyncs of a checkpoint take
//! tens of milliseconds, and no write should wait for them.
//!
//! A detached checkpoint changes no crash state recovery meets: until its
//! rename of the checkpoint file the old journal files stay live and
//! recovery replays them and then the new one, as after a crash with no
//! checkpoint; after it, the segments hold durably what the old files held
//! (every batch in them was written out before the rotation), and the new
//! file, however many batches it holds by then, is replayed on top.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
        if self.checkpoint_running {
            return Err(Error::Busy(
                "a checkpoint is running already; try once it finishes".into(),
            ));
        }
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

    /// Takes the checkpoint riding on `plan` (just prepared), if one does,
    /// off it, to be run on a thread of its own ([`Checkpoint::run`], no
    /// lock held) and then handed to [`Store::finish_checkpoint`]; the plan
    /// goes on as a sync point of the new journal file. No other checkpoint
    /// starts, and the store is not reopened, until it is finished.
    pub fn detach_checkpoint(&mut self, plan: &mut SyncPlan) -> Option<Checkpoint> {
        let (job, steps) = plan.checkpoint.take()?;
        self.checkpoint_running = true;
        Some(Checkpoint {
            job,
            steps,
            sync_failed: Arc::clone(&self.sync_failed),
        })
    }

    /// Takes in a detached checkpoint's outcome: its journal files are gone
    /// and its commits in `offsets.journal` if `ran` is `Ok`; a failure
    /// poisons the store (a segment's writeback may have failed, and the
    /// journal files that hold its records stay live).
    pub fn finish_checkpoint(&mut self, checkpoint: Checkpoint, ran: Result<()>) -> Result<()> {
        self.checkpoint_running = false;
        let result = ran.and_then(|()| self.checkpoint_done(&checkpoint.job));
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    /// Takes in what a checkpoint that ran did: the commits it wrote to
    /// `offsets.journal`, the journal files it deleted.
    pub(super) fn checkpoint_done(&mut self, job: &Job) -> Result<()> {
        if let Some(write) = &job.offsets {
            self.offsets.checkpointed(write)?;
        }
        // Only a checkpoint rotates the journal, and one runs at a time:
        // the files it deleted are all the older ones.
        debug_assert!(
            self.older_journals
                .iter()
                .all(|path| job.stale.contains(path)),
            "a journal rotation while a checkpoint ran"
        );
        self.older_journals.clear();
        self.older_journal_bytes = 0;
        log::info(format_args!(
            "checkpoint: journal files before {} deleted, {} segment files synced",
            job.first_live,
            job.files.len()
        ));
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

/// A checkpoint detached from the sync point it started with
/// ([`Store::detach_checkpoint`]), run without the store's lock.
pub struct Checkpoint {
    job: Job,
    /// Steps to take (all unless a test stops it part way).
    steps: Option<usize>,
    /// The store's flag for a failed sync.
    sync_failed: Arc<AtomicBool>,
}

impl Checkpoint {
    /// Takes the checkpoint's steps (`checkpoint.rs`); a failure sets the
    /// store's failed-sync flag at once, so no sync point is confirmed
    /// after it. Refused if a sync failed already.
    pub fn run(&self) -> Result<()> {
        if self.sync_failed.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        let result = self.job.run(self.steps).map(|_| ());
        if result.is_err() {
            self.sync_failed.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Segment files the checkpoint fdatasyncs.
    pub fn file_count(&self) -> usize {
        self.job.files.len()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::storage::error::Error;
    use crate::storage::sim::SimFs;
    use crate::storage::store::{Store, StoreConfig};

    /// A store on a simulated disk whose first sync point after one
    /// record starts a checkpoint.
    fn store() -> (std::sync::Arc<SimFs>, Store) {
        let fs = SimFs::new();
        let config = StoreConfig {
            fs: fs.clone(),
            checkpoint_bytes: 1,
            ..StoreConfig::default()
        };
        let store = Store::open(Path::new("/data"), config).expect("open");
        (fs, store)
    }

    /// Two records of `k` made durable by two sync points, the second of
    /// which starts a checkpoint that is detached from it, as the group
    /// commit does: returned to run later.
    fn detached_after_two_records(store: &mut Store) -> super::Checkpoint {
        store.append("k", b"one").expect("append");
        store.sync().expect("sync");
        store.append("k", b"two").expect("append");
        let mut plan = store.prepare_sync().expect("prepare");
        let checkpoint = store
            .detach_checkpoint(&mut plan)
            .expect("a checkpoint is due");
        assert!(!plan.has_checkpoint(), "the plan goes on without it");
        let executed = plan.execute();
        store.complete_sync(plan, executed).expect("complete");
        checkpoint
    }

    fn journal_files(fs: &SimFs) -> usize {
        fs.tree()
            .iter()
            .filter(|(path, _)| path.extension().is_some_and(|e| e == "wal"))
            .count()
    }

    #[test]
    fn sync_points_go_on_while_a_detached_checkpoint_runs_and_it_then_deletes_the_old_journal() {
        let (fs, mut store) = store();
        let checkpoint = detached_after_two_records(&mut store);
        assert_eq!(store.durable_next_offset("k").expect("end"), 2);

        // While it runs: sync points go through the journal only (a direct
        // one counts on what the checkpoint has yet to sync), no second
        // checkpoint starts, and the store is not reopened under it.
        store.append("k", b"three").expect("append");
        let mut plan = store.prepare_sync().expect("prepare");
        assert!(!plan.is_direct(), "k is mentioned, but a checkpoint runs");
        assert!(store.detach_checkpoint(&mut plan).is_none());
        let executed = plan.execute();
        store.complete_sync(plan, executed).expect("complete");
        assert_eq!(store.durable_next_offset("k").expect("end"), 3);
        assert!(matches!(store.checkpoint(), Err(Error::Busy(_))));
        assert!(matches!(store.reopen(), Err(Error::Busy(_))));
        assert_eq!(
            journal_files(&fs),
            2,
            "the old file stays live until it ran"
        );

        let ran = checkpoint.run();
        store.finish_checkpoint(checkpoint, ran).expect("finish");
        assert_eq!(journal_files(&fs), 1, "the old journal file is deleted");
        store.append("k", b"four").expect("append");
        let mut plan = store.prepare_sync().expect("prepare");
        let next = store
            .detach_checkpoint(&mut plan)
            .expect("the next one may start");
        let executed = plan.execute();
        store.complete_sync(plan, executed).expect("complete");
        let ran = next.run();
        store.finish_checkpoint(next, ran).expect("finish");

        // Everything acknowledged survives a power loss.
        let image = fs.power_loss(crate::storage::sim::Keep::Nothing);
        let config = StoreConfig {
            fs: image,
            ..StoreConfig::default()
        };
        let mut reopened = Store::open(Path::new("/data"), config).expect("reopen");
        assert_eq!(reopened.durable_next_offset("k").expect("end"), 4);
    }

    #[test]
    fn a_detached_checkpoint_that_fails_poisons_the_store_and_keeps_the_old_journal() {
        use crate::storage::sim::{Fault, FaultOp};
        let (fs, mut store) = store();
        let checkpoint = detached_after_two_records(&mut store);
        fs.fail(Fault::new(FaultOp::SyncData).path_contains("logs"));
        let ran = checkpoint.run();
        assert!(ran.is_err());
        assert!(store.finish_checkpoint(checkpoint, ran).is_err());
        assert!(store.is_poisoned());
        assert!(matches!(store.append("k", b"three"), Err(Error::Poisoned)));
        assert_eq!(
            journal_files(&fs),
            2,
            "the journal still holds what it failed to sync"
        );
        store.reopen().expect("reopen once it finished");
        assert_eq!(store.durable_next_offset("k").expect("end"), 2);
    }
}
