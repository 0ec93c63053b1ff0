//! The offline segment inspector (`seglog inspect`). Being written; see issue 5.

use std::io::{self, Write};
use std::path::PathBuf;

/// Options of `seglog inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A data directory, a node's directory, a key's log directory, or one `.log` / `.index` file.
    pub path: PathBuf,
}

/// Runs the inspector; returns whether everything checked was valid.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> io::Result<bool> {
    writeln!(out, "inspect {} is not written yet", args.path.display())?;
    Ok(false)
}
