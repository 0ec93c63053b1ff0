//! Recovery of a key the live journal mentions: the "journal" rows of the
//! decision table. Everything before the key's first journaled offset `j0`
//! was synced by a checkpoint; from `j0` on the segments may hold anything
//! a crash left of writes never synced, and the journal is the authority.
//!
//! It runs in three steps, as openraft's engine and runtime do:
//! 1. *observe* (`observe`, here): list the key's segments and scan those
//!    from the one holding `j0` on while their records chain, into a
//!    [`Chain`] of plain data (where each valid record is, its CRC, where
//!    and why the chain stopped);
//! 2. *decide* (`decide`, in `journaled_decide.rs`): from the chain and
//!    the journal's records, the [`Command`]s the table prescribes, each
//!    with its row: remove or cut segments, rewrite and sync what the
//!    crashed run left unsynced, or refuse the key; and what to replay;
//! 3. *apply* (`apply`, here): run the commands through the [`Backend`],
//!    then open the active segment that is left.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::log;
use crate::storage::backend::{Backend, Fs, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{self, FILE_HEADER_SIZE, FileKind};
use crate::storage::fsutil;
use crate::storage::index::SparseIndex;
use crate::storage::segment::{self, Segment};

use super::journaled_decide::{
    Chain, ChainStop, Command, Found, JournalEntry, JournalView, Tail, decide,
};
use super::table::{Row, Step};
use super::{
    Recovered, cut, list_segments, open_mapped, remove_segment_files, remove_time_index,
    settle_time_index,
};

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

/// Recovers a key that the live journal mentions: observe, decide, apply
/// (see the module comment), then opens the active segment left.
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
    let journal = JournalView::new(entries);
    let chain = observe(&**fs, dir, journal.j0, log_start)?;
    let decision = decide(dir, &journal, &chain);
    apply(&**fs, dir, &decision.steps)?;
    let unsynced = decision
        .unsynced
        .iter()
        .map(|&base| dir.join(format::log_file_name(base)))
        .collect();
    let active = match decision.active {
        Some(base) => Some(open_active(fs, dir, base)?),
        None => None,
    };
    Ok(Journaled {
        recovered: Recovered {
            sealed: decision.sealed,
            active,
        },
        replay: decision.replay,
        unsynced,
    })
}

/// Lists the key's segments and scans them from the one holding `j0` on
/// while their records chain.
pub(crate) fn observe(fs: &dyn Backend, dir: &Path, j0: u64, log_start: u64) -> Result<Chain> {
    let bases = list_segments(fs, dir)?;
    scan_chain(bases, j0, log_start, |base| {
        let log_path = dir.join(format::log_file_name(base));
        fs.read(&log_path)
            .map_err(|e| Error::io("read", &log_path, e))
    })
}

/// The chain of valid records in the segments `bases`, from the one holding
/// `j0` on, reading each segment's bytes with `read` (by base offset) only
/// if the chain reaches it: the observation without the disk, which tests
/// feed with bytes.
pub(crate) fn scan_chain(
    bases: Vec<u64>,
    j0: u64,
    log_start: u64,
    mut read: impl FnMut(u64) -> Result<Vec<u8>>,
) -> Result<Chain> {
    let start = bases.partition_point(|&base| base <= j0).saturating_sub(1);
    let chain_base = match bases.get(start) {
        Some(&base) if base <= j0 => base,
        _ => log_start.min(j0),
    };
    let mut found = Vec::new();
    let mut next = chain_base;
    let mut stop = None;
    for (i, &base) in bases.iter().enumerate().skip(start) {
        if base != next {
            let why = format!("segment starts at offset {base}, {next} was due");
            stop = Some(stop_at(i, 0, why, Tail::Hole));
            break;
        }
        let bytes = read(base)?;
        let more = i + 1 < bases.len();
        let (end, stopped) = scan_segment(&bytes, i, base, more, &mut found);
        next = end;
        if stopped.is_some() {
            stop = stopped;
            break;
        }
    }
    Ok(Chain {
        bases,
        start,
        chain_base,
        found,
        stop,
    })
}

/// Scans the bytes of segment `i` (base offset `base`, which the chain
/// expects next; `more` when later segments exist), adding its valid
/// records to `found`. Returns the offset after the last one, and where
/// the chain stopped if it did before the end of the file.
pub(crate) fn scan_segment(
    bytes: &[u8],
    i: usize,
    base: u64,
    more: bool,
    found: &mut Vec<Found>,
) -> (u64, Option<ChainStop>) {
    let header = format::decode_header(bytes)
        .map_err(|e| e.to_string())
        .and_then(
            |header| match header.base_offset == base && header.kind == FileKind::Log {
                true => Ok(()),
                false => Err("header names another file".to_string()),
            },
        );
    if let Err(why) = header {
        let follows =
            segment::find_record_after(bytes, FILE_HEADER_SIZE as u64 - 1, base).is_some() || more;
        let tail = if follows { Tail::Hole } else { Tail::Torn };
        return (base, Some(stop_at(i, 0, why, tail)));
    }
    let mut next = base;
    let mut position = FILE_HEADER_SIZE as u64;
    while (position as usize) < bytes.len() {
        let record = match format::decode_log_record(&bytes[position as usize..]) {
            Ok(record) if record.offset == next => record,
            Ok(record) => {
                let why = format!("offset {} where {next} was expected", record.offset);
                return (next, Some(stop_at(i, position, why, Tail::Hole)));
            }
            Err(error) => {
                // Zeros are a tail only in the last segment: before a later
                // one they are damage with valid records after it, a hole
                // (which the journal repairs where it holds the records,
                // and which is refused where it does not).
                let zeros = bytes[position as usize..].iter().all(|&b| b == 0);
                let tail = if more || segment::find_record_after(bytes, position, next).is_some() {
                    Tail::Hole
                } else if zeros {
                    Tail::Zeros
                } else {
                    Tail::Torn
                };
                return (next, Some(stop_at(i, position, error.to_string(), tail)));
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
    (next, None)
}

fn stop_at(segment: usize, position: u64, why: String, tail: Tail) -> ChainStop {
    ChainStop {
        segment,
        position,
        why,
        tail,
    }
}

/// Runs the commands of a decision in the key directory `dir`, in
/// order; a refusal stops them with its error.
pub(crate) fn apply(fs: &dyn Backend, dir: &Path, steps: &[Step<Command>]) -> Result<()> {
    for step in steps {
        match &step.command {
            Command::RemoveSegment { base } => remove_segment_files(fs, dir, *base)?,
            Command::CutSegment { base, position } => {
                let log_path = dir.join(format::log_file_name(*base));
                let file = fs
                    .open(&log_path, OpenMode::Write)
                    .map_err(|e| Error::io("open", &log_path, e))?;
                let len = file.size().map_err(|e| Error::io("stat", &log_path, e))?;
                if len > *position {
                    let why = match step.row {
                        Some(Row::ZeroTail) => "a zero-filled tail",
                        Some(Row::TornTail) => "a torn tail",
                        Some(Row::TornCreation) => "a torn creation",
                        Some(Row::CrcDiffers) => "records the journal holds otherwise",
                        _ => "records the journal holds in full",
                    };
                    log::warn(format_args!(
                        "{}: cutting {} bytes at position {position}: {why}",
                        log_path.display(),
                        len - position,
                    ));
                    cut(&*file, &log_path, *position)?;
                    remove_time_index(fs, dir, *base)?;
                }
            }
            Command::SyncKeyDir => fsutil::sync_dir(fs, dir)?,
            Command::RewriteSegment { base, from, sync } => {
                let log_path = dir.join(format::log_file_name(*base));
                let bytes = fs
                    .read(&log_path)
                    .map_err(|e| Error::io("read", &log_path, e))?;
                let from = usize::try_from(*from).unwrap_or(usize::MAX);
                fsutil::rewrite_in_place(fs, &log_path, &bytes, from, *sync)?;
                remove_time_index(fs, dir, *base)?;
            }
            Command::SyncLogsDir => {
                if let Some(logs_dir) = dir.parent() {
                    fsutil::sync_dir(fs, logs_dir)?;
                }
            }
            Command::Refuse(refusal) => return Err(refusal.clone().into_error()),
        }
    }
    Ok(())
}

/// Opens the active segment recovery left, which must end at a record
/// boundary now, and rewrites its indexes if those on disk disagree.
fn open_active(fs: &Fs, dir: &Path, base: u64) -> Result<Segment> {
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
    settle_time_index(&**fs, dir, base, &scan);
    Segment::open_active(
        Arc::clone(fs),
        dir,
        base,
        file,
        Some(map),
        scan.end_position,
        scan.next_offset,
        scan.index,
        false,
        scan.open_chunk,
    )
}
