//! Tests of the metadata fold: each op accepted and refused, the fold's
//! determinism over random op sequences, the replica assignment's spread,
//! and following the metadata key in a real store.

use super::*;
use crate::storage::store::StoreConfig;

/// Folds `op` as the next record.
fn fold(state: &mut Metadata, op: &MetaOp) -> Verdict {
    state
        .apply(state.next_offset(), op)
        .expect("the next offset")
}

fn accepted(state: &mut Metadata, op: &MetaOp) -> Change {
    match fold(state, op) {
        Verdict::Accepted(change) => change,
        Verdict::Refused(why) => panic!("{op:?} refused: {why}"),
    }
}

/// Folds `op`, checks it is refused and that it changed nothing but the
/// offset folded.
fn refused(state: &mut Metadata, op: &MetaOp) -> Refusal {
    let before = state.clone();
    match fold(state, op) {
        Verdict::Refused(why) => {
            assert_eq!(state.next_offset(), before.next_offset() + 1);
            let mut unchanged = state.clone();
            unchanged.next_offset = before.next_offset;
            assert_eq!(
                unchanged, before,
                "{op:?} was refused but changed the state"
            );
            why
        }
        Verdict::Accepted(change) => panic!("{op:?} accepted: {change:?}"),
    }
}

fn register(id: NodeId) -> MetaOp {
    MetaOp::RegisterNode {
        id,
        http: format!("node{id}:8080"),
        kafka: Some(format!("node{id}:9092")),
        peer: format!("node{id}:7000"),
    }
}

/// A state with nodes `ids` registered.
fn with_nodes(ids: &[NodeId]) -> Metadata {
    let mut state = Metadata::new();
    for id in ids {
        accepted(&mut state, &register(*id));
    }
    state
}

fn create(name: &str, partitions: u32, factor: u32, assignment: Vec<Vec<NodeId>>) -> MetaOp {
    MetaOp::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: factor,
        config: TopicConfig::default(),
        assignment,
        created_ms: 1_700_000_000_000,
    }
}

/// Creates `name` with the assignment the state proposes.
fn create_assigned(state: &mut Metadata, name: &str, partitions: u32, factor: u32) -> Change {
    let assignment = state.assign(partitions, factor).expect("assignment");
    accepted(state, &create(name, partitions, factor, assignment))
}

fn commit(group: &str, topic: &str, partition: u32, offset: u64) -> MetaOp {
    MetaOp::CommitOffsets {
        group_id: group.into(),
        offsets: vec![OffsetCommit {
            topic: topic.into(),
            partition,
            offset,
            metadata: Some("m".into()),
        }],
    }
}

#[test]
fn records_round_trip_and_name_their_version() {
    let op = create("orders", 2, 1, vec![vec![1], vec![1]]);
    let text = encode(&op);
    assert!(
        text.starts_with(r#"{"version":1,"op":{"CreateTopic":"#),
        "{text}"
    );
    assert_eq!(decode(text.as_bytes()), Decoded::Op(op.clone()));
    assert_eq!(
        send(&op),
        Op::Send {
            key: METADATA_KEY.into(),
            msg: text
        }
    );
}

#[test]
fn the_metadata_key_is_a_plain_key_of_group_0_only() {
    assert!(!crate::raft::snapshot::is_reserved(METADATA_KEY));
    assert!(keys().holds(METADATA_KEY));
    assert!(!keys().holds("orders.0-0"));
    assert_eq!(
        catalog::parse_key(METADATA_KEY),
        None,
        "never a partition's key"
    );
    let name = crate::storage::keyname::escaped_name(METADATA_KEY);
    assert_eq!(name.as_deref(), Some("k.cluster.metadata"));
}

#[test]
fn unreadable_records_are_refused_and_newer_ones_stop_the_fold() {
    let mut state = Metadata::new();
    for bytes in [
        &b"not json"[..],
        br#"{"op":{"DeleteTopic":{"name":"a"}}}"#,
        br#"{"version":0,"op":{"DeleteTopic":{"name":"a"}}}"#,
        br#"{"version":1,"op":{"Reticulate":{"splines":3}}}"#,
        br#"{"version":1,"op":{"DeleteTopic":{"nom":"a"}}}"#,
    ] {
        let offset = state.next_offset();
        let verdict = state.apply_record(offset, bytes).expect("folded");
        assert!(
            matches!(verdict, Verdict::Refused(Refusal::Unreadable(_))),
            "{verdict:?}"
        );
        assert_eq!(state.next_offset(), offset + 1);
    }
    let newer = br#"{"version":2,"op":{"Anything":{}}}"#;
    let error = state.apply_record(5, newer).expect_err("stopped");
    assert!(matches!(
        error,
        FollowError::Newer {
            offset: 5,
            version: 2
        }
    ));
    assert_eq!(state.next_offset(), 5, "a newer record is not folded");
    assert_eq!(state.topics().len() + state.nodes().len(), 0);
}

#[test]
fn nodes_register_and_change_their_addresses() {
    let mut state = Metadata::new();
    let change = accepted(&mut state, &register(3));
    assert_eq!(
        change,
        Change::NodeRegistered {
            id: 3,
            changed: true
        }
    );
    let again = accepted(&mut state, &register(3));
    assert_eq!(
        again,
        Change::NodeRegistered {
            id: 3,
            changed: false
        }
    );
    let moved = MetaOp::RegisterNode {
        id: 3,
        http: "node3:8081".into(),
        kafka: None,
        peer: "node3:7000".into(),
    };
    assert_eq!(
        accepted(&mut state, &moved),
        Change::NodeRegistered {
            id: 3,
            changed: true
        }
    );
    assert_eq!(state.nodes()[&3].http, "node3:8081");
    assert_eq!(state.nodes()[&3].kafka, None);
}

#[test]
fn bad_node_registrations_are_refused() {
    let mut state = with_nodes(&[1]);
    let mut op = register(NODE_ID_MAX + 1);
    assert!(matches!(refused(&mut state, &op), Refusal::Invalid(_)));
    op = MetaOp::RegisterNode {
        id: 2,
        http: "no port".into(),
        kafka: None,
        peer: "node2:7000".into(),
    };
    assert!(matches!(refused(&mut state, &op), Refusal::Invalid(_)));
    op = MetaOp::RegisterNode {
        id: 2,
        http: "node2:8080".into(),
        kafka: None,
        peer: "node1:7000".into(),
    };
    let why = refused(&mut state, &op);
    assert!(
        why.to_string()
            .contains("node 1 has the address node1:7000"),
        "{why}"
    );
    let mut full = with_nodes(&(1..=NODES_MAX as NodeId).collect::<Vec<_>>());
    assert!(matches!(
        refused(&mut full, &register(NODES_MAX as NodeId + 1)),
        Refusal::Limit(_)
    ));
    accepted(&mut full, &register(1));
}

#[test]
fn addresses_are_unique_over_nodes_whatever_their_case() {
    let mut state = with_nodes(&[1]);
    let node = |http: &str, kafka: Option<&str>, peer: &str| MetaOp::RegisterNode {
        id: 2,
        http: http.into(),
        kafka: kafka.map(str::to_string),
        peer: peer.into(),
    };
    for taken in [
        node("node2:8080", None, "NODE1:7000"),
        node("NODE1:8080", None, "node2:7000"),
        node("node2:8080", Some("node1:9092"), "node2:7000"),
        node("node2:8080", Some("node1:8080"), "node2:7000"),
    ] {
        let why = refused(&mut state, &taken);
        assert!(why.to_string().contains("node 1 has the address"), "{why}");
    }
    let twice = node("node2:8080", Some("NODE2:8080"), "node2:7000");
    assert!(refused(&mut state, &twice).to_string().contains("twice"));
    accepted(
        &mut state,
        &node("node2:8080", Some("node2:9092"), "node2:7000"),
    );
}

/// The address rule is `peers::check_address`; the fold depends on it,
/// so its boundaries are pinned here: changing it needs a new
/// [`METADATA_VERSION`].
#[test]
fn the_address_rule_is_pinned_for_version_1() {
    let label = "a".repeat(63);
    let host = [label.as_str(); 4].join(".");
    let good = [
        "h:1".to_string(),
        "h:65535".into(),
        "[::1]:7".into(),
        "a-b.C9:80".into(),
        "10.0.0.1:80".into(),
        format!("{label}:1"),
        format!("{}:1", &host[..253]),
    ];
    let bad = [
        "h:0".to_string(),
        "h:65536".into(),
        "h".into(),
        ":1".into(),
        "h.:1".into(),
        "h_x:1".into(),
        "[::1:7".into(),
        "[h]:7".into(),
        format!("a{label}:1"),
        format!("{}:1", &host[..254]),
    ];
    for (i, address) in good.iter().enumerate() {
        let mut state = Metadata::new();
        let op = MetaOp::RegisterNode {
            id: i as NodeId,
            http: address.clone(),
            kafka: None,
            peer: format!("p{i}:7000"),
        };
        accepted(&mut state, &op);
    }
    for address in bad {
        let mut state = Metadata::new();
        let op = MetaOp::RegisterNode {
            id: 1,
            http: "h:1".into(),
            kafka: None,
            peer: address.clone(),
        };
        assert!(
            matches!(refused(&mut state, &op), Refusal::Invalid(_)),
            "{address}"
        );
    }
}

/// The topic name rule is `catalog::check_name`; pinned as the address
/// rule is.
#[test]
fn the_topic_name_rule_is_pinned_for_version_1() {
    let mut state = with_nodes(&[1]);
    for name in ["a".repeat(249), "a_b-c.D9".into(), "...".into()] {
        accepted(&mut state, &create(&name, 1, 1, vec![vec![1]]));
    }
    for name in [
        "a".repeat(250),
        String::new(),
        ".".into(),
        "..".into(),
        "a b".into(),
        "a/b".into(),
        "é".into(),
    ] {
        let why = refused(&mut state, &create(&name, 1, 1, vec![vec![1]]));
        assert!(matches!(why, Refusal::Invalid(_)), "{name:?}: {why}");
    }
}

#[test]
fn the_group_name_rule_is_frozen_for_version_1() {
    let mut state = with_nodes(&[1]);
    create_assigned(&mut state, "a", 1, 1);
    accepted(&mut state, &commit(&"g".repeat(249), "a", 0, 1));
    accepted(&mut state, &commit("a b/é", "a", 0, 1));
    for group in ["g".repeat(250), String::new(), "a\n".into()] {
        let why = refused(&mut state, &commit(&group, "a", 0, 1));
        assert!(matches!(why, Refusal::Invalid(_)), "{group:?}: {why}");
    }
}

/// The fold's limits are part of metadata version 1: a replica of another
/// build must reach the same verdicts. Changing one of these values needs
/// a new [`METADATA_VERSION`], not an edit here.
#[test]
fn the_folds_limits_are_frozen_for_version_1() {
    assert_eq!(REPLICAS_PER_NODE_MAX, 4_095);
    assert_eq!(NODES_MAX, 16);
    assert_eq!(NODE_ID_MAX, 2_147_483_647);
    assert_eq!(TOPICS_MAX, 10_000);
    assert_eq!(PARTITIONS_MAX, 4_096);
    assert_eq!(GROUP_NAME_BYTES_MAX, 249);
    assert_eq!(COMMIT_METADATA_BYTES_MAX, 4_096);
    assert_eq!(COMMITTED_GROUPS_MAX, 10_000);
    assert_eq!(GROUP_PARTITIONS_MAX, 4_096);
    assert_eq!(INT64_MAX, 9_223_372_036_854_775_807);
    assert_eq!(PRODUCER_ID_END, INT64_MAX);
    assert_eq!(PRODUCER_IDS_PER_BLOCK_MAX, 1_000_000);
}

// What the fold accepts, the modules that run it must admit: a node must
// start every group it is assigned, a catalog hold every topic. A change
// there that breaks one of these fails the build, not a cluster.
const _: () = assert!(REPLICAS_PER_NODE_MAX < crate::raft::groups::GROUPS_RUNNING_MAX);
const _: () = assert!(NODES_MAX <= crate::cluster::peers::NODES_MAX);
const _: () = assert!(NODE_ID_MAX <= crate::cluster::peers::NODE_ID_MAX);
const _: () = assert!(TOPICS_MAX <= crate::broker::catalog::TOPICS_MAX);
const _: () = assert!(PARTITIONS_MAX <= crate::broker::catalog::PARTITIONS_MAX);
const _: () = assert!(GROUP_NAME_BYTES_MAX <= crate::broker::groups::GROUP_NAME_BYTES_MAX);
const _: () = assert!(COMMIT_METADATA_BYTES_MAX <= crate::storage::offsets::COMMIT_VALUE_BYTES_MAX);

#[test]
fn fields_this_build_does_not_know_are_refused() {
    let mut state = with_nodes(&[1]);
    create_assigned(&mut state, "a", 1, 1);
    for record in [
        &br#"{"version":1,"extra":1,"op":{"DeleteTopic":{"name":"a"}}}"#[..],
        br#"{"version":1,"op":{"DeleteTopic":{"name":"a","if_id":77}}}"#,
        br#"{"version":1,"op":{"AlterConfig":{"name":"a","changes":[
            {"key":"retention.ms","value":1,"unit":"s"}]}}}"#,
        br#"{"version":1,"op":{"CommitOffsets":{"group_id":"g","offsets":[
            {"topic":"a","partition":0,"offset":1,"metadata":null,"epoch":3}]}}}"#,
        br#"{"version":1,"op":{"CreateTopic":{"name":"b","partitions":1,
            "replication_factor":1,"config":{"retention_ms":null,"retention_bytes":null,
            "cleanup":"compact"},"assignment":[[1]],"created_ms":0}}}"#,
    ] {
        let verdict = state.apply_record(state.next_offset(), record).expect("v1");
        assert!(
            matches!(verdict, Verdict::Refused(Refusal::Unreadable(_))),
            "{verdict:?}"
        );
    }
    assert!(state.topics().contains_key("a") && state.topics().len() == 1);
    assert!(state.offsets().is_empty());
}

#[test]
fn kafka_int64_values_are_refused_past_its_max() {
    let mut state = with_nodes(&[1]);
    create_assigned(&mut state, "a", 1, 1);
    accepted(&mut state, &commit("g", "a", 0, INT64_MAX));
    for offset in [INT64_MAX + 1, u64::MAX] {
        assert!(matches!(
            refused(&mut state, &commit("g", "a", 0, offset)),
            Refusal::Invalid(_)
        ));
    }
    for key in [ConfigKey::RetentionMs, ConfigKey::RetentionBytes] {
        let alter = |value| MetaOp::AlterConfig {
            name: "a".into(),
            changes: vec![ConfigChange {
                key,
                value: Some(value),
            }],
        };
        accepted(&mut state, &alter(INT64_MAX));
        assert!(matches!(
            refused(&mut state, &alter(INT64_MAX + 1)),
            Refusal::Invalid(_)
        ));
    }
    let mut op = create("b", 1, 1, vec![vec![1]]);
    if let MetaOp::CreateTopic { config, .. } = &mut op {
        config.retention_bytes = Some(u64::MAX);
    }
    assert!(matches!(refused(&mut state, &op), Refusal::Invalid(_)));
}

#[test]
fn an_assignment_of_too_many_partitions_is_refused_before_it_is_built() {
    let state = with_nodes(&[1]);
    assert!(matches!(
        state.assign(u32::MAX, 1),
        Err(Refusal::Partitions(_))
    ));
    assert!(matches!(
        state.assign(PARTITIONS_MAX + 1, 1),
        Err(Refusal::Partitions(_))
    ));
    assert_eq!(
        state.assign(PARTITIONS_MAX, 1).expect("the limit").len(),
        4_096
    );
}

#[test]
fn a_group_holds_offsets_of_a_bounded_number_of_partitions() {
    let mut state = with_nodes(&[1, 2]);
    create_assigned(&mut state, "a", PARTITIONS_MAX, 1);
    create_assigned(&mut state, "b", 1, 1);
    let all = MetaOp::CommitOffsets {
        group_id: "g".into(),
        offsets: (0..PARTITIONS_MAX)
            .map(|partition| OffsetCommit {
                topic: "a".into(),
                partition,
                offset: 1,
                metadata: None,
            })
            .collect(),
    };
    accepted(&mut state, &all);
    assert!(matches!(
        refused(&mut state, &commit("g", "b", 0, 1)),
        Refusal::Limit(_)
    ));
    accepted(&mut state, &commit("g", "a", 7, 2));
    accepted(&mut state, &commit("h", "b", 0, 1));
}

#[test]
fn a_topic_gets_an_id_and_a_new_group_per_partition() {
    let mut state = with_nodes(&[1, 2, 3]);
    let change = create_assigned(&mut state, "a", 3, 2);
    assert_eq!(
        change,
        Change::TopicCreated {
            name: "a".into(),
            id: 0,
            groups: 1..4
        }
    );
    let change = create_assigned(&mut state, "b", 1, 3);
    assert_eq!(
        change,
        Change::TopicCreated {
            name: "b".into(),
            id: 1,
            groups: 4..5
        }
    );
    let a = &state.topics()["a"];
    assert_eq!(a.replication_factor, 2);
    let groups: Vec<u32> = a.partitions.iter().map(|p| p.group).collect();
    assert_eq!(groups, [1, 2, 3]);
    assert!(a.partitions.iter().all(|p| p.replicas.len() == 2));
    assert_eq!(state.next_group(), 5);
}

#[test]
fn bad_topics_are_refused() {
    let mut state = with_nodes(&[1, 2, 3]);
    create_assigned(&mut state, "a", 1, 1);
    /// Whether a refusal is the one expected.
    type Expected = fn(&Refusal) -> bool;
    let cases: Vec<(MetaOp, Expected)> = vec![
        (create("a", 1, 1, vec![vec![1]]), |r| {
            matches!(r, Refusal::TopicExists(_))
        }),
        (create("a/b", 1, 1, vec![vec![1]]), |r| {
            matches!(r, Refusal::Invalid(_))
        }),
        (create("b", 0, 1, vec![]), |r| {
            matches!(r, Refusal::Partitions(_))
        }),
        (create("b", PARTITIONS_MAX + 1, 1, vec![]), |r| {
            matches!(r, Refusal::Partitions(_))
        }),
        (create("b", 1, 0, vec![vec![]]), |r| {
            matches!(r, Refusal::ReplicationFactor(_))
        }),
        (create("b", 1, 4, vec![vec![1, 2, 3, 4]]), |r| {
            matches!(r, Refusal::ReplicationFactor(_))
        }),
        (create("b", 2, 1, vec![vec![1]]), |r| {
            matches!(r, Refusal::Assignment(_))
        }),
        (create("b", 1, 2, vec![vec![1]]), |r| {
            matches!(r, Refusal::Assignment(_))
        }),
        (create("b", 1, 2, vec![vec![2, 2]]), |r| {
            matches!(r, Refusal::Assignment(_))
        }),
        (create("b", 1, 2, vec![vec![2, 9]]), |r| {
            matches!(r, Refusal::UnknownNode(9))
        }),
    ];
    for (op, expected) in cases {
        let why = refused(&mut state, &op);
        assert!(expected(&why), "{op:?}: {why:?}");
    }
}

#[test]
fn topics_and_replicas_per_node_are_bounded() {
    let mut state = with_nodes(&[1, 2, 3]);
    for i in 0..TOPICS_MAX {
        create_assigned(&mut state, &format!("t{i}"), 1, 1);
    }
    let op = create("one-more", 1, 1, vec![vec![1]]);
    assert!(matches!(refused(&mut state, &op), Refusal::Limit(_)));

    // A node runs at most REPLICAS_PER_NODE_MAX partition groups, over
    // all topics, beside group 0.
    let mut state = with_nodes(&[1]);
    let op = create(
        "a",
        PARTITIONS_MAX,
        1,
        vec![vec![1]; PARTITIONS_MAX as usize],
    );
    let why = refused(&mut state, &op);
    assert!(why.to_string().contains("node 1 would hold"), "{why}");
    assert!(matches!(why, Refusal::Limit(_)));
    create_assigned(&mut state, "a", REPLICAS_PER_NODE_MAX as u32 - 1, 1);
    create_assigned(&mut state, "b", 1, 1);
    let op = create("c", 1, 1, vec![vec![1]]);
    assert!(matches!(refused(&mut state, &op), Refusal::Limit(_)));
}

#[test]
fn a_deleted_topic_takes_its_offsets_and_its_groups_are_never_reused() {
    let mut state = with_nodes(&[1, 2]);
    create_assigned(&mut state, "a", 2, 2);
    create_assigned(&mut state, "b", 1, 1);
    accepted(&mut state, &commit("g", "a", 1, 10));
    accepted(&mut state, &commit("g", "b", 0, 5));
    accepted(&mut state, &commit("h", "a", 0, 7));
    let change = accepted(&mut state, &MetaOp::DeleteTopic { name: "a".into() });
    assert_eq!(
        change,
        Change::TopicDeleted {
            name: "a".into(),
            groups: vec![1, 2]
        }
    );
    assert_eq!(state.offsets().keys().collect::<Vec<_>>(), ["g"]);
    assert_eq!(state.offsets()["g"].keys().collect::<Vec<_>>(), ["b"]);
    let again = create_assigned(&mut state, "a", 1, 1);
    assert_eq!(
        again,
        Change::TopicCreated {
            name: "a".into(),
            id: 2,
            groups: 4..5
        }
    );
    let op = MetaOp::DeleteTopic { name: "zz".into() };
    assert!(matches!(refused(&mut state, &op), Refusal::UnknownTopic(_)));
}

#[test]
fn partitions_are_added_with_new_groups() {
    let mut state = with_nodes(&[1, 2, 3]);
    create_assigned(&mut state, "a", 2, 2);
    create_assigned(&mut state, "b", 1, 1);
    let assignment = state.assign(3, 2).expect("assignment");
    let op = MetaOp::CreatePartitions {
        name: "a".into(),
        count: 5,
        assignment,
    };
    let change = accepted(&mut state, &op);
    assert_eq!(
        change,
        Change::PartitionsCreated {
            name: "a".into(),
            groups: 4..7
        }
    );
    let groups: Vec<u32> = state.topics()["a"]
        .partitions
        .iter()
        .map(|p| p.group)
        .collect();
    assert_eq!(groups, [1, 2, 4, 5, 6]);
    let bad = |name: &str, count: u32, assignment: Vec<Vec<NodeId>>| MetaOp::CreatePartitions {
        name: name.into(),
        count,
        assignment,
    };
    let why = refused(&mut state, &bad("a", 5, vec![]));
    assert!(matches!(why, Refusal::Partitions(_)), "{why:?}");
    let why = refused(&mut state, &bad("a", PARTITIONS_MAX + 1, vec![]));
    assert!(matches!(why, Refusal::Partitions(_)), "{why:?}");
    let why = refused(&mut state, &bad("a", 6, vec![vec![1]]));
    assert!(
        matches!(why, Refusal::Assignment(_)),
        "the topic's factor is 2: {why:?}"
    );
    let why = refused(&mut state, &bad("zz", 6, vec![vec![1]]));
    assert!(matches!(why, Refusal::UnknownTopic(_)), "{why:?}");
}

#[test]
fn configs_are_set_and_reset() {
    let mut state = with_nodes(&[1]);
    create_assigned(&mut state, "a", 1, 1);
    let set = |key, value| ConfigChange { key, value };
    let op = MetaOp::AlterConfig {
        name: "a".into(),
        changes: vec![
            set(ConfigKey::RetentionMs, Some(60_000)),
            set(ConfigKey::RetentionBytes, Some(1 << 20)),
        ],
    };
    accepted(&mut state, &op);
    let expected = TopicConfig {
        retention_ms: Some(60_000),
        retention_bytes: Some(1 << 20),
    };
    assert_eq!(state.topics()["a"].config, expected);
    let op = MetaOp::AlterConfig {
        name: "a".into(),
        changes: vec![set(ConfigKey::RetentionMs, None)],
    };
    accepted(&mut state, &op);
    assert_eq!(state.topics()["a"].config.retention_ms, None);
    assert_eq!(state.topics()["a"].config.retention_bytes, Some(1 << 20));
    let op = MetaOp::AlterConfig {
        name: "b".into(),
        changes: vec![],
    };
    assert!(matches!(refused(&mut state, &op), Refusal::UnknownTopic(_)));
    let text = encode(&MetaOp::AlterConfig {
        name: "a".into(),
        changes: vec![set(ConfigKey::RetentionMs, Some(1))],
    });
    assert!(text.contains(r#""key":"retention.ms""#), "{text}");
}

#[test]
fn offsets_are_committed_whole_or_not_at_all() {
    let mut state = with_nodes(&[1]);
    create_assigned(&mut state, "a", 2, 1);
    accepted(&mut state, &commit("g", "a", 1, 10));
    // Lower offsets are stored as given.
    accepted(&mut state, &commit("g", "a", 1, 4));
    assert_eq!(state.offsets()["g"]["a"][&1].offset, 4);
    let two = |second: OffsetCommit| MetaOp::CommitOffsets {
        group_id: "g".into(),
        offsets: vec![
            OffsetCommit {
                topic: "a".into(),
                partition: 0,
                offset: 99,
                metadata: None,
            },
            second,
        ],
    };
    let at = |topic: &str, partition, metadata: Option<String>| OffsetCommit {
        topic: topic.into(),
        partition,
        offset: 1,
        metadata,
    };
    let why = refused(&mut state, &two(at("a", 2, None)));
    assert!(
        matches!(why, Refusal::UnknownPartition { partition: 2, .. }),
        "{why:?}"
    );
    let why = refused(&mut state, &two(at("b", 0, None)));
    assert!(matches!(why, Refusal::UnknownTopic(_)), "{why:?}");
    let long = "x".repeat(COMMIT_METADATA_BYTES_MAX + 1);
    let why = refused(&mut state, &two(at("a", 1, Some(long))));
    assert!(matches!(why, Refusal::Invalid(_)), "{why:?}");
    assert_eq!(
        state.offsets()["g"]["a"].len(),
        1,
        "partition 0 was not stored"
    );
    let why = refused(&mut state, &commit("", "a", 0, 1));
    assert!(matches!(why, Refusal::Invalid(_)), "{why:?}");
    let change = accepted(&mut state, &two(at("a", 1, None)));
    assert_eq!(
        change,
        Change::OffsetsCommitted {
            group_id: "g".into(),
            count: 2
        }
    );
}

#[test]
fn groups_with_offsets_are_bounded_and_deleted() {
    let mut state = with_nodes(&[1]);
    create_assigned(&mut state, "a", 1, 1);
    for i in 0..COMMITTED_GROUPS_MAX {
        accepted(&mut state, &commit(&format!("g{i}"), "a", 0, 1));
    }
    let why = refused(&mut state, &commit("new", "a", 0, 1));
    assert!(matches!(why, Refusal::Limit(_)), "{why:?}");
    accepted(&mut state, &commit("g0", "a", 0, 2));
    let delete = |group: &str| MetaOp::DeleteGroup {
        group_id: group.into(),
    };
    assert_eq!(
        accepted(&mut state, &delete("g0")),
        Change::GroupDeleted {
            group_id: "g0".into()
        }
    );
    assert!(matches!(
        refused(&mut state, &delete("g0")),
        Refusal::UnknownGroup(_)
    ));
    accepted(&mut state, &commit("new", "a", 0, 1));
}

#[test]
fn producer_ids_come_in_disjoint_blocks_for_registered_nodes() {
    let mut state = with_nodes(&[1, 2]);
    let allocate = |node, count| MetaOp::AllocateProducerIds { node, count };
    assert_eq!(
        accepted(&mut state, &allocate(1, 1000)),
        Change::ProducerIds {
            node: 1,
            ids: 0..1000
        }
    );
    assert_eq!(
        accepted(&mut state, &allocate(2, 1000)),
        Change::ProducerIds {
            node: 2,
            ids: 1000..2000
        }
    );
    assert!(matches!(
        refused(&mut state, &allocate(3, 1000)),
        Refusal::UnknownNode(3)
    ));
    for count in [0, PRODUCER_IDS_PER_BLOCK_MAX + 1] {
        assert!(matches!(
            refused(&mut state, &allocate(1, count)),
            Refusal::Invalid(_)
        ));
    }
    state.next_producer_id = PRODUCER_ID_END - 10;
    assert!(matches!(
        refused(&mut state, &allocate(1, 11)),
        Refusal::Limit(_)
    ));
    let last = accepted(&mut state, &allocate(1, 10));
    assert_eq!(
        last,
        Change::ProducerIds {
            node: 1,
            ids: PRODUCER_ID_END - 10..PRODUCER_ID_END
        }
    );
}

#[test]
fn the_group_counter_refuses_to_wrap() {
    let mut state = with_nodes(&[1]);
    state.next_group = u32::MAX - 1;
    let op = create("a", 2, 1, vec![vec![1], vec![1]]);
    assert!(matches!(refused(&mut state, &op), Refusal::Limit(_)));
    create_assigned(&mut state, "a", 1, 1);
}

/// How many partitions each node leads (is the first replica of), and
/// how many replicas it holds.
fn spread(state: &Metadata) -> (BTreeMap<NodeId, usize>, BTreeMap<NodeId, usize>) {
    let mut leads = BTreeMap::new();
    let partitions = state.topics().values().flat_map(|t| &t.partitions);
    for p in partitions {
        *leads.entry(p.replicas[0]).or_default() += 1;
    }
    (leads, state.replicas_per_node())
}

fn even(counts: &BTreeMap<NodeId, usize>, nodes: usize) -> bool {
    let (min, max) = (counts.values().min(), counts.values().max());
    counts.len() == nodes && max.zip(min).is_some_and(|(max, min)| max - min <= 1)
}

#[test]
fn assignment_spreads_leaders_and_replicas_evenly() {
    let mut state = with_nodes(&[1, 2, 3]);
    assert_eq!(
        state.assign(3, 3).expect("assignment"),
        [[2, 3, 1], [3, 1, 2], [1, 2, 3]],
        "starts at the node the next group rotates to (group 1 → the 2nd node)"
    );
    create_assigned(&mut state, "a", 6, 3);
    let (leads, held) = spread(&state);
    assert_eq!(leads.values().collect::<Vec<_>>(), [&2, &2, &2]);
    assert_eq!(held.values().collect::<Vec<_>>(), [&6, &6, &6]);

    // Topics of one partition each rotate their leader too.
    let mut state = with_nodes(&[10, 20, 30, 40, 50]);
    for i in 0..10 {
        create_assigned(&mut state, &format!("t{i}"), 1, 2);
    }
    let (leads, held) = spread(&state);
    assert!(even(&leads, 5), "{leads:?}");
    assert!(even(&held, 5), "{held:?}");

    // Any count over any number of nodes.
    for nodes in 1..=7 {
        for partitions in 1..=20 {
            let ids: Vec<NodeId> = (1..=nodes).collect();
            let mut state = with_nodes(&ids);
            let factor = nodes.min(3) as u32;
            create_assigned(&mut state, "a", partitions, factor);
            let (leads, held) = spread(&state);
            let used = (partitions as usize).min(nodes as usize);
            assert!(even(&leads, used), "{nodes} nodes, {partitions}: {leads:?}");
            // Followers are the nodes after the leader, so replicas are
            // even once every node leads as often as the others.
            if u64::from(partitions) % nodes == 0 {
                assert!(
                    even(&held, nodes as usize),
                    "{nodes} nodes, {partitions}: {held:?}"
                );
            }
        }
    }
    assert!(matches!(
        Metadata::new().assign(1, 1),
        Err(Refusal::ReplicationFactor(_))
    ));
}

#[test]
fn the_catalog_view_holds_the_topics() {
    let mut state = with_nodes(&[1, 2]);
    create_assigned(&mut state, "a", 2, 2);
    create_assigned(&mut state, "b", 1, 1);
    accepted(&mut state, &MetaOp::DeleteTopic { name: "a".into() });
    let op = MetaOp::AlterConfig {
        name: "b".into(),
        changes: vec![ConfigChange {
            key: ConfigKey::RetentionBytes,
            value: Some(7),
        }],
    };
    accepted(&mut state, &op);
    let catalog = state.catalog();
    let topics: Vec<&Topic> = catalog.topics().collect();
    assert_eq!(
        topics,
        [&Topic {
            name: "b".into(),
            id: 1,
            partitions: 1,
            retention_ms: None,
            retention_bytes: Some(7),
            created_ms: 1_700_000_000_000,
        }]
    );
    // The deleted topic's keys are dead to the broker.
    assert_eq!(
        catalog.owner_of(&catalog::partition_key("a", 0, 0)),
        catalog::KeyOwner::Dead
    );
}

#[test]
fn each_node_runs_the_groups_it_is_a_replica_of() {
    let mut state = with_nodes(&[1, 2, 3]);
    create_assigned(&mut state, "a", 3, 2);
    create_assigned(&mut state, "b", 1, 1);
    accepted(&mut state, &MetaOp::DeleteTopic { name: "a".into() });
    create_assigned(&mut state, "c", 2, 3);
    let c = &state.topics()["c"];
    for node in [1, 2, 3] {
        let on = state.groups_on(node);
        let mut expected: Vec<u32> = vec![5, 6];
        if state.topics()["b"].partitions[0].replicas == [node] {
            expected.insert(0, 4);
        }
        assert_eq!(
            on.keys().copied().collect::<Vec<_>>(),
            expected,
            "node {node}"
        );
        let five = &on[&5];
        assert_eq!(five.key, catalog::partition_key("c", c.id, 0));
        assert_eq!((five.topic.as_str(), five.partition), ("c", 0));
        assert_eq!(five.replicas, c.partitions[0].replicas);
    }
    let total: usize = [1, 2, 3].iter().map(|n| state.groups_on(*n).len()).sum();
    assert_eq!(total, 1 + 2 * 3, "b once, c's two partitions on all three");
    assert!(state.groups_on(9).is_empty());
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("store");
    (dir, store)
}

/// A store whose segments hold one record each, so that its front can be
/// cut at any record.
fn store_of_small_segments() -> (tempfile::TempDir, Store) {
    use crate::storage::format::{FILE_HEADER_SIZE, RECORD_HEADER_SIZE};
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StoreConfig {
        segment_bytes: (FILE_HEADER_SIZE + RECORD_HEADER_SIZE) as u64,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).expect("store");
    (dir, store)
}

fn append(store: &mut Store, op: &MetaOp) -> u64 {
    store
        .append(METADATA_KEY, encode(op).as_bytes())
        .expect("append")
}

/// Follows the key, expecting no stop.
fn follow(state: &mut Metadata, store: &mut Store) -> Followed {
    let followed = state.follow(store);
    if let Some(stop) = &followed.stopped {
        panic!("the fold stopped: {stop}");
    }
    followed
}

#[test]
fn following_the_key_folds_durable_records_a_bounded_number_at_a_time() {
    let (_dir, mut store) = store();
    let mut state = Metadata::new();
    let followed = follow(&mut state, &mut store);
    assert!(followed.caught_up && followed.verdicts.is_empty());
    append(&mut store, &register(1));
    append(&mut store, &create("a", 1, 1, vec![vec![1]]));
    let taken = append(&mut store, &create("a", 1, 1, vec![vec![1]]));
    // Not durable yet: nothing to fold.
    let followed = follow(&mut state, &mut store);
    assert!(followed.verdicts.is_empty());
    store.sync().expect("sync");
    let followed = follow(&mut state, &mut store);
    assert!(followed.caught_up);
    let offsets: Vec<u64> = followed.verdicts.iter().map(|(at, _)| *at).collect();
    assert_eq!(offsets, [0, 1, 2]);
    // The proposer of the second creation learns it lost, at its offset.
    assert_eq!(
        followed.verdicts[taken as usize].1,
        Verdict::Refused(Refusal::TopicExists("a".into()))
    );
    for i in 0..FOLLOW_RECORDS_MAX + 5 {
        append(&mut store, &commit(&format!("g{i}"), "a", 0, 1));
    }
    store.sync().expect("sync");
    let first = follow(&mut state, &mut store);
    assert_eq!(first.verdicts.len(), FOLLOW_RECORDS_MAX);
    assert!(!first.caught_up);
    let rest = follow(&mut state, &mut store);
    assert_eq!(rest.verdicts.len(), 5);
    assert!(rest.caught_up);
    assert_eq!(state.offsets().len(), FOLLOW_RECORDS_MAX + 5);
}

#[test]
fn following_stops_at_a_newer_record_and_at_a_gap() {
    let (_dir, mut store) = store_of_small_segments();
    append(&mut store, &register(1));
    let newer = br#"{"version":9,"op":{"Future":{}}}"#;
    store.append(METADATA_KEY, newer).expect("append");
    append(&mut store, &register(2));
    store.sync().expect("sync");
    let mut state = Metadata::new();
    let followed = state.follow(&mut store);
    // The record before the newer one is folded and its verdict reported
    // with the stop: the next call starts after it.
    assert_eq!(followed.verdicts.len(), 1);
    assert_eq!(followed.verdicts[0].0, 0);
    assert!(matches!(
        followed.verdicts[0].1,
        Verdict::Accepted(Change::NodeRegistered { id: 1, .. })
    ));
    assert!(!followed.caught_up);
    let error = followed.stopped.expect("stopped");
    assert!(
        matches!(
            error,
            FollowError::Newer {
                offset: 1,
                version: 9
            }
        ),
        "{error}"
    );
    assert_eq!(state.next_offset(), 1);
    let again = state.follow(&mut store);
    assert!(again.verdicts.is_empty(), "nothing is reported twice");
    assert!(again.stopped.is_some(), "stays stopped");
    assert_eq!(state.nodes().len(), 1);

    assert_eq!(store.truncate_front(METADATA_KEY, 2).expect("truncate"), 2);
    let mut fresh = Metadata::new();
    let error = fresh.follow(&mut store).stopped.expect("gap");
    assert!(
        matches!(error, FollowError::Gap { start: 2, next: 0 }),
        "{error}"
    );
}

#[test]
fn records_are_folded_only_at_the_next_offset() {
    let mut state = Metadata::new();
    accepted(&mut state, &register(1));
    let before = state.clone();
    for offset in [0, 2, u64::MAX] {
        let error = state.apply(offset, &register(2)).expect_err("out of order");
        assert!(
            matches!(error, FollowError::OutOfOrder { next: 1, .. }),
            "{error}"
        );
        let record = encode(&register(2));
        let error = state.apply_record(offset, record.as_bytes());
        assert!(matches!(error, Err(FollowError::OutOfOrder { .. })));
    }
    assert_eq!(state, before, "nothing folded, no offset moved");
    let mut at_end = Metadata {
        next_offset: u64::MAX,
        ..Metadata::new()
    };
    let error = at_end.apply(u64::MAX, &register(1));
    assert!(
        matches!(error, Err(FollowError::OutOfOrder { .. })),
        "no wrap"
    );
}

mod folds {
    //! The fold is a function of the records: random op sequences, built
    //! the way proposers build them (from a state that may be behind),
    //! fold to the same state and verdicts every time, and from any
    //! prefix's state carried through JSON (a snapshot of it) on.

    use proptest::prelude::*;

    use super::*;

    /// What a proposer does, with the state it has.
    #[derive(Clone, Debug)]
    enum Step {
        Register(NodeId, u8),
        Create(u8, u32, u32),
        /// A creation with a hand-made, possibly invalid, assignment.
        CreateRaw(u8, Vec<Vec<NodeId>>),
        Delete(u8),
        AddPartitions(u8, u32),
        Alter(u8, Option<u64>),
        Commit(u8, u8, u32, u64),
        DeleteGroup(u8),
        Allocate(NodeId, u64),
        Garbage,
    }

    fn step() -> impl Strategy<Value = Step> {
        let node = 1..6u64;
        prop_oneof![
            (node.clone(), 0..3u8).prop_map(|(n, port)| Step::Register(n, port)),
            (0..4u8, 0..5u32, 0..4u32).prop_map(|(t, p, f)| Step::Create(t, p, f)),
            (
                0..4u8,
                prop::collection::vec(prop::collection::vec(node.clone(), 0..4), 0..3)
            )
                .prop_map(|(t, a)| Step::CreateRaw(t, a)),
            (0..4u8).prop_map(Step::Delete),
            (0..4u8, 0..8u32).prop_map(|(t, c)| Step::AddPartitions(t, c)),
            (0..4u8, prop::option::of(0..1000u64)).prop_map(|(t, v)| Step::Alter(t, v)),
            (0..3u8, 0..4u8, 0..4u32, 0..100u64).prop_map(|(g, t, p, o)| Step::Commit(g, t, p, o)),
            (0..3u8).prop_map(Step::DeleteGroup),
            (node, 0..2000u64).prop_map(|(n, c)| Step::Allocate(n, c)),
            Just(Step::Garbage),
        ]
    }

    fn topic(t: u8) -> String {
        format!("t{t}")
    }

    /// The record a proposer whose state is `seen` writes for `step`.
    fn record(seen: &Metadata, step: &Step) -> String {
        let op = match step {
            Step::Register(id, port) => MetaOp::RegisterNode {
                id: *id,
                http: format!("n{id}:{}", 8080 + u16::from(*port)),
                kafka: None,
                peer: format!("n{id}:{}", 7000 + u16::from(*port)),
            },
            Step::Create(t, partitions, factor) => {
                let assignment = seen.assign(*partitions, *factor).unwrap_or_default();
                create(&topic(*t), *partitions, *factor, assignment)
            }
            Step::CreateRaw(t, assignment) => {
                let factor = assignment.first().map_or(1, |r| r.len() as u32);
                create(
                    &topic(*t),
                    assignment.len() as u32,
                    factor,
                    assignment.clone(),
                )
            }
            Step::Delete(t) => MetaOp::DeleteTopic { name: topic(*t) },
            Step::AddPartitions(t, extra) => {
                let (now, factor) = seen.topics().get(&topic(*t)).map_or((0, 1), |t| {
                    (t.partitions.len() as u32, t.replication_factor)
                });
                MetaOp::CreatePartitions {
                    name: topic(*t),
                    count: now + extra,
                    assignment: seen.assign(*extra, factor).unwrap_or_default(),
                }
            }
            Step::Alter(t, value) => MetaOp::AlterConfig {
                name: topic(*t),
                changes: vec![ConfigChange {
                    key: ConfigKey::RetentionMs,
                    value: *value,
                }],
            },
            Step::Commit(g, t, p, o) => commit(&format!("g{g}"), &topic(*t), *p, *o),
            Step::DeleteGroup(g) => MetaOp::DeleteGroup {
                group_id: format!("g{g}"),
            },
            Step::Allocate(node, count) => MetaOp::AllocateProducerIds {
                node: *node,
                count: *count,
            },
            Step::Garbage => return r#"{"version":1,"op":"?"}"#.to_string(),
        };
        encode(&op)
    }

    /// Records of `steps`, each proposer `lag` records behind the log.
    fn records(steps: &[(Step, usize)]) -> Vec<String> {
        let mut states = vec![Metadata::new()];
        let mut records = Vec::new();
        for (step, lag) in steps {
            let seen = &states[states.len().saturating_sub(1 + lag)];
            let record = record(seen, step);
            let mut next = states.last().expect("a state").clone();
            let offset = records.len() as u64;
            next.apply_record(offset, record.as_bytes())
                .expect("folded");
            records.push(record);
            states.push(next);
        }
        records
    }

    fn fold_from(mut state: Metadata, records: &[String]) -> (Metadata, Vec<Verdict>) {
        let mut verdicts = Vec::new();
        for (offset, record) in records
            .iter()
            .enumerate()
            .skip(state.next_offset() as usize)
        {
            let verdict = state.apply_record(offset as u64, record.as_bytes());
            verdicts.push(verdict.expect("no newer records"));
        }
        (state, verdicts)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_fold_of_the_same_records_agrees(
            steps in prop::collection::vec((step(), 0..3usize), 1..60)
        ) {
            let records = records(&steps);
            let (whole, verdicts) = fold_from(Metadata::new(), &records);
            let (again, verdicts_again) = fold_from(Metadata::new(), &records);
            prop_assert_eq!(&whole, &again);
            prop_assert_eq!(&verdicts, &verdicts_again);
            prop_assert_eq!(whole.next_offset(), records.len() as u64);
            for cut in 0..=records.len() {
                let (prefix, _) = fold_from(Metadata::new(), &records[..cut]);
                let json = serde_json::to_string(&prefix).expect("encode");
                let carried: Metadata = serde_json::from_str(&json).expect("decode");
                prop_assert_eq!(&carried, &prefix);
                let (resumed, rest) = fold_from(carried, &records);
                prop_assert_eq!(&resumed, &whole, "resumed at {}", cut);
                prop_assert_eq!(&rest[..], &verdicts[cut..]);
            }
        }
    }
}

mod replicated {
    //! Three nodes' real Raft groups in one process, group 0 on each, a
    //! router carrying their batches every tick: meta ops proposed by each
    //! node through group 0 fold to the same metadata on every node.

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::lock::lock;
    use crate::raft::durability::OwnGroupCommit;
    use crate::raft::groups::{GroupSpec, Groups, ProposeError, TIMING_DEFAULT};
    use crate::raft::types::{OpResult, Proposal};

    /// How long the test waits for an election or an apply before it
    /// fails rather than hang; nothing passes by waiting.
    const PATIENCE: Duration = Duration::from_secs(60);

    /// How often the router carries batches, as the runtime will tick.
    const TICK: Duration = Duration::from_millis(10);

    struct Node {
        _dir: tempfile::TempDir,
        store: Arc<Mutex<Store>>,
        group_commit: Arc<OwnGroupCommit>,
        groups: Arc<Groups>,
    }

    fn start(me: NodeId, names: &BTreeMap<NodeId, String>) -> Node {
        let (dir, store) = store();
        let store = Arc::new(Mutex::new(store));
        let group_commit = Arc::new(OwnGroupCommit::start(Arc::clone(&store)).expect("commit"));
        let groups = Groups::new(
            me,
            names.clone(),
            Arc::clone(&store),
            group_commit.clone(),
            TIMING_DEFAULT,
        )
        .expect("groups");
        Node {
            _dir: dir,
            store,
            group_commit,
            groups: Arc::new(groups),
        }
    }

    /// Each tick, every node's batches go to their addressees (the
    /// runtime's loop over peer links will do this; until it lands, the
    /// same steps as `raft/groups_tests.rs`'s router).
    async fn route(nodes: BTreeMap<NodeId, Arc<Groups>>) {
        loop {
            for (&from, node) in &nodes {
                node.tick(Instant::now());
                for (to, batch) in node.transport.take_batches() {
                    let peer = &nodes[&to];
                    peer.transport.deliver(from, batch.answers);
                    batch.notes.into_iter().for_each(|n| peer.on_note(from, n));
                    for call in batch.calls {
                        let peer = Arc::clone(peer);
                        tokio::spawn(async move {
                            let reply = peer.serve(from, call.group, call.rpc).await;
                            peer.transport.answer(from, call.id, reply);
                        });
                    }
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Proposes `ops`, made by node `by`, at group 0's leader until one
    /// takes them (the `Forward` frame will carry them there); the
    /// offset each send got.
    async fn propose(nodes: &BTreeMap<NodeId, Node>, by: NodeId, ops: Vec<Op>) -> Vec<u64> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leader = nodes[&by].groups.leader(METADATA_GROUP);
            if let Some(leader) = leader.and_then(|l| nodes.get(&l)) {
                let proposal = Proposal {
                    id: nodes[&by].groups.next_proposal_id(),
                    ops: ops.clone(),
                };
                match leader.groups.propose(METADATA_GROUP, proposal).await {
                    Ok((_, results)) => {
                        return results
                            .into_iter()
                            .map(|r| match r {
                                OpResult::Offset(offset) => offset,
                                other => panic!("a send's result: {other:?}"),
                            })
                            .collect();
                    }
                    Err(ProposeError::NotLeader(_)) => {}
                    Err(e) => panic!("proposing to group 0: {e:?}"),
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {by} found no leader to take its ops"
            );
            tokio::time::sleep(TICK).await;
        }
    }

    /// Follows node `id`'s metadata key until `records` are folded.
    async fn folded(node: &Node, records: u64) -> (Metadata, BTreeMap<u64, Verdict>) {
        let deadline = Instant::now() + PATIENCE;
        let mut state = Metadata::new();
        let mut verdicts = BTreeMap::new();
        while state.next_offset() < records {
            let followed = follow(&mut state, &mut lock(&node.store));
            verdicts.extend(followed.verdicts);
            assert!(
                Instant::now() < deadline,
                "{} records folded",
                state.next_offset()
            );
            tokio::time::sleep(TICK).await;
        }
        (state, verdicts)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn meta_ops_proposed_by_three_nodes_fold_alike_on_all() {
        let ids = [1, 2, 3];
        let names: BTreeMap<NodeId, String> =
            ids.iter().map(|&id| (id, format!("node-{id}"))).collect();
        let nodes: BTreeMap<NodeId, Node> = ids.iter().map(|&id| (id, start(id, &names))).collect();
        let groups = nodes
            .iter()
            .map(|(&id, node)| (id, Arc::clone(&node.groups)))
            .collect();
        let router = tokio::spawn(route(groups));
        for node in nodes.values() {
            let spec = GroupSpec {
                group: METADATA_GROUP,
                replicas: ids.to_vec(),
                keys: keys(),
                appender: None,
            };
            node.groups.add(spec).await.expect("group 0");
        }

        let mut proposer = Metadata::new();
        for id in ids {
            let op = register(id);
            let at = propose(&nodes, id, vec![send(&op)]).await;
            proposer.apply(at[0], &op).expect("in order");
        }
        let assignment = proposer.assign(3, 3).expect("assignment");
        let orders = create("orders", 3, 3, assignment);
        propose(&nodes, 2, vec![send(&orders)]).await;
        // Two nodes create one name at once: the fold takes the first.
        let (first, second) = (
            create("dup", 1, 1, vec![vec![1]]),
            create("dup", 1, 1, vec![vec![3]]),
        );
        let at = propose(&nodes, 3, vec![send(&first), send(&second)]).await;
        let commits = propose(&nodes, 1, vec![send(&commit("g", "orders", 2, 7))]).await;
        let records = commits[0] + 1;

        let mut states = Vec::new();
        for node in nodes.values() {
            states.push(folded(node, records).await);
        }
        let (state, verdicts) = &states[0];
        for other in &states[1..] {
            assert_eq!(&other.0, state, "every node folds the same metadata");
            assert_eq!(&other.1, verdicts, "and the same verdicts");
        }
        assert_eq!(state.nodes().keys().copied().collect::<Vec<_>>(), ids);
        assert!(matches!(
            verdicts[&at[0]],
            Verdict::Accepted(Change::TopicCreated { .. })
        ));
        assert_eq!(
            verdicts[&at[1]],
            Verdict::Refused(Refusal::TopicExists("dup".into()))
        );
        let groups: Vec<u32> = state.topics()["orders"]
            .partitions
            .iter()
            .map(|p| p.group)
            .collect();
        assert_eq!(groups, [1, 2, 3]);
        assert_eq!(state.topics()["dup"].partitions[0].replicas, [1]);
        assert_eq!(state.offsets()["g"]["orders"][&2].offset, 7);

        router.abort();
        for node in nodes.into_values() {
            node.groups.shutdown().await;
            node.group_commit.close_and_join().expect("group commit");
        }
    }
}
