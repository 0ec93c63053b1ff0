//! Appends, reads and commits: what a front end does to a key's log
//! between sync points. Appends and commits wait in memory until a sync
//! point makes them durable (`sync_point.rs`); reads see only what one has.

use crate::storage::error::{Error, Result};
use crate::storage::format::{FILE_HEADER_SIZE, MESSAGE_BYTES_MAX};
use crate::storage::journal_recovery;
use crate::storage::keylog::ReadView;
use crate::storage::keyname::{self, KEY_FILE_NAME};
use crate::storage::offsets::{COMMIT_VALUE_BYTES_MAX, Change, Committed};
use std::collections::HashSet;

use super::{PENDING_BYTES_MAX, SegmentInfo, Store, ViewGate, check_key};

impl Store {
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
        if self.pending_bytes > PENDING_BYTES_MAX && !self.together {
            // Bounds the memory records wait in (by at most one call's
            // records past it, or one span of `together`).
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

    /// Runs `span` so that everything it appends and commits becomes durable
    /// in one sync point, or none of it: the store runs no sync point of its
    /// own during the span (not to bound the memory pending records take,
    /// [`PENDING_BYTES_MAX`], nor to close keys past the open-key limit),
    /// and a sync point's journal batches are recovered all or none
    /// (`segment-format.md`). How the Raft state machine makes an apply's
    /// records and its `Applied` record one.
    ///
    /// A span that fails (or panics) part way poisons the store: what it
    /// wrote must not become durable without the rest, so no later sync
    /// point may run. After a span, the store runs the sync point its
    /// limits call for, if they were passed ([`Store::settle`]); the span's
    /// caller bounds what one span writes.
    pub fn together<T, E: std::fmt::Display>(
        &mut self,
        span: impl FnOnce(&mut Store) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let outer = std::mem::replace(&mut self.together, true);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| span(self)));
        self.together = outer;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.poison(&Error::Config(format!(
                    "writes meant to be durable together stopped part way: {e}"
                )));
                Err(e)
            }
            Err(panic) => {
                self.poison(&Error::Panicked {
                    what: "a span of writes meant to be durable together".into(),
                });
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Runs a sync point if what waits in memory, or the keys open, have
    /// passed the store's limits: what an append would have done, for the
    /// caller of [`Store::together`] to call between spans.
    pub fn settle(&mut self) -> Result<()> {
        if self.together {
            return Ok(());
        }
        if self.pending_bytes > PENDING_BYTES_MAX || self.open.len() > self.config.open_keys_max {
            self.sync()?;
            self.evict_to(self.config.open_keys_max);
        }
        Ok(())
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

    /// The durable records of `key` from offset `from` on, up to about
    /// `bytes_max` of them (always the rest of the segment holding `from`),
    /// as a [`ReadView`] to decode after letting go of the store's lock:
    /// what a poll or fetch takes under the lock, so that decoding records
    /// and building the reply hold up no writer. The view shows the log as
    /// it is now and stays safe to read whatever happens to the log
    /// meanwhile (appends, retention, removal): it holds the segments'
    /// maps, not the files. A key with no log gives an empty view.
    ///
    /// Refused with [`Error::Poisoned`] while a reopen in place waits for
    /// the views already out (`views.rs`).
    pub fn read_view(&mut self, key: &str, from: u64, bytes_max: u64) -> Result<ReadView> {
        check_key(key)?;
        let ticket = ViewGate::admit(&self.views).ok_or(Error::Poisoned)?;
        match self.key_log(key, false)? {
            Some(log) => Ok(log.read_view(from, bytes_max)?.held_by(ticket)),
            None => Ok(ReadView::empty()),
        }
    }

    /// The first durable record of `key` whose timestamp is at or after `t`
    /// (milliseconds since the Unix epoch; a payload's timestamp as
    /// `storage::timestamp` reads it), with that timestamp; `None` when
    /// there is none. Found with the segments' time indexes: a binary
    /// search and a scan of one chunk of records, however long the log
    /// (`KeyLog::find_time`).
    pub fn find_time(&mut self, key: &str, t: i64) -> Result<Option<(u64, i64)>> {
        check_key(key)?;
        match self.key_log(key, false)? {
            Some(log) => log.find_time(t),
            None => Ok(None),
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

    /// Bytes of `key`'s durable records: its segment files without their
    /// headers, and the records durable in the journal that are not yet
    /// written out. Unlike the files' sizes it does not change when a
    /// checkpoint writes records out, only when records come or go.
    pub fn record_bytes(&mut self, key: &str) -> Result<u64> {
        let in_files: u64 = self
            .segments(key)?
            .iter()
            .map(|s| s.bytes.saturating_sub(FILE_HEADER_SIZE as u64))
            .sum();
        let held = match self.key_log(key, false)? {
            Some(log) => log.durable_unwritten_bytes(),
            None => 0,
        };
        Ok(in_files + held)
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

    /// Records `key`'s commit as given, a lower offset than the last
    /// included, with `value` stored beside it (Kafka's rule, where a
    /// consumer that seeks back commits where it is); `None` removes the
    /// key's commit. Durable after the next sync point, in the same journal
    /// batch as the records appended before it.
    pub fn change_committed(&mut self, key: &str, change: Change) -> Result<()> {
        self.check_change(key, &change)?;
        self.offsets.change(key, change);
        Ok(())
    }

    /// [`Store::change_committed`] of a commit that describes the records
    /// of `records_key` appended before it (an idempotent producer's
    /// state): its journal entry goes right after theirs, in the same
    /// journal batch unless the key's records of the sync point alone
    /// exceed one (`journal::BATCH_BYTES_MAX`), so a crash keeps both or
    /// neither.
    pub fn change_committed_after(
        &mut self,
        key: &str,
        change: Change,
        records_key: &str,
    ) -> Result<()> {
        self.check_change(key, &change)?;
        self.offsets.change_after(key, change, records_key);
        Ok(())
    }

    fn check_change(&mut self, key: &str, change: &Change) -> Result<()> {
        self.check_open()?;
        self.check_not_poisoned()?;
        check_key(key)?;
        if let Some(c) = &change
            && c.value.len() > COMMIT_VALUE_BYTES_MAX
        {
            return Err(Error::BadMessageSize {
                len: c.value.len(),
                max: COMMIT_VALUE_BYTES_MAX,
            });
        }
        Ok(())
    }

    /// The durable committed offset of `key`.
    pub fn committed(&self, key: &str) -> Option<u64> {
        self.offsets.get(key)
    }

    /// The durable commit of `key`, with its value.
    pub fn committed_entry(&self, key: &str) -> Option<&Committed> {
        self.offsets.get_committed(key)
    }

    /// The commit of `key` as the next sync point leaves it: its latest
    /// change, durable or not (for a writer building on its own change).
    pub fn committed_latest(&self, key: &str) -> Option<&Committed> {
        self.offsets.latest(key)
    }

    /// The highest offset committed for `key`, durable or not yet: what a
    /// Raft group's state machine serves, its commits being durable in the
    /// group's log before they are applied here (and only ever forward).
    pub fn committed_highest(&self, key: &str) -> Option<u64> {
        self.offsets.highest(key)
    }

    /// Every key with a commit as the next sync point leaves it, durable or
    /// not, in no particular order (for a writer removing commits).
    pub fn committed_latest_keys(&self) -> impl Iterator<Item = &str> {
        self.offsets.latest_keys()
    }

    /// Every durable commit with its value, in no particular order.
    pub fn committed_entries(&self) -> impl Iterator<Item = (&str, &Committed)> {
        self.offsets.iter_committed()
    }

    /// Every durable committed offset, in no particular order.
    pub fn committed_offsets(&self) -> impl Iterator<Item = (&str, u64)> {
        self.offsets.iter()
    }

    /// Number of keys with a durable committed offset.
    pub fn committed_count(&self) -> usize {
        self.offsets.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::error::Result;
    use crate::storage::offsets::Committed;
    use crate::storage::sim::{Keep, SimFs};
    use crate::storage::store::{PENDING_BYTES_MAX, Store, StoreConfig};

    /// Regression (found by the cluster's Kafka failover test): recovery
    /// indexed the records that follow a producer's state in a journal
    /// batch (the next partition of a produce, or a Raft group's applied
    /// record) as many bytes early as the state's value is long, then
    /// "repaired" the key's segment with the state's bytes. After a power
    /// loss that keeps only what was synced (the journal), every record of
    /// both keys and the state read back.
    #[test]
    fn records_after_a_producers_state_in_one_batch_survive_a_power_loss() {
        let fs = SimFs::new();
        let open = |fs: std::sync::Arc<SimFs>| {
            let config = StoreConfig {
                fs,
                ..StoreConfig::default()
            };
            Store::open(std::path::Path::new("/sim"), config).expect("store")
        };
        let mut store = open(fs.clone());
        let a: Vec<Vec<u8>> = (0..3).map(|i| format!("a{i}").into_bytes()).collect();
        let b: Vec<Vec<u8>> = (0..4).map(|i| format!("b{i}").into_bytes()).collect();
        let refs = |v: &[Vec<u8>]| -> Vec<Vec<u8>> { v.to_vec() };
        let slices = |v: &[Vec<u8>]| refs(v);
        let (a_owned, b_owned) = (slices(&a), slices(&b));
        let a_refs: Vec<&[u8]> = a_owned.iter().map(Vec::as_slice).collect();
        let b_refs: Vec<&[u8]> = b_owned.iter().map(Vec::as_slice).collect();
        let state = Committed {
            offset: 0,
            value: vec![9; 60],
        };
        store.append_all("a", &a_refs).expect("append a");
        store
            .change_committed_after("producer 1 a", Some(state.clone()), "a")
            .expect("state");
        store.append_all("b", &b_refs).expect("append b");
        store.sync().expect("sync");
        let mut store = open(fs.power_loss(Keep::Nothing));
        let mut read = |key: &str| {
            let mut out = Vec::new();
            store
                .read(key, 0, &mut |_, payload| {
                    out.push(payload.to_vec());
                    true
                })
                .expect("read");
            out
        };
        assert_eq!(read("a"), a);
        assert_eq!(read("b"), b);
        assert_eq!(store.committed_latest("producer 1 a"), Some(&state));
    }

    /// Appends more than [`PENDING_BYTES_MAX`] over two keys, inside
    /// [`Store::together`] or not, and returns the durable end of the
    /// first key once the appends are done: the store synced part of them
    /// itself if it is not 0.
    fn durable_after_appending_past_the_bound(together: bool) -> u64 {
        const VALUE_BYTES: usize = 1 << 20;
        let config = StoreConfig {
            fs: SimFs::new(),
            ..StoreConfig::default()
        };
        let mut store = Store::open(std::path::Path::new("/sim"), config).expect("store");
        let value = vec![b'v'; VALUE_BYTES];
        let records = PENDING_BYTES_MAX / VALUE_BYTES + 2;
        let append = |store: &mut Store| -> Result<()> {
            for i in 0..records {
                let key = if i % 2 == 0 { "a" } else { "b" };
                store.append(key, &value)?;
            }
            Ok(())
        };
        if together {
            store.together(append).expect("appends");
        } else {
            append(&mut store).expect("appends");
        }
        store.durable_next_offset("a").expect("durable end")
    }

    #[test]
    fn appends_past_the_pending_bound_sync_by_themselves_except_together() {
        assert!(durable_after_appending_past_the_bound(false) > 0);
        assert_eq!(durable_after_appending_past_the_bound(true), 0);
    }

    /// Appends one record to each of more keys than may be open, inside
    /// [`Store::together`] or not, and returns the durable end of the first.
    fn durable_after_opening_past_the_limit(together: bool) -> u64 {
        const OPEN_KEYS: usize = 4;
        let config = StoreConfig {
            fs: SimFs::new(),
            open_keys_max: OPEN_KEYS,
            ..StoreConfig::default()
        };
        let mut store = Store::open(std::path::Path::new("/sim"), config).expect("store");
        let append = |store: &mut Store| -> Result<()> {
            for i in 0..OPEN_KEYS + 2 {
                store.append(&format!("k{i}"), b"v")?;
            }
            Ok(())
        };
        if together {
            store.together(append).expect("appends");
        } else {
            append(&mut store).expect("appends");
        }
        store.durable_next_offset("k0").expect("durable end")
    }

    #[test]
    fn more_keys_than_may_be_open_sync_by_themselves_except_together() {
        assert_eq!(durable_after_opening_past_the_limit(false), 1);
        assert_eq!(durable_after_opening_past_the_limit(true), 0);
    }

    #[test]
    fn a_span_that_fails_part_way_poisons_the_store_and_settle_syncs_after_one() {
        let config = StoreConfig {
            fs: SimFs::new(),
            ..StoreConfig::default()
        };
        let mut store = Store::open(std::path::Path::new("/sim"), config).expect("store");
        // Past the pending bound inside a span: settle syncs after it.
        let value = vec![b'v'; 1 << 20];
        store
            .together(|store| -> Result<()> {
                for _ in 0..PENDING_BYTES_MAX / value.len() + 1 {
                    store.append("a", &value)?;
                }
                Ok(())
            })
            .expect("appends");
        assert_eq!(store.durable_next_offset("a").expect("end"), 0);
        store.settle().expect("settle");
        assert!(store.durable_next_offset("a").expect("end") > 0);
        // A span that fails after writing: nothing of it may become durable.
        let failed = store.together(|store| -> Result<()> {
            store.append("b", b"half")?;
            Err(crate::storage::error::Error::Config("stop".into()))
        });
        assert!(failed.is_err());
        assert!(store.append("c", b"later").is_err(), "poisoned");
        assert!(
            store.sync().is_err(),
            "no sync point runs after a torn span"
        );
        assert_eq!(store.durable_next_offset("b").expect("end"), 0);
    }

    /// Payload of record `i` in the view tests.
    fn payload(i: u64) -> Vec<u8> {
        format!("record {i:04}").into_bytes()
    }

    /// Every record of `view`, checked against [`payload`].
    fn read_all(view: &crate::storage::keylog::ReadView) -> Vec<u64> {
        let mut offsets = Vec::new();
        view.read(&mut |offset, bytes| {
            assert_eq!(bytes, payload(offset), "record {offset}");
            offsets.push(offset);
            true
        })
        .expect("read the view");
        offsets
    }

    /// A poll or fetch takes a view under the store's lock and reads it
    /// after letting go: retention, a key's removal and later appends may
    /// all come in between. The view must still deliver exactly what it
    /// saw, from the maps it holds (real files, so the maps are real and
    /// the files really unlinked), including the records that were durable
    /// but not yet in a segment when it was taken.
    #[test]
    fn a_view_reads_what_it_saw_after_retention_removal_and_appends() {
        const SEGMENT_BYTES: u64 = 1024;
        const WRITTEN: u64 = 300;
        const IN_MEMORY: u64 = 10;
        let dir = tempfile::TempDir::new().expect("tempdir");
        let config = StoreConfig {
            segment_bytes: SEGMENT_BYTES,
            ..StoreConfig::default()
        };
        let mut store = Store::open(dir.path(), config).expect("store");
        for i in 0..WRITTEN {
            store.append("k", &payload(i)).expect("append");
        }
        store.sync().expect("sync");
        // Durable and readable, not yet written to a segment: the sync
        // point is confirmed but not completed.
        for i in WRITTEN..WRITTEN + IN_MEMORY {
            store.append("k", &payload(i)).expect("append");
        }
        let mut plan = store.prepare_sync().expect("prepare");
        plan.execute().expect("execute");
        store.confirm_sync(&mut plan).expect("confirm");
        let whole = store.read_view("k", 0, u64::MAX).expect("view");
        let tail = store.read_view("k", 250, u64::MAX).expect("view");
        let cut = store.read_view("k", 0, 1).expect("view");
        assert!(
            !cut.is_complete(),
            "a one-byte view stops at its first segment"
        );
        store.complete_sync(plan, Ok(())).expect("complete");
        // More records, remapping the active segment the views hold.
        for i in WRITTEN + IN_MEMORY..WRITTEN + 2 * IN_MEMORY {
            store.append("k", &payload(i)).expect("append");
        }
        store.sync().expect("sync");
        // Retention deletes the sealed segments below 200, then the key goes.
        assert!(store.truncate_front("k", 200).expect("truncate") > 0);
        let mut first = None;
        store
            .read_view("k", 0, u64::MAX)
            .expect("view")
            .read(&mut |offset, _| {
                first = Some(offset);
                false
            })
            .expect("read");
        let start = store.log_start("k").expect("log start");
        assert!(start > 0 && start <= 200);
        assert_eq!(first, Some(start), "a view from below the log start");
        store.remove_key("k").expect("remove");
        let logs = dir.path().join(super::super::LOGS_DIR_NAME);
        assert_eq!(
            std::fs::read_dir(&logs).expect("logs").count(),
            0,
            "the key's files are gone"
        );
        let end = WRITTEN + IN_MEMORY;
        // `whole` stops at READ_VIEW_PARTS_MAX segments; `tail` reaches
        // the records that were only in memory.
        let prefix = read_all(&whole);
        assert!(!whole.is_complete() && !prefix.is_empty());
        assert_eq!(prefix, (0..prefix.len() as u64).collect::<Vec<_>>());
        assert!(tail.is_complete());
        assert_eq!(read_all(&tail), (250..end).collect::<Vec<_>>());
        let first = read_all(&cut);
        assert!(!first.is_empty() && first.len() < end as usize);
        assert_eq!(first, (0..first.len() as u64).collect::<Vec<_>>());
        // And reading by views, as a poll does, reads the same as read.
        let mut store = store;
        for i in 0..WRITTEN {
            store.append("j", &payload(i)).expect("append");
        }
        store.sync().expect("sync");
        let mut by_views = Vec::new();
        crate::storage::keylog::read_by_views(
            5,
            &mut |from| store.read_view("j", from, SEGMENT_BYTES / 2),
            &mut |offset, bytes| {
                assert_eq!(bytes, payload(offset));
                by_views.push(offset);
                true
            },
        )
        .expect("read by views");
        assert_eq!(by_views, (5..WRITTEN).collect::<Vec<_>>());
    }

    /// A read opens segments only as far as its visitor reads: one that
    /// stops after the first record opens one segment, however many
    /// follow. A view opens what it covers up front, so it stops at
    /// [`READ_VIEW_PARTS_MAX`] segments whatever its byte limit. Counted
    /// as maps of segment files (opening a sealed segment maps it).
    #[test]
    fn reads_open_segments_only_as_far_as_they_go() {
        use crate::storage::keylog::READ_VIEW_PARTS_MAX;
        use crate::storage::sim::FaultOp;
        const SEGMENT_BYTES: u64 = 512;
        const WRITTEN: u64 = 400;
        let fs = SimFs::new();
        let config = StoreConfig {
            fs: fs.clone(),
            segment_bytes: SEGMENT_BYTES,
            ..StoreConfig::default()
        };
        let mut store = Store::open(std::path::Path::new("/sim"), config).expect("store");
        for i in 0..WRITTEN {
            store.append("k", &payload(i)).expect("append");
        }
        store.sync().expect("sync");
        let sealed = store.segments("k").expect("segments").len() - 1;
        assert!(sealed > 2 * READ_VIEW_PARTS_MAX, "{sealed} sealed segments");

        let maps = fs.count(FaultOp::Map);
        let mut seen = Vec::new();
        store
            .read("k", 0, &mut |offset, bytes| {
                assert_eq!(bytes, payload(offset));
                seen.push(offset);
                false
            })
            .expect("read");
        assert_eq!(seen, [0]);
        assert_eq!(fs.count(FaultOp::Map) - maps, 1, "segments opened");

        let maps = fs.count(FaultOp::Map);
        let view = store.read_view("k", 0, u64::MAX).expect("view");
        assert!(!view.is_complete());
        assert_eq!(
            fs.count(FaultOp::Map) - maps,
            READ_VIEW_PARTS_MAX as u64 - 1,
            "segments opened (the first was open already)"
        );
        let read = read_all(&view);
        assert_eq!(read, (0..read.len() as u64).collect::<Vec<_>>());
        assert!(read.len() < WRITTEN as usize);

        // A whole read still reads everything, a segment at a time.
        let mut all = Vec::new();
        store
            .read("k", 0, &mut |offset, bytes| {
                assert_eq!(bytes, payload(offset));
                all.push(offset);
                true
            })
            .expect("read");
        assert_eq!(all, (0..WRITTEN).collect::<Vec<_>>());
    }

    /// A segment that fails to open hides none of the records before it:
    /// a read by views delivers them, then meets the error.
    #[test]
    fn a_damaged_segment_fails_a_read_after_the_records_before_it() {
        const SEGMENT_BYTES: u64 = 512;
        let dir = tempfile::TempDir::new().expect("tempdir");
        let config = StoreConfig {
            segment_bytes: SEGMENT_BYTES,
            ..StoreConfig::default()
        };
        let mut store = Store::open(dir.path(), config).expect("store");
        for i in 0..100 {
            store.append("k", &payload(i)).expect("append");
        }
        store.sync().expect("sync");
        let segments = store.segments("k").expect("segments");
        assert!(segments.len() > 3);
        let second = segments[1].base;
        let logs = dir.path().join(super::super::LOGS_DIR_NAME);
        let key_dir = std::fs::read_dir(&logs)
            .expect("logs")
            .next()
            .expect("the key's directory")
            .expect("entry")
            .path();
        let path = key_dir.join(crate::storage::format::log_file_name(second));
        let mut bytes = std::fs::read(&path).expect("segment");
        bytes[..8].fill(0xff);
        std::fs::write(&path, bytes).expect("damage the header");

        let mut seen = Vec::new();
        let result = crate::storage::keylog::read_by_views(
            0,
            &mut |from| store.read_view("k", from, u64::MAX),
            &mut |offset, bytes| {
                assert_eq!(bytes, payload(offset));
                seen.push(offset);
                true
            },
        );
        assert_eq!(seen, (0..second).collect::<Vec<_>>());
        assert!(
            matches!(result, Err(crate::storage::error::Error::Corrupt { .. })),
            "{result:?}"
        );
    }
}
