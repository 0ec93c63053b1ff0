//! The time index of one segment: the largest timestamp of each *chunk* of
//! its records, a cache that finds the first record at or after a time
//! with a binary search and a scan of one chunk.
//!
//! A segment's records fall into chunks at the records the offset index
//! names (`segment::needs_index_entry`): chunk 0 starts at the first
//! record, chunk `k` at the record of offset-index entry `k - 1`, so a
//! chunk is about [`INDEX_INTERVAL_BYTES`](crate::storage::index::INDEX_INTERVAL_BYTES)
//! of records. Every *closed* chunk (all but the active segment's last)
//! has one entry, in chunk order: its largest timestamp
//! ([`NO_TIMESTAMP`] if no record in it has one) and its first record's
//! relative offset.
//!
//! Timestamps are the clients' and need not grow with offsets, but the
//! running maximum over chunks does: the first record at or after `t` is
//! in the first chunk whose running maximum reaches `t` (every chunk before
//! it holds only earlier times), found by binary search, and is the first
//! record of that chunk at or after `t`. The scan is one chunk however the
//! timestamps are ordered.
//!
//! Like the offset index the file is a cache: written without fsync, never
//! trusted over the log. It is used only when its header is right, it has
//! exactly one entry per closed chunk and each names its chunk's first
//! record; the chunk a lookup scans is checked against its entry; anything
//! else rebuilds it from the log.

use std::path::Path;

use crate::storage::backend::Backend;
use crate::storage::error::Result;
use crate::storage::format::{
    self, FILE_HEADER_SIZE, FORMAT_VERSION, FileHeader, FileKind, NO_TIMESTAMP, TimeEntry,
};
use crate::storage::index::read_cache;

/// The entries of one segment's time index, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    /// One entry per closed chunk, in chunk order.
    entries: Vec<TimeEntry>,
    /// `running_max[k]`: the largest timestamp of chunks `0..=k`, what the
    /// binary search runs on (it never decreases).
    running_max: Vec<i64>,
}

impl TimeIndex {
    /// An index of these entries, one per closed chunk in chunk order.
    pub fn from_entries(entries: Vec<TimeEntry>) -> TimeIndex {
        let mut index = TimeIndex::default();
        for entry in entries {
            index.push(entry);
        }
        index
    }

    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    /// Adds the entry of the next chunk.
    pub fn push(&mut self, entry: TimeEntry) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|last| last.relative_offset < entry.relative_offset)
        );
        let max = self.max_timestamp().max(entry.timestamp);
        self.entries.push(entry);
        self.running_max.push(max);
    }

    /// The largest timestamp of every closed chunk, or [`NO_TIMESTAMP`].
    pub fn max_timestamp(&self) -> i64 {
        self.running_max.last().copied().unwrap_or(NO_TIMESTAMP)
    }

    /// The first closed chunk whose running maximum reaches `t`: the chunk
    /// that holds the first record at or after `t`, if a closed one does.
    pub fn first_chunk_reaching(&self, t: i64) -> Option<usize> {
        let k = self.running_max.partition_point(|&max| max < t);
        (k < self.entries.len()).then_some(k)
    }

    /// Reads the time index file of the segment starting at `base_offset`,
    /// whose closed chunks start at the relative offsets `chunk_starts`
    /// (from its offset index), followed by `buffered`, encoded entries not
    /// yet written to it. Returns why it cannot be used, if it cannot: the
    /// caller then rebuilds it.
    pub fn load(
        fs: &dyn Backend,
        path: &Path,
        base_offset: u64,
        chunk_starts: &[u32],
        buffered: &[u8],
    ) -> Result<TimeIndex, String> {
        let bytes = read_cache(fs, path, FileKind::TimeIndex, base_offset)?;
        let mut entries = format::decode_time_entries(&bytes[FILE_HEADER_SIZE..])
            .map_err(|e| format!("entries: {e}"))?;
        entries.extend(
            format::decode_time_entries(buffered).map_err(|e| format!("buffered entries: {e}"))?,
        );
        check_entries(&entries, chunk_starts)?;
        Ok(TimeIndex::from_entries(entries))
    }

    /// Replaces the time index file with these entries: written to a
    /// temporary file and renamed over the old one, so a crash leaves the
    /// old index or the new one. No fsync: the index is a cache rebuilt from
    /// the log.
    pub fn write_file(&self, fs: &dyn Backend, path: &Path, base_offset: u64) -> Result<()> {
        crate::storage::fsutil::replace_cache(
            fs,
            path,
            &path.with_extension("timeindex.tmp"),
            &time_index_header(base_offset),
            self.entries.iter().map(|e| format::encode_time_entry(*e)),
        )
    }
}

/// Why `entries` are not the time index of closed chunks starting at
/// `chunk_starts`, if they are not: one entry per chunk, each naming its
/// chunk's first record, no timestamp below [`NO_TIMESTAMP`].
pub fn check_entries(entries: &[TimeEntry], chunk_starts: &[u32]) -> Result<(), String> {
    if entries.len() != chunk_starts.len() {
        return Err(format!(
            "{} entries for {} closed chunks",
            entries.len(),
            chunk_starts.len()
        ));
    }
    for (k, (entry, &start)) in entries.iter().zip(chunk_starts).enumerate() {
        if entry.relative_offset != start {
            return Err(format!(
                "entry {k} names relative offset {}, but its chunk starts at {start}",
                entry.relative_offset
            ));
        }
        if entry.timestamp < NO_TIMESTAMP {
            return Err(format!("entry {k} has timestamp {}", entry.timestamp));
        }
    }
    Ok(())
}

/// The header of the time index file of the segment starting at `base_offset`.
pub fn time_index_header(base_offset: u64) -> [u8; FILE_HEADER_SIZE] {
    format::encode_header(&FileHeader {
        kind: FileKind::TimeIndex,
        version: FORMAT_VERSION,
        base_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(timestamp: i64, relative_offset: u32) -> TimeEntry {
        TimeEntry {
            timestamp,
            relative_offset,
        }
    }

    #[test]
    fn the_search_runs_on_the_running_maximum() {
        // Chunk 1's times are all below chunk 0's largest: a record at or
        // after 50 is first in chunk 0, one at or after 95 in chunk 2.
        let index = TimeIndex::from_entries(vec![
            entry(90, 0),
            entry(40, 10),
            entry(NO_TIMESTAMP, 20),
            entry(100, 30),
        ]);
        assert_eq!(index.first_chunk_reaching(0), Some(0));
        assert_eq!(index.first_chunk_reaching(50), Some(0));
        assert_eq!(index.first_chunk_reaching(90), Some(0));
        assert_eq!(index.first_chunk_reaching(95), Some(3));
        assert_eq!(index.first_chunk_reaching(101), None);
        assert_eq!(index.max_timestamp(), 100);
        assert_eq!(TimeIndex::default().max_timestamp(), NO_TIMESTAMP);
    }

    #[test]
    fn entries_must_match_the_chunks_one_for_one() {
        let entries = [entry(5, 0), entry(7, 12)];
        assert_eq!(check_entries(&entries, &[0, 12]), Ok(()));
        assert!(check_entries(&entries, &[0]).is_err(), "an extra entry");
        assert!(
            check_entries(&entries, &[0, 12, 30]).is_err(),
            "a lost tail"
        );
        assert!(check_entries(&entries, &[0, 13]).is_err(), "misaligned");
        assert!(check_entries(&[entry(-2, 0)], &[0]).is_err(), "bad time");
    }
}
