//! Routing (issue 20, §4 "Routing") where partitions are not on every
//! node: a topic of replication factor 1 on three real processes, so that
//! two nodes of three hold no replica of each partition. Every node names
//! each partition's leader alike, in `GET /cluster` and in Kafka
//! `Metadata` (what the leaders report to their peers); an HTTP produce
//! to a node without a replica reaches the partition (proposed to its
//! leader), an HTTP fetch there is relayed to the replica and answered as
//! the replica answers, errors and long polls included; `GET /cluster`
//! shows each replica's lag. Prints one line: what was produced where.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster_process::{Cluster, NODES, NodeId, PATIENCE, wait_until};
use crate::partitions::{kafka_agrees, settled};

/// Partitions of the routed topic: one led by each node, as the
/// metadata's assignment rotates replicas over the nodes.
const PARTITIONS: u32 = 3;

/// Records produced to each partition through each node without a replica.
const RECORDS: u64 = 5;

/// `(offset, value)` of each record of `reply`, a fetch's JSON list.
fn records(reply: &Value) -> Vec<(u64, String)> {
    reply
        .as_array()
        .unwrap_or_else(|| panic!("a fetch answered other than a list: {reply}"))
        .iter()
        .map(|r| {
            let offset = r["offset"].as_u64();
            let value = r["value"].as_str().map(str::to_string);
            offset
                .zip(value)
                .unwrap_or_else(|| panic!("a record without offset or value: {r}"))
        })
        .collect()
}

/// Node `id`'s fetch of every record of `partition`.
fn fetch_all(cluster: &Cluster, id: NodeId, partition: u64) -> Vec<(u64, String)> {
    let path = format!("/topics/routed/partitions/{partition}/records?offset=0&max_records=1000");
    records(
        &cluster
            .get(id, &path)
            .unwrap_or_else(|e| panic!("node {id}: {e}")),
    )
}

#[test]
fn a_node_without_a_replica_serves_every_partition_over_http() {
    let cluster = Cluster::start();
    let body = json!({"name": "routed", "partitions": PARTITIONS, "replication_factor": 1});
    let (status, reply) = cluster.create_topic_as(NODES[0], &body);
    assert_eq!(status, 201, "POST /topics {body}: {reply}");
    // More replicas than nodes: refused, saying why.
    let too_many = json!({"name": "wide", "partitions": 1, "replication_factor": 4});
    let (status, reply) = cluster.create_topic_as(NODES[1], &too_many);
    assert_eq!(status, 400, "POST /topics {too_many}: {reply}");

    let placements = settled(&cluster, &NODES, PARTITIONS as usize);
    for (at, (_, replicas, _)) in &placements {
        assert_eq!(replicas.len(), 1, "partition {at:?}: {replicas:?}");
    }
    for id in NODES {
        kafka_agrees(&cluster, id, &placements);
    }

    let started = Instant::now();
    let mut produced = 0;
    for ((_, partition), (_, replicas, _)) in &placements {
        let replica = replicas[0];
        let path = format!("/topics/routed/partitions/{partition}");
        let mut acknowledged = Vec::new();
        for id in NODES.into_iter().filter(|&id| id != replica) {
            let values: Vec<String> = (0..RECORDS)
                .map(|i| format!("{partition}-{id}-{i}"))
                .collect();
            let body =
                json!({"records": values.iter().map(|v| json!({"value": v})).collect::<Vec<_>>()});
            let (status, reply) = cluster
                .try_request(id, "POST", &path, Some(&body), PATIENCE)
                .unwrap_or_else(|e| panic!("node {id}: {e}"));
            assert_eq!(status, 200, "node {id} (no replica): POST {path}: {reply}");
            let offsets: Vec<u64> = reply["offsets"]
                .as_array()
                .unwrap_or_else(|| panic!("no offsets in {reply}"))
                .iter()
                .filter_map(|produced| produced["offset"].as_u64())
                .collect();
            assert_eq!(offsets.len(), values.len(), "{reply}");
            acknowledged.extend(offsets.into_iter().zip(values));
            produced += RECORDS;
        }
        // Read at the replica and, relayed, at each other node: the same.
        let at_replica = fetch_all(&cluster, replica, *partition);
        assert_eq!(
            at_replica, acknowledged,
            "partition {partition} at its replica {replica}"
        );
        for id in NODES.into_iter().filter(|&id| id != replica) {
            assert_eq!(
                fetch_all(&cluster, id, *partition),
                acknowledged,
                "partition {partition} relayed from node {id} to node {replica}"
            );
        }
        // The replica's error, relayed as it answered it.
        let other = NODES
            .into_iter()
            .find(|&id| id != replica)
            .expect("another node");
        let past = format!("/topics/routed/partitions/{partition}/records?offset=1000");
        let (status, reply) = cluster
            .try_request(other, "GET", &past, None, PATIENCE)
            .unwrap_or_else(|e| panic!("node {other}: {e}"));
        assert_eq!(status, 416, "a fetch past the end relayed: {reply}");
        assert_eq!(reply["error_code"], 41601, "{reply}");
    }

    // A long poll relayed: it waits at the replica, and a record produced
    // through yet another node ends it.
    let ((_, partition), (_, replicas, _)) = placements.iter().next().expect("a partition");
    let replica = replicas[0];
    let mut others = NODES.into_iter().filter(|&id| id != replica);
    let (poller, producer) = (
        others.next().expect("a node"),
        others.next().expect("another"),
    );
    let end = fetch_all(&cluster, replica, *partition).len();
    let waiting =
        format!("/topics/routed/partitions/{partition}/records?offset={end}&wait_ms=20000");
    let polled = thread::scope(|scope| {
        let poll = scope.spawn(|| {
            let asked = Instant::now();
            let answer = cluster.try_request(poller, "GET", &waiting, None, PATIENCE);
            (answer, asked.elapsed())
        });
        // The poll must return the record whether it is already waiting
        // when the record comes or not; the pause lets it be, most often,
        // and the printed wait shows which it was.
        thread::sleep(Duration::from_millis(300));
        let body = json!({"records": [{"value": "woke"}]});
        let path = format!("/topics/routed/partitions/{partition}");
        let (status, reply) = cluster
            .try_request(producer, "POST", &path, Some(&body), PATIENCE)
            .unwrap_or_else(|e| panic!("node {producer}: {e}"));
        assert_eq!(status, 200, "{reply}");
        poll.join().expect("the poll")
    });
    let (answer, waited) = polled;
    let (status, reply) = answer.unwrap_or_else(|e| panic!("node {poller}: {e}"));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(records(&reply), vec![(end as u64, "woke".to_string())]);

    // Each node shows each partition's one replica 0 entries behind its
    // leader (itself).
    for id in NODES {
        wait_until("every partition's lag shown", PATIENCE, || {
            let view = cluster.view(id)?;
            let partitions = view["partitions"].as_array().ok_or("no partitions")?;
            let shown = partitions
                .iter()
                .filter(|p| p["topic"] == "routed")
                .all(|p| {
                    let replica = p["replicas"][0].as_u64().unwrap_or(u64::MAX);
                    p["lag"][replica.to_string()] == json!(0)
                });
            if shown {
                Ok(())
            } else {
                Err(format!("node {id}: {view}"))
            }
        });
    }
    println!(
        "routing: {produced} records produced over HTTP at nodes without a replica and read \
         back relayed, in {:?}; a relayed long poll ended by a record after {waited:?}",
        started.elapsed()
    );
}

/// Review finding (routing): CreateTopics of more replicas than the
/// cluster has nodes was valid with `validate_only` and refused as
/// INVALID_TOPIC_EXCEPTION without; Kafka answers INVALID_REPLICATION_FACTOR
/// both times, and so does seglog.
const TOO_MANY_SCRIPT: &str = r#"
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
for validate in (True, False):
    try:
        admin.create_topics([NewTopic("four", 1, 4)], validate_only=validate)["four"].result(30)
        print("validate" if validate else "create", "accepted")
    except Exception as e:
        print("validate" if validate else "create", e.args[0].name())
"#;

#[test]
fn kafka_create_topics_refuses_more_replicas_than_nodes_as_kafka_does() {
    crate::support::tools::require_python_module("confluent_kafka");
    let cluster = Cluster::start();
    let (status, reply) =
        cluster.create_topic_as(NODES[0], &json!({"name": "warm", "partitions": 1}));
    assert_eq!(status, 201, "{reply}");
    let admin = std::process::Command::new("python3")
        .args(["-c", TOO_MANY_SCRIPT, &cluster.kafka(NODES[1])])
        .output()
        .expect("running python3");
    let said = String::from_utf8_lossy(&admin.stdout);
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        [
            "validate INVALID_REPLICATION_FACTOR",
            "create INVALID_REPLICATION_FACTOR"
        ],
        "{admin:?}"
    );
}
