//! What the inspector writes: text for people (headings, aligned columns,
//! sentences) or JSON lines for scripts (one object per line, each with a
//! `type`), carrying the same information.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use crate::storage::format::{self, IndexEntry};

use super::index_file::{self, Agreement, IndexState, agreement, entries_phrase};
use super::journal::{EntrySummary, JournalReport};
use super::key_dir::KeyLabel;
use super::log_file::Frame;
use super::offsets::OffsetsFile;
use super::problem::{Note, Problem, ProblemKind};
use super::segment_check::{LoadedSegment, SegmentReport};
use super::show;
use crate::table::{Align, Columns, Table, digits};

/// Width of the CRC column: `0x` and eight hex digits.
const CRC_WIDTH: usize = 10;

/// One row of the segment table.
pub struct SegmentRow<'a> {
    /// The key the segment belongs to.
    pub key: &'a KeyLabel,
    /// The key's directory, for JSON.
    pub key_dir: &'a Path,
    /// The segment's `.log`, if it has one.
    pub log: Option<&'a Path>,
    /// What checking the segment found.
    pub report: &'a SegmentReport,
    /// The key's log start: its first segment's base offset (past 0 once
    /// retention deleted the segments before it).
    pub log_start: u64,
}

/// Rows of the segment table: segments, and lines standing for those left out.
pub enum TableRow<'a> {
    Segment(SegmentRow<'a>),
    /// A key whose directory has no segment yet.
    NoSegments {
        key: &'a KeyLabel,
    },
    /// Segments of a key not listed because of `--max`.
    More {
        key: &'a KeyLabel,
        count: usize,
        max: usize,
    },
}

/// Counts for the closing summary.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    /// Store directories.
    pub stores: usize,
    /// Key directories.
    pub keys: usize,
    /// Segments, whether or not their files could be read.
    pub segments: usize,
    /// Valid records.
    pub records: u64,
    /// Entries in `.index` files.
    pub index_entries: usize,
    /// Committed offsets files read (named `journals` in the JSON summary,
    /// as it always was).
    #[serde(rename = "journals")]
    pub offsets_files: usize,
    /// Write-ahead journal files read.
    pub journal_files: usize,
    /// Batches in them.
    pub journal_batches: usize,
}

/// The writer of the report, in one of the two formats.
pub struct Output<'w> {
    /// Standard output, buffered by the caller.
    out: &'w mut dyn Write,
    /// JSON lines (`--json`) instead of text.
    json: bool,
    /// Keys and messages whole (`--full`).
    full: bool,
    /// Whether a section was written, so the next one starts after a blank line.
    written: bool,
}

/// The JSON lines, one variant per `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Store {
        path: String,
        /// `None` for a bare `logs/` directory, which has no marker.
        clean_shutdown: Option<bool>,
        keys: usize,
    },
    Segment {
        key: Option<&'a str>,
        key_dir: String,
        file: Option<String>,
        base_offset: u64,
        log_start: u64,
        first_offset: Option<u64>,
        last_offset: Option<u64>,
        records: u64,
        bytes: Option<u64>,
        active: bool,
        index_entries: usize,
        /// `None` when the segment has no `.timeindex` (the engine builds
        /// one when a search by time needs it).
        time_index_entries: Option<usize>,
        /// The smallest and largest timestamp (ms) its entries hold, each
        /// its chunk's latest.
        time_index_range: Option<(i64, i64)>,
        valid: bool,
        problems: Vec<ProblemKind>,
    },
    Record {
        key: Option<&'a str>,
        file: String,
        /// `None` for damaged bytes, whose offset field cannot be trusted.
        offset: Option<u64>,
        /// The offset field of damaged bytes, as found.
        raw_offset: Option<u64>,
        position: u64,
        size: u64,
        crc: Option<u32>,
        valid: bool,
        problem: Option<String>,
        message: Option<String>,
        message_hex: Option<String>,
    },
    Index {
        key: Option<&'a str>,
        file: String,
        state: &'static str,
        entries: usize,
        called_for: Option<usize>,
    },
    IndexEntry {
        key: Option<&'a str>,
        file: String,
        entry: usize,
        offset: u64,
        relative_offset: u32,
        position: u32,
        agrees: bool,
        problem: Option<String>,
    },
    Committed {
        file: String,
        key: &'a str,
        offset: u64,
    },
    JournalFile {
        file: String,
        seq: Option<u64>,
        bytes: Option<u64>,
        live: bool,
        batches: usize,
        records: u64,
        commits: u64,
        valid: bool,
        problems: Vec<ProblemKind>,
    },
    JournalBatch {
        file: String,
        batch: u64,
        position: u64,
        size: u64,
        continued: bool,
        entries: Vec<String>,
    },
    Problem {
        kind: ProblemKind,
        file: String,
        position: Option<u64>,
        message: &'a str,
    },
    Note {
        file: String,
        message: &'a str,
    },
    Summary {
        #[serde(flatten)]
        totals: Totals,
        problems: usize,
        notes: usize,
        valid: bool,
    },
}

/// How far listings go: `--from` and `--max`.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// Lowest offset listed.
    pub from: u64,
    /// Most items listed per key.
    pub max: usize,
}

fn path_string(path: &Path) -> String {
    path.display().to_string()
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path_string(path),
        |name| name.to_string_lossy().into_owned(),
    )
}

impl<'w> Output<'w> {
    pub fn new(out: &'w mut dyn Write, json: bool, full: bool) -> Output<'w> {
        Output {
            out,
            json,
            full,
            written: false,
        }
    }

    fn json_line(&mut self, line: &Line<'_>) -> io::Result<()> {
        serde_json::to_writer(&mut *self.out, line)?;
        writeln!(self.out)
    }

    /// Starts a text section: a blank line after the previous one.
    fn section(&mut self) -> io::Result<()> {
        if std::mem::replace(&mut self.written, true) {
            writeln!(self.out)?;
        }
        Ok(())
    }

    fn key_text(&self, key: &KeyLabel) -> String {
        match &key.key {
            Some(k) => show::key(k, self.full),
            None => format!("<directory {}>", key.dir_name),
        }
    }

    /// The heading of a store.
    pub fn store(&mut self, dir: &Path, clean: Option<bool>, keys: usize) -> io::Result<()> {
        if self.json {
            return self.json_line(&Line::Store {
                path: path_string(dir),
                clean_shutdown: clean,
                keys,
            });
        }
        self.section()?;
        let keys = match keys {
            1 => "1 key".to_string(),
            n => format!("{n} keys"),
        };
        let dir = dir.display();
        match clean {
            Some(true) => writeln!(self.out, "store {dir}: closed cleanly; {keys}"),
            Some(false) => writeln!(
                self.out,
                "store {dir}: not closed cleanly (no CLEAN marker): running, or stopped by a crash; {keys}"
            ),
            None => writeln!(self.out, "logs directory {dir}: {keys}"),
        }
    }

    /// One line per segment: key, base and last offset, record count,
    /// bytes, sealed or active, valid or what is wrong.
    pub fn segment_table(&mut self, rows: &[TableRow<'_>]) -> io::Result<()> {
        if self.json {
            for row in rows {
                if let TableRow::Segment(row) = row {
                    let report = row.report;
                    self.json_line(&Line::Segment {
                        key: row.key.key.as_deref(),
                        key_dir: path_string(row.key_dir),
                        file: row.log.map(path_string),
                        base_offset: report.base_offset,
                        log_start: row.log_start,
                        first_offset: report.summary.first_offset,
                        last_offset: report.summary.last_offset,
                        records: report.summary.records,
                        bytes: report.log_bytes,
                        active: report.active,
                        index_entries: report.index_entries,
                        time_index_entries: report.time_index.map(|t| t.entries),
                        time_index_range: report.time_index.and_then(|t| t.range),
                        valid: report.problems.is_empty(),
                        problems: report.problems.iter().map(|p| p.kind).collect(),
                    })?;
                }
            }
            return Ok(());
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.section()?;
        // The time index column (entries: smallest..largest entry) only when
        // a segment has a `.timeindex`: directories from before it have none.
        let times = rows
            .iter()
            .any(|row| matches!(row, TableRow::Segment(row) if row.report.time_index.is_some()));
        let mut columns = vec![
            ("key", Align::Left),
            ("base", Align::Right),
            ("last", Align::Right),
            ("records", Align::Right),
            ("bytes", Align::Right),
            ("segment", Align::Left),
            ("status", Align::Left),
        ];
        if times {
            columns.insert(6, ("time index", Align::Left));
        }
        let mut table = Table::new(&columns);
        for row in rows {
            let time_cell = match row {
                TableRow::Segment(row) => row
                    .report
                    .time_index
                    .map_or_else(|| "-".to_string(), |t| t.cell()),
                TableRow::NoSegments { .. } => "-".to_string(),
                TableRow::More { .. } => String::new(),
            };
            let mut cells = match row {
                TableRow::Segment(row) => {
                    let report = row.report;
                    vec![
                        self.key_text(row.key),
                        report.base_offset.to_string(),
                        report
                            .summary
                            .last_offset
                            .map_or_else(|| "-".to_string(), |last| last.to_string()),
                        report.summary.records.to_string(),
                        report
                            .log_bytes
                            .map_or_else(|| "?".to_string(), |bytes| bytes.to_string()),
                        if report.active { "active" } else { "sealed" }.to_string(),
                        status(&report.problems, row.log),
                    ]
                }
                TableRow::NoSegments { key, .. } => vec![
                    self.key_text(key),
                    "-".into(),
                    "-".into(),
                    "0".into(),
                    "-".into(),
                    "-".into(),
                    "no segments yet".into(),
                ],
                TableRow::More { key, count, max } => vec![
                    self.key_text(key),
                    "…".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    format!("{count} more segments not listed (--max {max})"),
                ],
            };
            if times {
                cells.insert(6, time_cell);
            }
            table.push(cells);
        }
        table.write(self.out)
    }

    /// Lists the records of one segment from offset `from` on, at most
    /// `budget` of them (damaged bytes count as one). Returns how many were listed and whether more were
    /// left out for the budget.
    pub fn records(
        &mut self,
        key: &KeyLabel,
        segment: &LoadedSegment<'_>,
        from: u64,
        budget: usize,
    ) -> io::Result<(usize, bool)> {
        let Some(log) = segment.log() else {
            return Ok((0, false));
        };
        let active = segment.files.active;
        let key_json = key.key.as_deref();
        let mut columns = Columns::new(&[
            ("offset", Align::Right),
            ("position", Align::Right),
            ("size", Align::Right),
            ("crc", Align::Left),
            ("valid", Align::Left),
            ("message", Align::Left),
        ]);
        let file_bytes = log.bytes.len() as u64;
        let last_offset = log
            .base_offset()
            .saturating_add(file_bytes / format::RECORD_HEADER_SIZE as u64);
        columns.fit_width(0, digits(last_offset));
        columns.fit_width(1, digits(file_bytes));
        columns.fit_width(2, digits(file_bytes));
        columns.fit_width(3, CRC_WIDTH);
        if !self.json {
            self.section()?;
            writeln!(
                self.out,
                "records of {}, {} ({}, {file_bytes} bytes)",
                self.key_text(key),
                file_name(&log.path),
                if active { "active" } else { "sealed" }
            )?;
            if let Some(problem) = &log.header.problem
                && !log.header.body_decodable
            {
                return writeln!(self.out, "  no records decoded: {}", problem.message)
                    .map(|()| (0, false));
            }
            columns.write_headings(self.out)?;
        }
        let mut shown = 0;
        for frame in log.frames() {
            let offset_due = match &frame {
                Frame::Record { record, .. } => record.offset,
                Frame::Damaged(damage) => damage.expected,
            };
            if offset_due < from {
                continue;
            }
            if shown == budget {
                return Ok((shown, true));
            }
            shown += 1;
            let problem = frame.problem(active);
            if self.json {
                let (offset, raw_offset, crc, valid, payload) = match &frame {
                    Frame::Record { record, .. } => (
                        Some(record.offset),
                        None,
                        Some(record.crc),
                        true,
                        Some(record.payload),
                    ),
                    Frame::Damaged(damage) => (
                        None,
                        damage.raw.offset,
                        damage.raw.crc,
                        false,
                        damage.raw.payload,
                    ),
                };
                let text = payload.and_then(|p| std::str::from_utf8(p).ok());
                self.json_line(&Line::Record {
                    key: key_json,
                    file: path_string(&log.path),
                    offset,
                    raw_offset,
                    position: frame.position(),
                    size: frame.size(),
                    crc,
                    valid,
                    problem,
                    message: text.map(str::to_string),
                    message_hex: match (payload, text) {
                        (Some(p), None) => Some(p.iter().map(|b| format!("{b:02x}")).collect()),
                        _ => None,
                    },
                })?;
                continue;
            }
            let cells = match &frame {
                Frame::Record { record, .. } => vec![
                    record.offset.to_string(),
                    frame.position().to_string(),
                    frame.size().to_string(),
                    format!("{:#010x}", record.crc),
                    "yes".to_string(),
                    show::message(record.payload, self.full),
                ],
                Frame::Damaged(damage) => vec![
                    // The offset field as stored, marked unverified, when it
                    // is the one due; anything else in it is noise.
                    match damage.raw.offset {
                        Some(offset) if offset == damage.expected => format!("{offset}?"),
                        _ => "?".to_string(),
                    },
                    frame.position().to_string(),
                    frame.size().to_string(),
                    damage
                        .raw
                        .crc
                        .map_or_else(|| "?".to_string(), |crc| format!("{crc:#010x}")),
                    "no".to_string(),
                    damage
                        .raw
                        .payload
                        .map(|p| show::message(p, self.full))
                        .unwrap_or_default(),
                ],
            };
            columns.write_row(self.out, &cells)?;
            if let Some(problem) = problem {
                writeln!(self.out, "    ! {problem}")?;
            }
        }
        Ok((shown, false))
    }

    /// Lists the index entries of one segment from offset `from` on, at most
    /// `budget` of them, with whether each agrees with the log. Returns how
    /// many were listed and whether more were left out for the budget.
    pub fn index(
        &mut self,
        key: &KeyLabel,
        segment: &LoadedSegment<'_>,
        from: u64,
        budget: usize,
    ) -> io::Result<(usize, bool)> {
        let Some(index) = &segment.index else {
            return Ok((0, false));
        };
        let log = segment.log();
        let base = log.map_or(segment.files.base_offset, |log| log.base_offset());
        let called_for = segment.scan.as_ref().map(|scan| scan.index.entries().len());
        let entries = index.entries();
        let (state, trouble) = match &index.state {
            IndexState::Missing => ("missing", Some("missing".to_string())),
            IndexState::Unreadable(problem) => ("unreadable", Some(problem.message.clone())),
            IndexState::Read { header, .. } => match &header.problem {
                Some(problem) if !header.body_decodable => {
                    ("bad_header", Some(problem.message.clone()))
                }
                _ => ("read", None),
            },
        };
        let key_json = key.key.as_deref();
        if self.json {
            self.json_line(&Line::Index {
                key: key_json,
                file: path_string(&index.path),
                state,
                entries: entries.len(),
                called_for,
            })?;
        } else {
            self.section()?;
            let mut heading = format!(
                "index of {}, {} ({}",
                self.key_text(key),
                file_name(&index.path),
                entries_phrase(entries.len())
            );
            if let Some(called) = called_for {
                heading.push_str(&format!("; the log calls for {}", count_phrase(called)));
            }
            heading.push(')');
            if let Some(trouble) = &trouble {
                heading.push_str(&format!(": {trouble}"));
            }
            writeln!(self.out, "{heading}")?;
        }
        let shown_entries: Vec<(usize, IndexEntry)> = entries
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, entry)| base.saturating_add(u64::from(entry.relative_offset)) >= from)
            .collect();
        if shown_entries.is_empty() {
            return Ok((0, false));
        }
        let mut columns = Columns::new(&[
            ("entry", Align::Right),
            ("offset", Align::Right),
            ("position", Align::Right),
            ("agrees with log", Align::Left),
        ]);
        let rows: Vec<(usize, IndexEntry, Option<Agreement>)> = shown_entries
            .iter()
            .take(budget)
            .map(|&(i, entry)| (i, entry, log.map(|log| agreement(log, entry))))
            .collect();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|(i, entry, agreement)| {
                vec![
                    i.to_string(),
                    base.saturating_add(u64::from(entry.relative_offset))
                        .to_string(),
                    entry.position.to_string(),
                    match agreement {
                        Some(Agreement::Agrees) => "yes".to_string(),
                        Some(other) => format!("no: {other}"),
                        None => "? (no log to compare with)".to_string(),
                    },
                ]
            })
            .collect();
        if self.json {
            for (i, entry, agreement) in &rows {
                self.json_line(&Line::IndexEntry {
                    key: key_json,
                    file: path_string(&index.path),
                    entry: *i,
                    offset: base.saturating_add(u64::from(entry.relative_offset)),
                    relative_offset: entry.relative_offset,
                    position: entry.position,
                    agrees: agreement.as_ref() == Some(&Agreement::Agrees),
                    problem: agreement
                        .as_ref()
                        .filter(|a| **a != Agreement::Agrees)
                        .map(|a| {
                            format!("{a} (index position {})", index_file::entry_position(*i))
                        }),
                })?;
            }
        } else {
            for row in &cells {
                columns.fit(row);
            }
            columns.write_headings(self.out)?;
            for row in &cells {
                columns.write_row(self.out, row)?;
            }
        }
        Ok((rows.len(), shown_entries.len() > rows.len()))
    }

    /// Says that a key's listing stopped at `--max`.
    pub fn more(&mut self, what: &str, max: usize) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        writeln!(self.out, "  … more {what} not listed (--max {max})")
    }

    /// The committed offsets of a store, of `only` key when given.
    pub fn committed(&mut self, offsets: &OffsetsFile, only: Option<&str>) -> io::Result<()> {
        let selected: Vec<(&String, &u64)> = offsets
            .committed
            .iter()
            .filter(|(key, _)| only.is_none_or(|only| only == key.as_str()))
            .collect();
        if self.json {
            for (key, offset) in selected {
                self.json_line(&Line::Committed {
                    file: path_string(&offsets.path),
                    key,
                    offset: *offset,
                })?;
            }
            return Ok(());
        }
        self.section()?;
        let name = file_name(&offsets.path);
        let Some(bytes) = offsets.bytes else {
            return writeln!(
                self.out,
                "committed offsets: none ({name} does not exist yet; the store creates it when it opens)"
            );
        };
        let entries = match offsets.entries {
            1 => "1 entry".to_string(),
            n => format!("{n} entries"),
        };
        writeln!(
            self.out,
            "committed offsets ({name}: {entries}, {bytes} bytes)"
        )?;
        if !offsets.problems.is_empty() && offsets.entries == 0 {
            return writeln!(self.out, "  none readable (see the problems below)");
        }
        if selected.is_empty() {
            return writeln!(self.out, "  none");
        }
        let mut table = Table::new(&[("key", Align::Left), ("offset", Align::Right)]);
        for (key, offset) in selected {
            table.push(vec![show::key(key, self.full), offset.to_string()]);
        }
        table.write(self.out)
    }

    /// The write-ahead journal: one line per file, and with `records` every
    /// batch and its entries.
    pub fn journal_files(&mut self, report: &JournalReport, records: bool) -> io::Result<()> {
        if self.json {
            for file in &report.files {
                self.json_line(&Line::JournalFile {
                    file: path_string(&file.path),
                    seq: file.seq,
                    bytes: file.bytes,
                    live: !file.stale,
                    batches: file.batches.len(),
                    records: file.records,
                    commits: file.commits,
                    valid: file.problems.is_empty(),
                    problems: file.problems.iter().map(|p| p.kind).collect(),
                })?;
                if records {
                    for batch in &file.batches {
                        self.json_line(&Line::JournalBatch {
                            file: path_string(&file.path),
                            batch: batch.number,
                            position: batch.position,
                            size: batch.size,
                            continued: batch.continued,
                            entries: batch.entries.iter().map(|e| self.entry_text(e)).collect(),
                        })?;
                    }
                }
            }
            return Ok(());
        }
        self.section()?;
        match report.first_live {
            Some(seq) => writeln!(
                self.out,
                "write-ahead journal (the checkpoint keeps files from {seq} on)"
            )?,
            None => writeln!(self.out, "write-ahead journal (no readable checkpoint)")?,
        }
        let mut table = Table::new(&[
            ("file", Align::Left),
            ("batches", Align::Right),
            ("records", Align::Right),
            ("commits", Align::Right),
            ("bytes", Align::Right),
            ("status", Align::Left),
        ]);
        for file in &report.files {
            let status = if file.stale {
                "stale: covered by the checkpoint".to_string()
            } else if let Some(problem) = file.problems.first() {
                match problem.position {
                    Some(position) => format!("invalid: {} at {position}", problem.kind.label()),
                    None => format!("invalid: {}", problem.kind.label()),
                }
            } else {
                "live: valid".to_string()
            };
            table.push(vec![
                file_name(&file.path),
                file.batches.len().to_string(),
                file.records.to_string(),
                file.commits.to_string(),
                file.bytes
                    .map_or_else(|| "?".to_string(), |bytes| bytes.to_string()),
                status,
            ]);
        }
        table.write(self.out)?;
        if !records {
            return Ok(());
        }
        for file in &report.files {
            if file.batches.is_empty() {
                continue;
            }
            self.section()?;
            writeln!(self.out, "batches of {}", file_name(&file.path))?;
            let mut batches = Table::new(&[
                ("batch", Align::Right),
                ("position", Align::Right),
                ("size", Align::Right),
                ("sync point", Align::Left),
                ("entries", Align::Left),
            ]);
            for batch in &file.batches {
                let entries: Vec<String> =
                    batch.entries.iter().map(|e| self.entry_text(e)).collect();
                // The continued flag: the sync point goes on in the next batch.
                let sync_point = if batch.continued { "continued" } else { "ends" };
                batches.push(vec![
                    batch.number.to_string(),
                    batch.position.to_string(),
                    batch.size.to_string(),
                    sync_point.to_string(),
                    entries.join("; "),
                ]);
            }
            batches.write(self.out)?;
        }
        Ok(())
    }

    fn entry_text(&self, entry: &EntrySummary) -> String {
        match entry {
            EntrySummary::Records { key, first, count } => {
                let last = first + u64::from(*count) - 1;
                format!("records {} {first}..{last}", show::key(key, self.full))
            }
            EntrySummary::Commit {
                key,
                offset,
                value_bytes: 0,
            } => format!("commit {} {offset}", show::key(key, self.full)),
            EntrySummary::Commit {
                key,
                offset,
                value_bytes,
            } => format!(
                "commit {} {offset} with a value of {value_bytes} bytes",
                show::key(key, self.full)
            ),
            EntrySummary::Uncommitted { key } => {
                format!("uncommitted {}", show::key(key, self.full))
            }
            EntrySummary::Direct { key, from } => {
                format!("direct {} from {from}", show::key(key, self.full))
            }
            EntrySummary::NextFile { seq } => format!("next file {seq}"),
            EntrySummary::LogStart { key, offset } => {
                format!("log start {} {offset}", show::key(key, self.full))
            }
            EntrySummary::Removed { key } => format!("removed {}", show::key(key, self.full)),
        }
    }

    /// Every problem and note, each with its file and position.
    pub fn findings(&mut self, problems: &[Problem], notes: &[Note]) -> io::Result<()> {
        if self.json {
            for problem in problems {
                self.json_line(&Line::Problem {
                    kind: problem.kind,
                    file: path_string(&problem.file),
                    position: problem.position,
                    message: &problem.message,
                })?;
            }
            for note in notes {
                self.json_line(&Line::Note {
                    file: path_string(&note.file),
                    message: &note.message,
                })?;
            }
            return Ok(());
        }
        if !problems.is_empty() {
            self.section()?;
            writeln!(self.out, "problems ({}):", problems.len())?;
            for problem in problems {
                writeln!(self.out, "  {problem}")?;
            }
        }
        if !notes.is_empty() {
            self.section()?;
            writeln!(self.out, "notes ({}):", notes.len())?;
            for note in notes {
                writeln!(self.out, "  {note}")?;
            }
        }
        Ok(())
    }

    /// The closing line: what was checked and whether anything is wrong.
    pub fn summary(&mut self, totals: &Totals, problems: usize, notes: usize) -> io::Result<()> {
        if self.json {
            return self.json_line(&Line::Summary {
                totals: *totals,
                problems,
                notes,
                valid: problems == 0,
            });
        }
        self.section()?;
        let mut parts = Vec::new();
        for (count, one, many) in [
            (totals.stores as u64, "store", "stores"),
            (totals.keys as u64, "key", "keys"),
            (totals.segments as u64, "segment", "segments"),
            (totals.records, "record", "records"),
            (totals.index_entries as u64, "index entry", "index entries"),
            (
                totals.offsets_files as u64,
                "offsets journal",
                "offsets journals",
            ),
            (totals.journal_files as u64, "journal file", "journal files"),
            (
                totals.journal_batches as u64,
                "journal batch",
                "journal batches",
            ),
        ] {
            if count > 0 {
                parts.push(format!("{count} {}", if count == 1 { one } else { many }));
            }
        }
        let verdict = match problems {
            0 => "no problems".to_string(),
            1 => "1 problem".to_string(),
            n => format!("{n} problems"),
        };
        if parts.is_empty() {
            parts.push("nothing".to_string());
        }
        writeln!(self.out, "checked {}: {verdict}", parts.join(", "))
    }
}

/// The status cell of a segment: valid, or the kinds of its problems, with
/// the position of the first of each kind that is in the log file.
fn status(problems: &[Problem], log: Option<&Path>) -> String {
    if problems.is_empty() {
        return "valid".to_string();
    }
    let mut labels: Vec<(&str, String)> = Vec::new();
    for problem in problems {
        let label = problem.kind.label();
        if labels.iter().any(|(seen, _)| *seen == label) {
            continue;
        }
        let text = match problem.position {
            Some(position) if log == Some(problem.file.as_path()) => {
                format!("{label} at {position}")
            }
            _ => label.to_string(),
        };
        labels.push((label, text));
    }
    let texts: Vec<String> = labels.into_iter().map(|(_, text)| text).collect();
    format!("invalid: {}", texts.join(", "))
}

/// "none", "1", "3": how many entries the log calls for.
fn count_phrase(count: usize) -> String {
    match count {
        0 => "none".to_string(),
        n => n.to_string(),
    }
}
