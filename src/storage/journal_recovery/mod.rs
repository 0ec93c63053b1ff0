//! Recovery of the write-ahead journal when a store opens: which journal
//! files are live, cutting a torn tail, and an index of what the live
//! journal holds for each key, applied when the key is first opened
//! (`store/key_cache.rs`, lazily) or before the next checkpoint deletes
//! the files.
//!
//! The live files are read whole: their size is bounded by the checkpoint
//! size, and reopen cost is meant to be proportional to them.
//!
//! # Layout
//! - `mod.rs` (this file): what recovery hands the store
//!   ([`RecoveredJournal`], a key's entries), and [`recover`], which reads
//!   the files and applies the commands the decide step returns.
//! - [`decide`]: the decide step, pure: plain data in, commands out
//!   (tested in `decide_tests.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::log;
use crate::storage::backend::{Backend, OpenMode};
use crate::storage::checkpoint;
use crate::storage::error::{Error, Result};
use crate::storage::format;
use crate::storage::fsutil;
use crate::storage::journal;
use crate::storage::offsets::Change;
use crate::storage::recovery::{JournalEntry, Row, Step};

pub mod decide;
#[cfg(test)]
mod decide_tests;

pub use decide::{Command, FileDecision, LiveFiles};
pub(crate) use decide::{decide_file, decide_live_files};
use decide::{ends_with_marker, holds_no_batch};

/// Where one entry about a key is in the recovered files.
#[derive(Clone, Copy, Debug)]
pub enum EntryAt {
    /// Records: file index, byte range of the frames, first offset.
    Records {
        file: usize,
        start: usize,
        end: usize,
        first: u64,
    },
    /// A direct sync point's note.
    Direct { from: u64 },
    /// The key's log starts at `offset` (retention deleted what was below).
    LogStart { offset: u64 },
    /// The key's log was removed; always the first entry of a key's list,
    /// since it voids every earlier one.
    Removed,
}

/// A key's entries taken out of the index, with the bytes they point into.
pub type Taken = (Vec<Arc<Vec<u8>>>, Vec<EntryAt>);

/// What the live journal held when the store opened.
#[derive(Default)]
pub struct RecoveredJournal {
    /// The bytes of each live file, as recovered.
    pub files: Vec<Arc<Vec<u8>>>,
    /// Per key, its entries in journal order, until the key is recovered.
    pub keys: HashMap<String, Vec<EntryAt>>,
    /// Every change of a commit in the live journal, in order, each with
    /// whether its file's version is before 5 (when the largest offset
    /// was the commit, not the last).
    pub commits: Vec<(String, Change, bool)>,
    /// Paths of the live files, by sequence number.
    pub paths: Vec<PathBuf>,
    /// Sequence number of the last live file (the one appends continue in).
    pub last_seq: u64,
    /// Its length after recovery.
    pub last_len: u64,
    /// Number the next batch gets.
    pub next_batch: u64,
    /// Whether any live file holds a batch.
    pub has_batches: bool,
    /// Whether any live file holds a removed entry: the store then finishes
    /// the removals when it opens.
    pub has_removals: bool,
    /// The format version in the header of the last live file: a file of
    /// an older version must not get entries it cannot read.
    pub last_version: u16,
}

impl RecoveredJournal {
    /// The entries of `key`, taken out of the index, as the slices recovery
    /// of the key wants, with the file bytes they borrow from.
    pub fn take(&mut self, key: &str) -> Option<Taken> {
        let entries = self.keys.remove(key)?;
        Some((self.files.clone(), entries))
    }

    /// Puts back the entries of a key whose recovery failed, so they stay
    /// live (and block checkpoints) until it succeeds.
    pub fn put_back(&mut self, key: &str, entries: Vec<EntryAt>) {
        self.keys.insert(key.to_string(), entries);
    }
}

/// What the live journal says about one key, ready for its recovery.
pub struct KeyEntries<'a> {
    /// The largest log start the journal names for the key (0 if none):
    /// segments below it are deleted before anything else is recovered.
    pub log_start: u64,
    /// The records and direct notes at or past `log_start`, in journal
    /// order: records below it were deleted by retention and are neither
    /// replayed nor checked (a records entry that straddles it is cut).
    pub entries: Vec<JournalEntry<'a>>,
}

/// The entries of a key as slices of the recovered files, with everything
/// below its log start left out. A removed marker (the first entry, when
/// present) says nothing here: the store handled it when it opened.
pub fn entries<'a>(files: &'a [Arc<Vec<u8>>], at: &[EntryAt]) -> KeyEntries<'a> {
    let log_start = at
        .iter()
        .filter_map(|entry| match entry {
            EntryAt::LogStart { offset } => Some(*offset),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut entries = Vec::new();
    for entry in at {
        match *entry {
            EntryAt::Records {
                file,
                start,
                end,
                first,
            } => {
                let mut frames = &files[file][start..end];
                let mut first = first;
                // Skip whole frames below the log start (the entry was
                // checked when the journal was read, so frames are whole).
                for (offset, frame) in journal::frames(first, frames) {
                    if offset >= log_start {
                        break;
                    }
                    frames = &frames[frame.len()..];
                    first = offset + 1;
                }
                if !frames.is_empty() {
                    entries.push(JournalEntry::Records { first, frames });
                }
            }
            EntryAt::Direct { from } => entries.push(JournalEntry::Direct {
                from: from.max(log_start),
            }),
            EntryAt::LogStart { .. } | EntryAt::Removed => {}
        }
    }
    KeyEntries { log_start, entries }
}

/// Whether a key's entries end its log (a removed marker with no records
/// after it): the directory at the key's name, if any, is the removed
/// log's, and no later one was written.
pub fn removed_only(at: &[EntryAt]) -> bool {
    matches!(at.first(), Some(EntryAt::Removed))
        && !at
            .iter()
            .any(|entry| matches!(entry, EntryAt::Records { .. } | EntryAt::Direct { .. }))
}

/// Opens the journal of the data directory `data_dir` (versions 2 to 4):
/// applies the journal rows of the decision table to its files, and when
/// the stop was `unclean` rewrites and fdatasyncs every live file
/// ([`crate::storage::fsutil::rewrite_and_sync`]), since a killed process
/// may have left batches written but not synced (or whose writeback failed)
/// that the store is about to serve.
///
/// Each stage reads what it needs, asks a decide function (no I/O) for
/// the [`Command`]s its rows prescribe, and applies them, in this order: a
/// leftover `checkpoint.tmp`; which files are live (`decide_live_files`);
/// an interrupted rotation; then each live file in turn (`decide_file`).
pub fn recover(
    fs: &dyn Backend,
    data_dir: &Path,
    journal_dir: &Path,
    unclean: bool,
) -> Result<RecoveredJournal> {
    let places = Places {
        data_dir,
        journal_dir,
        bytes: &[],
    };
    let tmp = data_dir.join(checkpoint::CHECKPOINT_TMP_NAME);
    if fsutil::exists(fs, &tmp)? {
        let step = Step::new(Row::CheckpointTmp, Command::RemoveCheckpointTmp);
        apply(fs, &places, &[step])?;
    }
    let seqs = journal::list_files(fs, journal_dir)?;
    let found = checkpoint::read(fs, data_dir)?;
    let files = decide_live_files(journal_dir, &seqs, &found);
    apply(fs, &places, &files.steps)?;
    let mut live = files.live;
    drop_interrupted_rotation(fs, &places, &mut live)?;
    let mut recovered = RecoveredJournal::default();
    let count = live.len();
    for (i, &seq) in live.iter().enumerate() {
        let path = journal_dir.join(journal::file_name(seq));
        let mut bytes = fs.read(&path).map_err(|e| Error::io("read", &path, e))?;
        let last_file = i + 1 == count;
        let file = decide_file(journal_dir, seq, &bytes, last_file, unclean, &mut recovered);
        let at = Places {
            bytes: &bytes,
            ..places
        };
        apply(fs, &at, &file.steps)?;
        bytes.truncate(file.end as usize);
        recovered.last_version = format::decode_header(&bytes)
            .map(|header| header.version)
            .unwrap_or_default();
        recovered.files.push(Arc::new(bytes));
        recovered.paths.push(path);
        recovered.last_seq = seq;
        recovered.last_len = file.end;
    }
    Ok(recovered)
}

/// What the commands of the journal's recovery name: its directories, and
/// the bytes of the journal file being recovered, which a rewrite writes
/// back as they were read.
#[derive(Clone, Copy)]
struct Places<'a> {
    data_dir: &'a Path,
    journal_dir: &'a Path,
    bytes: &'a [u8],
}

/// Runs `steps` in order; a refusal stops them with its error.
fn apply(fs: &dyn Backend, at: &Places<'_>, steps: &[Step<Command>]) -> Result<()> {
    let file = |seq: u64| at.journal_dir.join(journal::file_name(seq));
    for step in steps {
        match &step.command {
            Command::RemoveCheckpointTmp => {
                let tmp = at.data_dir.join(checkpoint::CHECKPOINT_TMP_NAME);
                log::warn(format_args!(
                    "removing {}: a checkpoint interrupted before its rename; the previous one \
                     stands",
                    tmp.display()
                ));
                fs.remove_file(&tmp)
                    .map_err(|e| Error::io("remove", &tmp, e))?;
            }
            Command::ReplayEveryFile { why } => {
                let path = at.data_dir.join(checkpoint::CHECKPOINT_FILE_NAME);
                log::warn(format_args!(
                    "{} is {why}: replaying every journal file present",
                    path.display()
                ));
            }
            Command::SyncDataDir => fsutil::sync_dir(fs, at.data_dir)?,
            Command::RemoveFile { seq } => {
                let path = file(*seq);
                if step.row == Some(Row::RotationInterrupted) {
                    log::warn(format_args!(
                        "removing {}: created by a rotation interrupted before it was used",
                        path.display()
                    ));
                } else {
                    log::info(format_args!(
                        "removing {}: covered by the checkpoint",
                        path.display()
                    ));
                }
                fs.remove_file(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
            }
            Command::SyncJournalDir => fsutil::sync_dir(fs, at.journal_dir)?,
            Command::CutFile {
                seq,
                len,
                tail_bytes,
                why,
            } => {
                let path = file(*seq);
                let what = match step.row {
                    Some(Row::JournalZeroTail) => "zero-filled tail",
                    Some(Row::JournalTornSyncPoint) => "torn sync point",
                    _ => "torn tail",
                };
                log::warn(format_args!(
                    "{}: cutting a {what} of {tail_bytes} bytes at position {len} ({why})",
                    path.display(),
                ));
                let handle = fs
                    .open(&path, OpenMode::Write)
                    .map_err(|e| Error::io("open", &path, e))?;
                handle
                    .set_len(*len)
                    .and_then(|()| handle.sync_all())
                    .map_err(|e| Error::io("truncate", &path, e))?;
            }
            Command::RewriteAndSync { seq, len } => {
                fsutil::rewrite_and_sync(fs, &file(*seq), &at.bytes[..*len as usize])?;
            }
            Command::Refuse(refusal) => return Err(refusal.clone().into_error()),
        }
    }
    Ok(())
}

/// Whether any file in `journal_dir` holds a batch: a store whose
/// `checkpoint` is missing and whose journal holds none was being created
/// (or converted from version 1) when it stopped, `store/open.rs` decides.
pub fn any_batch(fs: &dyn Backend, journal_dir: &Path) -> Result<bool> {
    for seq in journal::list_files(fs, journal_dir)? {
        let path = journal_dir.join(journal::file_name(seq));
        let bytes = fs.read(&path).map_err(|e| Error::io("read", &path, e))?;
        if !holds_no_batch(&bytes) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A rotation creates the next journal file (synced) before it writes the
/// marker that ends the current one, and fdatasyncs the marker before the
/// new file gets a batch. A crash between the two leaves a last file with
/// no batch (perhaps not even a whole header) after a file with no marker:
/// nothing was written to the new file, so it is removed and the journal
/// continues in the old one. The previous file is read only when the last
/// one holds no batch.
fn drop_interrupted_rotation(
    fs: &dyn Backend,
    places: &Places<'_>,
    live: &mut Vec<u64>,
) -> Result<()> {
    let read = |seq: u64| {
        let path = places.journal_dir.join(journal::file_name(seq));
        fs.read(&path).map_err(|e| Error::io("read", &path, e))
    };
    while let [.., previous, last] = live[..] {
        if !holds_no_batch(&read(last)?) || ends_with_marker(&read(previous)?) {
            return Ok(());
        }
        let steps = [
            Step::new(Row::RotationInterrupted, Command::RemoveFile { seq: last }),
            Step::new(Row::RotationInterrupted, Command::SyncJournalDir),
        ];
        apply(fs, places, &steps)?;
        live.pop();
    }
    Ok(())
}
