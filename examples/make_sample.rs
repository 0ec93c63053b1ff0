//! Writes the format-v2 samples in `data/` with seglog's own code:
//!
//! ```text
//! cargo run --example make_sample -- data/
//! ```
//!
//! makes `sample-v2/` (a store stopped by a crash after a checkpoint: its
//! write-ahead journal holds the second round of records and commits, not
//! yet checkpointed) and `sample-v2-replay/` (a copy whose segments are as
//! they were at the checkpoint, as a power loss that kept only synced data
//! would leave them: everything after it is only in the journal, and a key
//! created after it has no directory). The samples are written once and
//! committed: every later build must still read them (`tests/inspect.rs`),
//! so this refuses to overwrite them. The format-v1 samples beside them were
//! written by the version 1 generator (this file's history) and cannot be
//! made again by a version 2 build.

#[expect(
    dead_code,
    reason = "tests/inspect.rs reads the sample back with the rest"
)]
#[path = "sample/contents.rs"]
mod contents;

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use contents::Step;
use seglog::storage::store::{LOCK_FILE_NAME, LOGS_DIR_NAME};
use seglog::{Store, StoreConfig};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "data".to_string()),
    );
    let journaled = root.join("sample-v2");
    let replay = root.join("sample-v2-replay");
    for dir in [&journaled, &replay] {
        if dir.exists() {
            return Err(format!(
                "{} exists: the committed sample is written once, by format version 2; \
                 delete it first only if you mean to replace it",
                dir.display()
            )
            .into());
        }
    }
    let at_checkpoint = root.join("sample-v2-at-checkpoint.tmp");
    write_store(&journaled, &at_checkpoint)?;
    fs::remove_file(journaled.join(LOCK_FILE_NAME))?;
    copy_dir(&journaled, &replay)?;
    fs::remove_dir_all(replay.join(LOGS_DIR_NAME))?;
    copy_dir(
        &at_checkpoint.join(LOGS_DIR_NAME),
        &replay.join(LOGS_DIR_NAME),
    )?;
    fs::remove_dir_all(&at_checkpoint)?;
    println!("wrote {} and {}", journaled.display(), replay.display());
    Ok(())
}

/// Writes the sample store with seglog's own code, copies it to
/// `at_checkpoint` right after its checkpoint, and drops it without a clean
/// close: the state a crash leaves.
fn write_store(dir: &Path, at_checkpoint: &Path) -> Result<()> {
    let config = StoreConfig {
        segment_bytes: contents::SEGMENT_BYTES,
        // Only the steps' checkpoint: the bytes depend on nothing else.
        checkpoint_bytes: u64::MAX,
        checkpoint_age: Duration::from_secs(u64::from(u32::MAX)),
        ..StoreConfig::default()
    };
    let mut store = Store::open(dir, config)?;
    for step in contents::steps() {
        match step {
            Step::Append(key, message) => {
                store.append(key, message.as_bytes())?;
            }
            Step::Commit(key, offset) => store.commit(key, offset)?,
            Step::Sync => store.sync()?,
            Step::Checkpoint => {
                store.checkpoint()?;
                copy_dir(dir, at_checkpoint)?;
            }
        }
    }
    drop(store);
    Ok(())
}

/// Copies a directory tree of plain files.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
