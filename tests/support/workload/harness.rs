//! One workload run against a lone node from start to verdict: start the node, run clients and
//! the nemesis, restart the node once more, read everything back, shut it down, and check the
//! history. `cluster` does the same for several nodes behind a router.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::checker;
use super::client::{Client, ClientContext};
use super::connection::{Wiring, lock};
use super::final_read;
use super::history::{FINAL_READER_PROCESS, FinalRead, NodeRead};
use super::keys::KeyPool;
use super::nemesis::{self, Victims};
use super::node::{self, NODE_ID, NodeConfig};
use super::recorder::Recorder;
use super::report::Report;
use super::seed;
use super::supervisor::Supervisor;
use super::timeline::Timeline;

/// Set to keep the run directory even when the run is valid.
pub const KEEP_VAR: &str = "SEGLOG_KEEP";

/// Maelstrom's `--rate` in the Fly.io challenges: operations per second over all clients.
pub const MAELSTROM_RATE: u32 = 1000;

/// The lone node's index in the supervisor.
const NODE: usize = 0;

/// Held by every run, lone node or cluster: two runs at once on CI's two cores would starve each
/// other's nodes and clients.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits until no other run of this process is running; the run goes on while the guard lives.
pub fn one_run_at_a_time() -> MutexGuard<'static, ()> {
    lock(&ONE_RUN_AT_A_TIME)
}

/// How the node process that served the workload ends before the final read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGKILL, so the final read sees only what recovery finds on disk.
    Kill,
    /// Close stdin and expect exit 0: the clean shutdown path.
    Shutdown,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Names the run in output and in the run directory's name.
    pub name: String,
    /// Length of the workload phase (the final phase comes after).
    pub duration: Duration,
    /// Concurrent clients, each one thread with its own positions.
    pub clients: u32,
    /// SIGKILL-and-restart cycles spread over the workload phase.
    pub kills: u32,
    /// How the workload's node process ends before the final read.
    pub ending: Ending,
    /// Operations per second over all clients; `None` runs clients flat out.
    pub rate: Option<u32>,
    /// Seeds every random choice of the run; printed so a failing run can be replayed.
    pub seed: u64,
    /// The `seglog` binary under test.
    pub binary: PathBuf,
    /// Environment variables the node gets besides the test's own.
    pub node_env: Vec<(String, String)>,
    /// Keeps the run directory even when the run is valid, as `SEGLOG_KEEP` does.
    pub keep: bool,
}

impl Config {
    /// A run without kills at Maelstrom's rate, seeded from `SEGLOG_SEED`.
    pub fn new(name: &str, duration: Duration, clients: u32) -> Self {
        Config {
            name: name.to_owned(),
            duration,
            clients,
            kills: 0,
            ending: Ending::Shutdown,
            rate: Some(MAELSTROM_RATE),
            seed: seed::from_env(),
            binary: node::binary_path(),
            node_env: Vec::new(),
            keep: false,
        }
    }
}

/// Runs the workload described by `config` and returns its report. A run that is not valid (or
/// any run with `SEGLOG_KEEP` set) keeps its directory with the history, final read, node log
/// and data, and prints where.
pub fn run(config: &Config) -> Report {
    let _alone = one_run_at_a_time();
    eprintln!(
        "workload {}: seed {} (replay with {}={}), binary {}",
        config.name,
        config.seed,
        seed::SEED_VAR,
        config.seed,
        config.binary.display()
    );
    let dir = tempfile::Builder::new()
        .prefix(&format!("seglog-{}-", config.name))
        .tempdir()
        .expect("create a run directory under the temp dir");
    let report = execute(config, dir.path());
    keep_if_needed(report, dir, config.keep)
}

/// Keeps the run directory, with the artifacts written into it, if the run is not valid, `keep`
/// is true or `SEGLOG_KEEP` is set; otherwise it is deleted when `dir` drops.
pub fn keep_if_needed(mut report: Report, dir: tempfile::TempDir, keep: bool) -> Report {
    if !report.is_valid() || keep || std::env::var_os(KEEP_VAR).is_some() {
        let path = dir.keep();
        if let Err(e) = report.write_artifacts(&path) {
            eprintln!("workload {}: could not write artifacts: {e}", report.name);
        }
        eprintln!(
            "workload {}: run directory kept at {}",
            report.name,
            path.display()
        );
        report.artifacts = Some(path);
    }
    report
}

fn execute(config: &Config, dir: &Path) -> Report {
    let start = Instant::now();
    let wiring = Wiring::default();
    let recorder = Arc::new(Recorder::new(start));
    let keys = Arc::new(KeyPool::new());
    let timeline = Arc::new(Timeline::new(start));
    let mut phases = Phases::default();
    let supervisor = start_node(config, dir, &wiring);
    let (starts, kills) = match &supervisor {
        Ok(supervisor) => {
            let run = Run {
                supervisor,
                recorder: &recorder,
                keys: &keys,
                timeline: &timeline,
                start,
            };
            if let Err(e) = run_phases(config, &run, &mut phases) {
                phases.failure = Some(e);
            }
            (supervisor.starts(), supervisor.kills())
        }
        Err(e) => {
            phases.failure = Some(e.clone());
            (0, 0)
        }
    };
    // Dropping the supervisor kills any node a failure left running.
    drop(supervisor);
    let history = recorder.history();
    let anomalies = match &phases.final_read {
        Some(final_read) => checker::check(&history, final_read),
        None => checker::check_without_final_read(&history),
    };
    let failure = phases.failure.or_else(|| {
        phases
            .final_read
            .is_none()
            .then(|| "no final read".to_owned())
    });
    let protocol_errors = lock(&wiring.protocol_errors).clone();
    let final_reads = match phases.final_read {
        Some(read) => vec![NodeRead {
            node: NODE_ID.to_owned(),
            process: FINAL_READER_PROCESS,
            read,
            committed: phases.committed,
        }],
        None => Vec::new(),
    };
    Report {
        name: config.name.clone(),
        seed: config.seed,
        elapsed: start.elapsed(),
        history,
        nodes: 1,
        final_reads,
        traffic: wiring.traffic.snapshot(),
        network: None,
        timeline: timeline.events(),
        anomalies,
        protocol_errors,
        failure,
        starts,
        kills,
        leader_kills: Vec::new(),
        artifacts: None,
    }
}

/// What the phases produced, kept even when a later phase fails.
#[derive(Default)]
struct Phases {
    /// `None` if the run broke off before the final read finished.
    final_read: Option<FinalRead>,
    /// The final listing of committed offsets.
    committed: BTreeMap<String, u64>,
    /// The first error that stopped the phases.
    failure: Option<String>,
}

fn start_node(config: &Config, dir: &Path, wiring: &Wiring) -> Result<Arc<Supervisor>, String> {
    let data_dir = dir.join("data");
    fs::create_dir(&data_dir).map_err(|e| format!("create {}: {e}", data_dir.display()))?;
    let node_config = NodeConfig {
        env: config.node_env.clone(),
        ..NodeConfig::lone(config.binary.clone(), data_dir, dir.join("node.log"))
    };
    Supervisor::start(vec![node_config], wiring.clone())
}

/// What the phases of one run share.
pub struct Run<'a> {
    pub supervisor: &'a Arc<Supervisor>,
    pub recorder: &'a Arc<Recorder>,
    pub keys: &'a Arc<KeyPool>,
    pub timeline: &'a Arc<Timeline>,
    /// Time zero of the history.
    pub start: Instant,
}

fn run_phases(config: &Config, run: &Run<'_>, phases: &mut Phases) -> Result<(), String> {
    let Run {
        supervisor,
        recorder,
        keys,
        start,
        ..
    } = *run;
    let load = Load {
        duration: config.duration,
        clients: config.clients,
        rate: config.rate,
    };
    let mut master = StdRng::seed_from_u64(config.seed);
    let nemesis = {
        let supervisor = Arc::clone(supervisor);
        let timeline = Arc::clone(run.timeline);
        let (duration, kills) = (config.duration, config.kills);
        move |rng| {
            nemesis::run(
                &supervisor,
                rng,
                start,
                duration,
                kills,
                Victims::One,
                &timeline,
            );
        }
    };
    run_workload(load, run, &mut master, nemesis)?;
    match config.ending {
        Ending::Kill => supervisor.kill(NODE)?,
        Ending::Shutdown => supervisor.shutdown(NODE)?,
    }
    supervisor.restart(NODE)?;
    let connection = supervisor.connection(NODE)?;
    let all_keys = keys.all();
    phases.final_read = Some(final_read::read_all(&connection, recorder, &all_keys)?);
    phases.committed =
        final_read::list_all(&connection, recorder, FINAL_READER_PROCESS, &all_keys)?;
    supervisor.shutdown(NODE)
}

/// The workload phase's shape.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Length of the phase.
    pub duration: Duration,
    /// Concurrent clients, each one thread with its own positions.
    pub clients: u32,
    /// Operations per second over all clients; `None` runs clients flat out.
    pub rate: Option<u32>,
}

/// Runs `load.clients` clients, client `i` pinned to node `i mod N` as Maelstrom pins its
/// processes, and the nemesis, from `start` for `load.duration`; then ends the workload and
/// waits for every thread. Each client and the nemesis get their own generator from `master`.
pub fn run_workload(
    load: Load,
    run: &Run<'_>,
    master: &mut StdRng,
    nemesis: impl FnOnce(StdRng) + Send + 'static,
) -> Result<(), String> {
    let Run {
        supervisor,
        recorder,
        keys,
        start,
        ..
    } = *run;
    let step_interval = load
        .rate
        .map(|rate| Duration::from_secs(u64::from(load.clients)) / rate.max(1));
    let mut threads = Vec::new();
    for process in 0..load.clients {
        let client = Client::new(
            process,
            seed::fork(master),
            ClientContext {
                keys: Arc::clone(keys),
                supervisor: Arc::clone(supervisor),
                node: node_of(process, supervisor.node_count()),
                recorder: Arc::clone(recorder),
                step_interval,
            },
        );
        threads.push(spawn(format!("client-{process}"), move || client.run())?);
    }
    let rng = seed::fork(master);
    threads.push(spawn("nemesis".to_owned(), move || nemesis(rng))?);
    supervisor.wait_until(start + load.duration);
    supervisor.end_workload();
    let mut panicked = Vec::new();
    for (name, handle) in threads {
        if handle.join().is_err() {
            panicked.push(name);
        }
    }
    if !panicked.is_empty() {
        return Err(format!("threads panicked: {panicked:?}"));
    }
    match supervisor.failure() {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// The node client `process` is pinned to.
pub fn node_of(process: u32, nodes: usize) -> usize {
    usize::try_from(process).expect("process fits in usize") % nodes
}

pub fn spawn(
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> Result<(String, JoinHandle<()>), String> {
    match thread::Builder::new().name(name.clone()).spawn(body) {
        Ok(handle) => Ok((name, handle)),
        Err(e) => Err(format!("spawn thread {name}: {e}")),
    }
}
