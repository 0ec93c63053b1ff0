//! The readers of one run of the store: every [`ReadView`] it hands out
//! holds a [`ViewTicket`], so that a reopen in place knows when the last
//! reader of the failed run has let go of its maps.
//!
//! Why a reopen must wait for them: a view maps segment files and reads
//! them after the store's lock is released, trusting that nothing cuts a
//! file below what it maps (`mmap.rs`). Recovery after a failed sync may
//! have to cut a segment below that: the failed writeback's pages, once
//! the kernel has evicted them, read back as what the disk holds (zeros, or
//! nothing), so the segment differs from the journal and is cut where it
//! does, then rewritten from the journal. A reader of the old run touching a
//! page past the cut gets SIGBUS, which kills the process. So a reopen
//! first closes the gate (no new view of the failed run), waits a moment
//! for the views already out, and runs recovery only once none is left.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::lock::lock;

/// How long a reopen waits, holding the store's lock, for the failed
/// run's views to be read and dropped. A view is decoded straight after it
/// is taken (a poll or fetch copies at most a reply's bytes out of it), so
/// this is many times what a reader needs; a reader still holding one
/// after it (descheduled, or stuck on a page the failing disk cannot
/// read) makes this reopen fail with a busy error, and the caller's next
/// attempt, after its backoff, finds the gate still closed and waits again.
pub const VIEW_DRAIN_WAIT: Duration = Duration::from_millis(100);

/// Counts the views of one run that are still alive, and says whether
/// new ones may be taken.
#[derive(Debug, Default)]
pub struct ViewGate {
    state: Mutex<GateState>,
    /// Signalled when the last live view goes.
    drained: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Set by [`ViewGate::close`]: no new views.
    closed: bool,
    /// Views alive now.
    live: usize,
}

/// Held by a [`ReadView`](crate::storage::keylog::ReadView) for as long as
/// it maps files of the run that handed it out.
#[derive(Debug)]
pub struct ViewTicket(Arc<ViewGate>);

impl ViewGate {
    /// A ticket for a new view, or `None` once the gate is closed.
    pub fn admit(gate: &Arc<ViewGate>) -> Option<ViewTicket> {
        let mut state = lock(&gate.state);
        if state.closed {
            return None;
        }
        state.live += 1;
        Some(ViewTicket(Arc::clone(gate)))
    }

    /// Closes the gate and waits up to `wait` for the views already out to
    /// go; returns how many are still alive (0: none, recovery may cut).
    pub fn close_and_drain(&self, wait: Duration) -> usize {
        let mut state = lock(&self.state);
        state.closed = true;
        let (state, _) = self
            .drained
            .wait_timeout_while(state, wait, |s| s.live > 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.live
    }

    /// Opens the gate again: the run goes on serving reads (its reopen
    /// failed for another reason than its readers).
    pub fn open(&self) {
        lock(&self.state).closed = false;
    }
}

impl Drop for ViewTicket {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.live -= 1;
        if state.live == 0 {
            self.0.drained.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::error::Error;
    use crate::storage::store::{Store, StoreConfig};
    use std::os::unix::fs::FileExt;

    /// The hazard this module exists for, on real files and real maps: a
    /// reader holds a view of a key's segment when the store is poisoned
    /// (a checkpoint's fdatasync of the segment failed) and the kernel has
    /// evicted the pages it could not write (they read back as zeros).
    /// Recovery cuts the segment where the zeros start, below what the view
    /// maps, and rewrites it from the journal; a reopen that ran while the
    /// view lived would let the reader fault past the cut (SIGBUS).
    #[test]
    fn a_reopen_waits_for_the_failed_runs_views_before_recovery_cuts_what_they_map() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        let payloads: Vec<Vec<u8>> = (0..64)
            .map(|i| format!("record {i:04} {}", "x".repeat(200)).into_bytes())
            .collect();
        for payload in &payloads {
            store.append("k", payload).expect("append");
        }
        // A second key makes the sync point a journal one: the records are
        // in the journal, and in the segment unsynced.
        store.append("other", b"o").expect("append");
        store.sync().expect("sync");
        let view = store.read_view("k", 0, u64::MAX).expect("view");

        store.poison(&Error::Poisoned);
        let segment = segment_of(dir.path(), "k");
        let len = std::fs::metadata(&segment).expect("stat").len();
        zero_second_half(&segment, len);

        let refused = store.reopen();
        assert!(
            matches!(&refused, Err(Error::Busy(why)) if why.contains("views")),
            "a reopen while a view of the failed run lives: {refused:?}"
        );
        assert!(matches!(
            store.read_view("k", 0, u64::MAX),
            Err(Error::Poisoned)
        ));
        // Nothing was cut: the view reads, meeting the zeros as damage.
        let mut seen = 0;
        let read = view.read(&mut |_, _| {
            seen += 1;
            true
        });
        assert!(read.is_err() && seen < payloads.len(), "{read:?}, {seen}");
        drop(view);

        store.reopen().expect("reopen once the views are gone");
        let mut got = Vec::new();
        store
            .read("k", 0, &mut |_, payload| {
                got.push(payload.to_vec());
                true
            })
            .expect("read after the heal");
        assert_eq!(got, payloads, "recovered from the journal");
        assert!(
            store.read_view("k", 0, u64::MAX).is_ok(),
            "the new run serves views"
        );
    }

    #[test]
    fn a_closed_gate_admits_nothing_and_drains_when_the_last_ticket_goes() {
        let gate = Arc::new(ViewGate::default());
        let first = ViewGate::admit(&gate).expect("open gate");
        let second = ViewGate::admit(&gate).expect("open gate");
        assert_eq!(gate.close_and_drain(Duration::ZERO), 2);
        assert!(ViewGate::admit(&gate).is_none());
        drop(first);
        let waiter = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.close_and_drain(Duration::from_secs(60)))
        };
        drop(second);
        assert_eq!(waiter.join().expect("waiter"), 0);
        gate.open();
        assert!(ViewGate::admit(&gate).is_some());
    }

    /// The same hazard inside one run (helper-38's probe): a key pushed out
    /// of the open-key cache and opened again runs its recovery, which cuts
    /// a tail that lost writeback zeroed, while a view taken before still
    /// maps it. A key a view maps stays open instead.
    #[test]
    fn a_key_a_view_maps_stays_open_so_its_recovery_cannot_cut_under_the_view() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let config = StoreConfig {
            open_keys_max: 1,
            ..StoreConfig::default()
        };
        let mut store = Store::open(dir.path(), config).expect("open");
        for i in 0..64 {
            let payload = format!("record {i:04} {}", "x".repeat(200));
            store.append("k", payload.as_bytes()).expect("append");
        }
        store.append("other", b"o").expect("append");
        store.sync().expect("sync");
        let view = store.read_view("k", 50, u64::MAX).expect("view");
        let segment = segment_of(dir.path(), "k");
        let len = std::fs::metadata(&segment).expect("stat").len();
        zero_second_half(&segment, len);
        // Reading `other` would push `k` out of the cache (one key open);
        // reading `k` again would then recover it.
        store.read_view("other", 0, u64::MAX).expect("read other");
        let _ = store.read_view("k", 0, u64::MAX);
        assert_eq!(
            std::fs::metadata(&segment).expect("stat").len(),
            len,
            "k's segment was cut while a view maps it"
        );
        drop(view);
    }

    /// The one segment of `key` in the store at `dir`.
    fn segment_of(dir: &std::path::Path, key: &str) -> std::path::PathBuf {
        let logs = dir
            .join(super::super::LOGS_DIR_NAME)
            .join(crate::storage::keyname::escaped_name(key).expect("a plain key"));
        std::fs::read_dir(&logs)
            .expect("key directory")
            .map(|entry| entry.expect("entry").path())
            .find(|path| path.extension().is_some_and(|e| e == "log"))
            .expect("a segment")
    }

    /// Zeroes the second half of a `len`-byte file: its pages as the disk
    /// holds them once the kernel dropped pages whose writeback failed.
    fn zero_second_half(path: &std::path::Path, len: u64) {
        let evicted = vec![0u8; (len / 2) as usize];
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|file| file.write_all_at(&evicted, len - evicted.len() as u64))
            .expect("zero the evicted half");
    }
}
