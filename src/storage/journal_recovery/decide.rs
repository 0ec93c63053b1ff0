//! The decide step of the journal's recovery (`mod.rs` reads the files and
//! applies): from a journal file's bytes, the list of files present and
//! what the checkpoint says, the [`Command`]s the decision table's journal
//! rows prescribe, each with its row. Plain data in, commands out: no I/O,
//! so each row is tested without a disk (`decide_tests.rs`).

use std::path::{Path, PathBuf};

use crate::storage::checkpoint::Found;
use crate::storage::format::{self, FILE_HEADER_SIZE};
use crate::storage::journal::{self, Entry};
use crate::storage::offsets::Committed;
use crate::storage::recovery::{Refusal, Row, Step};

use super::{EntryAt, RecoveredJournal};

/// What recovering the journal does, as the decide functions prescribe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Delete `checkpoint.tmp`.
    RemoveCheckpointTmp,
    /// Replay every journal file present, since the checkpoint that names
    /// the first live one is missing or damaged (`why`).
    ReplayEveryFile { why: String },
    /// fsync the data directory: the checkpoint's rename may not be
    /// durable yet, and files it covers are about to be deleted.
    SyncDataDir,
    /// Delete journal file `seq`.
    RemoveFile { seq: u64 },
    /// fsync `journal/`.
    SyncJournalDir,
    /// Truncate journal file `seq` to `len` and fsync it: its last
    /// `tail_bytes` bytes are a tail that is zero-filled or torn (`why`).
    CutFile {
        seq: u64,
        len: u64,
        tail_bytes: u64,
        why: String,
    },
    /// Write the first `len` bytes of journal file `seq` (as read) over
    /// themselves and fdatasync it.
    RewriteAndSync { seq: u64, len: u64 },
    /// Refuse to open the store.
    Refuse(Refusal),
}

/// A step refusing to open the store, by the row `row` (`None` for damage
/// the table has no row for).
fn refuse(row: Option<Row>, file: PathBuf, position: u64, why: impl Into<String>) -> Step<Command> {
    let why = why.into();
    Step {
        row,
        command: Command::Refuse(Refusal {
            file,
            position,
            why,
        }),
    }
}

/// Which journal files are live, and what to do with the others.
#[derive(Debug, PartialEq, Eq)]
pub struct LiveFiles {
    /// The steps, in order; a refusal ends them.
    pub steps: Vec<Step<Command>>,
    /// The live files' sequence numbers, ascending and consecutive.
    pub live: Vec<u64>,
}

/// The rows about the checkpoint and the set of journal files: from the
/// sequence numbers of the files in `journal_dir` and what the checkpoint
/// file says, which files are live; the ones a checkpoint covered are
/// deleted (after the data directory is fsynced), and a live one missing
/// refuses the store.
pub(crate) fn decide_live_files(journal_dir: &Path, seqs: &[u64], found: &Found) -> LiveFiles {
    let mut steps = Vec::new();
    let first_live = match found {
        Found::FirstLive(seq) => *seq,
        Found::Damaged(why) => {
            let why = format!("damaged ({why})");
            steps.push(Step::new(
                Row::CheckpointDamaged,
                Command::ReplayEveryFile { why },
            ));
            seqs.first().copied().unwrap_or(0)
        }
        Found::Missing => {
            let why = "missing".to_string();
            steps.push(Step::new(
                Row::CheckpointDamaged,
                Command::ReplayEveryFile { why },
            ));
            seqs.first().copied().unwrap_or(0)
        }
    };
    let covered: Vec<u64> = seqs
        .iter()
        .copied()
        .filter(|&seq| seq < first_live)
        .collect();
    if !covered.is_empty() {
        // The checkpoint naming `first_live` may be a rename the crashed
        // run never fsynced: make it durable before deleting what it
        // covers, or a power loss could bring back a checkpoint naming a
        // deleted file.
        steps.push(Step::new(Row::CoveredJournalFiles, Command::SyncDataDir));
    }
    for seq in covered {
        steps.push(Step::new(
            Row::CoveredJournalFiles,
            Command::RemoveFile { seq },
        ));
    }
    let live: Vec<u64> = seqs
        .iter()
        .copied()
        .filter(|&seq| seq >= first_live)
        .collect();
    let missing = |seq: u64, why: String| {
        let path = journal_dir.join(journal::file_name(seq));
        refuse(Some(Row::JournalFileMissing), path, 0, why)
    };
    if live.first() != Some(&first_live) {
        let why = "missing: the checkpoint names this journal file, and acknowledged records \
                   and commits may be only in it";
        steps.push(missing(first_live, why.to_string()));
        return LiveFiles { steps, live };
    }
    for (i, &seq) in live.iter().enumerate() {
        let due = first_live + i as u64;
        if seq != due {
            let why = format!("missing: journal files {} and {seq} exist", due - 1);
            steps.push(missing(due, why));
            break;
        }
    }
    LiveFiles { steps, live }
}

/// What to do with one live journal file.
#[derive(Debug, PartialEq, Eq)]
pub struct FileDecision {
    /// The steps, in order; a refusal ends them.
    pub steps: Vec<Step<Command>>,
    /// Where the file's last whole batch ends: its length once recovered.
    pub end: u64,
}

/// The journal rows about one live file, `seq` in `journal_dir`, whose
/// bytes are `bytes` (`last_file` when no later file is live): cut a
/// zero-filled or torn tail of the last file, with the whole batches of a
/// sync point whose last batch is not whole; refuse a hole or damage no
/// crash leaves, before anything is cut; rewrite and sync the file after an
/// `unclean` stop. Adds what its kept batches hold to `recovered` (as the
/// file after those already in it): the decisions about batch numbers and
/// markers need what came before.
pub(crate) fn decide_file(
    journal_dir: &Path,
    seq: u64,
    bytes: &[u8],
    last_file: bool,
    unclean: bool,
    recovered: &mut RecoveredJournal,
) -> FileDecision {
    let path = journal_dir.join(journal::file_name(seq));
    let refused = |step: Step<Command>| FileDecision {
        steps: vec![step],
        end: 0,
    };
    let scan = match journal::scan_file(bytes) {
        Ok(scan) => scan,
        Err(e) => return refused(refuse(None, path, 0, e.to_string())),
    };
    if scan.seq != seq {
        let why = format!("header names journal file {}", scan.seq);
        let position = format::HEADER_BASE_OFFSET_POS as u64;
        return refused(refuse(None, path, position, why));
    }
    // A sync point is kept whole or not at all: the valid batches after
    // the last one that ends a sync point belong to one whose last batch
    // is torn or missing, and go with it.
    let kept = scan.whole_sync_point_batches();
    let end = scan
        .batches
        .get(kept)
        .map_or(scan.end_position, |(position, _)| *position);
    let file_index = recovered.files.len();
    // Commits of a file before version 5 keep the largest offset.
    let forward_only = format::decode_header(bytes)
        .is_ok_and(|header| header.version < crate::storage::offsets::VALUE_FORMAT_VERSION);
    let next_file = match index_batches(
        &path,
        &scan.batches,
        kept,
        file_index,
        forward_only,
        recovered,
    ) {
        Ok(next_file) => next_file,
        Err(step) => return refused(step),
    };
    let mut steps = Vec::new();
    let tail = Tail {
        bytes,
        cut: end,
        end: scan.end_position,
        stop: scan.stop.as_ref().map(ToString::to_string),
    };
    if let Some(step) = tail_step(&path, seq, &tail, last_file) {
        if matches!(step.command, Command::Refuse(_)) {
            return FileDecision {
                steps: vec![step],
                end,
            };
        }
        steps.push(step);
    }
    if let Some(step) = marker_refusal(journal_dir, &path, seq, end, next_file, last_file) {
        // Refused before anything is cut.
        return refused(step);
    }
    if unclean {
        let command = Command::RewriteAndSync { seq, len: end };
        steps.push(Step::new(Row::UncleanJournal, command));
    }
    FileDecision { steps, end }
}

/// The end of a journal file as its scan found it.
struct Tail<'a> {
    /// The file's bytes.
    bytes: &'a [u8],
    /// Where its whole sync points end: what the file is cut to.
    cut: u64,
    /// Where its valid batches end (`cut` or later: the batches between
    /// are a sync point whose last batch is torn or missing).
    end: u64,
    /// Why the scan stopped at `end`, if the file goes on after it.
    stop: Option<String>,
}

/// What to do with the bytes after the last whole sync point of a journal
/// file: nothing if there are none; cut them if they are zeros, a torn
/// tail, or the batches of a sync point whose last batch is torn or
/// missing, in the last file; else refuse (a hole).
fn tail_step(path: &Path, seq: u64, tail: &Tail<'_>, last_file: bool) -> Option<Step<Command>> {
    let Tail {
        bytes,
        cut,
        end,
        ref stop,
    } = *tail;
    let incomplete = cut < end;
    if stop.is_none() && !incomplete {
        return None;
    }
    let rest = &bytes[end as usize..];
    let zeros = rest.iter().all(|&b| b == 0);
    // Where the damage is: the invalid batch, or the sync point that ends
    // the file unfinished.
    let at = if stop.is_some() { end } else { cut };
    let what = match stop {
        Some(stop) => stop.clone(),
        None => format!("a sync point from position {cut} whose last batch is missing"),
    };
    if !zeros && let Some(valid) = journal::find_batch_after(bytes, end) {
        let why = format!("{what}, but a valid batch follows at position {valid}: not a torn tail");
        return Some(refuse(Some(Row::JournalHole), path.to_path_buf(), at, why));
    }
    if !last_file {
        let why = format!("{what}, and later journal files exist: not a torn tail");
        return Some(refuse(Some(Row::JournalHole), path.to_path_buf(), at, why));
    }
    let (row, why) = if incomplete {
        let last = match stop {
            Some(stop) => format!("torn at position {end} ({stop})"),
            None => "missing".to_string(),
        };
        let why =
            format!("the batches from position {cut} are a sync point whose last batch is {last}");
        (Row::JournalTornSyncPoint, why)
    } else if zeros {
        (Row::JournalZeroTail, what)
    } else {
        (Row::JournalTornTail, what)
    };
    let command = Command::CutFile {
        seq,
        len: cut,
        tail_bytes: bytes.len() as u64 - cut,
        why,
    };
    Some(Step::new(row, command))
}

/// Checks a file's valid batches and adds the entries of the first `kept`
/// (its whole sync points) to `recovered`, the file being
/// `recovered.files[file_index]` once kept: batch numbers run on from the
/// previous file's, nothing follows a next-file marker, and a marker ends
/// its sync point (one never spans two files). Returns the sequence number
/// the marker names, if the file has one, or the refusal.
fn index_batches(
    path: &Path,
    batches: &[(u64, journal::Batch<'_>)],
    kept: usize,
    file_index: usize,
    forward_only: bool,
    recovered: &mut RecoveredJournal,
) -> std::result::Result<Option<u64>, Step<Command>> {
    let mut next_file = None;
    let mut due = recovered.has_batches.then_some(recovered.next_batch);
    for (i, (position, batch)) in batches.iter().enumerate() {
        let refusal =
            |row: Option<Row>, why: String| refuse(row, path.to_path_buf(), *position, why);
        if let Some(due) = due
            && batch.number != due
        {
            let why = format!("batch {} where {due} was due", batch.number);
            return Err(refusal(Some(Row::JournalHole), why));
        }
        due = Some(batch.number + 1);
        if next_file.is_some() {
            let why = "a batch after the marker that ends the file".to_string();
            return Err(refusal(None, why));
        }
        let marker = batch.entries.iter().find_map(|entry| match entry {
            Entry::NextFile { seq } => Some(*seq),
            _ => None,
        });
        if marker.is_some() && batch.continued {
            let why = "a next-file marker in a batch whose sync point goes on".to_string();
            return Err(refusal(None, why));
        }
        if i >= kept {
            // Part of a sync point whose last batch is torn or missing:
            // checked, never indexed.
            continue;
        }
        recovered.next_batch = batch.number + 1;
        recovered.has_batches = true;
        next_file = marker;
        let mut data = *position as usize + journal::BATCH_HEADER_SIZE;
        for entry in &batch.entries {
            data = index_entry(entry, data, file_index, forward_only, recovered);
        }
    }
    Ok(next_file)
}

/// Adds one entry, whose header starts at `data` in its file, to
/// `recovered`; returns where the next entry starts.
fn index_entry(
    entry: &Entry<'_>,
    data: usize,
    file_index: usize,
    forward_only: bool,
    recovered: &mut RecoveredJournal,
) -> usize {
    let header_and_key = journal::ENTRY_HEADER_SIZE + entry.key().map_or(0, str::len);
    // The entry's data: records' frames, or a commit's value (a producer's
    // state sits between two keys' records in one batch).
    let next = data
        + header_and_key
        + match entry {
            Entry::Records { frames, .. } => frames.len(),
            Entry::Commit { value, .. } => value.len(),
            _ => 0,
        };
    let mut add = |key: &str, at: EntryAt| {
        recovered.keys.entry(key.to_string()).or_default().push(at);
    };
    match entry {
        Entry::Records {
            key, first, frames, ..
        } => {
            let start = data + header_and_key;
            let end = start + frames.len();
            let first = *first;
            add(
                key,
                EntryAt::Records {
                    file: file_index,
                    start,
                    end,
                    first,
                },
            );
        }
        Entry::Commit { key, offset, value } => recovered.commits.push((
            (*key).to_string(),
            Some(Committed {
                offset: *offset,
                value: value.to_vec(),
            }),
            forward_only,
        )),
        Entry::Uncommitted { key } => {
            recovered
                .commits
                .push(((*key).to_string(), None, forward_only));
        }
        Entry::Direct { key, from } => add(key, EntryAt::Direct { from: *from }),
        Entry::NextFile { .. } => {}
        Entry::LogStart { key, offset } => add(key, EntryAt::LogStart { offset: *offset }),
        Entry::Removed { key } => {
            // Everything before it is about a log that is gone.
            let list = recovered.keys.entry((*key).to_string()).or_default();
            list.clear();
            list.push(EntryAt::Removed);
            recovered.has_removals = true;
        }
    }
    next
}

/// The refusal a file's next-file marker calls for, if any: it must name
/// the next file, which must be live, and every file but the last must end
/// with one.
fn marker_refusal(
    journal_dir: &Path,
    path: &Path,
    seq: u64,
    end: u64,
    next_file: Option<u64>,
    last_file: bool,
) -> Option<Step<Command>> {
    match next_file {
        Some(next) if next != seq + 1 => {
            let why = format!(
                "ends with a marker naming journal file {next}, not {}",
                seq + 1
            );
            Some(refuse(None, path.to_path_buf(), end, why))
        }
        Some(next) if last_file => {
            let why = "missing: the journal file before it names it as its successor, and \
                       acknowledged records and commits may be only in it";
            let missing = journal_dir.join(journal::file_name(next));
            Some(refuse(Some(Row::JournalFileMissing), missing, 0, why))
        }
        None if !last_file => {
            let why = "no marker naming the next journal file, yet later files exist";
            Some(refuse(None, path.to_path_buf(), end, why))
        }
        _ => None,
    }
}

/// Whether a journal file's bytes hold no batch at all: a header alone, a
/// header cut short or zero-filled (a crash while the file was created), or
/// bytes in which no batch decodes.
pub fn holds_no_batch(bytes: &[u8]) -> bool {
    match journal::scan_file(bytes) {
        Ok(scan) => {
            scan.batches.is_empty()
                && (scan.stop.is_none()
                    || journal::find_batch_after(bytes, scan.end_position).is_none())
        }
        Err(_) => journal::find_batch_after(bytes, FILE_HEADER_SIZE as u64 - 1).is_none(),
    }
}

/// Whether a journal file's last batch ends with a next-file marker.
pub fn ends_with_marker(bytes: &[u8]) -> bool {
    journal::scan_file(bytes).is_ok_and(|scan| {
        scan.batches
            .last()
            .is_some_and(|(_, batch)| matches!(batch.entries.last(), Some(Entry::NextFile { .. })))
    })
}
