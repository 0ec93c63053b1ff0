//! One `seglog` process: start it on a data directory, initialise it, and end it by SIGKILL or by
//! closing stdin.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::connection::{CallError, Connection, ProtocolErrors, ReaderHandle};

/// The node id every run uses: the harness runs a single node, like Fly.io challenge 5a.
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

/// How to start the node; the same for every restart of a run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The `seglog` executable.
    pub binary: PathBuf,
    /// Passed as `--data-dir`; the node keeps its files in `data_dir/n0/`.
    pub data_dir: PathBuf,
    /// The node's stderr, appended to across restarts so a failed run has every log line.
    pub log_path: PathBuf,
}

/// A running, initialised node process.
pub struct NodeProcess {
    /// Killed on drop if still running, so a failed test leaves no process behind.
    child: Child,
    /// Shared with clients; outlives the process, failing requests once it is gone.
    connection: Arc<Connection>,
    /// The stdout reader; `None` once joined.
    reader: Option<ReaderHandle>,
}

impl NodeProcess {
    /// Starts the binary and completes the init handshake.
    pub fn start(config: &NodeConfig, protocol_errors: ProtocolErrors) -> Result<Self, String> {
        let mut node = Self::spawn(config, protocol_errors)?;
        node.init()?;
        Ok(node)
    }

    /// Starts the binary and sends init without waiting for the reply, so the process can be
    /// killed in the middle of recovery.
    pub fn spawn_initialising(
        config: &NodeConfig,
        protocol_errors: ProtocolErrors,
    ) -> Result<Self, String> {
        let node = Self::spawn(config, protocol_errors)?;
        let (sender, _ignored) = std::sync::mpsc::channel();
        node.connection
            .submit(INIT_SRC, init_body(), sender)
            .map_err(|e| format!("send init: {e:?}"))?;
        Ok(node)
    }

    fn spawn(config: &NodeConfig, protocol_errors: ProtocolErrors) -> Result<Self, String> {
        let log = open_log(&config.log_path)?;
        let mut child = Command::new(&config.binary)
            .arg("--data-dir")
            .arg(&config.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", config.binary.display()))?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => (stdin, stdout),
            _ => return Err("child has no stdin or stdout pipe".to_owned()),
        };
        let (connection, reader) = Connection::start(NODE_ID, stdin, stdout, protocol_errors)?;
        Ok(NodeProcess {
            child,
            connection,
            reader: Some(reader),
        })
    }

    fn init(&mut self) -> Result<(), String> {
        match self.connection.call(INIT_SRC, init_body(), INIT_TIMEOUT) {
            Ok(reply) if reply.body["type"] == "init_ok" => Ok(()),
            Ok(reply) => Err(format!("init answered with {}", reply.body)),
            Err(CallError::Died) => Err(format!(
                "node exited during init ({})",
                describe(self.child.wait())
            )),
            Err(e) => Err(format!("init failed: {e:?}")),
        }
    }

    /// The connection clients send requests over.
    pub fn connection(&self) -> Arc<Connection> {
        Arc::clone(&self.connection)
    }

    /// SIGKILLs the process and waits until it and its reader are gone; in-flight requests end
    /// as `CallError::Died`.
    pub fn kill(mut self) -> Result<(), String> {
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

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join();
        }
    }
}

impl Drop for NodeProcess {
    /// Never leave a node running behind a failed test.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn init_body() -> serde_json::Value {
    json!({"type": "init", "node_id": NODE_ID, "node_ids": [NODE_ID]})
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
