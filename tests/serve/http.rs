//! `seglog serve`, the real binary on a free local port, driven by a real
//! HTTP client (ureq): every route, every error reply, durability across
//! `kill -9`, long polls, graceful shutdown and retention.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::serve_process::{PATIENCE, Server};

fn values(records: &[Value]) -> Vec<Value> {
    records.iter().map(|r| r["value"].clone()).collect()
}

/// A page of another site can make a browser send a write to this server
/// with the user's access (cross-site request forgery): a form or a
/// no-cors fetch sends `text/plain` or a form without asking, and every
/// current browser marks it `Sec-Fetch-Site: cross-site`. Both are
/// refused before the route sees them, so nothing changes; the same
/// writes as JSON, from the same site or from no browser, go through.
#[test]
fn writes_need_json_and_are_refused_from_another_site() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("kept", 1);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = |path: &str| format!("{}{path}", server.base);
    let reply = |response: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        let mut response = response.expect("reply");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, body["error_code"].clone())
    };
    let topic = r#"{"name": "forged", "partitions": 1}"#;
    let records = r#"{"records": [{"value": "forged"}]}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        for (path, body) in [("/topics", topic), ("/topics/kept", records)] {
            let mut request = agent.post(url(path));
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            assert_eq!(
                reply(request.send(body)),
                (415, json!(41501)),
                "POST {path} as {content_type:?}"
            );
        }
    }
    for site in ["cross-site", "Cross-Site"] {
        let post = agent
            .post(url("/topics"))
            .header("content-type", "application/json")
            .header("sec-fetch-site", site)
            .send(topic);
        assert_eq!(reply(post), (403, json!(40301)), "{site}");
        let delete = agent
            .delete(url("/topics/kept"))
            .header("sec-fetch-site", site)
            .call();
        assert_eq!(reply(delete), (403, json!(40301)), "{site}");
    }
    // Nothing changed.
    assert_eq!(server.get("/topics"), (200, json!(["kept"])));
    assert!(server.fetch("kept", 0, "offset=0").is_empty());
    // Reads from anywhere, and writes from the console's own page (or
    // from no browser), with a JSON content type and parameters.
    let read = agent
        .get(url("/topics"))
        .header("sec-fetch-site", "cross-site")
        .call();
    assert_eq!(reply(read).0, 200);
    let made = agent
        .post(url("/topics"))
        .header("content-type", "application/json; charset=utf-8")
        .header("sec-fetch-site", "same-origin")
        .send(r#"{"name": "made", "partitions": 1}"#);
    assert_eq!(reply(made).0, 201);
    // An unknown route or method keeps its own error.
    assert_eq!(
        reply(agent.post(url("/nope")).send("x")),
        (404, json!(40400))
    );
    assert_eq!(
        reply(agent.put(url("/topics")).send("x")),
        (405, json!(40501))
    );
}

/// A write refused before its body is read (not JSON, another site, no
/// user) leaves its connection able to carry the next request, as a client
/// that pools connections expects: the server once answered before the
/// body arrived and closed the connection without saying so, and the
/// client's next request met a closed socket (this file's test above
/// failed now and then with "Peer disconnected"). Now the body is read
/// first; one too large to read and drop gets `Connection: close`, which
/// the old server never sent (the part of this test that fails on it every
/// time; whether the small body had arrived was a race).
#[test]
fn a_refused_write_leaves_its_connection_usable_or_says_it_closes() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let address = server.base.trim_start_matches("http://").to_string();
    let mut socket = std::net::TcpStream::connect(&address).expect("connect");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let refused = |socket: &mut std::net::TcpStream, body: &[u8]| -> String {
        let head = format!(
            "POST /topics HTTP/1.1\r\nHost: {address}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        socket.write_all(head.as_bytes()).expect("send head");
        // The server may answer (and, for a large body, close) before
        // reading it all: a refused send of the rest is fine.
        let _ = socket.write_all(body);
        read_response(socket)
    };
    let small = refused(&mut socket, br#"{"name": "t", "partitions": 1}"#);
    assert!(small.starts_with("HTTP/1.1 415"), "{small}");
    socket
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .expect("the connection takes the next request");
    let next = read_response(&mut socket);
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");

    let mut socket = std::net::TcpStream::connect(&address).expect("connect");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let large = refused(&mut socket, &vec![b'x'; 1 << 20]);
    assert!(large.starts_with("HTTP/1.1 415"), "{large}");
    assert!(
        large.to_ascii_lowercase().contains("connection: close"),
        "{large}"
    );

    /// One response: its head, then as many body bytes as it says.
    fn read_response(socket: &mut std::net::TcpStream) -> String {
        let mut bytes = Vec::new();
        let mut byte = [0u8; 1];
        while !bytes.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).expect("response head");
            bytes.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&bytes).to_string();
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .expect("a content-length");
        let mut body = vec![0u8; length];
        socket.read_exact(&mut body).expect("response body");
        head + &String::from_utf8_lossy(&body)
    }
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let (status, created) = server.post("/topics", json!({"name": "orders"}));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "orders");
    assert_eq!(
        created["partitions"].as_array().map(Vec::len),
        Some(100),
        "default partitions"
    );
    assert_eq!(
        created["partitions"][7],
        json!({"partition": 7, "log_start_offset": 0, "end_offset": 0, "bytes": 0})
    );
    server.create_topic("a.b-c_d", 2);
    assert_eq!(server.get("/topics"), (200, json!(["a.b-c_d", "orders"])));

    server.produce("a.b-c_d", 1, &[json!(1), json!(2)]);
    // Durable records count at once; their bytes once their segment write
    // (which may follow the acknowledgement) is done.
    let described = wait_for_topic(&server, "a.b-c_d", |d| {
        d["partitions"][1]["bytes"].as_u64() > Some(0)
    });
    assert_eq!(described["partitions"][1]["end_offset"], 2);
    assert_eq!(described["partitions"][0]["end_offset"], 0);
    // One partition's state, as the description has it.
    for partition in [0, 1] {
        assert_eq!(
            server.get(&format!("/topics/a.b-c_d/partitions/{partition}")),
            (200, described["partitions"][partition].clone())
        );
    }
    server.assert_error("GET", "/topics/a.b-c_d/partitions/2", None, 404, 40402);
    server.assert_error("GET", "/topics/nope/partitions/0", None, 404, 40401);

    let (status, _) = server.request("DELETE", "/topics/a.b-c_d", None);
    assert_eq!(status, 204);
    server.assert_error("GET", "/topics/a.b-c_d", None, 404, 40401);
    server.assert_error("DELETE", "/topics/a.b-c_d", None, 404, 40401);
    // Created again, it starts empty.
    server.create_topic("a.b-c_d", 2);
    assert!(server.fetch("a.b-c_d", 1, "offset=0").is_empty());
    assert_eq!(server.produce("a.b-c_d", 1, &[json!("new")]), vec![0]);
}

#[test]
fn produce_by_key_by_partition_and_round_robin_and_fetch_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("t", 4);
    let records = json!({"records": [
        {"key": "user-1", "value": {"n": 1}},
        {"key": "user-1", "value": {"n": 2}},
        {"value": "explicit", "partition": 3, "timestamp": 1234},
        {"value": null},
        {"key": {"compound": [1, 2]}, "value": [true]},
    ]});
    let (status, produced) = server.post("/topics/t", records);
    assert_eq!(status, 200, "{produced}");
    let offsets = produced["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), 5);
    // The same key, the same partition, consecutive offsets.
    assert_eq!(offsets[0]["partition"], offsets[1]["partition"]);
    assert_eq!(
        offsets[1]["offset"].as_u64(),
        offsets[0]["offset"].as_u64().map(|o| o + 1)
    );
    assert_eq!(offsets[2]["partition"], 3);

    let p = offsets[0]["partition"].as_u64().expect("partition") as u32;
    let fetched = server.fetch("t", p, "offset=0");
    let mine: Vec<&Value> = fetched.iter().filter(|r| r["key"] == "user-1").collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0]["value"], json!({"n": 1}));
    assert_eq!(mine[0]["topic"], "t");
    assert_eq!(mine[0]["partition"], p);
    assert!(mine[0]["timestamp"].as_u64() > Some(1_600_000_000_000));
    let explicit = server.fetch("t", 3, "offset=0");
    let explicit = explicit
        .iter()
        .find(|r| r["value"] == "explicit")
        .expect("the record sent to partition 3");
    assert_eq!(explicit["timestamp"], 1234);
    assert_eq!(explicit["key"], Value::Null);

    // Keyless requests rotate over the partitions.
    let mut partitions = std::collections::BTreeSet::new();
    for i in 0..8 {
        let (status, body) = server.post("/topics/t", json!({"records": [{"value": i}]}));
        assert_eq!(status, 200);
        partitions.insert(body["offsets"][0]["partition"].as_u64().expect("partition"));
    }
    assert_eq!(partitions.len(), 4, "{partitions:?}");
}

#[test]
fn fetch_limits_and_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("t", 1);
    let sent: Vec<Value> = (0..50)
        .map(|i| json!({"i": i, "pad": "x".repeat(100)}))
        .collect();
    assert_eq!(server.produce("t", 0, &sent), (0..50).collect::<Vec<u64>>());
    assert_eq!(
        values(&server.fetch("t", 0, "offset=0&max_records=50")),
        sent
    );
    assert_eq!(
        values(&server.fetch("t", 0, "offset=10&max_records=5")),
        sent[10..15]
    );
    // A stored record is `{"timestamp":T,"key":null,"value":V}`, with T of
    // 13 digits: 47 bytes and the value's.
    let stored: Vec<usize> = sent.iter().map(|v| 47 + v.to_string().len()).collect();
    let fit = (1..=stored.len())
        .take_while(|&n| stored[..n].iter().sum::<usize>() <= 1000)
        .count();
    assert!(fit > 1);
    assert_eq!(server.fetch("t", 0, "offset=0&max_bytes=1000").len(), fit);
    // The first record comes even if it is over the limit.
    assert_eq!(server.fetch("t", 0, "offset=3&max_bytes=1").len(), 1);
    assert!(server.fetch("t", 0, "offset=50").is_empty());
    server.assert_error(
        "GET",
        "/topics/t/partitions/0/records?offset=51",
        None,
        416,
        41601,
    );

    // A reply over 1 MiB goes out in chunks (api::FETCH_CHUNK_BYTES); each
    // limit still holds exactly, wherever it falls.
    server.create_topic("big", 1);
    let big: Vec<Value> = (0..400)
        .map(|i| json!(format!("{i:05}{}", "z".repeat(9995))))
        .collect();
    for batch in big.chunks(100) {
        server.produce("big", 0, batch);
    }
    let all = server.fetch("big", 0, "offset=0&max_records=1000&max_bytes=67108864");
    assert_eq!(values(&all), big);
    for (i, record) in all.iter().enumerate() {
        assert_eq!(record["offset"], i as u64);
    }
    assert_eq!(
        values(&server.fetch("big", 0, "offset=7&max_records=250&max_bytes=67108864")),
        big[7..257]
    );
    // 10,047 bytes a stored record: 2.5 MiB hold 260 of them.
    let stored = 47 + 10_002;
    let fit = (2_621_440 / stored) as usize;
    assert_eq!(
        values(&server.fetch("big", 0, "offset=100&max_records=1000&max_bytes=2621440")),
        big[100..100 + fit]
    );
}

#[test]
fn every_bad_request_gets_its_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(
        dir.path(),
        &["--max-record-bytes", "200", "--max-request-bytes", "4096"],
    );
    server.create_topic("t", 2);
    server.produce("t", 0, &[json!("first")]);
    let post = |path: &str, body: &str, status: u16, code: u64| {
        server.assert_error("POST", path, Some(body), status, code);
    };
    // Malformed bodies and fields.
    post("/topics", "{", 400, 40001);
    post("/topics", r#"{"name": "x", "partitions": -1}"#, 400, 40001);
    post("/topics", r#"{"name": "x", "colour": "red"}"#, 400, 40001);
    post("/topics", r#"{"name": "a/b"}"#, 400, 40002);
    post("/topics", r#"{"name": "x", "partitions": 0}"#, 400, 40002);
    post(
        "/topics",
        r#"{"name": "x", "partitions": 4097}"#,
        400,
        40002,
    );
    post("/topics", r#"{"name": "t"}"#, 409, 40901);
    post("/topics/t", r#"{"records": []}"#, 400, 40002);
    post("/topics/t", r#"{"records": [{"key": 1}]}"#, 400, 40001);
    post(
        "/topics/t",
        r#"{"records": [{"value": 1, "extra": 2}]}"#,
        400,
        40001,
    );
    post("/topics/t", "[1, 2]", 400, 40001);
    post("/topics/t", "not json", 400, 40001);
    // A batch whose last record is bad appends none of it.
    let bad_partition = r#"{"records": [{"value": 1}, {"value": 2, "partition": 2}]}"#;
    post("/topics/t", bad_partition, 404, 40402);
    post(
        "/topics/t/partitions/0",
        r#"{"records": [{"value": 1, "partition": 1}]}"#,
        400,
        40002,
    );
    post(
        "/topics/t/partitions/2",
        r#"{"records": [{"value": 1}]}"#,
        404,
        40402,
    );
    post(
        "/topics/t/partitions/x",
        r#"{"records": [{"value": 1}]}"#,
        400,
        40001,
    );
    post("/topics/nope", r#"{"records": [{"value": 1}]}"#, 404, 40401);
    let big = format!(
        r#"{{"records": [{{"value": 1}}, {{"value": "{}"}}]}}"#,
        "x".repeat(300)
    );
    post("/topics/t/partitions/0", &big, 413, 41301);
    let huge = format!(r#"{{"records": [{{"value": "{}"}}]}}"#, "x".repeat(5000));
    post("/topics/t/partitions/0", &huge, 413, 41302);
    // Fetch parameters.
    let get =
        |path: &str, status: u16, code: u64| server.assert_error("GET", path, None, status, code);
    get("/topics/t/partitions/0/records", 400, 40001);
    get("/topics/t/partitions/0/records?offset=-1", 400, 40001);
    get(
        "/topics/t/partitions/0/records?offset=0&max_records=0",
        400,
        40002,
    );
    get(
        "/topics/t/partitions/0/records?offset=0&max_bytes=0",
        400,
        40002,
    );
    get(
        "/topics/t/partitions/0/records?offset=0&wait_ms=30001",
        400,
        40002,
    );
    get(
        "/topics/t/partitions/0/records?offset=0&colour=red",
        400,
        40001,
    );
    get("/topics/t/partitions/9/records?offset=0", 404, 40402);
    get("/topics/nope/partitions/0/records?offset=0", 404, 40401);
    // Offsets.
    post(
        "/groups/g/offsets",
        r#"{"offsets": [{"topic": "nope", "partition": 0, "offset": 1}]}"#,
        404,
        40401,
    );
    post(
        "/groups/g/offsets",
        r#"{"offsets": [{"topic": "t", "partition": 0, "offset": 1}, {"topic": "t", "partition": 5, "offset": 1}]}"#,
        404,
        40402,
    );
    post(
        "/groups/g/offsets",
        r#"{"offsets": [{"topic": "t", "partition": 0, "offset": -1}]}"#,
        400,
        40001,
    );
    post("/groups/g/offsets", r#"{"offsets": []}"#, 400, 40002);
    get("/groups/g/offsets?topic=nope", 404, 40401);
    get("/groups/g/offsets?colour=red", 400, 40001);
    // Routes and methods.
    get("/nope", 404, 40400);
    server.assert_error("PUT", "/topics", None, 405, 40501);
    server.assert_error("DELETE", "/groups/g/offsets", None, 405, 40501);

    // Nothing above changed anything.
    assert_eq!(
        values(&server.fetch("t", 0, "offset=0")),
        vec![json!("first")]
    );
    assert!(server.fetch("t", 1, "offset=0").is_empty());
    assert_eq!(
        server.get("/groups/g/offsets"),
        (200, json!({"offsets": []}))
    );
    assert_eq!(server.get("/topics"), (200, json!(["t"])));
    let (_, metrics) = server.request_text("GET", "/metrics", None);
    assert!(
        metrics.contains("seglog_errors_total{code=\"40001\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("seglog_records_appended_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn the_record_limit_must_fit_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-record-bytes",
            "1048577",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run seglog serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--max-record-bytes"), "{stderr}");
}

#[test]
fn consumer_group_offsets_are_stored_as_given_and_survive_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("a", 2);
    server.create_topic("b", 1);
    let commit = |offsets: Value| {
        let (status, body) = server.post("/groups/readers/offsets", json!({ "offsets": offsets }));
        assert_eq!(status, 200, "{body}");
        body
    };
    commit(
        json!([{"topic": "a", "partition": 1, "offset": 10}, {"topic": "b", "partition": 0, "offset": 3}]),
    );
    // Backwards, with a metadata string: stored as given, as Kafka does.
    let back = json!([{"topic": "a", "partition": 1, "offset": 4, "metadata": "re-read from 4"}]);
    let reply = commit(back.clone());
    assert_eq!(reply, json!({ "offsets": back }));
    let everything = json!({"offsets": [
        {"topic": "a", "partition": 1, "offset": 4, "metadata": "re-read from 4"},
        {"topic": "b", "partition": 0, "offset": 3},
    ]});
    // Metadata over Kafka's 4096-byte limit is refused, and nothing changes.
    let (status, body) = server.post(
        "/groups/readers/offsets",
        json!({"offsets": [{"topic": "b", "partition": 0, "offset": 9, "metadata": "m".repeat(4097)}]}),
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        server.get("/groups/readers/offsets"),
        (200, everything.clone())
    );
    assert_eq!(
        server.get("/groups/readers/offsets?topic=b"),
        (
            200,
            json!({"offsets": [{"topic": "b", "partition": 0, "offset": 3}]})
        )
    );
    // Another group, and a name that needs escaping in the URL.
    assert_eq!(
        server.get("/groups/other/offsets"),
        (200, json!({"offsets": []}))
    );
    let (status, _) = server.post(
        "/groups/a%20b%22c/offsets",
        json!({"offsets": [{"topic": "a", "partition": 0, "offset": 1}]}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        server.get("/groups/a%20b%22c/offsets"),
        (
            200,
            json!({"offsets": [{"topic": "a", "partition": 0, "offset": 1}]})
        )
    );
    server.kill();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.get("/groups/readers/offsets"), (200, everything));
}

#[test]
fn every_acknowledged_record_survives_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("t", 3);
    // Concurrent producers, as a server sees them.
    let acknowledged: Vec<(u32, u64, Value)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let server = &server;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..60 {
                        let partition = (w + i) % 3;
                        let value = json!(format!("w{w}-{i}"));
                        let offsets = server.produce("t", partition, std::slice::from_ref(&value));
                        mine.push((partition, offsets[0], value));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("producer"))
            .collect()
    });
    server.kill();
    let server = Server::start(dir.path(), &[]);
    for partition in 0..3 {
        let fetched = server.fetch("t", partition, "offset=0&max_records=1000");
        // Offsets are contiguous from 0 and unique.
        for (i, record) in fetched.iter().enumerate() {
            assert_eq!(record["offset"], i as u64);
        }
        for (p, offset, value) in acknowledged.iter().filter(|(p, _, _)| *p == partition) {
            let record = &fetched[*offset as usize];
            assert_eq!((&record["value"], *p), (value, partition));
        }
        let expected = acknowledged
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .count();
        assert_eq!(fetched.len(), expected);
    }
}

#[test]
fn a_long_poll_returns_when_records_arrive_or_when_it_times_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("t", 2);
    server.produce("t", 0, &[json!("old")]);
    thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            let started = Instant::now();
            let records = server.fetch("t", 0, "offset=1&wait_ms=20000");
            (records, started.elapsed())
        });
        // Another client produces once the poll is waiting; records sent to
        // another partition do not end it.
        server.wait_for_polls(1);
        server.produce("t", 1, &[json!("elsewhere")]);
        server.wait_for_polls(1);
        server.produce("t", 0, &[json!("new")]);
        let (records, took) = waiting.join().expect("poll");
        assert_eq!(values(&records), vec![json!("new")]);
        assert!(
            took < Duration::from_secs(15),
            "returned on the record, not the timeout: {took:?}"
        );
    });
    let started = Instant::now();
    assert!(server.fetch("t", 0, "offset=2&wait_ms=200").is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn sigterm_finishes_cleanly_and_health_and_metrics_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.get("/health"), (200, json!({"status": "ok"})));
    server.create_topic("t", 1);
    server.produce("t", 0, &[json!(1), json!(2)]);
    server.fetch("t", 0, "offset=0");
    let (status, metrics) = server.request_text("GET", "/metrics", None);
    assert_eq!(status, 200);
    for line in [
        "seglog_records_appended_total 2\n",
        "seglog_records_fetched_total 2\n",
        "seglog_topics 1\n",
        "seglog_store_poisoned 0\n",
        "seglog_store_healing 0\n",
        "seglog_store_heals_total 0\n",
        "seglog_http_requests_total{method=\"POST\",route=\"/topics/{topic}/partitions/{partition}\",status=\"200\"} 1\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("seglog_sync_point_seconds_count "),
        "{metrics}"
    );
    // A long poll in flight does not hold the shutdown up.
    thread::scope(|scope| {
        let base = server.base.clone();
        let poll = scope.spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            agent
                .get(format!(
                    "{base}/topics/t/partitions/0/records?offset=2&wait_ms=30000"
                ))
                .call()
                .map(|r| r.status().as_u16())
        });
        server.wait_for_polls(1);
        let started = Instant::now();
        assert!(server.terminate(), "clean exit");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(poll.join().expect("poll").ok(), Some(200));
    });
    assert!(dir.path().join("CLEAN").exists(), "marked clean");
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        values(&server.fetch("t", 0, "offset=0")),
        vec![json!(1), json!(2)]
    );
}

/// Review finding (a cluster's nodes orphaned by their parent did not
/// stop on SIGTERM): a log line written to a stderr nobody reads any more
/// panicked the task that wrote it (`eprintln!`), the shutdown's among
/// them. Such a server serves, and stops cleanly, with every line dropped.
#[test]
fn a_server_whose_log_nobody_reads_serves_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args(["serve", "--listen", "127.0.0.1:0", "-vv", "--data-dir"])
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start seglog serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server said where it listens")
            .expect("a line");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split(',').next().expect("address").to_string();
        }
    };
    // The reader goes: every line from now on (-vv: one per request)
    // meets a pipe without one.
    drop(lines);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PATIENCE))
        .build()
        .into();
    let post = |path: &str, body: Value| {
        agent
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .send(body.to_string())
            .map(|r| r.status().as_u16())
            .expect("an answer")
    };
    assert_eq!(post("/topics", json!({"name": "t", "partitions": 1})), 201);
    for value in 0..20 {
        assert_eq!(
            post(
                "/topics/t/partitions/0",
                json!({"records": [{"value": value}]})
            ),
            200
        );
    }
    let mut fetched = agent
        .get(format!("{base}/topics/t/partitions/0/records?offset=0"))
        .call()
        .expect("a fetch");
    assert_eq!(fetched.status().as_u16(), 200);
    let records: Value =
        serde_json::from_str(&fetched.body_mut().read_to_string().expect("body")).expect("JSON");
    assert_eq!(records.as_array().map(Vec::len), Some(20));
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid with a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(dir.path().join("CLEAN").exists(), "marked clean");
}

#[test]
fn a_kill_during_topic_deletion_leaves_no_stale_partitions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &["-v"]);
    server.create_topic("t", 2);
    server.produce("t", 0, &[json!("old")]);
    server.kill();
    // As if killed between the catalog change and the log removal: the
    // catalog no longer has the topic, the partition log is still there.
    let catalog_path = dir.path().join("topics.json");
    let mut catalog: Value =
        serde_json::from_slice(&std::fs::read(&catalog_path).expect("catalog")).expect("JSON");
    catalog["topics"] = json!([]);
    std::fs::write(&catalog_path, catalog.to_string()).expect("write catalog");
    let old_log = dir.path().join("logs").join("k.t.0-0");
    assert!(
        old_log.exists(),
        "the partition log is there before the restart"
    );
    let server = Server::start(dir.path(), &["-v"]);
    assert!(server.wait_for_log("its topic was deleted"));
    assert!(!old_log.exists(), "the restart removed the partition log");
    server.create_topic("t", 2);
    assert!(server.fetch("t", 0, "offset=0").is_empty());
}

/// Describes `topic` until `done` holds for it (retention runs on a timer).
fn wait_for_topic(server: &Server, topic: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, described) = server.get(&format!("/topics/{topic}"));
        assert_eq!(status, 200, "{described}");
        if done(&described) {
            return described;
        }
        assert!(
            Instant::now() < deadline,
            "retention never acted: {described}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The `.log` files of partition 0 of a topic with id 0, oldest first.
fn segment_files(dir: &Path, topic: &str) -> Vec<std::path::PathBuf> {
    let key_dir = dir.join("logs").join(format!("k.{topic}.0-0"));
    let mut logs: Vec<_> = std::fs::read_dir(&key_dir)
        .expect("key directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn size_retention_deletes_old_segments_and_the_log_start_survives_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--segment-bytes", "4096", "--retention-check-ms", "20"];
    let server = Server::start(dir.path(), &args);
    let (status, body) = server.post(
        "/topics",
        json!({"name": "t", "partitions": 1, "retention_bytes": 8192}),
    );
    assert_eq!(status, 201, "{body}");
    // 200 records of about 300 bytes: some 15 segments of 4 KiB.
    let sent: Vec<Value> = (0..200)
        .map(|i| json!(format!("{i:04}{}", "r".repeat(250))))
        .collect();
    for batch in sent.chunks(10) {
        server.produce("t", 0, batch);
    }
    // Passes may run while the records arrive: wait for the one after the
    // last. Kafka's rule keeps at least the limit, and less than the limit
    // and the oldest kept segment (about 4 KiB).
    let described = wait_for_topic(&server, "t", |d| {
        d["partitions"][0]["bytes"].as_u64() < Some(8192 + 4096 + 512)
    });
    let partition = &described["partitions"][0];
    let start = partition["log_start_offset"].as_u64().expect("start");
    assert!(start > 0);
    assert_eq!(partition["end_offset"], 200);
    assert!(partition["bytes"].as_u64() >= Some(8192), "{partition}");
    // A fetch from 0 starts at the log start.
    let fetched = server.fetch("t", 0, "offset=0&max_records=1000");
    assert_eq!(fetched[0]["offset"], start);
    assert_eq!(values(&fetched), sent[start as usize..]);

    server.kill();
    let server = Server::start(dir.path(), &["--segment-bytes", "4096"]);
    let (_, described) = server.get("/topics/t");
    let after = described["partitions"][0]["log_start_offset"]
        .as_u64()
        .expect("start");
    assert!(
        after >= start,
        "the log start went back from {start} to {after}"
    );
    assert_eq!(
        values(&server.fetch("t", 0, "offset=0&max_records=1000")),
        sent[after as usize..]
    );
    assert_eq!(server.produce("t", 0, &[json!("next")]), vec![200]);
}

#[test]
fn age_retention_deletes_segments_last_written_before_the_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--segment-bytes", "4096", "--retention-check-ms", "20"];
    let server = Server::start(dir.path(), &args);
    // An hour: nothing written by this test is that old unless made so.
    let (status, body) = server.post(
        "/topics",
        json!({"name": "t", "partitions": 1, "retention_ms": 3_600_000}),
    );
    assert_eq!(status, 201, "{body}");
    let sent: Vec<Value> = (0..100)
        .map(|i| json!(format!("{i:04}{}", "a".repeat(250))))
        .collect();
    for batch in sent.chunks(10) {
        server.produce("t", 0, batch);
    }
    let logs = segment_files(dir.path(), "t");
    assert!(logs.len() > 4, "{logs:?}");
    // The two oldest segments were last written two hours ago.
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for log in &logs[..2] {
        let file = std::fs::File::options()
            .write(true)
            .open(log)
            .expect("open segment");
        file.set_modified(two_hours_ago).expect("set mtime");
    }
    let third_base: u64 = logs[2]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("base offset in the name");
    let described = wait_for_topic(&server, "t", |d| {
        d["partitions"][0]["log_start_offset"].as_u64() > Some(0)
    });
    assert_eq!(described["partitions"][0]["log_start_offset"], third_base);
    // The rest stay (a segment may have been added since the listing: the
    // last batch's write to its segment follows its acknowledgement).
    let left = segment_files(dir.path(), "t");
    assert_eq!(left[..logs.len() - 2], logs[2..], "{left:?}");
    let fetched = server.fetch("t", 0, "offset=0&max_records=1000");
    assert_eq!(values(&fetched), sent[third_base as usize..]);
    let (_, metrics) = server.request_text("GET", "/metrics", None);
    assert!(
        metrics.contains("seglog_retention_segments_deleted_total 2\n"),
        "{metrics}"
    );
}

#[test]
fn server_wide_retention_applies_to_topics_without_their_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = [
        "--segment-bytes",
        "4096",
        "--retention-check-ms",
        "20",
        "--retention-bytes",
        "4096",
    ];
    let server = Server::start(dir.path(), &args);
    server.create_topic("default", 1);
    let (status, body) = server.post(
        "/topics",
        json!({"name": "own", "partitions": 1, "retention_bytes": 1_000_000_000}),
    );
    assert_eq!(status, 201, "{body}");
    let sent: Vec<Value> = (0..100)
        .map(|i| json!(format!("{i:04}{}", "s".repeat(250))))
        .collect();
    for batch in sent.chunks(10) {
        server.produce("default", 0, batch);
        server.produce("own", 0, batch);
    }
    wait_for_topic(&server, "default", |d| {
        d["partitions"][0]["log_start_offset"].as_u64() > Some(0)
    });
    // The topic's own limit wins: two whole passes later, nothing of it is gone.
    let passes = |server: &Server| server.metric("seglog_retention_passes_total");
    let seen = passes(&server);
    let deadline = Instant::now() + PATIENCE;
    while passes(&server) < seen + 2 {
        assert!(Instant::now() < deadline, "retention passes stopped");
        thread::sleep(Duration::from_millis(20));
    }
    let (_, own) = server.get("/topics/own");
    assert_eq!(own["partitions"][0]["log_start_offset"], 0, "{own}");
    assert!(
        own["partitions"][0]["bytes"].as_u64() > Some(20_000),
        "{own}"
    );
}

#[test]
fn deleting_a_topic_being_written_removes_every_partition_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("busy", 4);
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|scope| {
        for w in 0..3 {
            let (server, stop) = (&server, &stop);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = json!({"records": [{"value": i, "partition": (w + i) % 4}]});
                    let (status, reply) = server.post("/topics/busy", body);
                    assert!(status == 200 || status == 404, "{status} {reply}");
                    i += 1;
                }
            });
        }
        // Let the writers get going, then delete under them.
        while server.get("/topics/busy").1["partitions"][3]["end_offset"].as_u64() < Some(5) {
            thread::sleep(Duration::from_millis(5));
        }
        let (status, _) = server.request("DELETE", "/topics/busy", None);
        assert_eq!(status, 204);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let left: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
        .expect("logs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "partition logs left: {left:?}");
}

/// Random bodies and paths, well-formed JSON of the wrong shape as often as
/// garbage (none of them a valid request): every reply is a 4xx JSON error
/// whose code matches its status, and the state afterwards is exactly as
/// before.
#[test]
fn random_bad_requests_get_errors_and_change_nothing() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &["--max-request-bytes", "65536"]);
    server.create_topic("t", 2);
    server.produce("t", 1, &[json!("kept")]);
    let before = (
        server.get("/topics"),
        server.get("/topics/t"),
        server.get("/groups/g/offsets"),
    );
    let mut rng = StdRng::seed_from_u64(12);
    let pieces = [
        json!(null),
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!(""),
        json!("t"),
        json!([]),
        json!({}),
        json!(true),
        json!([{"value": 1, "partition": -1}]),
        json!(1e300),
        json!({"value": 1, "partition": 99}),
        json!("x".repeat(70_000)),
    ];
    let fields = [
        "records",
        "offsets",
        "name",
        "partitions",
        "topic",
        "partition",
        "offset",
        "value",
        "key",
        "retention_ms",
    ];
    for round in 0..400 {
        let body = match rng.gen_range(0..4) {
            0 => (0..rng.gen_range(0..40))
                .map(|_| rng.r#gen::<u8>() as char)
                .collect::<String>(),
            1 => pieces[rng.gen_range(0..pieces.len())].to_string(),
            _ => {
                let mut object = serde_json::Map::new();
                for _ in 0..rng.gen_range(1..4) {
                    let field = fields[rng.gen_range(0..fields.len())];
                    let value = pieces[rng.gen_range(0..pieces.len())].clone();
                    let value = if rng.gen_bool(0.5) {
                        json!([{ field: value }])
                    } else {
                        value
                    };
                    object.insert(field.to_string(), value);
                }
                Value::Object(object).to_string()
            }
        };
        let path = [
            "/topics",
            "/topics/t",
            "/topics/t/partitions/0",
            "/topics/t/partitions/-1",
            "/topics/t/partitions/2",
            "/topics/nope",
            "/groups/g/offsets",
            "/groups//offsets",
        ][rng.gen_range(0..8)];
        let (status, text) = match server.try_request_text("POST", path, Some(&body), PATIENCE) {
            Ok(answer) => answer,
            // Over --max-request-bytes: the server answers 413 and may
            // close before the client has written the whole body, which
            // the client then sees as a broken pipe (CI saw it once).
            Err(_) if body.len() > 65536 => continue,
            Err(e) => panic!("round {round}: POST {path} {body:.80}: {e}"),
        };
        let reply: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("round {round}: POST {path} {body:.80}: not JSON ({e}): {text}")
        });
        assert!(
            (400..500).contains(&status)
                && reply["error_code"]
                    .as_u64()
                    .is_some_and(|c| c / 100 == u64::from(status)),
            "round {round}: POST {path} {body:.200} -> {status} {reply}"
        );
    }
    let after = (
        server.get("/topics"),
        server.get("/topics/t"),
        server.get("/groups/g/offsets"),
    );
    assert_eq!(before, after);
}
