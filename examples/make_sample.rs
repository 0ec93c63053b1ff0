//! Writes the format-v1 sample in `data/` with seglog's own code:
//!
//! ```text
//! cargo run --example make_sample -- data/
//! ```
//!
//! makes `sample-v1/` (a store closed cleanly), `sample-v1-torn/` (a copy
//! whose active segment ends in half a record, as after a crash mid-append)
//! and `sample-v1-flipped/` (a copy with one bit flipped in a sealed
//! segment). The sample is written once and committed: every later build
//! must still read it (`tests/inspect.rs`). So this refuses to overwrite it.

#[expect(
    dead_code,
    reason = "tests/inspect.rs reads the sample back with the rest"
)]
#[path = "sample/contents.rs"]
mod contents;

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use contents::Step;
use seglog::storage::format::{self, FILE_HEADER_SIZE};
use seglog::storage::store::{CLEAN_FILE_NAME, LOCK_FILE_NAME, LOGS_DIR_NAME};
use seglog::{Store, StoreConfig};

/// The bit flipped in `sample-v1-flipped`: the lowest, which turns one digit
/// of an order number into another, a change only the CRC can see.
const FLIPPED_BIT: u8 = 0x01;

/// Length of `{"order":`, after which an order message's number starts.
const ORDER_NUMBER_POS: usize = 9;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "data".to_string()),
    );
    let clean = root.join("sample-v1");
    let torn = root.join("sample-v1-torn");
    let flipped = root.join("sample-v1-flipped");
    for dir in [&clean, &torn, &flipped] {
        if dir.exists() {
            return Err(format!(
                "{} exists: the committed sample is written once, by format version 1; \
                 delete it first only if you mean to replace it",
                dir.display()
            )
            .into());
        }
    }
    write_store(&clean)?;
    fs::remove_file(clean.join(LOCK_FILE_NAME))?;
    copy_dir(&clean, &torn)?;
    copy_dir(&clean, &flipped)?;
    let long_log = clean_key_dir(&torn)?;
    // A crash leaves no CLEAN marker.
    fs::remove_file(torn.join(CLEAN_FILE_NAME))?;
    tear_last_record(&last_segment(&long_log)?)?;
    let long_log = clean_key_dir(&flipped)?;
    flip_middle_record(&first_segment(&long_log)?)?;
    println!(
        "wrote {}, {} and {}",
        clean.display(),
        torn.display(),
        flipped.display()
    );
    Ok(())
}

/// Writes the sample store with seglog's own code and closes it cleanly.
fn write_store(dir: &Path) -> Result<()> {
    let config = StoreConfig {
        segment_bytes: contents::SEGMENT_BYTES,
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
        }
    }
    store.close()?;
    Ok(())
}

/// The directory of the long log's key in the store `dir`.
fn clean_key_dir(dir: &Path) -> Result<PathBuf> {
    let name = seglog::storage::keyname::escaped_name(contents::KEY_LONG_LOG).ok_or("short key")?;
    Ok(dir.join(LOGS_DIR_NAME).join(name))
}

/// The `.log` files of a key directory, by base offset.
fn segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    logs.retain(|path| path.extension().is_some_and(|ext| ext == "log"));
    logs.sort();
    Ok(logs)
}

fn first_segment(dir: &Path) -> Result<PathBuf> {
    segments(dir)?
        .into_iter()
        .next()
        .ok_or_else(|| "no segment".into())
}

fn last_segment(dir: &Path) -> Result<PathBuf> {
    segments(dir)?.pop().ok_or_else(|| "no segment".into())
}

/// Positions and sizes of the records of a log file.
fn records(bytes: &[u8]) -> Result<Vec<(usize, usize)>> {
    let mut position = FILE_HEADER_SIZE;
    let mut found = Vec::new();
    while position < bytes.len() {
        let record = format::decode_record(&bytes[position..])
            .map_err(|e| format!("position {position}: {e}"))?;
        found.push((position, record.size()));
        position += record.size();
    }
    Ok(found)
}

/// Cuts the file in the middle of its last record.
fn tear_last_record(log: &Path) -> Result<()> {
    let bytes = fs::read(log)?;
    let &(position, size) = records(&bytes)?.last().ok_or("empty segment")?;
    let len = position + size / 2;
    fs::write(log, &bytes[..len])?;
    println!(
        "{}: cut to {len} bytes, in the middle of the record at position {position} ({size} bytes)",
        log.display()
    );
    Ok(())
}

/// Flips one bit of the order number of the record in the middle of the file.
fn flip_middle_record(log: &Path) -> Result<()> {
    let mut bytes = fs::read(log)?;
    let middle = bytes.len() / 2;
    let &(position, _) = records(&bytes)?
        .iter()
        .find(|(position, size)| position + size > middle)
        .ok_or("no record in the middle")?;
    let flipped = position + format::RECORD_HEADER_SIZE + ORDER_NUMBER_POS;
    bytes[flipped] ^= FLIPPED_BIT;
    fs::write(log, &bytes)?;
    println!(
        "{}: flipped bit {FLIPPED_BIT:#04x} at position {flipped}, in the record at position {position}",
        log.display()
    );
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
