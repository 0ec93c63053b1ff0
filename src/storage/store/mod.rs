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
//! A checkpoint (`storage/checkpoint.rs`, started by `checkpointing.rs`)
//! rides on a sync point that starts when no other is in flight, and is
//! done before that sync point completes.
//!
//! # Layout
//! - `mod.rs` (this file): the [`Store`] itself, its configuration and
//!   limits, and the guards every write passes (closed, poisoned, key length).
//! - `open.rs`: opening a store step by step (lock, `CLEAN` mark, journal
//!   recovery or creation, upgrade of an older journal, interrupted
//!   removals) and closing it cleanly.
//! - `records.rs`: appends, reads, commits and what a key's log looks like
//!   from outside.
//! - `removal.rs`: deleting records: retention's truncation and key
//!   removal, each durable in the journal before a file goes.
//! - `sync_point.rs`: [`SyncPlan`] and the three steps of a sync point
//!   (prepare, execute, complete), journal or direct, and what the next
//!   checkpoint must sync.
//! - `checkpointing.rs`: when a checkpoint rides on a sync point, the
//!   journal rotation, and the lists it takes.
//! - `key_cache.rs`: the open key logs, least recently used out, and the
//!   directory of each key (escaped or hashed names).
//! - `views.rs`: the readers of one run, which a reopen in place waits for
//!   before recovery may cut a file they map.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::log;
use crate::storage::backend::{Fs, LockGuard, RealFs};
use crate::storage::checkpoint;
use crate::storage::error::{Error, Result};
use crate::storage::journal::JournalWriter;
use crate::storage::journal_recovery::RecoveredJournal;
use crate::storage::keyname::{FnvHasher, KEY_BYTES_MAX};
use crate::storage::offsets::CommittedOffsets;
pub use crate::storage::retention::{Retention, SegmentInfo};
use crate::storage::syncpool::SyncPool;

mod checkpointing;
mod key_cache;
mod open;
mod records;
mod removal;
mod sync_point;
mod views;

pub use checkpointing::Checkpoint;
use key_cache::OpenKey;
pub use sync_point::SyncPlan;
use views::ViewGate;
pub use views::{VIEW_DRAIN_WAIT, ViewTicket};

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
    /// `poisoned`, readable without the store's lock ([`PoisonFlag`]).
    /// This flag and `sync_failed` are carried over by [`Store::reopen`],
    /// so a handle taken once follows every run.
    poisoned_flag: Arc<AtomicBool>,
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
    /// Set inside [`Store::together`]: appends run no sync point of their
    /// own, so that what the span writes becomes durable in one.
    together: bool,
    /// Set while a checkpoint is being prepared, so the sync points it may
    /// run itself do not start another.
    checkpointing: bool,
    /// Set while a checkpoint detached from its sync point runs on its own
    /// thread ([`Store::detach_checkpoint`] until
    /// [`Store::finish_checkpoint`]): no other checkpoint starts, and the
    /// store is not reopened, meanwhile.
    checkpoint_running: bool,
    /// Why checkpoints are off for this run, if a key the journal holds
    /// records for could not be recovered: the journal must keep them.
    checkpoint_blocked: Option<String>,
    /// Set by [`Store::shut_down`]: the store is marked clean and takes no
    /// more writes.
    closed: bool,
    /// The views of this run still read ([`Store::read_view`]), which a
    /// reopen in place waits for (`views.rs`).
    views: Arc<ViewGate>,
}

impl Store {
    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size at which a segment is sealed (`StoreConfig::segment_bytes`).
    pub fn segment_bytes(&self) -> u64 {
        self.config.segment_bytes
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

    /// A handle that says whether the store is poisoned without taking its
    /// lock, through every later reopen.
    pub fn poison_flag(&self) -> PoisonFlag {
        PoisonFlag {
            poisoned: Arc::clone(&self.poisoned_flag),
            sync_failed: Arc::clone(&self.sync_failed),
        }
    }

    /// Sequence number of the journal file batches go to now: one more for
    /// every checkpoint since the store was created.
    pub fn journal_seq(&self) -> u64 {
        self.journal.seq()
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

    /// Refuses every later write until the store is reopened (logging why,
    /// once).
    fn poison(&mut self, error: &Error) {
        if !self.poisoned {
            log::warn(format_args!(
                "store poisoned, refusing writes until reopened: {error}"
            ));
        }
        self.poisoned = true;
        self.poisoned_flag.store(true, Ordering::SeqCst);
    }
}

/// Whether a store is poisoned, read without its lock: a reopen holds the
/// lock for as long as recovery takes (seconds on a large journal, longer
/// on a disk that hangs), and neither a health probe nor a write that would
/// be refused anyway should wait for it. Taken with [`Store::poison_flag`].
#[derive(Clone, Debug)]
pub struct PoisonFlag {
    poisoned: Arc<AtomicBool>,
    sync_failed: Arc<AtomicBool>,
}

impl PoisonFlag {
    /// What [`Store::is_poisoned`] would say; set from the failure on (or
    /// at once, for a sync that fails on a thread without the lock) until
    /// a reopen succeeds.
    pub fn is_set(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst) || self.sync_failed.load(Ordering::SeqCst)
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
