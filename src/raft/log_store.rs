//! openraft's log storage for one group: the entries and the vote, in the
//! group's key of the store ([`super::log`]), durable through the store's
//! group commit. Appends return at once and report durability from the
//! group commit's sync point, so one fdatasync serves every group's
//! appends on the node; a vote and a truncation return only once durable,
//! as openraft's contract requires.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};

use super::durability::{Durability, synced};
use super::log::{GroupLog, Record, log_key};
use super::types::{Entry, LogId, OpResult, ProposalId, StorageError, TypeConfig, Vote};
use crate::lock::lock;
use crate::storage::store::Store;

/// What one group's log store and state machine share.
pub struct Group {
    /// The group's number.
    pub group: u32,
    /// The store key of its log.
    pub key: String,
    pub store: Arc<Mutex<Store>>,
    pub durability: Arc<dyn Durability>,
    /// The log in memory. Locked before the store, never after it.
    pub log: Mutex<GroupLog>,
    /// Woken when applied proposals' outcomes become known (their apply
    /// is durable).
    pub outcomes_ready: tokio::sync::Notify,
    /// What became of recent proposals: which were appended to this log,
    /// and which were applied with what results. How a proposer tells
    /// whether a proposal that failed may still take effect, and learns
    /// the outcome of one that does.
    pub proposals: Mutex<Proposals>,
    /// Set once the node stopped the group to reopen a poisoned store in
    /// place: openraft may still run a queued command of this instance
    /// after its shutdown (its state machine worker drains its queue), and
    /// nothing of the stopped run may reach the reopened store.
    retired: AtomicBool,
}

/// Proposals remembered, per group: enough for every proposal a node has
/// in flight (it answers its clients within seconds) at any rate seen.
pub const PROPOSALS_REMEMBERED: usize = 65_536;

/// Recent proposals of a group, by id.
#[derive(Default, Clone)]
pub struct Proposals {
    appended: std::collections::HashSet<ProposalId>,
    applied: std::collections::HashMap<ProposalId, (u64, Vec<OpResult>)>,
    /// Ids in the order they were first seen, to forget the oldest.
    order: std::collections::VecDeque<ProposalId>,
}

impl Proposals {
    fn remember(&mut self, id: ProposalId) {
        if !self.appended.contains(&id) && !self.applied.contains_key(&id) {
            self.order.push_back(id);
            if self.order.len() > PROPOSALS_REMEMBERED
                && let Some(old) = self.order.pop_front()
            {
                self.appended.remove(&old);
                self.applied.remove(&old);
            }
        }
    }

    pub fn appended(&mut self, id: ProposalId) {
        self.remember(id);
        self.appended.insert(id);
    }

    pub fn applied(&mut self, id: ProposalId, index: u64, results: Vec<OpResult>) {
        self.remember(id);
        self.applied.insert(id, (index, results));
    }

    /// Whether the proposal was ever appended to this node's log.
    pub fn was_appended(&self, id: ProposalId) -> bool {
        self.appended.contains(&id) || self.applied.contains_key(&id)
    }

    /// The entry index and results of a proposal applied on this node.
    pub fn outcome(&self, id: ProposalId) -> Option<(u64, Vec<OpResult>)> {
        self.applied.get(&id).cloned()
    }
}

impl Group {
    /// The group `group` on `store`, its log recovered from the store.
    pub fn open(
        group: u32,
        store: Arc<Mutex<Store>>,
        durability: Arc<dyn Durability>,
    ) -> crate::storage::error::Result<Arc<Group>> {
        let key = log_key(group);
        let log = GroupLog::recover(&mut lock(&store), &key)?;
        Ok(Arc::new(Group {
            group,
            key,
            store,
            durability,
            log: Mutex::new(log),
            outcomes_ready: tokio::sync::Notify::new(),
            proposals: Mutex::new(Proposals::default()),
            retired: AtomicBool::new(false),
        }))
    }

    /// The store, for this group's reads and writes; refused once the
    /// group is retired.
    pub fn store(&self) -> Result<MutexGuard<'_, Store>, String> {
        let store = lock(&self.store);
        // Checked under the store's lock, which a reopen holds: a command
        // that passes this runs before the reopen, on the poisoned store,
        // which refuses its writes.
        if self.retired.load(Ordering::SeqCst) {
            return Err(format!(
                "group {} was stopped to reopen the store in place",
                self.group
            ));
        }
        Ok(store)
    }

    /// Stops this instance's storage for good: every later read or write
    /// of it fails (see `retired`).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    /// Makes this node's standing in the group durable: appends the record
    /// and waits for a sync point to cover it (and everything before it).
    pub async fn save_standing(&self, votes: bool) -> Result<(), String> {
        {
            let mut log = lock(&self.log);
            let mut store = self.store()?;
            let at = self.append(&mut store, &[Record::Standing { votes }])?;
            log.rejoining = (!votes).then_some(at);
        }
        self.synced().await.map_err(|e| e.to_string())
    }

    /// Appends records to the group's key; returns the first one's offset.
    pub fn append(&self, store: &mut Store, records: &[Record]) -> Result<u64, String> {
        let payloads: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
        let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        store
            .append_all(&self.key, &slices)
            .map_err(|e| format!("appending to {}: {e}", self.key))
    }

    /// Waits until everything written so far is durable.
    pub async fn synced(&self) -> Result<(), String> {
        synced(&*self.durability)
            .await
            .map_err(|e| format!("a sync point of {} failed: {e}", self.key))
    }
}

/// An error of the store as openraft's storage error.
fn write_error(what: String) -> StorageError {
    StorageIOError::write_logs(AnyError::error(what)).into()
}

/// The log storage of one group (cheap to clone: its reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    pub group: Arc<Group>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i + 1,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        Ok(lock(&self.group.log).range(from, to))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = lock(&self.group.log);
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        {
            let mut log = lock(&self.group.log);
            let mut store = self
                .group
                .store()
                .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::error(e))))?;
            let offset = self
                .group
                .append(&mut store, &[Record::Vote(*vote)])
                .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::error(e))))?;
            log.vote = Some((offset, *vote));
        }
        self.group
            .synced()
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::error(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.group.log).vote.map(|(_, vote)| vote))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut log = lock(&self.group.log);
            // An entry at an index the log holds replaces it and what
            // follows (openraft truncates first; this keeps the log sorted
            // whatever the caller does, as the recovery replay does).
            if let Some(first) = entries.first() {
                log.truncate(first.log_id.index);
            }
            let records: Vec<Record> = entries.iter().cloned().map(Record::Entry).collect();
            let mut store = self.group.store().map_err(write_error)?;
            let first = self
                .group
                .append(&mut store, &records)
                .map_err(write_error)?;
            let mut proposals = lock(&self.group.proposals);
            for entry in &entries {
                if let openraft::EntryPayload::Normal(proposal) = &entry.payload {
                    proposals.appended(proposal.id);
                }
            }
            drop(proposals);
            for (i, entry) in entries.into_iter().enumerate() {
                log.entries.push_back((first + i as u64, entry));
            }
        }
        // Covers the records just appended: the sync point that takes this
        // waiter is prepared after it.
        self.group.durability.after_sync(Box::new(move |outcome| {
            callback.log_io_completed(outcome.map_err(|e| std::io::Error::other(e.to_string())));
        }));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut log = lock(&self.group.log);
            let mut store = self.group.store().map_err(write_error)?;
            self.group
                .append(
                    &mut store,
                    &[Record::Truncate {
                        since: log_id.index,
                    }],
                )
                .map_err(write_error)?;
            log.truncate(log_id.index);
        }
        // Durable before openraft appends the entries that replace them.
        self.group.synced().await.map_err(write_error)
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), StorageError> {
        let keep_from = {
            let mut log = lock(&self.group.log);
            let mut store = self.group.store().map_err(write_error)?;
            let purge = self
                .group
                .append(&mut store, &[Record::Purge { upto }])
                .map_err(write_error)?;
            log.purge(upto);
            // The first record that must survive: the first entry kept,
            // else the purge record itself.
            let keep_from = log.entries.front().map_or(purge, |(offset, _)| *offset);
            // The vote and the applied state are written again where the
            // cut would take them.
            if let Some((offset, vote)) = log.vote
                && offset < keep_from
            {
                let at = self
                    .group
                    .append(&mut store, &[Record::Vote(vote)])
                    .map_err(write_error)?;
                log.vote = Some((at, vote));
            }
            if log.rejoining.is_some_and(|offset| offset < keep_from) {
                let at = self
                    .group
                    .append(&mut store, &[Record::Standing { votes: false }])
                    .map_err(write_error)?;
                log.rejoining = Some(at);
            }
            if log.applied_offset.is_some_and(|offset| offset < keep_from) {
                let record = log.applied_record();
                let at = self
                    .group
                    .append(&mut store, &[record])
                    .map_err(write_error)?;
                log.applied_offset = Some(at);
            }
            keep_from
        };
        // The records written again are durable before the segments that
        // held the old ones go: the deletion's own journal entry is synced
        // at once, records appended before it are not.
        self.group.synced().await.map_err(write_error)?;
        self.group
            .store()
            .map_err(write_error)?
            .truncate_front(&self.group.key, keep_from)
            .map_err(|e| write_error(format!("purging {}: {e}", self.group.key)))?;
        Ok(())
    }
}
