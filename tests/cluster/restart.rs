//! A node restarted with an empty data directory (issue 20 §5, "Restart
//! empty" in docs/serve-cluster-design.md): three real processes
//! ([`Cluster`]), a topic of [`PARTITIONS`] partitions replicated on all
//! three, records produced over HTTP by several writers per partition;
//! then one node is killed with SIGKILL, its directory emptied, and the
//! node started again with the same flags. It must catch up (hold every
//! record its partitions' leaders hold) and then serve: a second node is
//! killed, so that every partition's group needs the restarted node for a
//! majority, more records are produced, and every acknowledged record is
//! read back from the restarted node and the other survivor, at its
//! offset, in each writer's order, none lost, none duplicated but those
//! whose first attempt had an unknown outcome. The test prints one line:
//! records acknowledged, read back and lost, and how long the catch-up
//! took for how many bytes.
//!
//! Sized by the test tier (`tests/support/tier.rs`): the short tier's
//! groups take a few hundred entries each, so the emptied node is caught
//! up from its leaders' logs; the long tier's take more than
//! `SNAPSHOT_EVERY_ENTRIES` (5,000), so their logs are purged below a
//! snapshot and the node is caught up by InstallSnapshot chunks. Each
//! figure has a variable of its own (`SEGLOG_RESTART_BATCHES`,
//! `_BATCHES_AFTER`, `_RECORDS`, `_PADDING`), so a manual run can make the
//! partitions as large as the machine allows and read the catch-up speed
//! off the summary line.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::partitions::settled;
use crate::cluster_process::{Cluster, NODES, NodeId, PATIENCE, each, wait_until};
use crate::support::tier::sized;

/// The topic's partitions: three, so that the preferred leaders spread
/// over the three nodes and the restarted node led one before its kill.
const PARTITIONS: u32 = 3;

/// Writers per partition, each its own sequence of requests one after
/// another: several, so that a partition's group gets many entries (one
/// per request) in little time, and its snapshot is what an empty node
/// installs once the group has taken more than `SNAPSHOT_EVERY_ENTRIES`.
const WRITERS: u64 = 4;

/// The topic.
const TOPIC: &str = "restarted";

/// How long a writer waits before it asks again after a 503 (no leader
/// yet, or an unknown outcome): an election takes about a second.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Most bytes of records one read asks for (the server's `FETCH_BYTES_MAX`).
const READ_BYTES: usize = 64 << 20;

/// Most records one read asks for (the server's `FETCH_RECORDS_MAX`).
const READ_RECORDS: usize = 100_000;

/// How long the catch-up may take per GiB of records before the test
/// calls it hung, beside [`PATIENCE`]: six times the goal of 10 s per GB,
/// for a loaded machine; the summary line gives the figure measured.
const CATCH_UP_SECS_PER_GB: u64 = 60;

/// The sizes of one run.
struct Size {
    /// Requests each writer sends before the kills.
    batches: u64,
    /// Requests each writer sends once the restarted node is needed.
    after: u64,
    /// Records one request carries.
    records: u64,
    /// Bytes of padding each record's value carries.
    padding: usize,
}

impl Size {
    fn of_tier() -> Size {
        Size {
            // Long: 4 writers of 1,300 requests, 5,200 entries a group.
            batches: sized("SEGLOG_RESTART_BATCHES", 40, 1300),
            after: sized("SEGLOG_RESTART_BATCHES_AFTER", 10, 50),
            records: sized("SEGLOG_RESTART_RECORDS", 10, 10),
            padding: usize::try_from(sized("SEGLOG_RESTART_PADDING", 100, 100))
                .expect("a padding that fits memory"),
        }
    }
}

/// One acknowledged record: its writer and number, and its offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Acked {
    writer: u64,
    number: u64,
    offset: u64,
}

/// What a writer did: its acknowledged records in the order they were
/// acknowledged, the numbers of records whose request had an unknown
/// outcome before it was acknowledged (which may then be held twice), and
/// how many refusals it retried.
#[derive(Default)]
struct Written {
    acked: Vec<Acked>,
    unknown: BTreeSet<u64>,
    refused: u64,
}

/// A record's value: who wrote it, its number, and padding.
fn value(partition: u32, writer: u64, number: u64, padding: &str) -> Value {
    json!({"p": partition, "w": writer, "n": number, "pad": padding})
}

/// Sends `batches` requests of `size.records` records each to partition
/// `partition`, writer `writer`, numbering records from `first`, each to
/// node `at`, asked again while it answers 503.
fn write(
    cluster: &Cluster,
    at: NodeId,
    partition: u32,
    writer: u64,
    first: u64,
    batches: u64,
    size: &Size,
) -> Written {
    let padding = "x".repeat(size.padding);
    let path = format!("/topics/{TOPIC}/partitions/{partition}");
    let mut written = Written::default();
    for batch in 0..batches {
        let numbers: Vec<u64> = (0..size.records)
            .map(|i| first + batch * size.records + i)
            .collect();
        let records: Vec<Value> = numbers
            .iter()
            .map(|&n| json!({"value": value(partition, writer, n, &padding)}))
            .collect();
        let body = json!({ "records": records });
        let asked = Instant::now();
        loop {
            match cluster.try_request(at, "POST", &path, Some(&body), PATIENCE) {
                Ok((200, reply)) => {
                    let offsets = reply["offsets"]
                        .as_array()
                        .unwrap_or_else(|| panic!("no offsets in {reply}"));
                    assert_eq!(offsets.len(), numbers.len(), "{reply}");
                    for (&number, o) in numbers.iter().zip(offsets) {
                        let offset = o["offset"]
                            .as_u64()
                            .unwrap_or_else(|| panic!("no offset in {reply}"));
                        written.acked.push(Acked {
                            writer,
                            number,
                            offset,
                        });
                    }
                    break;
                }
                // No leader yet, or the change may or may not be in: both
                // are retried as a client would (a retry after an unknown
                // outcome may duplicate, never lose).
                Ok((503, reply)) => {
                    if reply["message"].as_str().is_some_and(|m| m.contains("may")) {
                        written.unknown.extend(&numbers);
                    } else {
                        written.refused += 1;
                    }
                }
                Ok((status, reply)) => {
                    panic!("partition {partition}, writer {writer} at node {at}: {status} {reply}")
                }
                Err(e) => panic!("partition {partition}, writer {writer} at node {at}: {e}"),
            }
            assert!(
                asked.elapsed() < PATIENCE,
                "partition {partition}, writer {writer}: a request never acknowledged"
            );
            thread::sleep(RETRY_PAUSE);
        }
    }
    written
}

/// Every partition written by [`WRITERS`] writers at once, writer `w` at
/// `at[w % at.len()]`, from record number `first` on; by partition, then
/// writer.
fn write_all(
    cluster: &Cluster,
    at: &[NodeId],
    first: u64,
    batches: u64,
    size: &Size,
) -> BTreeMap<(u32, u64), Written> {
    thread::scope(|scope| {
        let writing: Vec<_> = (0..PARTITIONS)
            .flat_map(|p| (0..WRITERS).map(move |w| (p, w)))
            .map(|(p, w)| {
                let node = at[usize::try_from(w).expect("a small writer") % at.len()];
                let handle = scope.spawn(move || write(cluster, node, p, w, first, batches, size));
                ((p, w), handle)
            })
            .collect();
        writing
            .into_iter()
            .map(|(at, handle)| {
                let written = handle
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e));
                (at, written)
            })
            .collect()
    })
}

/// Each partition's end offset and bytes as node `id` holds them (its
/// `GET /topics/{topic}`, which reads its own store).
fn ends(cluster: &Cluster, id: NodeId) -> Result<Vec<(u64, u64)>, String> {
    let topic = cluster.get(id, &format!("/topics/{TOPIC}"))?;
    let partitions = topic["partitions"]
        .as_array()
        .ok_or_else(|| format!("no partitions in {topic}"))?;
    let ends: Vec<(u64, u64)> = partitions
        .iter()
        .map(|p| p["end_offset"].as_u64().zip(p["bytes"].as_u64()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("a partition without end_offset or bytes: {topic}"))?;
    if ends.len() == PARTITIONS as usize {
        Ok(ends)
    } else {
        Err(format!("not {PARTITIONS} partitions: {topic}"))
    }
}

/// One record as read: its writer and number.
type Read = (u64, u64);

/// Every record of `partition` node `id` holds, by offset, each value
/// checked for its partition and padding.
fn read(
    cluster: &Cluster,
    id: NodeId,
    partition: u32,
    padding: usize,
) -> Result<BTreeMap<u64, Read>, String> {
    let mut held = BTreeMap::new();
    let mut next = 0;
    loop {
        let path = format!(
            "/topics/{TOPIC}/partitions/{partition}/records?offset={next}\
             &max_records={READ_RECORDS}&max_bytes={READ_BYTES}"
        );
        let reply = cluster.get(id, &path)?;
        let records = reply
            .as_array()
            .ok_or_else(|| format!("not a list: {reply}"))?;
        if records.is_empty() {
            return Ok(held);
        }
        for r in records {
            let v = &r["value"];
            let (Some(offset), Some(p), Some(w), Some(n), Some(pad)) = (
                r["offset"].as_u64(),
                v["p"].as_u64(),
                v["w"].as_u64(),
                v["n"].as_u64(),
                v["pad"].as_str(),
            ) else {
                return Err(format!("node {id}: a record not written here: {r}"));
            };
            if p != u64::from(partition) || pad.len() != padding || offset != next {
                return Err(format!(
                    "node {id}, partition {partition}: at {next}, offset {offset} of \
                     partition {p} with {} bytes of padding",
                    pad.len()
                ));
            }
            held.insert(offset, (w, n));
            next = offset + 1;
        }
    }
}

/// What one node's read of every partition shows against what was
/// acknowledged: how many records it holds, and how many it holds twice.
/// An acknowledged record missing or elsewhere than its offset, a
/// writer's records out of its order, a record held twice whose request
/// had no unknown outcome, or one nobody wrote, is an error.
fn check(
    cluster: &Cluster,
    id: NodeId,
    written: &BTreeMap<(u32, u64), Written>,
    padding: usize,
) -> Result<(usize, usize), String> {
    let (mut count, mut twice) = (0, 0);
    for p in 0..PARTITIONS {
        let held = read(cluster, id, p, padding)?;
        count += held.len();
        let mut seen: BTreeMap<Read, u64> = BTreeMap::new();
        for (&offset, &record) in &held {
            if let Some(first) = seen.insert(record, offset) {
                let (w, n) = record;
                let unknown = written
                    .get(&(p, w))
                    .is_some_and(|written| written.unknown.contains(&n));
                if !unknown {
                    return Err(format!(
                        "node {id}, partition {p}: writer {w}'s record {n} held at {first} \
                         and {offset}, and its request had no unknown outcome"
                    ));
                }
                twice += 1;
            }
        }
        for w in 0..WRITERS {
            let acked = &written[&(p, w)].acked;
            let lost: Vec<&Acked> = acked
                .iter()
                .filter(|a| held.get(&a.offset) != Some(&(a.writer, a.number)))
                .collect();
            if !lost.is_empty() {
                return Err(format!(
                    "node {id}, partition {p}: {} of writer {w}'s {} acknowledged records \
                     are not at their offsets, first {:?}",
                    lost.len(),
                    acked.len(),
                    lost[0]
                ));
            }
            if let Some(pair) = acked.windows(2).find(|a| a[0].offset >= a[1].offset) {
                return Err(format!(
                    "node {id}, partition {p}: writer {w}'s records out of order: {pair:?}"
                ));
            }
        }
        let known: BTreeSet<Read> = (0..WRITERS)
            .flat_map(|w| written[&(p, w)].acked.iter().map(|a| (a.writer, a.number)))
            .collect();
        let stray = seen.keys().find(|r| {
            !known.contains(r)
                && !written
                    .get(&(p, r.0))
                    .is_some_and(|written| written.unknown.contains(&r.1))
        });
        if let Some(stray) = stray {
            return Err(format!(
                "node {id}, partition {p}: record {stray:?} was never acknowledged nor retried"
            ));
        }
    }
    Ok((count, twice))
}

#[test]
fn a_node_restarted_empty_catches_up_and_serves() {
    let size = Size::of_tier();
    let mut cluster = Cluster::start();
    cluster.create_topic_ok(NODES[0], TOPIC, PARTITIONS);
    let placements = settled(&cluster, &NODES, PARTITIONS as usize);
    assert!(
        placements
            .values()
            .all(|(_, replicas, _)| replicas.len() == 3),
        "every partition on every node: {placements:?}"
    );

    // Written before the restart, every writer at a node of its own.
    let mut written = write_all(&cluster, &NODES, 0, size.batches, &size);

    // The node leading partition 0 loses its directory.
    let emptied = placements[&(TOPIC.to_string(), 0)].2.expect("a leader");
    let survivors: Vec<NodeId> = NODES.iter().copied().filter(|&id| id != emptied).collect();
    let held: Vec<Vec<(u64, u64)>> = NODES
        .iter()
        .map(|&id| ends(&cluster, id).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let target: Vec<u64> = (0..PARTITIONS as usize)
        .map(|p| held.iter().map(|h| h[p].0).max().expect("three nodes"))
        .collect();
    let largest: u64 = (0..PARTITIONS as usize)
        .map(|p| held.iter().map(|h| h[p].1).max().expect("three nodes"))
        .sum();
    // Six times the goal's 10 s per GB beside the usual patience, so a
    // large manual run fails only if it hangs.
    let patience = PATIENCE + Duration::from_secs(largest.div_ceil(1 << 30) * CATCH_UP_SECS_PER_GB);
    cluster.kill9(emptied);
    cluster.wipe(emptied);
    cluster.restart(emptied);
    let restarted = Instant::now();
    let bytes: u64 = wait_until(
        "the emptied node holds every record its partitions' leaders held",
        patience,
        || {
            let held = ends(&cluster, emptied)?;
            if held.iter().zip(&target).all(|((end, _), want)| end >= want) {
                Ok(held.iter().map(|(_, bytes)| bytes).sum())
            } else {
                Err(format!(
                    "node {emptied} holds {held:?}, the leaders {target:?}"
                ))
            }
        },
    );
    let caught_up = restarted.elapsed();

    // A second node goes: every group needs the emptied one to commit.
    let second = survivors[0];
    let left = [emptied, survivors[1]];
    cluster.kill9(second);
    let after = write_all(
        &cluster,
        &left,
        size.batches * size.records,
        size.after,
        &size,
    );
    for (at, more) in after {
        let all = written.get_mut(&at).expect("the same writers");
        all.acked.extend(more.acked);
        all.unknown.extend(more.unknown);
        all.refused += more.refused;
    }

    // Both nodes left hold every acknowledged record, and the same ones.
    let mut held = Vec::new();
    for id in left {
        let (count, twice) = wait_until(
            &format!("node {id} holds every acknowledged record"),
            PATIENCE,
            || check(&cluster, id, &written, size.padding),
        );
        held.push((id, count, twice));
    }
    wait_until("both nodes left hold the same records", PATIENCE, || {
        let reads: Vec<Result<Vec<BTreeMap<u64, Read>>, String>> = left
            .iter()
            .map(|&id| {
                (0..PARTITIONS)
                    .map(|p| read(&cluster, id, p, size.padding))
                    .collect()
            })
            .collect();
        match (&reads[0], &reads[1]) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            _ => Err(each(
                &left,
                &reads
                    .iter()
                    .map(|r| {
                        r.as_ref()
                            .map(|r| r.iter().map(BTreeMap::len).collect::<Vec<_>>())
                    })
                    .map(|r| r.map_err(Clone::clone))
                    .collect::<Vec<_>>(),
            )),
        }
    });
    let acknowledged: usize = written.values().map(|w| w.acked.len()).sum();
    let unknown: usize = written.values().map(|w| w.unknown.len()).sum();
    let refused: u64 = written.values().map(|w| w.refused).sum();
    let (_, count, twice) = held[0];
    eprintln!(
        "restart/empty: node {emptied} emptied and restarted: caught up after {:.2?} with \
         {bytes} bytes of records ({:.1} s/GB); then node {second} killed; {acknowledged} \
         records acknowledged over HTTP ({} before the restart), {count} read back from \
         node {emptied} and node {} alike ({twice} held twice after {unknown} records' \
         unknown outcomes), 0 lost; {refused} refusals retried",
        caught_up,
        caught_up.as_secs_f64() / (bytes as f64 / 1e9).max(f64::MIN_POSITIVE),
        PARTITIONS as u64 * WRITERS * size.batches * size.records,
        survivors[1],
    );
}
