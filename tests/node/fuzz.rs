//! Random requests against a node run in-process (`seglog::node::serve`):
//! every field of every request type gets values of the wrong type, sign
//! and size. The node must answer each request exactly once, with its `_ok`
//! or a definite error (nothing is "maybe applied" when the disk is fine),
//! keep serving, and change no state for a request it refused: at the end
//! every key holds exactly the sends that got `send_ok`, at their offsets,
//! and the committed offsets are the largest that got `commit_offsets_ok`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use seglog::node::{NodeArgs, serve};

/// Requests per generated run: enough to mix every kind many times.
const REQUESTS_PER_CASE: usize = 120;

/// How long one reply may take before the test calls the node stuck.
const WAIT: Duration = Duration::from_secs(10);

/// Keys the generator prefers, so sends, polls and commits meet.
const KEYS: [&str; 3] = ["a", "b", "ключ"];

/// Any JSON value, nested a little: the "wrong type, sign and size" pool.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(0)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
        Just(Value::from("x".repeat(5000))),
        prop::sample::select(KEYS.to_vec()).prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(KEYS.to_vec()).prop_map(String::from),
                    "[a-z]{0,2}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A key: usually one of [`KEYS`], sometimes anything.
fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(KEYS.to_vec()).prop_map(Value::from),
        1 => any_json(),
    ]
}

/// An offset: usually a small number, sometimes anything.
fn offset() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..6).prop_map(Value::from),
        1 => any_json(),
    ]
}

/// A map of key to offset, sometimes not a map at all.
fn offsets() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::btree_map(
            prop::sample::select(KEYS.to_vec()).prop_map(String::from),
            offset(),
            0..4
        )
        .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => any_json(),
    ]
}

/// A request body without `msg_id`, of any kind, with fields dropped,
/// replaced or added at random.
fn body() -> impl Strategy<Value = Value> {
    let send = (key(), any_json()).prop_map(|(k, m)| json!({"type": "send", "key": k, "msg": m}));
    let poll = offsets().prop_map(|o| json!({"type": "poll", "offsets": o}));
    let commit = offsets().prop_map(|o| json!({"type": "commit_offsets", "offsets": o}));
    let list = prop_oneof![
        prop::collection::vec(key(), 0..4).prop_map(Value::from),
        any_json()
    ]
    .prop_map(|k| json!({"type": "list_committed_offsets", "keys": k}));
    let other = any_json().prop_map(|t| json!({"type": t}));
    let peer = any_json().prop_map(|s| json!({"type": "forward", "sends": s}));
    let kinds = prop_oneof![3 => send, 2 => poll, 2 => commit, 1 => list, 1 => other, 1 => peer];
    (
        kinds,
        prop::option::of(("[a-z_]{1,8}", any_json())),
        any::<u8>(),
    )
        .prop_map(|(mut body, extra, drop)| {
            if let Some((name, value)) = extra
                && name != "type"
            {
                body[name] = value;
            }
            // Now and then a field goes missing.
            if drop % 7 == 0
                && let Some(map) = body.as_object_mut()
            {
                let field = map.keys().find(|k| *k != "type").cloned();
                if let Some(field) = field {
                    map.remove(&field);
                }
            }
            body
        })
}

/// What the node acknowledged, to compare with what it holds at the end.
#[derive(Default)]
struct Acknowledged {
    /// Per key, offset to the message its send_ok named.
    sends: HashMap<String, BTreeMap<u64, Value>>,
    /// Per key, the largest offset a commit_offsets_ok covered.
    commits: HashMap<String, u64>,
}

async fn run_case(bodies: Vec<Value>) -> Result<(), TestCaseError> {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let (node_in, mut to_node) = tokio::io::duplex(1 << 20);
    let (node_out, from_node) = tokio::io::duplex(1 << 20);
    let args = NodeArgs {
        data_dir: Some(dir.path().to_path_buf()),
        segment_bytes: 4096,
        groups: None,
        min_free_bytes: None,
        verbose: 0,
    };
    let node = tokio::spawn(serve(node_in, node_out, args));
    let mut replies = BufReader::new(from_node).lines();
    let mut next_line = async || -> Value {
        let line = tokio::time::timeout(WAIT, replies.next_line())
            .await
            .expect("a reply in time")
            .expect("read")
            .expect("the node is still writing");
        serde_json::from_str(&line).expect("every output line is JSON")
    };
    let mut send = async |body: Value, msg_id: u64| {
        let mut body = body;
        body["msg_id"] = json!(msg_id);
        let mut line = json!({"src": "c1", "dest": "n0", "body": body}).to_string();
        line.push('\n');
        to_node.write_all(line.as_bytes()).await.expect("write");
    };
    send(
        json!({"type": "init", "node_id": "n0", "node_ids": ["n0"]}),
        1,
    )
    .await;
    prop_assert_eq!(&next_line().await["body"]["type"], "init_ok");
    let mut acked = Acknowledged::default();
    for (i, body) in bodies.iter().enumerate() {
        let msg_id = i as u64 + 2;
        send(body.clone(), msg_id).await;
        let reply = next_line().await;
        let reply = &reply["body"];
        prop_assert_eq!(reply["in_reply_to"].as_u64(), Some(msg_id), "{}", reply);
        let kind = reply["type"].as_str().unwrap_or_default();
        if kind == "error" {
            let code = reply["code"].as_u64().unwrap_or(u64::MAX);
            prop_assert!(
                [10, 11, 12].contains(&code),
                "only definite refusals: {} for {}",
                reply,
                body
            );
            continue;
        }
        match (body["type"].as_str(), kind) {
            (Some("send"), "send_ok") => {
                let key = body["key"]
                    .as_str()
                    .expect("an accepted send has a string key");
                let offset = reply["offset"].as_u64().expect("offset");
                acked
                    .sends
                    .entry(key.to_string())
                    .or_default()
                    .insert(offset, body["msg"].clone());
            }
            (Some("commit_offsets"), "commit_offsets_ok") => {
                for (key, offset) in body["offsets"].as_object().expect("accepted offsets") {
                    let offset = offset.as_u64().expect("accepted offset");
                    let slot = acked.commits.entry(key.clone()).or_insert(offset);
                    *slot = (*slot).max(offset);
                }
            }
            (Some("poll"), "poll_ok")
            | (Some("list_committed_offsets"), "list_committed_offsets_ok") => {}
            (asked, answered) => {
                return Err(TestCaseError::fail(format!(
                    "{asked:?} answered with {answered:?}: {reply}"
                )));
            }
        }
    }
    // State: exactly the acknowledged sends, gapless, and the acknowledged commits.
    let check_id = bodies.len() as u64 + 2;
    send(
        json!({"type": "poll", "offsets": {"a": 0, "b": 0, "ключ": 0}}),
        check_id,
    )
    .await;
    let poll = next_line().await;
    for key in KEYS {
        let held: BTreeMap<u64, Value> = poll["body"]["msgs"][key]
            .as_array()
            .map(|records| {
                records
                    .iter()
                    .map(|r| (r[0].as_u64().expect("offset"), r[1].clone()))
                    .collect()
            })
            .unwrap_or_default();
        let expected = acked.sends.remove(key).unwrap_or_default();
        prop_assert_eq!(&held, &expected, "key {}", key);
        prop_assert!(
            held.keys().copied().eq(0..held.len() as u64),
            "gapless {}",
            key
        );
    }
    send(
        json!({"type": "list_committed_offsets", "keys": ["a", "b", "ключ"]}),
        check_id + 1,
    )
    .await;
    let list = next_line().await;
    let listed: HashMap<String, u64> =
        serde_json::from_value(list["body"]["offsets"].clone()).expect("offsets");
    let expected: HashMap<String, u64> = acked
        .commits
        .into_iter()
        .filter(|(k, _)| KEYS.contains(&k.as_str()))
        .collect();
    prop_assert_eq!(listed, expected);
    drop(to_node);
    let ended = tokio::time::timeout(WAIT, node).await.expect("node exits");
    prop_assert!(matches!(ended, Ok(Ok(()))), "clean exit: {:?}", ended);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_requests_get_one_definite_answer_each_and_change_only_what_they_acknowledge(
        bodies in prop::collection::vec(body(), REQUESTS_PER_CASE)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run_case(bodies))?;
    }
}
