//! The sparse offset index of one segment: a cache of where some records start.
//!
//! The index is never trusted over the log. It is written without fsync;
//! every entry it yields is checked against the record it points at, and an
//! index that is missing, short, unordered, points past the log or disagrees
//! with it is rebuilt from the log.

use std::path::Path;

use crate::storage::backend::{Backend, OpenMode};
use crate::storage::error::{Error, Result};
use crate::storage::format::{
    self, FILE_HEADER_SIZE, FORMAT_VERSION, FileHeader, FileKind, IndexEntry,
};

/// Bytes of log between two index entries. One page: after the binary search
/// a lookup scans at most about a page of records, which costs less than the
/// page fault that brings it in, and the index stays 1/512 of the log.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// The entries of one segment's index, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparseIndex {
    /// Entries in increasing offset and position order.
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    /// An index with the given entries, which the caller produced in order.
    pub fn from_entries(entries: Vec<IndexEntry>) -> SparseIndex {
        debug_assert!(is_ordered(&entries));
        SparseIndex { entries }
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Adds an entry past every existing one.
    pub fn push(&mut self, entry: IndexEntry) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|last| last.relative_offset < entry.relative_offset
                    && last.position < entry.position)
        );
        self.entries.push(entry);
    }

    /// The last entry at or before `relative_offset`, found by binary search.
    pub fn lookup(&self, relative_offset: u32) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Reads the index file of the segment starting at `base_offset` whose log
    /// is `log_len` bytes long. Returns why it cannot be used, if it cannot:
    /// the caller then rebuilds it.
    pub fn load(
        fs: &dyn Backend,
        path: &Path,
        base_offset: u64,
        log_len: u64,
    ) -> Result<SparseIndex, String> {
        let bytes = read_cache(fs, path, FileKind::Index, base_offset)?;
        let entries = format::decode_index_entries(&bytes[FILE_HEADER_SIZE..])
            .map_err(|e| format!("entries: {e}"))?;
        if !is_ordered(&entries) {
            return Err("entries: not in increasing order".to_string());
        }
        if let Some(last) = entries.last()
            && (u64::from(last.position) < FILE_HEADER_SIZE as u64
                || u64::from(last.position) >= log_len)
        {
            return Err(format!(
                "entries: position {} outside the log's {log_len} bytes",
                last.position
            ));
        }
        Ok(SparseIndex { entries })
    }

    /// Replaces the index file with these entries: written to a temporary
    /// file and renamed over the old one, so a crash leaves the old index or
    /// the new one. No fsync: the index is a cache rebuilt from the log.
    pub fn write_file(&self, fs: &dyn Backend, path: &Path, base_offset: u64) -> Result<()> {
        crate::storage::fsutil::replace_cache(
            fs,
            path,
            &path.with_extension("index.tmp"),
            &index_header(base_offset),
            self.entries.iter().map(|e| format::encode_index_entry(*e)),
        )
    }
}

/// The bytes of a segment's cache file (`.index` or `.timeindex`) of
/// `kind`, if its header is right for the segment starting at
/// `base_offset`; else why not.
pub fn read_cache(
    fs: &dyn Backend,
    path: &Path,
    kind: FileKind,
    base_offset: u64,
) -> Result<Vec<u8>, String> {
    let bytes = fs.read(path).map_err(|e| format!("cannot read: {e}"))?;
    let header = format::decode_header(&bytes).map_err(|e| format!("header: {e}"))?;
    if header.kind != kind {
        return Err(format!("header: a {:?} file, not {kind:?}", header.kind));
    }
    if header.base_offset != base_offset {
        return Err(format!(
            "header: base offset {} does not match the file name's {base_offset}",
            header.base_offset
        ));
    }
    Ok(bytes)
}

/// The header of the index file of the segment starting at `base_offset`.
pub fn index_header(base_offset: u64) -> [u8; FILE_HEADER_SIZE] {
    format::encode_header(&FileHeader {
        kind: FileKind::Index,
        version: FORMAT_VERSION,
        base_offset,
    })
}

/// Appends raw entry bytes to an index file (the active segment's new entries),
/// at the end its size says: the segment is the file's only writer.
pub fn append_to_file(fs: &dyn Backend, path: &Path, bytes: &[u8]) -> Result<()> {
    let file = fs
        .open(path, OpenMode::Write)
        .map_err(|e| Error::io("open", path, e))?;
    file.size()
        .and_then(|end| file.write_all_at(bytes, end))
        .map_err(|e| Error::io("append to", path, e))
}

fn is_ordered(entries: &[IndexEntry]) -> bool {
    entries.windows(2).all(|pair| {
        pair[0].relative_offset < pair[1].relative_offset && pair[0].position < pair[1].position
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(relative_offset: u32, position: u32) -> IndexEntry {
        IndexEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn lookup_finds_the_last_entry_at_or_before() {
        let index = SparseIndex::from_entries(vec![entry(10, 4000), entry(20, 8000)]);
        assert_eq!(index.lookup(5), None);
        assert_eq!(index.lookup(10), Some(entry(10, 4000)));
        assert_eq!(index.lookup(19), Some(entry(10, 4000)));
        assert_eq!(index.lookup(99), Some(entry(20, 8000)));
    }
}
