//! What the inspector tests share: running `seglog inspect`, parsing its
//! JSON, writing the sample's contents with the current engine, and reading
//! a store's files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use seglog::storage::format::{self, FILE_HEADER_SIZE};
use seglog::storage::keyname;
use seglog::{Store, StoreConfig};
use serde_json::Value;
use tempfile::TempDir;

use crate::sample;

pub const BIN: &str = env!("CARGO_BIN_EXE_seglog");

/// The name the store in a test's temporary directory is given, so that the
/// paths in the output are short and do not depend on the temporary directory.
pub const STORE: &str = "store";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What one run of `seglog inspect` did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `seglog inspect ARGS` in `cwd`.
pub fn inspect(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .current_dir(cwd)
        .arg("inspect")
        .args(args)
        .output()
        .expect("seglog runs");
    Run {
        code: output.status.code().expect("seglog exits, not killed"),
        stdout: String::from_utf8(output.stdout).expect("output is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("errors are UTF-8"),
    }
}

/// Parses every line of a `--json` run; each must be a JSON object with a type.
pub fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(value["type"].is_string(), "no type: {line}");
            value
        })
        .collect()
}

/// A problem as `--json` reports it.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: String,
    pub file: String,
    pub position: Option<u64>,
    pub message: String,
}

/// Runs `--verify --json` on the store of `dir` and returns its problems,
/// after checking that the exit status says whether there were any.
pub fn problems(dir: &Path) -> Vec<Found> {
    let run = inspect(dir, &[STORE, "--verify", "--json"]);
    let found: Vec<Found> = json_lines(&run)
        .into_iter()
        .filter(|line| line["type"] == "problem")
        .map(|line| Found {
            kind: line["kind"].as_str().expect("kind").to_string(),
            file: line["file"].as_str().expect("file").to_string(),
            position: line["position"].as_u64(),
            message: line["message"].as_str().expect("message").to_string(),
        })
        .collect();
    let expected_code = if found.is_empty() { 0 } else { 1 };
    assert_eq!(run.code, expected_code, "{}{}", run.stdout, run.stderr);
    found
}

/// Asserts that exactly one problem of `kind` was found, in `file` (relative
/// to the store) at `position`, and returns its message.
pub fn assert_one(found: &[Found], kind: &str, file: &str, position: Option<u64>) -> String {
    let matching: Vec<&Found> = found.iter().filter(|f| f.kind == kind).collect();
    assert_eq!(matching.len(), 1, "one {kind} expected in {found:#?}");
    assert_eq!(matching[0].file, format!("{STORE}/{file}"), "{found:#?}");
    assert_eq!(matching[0].position, position, "{found:#?}");
    matching[0].message.clone()
}

/// Writes the sample's contents with the current engine into `DIR/store`.
pub fn write_store(dir: &Path) -> PathBuf {
    let path = dir.join(STORE);
    let config = StoreConfig {
        segment_bytes: sample::SEGMENT_BYTES,
        ..StoreConfig::default()
    };
    let mut store = Store::open(&path, config).expect("open a new store");
    for step in sample::steps() {
        match step {
            sample::Step::Append(key, message) => {
                store.append(key, message.as_bytes()).expect("append");
            }
            sample::Step::Commit(key, offset) => store.commit(key, offset).expect("commit"),
            sample::Step::Sync => store.sync().expect("sync"),
            sample::Step::Checkpoint => store.checkpoint().expect("checkpoint"),
        }
    }
    store.close().expect("close");
    path
}

/// A temporary directory holding a freshly written store.
pub fn fresh() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().expect("temporary directory");
    let store = write_store(tmp.path());
    (tmp, store)
}

/// The directory name of `key`'s log, relative to the store.
pub fn key_dir(key: &str) -> String {
    format!("logs/{}", keyname::escaped_name(key).expect("short key"))
}

/// The path of segment `base`'s file of `key`, relative to the store.
pub fn segment_file(key: &str, base: u64, log: bool) -> String {
    let name = if log {
        format::log_file_name(base)
    } else {
        format::index_file_name(base)
    };
    format!("{}/{name}", key_dir(key))
}

/// Base offsets of `key`'s segments in `store`.
pub fn bases(store: &Path, key: &str) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(store.join(key_dir(key)))
        .expect("key directory")
        .filter_map(|entry| {
            let name = entry.expect("entry").file_name();
            format::parse_segment_file_name(name.to_str()?)
                .filter(|(_, file)| *file == format::SegmentFile::Log)
        })
        .map(|(base, _)| base)
        .collect();
    bases.sort_unstable();
    bases
}

/// One record of a log file: position, offset, size.
#[derive(Clone, Copy, Debug)]
pub struct At {
    pub position: u64,
    pub offset: u64,
    pub size: usize,
}

/// The records of a valid log file.
pub fn records(log: &Path) -> Vec<At> {
    let bytes = fs::read(log).expect("read log");
    let mut position = FILE_HEADER_SIZE;
    let mut found = Vec::new();
    while position < bytes.len() {
        let record = format::decode_record(&bytes[position..]).expect("valid record");
        found.push(At {
            position: position as u64,
            offset: record.offset,
            size: record.size(),
        });
        position += record.size();
    }
    found
}

/// Every file under `dir` with its contents, to prove nothing was changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = fs::read(&path).expect("read");
                files.insert(path, bytes);
            }
        }
    }
    files
}
