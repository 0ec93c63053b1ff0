//! Load benchmark of `seglog serve`, the real binary, over HTTP/1.1 with
//! keep-alive connections (a hyper client): durable produce throughput and
//! latency with 64 connections and batches of 1 and of 100 records, p99 at
//! a steady 1,000 requests a second, fetch throughput of a large partition
//! from offset 0, and the server's memory with 100 topics of 100
//! partitions. Each figure is printed beside the goal of issue 12; nothing
//! is asserted. Then the produce of batches of 100 again, on a durable
//! server and on one whose fdatasync, fsync and syncfs are no-ops (an
//! `LD_PRELOAD` shim the bench compiles with `cc`), one after the other, three
//! times, and the median of the rounds' ratios of their rates: what the
//! flushes cost (issue 24's goal: ≥ 0.9).
//!
//! Run with `cargo bench --bench http`. `SEGLOG_BENCH_SECS` sets each timed
//! phase (default 10 s), `SEGLOG_BENCH_FETCH_MB` the partition the fetch
//! phase reads (default 1024 MiB), `SEGLOG_BENCH_DIR` the parent of the data
//! directories (default `target/`, the disk the tests use),
//! `SEGLOG_BENCH_ONLY` one phase (`produce`, `paced`, `ratio`, `fetch` or
//! `memory`),
//! `SEGLOG_BENCH_SERVER_PID_FILE` a file the produce and fetch phases write
//! the server's pid to, for a profiler to attach, and
//! `SEGLOG_BENCH_SERVER_LOG` a file for the server's stderr, and
//! `SEGLOG_BENCH_SERVER_ARGS` more options for `seglog serve`,
//! `SEGLOG_BENCH_BIN` another build's `seglog` to run instead of this
//! one's (to compare two commits), and
//! `SEGLOG_BENCH_METRICS` (any value) to print the servers' sync point and
//! produce histograms after each run of the ratio phase.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[path = "support/nosync.rs"]
mod nosync;

/// Connections of the closed-loop phases (the 64).
const CONNECTIONS: usize = 64;
/// The paced phase's rate.
const PACED_RATE_PER_SEC: u64 = 1000;
/// Value of a produced record: a JSON string of this many characters.
const VALUE_BYTES: usize = 100;
/// Partitions of the produce phases' topic.
const PARTITIONS: u32 = 100;
/// Value size of the records the fetch phase reads: large, as a bulk
/// consumer sees them.
const FETCH_VALUE_BYTES: usize = 4000;
/// Records per request while filling the fetch partition.
const FILL_BATCH: usize = 200;
/// Bytes a fetch asks for at once (the server's `FETCH_BYTES_MAX`).
const FETCH_MAX_BYTES: usize = 64 << 20;
/// Occurs once in each fetched record of the fetch phase.
const OFFSET_FIELD: &[u8] = b"\"offset\":";
/// Resolution of tokio's timer, which paces the paced phase.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);
/// A request slower than this means the server is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let secs = env_u64("SEGLOG_BENCH_SECS", 10);
    let fetch_mb = env_u64("SEGLOG_BENCH_FETCH_MB", 1024);
    let parent = std::env::var_os("SEGLOG_BENCH_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&parent, Duration::from_secs(secs), fetch_mb)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(parent: &Path, phase: Duration, fetch_mb: u64) -> Result<(), String> {
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let only = std::env::var("SEGLOG_BENCH_ONLY").ok();
    let wanted = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    // `paced` alone runs the paced part of the produce phases.
    if wanted("produce") || wanted("paced") {
        produce_phases(parent, phase, &mut rows).await?;
    }
    if wanted("ratio") {
        ratio_phase(parent, phase, &mut rows).await?;
    }
    if wanted("fetch") {
        fetch_phase(parent, fetch_mb, &mut rows).await?;
    }
    if wanted("memory") {
        memory_phase(parent, &mut rows).await?;
    }
    println!();
    println!("{:<78} {:<42} goal", "seglog serve", "measured");
    for (what, figure, goal) in rows {
        println!("{what:<78} {figure:<42} {goal}");
    }
    Ok(())
}

type Rows = Vec<(String, String, String)>;

/// Durable produce: closed loop with batches of 1 and 100, then paced.
async fn produce_phases(parent: &Path, phase: Duration, rows: &mut Rows) -> Result<(), String> {
    // Produce phases, on one server.
    let dir = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
    let server = Server::start(dir.path(), &[])?;
    let addr = server.addr;
    create_topic(addr, "bench", PARTITIONS).await?;
    let value = format!("\"{}\"", "x".repeat(VALUE_BYTES));

    // Paced first, on a fresh log: the steady state of a lightly loaded
    // server, not the checkpoint the closed-loop phases leave due.
    let paced = paced(addr, phase, &value).await?;
    let (p50, p99) = percentiles(&paced.latencies);
    rows.push((
        format!("produce paced at {PACED_RATE_PER_SEC} requests/s, p50 / p99"),
        format!("{p50:.2} / {p99:.2} ms"),
        "p99 ≤ 5 ms".into(),
    ));
    if std::env::var("SEGLOG_BENCH_ONLY").as_deref() == Ok("paced") {
        println!("{}", metrics_line(addr, "seglog_sync_point_seconds").await?);
        println!("{}", metrics_line(addr, "seglog_produce_seconds").await?);
        server.stop()?;
        return Ok(());
    }

    for (batch, goal) in [
        (1usize, "≥ 30,000 requests/s"),
        (100, "≥ 300,000 records/s"),
    ] {
        let result = produce_closed_loop(addr, phase, &value, batch).await?;
        let (p50, p99) = percentiles(&result.latencies);
        let rate = result.requests as f64 / result.elapsed.as_secs_f64();
        let figure = if batch == 1 {
            format!("{} requests/s", thousands(rate))
        } else {
            format!(
                "{} records/s ({} requests/s)",
                thousands(rate * batch as f64),
                thousands(rate)
            )
        };
        rows.push((
            format!("produce, {batch} record(s)/request, {CONNECTIONS} connections"),
            figure,
            goal.into(),
        ));
        rows.push((
            "    latency p50 / p99".into(),
            format!("{p50:.2} / {p99:.2} ms"),
            String::new(),
        ));
    }

    let rss = server.memory()?;
    rows.push((
        "server memory after the produce phases (RSS / peak)".into(),
        rss,
        String::new(),
    ));
    server.stop()?;
    Ok(())
}

/// Rounds of the ratio phase: a durable run and a no-sync run each. On a
/// shared machine one pair's ratio moves by ±0.2 from run to run (other
/// processes' load comes and goes); alternating the two and taking the
/// median of each round's ratio keeps a passing or failing figure from
/// being one lucky or unlucky pair.
const RATIO_ROUNDS: usize = 3;

/// Produce of batches of 100 records from [`CONNECTIONS`] connections on a
/// fresh durable server, then on a fresh server whose flushes are no-ops,
/// [`RATIO_ROUNDS`] times, and the median of the rounds' ratios of the two
/// rates, with the latencies of each over all rounds.
async fn ratio_phase(parent: &Path, phase: Duration, rows: &mut Rows) -> Result<(), String> {
    const BATCH: usize = 100;
    let shim_dir = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
    let shim = match nosync::build_no_sync_shim(shim_dir.path()) {
        Ok(shim) => shim,
        Err(e) => {
            println!("durable / no-sync comparison skipped: {e}");
            return Ok(());
        }
    };
    let value = format!("\"{}\"", "x".repeat(VALUE_BYTES));
    let rate = |m: &Measured| m.requests as f64 * BATCH as f64 / m.elapsed.as_secs_f64();
    // Per round: (durable rate, no-sync rate); and every latency of each.
    let mut rounds: Vec<(f64, f64)> = Vec::new();
    let (mut durable_latencies, mut no_sync_latencies) = (Vec::new(), Vec::new());
    for _ in 0..RATIO_ROUNDS {
        let mut rates = Vec::new();
        for preload in [None, Some(shim.as_path())] {
            let dir = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
            let server = Server::start_preloaded(dir.path(), &[], preload)?;
            let addr = server.addr;
            create_topic(addr, "bench", PARTITIONS).await?;
            let result = produce_closed_loop(addr, phase, &value, BATCH).await?;
            if std::env::var_os("SEGLOG_BENCH_METRICS").is_some() {
                for name in ["seglog_sync_point_seconds", "seglog_produce_seconds"] {
                    println!("{}", metrics_line(addr, name).await?);
                }
            }
            server.stop()?;
            rates.push(rate(&result));
            match preload {
                None => durable_latencies.extend(result.latencies),
                Some(_) => no_sync_latencies.extend(result.latencies),
            }
        }
        rounds.push((rates[0], rates[1]));
    }
    let ratio = |(durable, no_sync): (f64, f64)| durable / no_sync.max(f64::MIN_POSITIVE);
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let ratios: Vec<f64> = rounds.iter().copied().map(ratio).collect();
    let each = ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (d50, d99) = percentiles(&durable_latencies);
    let (n50, n99) = percentiles(&no_sync_latencies);
    rows.push((
        format!("produce, {BATCH} records/request, {CONNECTIONS} connections: durable / no-sync"),
        format!(
            "{:.2}, median of {RATIO_ROUNDS} rounds ({each}); median rates {} / {} records/s",
            median(ratios.clone()),
            thousands(median(rounds.iter().map(|r| r.0).collect())),
            thousands(median(rounds.iter().map(|r| r.1).collect()))
        ),
        "≥ 0.9".into(),
    ));
    rows.push((
        "    latency p50 / p99, durable; no-sync".into(),
        format!("{d50:.2} / {d99:.2} ms; {n50:.2} / {n99:.2} ms"),
        String::new(),
    ));
    Ok(())
}

/// Fetch of one large partition from offset 0, on a fresh server so the
/// partition is read from its files (in the page cache) rather than from
/// what the produce phases left in memory.
async fn fetch_phase(parent: &Path, fetch_mb: u64, rows: &mut Rows) -> Result<(), String> {
    let dir = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
    let server = Server::start(dir.path(), &[])?;
    let addr = server.addr;
    create_topic(addr, "big", 1).await?;
    let filled = fill(addr, fetch_mb << 20).await?;
    let started = Instant::now();
    let fetched = fetch_all(addr, filled.records).await?;
    let took = started.elapsed();
    rows.push((
        format!(
            "fetch {} MiB ({} records) of one partition from offset 0",
            fetched.payload_bytes >> 20,
            fetched.records
        ),
        format!(
            "{:.0} MB/s of records, {:.0} MB/s of JSON",
            fetched.payload_bytes as f64 / took.as_secs_f64() / 1e6,
            fetched.body_bytes as f64 / took.as_secs_f64() / 1e6
        ),
        "≥ 500 MB/s".into(),
    ));
    rows.push((
        "    (filling it: durable produce in batches)".into(),
        format!(
            "{:.0} MB/s",
            filled.bytes as f64 / filled.took.as_secs_f64() / 1e6
        ),
        String::new(),
    ));
    server.stop()?;
    Ok(())
}

/// Memory with 100 topics of 100 partitions, each written and read.
async fn memory_phase(parent: &Path, rows: &mut Rows) -> Result<(), String> {
    let value = format!("\"{}\"", "x".repeat(VALUE_BYTES));
    let dir = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
    let server = Server::start(dir.path(), &[])?;
    let addr = server.addr;
    let mut conn = connect(addr).await?;
    for t in 0..100 {
        create_topic(addr, &format!("topic-{t}"), 100).await?;
        let records: Vec<String> = (0..100)
            .map(|p| format!("{{\"partition\":{p},\"value\":{value}}}"))
            .collect();
        let body = format!("{{\"records\":[{}]}}", records.join(","));
        expect_ok(request(&mut conn, Method::POST, &format!("/topics/topic-{t}"), body).await?)?;
        for p in 0..100 {
            let path = format!("/topics/topic-{t}/partitions/{p}/records?offset=0");
            expect_ok(request(&mut conn, Method::GET, &path, String::new()).await?)?;
        }
    }
    let rss = server.memory()?;
    rows.push((
        "server memory, 100 topics x 100 partitions written and read (RSS / peak)".into(),
        rss,
        "RSS < 100 MB".into(),
    ));
    server.stop()
}

/// The server process.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Result<Server, String> {
        Server::start_preloaded(dir, extra, None)
    }

    /// [`Server::start`] with `preload` in the server's `LD_PRELOAD`.
    fn start_preloaded(
        dir: &Path,
        extra: &[&str],
        preload: Option<&Path>,
    ) -> Result<Server, String> {
        // Another build's binary, to compare two commits on the same bench.
        let binary = std::env::var_os("SEGLOG_BENCH_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_seglog").into());
        let mut command = Command::new(binary);
        if let Some(preload) = preload {
            command.env("LD_PRELOAD", preload);
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .args(
                std::env::var("SEGLOG_BENCH_SERVER_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start seglog serve: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .ok_or("the server ended before listening")?
                .map_err(|e| e.to_string())?;
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split(',').next().unwrap_or_default();
                break addr
                    .parse()
                    .map_err(|e| format!("bad address {addr}: {e}"))?;
            }
        };
        if let Ok(path) = std::env::var("SEGLOG_BENCH_SERVER_PID_FILE") {
            std::fs::write(path, child.id().to_string()).map_err(|e| e.to_string())?;
        }
        // Keep draining stderr so the server never blocks on it.
        // With SEGLOG_BENCH_SERVER_LOG set, they go to that file (with
        // SEGLOG_LOG=1, the server logs each sync point).
        let log = std::env::var_os("SEGLOG_BENCH_SERVER_LOG");
        std::thread::spawn(move || {
            let mut file = log.and_then(|path| std::fs::File::create(path).ok());
            for line in lines.map_while(Result::ok) {
                if let Some(file) = file.as_mut() {
                    let _ = std::io::Write::write_all(file, format!("{line}\n").as_bytes());
                }
            }
        });
        Ok(Server { child, addr })
    }

    /// `VmRSS / VmHWM` of the server.
    fn memory(&self) -> Result<String, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| e.to_string())?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or_else(
                    || "?".to_string(),
                    |kb| format!("{:.1} MB", kb as f64 / 1000.0),
                )
        };
        Ok(format!("{} / {}", field("VmRSS:"), field("VmHWM:")))
    }

    fn stop(mut self) -> Result<(), String> {
        let pid = i32::try_from(self.child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) on our own child with a valid signal.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the server exited with {status}"))
        }
    }
}

type Conn = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn request(
    conn: &mut Conn,
    method: Method,
    path: &str,
    body: String,
) -> Result<(u16, Bytes), String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, async {
        conn.ready().await?;
        let response = conn.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    })
    .await
    .map_err(|_| format!("{path}: no reply in {REQUEST_TIMEOUT:?}"))?;
    response.map_err(|e| format!("{path}: {e}"))
}

fn expect_ok((status, body): (u16, Bytes)) -> Result<Bytes, String> {
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        ))
    }
}

async fn create_topic(addr: SocketAddr, name: &str, partitions: u32) -> Result<(), String> {
    let mut conn = connect(addr).await?;
    let body = format!("{{\"name\":\"{name}\",\"partitions\":{partitions}}}");
    expect_ok(request(&mut conn, Method::POST, "/topics", body).await?).map(drop)
}

fn produce_body(value: &str, records: usize) -> String {
    let record = format!("{{\"value\":{value}}}");
    format!("{{\"records\":[{}]}}", vec![record; records].join(","))
}

/// What a timed phase measured.
struct Measured {
    requests: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Produce requests of `batch` records of `value` to the partitions of
/// `bench` in turn, from each of [`CONNECTIONS`] connections, for `phase`.
async fn produce_closed_loop(
    addr: SocketAddr,
    phase: Duration,
    value: &str,
    batch: usize,
) -> Result<Measured, String> {
    let body = produce_body(value, batch);
    closed_loop(addr, phase, move |conn, i| {
        let partition = (conn * 7 + i) % PARTITIONS as usize;
        (
            format!("/topics/bench/partitions/{partition}"),
            body.clone(),
        )
    })
    .await
}

/// Each of [`CONNECTIONS`] connections sends requests one after another for `phase`.
async fn closed_loop<F>(addr: SocketAddr, phase: Duration, make: F) -> Result<Measured, String>
where
    F: Fn(usize, usize) -> (String, String) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(connect(addr).await?);
    }
    let started = Instant::now();
    let deadline = started + phase;
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let make = Arc::clone(&make);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let (path, body) = make(c, i);
                let sent = Instant::now();
                expect_ok(request(&mut conn, Method::POST, &path, body).await?)?;
                latencies.push(sent.elapsed());
                i += 1;
            }
            Ok::<_, String>(latencies)
        }));
    }
    gather(tasks, started).await
}

/// The latencies the tasks of a timed phase measured, and its length.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, String>>>,
    started: Instant,
) -> Result<Measured, String> {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    Ok(Measured {
        requests: latencies.len() as u64,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// Single-record produce requests at a steady [`PACED_RATE_PER_SEC`], each
/// timed from when it was due (so a stall counts against every request it
/// delays; less the timer's own lateness), over a pool of connections.
async fn paced(addr: SocketAddr, phase: Duration, value: &str) -> Result<Measured, String> {
    let body = produce_body(value, 1);
    let total = PACED_RATE_PER_SEC * phase.as_secs().max(1);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let mut conn = connect(addr).await?;
        let (next, failed, body) = (Arc::clone(&next), Arc::clone(&failed), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total || failed.load(Ordering::Relaxed) {
                    return Ok::<_, String>(latencies);
                }
                let due = started + Duration::from_micros(n * 1_000_000 / PACED_RATE_PER_SEC);
                tokio::time::sleep_until(due.into()).await;
                // tokio's timer wakes up to a millisecond late (its
                // resolution): that much is the client's delay, not the
                // server's; anything later (the client fell behind because
                // the server stalled) counts.
                let late = due.elapsed().min(TIMER_RESOLUTION);
                let path = format!(
                    "/topics/bench/partitions/{}",
                    (c + n as usize) % PARTITIONS as usize
                );
                if let Err(e) = request(&mut conn, Method::POST, &path, body.clone())
                    .await
                    .and_then(expect_ok)
                {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                latencies.push(due.elapsed().saturating_sub(late));
            }
        }));
    }
    gather(tasks, started).await
}

struct Filled {
    records: u64,
    bytes: u64,
    took: Duration,
}

/// Fills partition 0 of `big` with about `bytes` of records, durably, from 4 connections.
async fn fill(addr: SocketAddr, bytes: u64) -> Result<Filled, String> {
    let value = format!("\"{}\"", "y".repeat(FETCH_VALUE_BYTES));
    let body = produce_body(&value, FILL_BATCH);
    let requests = bytes / (FETCH_VALUE_BYTES * FILL_BATCH) as u64 + 1;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut conn = connect(addr).await?;
        let (next, body) = (Arc::clone(&next), body.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                expect_ok(
                    request(
                        &mut conn,
                        Method::POST,
                        "/topics/big/partitions/0",
                        body.clone(),
                    )
                    .await?,
                )?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let records = requests * FILL_BATCH as u64;
    Ok(Filled {
        records,
        bytes: records * FETCH_VALUE_BYTES as u64,
        took: started.elapsed(),
    })
}

struct Fetched {
    records: u64,
    payload_bytes: u64,
    body_bytes: u64,
}

/// Reads partition 0 of `big` from offset 0 to `end` with one connection,
/// one fetch after another, checking the offsets.
async fn fetch_all(addr: SocketAddr, end: u64) -> Result<Fetched, String> {
    let mut conn = connect(addr).await?;
    let mut offset = 0;
    let mut fetched = Fetched {
        records: 0,
        payload_bytes: 0,
        body_bytes: 0,
    };
    while offset < end {
        let path = format!(
            "/topics/big/partitions/0/records?offset={offset}&max_bytes={FETCH_MAX_BYTES}&max_records=100000"
        );
        let request = Request::builder()
            .uri(&path)
            .header("host", "bench")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        conn.ready().await.map_err(|e| e.to_string())?;
        let response = conn
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("fetch at {offset}: status {}", response.status()));
        }
        // Counted as it arrives, without a JSON parser (which would be
        // slower than the server): each record has one `"offset":` (the
        // values are all `y`), and a match may span two frames.
        let mut body = response.into_body();
        let mut count = 0u64;
        let mut carry: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            fetched.body_bytes += data.len() as u64;
            let head = data.len().min(OFFSET_FIELD.len() - 1);
            carry.extend_from_slice(&data[..head]);
            count += count_matches(&carry, OFFSET_FIELD);
            count += count_matches(data, OFFSET_FIELD);
            carry.clear();
            let tail = data.len().saturating_sub(OFFSET_FIELD.len() - 1);
            carry.extend_from_slice(&data[tail..]);
        }
        if count == 0 {
            return Err(format!("empty fetch at offset {offset} of {end}"));
        }
        offset += count;
        fetched.records += count;
        fetched.payload_bytes += count * FETCH_VALUE_BYTES as u64;
    }
    if offset != end {
        return Err(format!("read to offset {offset}, expected {end}"));
    }
    Ok(fetched)
}

fn count_matches(haystack: &[u8], needle: &[u8]) -> u64 {
    let mut count = 0;
    let mut rest = haystack;
    while let Some(at) = find(rest, needle) {
        count += 1;
        rest = &rest[at + needle.len()..];
    }
    count
}

/// Where `needle` first occurs in `haystack`: a scan for its first byte,
/// which the values of the fetch phase never hold.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == needle[0]) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The lines of one metric from the server's `/metrics`, for a look at
/// the server's own view (`SEGLOG_BENCH_ONLY=paced` prints its histograms).
async fn metrics_line(addr: SocketAddr, name: &str) -> Result<String, String> {
    let mut conn = connect(addr).await?;
    let body = expect_ok(request(&mut conn, Method::GET, "/metrics", String::new()).await?)?;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn percentiles(latencies: &[Duration]) -> (f64, f64) {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.50), at(0.99))
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
