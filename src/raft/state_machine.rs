//! openraft's state machine for one group: the key logs themselves.
//! Applying an entry appends its sends to their keys (the offsets follow
//! from the order of the log, identically on every replica) and records its
//! commits; the applied state is a record of the group's log key appended
//! under the same hold of the store's lock, so one sync point makes the
//! operations and "applied up to here" durable together, or neither.
//! After a crash the state machine is as of its last durable applied
//! record, and openraft applies the entries after it again from the log.
//!
//! A snapshot is the group's keys' records and committed offsets up to
//! the last applied entry (`snapshot.rs`); it is built once everything
//! applied is durable, so the log entries it lets openraft purge are
//! never needed again. Installing one appends to each key the records it
//! lacks: a replica's key logs are always a prefix of a newer state's.

use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};

use super::log::{GroupLog, Record};
use super::log_store::Group;
use super::snapshot::{self, Keys, Manifest, is_reserved};
use super::types::{
    Applied, Entry, LogId, Op, OpResult, ProposalId, Sequence, StorageError, StoredMembership,
    TypeConfig,
};
use crate::lock::lock;
use crate::storage::offsets::Committed;
use crate::storage::store::Store;

/// Bytes of messages one apply writes before its `Applied` record, in one
/// span of [`Store::together`]: what the store may hold in memory past its
/// own bound, and open keys past theirs, until the next sync point. An
/// entry weighs at most a proposal's limit (128 KiB), so a span ends a
/// little past this; a follower catching up applies many spans.
pub const APPLY_SPAN_BYTES: usize = 8 << 20;

/// Snapshots built by this process: part of a snapshot's id, which must
/// tell two snapshots of the same entry apart.
static SNAPSHOTS_BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The snapshot kept in memory: its manifest, which openraft hands to the
/// network when a follower is too far behind; the records it names are
/// read from the store as they are sent (`transport::Client::full_snapshot`).
#[derive(Clone)]
struct Current {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    data: Vec<u8>,
}

/// How a group applies [`Op::Append`]: the front end's rules for the
/// records it replicates (a Kafka partition's idempotent producers, whose
/// state it keeps in the store beside the log). Called under the store's
/// lock, in log order, on every replica alike: it decides from the store
/// and the operation alone, never the clock or anything of this node.
pub trait Appender: Send + Sync {
    /// Appends `records` to `key`'s log, all or none, or refuses them by
    /// `sequence`: the operation's result ([`OpResult::Offset`] of the
    /// first record, [`OpResult::Duplicate`] or [`OpResult::Refused`]). An
    /// error stops the group, as a failed write does.
    fn append(
        &self,
        store: &mut Store,
        key: &str,
        records: &[&[u8]],
        sequence: Option<Sequence>,
        at_ms: u64,
    ) -> Result<OpResult, String>;
}

/// The state machine of one group (cheap to clone: the snapshot builder is
/// a clone).
#[derive(Clone)]
pub struct StateMachine {
    pub group: Arc<Group>,
    /// The client keys this group holds.
    pub keys: Keys,
    /// How it applies appends; without one, an append with a sequence is
    /// an error.
    appender: Option<Arc<dyn Appender>>,
    current: Arc<Mutex<Option<Current>>>,
}

fn apply_error(log_id: LogId, what: String) -> StorageError {
    StorageIOError::apply(log_id, AnyError::error(what)).into()
}

fn sm_error(what: String) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(what)).into()
}

impl StateMachine {
    pub fn new(group: Arc<Group>, keys: Keys, appender: Option<Arc<dyn Appender>>) -> StateMachine {
        StateMachine {
            group,
            keys,
            appender,
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// The snapshot of everything applied so far: its manifest, which
    /// names the records the group's keys hold now
    /// ([`crate::raft::snapshot`]); nothing is read or copied.
    async fn build(&self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let group = &self.group;
        // What the state machine holds now: its applied entry, and each
        // key's end (appends not yet durable included) and commits.
        let (last, membership, manifest) = {
            let log = lock(&group.log);
            let mut store = group.store().map_err(sm_error)?;
            let manifest =
                Manifest::plan(&mut store, &self.keys).map_err(|e| sm_error(e.to_string()))?;
            (log.applied, log.membership.clone(), manifest)
        };
        // Once durable, the records it names can be read, and the log
        // entries it covers can be purged without losing anything on a
        // crash.
        group.synced().await.map_err(sm_error)?;
        let bytes = manifest.encode();
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: format!(
                "{}-{}-{}",
                group.group,
                last.map_or(0, |l| l.index),
                SNAPSHOTS_BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        // Held only if no newer snapshot was installed while this one
        // waited for its sync point: openraft has purged its log up to the
        // installed one, and a leader sending the older one to a lagging
        // follower would send it for good.
        {
            let mut current = lock(&self.current);
            if current
                .as_ref()
                .is_none_or(|held| held.meta.last_log_id <= meta.last_log_id)
            {
                *current = Some(Current {
                    meta: meta.clone(),
                    data: bytes.clone(),
                });
            }
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(bytes)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.build().await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let log = lock(&self.group.log);
        Ok((log.applied, log.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let group = &self.group;
        let appender = self.appender.as_deref();
        let mut log = lock(&group.log);
        let mut store = group.store().map_err(sm_error)?;
        let mut replies = Vec::new();
        let mut outcomes = Vec::new();
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            // One span of entries and the `Applied` record after them become
            // durable together or not at all, so that a restart applies
            // again exactly the entries whose records it lacks.
            store
                .together(|store| -> Result<(), Box<StorageError>> {
                    let mut span_bytes = 0;
                    while span_bytes < APPLY_SPAN_BYTES
                        && let Some(entry) = entries.next()
                    {
                        let (applied, outcome, bytes) =
                            apply_one(&mut log, store, appender, entry)?;
                        span_bytes += bytes;
                        outcomes.extend(outcome);
                        replies.push(applied);
                    }
                    let record = log.applied_record();
                    let at = group
                        .append(store, &[record])
                        .map_err(|e| Box::new(sm_error(e)))?;
                    log.applied_offset = Some(at);
                    Ok(())
                })
                .map_err(|e| *e)?;
            // Between spans, the sync point the store's limits call for.
            store.settle().map_err(|e| sm_error(e.to_string()))?;
        }
        drop(store);
        drop(log);
        // A proposal's outcome is known once its apply is durable: a client
        // answered with it then reads what it wrote after a crash too (a
        // restarted node serves reads from its applied state at once).
        if !outcomes.is_empty() {
            let group = Arc::clone(&self.group);
            self.group.durability.after_sync(Box::new(move |outcome| {
                if outcome.is_ok() {
                    let mut proposals = lock(&group.proposals);
                    for (id, index, results) in outcomes {
                        proposals.applied(id, index, results);
                    }
                    drop(proposals);
                    group.outcomes_ready.notify_one();
                }
            }));
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stream = snapshot.into_inner();
        let manifest = {
            let group = &self.group;
            let mut log = lock(&group.log);
            let mut store = group.store().map_err(sm_error)?;
            // Checked whole before anything is written: a refused stream
            // leaves the store as it was, where a span stopped part way
            // would poison it (every group of the node with it).
            let checked = snapshot::Checked::check(&stream, &mut store, group.group, &self.keys)
                .map_err(sm_error)?;
            // The snapshot's records and the `Applied` record that covers
            // them become durable together (the stream is in memory
            // already, so the span holds no more than it).
            let installed = store.together(|store| -> Result<(Manifest, u64), String> {
                let manifest = checked.install(store)?;
                let record = Record::Applied {
                    last: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                };
                Ok((manifest, group.append(store, &[record])?))
            });
            let (manifest, at) = installed.map_err(sm_error)?;
            log.applied = meta.last_log_id;
            log.membership = meta.last_membership.clone();
            log.applied_offset = Some(at);
            store.settle().map_err(|e| sm_error(e.to_string()))?;
            manifest
        };
        // Held as the manifest alone: the records are in the store now.
        *lock(&self.current) = Some(Current {
            meta: meta.clone(),
            data: manifest.encode(),
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(lock(&self.current).clone().map(|current| Snapshot {
            meta: current.meta,
            snapshot: Box::new(std::io::Cursor::new(current.data)),
        }))
    }
}

/// What one entry's apply returns: openraft's reply, the proposal's
/// outcome to publish (none for entries that are not proposals), and the
/// bytes of messages it appended.
type AppliedEntry = (Applied, Option<(ProposalId, u64, Vec<OpResult>)>, usize);

/// Applies one entry: its sends appended to their keys, its commits
/// recorded, and `log`'s applied state moved to it (the caller writes the
/// `Applied` record).
fn apply_one(
    log: &mut GroupLog,
    store: &mut Store,
    appender: Option<&dyn Appender>,
    entry: Entry,
) -> Result<AppliedEntry, Box<StorageError>> {
    let mut applied = Applied::default();
    let mut outcome = None;
    let mut bytes = 0;
    match entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(proposal) => {
            for op in proposal.ops {
                let result = match op {
                    Op::Send { key, msg } => {
                        if is_reserved(&key) {
                            return Err(Box::new(apply_error(
                                entry.log_id,
                                format!("a send to the reserved key {key:?}"),
                            )));
                        }
                        bytes += key.len() + msg.len();
                        store
                            .append(&key, msg.as_bytes())
                            .map(OpResult::Offset)
                            .map_err(|e| {
                                apply_error(entry.log_id, format!("appending to {key}: {e}"))
                            })?
                    }
                    Op::Commit { key, offset } => {
                        if is_reserved(&key) {
                            return Err(Box::new(apply_error(
                                entry.log_id,
                                format!("a commit of the reserved key {key:?}"),
                            )));
                        }
                        bytes += key.len();
                        store
                            .commit(&key, offset)
                            .map(|()| OpResult::Committed)
                            .map_err(|e| {
                                apply_error(entry.log_id, format!("committing {key}: {e}"))
                            })?
                    }
                    Op::Append {
                        key,
                        records,
                        sequence,
                        at_ms,
                    } => {
                        if is_reserved(&key) {
                            return Err(Box::new(apply_error(
                                entry.log_id,
                                format!("an append to the reserved key {key:?}"),
                            )));
                        }
                        bytes += key.len() + records.iter().map(|r| r.0.len()).sum::<usize>();
                        let records: Vec<&[u8]> = records.iter().map(|r| r.0.as_slice()).collect();
                        let appended = match (appender, sequence) {
                            (Some(appender), _) => {
                                appender.append(store, &key, &records, sequence, at_ms)
                            }
                            (None, None) => store
                                .append_all(&key, &records)
                                .map(OpResult::Offset)
                                .map_err(|e| e.to_string()),
                            (None, Some(_)) => {
                                Err("a sequenced append in a group without an appender".into())
                            }
                        };
                        appended.map_err(|e| {
                            apply_error(entry.log_id, format!("appending to {key}: {e}"))
                        })?
                    }
                    Op::SetCommit { key, commit } => {
                        if is_reserved(&key) {
                            return Err(Box::new(apply_error(
                                entry.log_id,
                                format!("a commit of the reserved key {key:?}"),
                            )));
                        }
                        bytes += key.len() + commit.as_ref().map_or(0, |(_, v)| v.0.len());
                        let change = commit.map(|(offset, value)| Committed {
                            offset,
                            value: value.0,
                        });
                        store
                            .change_committed(&key, change)
                            .map(|()| OpResult::Committed)
                            .map_err(|e| {
                                apply_error(entry.log_id, format!("committing {key}: {e}"))
                            })?
                    }
                };
                applied.results.push(result);
            }
            outcome = Some((proposal.id, entry.log_id.index, applied.results.clone()));
        }
        EntryPayload::Membership(membership) => {
            log.membership = StoredMembership::new(Some(entry.log_id), membership);
        }
    }
    log.applied = Some(entry.log_id);
    Ok((applied, outcome, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::durability::{Done, Durability};
    use crate::storage::store::StoreConfig;

    /// A durability whose sync points come only when the test says.
    #[derive(Default)]
    struct Held(Mutex<Vec<Done>>);

    impl Durability for Held {
        fn after_sync(&self, done: Done) {
            lock(&self.0).push(done);
        }
    }

    impl Held {
        fn waiting(&self) -> usize {
            lock(&self.0).len()
        }
        fn release(&self) {
            for done in std::mem::take(&mut *lock(&self.0)) {
                done(Ok(()));
            }
        }
    }

    /// Found by the review of streamed snapshots: a build that planned
    /// before an install and finished after it (it waits for a sync point
    /// between) set the state machine's current snapshot back to its older
    /// one, which openraft ignores (its snapshot is the installed one, and
    /// it purged up to it): the node then handed the older manifest to a
    /// follower.
    #[tokio::test(flavor = "current_thread")]
    async fn a_build_finishing_after_an_install_keeps_the_installed_snapshot_current() {
        let held = Keys::matching(|key| key == "k");
        // The leader's records and the snapshot it sends.
        let dir = tempfile::tempdir().expect("a directory");
        let mut leader = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        leader
            .append_all("k", &[b"a", b"b", b"c"])
            .expect("appends");
        leader.sync().expect("a sync");
        let manifest = Manifest::plan(&mut leader, &held).expect("a plan");
        let mut reader = snapshot::StreamReader::new(&manifest);
        let mut bytes = Vec::new();
        while !reader.done() {
            bytes.extend(reader.next_part(&mut leader, 1 << 20).expect("a part"));
        }
        // The follower's state machine.
        let other = tempfile::tempdir().expect("a directory");
        let store = Store::open(other.path(), StoreConfig::default()).expect("a store");
        let durability = Arc::new(Held::default());
        let group = Group::open(
            0,
            Arc::new(Mutex::new(store)),
            Arc::clone(&durability) as Arc<dyn Durability>,
        )
        .expect("a group");
        let mut sm = StateMachine::new(group, held, None);
        let mut builder = sm.clone();
        let build = tokio::spawn(async move { builder.build_snapshot().await });
        while durability.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let installed = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 10)),
            last_membership: StoredMembership::default(),
            snapshot_id: "installed".into(),
        };
        sm.install_snapshot(&installed, Box::new(std::io::Cursor::new(bytes)))
            .await
            .expect("installed");
        durability.release();
        let built = build.await.expect("the build's task").expect("built");
        assert_eq!(built.meta.last_log_id, None, "the build planned before");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("the current snapshot")
            .expect("one");
        assert_eq!(
            current.meta.snapshot_id, "installed",
            "the current snapshot went back to the build's older one"
        );
    }
}
