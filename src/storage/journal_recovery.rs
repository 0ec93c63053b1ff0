//! Recovery of the write-ahead journal when a store opens: which journal
//! files are live, cutting a torn tail, and an index of what the live
//! journal holds for each key, applied when the key is first opened
//! (`store.rs`, lazily) or before the next checkpoint deletes the files.
//!
//! The live files are read whole: their size is bounded by the checkpoint
//! size, and reopen cost is meant to be proportional to them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::log;
use crate::storage::backend::{Backend, OpenMode};
use crate::storage::checkpoint::{self, Found};
use crate::storage::error::{Error, Result};
use crate::storage::format::FILE_HEADER_SIZE;
use crate::storage::journal::{self, Entry};
use crate::storage::recovery::JournalEntry;

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
    /// Every commit in the live journal, in order.
    pub commits: Vec<(String, u64)>,
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

/// Opens the journal of the data directory `data_dir` (versions 2 and 3): applies
/// the journal rows of the decision table to its files, and when the stop
/// was `unclean` rewrites and fdatasyncs every live file
/// ([`crate::storage::fsutil::rewrite_and_sync`]), since a killed process
/// may have left batches written but not synced (or whose writeback failed)
/// that the store is about to serve.
pub fn recover(
    fs: &dyn Backend,
    data_dir: &Path,
    journal_dir: &Path,
    unclean: bool,
) -> Result<RecoveredJournal> {
    let tmp = data_dir.join(checkpoint::CHECKPOINT_TMP_NAME);
    if crate::storage::fsutil::exists(fs, &tmp)? {
        log::warn(format_args!(
            "removing {}: a checkpoint interrupted before its rename; the previous one stands",
            tmp.display()
        ));
        fs.remove_file(&tmp)
            .map_err(|e| Error::io("remove", &tmp, e))?;
    }
    let checkpoint_path = data_dir.join(checkpoint::CHECKPOINT_FILE_NAME);
    let seqs = journal::list_files(fs, journal_dir)?;
    let first_live = match checkpoint::read(fs, data_dir)? {
        Found::FirstLive(seq) => seq,
        found => {
            let why = match found {
                Found::Damaged(why) => format!("damaged ({why})"),
                _ => "missing".to_string(),
            };
            log::warn(format_args!(
                "{} is {why}: replaying every journal file present",
                checkpoint_path.display()
            ));
            seqs.first().copied().unwrap_or(0)
        }
    };
    if seqs.iter().any(|&seq| seq < first_live) {
        // The checkpoint naming `first_live` may be a rename the crashed
        // run never fsynced: make it durable before deleting what it
        // covers, or a power loss could bring back a checkpoint naming a
        // deleted file.
        crate::storage::fsutil::sync_dir(fs, data_dir)?;
    }
    for &seq in seqs.iter().filter(|&&seq| seq < first_live) {
        let path = journal_dir.join(journal::file_name(seq));
        log::info(format_args!(
            "removing {}: covered by the checkpoint",
            path.display()
        ));
        fs.remove_file(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
    }
    let live: Vec<u64> = seqs.into_iter().filter(|&seq| seq >= first_live).collect();
    let first_path = journal_dir.join(journal::file_name(first_live));
    if live.first() != Some(&first_live) {
        return Err(Error::corrupt(
            &first_path,
            0,
            "missing: the checkpoint names this journal file, and acknowledged records \
             and commits may be only in it",
        ));
    }
    for (i, &seq) in live.iter().enumerate() {
        let due = first_live + i as u64;
        if seq != due {
            return Err(Error::corrupt(
                &journal_dir.join(journal::file_name(due)),
                0,
                format!("missing: journal files {} and {seq} exist", due - 1),
            ));
        }
    }
    let mut live = live;
    drop_interrupted_rotation(fs, journal_dir, &mut live)?;
    let mut recovered = RecoveredJournal::default();
    let mut expected_batch: Option<u64> = None;
    let count = live.len();
    for (i, &seq) in live.iter().enumerate() {
        let path = journal_dir.join(journal::file_name(seq));
        let mut bytes = fs.read(&path).map_err(|e| Error::io("read", &path, e))?;
        let scan =
            journal::scan_file(&bytes).map_err(|e| Error::corrupt(&path, 0, e.to_string()))?;
        if scan.seq != seq {
            return Err(Error::corrupt(
                &path,
                crate::storage::format::HEADER_BASE_OFFSET_POS as u64,
                format!("header names journal file {}", scan.seq),
            ));
        }
        let last_file = i + 1 == count;
        let end = scan.end_position;
        if let Some(stop) = &scan.stop {
            let tail = &bytes[end as usize..];
            let zeros = tail.iter().all(|&b| b == 0);
            let valid_after = if zeros {
                None
            } else {
                journal::find_batch_after(&bytes, end)
            };
            if let Some(at) = valid_after {
                return Err(Error::corrupt(
                    &path,
                    end,
                    format!("{stop}, but a valid batch follows at position {at}: not a torn tail"),
                ));
            }
            if !last_file {
                return Err(Error::corrupt(
                    &path,
                    end,
                    format!("{stop}, and later journal files exist: not a torn tail"),
                ));
            }
            log::warn(format_args!(
                "{}: cutting a {} tail of {} bytes at position {end} ({stop})",
                path.display(),
                if zeros { "zero-filled" } else { "torn" },
                tail.len()
            ));
            let file = fs
                .open(&path, OpenMode::Write)
                .map_err(|e| Error::io("open", &path, e))?;
            file.set_len(end)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io("truncate", &path, e))?;
        }
        let mut next_file = None;
        let file_index = recovered.files.len();
        for (position, batch) in &scan.batches {
            if let Some(due) = expected_batch
                && batch.number != due
            {
                return Err(Error::corrupt(
                    &path,
                    *position,
                    format!("batch {} where {due} was due", batch.number),
                ));
            }
            if next_file.is_some() {
                return Err(Error::corrupt(
                    &path,
                    *position,
                    "a batch after the marker that ends the file",
                ));
            }
            expected_batch = Some(batch.number + 1);
            recovered.has_batches = true;
            let mut data = *position as usize + journal::BATCH_HEADER_SIZE;
            for entry in &batch.entries {
                let header_and_key = journal::ENTRY_HEADER_SIZE + entry.key().map_or(0, str::len);
                match entry {
                    Entry::Records {
                        key, first, frames, ..
                    } => {
                        let start = data + header_and_key;
                        recovered.keys.entry((*key).to_string()).or_default().push(
                            EntryAt::Records {
                                file: file_index,
                                start,
                                end: start + frames.len(),
                                first: *first,
                            },
                        );
                        data = start + frames.len();
                    }
                    Entry::Commit { key, offset } => {
                        recovered.commits.push(((*key).to_string(), *offset));
                        data += header_and_key;
                    }
                    Entry::Direct { key, from } => {
                        recovered
                            .keys
                            .entry((*key).to_string())
                            .or_default()
                            .push(EntryAt::Direct { from: *from });
                        data += header_and_key;
                    }
                    Entry::NextFile { seq } => {
                        next_file = Some(*seq);
                        data += header_and_key;
                    }
                    Entry::LogStart { key, offset } => {
                        recovered
                            .keys
                            .entry((*key).to_string())
                            .or_default()
                            .push(EntryAt::LogStart { offset: *offset });
                        data += header_and_key;
                    }
                    Entry::Removed { key } => {
                        // Everything before it is about a log that is gone.
                        let list = recovered.keys.entry((*key).to_string()).or_default();
                        list.clear();
                        list.push(EntryAt::Removed);
                        recovered.has_removals = true;
                        data += header_and_key;
                    }
                }
            }
        }
        match next_file {
            Some(next) if next != seq + 1 => {
                return Err(Error::corrupt(
                    &path,
                    end,
                    format!(
                        "ends with a marker naming journal file {next}, not {}",
                        seq + 1
                    ),
                ));
            }
            Some(next) if last_file => {
                return Err(Error::corrupt(
                    &journal_dir.join(journal::file_name(next)),
                    0,
                    "missing: the journal file before it names it as its successor, and \
                     acknowledged records and commits may be only in it",
                ));
            }
            None if !last_file => {
                return Err(Error::corrupt(
                    &path,
                    end,
                    "no marker naming the next journal file, yet later files exist",
                ));
            }
            _ => {}
        }
        if unclean {
            crate::storage::fsutil::rewrite_and_sync(fs, &path, &bytes[..end as usize])?;
        }
        bytes.truncate(end as usize);
        recovered.last_version = crate::storage::format::decode_header(&bytes)
            .map(|header| header.version)
            .unwrap_or_default();
        recovered.files.push(Arc::new(bytes));
        recovered.paths.push(path);
        recovered.last_seq = seq;
        recovered.last_len = end;
    }
    recovered.next_batch = expected_batch.unwrap_or(0);
    Ok(recovered)
}

/// Whether a journal file's bytes hold no batch at all: a header alone, a
/// header cut short or zero-filled (a crash while the file was created), or
/// bytes in which no batch decodes.
fn holds_no_batch(bytes: &[u8]) -> bool {
    match journal::scan_file(bytes) {
        Ok(scan) => {
            scan.batches.is_empty()
                && (scan.stop.is_none()
                    || journal::find_batch_after(bytes, scan.end_position).is_none())
        }
        Err(_) => journal::find_batch_after(bytes, FILE_HEADER_SIZE as u64 - 1).is_none(),
    }
}

/// Whether any file in `journal_dir` holds a batch: a store whose
/// `checkpoint` is missing and whose journal holds none was being created
/// (or converted from version 1) when it stopped, `store.rs` decides.
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
/// continues in the old one.
fn drop_interrupted_rotation(
    fs: &dyn Backend,
    journal_dir: &Path,
    live: &mut Vec<u64>,
) -> Result<()> {
    while let [.., previous, last] = live[..] {
        let last_path = journal_dir.join(journal::file_name(last));
        let bytes = fs
            .read(&last_path)
            .map_err(|e| Error::io("read", &last_path, e))?;
        if !holds_no_batch(&bytes) {
            return Ok(());
        }
        let previous_path = journal_dir.join(journal::file_name(previous));
        let bytes = fs
            .read(&previous_path)
            .map_err(|e| Error::io("read", &previous_path, e))?;
        let marked = journal::scan_file(&bytes).is_ok_and(|scan| {
            scan.batches.last().is_some_and(|(_, batch)| {
                matches!(batch.entries.last(), Some(Entry::NextFile { .. }))
            })
        });
        if marked {
            return Ok(());
        }
        log::warn(format_args!(
            "removing {}: created by a rotation interrupted before it was used",
            last_path.display()
        ));
        fs.remove_file(&last_path)
            .map_err(|e| Error::io("remove", &last_path, e))?;
        crate::storage::fsutil::sync_dir(fs, journal_dir)?;
        live.pop();
    }
    Ok(())
}
