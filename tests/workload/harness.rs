//! One workload run from start to verdict: start the node, run clients and the nemesis, restart
//! the node once more, read everything back, shut it down, and check the history.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::checker;
use super::client::{Client, ClientContext};
use super::connection::{ProtocolErrors, lock};
use super::final_read;
use super::history::FinalRead;
use super::keys::KeyPool;
use super::nemesis;
use super::node::{self, NodeConfig};
use super::recorder::Recorder;
use super::report::Report;
use super::seed;
use super::supervisor::Supervisor;

/// Set to keep the run directory even when the run is valid.
pub const KEEP_VAR: &str = "SEGLOG_KEEP";

/// Maelstrom's `--rate` in the Fly.io challenges: operations per second over all clients.
pub const MAELSTROM_RATE: u32 = 1000;

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
        }
    }
}

/// Runs the workload described by `config` and returns its report. A run that is not valid (or
/// any run with `SEGLOG_KEEP` set) keeps its directory with the history, final read, node log
/// and data, and prints where.
pub fn run(config: &Config) -> Report {
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
    let mut report = execute(config, dir.path());
    if !report.is_valid() || std::env::var_os(KEEP_VAR).is_some() {
        let path = dir.keep();
        if let Err(e) = report.write_artifacts(&path) {
            eprintln!("workload {}: could not write artifacts: {e}", config.name);
        }
        eprintln!(
            "workload {}: run directory kept at {}",
            config.name,
            path.display()
        );
        report.artifacts = Some(path);
    }
    report
}

fn execute(config: &Config, dir: &Path) -> Report {
    let start = Instant::now();
    let protocol_errors = ProtocolErrors::default();
    let recorder = Arc::new(Recorder::new(start));
    let keys = Arc::new(KeyPool::new());
    let mut phases = Phases::default();
    let supervisor = start_node(config, dir, &protocol_errors);
    let (starts, kills) = match &supervisor {
        Ok(supervisor) => {
            if let Err(e) = run_phases(config, supervisor, &recorder, &keys, start, &mut phases) {
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
    let protocol_errors = lock(&protocol_errors).clone();
    Report {
        name: config.name.clone(),
        seed: config.seed,
        elapsed: start.elapsed(),
        history,
        final_read: phases.final_read.unwrap_or_default(),
        committed: phases.committed,
        anomalies,
        protocol_errors,
        failure,
        starts,
        kills,
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

fn start_node(
    config: &Config,
    dir: &Path,
    protocol_errors: &ProtocolErrors,
) -> Result<Arc<Supervisor>, String> {
    let data_dir = dir.join("data");
    fs::create_dir(&data_dir).map_err(|e| format!("create {}: {e}", data_dir.display()))?;
    let node_config = NodeConfig {
        binary: config.binary.clone(),
        data_dir,
        log_path: dir.join("node.log"),
    };
    Supervisor::start(node_config, Arc::clone(protocol_errors))
}

fn run_phases(
    config: &Config,
    supervisor: &Arc<Supervisor>,
    recorder: &Arc<Recorder>,
    keys: &Arc<KeyPool>,
    start: Instant,
    phases: &mut Phases,
) -> Result<(), String> {
    run_workload(config, supervisor, recorder, keys, start)?;
    match config.ending {
        Ending::Kill => supervisor.kill()?,
        Ending::Shutdown => supervisor.shutdown()?,
    }
    supervisor.restart()?;
    let connection = supervisor.connection()?;
    let all_keys = keys.all();
    phases.final_read = Some(final_read::read_all(&connection, recorder, &all_keys)?);
    phases.committed = final_read::list_all(&connection, recorder, &all_keys)?;
    supervisor.shutdown()
}

/// Runs the clients and the nemesis for the configured duration.
fn run_workload(
    config: &Config,
    supervisor: &Arc<Supervisor>,
    recorder: &Arc<Recorder>,
    keys: &Arc<KeyPool>,
    start: Instant,
) -> Result<(), String> {
    let mut master = StdRng::seed_from_u64(config.seed);
    let step_interval = config
        .rate
        .map(|rate| Duration::from_secs(u64::from(config.clients)) / rate.max(1));
    let mut clients = Vec::new();
    for process in 0..config.clients {
        let client = Client::new(
            process,
            seed::fork(&mut master),
            ClientContext {
                keys: Arc::clone(keys),
                supervisor: Arc::clone(supervisor),
                recorder: Arc::clone(recorder),
                step_interval,
            },
        );
        clients.push(spawn(format!("client-{process}"), move || client.run())?);
    }
    let nemesis = {
        let supervisor = Arc::clone(supervisor);
        let rng = seed::fork(&mut master);
        let (duration, kills) = (config.duration, config.kills);
        spawn("nemesis".to_owned(), move || {
            nemesis::run(&supervisor, rng, start, duration, kills)
        })?
    };
    supervisor.wait_until(start + config.duration);
    supervisor.end_workload();
    let mut panicked = Vec::new();
    for (name, handle) in clients.into_iter().chain([nemesis]) {
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

fn spawn(
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> Result<(String, JoinHandle<()>), String> {
    match thread::Builder::new().name(name.clone()).spawn(body) {
        Ok(handle) => Ok((name, handle)),
        Err(e) => Err(format!("spawn thread {name}: {e}")),
    }
}
