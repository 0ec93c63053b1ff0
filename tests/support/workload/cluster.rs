//! One cluster run from start to verdict: N real `seglog` processes joined by the router, clients
//! pinned to nodes, a nemesis, then a final phase in which every node must return every
//! acknowledged send.
//!
//! 1. Start the router and every node at once (`seglog --data-dir DIR`, init with the node's id
//!    and every id, as Maelstrom does); all nodes keep their files under one `DIR/<node_id>/`.
//! 2. Workload: `clients_per_node * N` clients (Maelstrom's `--concurrency 2n`), client `i`
//!    pinned to node `i mod N`, and the nemesis of [`Faults`].
//! 3. Faults heal: the partition is lifted and every node is up (after [`Faults::KillAll`], every
//!    node is killed and restarted once more, so the final reads see only what the disks kept).
//! 4. Settle for [`SETTLE`], then every client reads every key from offset 0 through its own
//!    node until it has caught up with the highest offset known for each key (Maelstrom's clip
//!    of 10 s applies), and lists the committed offsets there.
//! 5. Shut every node down (close stdin, expect exit 0) and check the one history with every
//!    final read: each node must return every acknowledged send, and the usual anomalies apply.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{fs, thread};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::checker::{self, CommitRule};
use super::connection::{Network, ProtocolErrors, Wiring, lock};
use super::disk_nemesis;
use super::final_read::{self, CATCH_UP_LIMIT};
use super::harness::{self, Load, MAELSTROM_RATE, Run, node_of};
use super::history::NodeRead;
use super::keys::KeyPool;
use super::leader_nemesis::{self, LeaderKill};
use super::nemesis::{self, Victims};
use super::node::{self, NodeConfig};
use super::partition_nemesis;
use super::recorder::Recorder;
use super::report::Report;
use super::router::{NetworkConfig, Router};
use super::seed;
use super::supervisor::Supervisor;
use super::timeline::Timeline;
use super::traffic::TrafficCounts;

/// Maelstrom's `--concurrency 2n`: two clients per node.
pub const CLIENTS_PER_NODE: u32 = 2;

/// The quiet time between the faults healing and the final reads. Maelstrom waits 10 s; the
/// catch-up reads then give a lagging node up to [`CATCH_UP_LIMIT`] more, so this only has to
/// cover what they do not wait for: committed offsets reaching every node. Two seconds is many
/// times any sensible replication or retry interval, and keeps CI short.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The faults a run injects during its workload phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// A healthy cluster.
    None,
    /// Partition-and-heal cycles over the whole run (see `partition_nemesis`).
    Partitions { cycles: u32 },
    /// `kill -9` of one random node at a time, restarted on its data directory.
    KillOne { kills: u32 },
    /// `kill -9` of every node at once, restarted together; once more before the final reads.
    KillAll { kills: u32 },
    /// `kill -9` of a Raft group's leader `kills` times, the groups in turn, each down a while
    /// (see `leader_nemesis`); the report has the failover gaps.
    KillLeaders { kills: u32 },
    /// A node killed, its data directory deleted, and restarted empty, `wipes` times.
    Wipe { wipes: u32 },
    /// Node `node`'s fdatasync fails with EIO `faults` times (see `disk_nemesis`); the run's
    /// `shim` must be set.
    DiskEio { node: usize, faults: u32 },
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Names the run in output and in the run directory's name.
    pub name: String,
    /// Nodes `n0..n{nodes-1}`.
    pub nodes: usize,
    /// Length of the workload phase (the final phase comes after).
    pub duration: Duration,
    /// Clients per node.
    pub clients_per_node: u32,
    /// Operations per second over all clients; `None` runs clients flat out.
    pub rate: Option<u32>,
    /// Delay and loss of node-to-node messages.
    pub network: NetworkConfig,
    pub faults: Faults,
    /// Seeds every random choice of the run; printed so a failing run can be replayed.
    pub seed: u64,
    /// The `seglog` binary under test.
    pub binary: PathBuf,
    /// The disk-fault shim (`tests/durability/faults.c`, built) that [`Faults::DiskEio`]
    /// loads into its node.
    pub shim: Option<PathBuf>,
}

impl ClusterConfig {
    /// A healthy run on Maelstrom's default network at Maelstrom's rate, seeded from
    /// `SEGLOG_SEED`.
    pub fn new(name: &str, nodes: usize, duration: Duration) -> Self {
        ClusterConfig {
            name: name.to_owned(),
            nodes,
            duration,
            clients_per_node: CLIENTS_PER_NODE,
            rate: Some(MAELSTROM_RATE),
            network: NetworkConfig::PERFECT,
            faults: Faults::None,
            seed: seed::from_env(),
            binary: node::binary_path(),
            shim: None,
        }
    }

    fn clients(&self) -> u32 {
        let nodes = u32::try_from(self.nodes).expect("node count fits in u32");
        self.clients_per_node * nodes
    }
}

/// Runs the cluster workload described by `config` and returns its report. A run that is not
/// valid (or any run with `SEGLOG_KEEP` set) keeps its directory with the history, every final
/// read, every node's log and data, and prints where.
pub fn run(config: &ClusterConfig) -> Report {
    assert!(config.nodes > 0, "a cluster needs a node");
    let _alone = harness::one_run_at_a_time();
    eprintln!(
        "workload {}: {} nodes, {:?}, seed {} (replay with {}={}), binary {}",
        config.name,
        config.nodes,
        config.faults,
        config.seed,
        seed::SEED_VAR,
        config.seed,
        config.binary.display()
    );
    let dir = tempfile::Builder::new()
        .prefix(&format!("seglog-cluster-{}-", config.name))
        .tempdir()
        .expect("create a run directory under the temp dir");
    let report = execute(config, dir.path());
    harness::keep_if_needed(report, dir, false)
}

fn execute(config: &ClusterConfig, dir: &Path) -> Report {
    let start = Instant::now();
    let mut master = StdRng::seed_from_u64(config.seed);
    let node_ids: Vec<String> = (0..config.nodes).map(node::node_id).collect();
    let protocol_errors = ProtocolErrors::default();
    let recorder = Arc::new(Recorder::new(start));
    let keys = Arc::new(KeyPool::new());
    let timeline = Arc::new(Timeline::new(start));
    let mut phases = Phases::default();
    let router = Router::start(
        node_ids.clone(),
        config.network,
        seed::fork(&mut master),
        protocol_errors.clone(),
    );
    let mut traffic = TrafficCounts::default();
    let leader_kills: Arc<std::sync::Mutex<Vec<LeaderKill>>> = Arc::default();
    let (mut starts, mut kills, mut network) = (0, 0, None);
    match router {
        Ok(router) => {
            let wiring = Wiring {
                protocol_errors: protocol_errors.clone(),
                traffic: Arc::default(),
                network: Some(Arc::clone(&router) as Arc<dyn Network>),
            };
            match start_nodes(config, dir, &node_ids, &wiring) {
                Ok(supervisor) => {
                    let run = Run {
                        supervisor: &supervisor,
                        recorder: &recorder,
                        keys: &keys,
                        timeline: &timeline,
                        start,
                    };
                    if let Err(e) = run_phases(
                        config,
                        dir,
                        &run,
                        &router,
                        &mut master,
                        &mut phases,
                        &leader_kills,
                    ) {
                        phases.failure.get_or_insert(e);
                    }
                    (starts, kills) = (supervisor.starts(), supervisor.kills());
                    // Dropping the supervisor kills any node a failure left running.
                    drop(supervisor);
                }
                Err(e) => phases.failure = Some(e),
            }
            router.stop();
            network = Some(router.counts());
            traffic = wiring.traffic.snapshot();
        }
        Err(e) => phases.failure = Some(e),
    }
    let history = recorder.history();
    let commits = CommitRule::Eventual {
        final_ns: phases.final_ns.unwrap_or(u64::MAX),
    };
    let anomalies = checker::check_cluster(&history, phases.final_reads.as_deref(), commits);
    let failure = phases.failure.or_else(|| {
        phases
            .final_reads
            .is_none()
            .then(|| "no final reads".to_owned())
    });
    let protocol_errors = lock(&protocol_errors).clone();
    Report {
        name: config.name.clone(),
        seed: config.seed,
        elapsed: start.elapsed(),
        history,
        nodes: config.nodes,
        final_reads: phases.final_reads.unwrap_or_default(),
        traffic,
        network,
        timeline: timeline.events(),
        anomalies,
        protocol_errors,
        failure,
        starts,
        kills,
        leader_kills: lock(&leader_kills).clone(),
        artifacts: None,
    }
}

/// What the phases produced, kept even when a later phase fails.
#[derive(Default)]
struct Phases {
    /// When the final phase began, in history nanoseconds.
    final_ns: Option<u64>,
    /// One per client; `None` if the run broke off before the final phase.
    final_reads: Option<Vec<NodeRead>>,
    /// The first error that stopped the phases.
    failure: Option<String>,
}

fn start_nodes(
    config: &ClusterConfig,
    dir: &Path,
    node_ids: &[String],
    wiring: &Wiring,
) -> Result<Arc<Supervisor>, String> {
    let data_dir = dir.join("data");
    fs::create_dir(&data_dir).map_err(|e| format!("create {}: {e}", data_dir.display()))?;
    let faulty = match config.faults {
        Faults::DiskEio { node, .. } => {
            let shim = config
                .shim
                .as_ref()
                .ok_or("a run with disk faults needs the shim")?;
            let flags = flags_dir(dir);
            fs::create_dir(&flags).map_err(|e| format!("create {}: {e}", flags.display()))?;
            let env = vec![
                ("LD_PRELOAD".to_owned(), shim.display().to_string()),
                ("SEGLOG_FAULTS".to_owned(), flags.display().to_string()),
            ];
            Some((node::node_id(node), env))
        }
        _ => None,
    };
    let configs = node_ids
        .iter()
        .map(|id| NodeConfig {
            binary: config.binary.clone(),
            data_dir: data_dir.clone(),
            log_path: log_path(dir, id),
            node_id: id.clone(),
            node_ids: node_ids.to_vec(),
            env: match &faulty {
                Some((faulty, env)) if faulty == id => env.clone(),
                _ => Vec::new(),
            },
        })
        .collect();
    Supervisor::start(configs, wiring.clone())
}

/// Where a node's stderr goes.
fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.log"))
}

/// The flag directory of the disk-fault shim.
fn flags_dir(dir: &Path) -> PathBuf {
    dir.join("faults")
}

fn run_phases(
    config: &ClusterConfig,
    dir: &Path,
    run: &Run<'_>,
    router: &Arc<Router>,
    master: &mut StdRng,
    phases: &mut Phases,
    leader_kills: &Arc<std::sync::Mutex<Vec<LeaderKill>>>,
) -> Result<(), String> {
    let load = Load {
        duration: config.duration,
        clients: config.clients(),
        rate: config.rate,
    };
    let nemesis = {
        let (supervisor, router) = (Arc::clone(run.supervisor), Arc::clone(router));
        let timeline = Arc::clone(run.timeline);
        let recorder = Arc::clone(run.recorder);
        let leader_kills = Arc::clone(leader_kills);
        let (faults, start, duration) = (config.faults, run.start, config.duration);
        let dir = dir.to_path_buf();
        move |rng| match faults {
            Faults::None => {}
            Faults::Partitions { cycles } => {
                partition_nemesis::run(
                    &router,
                    &supervisor,
                    rng,
                    start,
                    duration,
                    cycles,
                    &timeline,
                );
            }
            Faults::KillOne { kills } => {
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
            Faults::KillAll { kills } => {
                nemesis::run(
                    &supervisor,
                    rng,
                    start,
                    duration,
                    kills,
                    Victims::All,
                    &timeline,
                );
            }
            Faults::KillLeaders { kills } => {
                let kills = leader_nemesis::kill_leaders(
                    &supervisor,
                    &recorder,
                    &timeline,
                    start,
                    duration,
                    kills,
                );
                *lock(&leader_kills) = kills;
            }
            Faults::Wipe { wipes } => {
                leader_nemesis::wipe(&supervisor, &timeline, start, duration, wipes);
            }
            Faults::DiskEio { node, faults } => {
                disk_nemesis::run(
                    &supervisor,
                    &timeline,
                    node,
                    &flags_dir(&dir),
                    &log_path(&dir, &node::node_id(node)),
                    start,
                    duration,
                    faults,
                );
            }
        }
    };
    harness::run_workload(load, run, master, nemesis)?;

    router.heal();
    run.supervisor.restart_all()?;
    if let Faults::KillAll { .. } = config.faults {
        run.timeline
            .record("kill every node before the final phase");
        run.supervisor.kill_all()?;
        run.supervisor.restart_all()?;
    }
    run.timeline.record("healed; settling");
    thread::sleep(SETTLE);

    run.timeline.record("final reads");
    phases.final_ns = Some(run.recorder.now_ns());
    let reads = final_reads(config, run)?;
    phases.final_reads = Some(reads.iter().map(|(read, _)| read.clone()).collect());
    if let Some(error) = reads.into_iter().find_map(|(_, error)| error) {
        return Err(error);
    }
    run.timeline.record("shutdown");
    run.supervisor.shutdown_all()
}

/// Every client reads every key through its own node, all at once; each comes back with its
/// read and the error that cut its listing short, if any.
fn final_reads(
    config: &ClusterConfig,
    run: &Run<'_>,
) -> Result<Vec<(NodeRead, Option<String>)>, String> {
    let all_keys = Arc::new(run.keys.all());
    let targets = Arc::new(checker::known_offsets(&run.recorder.history()));
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    let mut readers = Vec::new();
    for process in 0..config.clients() {
        let node = node_of(process, config.nodes);
        let (supervisor, recorder) = (Arc::clone(run.supervisor), Arc::clone(run.recorder));
        let (all_keys, targets) = (Arc::clone(&all_keys), Arc::clone(&targets));
        let reader = thread::Builder::new()
            .name(format!("final-read-{process}"))
            .spawn(move || {
                let read = final_read::catch_up(
                    &supervisor,
                    node,
                    &recorder,
                    process,
                    &all_keys,
                    &targets,
                    deadline,
                );
                let listing = supervisor.connection(node).and_then(|connection| {
                    final_read::list_all(&connection, &recorder, process, &all_keys)
                });
                let (committed, error) = match listing {
                    Ok(committed) => (committed, None),
                    Err(e) => (Default::default(), Some(format!("n{node}: {e}"))),
                };
                let read = NodeRead {
                    node: node::node_id(node),
                    process,
                    read,
                    committed,
                };
                (read, error)
            })
            .map_err(|e| format!("spawn final reader: {e}"))?;
        readers.push(reader);
    }
    readers
        .into_iter()
        .map(|reader| {
            reader
                .join()
                .map_err(|_| "a final reader panicked".to_owned())
        })
        .collect()
}
