//! The nodes of a run as clients and the nemesis share them: each up, or down between a kill and
//! a restart; the run failed or not; plus the flag that ends the workload.
//!
//! Nodes are numbered `0..N` (node `i` has id `n{i}`); a one-node run uses node 0. Clients block
//! in [`Supervisor::wait_up`] while their node is down, which is how they "wait and retry" across
//! restarts without polling.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::connection::{Connection, Wiring, lock};
use super::node::{NodeConfig, NodeProcess};

struct State {
    /// The running process per node; `None` between a kill and the restart.
    nodes: Vec<Option<NodeProcess>>,
    /// Set when the workload phase ends: clients stop issuing operations.
    workload_over: bool,
    /// The first error that made a node unusable (a failed restart, a bad exit).
    failure: Option<String>,
    /// Processes that came up (answered init), counting the first of each node.
    starts: u32,
    /// SIGKILLs sent, including those that cut a restart short.
    kills: u32,
}

/// Owns every node process of a run across restarts.
pub struct Supervisor {
    /// How each node's processes are started: same binary, same data directory, same init.
    configs: Vec<NodeConfig>,
    /// Handed to each process's connection.
    wiring: Wiring,
    state: Mutex<State>,
    /// Signalled whenever `state` changes, to wake clients in `wait_up`.
    changed: Condvar,
}

impl Supervisor {
    /// Starts one process per config, all at once, and waits for every init_ok.
    pub fn start(configs: Vec<NodeConfig>, wiring: Wiring) -> Result<Arc<Self>, String> {
        let processes = start_all(&configs.iter().collect::<Vec<_>>(), &wiring)?;
        let starts = u32::try_from(processes.len()).expect("node count fits in u32");
        Ok(Arc::new(Supervisor {
            configs,
            wiring,
            state: Mutex::new(State {
                nodes: processes.into_iter().map(Some).collect(),
                workload_over: false,
                failure: None,
                starts,
                kills: 0,
            }),
            changed: Condvar::new(),
        }))
    }

    /// How many nodes the run has.
    pub fn node_count(&self) -> usize {
        self.configs.len()
    }

    /// Blocks while `node` is down; `None` once the workload is over or the run failed.
    pub fn wait_up(&self, node: usize) -> Option<Arc<Connection>> {
        let mut state = lock(&self.state);
        loop {
            if state.workload_over || state.failure.is_some() {
                return None;
            }
            if let Some(process) = &state.nodes[node] {
                return Some(process.connection());
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Where `node` keeps its files: `--data-dir`'s `<node_id>/`.
    pub fn data_dir(&self, node: usize) -> std::path::PathBuf {
        self.configs[node]
            .data_dir
            .join(&self.configs[node].node_id)
    }

    /// `node`'s current connection without waiting, for the final phase.
    pub fn connection(&self, node: usize) -> Result<Arc<Connection>, String> {
        lock(&self.state).nodes[node]
            .as_ref()
            .map(NodeProcess::connection)
            .ok_or_else(|| format!("{} is not running", self.configs[node].node_id))
    }

    /// SIGKILLs `node`. Clients holding its connection see their requests end as unknown, and
    /// new operations on it wait for [`Supervisor::restart`].
    pub fn kill(&self, node: usize) -> Result<(), String> {
        let process = {
            let mut state = lock(&self.state);
            state.kills += 1;
            state.nodes[node].take()
        };
        match process {
            Some(process) => process.kill().inspect_err(|e| self.fail(e.clone())),
            None => Err(format!(
                "kill: {} is not running",
                self.configs[node].node_id
            )),
        }
    }

    /// SIGKILLs every node that is running.
    pub fn kill_all(&self) -> Result<(), String> {
        for node in 0..self.node_count() {
            if lock(&self.state).nodes[node].is_some() {
                self.kill(node)?;
            }
        }
        Ok(())
    }

    /// Starts a new process for `node` on its data directory and waits for init_ok.
    pub fn restart(&self, node: usize) -> Result<(), String> {
        let process = NodeProcess::start(&self.configs[node], &self.wiring)
            .map_err(|e| format!("restart: {e}"))
            .inspect_err(|e| self.fail(e.clone()))?;
        self.install(vec![(node, process)]);
        Ok(())
    }

    /// Restarts every node that is down, all at once, as a whole cluster coming back.
    pub fn restart_all(&self) -> Result<(), String> {
        let down: Vec<usize> = {
            let state = lock(&self.state);
            (0..self.node_count())
                .filter(|&node| state.nodes[node].is_none())
                .collect()
        };
        let configs: Vec<&NodeConfig> = down.iter().map(|&node| &self.configs[node]).collect();
        let processes = start_all(&configs, &self.wiring)
            .map_err(|e| format!("restart: {e}"))
            .inspect_err(|e| self.fail(e.clone()))?;
        self.install(down.into_iter().zip(processes).collect());
        Ok(())
    }

    fn install(&self, processes: Vec<(usize, NodeProcess)>) {
        let mut state = lock(&self.state);
        for (node, process) in processes {
            state.starts += 1;
            state.nodes[node] = Some(process);
        }
        self.changed.notify_all();
    }

    /// Starts a process for `node` and SIGKILLs it `after` this long, before or during its
    /// recovery; the node stays down. Recovery must survive being cut short.
    pub fn kill_during_start(&self, node: usize, after: Duration) -> Result<(), String> {
        let process = NodeProcess::spawn(&self.configs[node], &self.wiring)
            .inspect_err(|e| self.fail(e.clone()))?;
        thread::sleep(after);
        lock(&self.state).kills += 1;
        process.kill().inspect_err(|e| self.fail(e.clone()))
    }

    /// Closes `node`'s stdin and waits for it to exit 0.
    pub fn shutdown(&self, node: usize) -> Result<(), String> {
        let process = lock(&self.state).nodes[node].take();
        match process {
            Some(process) => process.shutdown().inspect_err(|e| self.fail(e.clone())),
            None => Err(format!(
                "shutdown: {} is not running",
                self.configs[node].node_id
            )),
        }
    }

    /// Shuts every running node down, one after another; the first error is returned after
    /// all were asked.
    pub fn shutdown_all(&self) -> Result<(), String> {
        let mut first_error = None;
        for node in 0..self.node_count() {
            if lock(&self.state).nodes[node].is_some()
                && let Err(e) = self.shutdown(node)
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Blocks until `deadline`, or until the run fails if that comes first.
    pub fn wait_until(&self, deadline: Instant) {
        let mut state = lock(&self.state);
        while state.failure.is_none() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            state = match self.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Ends the workload phase: clients finish their current operation and stop.
    pub fn end_workload(&self) {
        lock(&self.state).workload_over = true;
        self.changed.notify_all();
    }

    pub fn workload_over(&self) -> bool {
        lock(&self.state).workload_over
    }

    /// Records the first failure and wakes clients so they stop.
    pub fn fail(&self, failure: String) {
        let mut state = lock(&self.state);
        state.failure.get_or_insert(failure);
        self.changed.notify_all();
    }

    pub fn failure(&self) -> Option<String> {
        lock(&self.state).failure.clone()
    }

    pub fn starts(&self) -> u32 {
        lock(&self.state).starts
    }

    pub fn kills(&self) -> u32 {
        lock(&self.state).kills
    }
}

/// Spawns every node, then waits for each init_ok: the nodes recover and initialise
/// concurrently, and a peer's first messages may reach a node still in recovery.
fn start_all(configs: &[&NodeConfig], wiring: &Wiring) -> Result<Vec<NodeProcess>, String> {
    let mut processes = configs
        .iter()
        .map(|config| NodeProcess::spawn(config, wiring))
        .collect::<Result<Vec<_>, _>>()?;
    for process in &mut processes {
        process.await_init()?;
    }
    Ok(processes)
}
