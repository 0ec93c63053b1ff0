//! The storage engine: a data directory of per-key segment logs and the
//! committed offsets, made durable by sync points. It knows nothing of
//! Maelstrom or of other nodes; the front ends call [`store::Store`].
//!
//! # Layout
//! - [`backend`]: every file operation, on the real file system or a simulated one.
//! - [`format`](mod@format): byte layout and codecs of every file, no I/O (spec:
//!   `segment-format.md`).
//! - [`keyname`]: keys to directory names, injective and confined to the data directory.
//! - [`mmap`]: the read-only memory maps, the engine's only `unsafe` code (the
//!   crate's other `unsafe` is the binary's allocator, `src/lazy_alloc.rs`).
//! - [`index`]: the sparse offset index of one segment, a cache rebuilt from the log.
//! - [`timestamp`]: a payload's timestamp, the one thing the store reads in one.
//! - [`timeindex`]: the time index of one segment, a cache rebuilt from the log.
//! - [`segment`]: one segment, its `.log`, `.index` and `.timeindex`; scanning records.
//! - [`recovery`]: the recovery decision table, applied when a key is opened:
//!   a key the journal mentions is observed, decided (pure) and applied.
//! - [`keylog`]: one key's log: sealed segments, the active one, rolling.
//! - [`offsets`]: the committed offsets up to the last checkpoint.
//! - [`journal`]: the store-wide write-ahead journal: batches, reader, writer.
//! - [`journal_recovery`]: the journal's files at open: live ones, torn tails, per-key
//!   index; decided (pure), then applied.
//! - [`checkpoint`]: syncing segments so that journal files can be deleted.
//! - [`retention`]: which oldest segments a size or age limit lets go.
//! - `sim`: a simulated disk for tests: power loss, crash points, injected faults.
//!   Compiled for the crate's unit tests and with the `sim` feature only (the
//!   integration tests turn it on), never into a release build.
//! - [`store`]: all keys of a data directory, its lock, sync points and checkpoints
//!   (a folder, one file per idea).
//! - [`space`]: free-space admission: writes refused before the disk is full.
//! - [`syncpool`]: threads that issue the fdatasyncs of a sync point together.
//! - [`group_commit`]: the thread that runs sync points for the writes
//!   queued meanwhile and reports each batch back with its outcome.
//! - [`fsutil`]: durable directory and atomic-rewrite helpers.
//! - [`error`]: the error type.

pub mod backend;
pub mod checkpoint;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod group_commit;
pub mod index;
pub mod journal;
pub mod journal_recovery;
pub mod keylog;
pub mod keyname;
pub mod mmap;
pub mod offsets;
pub mod recovery;
pub mod retention;
pub mod segment;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod space;
pub mod store;
pub mod syncpool;
pub mod timeindex;
pub mod timestamp;
