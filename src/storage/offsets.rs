//! Committed offsets: a small CRC'd file of `(key, offset, value)`
//! entries, `offsets.journal`, holding every commit up to the last
//! checkpoint.
//!
//! A commit is made durable by the write-ahead journal batch of its sync
//! point (`journal.rs`); a checkpoint then appends one entry per changed key
//! here (the record frame of `format.rs`, the committed offset in the
//! offset field, and since format version 5 a payload of flags, key and the
//! value stored with the commit) and fdatasyncs the file before the journal
//! files holding those commits are deleted. A torn last entry is cut on
//! open. When the file has grown well past what it describes, or was
//! written by an older format version, the checkpoint rewrites it instead:
//! one entry per key written to a temporary file, fsynced and renamed over
//! the old one.
//!
//! The last change of a key wins, in journal order: a commit may move an
//! offset back (a Kafka consumer that seeks), and a key's commit may be
//! removed. [`CommittedOffsets::commit`] keeps the Maelstrom node's rule
//! (offsets only move forward) by refusing an offset not above the highest
//! pending, in flight or durable. Files of format versions 1 to 4 meant the
//! largest offset, and could hold a lower commit after a higher one: their
//! entries (and journal commits of those versions) are read keeping the
//! largest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::backend::{Backend, FileIo, Fs, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{
    self, DecodeError, FILE_HEADER_SIZE, FORMAT_VERSION, FileHeader, FileKind,
};
use crate::storage::fsutil;
use crate::storage::keyname::KEY_BYTES_MAX;

/// File name of the journal inside the data directory.
pub const OFFSETS_FILE_NAME: &str = "offsets.journal";

/// The journal is compacted once it is larger than this and more than
/// [`COMPACT_RATIO`] times the size it would have with one entry per key. 4 MiB is about
/// 100,000 commits of short keys: compaction is rare, and replaying the
/// journal on open stays a few milliseconds.
pub const COMPACT_BYTES_MIN: u64 = 4 << 20;
/// See [`COMPACT_BYTES_MIN`].
pub const COMPACT_RATIO: u64 = 4;

/// Largest value stored with a commit: Kafka's default
/// `offset.metadata.max.bytes` (4 KiB), which bounds a consumer's commit
/// metadata, and far more than a producer's state (about 150 bytes). It
/// keeps every entry, key included, well inside one record frame.
pub const COMMIT_VALUE_BYTES_MAX: usize = 4096;

/// The first format version whose offsets entries carry flags and a value.
pub const VALUE_FORMAT_VERSION: u16 = 5;

// Payload of a version 5 entry: flags, key length, key, value.
pub const ENTRY_FLAGS_POS: usize = 0;
pub const ENTRY_KEY_LENGTH_POS: usize = ENTRY_FLAGS_POS + 1;
/// Bytes of a version 5 entry's payload before its key.
pub const ENTRY_KEY_POS: usize = ENTRY_KEY_LENGTH_POS + 2;
/// Flag of a version 5 entry: the key's commit is removed (no value).
pub const ENTRY_FLAG_REMOVED: u8 = 1;

/// A key's committed offset and the bytes stored with it (a Kafka
/// consumer's commit metadata, a producer's state; empty for the node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub offset: u64,
    pub value: Vec<u8>,
}

/// A change to a key's commit: a new one, or `None` for its removal.
pub type Change = Option<Committed>;

/// Changes taken by one sync point: key to (change number, change). The
/// numbers order changes across sync points, so a plan that completes
/// after a later one (a sync point run by an append while the group
/// commit's was in flight) does not undo the later one's changes.
pub type Commits = HashMap<String, (u64, Change)>;

/// Committed offsets, durable and pending.
pub struct CommittedOffsets {
    fs: Fs,
    path: PathBuf,
    file: Arc<dyn FileIo>,
    /// Bytes written to the file.
    file_len: u64,
    /// Format version of the file's header: an older one is rewritten by
    /// the next checkpoint before any entry of this version goes into it.
    file_version: u16,
    /// Commits that are durable (in this file or in the write-ahead
    /// journal), with the number of the change that made each: the only
    /// ones readers see. A removal stays as `None` until the next
    /// checkpoint, which starts only when no plan is in flight, so that an
    /// older plan completing late cannot bring the commit back.
    durable: HashMap<String, (u64, Change)>,
    /// Changes since the last sync point took them.
    pending: HashMap<String, (u64, Change)>,
    /// Pending changes that describe records of another key (an idempotent
    /// producer's state and its partition): the journal batch holding the
    /// records' last entry holds them too, when they fit one batch.
    attached: HashMap<String, String>,
    /// Changes a sync point took and has not yet completed (it is
    /// fdatasyncing without the store's lock), the latest per key: neither
    /// pending nor durable meanwhile, yet a writer building on its own
    /// change must see them ([`CommittedOffsets::latest`]).
    in_flight: HashMap<String, (u64, Change)>,
    /// Durable changes that are in the write-ahead journal but not yet in
    /// this file: the next checkpoint writes them here before it deletes
    /// the journal files holding them.
    uncheckpointed: HashMap<String, Change>,
    /// Number the next change gets.
    next_change: u64,
    /// Size the file would have with one entry per key: what compaction
    /// compares the file against.
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

/// One entry of the file, decoded in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key's bytes (UTF-8 when seglog wrote them).
    pub key: &'a [u8],
    /// The committed offset and value, or `None` for a removal.
    pub commit: Option<(u64, &'a [u8])>,
    /// Where the entry starts in the file.
    pub position: u64,
}

/// Decodes a journal: the entries up to the first invalid byte, and where
/// and why decoding stopped, if before the end. Entries of a file of
/// version 1 to 4 are a key alone; of version 5, flags, key and value
/// (`segment-format.md`). Used by open and by `inspect`.
pub fn decode_journal(bytes: &[u8]) -> std::result::Result<JournalScan<'_>, DecodeError> {
    let header = format::decode_header(bytes)?;
    if header.kind != FileKind::Offsets {
        return Err(DecodeError::BadMagic {
            found: header.kind.magic(),
        });
    }
    let with_values = header.version >= VALUE_FORMAT_VERSION;
    let mut entries = Vec::new();
    let mut position = FILE_HEADER_SIZE;
    while position < bytes.len() {
        let decoded = format::decode_record(&bytes[position..]).and_then(|record| {
            let entry = if with_values {
                decode_payload(record.payload, record.offset, position as u64)?
            } else {
                Entry {
                    key: record.payload,
                    commit: Some((record.offset, &[])),
                    position: position as u64,
                }
            };
            Ok((entry, record.size()))
        });
        match decoded {
            Ok((entry, size)) => {
                entries.push(entry);
                position += size;
            }
            Err(error) => {
                return Ok(JournalScan {
                    version: header.version,
                    entries,
                    end_position: position as u64,
                    stop: Some(error),
                });
            }
        }
    }
    Ok(JournalScan {
        version: header.version,
        entries,
        end_position: position as u64,
        stop: None,
    })
}

/// Decodes a version 5 entry's payload and checks every field.
fn decode_payload(
    payload: &[u8],
    offset: u64,
    position: u64,
) -> std::result::Result<Entry<'_>, DecodeError> {
    let bad = |why: String| DecodeError::BadEntry { why };
    let fixed = payload
        .get(..ENTRY_KEY_POS)
        .ok_or_else(|| bad(format!("a payload of {} bytes", payload.len())))?;
    let flags = fixed[ENTRY_FLAGS_POS];
    let key_len = usize::from(format::u16_at(fixed, ENTRY_KEY_LENGTH_POS));
    if flags & !ENTRY_FLAG_REMOVED != 0 {
        return Err(bad(format!("unknown flags {flags:#04x}")));
    }
    if key_len > KEY_BYTES_MAX {
        return Err(bad(format!("key length {key_len} over {KEY_BYTES_MAX}")));
    }
    let key = payload
        .get(ENTRY_KEY_POS..ENTRY_KEY_POS + key_len)
        .ok_or_else(|| bad(format!("key length {key_len} runs past the entry")))?;
    let value = &payload[ENTRY_KEY_POS + key_len..];
    if value.len() > COMMIT_VALUE_BYTES_MAX {
        return Err(bad(format!(
            "a value of {} bytes, over {COMMIT_VALUE_BYTES_MAX}",
            value.len()
        )));
    }
    let commit = if flags & ENTRY_FLAG_REMOVED != 0 {
        if offset != 0 || !value.is_empty() {
            return Err(bad("a removal with an offset or a value".into()));
        }
        None
    } else {
        Some((offset, value))
    };
    Ok(Entry {
        key,
        commit,
        position,
    })
}

/// What [`decode_journal`] found.
pub struct JournalScan<'a> {
    /// The format version of the file's header.
    pub version: u16,
    /// The entries in file order.
    pub entries: Vec<Entry<'a>>,
    /// Position after the last valid entry.
    pub end_position: u64,
    /// Why decoding stopped before the end of the file, if it did.
    pub stop: Option<DecodeError>,
}

/// Bytes one version 5 entry for `key` and `value` takes.
fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    format::record_size(ENTRY_KEY_POS + key.len() + value.len()) as u64
}

/// Appends a version 5 entry: a commit, or the removal of `key`'s.
pub fn encode_entry(out: &mut Vec<u8>, key: &str, change: &Change) {
    let (flags, offset, value): (u8, u64, &[u8]) = match change {
        Some(c) => (0, c.offset, &c.value),
        None => (ENTRY_FLAG_REMOVED, 0, &[]),
    };
    let mut payload = Vec::with_capacity(ENTRY_KEY_POS + key.len() + value.len());
    payload.push(flags);
    payload.extend_from_slice(&(key.len() as u16).to_le_bytes());
    payload.extend_from_slice(key.as_bytes());
    payload.extend_from_slice(value);
    format::encode_record(out, offset, &payload);
}

/// The whole file for `offsets`: a header and one entry per key.
pub fn journal_bytes<'a>(offsets: impl Iterator<Item = (&'a String, &'a Committed)>) -> Vec<u8> {
    let mut bytes = format::encode_header(&FileHeader {
        kind: FileKind::Offsets,
        version: FORMAT_VERSION,
        base_offset: 0,
    })
    .to_vec();
    let mut keys: Vec<_> = offsets.collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (key, committed) in keys {
        encode_entry(&mut bytes, key, &Some(committed.clone()));
    }
    bytes
}

/// Applies `change` of number `number` to `map[key]` unless a later change
/// is there already.
fn apply(map: &mut HashMap<String, (u64, Change)>, key: &str, number: u64, change: Change) {
    match map.get_mut(key) {
        Some(slot) if slot.0 > number => {}
        Some(slot) => *slot = (number, change),
        None => {
            map.insert(key.to_string(), (number, change));
        }
    }
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
                fsutil::rewrite_atomic(&*fs, &path, &journal_bytes(std::iter::empty()))?;
                fs.read(&path).map_err(|e| Error::io("read", &path, e))?
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let scan = decode_journal(&bytes).map_err(|e| Error::corrupt(&path, 0, e.to_string()))?;
        if let Some(stop @ DecodeError::BadEntry { .. }) = &scan.stop {
            // Its CRC matched: not a torn write but a rule broken.
            return Err(Error::corrupt(&path, scan.end_position, stop.to_string()));
        }
        let mut durable: HashMap<String, (u64, Change)> = HashMap::new();
        let mut next_change = 0;
        for entry in &scan.entries {
            let key = std::str::from_utf8(entry.key)
                .map_err(|_| Error::corrupt(&path, entry.position, "key is not UTF-8"))?;
            let change = entry.commit.map(|(offset, value)| Committed {
                offset,
                value: value.to_vec(),
            });
            // Before version 5 the largest offset was the commit, and a
            // lower one could follow a higher one (the node compared only
            // against durable commits while a sync point was in flight).
            let lower = scan.version < VALUE_FORMAT_VERSION
                && matches!((&change, durable.get(key)),
                    (Some(new), Some((_, Some(known)))) if known.offset >= new.offset);
            if !lower {
                apply(&mut durable, key, next_change, change);
            }
            next_change += 1;
        }
        durable.retain(|_, (_, change)| change.is_some());
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
        let mut offsets = CommittedOffsets {
            fs,
            path,
            file,
            file_len: scan.end_position,
            file_version: scan.version,
            durable,
            pending: HashMap::new(),
            attached: HashMap::new(),
            in_flight: HashMap::new(),
            uncheckpointed: HashMap::new(),
            next_change,
            live_bytes: 0,
        };
        offsets.live_bytes = offsets.measure_live_bytes();
        Ok(offsets)
    }

    /// The size of the file with one entry per live key.
    fn measure_live_bytes(&self) -> u64 {
        FILE_HEADER_SIZE as u64
            + self
                .iter_committed()
                .map(|(key, c)| entry_bytes(key, &c.value))
                .sum::<u64>()
    }

    /// The durable committed offset of `key`.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.get_committed(key).map(|c| c.offset)
    }

    /// The durable commit of `key`, with its value.
    pub fn get_committed(&self, key: &str) -> Option<&Committed> {
        self.durable.get(key).and_then(|(_, c)| c.as_ref())
    }

    /// The commit of `key` as the sync points taken and to come will leave
    /// it: a pending change if there is one, else one a sync point in
    /// flight took, else the durable commit. For a writer that builds on
    /// its own earlier, not yet durable, change (a producer's state between
    /// two pipelined batches, the next producer id).
    pub fn latest(&self, key: &str) -> Option<&Committed> {
        match self.pending.get(key).or_else(|| self.in_flight.get(key)) {
            Some((_, change)) => change.as_ref(),
            None => self.get_committed(key),
        }
    }

    /// The highest offset `key` has among its pending, in-flight and
    /// durable commits: what the Maelstrom node's forward-only rule
    /// compares against.
    pub fn highest(&self, key: &str) -> Option<u64> {
        [&self.pending, &self.in_flight, &self.durable]
            .into_iter()
            .filter_map(|map| map.get(key)?.1.as_ref().map(|c| c.offset))
            .max()
    }

    /// Every key whose latest commit ([`CommittedOffsets::latest`]) exists:
    /// durable, in flight or pending. For a writer that removes commits by
    /// a prefix, so that one not yet durable is removed too.
    pub fn latest_keys(&self) -> impl Iterator<Item = &str> {
        let mut keys: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for map in [&self.durable, &self.in_flight, &self.pending] {
            keys.extend(map.keys().map(String::as_str));
        }
        keys.into_iter().filter(|key| self.latest(key).is_some())
    }

    /// Every durable committed offset.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.iter_committed().map(|(key, c)| (key, c.offset))
    }

    /// Every durable commit, with its value.
    pub fn iter_committed(&self) -> impl Iterator<Item = (&str, &Committed)> {
        self.durable
            .iter()
            .filter_map(|(key, (_, c))| Some((key.as_str(), c.as_ref()?)))
    }

    /// Number of keys with a durable committed offset.
    pub fn len(&self) -> usize {
        self.iter_committed().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a commit with the Maelstrom node's rule; durable after the
    /// next sync. A commit at or below the highest offset committed, durable
    /// or not (a higher one may be in a sync point in flight), changes
    /// nothing: offsets only move forward, whatever order sync points
    /// complete in.
    pub fn commit(&mut self, key: &str, offset: u64) {
        if self.highest(key).is_some_and(|known| known >= offset) {
            return;
        }
        self.change(
            key,
            Some(Committed {
                offset,
                value: Vec::new(),
            }),
        );
    }

    /// Records a change of `key`'s commit as given, lower offsets included
    /// (Kafka's rule: a consumer that seeks back commits where it is);
    /// durable after the next sync. The caller checked the value's size.
    pub fn change(&mut self, key: &str, change: Change) {
        let number = self.next_change;
        self.next_change += 1;
        self.pending.insert(key.to_string(), (number, change));
        self.attached.remove(key);
    }

    /// [`CommittedOffsets::change`] of a commit that describes records of
    /// `records_key` appended before it: the sync point writes it right
    /// after them ([`CommittedOffsets::take_attached`]).
    pub fn change_after(&mut self, key: &str, change: Change, records_key: &str) {
        self.change(key, change);
        self.attached
            .insert(key.to_string(), records_key.to_string());
    }

    /// Takes, with [`CommittedOffsets::take_pending`], which of the taken
    /// changes describe records of which key.
    pub fn take_attached(&mut self) -> HashMap<String, String> {
        std::mem::take(&mut self.attached)
    }

    /// True when commits are waiting for a sync.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the changes not yet in any journal batch; pass them to
    /// [`CommittedOffsets::complete`] once the batch holding them is durable.
    /// Until then they stay visible to [`CommittedOffsets::latest`] as in
    /// flight.
    pub fn take_pending(&mut self) -> Commits {
        let taken = std::mem::take(&mut self.pending);
        for (key, (number, change)) in &taken {
            apply(&mut self.in_flight, key, *number, change.clone());
        }
        taken
    }

    /// Publishes changes whose journal batch is durable, and forgets them
    /// as in flight (unless a later sync point took a later change).
    pub fn complete(&mut self, commits: Commits) {
        for (key, (number, change)) in commits {
            if self.in_flight.get(&key).is_some_and(|(n, _)| *n <= number) {
                self.in_flight.remove(&key);
            }
            self.publish(&key, number, change);
        }
    }

    /// A durable change found in the write-ahead journal at open, in
    /// journal order. A commit from a journal file of a version before 5
    /// (`forward_only`) counts only when it is higher than the key's:
    /// those versions took the largest offset, and could write a lower
    /// commit after a higher one.
    pub fn recovered(&mut self, key: &str, change: Change, forward_only: bool) {
        if forward_only
            && let (Some(new), Some(known)) = (&change, self.get(key))
            && known >= new.offset
        {
            return;
        }
        let number = self.next_change;
        self.next_change += 1;
        self.publish(key, number, change);
    }

    fn publish(&mut self, key: &str, number: u64, change: Change) {
        if self
            .durable
            .get(key)
            .is_some_and(|(known, _)| *known > number)
        {
            return;
        }
        let size = |c: Option<&Committed>| c.map_or(0, |c| entry_bytes(key, &c.value));
        self.live_bytes =
            (self.live_bytes + size(change.as_ref())).saturating_sub(size(self.get_committed(key)));
        self.uncheckpointed.insert(key.to_string(), change.clone());
        apply(&mut self.durable, key, number, change);
    }

    /// What a checkpoint must write so that this file holds every durable
    /// commit: the entries not in it yet, or the whole file rewritten when
    /// it has grown well past what it describes or has an older format
    /// version's header (so no entry of this version goes into a file an
    /// older build would misread). `None` when it is up to date. The caller
    /// runs it, then calls [`CommittedOffsets::checkpointed`]; it calls this
    /// only while no sync plan is in flight, which is when removals can be
    /// forgotten.
    pub fn checkpoint_write(&mut self, convert: bool) -> Option<OffsetsWrite> {
        self.durable.retain(|_, (_, change)| change.is_some());
        let old_file = self.file_version < FORMAT_VERSION;
        if self.uncheckpointed.is_empty() && !convert {
            return None;
        }
        let mut entries = Vec::new();
        let mut keys: Vec<_> = self.uncheckpointed.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (key, change) in keys {
            encode_entry(&mut entries, key, change);
        }
        let grown = self.file_len + entries.len() as u64;
        let due = grown > COMPACT_BYTES_MIN.max(COMPACT_RATIO * self.live_bytes);
        self.uncheckpointed.clear();
        if due || convert || old_file {
            let bytes = journal_bytes(
                self.durable
                    .iter()
                    .filter_map(|(key, (_, c))| Some((key, c.as_ref()?))),
            );
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
                self.file_version = FORMAT_VERSION;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::RealFs;

    fn open(dir: &Path) -> CommittedOffsets {
        CommittedOffsets::open(Arc::new(RealFs), dir, false).expect("open")
    }

    fn committed(offset: u64) -> Change {
        Some(Committed {
            offset,
            value: Vec::new(),
        })
    }

    /// A change a sync point took is still the latest while the sync point
    /// fdatasyncs, and stops being in flight once completed.
    #[test]
    fn a_change_taken_by_a_sync_point_is_the_latest_until_durable() {
        let tmp = tempfile::TempDir::new().expect("tmp");
        let mut offsets = open(tmp.path());
        offsets.change("k", committed(5));
        let taken = offsets.take_pending();
        assert_eq!(offsets.latest("k"), committed(5).as_ref());
        assert_eq!(offsets.get("k"), None, "readers see durable commits only");
        offsets.change("k", committed(6));
        let later = offsets.take_pending();
        offsets.complete(taken);
        assert_eq!(
            offsets.latest("k"),
            committed(6).as_ref(),
            "the later sync point's change is still in flight"
        );
        offsets.change("j", committed(1));
        offsets.change("gone", None);
        let mut keys: Vec<&str> = offsets.latest_keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["j", "k"], "pending and in flight, removals left out");
        offsets.complete(later);
        assert!(offsets.in_flight.is_empty());
        assert_eq!(offsets.latest("k"), committed(6).as_ref());
    }

    /// The node's rule holds while a higher commit is in flight: the lower
    /// one is refused, whatever order the sync points complete in.
    #[test]
    fn the_node_commit_is_refused_below_one_in_flight() {
        let tmp = tempfile::TempDir::new().expect("tmp");
        let mut offsets = open(tmp.path());
        offsets.commit("k", 10);
        let higher = offsets.take_pending();
        offsets.commit("k", 5);
        let lower = offsets.take_pending();
        offsets.complete(lower);
        offsets.complete(higher);
        assert_eq!(offsets.get("k"), Some(10));
    }

    /// Entries of a version 4 file, and commits of a version 4 journal,
    /// keep the largest offset: a lower commit could follow a higher one.
    #[test]
    fn commits_before_version_5_keep_the_largest_offset() {
        let tmp = tempfile::TempDir::new().expect("tmp");
        let mut bytes = format::encode_header(&FileHeader {
            kind: FileKind::Offsets,
            version: VALUE_FORMAT_VERSION - 1,
            base_offset: 0,
        })
        .to_vec();
        format::encode_record(&mut bytes, 10, b"k");
        format::encode_record(&mut bytes, 5, b"k");
        format::encode_record(&mut bytes, 3, b"j");
        std::fs::write(tmp.path().join(OFFSETS_FILE_NAME), bytes).expect("write");
        let mut offsets = open(tmp.path());
        assert_eq!(offsets.get("k"), Some(10));
        offsets.recovered("k", committed(7), true);
        offsets.recovered("j", committed(4), true);
        assert_eq!(
            offsets.get("k"),
            Some(10),
            "a version 4 journal's lower commit"
        );
        assert_eq!(offsets.get("j"), Some(4));
        offsets.recovered("k", committed(7), false);
        assert_eq!(
            offsets.get("k"),
            Some(7),
            "a version 5 journal's last commit"
        );
    }
}
