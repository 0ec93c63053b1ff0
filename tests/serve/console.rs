//! The console at `/ui` in a real browser: Debian's headless Chromium,
//! driven by `tests/console/console.mjs` through playwright-core (which
//! never downloads a browser here), against a real `seglog serve` filled
//! with records through HTTP and Kafka (kcat). The script checks every
//! page's numbers against the API, pages through a partition, watches the
//! charts update, creates and deletes a topic from a writable console and
//! finds no forms on a read-only one, and fails on any browser error. Its
//! screenshots (each page at a desktop and a phone size) are kept in
//! `target/tmp/console-screenshots/`, or in `SEGLOG_CONSOLE_SCREENSHOTS`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kafka::start_with;
use crate::support::serve_process::Server;
use crate::support::tools;

/// How long the browser script may take: about 20 s on an idle 2-core
/// machine; the rest is room for a loaded one.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

/// When the test's records were written, as their producer says: an hour
/// ago, a second apart, so that a page from a time has one right answer.
const FIRST_TIMESTAMP_AGO_MS: u64 = 3_600_000;

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

fn screenshots() -> PathBuf {
    std::env::var_os("SEGLOG_CONSOLE_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
        PathBuf::from,
    )
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit")
}

/// Fills a server as a small shop would: orders by customer over three
/// partitions, clicks, a record whose key and value hold markup, two
/// consumer groups, and a Kafka record with binary bytes and a header.
/// Returns what the browser script expects.
fn fill(server: &Server, kafka: &str) -> Value {
    server.create_topic("orders", 3);
    let (status, body) = server.post(
        "/topics",
        json!({"name": "clicks", "partitions": 2, "retention_ms": 604_800_000u64}),
    );
    assert_eq!(status, 201, "{body}");
    let first_ts = now_ms() - FIRST_TIMESTAMP_AGO_MS;
    let items = ["tea", "cake", "scones", "jam", "cream"];
    for partition in 0..3u32 {
        let records: Vec<Value> = (0..40u64)
            .map(|i| {
                json!({"key": format!("customer-{}", i % 7), "partition": partition,
                    "timestamp": first_ts + i * 1000,
                    "value": {"item": items[(i as usize) % items.len()], "qty": i % 4 + 1, "price": 3.5}})
            })
            .collect();
        let (status, body) = server.post("/topics/orders", json!({ "records": records }));
        assert_eq!(status, 200, "{body}");
    }
    let html_key = "<script>alert(1)</script>";
    let html_value = json!({"note": "<img src=x onerror=alert(1)>", "b": "<b>bold</b>"});
    let (status, body) = server.post(
        "/topics/orders",
        json!({"records": [{"key": html_key, "partition": 1, "value": html_value}]}),
    );
    assert_eq!(status, 200, "{body}");
    let html_offset = body["offsets"][0]["offset"].clone();
    for page in ["/", "/pricing", "/basket"] {
        server.produce("clicks", 0, &[json!({"page": page, "ms": 120})]);
    }
    for (group, offsets) in [
        (
            "billing",
            json!([{"topic": "orders", "partition": 0, "offset": 25},
                           {"topic": "orders", "partition": 1, "offset": 10},
                           {"topic": "orders", "partition": 2, "offset": 40}]),
        ),
        (
            "analytics",
            json!([{"topic": "clicks", "partition": 0, "offset": 1}]),
        ),
    ] {
        let (status, body) = server.post(
            &format!("/groups/{group}/offsets"),
            json!({"offsets": offsets}),
        );
        assert_eq!(status, 200, "{body}");
    }
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            kafka,
            "-P",
            "-t",
            "telemetry",
            "-K:",
            "-H",
            "source=kcat",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run kcat");
    kcat.stdin
        .take()
        .expect("kcat's stdin")
        .write_all(b"sensor-1:\xff\xfe\x00binary\n")
        .expect("write to kcat");
    assert!(kcat.wait().expect("kcat").success(), "kcat failed");
    json!({
        "topic": "orders", "partition": 1, "group": "billing",
        "html_offset": html_offset, "html_key": html_key, "html_value": html_value,
        "time_ms": first_ts + 5 * 1000, "time_offset": 5,
        "kafka_topic": "telemetry", "kafka_header": "source",
    })
}

#[test]
fn every_console_page_shows_the_servers_numbers_in_chromium() {
    let console = console_dir();
    tools::require_browser(&console);
    tools::require_kcat();
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, kafka) = start_with(dir.path(), &["--console-writable"]);
    let readonly_dir = tempfile::tempdir().expect("temp dir");
    let readonly = Server::start(readonly_dir.path(), &[]);
    let expect = fill(&server, &kafka);
    let shots = screenshots();

    let started = Instant::now();
    let mut script = Command::new("node")
        .arg(console.join("console.mjs"))
        .current_dir(&console)
        .env("SEGLOG_URL", &server.base)
        .env("SEGLOG_READONLY_URL", &readonly.base)
        .env("SCREENSHOTS", &shots)
        .env("EXPECT", expect.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let status = loop {
        if let Some(status) = script.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = script.kill();
            let _ = script.wait();
            panic!("the browser script took over {SCRIPT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = script.wait_with_output().expect("node's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        status.success(),
        "the browser script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("every check passed"), "{stdout}");
    for page in [
        "overview",
        "topics",
        "topic",
        "records",
        "records-kafka",
        "groups",
        "group",
    ] {
        for size in ["desktop", "phone"] {
            let shot = shots.join(format!("{page}-{size}.png"));
            let bytes = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
            assert!(
                bytes > 10_000,
                "{} is missing or blank ({bytes} bytes)",
                shot.display()
            );
        }
    }
    eprintln!(
        "console: every page checked in {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
}
