//! Copies of directory trees (the pristine state a test damages copies of,
//! the committed samples, a stopped node's files) and scratch directories.

use std::fs;
use std::io;
use std::path::Path;

use tempfile::TempDir;

/// Where scratch directories go when the machine has it: memory.
const MEMORY_DIR: &str = "/dev/shm";

/// Copies the tree of plain files and directories `from` into `to`,
/// creating `to`.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// [`copy_tree`], failing the test if it fails.
pub fn copy_dir(from: &Path, to: &Path) {
    copy_tree(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

/// A temporary directory in memory (`/dev/shm`) where the machine has one,
/// else in the usual temporary directory: for the many short-lived stores a
/// test builds, opens and throws away, whose own durability is not under
/// test. On a disk their syncs wait for every other writer of the machine.
pub fn scratch_dir() -> TempDir {
    let memory = Path::new(MEMORY_DIR);
    if memory.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(memory)
    {
        return dir;
    }
    TempDir::new().expect("create a temporary directory")
}
