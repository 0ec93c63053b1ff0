//! One segment: a `.log` file of records, its sparse `.index` and its
//! `.timeindex`.
//!
//! A segment is either *sealed* (complete, read-only) or the *active*
//! segment of its key, which takes appends. Record frames are buffered in
//! memory and written to the file by [`Segment::flush`]; they become visible
//! to readers only when [`Segment::mark_durable`] is called, once they are
//! durable (in the write-ahead journal, or synced in this file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::backend::{FileIo, Fs, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{
    self, DecodeError, FILE_HEADER_SIZE, FORMAT_VERSION, FileHeader, FileKind, IndexEntry,
    NO_TIMESTAMP, RECORD_HEADER_SIZE, TimeEntry,
};
use crate::storage::index::{self, INDEX_INTERVAL_BYTES, SparseIndex};
use crate::storage::mmap::MappedFile;
use crate::storage::timeindex::{self, TimeIndex};
use crate::storage::timestamp::timestamp_of;

/// Largest segment accepted by the configuration: index positions are `u32`.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;

/// Where a scan of records stopped before the end of the bytes it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanStop {
    /// The bytes at `position` do not decode as a record.
    Invalid { position: u64, error: DecodeError },
    /// A valid record at `position` carries `found` where `expected` was due.
    OffsetGap {
        position: u64,
        expected: u64,
        found: u64,
    },
}

impl ScanStop {
    pub fn position(&self) -> u64 {
        match self {
            ScanStop::Invalid { position, .. } | ScanStop::OffsetGap { position, .. } => *position,
        }
    }
}

impl std::fmt::Display for ScanStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanStop::Invalid { error, .. } => write!(f, "{error}"),
            ScanStop::OffsetGap {
                expected, found, ..
            } => write!(f, "offset {found} where {expected} was expected"),
        }
    }
}

/// What a scan over a segment's records found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Position after the last valid record.
    pub end_position: u64,
    /// Offset the next record would have.
    pub next_offset: u64,
    /// The index the valid records call for.
    pub index: SparseIndex,
    /// The time-index entries of the chunks the scan closed (all of them
    /// when it started at the first record).
    pub times: Vec<TimeEntry>,
    /// The chunk the last valid record is in, its largest timestamp so far:
    /// the active segment's open chunk, or a sealed segment's last entry.
    pub open_chunk: Option<TimeEntry>,
    /// Why the scan ended before the end of the bytes, if it did.
    pub stop: Option<ScanStop>,
}

impl Scan {
    /// The time index of a sealed segment whose records are all the ones
    /// the scan found, from the first (its last chunk closed too).
    pub fn sealed_time_index(&self) -> TimeIndex {
        let mut entries = self.times.clone();
        entries.extend(self.open_chunk);
        TimeIndex::from_entries(entries)
    }
}

/// A record's timestamp as the time index counts it.
pub fn record_timestamp(payload: &[u8]) -> i64 {
    timestamp_of(payload).unwrap_or(NO_TIMESTAMP)
}

/// Whether a record at `position` gets an index entry, given the position of
/// the last entry (or of the first record, which needs none). The writer and
/// every rebuild use this one rule, so a rebuilt index equals the written one.
pub fn needs_index_entry(position: u64, last_indexed_position: u64) -> bool {
    position >= last_indexed_position + INDEX_INTERVAL_BYTES
}

/// Scans the records of a segment starting at `base_offset`, from the first
/// record after the header to the first byte that is not a valid record with
/// the next consecutive offset. `bytes` is the whole file.
pub fn scan_records(bytes: &[u8], base_offset: u64) -> Scan {
    let header_end = FILE_HEADER_SIZE as u64;
    scan_records_from(
        bytes,
        base_offset,
        header_end,
        base_offset,
        SparseIndex::default(),
    )
}

/// Like [`scan_records`], but starts at a known record boundary `position`
/// holding `next_offset`, extending `index`, whose last entry is at or before
/// `position`. `position` starts a chunk (it is the first record or the
/// last entry's), so the scan's time entries are those of the chunks it
/// closes.
pub fn scan_records_from(
    bytes: &[u8],
    base_offset: u64,
    mut position: u64,
    mut next_offset: u64,
    mut index: SparseIndex,
) -> Scan {
    let mut last_indexed = index
        .entries()
        .last()
        .map_or(FILE_HEADER_SIZE as u64, |entry| u64::from(entry.position));
    let len = bytes.len() as u64;
    let mut times = Vec::new();
    let mut open_chunk: Option<TimeEntry> = None;
    let stop = loop {
        if position >= len {
            break None;
        }
        let record = match format::decode_log_record(&bytes[position as usize..]) {
            Ok(record) => record,
            Err(error) => break Some(ScanStop::Invalid { position, error }),
        };
        if record.offset != next_offset {
            break Some(ScanStop::OffsetGap {
                position,
                expected: next_offset,
                found: record.offset,
            });
        }
        let relative_offset = (next_offset - base_offset) as u32;
        if needs_index_entry(position, last_indexed) {
            index.push(IndexEntry {
                relative_offset,
                position: position as u32,
            });
            last_indexed = position;
            times.extend(open_chunk.take());
        }
        let chunk = open_chunk.get_or_insert(TimeEntry {
            timestamp: NO_TIMESTAMP,
            relative_offset,
        });
        chunk.timestamp = chunk.timestamp.max(record_timestamp(record.payload));
        position += record.size() as u64;
        next_offset += 1;
    };
    Scan {
        end_position: position,
        next_offset,
        index,
        times,
        open_chunk,
        stop,
    }
}

/// Looks for a valid record with an offset at or after `expected` anywhere
/// after `from`: evidence that the damage at `from` is a hole in the middle of
/// the log rather than a torn tail. Returns its position.
pub fn find_record_after(bytes: &[u8], from: u64, expected: u64) -> Option<u64> {
    let start = from as usize + 1;
    let last = bytes.len().checked_sub(format::RECORD_HEADER_SIZE)?;
    (start..=last)
        .find(|&position| {
            let Ok(record) = format::decode_log_record(&bytes[position..]) else {
                return false;
            };
            // A record after a hole of n bytes has an offset between `expected`
            // and `expected + n / RECORD_HEADER_SIZE`; anything else is chance.
            let span = (position as u64 - from) / format::RECORD_HEADER_SIZE as u64;
            record.offset >= expected && record.offset <= expected + span
        })
        .map(|position| position as u64)
}

/// The position and offset of the record an index entry names.
fn entry_start(base_offset: u64, entry: IndexEntry) -> (u64, u64) {
    (
        u64::from(entry.position),
        base_offset + u64::from(entry.relative_offset),
    )
}

/// The position and offset of the record `entry` names, if `bytes` (a
/// segment's `.log` from its first byte) holds a valid record with that
/// offset at that position: how an index entry read from disk is checked.
pub fn checked_entry_start(
    bytes: &[u8],
    base_offset: u64,
    entry: IndexEntry,
) -> Option<(u64, u64)> {
    let (position, offset) = entry_start(base_offset, entry);
    let record = format::decode_log_record(bytes.get(position as usize..)?).ok()?;
    (record.offset == offset).then_some((position, offset))
}

/// Why a sealed or active segment stopped delivering records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The visitor asked to stop.
    Stopped,
    /// The next record is at the `end` the caller gave.
    ReachedEnd,
    /// Every readable record was delivered; the next one would have this offset.
    Exhausted { next_offset: u64 },
}

/// The durable records of one segment from one record on, over a map the
/// view shares: what a reader decodes after letting go of the store's lock.
/// The map stays valid while the view lives even if the segment is
/// remapped, sealed, or deleted by retention or a key's removal (an
/// unlinked file's pages stay mapped; see `mmap.rs` for why no byte it
/// covers changes).
pub struct SegmentView {
    map: Arc<MappedFile>,
    /// For errors.
    log_path: PathBuf,
    /// Where the first record of the view starts.
    position: u64,
    /// That record's offset.
    offset: u64,
    /// Position after the last durable record when the view was taken.
    limit: u64,
}

impl SegmentView {
    /// Bytes of records in the view.
    pub fn bytes(&self) -> u64 {
        self.limit - self.position
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Position after the view's last record.
    pub fn end_position(&self) -> u64 {
        self.limit
    }

    /// Delivers the view's records with offsets below `end` to `visit`,
    /// which returns false to stop. Verifies each record's CRC and offset.
    pub fn read(&self, end: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<ReadEnd> {
        let (mut position, mut expected) = (self.position, self.offset);
        while position < self.limit {
            let record = decode_at(&self.map, position, self.limit, expected, &self.log_path)?;
            if expected >= end {
                return Ok(ReadEnd::ReachedEnd);
            }
            if !visit(expected, record.payload) {
                return Ok(ReadEnd::Stopped);
            }
            position += record.size() as u64;
            expected += 1;
        }
        Ok(ReadEnd::Exhausted {
            next_offset: expected,
        })
    }
}

/// The record at `position` of a segment's bytes (which end at `limit`),
/// which must have offset `expected`.
fn decode_at<'a>(
    bytes: &'a [u8],
    position: u64,
    limit: u64,
    expected: u64,
    log_path: &Path,
) -> Result<format::Record<'a>> {
    let record = format::decode_log_record(&bytes[position as usize..limit as usize])
        .map_err(|e| Error::corrupt(log_path, position, e.to_string()))?;
    if record.offset != expected {
        return Err(Error::corrupt(
            log_path,
            position,
            format!("offset {} where {expected} was expected", record.offset),
        ));
    }
    Ok(record)
}

/// The write side of the active segment.
struct Writer {
    /// The file appends go to; shared with sync plans, which fdatasync it
    /// outside the store's lock.
    file: Arc<dyn FileIo>,
    /// Encoded records not yet written to the file.
    buffer: Vec<u8>,
    /// Encoded index entries not yet written to the index file.
    index_buffer: Vec<u8>,
    /// Encoded time-index entries not yet written to the time index file.
    time_buffer: Vec<u8>,
    /// A write to the time index file failed (the file is missing, in a
    /// directory an older build wrote, or the disk is full): later entries
    /// are not written, and the file, short of entries, is rebuilt when a
    /// search first needs it, which clears this. One warning, not one per
    /// chunk.
    time_file_failed: bool,
    /// The last chunk, still open: its first record and largest timestamp
    /// so far. `None` until the segment has a record.
    open_chunk: Option<TimeEntry>,
    /// Bytes already written to the file.
    file_len: u64,
    /// Position after the last appended record, buffered ones included.
    end_position: u64,
    /// Offset the next append gets.
    next_offset: u64,
    /// Position of the last index entry (or of the first record).
    last_indexed: u64,
}

/// One segment of one key's log.
pub struct Segment {
    /// The store's backend.
    fs: Fs,
    /// First offset of the segment; also its file name.
    base_offset: u64,
    log_path: PathBuf,
    index_path: PathBuf,
    time_path: PathBuf,
    /// Read-only map of the file's bytes, at least up to `durable_position`;
    /// shared with the [`SegmentView`]s readers decode outside the store's
    /// lock, which keep it alive after the segment replaces or drops it.
    map: Arc<MappedFile>,
    /// The sparse index: trusted for the active segment (we built it), checked
    /// record by record for sealed ones (read from disk).
    index: SparseIndex,
    /// Whether `index` came from disk and its entries need checking on use.
    index_unverified: bool,
    /// The time index of the closed chunks, loaded on the first search by
    /// time (`None` until then: most reads never need it).
    time_index: Option<TimeIndex>,
    /// Whether `time_index` came from disk and the chunk a search scans
    /// must be checked against its entry.
    time_unverified: bool,
    /// Position after the last durable record: readers see nothing past it.
    durable_position: u64,
    /// Present while the segment is active.
    writer: Option<Writer>,
}

impl Segment {
    /// Opens a sealed segment for reading. Its index is loaded, or rebuilt if
    /// it cannot be used.
    pub fn open_sealed(fs: Fs, dir: &Path, base_offset: u64) -> Result<Segment> {
        let (log_path, index_path, time_path) = segment_paths(dir, base_offset);
        let file = fs
            .open(&log_path, OpenMode::Read)
            .map_err(|e| Error::io("open", &log_path, e))?;
        let len = file.size().map_err(|e| Error::io("stat", &log_path, e))?;
        let map = file
            .map(len as usize)
            .map_err(|e| Error::io("map", &log_path, e))?;
        check_header(&map, &log_path, base_offset)?;
        let mut segment = Segment {
            fs,
            base_offset,
            log_path,
            index_path,
            time_path,
            map: Arc::new(map),
            index: SparseIndex::default(),
            index_unverified: true,
            time_index: None,
            time_unverified: true,
            durable_position: len,
            writer: None,
        };
        match SparseIndex::load(&*segment.fs, &segment.index_path, base_offset, len) {
            Ok(index) => segment.index = index,
            Err(why) => segment.rebuild_index(&why)?,
        }
        Ok(segment)
    }

    /// Creates a new, empty active segment starting at `base_offset`. Its
    /// header is buffered like a record and written by the next flush.
    pub fn create(fs: Fs, dir: &Path, base_offset: u64) -> Result<Segment> {
        let (log_path, index_path, time_path) = segment_paths(dir, base_offset);
        let file = fs
            .open(&log_path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &log_path, e))?;
        let header = format::encode_header(&FileHeader {
            kind: FileKind::Log,
            version: FORMAT_VERSION,
            base_offset,
        });
        crate::storage::fsutil::write_whole(
            &*fs,
            &index_path,
            &index::index_header(base_offset),
            false,
        )?;
        // A cache that cannot be written costs a rebuild, not the roll.
        let time_header = timeindex::time_index_header(base_offset);
        let time_file_failed =
            match crate::storage::fsutil::write_whole(&*fs, &time_path, &time_header, false) {
                Ok(()) => false,
                Err(e) => {
                    crate::log::warn(format_args!(
                        "time index not created, it will be rebuilt: {e}"
                    ));
                    true
                }
            };
        let header_end = FILE_HEADER_SIZE as u64;
        Ok(Segment {
            fs,
            base_offset,
            log_path,
            index_path,
            time_path,
            map: Arc::new(MappedFile::empty()),
            index: SparseIndex::default(),
            index_unverified: false,
            time_index: Some(TimeIndex::default()),
            time_unverified: false,
            durable_position: header_end,
            writer: Some(Writer {
                file,
                buffer: header.to_vec(),
                index_buffer: Vec::new(),
                time_buffer: Vec::new(),
                time_file_failed,
                open_chunk: None,
                file_len: 0,
                end_position: header_end,
                next_offset: base_offset,
                last_indexed: header_end,
            }),
        })
    }

    /// Takes an existing, open file as the active segment whose valid
    /// records end at `end_position` with `next_offset` next. Recovery has
    /// already cut the file to that length and settled the index; `map`, if
    /// recovery's own map is still valid, is reused. `open_chunk` is the
    /// last chunk as recovery's scan found it (`Scan::open_chunk`); the
    /// time index file is read on the first search by time.
    #[expect(
        clippy::too_many_arguments,
        reason = "recovery hands over everything it found"
    )]
    pub fn open_active(
        fs: Fs,
        dir: &Path,
        base_offset: u64,
        file: Arc<dyn FileIo>,
        map: Option<MappedFile>,
        end_position: u64,
        next_offset: u64,
        index: SparseIndex,
        index_unverified: bool,
        open_chunk: Option<TimeEntry>,
    ) -> Result<Segment> {
        let (log_path, index_path, time_path) = segment_paths(dir, base_offset);
        let map = match map {
            Some(map) => map,
            None => file
                .map(end_position as usize)
                .map_err(|e| Error::io("map", &log_path, e))?,
        };
        let last_indexed = index
            .entries()
            .last()
            .map_or(FILE_HEADER_SIZE as u64, |entry| u64::from(entry.position));
        // No time index file (a directory an older build wrote, or one
        // deleted): appends would fail at every chunk; the first search
        // by time builds it.
        let time_file_failed = !fs.exists(&time_path).unwrap_or(false);
        Ok(Segment {
            fs,
            base_offset,
            log_path,
            index_path,
            time_path,
            map: Arc::new(map),
            index,
            index_unverified,
            time_index: None,
            time_unverified: true,
            durable_position: end_position,
            writer: Some(Writer {
                file,
                buffer: Vec::new(),
                index_buffer: Vec::new(),
                time_buffer: Vec::new(),
                time_file_failed,
                open_chunk,
                file_len: end_position,
                end_position,
                next_offset,
                last_indexed,
            }),
        })
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Size the file will have once everything appended is written.
    pub fn end_position(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(self.durable_position, |w| w.end_position)
    }

    /// Offset the next append gets (active segments only).
    pub fn next_offset(&self) -> Option<u64> {
        self.writer.as_ref().map(|w| w.next_offset)
    }

    /// Appends one encoded record frame (as `format::encode_record` makes it,
    /// holding `offset`, the segment's next) to the write buffer.
    pub fn append_frame(&mut self, offset: u64, frame: &[u8]) {
        let writer = self.writer.as_mut().expect("append to a sealed segment");
        assert_eq!(offset, writer.next_offset, "frames are appended in order");
        let position = writer.end_position;
        let relative_offset = (offset - self.base_offset) as u32;
        if needs_index_entry(position, writer.last_indexed) {
            let entry = IndexEntry {
                relative_offset,
                position: position as u32,
            };
            self.index.push(entry);
            writer
                .index_buffer
                .extend_from_slice(&format::encode_index_entry(entry));
            writer.last_indexed = position;
            if let Some(closed) = writer.open_chunk.take() {
                close_chunk(writer, self.time_index.as_mut(), closed);
            }
        }
        let chunk = writer.open_chunk.get_or_insert(TimeEntry {
            timestamp: NO_TIMESTAMP,
            relative_offset,
        });
        chunk.timestamp = chunk
            .timestamp
            .max(record_timestamp(&frame[RECORD_HEADER_SIZE..]));
        writer.buffer.extend_from_slice(frame);
        writer.end_position += frame.len() as u64;
        writer.next_offset += 1;
    }

    /// Writes buffered records and index entries to their files (no sync).
    ///
    /// If the log write fails (a full disk), the bytes of this flush are cut
    /// off again so the file ends at a record boundary, and the buffer is
    /// kept for a later try; the error is returned.
    pub fn flush(&mut self) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        if !writer.buffer.is_empty() {
            if let Err(e) = writer.file.write_all_at(&writer.buffer, writer.file_len) {
                // Drop the map first: nothing may cut a file below the end of
                // a live map (see mmap.rs). A reader's view may still hold it;
                // it covers no byte past `file_len`, where the cut is.
                self.map = Arc::new(MappedFile::empty());
                if let Err(cut) = writer.file.set_len(writer.file_len) {
                    // The file may now end in a partial record that a later
                    // write would not fully cover: the store poisons on any
                    // flush error, and recovery cuts the partial record.
                    crate::log::warn(format_args!(
                        "write to {} failed ({e}), and so did cutting it off again",
                        self.log_path.display()
                    ));
                    return Err(Error::io("cut a failed write from", &self.log_path, cut));
                }
                return Err(Error::io("write", &self.log_path, e));
            }
            writer.file_len += writer.buffer.len() as u64;
            writer.buffer.clear();
        }
        if !writer.index_buffer.is_empty() {
            // The index is a cache: if this write fails the index is short,
            // which recovery repairs, so the error is not the append's.
            if let Err(e) = index::append_to_file(&*self.fs, &self.index_path, &writer.index_buffer)
            {
                crate::log::warn(format_args!("index write failed, it will be rebuilt: {e}"));
            }
            writer.index_buffer.clear();
        }
        if !writer.time_buffer.is_empty() {
            // A cache too, checked against the offset index when loaded.
            if !writer.time_file_failed
                && let Err(e) =
                    index::append_to_file(&*self.fs, &self.time_path, &writer.time_buffer)
            {
                crate::log::warn(format_args!(
                    "time index write failed, it will be rebuilt: {e}"
                ));
                writer.time_file_failed = true;
            }
            writer.time_buffer.clear();
        }
        Ok(())
    }

    /// The file to fdatasync, and the position that becomes durable when it
    /// is, with the offset after it. The caller has flushed first.
    pub fn sync_target(&self) -> Option<(Arc<dyn FileIo>, u64, u64)> {
        let writer = self.writer.as_ref()?;
        debug_assert!(
            writer.buffer.is_empty(),
            "sync target of an unflushed segment"
        );
        Some((
            Arc::clone(&writer.file),
            writer.file_len,
            writer.next_offset,
        ))
    }

    /// Lets readers of this segment go up to `position`, after a sync
    /// covered the bytes before it.
    pub fn mark_durable(&mut self, position: u64) {
        self.durable_position = self.durable_position.max(position);
    }

    /// Flushes the file and turns the segment into a sealed one, read-only
    /// from now on. No fdatasync: every record in it is durable in the
    /// write-ahead journal, and the next checkpoint syncs the file before the
    /// journal lets go of them.
    pub fn seal(&mut self) -> Result<()> {
        if let Some(writer) = self.writer.as_mut()
            && let Some(last) = writer.open_chunk.take()
        {
            close_chunk(writer, self.time_index.as_mut(), last);
        }
        self.flush()?;
        if let Some(writer) = self.writer.as_ref() {
            let position = writer.file_len;
            self.mark_durable(position);
        }
        self.writer = None;
        Ok(())
    }

    /// Position after the last byte written to the file (active segments),
    /// or the file's length (sealed ones).
    pub fn file_len(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(self.durable_position, |w| w.file_len)
    }

    /// The durable records from offset `from` on, as a [`SegmentView`] that
    /// decodes them without this segment (and so without the store's lock).
    /// Finds where `from` starts: an index lookup and a scan of at most one
    /// index interval, checking the index on the way (and rebuilding it if
    /// it is wrong), which needs the segment.
    pub fn view(&mut self, from: u64) -> Result<SegmentView> {
        self.ensure_mapped()?;
        let limit = self.durable_position.min(self.map.len() as u64);
        let (mut position, mut expected) = self.start_point(from, limit)?;
        let mut last_indexed = position;
        while position < limit && expected < from {
            if self.index_unverified && needs_index_entry(position, last_indexed) {
                // The scan toward `from` passed a record the index should
                // have an entry for: the index is short or wrong.
                self.rebuild_index(&format!("no entry for the record at position {position}"))?;
                (position, expected) = self.start_point(from, limit)?;
                last_indexed = position;
                continue;
            }
            let record = decode_at(&self.map, position, limit, expected, &self.log_path)?;
            position += record.size() as u64;
            expected += 1;
        }
        Ok(SegmentView {
            map: Arc::clone(&self.map),
            log_path: self.log_path.clone(),
            position,
            offset: expected,
            limit,
        })
    }

    /// Remaps the active segment when its durable end has grown past the map.
    fn ensure_mapped(&mut self) -> Result<()> {
        if (self.map.len() as u64) < self.durable_position
            && let Some(writer) = self.writer.as_ref()
        {
            self.map = Arc::new(
                writer
                    .file
                    .map(writer.file_len as usize)
                    .map_err(|e| Error::io("map", &self.log_path, e))?,
            );
        }
        Ok(())
    }

    /// The position and offset to start scanning at to reach `from`.
    fn start_point(&mut self, from: u64, limit: u64) -> Result<(u64, u64)> {
        let header_end = FILE_HEADER_SIZE as u64;
        let relative = from
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        let Some(entry) = self.index.lookup(relative) else {
            return Ok((header_end, self.base_offset));
        };
        if !self.index_unverified {
            return Ok(entry_start(self.base_offset, entry));
        }
        if let Some(start) =
            checked_entry_start(&self.map[..limit as usize], self.base_offset, entry)
        {
            return Ok(start);
        }
        let (position, offset) = entry_start(self.base_offset, entry);
        self.rebuild_index(&format!(
            "entry for offset {offset} points at position {position}, which does not hold it"
        ))?;
        Ok(self
            .index
            .lookup(relative)
            .map_or((header_end, self.base_offset), |entry| {
                entry_start(self.base_offset, entry)
            }))
    }

    /// Rebuilds the offset index and the time index from the log and
    /// rewrites both files (one scan serves both; whatever made one wrong,
    /// a crash or damage, may have hit the other). For the active segment
    /// the scan covers what was written to the file, and the entries of
    /// records still in the write buffer (which this process made) are
    /// kept.
    fn rebuild_index(&mut self, why: &str) -> Result<()> {
        crate::log::info(format_args!(
            "rebuilding {} and its time index ({why})",
            self.index_path.display()
        ));
        let file_len = self.writer.as_ref().map(|w| w.file_len);
        if let (Some(len), Some(writer)) = (file_len, self.writer.as_ref())
            && (self.map.len() as u64) < len
        {
            self.map = Arc::new(
                writer
                    .file
                    .map(len as usize)
                    .map_err(|e| Error::io("map", &self.log_path, e))?,
            );
        }
        let scan = scan_records(&self.map, self.base_offset);
        let times = match &self.writer {
            None => scan.sealed_time_index(),
            Some(_) => TimeIndex::from_entries(scan.times.clone()),
        };
        let mut time_written = true;
        for (written, time) in [
            (
                scan.index
                    .write_file(&*self.fs, &self.index_path, self.base_offset),
                false,
            ),
            (
                times.write_file(&*self.fs, &self.time_path, self.base_offset),
                true,
            ),
        ] {
            if let Err(e) = written {
                // A cache that cannot be written costs speed, not data.
                crate::log::warn(format_args!("cannot rewrite an index: {e}"));
                time_written &= !time;
            }
        }
        if let Some(writer) = self.writer.as_mut() {
            writer.time_file_failed = !time_written;
        }
        let mut entries = scan.index.entries().to_vec();
        let mut time_entries = times.entries().to_vec();
        if let (Some(len), Some(writer)) = (file_len, self.writer.as_ref()) {
            entries.extend(
                self.index
                    .entries()
                    .iter()
                    .filter(|entry| u64::from(entry.position) >= len),
            );
            // Chunks closed by records not yet written, whose entries the
            // next flush appends to the file just rewritten.
            time_entries.extend(
                format::decode_time_entries(&writer.time_buffer)
                    .expect("the writer encodes whole entries"),
            );
        }
        self.index = SparseIndex::from_entries(entries);
        self.index_unverified = false;
        self.time_index = Some(TimeIndex::from_entries(time_entries));
        self.time_unverified = false;
        Ok(())
    }

    /// The relative offsets at which the closed chunks start, by the offset
    /// index: chunk 0 at the first record, chunk `k` at entry `k - 1`'s.
    /// Every chunk of a sealed segment is closed; the active segment's last
    /// is open.
    fn chunk_starts(&self) -> Vec<u32> {
        let has_records = self.end_position() > FILE_HEADER_SIZE as u64;
        let mut starts = Vec::with_capacity(self.index.entries().len() + 1);
        if has_records {
            starts.push(0);
            starts.extend(self.index.entries().iter().map(|e| e.relative_offset));
        }
        if self.writer.is_some() {
            starts.pop();
        }
        starts
    }

    /// Loads the time index, or rebuilds it (with the offset index) when
    /// the file cannot be used.
    fn ensure_time_index(&mut self) -> Result<()> {
        if self.time_index.is_some() {
            return Ok(());
        }
        let starts = self.chunk_starts();
        let buffered = self.writer.as_ref().map_or(&[][..], |w| &w.time_buffer[..]);
        let loaded = TimeIndex::load(
            &*self.fs,
            &self.time_path,
            self.base_offset,
            &starts,
            buffered,
        );
        match loaded {
            Ok(times) => {
                self.time_index = Some(times);
                self.time_unverified = true;
                Ok(())
            }
            Err(why) => self.rebuild_index(&format!("time index: {why}")),
        }
    }

    /// The largest timestamp of the segment's records, if its time index
    /// is in memory (a new segment's always is), without reading anything.
    pub fn known_max_timestamp(&self) -> Option<i64> {
        let closed = self.time_index.as_ref()?.max_timestamp();
        let open = self
            .writer
            .as_ref()
            .and_then(|w| w.open_chunk)
            .map_or(NO_TIMESTAMP, |chunk| chunk.timestamp);
        Some(closed.max(open))
    }

    /// The largest timestamp of the segment's records, durable or not
    /// ([`NO_TIMESTAMP`] if none has one): a search by time skips a
    /// segment whose largest is earlier.
    pub fn max_timestamp(&mut self) -> Result<i64> {
        self.ensure_time_index()?;
        Ok(self.known_max_timestamp().unwrap_or(NO_TIMESTAMP))
    }

    /// The first durable record whose timestamp is at or after `t`, with
    /// that timestamp: the time index's binary search names the chunk, and
    /// a scan of that chunk finds the record. A chunk that disagrees with
    /// an entry read from disk rebuilds both indexes and searches again.
    pub fn find_time(&mut self, t: i64) -> Result<Option<(u64, i64)>> {
        let t = t.max(0);
        self.ensure_mapped()?;
        let limit = self.durable_position.min(self.map.len() as u64);
        // A second try follows a rebuild, after which a disagreement is
        // the log's own damage.
        for _ in 0..2 {
            self.ensure_time_index()?;
            let times = self.time_index.as_ref().expect("time index just loaded");
            let (chunk, expected) = match times.first_chunk_reaching(t) {
                Some(k) => (k, Some(times.entries()[k].timestamp)),
                None => match self.writer.as_ref().and_then(|w| w.open_chunk) {
                    Some(open) if open.timestamp >= t => (times.entries().len(), None),
                    _ => return Ok(None),
                },
            };
            let Some((start, offset)) = self.chunk_start(chunk, limit)? else {
                continue;
            };
            let found = scan_chunk(
                &self.map[..limit as usize],
                &self.log_path,
                start,
                offset,
                t,
            )?;
            let whole = found.ended_at_chunk_end || limit == self.file_len_if_sealed();
            match expected {
                Some(expected) if whole && found.max != expected => {
                    let why = format!(
                        "time index: the chunk at position {start} has largest timestamp {}, \
                         its entry says {expected}",
                        found.max
                    );
                    if !self.time_unverified {
                        return Err(Error::corrupt(&self.log_path, start, why));
                    }
                    self.rebuild_index(&why)?;
                }
                _ => return Ok(found.first),
            }
        }
        Err(Error::corrupt(
            &self.log_path,
            FILE_HEADER_SIZE as u64,
            "time index: a rebuilt index disagrees with the log",
        ))
    }

    /// The log's length for a sealed segment (whose last chunk ends with
    /// the file), `u64::MAX` for the active one (whose last chunk grows).
    fn file_len_if_sealed(&self) -> u64 {
        match self.writer {
            None => self.durable_position,
            Some(_) => u64::MAX,
        }
    }

    /// Where chunk `k` starts: position and offset of its first record,
    /// checked when the offset index came from disk. `None` when the
    /// offset index was wrong and has just been rebuilt.
    fn chunk_start(&mut self, k: usize, limit: u64) -> Result<Option<(u64, u64)>> {
        let Some(previous) = k.checked_sub(1) else {
            return Ok(Some((FILE_HEADER_SIZE as u64, self.base_offset)));
        };
        let Some(&entry) = self.index.entries().get(previous) else {
            self.rebuild_index(&format!("time index: chunk {k} has no offset index entry"))?;
            return Ok(None);
        };
        if !self.index_unverified {
            return Ok(Some(entry_start(self.base_offset, entry)));
        }
        if let Some(start) =
            checked_entry_start(&self.map[..limit as usize], self.base_offset, entry)
        {
            return Ok(Some(start));
        }
        let (position, offset) = entry_start(self.base_offset, entry);
        self.rebuild_index(&format!(
            "entry for offset {offset} points at position {position}, which does not hold it"
        ))?;
        Ok(None)
    }
}

/// Ends the open chunk `closed`: its entry goes to the time index file at
/// the next flush, and to the time index in memory if it is loaded.
fn close_chunk(writer: &mut Writer, times: Option<&mut TimeIndex>, closed: TimeEntry) {
    writer
        .time_buffer
        .extend_from_slice(&format::encode_time_entry(closed));
    if let Some(times) = times {
        times.push(closed);
    }
}

/// What a scan of one chunk found.
struct ChunkScan {
    /// The first record at or after the time searched for, and its timestamp.
    first: Option<(u64, i64)>,
    /// The largest timestamp of the records scanned.
    max: i64,
    /// Whether the scan reached the next chunk's first record (else it
    /// reached the end of the bytes).
    ended_at_chunk_end: bool,
}

/// Scans the chunk whose first record is at `start` and holds `offset`,
/// to the next chunk or the end of `bytes`, for the first record at or
/// after `t` (a record without a timestamp never is).
fn scan_chunk(bytes: &[u8], path: &Path, start: u64, offset: u64, t: i64) -> Result<ChunkScan> {
    let mut scan = ChunkScan {
        first: None,
        max: NO_TIMESTAMP,
        ended_at_chunk_end: false,
    };
    let (mut position, mut expected) = (start, offset);
    while position < bytes.len() as u64 {
        if position > start && needs_index_entry(position, start) {
            scan.ended_at_chunk_end = true;
            break;
        }
        let record = decode_at(bytes, position, bytes.len() as u64, expected, path)?;
        let timestamp = record_timestamp(record.payload);
        if scan.first.is_none() && timestamp != NO_TIMESTAMP && timestamp >= t {
            scan.first = Some((expected, timestamp));
        }
        scan.max = scan.max.max(timestamp);
        position += record.size() as u64;
        expected += 1;
    }
    Ok(scan)
}

/// The `.log`, `.index` and `.timeindex` paths of the segment starting at
/// `base_offset` in the key directory `dir`.
fn segment_paths(dir: &Path, base_offset: u64) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format::log_file_name(base_offset)),
        dir.join(format::index_file_name(base_offset)),
        dir.join(format::time_index_file_name(base_offset)),
    )
}

/// Checks the header of a mapped `.log` file.
pub fn check_header(bytes: &[u8], path: &Path, base_offset: u64) -> Result<()> {
    let header =
        format::decode_header(bytes).map_err(|e| Error::corrupt(path, 0, e.to_string()))?;
    if header.kind != FileKind::Log {
        return Err(Error::corrupt(
            path,
            0,
            format!("not a log file ({:?})", header.kind),
        ));
    }
    if header.base_offset != base_offset {
        return Err(Error::corrupt(
            path,
            format::HEADER_BASE_OFFSET_POS as u64,
            format!(
                "base offset {} does not match the file name's {base_offset}",
                header.base_offset
            ),
        ));
    }
    Ok(())
}
