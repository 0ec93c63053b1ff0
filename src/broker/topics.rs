//! Creating and deleting topics, a partition's state, the search of a
//! partition by timestamp, and tidying the store at start. A topic's
//! deletion changes the catalog first, durably, then removes its
//! partitions' logs; a crash in between leaves logs of a dead topic id,
//! which [`remove_dead_keys`] removes at the next start.

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use super::catalog::{Catalog, KeyOwner, NewTopic, Topic};
use super::error::{Error, Result};
use super::payload::timestamp_of;
use super::time::now_ms;
use crate::log;
use crate::storage::store::Store;

/// Sync points a partition's removal waits for when records appended
/// before its topic was deleted are not yet durable: each makes what was
/// appended before it durable, so the second already must.
const REMOVAL_ATTEMPTS: usize = 5;

/// Longest wait for one sync point during a removal.
const REMOVAL_WAIT: Duration = Duration::from_secs(1);

/// Records a search by timestamp reads under one hold of the store's lock,
/// so a scan of a long partition lets writes in between: each costs a
/// CRC check and a look at its first bytes, about a microsecond, so a
/// hold of small records lasts a few milliseconds at most.
pub const TIMESTAMP_SCAN_RECORDS: usize = 4096;

/// Bytes of records a search by timestamp reads under one hold of the
/// store's lock, whatever their count: the CRC check reads every byte,
/// and a megabyte takes about as long as a fetch's chunk (the same
/// bound, `http::fetch::FETCH_CHUNK_BYTES`), so large records do not make
/// a hold longer than small ones. A hold reads at least one record.
pub const TIMESTAMP_SCAN_BYTES: usize = 1 << 20;

/// Creates a topic, durably: in the catalog's file (on a worker thread),
/// or through the cluster's metadata on a node of a cluster.
pub async fn create(broker: &Arc<Broker>, new: NewTopic) -> Result<Topic> {
    if let Some(cluster) = broker.cluster() {
        return cluster.create_topic(new).await;
    }
    if let Some(factor) = new.replication_factor.filter(|&f| f != 1) {
        return Err(Error::Invalid(format!(
            "replication factor {factor}: seglog serve without --peers is one node, so 1"
        )));
    }
    let worker = Arc::clone(broker);
    tokio::task::spawn_blocking(move || create_here(&worker, new))
        .await
        .map_err(|e| Error::Internal(format!("a worker thread failed: {e}")))?
}

/// Creates a topic in this node's own catalog, durably: blocks on the
/// catalog's file (call it off the event loop). A node of a cluster has
/// no catalog of its own, and refuses ([`create`] is for both).
pub fn create_here(broker: &Broker, new: NewTopic) -> Result<Topic> {
    broker.catalog_mut().create(new, now_ms())
}

/// Deletes a topic: from the catalog, durably, then its partitions' logs.
/// A log that cannot be removed now is removed at the next start. On a
/// node of a cluster, through the cluster's metadata.
pub async fn delete(broker: &Arc<Broker>, name: String) -> Result<Topic> {
    if let Some(cluster) = broker.cluster() {
        return cluster.delete_topic(name).await;
    }
    let worker = Arc::clone(broker);
    let topic = tokio::task::spawn_blocking(move || worker.catalog_mut().delete(&name))
        .await
        .map_err(|e| Error::Internal(format!("a worker thread failed: {e}")))??;
    // The catalog no longer has the topic, durably, and no request is
    // appending to it (appends hold the catalog's read lock): its
    // partitions' logs are garbage now.
    for partition in 0..topic.partitions {
        remove_partition(broker, topic.key(partition)).await;
    }
    Ok(topic)
}

/// Removes a deleted topic's partition log, waiting for a sync point while
/// records appended to it are still in flight (the store refuses to remove
/// a log with records not yet durable).
async fn remove_partition(broker: &Arc<Broker>, key: String) {
    for _ in 0..REMOVAL_ATTEMPTS {
        let mut sync_points = broker.sync_points();
        let (worker, attempt) = (Arc::clone(broker), key.clone());
        let removed =
            tokio::task::spawn_blocking(move || worker.store().remove_key(&attempt)).await;
        match removed {
            Ok(Ok(())) => return,
            Ok(Err(crate::storage::error::Error::Busy(_))) => {
                let _ = tokio::time::timeout(REMOVAL_WAIT, sync_points.changed()).await;
            }
            Ok(Err(e)) => {
                log::warn(format_args!(
                    "cannot remove {key} of a deleted topic (the next start removes it): {e}"
                ));
                return;
            }
            Err(e) => {
                log::warn(format_args!(
                    "cannot remove {key}: a worker thread failed: {e}"
                ));
                return;
            }
        }
    }
    log::warn(format_args!(
        "{key} of a deleted topic still has records in flight; the next start removes it"
    ));
}

/// Where a partition's log stands.
#[derive(Clone, Copy, Debug)]
pub struct PartitionState {
    /// The first offset still held (after retention).
    pub log_start: u64,
    /// The offset after the last durable record.
    pub end: u64,
    /// Bytes of its durable records, framing included, file headers not
    /// ([`crate::Store::record_bytes`]): the same before and after a
    /// checkpoint writes them out of the journal.
    pub bytes: u64,
}

/// What [`deleted_before_key`] puts before a partition key.
pub const LOG_START_PREFIX: &str = "log-start ";

/// The store key of the log start that Kafka's DeleteRecords set for the
/// partition key `key`, kept as that key's committed offset.
pub fn deleted_before_key(key: &str) -> String {
    format!("{LOG_START_PREFIX}{key}")
}

/// A partition's log start: where its segments start (retention and
/// DeleteRecords delete whole segments), or the later offset DeleteRecords
/// asked for (Kafka's log start may fall inside a segment), once durable.
/// Every read of either front end starts at or after it.
pub fn log_start(store: &mut Store, key: &str) -> crate::Result<u64> {
    let segments = store.log_start(key)?;
    let deleted = store.committed(&deleted_before_key(key)).unwrap_or(0);
    Ok(segments.max(deleted))
}

/// What DeleteRecords does to a partition's log start.
#[derive(Debug, PartialEq, Eq)]
pub enum LogStartChange {
    /// Record this commit: `before` is past the latest log start.
    Set(crate::storage::offsets::Committed),
    /// The latest log start, durable or not (an earlier request's in a sync
    /// point in flight, or the same request's naming the partition twice),
    /// is at or past `before`: it stays.
    Kept { start: u64, durable: bool },
}

/// Whether DeleteRecords up to `before` moves `key`'s log start, compared
/// against the latest one, not only the durable one: a log start never
/// goes back.
pub fn new_log_start(store: &mut Store, key: &str, before: u64) -> crate::Result<LogStartChange> {
    let segments = store.log_start(key)?;
    let deleted_key = deleted_before_key(key);
    let durable = store.committed(&deleted_key).unwrap_or(0);
    let latest = store.committed_latest(&deleted_key).map_or(0, |c| c.offset);
    let start = segments.max(latest);
    if before <= start {
        return Ok(LogStartChange::Kept {
            start,
            durable: segments.max(durable) >= start,
        });
    }
    Ok(LogStartChange::Set(crate::storage::offsets::Committed {
        offset: before,
        value: Vec::new(),
    }))
}

impl Broker {
    /// Kafka's DeleteRecords: the records of `key` below `before` are
    /// gone; `before` past the durable end is refused. Durable when the
    /// returned waiter resolves (its log start, a commit, with the next
    /// sync point); the sealed segments wholly below it are deleted now.
    /// Returns the new log start.
    pub fn delete_records(&self, key: &str, before: u64) -> Result<(u64, Option<super::Durable>)> {
        let mut writer = self.writer()?;
        let store = writer.store();
        let end = store.durable_next_offset(key).map_err(Error::refused)?;
        if before > end {
            return Err(Error::Invalid(format!(
                "offset {before} is past the partition's end, {end}"
            )));
        }
        match new_log_start(store, key, before).map_err(Error::refused)? {
            LogStartChange::Set(change) => {
                store.truncate_front(key, before).map_err(Error::refused)?;
                writer.change(&deleted_before_key(key), Some(change))?;
                Ok((before, writer.finish()))
            }
            LogStartChange::Kept { start, durable } => {
                if !durable {
                    // An earlier request's log start, not durable yet: the
                    // reply waits for the sync point that covers it.
                    writer.wait_for_earlier_writes();
                }
                Ok((start, writer.finish()))
            }
        }
    }

    /// The log start and the durable end of the log behind `key`, without
    /// its size (which costs a `stat` of each segment).
    pub fn partition_offsets(&self, key: &str) -> Result<(u64, u64)> {
        let mut store = self.store();
        let log_start = log_start(&mut store, key).map_err(Error::refused)?;
        let end = store.durable_next_offset(key).map_err(Error::refused)?;
        Ok((log_start, end))
    }

    /// The state of the log behind `key`.
    pub fn partition_state(&self, key: &str) -> Result<PartitionState> {
        let (log_start, end) = self.partition_offsets(key)?;
        let bytes = self.store().record_bytes(key).map_err(Error::refused)?;
        Ok(PartitionState {
            log_start,
            end,
            bytes,
        })
    }
}

/// Bytes of records one search by timestamp reads at most before it
/// stops and says where it got to: as many as the largest fetch returns
/// (`http::fetch::FETCH_BYTES_MAX`), so that a request by time costs no
/// more than a request by offset can (a CRC check of every byte, some tens
/// of milliseconds), however long the partition. A caller goes on from
/// where it stopped with a request of its own. Only a search the time
/// index cannot answer scans (see [`Broker::first_at_or_after`]).
pub const TIMESTAMP_SEARCH_BYTES_MAX: usize = 64 << 20;

/// How a search by timestamp ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSearch {
    /// The first record at or after the time, and its timestamp.
    Found { offset: u64, timestamp: i64 },
    /// No record at or after the time, up to the partition's end.
    None,
    /// The search read its bound of bytes without finding one, up to
    /// (not including) `next`: search again from there.
    Stopped { next: u64 },
}

impl Broker {
    /// The first record of the log behind `key`, from offset `from` (the
    /// log start if that is later), whose timestamp is at or after `t`
    /// (milliseconds since the Unix epoch). Both front ends' searches by
    /// time (Kafka's ListOffsets, the HTTP fetch's `timestamp`) use it,
    /// with [`TIMESTAMP_SEARCH_BYTES_MAX`] as `bytes_max`.
    ///
    /// The store's time index finds the first such record of the whole log
    /// (`Store::find_time`: a binary search and a scan of about 4 KiB of
    /// records). When that record is at or after `from`, it is the answer;
    /// when no record matches, there is none. Only when it is before
    /// `from` (a search that goes on from an offset, or a log start that
    /// DeleteRecords set inside a segment) does the search scan from
    /// `from`: timestamps are the clients' and need not grow with offsets,
    /// and the index knows the first match, not the first past an offset.
    /// With timestamps in order the scan stops at its first record.
    ///
    /// The scan reads at most [`TIMESTAMP_SCAN_RECORDS`] or
    /// [`TIMESTAMP_SCAN_BYTES`] under one hold of the store's lock,
    /// reading only each record's timestamp ([`timestamp_of`]). Past
    /// `bytes_max` bytes read it stops ([`TimeSearch::Stopped`]); it always
    /// reads one hold's worth. A record without a timestamp (a Kafka record
    /// sent without one) never matches.
    pub fn first_at_or_after(
        &self,
        key: &str,
        t: i64,
        from: u64,
        bytes_max: usize,
    ) -> crate::Result<TimeSearch> {
        // One hold of the lock for both, so that a log start moved by
        // DeleteRecords or retention in between cannot let an offset it
        // just deleted through.
        let (start, indexed) = {
            let mut store = self.store();
            (log_start(&mut store, key)?, store.find_time(key, t)?)
        };
        let mut from = from.max(start);
        match indexed {
            None => return Ok(TimeSearch::None),
            Some((offset, timestamp)) if offset >= from => {
                return Ok(TimeSearch::Found { offset, timestamp });
            }
            Some(_) => {}
        }
        let mut scanned = 0;
        loop {
            let (mut records, mut bytes) = (0, 0);
            let mut found = TimeSearch::None;
            let mut chunk_full = false;
            let mut next = from;
            self.store().read(key, from, &mut |at, payload| {
                if let Some(timestamp) = timestamp_of(payload)
                    && timestamp >= t
                {
                    found = TimeSearch::Found {
                        offset: at,
                        timestamp,
                    };
                    return false;
                }
                next = at + 1;
                records += 1;
                bytes += payload.len();
                chunk_full = records >= TIMESTAMP_SCAN_RECORDS || bytes >= TIMESTAMP_SCAN_BYTES;
                !chunk_full
            })?;
            if found != TimeSearch::None || !chunk_full {
                return Ok(found);
            }
            scanned += bytes;
            if scanned >= bytes_max {
                return Ok(TimeSearch::Stopped { next });
            }
            from = next;
        }
    }
}

/// How a search for the largest timestamp ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxTimestamp {
    /// The first record with the largest timestamp, and that timestamp.
    Found { offset: u64, timestamp: i64 },
    /// No record with a timestamp.
    None,
    /// The partition holds more than the search may read.
    TooLong,
}

impl Broker {
    /// The first record of the log behind `key` with the largest timestamp
    /// (Kafka's ListOffsets with MAX_TIMESTAMP): a scan of the whole log,
    /// in holds of the store's lock as [`Broker::first_at_or_after`]'s,
    /// given up past `bytes_max` bytes (there is no time index yet).
    pub fn max_timestamp(&self, key: &str, bytes_max: usize) -> crate::Result<MaxTimestamp> {
        let mut from = log_start(&mut self.store(), key)?;
        let mut best: Option<(u64, i64)> = None;
        let mut scanned = 0;
        loop {
            let (mut records, mut bytes) = (0, 0);
            let mut next = from;
            self.store().read(key, from, &mut |at, payload| {
                if let Some(timestamp) = timestamp_of(payload)
                    && best.is_none_or(|(_, t)| timestamp > t)
                {
                    best = Some((at, timestamp));
                }
                next = at + 1;
                records += 1;
                bytes += payload.len();
                records < TIMESTAMP_SCAN_RECORDS && bytes < TIMESTAMP_SCAN_BYTES
            })?;
            let chunk_full = records >= TIMESTAMP_SCAN_RECORDS || bytes >= TIMESTAMP_SCAN_BYTES;
            if !chunk_full {
                return Ok(match best {
                    Some((offset, timestamp)) => MaxTimestamp::Found { offset, timestamp },
                    None => MaxTimestamp::None,
                });
            }
            scanned += bytes;
            if scanned >= bytes_max {
                return Ok(MaxTimestamp::TooLong);
            }
            from = next;
        }
    }
}

/// Removes the partition logs of topics no longer in the catalog: a crash
/// during a deletion can leave them, since the catalog changes first.
pub fn remove_dead_keys(store: &mut Store, catalog: &Catalog) {
    let keys = match store.keys() {
        Ok(keys) => keys,
        Err(e) => {
            log::warn(format_args!("cannot list the store's keys to tidy it: {e}"));
            return;
        }
    };
    for key in keys {
        match catalog.owner_of(&key) {
            KeyOwner::Live => {}
            KeyOwner::Dead => match store.remove_key(&key) {
                Ok(()) => log::info(format_args!("removed {key}: its topic was deleted")),
                Err(e) => log::warn(format_args!("cannot remove {key} of a deleted topic: {e}")),
            },
            KeyOwner::Foreign => log::warn(format_args!(
                "key {key:?} is not a partition of any topic; left alone"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::catalog::Catalog;
    use crate::broker::payload::{KafkaRecord, encode_kafka};
    use crate::storage::store::StoreConfig;

    /// DeleteRecords' log start never goes back: a lower offset asked for
    /// while a higher one is pending (the same request naming the
    /// partition twice) or in a sync point in flight (the group commit
    /// fdatasyncs without the lock) keeps the higher one, and says the
    /// reply must wait until it is durable.
    #[test]
    fn a_log_start_not_yet_durable_is_never_moved_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("store");
        let key = "t.1-0";
        for _ in 0..20 {
            store.append(key, b"{}").expect("append");
        }
        store.sync().expect("sync");
        let deleted = deleted_before_key(key);
        let LogStartChange::Set(change) = new_log_start(&mut store, key, 10).expect("start") else {
            panic!("10 is past the log start");
        };
        store
            .change_committed(&deleted, Some(change))
            .expect("change");
        let kept = LogStartChange::Kept {
            start: 10,
            durable: false,
        };
        assert_eq!(new_log_start(&mut store, key, 5).expect("pending"), kept);
        let plan = store.prepare_sync().expect("prepare");
        assert_eq!(new_log_start(&mut store, key, 5).expect("in flight"), kept);
        let executed = plan.execute();
        store.complete_sync(plan, executed).expect("complete");
        assert_eq!(
            new_log_start(&mut store, key, 5).expect("durable"),
            LogStartChange::Kept {
                start: 10,
                durable: true
            }
        );
        assert_eq!(log_start(&mut store, key).expect("log start"), 10);
    }

    /// A search by time that the time index cannot answer (its first
    /// match, record 0, is before the offset the search starts from) scans,
    /// reads at most its bound of bytes, then says where it stopped, and a
    /// search from there goes on to the record; without the bound it would
    /// read the whole partition in one request.
    #[test]
    fn a_search_by_time_stops_at_its_bound_and_goes_on_from_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store"), StoreConfig::default()).expect("store");
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let broker = crate::broker::test_broker(store, catalog);
        // Records of 64 KiB, each older than the one searched for but the
        // first and the last: a hold of the lock reads 16 of them
        // (TIMESTAMP_SCAN_BYTES).
        const RECORDS: u64 = 100;
        let value = vec![b'v'; 64 << 10];
        {
            let mut store = broker.store();
            for i in 0..RECORDS {
                let mut payload = Vec::new();
                let timestamp = if i == 0 || i == RECORDS - 1 {
                    5_000
                } else {
                    1_000
                };
                encode_kafka(
                    &mut payload,
                    &KafkaRecord {
                        timestamp,
                        key: None,
                        value: Some(&value),
                        headers: Vec::new(),
                    },
                );
                store.append("t.1-0", &payload).expect("append");
            }
            // A search reads durable records only.
            store.sync().expect("sync");
        }
        let bound = 4 * TIMESTAMP_SCAN_BYTES;
        let mut from = 1;
        let mut searches = 0;
        let found = loop {
            searches += 1;
            match broker
                .first_at_or_after("t.1-0", 2_000, from, bound)
                .expect("search")
            {
                TimeSearch::Stopped { next } => {
                    assert!(next > from, "a search makes progress");
                    let read = (next - from) as usize * value.len();
                    assert!(
                        read >= bound && read <= bound + TIMESTAMP_SCAN_BYTES,
                        "{read}"
                    );
                    from = next;
                }
                other => break other,
            }
        };
        assert_eq!(
            found,
            TimeSearch::Found {
                offset: RECORDS - 1,
                timestamp: 5_000
            }
        );
        assert!(searches > 1, "the bound was never reached");
        // Unbounded, one search finds it; from the start, the index finds
        // record 0 at once (a bound of nothing); past every record, none.
        assert_eq!(
            broker
                .first_at_or_after("t.1-0", 2_000, 1, usize::MAX)
                .expect("search"),
            found
        );
        assert_eq!(
            broker
                .first_at_or_after("t.1-0", 2_000, 0, 0)
                .expect("search"),
            TimeSearch::Found {
                offset: 0,
                timestamp: 5_000
            }
        );
        assert_eq!(
            broker
                .first_at_or_after("t.1-0", 9_000, 0, usize::MAX)
                .expect("search"),
            TimeSearch::None
        );
        // From an offset past the match, the match is not seen.
        assert_eq!(
            broker
                .first_at_or_after("t.1-0", 1_000, 50, bound)
                .expect("search"),
            TimeSearch::Found {
                offset: 50,
                timestamp: 1_000
            }
        );
    }
}
