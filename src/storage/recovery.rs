//! Recovery of one key's log when it is opened: the decision table of
//! `segment-format.md`, applied to what is on disk. (The journal's own rows
//! are applied when the store opens, in `journal_recovery.rs`.)
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::log;
use crate::storage::backend::{Backend, FileIo, Fs, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{self, DecodeError, FILE_HEADER_SIZE, FileKind};
use crate::storage::index::SparseIndex;
use crate::storage::journal;
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
    Rule {
        state: "checkpoint.tmp present",
        action: "a checkpoint interrupted before its rename: delete it; the previous checkpoint stands",
    },
    Rule {
        state: "checkpoint missing, journal directory present, no journal file holding a batch",
        action: "store creation or version 1 conversion interrupted (the checkpoint is written last): remove journal/ and create or convert the store again",
    },
    Rule {
        state: "checkpoint damaged, or missing while a journal file holds a batch",
        action: "replay every journal file present (files a checkpoint covered replay idempotently)",
    },
    Rule {
        state: "journal files numbered below the one the checkpoint names",
        action: "covered by it (a checkpoint interrupted after its rename): delete them",
    },
    Rule {
        state: "the journal file the checkpoint names is missing, or one between it and the last, or one a next-file marker names",
        action: "a live journal file was deleted: refuse to open with a Corrupt error naming it",
    },
    Rule {
        state: "last journal file holding no batch (header only, cut short, zero-filled) after a file that lacks its next-file marker",
        action: "a rotation interrupted before its marker: delete that file; the journal continues in the one before",
    },
    Rule {
        state: "journal: only zero bytes after the last whole batch",
        action: "zero-filled tail: cut the file after the last whole batch (truncate, fsync)",
    },
    Rule {
        state: "journal: an invalid batch after which no valid batch follows, in the last file",
        action: "torn tail: cut the file at the invalid batch (truncate, fsync); its records and commits were never acknowledged",
    },
    Rule {
        state: "journal: an invalid batch followed by a valid one, in a file before the last, or batch numbers not consecutive",
        action: "a hole, not a torn tail: refuse to open with a Corrupt error naming file and position",
    },
    Rule {
        state: "after an unclean stop, the live journal files",
        action: "fdatasync each before anything is served (a killed process may have left batches written but not synced)",
    },
    Rule {
        state: "a key the live journal does not mention",
        action: "its segments were synced by the last checkpoint: recover it as after a clean close",
    },
    Rule {
        state: "journaled records the key's segments hold, with the same CRCs (segment ahead or equal)",
        action: "nothing to write; replay is idempotent",
    },
    Rule {
        state: "journaled records past the segments' valid records (segment behind: writes lost, torn, zeroed or a hole after the key's first journaled offset)",
        action: "cut the segments after their last valid record, delete later segment files, and write the journal's records",
    },
    Rule {
        state: "a journaled record whose CRC differs from the segment's record at its offset",
        action: "cut the segment there and write the journal's records (the journal was durable first)",
    },
    Rule {
        state: "journaled records for a key with no directory, or no segment holding them",
        action: "create the directory and segments and write the journal's records",
    },
    Rule {
        state: "the key's segments end before its first journaled offset, or journaled records that do not follow on from them",
        action: "records a checkpoint synced are missing: refuse the key with a Corrupt error",
    },
    Rule {
        state: "segment records past everything the journal holds for a key it mentions (a direct sync point's)",
        action: "keep them under the segment tail rules above and fdatasync their files and directories before serving them",
    },
    Rule {
        state: "any key the live journal mentions, once recovered",
        action: "the next checkpoint syncs its segment files from the first journaled offset on, its directory and logs/, and a direct sync point for it before then syncs those files too (the crashed run may have left them unsynced)",
    },
    Rule {
        state: "commits in the live journal",
        action: "the committed offset of a key is the largest of offsets.journal's and the journal's",
    },
    Rule {
        state: "a log-start entry in the live journal, segments of the key below it still present (retention interrupted, or a deletion a power loss undid)",
        action: "delete them, oldest first, and fsync the key directory before anything else; journal records below the log start are neither replayed nor checked",
    },
    Rule {
        state: "a removed entry in the live journal with no records of the key after it",
        action: "the key's directory (or what a crash left of it) is the removed log's: rename it to rm.<name>, delete it, fsync logs/; the key has no log",
    },
    Rule {
        state: "a removed entry followed by records of the key",
        action: "entries before the removal are void; the directory at the key's name is the new log's (the removal was durable before it was created): recover it against the later entries",
    },
    Rule {
        state: "rm.<name> directories in logs/ while the live journal holds a removed entry",
        action: "a removal interrupted while deleting: delete them",
    },
    Rule {
        state: "the first segment of a key starts past offset 0, nothing in the live journal about it",
        action: "retention deleted the segments before it and a checkpoint made that durable: the log starts there",
    },
    Rule {
        state: "a key the journal holds records for is never opened before the next checkpoint",
        action: "the checkpoint recovers it first; if it cannot, checkpoints stop and the journal keeps its records",
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
pub fn list_segments(fs: &dyn Backend, dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs.list(dir).map_err(|e| Error::io("list", dir, e))? {
        if let Some((base, true)) = entry
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
    let index_path = dir.join(format::index_file_name(base));
    match fs.remove_file(&index_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &index_path, e)),
    }
    crate::storage::fsutil::sync_dir(fs, dir)
}

/// Granularity of the page cache, at which a rewrite after a crash starts:
/// a lost writeback loses whole pages.
const REWRITE_PAGE_BYTES: u64 = 4096;

/// What the live journal says about one key, in journal order.
#[derive(Clone, Copy, Debug)]
pub enum JournalEntry<'a> {
    /// Records from offset `first`, their frames as in a `.log`.
    Records { first: u64, frames: &'a [u8] },
    /// A direct sync point may have written records from `from` on into the
    /// key's segments without journaling them.
    Direct { from: u64 },
}

impl JournalEntry<'_> {
    fn first(&self) -> u64 {
        match self {
            JournalEntry::Records { first, .. } => *first,
            JournalEntry::Direct { from } => *from,
        }
    }
}

/// What recovery of a key the journal mentions found.
pub struct Journaled<'a> {
    /// The segments, the active one cut where the journal takes over.
    pub recovered: Recovered,
    /// Records to write to the segments, in offset order from the active
    /// segment's end: the journal's records the segments lack.
    pub replay: Vec<(u64, &'a [u8])>,
    /// The `.log` files kept from the one holding the key's first
    /// journaled offset on: written since the last checkpoint, perhaps
    /// never synced.
    pub unsynced: Vec<PathBuf>,
}

/// One record of the segments recovery checked: where it is and its CRC.
struct Found {
    /// Index into the key's segment list.
    segment: usize,
    position: u64,
    crc: u32,
}

/// Recovers a key that the live journal mentions (the "journal" rows of the
/// decision table). Everything before the key's first journaled offset `j0`
/// was synced by a checkpoint; from `j0` on the segments may hold anything a
/// crash left of writes never synced, and the journal is the authority.
///
/// The segments from the one holding `j0` on are scanned whole (sealed ones
/// too: they are sealed without a sync since the journal exists), giving the
/// chain of valid records with consecutive offsets. Where the journal has a
/// record the chain lacks or holds with another CRC, the segments are cut
/// and the journal's records replayed from there. Records past everything
/// the journal holds were written by a direct sync point: they are kept if
/// the usual tail rules allow, and their files fdatasynced before anything
/// is served. A chain that ends before `j0`, or journal records that do not
/// follow on from the chain, mean records that were durable are missing: the
/// key is refused.
///
/// `log_start` is the key's first offset (0 unless retention deleted
/// segments): with no segment holding `j0`, the chain starts there.
pub fn recover_journaled_key<'a>(
    fs: &Fs,
    dir: &Path,
    entries: &[JournalEntry<'a>],
    log_start: u64,
) -> Result<Journaled<'a>> {
    let j0 = entries
        .iter()
        .map(JournalEntry::first)
        .min()
        .expect("the journal mentions the key");
    // The journal's records by offset; a record journaled twice (again by a
    // batch made while a direct sync point was in flight) is the same frame.
    let mut journaled: BTreeMap<u64, &'a [u8]> = BTreeMap::new();
    for entry in entries {
        if let JournalEntry::Records { first, frames } = entry {
            for (offset, frame) in journal::frames(*first, frames) {
                journaled.entry(offset).or_insert(frame);
            }
        }
    }
    let bases = list_segments(&**fs, dir)?;
    let start = bases.partition_point(|&base| base <= j0).saturating_sub(1);
    let chain_base = match bases.get(start) {
        Some(&base) if base <= j0 => base,
        _ => log_start.min(j0),
    };
    // Scan the segments from `start` on while they chain.
    let mut found: Vec<Found> = Vec::new();
    let mut next = chain_base;
    // Where the chain stopped before the end of the segments, if it did:
    // segment index, position, why, and whether valid records follow.
    let mut stop: Option<(usize, u64, String, bool)> = None;
    for (i, &base) in bases.iter().enumerate().skip(start) {
        if base != next {
            let why = format!("segment starts at offset {base}, {next} was due");
            stop = Some((i, 0, why, true));
            break;
        }
        let log_path = dir.join(format::log_file_name(base));
        let bytes = fs
            .read(&log_path)
            .map_err(|e| Error::io("read", &log_path, e))?;
        if let Err(error) = format::decode_header(&bytes)
            .map_err(|e| e.to_string())
            .and_then(
                |header| match header.base_offset == base && header.kind == FileKind::Log {
                    true => Ok(()),
                    false => Err("header names another file".to_string()),
                },
            )
        {
            let follows = segment::find_record_after(&bytes, FILE_HEADER_SIZE as u64 - 1, base)
                .is_some()
                || i + 1 < bases.len();
            stop = Some((i, 0, error, follows));
            break;
        }
        let mut position = FILE_HEADER_SIZE as u64;
        while (position as usize) < bytes.len() {
            let record = match format::decode_log_record(&bytes[position as usize..]) {
                Ok(record) if record.offset == next => record,
                Ok(record) => {
                    let why = format!("offset {} where {next} was expected", record.offset);
                    stop = Some((i, position, why, true));
                    break;
                }
                Err(error) => {
                    let zeros = bytes[position as usize..].iter().all(|&b| b == 0);
                    let follows = !zeros
                        && (segment::find_record_after(&bytes, position, next).is_some()
                            || i + 1 < bases.len());
                    stop = Some((i, position, error.to_string(), follows));
                    break;
                }
            };
            found.push(Found {
                segment: i,
                position,
                crc: record.crc,
            });
            position += record.size() as u64;
            next += 1;
        }
        if stop.is_some() {
            break;
        }
    }
    let chain_end = next;
    // Keep the chain up to the first record the journal holds differently.
    let mut keep_end = chain_end;
    for (i, record) in found.iter().enumerate() {
        let offset = chain_base + i as u64;
        if let Some(frame) = journaled.get(&offset) {
            let crc = format::decode_record(frame).map(|r| r.crc).ok();
            if crc != Some(record.crc) {
                log::warn(format_args!(
                    "{}: record {offset} differs from the journal's: replaying from the journal",
                    dir.display()
                ));
                keep_end = offset;
                break;
            }
        }
    }
    if keep_end < j0 {
        let (file, position) = stop_place(dir, &bases, stop.as_ref());
        return Err(Error::corrupt(
            &file,
            position,
            format!(
                "the segments end at offset {keep_end}, before offset {j0}, the first the \
                 journal holds for this key: records synced by a checkpoint are missing"
            ),
        ));
    }
    let mut reach = keep_end;
    while journaled.contains_key(&reach) {
        reach += 1;
    }
    if let Some((&last, _)) = journaled.iter().next_back()
        && last >= reach
    {
        let (file, position) = stop_place(dir, &bases, stop.as_ref());
        return Err(Error::corrupt(
            &file,
            position,
            format!(
                "the journal holds offset {last} for this key, but neither it nor the \
                 segments hold offset {reach}"
            ),
        ));
    }
    // Invalid bytes after the chain that no journal record replaces: the
    // tail rules of a segment written without the journal.
    if let Some((_, _, why, follows)) = &stop
        && keep_end == chain_end
        && reach == chain_end
        && *follows
    {
        let (file, position) = stop_place(dir, &bases, stop.as_ref());
        return Err(Error::corrupt(
            &file,
            position,
            format!("{why}, and valid records follow: not a torn tail"),
        ));
    }
    // Where the kept records end: (segment index, position).
    let cut_at = match found.get((keep_end - chain_base) as usize) {
        Some(record) => Some((record.segment, record.position)),
        None => stop.as_ref().map(|(i, position, _, _)| (*i, *position)),
    };
    let mut removed_any = false;
    let mut active_index = bases.len().checked_sub(1);
    if let Some((i, position)) = cut_at {
        // Segments after the cut hold only records the journal replays (or
        // torn bytes): remove them, newest first.
        for &base in bases[i + 1..].iter().rev() {
            remove_segment_files(&**fs, dir, base)?;
            removed_any = true;
        }
        if position < FILE_HEADER_SIZE as u64 {
            remove_segment_files(&**fs, dir, bases[i])?;
            removed_any = true;
            active_index = i.checked_sub(1);
        } else {
            let log_path = dir.join(format::log_file_name(bases[i]));
            let file = fs
                .open(&log_path, OpenMode::Write)
                .map_err(|e| Error::io("open", &log_path, e))?;
            let len = file.size().map_err(|e| Error::io("stat", &log_path, e))?;
            if len > position {
                log::warn(format_args!(
                    "{}: cutting {} bytes at position {position}; the journal holds what follows",
                    log_path.display(),
                    len - position
                ));
                cut(&*file, &log_path, position)?;
            }
            active_index = Some(i);
        }
    }
    if removed_any {
        crate::storage::fsutil::sync_dir(&**fs, dir)?;
    }
    // The segments from the key's first journaled offset on were written
    // by the crashed run and may not be durable; their writeback may even
    // have failed, leaving clean pages a bare fdatasync would not write
    // (`fsutil::rewrite_and_sync`). They are rewritten, so that a sync
    // covers them: at once when they hold records the journal does not (a
    // direct sync point's), served from now on; otherwise by the checkpoint
    // that deletes the journal, which syncs every file in `unsynced`.
    let unsynced: Vec<PathBuf> = match active_index {
        Some(last) => bases[start.min(last)..=last]
            .iter()
            .map(|&base| dir.join(format::log_file_name(base)))
            .collect(),
        None => Vec::new(),
    };
    let unjournaled = (j0..keep_end).any(|offset| !journaled.contains_key(&offset));
    // The crashed run's writes start at record j0 (the checkpoint the live
    // journal starts after synced everything before it), so the first file
    // is rewritten from j0's page on: the work is bounded by what the
    // journal and the direct sync points since that checkpoint wrote.
    let j0_page = match j0
        .checked_sub(chain_base)
        .and_then(|i| usize::try_from(i).ok())
        .map(|i| found.get(i))
    {
        Some(Some(record)) if record.segment == start => {
            record.position - record.position % REWRITE_PAGE_BYTES
        }
        // The segments end just before j0: what the crashed run wrote
        // after it was cut above, and the journal's records are written
        // again below.
        Some(None) => u64::MAX,
        _ => 0,
    };
    for (n, log_path) in unsynced.iter().enumerate() {
        let bytes = fs
            .read(log_path)
            .map_err(|e| Error::io("read", log_path, e))?;
        let from = if n == 0 && start <= active_index.unwrap_or(0) {
            usize::try_from(j0_page).unwrap_or(usize::MAX)
        } else {
            0
        };
        crate::storage::fsutil::rewrite_in_place(&**fs, log_path, &bytes, from, unjournaled)?;
    }
    if unjournaled && !unsynced.is_empty() {
        // Their directory entries too: served from now on, and no journal
        // entry would bring them back.
        crate::storage::fsutil::sync_dir(&**fs, dir)?;
        if let Some(logs_dir) = dir.parent() {
            crate::storage::fsutil::sync_dir(&**fs, logs_dir)?;
        }
    }
    let replay = (keep_end..reach)
        .map(|offset| (offset, journaled[&offset]))
        .collect();
    let Some(last) = active_index else {
        return Ok(Journaled {
            recovered: Recovered {
                sealed: Vec::new(),
                active: None,
            },
            replay,
            unsynced,
        });
    };
    let base = bases[last];
    let log_path = dir.join(format::log_file_name(base));
    let (file, len, map) = open_mapped(&**fs, &log_path)?;
    let scan = segment::scan_records(&map, base);
    if scan.stop.is_some() || scan.end_position != len {
        return Err(Error::corrupt(
            &log_path,
            scan.end_position,
            "the active segment does not end at a record boundary after recovery",
        ));
    }
    let index_path = dir.join(format::index_file_name(base));
    if SparseIndex::load(&**fs, &index_path, base, len)
        .ok()
        .as_ref()
        != Some(&scan.index)
        && let Err(e) = scan.index.write_file(&**fs, &index_path, base)
    {
        log::warn(format_args!("cannot rewrite {}: {e}", index_path.display()));
    }
    let active = Segment::open_active(
        Arc::clone(fs),
        dir,
        base,
        file,
        Some(map),
        scan.end_position,
        scan.next_offset,
        scan.index,
        false,
    )?;
    Ok(Journaled {
        recovered: Recovered {
            sealed: bases[..last].to_vec(),
            active: Some(active),
        },
        replay,
        unsynced,
    })
}

/// The file and position an error about the chain's end names.
fn stop_place(
    dir: &Path,
    bases: &[u64],
    stop: Option<&(usize, u64, String, bool)>,
) -> (PathBuf, u64) {
    match stop {
        Some((i, position, _, _)) => (dir.join(format::log_file_name(bases[*i])), *position),
        None => match bases.last() {
            Some(&base) => (dir.join(format::log_file_name(base)), 0),
            None => (dir.to_path_buf(), 0),
        },
    }
}

/// Deletes the segments of the key directory `dir` whose base offset is
/// below `log_start`, oldest first, and fsyncs the directory if it deleted
/// any: a log-start entry in the journal says retention deleted them (or was
/// about to), so what a crash or a power loss left of them, whole or not, is
/// never served. Stray `.index` files below it go too. Returns how many
/// segments it deleted.
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
        crate::storage::fsutil::sync_dir(fs, dir)?;
    }
    Ok(below.len())
}

/// Removes a segment's `.index`, then its `.log` (no directory sync; the
/// caller syncs once). The index goes first so that a crash between the two
/// never leaves an index without its log (the log alone is a segment whose
/// index is rebuilt, or deleted again by recovery).
pub fn remove_segment_files(fs: &dyn Backend, dir: &Path, base: u64) -> Result<()> {
    for path in [
        dir.join(format::index_file_name(base)),
        dir.join(format::log_file_name(base)),
    ] {
        match fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
    }
    Ok(())
}
