//! Committed offsets: a small CRC'd file of `(key, offset)` entries,
//! `offsets.journal`, holding every commit up to the last checkpoint.
//!
//! A commit is made durable by the write-ahead journal batch of its sync
//! point (`journal.rs`); a checkpoint then appends one entry per changed key
//! here (the record frame of `format.rs`, with the key as payload and the
//! committed offset in the offset field) and fdatasyncs the file before the
//! journal files holding those commits are deleted. A torn last entry is cut
//! on open. When the file has grown well past what it describes, the
//! checkpoint compacts it instead: one entry per key written to a temporary
//! file, fsynced and renamed over the old one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::backend::{Backend, FileIo, Fs, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{
    self, DecodeError, FILE_HEADER_SIZE, FORMAT_VERSION, FileHeader, FileKind,
};
use crate::storage::fsutil;

/// File name of the journal inside the data directory.
pub const OFFSETS_FILE_NAME: &str = "offsets.journal";

/// The journal is compacted once it is larger than this and more than
/// [`COMPACT_RATIO`] times the size it would have with one entry per key. 4 MiB is about
/// 100,000 commits of short keys: compaction is rare, and replaying the
/// journal on open stays a few milliseconds.
pub const COMPACT_BYTES_MIN: u64 = 4 << 20;
/// See [`COMPACT_BYTES_MIN`].
pub const COMPACT_RATIO: u64 = 4;

/// Commits taken by one sync point: key to committed offset.
pub type Commits = HashMap<String, u64>;

/// Committed offsets, durable and pending.
pub struct CommittedOffsets {
    fs: Fs,
    path: PathBuf,
    file: Arc<dyn FileIo>,
    /// Bytes written to the file.
    file_len: u64,
    /// Offsets whose commits are durable (in this file or in the
    /// write-ahead journal): the only ones readers see.
    durable: HashMap<String, u64>,
    /// Offsets committed since the last sync point took them.
    pending: HashMap<String, u64>,
    /// The highest offset committed per key, durable or not: what a Raft
    /// group's state machine serves, since its commits are durable in the
    /// group's log before they are applied here.
    latest: HashMap<String, u64>,
    /// Durable commits that are in the write-ahead journal but not yet in
    /// this file: the next checkpoint writes them here before it deletes
    /// the journal files holding them.
    uncheckpointed: HashMap<String, u64>,
    /// Size the file would have with one entry per key: what compaction
    /// compares the file against. Never below the true figure.
    live_bytes: u64,
}

/// What a checkpoint writes to the offsets file, prepared under the store's
/// lock and written by the checkpoint without it.
pub enum OffsetsWrite {
    /// Append these entries at `position` and fdatasync.
    Append {
        file: Arc<dyn FileIo>,
        path: PathBuf,
        position: u64,
        bytes: Vec<u8>,
    },
    /// Replace the file with these bytes (one entry per key), atomically.
    Rewrite { path: PathBuf, bytes: Vec<u8> },
}

impl OffsetsWrite {
    /// Performs the write and makes it durable.
    pub fn run(&self, fs: &dyn Backend) -> Result<()> {
        match self {
            OffsetsWrite::Append {
                file,
                path,
                position,
                bytes,
            } => {
                file.write_all_at(bytes, *position)
                    .map_err(|e| Error::io("write", path, e))?;
                file.sync_data()
                    .map_err(|e| Error::io("fdatasync", path, e))
            }
            OffsetsWrite::Rewrite { path, bytes } => fsutil::rewrite_atomic(fs, path, bytes),
        }
    }
}

/// Decodes a journal: the entries up to the first invalid byte, and where
/// and why decoding stopped, if before the end. Used by open and by `inspect`.
pub fn decode_journal(bytes: &[u8]) -> std::result::Result<JournalScan<'_>, DecodeError> {
    let header = format::decode_header(bytes)?;
    if header.kind != FileKind::Offsets {
        return Err(DecodeError::BadMagic {
            found: header.kind.magic(),
        });
    }
    let mut entries = Vec::new();
    let mut position = FILE_HEADER_SIZE;
    while position < bytes.len() {
        match format::decode_record(&bytes[position..]) {
            Ok(record) => {
                entries.push((record.payload, record.offset, position as u64));
                position += record.size();
            }
            Err(error) => {
                return Ok(JournalScan {
                    entries,
                    end_position: position as u64,
                    stop: Some(error),
                });
            }
        }
    }
    Ok(JournalScan {
        entries,
        end_position: position as u64,
        stop: None,
    })
}

/// What [`decode_journal`] found.
pub struct JournalScan<'a> {
    /// `(key bytes, committed offset, position)` in file order.
    pub entries: Vec<(&'a [u8], u64, u64)>,
    /// Position after the last valid entry.
    pub end_position: u64,
    /// Why decoding stopped before the end of the file, if it did.
    pub stop: Option<DecodeError>,
}

/// Bytes one entry for `key` takes.
fn entry_bytes(key: &str) -> u64 {
    format::record_size(key.len()) as u64
}

/// Folds `offset` into `map[key]`, keeping the larger.
fn raise(map: &mut HashMap<String, u64>, key: &str, offset: u64) {
    match map.get_mut(key) {
        Some(slot) => *slot = (*slot).max(offset),
        None => {
            map.insert(key.to_string(), offset);
        }
    }
}

fn encode_entry(out: &mut Vec<u8>, key: &str, offset: u64) {
    format::encode_record(out, offset, key.as_bytes());
}

/// The whole file for `offsets`: a header and one entry per key.
pub fn journal_bytes(offsets: &HashMap<String, u64>) -> Vec<u8> {
    let mut bytes = format::encode_header(&FileHeader {
        kind: FileKind::Offsets,
        version: FORMAT_VERSION,
        base_offset: 0,
    })
    .to_vec();
    let mut keys: Vec<_> = offsets.iter().collect();
    keys.sort();
    for (key, &offset) in keys {
        encode_entry(&mut bytes, key, offset);
    }
    bytes
}

impl CommittedOffsets {
    /// Opens the file in `dir`, creating it if it does not exist, and cuts a
    /// torn tail (left by a checkpoint interrupted while appending: the
    /// write-ahead journal still holds those commits). An unreadable header
    /// or a hole before valid entries is corruption: the store refuses to
    /// open rather than forget commits. After an `unclean` stop the valid
    /// entries are rewritten and synced: a checkpoint whose write of them
    /// failed may have left pages that read as written but never reach the
    /// disk (`fsutil::rewrite_and_sync`), and later appends would sync only
    /// their own pages, leaving a hole for a power loss to open.
    pub fn open(fs: Fs, dir: &Path, unclean: bool) -> Result<CommittedOffsets> {
        let path = dir.join(OFFSETS_FILE_NAME);
        let bytes = match fs.read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fsutil::rewrite_atomic(&*fs, &path, &journal_bytes(&HashMap::new()))?;
                fs.read(&path).map_err(|e| Error::io("read", &path, e))?
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let scan = decode_journal(&bytes).map_err(|e| Error::corrupt(&path, 0, e.to_string()))?;
        let mut durable = HashMap::new();
        for (key, offset, position) in &scan.entries {
            let key = std::str::from_utf8(key)
                .map_err(|_| Error::corrupt(&path, *position, "key is not UTF-8"))?;
            raise(&mut durable, key, *offset);
        }
        let file = fs
            .open(&path, OpenMode::Write)
            .map_err(|e| Error::io("open", &path, e))?;
        if let Some(stop) = &scan.stop {
            let tail = &bytes[scan.end_position as usize..];
            if !tail.iter().all(|&b| b == 0)
                && let Some(valid_at) = (scan.end_position as usize + 1..bytes.len())
                    .find(|&p| format::decode_record(&bytes[p..]).is_ok())
            {
                return Err(Error::corrupt(
                    &path,
                    scan.end_position,
                    format!("{stop}, but a valid entry follows at position {valid_at}"),
                ));
            }
            crate::log::warn(format_args!(
                "{}: cutting a torn tail of {} bytes at position {} ({stop})",
                path.display(),
                tail.len(),
                scan.end_position
            ));
            file.set_len(scan.end_position)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io("truncate", &path, e))?;
        }
        if unclean {
            fsutil::rewrite_and_sync(&*fs, &path, &bytes[..scan.end_position as usize])?;
        }
        let live_bytes =
            FILE_HEADER_SIZE as u64 + durable.keys().map(|k| entry_bytes(k)).sum::<u64>();
        Ok(CommittedOffsets {
            fs,
            path,
            file,
            file_len: scan.end_position,
            latest: durable.clone(),
            durable,
            pending: HashMap::new(),
            uncheckpointed: HashMap::new(),
            live_bytes,
        })
    }

    /// The durable committed offset of `key`.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.durable.get(key).copied()
    }

    /// The highest offset committed for `key`, durable or not yet.
    pub fn latest(&self, key: &str) -> Option<u64> {
        self.latest.get(key).copied()
    }

    /// Every durable committed offset.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.durable
            .iter()
            .map(|(key, &offset)| (key.as_str(), offset))
    }

    /// Number of keys with a durable committed offset.
    pub fn len(&self) -> usize {
        self.durable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.durable.is_empty()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a commit; durable after the next sync. A commit at or below
    /// the offset already committed changes nothing (offsets only move
    /// forward).
    pub fn commit(&mut self, key: &str, offset: u64) {
        let known = [&self.pending, &self.durable]
            .iter()
            .filter_map(|map| map.get(key).copied())
            .max();
        if known.is_some_and(|known| known >= offset) {
            return;
        }
        self.pending.insert(key.to_string(), offset);
        raise(&mut self.latest, key, offset);
    }

    /// True when commits are waiting for a sync.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the commits not yet in any journal batch; pass them to
    /// [`CommittedOffsets::complete`] once the batch holding them is durable.
    pub fn take_pending(&mut self) -> Commits {
        std::mem::take(&mut self.pending)
    }

    /// Publishes commits whose journal batch is durable.
    pub fn complete(&mut self, commits: Commits) {
        for (key, offset) in commits {
            self.recovered(&key, offset);
        }
    }

    /// A durable commit found in the write-ahead journal (at open, or
    /// published by a sync point).
    pub fn recovered(&mut self, key: &str, offset: u64) {
        if !self.durable.contains_key(key) {
            self.live_bytes += entry_bytes(key);
        }
        raise(&mut self.durable, key, offset);
        raise(&mut self.uncheckpointed, key, offset);
        raise(&mut self.latest, key, offset);
    }

    /// What a checkpoint must write so that this file holds every durable
    /// commit: the entries not in it yet, or the whole file compacted when it
    /// has grown well past what it describes. `None` when it is up to date.
    /// The caller runs it, then calls [`CommittedOffsets::checkpointed`].
    pub fn checkpoint_write(&mut self, convert: bool) -> Option<OffsetsWrite> {
        if self.uncheckpointed.is_empty() && !convert {
            return None;
        }
        let mut entries = Vec::new();
        let mut keys: Vec<_> = self.uncheckpointed.iter().collect();
        keys.sort();
        for (key, &offset) in keys {
            encode_entry(&mut entries, key, offset);
        }
        let grown = self.file_len + entries.len() as u64;
        let due = grown > COMPACT_BYTES_MIN.max(COMPACT_RATIO * self.live_bytes);
        self.uncheckpointed.clear();
        if due || convert {
            let bytes = journal_bytes(&self.durable);
            self.live_bytes = bytes.len() as u64;
            return Some(OffsetsWrite::Rewrite {
                path: self.path.clone(),
                bytes,
            });
        }
        Some(OffsetsWrite::Append {
            file: Arc::clone(&self.file),
            path: self.path.clone(),
            position: self.file_len,
            bytes: entries,
        })
    }

    /// Takes note of a checkpoint's write once it succeeded.
    pub fn checkpointed(&mut self, write: &OffsetsWrite) -> Result<()> {
        match write {
            OffsetsWrite::Append { bytes, .. } => self.file_len += bytes.len() as u64,
            OffsetsWrite::Rewrite { bytes, .. } => {
                self.file = self
                    .fs
                    .open(&self.path, OpenMode::Write)
                    .map_err(|e| Error::io("open", &self.path, e))?;
                self.file_len = bytes.len() as u64;
            }
        }
        Ok(())
    }
}
