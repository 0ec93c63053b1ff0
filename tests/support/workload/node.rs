//! One `seglog` process: start it on a data directory, initialise it as one node of a cluster (or
//! as the lone node), and end it by SIGKILL or by closing stdin.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use serde_json::json;

use super::connection::{Connection, ReaderHandle, Reply, Wiring};

/// The id of a lone node, as Maelstrom names the first node (Fly.io challenge 5a).
pub const NODE_ID: &str = "n0";

/// The client name init comes from, as in Maelstrom.
const INIT_SRC: &str = "c0";

/// Maelstrom's limit for answering init. Recovery runs before init_ok, so this bounds it too.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node may take to sync and exit after stdin closes.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The `seglog` binary to test: `SEGLOG_BIN` if set, else the one cargo built for this target.
pub fn binary_path() -> PathBuf {
    std::env::var_os("SEGLOG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_seglog")))
}

/// The id of node `index` of a cluster, as Maelstrom numbers them.
pub fn node_id(index: usize) -> String {
    format!("n{index}")
}

/// How to start one node; the same for every restart of a run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The `seglog` executable.
    pub binary: PathBuf,
    /// Passed as `--data-dir`; the node keeps its files in `data_dir/<node_id>/`, so every node
    /// of a cluster may share it.
    pub data_dir: PathBuf,
    /// The node's stderr, appended to across restarts so a failed run has every log line.
    pub log_path: PathBuf,
    /// This node's id, sent in init.
    pub node_id: String,
    /// Every node of the cluster, this one included, sent in init: the same list on every start.
    pub node_ids: Vec<String>,
    /// Environment variables the process gets besides the test's own, such as a checkpoint size
    /// for a run that needs checkpoints all the time.
    pub env: Vec<(String, String)>,
}

impl NodeConfig {
    /// The lone node [`NODE_ID`] of a one-node run.
    pub fn lone(binary: PathBuf, data_dir: PathBuf, log_path: PathBuf) -> Self {
        NodeConfig {
            binary,
            data_dir,
            log_path,
            node_id: NODE_ID.to_owned(),
            node_ids: vec![NODE_ID.to_owned()],
            env: Vec::new(),
        }
    }
}

/// A running node process, initialised once [`NodeProcess::await_init`] returned.
pub struct NodeProcess {
    /// Killed on drop if still running, so a failed test leaves no process behind.
    child: Child,
    /// Shared with clients; outlives the process, failing requests once it is gone.
    connection: Arc<Connection>,
    /// The stdout reader; `None` once joined.
    reader: Option<ReaderHandle>,
    /// Where init_ok will arrive; `None` once it did.
    init_reply: Option<Receiver<Reply>>,
    /// The router this process is attached to, detached from before the process ends.
    wiring: Wiring,
}

impl NodeProcess {
    /// Starts the binary and completes the init handshake.
    pub fn start(config: &NodeConfig, wiring: &Wiring) -> Result<Self, String> {
        let mut node = Self::spawn(config, wiring)?;
        node.await_init()?;
        Ok(node)
    }

    /// Starts the binary, writes init and attaches the process to the run's network, without
    /// waiting for init_ok: several nodes can then initialise at once, as Maelstrom starts
    /// them, and a process can be killed in the middle of its recovery.
    pub fn spawn(config: &NodeConfig, wiring: &Wiring) -> Result<Self, String> {
        let log = open_log(&config.log_path)?;
        let mut child = Command::new(&config.binary)
            .arg("--data-dir")
            .arg(&config.data_dir)
            .envs(config.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", config.binary.display()))?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => (stdin, stdout),
            _ => return Err("child has no stdin or stdout pipe".to_owned()),
        };
        let (connection, reader) =
            Connection::start(&config.node_id, stdin, stdout, wiring.clone())?;
        let (sender, init_reply) = mpsc::channel();
        let node = NodeProcess {
            child,
            connection,
            reader: Some(reader),
            init_reply: Some(init_reply),
            wiring: wiring.clone(),
        };
        node.connection
            .submit(INIT_SRC, init_body(config), sender)
            .map_err(|e| format!("send init to {}: {e:?}", config.node_id))?;
        // Attached after init is written, so any message from a peer queues behind it.
        if let Some(network) = &wiring.network {
            network.attach(&config.node_id, &node.connection);
        }
        Ok(node)
    }

    /// Waits up to [`INIT_TIMEOUT`] for init_ok.
    pub fn await_init(&mut self) -> Result<(), String> {
        let Some(init_reply) = self.init_reply.take() else {
            return Ok(());
        };
        let id = self.connection.node_id().to_owned();
        match init_reply.recv_timeout(INIT_TIMEOUT) {
            Ok(reply) if reply.body["type"] == "init_ok" => Ok(()),
            Ok(reply) => Err(format!("{id}: init answered with {}", reply.body)),
            Err(RecvTimeoutError::Disconnected) => Err(format!(
                "{id} exited during init ({})",
                describe(self.child.wait())
            )),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("{id}: no init_ok within {INIT_TIMEOUT:?}"))
            }
        }
    }

    /// The connection clients send requests over.
    pub fn connection(&self) -> Arc<Connection> {
        Arc::clone(&self.connection)
    }

    /// SIGKILLs the process and waits until it and its reader are gone; in-flight requests end
    /// as `CallError::Died`.
    pub fn kill(mut self) -> Result<(), String> {
        self.detach();
        self.child
            .kill()
            .map_err(|e| format!("SIGKILL node: {e}"))?;
        self.child
            .wait()
            .map_err(|e| format!("wait for killed node: {e}"))?;
        self.join_reader();
        Ok(())
    }

    /// Closes stdin and waits for the node to sync and exit with status 0.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.detach();
        self.connection.close_stdin();
        let exited = self
            .reader
            .as_ref()
            .is_none_or(|reader| reader.wait_exit(SHUTDOWN_TIMEOUT));
        if !exited {
            return Err(format!(
                "node did not exit within {SHUTDOWN_TIMEOUT:?} of stdin closing"
            ));
        }
        let status = self
            .child
            .wait()
            .map_err(|e| format!("wait for node exit: {e}"))?;
        self.join_reader();
        if status.success() {
            Ok(())
        } else {
            Err(format!("node exited with {status} after stdin closed"))
        }
    }

    /// Stops the router delivering to this process; peers' messages to it are lost from now on.
    fn detach(&self) {
        if let Some(network) = &self.wiring.network {
            network.detach(self.connection.node_id(), &self.connection);
        }
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join();
        }
    }
}

impl Drop for NodeProcess {
    /// Never leave a node running behind a failed test.
    fn drop(&mut self) {
        self.detach();
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn init_body(config: &NodeConfig) -> serde_json::Value {
    json!({"type": "init", "node_id": config.node_id, "node_ids": config.node_ids})
}

fn open_log(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("open node log {}: {e}", path.display()))
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}
