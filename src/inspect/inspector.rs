//! The walk over a target: stores, then keys in key order, then segments in
//! offset order, checking everything and handing the output what to list.
//!
//! Each key is read twice at most: once to check it (every segment, whatever
//! `--from` and `--max` say) and, with `--records` or `--index`, once more to
//! list it, one segment in memory at a time.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::storage::format::{self, HEADER_BASE_OFFSET_POS};
use crate::storage::keyname;
use crate::storage::store::CLEAN_FILE_NAME;

use super::InspectArgs;
use super::header::read_u64;
use super::journal;
use super::key_dir::{self, KeyDir, is_key_dir_name};
use super::offsets::OffsetsFile;
use super::output::{Limit, Output, SegmentRow, TableRow, Totals};
use super::problem::{Note, Problem, ProblemKind};
use super::segment_check::{LoadedSegment, SegmentFiles, SegmentReport};
use super::target::{StoreLayout, Target, with_path};

/// Prefix of the directory in which the store builds a hashed key's
/// directory before renaming it into place (`Store::create_hashed_dir`).
const KEY_TMP_PREFIX: &str = "tmp.";

/// A key checked: its listing and one report per segment, in the same order.
struct CheckedKey {
    /// The directory listing, with the key and its segments' files.
    dir: KeyDir,
    /// What checking each segment found, in the order of `dir.segments`.
    reports: Vec<SegmentReport>,
}

/// What to list, worked out from the options and the target.
#[derive(Clone, Copy)]
struct Listing {
    /// Store headings, the segment table and committed offsets; everything
    /// but problems and the summary, which `--verify` keeps alone.
    overview: bool,
    /// Every record (`--records`).
    records: bool,
    /// Every index entry (`--index`, or an `.index` file as PATH).
    index: bool,
}

/// Walks a target and writes the report.
pub struct Inspector<'a> {
    /// The command line.
    args: &'a InspectArgs,
    /// Where the report goes.
    out: Output<'a>,
    /// How far listings go.
    limit: Limit,
    /// What was checked, for the summary.
    totals: Totals,
    /// Every problem found, listed at the end so none scrolls by unseen.
    problems: Vec<Problem>,
    /// Every note, listed after the problems.
    notes: Vec<Note>,
}

impl<'a> Inspector<'a> {
    pub fn new(args: &'a InspectArgs, out: &'a mut dyn Write) -> Inspector<'a> {
        Inspector {
            args,
            out: Output::new(out, args.json, args.full),
            limit: Limit {
                from: args.from.unwrap_or(0),
                max: args.max.unwrap_or(usize::MAX),
            },
            totals: Totals::default(),
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn listing(&self, index_given: bool) -> Listing {
        Listing {
            overview: !self.args.verify,
            records: self.args.records,
            index: self.args.index || index_given,
        }
    }

    pub fn inspect(&mut self, target: &Target) -> io::Result<()> {
        match target {
            Target::DataDir(stores) => {
                for store in stores {
                    self.store(store)?;
                }
                Ok(())
            }
            Target::Store(store) => self.store(store),
            Target::KeyDir(dir) => {
                let keys = self.check_keys(vec![KeyDir::open(dir)], true);
                self.list_keys(&keys, self.listing(false))
            }
            Target::LogFile(path) => self.file(path, false),
            Target::IndexFile(path) => self.file(path, true),
            Target::Offsets(path) => self.offsets(&OffsetsFile::read(path)),
            Target::JournalFile(path) => self.journal_files(std::slice::from_ref(path), None),
        }
    }

    /// Writes the problems, notes and summary; returns how many problems.
    pub fn finish(mut self) -> io::Result<usize> {
        self.out.findings(&self.problems, &self.notes)?;
        self.out
            .summary(&self.totals, self.problems.len(), self.notes.len())?;
        Ok(self.problems.len())
    }

    fn store(&mut self, layout: &StoreLayout) -> io::Result<()> {
        self.totals.stores += 1;
        let dirs = self.key_dirs(&layout.logs_dir);
        let keys = self.check_keys(dirs.iter().map(|dir| KeyDir::open(dir)).collect(), true);
        let listing = self.listing(false);
        if listing.overview {
            let clean = layout
                .offsets
                .is_some()
                .then(|| layout.dir.join(CLEAN_FILE_NAME).exists());
            self.out.store(&layout.dir, clean, keys.len())?;
        }
        self.list_keys(&keys, listing)?;
        if let Some(path) = &layout.offsets {
            let offsets = OffsetsFile::read(path);
            if offsets.bytes.is_none() {
                self.notes.push(Note::new(
                    path,
                    "missing: nothing was committed yet (the store creates it when it opens)",
                ));
            }
            self.offsets(&offsets)?;
        }
        self.store_journal(&layout.dir)?;
        Ok(())
    }

    /// The key directories under `logs_dir`, noting what else is there.
    fn key_dirs(&mut self, logs_dir: &Path) -> Vec<PathBuf> {
        let entries = match std::fs::read_dir(logs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.notes
                    .push(Note::new(logs_dir, "missing: no key was written yet"));
                return Vec::new();
            }
            Err(e) => {
                self.problems.push(Problem::of_file(
                    ProblemKind::Unreadable,
                    logs_dir,
                    format!("cannot list: {e}"),
                ));
                return Vec::new();
            }
        };
        let mut dirs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() && is_key_dir_name(&name) {
                dirs.push(path);
            } else if name.starts_with(keyname::REMOVED_PREFIX) {
                self.notes.push(Note::new(
                    &path,
                    "a removed key's directory, left by a removal interrupted while deleting \
                     it (the store deletes it when it opens)",
                ));
            } else if name.starts_with(KEY_TMP_PREFIX) {
                self.notes.push(Note::new(
                    &path,
                    "a key directory being created, or left by an interrupted creation \
                     (the store replaces it when it creates that key)",
                ));
            } else {
                self.notes
                    .push(Note::new(&path, "not a key directory; skipped"));
            }
        }
        dirs
    }

    /// Checks the selected keys, in key order. `chain` says whether the
    /// segments listed are all of the key's, so that the offsets must run on
    /// from 0 across them.
    fn check_keys(&mut self, dirs: Vec<KeyDir>, chain: bool) -> Vec<CheckedKey> {
        let mut dirs: Vec<KeyDir> = dirs
            .into_iter()
            .filter(|dir| {
                self.args
                    .key
                    .as_ref()
                    .is_none_or(|only| dir.key.key.as_ref() == Some(only))
            })
            .collect();
        dirs.sort_by(|a, b| a.key.sort_key().cmp(&b.key.sort_key()));
        dirs.into_iter()
            .map(|dir| self.check_key(dir, chain))
            .collect()
    }

    fn check_key(&mut self, dir: KeyDir, chain: bool) -> CheckedKey {
        self.totals.keys += 1;
        self.problems.extend(dir.problems.iter().cloned());
        self.notes.extend(dir.notes.iter().cloned());
        let mut reports = Vec::with_capacity(dir.segments.len());
        // The base offset the next segment must have, when known. The first
        // may start past 0: retention deletes the oldest segments, and the
        // log then starts at the first one left (not missing segments).
        let log_start = dir.segments.first().map_or(0, |files| files.base_offset);
        if chain && log_start > 0 {
            let first = dir.segments.first().and_then(|files| files.log.as_deref());
            self.notes.push(Note::new(
                first.unwrap_or(&dir.dir),
                format!(
                    "log start {log_start}: the key's first segment starts there; retention \
                     deleted the segments before it (offsets are never renumbered, reads from \
                     below it start at it)"
                ),
            ));
        }
        let mut due = Some(log_start);
        for files in &dir.segments {
            let mut report = LoadedSegment::load(files).check();
            if chain && report.decodable {
                if let Some(problem) = chain_problem(files, &report, due) {
                    report.problems.push(problem);
                }
                due = Some(report.summary.next_offset);
            } else {
                due = None;
            }
            self.totals.segments += 1;
            self.totals.records += report.summary.records;
            self.totals.index_entries += report.index_entries;
            self.problems.extend(report.problems.iter().cloned());
            reports.push(report);
        }
        CheckedKey { dir, reports }
    }

    /// Lists the keys: the segment table, then records, then index entries.
    fn list_keys(&mut self, keys: &[CheckedKey], listing: Listing) -> io::Result<()> {
        if listing.overview {
            let rows = self.table_rows(keys);
            self.out.segment_table(&rows)?;
        }
        if listing.records {
            for key in keys {
                self.list_segments(key, Item::Records)?;
            }
        }
        if listing.index {
            for key in keys {
                self.list_segments(key, Item::Index)?;
            }
        }
        Ok(())
    }

    fn table_rows<'k>(&self, keys: &'k [CheckedKey]) -> Vec<TableRow<'k>> {
        let mut rows = Vec::new();
        for key in keys {
            if key.reports.is_empty() {
                rows.push(TableRow::NoSegments { key: &key.dir.key });
                continue;
            }
            let selected: Vec<(&SegmentFiles, &SegmentReport)> = key
                .dir
                .segments
                .iter()
                .zip(&key.reports)
                .filter(|(_, report)| self.reaches_from(report))
                .collect();
            for (files, report) in selected.iter().take(self.limit.max) {
                rows.push(TableRow::Segment(SegmentRow {
                    log_start: key
                        .dir
                        .segments
                        .first()
                        .map_or(0, |files| files.base_offset),
                    key: &key.dir.key,
                    key_dir: &key.dir.dir,
                    log: files.log.as_deref(),
                    report,
                }));
            }
            if selected.len() > self.limit.max {
                rows.push(TableRow::More {
                    key: &key.dir.key,
                    count: selected.len() - self.limit.max,
                    max: self.limit.max,
                });
            }
        }
        rows
    }

    /// Whether a segment holds anything at or after `--from`.
    fn reaches_from(&self, report: &SegmentReport) -> bool {
        report.summary.last_offset.unwrap_or(report.base_offset) >= self.limit.from
    }

    /// Lists the records or the index entries of a key, segment by segment,
    /// at most `--max` of them in all.
    fn list_segments(&mut self, key: &CheckedKey, item: Item) -> io::Result<()> {
        let what = match item {
            Item::Records => "records",
            Item::Index => "index entries",
        };
        let mut budget = self.limit.max;
        for (files, report) in key.dir.segments.iter().zip(&key.reports) {
            if !self.reaches_from(report) {
                continue;
            }
            if budget == 0 {
                let has_items = match item {
                    Item::Records => report.summary.records > 0 || !report.problems.is_empty(),
                    Item::Index => report.index_entries > 0,
                };
                if has_items {
                    return self.out.more(what, self.limit.max);
                }
                continue;
            }
            let segment = LoadedSegment::load(files);
            let (shown, more) = match item {
                Item::Records => {
                    self.out
                        .records(&key.dir.key, &segment, self.limit.from, budget)?
                }
                Item::Index => self
                    .out
                    .index(&key.dir.key, &segment, self.limit.from, budget)?,
            };
            budget -= shown;
            if more {
                return self.out.more(what, self.limit.max);
            }
        }
        Ok(())
    }

    /// Inspects one `.log` or `.index` file: the segment it belongs to,
    /// without the checks that need the key's other segments.
    fn file(&mut self, path: &Path, index_given: bool) -> io::Result<()> {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let files = match format::parse_segment_file_name(name) {
            Some((base, _)) => {
                let log = dir.join(format::log_file_name(base));
                SegmentFiles {
                    base_offset: base,
                    named: true,
                    log: log.is_file().then_some(log),
                    index: Some(dir.join(format::index_file_name(base))),
                    active: last_log_base(&dir).is_none_or(|last| last <= base),
                }
            }
            None => {
                // A renamed copy: the header says the base offset.
                let bytes = std::fs::read(path).map_err(|e| with_path(path, e))?;
                let base = read_u64(&bytes, HEADER_BASE_OFFSET_POS).unwrap_or(0);
                let sibling = path.with_extension("index");
                SegmentFiles {
                    base_offset: base,
                    named: false,
                    log: (!index_given).then(|| path.to_path_buf()),
                    index: if index_given {
                        Some(path.to_path_buf())
                    } else {
                        sibling.is_file().then_some(sibling)
                    },
                    active: true,
                }
            }
        };
        if files.log.is_none() {
            self.notes.push(Note::new(
                path,
                "no .log beside it: its entries are not checked against a log",
            ));
        }
        let is_key_dir = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_key_dir_name);
        let (key, problems) = if is_key_dir {
            key_dir::resolve_key(&dir)
        } else {
            (
                key_dir::KeyLabel {
                    key: None,
                    dir_name: dir.display().to_string(),
                },
                Vec::new(),
            )
        };
        let key_dir = KeyDir {
            dir,
            key,
            segments: vec![files],
            problems,
            notes: Vec::new(),
        };
        let keys = self.check_keys(vec![key_dir], false);
        self.list_keys(&keys, self.listing(index_given))
    }

    fn offsets(&mut self, offsets: &OffsetsFile) -> io::Result<()> {
        if offsets.bytes.is_some() {
            self.totals.offsets_files += 1;
        }
        self.problems.extend(offsets.problems.iter().cloned());
        if self.listing(false).overview {
            self.out.committed(offsets, self.args.key.as_deref())?;
        }
        Ok(())
    }
}

/// What [`Inspector::list_segments`] lists.
#[derive(Clone, Copy)]
enum Item {
    Records,
    Index,
}

/// The problem with a segment's base offset, given the base offset `due`
/// after the previous segment (the first segment's own base for the first:
/// a log may start past 0 after retention), if there is one.
fn chain_problem(
    files: &SegmentFiles,
    report: &SegmentReport,
    due: Option<u64>,
) -> Option<Problem> {
    let due = due?;
    let base = report.base_offset;
    if base == due {
        return None;
    }
    let log = files.log.as_deref()?;
    let consequence = if base > due {
        format!("so offsets {due} to {} are missing", base - 1)
    } else {
        "which that segment already holds".to_string()
    };
    let text = format!(
        "offsets not consecutive across segments: the previous segment ends at offset {}, \
         this one starts at {base}, {consequence}",
        due - 1
    );
    Some(Problem::at(
        ProblemKind::SegmentGap,
        log,
        HEADER_BASE_OFFSET_POS as u64,
        text,
    ))
}

/// The base offset of the last `.log` in `dir`.
fn last_log_base(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(format::parse_segment_file_name)
        })
        .filter(|(_, file)| *file == format::SegmentFile::Log)
        .map(|(base, _)| base)
        .max()
}

impl Inspector<'_> {
    /// Checks and lists the write-ahead journal of the store in `store_dir`
    /// (nothing for a version 1 store, which has none).
    fn store_journal(&mut self, store_dir: &Path) -> io::Result<()> {
        let Some(report) = journal::read_store(store_dir) else {
            return Ok(());
        };
        self.journal_report(report)
    }

    /// One journal file given as PATH, checked on its own.
    fn journal_files(&mut self, paths: &[PathBuf], first_live: Option<u64>) -> io::Result<()> {
        let mut report = journal::JournalReport {
            first_live,
            ..journal::JournalReport::default()
        };
        let mut expected = None;
        for path in paths {
            report
                .files
                .push(journal::read_file(path, true, &mut expected));
        }
        self.journal_report(report)
    }

    fn journal_report(&mut self, report: journal::JournalReport) -> io::Result<()> {
        for file in &report.files {
            self.totals.journal_files += 1;
            self.totals.journal_batches += file.batches.len();
            self.problems.extend(file.problems.iter().cloned());
        }
        self.problems.extend(report.problems.iter().cloned());
        self.notes.extend(report.notes.iter().cloned());
        let listing = self.listing(false);
        if listing.overview || listing.records {
            self.out.journal_files(&report, listing.records)?;
        }
        Ok(())
    }
}
