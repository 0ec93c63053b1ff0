//! The store of all keys: one data directory, its lock, the open key logs,
//! the committed offsets, the write-ahead journal, and the sync points and
//! checkpoints that make appends durable.
//!
//! ```text
//! DATA/
//!   LOCK              held with File::try_lock while a store is open
//!   CLEAN             present only between a clean close and the next open
//!   checkpoint        the first journal file still needed (checkpoint.rs)
//!   offsets.journal   committed offsets up to the last checkpoint (offsets.rs)
//!   journal/          the write-ahead journal (journal.rs)
//!     00000000000000000007.wal
//!   logs/<name>/      one directory per key (keyname.rs)
//!     00000000000000000000.log    segments (segment.rs)
//!     00000000000000000000.index
//! ```
//!
//! Durability works in three steps so that a sync never blocks readers:
//! appends and commits are held in memory under the caller's lock;
//! [`Store::prepare_sync`] writes them to a file and returns a [`SyncPlan`];
//! the plan's [`SyncPlan::execute`] runs the fsyncs without any lock;
//! [`Store::complete_sync`] publishes what the plan covered. Readers only
//! ever see published (durable) records and commits.
//!
//! A sync point is one of two kinds:
//! * **journal** (the usual one): every record and commit it covers goes
//!   into one batch of the journal, made durable with one fdatasync of the
//!   journal file however many keys it touches; the records are written to
//!   their segments once it is, and the segments are synced by the next
//!   checkpoint.
//! * **direct**: a sync point that covers one key's records and nothing
//!   else, when they fit in that key's active segment, writes them there and
//!   fdatasyncs that file, as seglog did before the journal: one write and
//!   one fdatasync, where the journal would write every byte twice. The
//!   journal only gets a note (once per key between checkpoints) that the
//!   key's segment may hold records it does not.
//!
//! A checkpoint (checkpoint.rs) rides on a sync point that starts when no
//! other is in flight, and is done before that sync point completes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::log;
use crate::storage::backend::{FileIo, Fs, LockGuard, OpenMode, RealFs};
use crate::storage::checkpoint::{self, CHECKPOINT_FILES_MAX, Job};
use crate::storage::error::{Error, Result};
use crate::storage::format::{FORMAT_VERSION, MESSAGE_BYTES_MAX};
use crate::storage::fsutil;
use crate::storage::journal::{BatchBuilder, JOURNAL_DIR_NAME, JournalWriter};
use crate::storage::journal_recovery::{self, RecoveredJournal};
use crate::storage::keylog::{KeyLog, Touched};
use crate::storage::keyname::{self, FnvHasher, KEY_BYTES_MAX, KEY_FILE_NAME};
use crate::storage::offsets::{Commits, CommittedOffsets, OFFSETS_FILE_NAME};
use crate::storage::recovery::{self, Mode};
pub use crate::storage::retention::{Retention, SegmentInfo};
use crate::storage::segment::SEGMENT_BYTES_LIMIT;
use crate::storage::syncpool::{SyncJob, SyncPool};

/// Name of the lock file in the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// Name of the clean-shutdown marker in the data directory.
pub const CLEAN_FILE_NAME: &str = "CLEAN";
/// Directory holding one subdirectory per key.
pub const LOGS_DIR_NAME: &str = "logs";

/// Default segment size. Segments are not preallocated, so a key with a
/// short log costs one small file whatever this is; the size bounds how much
/// of a key's log recovery re-checks (a few milliseconds at 8 MiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 8 << 20;

/// File descriptors left for everything but open key logs: stdio, the lock,
/// the journal, directories, index files opened for a moment, the files a
/// checkpoint opens to fdatasync (at most `syncpool::SYNC_THREADS` at once)
/// and the caller's own files.
pub const RESERVED_FILES: u64 = 64;

/// Most key logs kept open, whatever the descriptor limit. Each open key
/// holds one descriptor (its active segment), up to two maps and, while it
/// has records not yet durable, their frames; 4,096 keeps that far below
/// the kernel's default map count limit (65,530) and a few MiB of memory.
pub const OPEN_KEYS_MAX: usize = 4096;

/// Fewest key logs kept open by default, for very low descriptor limits.
pub const OPEN_KEYS_MIN: usize = 16;

/// Bytes of records held in memory, over all keys, before an append runs a
/// sync point itself. Records wait in memory until their sync point (they
/// may not reach a segment before their journal batch is durable); a sync
/// point normally comes long before this, which only bounds the memory a
/// caller that never syncs can make the store hold.
pub const PENDING_BYTES_MAX: usize = 64 << 20;

/// The default number of key logs kept open: as many as this process's
/// open-file limit leaves room for, between [`OPEN_KEYS_MIN`] and
/// [`OPEN_KEYS_MAX`]. Keys beyond it are reopened on demand, least recently
/// used first out.
pub fn default_open_keys() -> usize {
    let room = open_file_limit().saturating_sub(RESERVED_FILES);
    usize::try_from(room)
        .unwrap_or(OPEN_KEYS_MAX)
        .clamp(OPEN_KEYS_MIN, OPEN_KEYS_MAX)
}

/// The default checkpoint size: [`checkpoint::CHECKPOINT_BYTES_DEFAULT`],
/// or the number in the `SEGLOG_CHECKPOINT_BYTES` environment variable (for
/// tests that want frequent checkpoints in the node binary).
pub fn default_checkpoint_bytes() -> u64 {
    std::env::var(checkpoint::CHECKPOINT_BYTES_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(checkpoint::CHECKPOINT_BYTES_DEFAULT)
}

/// Below this many files and directories a sync point runs on the calling
/// thread: handing them to the pool would cost more than it saves.
const PARALLEL_SYNC_MIN: usize = 4;

/// Collision counters tried for hashed key names before giving up. A 64-bit
/// hash colliding even once is unlikely; this bounds a lookup all the same.
const HASH_COLLISIONS_MAX: u32 = 64;

/// How a store is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Size at which a segment is sealed and a new one started.
    pub segment_bytes: u64,
    /// Key logs kept open at once (keys with records not yet durable stay
    /// open beyond this until their sync completes).
    pub open_keys_max: usize,
    /// Live journal size at which a checkpoint starts: bounds recovery time
    /// and the disk the journal takes.
    pub checkpoint_bytes: u64,
    /// Age of the oldest uncheckpointed journal batch at which a checkpoint
    /// starts.
    pub checkpoint_age: Duration,
    /// The file system the store lives on: the real one, or a simulated
    /// disk in tests.
    pub fs: Fs,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            fs: RealFs::shared(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            open_keys_max: default_open_keys(),
            checkpoint_bytes: default_checkpoint_bytes(),
            checkpoint_age: checkpoint::CHECKPOINT_AGE_DEFAULT,
        }
    }
}

/// An open key log and when it was last used, for eviction.
struct OpenKey {
    log: KeyLog,
    last_used: u64,
}

/// All keys of one data directory.
pub struct Store {
    /// The file system, shared with every part that touches files.
    fs: Fs,
    dir: PathBuf,
    logs_dir: PathBuf,
    journal_dir: PathBuf,
    config: StoreConfig,
    /// Held for the store's lifetime: the lock is released when it closes.
    _lock: Box<dyn LockGuard>,
    /// Whether the last run ended with a clean close.
    opened_clean: bool,
    /// Whether this run recovers a version 1 store left by a crash: keys the
    /// journal does not mention get the full check of their active segment,
    /// as version 1 recovery did.
    legacy_unclean: bool,
    /// Key logs currently open.
    open: HashMap<String, OpenKey, BuildHasherDefault<FnvHasher>>,
    /// Counter standing in for time in the least-recently-used order.
    clock: u64,
    offsets: CommittedOffsets,
    /// Set when a sync failed: the page cache state is unknown, so every
    /// later write is refused until the store is reopened.
    poisoned: bool,
    /// Threads that run the fdatasyncs of large sync points and checkpoints.
    sync_pool: Arc<SyncPool>,
    /// The journal file batches go to.
    journal: JournalWriter,
    /// Bytes of `journal` known durable: a plan syncs the file when more
    /// was written (its own batch, or one of a plan still in flight).
    journal_synced: u64,
    /// Live journal files before the current one, deleted by the next
    /// checkpoint.
    older_journals: Vec<PathBuf>,
    /// Bytes of the live journal files, current one included.
    older_journal_bytes: u64,
    /// When the first batch since the last checkpoint was written.
    oldest_batch_at: Option<Instant>,
    /// What the live journal held at open and is not yet applied to the
    /// keys' segments.
    recovered: RecoveredJournal,
    /// Keys some live journal file mentions: a direct sync point writes a
    /// note for any other key first, so recovery knows to check it.
    mentioned: HashSet<String>,
    /// Segment files written since the last checkpoint, which it syncs.
    dirty_files: HashSet<PathBuf>,
    /// Per key directory with a segment sealed since the last checkpoint
    /// (or found by recovery since), the `.log` files written since then,
    /// with the generation of the last change: a direct sync point for the
    /// key fdatasyncs them too, since it syncs the active segment only and
    /// recovery trusts a sealed one only up to its first invalid record.
    dirty_sealed: HashMap<PathBuf, (HashSet<PathBuf>, u64)>,
    /// Set by the first sync of any plan that fails, at once, by the thread
    /// that ran it: no plan is confirmed after that, even one whose own
    /// fdatasync succeeded (it may report pages the failed one dropped).
    sync_failed: Arc<AtomicBool>,
    /// Bytes of records written to segments since the last checkpoint:
    /// recovery may scan them all (a key the journal mentions is checked
    /// from its first journaled offset), so they start a checkpoint at the
    /// same size as the journal does.
    dirty_bytes: u64,
    /// Directories that gained entries since they were last fsynced, with
    /// the generation of the last change (a direct sync point that fsyncs
    /// one forgets it only if nothing changed since).
    dirty_dirs: HashMap<PathBuf, u64>,
    /// Counter for `dirty_dirs` generations.
    dir_generation: u64,
    /// Sync plans prepared and not yet completed.
    in_flight: usize,
    /// Bytes of records held in memory over all keys.
    pending_bytes: usize,
    /// Set while a checkpoint is being prepared, so the sync points it may
    /// run itself do not start another.
    checkpointing: bool,
    /// Why checkpoints are off for this run, if a key the journal holds
    /// records for could not be recovered: the journal must keep them.
    checkpoint_blocked: Option<String>,
    /// Set by [`Store::shut_down`]: the store is marked clean and takes no
    /// more writes.
    closed: bool,
}

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
    checkpoint: Option<(Job, Option<usize>)>,
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

    fn sync(&self) -> Result<()> {
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

fn sync_file(file: &Arc<dyn FileIo>, name: &str) -> Result<()> {
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", Path::new(name), e))
}

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

    /// Ends the current journal file with a next-file marker naming `new`
    /// (created and durable), fdatasyncs it, and continues in `new`; the
    /// old file stays live until a checkpoint deletes it. The marker is
    /// durable before any batch goes to the new file: recovery refuses a
    /// journal whose later file holds batches when the earlier one has no
    /// marker naming it.
    fn switch_journal_file(&mut self, new: JournalWriter) -> Result<()> {
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

    /// Deletes a key's directory so that a crash at any point leaves it
    /// whole at its name, or gone from it: renamed to `rm.<name>`, logs/
    /// fsynced (so nothing in it is deleted while a power loss could still
    /// bring the old name back), deleted, and logs/ fsynced again (so no
    /// `rm.` directory outlives the journal entry that explains it).
    fn delete_key_dir(&mut self, dir: &Path) -> Result<()> {
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

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the previous run closed the store cleanly.
    pub fn opened_clean(&self) -> bool {
        self.opened_clean
    }

    /// Number of key logs open now (bounded by `open_keys_max`, plus keys
    /// whose appends await a sync).
    pub fn open_key_count(&self) -> usize {
        self.open.len()
    }

    /// Whether writes are refused because a sync failed (poisoned, or a
    /// sync point that failed has not yet reported back).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned || self.sync_failed.load(Ordering::SeqCst)
    }

    /// Sequence number of the journal file batches go to now: one more for
    /// every checkpoint since the store was created.
    pub fn journal_seq(&self) -> u64 {
        self.journal.seq()
    }

    /// Appends `payload` to `key`'s log and returns its offset. The record is
    /// durable, and visible to readers, once a sync point has covered it.
    pub fn append(&mut self, key: &str, payload: &[u8]) -> Result<u64> {
        self.append_all(key, &[payload])
    }

    /// Appends every one of `payloads` to `key`'s log, at consecutive
    /// offsets, and returns the first (the next offset if there are none).
    /// All or none: every check, and the sync that bounds the memory
    /// records wait in, comes before the first record is appended, so an
    /// error means none was. Durable and visible like [`Store::append`].
    pub fn append_all(&mut self, key: &str, payloads: &[&[u8]]) -> Result<u64> {
        self.check_open()?;
        self.check_not_poisoned()?;
        check_key(key)?;
        if let Some(bad) = payloads
            .iter()
            .find(|payload| payload.is_empty() || payload.len() > MESSAGE_BYTES_MAX)
        {
            return Err(Error::BadMessageSize {
                len: bad.len(),
                max: MESSAGE_BYTES_MAX,
            });
        }
        if payloads.is_empty() {
            return self.next_offset(key);
        }
        if self.pending_bytes > PENDING_BYTES_MAX {
            // Bounds the memory records wait in (by at most one call's
            // records past it).
            self.sync()?;
        }
        let log = self.key_log(key, true)?.expect("created on demand");
        let first = log.next_offset();
        let before = log.pending_bytes();
        for payload in payloads {
            log.append(payload);
        }
        let grown = log.pending_bytes() - before;
        self.pending_bytes += grown;
        Ok(first)
    }

    /// Appends `payload` to `key`'s log at exactly `offset`, which must be the
    /// offset the next append would get ([`Store::next_offset`]): how a
    /// replica copies a log whose offsets another store assigned. Durable and
    /// visible after a sync point, like [`Store::append`].
    pub fn append_at(&mut self, key: &str, offset: u64, payload: &[u8]) -> Result<()> {
        let next = self.next_offset(key)?;
        if offset != next {
            return Err(Error::NotNextOffset {
                expected: next,
                got: offset,
            });
        }
        let appended = self.append(key, payload)?;
        debug_assert_eq!(appended, offset, "append took the next offset");
        Ok(())
    }

    /// The offset the next append to `key` gets: one past every record
    /// appended so far, durable or not (0 for no log).
    pub fn next_offset(&mut self, key: &str) -> Result<u64> {
        check_key(key)?;
        Ok(self.key_log(key, false)?.map_or(0, |log| log.next_offset()))
    }

    /// Every key that has a log in this store, in no particular order. Reads
    /// the `logs/` directory (and the `KEY` file of each hashed name), so it
    /// costs one directory listing: for start-up, not for every request.
    /// Keys whose records are so far only in the journal are included.
    pub fn keys(&self) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let entries = self
            .fs
            .list(&self.logs_dir)
            .map_err(|e| Error::io("list", &self.logs_dir, e))?;
        for entry in entries {
            let Some(name) = entry.name.to_str() else {
                continue;
            };
            match keyname::decode_name(name) {
                Some(keyname::DecodedName::Key(key)) => keys.push(key),
                Some(keyname::DecodedName::Hashed) => {
                    let key_file = self.logs_dir.join(name).join(KEY_FILE_NAME);
                    let bytes = self
                        .fs
                        .read(&key_file)
                        .map_err(|e| Error::io("read", &key_file, e))?;
                    let key = String::from_utf8(bytes)
                        .map_err(|_| Error::corrupt(&key_file, 0, "key is not UTF-8"))?;
                    keys.push(key);
                }
                // Temporary directories of a hashed key being created, and
                // anything seglog did not write.
                None => {}
            }
        }
        let listed: HashSet<&String> = keys.iter().collect();
        let missing: Vec<String> = self
            .recovered
            .keys
            .iter()
            .filter(|(key, at)| {
                !listed.contains(key)
                    && at
                        .iter()
                        .any(|entry| matches!(entry, journal_recovery::EntryAt::Records { .. }))
            })
            .map(|(key, _)| key.clone())
            .collect();
        keys.extend(missing);
        Ok(keys)
    }

    /// Delivers the durable records of `key` from offset `from` on to `visit`,
    /// which returns false to stop. A key with no log delivers nothing.
    pub fn read(
        &mut self,
        key: &str,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<()> {
        check_key(key)?;
        match self.key_log(key, false)? {
            Some(log) => log.read(from, visit),
            None => Ok(()),
        }
    }

    /// The offset after the last durable record of `key` (0 for no log).
    pub fn durable_next_offset(&mut self, key: &str) -> Result<u64> {
        check_key(key)?;
        Ok(self
            .key_log(key, false)?
            .map_or(0, |log| log.durable_next_offset()))
    }

    /// First offset the key still has (0 for a key with no log or never
    /// truncated). Reads from below it deliver from it on.
    pub fn log_start(&mut self, key: &str) -> Result<u64> {
        check_key(key)?;
        Ok(self.key_log(key, false)?.map_or(0, |log| log.log_start()))
    }

    /// The key's segments, oldest first, the active one last (empty for no
    /// log). Sizes and times are read from the files now.
    pub fn segments(&mut self, key: &str) -> Result<Vec<SegmentInfo>> {
        check_key(key)?;
        let Some(log) = self.key_log(key, false)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for facts in log.segments() {
            let path = &facts.log_path;
            let meta = self.fs.stat(path).map_err(|e| Error::io("stat", path, e))?;
            let modified = meta.modified.ok_or_else(|| {
                let source = std::io::Error::other("the file system keeps none");
                Error::io("read the modification time of", path, source)
            })?;
            out.push(SegmentInfo {
                base: facts.base,
                end: facts.end,
                bytes: meta.len,
                modified,
                sealed: facts.sealed,
            });
        }
        Ok(out)
    }

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

    /// Records that `key` is processed up to `offset`; durable after the next
    /// sync point. Offsets only move forward.
    pub fn commit(&mut self, key: &str, offset: u64) -> Result<()> {
        self.check_open()?;
        self.check_not_poisoned()?;
        check_key(key)?;
        self.offsets.commit(key, offset);
        Ok(())
    }

    /// The durable committed offset of `key`.
    pub fn committed(&self, key: &str) -> Option<u64> {
        self.offsets.get(key)
    }

    /// Every durable committed offset, in no particular order.
    pub fn committed_offsets(&self) -> impl Iterator<Item = (&str, u64)> {
        self.offsets.iter()
    }

    /// Number of keys with a durable committed offset.
    pub fn committed_count(&self) -> usize {
        self.offsets.len()
    }

    /// Writes what is held in memory to a file and returns what must be
    /// synced to make all appends and commits so far durable. Every plan must
    /// be passed to [`Store::complete_sync`]: a checkpoint waits for every
    /// plan in flight.
    pub fn prepare_sync(&mut self) -> Result<SyncPlan> {
        self.prepare(false, None)
    }

    fn prepare(&mut self, force_checkpoint: bool, steps: Option<usize>) -> Result<SyncPlan> {
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

    fn collect_sync_plan(
        &mut self,
        force_checkpoint: bool,
        steps: Option<usize>,
    ) -> Result<SyncPlan> {
        let mut plan = self.empty_plan();
        if self.in_flight == 0
            && !self.checkpointing
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
        if unclaimed.len() == 1
            && self.in_flight == 0
            && plan.checkpoint.is_none()
            && !self.offsets.has_pending()
            && !self.open[&unclaimed[0]].log.write_needs_new_segment()
        {
            let key = unclaimed.into_iter().next().expect("one key");
            return self.direct_plan(plan, key);
        }
        let mut builder = self.journal.builder();
        for key in &unclaimed {
            let open = self.open.get_mut(key).expect("listed above");
            let (first, frames) = open.log.claim_for_journal();
            builder.add_records(key, first, frames);
            plan.keys.push((key.clone(), open.log.next_offset()));
            self.mentioned.insert(key.clone());
        }
        let commits = self.offsets.take_pending();
        let mut sorted: Vec<(&String, &u64)> = commits.iter().collect();
        sorted.sort();
        for (key, offset) in sorted {
            builder.add_commit(key, *offset);
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
    /// needs) synced by the plan.
    fn direct_plan(&mut self, mut plan: SyncPlan, key: String) -> Result<SyncPlan> {
        let open = self.open.get_mut(&key).expect("an open key");
        if !self.mentioned.contains(&key) {
            // Written (not synced) before the segment is: a crash that
            // keeps the segment's bytes keeps this note, so recovery checks
            // and syncs the key.
            let mut builder = self.journal.builder();
            builder.add_direct(&key, open.log.published_end());
            self.journal.append(builder)?;
            self.oldest_batch_at.get_or_insert_with(Instant::now);
            self.mentioned.insert(key.clone());
            // And synced with it (once per key between checkpoints): a
            // note whose writeback failed unnoticed would let a restart
            // without a reboot take the key for one the journal does not
            // mention, and serve its records without rewriting them.
            plan.files.push((
                Arc::clone(self.journal.file()),
                self.journal.path().display().to_string(),
            ));
            plan.journal_len = self.journal.len();
        }
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

    fn checkpoint_due(&self) -> bool {
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
    fn start_checkpoint(&mut self, steps: Option<usize>) -> Result<Option<Job>> {
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
        let old_seq = self.journal.seq();
        // The marker written next to the old file takes one batch number.
        let new = JournalWriter::create(
            &*self.fs,
            &self.journal_dir,
            old_seq + 1,
            self.journal.next_batch() + 1,
        )?;
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
            if let Some(write) = &job.offsets {
                self.offsets.checkpointed(write)?;
            }
            self.older_journals.clear();
            self.older_journal_bytes = 0;
            log::info(format_args!(
                "checkpoint: journal files before {} deleted, {} segment files synced",
                job.first_live,
                job.files.len()
            ));
        }
        Ok(())
    }

    /// One whole sync point: prepare, execute, complete.
    pub fn sync(&mut self) -> Result<()> {
        let plan = self.prepare_sync()?;
        let executed = plan.execute();
        self.complete_sync(plan, executed)
    }

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

    /// Refuses a write once [`Store::shut_down`] has run.
    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Busy("the store is closed".into()));
        }
        Ok(())
    }

    /// Refuses a write once the store is poisoned, or once any sync failed
    /// (the thread that ran it sets `sync_failed` at once, before the sync
    /// point's outcome reaches the store): a write accepted then could only
    /// ever get an error that may or may not have taken effect.
    fn check_not_poisoned(&mut self) -> Result<()> {
        if self.sync_failed.load(Ordering::SeqCst) {
            self.poison(&Error::Poisoned);
        }
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    fn poison(&mut self, error: &Error) {
        if !self.poisoned {
            log::warn(format_args!(
                "store poisoned, refusing writes until reopened: {error}"
            ));
        }
        self.poisoned = true;
    }

    /// Adds what a write to a key's segments touched to what the next
    /// checkpoint syncs.
    fn note_touched(&mut self, key_dir: &Path, touched: Touched) {
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

    fn mark_dir_dirty(&mut self, dir: PathBuf) {
        self.dir_generation += 1;
        self.dirty_dirs.insert(dir, self.dir_generation);
    }

    /// The open log of `key`, opening (and with `create`, creating) it. A
    /// key the recovered journal holds records for is recovered against
    /// them first, its directory created if a crash lost it.
    fn key_log(&mut self, key: &str, create: bool) -> Result<Option<&mut KeyLog>> {
        self.clock += 1;
        let now = self.clock;
        if !self.open.contains_key(key) {
            let taken = self.recovered.take(key);
            // A key the journal holds records or a direct note for has a
            // log even if a crash lost its directory (recovery then replays
            // it, or refuses what cannot be); a log-start entry alone does
            // not make one.
            let create = create
                || taken.as_ref().is_some_and(|(files, at)| {
                    !journal_recovery::entries(files, at).entries.is_empty()
                });
            let dir = match self.key_dir(key, create) {
                Ok(Some(dir)) => dir,
                Ok(None) => return Ok(None),
                Err(e) => {
                    if let Some((_, entries)) = taken {
                        self.recovered.put_back(key, entries);
                    }
                    return Err(e);
                }
            };
            // Keys the journal does not mention were synced whole by the
            // last checkpoint (or closed cleanly): the quick check. A
            // version 1 store after a crash gets the full one.
            let mode = if self.legacy_unclean {
                Mode::Unclean
            } else {
                Mode::Clean
            };
            let opened = match &taken {
                Some((files, at)) => {
                    let found = journal_recovery::entries(files, at);
                    // Segments below a journaled log start go first: what a
                    // crash left of them is never served or checked.
                    recovery::remove_below(&*self.fs, &dir, found.log_start).and_then(|_| {
                        KeyLog::open(
                            Arc::clone(&self.fs),
                            dir.clone(),
                            mode,
                            self.config.segment_bytes,
                            &found.entries,
                            found.log_start,
                        )
                    })
                }
                None => KeyLog::open(
                    Arc::clone(&self.fs),
                    dir.clone(),
                    mode,
                    self.config.segment_bytes,
                    &[],
                    0,
                ),
            };
            let (log, touched) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    if let Some((_, entries)) = taken {
                        self.recovered.put_back(key, entries);
                    }
                    return Err(e);
                }
            };
            self.note_touched(&dir, touched);
            if taken.is_some() {
                // The key's own directory entry may be as unsynced as its
                // files (`KeyLog::open` reports those).
                self.mark_dir_dirty(self.logs_dir.clone());
            }
            // Make room first, so the key being opened is never the one evicted.
            self.evict_to(self.config.open_keys_max - 1);
            if self.open.len() >= self.config.open_keys_max {
                // Every open key awaits a sync: run one now, which bounds
                // open files even when one sync point would cover more keys
                // than may be open.
                self.sync()?;
                self.evict_to(self.config.open_keys_max - 1);
            }
            self.open.insert(
                key.to_string(),
                OpenKey {
                    log,
                    last_used: now,
                },
            );
        }
        let open = self.open.get_mut(key).expect("opened above");
        open.last_used = now;
        Ok(Some(&mut open.log))
    }

    /// Closes least recently used keys beyond the limit. Keys with records
    /// that are not durable yet stay open: their sync must publish them.
    fn evict_to(&mut self, open_keys_max: usize) {
        while self.open.len() > open_keys_max {
            let victim = self
                .open
                .iter()
                .filter(|(_, open)| !open.log.has_pending())
                .min_by_key(|(_, open)| open.last_used)
                .map(|(key, _)| key.clone());
            match victim {
                Some(key) => {
                    self.open.remove(&key);
                }
                None => break,
            }
        }
    }

    /// The directory of `key`'s log, creating it with `create`.
    fn key_dir(&mut self, key: &str, create: bool) -> Result<Option<PathBuf>> {
        if let Some(name) = keyname::escaped_name(key) {
            let dir = self.logs_dir.join(name);
            if fsutil::is_dir(&*self.fs, &dir)? {
                return Ok(Some(dir));
            }
            if !create {
                return Ok(None);
            }
            self.fs
                .create_dir(&dir)
                .map_err(|e| Error::io("create", &dir, e))?;
            self.mark_dir_dirty(self.logs_dir.clone());
            return Ok(Some(dir));
        }
        // Every slot is looked at, not only up to the first free one: a
        // removed key leaves a gap, and a colliding key after it must still
        // be found (rather than started again in the gap). A miss costs
        // HASH_COLLISIONS_MAX failed reads, for long keys only.
        let mut free = None;
        for n in 0..HASH_COLLISIONS_MAX {
            let dir = self.logs_dir.join(keyname::hashed_name(key, n));
            let key_file = dir.join(KEY_FILE_NAME);
            match self.fs.read(&key_file) {
                Ok(stored) if stored == key.as_bytes() => return Ok(Some(dir)),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    free.get_or_insert(dir);
                }
                Err(e) => return Err(Error::io("read", &key_file, e)),
            }
        }
        if let Some(dir) = free {
            if !create {
                return Ok(None);
            }
            self.create_hashed_dir(&dir, key)?;
            return Ok(Some(dir));
        }
        Err(Error::corrupt(
            &self.logs_dir,
            0,
            format!(
                "more than {HASH_COLLISIONS_MAX} key directories share the hash of a {}-byte \
                 key: their KEY files are damaged",
                key.len()
            ),
        ))
    }

    /// Creates an `h.` key directory whole: built under a temporary name with
    /// its durable `KEY` file, then renamed into place, so a directory with a
    /// hashed name always names its key.
    fn create_hashed_dir(&mut self, dir: &Path, key: &str) -> Result<()> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("hashed names are ASCII");
        let tmp = self.logs_dir.join(format!("tmp.{name}"));
        let fs = &*self.fs;
        if fsutil::exists(fs, &tmp)? {
            fs.remove_dir_all(&tmp)
                .map_err(|e| Error::io("remove", &tmp, e))?;
        }
        fs.create_dir(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let key_file = tmp.join(KEY_FILE_NAME);
        fsutil::write_whole(fs, &key_file, key.as_bytes(), true)?;
        fsutil::sync_dir(fs, &tmp)?;
        fs.rename(&tmp, dir)
            .map_err(|e| Error::io("rename to", dir, e))?;
        self.mark_dir_dirty(self.logs_dir.clone());
        Ok(())
    }
}

/// The soft limit on open files of this process, read from
/// `/proc/self/limits` (no `unsafe` needed); 256 where it cannot be read.
fn open_file_limit() -> u64 {
    const FALLBACK: u64 = 256;
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return FALLBACK;
    };
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| match soft {
            "unlimited" => Some(u64::MAX),
            number => number.parse().ok(),
        })
        .unwrap_or(FALLBACK)
}

/// Rejects keys longer than [`KEY_BYTES_MAX`].
fn check_key(key: &str) -> Result<()> {
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::KeyTooLong {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}
