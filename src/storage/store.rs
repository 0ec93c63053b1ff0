//! The store of all keys: one data directory, its lock, the open key logs,
//! the committed offsets, and the sync points that make appends durable.
//!
//! ```text
//! DATA/
//!   LOCK              held with File::try_lock while a store is open
//!   CLEAN             present only between a clean close and the next open
//!   offsets.journal   committed offsets (offsets.rs)
//!   logs/<name>/      one directory per key (keyname.rs)
//!     00000000000000000000.log    segments (segment.rs)
//!     00000000000000000000.index
//! ```
//!
//! Durability works in three steps so that a sync never blocks readers:
//! appends and commits are buffered under the caller's lock;
//! [`Store::prepare_sync`] writes the buffers to the files and returns a
//! [`SyncPlan`]; the plan's [`SyncPlan::execute`] runs the fdatasyncs without
//! any lock; [`Store::complete_sync`] publishes what the plan covered.
//! Readers only ever see published (durable) records and commits.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasherDefault;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::error::{Error, Result};
use crate::storage::format::MESSAGE_BYTES_MAX;
use crate::storage::fsutil;
use crate::storage::keylog::{KeyLog, SyncTarget};
use crate::storage::keyname::{self, FnvHasher, KEY_BYTES_MAX, KEY_FILE_NAME};
use crate::storage::offsets::CommittedOffsets;
use crate::storage::recovery::Mode;
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
/// of a key's log an unclean restart re-checks (a few milliseconds at 8 MiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 8 << 20;

/// File descriptors left for everything but open key logs: stdio, the lock,
/// the journal, directories and index files opened for a moment, and the
/// caller's own files.
pub const RESERVED_FILES: u64 = 64;

/// Most key logs kept open, whatever the descriptor limit. Each open key
/// holds one descriptor (its active segment), up to two maps and, while it
/// has unsynced appends, a write buffer; 4,096 keeps that far below the
/// kernel's default map count limit (65,530) and a few MiB of memory.
pub const OPEN_KEYS_MAX: usize = 4096;

/// Fewest key logs kept open by default, for very low descriptor limits.
pub const OPEN_KEYS_MIN: usize = 16;

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

/// Below this many files and directories a sync point runs on the calling
/// thread: handing them to the pool would cost more than it saves.
const PARALLEL_SYNC_MIN: usize = 4;

/// Collision counters tried for hashed key names before giving up. A 64-bit
/// hash colliding even once is unlikely; this bounds a lookup all the same.
const HASH_COLLISIONS_MAX: u32 = 64;

/// How a store is set up.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Size at which a segment is sealed and a new one started.
    pub segment_bytes: u64,
    /// Key logs kept open at once (keys with unsynced appends stay open
    /// beyond this until their sync completes).
    pub open_keys_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            open_keys_max: default_open_keys(),
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
    dir: PathBuf,
    logs_dir: PathBuf,
    config: StoreConfig,
    /// Held for the store's lifetime: the lock is released when it closes.
    _lock: File,
    /// Whether the last run ended with a clean close.
    opened_clean: bool,
    /// Key logs currently open.
    open: HashMap<String, OpenKey, BuildHasherDefault<FnvHasher>>,
    /// Counter standing in for time in the least-recently-used order.
    clock: u64,
    offsets: CommittedOffsets,
    /// Set when a sync failed: the page cache state is unknown, so every
    /// later write is refused until the store is reopened.
    poisoned: bool,
    /// Key directories created in `logs/`, counted (see `KeyLog::dir_changes`).
    logs_dir_changes: u64,
    /// How many of `logs_dir_changes` a completed sync point covered.
    logs_dir_synced: u64,
    /// Threads that run the fdatasyncs of large sync points.
    sync_pool: Arc<SyncPool>,
}

/// What one sync point covers: files to fdatasync and directories to fsync,
/// taken under the store's lock and executed without it.
pub struct SyncPlan {
    /// The store's pool of sync threads.
    pool: Arc<SyncPool>,
    files: Vec<(Arc<File>, String)>,
    dirs: BTreeSet<PathBuf>,
    /// Per key, what becomes durable.
    keys: Vec<(String, SyncTarget)>,
    /// The creation count of `logs/` the plan covers.
    logs_dir_changes: u64,
    /// The commits the plan makes durable.
    offsets: Option<HashMap<String, u64>>,
}

impl SyncPlan {
    /// The directories the plan fsyncs.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(PathBuf::as_path)
    }

    /// Number of appended-to keys the plan covers.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// fdatasyncs every file and fsyncs every directory of the plan, many
    /// at once when there are many (see `syncpool.rs`).
    pub fn execute(&self) -> Result<()> {
        let count = self.files.len() + self.dirs.len();
        if count < PARALLEL_SYNC_MIN {
            for (file, name) in &self.files {
                sync_file(file, name)?;
            }
            return self.dirs.iter().try_for_each(|dir| fsutil::sync_dir(dir));
        }
        let mut jobs: Vec<SyncJob> = Vec::with_capacity(count);
        for (file, name) in &self.files {
            let (file, name) = (Arc::clone(file), name.clone());
            jobs.push(Box::new(move || sync_file(&file, &name)));
        }
        for dir in &self.dirs {
            let dir = dir.clone();
            jobs.push(Box::new(move || fsutil::sync_dir(&dir)));
        }
        self.pool.run_all(jobs)
    }
}

fn sync_file(file: &File, name: &str) -> Result<()> {
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", Path::new(name), e))
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, taking its lock.
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
        fsutil::create_dir_all_durably(dir)?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: lock_path }),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        let logs_dir = dir.join(LOGS_DIR_NAME);
        if !logs_dir.is_dir() {
            fs::create_dir_all(&logs_dir).map_err(|e| Error::io("create", &logs_dir, e))?;
            fsutil::sync_dir(dir)?;
        }
        let clean_path = dir.join(CLEAN_FILE_NAME);
        let opened_clean = clean_path.exists();
        if opened_clean {
            // Gone before the first write, so a crash from now on is seen as unclean.
            fs::remove_file(&clean_path).map_err(|e| Error::io("remove", &clean_path, e))?;
            fsutil::sync_dir(dir)?;
        } else {
            // A kill -9 leaves written but unsynced records, commits and
            // directory entries in the page cache, where recovery would find
            // them valid and serve them. One syncfs makes all of them durable
            // before anything is read: cheaper than a sync per key.
            fsutil::sync_file_system(dir)?;
        }
        let offsets = CommittedOffsets::open(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            logs_dir,
            config,
            _lock: lock,
            opened_clean,
            open: HashMap::default(),
            clock: 0,
            offsets,
            poisoned: false,
            logs_dir_changes: 0,
            logs_dir_synced: 0,
            sync_pool: Arc::default(),
        })
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

    /// Whether a failed sync has poisoned the store.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Appends `payload` to `key`'s log and returns its offset. The record is
    /// durable, and visible to readers, once a sync point has covered it.
    pub fn append(&mut self, key: &str, payload: &[u8]) -> Result<u64> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        check_key(key)?;
        if payload.is_empty() || payload.len() > MESSAGE_BYTES_MAX {
            return Err(Error::BadMessageSize {
                len: payload.len(),
                max: MESSAGE_BYTES_MAX,
            });
        }
        let log = self.key_log(key, true)?.expect("created on demand");
        let result = log.append(payload);
        if let Err(e) = &result {
            self.poison(e);
        }
        result
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
    pub fn keys(&self) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let entries =
            fs::read_dir(&self.logs_dir).map_err(|e| Error::io("list", &self.logs_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.logs_dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match keyname::decode_name(name) {
                Some(keyname::DecodedName::Key(key)) => keys.push(key),
                Some(keyname::DecodedName::Hashed) => {
                    let key_file = entry.path().join(KEY_FILE_NAME);
                    let bytes = fs::read(&key_file).map_err(|e| Error::io("read", &key_file, e))?;
                    let key = String::from_utf8(bytes)
                        .map_err(|_| Error::corrupt(&key_file, 0, "key is not UTF-8"))?;
                    keys.push(key);
                }
                // Temporary directories of a hashed key being created, and
                // anything seglog did not write.
                None => {}
            }
        }
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

    /// Records that `key` is processed up to `offset`; durable after the next
    /// sync point. Offsets only move forward.
    pub fn commit(&mut self, key: &str, offset: u64) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
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

    /// Writes every buffer to its file and returns what must be synced to
    /// make all appends and commits so far durable.
    pub fn prepare_sync(&mut self) -> Result<SyncPlan> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let result = self.collect_sync_plan();
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    fn collect_sync_plan(&mut self) -> Result<SyncPlan> {
        let mut plan = SyncPlan {
            pool: Arc::clone(&self.sync_pool),
            files: Vec::new(),
            dirs: BTreeSet::new(),
            keys: Vec::new(),
            logs_dir_changes: self.logs_dir_changes,
            offsets: None,
        };
        for (key, open) in &mut self.open {
            if !open.log.has_pending() {
                continue;
            }
            open.log.flush()?;
            if let Some(target) = open.log.sync_target() {
                plan.files.push((
                    Arc::clone(&target.file),
                    target.log_path.display().to_string(),
                ));
                if let Some((dir, _)) = &target.dir {
                    plan.dirs.insert(dir.clone());
                }
                plan.keys.push((key.clone(), target));
            }
        }
        if self.logs_dir_changes > self.logs_dir_synced {
            plan.dirs.insert(self.logs_dir.clone());
        }
        if let Some((file, commits)) = self.offsets.prepare_sync()? {
            plan.files
                .push((file, self.offsets.path().display().to_string()));
            plan.offsets = Some(commits);
        }
        Ok(plan)
    }

    /// Publishes what `plan` covered if its execution succeeded; poisons the
    /// store if it failed.
    pub fn complete_sync(&mut self, plan: SyncPlan, executed: Result<()>) -> Result<()> {
        if let Err(e) = executed {
            self.poison(&e);
            return Err(e);
        }
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        for (key, target) in &plan.keys {
            if let Some(open) = self.open.get_mut(key) {
                open.log.mark_synced(target);
            }
        }
        self.logs_dir_synced = self.logs_dir_synced.max(plan.logs_dir_changes);
        if let Some(commits) = plan.offsets {
            self.offsets.complete_sync(commits);
        }
        self.evict_to(self.config.open_keys_max);
        Ok(())
    }

    /// One whole sync point: prepare, execute, complete.
    pub fn sync(&mut self) -> Result<()> {
        let plan = self.prepare_sync()?;
        let executed = plan.execute();
        self.complete_sync(plan, executed)
    }

    /// Syncs everything and marks the shutdown clean, so the next open skips
    /// the full check of active segments.
    pub fn close(mut self) -> Result<()> {
        self.sync()?;
        let clean_path = self.dir.join(CLEAN_FILE_NAME);
        let mut file =
            File::create(&clean_path).map_err(|e| Error::io("create", &clean_path, e))?;
        file.write_all(b"seglog closed cleanly\n")
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", &clean_path, e))?;
        fsutil::sync_dir(&self.dir)
    }

    fn poison(&mut self, error: &Error) {
        if !self.poisoned {
            eprintln!("seglog: store poisoned, refusing writes until reopened: {error}");
        }
        self.poisoned = true;
    }

    /// The open log of `key`, opening (and with `create`, creating) it.
    fn key_log(&mut self, key: &str, create: bool) -> Result<Option<&mut KeyLog>> {
        self.clock += 1;
        let now = self.clock;
        if !self.open.contains_key(key) {
            let Some(dir) = self.key_dir(key, create)? else {
                return Ok(None);
            };
            // The first open of a key after an unclean stop checks its whole
            // active segment; keys reopened later by this process are
            // closed cleanly (evicted only once durable) but are checked the
            // same way, which costs at most one segment.
            let mode = if self.opened_clean {
                Mode::Clean
            } else {
                Mode::Unclean
            };
            let log = KeyLog::open(dir, mode, self.config.segment_bytes)?;
            // Make room first, so the key being opened is never the one evicted.
            self.evict_to(self.config.open_keys_max - 1);
            if self.open.len() >= self.config.open_keys_max {
                // Every open key awaits a sync: run one now, which bounds
                // open files even when one sync point would cover more keys
                // than may be open. Readers may see these records before
                // their writers are answered; they are durable by then: this
                // plan fsyncs every directory whose creation no completed
                // plan has covered, including those of a plan in flight.
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

    /// Closes least recently used keys beyond the limit. Keys with appends
    /// that are not durable yet stay open: their durable point must be
    /// published by the sync that covers them.
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
            if dir.is_dir() {
                return Ok(Some(dir));
            }
            if !create {
                return Ok(None);
            }
            fs::create_dir(&dir).map_err(|e| Error::io("create", &dir, e))?;
            self.logs_dir_changes += 1;
            return Ok(Some(dir));
        }
        for n in 0..HASH_COLLISIONS_MAX {
            let dir = self.logs_dir.join(keyname::hashed_name(key, n));
            let key_file = dir.join(KEY_FILE_NAME);
            match fs::read(&key_file) {
                Ok(stored) if stored == key.as_bytes() => return Ok(Some(dir)),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    self.create_hashed_dir(&dir, key)?;
                    return Ok(Some(dir));
                }
                Err(e) => return Err(Error::io("read", &key_file, e)),
            }
        }
        Err(Error::Config(format!(
            "more than {HASH_COLLISIONS_MAX} keys share the hash of a {}-byte key",
            key.len()
        )))
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
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let key_file = tmp.join(KEY_FILE_NAME);
        let mut file = File::create(&key_file).map_err(|e| Error::io("create", &key_file, e))?;
        file.write_all(key.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write", &key_file, e))?;
        fsutil::sync_dir(&tmp)?;
        fs::rename(&tmp, dir).map_err(|e| Error::io("rename to", dir, e))?;
        self.logs_dir_changes += 1;
        Ok(())
    }
}

/// The soft limit on open files of this process, read from
/// `/proc/self/limits` (no `unsafe` needed); 256 where it cannot be read.
fn open_file_limit() -> u64 {
    const FALLBACK: u64 = 256;
    let Ok(limits) = fs::read_to_string("/proc/self/limits") else {
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
