//! The open-key cache: the key logs kept open (at most
//! `StoreConfig::open_keys_max`, least recently used out), each opened on
//! first use and recovered then (against the journal if it mentions the
//! key), and the directory that holds each key's log. Descriptors and maps
//! are bounded, not keys: a key beyond the limit is reopened on demand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::error::{Error, Result};
use crate::storage::fsutil;
use crate::storage::journal_recovery::{self, Taken};
use crate::storage::keylog::KeyLog;
use crate::storage::keyname::{self, KEY_FILE_NAME};
use crate::storage::recovery::{self, Mode};

use super::Store;

/// Collision counters tried for hashed key names before giving up. A 64-bit
/// hash colliding even once is unlikely; this bounds a lookup all the same.
const HASH_COLLISIONS_MAX: u32 = 64;

/// An open key log and when it was last used, for eviction.
pub(super) struct OpenKey {
    pub(super) log: KeyLog,
    pub(super) last_used: u64,
}

impl Store {
    /// The open log of `key`, opening (and with `create`, creating) it. A
    /// key the recovered journal holds records for is recovered against
    /// them first, its directory created if a crash lost it.
    pub(super) fn key_log(&mut self, key: &str, create: bool) -> Result<Option<&mut KeyLog>> {
        self.clock += 1;
        let now = self.clock;
        if !self.open.contains_key(key) {
            let Some(log) = self.open_key_log(key, create)? else {
                return Ok(None);
            };
            self.make_room()?;
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

    /// Opens `key`'s log, which is not open, with what the recovered
    /// journal holds for it. Those entries are taken out of the recovered
    /// journal, and put back if the key cannot be opened, so they stay live
    /// (and block checkpoints) until it can.
    fn open_key_log(&mut self, key: &str, create: bool) -> Result<Option<KeyLog>> {
        let taken = self.recovered.take(key);
        // A key the journal holds records or a direct note for has a log
        // even if a crash lost its directory (recovery then replays it, or
        // refuses what cannot be); a log-start entry alone does not make one.
        let create = create
            || taken.as_ref().is_some_and(|(files, at)| {
                !journal_recovery::entries(files, at).entries.is_empty()
            });
        let opened = self.recover_key_log(key, create, taken.as_ref());
        if opened.is_err()
            && let Some((_, entries)) = taken
        {
            self.recovered.put_back(key, entries);
        }
        opened
    }

    /// Finds `key`'s directory (creating it with `create`) and opens the
    /// log in it, recovering it against `taken`, the journal's entries for
    /// it, if there are any; notes what recovery wrote for the next
    /// checkpoint.
    fn recover_key_log(
        &mut self,
        key: &str,
        create: bool,
        taken: Option<&Taken>,
    ) -> Result<Option<KeyLog>> {
        let Some(dir) = self.key_dir(key, create)? else {
            return Ok(None);
        };
        // Keys the journal does not mention were synced whole by the last
        // checkpoint (or closed cleanly): the quick check. A version 1
        // store after a crash gets the full one.
        let mode = if self.legacy_unclean {
            Mode::Unclean
        } else {
            Mode::Clean
        };
        let segment_bytes = self.config.segment_bytes;
        let (log, touched) = match taken {
            Some((files, at)) => {
                let found = journal_recovery::entries(files, at);
                // Segments below a journaled log start go first: what a
                // crash left of them is never served or checked.
                recovery::remove_below(&*self.fs, &dir, found.log_start)?;
                KeyLog::open(
                    Arc::clone(&self.fs),
                    dir.clone(),
                    mode,
                    segment_bytes,
                    &found.entries,
                    found.log_start,
                )?
            }
            None => KeyLog::open(
                Arc::clone(&self.fs),
                dir.clone(),
                mode,
                segment_bytes,
                &[],
                0,
            )?,
        };
        self.note_touched(&dir, touched);
        if taken.is_some() {
            // The key's own directory entry may be as unsynced as its
            // files (`KeyLog::open` reports those).
            self.mark_dir_dirty(self.logs_dir.clone());
        }
        Ok(Some(log))
    }

    /// Makes room for one more open key. Room is made before the key is
    /// inserted, so the key being opened is never the one evicted.
    fn make_room(&mut self) -> Result<()> {
        self.evict_to(self.config.open_keys_max - 1);
        if self.open.len() >= self.config.open_keys_max && !self.together {
            // Every open key awaits a sync: run one now, which bounds open
            // files even when one sync point would cover more keys than
            // may be open (inside `Store::together`, the span's keys stay
            // open past the limit until its sync point).
            self.sync()?;
            self.evict_to(self.config.open_keys_max - 1);
        }
        Ok(())
    }

    /// Closes least recently used keys beyond the limit. Keys with records
    /// that are not durable yet stay open: their sync must publish them.
    /// So do keys a reader's view maps: opened again, a key's recovery may
    /// cut a segment (a tail lost writeback zeroed) below what the view maps.
    pub(super) fn evict_to(&mut self, open_keys_max: usize) {
        while self.open.len() > open_keys_max {
            let victim = self
                .open
                .iter()
                // A log with records not yet durable keeps them; one a
                // reader's view maps stays open, so that its recovery
                // (which may cut a segment) does not run under the view.
                .filter(|(_, open)| !open.log.has_pending() && !open.log.has_views())
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
    pub(super) fn key_dir(&mut self, key: &str, create: bool) -> Result<Option<PathBuf>> {
        match keyname::escaped_name(key) {
            Some(name) => self.escaped_key_dir(name, create),
            None => self.hashed_key_dir(key, create),
        }
    }

    /// The `k.` directory named `name`, creating it with `create`.
    fn escaped_key_dir(&mut self, name: String, create: bool) -> Result<Option<PathBuf>> {
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
        Ok(Some(dir))
    }

    /// The `h.` directory whose `KEY` file holds `key`, or with `create` a
    /// new one in the first free slot.
    fn hashed_key_dir(&mut self, key: &str, create: bool) -> Result<Option<PathBuf>> {
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
