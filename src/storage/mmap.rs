//! Read-only memory maps of segment files: the storage engine's only
//! `unsafe` code. (The crate's one other `unsafe` module is the binary's
//! allocator, `src/lazy_alloc.rs`, with its own `SAFETY` contract.)
//!
//! Reads go through maps so that a poll copies a record once, from the page
//! cache into the reply. A map is sound only while the bytes it covers stay
//! in the file and do not change; the invariants below are what make that
//! true, and every code path that truncates or rewrites a file honours them.

use std::fs::File;
use std::io;
use std::ops::Deref;

/// A read-only map of the first `len` bytes of a file: a memory map on the
/// real file system, or a copy of the bytes from a simulated backend.
pub struct MappedFile {
    map: Inner,
}

enum Inner {
    /// An empty range: `mmap(2)` rejects a length of zero.
    Empty,
    Map(memmap2::Mmap),
    /// Bytes a simulated backend copied out of its image.
    Copied(Box<[u8]>),
}

impl MappedFile {
    /// Maps `[0, len)` of `file`. The caller has checked that the file is at
    /// least `len` bytes long.
    pub fn map(file: &File, len: usize) -> io::Result<MappedFile> {
        if len == 0 {
            return Ok(MappedFile::empty());
        }
        // SAFETY: a `memmap2::Mmap` hands out `&[u8]` over the file's pages, so
        // the bytes in `[0, len)` must stay present and unchanged for as long
        // as the map lives. seglog guarantees that for its own process:
        // 1. Files are append-only: writes go to positions at or past the
        //    file's length at the time of writing, and a map never covers more
        //    than the length the file had when it was mapped (the caller maps
        //    at most the current length), so no write touches mapped bytes.
        //    The one exception, recovery writing a segment's bytes over
        //    themselves (`fsutil::rewrite_in_place`), runs before the key's
        //    log is opened, when no map of the file exists.
        // 2. Nothing cuts a file below the end of any live map. Recovery
        //    maps the active segment to scan it, drops that map, and only
        //    then cuts a torn tail (recovery's rewrites run only on a key's
        //    first open, before any map of it exists in this run; a store
        //    reopened in place after a failed sync first waits for every
        //    view of the failed run to go, `store/views.rs`, since recovery
        //    may cut below what they map; and a key a view maps is never
        //    closed, so never opened and recovered again, while the view
        //    lives, `KeyLog::has_views`); the one other cut
        //    (undoing a partial append after a failed write) may cut the
        //    active file while a reader's view still maps it, but a view
        //    reads at most min(durable_position, map.len()) <= the writer's
        //    file_len at the cut, and that cut never goes below file_len,
        //    which never decreases. The active segment
        //    is remapped, never extended in place, when its durable end grows
        //    past its map.
        //    Readers hold maps too, outside the store's lock (a
        //    `segment::SegmentView` shares its segment's map through an
        //    `Arc`), so a map may outlive its segment's use of it: the
        //    segment remaps, or drops its map before the cut of a failed
        //    write, while a reader still reads the old one. That is sound
        //    because every map covers at most the length the file had when
        //    it was mapped, and that cut only removes bytes past it; a reader
        //    reads no further than the durable position it took with the
        //    map. Retention and key removal unlink files, which leaves a
        //    mapped file's pages in place until the last map goes. A view
        //    may outlive the Store and its LOCK, though no caller keeps one
        //    that long today.
        // 3. Other processes are kept off the directory by the `LOCK` file;
        //    `seglog inspect` opens files read-only. An outside process that
        //    truncates a segment under a running node is outside this
        //    contract (it would raise SIGBUS, as for any mmap reader).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        Ok(MappedFile {
            map: Inner::Map(map),
        })
    }

    /// A map of nothing, for a file with no bytes to read yet.
    pub fn empty() -> MappedFile {
        MappedFile { map: Inner::Empty }
    }

    /// Bytes read into memory, for a backend that has no file to map.
    pub fn copied(bytes: Vec<u8>) -> MappedFile {
        MappedFile {
            map: Inner::Copied(bytes.into_boxed_slice()),
        }
    }

    /// Number of bytes mapped.
    pub fn len(&self) -> usize {
        self.deref().len()
    }

    /// True when nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.map {
            Inner::Empty => &[],
            Inner::Map(map) => map,
            Inner::Copied(bytes) => bytes,
        }
    }
}
