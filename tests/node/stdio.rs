//! The real binary over stdin/stdout: every RPC, bad input, out-of-order
//! replies, restarts after `kill -9`.

use seglog::node::fields::SEND_MSG_BYTES_MAX;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::node_process::{Node, error_code};

#[test]
fn every_rpc_works_and_replies_carry_only_schema_fields() {
    let dir = TempDir::new().expect("tempdir");
    let mut node = Node::init(dir.path());
    for i in 0..3 {
        let reply = node.call(json!({"type": "send", "key": "k1", "msg": 100 + i}));
        assert_eq!(
            reply["body"],
            json!({"type": "send_ok", "in_reply_to": reply["body"]["in_reply_to"], "offset": i})
        );
    }
    node.call(json!({"type": "send", "key": "k2", "msg": {"any": ["json", null]}}));
    let poll =
        node.call(json!({"type": "poll", "offsets": {"k1": 1, "k2": 0, "none": 0, "k3": 5}}));
    assert_eq!(
        poll["body"]["msgs"],
        json!({"k1": [[1, 101], [2, 102]], "k2": [[0, {"any": ["json", null]}]]})
    );
    let empty = node.call(json!({"type": "poll", "offsets": {"k1": 3}}));
    assert_eq!(
        empty["body"]["msgs"],
        json!({}),
        "keys with nothing are left out"
    );
    let commit = node.call(json!({"type": "commit_offsets", "offsets": {"k1": 2, "k2": 0}}));
    assert_eq!(commit["body"]["type"], "commit_offsets_ok");
    assert_eq!(
        commit["body"].as_object().map(|b| b.len()),
        Some(2),
        "{commit}"
    );
    node.call(json!({"type": "commit_offsets", "offsets": {"k1": 1}}));
    let list = node.call(json!({"type": "list_committed_offsets", "keys": ["k1", "k2", "never"]}));
    assert_eq!(
        list["body"]["offsets"],
        json!({"k1": 2, "k2": 0}),
        "offsets only move forward"
    );
    assert_eq!(node.close(), Some(0));
    assert!(
        dir.path().join("n0").join("CLEAN").exists(),
        "clean shutdown marked"
    );
}

#[test]
fn bad_input_gets_errors_and_the_node_keeps_serving() {
    let dir = TempDir::new().expect("tempdir");
    let mut node = Node::start(&["--data-dir", dir.path().to_str().expect("utf-8")]);
    // Before init: temporarily unavailable.
    let early = node.call(json!({"type": "send", "key": "k", "msg": 1}));
    assert_eq!(error_code(&early), Some(11), "{early}");
    let init = node.call(json!({"type": "init", "node_id": "n0", "node_ids": ["n0"]}));
    assert_eq!(init["body"]["type"], "init_ok");

    let good = |node: &mut Node, n: u64| {
        let reply = node.call(json!({"type": "send", "key": "good", "msg": n}));
        assert_eq!(
            reply["body"]["offset"],
            json!(n),
            "good request after bad input: {reply}"
        );
    };
    let mut n = 0;
    let cases: Vec<(Value, u64)> = vec![
        (json!({"type": "send", "msg": 1}), 12),
        (json!({"type": "send", "key": 7, "msg": 1}), 12),
        (json!({"type": "send", "key": "k"}), 12),
        (json!({"type": "poll"}), 12),
        (json!({"type": "poll", "offsets": {"k": "zero"}}), 12),
        (json!({"type": "poll", "offsets": ["k"]}), 12),
        (json!({"type": "commit_offsets", "offsets": {"k": -1}}), 12),
        (json!({"type": "commit_offsets", "offsets": {"k": 1.5}}), 12),
        (json!({"type": "list_committed_offsets", "keys": "k"}), 12),
        (json!({"type": "frobnicate"}), 10),
        (json!({"type": 5}), 12),
        (
            json!({"type": "init", "node_id": "n9", "node_ids": ["n9"]}),
            12,
        ),
        (
            json!({"type": "send", "key": "k".repeat(5000), "msg": 1}),
            12,
        ),
        (
            json!({"type": "send", "key": "k", "msg": "m".repeat(1 << 20)}),
            12,
        ),
        // Past what fits a Raft log entry with room to spare.
        (
            json!({"type": "send", "key": "k", "msg": "m".repeat(SEND_MSG_BYTES_MAX)}),
            12,
        ),
    ];
    for (body, code) in cases {
        let reply = node.call(body.clone());
        assert_eq!(error_code(&reply), Some(code), "{body} -> {reply}");
        good(&mut node, n);
        n += 1;
    }
    // A commit with one bad offset changes nothing, not even the good ones.
    let half = node.call(json!({"type": "commit_offsets", "offsets": {"a": 5, "b": "x"}}));
    assert_eq!(error_code(&half), Some(12));
    let list = node.call(json!({"type": "list_committed_offsets", "keys": ["a", "b"]}));
    assert_eq!(list["body"]["offsets"], json!({}), "nothing half-applied");

    // Lines nobody can be answered for: only a stderr line.
    for line in [
        &b"not json at all"[..],
        b"{\"src\": \"c1\", \"body\": {\"type\": \"send\"}}",
        b"[1, 2, 3]",
        b"",
        b"\xff\xfe garbage bytes",
    ] {
        node.write_line(line);
    }
    let over_long = vec![b'x'; seglog::node::lines::LINE_BYTES_MAX + 10];
    node.write_line(&over_long);
    node.assert_silent();
    good(&mut node, n);
    let stderr = node.stderr_text();
    assert!(stderr.contains("cannot be answered"), "{stderr}");
    assert!(stderr.contains("over the limit"), "{stderr}");
    assert_eq!(node.close(), Some(0));
}

#[test]
fn replies_to_pipelined_requests_match_by_in_reply_to() {
    let dir = TempDir::new().expect("tempdir");
    let mut node = Node::init(dir.path());
    const REQUESTS: u64 = 300;
    let mut sends = std::collections::HashMap::new();
    let mut others = std::collections::HashSet::new();
    for i in 0..REQUESTS {
        let key = format!("k{}", i % 7);
        if i % 5 == 4 {
            others.insert(node.request(json!({"type": "poll", "offsets": {key: 0}})));
        } else {
            let id = node.request(json!({"type": "send", "key": key, "msg": i}));
            sends.insert(id, (i % 7, i));
        }
    }
    let mut offsets_by_key: std::collections::BTreeMap<u64, Vec<(u64, u64)>> = Default::default();
    let mut answered = std::collections::HashSet::new();
    let mut out_of_order = 0;
    let mut last_id = 0;
    for _ in 0..REQUESTS {
        let reply = node.reply();
        let id = reply["body"]["in_reply_to"].as_u64().expect("in_reply_to");
        assert!(answered.insert(id), "one reply per request");
        if id < last_id {
            out_of_order += 1;
        }
        last_id = id;
        if let Some((key, _)) = sends.get(&id) {
            assert_eq!(reply["body"]["type"], "send_ok", "{reply}");
            let offset = reply["body"]["offset"].as_u64().expect("offset");
            offsets_by_key.entry(*key).or_default().push((id, offset));
        } else {
            assert!(others.contains(&id));
            assert_eq!(reply["body"]["type"], "poll_ok", "{reply}");
        }
    }
    node.assert_silent();
    for (key, mut pairs) in offsets_by_key {
        pairs.sort();
        let offsets: Vec<u64> = pairs.iter().map(|p| p.1).collect();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "key k{key}: offsets in request order, no gaps"
        );
    }
    eprintln!("{out_of_order} replies arrived after a reply to a later request");
}

#[test]
fn kill_9_right_after_acknowledgement_loses_nothing() {
    let dir = TempDir::new().expect("tempdir");
    let mut acked: Vec<(String, u64, u64)> = Vec::new();
    let mut committed = std::collections::BTreeMap::new();
    for round in 0..5u64 {
        let mut node = Node::init(dir.path());
        for i in 0..20 {
            let key = format!("k{}", i % 3);
            let value = round * 100 + i;
            let reply = node.call(json!({"type": "send", "key": key, "msg": value}));
            let offset = reply["body"]["offset"].as_u64().expect("send_ok");
            acked.push((key, offset, value));
        }
        let key = format!("k{}", round % 3);
        let offset = round * 5;
        let reply = node.call(json!({"type": "commit_offsets", "offsets": {key.clone(): offset}}));
        assert_eq!(reply["body"]["type"], "commit_offsets_ok");
        committed.insert(key, offset);
        // Killed the moment the last acknowledgement arrived.
        node.kill9();
    }
    let mut node = Node::init(dir.path());
    for key in ["k0", "k1", "k2"] {
        let poll = node.call(json!({"type": "poll", "offsets": {key: 0}}));
        let got: Vec<(u64, u64)> = poll["body"]["msgs"][key]
            .as_array()
            .expect("records")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_u64().expect("offset"),
                    pair[1].as_u64().expect("msg"),
                )
            })
            .collect();
        let expected: Vec<(u64, u64)> = acked
            .iter()
            .filter(|(k, ..)| k == key)
            .map(|(_, offset, value)| (*offset, *value))
            .collect();
        assert_eq!(got, expected, "key {key}");
    }
    let list = node.call(json!({"type": "list_committed_offsets", "keys": ["k0", "k1", "k2"]}));
    assert_eq!(list["body"]["offsets"], json!(committed));
    let next = node.call(json!({"type": "send", "key": "k0", "msg": 1}));
    assert_eq!(
        next["body"]["offset"],
        json!(acked.iter().filter(|a| a.0 == "k0").count())
    );
}

#[test]
fn a_second_node_on_the_same_directory_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let mut first = Node::init(dir.path());
    let mut second = Node::start(&["--data-dir", dir.path().to_str().expect("utf-8")]);
    let reply = second.call(json!({"type": "init", "node_id": "n0", "node_ids": ["n0"]}));
    assert_eq!(error_code(&reply), Some(11), "{reply}");
    let text = reply["body"]["text"].as_str().expect("text");
    assert!(text.contains("locked by another process"), "{text}");
    let still = second.call(json!({"type": "send", "key": "k", "msg": 1}));
    assert_eq!(error_code(&still), Some(11), "not initialised");
    let ok = first.call(json!({"type": "send", "key": "k", "msg": 1}));
    assert_eq!(
        ok["body"]["offset"],
        json!(0),
        "the first node is undisturbed"
    );
}

#[test]
fn without_data_dir_each_process_gets_a_fresh_directory() {
    let mut node = Node::start(&[]);
    let reply = node.call(json!({"type": "init", "node_id": "n0", "node_ids": ["n0"]}));
    assert_eq!(reply["body"]["type"], "init_ok");
    node.call(json!({"type": "send", "key": "k", "msg": 1}));
    assert_eq!(node.close(), Some(0));
    let mut again = Node::start(&[]);
    again.call(json!({"type": "init", "node_id": "n0", "node_ids": ["n0"]}));
    let poll = again.call(json!({"type": "poll", "offsets": {"k": 0}}));
    assert_eq!(
        poll["body"]["msgs"],
        json!({}),
        "a new process starts empty"
    );
    let stderr = again.stderr_text();
    let path = stderr
        .lines()
        .find_map(|l| l.split("keeping data in ").nth(1))
        .expect("the data directory is logged");
    assert!(Path::new(path).is_dir(), "{path}");
    assert_eq!(again.close(), Some(0));
    let _ = std::fs::remove_dir_all(path);
}

#[test]
fn help_explains_the_subcommands_and_options() {
    let output = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--help")
        .output()
        .expect("run --help");
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in ["inspect", "--data-dir", "--segment-bytes", "--verbose"] {
        assert!(text.contains(expected), "--help lacks {expected}:\n{text}");
    }
}
