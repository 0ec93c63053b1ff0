//! The broker's error: what went wrong with a request, in terms both front
//! ends understand. `http/` maps it to a status and a stable error code,
//! `kafka/` to a Kafka error code, each in one place; neither needs to
//! know the other's codes, and the broker knows neither.

use std::fmt;
use std::sync::Arc;

use crate::storage::error::Error as StorageError;

/// Whether a write that failed may have taken effect anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Nothing was changed: the request was refused before it was applied.
    No,
    /// Some or all of it may have been applied, and may be durable or
    /// become so (a sync point failed after the appends, or the catalog's
    /// file may hold the change): a client that retries may duplicate it.
    Maybe,
}

/// Everything a request to the broker can fail with.
#[derive(Debug)]
pub enum Error {
    /// No topic of that name.
    TopicNotFound { topic: String },
    /// The topic exists, without that partition.
    PartitionNotFound {
        topic: String,
        partition: u64,
        partitions: u32,
    },
    /// A topic of that name exists already.
    TopicExists { topic: String },
    /// A value out of its range (a topic name, a partition count, a group
    /// name); the message says which and why.
    Invalid(String),
    /// A record over the record size limit; the message says which.
    TooLarge(String),
    /// Too many writes wait for a sync point: try again shortly.
    Overloaded,
    /// The disk is short of free space: writes are refused until space is
    /// back (`storage/space.rs`); the message says how much is free.
    NoSpace(String),
    /// The server is shutting down.
    ShuttingDown,
    /// The cluster cannot decide now (its metadata group has no leader,
    /// or the leader did not answer in time); `written` says whether the
    /// change may still take effect. A client may retry.
    Unavailable { why: String, written: Written },
    /// Something this server does not do (yet); the message says what.
    Unsupported(String),
    /// A write for a partition's leader reached a node that does not lead
    /// it (a node of a cluster); nothing was written. The message names
    /// the leader where this node knows it.
    NotLeader(String),
    /// The store or the catalog failed: `context` says at what, `source`
    /// why, `written` whether the write may have happened. A store poisoned
    /// by an earlier failed sync refuses writes this way too (`source` is
    /// [`StorageError::Poisoned`], `written` is [`Written::No`]).
    Storage {
        context: String,
        source: Arc<StorageError>,
        written: Written,
    },
    /// A bug or an unexpected failure of the server itself.
    Internal(String),
}

/// Shorthand for the broker's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A store error on a write the store refused before changing anything.
    pub fn refused(source: StorageError) -> Error {
        Error::Storage {
            context: String::new(),
            source: Arc::new(source),
            written: Written::No,
        }
    }

    /// A sync point that failed after the writes it covered were applied.
    pub fn sync_failed(source: Arc<StorageError>) -> Error {
        Error::Storage {
            context: "the sync point failed, so the write may or may not be durable \
                      (the store takes no writes until seglog has reopened it, which it does by itself)"
                .into(),
            source,
            written: Written::Maybe,
        }
    }

    /// Whether this is a store that an earlier failed sync stopped from
    /// taking writes, refused before anything was applied.
    pub fn is_poisoned(&self) -> bool {
        matches!(
            self,
            Error::Storage { source, written: Written::No, .. }
                if matches!(**source, StorageError::Poisoned)
        )
    }

    /// Whether this is a storage failure because the disk (or the user's
    /// quota) is full.
    pub fn is_disk_full(&self) -> bool {
        if matches!(self, Error::NoSpace(_)) {
            return true;
        }
        let Error::Storage { source, .. } = self else {
            return false;
        };
        let StorageError::Io { source, .. } = &**source else {
            return false;
        };
        source.kind() == std::io::ErrorKind::StorageFull
            || source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
    }

    /// Whether the failed request may have changed anything.
    pub fn written(&self) -> Written {
        match self {
            Error::Storage { written, .. } | Error::Unavailable { written, .. } => *written,
            _ => Written::No,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TopicNotFound { topic } => write!(f, "topic '{topic}' not found"),
            Error::PartitionNotFound {
                topic,
                partition,
                partitions,
            } => write!(
                f,
                "topic '{topic}' has partitions 0 to {}, not {partition}",
                partitions.saturating_sub(1)
            ),
            Error::TopicExists { topic } => write!(f, "topic '{topic}' already exists"),
            Error::Invalid(message)
            | Error::TooLarge(message)
            | Error::NoSpace(message)
            | Error::Unsupported(message)
            | Error::NotLeader(message)
            | Error::Internal(message) => f.write_str(message),
            Error::Unavailable { why, .. } => f.write_str(why),
            Error::Overloaded => {
                f.write_str("too many writes wait for the disk; try again shortly")
            }
            Error::ShuttingDown => f.write_str("the server is shutting down"),
            Error::Storage {
                context, source, ..
            } if context.is_empty() => write!(f, "{source}"),
            Error::Storage {
                context, source, ..
            } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_write_on_a_poisoned_store_is_told_apart_from_a_failed_sync() {
        assert!(Error::refused(StorageError::Poisoned).is_poisoned());
        let failed = Error::sync_failed(Arc::new(StorageError::Poisoned));
        assert!(!failed.is_poisoned());
        assert_eq!(failed.written(), Written::Maybe);
    }

    #[test]
    fn a_full_disk_is_recognised_by_its_errno() {
        let full = Error::refused(StorageError::Io {
            context: "write x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        assert!(full.is_disk_full());
        assert!(!Error::Overloaded.is_disk_full());
    }
}
