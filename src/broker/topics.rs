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
use super::payload::as_kafka;
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
/// so a scan of a long partition lets writes in between.
pub const TIMESTAMP_SCAN_RECORDS: usize = 4096;

/// Creates a topic, durably (blocks on the catalog's file: call it off
/// the event loop).
pub fn create(broker: &Broker, new: NewTopic) -> Result<Topic> {
    broker.catalog_mut().create(new, now_ms())
}

/// Deletes a topic: from the catalog, durably, then its partitions' logs.
/// A log that cannot be removed now is removed at the next start.
pub async fn delete(broker: &Arc<Broker>, name: String) -> Result<Topic> {
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
    /// Bytes of its segment files.
    pub bytes: u64,
}

impl Broker {
    /// The state of the log behind `key`.
    pub fn partition_state(&self, key: &str) -> Result<PartitionState> {
        let mut store = self.store();
        let log_start = store.log_start(key).map_err(Error::refused)?;
        let end = store.durable_next_offset(key).map_err(Error::refused)?;
        let bytes = store
            .segments(key)
            .map_err(Error::refused)?
            .iter()
            .map(|s| s.bytes)
            .sum();
        Ok(PartitionState {
            log_start,
            end,
            bytes,
        })
    }
}

impl Broker {
    /// The first record of the log behind `key` whose timestamp is at or
    /// after `t` (milliseconds since the Unix epoch), with its timestamp;
    /// `None` when there is none yet. Both front ends' searches by time
    /// (Kafka's ListOffsets, the HTTP fetch's `timestamp`) use it.
    ///
    /// It scans from the log start, [`TIMESTAMP_SCAN_RECORDS`] at a time:
    /// timestamps are the clients' and need not grow with offsets, and
    /// there is no time index yet (issue 21 adds one), so a search costs a
    /// read of the partition up to the record found.
    pub fn first_at_or_after(&self, key: &str, t: i64) -> crate::Result<Option<(u64, i64)>> {
        let mut from = self.store().log_start(key)?;
        loop {
            let mut seen = 0;
            let mut found = None;
            let mut next = from;
            self.store().read(key, from, &mut |at, payload| {
                let ts = as_kafka(payload).map_or(-1, |r| r.timestamp);
                if ts >= t {
                    found = Some((at, ts));
                    return false;
                }
                seen += 1;
                next = at + 1;
                seen < TIMESTAMP_SCAN_RECORDS
            })?;
            if found.is_some() || seen < TIMESTAMP_SCAN_RECORDS {
                return Ok(found);
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
