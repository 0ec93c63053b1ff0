//! Sync points: what makes appends and commits durable, in three steps so
//! that no fsync runs under the caller's lock. [`Store::prepare_sync`]
//! writes what waits in memory (a journal batch, or one key's records to
//! its segment for a direct sync point) and returns a [`SyncPlan`];
//! [`SyncPlan::execute`] runs its fsyncs without any lock;
//! [`Store::complete_sync`] writes journaled records to their segments and
//! publishes them. It also keeps the lists of what the next checkpoint
//! syncs (segment files and directories written since the last one).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::storage::backend::{FileIo, Fs, OpenMode};
use crate::storage::checkpoint::Job;
use crate::storage::error::{Error, Result};
use crate::storage::fsutil;
use crate::storage::journal::BatchBuilder;
use crate::storage::keylog::Touched;
use crate::storage::offsets::{Change, Commits};
use crate::storage::syncpool::{SyncJob, SyncPool};

use super::Store;

/// Below this many files and directories a sync point runs on the calling
/// thread: handing them to the pool would cost more than it saves.
const PARALLEL_SYNC_MIN: usize = 4;

/// What one sync point covers: files to fdatasync and directories to fsync,
/// taken under the store's lock and executed without it.
pub struct SyncPlan {
    /// The store's backend.
    fs: Fs,
    /// The store's pool of sync threads.
    pool: Arc<SyncPool>,
    files: Vec<(Arc<dyn FileIo>, String)>,
    dirs: BTreeSet<PathBuf>,
    /// Per key, the offset after the last record that becomes durable.
    keys: Vec<(String, u64)>,
    /// A direct sync point: the records are written already.
    direct: bool,
    /// Directories fsynced with their generations, for `dirty_dirs`.
    dir_generations: Vec<(PathBuf, u64)>,
    /// A direct plan's key directory and the generation of its sealed
    /// files it syncs, for `dirty_sealed`.
    sealed_generation: Option<(PathBuf, u64)>,
    /// The store's flag for a failed sync.
    sync_failed: Arc<AtomicBool>,
    /// Bytes of the journal file the plan makes durable.
    journal_len: u64,
    /// The commits the plan makes durable.
    commits: Option<Commits>,
    /// A checkpoint to run after the fsyncs, and how many of its steps (all
    /// unless a test stops it part way, see `Store::checkpoint_interrupted`).
    pub(super) checkpoint: Option<(Job, Option<usize>)>,
}

impl SyncPlan {
    /// The directories the plan fsyncs.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(PathBuf::as_path)
    }

    /// The files the plan fdatasyncs, by path.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(_, name)| name.as_str())
    }

    /// Number of appended-to keys the plan covers.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Whether this is a direct sync point (one key, its segment synced).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Whether a checkpoint rides on this sync point.
    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// The segment files and directories the checkpoint riding on this
    /// sync point syncs (none without one): for tests of what it covers.
    #[doc(hidden)]
    pub fn checkpoint_syncs(&self) -> (&[PathBuf], &[PathBuf]) {
        match &self.checkpoint {
            Some((job, _)) => (&job.files, &job.dirs),
            None => (&[], &[]),
        }
    }

    /// fdatasyncs every file and fsyncs every directory of the plan, many
    /// at once when there are many (see `syncpool.rs`), then takes the
    /// checkpoint's steps if one rides on it.
    pub fn execute(&self) -> Result<()> {
        if self.sync_failed.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        let result = self.sync().and_then(|()| match &self.checkpoint {
            Some((job, steps)) => job.run(*steps).map(|_| ()),
            None => Ok(()),
        });
        if result.is_err() {
            self.sync_failed.store(true, Ordering::SeqCst);
        }
        result
    }

    /// The plan's fsyncs alone, without the checkpoint's steps.
    pub(super) fn sync(&self) -> Result<()> {
        let count = self.files.len() + self.dirs.len();
        if count < PARALLEL_SYNC_MIN {
            for (file, name) in &self.files {
                sync_file(file, name)?;
            }
            return self
                .dirs
                .iter()
                .try_for_each(|dir| fsutil::sync_dir(&*self.fs, dir));
        }
        let mut jobs: Vec<SyncJob> = Vec::with_capacity(count);
        for (file, name) in &self.files {
            let (file, name) = (Arc::clone(file), name.clone());
            jobs.push(Box::new(move || sync_file(&file, &name)));
        }
        for dir in &self.dirs {
            let dir = dir.clone();
            let fs = Arc::clone(&self.fs);
            jobs.push(Box::new(move || fsutil::sync_dir(&*fs, &dir)));
        }
        self.pool.run_all(jobs)
    }
}

/// fdatasyncs one file of a plan, naming it in the error.
fn sync_file(file: &Arc<dyn FileIo>, name: &str) -> Result<()> {
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", Path::new(name), e))
}

impl Store {
    /// Writes what is held in memory to a file and returns what must be
    /// synced to make all appends and commits so far durable. Every plan must
    /// be passed to [`Store::complete_sync`]: a checkpoint waits for every
    /// plan in flight.
    pub fn prepare_sync(&mut self) -> Result<SyncPlan> {
        self.prepare(false, None)
    }

    /// [`Store::prepare_sync`], with a checkpoint forced (or stopped after
    /// `steps`, a crash test's point); a failure poisons the store.
    pub(super) fn prepare(
        &mut self,
        force_checkpoint: bool,
        steps: Option<usize>,
    ) -> Result<SyncPlan> {
        self.check_not_poisoned()?;
        let result = self.collect_sync_plan(force_checkpoint, steps);
        if let Err(e) = &result {
            self.poison(e);
        }
        if result.is_ok() {
            self.in_flight += 1;
        }
        result
    }

    /// A plan that syncs nothing yet.
    fn empty_plan(&self) -> SyncPlan {
        SyncPlan {
            fs: Arc::clone(&self.fs),
            pool: Arc::clone(&self.sync_pool),
            files: Vec::new(),
            dirs: BTreeSet::new(),
            keys: Vec::new(),
            direct: false,
            dir_generations: Vec::new(),
            sealed_generation: None,
            sync_failed: Arc::clone(&self.sync_failed),
            journal_len: self.journal_synced,
            commits: None,
            checkpoint: None,
        }
    }

    /// What the next sync point covers: a checkpoint first if one is due,
    /// then a direct sync point when one key's records are all there is
    /// and they fit its active segment, or else a journal batch.
    fn collect_sync_plan(
        &mut self,
        force_checkpoint: bool,
        steps: Option<usize>,
    ) -> Result<SyncPlan> {
        let mut plan = self.empty_plan();
        if self.in_flight == 0
            && !self.checkpointing
            && !self.checkpoint_running
            && self.checkpoint_blocked.is_none()
            && (force_checkpoint || self.checkpoint_due())
            && let Some(job) = self.start_checkpoint(steps)?
        {
            plan.checkpoint = Some((job, steps));
            if steps.is_some_and(|s| s < 2) {
                return Ok(plan);
            }
        }
        let unclaimed: Vec<String> = self
            .open
            .iter()
            .filter(|(_, open)| open.log.has_unclaimed())
            .map(|(key, _)| key.clone())
            .collect();
        // Not while a detached checkpoint runs: a direct sync point counts
        // on the last checkpoint having synced the directories and sealed
        // segments it took off `dirty_dirs` and `dirty_sealed`. A journal
        // one needs none of that: the journal files it took stay live.
        if unclaimed.len() == 1
            && self.in_flight == 0
            && !self.checkpoint_running
            && plan.checkpoint.is_none()
            && !self.offsets.has_pending()
            && !self.open[&unclaimed[0]].log.write_needs_new_segment()
        {
            let key = unclaimed.into_iter().next().expect("one key");
            return self.direct_plan(plan, key);
        }
        self.journal_plan(plan, &unclaimed)
    }

    /// A journal sync point: the records of the `unclaimed` keys and every
    /// pending commit in one batch, the journal file synced by the plan
    /// (also when only an earlier plan's batch is not yet durable).
    fn journal_plan(&mut self, mut plan: SyncPlan, unclaimed: &[String]) -> Result<SyncPlan> {
        let mut builder = self.journal.builder();
        let commits = self.offsets.take_pending();
        // Commits describing a key's records (producers' states), by key,
        // written right after those records in their batch.
        let mut attached: HashMap<String, Vec<&str>> = HashMap::new();
        for (commit_key, records_key) in self.offsets.take_attached() {
            if let Some((key, _)) = commits.get_key_value(&commit_key) {
                attached.entry(records_key).or_default().push(key.as_str());
            }
        }
        let add_commit = |builder: &mut BatchBuilder, key: &str, change: &Change| match change {
            Some(c) => builder.add_commit_value(key, c.offset, &c.value),
            None => builder.add_uncommitted(key),
        };
        let commit_bytes = |key: &str, change: &Change| {
            BatchBuilder::entry_bytes(key, change.as_ref().map_or(0, |c| c.value.len()))
        };
        let mut written: HashSet<&str> = HashSet::new();
        for key in unclaimed {
            let open = self.open.get_mut(key).expect("listed above");
            let (first, frames) = open.log.claim_for_journal();
            let mut states = attached.remove(key).unwrap_or_default();
            states.sort_unstable();
            let together = BatchBuilder::entry_bytes(key, frames.len())
                + states
                    .iter()
                    .map(|s| commit_bytes(s, &commits[*s].1))
                    .sum::<usize>();
            builder.keep_together(together);
            builder.add_records(key, first, frames);
            for state in states {
                add_commit(&mut builder, state, &commits[state].1);
                written.insert(state);
            }
            plan.keys.push((key.clone(), open.log.next_offset()));
            self.mentioned.insert(key.clone());
        }
        let mut sorted: Vec<_> = commits
            .iter()
            .filter(|(key, _)| !written.contains(key.as_str()))
            .collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (key, (_, change)) in sorted {
            add_commit(&mut builder, key, change);
        }
        if !commits.is_empty() {
            plan.commits = Some(commits);
        }
        if !builder.is_empty() {
            self.journal.append(builder)?;
            self.oldest_batch_at.get_or_insert_with(Instant::now);
        }
        if self.journal.len() > self.journal_synced {
            plan.files.push((
                Arc::clone(self.journal.file()),
                self.journal.path().display().to_string(),
            ));
        }
        plan.journal_len = self.journal.len();
        Ok(plan)
    }

    /// A direct sync point for `key`: its records written to its active
    /// segment now, that file (and any directory whose new entries it
    /// needs) synced by the plan. Only for a key a durable entry of the
    /// live journal mentions already: the first sync point of a key after
    /// a checkpoint is a journal one, which mentions it.
    ///
    /// Why the mention must be durable first: were it written with the
    /// direct records (as seglog did until this rule), a failed fdatasync of
    /// the journal could leave the mention on no disk, and once the kernel
    /// drops those pages a recovery without a reboot (a restart, or a heal
    /// in place) no longer sees it, takes the key for one last written
    /// before a checkpoint whose fdatasyncs all succeeded, and serves the
    /// direct records still dirty in the page cache, which a power loss
    /// then takes back.
    fn direct_plan(&mut self, plan: SyncPlan, key: String) -> Result<SyncPlan> {
        if !self.mentioned.contains(&key) {
            return self.journal_plan(plan, &[key]);
        }
        let mut plan = plan;
        let open = self.open.get_mut(&key).expect("an open key");
        let (target, touched) = open.log.write_direct()?;
        let key_dir = open.log.dir().to_path_buf();
        self.note_touched(&key_dir, touched);
        if let Some((sealed, generation)) = self.dirty_sealed.get(&key_dir) {
            for path in sealed.iter().filter(|path| **path != target.log_path) {
                let file = self
                    .fs
                    .open(path, OpenMode::Read)
                    .map_err(|e| Error::io("open", path, e))?;
                plan.files.push((file, path.display().to_string()));
            }
            plan.sealed_generation = Some((key_dir.clone(), *generation));
        }
        plan.files
            .push((target.file, target.log_path.display().to_string()));
        for dir in [&key_dir, &self.logs_dir] {
            if let Some(&generation) = self.dirty_dirs.get(dir) {
                plan.dirs.insert(dir.clone());
                plan.dir_generations.push((dir.clone(), generation));
            }
        }
        plan.keys.push((key, target.end));
        plan.direct = true;
        Ok(plan)
    }

    /// Makes what `plan` covered readable once its execution succeeded,
    /// before it is written out and published: records are served from
    /// memory until then, and commits are durable. Call it between
    /// [`SyncPlan::execute`] and [`Store::complete_sync`], so
    /// acknowledgements need not wait for the segment writes; a plan that
    /// failed to execute is not confirmed.
    ///
    /// Refused with [`Error::Poisoned`] once any sync of this store failed:
    /// a failed fdatasync may have dropped dirty pages that a later one then
    /// reports clean, so no plan's success can be trusted after it.
    pub fn confirm_sync(&mut self, plan: &mut SyncPlan) -> Result<()> {
        self.check_not_poisoned()?;
        for (key, end) in &plan.keys {
            if let Some(open) = self.open.get_mut(key) {
                open.log.confirm(*end);
            }
        }
        if let Some(commits) = plan.commits.take() {
            self.offsets.complete(commits);
        }
        Ok(())
    }

    /// Publishes what `plan` covered if its execution succeeded; poisons the
    /// store if it failed.
    pub fn complete_sync(&mut self, plan: SyncPlan, executed: Result<()>) -> Result<()> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Err(e) = executed {
            self.poison(&e);
            return Err(e);
        }
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let mut plan = plan;
        self.confirm_sync(&mut plan)?;
        let result = self.publish(plan);
        if let Err(e) = &result {
            self.poison(e);
        }
        self.evict_to(self.config.open_keys_max);
        result
    }

    /// Writes a journal plan's records to their segments (a direct plan's are
    /// there already) and publishes them, forgets the directories and sealed
    /// files the plan synced, and takes in a checkpoint's results.
    fn publish(&mut self, plan: SyncPlan) -> Result<()> {
        for (key, end) in &plan.keys {
            let Some(open) = self.open.get_mut(key) else {
                continue;
            };
            let before = open.log.pending_bytes();
            if !plan.direct {
                let touched = open.log.write_out(*end)?;
                let dir = open.log.dir().to_path_buf();
                open.log.publish(*end);
                let freed = before - self.open[key].log.pending_bytes();
                self.pending_bytes -= freed;
                self.note_touched(&dir, touched);
            } else {
                open.log.publish(*end);
                self.pending_bytes -= before - open.log.pending_bytes();
            }
        }
        for (dir, generation) in &plan.dir_generations {
            if self.dirty_dirs.get(dir) == Some(generation) {
                self.dirty_dirs.remove(dir);
            }
        }
        if let Some((dir, generation)) = &plan.sealed_generation
            && self
                .dirty_sealed
                .get(dir)
                .is_some_and(|(_, g)| g == generation)
        {
            self.dirty_sealed.remove(dir);
        }
        self.journal_synced = self.journal_synced.max(plan.journal_len);
        if let Some(commits) = plan.commits {
            self.offsets.complete(commits);
        }
        if let Some((job, _)) = &plan.checkpoint {
            self.checkpoint_done(job)?;
        }
        Ok(())
    }

    /// One whole sync point: prepare, execute, complete.
    pub fn sync(&mut self) -> Result<()> {
        let plan = self.prepare_sync()?;
        let executed = plan.execute();
        self.complete_sync(plan, executed)
    }

    /// Adds what a write to a key's segments touched to what the next
    /// checkpoint syncs.
    pub(super) fn note_touched(&mut self, key_dir: &Path, touched: Touched) {
        self.dirty_bytes += touched.bytes;
        if touched.created {
            self.mark_dir_dirty(key_dir.to_path_buf());
        }
        // Only keys with a sealed segment awaiting the checkpoint need the
        // paths twice; the usual publish moves them.
        if touched.sealed || self.dirty_sealed.contains_key(key_dir) {
            self.dir_generation += 1;
            let entry = self
                .dirty_sealed
                .entry(key_dir.to_path_buf())
                .or_insert_with(|| (HashSet::new(), 0));
            entry.0.extend(touched.files.iter().cloned());
            entry.1 = self.dir_generation;
        }
        self.dirty_files.extend(touched.files);
    }

    /// Adds a directory to what the next checkpoint fsyncs, with a new
    /// generation (see `dirty_dirs`).
    pub(super) fn mark_dir_dirty(&mut self, dir: PathBuf) {
        self.dir_generation += 1;
        self.dirty_dirs.insert(dir, self.dir_generation);
    }
}
