//! Logging to stderr: quiet by default (warnings only), more with `-v` or
//! the `SEGLOG_LOG` environment variable. stdout is kept for the protocol.
//!
//! A line that cannot be written (stderr a pipe whose reader went away, a
//! full disk under a redirect) is dropped: `eprintln!` would panic there,
//! in whichever task logged, and a server must not stop, or fail to shut
//! down, because nobody reads its log.

use std::fmt::Arguments;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

/// 0: warnings, 1: also lifecycle and syncs, 2: also every request.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Sets the level from the `-v` count, raised by `SEGLOG_LOG` (a number).
pub fn init(verbose: u8) {
    let from_env = std::env::var("SEGLOG_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or(0);
    LEVEL.store(verbose.max(from_env), Ordering::Relaxed);
}

fn enabled(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

/// Writes one line to stderr, dropping it if it cannot be written.
fn line(prefix: &str, args: Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "seglog: {prefix}{args}");
}

/// Our own bug, or a part of the node that stopped: always shown.
pub fn error(args: Arguments<'_>) {
    line("error: ", args);
}

/// What the server says whatever the level: where it listens, that it
/// shuts down.
pub fn notice(args: Arguments<'_>) {
    line("", args);
}

/// Something an operator should see.
pub fn warn(args: Arguments<'_>) {
    line("warning: ", args);
}

/// Lifecycle events: store opened, syncs, shutdown.
pub fn info(args: Arguments<'_>) {
    if enabled(1) {
        line("", args);
    }
}

/// Every request and error reply.
pub fn debug(args: Arguments<'_>) {
    if enabled(2) {
        line("", args);
    }
}
