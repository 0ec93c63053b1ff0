//! Recovery of one key's log when it is opened: the decision table of
//! `segment-format.md`, applied to what is on disk. (The journal's own rows
//! are applied when the store opens, in `journal_recovery/`.)
//!
//! A key the live journal does not mention was synced whole by the last
//! checkpoint: recovery reads its directory listing and its active segment,
//! never the sealed ones, and checks the records past the last index entry
//! (all of the active segment for a version 1 store after a crash).
//!
//! A key the journal mentions ([`recover_journaled_key`]) may have anything
//! a crash left from its first journaled offset on, in sealed segments too:
//! those segments are scanned whole and compared with the journal, which
//! wins where they differ.
//!
//! # Layout
//! - `mod.rs` (this file): a key the journal does not mention, and the
//!   helpers both kinds of key use (listing, cutting, removing segments).
//! - [`table`]: the decision table, its rows as text and as [`Row`].
//! - [`journaled`]: a key the journal mentions: observe its segments, then
//!   apply what the decide step prescribes.
//! - [`journaled_decide`]: that decide step, pure: plain data in, commands
//!   out (tested in `journaled_tests.rs`).

use std::path::Path;
use std::sync::Arc;

use crate::log;
use crate::storage::backend::{Backend, FileIo, Fs, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{self, DecodeError, FILE_HEADER_SIZE};
use crate::storage::index::SparseIndex;
use crate::storage::mmap::MappedFile;
use crate::storage::segment::{self, Scan, ScanStop, Segment};
use crate::storage::timeindex::TimeIndex;

pub mod journaled;
pub mod journaled_decide;
#[cfg(test)]
mod journaled_tests;
pub mod table;

pub use journaled::{Journaled, recover_journaled_key};
pub use journaled_decide::JournalEntry;
pub use table::{DECISION_TABLE, Refusal, Row, Rule, Step};

/// How much of the active segment recovery must check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The store was closed cleanly (or the key was closed by this process):
    /// the file ends where the last durable record ends.
    Clean,
    /// The store was not closed cleanly: the tail may be torn.
    Unclean,
}

/// What recovery found in one key directory.
pub struct Recovered {
    /// Base offsets of the sealed segments, ascending.
    pub sealed: Vec<u64>,
    /// The active segment, if the key has any segment.
    pub active: Option<Segment>,
}

/// The segment base offsets present in a key directory, ascending.
pub fn list_segments(fs: &dyn Backend, dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs.list(dir).map_err(|e| Error::io("list", dir, e))? {
        if let Some((base, format::SegmentFile::Log)) = entry
            .name
            .to_str()
            .and_then(format::parse_segment_file_name)
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Recovers the key directory `dir` following the decision table.
pub fn recover_key(fs: &Fs, dir: &Path, mode: Mode) -> Result<Recovered> {
    let mut sealed = list_segments(&**fs, dir)?;
    while let Some(base) = sealed.pop() {
        let log_path = dir.join(format::log_file_name(base));
        let (file, len, map) = open_mapped(&**fs, &log_path)?;
        match format::decode_header(&map) {
            Err(DecodeError::Truncated { .. } | DecodeError::Zeroed)
                if segment::find_record_after(&map, FILE_HEADER_SIZE as u64 - 1, base)
                    .is_none() =>
            {
                drop(map);
                crate::log::warn(format_args!(
                    "removing {} ({len} bytes): created but never synced",
                    log_path.display()
                ));
                remove_segment(&**fs, dir, base)?;
                continue;
            }
            Err(_) | Ok(_) => segment::check_header(&map, &log_path, base)?,
        }
        let (scan, index_trust) = scan_active(&**fs, &map, dir, base, mode);
        let cut_bytes = settle_tail(&map, &log_path, &scan)?;
        // The scan's map serves reads unless the file is cut, which must not
        // happen under a map (mmap.rs).
        let map = if cut_bytes > 0 {
            drop(map);
            cut(&*file, &log_path, scan.end_position)?;
            None
        } else {
            Some(map)
        };
        if index_trust == IndexTrust::Rebuilt {
            let index_path = dir.join(format::index_file_name(base));
            if let Err(e) = scan.index.write_file(&**fs, &index_path, base) {
                // A cache that cannot be written costs speed, not data.
                crate::log::warn(format_args!("cannot rewrite {}: {e}", index_path.display()));
            }
        }
        if scan.times.len() == scan.index.entries().len() {
            // The scan started at the first record (every entry closed a
            // chunk it saw): it knows the whole time index, which a cut
            // tail or a lost write may have left stale.
            settle_time_index(&**fs, dir, base, &scan);
        }
        let active = Segment::open_active(
            Arc::clone(fs),
            dir,
            base,
            file,
            map,
            scan.end_position,
            scan.next_offset,
            scan.index,
            index_trust == IndexTrust::Unchecked,
            scan.open_chunk,
        )?;
        return Ok(Recovered {
            sealed,
            active: Some(active),
        });
    }
    Ok(Recovered {
        sealed,
        active: None,
    })
}

/// How far the active segment's index can be trusted after recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexTrust {
    /// Rebuilt by the scan: it must be written to disk, and is exact.
    Rebuilt,
    /// The file on disk equals what a full scan found.
    Verified,
    /// Loaded from disk after a clean close; only its last entry was
    /// checked, so the others are checked when used.
    Unchecked,
}

/// Scans the active segment. In clean mode the scan starts at the last index
/// entry if that entry points at the record it names; otherwise, and in
/// unclean mode, at the first record.
fn scan_active(
    fs: &dyn Backend,
    bytes: &[u8],
    dir: &Path,
    base: u64,
    mode: Mode,
) -> (Scan, IndexTrust) {
    let index_path = dir.join(format::index_file_name(base));
    let on_disk = SparseIndex::load(fs, &index_path, base, bytes.len() as u64);
    if mode == Mode::Clean
        && let Ok(index) = &on_disk
    {
        let start = index
            .entries()
            .last()
            .map_or(Some((FILE_HEADER_SIZE as u64, base)), |&entry| {
                segment::checked_entry_start(bytes, base, entry)
            });
        if let Some((position, offset)) = start {
            let scan = segment::scan_records_from(bytes, base, position, offset, index.clone());
            if scan.stop.is_none() {
                let trust = if scan.index == *index {
                    IndexTrust::Unchecked
                } else {
                    IndexTrust::Rebuilt
                };
                return (scan, trust);
            }
        }
    }
    let scan = segment::scan_records(bytes, base);
    let trust = if on_disk.is_ok_and(|index| index == scan.index) {
        IndexTrust::Verified
    } else {
        IndexTrust::Rebuilt
    };
    (scan, trust)
}

/// Rewrites the active segment's time index file unless it holds exactly
/// the entries `scan` (of the whole segment) found for its closed chunks.
pub(crate) fn settle_time_index(fs: &dyn Backend, dir: &Path, base: u64, scan: &Scan) {
    let path = dir.join(format::time_index_file_name(base));
    let starts: Vec<u32> = scan.times.iter().map(|e| e.relative_offset).collect();
    let on_disk = TimeIndex::load(fs, &path, base, &starts, &[]);
    if on_disk.is_ok_and(|times| times.entries() == scan.times.as_slice()) {
        return;
    }
    let times = TimeIndex::from_entries(scan.times.clone());
    if let Err(e) = times.write_file(fs, &path, base) {
        // A cache that cannot be written costs speed, not data.
        crate::log::warn(format_args!("cannot rewrite {}: {e}", path.display()));
    }
}

/// Decides what to do with the bytes after the last valid record: returns how
/// many to cut, or the Corrupt error when they are not a tail but a hole.
fn settle_tail(bytes: &[u8], path: &Path, scan: &Scan) -> Result<u64> {
    let Some(stop) = &scan.stop else {
        return Ok(0);
    };
    let tail = &bytes[scan.end_position as usize..];
    let tail_len = tail.len() as u64;
    if tail.iter().all(|&b| b == 0) {
        crate::log::warn(format_args!(
            "{}: cutting a zero-filled tail of {tail_len} bytes at position {}",
            path.display(),
            scan.end_position
        ));
        return Ok(tail_len);
    }
    if let ScanStop::OffsetGap { .. } = stop {
        return Err(Error::corrupt(path, stop.position(), stop.to_string()));
    }
    if let Some(valid_at) = segment::find_record_after(bytes, scan.end_position, scan.next_offset) {
        return Err(Error::corrupt(
            path,
            stop.position(),
            format!("{stop}, but a valid record follows at position {valid_at}: not a torn tail"),
        ));
    }
    crate::log::warn(format_args!(
        "{}: cutting a torn tail of {tail_len} bytes at position {} ({stop})",
        path.display(),
        scan.end_position
    ));
    Ok(tail_len)
}

/// Truncates the active segment to `len` and makes the cut durable, so a
/// later crash cannot bring the torn bytes back behind new records.
fn cut(file: &dyn FileIo, path: &Path, len: u64) -> Result<()> {
    file.set_len(len)
        .map_err(|e| Error::io("truncate", path, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// Opens a segment file for reading and writing, with its length and a map
/// of all of it.
fn open_mapped(fs: &dyn Backend, log_path: &Path) -> Result<(Arc<dyn FileIo>, u64, MappedFile)> {
    let file = fs
        .open(log_path, OpenMode::Write)
        .map_err(|e| Error::io("open", log_path, e))?;
    let len = file.size().map_err(|e| Error::io("stat", log_path, e))?;
    let map = file
        .map(len as usize)
        .map_err(|e| Error::io("map", log_path, e))?;
    Ok((file, len, map))
}

/// Removes a segment that was created but never synced.
fn remove_segment(fs: &dyn Backend, dir: &Path, base: u64) -> Result<()> {
    let log_path = dir.join(format::log_file_name(base));
    fs.remove_file(&log_path)
        .map_err(|e| Error::io("remove", &log_path, e))?;
    remove_if_present(fs, &dir.join(format::index_file_name(base)))?;
    remove_time_index(fs, dir, base)?;
    crate::storage::fsutil::sync_dir(fs, dir)
}

/// Deletes the segments of the key directory `dir` whose base offset is
/// below `log_start`, oldest first, and fsyncs the directory: a log-start
/// entry in the journal says retention deleted them (or was about to), so
/// what a crash or a power loss left of them, whole or not, is never
/// served. Stray `.index` and `.timeindex` files below it go too. Returns
/// how many segments it deleted.
///
/// The fsync runs also when nothing is left to delete: after a crash
/// without a reboot (`kill -9`, or a store reopened in place) the crashed
/// run's unlinks may be in the directory cache only, so the listing shows
/// the segments gone while the disk still holds them. Once a checkpoint
/// deletes the journal that holds the log start, a power loss would bring
/// them back as the log's start.
pub fn remove_below(fs: &dyn Backend, dir: &Path, log_start: u64) -> Result<usize> {
    if log_start == 0 {
        return Ok(0);
    }
    let mut below = Vec::new();
    for entry in fs.list(dir).map_err(|e| Error::io("list", dir, e))? {
        if let Some((base, _)) = entry
            .name
            .to_str()
            .and_then(format::parse_segment_file_name)
            && base < log_start
        {
            below.push(base);
        }
    }
    below.sort_unstable();
    below.dedup();
    for &base in &below {
        remove_segment_files(fs, dir, base)?;
    }
    if !below.is_empty() {
        log::warn(format_args!(
            "{}: deleted {} segment(s) below the log start {log_start}, \
             which retention deleted before a crash",
            dir.display(),
            below.len()
        ));
    }
    crate::storage::fsutil::sync_dir(fs, dir)?;
    Ok(below.len())
}

/// Removes a segment's `.timeindex` and `.index`, then its `.log` (no
/// directory sync; the caller syncs once). The indexes go first so that a
/// crash between them never leaves an index without its log (the log alone
/// is a segment whose indexes are rebuilt, or deleted again by recovery).
pub fn remove_segment_files(fs: &dyn Backend, dir: &Path, base: u64) -> Result<()> {
    remove_time_index(fs, dir, base)?;
    remove_if_present(fs, &dir.join(format::index_file_name(base)))?;
    remove_if_present(fs, &dir.join(format::log_file_name(base)))
}

/// Removes a segment's `.timeindex`, if it has one: after recovery cut or
/// rewrote the segment's records, its entries may describe records that
/// are gone, and a missing time index is rebuilt when first used.
pub fn remove_time_index(fs: &dyn Backend, dir: &Path, base: u64) -> Result<()> {
    remove_if_present(fs, &dir.join(format::time_index_file_name(base)))
}

/// Removes a file; one already gone is fine.
fn remove_if_present(fs: &dyn Backend, path: &Path) -> Result<()> {
    match fs.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}
