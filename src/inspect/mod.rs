//! The offline segment inspector: `seglog inspect PATH`.
//!
//! It decodes a data directory, one store, one key's log or one file with the
//! codecs of [`crate::storage::format`], prints what it found for people (aligned
//! columns) or for scripts (`--json`, one object per line), and with
//! `--verify` lists every problem with its file and byte position and makes
//! the exit status say whether there was any.
//!
//! It never writes. Files are read with `std::fs::read`, a private copy: a
//! running node's recovery may truncate an active segment, which would fault
//! a memory map of it but cannot hurt a copy. No lock is taken and
//! [`crate::Store::open`] is never called, since opening a store cuts torn
//! tails and rewrites indexes. So it is safe on the directory of a running
//! node; there it may catch an append half written, which it reports as a
//! torn tail like any other.
//!
//! A damaged file is decoded as far as possible: past a bad record the
//! inspector looks for the next valid one, as recovery does to tell a hole
//! from a torn tail, and says where and why decoding stopped or resumed.
//!
//! # Layout
//! - `target`: what PATH is, and the stores, keys and files under it.
//! - `problem`: a problem found: kind, file, position, sentence.
//! - `header`: checking the header that starts every file.
//! - `log_file`: one `.log` file decoded frame by frame, past damage.
//! - `index_file`: one `.index` file, checked against its log.
//! - `time_index_file`: one `.timeindex` file, checked against its log.
//! - `segment_check`: one segment's log and index read and checked together.
//! - `key_dir`: one key's directory: its key, its segments.
//! - `offsets`: the committed offsets file (`offsets.journal`).
//! - `journal`: the write-ahead journal (versions 2 and 3): checkpoint, files, batches.
//! - `inspector`: the walk over a target, in the order output is written.
//! - `output`: text for people and JSON lines for scripts.
//! - `show`: keys and messages made to fit on one line.

mod header;
mod index_file;
mod inspector;
mod journal;
mod key_dir;
mod log_file;
mod offsets;
mod output;
mod problem;
mod segment_check;
mod show;
mod target;
mod time_index_file;

use std::io::{self, Write};
use std::path::PathBuf;

pub use problem::{Problem, ProblemKind};

/// Options of `seglog inspect`.
///
/// `--from` and `--max` narrow what is listed; every file of the selected
/// keys is still read and checked, because a problem before `--from` (a
/// missing segment, a bad record) is still a problem of the log.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct InspectArgs {
    /// A data directory (node directories such as n0/ inside), one store
    /// directory (logs/, offsets.journal), one key's log directory
    /// (logs/k.… or logs/h.…), or one .log, .index or offsets.journal file.
    pub path: PathBuf,
    /// List every record: offset, position, size, CRC, validity, message.
    #[arg(long)]
    pub records: bool,
    /// List the index entries and whether each agrees with the log.
    #[arg(long)]
    pub index: bool,
    /// Check everything, list each problem with file and position, and exit
    /// with status 1 if there is any (the segment table is left out).
    #[arg(long)]
    pub verify: bool,
    /// Write JSON lines for scripts: one object per store, segment, record,
    /// index entry, committed offset, problem, and a summary.
    #[arg(long)]
    pub json: bool,
    /// Show keys and messages whole instead of shortened to fit a line.
    #[arg(long)]
    pub full: bool,
    /// Only the log of this key (and its committed offset).
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// List only segments, records and index entries at or after this offset.
    #[arg(long, value_name = "OFFSET")]
    pub from: Option<u64>,
    /// List at most N segments, N records and N index entries per key.
    #[arg(long, value_name = "N")]
    pub max: Option<usize>,
}

/// Runs the inspector and writes its report to `out`. Returns whether
/// everything checked was valid; without `--verify` it is always true, so
/// only `--verify` turns problems into a failing exit status.
///
/// Errors are those of writing `out` (a closed pipe among them, which the
/// caller treats as a quiet end) and a PATH that cannot be read or is not
/// seglog data; problems in the data are reported, not returned.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> io::Result<bool> {
    let target = target::resolve(&args.path)?;
    let mut inspector = inspector::Inspector::new(args, out);
    inspector.inspect(&target)?;
    let problems = inspector.finish()?;
    Ok(!args.verify || problems == 0)
}
