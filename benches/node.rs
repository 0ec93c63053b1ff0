//! End-to-end node benchmark over the real binary's stdin and stdout: pipelined durable sends,
//! pipelined polls, open-loop sends at a steady rate, and recovery time. Figures are printed, not
//! asserted.
//!
//! The whole run is made twice: durable, then with fdatasync, fsync and syncfs turned into
//! no-ops by an `LD_PRELOAD` shim the bench compiles with `cc`, and the ratio of the two send rates
//! is printed (how close the node is to its own CPU limit).
//!
//! After the pipelined sends, each run finds the rate they reached and sends open loop at
//! [`LADDER_FRACTIONS`] of it (25%, 50% and 90%), printing p50 / p99 / p999 of the durable send
//! latency at each: the tail a client sees below saturation (issue 24's goal: p99 ≤ 2 ms at 50%).
//!
//! Then a cluster of [`CLUSTER_NODES`] durable nodes joined by the test router (no delay) takes
//! the same pipelined sends through one node, each acknowledged once committed on a majority and
//! applied there, and the rate is printed beside the single node's.
//!
//! Run with `cargo bench --bench node`. `SEGLOG_BENCH_SECS` sets the length of each timed phase
//! (default 10 s); `SEGLOG_BENCH_DIR` the parent of the data directory (default `target/`, the
//! disk the tests use); `SEGLOG_BIN` another binary than the one cargo built;
//! `SEGLOG_BENCH_ONLY=rates` runs only the pipelined sends and the rate ladder, durable and
//! no-sync.

#[allow(
    dead_code,
    reason = "shared with the workload tests; the bench uses the node and connection"
)]
#[path = "../tests/support/workload/mod.rs"]
mod workload;

#[path = "support/nosync.rs"]
mod nosync;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use workload::connection::{Connection, Network, ProtocolErrors, Reply, Wiring, lock};
use workload::node::{self, NodeConfig, NodeProcess};
use workload::router::{NetworkConfig, Router};
use workload::supervisor::Supervisor;

/// Requests kept in flight by the closed-loop phases (the pipelining depth).
const IN_FLIGHT: usize = 64;

/// Keys written by the send phases and read by the poll phase.
const KEYS: usize = 1000;

/// Message size: `msg` is a JSON string of this many characters.
const MESSAGE_BYTES: usize = 100;

/// The open-loop phase's request rate, Maelstrom's `--rate` for the Fly.io challenges.
const PACED_RATE_PER_SEC: u32 = 1000;

/// Default length of each timed phase; the poll phase runs half of it.
const PHASE_SECS_DEFAULT: u64 = 10;

/// A reply later than this means the node is stuck; the bench stops instead of hanging.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Fractions of the pipelined send rate the rate ladder sends at, open loop.
const LADDER_FRACTIONS: [f64; 3] = [0.25, 0.50, 0.90];

/// Outstanding requests the open-loop phase tolerates before calling the node saturated.
const PACED_BACKLOG_MAX: usize = 10_000;

/// The node's limit on message bytes in one poll reply
/// (`seglog::node::poll::POLL_REPLY_BYTES_MAX`): a reply well under it was
/// not cut short, so the keys it left out are read to their end.
const POLL_REPLY_BYTES: usize = 1 << 20;

/// Nodes of the cluster phase: the smallest cluster with a majority and a minority.
const CLUSTER_NODES: usize = 3;

/// Client name on every bench request.
const SRC: &str = "c1";

/// Fixed, so runs write the same keys in the same order.
const SEED: u64 = 0x5e6_1065;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let phase = Duration::from_secs(env_u64("SEGLOG_BENCH_SECS", PHASE_SECS_DEFAULT)?);
    let binary = node::binary_path();
    if !binary.exists() {
        return Err(format!(
            "no binary at {}; build it with `cargo build --release` or set SEGLOG_BIN",
            binary.display()
        ));
    }
    let parent = bench_parent_dir();
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    disk_sync_floor(&parent)?;
    println!("== durable: every acknowledgement waits for fdatasync ==");
    let durable = bench_node(&binary, &parent, phase)?;
    let shim_dir = tempfile::Builder::new()
        .prefix("seglog-bench-nosync-")
        .tempdir_in(&parent)
        .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?;
    let shim = match nosync::build_no_sync_shim(shim_dir.path()) {
        Ok(shim) => shim,
        Err(e) => {
            println!("no-sync comparison skipped: {e}");
            return Ok(());
        }
    };
    println!(
        "== no-sync: fdatasync, fsync and syncfs are no-ops (LD_PRELOAD {}) ==",
        shim.display()
    );
    // SAFETY (of the environment): the first node and its reader threads are
    // gone; nothing else reads the environment while it changes. Only the
    // node started next inherits it.
    unsafe { std::env::set_var("LD_PRELOAD", &shim) };
    let no_sync = bench_node(&binary, &parent, phase);
    unsafe { std::env::remove_var("LD_PRELOAD") };
    let no_sync = no_sync?;
    if !only_rates() {
        println!("== {CLUSTER_NODES} durable nodes through the router ==");
        let cluster = bench_cluster(&binary, &parent, phase)?;
        println!(
            "{CLUSTER_NODES}-node cluster / one node, durable sends {IN_FLIGHT} in flight through \
             one node: {:.2} ({:.0} / {:.0} acked sends/s); p99 {:.2} ms / {:.2} ms",
            cluster.rate() / durable.rate().max(f64::MIN_POSITIVE),
            cluster.rate(),
            durable.rate(),
            millis(cluster.percentile(0.99)),
            millis(durable.percentile(0.99)),
        );
    }
    println!(
        "durable / no-sync, sends {IN_FLIGHT} in flight: {:.2} ({:.0} / {:.0} acked sends/s); \
         p99 {:.2} ms / {:.2} ms",
        durable.rate() / no_sync.rate().max(f64::MIN_POSITIVE),
        durable.rate(),
        no_sync.rate(),
        millis(durable.percentile(0.99)),
        millis(no_sync.percentile(0.99)),
    );
    Ok(())
}

/// Appends of [`FLOOR_WRITE_BYTES`] the disk floor measures, each followed by fdatasync.
const FLOOR_SYNCS: usize = 200;

/// Bytes of each append the disk floor measures: about one sync point of the rate ladder.
const FLOOR_WRITE_BYTES: usize = 4096;

/// Prints the latency of an append and fdatasync to a file in `parent`, done [`FLOOR_SYNCS`]
/// times: no durable send can be acknowledged faster than its sync point's fdatasync, so this is
/// the floor under the durable latencies that follow.
fn disk_sync_floor(parent: &std::path::Path) -> Result<(), String> {
    use std::io::Write as _;
    let file = tempfile::NamedTempFile::new_in(parent)
        .map_err(|e| format!("create a file in {}: {e}", parent.display()))?;
    let block = vec![b'x'; FLOOR_WRITE_BYTES];
    let mut latencies = Vec::with_capacity(FLOOR_SYNCS);
    let started = Instant::now();
    for _ in 0..FLOOR_SYNCS {
        let at = Instant::now();
        file.as_file()
            .write_all(&block)
            .and_then(|()| file.as_file().sync_data())
            .map_err(|e| format!("write and fdatasync {}: {e}", file.path().display()))?;
        latencies.push(at.elapsed());
    }
    Stats::new(latencies, 0, started.elapsed()).print(
        &format!("disk floor: {FLOOR_WRITE_BYTES}-byte append + fdatasync, one at a time"),
        "syncs",
    );
    Ok(())
}

/// One run of every phase against a fresh node; returns the pipelined sends.
fn bench_node(
    binary: &std::path::Path,
    parent: &std::path::Path,
    phase: Duration,
) -> Result<Stats, String> {
    let dir = tempfile::Builder::new()
        .prefix("seglog-bench-node-")
        .tempdir_in(parent)
        .map_err(|e| format!("create a data directory in {}: {e}", parent.display()))?;
    let config = NodeConfig::lone(
        binary.to_path_buf(),
        dir.path().join("data"),
        dir.path().join("node.log"),
    );
    std::fs::create_dir(&config.data_dir)
        .map_err(|e| format!("create {}: {e}", config.data_dir.display()))?;
    println!(
        "node bench: binary {}, data {}, {KEYS} keys, {MESSAGE_BYTES}-byte messages",
        binary.display(),
        config.data_dir.display()
    );
    let wiring = Wiring::default();
    let mut rng = StdRng::seed_from_u64(SEED);
    let node = NodeProcess::start(&config, &wiring)?;
    let connection = node.connection();

    let mut sequence = 0_u64;
    let sends = closed_loop(&connection, phase, "send_ok", || {
        sequence += 1;
        send_body(&mut rng, sequence)
    })?;
    sends.print(
        &format!("sends, {IN_FLIGHT} in flight"),
        "acked durable sends",
    );

    for fraction in LADDER_FRACTIONS {
        let rate = sends.rate() * fraction;
        let phase_name = format!(
            "sends at {:.0}% of that ({rate:.0}/s), open loop, latency from schedule",
            fraction * 100.0
        );
        match open_loop(&connection, phase, rate, || {
            sequence += 1;
            send_body(&mut rng, sequence)
        }) {
            Ok(stats) => stats.print(&phase_name, "acked durable sends"),
            Err(e) => println!("{phase_name}: {e}"),
        }
    }
    if only_rates() {
        node.shutdown()?;
        no_protocol_errors(&wiring.protocol_errors)?;
        return Ok(sends);
    }

    let polls = closed_loop(&connection, phase / 2, "poll_ok", || {
        let key = rng.gen_range(0..KEYS);
        json!({"type": "poll", "offsets": {key_name(key): 0}})
    })?;
    polls.print(
        &format!("polls from offset 0 of one key, {IN_FLIGHT} in flight"),
        "polls",
    );

    catch_up_read(&connection)?;

    let paced = open_loop(&connection, phase, f64::from(PACED_RATE_PER_SEC), || {
        sequence += 1;
        send_body(&mut rng, sequence)
    })?;
    paced.print(
        &format!("sends at a steady {PACED_RATE_PER_SEC}/s, open loop, latency from schedule"),
        "acked durable sends",
    );

    node.shutdown()?;
    let records = sends.ok + paced.ok;
    let started = Instant::now();
    let node = NodeProcess::start(&config, &wiring)?;
    println!(
        "recovery: restart over {records} records to init_ok in {:.1} ms",
        millis(started.elapsed())
    );
    node.shutdown()?;

    no_protocol_errors(&wiring.protocol_errors)?;
    Ok(sends)
}

/// Pipelined durable sends through node 0 of a cluster of [`CLUSTER_NODES`] nodes joined by the
/// router, after every group has a leader.
fn bench_cluster(
    binary: &std::path::Path,
    parent: &std::path::Path,
    phase: Duration,
) -> Result<Stats, String> {
    let dir = tempfile::Builder::new()
        .prefix("seglog-bench-cluster-")
        .tempdir_in(parent)
        .map_err(|e| format!("create a data directory in {}: {e}", parent.display()))?;
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).map_err(|e| format!("create {}: {e}", data_dir.display()))?;
    let node_ids: Vec<String> = (0..CLUSTER_NODES).map(node::node_id).collect();
    let protocol_errors = ProtocolErrors::default();
    let router = Router::start(
        node_ids.clone(),
        NetworkConfig::PERFECT,
        StdRng::seed_from_u64(SEED),
        protocol_errors.clone(),
    )?;
    let wiring = Wiring {
        protocol_errors: protocol_errors.clone(),
        traffic: Arc::default(),
        network: Some(Arc::clone(&router) as Arc<dyn Network>),
    };
    let configs = node_ids
        .iter()
        .map(|id| NodeConfig {
            binary: binary.to_path_buf(),
            data_dir: data_dir.clone(),
            log_path: dir.path().join(format!("{id}.log")),
            node_id: id.clone(),
            node_ids: node_ids.clone(),
            env: Vec::new(),
        })
        .collect();
    let supervisor = Supervisor::start(configs, wiring)?;
    let connection = supervisor.connection(0)?;
    wait_for_leaders(&connection)?;
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut sequence = 0_u64;
    let sends = closed_loop(&connection, phase, "send_ok", || {
        sequence += 1;
        send_body(&mut rng, sequence)
    })?;
    sends.print(
        &format!("sends through n0 of {CLUSTER_NODES}, {IN_FLIGHT} in flight"),
        "acked durable sends",
    );
    supervisor.shutdown_all()?;
    router.stop();
    no_protocol_errors(&protocol_errors)?;
    Ok(sends)
}

/// Fails with the first few protocol errors a run saw, if any.
fn no_protocol_errors(protocol_errors: &ProtocolErrors) -> Result<(), String> {
    let errors = lock(protocol_errors);
    if errors.is_empty() {
        return Ok(());
    }
    Err(format!(
        "protocol errors: {:?}",
        &errors[..errors.len().min(5)]
    ))
}

/// Waits until `connection`'s node knows a leader for every group.
fn wait_for_leaders(connection: &Connection) -> Result<(), String> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while Instant::now() < deadline {
        let reply = connection
            .call(SRC, json!({"type": "topology"}), REPLY_TIMEOUT)
            .map_err(|e| format!("topology: {e:?}"))?;
        let leaders = reply.body["leaders"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !leaders.is_empty() && leaders.iter().all(Value::is_string) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no leader for every group within {REPLY_TIMEOUT:?}"
    ))
}

/// Maelstrom's final read: one client polls every key from offset 0, all
/// keys in each request, until every key is read to its end; prints records
/// per second.
fn catch_up_read(connection: &Connection) -> Result<(), String> {
    let mut positions: HashMap<String, u64> = (0..KEYS).map(|k| (key_name(k), 0)).collect();
    let started = Instant::now();
    let mut records = 0_u64;
    let mut polls = 0_u64;
    // From each request to the moment its reply line was read: the node's
    // part (and the pipes'), without the client's decoding of the reply.
    let mut node_time = Duration::ZERO;
    while !positions.is_empty() {
        let offsets: serde_json::Map<String, Value> = positions
            .iter()
            .map(|(key, &from)| (key.clone(), json!(from)))
            .collect();
        let asked = Instant::now();
        let reply = connection
            .call(
                SRC,
                json!({"type": "poll", "offsets": offsets}),
                REPLY_TIMEOUT,
            )
            .map_err(|e| format!("catch-up poll failed: {e:?}"))?;
        node_time += reply.received_at.saturating_duration_since(asked);
        polls += 1;
        let msgs = reply.body["msgs"]
            .as_object()
            .ok_or_else(|| format!("not a poll_ok: {}", reply.body))?;
        // A key the reply leaves out has nothing more, unless the reply was
        // cut by its size limit before reaching it: keys it did return stay.
        let returned: std::collections::HashSet<&String> = msgs.keys().collect();
        for (key, list) in msgs {
            let list = list.as_array().ok_or("msgs entries are lists")?;
            records += list.len() as u64;
            if let Some(last) = list.last().and_then(|r| r[0].as_u64()) {
                positions.insert(key.clone(), last + 1);
            }
        }
        let reply_bytes: usize = msgs.values().map(|v| v.to_string().len()).sum();
        if reply_bytes < POLL_REPLY_BYTES / 2 {
            positions.retain(|key, _| returned.contains(key));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "catch-up read from offset 0 over {KEYS} keys, one client: {:.0} records/s \
         ({records} records in {polls} polls, {:.0} ms; {:.0} records/s counting only \
         the time until each reply was read, not the client's decoding)",
        records as f64 / elapsed.as_secs_f64(),
        millis(elapsed),
        records as f64 / node_time.as_secs_f64(),
    );
    Ok(())
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| format!("{name}={text:?} is not a number: {e}")),
        Err(_) => Ok(default),
    }
}

/// `SEGLOG_BENCH_ONLY=rates`: only the pipelined sends and the rate ladder.
fn only_rates() -> bool {
    std::env::var("SEGLOG_BENCH_ONLY").as_deref() == Ok("rates")
}

fn bench_parent_dir() -> PathBuf {
    std::env::var_os("SEGLOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn key_name(index: usize) -> String {
    format!("k{index}")
}

fn send_body(rng: &mut StdRng, sequence: u64) -> Value {
    let key = rng.gen_range(0..KEYS);
    let msg = format!("{sequence:0>MESSAGE_BYTES$}");
    json!({"type": "send", "key": key_name(key), "msg": msg})
}

/// Latencies and counts of one phase.
struct Stats {
    /// Requests acknowledged with the expected reply type.
    ok: usize,
    /// Requests answered with an error.
    errors: usize,
    /// From the first request to the last reply.
    elapsed: Duration,
    /// Sorted latencies of acknowledged requests.
    latencies: Vec<Duration>,
}

impl Stats {
    fn new(mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Stats {
            ok: latencies.len(),
            errors,
            elapsed,
            latencies,
        }
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (fraction * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn print(&self, phase: &str, unit: &str) {
        let per_sec = self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "{phase}: {per_sec:.0} {unit}/s ({} in {:.1} s, {} errors); latency p50 {:.2} ms, \
             p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
            self.ok,
            self.elapsed.as_secs_f64(),
            self.errors,
            millis(self.percentile(0.50)),
            millis(self.percentile(0.99)),
            millis(self.percentile(0.999)),
            millis(self.latencies.last().copied().unwrap_or_default()),
        );
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Waits for the next reply, failing if the node goes quiet or dies.
fn next_reply(replies: &Receiver<Reply>) -> Result<Reply, String> {
    match replies.recv_timeout(REPLY_TIMEOUT) {
        Ok(reply) => Ok(reply),
        Err(RecvTimeoutError::Timeout) => Err(format!("no reply within {REPLY_TIMEOUT:?}")),
        Err(RecvTimeoutError::Disconnected) => Err("node exited".to_owned()),
    }
}

/// Keeps [`IN_FLIGHT`] requests outstanding for `duration`, then drains; latency runs from
/// writing a request to reading its reply.
fn closed_loop(
    connection: &Connection,
    duration: Duration,
    expected: &str,
    mut next_body: impl FnMut() -> Value,
) -> Result<Stats, String> {
    let (sender, replies) = mpsc::channel();
    let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(IN_FLIGHT);
    let mut latencies = Vec::new();
    let mut errors = 0;
    let start = Instant::now();
    let deadline = start + duration;
    for _ in 0..IN_FLIGHT {
        let now = Instant::now();
        let msg_id = submit(connection, next_body(), &sender)?;
        sent_at.insert(msg_id, now);
    }
    while !sent_at.is_empty() {
        let reply = next_reply(&replies)?;
        let Some(at) = sent_at.remove(&reply.in_reply_to) else {
            continue;
        };
        if reply.body["type"] == expected {
            latencies.push(reply.received_at.saturating_duration_since(at));
        } else {
            errors += 1;
        }
        if Instant::now() < deadline {
            let now = Instant::now();
            let msg_id = submit(connection, next_body(), &sender)?;
            sent_at.insert(msg_id, now);
        }
    }
    Ok(Stats::new(latencies, errors, start.elapsed()))
}

/// Issues requests on a fixed schedule of `rate_per_sec` regardless of replies, so a slow reply
/// cannot slow the load; latency runs from the scheduled time, which counts queueing delay that a
/// closed loop would hide.
fn open_loop(
    connection: &Connection,
    duration: Duration,
    rate_per_sec: f64,
    mut next_body: impl FnMut() -> Value,
) -> Result<Stats, String> {
    let interval = Duration::from_secs_f64(1.0 / rate_per_sec.max(1.0));
    let total = duration.as_nanos() / interval.as_nanos();
    let (sender, replies) = mpsc::channel();
    let mut scheduled_at: HashMap<u64, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let start = Instant::now();
    let mut issued: u128 = 0;
    let mut next_due = start;
    while issued < total || !scheduled_at.is_empty() {
        let now = Instant::now();
        while issued < total && next_due <= now {
            let msg_id = submit(connection, next_body(), &sender)?;
            scheduled_at.insert(msg_id, next_due);
            issued += 1;
            next_due += interval;
        }
        if scheduled_at.len() > PACED_BACKLOG_MAX {
            return Err(format!(
                "node saturated: {} requests outstanding at {rate_per_sec:.0}/s",
                scheduled_at.len()
            ));
        }
        let wait = if issued < total {
            next_due.saturating_duration_since(Instant::now())
        } else {
            REPLY_TIMEOUT
        };
        let reply = match replies.recv_timeout(wait) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) if issued < total => continue,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("no reply within {REPLY_TIMEOUT:?}"));
            }
            Err(RecvTimeoutError::Disconnected) => return Err("node exited".to_owned()),
        };
        let Some(at) = scheduled_at.remove(&reply.in_reply_to) else {
            continue;
        };
        if reply.body["type"] == "send_ok" {
            latencies.push(reply.received_at.saturating_duration_since(at));
        } else {
            errors += 1;
        }
    }
    Ok(Stats::new(latencies, errors, start.elapsed()))
}

fn submit(
    connection: &Connection,
    body: Value,
    sender: &mpsc::Sender<Reply>,
) -> Result<u64, String> {
    connection
        .submit(SRC, body, sender.clone())
        .map_err(|e| format!("request not sent: {e:?}"))
}
