//! The hour-long soak of `scripts/soak.sh`, ignored by default: a three-node cluster and a
//! `seglog serve` side by side on a small tmpfs the script mounts, under load, with `kill -9`
//! every ten seconds and the disk taken below the free-space floor every minute. Each test
//! prints what was acknowledged, lost, refused and healed, and fails if anything acknowledged
//! is lost or anything read was never written.
//!
//! Tune with `SEGLOG_SOAK_SECS` (default an hour), `SEGLOG_SOAK_KILL_EVERY_SECS` (10),
//! `SEGLOG_SOAK_DISK_EVERY_SECS` (60) and `SEGLOG_SOAK_SERVE_RATE` (produce requests per
//! second, 200). `SEGLOG_SOAK_DISK` names the tmpfs; the script sets it and `TMPDIR` to it.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::serve_process::Server;
use crate::support::tier;
use crate::workload::checker::AnomalyKind;
use crate::workload::cluster::{self, ClusterConfig, Faults};
use crate::workload::history::{OpKind, OutcomeClass};
use seglog::lock::lock;
use seglog::storage::space::default_min_free;

/// The tmpfs the script mounted, shared by both tests (and their `TMPDIR`).
const SOAK_DISK_VAR: &str = "SEGLOG_SOAK_DISK";

/// An hour, as the issue asks.
const SECS_DEFAULT: u64 = 3600;

/// Ten seconds between kills, as the issue asks.
const KILL_EVERY_SECS_DEFAULT: u64 = 10;

/// A minute between full-disk cycles, as the issue asks.
const DISK_EVERY_SECS_DEFAULT: u64 = 60;

/// How long each cycle keeps the disk below the floor: long enough for writes to be refused
/// and for a kill to fall inside it, so restarts on a short disk are soaked too.
const DISK_FULL_HOLD: Duration = Duration::from_secs(15);

/// Free bytes above the floor the filler leaves: what the writes eat into before refusals.
const DISK_HEADROOM: u64 = 4 << 20;

/// HTTP produce requests per second over all producers: every part stays busy, and an hour of
/// it fits the tmpfs beside the floor.
const SERVE_RATE_DEFAULT: u64 = 200;

/// Concurrent HTTP producers.
const SERVE_PRODUCERS: u64 = 4;

/// Records per produce request.
const SERVE_BATCH: u64 = 10;

/// Partitions of the soak's topic.
const SERVE_PARTITIONS: u64 = 4;

/// How long a producer waits for one answer before counting it unknown (a kill cuts it off).
const SERVE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn env_u64(name: &str, default: u64) -> u64 {
    tier::env_u64(name).unwrap_or(default)
}

fn soak_disk() -> PathBuf {
    std::env::var_os(SOAK_DISK_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{SOAK_DISK_VAR} is not set: run this soak with scripts/soak.sh, which mounts \
                 its tmpfs"
            )
        })
}

/// Full-disk cycles completed, by the one thread that runs them for the whole test process:
/// both tests share the disk.
fn disk_cycles() -> &'static AtomicU64 {
    static CYCLES: OnceLock<&'static AtomicU64> = OnceLock::new();
    CYCLES.get_or_init(|| {
        let cycles: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let disk = soak_disk();
        let every = Duration::from_secs(
            env_u64("SEGLOG_SOAK_DISK_EVERY_SECS", DISK_EVERY_SECS_DEFAULT).max(1),
        );
        thread::spawn(move || {
            loop {
                thread::sleep(every.saturating_sub(DISK_FULL_HOLD));
                let filler = fill(&disk);
                thread::sleep(DISK_FULL_HOLD);
                if let Err(e) = std::fs::remove_file(&filler) {
                    panic!("free the disk ({}): {e}", filler.display());
                }
                cycles.fetch_add(1, Ordering::SeqCst);
            }
        });
        cycles
    })
}

/// Allocates a file that leaves [`DISK_HEADROOM`] free above the binaries' default floor.
fn fill(disk: &Path) -> PathBuf {
    let stat = rustix::fs::statvfs(disk).expect("statvfs the soak disk");
    let (free, total) = (stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize);
    let take = free.saturating_sub(default_min_free(total) + DISK_HEADROOM);
    let path = disk.join("filler");
    let file = File::create(&path).expect("create the filler");
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, take)
        .expect("allocate the filler");
    path
}

#[test]
#[ignore = "an hour long; run with scripts/soak.sh"]
fn cluster_soak_with_kills_and_full_disks() {
    let secs = env_u64("SEGLOG_SOAK_SECS", SECS_DEFAULT);
    let kill_every = env_u64("SEGLOG_SOAK_KILL_EVERY_SECS", KILL_EVERY_SECS_DEFAULT).max(1);
    let cycles = disk_cycles();
    let config = ClusterConfig {
        faults: Faults::KillOne {
            kills: u32::try_from(secs / kill_every).expect("kill count fits in u32"),
        },
        ..ClusterConfig::new("soak-cluster", 3, Duration::from_secs(secs))
    };
    let report = cluster::run(&config);
    eprintln!("{}", report.summary());
    let lost = report
        .anomalies
        .iter()
        .filter(|a| a.kind() == AnomalyKind::Lost)
        .count();
    eprintln!(
        "SOAK cluster: {secs} s, kills {}, full-disk cycles {}, sends acknowledged {}, \
         refused {} (definite errors: short disk, no leader), unknown {}, lost {lost}, \
         anomalies {}",
        report.kills,
        cycles.load(Ordering::SeqCst),
        report.acked_sends(),
        report.count(OpKind::Send, OutcomeClass::Fail),
        report.count(OpKind::Send, OutcomeClass::Unknown),
        report.anomalies.len(),
    );
    assert!(report.is_valid(), "{}", report.details());
}

/// What the producers of the serve soak saw.
#[derive(Default)]
struct Produced {
    /// Acknowledged records: (partition, offset) → value.
    acked: BTreeMap<(u64, u64), String>,
    /// Every value sent without a definite refusal: acknowledged, or cut off by a kill.
    maybe: HashSet<String>,
    /// Requests refused for a short disk (507).
    refused_space: u64,
    /// Requests refused with another error (503: a failed sync, poisoned or healing).
    refused_other: u64,
    /// Requests whose answer never came (the server was killed).
    unknown: u64,
}

/// Where the current server listens, swapped at each restart.
type Address = Arc<Mutex<String>>;

/// One producer: batches of [`SERVE_BATCH`] records to the partitions in turn at `rate`
/// requests per second, until `stop`.
fn produce_loop(id: u64, rate: u64, address: &Address, stop: &AtomicBool, out: &Mutex<Produced>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(SERVE_REQUEST_TIMEOUT))
        .build()
        .into();
    let period = Duration::from_secs_f64(1.0 / (rate.max(1) as f64));
    let mut next = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let partition = n % SERVE_PARTITIONS;
        let values: Vec<String> = (0..SERVE_BATCH).map(|i| format!("p{id}-{n}-{i}")).collect();
        let body =
            json!({"records": values.iter().map(|v| json!({"value": v})).collect::<Vec<_>>()});
        let url = format!("{}/topics/soak/partitions/{partition}", lock(address));
        let answer = agent
            .post(&url)
            .content_type("application/json")
            .send(body.to_string())
            .ok()
            .and_then(|mut r| {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().ok()?;
                Some((status, serde_json::from_str::<Value>(&text).ok()?))
            });
        let mut out = lock(out);
        match answer {
            Some((200, body)) => {
                for (value, at) in values
                    .iter()
                    .zip(body["offsets"].as_array().into_iter().flatten())
                {
                    let offset = at["offset"].as_u64().expect("an offset per record");
                    out.acked.insert((partition, offset), value.clone());
                }
                out.maybe.extend(values);
            }
            // Refused at admission, before anything was written.
            Some((507, _)) => out.refused_space += 1,
            // A failed sync's own request may have reached the journal: not acknowledged,
            // but not known to be absent either.
            Some((status, body)) if status >= 500 => {
                assert!(body["error_code"].is_u64(), "a 5xx without a code: {body}");
                out.refused_other += 1;
                out.maybe.extend(values);
            }
            Some((status, body)) => panic!("produce answered {status}: {body}"),
            None => {
                out.unknown += 1;
                out.maybe.extend(values);
            }
        }
        drop(out);
        n += 1;
        next += period;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// A metric of the server's `/metrics`, 0 where the server does not have it.
fn metric_or_zero(server: &Server, name: &str) -> u64 {
    let (status, text) = server.request_text("GET", "/metrics", None);
    if status != 200 {
        return 0;
    }
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Every record of `partition`, by offset.
fn read_partition(server: &Server, partition: u64) -> Vec<(u64, String)> {
    let mut log: Vec<(u64, String)> = Vec::new();
    loop {
        let from = log.last().map_or(0, |(offset, _)| offset + 1);
        let records = server.fetch("soak", partition as u32, &format!("offset={from}"));
        if records.is_empty() {
            return log;
        }
        log.extend(records.iter().map(|r| {
            let offset = r["offset"].as_u64().expect("offset");
            (offset, r["value"].as_str().unwrap_or_default().to_owned())
        }));
    }
}

#[test]
#[ignore = "an hour long; run with scripts/soak.sh"]
fn serve_soak_with_kills_and_full_disks() {
    let secs = env_u64("SEGLOG_SOAK_SECS", SECS_DEFAULT);
    let kill_every =
        Duration::from_secs(env_u64("SEGLOG_SOAK_KILL_EVERY_SECS", KILL_EVERY_SECS_DEFAULT).max(1));
    let rate = env_u64("SEGLOG_SOAK_SERVE_RATE", SERVE_RATE_DEFAULT);
    let cycles = disk_cycles();
    let run = tempfile::Builder::new()
        .prefix("seglog-serve-soak-")
        .tempdir_in(soak_disk())
        .expect("a run directory on the soak disk");
    let data = run.path().join("data");
    let mut server = Server::start(&data, &[]);
    server.create_topic("soak", SERVE_PARTITIONS as u32);
    let address: Address = Arc::new(Mutex::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(Mutex::new(Produced::default()));
    let producers: Vec<_> = (0..SERVE_PRODUCERS)
        .map(|id| {
            let (address, stop, produced) = (address.clone(), stop.clone(), produced.clone());
            thread::spawn(move || {
                produce_loop(id, rate / SERVE_PRODUCERS, &address, &stop, &produced)
            })
        })
        .collect();
    let (mut kills, mut heals, mut refused_by_server) = (0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        thread::sleep(kill_every.min(end.saturating_duration_since(Instant::now())));
        heals += metric_or_zero(&server, "seglog_store_heals_total");
        refused_by_server += metric_or_zero(&server, "seglog_writes_refused_no_space_total");
        server.kill();
        kills += 1;
        server = Server::start(&data, &[]);
        *lock(&address) = server.base.clone();
    }
    stop.store(true, Ordering::SeqCst);
    for producer in producers {
        producer.join().expect("a producer panicked");
    }
    heals += metric_or_zero(&server, "seglog_store_heals_total");
    server.kill();
    let server = Server::start(&data, &[]);
    let produced = lock(&produced);
    let mut lost = 0u64;
    let mut unwritten = 0u64;
    let mut records = 0u64;
    for partition in 0..SERVE_PARTITIONS {
        let log: BTreeMap<u64, String> = read_partition(&server, partition).into_iter().collect();
        records += log.len() as u64;
        for ((p, offset), value) in produced.acked.range((partition, 0)..(partition + 1, 0)) {
            if log.get(offset) != Some(value) {
                eprintln!(
                    "lost: partition {p} offset {offset} {value:?}, read {:?}",
                    log.get(offset)
                );
                lost += 1;
            }
        }
        unwritten += log
            .values()
            .filter(|v| !produced.maybe.contains(*v))
            .count() as u64;
    }
    eprintln!(
        "SOAK serve: {secs} s, kills {kills}, full-disk cycles {}, records acknowledged {}, \
         read back {records}, lost {lost}, never written {unwritten}; requests refused: short \
         disk {} (server counted {refused_by_server}), other {}; unknown {}; heals in place \
         {heals}",
        cycles.load(Ordering::SeqCst),
        produced.acked.len(),
        produced.refused_space,
        produced.refused_other,
        produced.unknown,
    );
    assert_eq!(
        (lost, unwritten),
        (0, 0),
        "acknowledged records lost or unwritten ones read"
    );
}
