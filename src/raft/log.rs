//! One group's Raft log, vote and applied state, kept as records of one
//! key of the store (`seglog.raft.<group>`), with a copy in memory.
//!
//! The store is append-only, so every change is a record appended after
//! the others, and the latest record of a kind wins:
//! - `Entry`: a log entry. One whose index is not past the last entry
//!   replaces it and everything after it (a conflicting tail is
//!   overwritten, as Raft does).
//! - `Truncate`: entries from `since` on are gone.
//! - `Purge`: entries up to `upto` are gone (they are in the state machine,
//!   and in a snapshot): the log now starts after it.
//! - `Vote`: the node's vote.
//! - `Applied`: the state machine's last applied entry and membership,
//!   appended with the operations it applied under one hold of the store's
//!   lock, so one sync point makes both durable or neither.
//! - `Standing`: whether this node may vote in the group
//!   ([`super::standing`]).
//! - `Removed`: the group is being removed from this node: its keys are
//!   deleted once this record is durable, and this key last. A log that
//!   holds it is never started again; removing the group again finishes
//!   the deletion ([`super::groups::Groups::delete_stored`]).
//!
//! Records are JSON text. Purging also deletes the key's sealed segments
//! below the first entry kept ([`crate::storage::store::Store::truncate_front`]),
//! after appending the latest vote and applied state again if they would
//! go with them. At start, [`GroupLog::recover`] replays the key's records
//! in order.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, StoredMembership, Vote};
use crate::storage::error::{Error, Result};
use crate::storage::store::Store;

/// The prefix of the store keys the Raft groups keep their logs in; a
/// client key may not start with it.
pub const RESERVED_KEY_PREFIX: &str = "seglog.raft.";

/// The store key of group `group`'s log.
pub fn log_key(group: u32) -> String {
    format!("{RESERVED_KEY_PREFIX}{group}")
}

/// The groups with a log key in `store`: those that ran on this node and
/// were not removed whole (a removal cut short leaves its log key, marked
/// `Removed`, until it is finished).
pub fn stored_groups(store: &Store) -> Result<Vec<u32>> {
    let mut groups: Vec<u32> = store
        .keys()?
        .iter()
        .filter_map(|key| key.strip_prefix(RESERVED_KEY_PREFIX)?.parse().ok())
        .collect();
    groups.sort_unstable();
    Ok(groups)
}

/// Whether group `group`'s log key in `store` is marked `Removed`: its
/// last durable record says so, as nothing is appended to a log after its mark
/// (the group is retired before it is marked, and a marked log is never
/// started again).
pub fn marked_removed(store: &mut Store, group: u32) -> Result<bool> {
    let key = log_key(group);
    let Some(last) = store.next_offset(&key)?.checked_sub(1) else {
        return Ok(false);
    };
    let mut marked = false;
    store.read(&key, last, &mut |_, payload| {
        marked = matches!(serde_json::from_slice(payload), Ok(Record::Removed));
        false
    })?;
    Ok(marked)
}

/// One record of a group's log key.
#[derive(Serialize, Deserialize)]
pub enum Record {
    Entry(Entry),
    Truncate {
        since: u64,
    },
    Purge {
        upto: LogId,
    },
    Vote(Vote),
    Applied {
        last: Option<LogId>,
        membership: StoredMembership,
    },
    /// Whether this node votes in the group ([`super::standing`]): `false`
    /// when it starts without the group's state, `true` once it may.
    Standing {
        votes: bool,
    },
    /// The group is being removed from this node.
    Removed,
}

impl Record {
    /// The record's payload: JSON text.
    pub fn encode(&self) -> Vec<u8> {
        // Entries and ids of plain data always encode.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The log in memory: what openraft reads and the store recovers.
#[derive(Default)]
pub struct GroupLog {
    /// The entries not purged, in index order, each with the offset of its
    /// record in the key.
    pub entries: VecDeque<(u64, Entry)>,
    /// The last entry purged.
    pub last_purged: Option<LogId>,
    /// The node's vote, and its record's offset.
    pub vote: Option<(u64, Vote)>,
    /// The state machine's last applied entry and membership, and the
    /// offset of their record (none before the first apply).
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub applied_offset: Option<u64>,
    /// The offset of a `Standing { votes: false }` record not yet followed
    /// by one that says it votes: this node was rejoining.
    pub rejoining: Option<u64>,
    /// A `Removed` record was written: the group's storage is being
    /// deleted here.
    pub removed: bool,
}

impl GroupLog {
    /// Replays the durable records of `key` into a log.
    pub fn recover(store: &mut Store, key: &str) -> Result<GroupLog> {
        let mut log = GroupLog::default();
        let start = store.log_start(key)?;
        let mut failure = None;
        store.read(key, start, &mut |offset, payload| {
            let record = match serde_json::from_slice::<Record>(payload) {
                Ok(record) => record,
                Err(e) => {
                    failure = Some(Error::Config(format!(
                        "record {offset} of {key} is not a Raft log record: {e}"
                    )));
                    return false;
                }
            };
            if let Err(why) = log.replay(offset, record) {
                failure = Some(Error::Config(format!("record {offset} of {key}: {why}")));
                return false;
            }
            true
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(log),
        }
    }

    /// Applies one record, as it was when written.
    fn replay(&mut self, offset: u64, record: Record) -> std::result::Result<(), String> {
        // (No record is refused yet: kept fallible for the checks a later
        // version's records will need.)
        match record {
            Record::Entry(entry) => {
                let index = entry.log_id.index;
                if self.last_purged.is_some_and(|p| index <= p.index) {
                    // Below the purge point: a record the purge's segment
                    // deletion kept.
                    return Ok(());
                }
                // An entry at an index held replaces it and what follows.
                self.truncate(index);
                self.entries.push_back((offset, entry));
            }
            Record::Truncate { since } => self.truncate(since),
            Record::Purge { upto } => self.purge(upto),
            Record::Vote(vote) => self.vote = Some((offset, vote)),
            Record::Applied { last, membership } => {
                self.applied = last;
                self.membership = membership;
                self.applied_offset = Some(offset);
            }
            Record::Standing { votes } => self.rejoining = (!votes).then_some(offset),
            Record::Removed => self.removed = true,
        }
        Ok(())
    }

    /// The `Applied` record of the state machine's applied entry and
    /// membership as they are now.
    pub fn applied_record(&self) -> Record {
        Record::Applied {
            last: self.applied,
            membership: self.membership.clone(),
        }
    }

    /// Drops the entries from index `since` on.
    pub fn truncate(&mut self, since: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(_, e)| e.log_id.index >= since)
        {
            self.entries.pop_back();
        }
    }

    /// Drops the entries up to `upto`, which becomes the last purged.
    pub fn purge(&mut self, upto: LogId) {
        while self
            .entries
            .front()
            .is_some_and(|(_, e)| e.log_id.index <= upto.index)
        {
            self.entries.pop_front();
        }
        if self.last_purged.is_none_or(|p| p.index < upto.index) {
            self.last_purged = Some(upto);
        }
    }

    /// The last entry's id, else the last purged one.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .back()
            .map(|(_, e)| e.log_id)
            .or(self.last_purged)
    }

    /// The entries whose index is in `[from, to)`.
    pub fn range(&self, from: u64, to: u64) -> Vec<Entry> {
        // Entries are sorted by index.
        let skip = self.entries.partition_point(|(_, e)| e.log_id.index < from);
        self.entries
            .iter()
            .skip(skip)
            .take_while(|(_, e)| e.log_id.index < to)
            .map(|(_, e)| e.clone())
            .collect()
    }
}
