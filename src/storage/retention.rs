//! Retention: which of a key's oldest segments a size or age limit lets go.
//! The deciding is here, without I/O; `store/removal.rs` makes the new log start
//! durable and deletes the files (`segment-format.md`, "Retention and
//! removal").
//!
//! Segment records carry no timestamp. A segment's age is its `.log` file's
//! modification time, which is the time of its last append (or of recovery
//! rewriting or cutting it, which makes it look younger, never older): a
//! sealed segment is never written again, so that is when its newest record
//! arrived, as close as the file system keeps it. The time is read from the
//! file, never from a clock kept in memory, so a restart does not make old
//! segments look new or new ones old (lavinmq #1760, KAFKA-10207).

use std::time::{Duration, SystemTime};

/// Information about one segment of a key, oldest first, the active one last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its first offset (the number in its file names).
    pub base: u64,
    /// The offset after its last record: the next segment's base for a
    /// sealed segment; the log's durable end for the active one.
    pub end: u64,
    /// Size of its `.log` file (header included; the `.index` is not counted).
    pub bytes: u64,
    /// Modification time of its `.log` file: the time of its last append.
    pub modified: SystemTime,
    /// Whether it is sealed (never written again); only the last one is not.
    pub sealed: bool,
}

/// Retention limits; `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// Keep deleting the oldest sealed segment while the log without it
    /// still holds at least this many bytes (Kafka's `retention.bytes`).
    pub bytes: Option<u64>,
    /// Delete the oldest sealed segment while its last append is older
    /// than this (Kafka's `retention.ms`).
    pub age: Option<Duration>,
}

/// The offset before which `retention` lets every segment go at time
/// `now`: the base of the first segment it keeps. Segments go oldest first,
/// while either rule holds for the oldest one left (Kafka applies the two
/// rules one after the other; applying them together gives what repeating
/// that until nothing changes gives), and the active segment never goes.
/// `None` when nothing goes.
pub fn retention_before(
    segments: &[SegmentInfo],
    retention: Retention,
    now: SystemTime,
) -> Option<u64> {
    let oldest_kept = retention.age.and_then(|age| now.checked_sub(age));
    let mut total: u64 = segments.iter().map(|segment| segment.bytes).sum();
    let mut before = None;
    for segment in segments.iter().filter(|segment| segment.sealed) {
        let by_size = retention
            .bytes
            .is_some_and(|limit| total - segment.bytes >= limit);
        let by_age = oldest_kept.is_some_and(|oldest| segment.modified < oldest);
        if !(by_size || by_age) {
            break;
        }
        total -= segment.bytes;
        before = Some(segment.end);
    }
    before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(base: u64, end: u64, bytes: u64, age_secs: u64, sealed: bool) -> SegmentInfo {
        SegmentInfo {
            base,
            end,
            bytes,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 - age_secs),
            sealed,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000)
    }

    fn log() -> Vec<SegmentInfo> {
        vec![
            segment(0, 10, 100, 500, true),
            segment(10, 20, 100, 400, true),
            segment(20, 30, 100, 300, true),
            segment(30, 35, 50, 0, false),
        ]
    }

    #[test]
    fn size_rule_keeps_at_least_the_limit() {
        let by = |bytes| {
            let retention = Retention {
                bytes: Some(bytes),
                age: None,
            };
            retention_before(&log(), retention, now())
        };
        // 350 bytes in all.
        assert_eq!(by(350), None, "dropping any segment goes below the limit");
        assert_eq!(by(250), Some(10), "350 - 100 = 250 >= 250");
        assert_eq!(by(251), None);
        assert_eq!(by(150), Some(20));
        assert_eq!(by(0), Some(30), "never the active segment");
    }

    #[test]
    fn age_rule_goes_by_modification_time() {
        let by = |secs| {
            let retention = Retention {
                bytes: None,
                age: Some(Duration::from_secs(secs)),
            };
            retention_before(&log(), retention, now())
        };
        assert_eq!(by(500), None, "exactly the age is not older");
        assert_eq!(by(499), Some(10));
        assert_eq!(by(350), Some(20));
        assert_eq!(by(0), Some(30), "never the active segment");
        assert_eq!(
            by(u64::MAX / 4),
            None,
            "before the epoch: nothing is that old"
        );
    }

    #[test]
    fn either_rule_lets_a_segment_go_oldest_first() {
        let mut segments = log();
        // The oldest is young but the size rule takes it; the next is old.
        segments[0].modified = now();
        let retention = Retention {
            bytes: Some(250),
            age: Some(Duration::from_secs(350)),
        };
        assert_eq!(retention_before(&segments, retention, now()), Some(20));
        assert_eq!(
            retention_before(&segments, Retention::default(), now()),
            None
        );
    }
}
