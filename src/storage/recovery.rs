//! Recovery of one key's log when it is opened: the decision table of
//! `segment-format.md`, applied to what is on disk.
//!
//! Only the active (last) segment can have been cut short by a crash: a
//! segment is sealed only after all of it was fdatasynced. So recovery reads
//! the key directory's listing and the active segment, never the sealed ones.
//! After a clean shutdown it checks only the records past the last index
//! entry; after an unclean one it checks every record of the active segment,
//! which the segment size limit bounds.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use crate::storage::error::{Error, Result};
use crate::storage::format::{self, DecodeError, FILE_HEADER_SIZE};
use crate::storage::index::SparseIndex;
use crate::storage::mmap::MappedFile;
use crate::storage::segment::{self, Scan, ScanStop, Segment};

/// How much of the active segment recovery must check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The store was closed cleanly (or the key was closed by this process):
    /// the file ends where the last durable record ends.
    Clean,
    /// The store was not closed cleanly: the tail may be torn.
    Unclean,
}

/// One row of the recovery decision table: a state found on disk and the
/// action taken. `segment-format.md` lists the same rows (a test checks).
pub struct Rule {
    pub state: &'static str,
    pub action: &'static str,
}

/// The decision table, in the order recovery checks the states.
pub const DECISION_TABLE: &[Rule] = &[
    Rule {
        state: "no .log file in the key directory",
        action: "empty log; the first append creates segment 0",
    },
    Rule {
        state: "last .log shorter than its header, or its header all zero with no valid record after it",
        action: "torn creation: delete it and its .index; the previous segment is active again",
    },
    Rule {
        state: "last .log header with bad magic, CRC, version, flags or base offset, or zeroed before valid records",
        action: "refuse the key with a Corrupt error naming file and position",
    },
    Rule {
        state: "records valid up to the end of the file",
        action: "nothing to cut",
    },
    Rule {
        state: "only zero bytes after the last valid record",
        action: "zero-filled tail: cut the file after the last valid record",
    },
    Rule {
        state: "an invalid record after which no valid record follows",
        action: "torn tail: cut the file at the invalid record",
    },
    Rule {
        state: "an invalid record followed later by a valid record",
        action: "a hole, not a torn tail: refuse the key with a Corrupt error",
    },
    Rule {
        state: ".index missing, unreadable, out of order, past the log or disagreeing with it",
        action: "rebuild the index from the log",
    },
    Rule {
        state: "an invalid record in a sealed segment, found when read",
        action: "serve the records before it; a read that reaches it stops there with a Corrupt error",
    },
];

/// What recovery found in one key directory.
pub struct Recovered {
    /// Base offsets of the sealed segments, ascending.
    pub sealed: Vec<u64>,
    /// The active segment, if the key has any segment.
    pub active: Option<Segment>,
}

/// The segment base offsets present in a key directory, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if let Some((base, true)) = entry
            .file_name()
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
pub fn recover_key(dir: &Path, mode: Mode) -> Result<Recovered> {
    let mut sealed = list_segments(dir)?;
    while let Some(base) = sealed.pop() {
        let log_path = dir.join(format::log_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| Error::io("open", &log_path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &log_path, e))?
            .len();
        let map =
            MappedFile::map(&file, len as usize).map_err(|e| Error::io("map", &log_path, e))?;
        match format::decode_header(&map) {
            Err(DecodeError::Truncated { .. } | DecodeError::Zeroed)
                if segment::find_record_after(&map, FILE_HEADER_SIZE as u64 - 1, base)
                    .is_none() =>
            {
                drop(map);
                eprintln!(
                    "seglog: removing {} ({len} bytes): created but never synced",
                    log_path.display()
                );
                remove_segment(dir, base)?;
                continue;
            }
            Err(_) | Ok(_) => segment::check_header(&map, &log_path, base)?,
        }
        let (scan, index_trust) = scan_active(&map, dir, base, mode);
        let cut_bytes = settle_tail(&map, &log_path, &scan)?;
        // The scan's map serves reads unless the file is cut, which must not
        // happen under a map (mmap.rs).
        let map = if cut_bytes > 0 {
            drop(map);
            cut(&file, &log_path, scan.end_position)?;
            None
        } else {
            Some(map)
        };
        if index_trust == IndexTrust::Rebuilt {
            let index_path = dir.join(format::index_file_name(base));
            if let Err(e) = scan.index.write_file(&index_path, base) {
                // A cache that cannot be written costs speed, not data.
                eprintln!("seglog: cannot rewrite {}: {e}", index_path.display());
            }
        }
        let active = Segment::open_active(
            dir,
            base,
            file,
            map,
            scan.end_position,
            scan.next_offset,
            scan.index,
            index_trust == IndexTrust::Unchecked,
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
fn scan_active(bytes: &[u8], dir: &Path, base: u64, mode: Mode) -> (Scan, IndexTrust) {
    let index_path = dir.join(format::index_file_name(base));
    let on_disk = SparseIndex::load(&index_path, base, bytes.len() as u64);
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

/// Decides what to do with the bytes after the last valid record: returns how
/// many to cut, or the Corrupt error when they are not a tail but a hole.
fn settle_tail(bytes: &[u8], path: &Path, scan: &Scan) -> Result<u64> {
    let Some(stop) = &scan.stop else {
        return Ok(0);
    };
    let tail = &bytes[scan.end_position as usize..];
    let tail_len = tail.len() as u64;
    if tail.iter().all(|&b| b == 0) {
        eprintln!(
            "seglog: {}: cutting a zero-filled tail of {tail_len} bytes at position {}",
            path.display(),
            scan.end_position
        );
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
    eprintln!(
        "seglog: {}: cutting a torn tail of {tail_len} bytes at position {} ({stop})",
        path.display(),
        scan.end_position
    );
    Ok(tail_len)
}

/// Truncates the active segment to `len` and makes the cut durable, so a
/// later crash cannot bring the torn bytes back behind new records.
fn cut(file: &File, path: &Path, len: u64) -> Result<()> {
    file.set_len(len)
        .map_err(|e| Error::io("truncate", path, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// Removes a segment that was created but never synced.
fn remove_segment(dir: &Path, base: u64) -> Result<()> {
    let log_path = dir.join(format::log_file_name(base));
    fs::remove_file(&log_path).map_err(|e| Error::io("remove", &log_path, e))?;
    let index_path = dir.join(format::index_file_name(base));
    match fs::remove_file(&index_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &index_path, e)),
    }
    crate::storage::fsutil::sync_dir(dir)
}
