//! A `seglog` node process driven over its stdin and stdout, for the tests
//! that run the real binary.
#![allow(dead_code)] // Each test crate uses its own part.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

/// How long a test waits for one reply before failing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits to be sure no reply comes.
pub const SILENCE: Duration = Duration::from_millis(300);

/// A running node and the lines it writes.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// The msg_id the next request gets.
    pub next_id: u64,
}

impl Node {
    pub fn start(args: &[&str]) -> Node {
        Node::start_with_env(args, std::iter::empty::<(&str, &str)>())
    }

    /// Starts the binary with `args` and extra environment variables.
    pub fn start_with_env<K, V>(args: &[&str], env: impl IntoIterator<Item = (K, V)>) -> Node
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
            .args(args)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start seglog");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        Node {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            next_id: 1,
        }
    }

    /// Starts a node on `dir` and initialises it as `n0`.
    pub fn init(dir: &Path) -> Node {
        Node::init_with_env(dir, std::iter::empty::<(&str, &str)>())
    }

    /// Like [`Node::init`], with extra environment variables.
    pub fn init_with_env<K, V>(dir: &Path, env: impl IntoIterator<Item = (K, V)>) -> Node
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let args = ["--data-dir", dir.to_str().expect("utf-8 path")];
        let mut node = Node::start_with_env(&args, env);
        let reply = node.call(json!({"type": "init", "node_id": "n0", "node_ids": ["n0"]}));
        assert_eq!(reply["body"]["type"], "init_ok", "{reply}");
        node
    }

    pub fn write_line(&mut self, line: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line).expect("write to node");
        stdin.write_all(b"\n").expect("write to node");
        stdin.flush().expect("flush");
    }

    /// Sends a request body and returns its msg_id, without waiting.
    pub fn request(&mut self, mut body: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        body["msg_id"] = json!(id);
        let line = json!({"src": "c1", "dest": "n0", "body": body}).to_string();
        self.write_line(line.as_bytes());
        id
    }

    /// The next line on stdout, parsed; every stdout line must be a message.
    pub fn reply(&mut self) -> Value {
        let line = self
            .stdout
            .recv_timeout(REPLY_TIMEOUT)
            .expect("a reply within the timeout");
        let reply: Value = serde_json::from_str(&line).expect("stdout carries JSON only");
        assert_eq!(
            (reply["src"].as_str(), reply["dest"].as_str()),
            (Some("n0"), Some("c1"))
        );
        reply
    }

    /// Sends a request and waits for its reply (which must be the next line).
    pub fn call(&mut self, body: Value) -> Value {
        let id = self.request(body);
        let reply = self.reply();
        assert_eq!(reply["body"]["in_reply_to"], json!(id), "{reply}");
        reply
    }

    pub fn assert_silent(&mut self) {
        if let Ok(line) = self.stdout.recv_timeout(SILENCE) {
            panic!("unexpected output: {line}");
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Whether the process is still running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to [`REPLY_TIMEOUT`] for a line of stderr that contains
    /// `text`, reading past others; false if none came.
    pub fn wait_for_stderr(&self, text: &str) -> bool {
        let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits for the node to die of a SIGKILL that something else sent
    /// (the power-loss recorder's kill), and reaps it.
    pub fn wait_for_sigkill(mut self) {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().expect("reap");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the node was to die of SIGKILL, but {status}"
        );
    }

    /// Closes stdin and waits for the node to exit; returns its exit code.
    pub fn close(mut self) -> Option<i32> {
        drop(self.stdin.take());
        let code = self.child.wait().expect("wait").code();
        if code != Some(0) {
            // What the node said about it, for the failing assertion's reader.
            thread::sleep(std::time::Duration::from_millis(100));
            eprintln!(
                "node exited with {code:?}; its stderr:\n{}",
                self.stderr_text()
            );
        }
        code
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

pub fn error_code(reply: &Value) -> Option<u64> {
    (reply["body"]["type"] == "error").then(|| reply["body"]["code"].as_u64())?
}
