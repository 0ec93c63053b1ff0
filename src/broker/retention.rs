//! Retention: on a timer, each partition of a topic with a size or age
//! limit (its own, else the server's default) lets go of its oldest sealed
//! segments past the limit (the store decides which,
//! [`crate::storage::retention`]); never the active one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::Broker;
use super::catalog::Topic;
use crate::log;
use crate::storage::store::Retention;

/// The retention a topic gets: its own, else the server's default.
pub fn retention_of(topic: &Topic, default: Retention) -> Retention {
    Retention {
        bytes: topic.retention_bytes.or(default.bytes),
        age: topic
            .retention_ms
            .map(Duration::from_millis)
            .or(default.age),
    }
}

/// Applies retention to every partition of every topic that has one,
/// every `every`, until the task is aborted.
pub async fn run(broker: Arc<Broker>, every: Duration) {
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let worker = Arc::clone(&broker);
        if tokio::task::spawn_blocking(move || enforce(&worker))
            .await
            .is_err()
        {
            log::warn(format_args!("a retention pass failed"));
        }
    }
}

/// One retention pass over a snapshot of the topics. Each partition is
/// done under the catalog's read lock and the store's lock, taken for it
/// alone: the topic is checked to be still there (not deleted and created
/// again meanwhile), and requests go on between partitions.
pub fn enforce(broker: &Broker) {
    let topics: Vec<Topic> = broker.catalog().topics().cloned().collect();
    let now = SystemTime::now();
    for topic in topics {
        let retention = retention_of(&topic, broker.default_retention);
        if retention.bytes.is_none() && retention.age.is_none() {
            continue;
        }
        for partition in 0..topic.partitions {
            let catalog = broker.catalog();
            if catalog.get(&topic.name).map(|t| t.id) != Some(topic.id) {
                break;
            }
            let key = topic.key(partition);
            let mut store = broker.store();
            let before = match store.segments(&key) {
                Ok(segments) if segments.len() > 1 => segments.len(),
                Ok(_) => continue,
                Err(e) => {
                    log::warn(format_args!("retention: cannot list {key}: {e}"));
                    continue;
                }
            };
            match store
                .enforce_retention(&key, retention, now)
                .and_then(|start| Ok((start, store.segments(&key)?.len())))
            {
                Ok((start, after)) if after < before => {
                    broker
                        .metrics
                        .segments_deleted
                        .fetch_add((before - after) as u64, Ordering::Relaxed);
                    log::info(format_args!(
                        "retention: deleted {} segments of {key}; it starts at {start}",
                        before - after
                    ));
                }
                Ok(_) => {}
                Err(e) => log::warn(format_args!("retention of {key} failed: {e}")),
            }
        }
    }
    broker
        .metrics
        .retention_passes
        .fetch_add(1, Ordering::Relaxed);
}
