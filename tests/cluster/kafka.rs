//! Kafka produce on a three-node cluster through real clients (issue 20
//! §6): confluent-kafka (librdkafka) producing with `acks=all` and
//! idempotence while the leader of a partition is killed with SIGKILL,
//! then every partition read back from offset 0; a produce at a node that
//! does not lead the partition refused with NOT_LEADER_OR_FOLLOWER while a
//! client bootstrapped there still finds the leader; and a leader cut off
//! from its replicas acknowledging nothing.
//!
//! Offsets are not committed on cluster nodes yet (stage 5): the reader
//! assigns its partitions at offset 0 and commits nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::partitions::{Placements, settled};
use crate::cluster_process::{Cluster, NODES, NodeId, PATIENCE, wait_until};
use crate::support::kafka_wire::{produce_v3, raw_batch, raw_record};
use crate::support::tools;

/// Kafka's NOT_LEADER_OR_FOLLOWER.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// How long a client process may run before the test calls it hung: the
/// producer's records each have two minutes (`message.timeout.ms`), the
/// reader a minute; no test passes by waiting this long.
const CLIENT_HANG: Duration = Duration::from_secs(300);

/// Records the failover test produces, and how many it hands librdkafka
/// before it waits for their delivery (its flush steps).
const RECORDS: u64 = 3000;
const STEP: u64 = 250;

/// The producer of the failover test. Each record's value is its sequence
/// number, its key spreads records over the partitions. When a third of
/// the records are acknowledged it prints `third` and waits for a line on
/// stdin (the test kills a leader meanwhile) from inside the delivery
/// callback, so the rest of that step is in flight across the kill. Its
/// last line is a JSON object: each acknowledged record's [partition,
/// offset, value], the failed ones, the errors librdkafka reported, and
/// the longest gap between consecutive acknowledgements (the test's own
/// pause excluded).
const PRODUCE_SCRIPT: &str = r#"
import json, sys, time
from confluent_kafka import Producer
bootstrap, topic, total, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
acked, failed, errors = [], [], []
state = {"last": time.monotonic(), "stall": 0.0, "stall_after": None, "paused": False}
def delivered(err, msg):
    now = time.monotonic()
    if err is not None:
        failed.append([int(msg.value()), str(err)])
        return
    acked.append([msg.partition(), msg.offset(), int(msg.value())])
    gap = now - state["last"]
    if gap > state["stall"]:
        state["stall"], state["stall_after"] = gap, len(acked) - 1
    state["last"] = now
    if not state["paused"] and len(acked) >= total // 3:
        state["paused"] = True
        print("third", flush=True)
        sys.stdin.readline()
        state["last"] = time.monotonic()
producer = Producer({
    "bootstrap.servers": bootstrap,
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "message.timeout.ms": 120000,
    "error_cb": lambda e: errors.append(str(e)),
})
for i in range(total):
    producer.produce(topic, key=b"key-%d" % i, value=b"%d" % i, on_delivery=delivered)
    producer.poll(0)
    if (i + 1) % step == 0:
        producer.flush(180)
left = producer.flush(180)
print(json.dumps({"acked": acked, "failed": failed, "errors": errors, "left": left,
                  "stall": state["stall"], "stall_after": state["stall_after"]}), flush=True)
"#;

/// Reads every partition of a topic from offset 0 up to its high
/// watermark (as the partition's leader gives it at the start), assigned
/// rather than subscribed, committing nothing; prints one JSON object:
/// each record's [partition, offset, value], and the errors it saw.
const READ_SCRIPT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, KafkaException, TopicPartition
bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "kafka-failover-reader",
    "enable.auto.commit": False,
    "auto.offset.reset": "error",
})
def high_watermark(p):
    # Retried as a client does, after a Metadata refresh: leadership may
    # still move after a heal or a restart (an election answers
    # LEADER_NOT_AVAILABLE with no leader, as Kafka's does, or
    # NOT_LEADER_OR_FOLLOWER, OFFSET_NOT_AVAILABLE). This call takes a
    # partition without a leader in librdkafka's metadata cache as final
    # (_UNKNOWN_PARTITION) and never asks again, so each retry asks for
    # the topic's metadata first.
    deadline = time.monotonic() + 30
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            consumer.list_topics(topic, timeout=10)
high = {p: high_watermark(p) for p in range(partitions)}
consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
position = {p: 0 for p in range(partitions)}
read, errors = [], []
deadline = time.monotonic() + 60
while any(position[p] < high[p] for p in high) and time.monotonic() < deadline:
    m = consumer.poll(1)
    if m is None:
        continue
    if m.error():
        errors.append(str(m.error()))
        continue
    read.append([m.partition(), m.offset(), int(m.value())])
    position[m.partition()] = m.offset() + 1
consumer.close()
print(json.dumps({"high": high, "read": read, "errors": errors}), flush=True)
"#;

/// A client process whose stdout lines arrive on a channel, so the test
/// waits for each with a bound instead of blocking on a hung client; its
/// stderr (librdkafka's logs) is kept for a failure to show.
struct Client {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: thread::JoinHandle<String>,
}

impl Client {
    /// Runs `python3 -c script args...`.
    fn python(script: &str, args: &[&str]) -> Client {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running python3");
        let stdin = child.stdin.take().expect("a piped stdin");
        let mut stderr = child.stderr.take().expect("a piped stderr");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let stdout = child.stdout.take().expect("a piped stdout");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The next line the client prints; the test fails if it ends or
    /// hangs first.
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(CLIENT_HANG) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let status = self.child.wait();
                let stderr = std::mem::replace(&mut self.stderr, thread::spawn(String::new));
                let stderr = stderr.join().unwrap_or_default();
                panic!("the client printed no further line ({e}); {status:?}; stderr:\n{stderr}")
            }
        }
    }

    /// Its last line, as JSON, once it has exited successfully.
    fn result(mut self) -> Value {
        let line = self.line();
        let status = self.child.wait().expect("waiting for the client");
        let stderr = self.stderr.join().unwrap_or_default();
        assert!(
            status.success(),
            "the client failed: {status}; it printed {line}; stderr:\n{stderr}"
        );
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}; stderr:\n{stderr}"))
    }
}

/// All three nodes' Kafka addresses, as a bootstrap list.
fn bootstrap(cluster: &Cluster) -> String {
    NODES
        .map(|id| cluster.kafka(id))
        .into_iter()
        .collect::<Vec<_>>()
        .join(",")
}

/// A record as the clients report it: (partition, offset, value).
type Record = (u64, u64, u64);

/// The `[partition, offset, value]` triples of `field` in a client's
/// result.
fn records(result: &Value, field: &str) -> Vec<Record> {
    let list = result[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {result}"));
    list.iter()
        .map(|r| {
            let n = |i: usize| r[i].as_u64().unwrap_or_else(|| panic!("not a record: {r}"));
            (n(0), n(1), n(2))
        })
        .collect()
}

/// Every partition of `topic` read back from offset 0 through all three
/// nodes, after checking nothing went wrong reading.
fn read_back(cluster: &Cluster, topic: &str, partitions: u64) -> Vec<Record> {
    let reader = Client::python(
        READ_SCRIPT,
        &[&bootstrap(cluster), topic, &partitions.to_string()],
    );
    let result = reader.result();
    let read = records(&result, "read");
    let high = &result["high"];
    for p in 0..partitions {
        let held = read.iter().filter(|r| r.0 == p).count() as u64;
        assert_eq!(
            Some(held),
            high[p.to_string()].as_u64(),
            "partition {p}: read {held} records, up to a high watermark of {high}; errors {}",
            result["errors"]
        );
    }
    read
}

/// The node leading `partition` of `topic` in `placements`.
fn leader_of(placements: &Placements, topic: &str, partition: u64) -> NodeId {
    placements[&(topic.to_string(), partition)]
        .2
        .expect("settled partitions are led")
}

/// The topic of the failover tests, and its partition count.
const FAILOVER_TOPIC: &str = "failover";
const FAILOVER_PARTITIONS: u64 = 3;

/// What the failover producer saw.
struct Failover {
    /// The node killed: the leader of partition 0 when a third of the
    /// records were acknowledged.
    victim: NodeId,
    /// Each acknowledged record.
    acked: Vec<Record>,
    /// The producer's result line (failures, errors, longest gap).
    result: Value,
    /// How long the producer ran on after the kill.
    after_kill: Duration,
}

/// Starts [`PRODUCE_SCRIPT`] against all three nodes; when it has a third
/// of its records acknowledged, kills the node leading partition 0 with
/// SIGKILL; returns once the producer is done.
fn produce_across_a_kill(cluster: &mut Cluster) -> Failover {
    cluster.create_topic_ok(NODES[0], FAILOVER_TOPIC, FAILOVER_PARTITIONS as u32);
    settled(cluster, &NODES, FAILOVER_PARTITIONS as usize);
    let mut producer = Client::python(
        PRODUCE_SCRIPT,
        &[
            &bootstrap(cluster),
            FAILOVER_TOPIC,
            &RECORDS.to_string(),
            &STEP.to_string(),
        ],
    );
    let said = producer.line();
    assert_eq!(said, "third", "the producer's first line");
    // The leader now, as every node knows it.
    let placements = settled(cluster, &NODES, FAILOVER_PARTITIONS as usize);
    let victim = leader_of(&placements, FAILOVER_TOPIC, 0);
    cluster.kill9(victim);
    let killed = Instant::now();
    writeln!(producer.stdin, "killed").expect("telling the producer");
    let result = producer.result();
    Failover {
        victim,
        acked: records(&result, "acked"),
        result,
        after_kill: killed.elapsed(),
    }
}

/// Checks what was read back against what `failover` acknowledged, after
/// printing one line of figures (prefixed by `label`): every acknowledged
/// record read at its offset, none read twice, none that was never sent,
/// every record acknowledged, and each partition's offsets in the order
/// its records were sent.
fn check_read_back(label: &str, failover: &Failover, read: &[Record]) {
    let Failover {
        victim,
        acked,
        result,
        after_kill,
    } = failover;
    let failed = result["failed"].as_array().map_or(0, Vec::len);
    let errors = result["errors"].as_array().cloned().unwrap_or_default();
    let mut times_read: BTreeMap<u64, usize> = BTreeMap::new();
    for &(_, _, value) in read {
        *times_read.entry(value).or_default() += 1;
    }
    let duplicates: Vec<u64> = times_read
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&v, _)| v)
        .collect();
    let unsent: Vec<u64> = times_read
        .keys()
        .copied()
        .filter(|&v| v >= RECORDS)
        .collect();
    let held: BTreeSet<Record> = read.iter().copied().collect();
    let lost: Vec<&Record> = acked.iter().filter(|r| !held.contains(r)).collect();
    eprintln!(
        "{label}: node {victim} (leader of partition 0) killed after {} of {RECORDS} records \
         acknowledged; {} acknowledged, {failed} failed, {} read back, {} lost, {} \
         duplicates, {} never sent; longest gap between acknowledgements {:.3} s (after \
         acknowledgement {}); producer done {after_kill:?} after the kill; {} client \
         errors: {errors:?}",
        RECORDS / 3,
        acked.len(),
        read.len(),
        lost.len(),
        duplicates.len(),
        unsent.len(),
        result["stall"].as_f64().unwrap_or(f64::NAN),
        result["stall_after"],
        errors.len(),
    );
    assert!(lost.is_empty(), "acknowledged but not read back: {lost:?}");
    assert!(duplicates.is_empty(), "read more than once: {duplicates:?}");
    assert!(unsent.is_empty(), "read but never sent: {unsent:?}");
    assert_eq!(
        (acked.len() as u64, failed),
        (RECORDS, 0),
        "every record acknowledged: {}",
        result["failed"]
    );
    for p in 0..FAILOVER_PARTITIONS {
        let mut in_partition: Vec<&Record> = acked.iter().filter(|r| r.0 == p).collect();
        in_partition.sort_by_key(|r| r.2);
        assert!(
            in_partition.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {p}: offsets out of the order sent: {in_partition:?}"
        );
    }
}

/// How many records one HTTP read of a node's local store asks for.
const PAGE: usize = 1000;

/// The records node `id` holds of `partition` of `topic` in its own store
/// (HTTP reads are served locally, by a replica too), as (offset, value),
/// read page by page from offset 0.
fn held_at(
    cluster: &Cluster,
    id: NodeId,
    topic: &str,
    partition: u64,
) -> Result<Vec<(u64, u64)>, String> {
    let mut held = Vec::new();
    loop {
        let from = held
            .last()
            .map_or(0, |&(offset, _): &(u64, u64)| offset + 1);
        let path = format!(
            "/topics/{topic}/partitions/{partition}/records?offset={from}&max_records={PAGE}"
        );
        let page = cluster.get(id, &path)?;
        let page = page
            .as_array()
            .ok_or_else(|| format!("not a list: {page}"))?;
        for r in page {
            let record = r["offset"].as_u64().zip(r["value"].as_u64());
            held.push(record.ok_or_else(|| format!("not a record of ours: {r}"))?);
        }
        if page.is_empty() {
            return Ok(held);
        }
    }
}

/// Waits until every one of `among` holds exactly the records of `read`
/// (what the leaders served) in its own store, partition by partition.
fn replicas_hold(cluster: &Cluster, among: &[NodeId], read: &[Record]) {
    let want: Vec<Vec<(u64, u64)>> = (0..FAILOVER_PARTITIONS)
        .map(|p| {
            read.iter()
                .filter(|r| r.0 == p)
                .map(|r| (r.1, r.2))
                .collect()
        })
        .collect();
    for &id in among {
        wait_until(
            &format!("node {id} holds every record read back"),
            PATIENCE,
            || {
                for (p, want) in want.iter().enumerate() {
                    let held = held_at(cluster, id, FAILOVER_TOPIC, p as u64)?;
                    if held != *want {
                        let differ = held.iter().zip(want).position(|(h, w)| h != w);
                        return Err(format!(
                            "partition {p}: {} records held, {} read back; first difference \
                             at index {differ:?}",
                            held.len(),
                            want.len()
                        ));
                    }
                }
                Ok(())
            },
        );
    }
}

/// Issue 20's goal: an idempotent producer with `acks=all` loses nothing
/// and duplicates nothing when the leader of a partition is killed under
/// it; the survivors serve every acknowledged record, and each holds them
/// all in its own store.
#[test]
fn kafka_produce_survives_the_leader_killed() {
    tools::require_python_module("confluent_kafka");
    let mut cluster = Cluster::start();
    let failover = produce_across_a_kill(&mut cluster);
    let survivors: Vec<NodeId> = NODES
        .into_iter()
        .filter(|&id| id != failover.victim)
        .collect();
    settled(&cluster, &survivors, FAILOVER_PARTITIONS as usize);
    let read = read_back(&cluster, FAILOVER_TOPIC, FAILOVER_PARTITIONS);
    check_read_back("kafka/failover", &failover, &read);
    replicas_hold(&cluster, &survivors, &read);
}

/// The same, then the killed node restarted: it runs its groups again,
/// every acknowledged record is read back once, and the restarted node
/// holds them all in its own store too.
#[test]
fn a_node_killed_under_kafka_produce_restarts_and_every_record_is_read_back() {
    tools::require_python_module("confluent_kafka");
    let mut cluster = Cluster::start();
    let failover = produce_across_a_kill(&mut cluster);
    cluster.restart(failover.victim);
    settled(&cluster, &NODES, FAILOVER_PARTITIONS as usize);
    let read = read_back(&cluster, FAILOVER_TOPIC, FAILOVER_PARTITIONS);
    check_read_back("kafka/failover-restart", &failover, &read);
    replicas_hold(&cluster, &NODES, &read);
}

/// A one-record batch holding `value`.
fn one_record(value: &str) -> Vec<u8> {
    raw_batch(0, 1, &raw_record(0, value.as_bytes()))
}

/// Produces `count` records to `partition` of `topic` with confluent-kafka
/// bootstrapped at `address` only; prints the acknowledged ones' [partition,
/// offset, value] and the failures.
const PRODUCE_AT_SCRIPT: &str = r#"
import json, sys
from confluent_kafka import Producer
bootstrap, topic, partition, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
acked, failed = [], []
def delivered(err, msg):
    if err is None:
        acked.append([msg.partition(), msg.offset(), int(msg.value())])
    else:
        failed.append([int(msg.value()), str(err)])
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                     "enable.idempotence": True, "message.timeout.ms": 60000})
for i in range(count):
    producer.produce(topic, value=b"%d" % i, partition=partition, on_delivery=delivered)
left = producer.flush(90)
print(json.dumps({"acked": acked, "failed": failed, "left": left}), flush=True)
"#;

#[test]
fn a_produce_at_a_follower_is_refused_with_not_leader() {
    tools::require_python_module("confluent_kafka");
    const TOPIC: &str = "placed";
    let cluster = Cluster::start();
    cluster.create_topic_ok(NODES[0], TOPIC, 3);
    let placements = settled(&cluster, &NODES, 3);
    let leader = leader_of(&placements, TOPIC, 0);
    let follower = NODES
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");

    let connect = |id: NodeId| {
        let stream = TcpStream::connect(cluster.kafka(id)).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream
    };
    let (error, _) = produce_v3(&mut connect(follower), 1, TOPIC, 0, one_record("refused"));
    assert_eq!(
        error, NOT_LEADER_OR_FOLLOWER,
        "a produce of partition 0 at node {follower}, which node {leader} leads"
    );
    let answer = produce_v3(&mut connect(leader), 2, TOPIC, 0, one_record("0"));
    assert_eq!(
        answer,
        (0, 0),
        "a produce of partition 0 at its leader {leader}"
    );

    // A client bootstrapped at the follower finds the leader from its
    // Metadata and produces there.
    let producer = Client::python(
        PRODUCE_AT_SCRIPT,
        &[&cluster.kafka(follower), TOPIC, "0", "10"],
    );
    let result = producer.result();
    let acked = records(&result, "acked");
    let want: Vec<Record> = (0..10).map(|i| (0, i + 1, i)).collect();
    assert_eq!(acked, want, "bootstrapped at node {follower}: {result}");
    eprintln!(
        "kafka/not-leader: node {follower} refused partition 0 with NOT_LEADER_OR_FOLLOWER, \
         node {leader} took it; confluent-kafka bootstrapped at node {follower} produced 10 \
         records through node {leader}"
    );
}

#[test]
fn a_leader_cut_off_from_its_replicas_acknowledges_no_kafka_write() {
    tools::require_python_module("confluent_kafka");
    const TOPIC: &str = "isolated";
    const PARTITIONS: u64 = 3;
    let cluster = Cluster::start();
    cluster.create_topic_ok(NODES[0], TOPIC, PARTITIONS as u32);
    let placements = settled(&cluster, &NODES, PARTITIONS as usize);
    let cut = leader_of(&placements, TOPIC, 0);
    let led: Vec<u64> = (0..PARTITIONS)
        .filter(|&p| leader_of(&placements, TOPIC, p) == cut)
        .collect();
    let others: Vec<NodeId> = NODES.into_iter().filter(|&id| id != cut).collect();

    cluster.cut(cut);
    let mut stream = TcpStream::connect(cluster.kafka(cut)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut answers = Vec::new();
    for (i, &p) in led.iter().enumerate() {
        let asked = Instant::now();
        // Numbers, as every value the reader reads back is.
        let value = (1000 + p).to_string();
        let (error, offset) =
            produce_v3(&mut stream, i as i32, TOPIC, p as i32, one_record(&value));
        assert_ne!(
            error, 0,
            "node {cut}, cut off, acknowledged {value} at offset {offset} of partition {p}"
        );
        answers.push((p, error, asked.elapsed()));
    }
    // The others go on without it.
    let after = settled(&cluster, &others, PARTITIONS as usize);
    let leader = leader_of(&after, TOPIC, 0);
    let mut at_leader = TcpStream::connect(cluster.kafka(leader)).expect("connect");
    at_leader.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let (error, _) = produce_v3(&mut at_leader, 1, TOPIC, 0, one_record("0"));
    assert_eq!(error, 0, "partition 0 at its new leader {leader}");

    cluster.heal(cut);
    settled(&cluster, &NODES, PARTITIONS as usize);
    // What the cut node was asked to write while cut is nowhere: it was
    // never committed, and the new leaders' entries replaced it.
    let read = read_back(&cluster, TOPIC, PARTITIONS);
    assert_eq!(
        read.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        [(0, 0)],
        "after the heal, only the record produced at the new leader: {read:?}"
    );
    eprintln!(
        "kafka/cut: node {cut}, cut off, answered its partitions {led:?} with (partition, \
         error, after) {answers:?}; node {leader} led partition 0 then; nothing of the cut \
         node's was read back after the heal"
    );
}
