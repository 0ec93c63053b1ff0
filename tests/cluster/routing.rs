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

use crate::cluster_process::{Cluster, NODES, NodeId, PATIENCE, each, wait_until};
use crate::partitions::{kafka_agrees, settled};
use seglog::cluster::runtime::RELAYS_SERVING_MAX;

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

/// Records produced to partition `partition` of each described topic: a
/// count of its own, so that a partition shown in another's place shows.
fn records_in(partition: u32) -> u64 {
    2 + u64::from(partition)
}

/// Node `id`'s `GET /topics/{topic}`: each partition's
/// `[partition, log_start_offset, end_offset, bytes]`.
fn described(cluster: &Cluster, id: NodeId, topic: &str) -> Result<Vec<[u64; 4]>, String> {
    let reply = cluster.get(id, &format!("/topics/{topic}"))?;
    let partitions = reply["partitions"]
        .as_array()
        .ok_or_else(|| format!("node {id}: no partitions in {reply}"))?;
    partitions
        .iter()
        .map(|p| {
            let field = |name: &str| {
                p[name]
                    .as_u64()
                    .ok_or_else(|| format!("node {id}: no {name} in {p}"))
            };
            Ok([
                field("partition")?,
                field("log_start_offset")?,
                field("end_offset")?,
                field("bytes")?,
            ])
        })
        .collect()
}

/// Issue 20, "a client needs one address": a topic's description and a
/// consumer group's lag read the partitions a node holds no replica of at
/// a replica, so that every node shows the same end offsets, bytes and
/// lag; once a partition's only replica is cut off, a node without it
/// answers 503 naming the partition rather than show it empty.
#[test]
fn every_node_describes_every_partition_and_group_lag_alike() {
    let cluster = Cluster::start();
    // Placed over three registered nodes, so that each node lacks a
    // replica of some partition of each topic.
    wait_until(
        "every node registered at the creating node",
        PATIENCE,
        || {
            let view = cluster.view(NODES[0])?;
            match view["nodes"].as_array() {
                Some(nodes) if nodes.len() == NODES.len() => Ok(()),
                _ => Err(view.to_string()),
            }
        },
    );
    let topics = [("single", 1), ("pair", 2)];
    for (name, replication_factor) in topics {
        let body = json!({"name": name, "partitions": PARTITIONS,
            "replication_factor": replication_factor});
        let (status, reply) = cluster.create_topic_as(NODES[0], &body);
        assert_eq!(status, 201, "POST /topics {body}: {reply}");
    }
    let placements = settled(&cluster, &NODES, topics.len() * PARTITIONS as usize);
    for id in NODES {
        for (name, _) in topics {
            assert!(
                placements
                    .iter()
                    .any(|((t, _), (_, replicas, _))| t == name && !replicas.contains(&id)),
                "node {id} holds a replica of every partition of '{name}': {placements:?}"
            );
        }
    }

    for (name, _) in topics {
        for partition in 0..PARTITIONS {
            let values: Vec<Value> = (0..records_in(partition))
                .map(|i| json!({"value": format!("{name}-{partition}-{i}")}))
                .collect();
            let path = format!("/topics/{name}/partitions/{partition}");
            let (status, reply) = cluster
                .try_request(
                    NODES[0],
                    "POST",
                    &path,
                    Some(&json!({"records": values})),
                    PATIENCE,
                )
                .unwrap_or_else(|e| panic!("node {}: {e}", NODES[0]));
            assert_eq!(status, 200, "POST {path}: {reply}");
        }
    }

    // A follower applies what its leader committed a moment later, and a
    // replica counts a segment's bytes once it is written: the nodes
    // agree once both are done, and a partition shown empty never would.
    for (name, _) in topics {
        let shown = wait_until(
            &format!("every node describes '{name}' alike"),
            PATIENCE,
            || {
                let answers: Vec<_> = NODES
                    .iter()
                    .map(|&id| described(&cluster, id, name))
                    .collect();
                let first = answers.first().and_then(|a| a.as_ref().ok());
                let alike = first.is_some_and(|first| {
                    first.len() == PARTITIONS as usize
                        && first.iter().zip(0..PARTITIONS).all(|(p, partition)| {
                            *p == [u64::from(partition), 0, records_in(partition), p[3]] && p[3] > 0
                        })
                        && answers.iter().all(|a| a.as_ref().ok() == Some(first))
                });
                match first {
                    Some(first) if alike => Ok(first.clone()),
                    _ => Err(each(&NODES, &answers)),
                }
            },
        );
        // One partition's state, local or relayed, as the description has it.
        for id in NODES {
            for [partition, log_start, end, bytes] in &shown {
                let path = format!("/topics/{name}/partitions/{partition}");
                let reply = cluster
                    .get(id, &path)
                    .unwrap_or_else(|e| panic!("node {id}: {e}"));
                assert_eq!(
                    reply,
                    json!({"partition": partition, "log_start_offset": log_start,
                        "end_offset": end, "bytes": bytes}),
                    "node {id}: GET {path}"
                );
            }
        }
    }

    // A group's commits, through another node: (topic, partition, offset).
    let commits = [
        ("single", 0, 1),
        ("single", 2, records_in(2)),
        ("pair", 1, 1),
    ];
    let body = json!({"offsets": commits.iter().map(|(topic, partition, offset)| {
        json!({"topic": topic, "partition": partition, "offset": offset})
    }).collect::<Vec<_>>()});
    let (status, reply) = cluster
        .try_request(
            NODES[1],
            "POST",
            "/groups/readers/offsets",
            Some(&body),
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("node {}: {e}", NODES[1]));
    assert_eq!(status, 200, "POST /groups/readers/offsets: {reply}");
    let mut want = Vec::new();
    for (name, _) in topics {
        for partition in 0..PARTITIONS {
            let committed = commits
                .iter()
                .find(|(t, p, _)| *t == name && *p == partition)
                .map(|(_, _, offset)| *offset);
            let end = records_in(partition);
            want.push(
                json!({"topic": name, "partition": partition, "offset": committed,
                "log_start_offset": 0, "end_offset": end, "lag": end - committed.unwrap_or(0)}),
            );
        }
    }
    let lag: u64 = want.iter().filter_map(|p| p["lag"].as_u64()).sum();
    // Sorted by topic, as the group's description is.
    want.sort_by_key(|p| p["topic"].as_str().map(str::to_string));
    let described_group = json!({"group": "readers", "lag": lag, "partitions": want});
    for id in NODES {
        // Each node answers once the commit is applied there.
        wait_until(
            &format!("node {id} shows the group's lag"),
            PATIENCE,
            || {
                let group = cluster.get(id, "/groups/readers")?;
                let groups = cluster.get(id, "/groups")?;
                let listed = json!([{"group": "readers", "topics": ["pair", "single"],
                    "partitions": want.len(), "committed_partitions": commits.len(),
                    "lag": lag}]);
                if group == described_group && groups == listed {
                    Ok(())
                } else {
                    Err(format!("node {id}: {group} and {groups}"))
                }
            },
        );
    }

    // The only replica of a partition cut off: a node without a replica
    // of it cannot read its state, and says so.
    let ((_, lost), (_, replicas, _)) = placements
        .iter()
        .find(|((t, _), _)| t == "single")
        .expect("a partition of 'single'");
    let replica = replicas[0];
    let asker = NODES
        .into_iter()
        .find(|&id| id != replica)
        .expect("another node");
    cluster.cut(replica);
    for path in ["/topics/single", "/groups/readers", "/groups"] {
        let (status, reply) = cluster
            .try_request(asker, "GET", path, None, PATIENCE)
            .unwrap_or_else(|e| panic!("node {asker}: {e}"));
        assert_eq!(status, 503, "node {asker}: GET {path}: {reply}");
        assert_eq!(reply["error_code"], 50305, "{reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("partition {lost} of 'single'")),
            "node {asker}: GET {path}: {reply}"
        );
    }
    cluster.heal(replica);
    println!(
        "descriptions: 2 topics of {PARTITIONS} partitions and a group's lag of {lag} shown \
         alike at {} nodes",
        NODES.len()
    );
}

/// Review finding (topics-relay): consumers long-polling a node's
/// partitions through another node hold all of that node's room for
/// relayed fetches (`RELAYS_SERVING_MAX`). Descriptions and partition
/// states asked through that other node shared the room and were all
/// refused 503 meanwhile; they have room of their own now.
#[test]
fn relayed_long_polls_leave_descriptions_answered() {
    let cluster = Cluster::start();
    let body = json!({"name": "polled", "partitions": PARTITIONS, "replication_factor": 1});
    let (status, reply) = cluster.create_topic_as(NODES[0], &body);
    assert_eq!(status, 201, "POST /topics {body}: {reply}");
    let placements = settled(&cluster, &NODES, PARTITIONS as usize);
    let ((_, partition), (_, replicas, _)) = placements.iter().next().expect("a partition");
    let replica = replicas[0];
    let poller = NODES
        .into_iter()
        .find(|&id| id != replica)
        .expect("another node");
    let waiting = format!("/topics/polled/partitions/{partition}/records?offset=0&wait_ms=20000");
    let state = format!("/topics/polled/partitions/{partition}");
    let full = format!("{RELAYS_SERVING_MAX} such calls are being served here");
    let (refused, refusal) = std::sync::mpsc::channel();
    thread::scope(|scope| {
        // One poll more than the replica's room: once one is refused for
        // want of room, the others hold all of it (nothing else is
        // relayed to the replica meanwhile).
        for _ in 0..=RELAYS_SERVING_MAX {
            let refused = refused.clone();
            let (cluster, waiting, full) = (&cluster, &waiting, &full);
            scope.spawn(move || {
                let answer = cluster.try_request(poller, "GET", waiting, None, PATIENCE);
                if let Ok((503, reply)) = &answer
                    && reply.to_string().contains(full.as_str())
                {
                    let _ = refused.send(());
                }
            });
        }
        let held = refusal.recv_timeout(PATIENCE);
        let described = cluster.try_request(poller, "GET", "/topics/polled", None, PATIENCE);
        let stated = cluster.try_request(poller, "GET", &state, None, PATIENCE);
        // End the polls.
        let records = json!({"records": [{"value": "woke"}]});
        let _ = cluster.try_request(replica, "POST", &state, Some(&records), PATIENCE);
        assert!(
            held.is_ok(),
            "no poll past the {RELAYS_SERVING_MAX} long polls through node {poller} was refused"
        );
        for (path, answer) in [("/topics/polled", described), (state.as_str(), stated)] {
            let (status, reply) = answer.unwrap_or_else(|e| panic!("node {poller}: {e}"));
            assert_eq!(
                status, 200,
                "GET {path} at node {poller} while {RELAYS_SERVING_MAX} consumers long-poll \
                 through it: {reply}"
            );
        }
    });
}
