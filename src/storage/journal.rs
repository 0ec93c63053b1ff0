//! The store-wide write-ahead journal (format versions 2 and 3).
//!
//! A journal sync point writes every record and commit it covers as one
//! *batch* at the end of the current journal file and makes it durable with
//! one fdatasync of that file, however many keys it touches. Records reach
//! their keys' segments only after that (see `keylog.rs`), and segments are
//! synced later by a checkpoint (`checkpoint.rs`), after which the journal
//! files it covers are deleted.
//!
//! ```text
//! DATA/journal/00000000000000000007.wal   header (kind Journal, base offset = 7), batches
//! ```
//!
//! A batch is a 24-byte header and entries; every entry has a 20-byte header,
//! the key bytes and, for records, the records' frames exactly as they are in
//! a `.log`. A sync point over [`BATCH_BYTES_MAX`] is several batches, each
//! but the last flagged [`BATCH_FLAG_CONTINUED`]: recovery keeps a sync
//! point only whole. The layout is specified in `segment-format.md`; this file holds
//! the codec (no I/O), the reader used by recovery and the inspector, and the
//! writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::backend::{Backend, FileIo, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{
    self, DecodeError, FILE_HEADER_SIZE, FORMAT_VERSION, FileHeader, FileKind, u16_at, u32_at,
    u64_at,
};
use crate::storage::fsutil;
use crate::storage::keyname::KEY_BYTES_MAX;
use crate::storage::offsets::COMMIT_VALUE_BYTES_MAX;

/// Directory of the journal files inside the data directory.
pub const JOURNAL_DIR_NAME: &str = "journal";

/// Extension of a journal file.
const JOURNAL_EXTENSION: &str = ".wal";

// Batch header: length of the entries, CRC, batch number, entry count, flags.
pub const BATCH_LENGTH_POS: usize = 0;
pub const BATCH_CRC_POS: usize = BATCH_LENGTH_POS + 4;
pub const BATCH_NUMBER_POS: usize = BATCH_CRC_POS + 4;
pub const BATCH_COUNT_POS: usize = BATCH_NUMBER_POS + 8;
pub const BATCH_FLAGS_POS: usize = BATCH_COUNT_POS + 4;
/// Size of the header before each batch's entries.
pub const BATCH_HEADER_SIZE: usize = BATCH_FLAGS_POS + 4;

/// Batch flag: the batch's sync point goes on in the next batch. Set on
/// every batch of a sync point but its last, so that a batch without it
/// ends its sync point. The field was reserved (always 0) before the flag
/// existed: every batch of such a journal is a whole sync point, as it was
/// written.
pub const BATCH_FLAG_CONTINUED: u32 = 1;
/// Every flag a batch may carry. Any other bit set is corruption, not
/// something to ignore: a later version that gives a bit a meaning writes
/// files of a later format version, which this build refuses.
const BATCH_FLAGS_KNOWN: u32 = BATCH_FLAG_CONTINUED;

// Entry header: kind, reserved, key length, record count, offset, data length.
pub const ENTRY_KIND_POS: usize = 0;
pub const ENTRY_RESERVED_POS: usize = ENTRY_KIND_POS + 1;
pub const ENTRY_KEY_LENGTH_POS: usize = ENTRY_RESERVED_POS + 1;
pub const ENTRY_COUNT_POS: usize = ENTRY_KEY_LENGTH_POS + 2;
pub const ENTRY_OFFSET_POS: usize = ENTRY_COUNT_POS + 4;
pub const ENTRY_DATA_LENGTH_POS: usize = ENTRY_OFFSET_POS + 8;
/// Size of the header before each entry's key and data.
pub const ENTRY_HEADER_SIZE: usize = ENTRY_DATA_LENGTH_POS + 4;

/// Largest batch, header excluded. Big enough for any one entry (a
/// record of `MESSAGE_BYTES_MAX` and a key of `KEY_BYTES_MAX`) many times
/// over, so a sync point is one batch unless it carries more than 16 MiB;
/// small enough that a garbage length in a torn tail fails fast instead of
/// sending recovery to look far past the end of the file.
pub const BATCH_BYTES_MAX: usize = 16 << 20;

/// Entry kinds (the first byte of an entry).
const KIND_RECORDS: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_DIRECT: u8 = 3;
const KIND_NEXT_FILE: u8 = 4;
const KIND_LOG_START: u8 = 5;
const KIND_REMOVED: u8 = 6;
const KIND_UNCOMMITTED: u8 = 7;

/// One entry of a batch, decoded in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Records of `key` from offset `first`: `count` frames, byte for byte
    /// what its segment holds.
    Records {
        key: &'a str,
        first: u64,
        count: u32,
        frames: &'a [u8],
    },
    /// `key` is committed up to `offset`, with `value` stored beside it
    /// (empty before format version 5).
    Commit {
        key: &'a str,
        offset: u64,
        value: &'a [u8],
    },
    /// `key`'s commit is removed (format version 5).
    Uncommitted { key: &'a str },
    /// A direct sync point may have written records of `key` from offset
    /// `from` on into its segment without journaling them: recovery checks
    /// that key's segments and syncs what it keeps.
    Direct { key: &'a str, from: u64 },
    /// This file is complete; the journal continues in file `seq`.
    NextFile { seq: u64 },
    /// `key`'s log starts at `offset`: its segments below it are deleted
    /// (retention), and records below it are gone. Durable before any of
    /// those files is deleted (format version 3).
    LogStart { key: &'a str, offset: u64 },
    /// `key`'s log is removed: every earlier entry about it is void, and
    /// its directory is deleted. Durable before the directory is touched
    /// (format version 3).
    Removed { key: &'a str },
}

impl Entry<'_> {
    /// The key the entry is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Entry::Records { key, .. }
            | Entry::Commit { key, .. }
            | Entry::Direct { key, .. }
            | Entry::LogStart { key, .. }
            | Entry::Removed { key }
            | Entry::Uncommitted { key } => Some(key),
            Entry::NextFile { .. } => None,
        }
    }
}

/// One batch decoded in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    /// Consecutive across the journal's files: the next batch has this plus one.
    pub number: u64,
    /// The entries, in the order written.
    pub entries: Vec<Entry<'a>>,
    /// Bytes the batch occupies, header included.
    pub size: usize,
    /// More batches of its sync point follow ([`BATCH_FLAG_CONTINUED`]).
    pub continued: bool,
}

/// Name of the journal file with sequence number `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}{JOURNAL_EXTENSION}")
}

/// The sequence number of a journal file's name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(JOURNAL_EXTENSION)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The header of journal file `seq`.
pub fn file_header(seq: u64) -> [u8; FILE_HEADER_SIZE] {
    format::encode_header(&FileHeader {
        kind: FileKind::Journal,
        version: FORMAT_VERSION,
        base_offset: seq,
    })
}

/// Builds the batches of one sync point. Starts a new batch whenever the
/// next entry would take the current one past [`BATCH_BYTES_MAX`], so a
/// sync point of any size is written as whole batches, every one but the
/// last flagged [`BATCH_FLAG_CONTINUED`]. One builder's batches go to one
/// journal file in one write ([`JournalWriter::append`]), so a sync point
/// never spans two files.
pub struct BatchBuilder {
    /// Every batch built so far, back to back.
    out: Vec<u8>,
    /// Where the batch being built starts in `out`.
    start: usize,
    /// Entries in the batch being built.
    count: u32,
    /// Number of the batch being built.
    number: u64,
    /// A next-file marker was added: it ends its file, so nothing may
    /// follow it (recovery refuses a batch after it).
    ends_file: bool,
}

impl BatchBuilder {
    /// A builder whose first batch gets number `first_number`.
    pub fn new(first_number: u64) -> BatchBuilder {
        let mut builder = BatchBuilder {
            out: Vec::new(),
            start: 0,
            count: 0,
            number: first_number,
            ends_file: false,
        };
        builder.open_batch();
        builder
    }

    fn open_batch(&mut self) {
        self.start = self.out.len();
        self.count = 0;
        self.out.extend_from_slice(&[0; BATCH_HEADER_SIZE]);
    }

    /// Ends the batch being built; `continued` when more batches of the
    /// sync point follow it.
    fn close_batch(&mut self, continued: bool) {
        let start = self.start;
        let length = (self.out.len() - start - BATCH_HEADER_SIZE) as u32;
        let flags = if continued { BATCH_FLAG_CONTINUED } else { 0 };
        let header = &mut self.out[start..start + BATCH_HEADER_SIZE];
        header[BATCH_LENGTH_POS..BATCH_CRC_POS].copy_from_slice(&length.to_le_bytes());
        header[BATCH_NUMBER_POS..BATCH_COUNT_POS].copy_from_slice(&self.number.to_le_bytes());
        header[BATCH_COUNT_POS..BATCH_FLAGS_POS].copy_from_slice(&self.count.to_le_bytes());
        header[BATCH_FLAGS_POS..BATCH_HEADER_SIZE].copy_from_slice(&flags.to_le_bytes());
        let crc = batch_crc(&self.out[start..]);
        self.out[start + BATCH_CRC_POS..start + BATCH_NUMBER_POS]
            .copy_from_slice(&crc.to_le_bytes());
        self.number += 1;
    }

    /// Makes room for an entry of `size` bytes.
    fn room_for(&mut self, size: usize) {
        let used = self.out.len() - self.start - BATCH_HEADER_SIZE;
        if self.count > 0 && used + size > BATCH_BYTES_MAX {
            self.close_batch(true);
            self.open_batch();
        }
    }

    /// Ends the batch being built as one its sync point goes on from, as
    /// the size limit does: for tests of sync points of several batches
    /// without 16 MiB of entries in each.
    #[cfg(test)]
    pub(crate) fn split_batch(&mut self) {
        assert!(self.count > 0, "an empty batch is never written");
        self.close_batch(true);
        self.open_batch();
    }

    fn entry_header(&mut self, kind: u8, key: &str, count: u32, offset: u64, data_len: usize) {
        assert!(key.len() <= KEY_BYTES_MAX, "key over the limit");
        assert!(!self.ends_file, "an entry after the next-file marker");
        self.room_for(ENTRY_HEADER_SIZE + key.len() + data_len);
        self.out.push(kind);
        self.out.push(0);
        self.out
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.out.extend_from_slice(&count.to_le_bytes());
        self.out.extend_from_slice(&offset.to_le_bytes());
        self.out.extend_from_slice(&(data_len as u32).to_le_bytes());
        self.out.extend_from_slice(key.as_bytes());
        self.count += 1;
    }

    /// Bytes an entry of `key` with `data` bytes takes.
    pub fn entry_bytes(key: &str, data: usize) -> usize {
        ENTRY_HEADER_SIZE + key.len() + data
    }

    /// Starts a new batch unless `size` bytes of entries fit in the current
    /// one, or would not fit in any: entries that must stay together (a
    /// key's records and the commits describing them) then share a batch.
    pub fn keep_together(&mut self, size: usize) {
        if size <= BATCH_BYTES_MAX {
            self.room_for(size);
        }
    }

    /// Adds the records of `key` whose frames (as in a `.log`) are `frames`,
    /// the first with offset `first`. Split into several entries when they
    /// do not fit in one batch.
    pub fn add_records(&mut self, key: &str, first: u64, frames: &[u8]) {
        let room = BATCH_BYTES_MAX - ENTRY_HEADER_SIZE - key.len();
        let mut rest = frames;
        let mut offset = first;
        while !rest.is_empty() {
            // As many whole frames as fit; at least one, which always fits.
            let mut take = 0;
            let mut count = 0u32;
            while take < rest.len() {
                let size = frame_size(&rest[take..]);
                if take > 0 && take + size > room {
                    break;
                }
                take += size;
                count += 1;
            }
            self.entry_header(KIND_RECORDS, key, count, offset, take);
            self.out.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            offset += u64::from(count);
        }
    }

    /// Adds a commit of `key` up to `offset`, with no value.
    pub fn add_commit(&mut self, key: &str, offset: u64) {
        self.add_commit_value(key, offset, &[]);
    }

    /// Adds a commit of `key` up to `offset` with `value` stored beside it
    /// (at most `offsets::COMMIT_VALUE_BYTES_MAX` bytes).
    pub fn add_commit_value(&mut self, key: &str, offset: u64, value: &[u8]) {
        assert!(
            value.len() <= COMMIT_VALUE_BYTES_MAX,
            "value over the limit"
        );
        self.entry_header(KIND_COMMIT, key, 0, offset, value.len());
        self.out.extend_from_slice(value);
    }

    /// Adds the removal of `key`'s commit.
    pub fn add_uncommitted(&mut self, key: &str) {
        self.entry_header(KIND_UNCOMMITTED, key, 0, 0, 0);
    }

    /// Adds the note that records of `key` from `from` on may be written to
    /// its segment directly, without being journaled.
    pub fn add_direct(&mut self, key: &str, from: u64) {
        self.entry_header(KIND_DIRECT, key, 0, from, 0);
    }

    /// Adds the note that `key`'s log now starts at `offset`.
    pub fn add_log_start(&mut self, key: &str, offset: u64) {
        self.entry_header(KIND_LOG_START, key, 0, offset, 0);
    }

    /// Adds the note that `key`'s log is removed.
    pub fn add_removed(&mut self, key: &str) {
        self.entry_header(KIND_REMOVED, key, 0, 0, 0);
    }

    /// Adds the marker that the journal continues in file `seq`.
    pub fn add_next_file(&mut self, seq: u64) {
        self.entry_header(KIND_NEXT_FILE, "", 0, seq, 0);
        self.ends_file = true;
    }

    /// True when no entry was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.start == 0
    }

    /// The batches' bytes (none if no entry was added) and the number the
    /// next batch gets. The last batch ends the sync point (no
    /// [`BATCH_FLAG_CONTINUED`]).
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        if self.count > 0 {
            self.close_batch(false);
        } else {
            self.out.truncate(self.start);
        }
        (self.out, self.number)
    }
}

/// Size of the record frame at the start of `bytes`, which the caller made.
fn frame_size(bytes: &[u8]) -> usize {
    format::record_size(u32_at(bytes, format::RECORD_LENGTH_POS) as usize)
}

/// CRC-32/IEEE of a batch: the length field and everything after the CRC
/// field, header and entries, as for a record frame.
fn batch_crc(batch: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&batch[BATCH_LENGTH_POS..BATCH_CRC_POS]);
    hasher.update(&batch[BATCH_NUMBER_POS..]);
    hasher.finalize()
}

fn bad(why: impl Into<String>) -> DecodeError {
    DecodeError::BadBatch { why: why.into() }
}

/// Decodes and checks the batch at the start of `bytes`: its CRC, then
/// every entry (kind, key, and for records every frame's CRC and offset).
pub fn decode_batch(bytes: &[u8]) -> std::result::Result<Batch<'_>, DecodeError> {
    if bytes.len() < BATCH_HEADER_SIZE {
        return Err(DecodeError::Truncated {
            needed: BATCH_HEADER_SIZE,
            available: bytes.len(),
        });
    }
    let length = u32_at(bytes, BATCH_LENGTH_POS) as usize;
    let stored = u32_at(bytes, BATCH_CRC_POS);
    if length > BATCH_BYTES_MAX {
        if bytes[..BATCH_HEADER_SIZE].iter().all(|&b| b == 0) {
            return Err(DecodeError::Zeroed);
        }
        return Err(bad(format!(
            "length {length} exceeds the maximum of {BATCH_BYTES_MAX}"
        )));
    }
    let size = BATCH_HEADER_SIZE + length;
    if bytes.len() < size {
        return Err(DecodeError::Truncated {
            needed: size,
            available: bytes.len(),
        });
    }
    let got = batch_crc(&bytes[..size]);
    if got != stored {
        if bytes[..BATCH_HEADER_SIZE].iter().all(|&b| b == 0) {
            return Err(DecodeError::Zeroed);
        }
        return Err(DecodeError::ChecksumMismatch {
            expected: stored,
            got,
        });
    }
    let number = u64_at(bytes, BATCH_NUMBER_POS);
    let count = u32_at(bytes, BATCH_COUNT_POS);
    let flags = u32_at(bytes, BATCH_FLAGS_POS);
    if flags & !BATCH_FLAGS_KNOWN != 0 {
        return Err(bad(format!("unknown flags {flags:#010x} in the header")));
    }
    let mut entries = Vec::new();
    let mut position = BATCH_HEADER_SIZE;
    while position < size {
        let (entry, entry_size) = decode_entry(&bytes[position..size])
            .map_err(|why| bad(format!("entry at batch position {position}: {why}")))?;
        entries.push(entry);
        position += entry_size;
    }
    if entries.len() != count as usize {
        return Err(bad(format!(
            "header counts {count} entries, {} present",
            entries.len()
        )));
    }
    Ok(Batch {
        number,
        entries,
        size,
        continued: flags & BATCH_FLAG_CONTINUED != 0,
    })
}

fn decode_entry(bytes: &[u8]) -> std::result::Result<(Entry<'_>, usize), String> {
    if bytes.len() < ENTRY_HEADER_SIZE {
        return Err("shorter than an entry header".into());
    }
    let kind = bytes[ENTRY_KIND_POS];
    if bytes[ENTRY_RESERVED_POS] != 0 {
        return Err("reserved byte is not zero".into());
    }
    let key_len = usize::from(u16_at(bytes, ENTRY_KEY_LENGTH_POS));
    let count = u32_at(bytes, ENTRY_COUNT_POS);
    let offset = u64_at(bytes, ENTRY_OFFSET_POS);
    let data_len = u32_at(bytes, ENTRY_DATA_LENGTH_POS) as usize;
    if key_len > KEY_BYTES_MAX {
        return Err(format!("key length {key_len} over {KEY_BYTES_MAX}"));
    }
    let size = ENTRY_HEADER_SIZE + key_len + data_len;
    if bytes.len() < size {
        return Err("runs past the end of its batch".into());
    }
    let key = std::str::from_utf8(&bytes[ENTRY_HEADER_SIZE..ENTRY_HEADER_SIZE + key_len])
        .map_err(|_| "key is not UTF-8".to_string())?;
    let data = &bytes[ENTRY_HEADER_SIZE + key_len..size];
    fn no_data<'e>(
        entry: Entry<'e>,
        count: u32,
        data: &[u8],
    ) -> std::result::Result<Entry<'e>, String> {
        if count != 0 || !data.is_empty() {
            return Err("an entry that is not records carries records".into());
        }
        Ok(entry)
    }
    let entry = match kind {
        KIND_RECORDS => {
            check_frames(data, offset, count)?;
            Entry::Records {
                key,
                first: offset,
                count,
                frames: data,
            }
        }
        KIND_COMMIT if count != 0 => return Err("a commit with a record count".into()),
        KIND_COMMIT if data.len() > COMMIT_VALUE_BYTES_MAX => {
            return Err(format!(
                "a commit value of {} bytes, over {COMMIT_VALUE_BYTES_MAX}",
                data.len()
            ));
        }
        KIND_COMMIT => Entry::Commit {
            key,
            offset,
            value: data,
        },
        KIND_UNCOMMITTED if offset == 0 => no_data(Entry::Uncommitted { key }, count, data)?,
        KIND_UNCOMMITTED => return Err("an uncommitted entry with an offset".into()),
        KIND_DIRECT => no_data(Entry::Direct { key, from: offset }, count, data)?,
        KIND_NEXT_FILE if key.is_empty() => no_data(Entry::NextFile { seq: offset }, count, data)?,
        KIND_NEXT_FILE => return Err("next-file marker with a key".into()),
        KIND_LOG_START => no_data(Entry::LogStart { key, offset }, count, data)?,
        KIND_REMOVED if offset == 0 => no_data(Entry::Removed { key }, count, data)?,
        KIND_REMOVED => return Err("removed entry with an offset".into()),
        other => return Err(format!("unknown entry kind {other}")),
    };
    Ok((entry, size))
}

/// Checks that `frames` are `count` valid log records with consecutive
/// offsets from `first`, and nothing else.
fn check_frames(frames: &[u8], first: u64, count: u32) -> std::result::Result<(), String> {
    if count == 0 {
        return Err("a records entry with no records".into());
    }
    let Some(end) = first.checked_add(u64::from(count)) else {
        return Err(format!(
            "{count} records from offset {first} pass the largest offset"
        ));
    };
    let mut position = 0;
    for expected in first..end {
        let record = format::decode_log_record(&frames[position..])
            .map_err(|e| format!("record {expected}: {e}"))?;
        if record.offset != expected {
            return Err(format!(
                "record offset {} where {expected} was expected",
                record.offset
            ));
        }
        position += record.size();
    }
    if position != frames.len() {
        return Err(format!(
            "{} bytes after its {count} records",
            frames.len() - position
        ));
    }
    Ok(())
}

/// Iterates over the `(offset, frame)` pairs of a records entry's frames
/// (which [`decode_batch`] checked); stops at anything that is not a whole
/// frame rather than trusting it.
pub fn frames(first: u64, frames: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut position = 0;
    let mut offset = Some(first);
    std::iter::from_fn(move || {
        let rest = frames.get(position..)?;
        if rest.len() < format::RECORD_HEADER_SIZE {
            return None;
        }
        let frame = rest.get(..frame_size(rest))?;
        let this = offset?;
        position += frame.len();
        offset = this.checked_add(1);
        Some((this, frame))
    })
}

/// What a scan of one journal file found.
#[derive(Debug)]
pub struct FileScan<'a> {
    /// The sequence number in the header.
    pub seq: u64,
    /// Valid batches with their positions, in file order.
    pub batches: Vec<(u64, Batch<'a>)>,
    /// Position after the last valid batch.
    pub end_position: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stop: Option<DecodeError>,
}

impl FileScan<'_> {
    /// How many of the valid batches make whole sync points: all up to the
    /// last one without [`BATCH_FLAG_CONTINUED`]. The rest, all flagged,
    /// are a sync point whose last batch is torn or missing.
    pub fn whole_sync_point_batches(&self) -> usize {
        self.batches
            .iter()
            .rposition(|(_, batch)| !batch.continued)
            .map_or(0, |last| last + 1)
    }
}

/// Decodes a journal file: its header, then batches up to the first one that
/// does not decode. Batch numbers are not checked here (the caller knows
/// what comes before this file).
pub fn scan_file(bytes: &[u8]) -> std::result::Result<FileScan<'_>, DecodeError> {
    let header = format::decode_header(bytes)?;
    if header.kind != FileKind::Journal {
        return Err(DecodeError::BadMagic {
            found: header.kind.magic(),
        });
    }
    let mut batches = Vec::new();
    let mut position = FILE_HEADER_SIZE;
    let mut stop = None;
    while position < bytes.len() {
        match decode_batch(&bytes[position..]) {
            Ok(batch) => {
                let size = batch.size;
                batches.push((position as u64, batch));
                position += size;
            }
            Err(error) => {
                stop = Some(error);
                break;
            }
        }
    }
    Ok(FileScan {
        seq: header.base_offset,
        batches,
        end_position: position as u64,
        stop,
    })
}

/// Looks for a valid batch anywhere after `from`: evidence that the damage
/// at `from` is a hole in the middle of the journal, not a torn tail.
pub fn find_batch_after(bytes: &[u8], from: u64) -> Option<u64> {
    let start = from as usize + 1;
    let last = bytes.len().checked_sub(BATCH_HEADER_SIZE)?;
    (start..=last)
        .find(|&position| {
            // The CRC is the expensive part: check the cheap fields first.
            let length = u32_at(bytes, position + BATCH_LENGTH_POS) as usize;
            length <= BATCH_BYTES_MAX
                && position + BATCH_HEADER_SIZE + length <= bytes.len()
                && decode_batch(&bytes[position..]).is_ok()
        })
        .map(|position| position as u64)
}

/// The journal files in `dir`, by sequence number, ascending.
pub fn list_files(fs: &dyn Backend, dir: &Path) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    let entries = match fs.list(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(seqs),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for entry in entries {
        if let Some(seq) = entry.name.to_str().and_then(parse_file_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// The journal file batches are appended to.
pub struct JournalWriter {
    /// The journal directory.
    dir: PathBuf,
    /// Sequence number of the file.
    seq: u64,
    /// Its path, for errors.
    path: PathBuf,
    /// The open file, shared with the sync plans that fdatasync it.
    file: Arc<dyn FileIo>,
    /// Bytes written to the file.
    len: u64,
    /// Number the next batch gets.
    next_batch: u64,
}

impl JournalWriter {
    /// Creates journal file `seq` holding only its header and makes it and
    /// its directory entry durable before any batch is written to it, so a
    /// durable batch is never in a file that can vanish.
    pub fn create(
        fs: &dyn Backend,
        dir: &Path,
        seq: u64,
        next_batch: u64,
    ) -> Result<JournalWriter> {
        let path = dir.join(file_name(seq));
        let file = fs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &path, e))?;
        let header = file_header(seq);
        file.write_all_at(&header, 0)
            .map_err(|e| Error::io("write", &path, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
        fsutil::sync_dir(fs, dir)?;
        Ok(JournalWriter {
            dir: dir.to_path_buf(),
            seq,
            path,
            file,
            len: header.len() as u64,
            next_batch,
        })
    }

    /// Continues the existing journal file `seq`, whose valid batches end at
    /// `len` (recovery has cut anything after).
    pub fn open(
        fs: &dyn Backend,
        dir: &Path,
        seq: u64,
        len: u64,
        next_batch: u64,
    ) -> Result<JournalWriter> {
        let path = dir.join(file_name(seq));
        let file = fs
            .open(&path, OpenMode::Write)
            .map_err(|e| Error::io("open", &path, e))?;
        Ok(JournalWriter {
            dir: dir.to_path_buf(),
            seq,
            path,
            file,
            len,
            next_batch,
        })
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> &Arc<dyn FileIo> {
        &self.file
    }

    /// Bytes written to the file, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= FILE_HEADER_SIZE as u64
    }

    /// A builder for the next batches.
    pub fn builder(&self) -> BatchBuilder {
        BatchBuilder::new(self.next_batch)
    }

    /// Writes the batches a builder made at the end of the file (no sync).
    /// On an error the store poisons: a failed write leaves the file's tail
    /// in a state only recovery may judge. All of a builder's batches go to
    /// this one file: the rotation to a new file happens between appends
    /// (`store/checkpointing.rs`), so a sync point never spans two files,
    /// and recovery refuses a journal whose sync point would.
    pub fn append(&mut self, builder: BatchBuilder) -> Result<()> {
        let (bytes, next_batch) = builder.finish();
        self.file
            .write_all_at(&bytes, self.len)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.len += bytes.len() as u64;
        self.next_batch = next_batch;
        Ok(())
    }

    /// Number the next batch gets.
    pub fn next_batch(&self) -> u64 {
        self.next_batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            format::encode_record(&mut out, first + i as u64, payload);
        }
        out
    }

    #[test]
    fn batch_round_trips_and_rejects_any_flipped_bit() {
        let mut builder = BatchBuilder::new(7);
        let frames = frames_of(3, &[b"1", b"\"two\""]);
        builder.add_records("k/é", 3, &frames);
        builder.add_commit("", 9);
        builder.add_commit_value("v", 10, b"meta");
        builder.add_uncommitted("u");
        builder.add_direct("d", 4);
        builder.add_log_start("l", 4096);
        builder.add_removed("r");
        builder.add_next_file(12);
        let (bytes, next) = builder.finish();
        assert_eq!(next, 8);
        let batch = decode_batch(&bytes).expect("decodes");
        assert_eq!(batch.number, 7);
        assert_eq!(batch.size, bytes.len());
        assert_eq!(
            batch.entries,
            vec![
                Entry::Records {
                    key: "k/é",
                    first: 3,
                    count: 2,
                    frames: &frames
                },
                Entry::Commit {
                    key: "",
                    offset: 9,
                    value: b""
                },
                Entry::Commit {
                    key: "v",
                    offset: 10,
                    value: b"meta"
                },
                Entry::Uncommitted { key: "u" },
                Entry::Direct { key: "d", from: 4 },
                Entry::LogStart {
                    key: "l",
                    offset: 4096
                },
                Entry::Removed { key: "r" },
                Entry::NextFile { seq: 12 },
            ]
        );
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_batch(&flipped).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn big_record_runs_split_into_several_batches_at_frame_boundaries() {
        let payload = vec![b'7'; format::MESSAGE_BYTES_MAX];
        let count = BATCH_BYTES_MAX / payload.len() + 3;
        let mut frames = Vec::new();
        for i in 0..count {
            format::encode_record(&mut frames, i as u64, &payload);
        }
        let mut builder = BatchBuilder::new(0);
        builder.add_records("k", 0, &frames);
        let (bytes, next) = builder.finish();
        assert_eq!(next, 2, "two batches");
        let mut position = 0;
        let mut seen = 0u64;
        while position < bytes.len() {
            let batch = decode_batch(&bytes[position..]).expect("batch");
            // Every batch but the last says its sync point goes on.
            assert_eq!(batch.continued, position + batch.size < bytes.len());
            for entry in &batch.entries {
                let Entry::Records { first, count, .. } = entry else {
                    panic!("records only");
                };
                assert_eq!(*first, seen);
                seen += u64::from(*count);
            }
            position += batch.size;
        }
        assert_eq!(seen, count as u64);
    }

    /// The flags field as the previous version wrote it (reserved, 0) is a
    /// batch that ends its sync point; the continued flag reads back; any
    /// other bit is refused even under a matching CRC.
    #[test]
    fn batch_flags_decode_and_unknown_bits_are_refused() {
        let mut builder = BatchBuilder::new(5);
        builder.add_commit("k", 1);
        let (mut bytes, _) = builder.finish();
        assert_eq!(u32_at(&bytes, BATCH_FLAGS_POS), 0, "a single batch is 0");
        assert!(!decode_batch(&bytes).expect("decodes").continued);
        let with_flags = |bytes: &mut Vec<u8>, flags: u32| {
            bytes[BATCH_FLAGS_POS..BATCH_HEADER_SIZE].copy_from_slice(&flags.to_le_bytes());
            let crc = batch_crc(bytes);
            bytes[BATCH_CRC_POS..BATCH_NUMBER_POS].copy_from_slice(&crc.to_le_bytes());
        };
        with_flags(&mut bytes, BATCH_FLAG_CONTINUED);
        assert!(decode_batch(&bytes).expect("decodes").continued);
        for unknown in [2, 0x8000_0000, BATCH_FLAG_CONTINUED | 4] {
            with_flags(&mut bytes, unknown);
            match decode_batch(&bytes) {
                Err(DecodeError::BadBatch { why }) => {
                    assert!(why.contains("unknown flags"), "{why}")
                }
                other => panic!("flags {unknown:#x}: expected a bad batch, got {other:?}"),
            }
        }
    }

    #[test]
    fn split_batches_are_numbered_on_and_all_but_the_last_continued() {
        let mut builder = BatchBuilder::new(9);
        builder.add_commit("a", 1);
        builder.split_batch();
        builder.add_commit("b", 2);
        builder.split_batch();
        builder.add_commit("c", 3);
        let (bytes, next) = builder.finish();
        assert_eq!(next, 12);
        let first = decode_batch(&bytes).expect("first");
        let second = decode_batch(&bytes[first.size..]).expect("second");
        let third = decode_batch(&bytes[first.size + second.size..]).expect("third");
        assert_eq!((first.number, second.number, third.number), (9, 10, 11));
        assert_eq!(
            (first.continued, second.continued, third.continued),
            (true, true, false)
        );
        assert_eq!(first.size + second.size + third.size, bytes.len());
    }

    #[test]
    #[should_panic(expected = "an entry after the next-file marker")]
    fn nothing_follows_a_next_file_marker_in_its_builder() {
        let mut builder = BatchBuilder::new(0);
        builder.add_next_file(3);
        builder.add_commit("k", 1);
    }

    #[test]
    fn zero_filled_batch_is_never_valid() {
        assert_eq!(decode_batch(&[0u8; 64]), Err(DecodeError::Zeroed));
    }

    #[test]
    fn journal_file_names_parse_back() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("42.wal"), None);
    }
}
