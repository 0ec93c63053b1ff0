//! One key's log: its sealed segments, its active segment, rolling between them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::error::{Error, Result};
use crate::storage::format::{self, FILE_HEADER_SIZE};
use crate::storage::recovery::{self, Mode};
use crate::storage::segment::{ReadEnd, Segment};

/// What one key needs from a sync point.
pub struct SyncTarget {
    /// The active segment's file, to fdatasync.
    pub file: Arc<File>,
    /// Its path, for error messages.
    pub log_path: PathBuf,
    /// Its base offset: a roll after the plan was made must not be credited.
    pub base_offset: u64,
    /// Bytes of the file the fdatasync covers.
    pub position: u64,
    /// Offset after the last record it covers.
    pub next_offset: u64,
    /// The key directory to fsync, and the creation count that covers.
    pub dir: Option<(PathBuf, u64)>,
}

/// The log of one key, open for appends and reads.
pub struct KeyLog {
    /// The key's directory under `logs/`.
    dir: PathBuf,
    /// Base offsets of the sealed segments, ascending.
    sealed: Vec<u64>,
    /// The sealed segment read last, kept mapped: consecutive polls of one
    /// key usually continue in the same segment.
    sealed_cache: Option<Segment>,
    /// The segment appends go to; `None` until the key's first append.
    active: Option<Segment>,
    /// Size at which the active segment is sealed and a new one started.
    segment_bytes: u64,
    /// Segment files created in `dir`, counted. Their directory entries must
    /// be fsynced before any record in them is acknowledged.
    dir_changes: u64,
    /// How many of `dir_changes` a completed sync point covered. Counting,
    /// not a flag taken by the first plan, lets a second plan that runs while
    /// the first is in flight fsync the directory too.
    dir_synced: u64,
    /// Offset after the last record a completed sync point covered: readers
    /// see nothing at or past it. Sealing fdatasyncs a segment's data, but
    /// its records stay invisible until the sync point that also makes the
    /// directory entries durable.
    visible_end: u64,
}

impl KeyLog {
    /// Opens the key directory `dir` (which exists), recovering its active segment.
    pub fn open(dir: PathBuf, mode: Mode, segment_bytes: u64) -> Result<KeyLog> {
        let recovered = recovery::recover_key(&dir, mode)?;
        let visible_end = recovered
            .active
            .as_ref()
            .map_or(0, |active| active.next_offset().unwrap_or_default());
        Ok(KeyLog {
            visible_end,
            dir,
            sealed: recovered.sealed,
            sealed_cache: None,
            active: recovered.active,
            segment_bytes,
            dir_changes: 0,
            dir_synced: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Offset after the last durable record: the log's visible length.
    pub fn durable_next_offset(&self) -> u64 {
        self.visible_end
    }

    /// Offset the next append gets: past every appended record, durable or not.
    pub fn next_offset(&self) -> u64 {
        self.active
            .as_ref()
            .and_then(Segment::next_offset)
            .unwrap_or(self.visible_end)
    }

    /// True when some appended record is not durable yet.
    pub fn has_pending(&self) -> bool {
        self.active
            .as_ref()
            .and_then(Segment::next_offset)
            .is_some_and(|next| next > self.visible_end)
    }

    /// Appends a record (buffered; durable after the next sync) and returns
    /// its offset. Seals the active segment first if the record would take
    /// it past the size limit; sealing fdatasyncs the old segment, and an
    /// error there is a failed sync.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64> {
        let record_size = format::record_size(payload.len()) as u64;
        let roll_at = match &self.active {
            None => Some(0),
            Some(active) => {
                let has_records = active.end_position() > FILE_HEADER_SIZE as u64;
                let too_big = active.end_position() + record_size > self.segment_bytes;
                (has_records && too_big).then(|| active.next_offset().unwrap_or_default())
            }
        };
        if let Some(base) = roll_at {
            if let Some(mut old) = self.active.take() {
                if let Err(e) = old.seal() {
                    self.active = Some(old);
                    return Err(e);
                }
                self.sealed.push(old.base_offset());
            }
            self.active = Some(Segment::create(&self.dir, base)?);
            self.dir_changes += 1;
        }
        let active = self
            .active
            .as_mut()
            .expect("active segment exists after roll");
        // Flush before appending, so that an error means this record was not
        // taken: the caller can answer with a definite error.
        if active.buffer_full() {
            active.flush()?;
        }
        Ok(active.append(payload))
    }

    /// Writes buffered records to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.active.as_mut().map_or(Ok(()), Segment::flush)
    }

    /// What a sync point must cover for this key (the caller has flushed).
    pub fn sync_target(&self) -> Option<SyncTarget> {
        let active = self.active.as_ref()?;
        let (file, position, next_offset) = active.sync_target()?;
        Some(SyncTarget {
            file,
            log_path: active.log_path().to_path_buf(),
            base_offset: active.base_offset(),
            position,
            next_offset,
            dir: (self.dir_changes > self.dir_synced).then(|| (self.dir.clone(), self.dir_changes)),
        })
    }

    /// Publishes what `target` covered, after its sync point completed.
    pub fn mark_synced(&mut self, target: &SyncTarget) {
        if let Some(active) = self.active.as_mut()
            && active.base_offset() == target.base_offset
        {
            active.mark_durable(target.position);
        }
        self.visible_end = self.visible_end.max(target.next_offset);
        if let Some((_, changes)) = target.dir {
            self.dir_synced = self.dir_synced.max(changes);
        }
    }

    /// Delivers durable records from offset `from` on to `visit` until it
    /// returns false or the log ends. A corrupt record ends the read with an
    /// error; records before it have been delivered.
    pub fn read(&mut self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<()> {
        let end = self.visible_end;
        if from >= end {
            return Ok(());
        }
        let visit = &mut |offset: u64, payload: &[u8]| offset < end && visit(offset, payload);
        let mut from = from;
        // Index of the sealed segment holding `from`, or `sealed.len()` for the active one.
        let mut i = self
            .sealed
            .partition_point(|&base| base <= from)
            .saturating_sub(1);
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.base_offset() <= from)
        {
            i = self.sealed.len();
        }
        while i < self.sealed.len() {
            let base = self.sealed[i];
            let next_base = self
                .sealed
                .get(i + 1)
                .copied()
                .or_else(|| self.active.as_ref().map(Segment::base_offset))
                .unwrap_or(u64::MAX);
            if self.sealed_cache.as_ref().map(Segment::base_offset) != Some(base) {
                self.sealed_cache = Some(Segment::open_sealed(&self.dir, base)?);
            }
            let segment = self
                .sealed_cache
                .as_mut()
                .expect("sealed segment just opened");
            match segment.read(from, visit)? {
                ReadEnd::Stopped => return Ok(()),
                ReadEnd::Exhausted { next_offset } if next_offset == next_base => {
                    from = next_offset;
                }
                ReadEnd::Exhausted { next_offset } => {
                    return Err(Error::corrupt(
                        segment.log_path(),
                        segment.end_position(),
                        format!(
                            "sealed segment ends before offset {next_offset}, \
                             but the next segment starts at {next_base}"
                        ),
                    ));
                }
            }
            i += 1;
        }
        if let Some(active) = self.active.as_mut() {
            active.read(from, visit)?;
        }
        Ok(())
    }
}
