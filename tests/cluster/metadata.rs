//! The metadata group in `seglog serve` (issue 20, stage 3b): three real
//! processes started with `--peers` ([`Cluster`]) register themselves,
//! agree on the metadata leader, take topic changes on any node through
//! that group and answer `GET /topics` and Kafka `Metadata` alike; they
//! take consumer group offsets on any node, and every node reads them
//! back; they replace a
//! leader killed with SIGKILL, and the killed node restarted on its
//! directory catches up; a node cut off from both others creates nothing,
//! and catches up once healed. Each test prints one line per scenario
//! (how long the cluster took) on stderr.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster_process::{CLUSTER_ID, Cluster, NODES, NodeId, PATIENCE, each, wait_until};

/// The single-node code of "topic exists" (`src/http/error.rs`).
const TOPIC_EXISTS: u64 = 40901;

/// How long a node cut off from both others is given to answer a topic
/// creation before the test takes its silence for the "no answer" it
/// may give: long enough for a node that wrongly answers from its own log
/// (no quorum) to have answered 201 (it would at once); a right node never
/// answers 201 however long it is given, so the figure only bounds the
/// test's run time.
const CUT_OFF_ANSWER: Duration = Duration::from_secs(3);

/// Waits until every node answers `GET /cluster` as itself, of
/// [`CLUSTER_ID`], lists all three nodes with the addresses each was
/// started with, and all agree on the metadata leader; returns it.
fn settled(cluster: &Cluster) -> NodeId {
    let leader = cluster.leader(&NODES, None);
    wait_until(
        "every node lists all three nodes as registered",
        PATIENCE,
        || {
            let views: Vec<Result<(), String>> =
                NODES.iter().map(|&id| registered(cluster, id)).collect();
            if views.iter().all(Result::is_ok) {
                Ok(())
            } else {
                Err(each(&NODES, &views))
            }
        },
    );
    leader
}

/// Whether node `id`'s `GET /cluster` says it is `id` of [`CLUSTER_ID`]
/// and lists exactly [`NODES`], each with the HTTP, Kafka and peer
/// addresses it was started with; else what it says.
fn registered(cluster: &Cluster, id: NodeId) -> Result<(), String> {
    let view = cluster.view(id)?;
    if view["node_id"] != json!(id) || view["cluster_id"] != json!(CLUSTER_ID) {
        return Err(format!("not node {id} of {CLUSTER_ID}: {view}"));
    }
    // The fields the interface names; a node may say more of itself.
    let mut nodes: Vec<serde_json::Value> = view["nodes"]
        .as_array()
        .ok_or_else(|| format!("no list of nodes: {view}"))?
        .iter()
        .map(|node| {
            json!({
                "id": node["id"],
                "http": node["http"],
                "kafka": node["kafka"],
                "peer": node["peer"],
            })
        })
        .collect();
    nodes.sort_by_key(|node| node["id"].as_u64());
    let want: Vec<serde_json::Value> = NODES
        .iter()
        .map(|&n| {
            json!({
                "id": n,
                "http": cluster.http(n),
                "kafka": cluster.kafka(n),
                "peer": cluster.peer(n),
            })
        })
        .collect();
    if nodes == want {
        Ok(())
    } else {
        Err(format!("nodes {}, not {}", json!(nodes), json!(want)))
    }
}

/// The other nodes than `not`.
fn others(not: NodeId) -> Vec<NodeId> {
    NODES.into_iter().filter(|&id| id != not).collect()
}

#[test]
fn three_nodes_agree_on_members_leader_topics_and_offsets() {
    let started = Instant::now();
    let cluster = Cluster::start();
    for id in NODES {
        let says = format!(
            "node {id} of cluster {CLUSTER_ID}, peers on {}",
            cluster.peer(id)
        );
        assert!(
            cluster.server(id).wait_for_log(&says),
            "node {id} never said {says:?}"
        );
    }
    let leader = settled(&cluster);
    eprintln!(
        "metadata/start: 3 nodes registered on every node, metadata leader {leader}, after {:?}",
        started.elapsed()
    );

    // One topic created on each node, each with its own partition count.
    let made = Instant::now();
    let topics: [(NodeId, &str, u32); 3] = [
        (NODES[0], "alpha", 1),
        (NODES[1], "beta", 2),
        (NODES[2], "gamma", 3),
    ];
    for (id, name, partitions) in topics {
        cluster.create_topic_ok(id, name, partitions);
    }
    cluster.wait_for_topics(&NODES, &["alpha", "beta", "gamma"]);
    let want: BTreeMap<String, usize> = topics
        .iter()
        .map(|&(_, name, partitions)| (name.to_string(), partitions as usize))
        .collect();
    cluster.wait_for_kafka_topics(&NODES, &want);
    eprintln!(
        "metadata/topics: 3 topics created on 3 nodes, listed alike over HTTP and Kafka \
         by all after {:?}",
        made.elapsed()
    );

    // A name taken, on every node, whichever node created it.
    for id in NODES {
        let (status, reply) = cluster.create_topic(id, "beta", 2);
        assert_eq!(
            (status, reply["error_code"].as_u64()),
            (409, Some(TOPIC_EXISTS)),
            "node {id}: a second beta: {reply}"
        );
    }

    // A deletion on one node holds on all.
    let (status, reply) = cluster
        .try_request(NODES[1], "DELETE", "/topics/gamma", None, PATIENCE)
        .unwrap_or_else(|e| panic!("node {}: {e}", NODES[1]));
    assert_eq!(status, 204, "node {}: DELETE gamma: {reply}", NODES[1]);
    cluster.wait_for_topics(&NODES, &["alpha", "beta"]);
    eprintln!("metadata/conflicts: a taken name is 409 on every node; a deletion holds on all");

    // Offset commits go through the metadata group at any node: each
    // node's commit is answered once this node applied it, so it reads its
    // own commit at once, and every node reads the last one in the end.
    for (i, id) in NODES.into_iter().enumerate() {
        let offset = 10 + i as u64;
        let commit = json!({"offsets": [{"topic": "alpha", "partition": 0, "offset": offset}]});
        let (status, reply) = cluster
            .try_request(id, "POST", "/groups/g/offsets", Some(&commit), PATIENCE)
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert_eq!(status, 200, "node {id}: an offset commit answered {reply}");
        let read = cluster
            .get(id, "/groups/g/offsets")
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert_eq!(read["offsets"][0]["offset"], offset, "node {id}: {read}");
    }
    let last = 10 + NODES.len() as u64 - 1;
    for id in NODES {
        wait_until("every node reads the last commit", PATIENCE, || {
            let read = cluster.get(id, "/groups/g/offsets")?;
            if read["offsets"][0]["offset"] == last {
                Ok(())
            } else {
                Err(format!("node {id}: {read}"))
            }
        });
    }
    eprintln!("metadata/commits: taken on every node, each read back where it was committed");
}

#[test]
fn a_killed_metadata_leader_is_replaced_and_catches_up_when_restarted() {
    let mut cluster = Cluster::start();
    let leader = settled(&cluster);
    let survivors = others(leader);
    cluster.create_topic_ok(leader, "before", 1);
    cluster.wait_for_topics(&NODES, &["before"]);

    cluster.kill9(leader);
    let killed = Instant::now();
    let new_leader = cluster.leader(&survivors, Some(leader));
    eprintln!(
        "metadata/kill: leader {leader} killed; {new_leader} leads nodes {survivors:?} after {:?}",
        killed.elapsed()
    );
    // Created on the survivor that does not lead: it goes to the leader.
    let follower = others(new_leader)
        .into_iter()
        .find(|&id| id != leader)
        .expect("a surviving follower");
    cluster.create_topic_ok(follower, "after", 2);
    cluster.wait_for_topics(&survivors, &["after", "before"]);

    cluster.restart(leader);
    let restarted = Instant::now();
    cluster.wait_for_topics(&NODES, &["after", "before"]);
    let agreed = cluster.leader(&NODES, None);
    let want = BTreeMap::from([("after".to_string(), 2), ("before".to_string(), 1)]);
    cluster.wait_for_kafka_topics(&[leader], &want);
    eprintln!(
        "metadata/restart: node {leader} back on its directory lists both topics and \
         leader {agreed}, like the others, after {:?}",
        restarted.elapsed()
    );
}

#[test]
fn a_node_cut_off_from_both_others_creates_nothing_and_catches_up_when_healed() {
    let cluster = Cluster::start();
    let leader = settled(&cluster);
    let majority = others(leader);

    // The leader, cut off while it still believes it leads: no quorum,
    // so no acknowledgement, whatever else it answers.
    cluster.cut(leader);
    let cut = Instant::now();
    let body = json!({"name": "from-the-minority", "partitions": 1});
    let answer = match cluster.try_request(leader, "POST", "/topics", Some(&body), CUT_OFF_ANSWER) {
        Ok((503, reply)) => format!("503 {reply}"),
        Err(no_answer) => no_answer,
        Ok((status, reply)) => {
            panic!("node {leader}, cut off, answered POST /topics with {status} {reply}")
        }
    };
    let new_leader = cluster.leader(&majority, Some(leader));
    eprintln!(
        "metadata/cut: node {leader} cut off answered a creation with {answer}; \
         {new_leader} leads {majority:?} after {:?}",
        cut.elapsed()
    );
    cluster.create_topic_ok(majority[0], "majority", 1);
    cluster.wait_for_topics(&majority, &["majority"]);

    cluster.heal(leader);
    let healed = Instant::now();
    // The cut node's own creation may yet commit (no answer is not a
    // refusal), so the topics are compared, not listed.
    let topics = wait_until(
        "all three list the same topics, majority among them",
        PATIENCE,
        || {
            let got: Vec<Result<Vec<String>, String>> =
                NODES.iter().map(|&id| cluster.topics(id)).collect();
            match &got[0] {
                Ok(first)
                    if first.iter().any(|t| t == "majority")
                        && got.iter().all(|g| g.as_ref() == Ok(first)) =>
                {
                    Ok(first.clone())
                }
                _ => Err(each(&NODES, &got)),
            }
        },
    );
    let agreed = cluster.leader(&NODES, None);
    eprintln!(
        "metadata/heal: node {leader} healed lists {topics:?} and leader {agreed}, like the \
         others, after {:?}",
        healed.elapsed()
    );
}
