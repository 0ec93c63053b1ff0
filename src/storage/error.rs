//! The error type of the library: every operating error is a value with context.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the storage engine, with enough context
/// (file, position, what was expected) for an operator to act on it.
#[derive(Debug)]
pub enum Error {
    /// An I/O call failed; `context` says which call on which file.
    Io { context: String, source: io::Error },
    /// Bytes on disk do not decode: `what` says what was expected.
    Corrupt {
        file: PathBuf,
        position: u64,
        what: String,
    },
    /// A previous sync failed, so the page cache state is unknown; every
    /// later write is refused until the store is reopened.
    Poisoned,
    /// Another process holds the lock on the data directory.
    Locked { path: PathBuf },
    /// A key is longer than [`crate::storage::keyname::KEY_BYTES_MAX`].
    KeyTooLong { len: usize, max: usize },
    /// A message is empty or longer than [`crate::storage::format::MESSAGE_BYTES_MAX`].
    BadMessageSize { len: usize, max: usize },
    /// An append at an explicit offset that is not the log's next one.
    NotNextOffset { expected: u64, got: u64 },
    /// The store was configured with values it cannot work with.
    Config(String),
    /// The call cannot run while the store is in this state (for example a
    /// checkpoint while sync points are in flight); nothing was changed.
    Busy(String),
    /// A thread of the store's own (the group commit) panicked, which is a
    /// bug: `what` says which; the writes it held were not answered.
    Panicked { what: String },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and the path it was applied to.
    pub fn io(op: &str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            context: format!("{op} {}", path.display()),
            source,
        }
    }

    /// A decoding failure at `position` of `file`.
    pub fn corrupt(file: &Path, position: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            file: file.to_path_buf(),
            position,
            what: what.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Corrupt {
                file,
                position,
                what,
            } => write!(
                f,
                "corrupt {} at position {position}: {what}",
                file.display()
            ),
            Error::Poisoned => write!(
                f,
                "store is poisoned by an earlier failed sync; reopen it to continue"
            ),
            Error::Locked { path } => write!(
                f,
                "{} is locked by another process (is another seglog running on this directory?)",
                path.display()
            ),
            Error::KeyTooLong { len, max } => {
                write!(f, "key is {len} bytes, longer than the maximum of {max}")
            }
            Error::BadMessageSize { len, max } => {
                write!(f, "message is {len} bytes; it must be 1 to {max} bytes")
            }
            Error::NotNextOffset { expected, got } => write!(
                f,
                "append at offset {got}, but the log's next offset is {expected}"
            ),
            Error::Config(what) => write!(f, "bad configuration: {what}"),
            Error::Busy(what) => write!(f, "store busy: {what}"),
            Error::Panicked { what } => write!(f, "{what} panicked"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
