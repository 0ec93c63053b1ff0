//! The recovery decision table: every state a crash (or damage) can leave
//! on disk and the action recovery takes for it, as text that
//! `tests/storage/spec.rs` checks against `segment-format.md`, and as
//! [`Row`], the names the decide steps (`journaled_decide.rs`,
//! `journal_recovery/decide.rs`) give each command they prescribe, so a test can
//! say which row a decision followed.

use std::path::PathBuf;

use crate::storage::error::Error;

/// One row of the recovery decision table: a state found on disk and the
/// action taken. `segment-format.md` lists the same rows (a test checks).
pub struct Rule {
    pub state: &'static str,
    pub action: &'static str,
}

/// The decision table, in the order recovery checks the states.
pub const DECISION_TABLE: &[Rule] = &[
    Rule {
        state: "no .log file in the key directory",
        action: "empty log; the first append creates segment 0",
    },
    Rule {
        state: "last .log shorter than its header, or its header all zero with no valid record after it",
        action: "torn creation: delete it and its .index; the previous segment is active again",
    },
    Rule {
        state: "last .log header with bad magic, CRC, version, flags or base offset, or zeroed before valid records",
        action: "refuse the key with a Corrupt error naming file and position",
    },
    Rule {
        state: "records valid up to the end of the file",
        action: "nothing to cut",
    },
    Rule {
        state: "only zero bytes after the last valid record of the last .log",
        action: "zero-filled tail: cut the file after the last valid record (zeros in a segment with a later one after it are damage followed by valid records: a hole)",
    },
    Rule {
        state: "an invalid record after which no valid record follows",
        action: "torn tail: cut the file at the invalid record",
    },
    Rule {
        state: "an invalid record followed later by a valid record",
        action: "a hole, not a torn tail: refuse the key with a Corrupt error",
    },
    Rule {
        state: ".index missing, unreadable, out of order, past the log or disagreeing with it",
        action: "rebuild the index from the log",
    },
    Rule {
        state: ".timeindex missing, unreadable, not one entry per closed chunk, an entry with a bad CRC or naming another chunk, or disagreeing with the chunk a search scans",
        action: "rebuild it and the .index from the log when a search by time first needs them (a directory from before the time index has none)",
    },
    Rule {
        state: "a segment recovery cut or rewrote",
        action: "delete its .timeindex, whose entries may describe records that are gone; an active segment's is rewritten from recovery's scan of the whole segment",
    },
    Rule {
        state: "an invalid record in a sealed segment, found when read",
        action: "serve the records before it; a read that reaches it stops there with a Corrupt error",
    },
    Rule {
        state: "checkpoint.tmp present",
        action: "a checkpoint interrupted before its rename: delete it; the previous checkpoint stands",
    },
    Rule {
        state: "checkpoint missing, journal directory present, no journal file holding a batch",
        action: "store creation or version 1 conversion interrupted (the checkpoint is written last): remove journal/ and create or convert the store again",
    },
    Rule {
        state: "checkpoint damaged, or missing while a journal file holds a batch",
        action: "replay every journal file present (files a checkpoint covered replay idempotently)",
    },
    Rule {
        state: "journal files numbered below the one the checkpoint names",
        action: "covered by it (a checkpoint interrupted after its rename): delete them",
    },
    Rule {
        state: "the journal file the checkpoint names is missing, or one between it and the last, or one a next-file marker names",
        action: "a live journal file was deleted: refuse to open with a Corrupt error naming it",
    },
    Rule {
        state: "last journal file holding no batch (header only, cut short, zero-filled) after a file that lacks its next-file marker",
        action: "a rotation interrupted before its marker: delete that file; the journal continues in the one before",
    },
    Rule {
        state: "journal: only zero bytes after the last whole batch",
        action: "zero-filled tail: cut the file after the last whole batch (truncate, fsync)",
    },
    Rule {
        state: "journal: an invalid batch after which no valid batch follows, in the last file",
        action: "torn tail: cut the file at the invalid batch (truncate, fsync); its records and commits were never acknowledged",
    },
    Rule {
        state: "journal: whole batches flagged continued at the end of the last file, the batch that would end their sync point missing or invalid, no valid batch after it",
        action: "torn sync point: cut the file at the sync point's first batch (truncate, fsync), so that none of it is kept and no later batch follows it; none of its records and commits were acknowledged",
    },
    Rule {
        state: "journal: an invalid batch followed by a valid one, an invalid batch or a sync point left unfinished in a file before the last, or batch numbers not consecutive",
        action: "a hole, not a torn tail: refuse to open with a Corrupt error naming file and position",
    },
    Rule {
        state: "after an unclean stop, the live journal files",
        action: "fdatasync each before anything is served (a killed process may have left batches written but not synced)",
    },
    Rule {
        state: "a key the live journal does not mention",
        action: "its segments were synced by the last checkpoint: recover it as after a clean close",
    },
    Rule {
        state: "journaled records the key's segments hold, with the same CRCs (segment ahead or equal)",
        action: "nothing to write; replay is idempotent",
    },
    Rule {
        state: "journaled records past the segments' valid records (segment behind: writes lost, torn, zeroed or a hole after the key's first journaled offset)",
        action: "cut the segments after their last valid record, delete later segment files, and write the journal's records",
    },
    Rule {
        state: "a journaled record whose CRC differs from the segment's record at its offset",
        action: "cut the segment there and write the journal's records (the journal was durable first)",
    },
    Rule {
        state: "journaled records for a key with no directory, or no segment holding them",
        action: "create the directory and segments and write the journal's records",
    },
    Rule {
        state: "the key's segments end before its first journaled offset, or journaled records that do not follow on from them",
        action: "records a checkpoint synced are missing: refuse the key with a Corrupt error",
    },
    Rule {
        state: "segment records past everything the journal holds for a key it mentions (a direct sync point's)",
        action: "keep them under the segment tail rules above and fdatasync their files and directories before serving them",
    },
    Rule {
        state: "any key the live journal mentions, once recovered",
        action: "the next checkpoint syncs its segment files from the first journaled offset on, its directory and logs/, and a direct sync point for it before then syncs those files too (the crashed run may have left them unsynced)",
    },
    Rule {
        state: "commits in the live journal",
        action: "a key's commit is its last change: offsets.journal's last entry, then the journal's commit and uncommitted entries in order",
    },
    Rule {
        state: "a log-start entry in the live journal, segments of the key below it still present (retention interrupted, or a deletion a power loss undid)",
        action: "delete them, oldest first, and fsync the key directory before anything else; journal records below the log start are neither replayed nor checked",
    },
    Rule {
        state: "a removed entry in the live journal with no records of the key after it",
        action: "the key's directory (or what a crash left of it) is the removed log's: rename it to rm.<name>, delete it, fsync logs/; the key has no log",
    },
    Rule {
        state: "a removed entry followed by records of the key",
        action: "entries before the removal are void; the directory at the key's name is the new log's (the removal was durable before it was created): recover it against the later entries",
    },
    Rule {
        state: "rm.<name> directories in logs/ while the live journal holds a removed entry",
        action: "a removal interrupted while deleting: delete them",
    },
    Rule {
        state: "the first segment of a key starts past offset 0, nothing in the live journal about it",
        action: "retention deleted the segments before it and a checkpoint made that durable: the log starts there",
    },
    Rule {
        state: "a key the journal holds records for is never opened before the next checkpoint",
        action: "the checkpoint recovers it first; if it cannot, checkpoints stop and the journal keeps its records",
    },
    Rule {
        state: "a store reopened in place after a failed sync (the same process and page cache: pages a failed fdatasync marked clean, on no disk, read as written)",
        action: "recover as after an unclean stop, by the rows above: those pages are written over themselves and synced before they are served (live journal files, offsets.journal) or before the journal holding them is deleted (segments of keys it mentions); nothing is cut to a length the failed run remembered",
    },
    Rule {
        state: "such pages evicted by the kernel before the reopen read them",
        action: "recovery reads what the disk holds, as after a power loss: a torn tail is cut (nothing in it was acknowledged), a hole refused (the reopen fails and is tried again after a backoff)",
    },
];

/// A row of [`DECISION_TABLE`] by name, in the table's order:
/// `DECISION_TABLE[row as usize]` is its text ([`Row::rule`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    NoLogFile,
    TornCreation,
    BadHeader,
    ValidToEnd,
    ZeroTail,
    TornTail,
    Hole,
    BadIndex,
    BadTimeIndex,
    RecoveredTimeIndex,
    SealedInvalid,
    CheckpointTmp,
    CreationInterrupted,
    CheckpointDamaged,
    CoveredJournalFiles,
    JournalFileMissing,
    RotationInterrupted,
    JournalZeroTail,
    JournalTornTail,
    JournalTornSyncPoint,
    JournalHole,
    UncleanJournal,
    KeyNotMentioned,
    SegmentAhead,
    SegmentBehind,
    CrcDiffers,
    NoSegment,
    SyncedRecordsMissing,
    DirectRecords,
    MentionedKeySync,
    JournalCommits,
    LogStart,
    Removed,
    RemovedThenRecords,
    RemovalDirs,
    FirstSegmentPastZero,
    NeverOpened,
    HealedInPlace,
    EvictedBeforeHeal,
}

impl Row {
    /// Every row, in the table's order.
    pub const ALL: [Row; 39] = [
        Row::NoLogFile,
        Row::TornCreation,
        Row::BadHeader,
        Row::ValidToEnd,
        Row::ZeroTail,
        Row::TornTail,
        Row::Hole,
        Row::BadIndex,
        Row::BadTimeIndex,
        Row::RecoveredTimeIndex,
        Row::SealedInvalid,
        Row::CheckpointTmp,
        Row::CreationInterrupted,
        Row::CheckpointDamaged,
        Row::CoveredJournalFiles,
        Row::JournalFileMissing,
        Row::RotationInterrupted,
        Row::JournalZeroTail,
        Row::JournalTornTail,
        Row::JournalTornSyncPoint,
        Row::JournalHole,
        Row::UncleanJournal,
        Row::KeyNotMentioned,
        Row::SegmentAhead,
        Row::SegmentBehind,
        Row::CrcDiffers,
        Row::NoSegment,
        Row::SyncedRecordsMissing,
        Row::DirectRecords,
        Row::MentionedKeySync,
        Row::JournalCommits,
        Row::LogStart,
        Row::Removed,
        Row::RemovedThenRecords,
        Row::RemovalDirs,
        Row::FirstSegmentPastZero,
        Row::NeverOpened,
        Row::HealedInPlace,
        Row::EvictedBeforeHeal,
    ];

    /// The row's state and action as the table (and the spec) word them.
    pub fn rule(self) -> &'static Rule {
        &DECISION_TABLE[self as usize]
    }
}

/// One command a decide step prescribes, with the row that prescribes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step<C> {
    /// The row, or `None` for a refusal of damage the table has no row for
    /// (a journal file's header or next-file marker that no crash leaves).
    pub row: Option<Row>,
    pub command: C,
}

impl<C> Step<C> {
    /// A step the row `row` prescribes.
    pub fn new(row: Row, command: C) -> Step<C> {
        Step {
            row: Some(row),
            command,
        }
    }
}

/// Why a decide step refuses a key or the journal: the Corrupt error it
/// becomes, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The file the error names.
    pub file: PathBuf,
    /// The position in it where the damage is.
    pub position: u64,
    /// What is wrong there.
    pub why: String,
}

impl Refusal {
    /// The error the refusal is.
    pub fn into_error(self) -> Error {
        Error::corrupt(&self.file, self.position, self.why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_its_own_line_of_the_table() {
        assert_eq!(Row::ALL.len(), DECISION_TABLE.len());
        for (index, row) in Row::ALL.iter().enumerate() {
            assert_eq!(*row as usize, index, "{row:?} is out of the table's order");
        }
        // A word of each row's state, so that a row added to the table
        // without its name here (or the other way round) shows.
        let words = [
            (Row::NoLogFile, "no .log file"),
            (Row::TornCreation, "shorter than its header"),
            (Row::BadHeader, "bad magic"),
            (Row::ValidToEnd, "valid up to the end"),
            (Row::ZeroTail, "only zero bytes after the last valid record"),
            (Row::TornTail, "no valid record follows"),
            (Row::Hole, "followed later by a valid record"),
            (Row::BadIndex, ".index missing"),
            (Row::BadTimeIndex, ".timeindex missing"),
            (Row::RecoveredTimeIndex, "recovery cut or rewrote"),
            (Row::SealedInvalid, "sealed segment, found when read"),
            (Row::CheckpointTmp, "checkpoint.tmp"),
            (Row::CreationInterrupted, "no journal file holding a batch"),
            (Row::CheckpointDamaged, "checkpoint damaged"),
            (Row::CoveredJournalFiles, "numbered below"),
            (Row::JournalFileMissing, "is missing"),
            (Row::RotationInterrupted, "lacks its next-file marker"),
            (Row::JournalZeroTail, "journal: only zero bytes"),
            (
                Row::JournalTornTail,
                "no valid batch follows, in the last file",
            ),
            (Row::JournalTornSyncPoint, "flagged continued"),
            (Row::JournalHole, "batch numbers not consecutive"),
            (Row::UncleanJournal, "after an unclean stop"),
            (Row::KeyNotMentioned, "does not mention"),
            (Row::SegmentAhead, "segment ahead or equal"),
            (Row::SegmentBehind, "segment behind"),
            (Row::CrcDiffers, "CRC differs"),
            (Row::NoSegment, "no directory"),
            (
                Row::SyncedRecordsMissing,
                "end before its first journaled offset",
            ),
            (Row::DirectRecords, "a direct sync point's"),
            (Row::MentionedKeySync, "once recovered"),
            (Row::JournalCommits, "commits in the live journal"),
            (Row::LogStart, "a log-start entry"),
            (Row::Removed, "no records of the key after it"),
            (Row::RemovedThenRecords, "followed by records of the key"),
            (Row::RemovalDirs, "rm.<name> directories"),
            (Row::FirstSegmentPastZero, "starts past offset 0"),
            (Row::NeverOpened, "never opened"),
            (Row::HealedInPlace, "reopened in place"),
            (Row::EvictedBeforeHeal, "evicted by the kernel"),
        ];
        assert_eq!(words.len(), Row::ALL.len());
        for (row, word) in words {
            assert!(
                row.rule().state.contains(word),
                "{row:?} is the row {:?}",
                row.rule().state
            );
        }
    }
}
