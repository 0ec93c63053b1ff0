//! The no-sync shim the node and HTTP benches compare against: a shared
//! library whose `fdatasync`, `fsync` and `syncfs` return success at once,
//! loaded into the server with `LD_PRELOAD`. Bench-only: it measures how fast
//! the server is when the disk's flushes cost nothing, so the ratio of a
//! durable run to a no-sync one says what the flushes cost.

use std::path::{Path, PathBuf};

/// Builds the shim in `dir` with the system C compiler and returns its path.
pub fn build_no_sync_shim(dir: &Path) -> Result<PathBuf, String> {
    let source = dir.join("nosync.c");
    let library = dir.join("libnosync.so");
    std::fs::write(
        &source,
        "int fdatasync(int fd) { (void)fd; return 0; }\n\
         int fsync(int fd) { (void)fd; return 0; }\n\
         int syncfs(int fd) { (void)fd; return 0; }\n",
    )
    .map_err(|e| format!("write {}: {e}", source.display()))?;
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .map_err(|e| format!("run cc: {e}"))?;
    if !status.success() {
        return Err(format!("cc exited with {status}"));
    }
    Ok(library)
}
