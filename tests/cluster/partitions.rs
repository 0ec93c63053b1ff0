//! Partition groups in `seglog serve` (issue 20, stage 4, first part):
//! three real processes ([`Cluster`]) run the Raft group of every
//! partition the cluster's metadata places on them, and no other; each
//! partition elects a leader, the preferred leaders spread over the
//! nodes, and both `GET /cluster` and Kafka `Metadata` (kcat) name every
//! broker and each partition's leader and replicas alike on every node. A
//! node killed with SIGKILL loses its leaderships to the survivors and,
//! restarted, runs its groups again; a deleted topic's groups stop on
//! every node. Each scenario prints one line (how long it took).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::Value;

use crate::cluster_process::{
    Cluster, NODES, NodeId, PATIENCE, each, kafka_metadata_at, wait_until,
};

/// A partition's group, replicas and leader (`None`: no leader known).
type Placement = (u64, Vec<NodeId>, Option<NodeId>);

/// Each partition's placement, by (topic, partition).
pub(crate) type Placements = BTreeMap<(String, u64), Placement>;

/// Node `id`'s `GET /cluster`: the groups it runs, and each partition's
/// placement by (topic, partition). An error while its replica of some
/// partition does not vote yet (`votes_here`: it rejoins, and knows the
/// leader from the leader's reports before it follows it): such a
/// partition survives no failure of another replica.
fn view(cluster: &Cluster, id: NodeId) -> Result<(BTreeSet<u64>, Placements), String> {
    let view = cluster.view(id)?;
    let number = |v: &Value| {
        v.as_u64()
            .ok_or_else(|| format!("not a number: {v} in {view}"))
    };
    let groups = view["groups"]
        .as_array()
        .ok_or_else(|| format!("no groups in {view}"))?
        .iter()
        .map(number)
        .collect::<Result<_, _>>()?;
    let mut placements = BTreeMap::new();
    for p in view["partitions"].as_array().ok_or("no partitions")? {
        let topic = p["topic"].as_str().ok_or("no topic")?.to_string();
        let replicas = p["replicas"]
            .as_array()
            .ok_or("no replicas")?
            .iter()
            .map(number)
            .collect::<Result<_, _>>()?;
        if p["votes_here"] == Value::Bool(false) {
            return Err(format!("node {id} does not vote in {p} yet"));
        }
        let leader = if p["leader"].is_null() {
            None
        } else {
            Some(number(&p["leader"])?)
        };
        placements.insert(
            (topic, number(&p["partition"])?),
            (number(&p["group"])?, replicas, leader),
        );
    }
    Ok((groups, placements))
}

/// Waits until every one of `among` runs group 0 and exactly the groups
/// of the partitions it is a replica of, and all know the same leader of
/// every partition, one of its replicas in `among`; returns the
/// placements.
pub(crate) fn settled(cluster: &Cluster, among: &[NodeId], partitions: usize) -> Placements {
    wait_until("every partition led, alike on every node", PATIENCE, || {
        let views: Vec<_> = among.iter().map(|&id| view(cluster, id)).collect();
        let agreed = (|| {
            let mut first = None;
            for (&id, view) in among.iter().zip(&views) {
                let (groups, placements) = view.as_ref().ok()?;
                if placements.len() != partitions {
                    return None;
                }
                let mut wanted: BTreeSet<u64> = placements
                    .values()
                    .filter(|(_, replicas, _)| replicas.contains(&id))
                    .map(|(group, _, _)| *group)
                    .collect();
                wanted.insert(0);
                let led = placements.values().all(|(_, replicas, leader)| {
                    leader.is_some_and(|l| replicas.contains(&l) && among.contains(&l))
                });
                if *groups != wanted || !led || first.is_some_and(|f| f != placements) {
                    return None;
                }
                first = Some(placements);
            }
            first.cloned()
        })();
        agreed.ok_or_else(|| each(among, &views))
    })
}

/// Waits until Kafka `Metadata` of node `id` names every node as a broker
/// and each partition's leader and replicas as `placements` has them.
pub(crate) fn kafka_agrees(cluster: &Cluster, id: NodeId, placements: &Placements) {
    wait_until("Kafka Metadata names the same leaders", PATIENCE, || {
        let metadata = kafka_metadata_at(&cluster.kafka(id))?;
        let brokers: BTreeSet<u64> = metadata["brokers"]
            .as_array()
            .ok_or("no brokers")?
            .iter()
            .filter_map(|b| b["id"].as_u64())
            .collect();
        let mut seen = BTreeMap::new();
        for topic in metadata["topics"].as_array().ok_or("no topics")? {
            let name = topic["topic"].as_str().ok_or("no name")?;
            for p in topic["partitions"].as_array().ok_or("no partitions")? {
                let replicas: Vec<NodeId> = p["replicas"]
                    .as_array()
                    .ok_or("no replicas")?
                    .iter()
                    .filter_map(|r| r["id"].as_u64())
                    .collect();
                let leader = p["leader"].as_u64();
                let partition = p["partition"].as_u64().ok_or("no partition")?;
                seen.insert((name.to_string(), partition), (replicas, leader));
            }
        }
        let want: BTreeMap<_, _> = placements
            .iter()
            .map(|(at, (_, replicas, leader))| (at.clone(), (replicas.clone(), *leader)))
            .collect();
        if brokers == NODES.iter().copied().collect() && seen == want {
            Ok(())
        } else {
            Err(format!("node {id}'s Kafka Metadata: {metadata}"))
        }
    });
}

#[test]
fn partitions_run_on_their_replicas_are_led_and_fail_over() {
    let mut cluster = Cluster::start();
    let started = Instant::now();
    cluster.create_topic_ok(NODES[0], "spread", 3);
    cluster.create_topic_ok(NODES[1], "gone", 2);
    let placements = settled(&cluster, &NODES, 5);
    let preferred: BTreeSet<NodeId> = placements
        .iter()
        .filter(|((topic, _), _)| topic == "spread")
        .map(|(_, (_, replicas, _))| replicas[0])
        .collect();
    assert_eq!(
        preferred.len(),
        3,
        "preferred leaders do not spread: {placements:?}"
    );
    for id in NODES {
        kafka_agrees(&cluster, id, &placements);
    }
    eprintln!(
        "partitions/start: 5 partitions on 3 nodes, each led, alike over HTTP and Kafka, \
         after {:?}",
        started.elapsed()
    );

    // A deleted topic's groups stop on every node.
    let (status, reply) = cluster
        .try_request(NODES[2], "DELETE", "/topics/gone", None, PATIENCE)
        .unwrap_or_else(|e| panic!("DELETE gone: {e}"));
    assert_eq!(status, 204, "DELETE gone: {reply}");
    let placements = settled(&cluster, &NODES, 3);

    // The node leading partition 0 of spread is killed: its partitions
    // get leaders among the survivors.
    let victim = placements[&("spread".to_string(), 0)].2.expect("a leader");
    let survivors: Vec<NodeId> = NODES.iter().copied().filter(|&id| id != victim).collect();
    cluster.kill9(victim);
    let killed = Instant::now();
    let after = settled(&cluster, &survivors, 3);
    eprintln!(
        "partitions/kill: node {victim} killed; every partition led by {:?} after {:?}",
        after.values().map(|(_, _, l)| *l).collect::<Vec<_>>(),
        killed.elapsed()
    );

    cluster.restart(victim);
    let restarted = Instant::now();
    let back = settled(&cluster, &NODES, 3);
    kafka_agrees(&cluster, victim, &back);
    eprintln!(
        "partitions/restart: node {victim} runs its groups again after {:?}",
        restarted.elapsed()
    );
}

/// The records of partition 0 of `topic` node `id` holds, as (offset,
/// value), read from offset 0.
fn records(cluster: &Cluster, id: NodeId, topic: &str) -> Result<Vec<(u64, u64)>, String> {
    let path = format!("/topics/{topic}/partitions/0/records?offset=0&max_records=10000");
    let read = cluster.get(id, &path)?;
    read.as_array()
        .ok_or_else(|| format!("not a list: {read}"))?
        .iter()
        .map(|r| {
            r["offset"]
                .as_u64()
                .zip(r["value"].as_u64())
                .ok_or_else(|| format!("a record without offset or value: {r}"))
        })
        .collect()
}

/// How many records node `id` holds of partition 0 of `kept`, if it holds
/// every one of `acknowledged` at its offset.
fn holds_all(cluster: &Cluster, id: NodeId, acknowledged: &[(u64, u64)]) -> Result<usize, String> {
    let held = records(cluster, id, "kept")?;
    let missing: Vec<&(u64, u64)> = acknowledged.iter().filter(|r| !held.contains(r)).collect();
    if missing.is_empty() {
        Ok(held.len())
    } else {
        Err(format!(
            "node {id} lacks {} acknowledged records: {missing:?}",
            missing.len()
        ))
    }
}

/// How many records the failover test produces, one request each.
const RECORDS: u64 = 120;

#[test]
fn records_produced_over_http_survive_their_leader_killed() {
    let mut cluster = Cluster::start();
    cluster.create_topic_ok(NODES[0], "kept", 1);
    let placements = settled(&cluster, &NODES, 1);
    let leader = placements[&("kept".to_string(), 0)].2.expect("a leader");
    // Produced at a follower, which forwards to the leader, the old one
    // and then the new one.
    let at = NODES
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    let survivors: Vec<NodeId> = NODES.iter().copied().filter(|&id| id != leader).collect();
    // A record over a proposal's bound (1 MiB, as large as the default
    // --max-record-bytes) is refused before it is proposed.
    let large = serde_json::json!({"records": [{"value": "x".repeat(1100 << 10)}]});
    let (status, reply) = cluster
        .try_request(
            at,
            "POST",
            "/topics/kept/partitions/0",
            Some(&large),
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("a large record: {e}"));
    assert_eq!(status, 413, "a 1.1 MiB record: {reply}");
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();
    let (mut unknown, mut refused) = (0, 0);
    let mut stall = std::time::Duration::ZERO;
    for value in 0..RECORDS {
        if value == RECORDS / 3 {
            cluster.kill9(leader);
        }
        let body = serde_json::json!({"records": [{"value": value}]});
        let asked = Instant::now();
        loop {
            let answer = cluster.try_request(
                at,
                "POST",
                "/topics/kept/partitions/0",
                Some(&body),
                PATIENCE,
            );
            match answer {
                Ok((200, reply)) => {
                    let offset = reply["offsets"][0]["offset"].as_u64().expect("an offset");
                    acknowledged.push((offset, value));
                    break;
                }
                // No leader yet, or the change may or may not be in: both
                // are retried as a client would (a retry after an unknown
                // outcome may duplicate, never lose).
                Ok((503, reply)) => {
                    if reply["message"].as_str().is_some_and(|m| m.contains("may")) {
                        unknown += 1;
                    } else {
                        refused += 1;
                    }
                }
                Ok((status, reply)) => panic!("produce of {value} at node {at}: {status} {reply}"),
                Err(e) => panic!("produce of {value} at node {at}: {e}"),
            }
            assert!(
                asked.elapsed() < PATIENCE,
                "produce of {value} never acknowledged"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stall = stall.max(asked.elapsed());
    }
    // Every acknowledged record is held at its offset, in the order it
    // was acknowledged, by both survivors, and by the killed node once
    // restarted and caught up.
    let offsets: Vec<u64> = acknowledged.iter().map(|(o, _)| *o).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets out of order: {offsets:?}"
    );
    for &id in &survivors {
        wait_until(
            "a survivor holds every acknowledged record",
            PATIENCE,
            || holds_all(&cluster, id, &acknowledged),
        );
    }
    cluster.restart(leader);
    let held = wait_until(
        "the restarted node holds every acknowledged record",
        PATIENCE,
        || holds_all(&cluster, leader, &acknowledged),
    );
    eprintln!(
        "partitions/produce: {} records acknowledged over HTTP at node {at}, leader {leader} \
         killed after {}; 0 lost on 3 nodes ({held} held: duplicates of unknown outcomes \
         allowed); {refused} refusals and {unknown} unknown outcomes retried; longest \
         produce {stall:?}",
        acknowledged.len(),
        RECORDS / 3
    );
}

/// Creates topics with confluent-kafka's AdminClient at `address`: the
/// cluster's factor (3), the default (-1), and one it does not give (2).
const ADMIN_SCRIPT: &str = r#"
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
for name, factor in (("three", 3), ("default", -1), ("two", 2), ("four", 4)):
    try:
        admin.create_topics([NewTopic(name, 2, factor)])[name].result(30)
        print(name, "created")
    except Exception as e:
        print(name, e.args[0].name())
"#;

#[test]
fn kafka_clients_create_topics_on_any_node() {
    crate::support::tools::require_kcat();
    crate::support::tools::require_python_module("confluent_kafka");
    let cluster = Cluster::start();
    // A topic of factor 3 needs three registered nodes.
    wait_until("every node registered on every node", PATIENCE, || {
        let views: Vec<_> = NODES.iter().map(|&id| cluster.view(id)).collect();
        let registered = |v: &Result<Value, String>| {
            v.as_ref().is_ok_and(|v| {
                v["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == NODES.len())
            })
        };
        if views.iter().all(registered) {
            Ok(())
        } else {
            Err(each(&NODES, &views))
        }
    });
    // Auto-creation by a Metadata request, at one node.
    let auto = std::process::Command::new("kcat")
        .args([
            "-b",
            &cluster.kafka(NODES[1]),
            "-X",
            "allow.auto.create.topics=true",
        ])
        .args(["-L", "-t", "auto", "-m", "30"])
        .output()
        .expect("running kcat");
    assert!(auto.status.success(), "kcat: {auto:?}");
    // CreateTopics at another.
    let admin = std::process::Command::new("python3")
        .args(["-c", ADMIN_SCRIPT, &cluster.kafka(NODES[2])])
        .output()
        .expect("running python3");
    let said = String::from_utf8_lossy(&admin.stdout);
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        [
            "three created",
            "default created",
            "two created",
            "four INVALID_REPLICATION_FACTOR"
        ],
        "{admin:?}"
    );
    cluster.wait_for_topics(&NODES, &["auto", "default", "three", "two"]);
    let placements = settled(&cluster, &NODES, 7);
    assert!(
        placements
            .iter()
            .all(|((topic, _), (_, replicas, _))| replicas.len()
                == if topic == "two" { 2 } else { 3 }),
        "{placements:?}"
    );
    eprintln!("partitions/kafka: topics auto-created and created by AdminClient, on every node");
}
