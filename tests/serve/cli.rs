//! The command-line client (`seglog topic`, `produce`, `consume`,
//! `group`), the real binary against a real `seglog serve`: round trips
//! through produce and consume in every line format, consumer groups and
//! seeks, `--output json` parsed, the progress line, and every error path
//! with its exit code (1 refused, 2 usage or input, 3 unreachable).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::serve_process::{PATIENCE, Server};

/// What one run of the client did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout as JSON (`--output json` prints one value).
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    /// stdout as JSON lines.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{}\n{}", self.stdout, self.stderr);
        self
    }

    fn fails(self, code: i32, says: &str) -> Run {
        assert_eq!(self.code, code, "{}\n{}", self.stdout, self.stderr);
        assert!(
            self.stderr.contains(says),
            "stderr lacks {says:?}:\n{}",
            self.stderr
        );
        self
    }
}

fn client(base: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args(args)
        .env("SEGLOG_SERVER", base)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run seglog");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // A command that fails early stops reading: that is no error here.
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("wait for seglog");
    writer.join().expect("stdin writer");
    Run {
        code: output.status.code().expect("an exit code"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

fn seglog(server: &Server, args: &[&str]) -> Run {
    client(&server.base, args, b"")
}

fn seglog_in(server: &Server, args: &[&str], stdin: &str) -> Run {
    client(&server.base, args, stdin.as_bytes())
}

/// `seglog consume TOPIC --output json ARGS`: the records' (partition,
/// offset, key, value).
fn consumed(server: &Server, topic: &str, args: &[&str]) -> Vec<(u64, u64, Value, Value)> {
    let mut all = vec!["consume", topic, "--output", "json"];
    all.extend_from_slice(args);
    seglog(server, &all)
        .ok()
        .json_lines()
        .iter()
        .map(|r| {
            (
                r["partition"].as_u64().expect("partition"),
                r["offset"].as_u64().expect("offset"),
                r["key"].clone(),
                r["value"].clone(),
            )
        })
        .collect()
}

/// The sum of `field` over `value["partitions"]`.
fn sum(value: &Value, field: &str) -> u64 {
    value["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p[field].as_u64().expect("a number"))
        .sum()
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let run = seglog(&server, &["topic", "list"]).ok();
    assert!(run.stdout.contains("no topics"), "{}", run.stdout);
    assert_eq!(
        seglog(&server, &["topic", "list", "--output", "json"])
            .ok()
            .json(),
        json!([])
    );

    let run = seglog(&server, &["topic", "create", "orders", "-p", "3"]).ok();
    assert_eq!(run.stdout, "created topic orders with 3 partitions\n");
    let run = seglog(
        &server,
        &[
            "topic",
            "create",
            "logs",
            "--partitions",
            "1",
            "--retention-ms",
            "604800000",
            "--retention-bytes",
            "1048576",
            "--output",
            "json",
        ],
    )
    .ok();
    let created = run.json();
    assert_eq!(created["created"], true);
    assert_eq!(created["topic"]["retention_ms"], 604_800_000);
    assert_eq!(
        created["topic"]["partitions"].as_array().map(Vec::len),
        Some(1)
    );

    seglog(&server, &["topic", "create", "orders"]).fails(
        1,
        "already exists (HTTP 409, code 40901); `seglog topic describe NAME`",
    );
    let run = seglog(
        &server,
        &["topic", "create", "orders", "--if-not-exists", "-p", "9"],
    )
    .ok();
    assert_eq!(
        run.stdout,
        "exists already: topic orders with 3 partitions\n"
    );
    seglog(&server, &["topic", "create", "bad name"]).fails(1, "code 40002");

    server.produce("orders", 2, &[json!(1), json!(2)]);
    let run = seglog(&server, &["topic", "list"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TOPIC", "PARTITIONS", "RECORDS", "SIZE", "RETENTION"]
    );
    assert!(
        lines[1].starts_with("logs ") && lines[1].ends_with("7d old, 1.0 MiB per partition"),
        "{}",
        lines[1]
    );
    let orders: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(orders[..3], ["orders", "3", "2"], "{}", lines[2]);
    let listed = seglog(&server, &["topic", "list", "--output", "json"])
        .ok()
        .json();
    assert_eq!(listed[1]["name"], "orders");
    assert_eq!(listed[1]["records"], 2);

    let run = seglog(&server, &["topic", "describe", "orders"]).ok();
    assert!(
        run.stdout
            .starts_with("topic orders: 3 partitions, 2 records"),
        "{}",
        run.stdout
    );
    let row: Vec<&str> = run
        .stdout
        .lines()
        .nth(4)
        .expect("partition 2's row")
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["2", "0", "2", "2"]);
    let described = seglog(
        &server,
        &["topic", "describe", "orders", "--output", "json"],
    )
    .ok()
    .json();
    assert_eq!(described["partitions"][2]["end_offset"], 2);

    seglog(&server, &["topic", "describe", "nope"])
        .fails(1, "`seglog topic list` lists the topics");
    assert_eq!(
        seglog(&server, &["topic", "delete", "logs"]).ok().stdout,
        "deleted topic logs\n"
    );
    seglog(&server, &["topic", "delete", "logs"]).fails(1, "code 40401");
    let run = seglog(
        &server,
        &["topic", "delete", "logs", "--if-exists", "--output", "json"],
    )
    .ok();
    assert_eq!(run.json(), json!({"topic": "logs", "deleted": false}));
}

#[test]
fn produce_and_consume_round_trip_in_every_line_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    seglog(&server, &["topic", "create", "t", "-p", "2"]).ok();

    // Values: JSON when the line is JSON, else the line as a string.
    let run = seglog_in(
        &server,
        &["produce", "t", "-p", "0"],
        "{\"a\":1}\n42\nplain text\n\n[1,2]\n",
    )
    .ok();
    assert!(
        run.stdout
            .starts_with("produced 4 records to t in 1 batches (1 empty lines skipped)"),
        "{}",
        run.stdout
    );
    // Keyed, with another separator; the key decides the partition.
    let run = seglog_in(
        &server,
        &[
            "produce",
            "t",
            "--format",
            "keyed",
            "--separator",
            "=",
            "--output",
            "json",
        ],
        "alice={\"item\":\"tea\"}\nbob=cake\nalice=more=tea\r\n",
    )
    .ok();
    let summary = run.json();
    assert_eq!(summary["records"], 3);
    assert_eq!(summary["batches"], 1);
    // Whole records, as the HTTP API takes them.
    seglog_in(
        &server,
        &["produce", "t", "--format", "record"],
        "{\"key\":{\"id\":7},\"value\":null,\"partition\":1,\"timestamp\":1000}\n",
    )
    .ok();

    let p0 = consumed(&server, "t", &["-p", "0"]);
    assert_eq!(
        p0.iter().take(4).map(|r| r.3.clone()).collect::<Vec<_>>(),
        vec![
            json!({"a": 1}),
            json!(42),
            json!("plain text"),
            json!([1, 2])
        ]
    );
    let all = consumed(&server, "t", &[]);
    assert_eq!(all.len(), 8, "{all:?}");
    let alice: Vec<&Value> = all
        .iter()
        .filter(|r| r.2 == json!("alice"))
        .map(|r| &r.3)
        .collect();
    assert_eq!(
        alice,
        [&json!({"item": "tea"}), &json!("more=tea")],
        "in order, in one partition"
    );
    assert!(
        all.iter()
            .any(|r| r.2 == json!({"id": 7}) && r.3.is_null() && r.0 == 1)
    );

    // For people: PARTITION@OFFSET key=KEY VALUE.
    let run = seglog(&server, &["consume", "t", "-p", "0", "-n", "2"]).ok();
    assert_eq!(run.stdout, "0@0 {\"a\":1}\n0@1 42\n");

    // From an offset, from a time, at most N.
    let from_2 = consumed(&server, "t", &["-p", "0", "--offset", "2"]);
    assert_eq!(from_2.first().map(|r| r.1), Some(2));
    assert_eq!(
        consumed(&server, "t", &["--time", "-1h", "-n", "3"]).len(),
        3
    );
    assert!(consumed(&server, "t", &["--time", "2999-01-01"]).is_empty());
}

#[test]
fn a_large_produce_is_batched_and_shows_progress() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    seglog(&server, &["topic", "create", "big", "-p", "3"]).ok();
    let lines: String = (0..25_000)
        .map(|i| format!("k{i}:{{\"n\":{i}}}\n"))
        .collect();
    let run = seglog_in(
        &server,
        &["produce", "big", "-f", "keyed", "--output", "json"],
        &lines,
    )
    .ok();
    let summary = run.json();
    assert_eq!(summary["records"], 25_000);
    assert_eq!(summary["batches"], 25, "batches of 1000 records");
    assert_eq!(sum(&summary, "records"), 25_000);
    assert_eq!(sum(&server.get("/topics/big").1, "end_offset"), 25_000);
    let read = seglog(&server, &["consume", "big", "--output", "json"]).ok();
    assert_eq!(read.stdout.lines().count(), 25_000);

    // Slow input: after a second, the progress line (forced with
    // --progress, as stderr is no terminal here) says how far it got.
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args(["produce", "big", "--progress"])
        .env("SEGLOG_SERVER", &server.base)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run seglog produce");
    let mut stdin = child.stdin.take().expect("stdin");
    for i in 0..30 {
        writeln!(stdin, "{i}").expect("write a line");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("produced ") && l.contains(", line ")),
        "{stderr}"
    );
}

#[test]
fn a_group_consumes_once_and_seeks_forward_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    seglog(&server, &["topic", "create", "t", "-p", "2"]).ok();
    for (partition, timestamp) in [(0, 1000), (0, 2000), (0, 3000), (1, 1500)] {
        let (status, body) = server.post(
            "/topics/t",
            json!({"records": [{"value": timestamp, "partition": partition, "timestamp": timestamp}]}),
        );
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        seglog(&server, &["group", "list"]).ok().stdout,
        "no consumer group has committed an offset yet\n"
    );
    let since: Vec<Value> = consumed(&server, "t", &["--time", "1970-01-01T00:00:02Z"])
        .into_iter()
        .map(|r| r.3)
        .collect();
    assert_eq!(
        since,
        vec![json!(2000), json!(3000)],
        "partition 1 has nothing that late"
    );

    assert_eq!(consumed(&server, "t", &["--group", "g"]).len(), 4);
    // Its commits: the next run reads nothing, then only what is new.
    assert!(consumed(&server, "t", &["--group", "g"]).is_empty());
    server.produce("t", 1, &[json!("new")]);
    let new = consumed(&server, "t", &["--group", "g"]);
    assert_eq!(
        new.iter().map(|r| r.3.clone()).collect::<Vec<_>>(),
        vec![json!("new")]
    );

    let described = seglog(&server, &["group", "describe", "g", "--output", "json"])
        .ok()
        .json();
    assert_eq!(described["lag"], 0);
    assert_eq!(described["partitions"][0]["offset"], 3);
    assert_eq!(described["partitions"][1]["offset"], 2);
    let run = seglog(&server, &["group", "list"]).ok();
    assert_eq!(
        run.stdout
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["g", "t", "2", "0"])
    );
    let listed = seglog(&server, &["group", "list", "--output", "json"])
        .ok()
        .json();
    assert_eq!(listed[0]["group"], "g");

    // A seek by time (forward for a group that has read nothing yet).
    let run = seglog(
        &server,
        &[
            "group",
            "seek",
            "fresh",
            "-t",
            "t",
            "--to-time",
            "2000",
            "--output",
            "json",
        ],
    )
    .ok();
    assert_eq!(
        run.json()["offsets"],
        json!([{"topic": "t", "partition": 0, "requested": 1, "offset": 1},
               {"topic": "t", "partition": 1, "requested": 1, "offset": 1}])
    );
    let lag = seglog(&server, &["group", "describe", "fresh", "--output", "json"])
        .ok()
        .json();
    assert_eq!(lag["lag"], 3);
    seglog(
        &server,
        &["group", "seek", "fresh", "-t", "t", "-p", "0", "--to-end"],
    )
    .ok();
    assert_eq!(
        seglog(&server, &["group", "describe", "fresh", "--output", "json"])
            .ok()
            .json()["lag"],
        1
    );
    // Backward: the server keeps the higher commit, and the command says so.
    seglog(
        &server,
        &["group", "seek", "fresh", "-t", "t", "--to-offset", "0"],
    )
    .fails(1, "partition 0 stays at 3 (asked 0)");
    seglog(
        &server,
        &["group", "seek", "fresh", "-t", "t", "--to-beginning"],
    )
    .fails(1, "forward only");
    // Where to is required, and one place only.
    seglog(&server, &["group", "seek", "fresh", "-t", "t"]).fails(2, "--to-end");
    seglog(
        &server,
        &[
            "group",
            "seek",
            "fresh",
            "-t",
            "t",
            "--to-end",
            "--to-offset",
            "1",
        ],
    )
    .fails(2, "cannot be used with");
    seglog(&server, &["group", "describe", "nobody"]).fails(1, "`seglog group list`");
}

#[test]
fn follow_prints_records_as_they_come_and_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    seglog(&server, &["topic", "create", "t", "-p", "2"]).ok();
    server.produce("t", 0, &[json!("old")]);
    for (round, partitions) in [vec!["-p", "1"], vec![]].into_iter().enumerate() {
        let mut args = vec!["consume", "t", "--follow"];
        args.extend(partitions);
        let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
            .args(&args)
            .env("SEGLOG_SERVER", &server.base)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run seglog consume --follow");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        std::thread::sleep(Duration::from_millis(300));
        let fresh = format!("fresh-{round}");
        server.produce("t", 1, &[json!(fresh)]);
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while !seen
            .iter()
            .any(|l: &String| l.ends_with(&format!(" {fresh}")))
        {
            assert!(
                Instant::now() < deadline,
                "no new record within {PATIENCE:?}: {seen:?}"
            );
            seen.push(lines.next().expect("a line").expect("UTF-8"));
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "--follow keeps running"
        );
        child.kill().expect("stop it");
        child.wait().expect("reap");
    }

    // `seglog consume ... | head -1`: the reader leaves, the command ends
    // with success and no error.
    // More than a pipe holds (64 KiB), so the command is still writing
    // when its reader leaves.
    let many: Vec<Value> = (0..3000).map(|i| json!(format!("{i:0>60}"))).collect();
    server.produce("t", 0, &many);
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args(["consume", "t"])
        .env("SEGLOG_SERVER", &server.base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run seglog consume");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    assert_eq!(first, "0@0 old\n");
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_error_says_what_to_do_and_exits_with_its_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &["--max-record-bytes", "200"]);
    seglog(&server, &["topic", "create", "t", "-p", "1"]).ok();

    // Unreachable: 3.
    for args in [
        vec!["topic", "list"],
        vec!["consume", "t"],
        vec!["group", "list"],
    ] {
        client("http://127.0.0.1:1", &args, b"").fails(3, "Is `seglog serve` running there?");
    }
    client(
        &server.base,
        &["topic", "list", "--server", "https://127.0.0.1:1"],
        b"",
    )
    .fails(2, "plain HTTP");
    client(
        &server.base,
        &["topic", "list", "--server", "localhost:8000"],
        b"",
    )
    .fails(2, "http://HOST:PORT");

    // Refused by the server: 1, with its message and a hint.
    seglog_in(&server, &["produce", "nope"], "1\n")
        .fails(1, "`seglog topic create NAME` makes one");
    // A batch holding a record over the limit is refused whole.
    let big = format!("{}\n", "x".repeat(300));
    seglog_in(&server, &["produce", "t"], &format!("ok\n{big}")).fails(1, "--max-record-bytes");

    // Bad command lines and input: 2. Lines before a bad one are produced,
    // none after it.
    seglog_in(
        &server,
        &["produce", "t", "-f", "keyed"],
        "a:1\nb:2\nno separator\nc:3\n",
    )
    .fails(
        2,
        "line 3 has no \":\" between a key and a value (--format keyed); nothing from line 3 on was produced (2 records before it were)",
    );
    seglog_in(&server, &["produce", "t", "-f", "record"], "{\"key\":1}\n")
        .fails(2, "line 1 is not a record");
    seglog_in(&server, &["produce", "t", "-f", "record"], "{oops\n").fails(2, "line 1 is not JSON");
    client(&server.base, &["produce", "t"], b"fine\n\xff\xfe\n").fails(2, "line 2 is not UTF-8");
    seglog_in(&server, &["produce", "t", "-p", "4"], "1\n")
        .fails(2, "topic t has partitions 0 to 0");
    seglog(&server, &["consume", "t", "--time", "yesterday"]).fails(2, "RFC 3339");
    seglog(&server, &["consume", "t", "-p", "3"]).fails(2, "partitions 0 to 0");
    seglog(&server, &["consume", "t", "--offset", "5"])
        .fails(2, "past the end of partition 0 of t, which is 3");
    seglog(
        &server,
        &["consume", "t", "--offset", "1", "--from-beginning"],
    )
    .fails(2, "cannot be used with");
    seglog(&server, &["topic", "frobnicate"]).fails(2, "unrecognized subcommand");
    let kept = consumed(&server, "t", &[]);
    assert_eq!(
        kept.iter().map(|r| r.3.clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2), json!("fine")],
        "the lines before each bad one, and nothing of the batch with a record too large"
    );
}
