//! The node as clients and the nemesis share it: up, down between a kill and a restart, or
//! failed, plus the flag that ends the workload.
//!
//! Clients block in [`Supervisor::wait_up`] while the node is down, which is how they "wait and
//! retry" across restarts without polling.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::connection::{Connection, ProtocolErrors, lock};
use super::node::{NodeConfig, NodeProcess};

struct State {
    /// The running node; `None` between a kill and the restart.
    node: Option<NodeProcess>,
    /// Set when the workload phase ends: clients stop issuing operations.
    workload_over: bool,
    /// The first error that made the node unusable (a failed restart, a bad exit).
    failure: Option<String>,
    /// Processes that came up (answered init), counting the first.
    starts: u32,
    /// SIGKILLs sent, including those that cut a restart short.
    kills: u32,
}

/// Owns the node process across restarts.
pub struct Supervisor {
    /// How every process of the run is started: same binary, same data directory.
    config: NodeConfig,
    /// Handed to each process's connection.
    protocol_errors: ProtocolErrors,
    state: Mutex<State>,
    /// Signalled whenever `state` changes, to wake clients in `wait_up`.
    changed: Condvar,
}

impl Supervisor {
    /// Starts the first node process.
    pub fn start(config: NodeConfig, protocol_errors: ProtocolErrors) -> Result<Arc<Self>, String> {
        let node = NodeProcess::start(&config, Arc::clone(&protocol_errors))?;
        Ok(Arc::new(Supervisor {
            config,
            protocol_errors,
            state: Mutex::new(State {
                node: Some(node),
                workload_over: false,
                failure: None,
                starts: 1,
                kills: 0,
            }),
            changed: Condvar::new(),
        }))
    }

    /// Blocks while the node is down; `None` once the workload is over or the node failed.
    pub fn wait_up(&self) -> Option<Arc<Connection>> {
        let mut state = lock(&self.state);
        loop {
            if state.workload_over || state.failure.is_some() {
                return None;
            }
            if let Some(node) = &state.node {
                return Some(node.connection());
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// The current connection without waiting, for the final phase.
    pub fn connection(&self) -> Result<Arc<Connection>, String> {
        lock(&self.state)
            .node
            .as_ref()
            .map(NodeProcess::connection)
            .ok_or_else(|| "node is not running".to_owned())
    }

    /// SIGKILLs the node. Clients holding its connection see their requests end as unknown, and
    /// new operations wait for [`Supervisor::restart`].
    pub fn kill(&self) -> Result<(), String> {
        let node = {
            let mut state = lock(&self.state);
            state.kills += 1;
            state.node.take()
        };
        match node {
            Some(node) => node.kill().inspect_err(|e| self.fail(e.clone())),
            None => Err("kill: node is not running".to_owned()),
        }
    }

    /// Starts a new process on the same data directory and waits for init_ok.
    pub fn restart(&self) -> Result<(), String> {
        let node = NodeProcess::start(&self.config, Arc::clone(&self.protocol_errors))
            .map_err(|e| format!("restart: {e}"))
            .inspect_err(|e| self.fail(e.clone()))?;
        let mut state = lock(&self.state);
        state.starts += 1;
        state.node = Some(node);
        self.changed.notify_all();
        Ok(())
    }

    /// Starts a process on the data directory and SIGKILLs it `after` this long, before or
    /// during its recovery; the node stays down. Recovery must survive being cut short.
    pub fn kill_during_start(&self, after: Duration) -> Result<(), String> {
        let node = NodeProcess::spawn_initialising(&self.config, Arc::clone(&self.protocol_errors))
            .inspect_err(|e| self.fail(e.clone()))?;
        thread::sleep(after);
        lock(&self.state).kills += 1;
        node.kill().inspect_err(|e| self.fail(e.clone()))
    }

    /// Closes stdin and waits for the node to exit 0.
    pub fn shutdown(&self) -> Result<(), String> {
        let node = lock(&self.state).node.take();
        match node {
            Some(node) => node.shutdown().inspect_err(|e| self.fail(e.clone())),
            None => Err("shutdown: node is not running".to_owned()),
        }
    }

    /// Blocks until `deadline`, or until the node fails if that comes first.
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
