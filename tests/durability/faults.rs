//! Disk faults injected under the real binary: an `LD_PRELOAD` shim (built
//! here with `cc`) makes `fdatasync` fail with EIO once, or every write to a
//! regular file fail with ENOSPC while a flag file exists. The node must
//! acknowledge nothing it could lose, keep answering (polls included), and
//! lose nothing acknowledged when it is restarted without the fault.
//! The node and `seglog serve` heal in place: once the fault is gone each
//! reopens its store by itself and takes writes again, in the same
//! process, and a `kill -9` and restart after that still loses nothing
//! acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::node_process::{Node, error_code};
use crate::support::serve_process::Server;
use crate::support::tools;

/// Maelstrom's error codes the node uses for writes (`maelstrom.md`).
const CRASH: u64 = 13;
const TEMPORARILY_UNAVAILABLE: u64 = 11;

/// The shim's source, `faults.c` beside this file. `SEGLOG_FAULTS` names a
/// directory: while `enospc` exists in it, `write`, `pwrite64` and
/// `pwritev64` on regular files fail with ENOSPC; while `short` exists,
/// they write at most 7 bytes a call (a short write, which the caller must
/// continue); when `fdatasync-eio` exists, the next `fdatasync` removes it
/// and fails with EIO (later ones succeed again, as they do on Linux after
/// a lost writeback: the store must not trust them); while
/// `fdatasync-eio-all` exists, every `fdatasync` fails with EIO.
const SHIM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/durability/faults.c");

/// Builds the shim into `dir` and returns its path.
fn build_shim(dir: &Path) -> PathBuf {
    tools::build_shim(Path::new(SHIM), &dir.join("faults.so"), &["-ldl"])
}

/// A node with the shim loaded on a new data directory, and the directory
/// its faults are controlled from: (its temporary root, data, faults, node).
fn start_faulty() -> (TempDir, PathBuf, PathBuf, Node) {
    let tmp = TempDir::new().expect("tempdir");
    let (data, faults) = (tmp.path().join("data"), tmp.path().join("faults"));
    std::fs::create_dir_all(&faults).expect("faults dir");
    let shim = build_shim(tmp.path());
    let node = Node::init_with_env(
        &data,
        [
            ("LD_PRELOAD", shim.as_os_str()),
            ("SEGLOG_FAULTS", faults.as_os_str()),
        ],
    );
    (tmp, data, faults, node)
}

/// What a test sent and how each send was answered.
#[derive(Default)]
struct Sends {
    /// Acknowledged: key, offset, value.
    acked: Vec<(String, u64, u64)>,
    /// Values whose send got an error that may have taken effect (crash).
    indefinite: Vec<u64>,
    /// Errors by code.
    errors: BTreeMap<u64, usize>,
}

impl Sends {
    fn send(&mut self, node: &mut Node, key: &str, value: u64) -> Value {
        let reply = node.call(json!({"type": "send", "key": key, "msg": value}));
        match error_code(&reply) {
            None => {
                let offset = reply["body"]["offset"].as_u64().expect("send_ok");
                self.acked.push((key.to_string(), offset, value));
            }
            Some(code) => {
                assert!(
                    code == CRASH || code == TEMPORARILY_UNAVAILABLE,
                    "a write fault is answered 13 (may have happened) or 11 (did not): {reply}"
                );
                if code == CRASH {
                    self.indefinite.push(value);
                }
                *self.errors.entry(code).or_default() += 1;
            }
        }
        reply
    }
}

/// The records of `key` a node serves from offset 0, as (offset, value).
fn poll_all(node: &mut Node, key: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    loop {
        let from = out.len() as u64;
        let reply = node.call(json!({"type": "poll", "offsets": {key: from}}));
        assert_eq!(
            reply["body"]["type"], "poll_ok",
            "polls keep working: {reply}"
        );
        let Some(msgs) = reply["body"]["msgs"][key].as_array() else {
            return out;
        };
        if msgs.is_empty() {
            return out;
        }
        for pair in msgs {
            let offset = pair[0].as_u64().expect("offset");
            assert_eq!(offset, out.len() as u64, "contiguous offsets");
            out.push((offset, pair[1].as_u64().expect("value")));
        }
    }
}

/// Every acknowledged send is served at its offset, and every record
/// served was sent (acknowledged, or answered with an indefinite error).
fn check_log(node: &mut Node, key: &str, sends: &Sends) {
    let served = poll_all(node, key);
    for (k, offset, value) in &sends.acked {
        if k == key {
            assert_eq!(
                served.get(*offset as usize),
                Some(&(*offset, *value)),
                "acknowledged send of {value} at {offset} is served"
            );
        }
    }
    for (_, value) in &served {
        let known = sends.acked.iter().any(|a| a.0 == key && a.2 == *value)
            || sends.indefinite.contains(value);
        assert!(known, "{value} was never sent, or was refused definitely");
    }
}

/// Sends `first`, `first + 1`, ... to `key` until one is acknowledged, in
/// the same process as before (no restart): the node heals its store in
/// place. Every refusal on the way must be error 11 (definite) or, for a
/// write taken just before the store was found poisoned, 13. Returns the
/// acknowledged value and how long it took.
fn send_until_healed(
    node: &mut Node,
    sends: &mut Sends,
    key: &str,
    first: u64,
) -> (u64, std::time::Duration) {
    let started = std::time::Instant::now();
    let deadline = started + crate::support::serve_process::PATIENCE;
    for value in first.. {
        let reply = sends.send(node, key, value);
        if error_code(&reply).is_none() {
            assert!(node.is_running(), "healed by a restart");
            return (value, started.elapsed());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not heal in place: {reply}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    unreachable!("the values run out")
}

/// A failed fdatasync poisons the store: the write it covered gets an
/// indefinite error (13), later writes error 11 (definite) while the node
/// stops its Raft groups, reopens the store and starts them again, all in
/// the same process; then writes are acknowledged again, and a `kill -9`
/// and restart afterwards reads back every acknowledged write, before and
/// after the heal, and no definitely refused one.
#[test]
fn node_failed_fdatasync_heals_in_place_and_loses_nothing_acknowledged() {
    let (_tmp, data, faults, mut node) = start_faulty();
    let mut sends = Sends::default();
    for value in 0..10 {
        sends.send(&mut node, "k", value);
    }
    let commit = node.call(json!({"type": "commit_offsets", "offsets": {"k": 3}}));
    assert_eq!(commit["body"]["type"], "commit_offsets_ok", "{commit}");
    assert_eq!(sends.acked.len(), 10, "no fault yet");
    std::fs::write(faults.join("fdatasync-eio"), b"").expect("arm the fault");
    let failed = sends.send(&mut node, "k", 10);
    assert_eq!(error_code(&failed), Some(CRASH), "{failed}");
    assert!(!faults.join("fdatasync-eio").exists(), "the fault fired");
    let refused = sends.send(&mut node, "k", 11);
    assert_eq!(
        error_code(&refused),
        Some(TEMPORARILY_UNAVAILABLE),
        "{refused}"
    );
    let (value, took) = send_until_healed(&mut node, &mut sends, "k", 12);
    eprintln!("node, one failed fdatasync: writes acknowledged again in place after {took:?}");
    assert!(
        node.wait_for_stderr("store healed in place"),
        "the node says it healed"
    );
    for value in value + 1..value + 5 {
        let reply = sends.send(&mut node, "k", value);
        assert_eq!(error_code(&reply), None, "{reply}");
    }
    let mut node = commit_kill_and_restart(node, &data, &sends, 5);
    let after = sends.send(&mut node, "k", 100);
    assert_eq!(error_code(&after), None, "{after}");
    check_log(&mut node, "k", &sends);
}

/// Makes every fdatasync fail from now on; the send of `value` to `k` that
/// meets it gets 13, and the node's first reopen is seen to fail (recovery
/// syncs the journal).
fn fail_every_fdatasync(node: &mut Node, faults: &Path, sends: &mut Sends, value: u64) {
    std::fs::write(faults.join("fdatasync-eio-all"), b"").expect("arm the fault");
    let failed = sends.send(node, "k", value);
    assert_eq!(error_code(&failed), Some(CRASH), "{failed}");
    assert!(
        node.wait_for_stderr("to heal the store in place failed"),
        "a reopen was tried and failed while the fault lasted"
    );
}

/// fdatasync failing until the fault is cleared: every reopen fails
/// (recovery syncs the journal), so writes and commits are refused with
/// error 11 meanwhile, while polls and lists keep answering; once the fault
/// is gone the same process heals and takes writes, and a `kill -9` and
/// restart loses nothing acknowledged and shows nothing refused.
#[test]
fn node_failing_fdatasync_refuses_writes_until_it_heals_in_place() {
    let (_tmp, data, faults, mut node) = start_faulty();
    let mut sends = Sends::default();
    for value in 0..5 {
        sends.send(&mut node, "k", value);
    }
    let commit = node.call(json!({"type": "commit_offsets", "offsets": {"k": 2}}));
    assert_eq!(commit["body"]["type"], "commit_offsets_ok", "{commit}");
    fail_every_fdatasync(&mut node, &faults, &mut sends, 5);
    for value in 6..9 {
        let reply = sends.send(&mut node, "k", value);
        assert_eq!(error_code(&reply), Some(TEMPORARILY_UNAVAILABLE), "{reply}");
    }
    let commit = node.call(json!({"type": "commit_offsets", "offsets": {"k": 4}}));
    assert_eq!(
        error_code(&commit),
        Some(TEMPORARILY_UNAVAILABLE),
        "{commit}"
    );
    check_log(&mut node, "k", &sends);
    let listed = node.call(json!({"type": "list_committed_offsets", "keys": ["k"]}));
    assert_eq!(listed["body"]["offsets"], json!({"k": 2}), "{listed}");
    std::fs::remove_file(faults.join("fdatasync-eio-all")).expect("clear the fault");
    let (value, took) = send_until_healed(&mut node, &mut sends, "k", 9);
    eprintln!("node, fdatasync failing, then cleared: writes acknowledged again after {took:?}");
    let reply = sends.send(&mut node, "k", value + 1);
    assert_eq!(error_code(&reply), None, "{reply}");
    commit_kill_and_restart(node, &data, &sends, 4);
}

/// The end of a healed node's test: commits `offset` of `k`, checks the
/// log, then `kill -9` and a restart, after which every acknowledged send
/// is at its offset and the commit stands; returns the restarted node.
fn commit_kill_and_restart(mut node: Node, data: &Path, sends: &Sends, offset: u64) -> Node {
    let commit = node.call(json!({"type": "commit_offsets", "offsets": {"k": offset}}));
    assert_eq!(commit["body"]["type"], "commit_offsets_ok", "{commit}");
    check_log(&mut node, "k", sends);
    node.kill9();

    let mut node = Node::init(data);
    check_log(&mut node, "k", sends);
    let listed = node.call(json!({"type": "list_committed_offsets", "keys": ["k"]}));
    assert_eq!(listed["body"]["offsets"]["k"], json!(offset), "{listed}");
    node
}

/// Regression guard: the input ending while a heal is retrying (every
/// reopen fails) calls the heal off and the node exits at once, reporting
/// that it could not close its store cleanly, rather than waiting for a
/// heal that cannot come.
#[test]
fn node_input_ending_during_a_heal_ends_the_node() {
    let (_tmp, _data, faults, mut node) = start_faulty();
    let mut sends = Sends::default();
    sends.send(&mut node, "k", 0);
    fail_every_fdatasync(&mut node, &faults, &mut sends, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(node.close()));
    let code = rx
        .recv_timeout(crate::support::serve_process::PATIENCE)
        .expect("the node exits once its input ends");
    assert_eq!(code, Some(1), "the store could not be closed cleanly");
}

/// A full disk (ENOSPC on every write) gets errors, never an
/// acknowledgement; polls keep working; once there is space again the same
/// process heals its store in place and takes writes, and a `kill -9` and
/// restart loses nothing acknowledged.
#[test]
fn full_disk_acknowledges_nothing_and_heals_in_place() {
    let (_tmp, data, faults, mut node) = start_faulty();
    let mut sends = Sends::default();
    for value in 0..10 {
        sends.send(&mut node, &format!("k{}", value % 2), value);
    }
    assert_eq!(sends.acked.len(), 10, "no fault yet");
    std::fs::write(faults.join("enospc"), b"").expect("fill the disk");
    for value in 10..20 {
        let reply = sends.send(&mut node, &format!("k{}", value % 2), value);
        assert!(
            error_code(&reply).is_some(),
            "acknowledged on a full disk: {reply}"
        );
    }
    for key in ["k0", "k1"] {
        check_log(&mut node, key, &sends);
    }
    std::fs::remove_file(faults.join("enospc")).expect("free space");
    let (_, took) = send_until_healed(&mut node, &mut sends, "k0", 20);
    eprintln!("node, full disk, then space back: writes acknowledged again after {took:?}");
    for key in ["k0", "k1"] {
        check_log(&mut node, key, &sends);
    }
    node.kill9();

    let mut node = Node::init(&data);
    for key in ["k0", "k1"] {
        check_log(&mut node, key, &sends);
    }
    let after = sends.send(&mut node, "k1", 100);
    assert_eq!(
        error_code(&after),
        None,
        "writes again after reopening: {after}"
    );
    for key in ["k0", "k1"] {
        check_log(&mut node, key, &sends);
    }
}

/// Short writes (at most 7 bytes per call) on every file are continued, not
/// taken for the whole: the node works as usual and a restart reads back
/// exactly what was acknowledged.
#[test]
fn short_writes_are_continued() {
    let (_tmp, data, faults, mut node) = start_faulty();
    std::fs::write(faults.join("short"), b"").expect("arm short writes");
    let mut sends = Sends::default();
    for value in 0..30 {
        let reply = sends.send(&mut node, &format!("k{}", value % 3), value);
        assert_eq!(error_code(&reply), None, "{reply}");
    }
    let commit = node.call(json!({"type": "commit_offsets", "offsets": {"k0": 5}}));
    assert_eq!(commit["body"]["type"], "commit_offsets_ok", "{commit}");
    for key in ["k0", "k1", "k2"] {
        check_log(&mut node, key, &sends);
        assert_eq!(poll_all(&mut node, key).len(), 10, "{key}");
    }
    node.kill9();
    let mut node = Node::init(&data);
    for key in ["k0", "k1", "k2"] {
        check_log(&mut node, key, &sends);
        assert_eq!(poll_all(&mut node, key).len(), 10, "{key}");
    }
    let listed = node.call(json!({"type": "list_committed_offsets", "keys": ["k0"]}));
    assert_eq!(listed["body"]["offsets"]["k0"], json!(5), "{listed}");
}

/// `seglog serve` with the shim, on a new data directory with topic `t`
/// (one partition): (temporary root, data, faults, server).
fn start_faulty_server() -> (TempDir, PathBuf, PathBuf, Server) {
    let tmp = TempDir::new().expect("tempdir");
    let (data, faults) = (tmp.path().join("data"), tmp.path().join("faults"));
    std::fs::create_dir_all(&faults).expect("faults dir");
    let shim = build_shim(tmp.path());
    // -v: the server logs each sync point once published, which the
    // full-disk test waits for.
    let server = Server::start_with_env(
        &data,
        &["-v"],
        [
            ("LD_PRELOAD", shim.as_os_str()),
            ("SEGLOG_FAULTS", faults.as_os_str()),
        ],
    );
    server.create_topic("t", 1);
    (tmp, data, faults, server)
}

/// One produce of `value` to partition 0 of `t`: its status and body.
fn produce(server: &Server, value: u64) -> (u16, Value) {
    server.post(
        "/topics/t/partitions/0",
        json!({"records": [{"value": value}]}),
    )
}

/// Kills the server and starts it again without the shim: every value in
/// `acked` is there in order, `refused` values (a definite error) are not,
/// and nothing else is but the `maybe` ones.
fn restart_without_faults(server: Server, data: &Path, sends: &HttpSends) -> Server {
    server.kill();
    let server = Server::start(data, &[]);
    sends.check(&fetched_values(&server));
    server
}

/// What an HTTP test produced and how each produce was answered.
#[derive(Default)]
struct HttpSends {
    /// Acknowledged (200), in order.
    acked: Vec<u64>,
    /// Got a 503 that may have taken effect (50302).
    maybe: Vec<u64>,
    /// Got a definite refusal (50301 and the like): must never be read.
    refused: Vec<u64>,
}

impl HttpSends {
    /// Produces `value` and files it by the answer; returns the answer.
    fn produce(&mut self, server: &Server, value: u64) -> (u16, Value) {
        let (status, body) = produce(server, value);
        match (status, body["error_code"].as_u64()) {
            (200, _) => self.acked.push(value),
            (503, Some(50302)) => self.maybe.push(value),
            _ => self.refused.push(value),
        }
        (status, body)
    }

    /// Checks what a fetch of the whole partition read.
    fn check(&self, seen: &[Value]) {
        let seen: Vec<u64> = seen
            .iter()
            .map(|v| v.as_u64().unwrap_or_else(|| panic!("a value {v}")))
            .collect();
        let kept: Vec<u64> = seen
            .iter()
            .copied()
            .filter(|v| self.acked.contains(v))
            .collect();
        assert_eq!(
            kept, self.acked,
            "acknowledged values lost or reordered: {seen:?}"
        );
        for value in &seen {
            assert!(
                self.acked.contains(value) || self.maybe.contains(value),
                "{value} was read, but it was refused definitely or never sent: {seen:?}"
            );
        }
    }
}

/// Asserts a 503 with this error code.
fn assert_code(status: u16, body: &Value, code: u64) {
    assert_eq!(
        (status, body["error_code"].as_u64()),
        (503, Some(code)),
        "{body}"
    );
}

fn fetched_values(server: &Server) -> Vec<Value> {
    server
        .fetch("t", 0, "offset=0&max_records=1000")
        .iter()
        .map(|r| r["value"].clone())
        .collect()
}

/// Produces `first`, `first + 1`, ... until one is acknowledged, in the
/// same process as before (no restart); every refusal on the way must be
/// the retriable one of a store being reopened. Returns how long it took.
fn produce_until_healed(
    server: &mut Server,
    sends: &mut HttpSends,
    first: u64,
) -> (u64, std::time::Duration) {
    let (pid, started) = (server.pid(), std::time::Instant::now());
    let deadline = started + crate::support::serve_process::PATIENCE;
    for value in first.. {
        let (status, body) = sends.produce(server, value);
        if status == 200 {
            assert!(
                server.is_running() && server.pid() == pid,
                "healed by a restart"
            );
            return (value, started.elapsed());
        }
        assert_code(status, &body, 50301);
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not heal in place: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    unreachable!("the values run out")
}

/// [`start_faulty_server`], value 1 produced and acknowledged, then the
/// fault `flag` armed and value 2 produced: a 503 that may or may not
/// have happened (50302).
fn second_write_meets(flag: &str) -> (TempDir, PathBuf, PathBuf, Server, HttpSends) {
    let (tmp, data, faults, server) = start_faulty_server();
    let mut sends = HttpSends::default();
    assert_eq!(sends.produce(&server, 1).0, 200);
    // A journaled batch goes to its segment after its acknowledgement: the
    // fault comes only once that is done, so that the next produce is the
    // write that meets it (else that late segment write would, and poison
    // the store first: a 50301, also right, but not these tests' case).
    assert!(
        server.wait_for_log("published after"),
        "the first sync point is published"
    );
    std::fs::write(faults.join(flag), b"").expect("arm the fault");
    let (status, body) = sends.produce(&server, 2);
    assert_code(status, &body, 50302);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("may or may not") || m.contains("disk is full")),
        "{body}"
    );
    (tmp, data, faults, server, sends)
}

/// EIO from one fdatasync: the write it covered gets a 503 that may or may
/// not have happened, the store is poisoned and heals in place (the same
/// process takes writes again by itself), and a `kill -9` and restart
/// afterwards reads back everything acknowledged, before and after.
#[test]
fn http_failed_fdatasync_heals_in_place_and_loses_nothing_acknowledged() {
    let (_tmp, data, faults, mut server, mut sends) = second_write_meets("fdatasync-eio");
    assert!(!faults.join("fdatasync-eio").exists(), "the fault fired");
    let (value, took) = produce_until_healed(&mut server, &mut sends, 3);
    eprintln!("one failed fdatasync: writes taken again in place after {took:?}");
    assert_eq!(server.metric("seglog_store_heals_total"), 1);
    assert_eq!(server.metric("seglog_store_healing"), 0);
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(sends.produce(&server, value + 1).0, 200);
    sends.check(&fetched_values(&server));
    let server = restart_without_faults(server, &data, &sends);
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(produce(&server, 1000).0, 200);
}

/// fdatasync failing until the fault is cleared: writes are refused
/// definitely (50301, retriable) while every reopen fails, reads and
/// `/health` ("healing") and `/metrics` say so, and once the fault is gone
/// the same process takes writes again without a restart; a `kill -9` and
/// restart afterwards loses nothing acknowledged and shows nothing refused.
#[test]
fn http_failing_fdatasync_refuses_writes_until_it_heals_in_place() {
    let (_tmp, data, faults, mut server, mut sends) = second_write_meets("fdatasync-eio-all");
    // Poisoned, and every reopen fails (recovery fdatasyncs the journal):
    // later writes are refused before they are applied, as retriable.
    for value in 3..6 {
        let (status, body) = sends.produce(&server, value);
        assert_code(status, &body, 50301);
    }
    let commit = json!({"offsets": [{"topic": "t", "partition": 0, "offset": 1}]});
    let (status, body) = server.post("/groups/g/offsets", commit);
    assert_code(status, &body, 50301);
    let (status, health) = server.get("/health");
    assert_eq!(
        (status, &health["status"]),
        (503, &json!("healing")),
        "{health}"
    );
    assert_eq!(server.metric("seglog_store_healing"), 1);
    assert_eq!(server.metric("seglog_store_heals_total"), 0);
    // Reads go on: the acknowledged value is served.
    assert_eq!(fetched_values(&server).first(), Some(&json!(1)));
    sends.check(&fetched_values(&server));
    assert!(
        server.wait_for_log("reopening the poisoned store failed"),
        "a reopen was tried and failed while the fault lasted"
    );
    std::fs::remove_file(faults.join("fdatasync-eio-all")).expect("clear the fault");
    let (value, took) = produce_until_healed(&mut server, &mut sends, 6);
    eprintln!("fdatasync failing, then cleared: writes taken again in place after {took:?}");
    assert_eq!(server.metric("seglog_store_heals_total"), 1);
    assert!(server.metric("seglog_store_heal_failures_total") >= 1);
    assert_eq!(server.get("/health").0, 200);
    let commit = json!({"offsets": [{"topic": "t", "partition": 0, "offset": 1}]});
    assert_eq!(server.post("/groups/g/offsets", commit).0, 200);
    assert_eq!(sends.produce(&server, value + 1).0, 200);
    sends.check(&fetched_values(&server));
    let server = restart_without_faults(server, &data, &sends);
    let (status, group) = server.get("/groups/g");
    assert_eq!(
        (status, &group["partitions"][0]["offset"]),
        (200, &json!(1)),
        "{group}"
    );
    assert_eq!(produce(&server, 1000).0, 200);
}

/// A full disk (ENOSPC on every write): the write that meets it gets a 503
/// that may or may not have happened, later ones are refused; once space
/// is back the same process reopens its store and takes writes again, and
/// a `kill -9` and restart loses nothing acknowledged.
#[test]
fn http_full_disk_is_a_503_and_heals_in_place_once_space_is_back() {
    let (_tmp, data, faults, mut server, mut sends) = second_write_meets("enospc");
    // A topic cannot be created either, and nothing changes.
    let (status, body) = server.post("/topics", json!({"name": "u", "partitions": 1}));
    assert_code(status, &body, 50302);
    assert_eq!(server.get("/topics"), (200, json!(["t"])));
    // Every reopen fails while the disk is full (recovery rewrites the
    // journal): refused, retriably.
    let (status, body) = sends.produce(&server, 3);
    assert_code(status, &body, 50301);
    assert_eq!(fetched_values(&server).first(), Some(&json!(1)));
    std::fs::remove_file(faults.join("enospc")).expect("free the disk");
    let (value, took) = produce_until_healed(&mut server, &mut sends, 4);
    eprintln!("full disk, then space back: writes taken again in place after {took:?}");
    assert_eq!(sends.produce(&server, value + 1).0, 200);
    sends.check(&fetched_values(&server));
    let server = restart_without_faults(server, &data, &sends);
    assert_eq!(server.get("/topics"), (200, json!(["t"])));
    assert_eq!(produce(&server, 1000).0, 200);
}
