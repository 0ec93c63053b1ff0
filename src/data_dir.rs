//! Where a process keeps its data, by one rule with two defaults.
//!
//! `--data-dir DIR` names the directory that holds the process's stores;
//! it is created (durably) if missing. Without it, each command has the
//! default its users need, and the choice is always printed on stderr:
//! - the Maelstrom node uses a fresh directory under the system temp dir,
//!   unique to the process: Maelstrom starts every node of every run in
//!   the same working directory with the same arguments, so any fixed
//!   default would mix runs (and a new run's checker would see an old
//!   run's messages);
//! - `seglog serve` uses a per-user directory that outlives the process
//!   (`$XDG_DATA_HOME/seglog`, else `~/.local/share/seglog`, else
//!   `./seglog-data`): a server restarted without arguments finds its data.
//!
//! Inside it, the node keeps its store in `<node id>/` (several nodes may
//! share one `--data-dir`); `seglog serve` keeps its store and topic
//! catalog at the top.

use std::path::{Path, PathBuf};

use crate::storage::backend::RealFs;
use crate::storage::error::Result;
use crate::storage::fsutil::create_dir_all_durably;

/// Which default a command takes when no `--data-dir` is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// A new directory under the system temp dir, unique to this process.
    FreshTemp,
    /// The per-user data directory, the same at every start.
    PerUser,
}

/// The data directory: `given`, else `default`; created if missing.
pub fn resolve(given: Option<&Path>, default: Default) -> Result<PathBuf> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => {
            let dir = match default {
                Default::FreshTemp => fresh_temp(),
                Default::PerUser => per_user(),
            };
            // Always printed: the user needs to know where the data went.
            eprintln!(
                "seglog: no --data-dir given; keeping data in {}",
                dir.display()
            );
            dir
        }
    };
    create_dir_all_durably(&RealFs, &dir)?;
    Ok(dir)
}

/// A path under the system temp dir that no other process uses: the
/// process id and the time in nanoseconds.
fn fresh_temp() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("seglog-{}-{nanos}", std::process::id()))
}

/// `$XDG_DATA_HOME/seglog`, else `~/.local/share/seglog`, else
/// `./seglog-data`.
fn per_user() -> PathBuf {
    match (std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME")) {
        (Some(data), _) if !data.is_empty() => PathBuf::from(data).join("seglog"),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".local/share/seglog"),
        _ => PathBuf::from("seglog-data"),
    }
}
