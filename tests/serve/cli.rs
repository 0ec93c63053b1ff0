//! The command-line client (`seglog topic`, `produce`, `consume`,
//! `group`), the real binary against a real `seglog serve`: round trips
//! through produce and consume in every line format, consumer groups and
//! seeks, `--output json` parsed, the progress line, and every error path
//! with its exit code (1 refused, 2 usage or input, 3 unreachable, 4 a
//! write that may have happened).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::serve_process::{PATIENCE, Server};

/// What one run of the client did.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
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

    pub(crate) fn ok(self) -> Run {
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

pub(crate) fn seglog(server: &Server, args: &[&str]) -> Run {
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
        lines[1].starts_with("logs ") && lines[1].ends_with("7d old; 1.0 MiB per partition"),
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
            .starts_with("produced 4 records to t in 1 batch (1 empty line skipped)"),
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
fn a_group_consumes_once_and_seeks_back_and_forth() {
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
        Some(vec!["g", "t", "2", "2", "0"])
    );
    // The list is one request's summary (GET /groups), not one per group.
    let listed = seglog(&server, &["group", "list", "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        listed,
        json!([{"group": "g", "topics": ["t"], "partitions": 2, "committed_partitions": 2, "lag": 0}])
    );

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
    // Backward: the server stores the lower commit, as Kafka does.
    seglog(
        &server,
        &[
            "group",
            "seek",
            "fresh",
            "-t",
            "t",
            "-p",
            "0",
            "--to-offset",
            "1",
        ],
    )
    .ok();
    assert_eq!(
        seglog(&server, &["group", "describe", "fresh", "--output", "json"])
            .ok()
            .json()["lag"],
        3
    );
    seglog(
        &server,
        &["group", "seek", "fresh", "-t", "t", "--to-beginning"],
    )
    .ok();
    assert_eq!(
        seglog(&server, &["group", "describe", "fresh", "--output", "json"])
            .ok()
            .json()["lag"],
        5
    );
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

/// Record bytes are the producers': a key or value holding a terminal's
/// escape sequences (set the window title, clear the screen) or a line
/// break (forge a record's line) is printed escaped, as a JSON string, in
/// the output for people; `--output json` gives it exactly.
#[test]
fn consume_escapes_control_characters_for_people_and_keeps_json_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("t", 1);
    let key = "k\u{1b}[2J";
    let value = "v\u{1b}]0;owned\u{7}\n0@99 forged\u{9b}31m\u{202e}";
    let (status, body) = server.post(
        "/topics/t/partitions/0",
        json!({"records": [{"key": key, "value": value}, {"value": {"nested": "\u{1b}[31m"}}]}),
    );
    assert_eq!(status, 200, "{body}");
    let run = seglog(&server, &["consume", "t"]).ok();
    assert_eq!(
        run.stdout,
        "0@0 key=\"k\\u001b[2J\" \"v\\u001b]0;owned\\u0007\\n0@99 forged\\u009b31m\\u202e\"\n\
         0@1 {\"nested\":\"\\u001b[31m\"}\n"
    );
    assert!(
        !run.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{:?}",
        run.stdout
    );
    let exact = seglog(&server, &["consume", "t", "--output", "json"])
        .ok()
        .json_lines();
    assert_eq!(exact[0]["key"], key);
    assert_eq!(exact[0]["value"], value);
    assert_eq!(exact[1]["value"], json!({"nested": "\u{1b}[31m"}));
}

#[test]
fn follow_prints_records_as_they_come_and_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    seglog(&server, &["topic", "create", "t", "-p", "2"]).ok();
    server.produce("t", 0, &[json!("old")]);
    // Each round's follower waits on the server in long polls (fetches
    // with wait_ms) before a record is produced: one for partition 1, then
    // one per partition (a poll of the first round's killed follower may
    // still be waiting out its time). A follower that slept between
    // fetches instead would never be seen waiting there.
    for (round, partitions, polls) in [(0, vec!["-p", "1"], 1), (1, vec![], 2)] {
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
        let deadline = Instant::now() + PATIENCE;
        while server.metric("seglog_fetches_waiting") < polls {
            assert!(
                Instant::now() < deadline,
                "round {round}: no long poll waits"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
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
    // A batch holding a record over the limit: the server refuses it whole,
    // so the lines before that record are sent again without it and
    // produced, and the failure names the line and what was produced.
    let big = format!("{}\n", "x".repeat(300));
    seglog_in(&server, &["produce", "t"], &format!("ok\n{big}more\n"))
        .fails(1, "line 2 was refused: ")
        .fails(1, "--max-record-bytes")
        .fails(
            1,
            "nothing from line 2 on was produced (1 record before it was)",
        );
    assert_eq!(
        consumed(&server, "t", &[])
            .iter()
            .map(|r| r.3.clone())
            .collect::<Vec<_>>(),
        vec![json!("ok")]
    );

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
        .fails(2, "past the end of partition 0 of t, which is 4");
    seglog(
        &server,
        &["consume", "t", "--offset", "1", "--from-beginning"],
    )
    .fails(2, "cannot be used with");
    seglog(&server, &["topic", "frobnicate"]).fails(2, "unrecognized subcommand");
    let kept = consumed(&server, "t", &[]);
    assert_eq!(
        kept.iter().map(|r| r.3.clone()).collect::<Vec<_>>(),
        vec![json!("ok"), json!(1), json!(2), json!("fine")],
        "every line before each bad one, none of a bad one"
    );
}

/// A stand-in for a server that fails a produce after it was sent: it
/// answers `GET /topics/t` as seglog would (one partition), acknowledges
/// the first produce request whole, and answers every later one with
/// `later` (after reading it whole). Returns its address.
fn failing_after_send(later: fn(&mut std::net::TcpStream)) -> String {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let (Ok(mut stream), posts) = (stream, posts.clone()) else {
                return;
            };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        head.push(line.to_ascii_lowercase());
                        line.clear();
                    }
                    let Some(request) = head.first().cloned() else {
                        return;
                    };
                    let length: usize = head
                        .iter()
                        .find_map(|h| h.strip_prefix("content-length:"))
                        .map_or(0, |n| n.trim().parse().expect("length"));
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).expect("body");
                    let reply = if request.starts_with("get /topics/t ") {
                        json!({"name": "t", "created_ms": 0, "retention_ms": null,
                            "retention_bytes": null, "partitions": [
                            {"partition": 0, "log_start_offset": 0, "end_offset": 0, "bytes": 0}]})
                    } else if request.starts_with("post /topics/t ") {
                        if posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                            later(&mut stream);
                            return;
                        }
                        let sent: Value = serde_json::from_slice(&body).expect("JSON body");
                        let count = sent["records"].as_array().expect("records").len();
                        json!({"offsets": (0..count)
                            .map(|i| json!({"partition": 0, "offset": i}))
                            .collect::<Vec<_>>()})
                    } else {
                        panic!("unexpected request {request}");
                    };
                    let text = reply.to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                }
            });
        }
    });
    base
}

/// A produce whose batch failed after it was sent says exactly what is
/// known: the records acknowledged (printed too), the lines that may have
/// been produced, that nothing after them was sent; and it exits 4, apart
/// from every failure that changed nothing (1, 2, 3). Regression: the
/// command once promised all or nothing per batch, and exited 3 for a
/// write that may have happened.
#[test]
fn a_produce_whose_reply_is_lost_says_what_may_have_been_produced() {
    // 1,500 lines: a batch of 1,000 acknowledged, then one of 500 whose
    // connection is dropped after the request was read, or whose reply is
    // a storage error that may have written.
    let lines: String = (1..=1500).map(|i| format!("{i}\n")).collect();
    let dropped: fn(&mut std::net::TcpStream) = |stream| {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    };
    let storage_error: fn(&mut std::net::TcpStream) = |stream| {
        let text = json!({"error_code": 50302, "message": "the sync point failed, so the write may or may not be durable"}).to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
    };
    for later in [dropped, storage_error] {
        let base = failing_after_send(later);
        let run = client(&base, &["produce", "t"], lines.as_bytes()).fails(
            4,
            "lines 1001 to 1500 may have been produced, in whole or in part",
        );
        assert!(
            run.stderr.contains(
                "Acknowledged: 1,000 records before line 1001; nothing after line 1500 was sent"
            ),
            "{}",
            run.stderr
        );
        assert!(
            run.stdout
                .starts_with("produced 1,000 records to t in 1 batch"),
            "{}",
            run.stdout
        );
    }
    // A connection refused is no write: exit 3, nothing may have happened.
    let run = client("http://127.0.0.1:1", &["produce", "t"], b"1\n");
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        !run.stderr.contains("may have been produced"),
        "{}",
        run.stderr
    );
}
