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
//! In the same run, the produce and fetch phases again on a 3-node cluster
//! on this machine (issue 20's goal): three `seglog serve --peers`
//! processes on loopback, replication factor 3, each produce answered once
//! durable on a majority. Once every node has registered, the topic is
//! created at one node, and the bench waits until every node names the same
//! leader for each partition (`GET /cluster`). The [`CONNECTIONS`]
//! connections are spread over the nodes and each sends to the partitions
//! its node leads (then, as a second figure, to partitions its node
//! follows, which forwards each produce to the leader). The fetch
//! partition is filled at its leader, every replica is let catch up, and
//! it is read at the leader, then at a follower. The table puts the 3-node
//! figures beside the single node's.
//!
//! Run with `cargo bench --bench http`. `SEGLOG_BENCH_SECS` sets each timed
//! phase (default 10 s), `SEGLOG_BENCH_FETCH_MB` the partition the fetch
//! phase reads (default 1024 MiB), `SEGLOG_BENCH_DIR` the parent of the data
//! directories (default `target/`, the disk the tests use),
//! `SEGLOG_BENCH_ONLY` one phase (`produce`, `paced`, `ratio`, `fetch` or
//! `memory`; `produce` and `fetch` on both the single node and the cluster;
//! `cluster` the cluster's produce and fetch alone),
//! `SEGLOG_BENCH_CLUSTER=0` no cluster phases,
//! `SEGLOG_BENCH_SERVER_PID_FILE` a file the produce and fetch phases write
//! the (single) server's pid to, for a profiler to attach, and
//! `SEGLOG_BENCH_SERVER_LOG` a file for the server's stderr (a cluster
//! node's goes to that name with `.nodeN` after it), and
//! `SEGLOG_BENCH_SERVER_ARGS` more options for `seglog serve` (every node's),
//! `SEGLOG_BENCH_BIN` another build's `seglog` to run instead of this
//! one's (to compare two commits), and
//! `SEGLOG_BENCH_METRICS` (any value) to print the servers' sync point and
//! produce histograms after each run of the ratio phase.

use std::ffi::OsString;
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
    let mut rows = Rows::default();
    let only = std::env::var("SEGLOG_BENCH_ONLY").ok();
    let wanted = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    let cluster = std::env::var("SEGLOG_BENCH_CLUSTER").as_deref() != Ok("0");
    // `paced` alone runs the paced part of the produce phases.
    if wanted("produce") || wanted("paced") {
        produce_phases(parent, phase, &mut rows).await?;
    }
    if cluster && (wanted("produce") || only.as_deref() == Some("cluster")) {
        cluster_produce_phases(parent, phase, &mut rows).await?;
    }
    if wanted("ratio") {
        ratio_phase(parent, phase, &mut rows).await?;
    }
    if wanted("fetch") {
        fetch_phase(parent, fetch_mb, &mut rows).await?;
    }
    if cluster && (wanted("fetch") || only.as_deref() == Some("cluster")) {
        cluster_fetch_phase(parent, fetch_mb, &mut rows).await?;
    }
    if wanted("memory") {
        memory_phase(parent, &mut rows).await?;
    }
    println!();
    if cluster {
        println!(
            "3 nodes: {CLUSTER_NODES} `seglog serve --peers` processes on this machine over \
             loopback, replication factor {CLUSTER_NODES}, each produce answered once durable \
             on a majority; the {CONNECTIONS} connections are spread over the nodes, and each \
             sends to partitions that node leads (\"at a follower\": partitions it follows, \
             whose produce it forwards to their leader); memory is the node that holds \
             the most."
        );
        println!();
    }
    println!(
        "{:<WHAT$} {:<FIGURE$} {:<FIGURE$} goal",
        "seglog serve", "single node", "3 nodes"
    );
    for row in rows.0 {
        println!(
            "{:<WHAT$} {:<FIGURE$} {:<FIGURE$} {}",
            row.what, row.single, row.cluster, row.goal
        );
    }
    Ok(())
}

/// Widths of the table's columns: what was measured, and each figure.
const WHAT: usize = 74;
const FIGURE: usize = 40;

/// One line of the table: what was measured, on a single node and on the
/// 3-node cluster (`-` where not measured), and the goal.
struct Row {
    what: String,
    single: String,
    cluster: String,
    goal: String,
}

/// The table's lines, in the order first measured.
#[derive(Default)]
struct Rows(Vec<Row>);

impl Rows {
    /// A single node's figure, on a line of its own.
    fn single(&mut self, (what, figure, goal): (String, String, String)) {
        self.0.push(Row {
            what,
            single: figure,
            cluster: "-".into(),
            goal,
        });
    }

    /// The cluster's figure, beside the single node's of the same `what`
    /// if it was measured, else on a line of its own after the cluster's
    /// last figure.
    fn cluster(&mut self, what: String, figure: String) {
        if let Some(row) = self.0.iter_mut().find(|row| row.what == what) {
            row.cluster = figure;
            return;
        }
        let after = self.0.iter().rposition(|row| row.cluster != "-");
        self.0.insert(
            after.map_or(self.0.len(), |at| at + 1),
            Row {
                what,
                single: "-".into(),
                cluster: figure,
                goal: String::new(),
            },
        );
    }

    /// The cluster's figure on the line `what` right under the line
    /// `above`, which is made if the single node has none there.
    fn cluster_under(&mut self, above: &str, what: &str, figure: String) {
        let Some(at) = self.0.iter().position(|row| row.what == above) else {
            return self.cluster(what.into(), figure);
        };
        match self.0.get_mut(at + 1) {
            Some(next) if next.what == what => next.cluster = figure,
            _ => self.0.insert(
                at + 1,
                Row {
                    what: what.into(),
                    single: "-".into(),
                    cluster: figure,
                    goal: String::new(),
                },
            ),
        }
    }
}

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
    rows.single((
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
        let result = produce_closed_loop(&single_routes(addr), phase, &value, batch).await?;
        let (figure, latency) = produce_figures(&result, batch);
        rows.single((produce_what(batch, ""), figure, goal.into()));
        rows.single((LATENCY_WHAT.into(), latency, String::new()));
    }

    let rss = server.memory()?;
    rows.single((MEMORY_WHAT.into(), rss, String::new()));
    server.stop()?;
    Ok(())
}

/// The line of a closed-loop produce of `batch` records a request;
/// `where_` says where they were sent, if not to each partition's leader.
fn produce_what(batch: usize, where_: &str) -> String {
    format!("produce{where_}, {batch} record(s)/request, {CONNECTIONS} connections")
}

/// The line under each produce's, with its latencies.
const LATENCY_WHAT: &str = "    latency p50 / p99";

/// The line of the servers' memory after the produce phases.
const MEMORY_WHAT: &str = "server memory after the produce phases (RSS / peak)";

/// A closed-loop produce's rate and its latencies, as the table shows them.
fn produce_figures(result: &Measured, batch: usize) -> (String, String) {
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
    (figure, format!("{p50:.2} / {p99:.2} ms"))
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
            let result = produce_closed_loop(&single_routes(addr), phase, &value, BATCH).await?;
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
    rows.single((
        format!("produce, {BATCH} records/request, {CONNECTIONS} connections: durable / no-sync"),
        format!(
            "{:.2}, median of {RATIO_ROUNDS} rounds ({each}); median rates {} / {} records/s",
            median(ratios.clone()),
            thousands(median(rounds.iter().map(|r| r.0).collect())),
            thousands(median(rounds.iter().map(|r| r.1).collect()))
        ),
        "≥ 0.9".into(),
    ));
    rows.single((
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
    rows.single((
        fetch_what(&fetched),
        fetch_figure(&fetched, took),
        "≥ 500 MB/s".into(),
    ));
    rows.single((FILL_WHAT.into(), fill_figure(&filled), String::new()));
    server.stop()?;
    Ok(())
}

/// The line of the fetch phase.
fn fetch_what(fetched: &Fetched) -> String {
    format!(
        "fetch {} MiB ({} records) of one partition from offset 0",
        fetched.payload_bytes >> 20,
        fetched.records
    )
}

/// A fetch's rate of records and of the JSON that carried them.
fn fetch_figure(fetched: &Fetched, took: Duration) -> String {
    format!(
        "{:.0} MB/s of records, {:.0} MB/s of JSON",
        fetched.payload_bytes as f64 / took.as_secs_f64() / 1e6,
        fetched.body_bytes as f64 / took.as_secs_f64() / 1e6
    )
}

/// The line under the fetch's, with the rate that filled its partition.
const FILL_WHAT: &str = "    (filling it: durable produce in batches)";

fn fill_figure(filled: &Filled) -> String {
    format!(
        "{:.0} MB/s",
        filled.bytes as f64 / filled.took.as_secs_f64() / 1e6
    )
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
    rows.single((
        "server memory, 100 topics x 100 partitions written and read (RSS / peak)".into(),
        rss,
        "RSS < 100 MB".into(),
    ));
    server.stop()
}

/// The produce phases' closed loops on a fresh 3-node cluster: batches of
/// 1 and of 100, sent to each partition's leader, then to a follower of it.
async fn cluster_produce_phases(
    parent: &Path,
    phase: Duration,
    rows: &mut Rows,
) -> Result<(), String> {
    let cluster = Cluster::start(parent)?;
    cluster.registered().await?;
    create_cluster_topic(cluster.nodes[0].server.addr, "bench", PARTITIONS).await?;
    let leaders = cluster.leaders("bench", PARTITIONS).await?;
    let value = format!("\"{}\"", "x".repeat(VALUE_BYTES));
    for (at_leader, where_) in [(true, ""), (false, " at a follower (forwarded)")] {
        // Connection c goes to node c mod 3, for the partitions that node
        // leads (or follows).
        let routes: Routes = (0..CONNECTIONS)
            .map(|c| {
                let node = &cluster.nodes[c % cluster.nodes.len()];
                let partitions = (0..PARTITIONS)
                    .filter(|&p| (leaders[p as usize] == node.id) == at_leader)
                    .collect();
                (node.server.addr, partitions)
            })
            .collect();
        for batch in [1usize, 100] {
            let result = produce_closed_loop(&routes, phase, &value, batch).await?;
            let (figure, latency) = produce_figures(&result, batch);
            let what = produce_what(batch, where_);
            rows.cluster(what.clone(), figure);
            rows.cluster_under(&what, LATENCY_WHAT, latency);
        }
    }
    // The node that holds the most, as one figure beside the single node's.
    let mut largest = (0, String::new());
    for node in &cluster.nodes {
        let rss = node.server.memory_kb()?.0.unwrap_or_default();
        if rss >= largest.0 {
            largest = (rss, format!("{}, node {}", node.server.memory()?, node.id));
        }
    }
    rows.cluster(MEMORY_WHAT.into(), largest.1);
    cluster.stop()
}

/// The fetch phase on a fresh 3-node cluster: the partition is filled at
/// its leader, every replica is let catch up, then it is read from offset
/// 0 at the leader and again at a follower.
async fn cluster_fetch_phase(parent: &Path, fetch_mb: u64, rows: &mut Rows) -> Result<(), String> {
    let cluster = Cluster::start(parent)?;
    cluster.registered().await?;
    create_cluster_topic(cluster.nodes[0].server.addr, "big", 1).await?;
    let leader_id = cluster.leaders("big", 1).await?[0];
    let leader = cluster.node(leader_id)?;
    let follower = cluster
        .nodes
        .iter()
        .find(|node| node.id != leader_id)
        .ok_or("a cluster of one node")?;
    let filled = fill(leader.server.addr, fetch_mb << 20).await?;
    for node in &cluster.nodes {
        caught_up(node.server.addr, "big", filled.records).await?;
    }
    let started = Instant::now();
    let fetched = fetch_all(leader.server.addr, filled.records).await?;
    let took = started.elapsed();
    rows.cluster(fetch_what(&fetched), fetch_figure(&fetched, took));
    rows.cluster(FILL_WHAT.into(), fill_figure(&filled));
    let started = Instant::now();
    let fetched = fetch_all(follower.server.addr, filled.records).await?;
    rows.cluster(
        "    the same fetch at a follower".into(),
        fetch_figure(&fetched, started.elapsed()),
    );
    cluster.stop()
}

/// Waits until partition 0 of `topic` at `addr` ends at `end` or later
/// (a follower has applied what the leader acknowledged).
async fn caught_up(addr: SocketAddr, topic: &str, end: u64) -> Result<(), String> {
    let deadline = Instant::now() + CLUSTER_PATIENCE;
    loop {
        let mut conn = connect(addr).await?;
        let path = format!("/topics/{topic}");
        let body = expect_ok(request(&mut conn, Method::GET, &path, String::new()).await?)?;
        let reply: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let at = reply["partitions"][0]["end_offset"].as_u64();
        if at.is_some_and(|at| at >= end) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{addr} has {topic} to {at:?}, not {end}, after {CLUSTER_PATIENCE:?}"
            ));
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    }
}

/// Nodes of the cluster phases (the three).
const CLUSTER_NODES: usize = 3;
/// How long the cluster may take to elect leaders or catch up before the
/// bench fails rather than hang: an election from a fresh start takes about
/// two seconds, more on a loaded machine (as `tests/support/cluster_process.rs`
/// allows).
const CLUSTER_PATIENCE: Duration = Duration::from_secs(60);
/// How often the bench asks the cluster again while it waits.
const CLUSTER_POLL: Duration = Duration::from_millis(50);
/// Random bytes of the cluster secret (the binary wants at least 32).
const SECRET_BYTES: usize = 32;

/// One node of the bench's cluster.
struct ClusterNode {
    /// Its `--node-id`.
    id: u64,
    server: Server,
    _dir: tempfile::TempDir,
}

/// [`CLUSTER_NODES`] `seglog serve --peers` processes on loopback, each with
/// its own data directory and HTTP, Kafka and peer ports.
struct Cluster {
    nodes: Vec<ClusterNode>,
    /// Holds the secret file every node reads.
    _secret: tempfile::TempDir,
}

impl Cluster {
    /// Starts every node at once (a node may wait for its peers before it
    /// answers), then waits until each says where it listens.
    fn start(parent: &Path) -> Result<Cluster, String> {
        let secret_dir = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
        let secret = write_secret(secret_dir.path())?;
        // Three ports a node: HTTP, Kafka, peers. Bound and let go, as the
        // cluster tests do: another process could take one in between.
        let ports = free_ports(3 * CLUSTER_NODES)?;
        let ids: Vec<u64> = (1..=CLUSTER_NODES as u64).collect();
        let peers: Vec<String> = ids
            .iter()
            .zip(ports.chunks(3))
            .map(|(id, p)| format!("{id}={}", p[2]))
            .collect();
        let mut launched = Vec::new();
        for (&id, p) in ids.iter().zip(ports.chunks(3)) {
            let dir = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
            let args: Vec<OsString> = vec![
                "--listen".into(),
                p[0].to_string().into(),
                "--kafka".into(),
                p[1].to_string().into(),
                "--data-dir".into(),
                dir.path().into(),
                "--node-id".into(),
                id.to_string().into(),
                "--peers".into(),
                peers.join(",").into(),
                "--cluster-id".into(),
                "bench".into(),
                "--cluster-secret-file".into(),
                secret.clone().into(),
            ];
            launched.push((id, Server::launch(&args, None)?, dir));
        }
        let mut nodes = Vec::new();
        let mut failed = None;
        for (id, child, dir) in launched {
            match Server::listening(child, Some(&format!(".node{id}"))) {
                Ok(server) => nodes.push(ClusterNode {
                    id,
                    server,
                    _dir: dir,
                }),
                Err(e) => failed = Some(format!("node {id}: {e}")),
            }
        }
        let cluster = Cluster {
            nodes,
            _secret: secret_dir,
        };
        match failed {
            None => Ok(cluster),
            Some(e) => {
                // The nodes that did start are stopped; the first error is the one to see.
                let _ = cluster.stop();
                Err(e)
            }
        }
    }

    fn node(&self, id: u64) -> Result<&ClusterNode, String> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .ok_or_else(|| format!("no node {id}"))
    }

    /// Waits until every node's `GET /cluster` lists every node registered
    /// and names a metadata leader: a topic can then be created (before,
    /// its replicas cannot be chosen).
    async fn registered(&self) -> Result<(), String> {
        let deadline = Instant::now() + CLUSTER_PATIENCE;
        loop {
            let mut views = Vec::new();
            for node in &self.nodes {
                views.push(cluster_view(node.server.addr).await);
            }
            let ready = |view: &Result<serde_json::Value, String>| {
                view.as_ref().is_ok_and(|view| {
                    !view["metadata_leader"].is_null()
                        && view["nodes"].as_array().map(Vec::len) == Some(self.nodes.len())
                })
            };
            if views.iter().all(ready) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "after {CLUSTER_PATIENCE:?}, not every node has registered: {views:?}"
                ));
            }
            tokio::time::sleep(CLUSTER_POLL).await;
        }
    }

    /// Waits until every node's `GET /cluster` lists the `partitions` of
    /// `topic`, each with a leader, the same at every node; the leaders.
    async fn leaders(&self, topic: &str, partitions: u32) -> Result<Vec<u64>, String> {
        let deadline = Instant::now() + CLUSTER_PATIENCE;
        loop {
            let mut views = Vec::new();
            for node in &self.nodes {
                views.push(partition_leaders(node.server.addr, topic, partitions).await);
            }
            if let Some(Ok(first)) = views.first()
                && first.iter().all(Option::is_some)
                && views.iter().all(|view| view.as_ref() == Ok(first))
            {
                return Ok(first.iter().flatten().copied().collect());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "after {CLUSTER_PATIENCE:?}, the nodes do not agree on leaders of \
                     every partition of {topic}: {views:?}"
                ));
            }
            tokio::time::sleep(CLUSTER_POLL).await;
        }
    }

    /// Stops every node; the first failure, once all are stopped.
    fn stop(mut self) -> Result<(), String> {
        let mut result = Ok(());
        for node in std::mem::take(&mut self.nodes) {
            let id = node.id;
            if let Err(e) = node.server.stop() {
                result = result.and(Err(format!("node {id}: {e}")));
            }
        }
        result
    }
}

impl Drop for Cluster {
    /// A bench that failed midway leaves no node running: each not stopped
    /// is killed.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.server.child.kill();
            let _ = node.server.child.wait();
        }
    }
}

/// Creates `topic` with `partitions` at the node at `addr`. A 503 (the
/// metadata group did not commit in time, as on a loaded machine; the topic
/// may or may not have been made) is asked again, and a 409 after it means
/// the earlier attempt took effect, for up to [`CLUSTER_PATIENCE`].
async fn create_cluster_topic(addr: SocketAddr, name: &str, partitions: u32) -> Result<(), String> {
    let deadline = Instant::now() + CLUSTER_PATIENCE;
    let body = format!("{{\"name\":\"{name}\",\"partitions\":{partitions}}}");
    let mut retried = false;
    loop {
        let mut conn = connect(addr).await?;
        let (status, reply) = request(&mut conn, Method::POST, "/topics", body.clone()).await?;
        match status {
            200..300 => return Ok(()),
            409 if retried => return Ok(()),
            503 if Instant::now() < deadline => {
                eprintln!(
                    "creating {name}: {}; asking again",
                    String::from_utf8_lossy(&reply)
                );
                retried = true;
                tokio::time::sleep(CLUSTER_POLL).await;
            }
            _ => return expect_ok((status, reply)).map(drop),
        }
    }
}

/// The leader of each of the first `partitions` partitions of `topic` as
/// the node at `addr` knows them (`None`: none yet, or not known there).
async fn partition_leaders(
    addr: SocketAddr,
    topic: &str,
    partitions: u32,
) -> Result<Vec<Option<u64>>, String> {
    let view = cluster_view(addr).await?;
    let mut leaders = vec![None; partitions as usize];
    for partition in view["partitions"].as_array().into_iter().flatten() {
        if partition["topic"].as_str() != Some(topic) {
            continue;
        }
        let at = partition["partition"]
            .as_u64()
            .and_then(|p| usize::try_from(p).ok());
        if let Some(slot) = at.and_then(|p| leaders.get_mut(p)) {
            *slot = partition["leader"].as_u64();
        }
    }
    Ok(leaders)
}

/// The `GET /cluster` of the node at `addr`.
async fn cluster_view(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let mut conn = connect(addr).await?;
    let body = expect_ok(request(&mut conn, Method::GET, "/cluster", String::new()).await?)?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// Free loopback ports: bound at once, then let go for the nodes to take.
fn free_ports(count: usize) -> Result<Vec<SocketAddr>, String> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    listeners
        .iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect()
}

/// A cluster secret file in `dir`: [`SECRET_BYTES`] random bytes as hex,
/// mode 0600 from its creation (the binary refuses one others may read).
fn write_secret(dir: &Path) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("cluster-secret");
    let bytes: [u8; SECRET_BYTES] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("creating the secret file: {e}"))?;
    writeln!(file, "{hex}").map_err(|e| e.to_string())?;
    Ok(path)
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
        let mut args: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:0".into()];
        args.extend(["--data-dir".into(), dir.into()]);
        args.extend(extra.iter().map(OsString::from));
        let server = Server::listening(Server::launch(&args, preload)?, None)?;
        if let Ok(path) = std::env::var("SEGLOG_BENCH_SERVER_PID_FILE") {
            std::fs::write(path, server.child.id().to_string()).map_err(|e| e.to_string())?;
        }
        Ok(server)
    }

    /// Starts `seglog serve` with `args` (and `SEGLOG_BENCH_SERVER_ARGS`),
    /// `preload` in its `LD_PRELOAD`; [`Server::listening`] waits for it.
    fn launch(args: &[OsString], preload: Option<&Path>) -> Result<Child, String> {
        // Another build's binary, to compare two commits on the same bench.
        let binary = std::env::var_os("SEGLOG_BENCH_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_seglog").into());
        let mut command = Command::new(binary);
        if let Some(preload) = preload {
            command.env("LD_PRELOAD", preload);
        }
        command
            .arg("serve")
            .args(args)
            .args(
                std::env::var("SEGLOG_BENCH_SERVER_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start seglog serve: {e}"))
    }

    /// Waits until `child` says where it listens for HTTP; its stderr goes
    /// on to `SEGLOG_BENCH_SERVER_LOG`, with `suffix` after that name (one
    /// file per node of a cluster).
    fn listening(mut child: Child, suffix: Option<&str>) -> Result<Server, String> {
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
        // Keep draining stderr so the server never blocks on it.
        // With SEGLOG_BENCH_SERVER_LOG set, they go to that file (with
        // SEGLOG_LOG=1, the server logs each sync point).
        let log = std::env::var_os("SEGLOG_BENCH_SERVER_LOG").map(|mut path| {
            path.push(suffix.unwrap_or_default());
            path
        });
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
        let (rss, peak) = self.memory_kb()?;
        let mb = |kb: Option<u64>| {
            kb.map_or_else(|| "?".into(), |kb| format!("{:.1} MB", kb as f64 / 1000.0))
        };
        Ok(format!("{} / {}", mb(rss), mb(peak)))
    }

    /// `VmRSS` and `VmHWM` of the server in kB, each if the kernel says.
    fn memory_kb(&self) -> Result<(Option<u64>, Option<u64>), String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| e.to_string())?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
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

/// Where each of the [`CONNECTIONS`] connections of a closed-loop produce
/// sends: a server, and the partitions of `bench` it sends to in turn.
type Routes = Vec<(SocketAddr, Vec<u32>)>;

/// Every connection to the single server at `addr`, for every partition.
fn single_routes(addr: SocketAddr) -> Routes {
    vec![(addr, (0..PARTITIONS).collect()); CONNECTIONS]
}

/// Produce requests of `batch` records of `value` to the partitions of
/// `bench` in turn, from each of [`CONNECTIONS`] connections as `routes`
/// has them, for `phase`.
async fn produce_closed_loop(
    routes: &Routes,
    phase: Duration,
    value: &str,
    batch: usize,
) -> Result<Measured, String> {
    if let Some((addr, _)) = routes.iter().find(|(_, partitions)| partitions.is_empty()) {
        return Err(format!("no partition to send to at {addr}"));
    }
    let body = produce_body(value, batch);
    let partitions: Vec<Vec<u32>> = routes.iter().map(|(_, p)| p.clone()).collect();
    let addrs: Vec<SocketAddr> = routes.iter().map(|(addr, _)| *addr).collect();
    closed_loop(&addrs, phase, move |conn, i| {
        let of = &partitions[conn];
        let partition = of[(conn * 7 + i) % of.len()];
        (
            format!("/topics/bench/partitions/{partition}"),
            body.clone(),
        )
    })
    .await
}

/// Each of the connections, one to each of `addrs`, sends requests one
/// after another for `phase`.
async fn closed_loop<F>(addrs: &[SocketAddr], phase: Duration, make: F) -> Result<Measured, String>
where
    F: Fn(usize, usize) -> (String, String) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let mut conns = Vec::with_capacity(addrs.len());
    for &addr in addrs {
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
