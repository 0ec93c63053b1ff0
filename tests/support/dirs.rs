//! Copies of directory trees: the pristine state a test damages copies of,
//! the committed samples, a crashed node's files.

use std::fs;
use std::io;
use std::path::Path;

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
