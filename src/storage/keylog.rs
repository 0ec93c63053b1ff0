//! One key's log: its sealed segments, its active segment, rolling between
//! them, and the records appended but not yet durable.
//!
//! An append encodes the record's frame into `pending` and nothing else. A
//! sync point then makes the pending frames durable one of two ways
//! (`store/sync_point.rs` chooses):
//!
//! * **journal**: the frames are copied into the store's write-ahead journal
//!   batch; once that batch is durable, [`KeyLog::write_out`] writes them to
//!   the segments (rolling as needed, without fsync) and publishes them. A
//!   segment never holds a journaled record whose batch is not durable.
//! * **direct**: when the sync point touches only this key, the frames are
//!   written to the active segment at once ([`KeyLog::write_direct`]) and the
//!   segment is fdatasynced, as before the journal existed; published when
//!   that sync completes.
//!
//! Offsets, in order: `visible_end <= written_end <= next_offset`,
//! `visible_end <= journaled_end <= next_offset` and `visible_end <=
//! durable_end <= next_offset`. `pending` holds the frames of
//! `[visible_end, next_offset)`. Readers see offsets below `durable_end`:
//! those below `visible_end` from the segments, the rest (durable, not yet
//! written out) from `pending`, so a record is readable as soon as the sync
//! point that made it durable is confirmed, before its segment write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::backend::{FileIo, Fs};
use crate::storage::error::{Error, Result};
use crate::storage::format::{self, FILE_HEADER_SIZE};
use crate::storage::recovery::{self, JournalEntry, Mode};
use crate::storage::segment::{ReadEnd, Segment, SegmentView};
use crate::storage::store::ViewTicket;

/// Segments one [`ReadView`] may hold at most, whatever its byte limit.
/// A view opens each segment it covers up front, under the store's lock
/// and through the cache of one sealed segment (an open and a map each):
/// with small segments, a byte limit alone would let one view open
/// hundreds of them for a reader that may want one record. Two or three
/// segments cover a reply at the default segment size; a reader wanting
/// more takes the next view.
pub const READ_VIEW_PARTS_MAX: usize = 3;

/// The durable records of a key's log from one offset on, as a reader
/// decodes them without the log: views of the segments (which keep their
/// maps alive, however the log changes meanwhile) and a copy of the
/// durable records not yet in a segment. Taken under the store's lock by
/// [`KeyLog::read_view`], read after letting it go: it shows the log as it
/// was when taken.
pub struct ReadView {
    /// The key's directory, for errors.
    dir: PathBuf,
    /// Views of consecutive segments, oldest first.
    parts: Vec<ViewPart>,
    /// Offset after the last record the segments may deliver (what was
    /// published when the view was taken).
    end: u64,
    /// Frames of durable records from `pending_from` on, back to back.
    pending: Vec<u8>,
    /// Offset of the first frame of `pending`.
    pending_from: u64,
    /// Whether the view reaches the log's durable end (else it stopped at
    /// the byte limit it was taken with or at [`READ_VIEW_PARTS_MAX`]).
    complete: bool,
    /// Keeps the key's log open while the view lives ([`KeyLog::has_views`]).
    _log: Option<Arc<()>>,
    /// Tells the store's run that handed the view out that its maps are
    /// still read (`store/views.rs`): a reopen in place waits for it.
    _ticket: Option<ViewTicket>,
}

/// Delivers durable records from offset `from` on to `visit` until it
/// returns false or the log ends, from the views `take_view` gives (a view
/// from a given offset): one view after another while they stop short of
/// the log's end. How a reader reads without holding the store's lock
/// while it decodes: `take_view` takes the lock, the view is read after.
pub fn read_by_views(
    from: u64,
    take_view: &mut dyn FnMut(u64) -> Result<ReadView>,
    visit: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<()> {
    let mut from = from;
    loop {
        let view = take_view(from)?;
        let mut next = None;
        let mut stopped = false;
        view.read(&mut |offset, payload| {
            next = Some(offset + 1);
            stopped = !visit(offset, payload);
            !stopped
        })?;
        if stopped || view.is_complete() {
            return Ok(());
        }
        match next {
            Some(next) => from = next,
            None => {
                return Err(Error::corrupt(
                    &view.dir,
                    from,
                    "a view of the log ends before its durable end and holds no record",
                ));
            }
        }
    }
}

/// One segment of a [`ReadView`].
struct ViewPart {
    segment: SegmentView,
    /// Base offset of the segment after it, which its records must reach
    /// (`None` for the active segment).
    next_base: Option<u64>,
}

impl ReadView {
    /// A view of no records (of a key with no log).
    pub fn empty() -> ReadView {
        ReadView {
            dir: PathBuf::new(),
            parts: Vec::new(),
            end: 0,
            pending: Vec::new(),
            pending_from: 0,
            complete: true,
            _log: None,
            _ticket: None,
        }
    }

    /// The view, holding `ticket` for as long as it lives.
    pub(crate) fn held_by(mut self, ticket: ViewTicket) -> ReadView {
        self._ticket = Some(ticket);
        self
    }

    /// Whether the view reaches the durable end of the log as it was when
    /// taken: if not, a read that wants more takes another view from the
    /// offset after the last record delivered.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Delivers the view's records to `visit` until it returns false or
    /// the view ends. Each record's CRC and offset is checked; a corrupt
    /// one ends the read with an error, after the records before it.
    pub fn read(&self, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<()> {
        for part in &self.parts {
            match part.segment.read(self.end, visit)? {
                ReadEnd::Stopped => return Ok(()),
                ReadEnd::ReachedEnd => break,
                ReadEnd::Exhausted { next_offset } => {
                    if let Some(base) = part.next_base {
                        check_next_base(&part.segment, next_offset, base)?;
                    }
                }
            }
        }
        read_frames(&self.dir, self.pending_from, &self.pending, visit)
    }
}

/// Fails unless sealed `segment`, which ended before `next_offset`, is
/// followed by the segment starting there (`next_base`).
fn check_next_base(segment: &SegmentView, next_offset: u64, next_base: u64) -> Result<()> {
    if next_offset == next_base {
        return Ok(());
    }
    Err(Error::corrupt(
        segment.log_path(),
        segment.end_position(),
        format!(
            "sealed segment ends before offset {next_offset}, \
             but the next segment starts at {next_base}"
        ),
    ))
}

/// Delivers the records whose frames are back to back in `frames`, the
/// first with offset `first`, until `visit` returns false: durable records
/// not yet written to a segment, which this process encoded.
fn read_frames(
    dir: &Path,
    first: u64,
    frames: &[u8],
    visit: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<()> {
    let mut rest = frames;
    let mut offset = first;
    while !rest.is_empty() {
        let record = format::decode_log_record(rest)
            .map_err(|e| Error::corrupt(dir, offset, format!("a pending record in memory: {e}")))?;
        if !visit(offset, record.payload) {
            break;
        }
        rest = &rest[record.size()..];
        offset += 1;
    }
    Ok(())
}

/// What a direct sync point must fdatasync for one key.
pub struct DirectTarget {
    /// The active segment's file.
    pub file: Arc<dyn FileIo>,
    /// Its path, for error messages.
    pub log_path: PathBuf,
    /// Offset after the last record the sync covers.
    pub end: u64,
}

/// Segment files a write to the key's segments touched, for the store's
/// list of what the next checkpoint must sync.
#[derive(Default)]
pub struct Touched {
    /// `.log` files written to.
    pub files: Vec<PathBuf>,
    /// Whether a segment file was created (the key directory gained an entry).
    pub created: bool,
    /// Whether a segment was sealed, or recovery found sealed segments the
    /// crashed run may not have synced: until the next checkpoint syncs
    /// them, a direct sync point for the key syncs them too (recovery
    /// trusts a sealed segment only up to its first invalid record).
    pub sealed: bool,
    /// Bytes of records written.
    pub bytes: u64,
}

/// The log of one key, open for appends and reads.
pub struct KeyLog {
    /// The store's backend.
    fs: Fs,
    /// The key's directory under `logs/`.
    dir: PathBuf,
    /// Base offsets of the sealed segments, ascending.
    sealed: Vec<u64>,
    /// The largest timestamp of each sealed segment (beside `sealed`), once
    /// a search by time has read it: a search skips the segments whose
    /// largest is earlier than the time it looks for.
    sealed_max: Vec<Option<i64>>,
    /// The sealed segment read last, kept mapped: consecutive polls of one
    /// key usually continue in the same segment.
    sealed_cache: Option<Segment>,
    /// The segment appends go to; `None` until the key's first write-out.
    active: Option<Segment>,
    /// Size at which the active segment is sealed and a new one started.
    segment_bytes: u64,
    /// Frames of the records `[visible_end, next_offset)`, back to back.
    pending: Vec<u8>,
    /// Where each frame of `pending` starts.
    frame_starts: Vec<usize>,
    /// Offset the next append gets.
    next_offset: u64,
    /// Offset after the last record written to a segment file.
    written_end: u64,
    /// Offset after the last record copied into a journal batch.
    journaled_end: u64,
    /// Offset after the last record written to the segments and published:
    /// where `pending` starts.
    visible_end: u64,
    /// Offset after the last durable record: readers see nothing at or
    /// past it.
    durable_end: u64,
    /// The first offset the log still has: the first segment's base offset
    /// once retention deleted segments before it (0 for a log never
    /// truncated). Reads from below it start here; offsets never change.
    log_start: u64,
    /// Held by every [`ReadView`] of this log: while one lives, the store
    /// keeps the log open ([`KeyLog::has_views`]), since opening it again
    /// runs its recovery, which may cut a segment below what the view maps
    /// (a tail a lost writeback left, `mmap.rs`).
    views: Arc<()>,
}

/// One segment as [`KeyLog::segments`] lists it.
pub struct SegmentFacts {
    pub base: u64,
    /// Offset after its last record.
    pub end: u64,
    pub log_path: PathBuf,
    pub sealed: bool,
}

impl KeyLog {
    /// Opens the key directory `dir` (which exists), recovering its segments:
    /// by the decision table's rules for `mode` when the live journal does
    /// not mention the key, else against the journal's `entries` for it,
    /// replaying those the segments lack. Returns the log and what the
    /// replay touched.
    ///
    /// `log_start` is the log start the journal names (0 if none): the
    /// caller deleted the segments below it, and a log with no segment left
    /// continues from it.
    pub fn open(
        fs: Fs,
        dir: PathBuf,
        mode: Mode,
        segment_bytes: u64,
        entries: &[JournalEntry<'_>],
        log_start: u64,
    ) -> Result<(KeyLog, Touched)> {
        let mut touched = Touched::default();
        let (recovered, replay) = if entries.is_empty() {
            (recovery::recover_key(&fs, &dir, mode)?, Vec::new())
        } else {
            let journaled = recovery::recover_journaled_key(&fs, &dir, entries, log_start)?;
            // The crashed run may have written these files, and the key's
            // directory entries, without syncing them: even where they
            // match the journal, the checkpoint that deletes it syncs them.
            touched.sealed = journaled.unsynced.len() > 1;
            touched.files = journaled.unsynced;
            touched.created = true;
            (journaled.recovered, journaled.replay)
        };
        let first = recovered
            .sealed
            .first()
            .copied()
            .or_else(|| recovered.active.as_ref().map(Segment::base_offset));
        let log_start = first.unwrap_or(log_start);
        let end = recovered
            .active
            .as_ref()
            .map_or(log_start, |active| active.next_offset().unwrap_or_default());
        let mut log = KeyLog {
            fs,
            log_start,
            visible_end: end,
            durable_end: end,
            written_end: end,
            journaled_end: end,
            next_offset: end,
            dir,
            sealed_max: vec![None; recovered.sealed.len()],
            sealed: recovered.sealed,
            sealed_cache: None,
            active: recovered.active,
            segment_bytes,
            pending: Vec::new(),
            frame_starts: Vec::new(),
            views: Arc::new(()),
        };
        if !replay.is_empty() {
            for (offset, frame) in &replay {
                assert_eq!(*offset, log.next_offset, "recovery replays in order");
                log.push_frame(frame);
            }
            let end = log.next_offset;
            log.journaled_end = end;
            let written = log.write_out(end)?;
            touched.files.extend(written.files);
            touched.created |= written.created;
            touched.sealed |= written.sealed;
            touched.bytes += written.bytes;
            log.publish(end);
        }
        Ok((log, touched))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first offset the log still has.
    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    /// The segments, oldest first, the active one last. The active
    /// segment's end is the log's durable end: records made durable may be
    /// in memory on their way to it.
    pub fn segments(&self) -> Vec<SegmentFacts> {
        let mut out = Vec::with_capacity(self.sealed.len() + 1);
        let active_base = self.active.as_ref().map(Segment::base_offset);
        for (i, &base) in self.sealed.iter().enumerate() {
            let end = self
                .sealed
                .get(i + 1)
                .copied()
                .or(active_base)
                .unwrap_or(base);
            out.push(SegmentFacts {
                base,
                end,
                log_path: self.dir.join(format::log_file_name(base)),
                sealed: true,
            });
        }
        if let Some(active) = &self.active {
            out.push(SegmentFacts {
                base: active.base_offset(),
                end: self.durable_end.max(active.base_offset()),
                log_path: active.log_path().to_path_buf(),
                sealed: false,
            });
        }
        out
    }

    /// Deletes the sealed segments whose records are all below `before`,
    /// oldest first (never the active one), and returns the `.log` paths
    /// deleted. The caller made the new log start durable first (a
    /// log-start journal entry), so a crash part way leaves files recovery
    /// deletes again. Each segment's `.index` goes before its `.log`; the
    /// directory is not synced here (the next checkpoint syncs it).
    ///
    /// On an error the log start covers the segments deleted so far and the
    /// rest are still listed; the caller poisons the store, and recovery
    /// finishes the deletion.
    pub fn truncate_front(&mut self, before: u64) -> Result<Vec<PathBuf>> {
        let active_base = self.active.as_ref().map(Segment::base_offset);
        let mut deleted = Vec::new();
        while let Some(&base) = self.sealed.first() {
            let end = self.sealed.get(1).copied().or(active_base);
            if end.is_none_or(|end| end > before) {
                break;
            }
            if self.sealed_cache.as_ref().map(Segment::base_offset) == Some(base) {
                self.sealed_cache = None;
            }
            recovery::remove_segment_files(&*self.fs, &self.dir, base)?;
            self.sealed.remove(0);
            self.sealed_max.remove(0);
            self.log_start = self.sealed.first().copied().or(active_base).unwrap_or(base);
            deleted.push(self.dir.join(format::log_file_name(base)));
        }
        Ok(deleted)
    }

    /// The first offset the log would keep after `truncate_front(before)`.
    pub fn start_after_truncation(&self, before: u64) -> u64 {
        let active_base = self.active.as_ref().map(Segment::base_offset);
        let mut start = self.log_start;
        for (i, &base) in self.sealed.iter().enumerate() {
            let end = self.sealed.get(i + 1).copied().or(active_base);
            match end {
                Some(end) if end <= before => start = end,
                _ => {
                    start = start.max(base);
                    break;
                }
            }
        }
        start
    }

    /// Offset after the last durable record: the log's visible length.
    pub fn durable_next_offset(&self) -> u64 {
        self.durable_end
    }

    /// Offset after the last record written to the segments and published.
    pub fn published_end(&self) -> u64 {
        self.visible_end
    }

    /// Records before `end` are durable (their sync point's fdatasync is
    /// done): readers see them from now on, from memory until they are
    /// written out and published.
    pub fn confirm(&mut self, end: u64) {
        debug_assert!(end <= self.next_offset, "confirmed past the last append");
        self.durable_end = self.durable_end.max(end.min(self.next_offset));
    }

    /// Offset the next append gets: past every appended record, durable or not.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// True when some appended record is not durable yet.
    pub fn has_pending(&self) -> bool {
        self.next_offset > self.visible_end
    }

    /// True while a [`ReadView`] of this log lives: the store must not
    /// close the log and open it again (see `views`).
    pub fn has_views(&self) -> bool {
        Arc::strong_count(&self.views) > 1
    }

    /// True when some appended record is in no journal batch and in no
    /// direct sync point: the next sync point must cover this key.
    pub fn has_unclaimed(&self) -> bool {
        self.next_offset > self.journaled_end.max(self.written_end)
    }

    /// Bytes of frames held in memory until they are durable.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of the frames that are durable (in the journal) but not yet
    /// written to a segment: what a write-out moves into the files.
    pub fn durable_unwritten_bytes(&self) -> u64 {
        let from = self.written_end.max(self.visible_end);
        if self.durable_end <= from {
            return 0;
        }
        self.frames(from, self.durable_end).len() as u64
    }

    /// Appends a record (held in memory; durable after the next sync point)
    /// and returns its offset.
    pub fn append(&mut self, payload: &[u8]) -> u64 {
        let offset = self.next_offset;
        self.frame_starts.push(self.pending.len());
        format::encode_record(&mut self.pending, offset, payload);
        self.next_offset += 1;
        offset
    }

    fn push_frame(&mut self, frame: &[u8]) {
        self.frame_starts.push(self.pending.len());
        self.pending.extend_from_slice(frame);
        self.next_offset += 1;
    }

    /// The frames of offsets `[from, to)`, which are pending.
    fn frames(&self, from: u64, to: u64) -> &[u8] {
        let index = |offset: u64| (offset - self.visible_end) as usize;
        let start = self
            .frame_starts
            .get(index(from))
            .copied()
            .unwrap_or(self.pending.len());
        let end = self
            .frame_starts
            .get(index(to))
            .copied()
            .unwrap_or(self.pending.len());
        &self.pending[start..end]
    }

    /// The records a journal batch must carry for this key, from the first
    /// one no earlier batch holds (re-journaling those a direct sync point
    /// still in flight wrote, so this batch alone makes them durable), and
    /// marks them journaled. Returns the first offset and the frames.
    pub fn claim_for_journal(&mut self) -> (u64, &[u8]) {
        let from = self.journaled_end.max(self.visible_end);
        let to = self.next_offset;
        self.journaled_end = to;
        (from, self.frames(from, to))
    }

    /// Whether writing every unclaimed record now would need a new segment
    /// file (a first segment, or a roll): a direct sync point cannot cover
    /// that, since the new file's directory entry would need a sync too.
    pub fn write_needs_new_segment(&self) -> bool {
        let bytes = self.frames(self.written_end, self.next_offset).len() as u64;
        match &self.active {
            None => true,
            Some(active) => {
                let has_records = active.end_position() > FILE_HEADER_SIZE as u64;
                has_records && active.end_position() + bytes > self.segment_bytes
            }
        }
    }

    /// Writes every record not yet written to the active segment, for a
    /// direct sync point (the caller checked `write_needs_new_segment`), and
    /// returns what to fdatasync.
    pub fn write_direct(&mut self) -> Result<(DirectTarget, Touched)> {
        let end = self.next_offset;
        let touched = self.write_out(end)?;
        let active = self.active.as_ref().expect("written to the active segment");
        let (file, _, _) = active.sync_target().expect("active segments have a writer");
        Ok((
            DirectTarget {
                file,
                log_path: active.log_path().to_path_buf(),
                end,
            },
            touched,
        ))
    }

    /// Writes the records `[written_end, end)` to the segments, sealing the
    /// active segment and starting a new one whenever a record would take it
    /// past the segment size (a segment holding one record larger than that
    /// is allowed). Nothing is synced here.
    pub fn write_out(&mut self, end: u64) -> Result<Touched> {
        let mut touched = Touched::default();
        let mut offset = self.written_end;
        while offset < end {
            let frame_index = (offset - self.visible_end) as usize;
            let start = self.frame_starts[frame_index];
            let stop = self
                .frame_starts
                .get(frame_index + 1)
                .copied()
                .unwrap_or(self.pending.len());
            let size = (stop - start) as u64;
            let roll = match &self.active {
                None => true,
                Some(active) => {
                    let has_records = active.end_position() > FILE_HEADER_SIZE as u64;
                    has_records && active.end_position() + size > self.segment_bytes
                }
            };
            if roll {
                if let Some(mut old) = self.active.take() {
                    let sealed = old.seal();
                    let path = old.log_path().to_path_buf();
                    if let Err(e) = sealed {
                        self.active = Some(old);
                        return Err(e);
                    }
                    touched.files.push(path);
                    touched.sealed = true;
                    self.sealed.push(old.base_offset());
                    self.sealed_max.push(old.known_max_timestamp());
                }
                self.active = Some(Segment::create(Arc::clone(&self.fs), &self.dir, offset)?);
                touched.created = true;
            }
            let active = self.active.as_mut().expect("active segment after a roll");
            active.append_frame(offset, &self.pending[start..stop]);
            touched.bytes += size;
            offset += 1;
        }
        if let Some(active) = self.active.as_mut()
            && offset > self.written_end
        {
            active.flush()?;
            touched.files.push(active.log_path().to_path_buf());
        }
        self.written_end = self.written_end.max(offset);
        Ok(touched)
    }

    /// Publishes the records before `end`, which are durable and written:
    /// readers see them from now on and their frames leave memory.
    pub fn publish(&mut self, end: u64) {
        debug_assert!(end <= self.written_end, "published before written");
        if end <= self.visible_end {
            return;
        }
        let count = (end - self.visible_end) as usize;
        let bytes = self
            .frame_starts
            .get(count)
            .copied()
            .unwrap_or(self.pending.len());
        self.pending.drain(..bytes);
        self.frame_starts.drain(..count);
        for start in &mut self.frame_starts {
            *start -= bytes;
        }
        self.visible_end = end;
        self.durable_end = self.durable_end.max(end);
        self.journaled_end = self.journaled_end.max(end);
        if let Some(active) = self.active.as_mut() {
            let written = active.file_len();
            active.mark_durable(written);
        }
    }

    /// Delivers durable records from offset `from` on to `visit` until it
    /// returns false or the log ends. A corrupt record ends the read with an
    /// error; records before it have been delivered.
    /// A read from below the log start starts at the log start.
    ///
    /// Reads in place, holding the log: opens the segments it crosses one
    /// at a time (through the cache of one) and only as far as `visit`
    /// wants, and decodes the durable records not yet written out where
    /// they are. A reader that must not hold the store's lock while it
    /// decodes takes [`KeyLog::read_view`]s instead.
    pub fn read(&mut self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<()> {
        let from = from.max(self.log_start);
        if from >= self.durable_end {
            return Ok(());
        }
        if from < self.visible_end && self.read_segments(from, visit)? == ReadEnd::Stopped {
            return Ok(());
        }
        let first = from.max(self.visible_end);
        read_frames(
            &self.dir,
            first,
            self.frames(first, self.durable_end),
            visit,
        )
    }

    /// [`KeyLog::read`] of the published records, segment by segment.
    fn read_segments(
        &mut self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<ReadEnd> {
        let end = self.visible_end;
        let mut from = from;
        let mut i = self.segment_holding(from);
        while i < self.sealed.len() {
            let next_base = self.next_base(i);
            let segment = self.sealed_segment(self.sealed[i])?.view(from)?;
            match segment.read(end, visit)? {
                end @ (ReadEnd::Stopped | ReadEnd::ReachedEnd) => return Ok(end),
                ReadEnd::Exhausted { next_offset } => {
                    check_next_base(&segment, next_offset, next_base)?;
                    from = next_offset;
                }
            }
            i += 1;
        }
        match self.active.as_mut() {
            Some(active) => active.view(from)?.read(end, visit),
            None => Ok(ReadEnd::ReachedEnd),
        }
    }

    /// Index of the sealed segment holding `from`, or `sealed.len()` for
    /// the active one.
    fn segment_holding(&self, from: u64) -> usize {
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.base_offset() <= from)
        {
            return self.sealed.len();
        }
        self.sealed
            .partition_point(|&base| base <= from)
            .saturating_sub(1)
    }

    /// Base offset of the segment after sealed segment `i`.
    fn next_base(&self, i: usize) -> u64 {
        self.sealed
            .get(i + 1)
            .copied()
            .or_else(|| self.active.as_ref().map(Segment::base_offset))
            .unwrap_or(u64::MAX)
    }

    /// The durable records from offset `from` on, as a [`ReadView`] that a
    /// reader decodes without this log (and without the store's lock):
    /// views of the segments holding them, up to about `bytes_max` of
    /// records (always at least the segment holding `from`) in at most
    /// [`READ_VIEW_PARTS_MAX`] segments, and a copy of
    /// the durable records not yet written to a segment if the view reaches
    /// them. A view from below the log start starts at the log start.
    /// A later segment that fails to open ends the view before it
    /// (incomplete), so the records before it are read and the next view
    /// meets the error.
    pub fn read_view(&mut self, from: u64, bytes_max: u64) -> Result<ReadView> {
        let from = from.max(self.log_start);
        let mut view = ReadView {
            dir: self.dir.clone(),
            parts: Vec::new(),
            end: self.visible_end,
            pending: Vec::new(),
            pending_from: self.visible_end,
            complete: true,
            _log: Some(Arc::clone(&self.views)),
            _ticket: None,
        };
        if from >= self.durable_end {
            return Ok(view);
        }
        let mut bytes = 0;
        if from < self.visible_end {
            let mut i = self.segment_holding(from);
            let mut at = from;
            while i < self.sealed.len() {
                let next_base = self.next_base(i);
                let segment = match self.sealed_segment(self.sealed[i]).and_then(|s| s.view(at)) {
                    Ok(segment) => segment,
                    // The records before a segment that fails to open are
                    // delivered first: the next view, which starts at
                    // this segment, meets the error.
                    Err(_) if !view.parts.is_empty() => {
                        view.complete = false;
                        return Ok(view);
                    }
                    Err(e) => return Err(e),
                };
                bytes += segment.bytes();
                view.parts.push(ViewPart {
                    segment,
                    next_base: Some(next_base),
                });
                if bytes >= bytes_max || view.parts.len() >= READ_VIEW_PARTS_MAX {
                    view.complete = false;
                    return Ok(view);
                }
                at = next_base;
                i += 1;
            }
            if let Some(active) = self.active.as_mut() {
                let segment = active.view(at)?;
                bytes += segment.bytes();
                view.parts.push(ViewPart {
                    segment,
                    next_base: None,
                });
                if bytes >= bytes_max && self.durable_end > self.visible_end {
                    view.complete = false;
                    return Ok(view);
                }
            }
        }
        // Durable records not yet written out: a copy of their frames, which
        // this process encoded, up to the byte limit (at least one record).
        let first = from.max(self.visible_end);
        let mut last = first;
        while last < self.durable_end && (last == first || bytes < bytes_max) {
            bytes += self.frames(last, last + 1).len() as u64;
            last += 1;
        }
        view.pending = self.frames(first, last).to_vec();
        view.pending_from = first;
        view.complete = last == self.durable_end;
        Ok(view)
    }

    /// The sealed segment starting at `base`, opened into the cache of one.
    fn sealed_segment(&mut self, base: u64) -> Result<&mut Segment> {
        if self.sealed_cache.as_ref().map(Segment::base_offset) != Some(base) {
            self.sealed_cache = Some(Segment::open_sealed(Arc::clone(&self.fs), &self.dir, base)?);
        }
        Ok(self
            .sealed_cache
            .as_mut()
            .expect("sealed segment just opened"))
    }

    /// The first durable record whose timestamp is at or after `t`
    /// (milliseconds since the Unix epoch), with that timestamp; `None`
    /// when no durable record has one. A record without a timestamp never
    /// matches.
    ///
    /// The first segment whose largest timestamp reaches `t` holds it
    /// (every earlier one holds only earlier times), and its time index
    /// finds it with a binary search and a scan of one chunk. The sealed
    /// segments' largest timestamps are kept once read, so a search reads
    /// one segment's indexes and a few KiB of its records. Durable records
    /// not yet written to a segment are looked at in memory.
    pub fn find_time(&mut self, t: i64) -> Result<Option<(u64, i64)>> {
        let t = t.max(0);
        for i in 0..self.sealed.len() {
            let base = self.sealed[i];
            let max = match self.sealed_max[i] {
                Some(max) => max,
                None => {
                    let max = self.sealed_segment(base)?.max_timestamp()?;
                    self.sealed_max[i] = Some(max);
                    max
                }
            };
            if max < t {
                continue;
            }
            let segment = self.sealed_segment(base)?;
            let found = segment.find_time(t)?;
            // A rebuilt time index may say otherwise than the one read.
            let known = segment.known_max_timestamp();
            self.sealed_max[i] = known;
            if let Some((offset, timestamp)) = found {
                return Ok(self.visible(offset, timestamp, t));
            }
        }
        if let Some(active) = self.active.as_mut()
            && let Some((offset, timestamp)) = active.find_time(t)?
        {
            return Ok(self.visible(offset, timestamp, t));
        }
        Ok(self.find_time_pending(self.visible_end, t))
    }

    /// A record a segment found for time `t`, if readers may see it; else
    /// the first after it among the durable records in memory (a segment
    /// holds records only up to those).
    fn visible(&self, offset: u64, timestamp: i64, t: i64) -> Option<(u64, i64)> {
        if offset < self.visible_end {
            return Some((offset, timestamp));
        }
        self.find_time_pending(self.visible_end, t)
    }

    /// [`KeyLog::find_time`] among the durable records from `from` on that
    /// are not written out yet, in memory (a sync point's worth at most).
    fn find_time_pending(&self, from: u64, t: i64) -> Option<(u64, i64)> {
        (from.max(self.visible_end)..self.durable_end).find_map(|offset| {
            let frame = self.frames(offset, offset + 1);
            let payload = frame.get(format::RECORD_HEADER_SIZE..)?;
            let timestamp = crate::storage::timestamp::timestamp_of(payload)?;
            (timestamp >= t).then_some((offset, timestamp))
        })
    }
}
