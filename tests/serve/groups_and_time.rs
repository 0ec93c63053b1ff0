//! The routes the console and the command-line client read besides the
//! first API: `GET /groups`, `GET /groups/{group}` (committed offsets
//! beside each partition's end, and the lag), a fetch from a time
//! (`?timestamp=`), the uptime gauge, and the console's files at `/ui`.

use serde_json::json;

use crate::support::serve_process::Server;

#[test]
fn groups_are_listed_and_described_with_their_lag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.get("/groups"), (200, json!([])));
    server.create_topic("orders", 3);
    server.create_topic("clicks", 1);
    server.produce("orders", 0, &[json!(1), json!(2), json!(3), json!(4)]);
    server.produce("orders", 2, &[json!(1)]);
    server.produce("clicks", 0, &[json!(1), json!(2)]);
    let commit = |group: &str, offsets: serde_json::Value| {
        let (status, body) = server.post(
            &format!("/groups/{group}/offsets"),
            json!({"offsets": offsets}),
        );
        assert_eq!(status, 200, "{body}");
    };
    commit(
        "billing",
        json!([{"topic": "orders", "partition": 0, "offset": 1},
               {"topic": "orders", "partition": 2, "offset": 1},
               {"topic": "clicks", "partition": 0, "offset": 0}]),
    );
    // A name that needs quoting in the store's key, and in the URL.
    commit(
        "a%20%22quoted%22%20group%2Fx",
        json!([{"topic": "orders", "partition": 0, "offset": 9}]),
    );
    // The list is the summary of each group, in one reply: its topics,
    // partitions (with and without a commit) and lag, as the description
    // of each has them.
    assert_eq!(
        server.get("/groups"),
        (
            200,
            json!([
                {"group": "a \"quoted\" group/x", "topics": ["orders"], "partitions": 3,
                 "committed_partitions": 1, "lag": 1},
                {"group": "billing", "topics": ["clicks", "orders"], "partitions": 4,
                 "committed_partitions": 3, "lag": 5},
            ])
        )
    );
    let (status, billing) = server.get("/groups/billing");
    assert_eq!(status, 200, "{billing}");
    // Every partition of the topics it reads: one without a commit lags
    // by every record it holds (orders 1 holds none).
    assert_eq!(
        billing,
        json!({"group": "billing", "lag": 5, "partitions": [
            {"topic": "clicks", "partition": 0, "offset": 0, "log_start_offset": 0, "end_offset": 2, "lag": 2},
            {"topic": "orders", "partition": 0, "offset": 1, "log_start_offset": 0, "end_offset": 4, "lag": 3},
            {"topic": "orders", "partition": 1, "offset": null, "log_start_offset": 0, "end_offset": 0, "lag": 0},
            {"topic": "orders", "partition": 2, "offset": 1, "log_start_offset": 0, "end_offset": 1, "lag": 0},
        ]})
    );
    // A commit past the end has no lag (not a negative one); partition 2,
    // without a commit, lags by its one record.
    let (status, quoted) = server.get("/groups/a%20%22quoted%22%20group%2Fx");
    assert_eq!(status, 200, "{quoted}");
    assert_eq!(quoted["lag"], 1);
    assert_eq!(quoted["partitions"][0]["offset"], 9);
    assert_eq!(quoted["partitions"][0]["lag"], 0);
    assert_eq!(quoted["partitions"][2]["offset"], json!(null));
    assert_eq!(quoted["partitions"][2]["lag"], 1);

    // Unknown and bad names.
    server.assert_error("GET", "/groups/nobody", None, 404, 40403);
    server.assert_error("GET", "/groups/%07bell", None, 400, 40002);
    server.assert_error("POST", "/groups", Some("{}"), 405, 40501);

    // A deleted topic's offsets drop out; a group left with none is gone.
    let (status, _) = server.request("DELETE", "/topics/clicks", None);
    assert_eq!(status, 204);
    let (_, billing) = server.get("/groups/billing");
    assert_eq!(billing["lag"], 3);
    assert_eq!(billing["partitions"].as_array().map(Vec::len), Some(3));
    commit(
        "only-clicks-gone",
        json!([{"topic": "orders", "partition": 1, "offset": 0}]),
    );
    let (status, _) = server.request("DELETE", "/topics/orders", None);
    assert_eq!(status, 204);
    assert_eq!(server.get("/groups"), (200, json!([])));
    server.assert_error("GET", "/groups/billing", None, 404, 40403);
}

#[test]
fn a_fetch_from_a_time_starts_at_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("t", 1);
    // Timestamps are the producers', so they need not grow with offsets.
    let records: Vec<_> = [1000, 3000, 2000, 5000, 5000, 4000]
        .iter()
        .enumerate()
        .map(|(i, ts)| json!({"value": i, "timestamp": ts}))
        .collect();
    let (status, body) = server.post("/topics/t/partitions/0", json!({"records": records}));
    assert_eq!(status, 200, "{body}");
    let first = |query: &str| -> Option<u64> {
        server
            .fetch("t", 0, query)
            .first()
            .map(|r| r["offset"].as_u64().expect("offset"))
    };
    assert_eq!(first("timestamp=0"), Some(0));
    assert_eq!(first("timestamp=1000"), Some(0));
    assert_eq!(first("timestamp=1001"), Some(1));
    assert_eq!(first("timestamp=2500"), Some(1));
    assert_eq!(first("timestamp=3001"), Some(3));
    assert_eq!(first("timestamp=5000"), Some(3));
    // None at or after it: the fetch starts at the end, so it is empty
    // (and a long poll there would wait for the next record).
    assert_eq!(first("timestamp=5001"), None);
    let two = server.fetch("t", 0, "timestamp=2500&max_records=2");
    assert_eq!(
        two.iter().map(|r| r["offset"].clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2)]
    );

    // With an offset too, the search starts there.
    assert_eq!(first("timestamp=1000&offset=2"), Some(2));
    assert_eq!(first("timestamp=3001&offset=4"), Some(4));
    assert_eq!(first("timestamp=1&offset=6"), None);

    server.assert_error("GET", "/topics/t/partitions/0/records", None, 400, 40001);
    server.assert_error(
        "GET",
        "/topics/t/partitions/0/records?timestamp=-1",
        None,
        400,
        40001,
    );
    server.assert_error(
        "GET",
        "/topics/t/partitions/0/records?timestamp=x",
        None,
        400,
        40001,
    );
    server.assert_error(
        "GET",
        "/topics/t/partitions/0/records?timestamp=18446744073709551615",
        None,
        400,
        40002,
    );
    server.assert_error(
        "GET",
        "/topics/t/partitions/9/records?timestamp=0",
        None,
        404,
        40402,
    );
}

/// A search by time that the time index cannot answer (its first match,
/// record 0, is before the offset the search starts from) scans a bounded
/// number of bytes per request (64 MiB, `TIMESTAMP_SEARCH_BYTES_MAX`): past
/// it, the fetch is a 422 that says where to search on from, and searching
/// on from there finds the record. From the log start the index answers at
/// once, and `seglog consume --time` finds the same record.
#[test]
fn a_search_by_time_is_bounded_per_request_and_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    server.create_topic("big", 1);
    // A new record, 80 old records of about 1 MB (80 MB, past the bound),
    // then a new one.
    let (status, body) = server.post(
        "/topics/big/partitions/0",
        json!({"records": [{"value": "first", "timestamp": 5000}]}),
    );
    assert_eq!(status, 200, "{body}");
    let value = "x".repeat(1_000_000);
    for _ in 0..8 {
        let records: Vec<_> = (0..10)
            .map(|_| json!({"value": value, "timestamp": 1000}))
            .collect();
        let (status, body) = server.post("/topics/big/partitions/0", json!({"records": records}));
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = server.post(
        "/topics/big/partitions/0",
        json!({"records": [{"value": "new", "timestamp": 5000}]}),
    );
    assert_eq!(status, 200, "{body}");
    let mut from = 1;
    let mut stops = 0;
    let found = loop {
        let path =
            format!("/topics/big/partitions/0/records?timestamp=2000&offset={from}&max_records=1");
        let (status, body) = server.get(&path);
        if status == 200 {
            break body;
        }
        assert_eq!(
            (status, &body["error_code"]),
            (422, &json!(42201)),
            "{body}"
        );
        let next = body["next_offset"].as_u64().expect("next_offset");
        assert!(next > from && next < 81, "{body}");
        // Between 64 and 65 records of about 1 MB read (64 MiB, a hold's
        // 1 MiB more at most).
        assert!((64..=70).contains(&(next - from)), "{body}");
        stops += 1;
        from = next;
    };
    assert_eq!(stops, 1);
    assert_eq!(found[0]["offset"], 81);
    assert_eq!(found[0]["value"], "new");

    let (status, body) =
        server.get("/topics/big/partitions/0/records?timestamp=2000&max_records=1");
    assert_eq!((status, &body[0]["offset"]), (200, &json!(0)), "{body}");
    let run = crate::cli::seglog(&server, &["consume", "big", "--time", "2000", "-n", "1"]).ok();
    assert_eq!(run.stdout, "0@0 first\n", "{}", run.stderr);
}

#[test]
fn the_uptime_gauge_grows_and_the_console_is_served_with_its_policy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let uptime = |server: &Server| -> f64 {
        let (_, text) = server.request_text("GET", "/metrics", None);
        text.lines()
            .find_map(|l| l.strip_prefix("seglog_uptime_seconds "))
            .and_then(|v| v.parse().ok())
            .expect("seglog_uptime_seconds")
    };
    let before = uptime(&server);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(uptime(&server) >= before + 0.25);

    let (status, page) = server.request_text("GET", "/ui/", None);
    assert_eq!(status, 200);
    assert!(page.contains("<title>seglog console</title>"), "{page}");
    // Every file the page loads is there; nothing is loaded from elsewhere.
    for file in [
        "app.js",
        "console.css",
        "vendor/uplot/uPlot.iife.min.js",
        "vendor/uplot/LICENSE",
    ] {
        let (status, body) = server.request_text("GET", &format!("/ui/{file}"), None);
        assert_eq!(status, 200, "{file}");
        assert!(!body.is_empty(), "{file}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    server.assert_error("GET", "/ui/nothing.js", None, 404, 40400);
    // The policy lets the page load from and connect to this server only.
    let headers = raw_headers(&server, "/ui/");
    assert!(
        headers.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{headers}"
    );
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    assert!(raw_headers(&server, "/ui").contains("location: /ui/"));
    let (status, config) = server.get("/ui/config.json");
    assert_eq!(status, 200);
    assert_eq!(
        config["writable"], false,
        "read-only unless --console-writable"
    );
    let writable_dir = tempfile::tempdir().expect("temp dir");
    let writable = Server::start(writable_dir.path(), &["--console-writable"]);
    assert_eq!(writable.get("/ui/config.json").1["writable"], true);
}

/// The status line and headers of a GET, lower-cased, read raw.
fn raw_headers(server: &Server, path: &str) -> String {
    use std::io::{Read, Write};
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    reply
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_lowercase()
}
