//! Free-space admission: writes are refused while the file system of the
//! data directory has less free space than a floor, *before* the disk is
//! full, and taken again by themselves once space is back above the floor
//! plus a margin.
//!
//! A disk that fills up under the store makes a write or a sync fail, and
//! a failed sync poisons the store until it is reopened
//! (`segment-format.md`, "Durability and visibility"), so the only way to
//! keep serving through a full disk is never to let the store meet one:
//! the front ends ask [`Space::admits`] before they apply a write and
//! refuse it with a definite error while it says no. Reads go on.
//!
//! The free space comes from `statvfs` (the space an unprivileged process
//! may use), read every [`CHECK_INTERVAL`] by a thread of its own, and by
//! a write itself when the last read is older than [`WRITE_FRESHNESS`], so
//! space taken by another process is seen within that time of writing.
//! Between two reads, every write admitted lowers the estimate by what it
//! will cost on disk, so a burst of writes is refused at the floor rather
//! than after the next read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::log;

/// How often the free space is read. Reading it costs one `statvfs`; at
/// 100 ms writes resume well within the 2 s an operator may wait once
/// space is freed, and a writer at disk speed (about 1 GB/s) cannot eat
/// the default floor between two reads even without the estimate.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The oldest read of the free space a write trusts; an older one is read
/// again first. A `statvfs` costs about a microsecond, so at most one per
/// 10 ms costs nothing at any write rate, and what writes can take in 10 ms
/// (10 MB at disk speed) is far below the default floor.
pub const WRITE_FRESHNESS: Duration = Duration::from_millis(10);

/// The least default floor: 1 GiB. Below it are what a store needs to
/// get out of trouble without taking writes: a checkpoint's journal
/// rotation and offsets file (tens of MiB), a restart's recovery, and the
/// operator's own tools on the same disk.
pub const MIN_FREE_BYTES_LEAST: u64 = 1 << 30;

/// The default floor as a share of the file system, in percent, when that
/// is more than [`MIN_FREE_BYTES_LEAST`]: file systems slow down and
/// fragment as they fill (ext4 keeps 5% for root for this reason), and on
/// a large disk 1 GiB is minutes of writes at full speed.
pub const MIN_FREE_PERCENT: u64 = 5;

/// Writes resume once the free space is back above the floor by this share
/// of the floor, in percent, so that the writes let in by the first free
/// bytes do not turn the refusal on and off at every check.
pub const RESUME_MARGIN_PERCENT: u64 = 10;

/// Bytes on disk per byte of a record written: once in the journal, once
/// in its segment.
pub const WRITE_AMPLIFICATION: u64 = 2;

/// The free space of a file system and whether writes are taken.
pub struct Space {
    /// A directory on the file system watched.
    dir: PathBuf,
    /// The floor: writes are refused below it.
    min_free: u64,
    /// Writes resume at or above this, once refused.
    resume_at: u64,
    /// The free bytes last read, less what writes admitted since will take.
    free: AtomicU64,
    /// The file system's size, last read.
    total: AtomicU64,
    /// Whether writes are taken.
    admitting: AtomicBool,
    /// Whether the last read failed (logged once per failing stretch).
    read_failed: AtomicBool,
    /// When `free` was last read, in microseconds since `born`.
    read_at: AtomicU64,
    born: Instant,
}

/// What [`Space::status`] reports, for health checks and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub min_free_bytes: u64,
    pub admitting: bool,
}

/// The free and total bytes of the file system holding `dir`.
fn read(dir: &Path) -> std::io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    let unit = stat.f_frsize.max(1);
    Ok((
        stat.f_bavail.saturating_mul(unit),
        stat.f_blocks.saturating_mul(unit),
    ))
}

/// The most of a file system the default floor takes, as a divisor: on a
/// small file system (a few GiB, a test's tmpfs) 1 GiB would refuse most
/// or all of it.
pub const MIN_FREE_SHARE_MAX: u64 = 4;

/// The default floor for a file system of `total` bytes: the larger of
/// [`MIN_FREE_BYTES_LEAST`] and [`MIN_FREE_PERCENT`] of it, but at most a
/// quarter of it ([`MIN_FREE_SHARE_MAX`]).
pub fn default_min_free(total: u64) -> u64 {
    MIN_FREE_BYTES_LEAST
        .max(total / 100 * MIN_FREE_PERCENT)
        .min(total / MIN_FREE_SHARE_MAX)
}

impl Space {
    /// Watches the file system of `dir` with the floor `min_free` (the
    /// default of [`default_min_free`] when `None`), reading it now and
    /// then every [`CHECK_INTERVAL`] from a thread that ends when the
    /// returned value is dropped.
    pub fn watch(dir: &Path, min_free: Option<u64>) -> std::io::Result<Arc<Space>> {
        let (free, total) = read(dir)?;
        let min_free = min_free.unwrap_or_else(|| default_min_free(total));
        let space = Arc::new(Space {
            dir: dir.to_path_buf(),
            min_free,
            resume_at: min_free.saturating_add(min_free / 100 * RESUME_MARGIN_PERCENT),
            free: AtomicU64::new(free),
            total: AtomicU64::new(total),
            admitting: AtomicBool::new(true),
            read_failed: AtomicBool::new(false),
            read_at: AtomicU64::new(0),
            born: Instant::now(),
        });
        space.update(free, total);
        let weak = Arc::downgrade(&space);
        std::thread::Builder::new()
            .name("free-space".into())
            .spawn(move || watch_loop(&weak))?;
        Ok(space)
    }

    /// Whether a write may be applied now (reading the free space again
    /// first if the last read is older than [`WRITE_FRESHNESS`]).
    pub fn admits(&self) -> bool {
        let now = self.born.elapsed().as_micros() as u64;
        let read_at = self.read_at.load(Ordering::Acquire);
        if now.saturating_sub(read_at) >= WRITE_FRESHNESS.as_micros() as u64 {
            self.check();
        }
        self.admitting.load(Ordering::Acquire)
    }

    /// Counts `bytes` of records a write admitted appends, against the
    /// estimate of the free space; refuses later writes if that takes it
    /// under the floor.
    pub fn written(&self, bytes: u64) {
        let cost = bytes.saturating_mul(WRITE_AMPLIFICATION);
        let before = self
            .free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                Some(free.saturating_sub(cost))
            })
            .unwrap_or(0);
        if before.saturating_sub(cost) < self.min_free {
            self.refuse(before.saturating_sub(cost));
        }
    }

    /// The free space as last estimated, and whether writes are taken.
    pub fn status(&self) -> Status {
        Status {
            free_bytes: self.free.load(Ordering::Acquire),
            total_bytes: self.total.load(Ordering::Acquire),
            min_free_bytes: self.min_free,
            admitting: self.admitting.load(Ordering::Acquire),
        }
    }

    /// Why a write is refused, for its error.
    pub fn refusal(&self) -> String {
        let status = self.status();
        format!(
            "the disk is nearly full: {} bytes free, under the floor of {} (--min-free-bytes) \
             or not yet back above it by the margin; writes resume by themselves once {} bytes \
             are free",
            status.free_bytes, status.min_free_bytes, self.resume_at
        )
    }

    /// Reads the file system again.
    fn check(&self) {
        let now = self.born.elapsed().as_micros() as u64;
        self.read_at.store(now, Ordering::Release);
        match read(&self.dir) {
            Ok((free, total)) => {
                self.read_failed.store(false, Ordering::Relaxed);
                self.update(free, total);
            }
            Err(e) => {
                // The last state stands: a file system that cannot be read
                // is the store's to report, on its next write.
                if !self.read_failed.swap(true, Ordering::Relaxed) {
                    log::warn(format_args!(
                        "cannot read the free space of {}: {e}",
                        self.dir.display()
                    ));
                }
            }
        }
    }

    fn update(&self, free: u64, total: u64) {
        self.free.store(free, Ordering::Release);
        self.total.store(total, Ordering::Release);
        if free < self.min_free {
            self.refuse(free);
        } else if free >= self.resume_at && !self.admitting.swap(true, Ordering::AcqRel) {
            log::info(format_args!(
                "{free} bytes free on {}: taking writes again",
                self.dir.display()
            ));
        }
    }

    fn refuse(&self, free: u64) {
        if self.admitting.swap(false, Ordering::AcqRel) {
            log::warn(format_args!(
                "{free} bytes free on {}, below the floor of {}: refusing writes until {} are free",
                self.dir.display(),
                self.min_free,
                self.resume_at
            ));
        }
    }
}

fn watch_loop(space: &Weak<Space>) {
    loop {
        std::thread::sleep(CHECK_INTERVAL);
        match space.upgrade() {
            Some(space) => space.check(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Space` over `dir` with a floor `min_free` and the given free
    /// bytes, without its thread.
    fn space(min_free: u64, free: u64) -> Space {
        let space = Space {
            dir: std::env::temp_dir(),
            min_free,
            resume_at: min_free + min_free / 100 * RESUME_MARGIN_PERCENT,
            free: AtomicU64::new(free),
            total: AtomicU64::new(free * 2),
            admitting: AtomicBool::new(true),
            read_failed: AtomicBool::new(false),
            // Read "now" for ever: the test's updates are the only reads.
            read_at: AtomicU64::new(u64::MAX),
            born: Instant::now(),
        };
        space.update(free, free * 2);
        space
    }

    #[test]
    fn the_default_floor_is_a_gibibyte_or_five_percent_at_most_a_quarter() {
        assert_eq!(default_min_free(4 << 30), 1 << 30);
        assert_eq!(default_min_free(1000 << 30), 50 << 30);
        assert_eq!(default_min_free(2 << 30), 512 << 20);
    }

    #[test]
    fn writes_are_refused_under_the_floor_and_taken_again_past_the_margin() {
        let space = space(1000, 5000);
        assert!(space.admits());
        // 2,000 bytes of records cost 4,000 on disk: 1,000 left, at the floor.
        space.written(2000);
        assert!(space.admits(), "{:?}", space.status());
        space.written(1);
        assert!(!space.admits(), "{:?}", space.status());
        // Back at the floor, not past the margin: still refused.
        space.update(1050, 10_000);
        assert!(!space.admits());
        space.update(1100, 10_000);
        assert!(space.admits());
        space.update(999, 10_000);
        assert!(!space.admits());
    }

    #[test]
    fn the_watch_reads_a_real_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = Space::watch(dir.path(), Some(0)).expect("watch");
        let status = space.status();
        assert!(status.admitting);
        assert!(status.total_bytes > 0 && status.free_bytes <= status.total_bytes);
        let refused = Space::watch(dir.path(), Some(u64::MAX)).expect("watch");
        assert!(!refused.admits(), "nothing has u64::MAX bytes free");
        assert!(refused.refusal().contains("--min-free-bytes"));
    }
}
