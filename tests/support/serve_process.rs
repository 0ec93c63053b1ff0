//! A `seglog serve` process on a free local port and a real HTTP client
//! (ureq) for it, for the tests that run the real binary.
#![allow(dead_code)] // Each test crate uses its own part.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a test waits for the server to start, stop or act before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running `seglog serve`.
pub struct Server {
    child: Child,
    pub base: String,
    stderr: Mutex<Receiver<String>>,
    /// Lines read while waiting for the address.
    early: Vec<String>,
    agent: ureq::Agent,
}

impl Server {
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(dir, extra, std::iter::empty::<(&str, &str)>())
    }

    /// Starts the binary with extra environment variables.
    pub fn start_with_env<K, V>(
        dir: &Path,
        extra: &[&str],
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Server
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut args: Vec<&OsStr> = ["--listen", "127.0.0.1:0", "--data-dir"]
            .iter()
            .map(OsStr::new)
            .collect();
        args.push(dir.as_os_str());
        args.extend(extra.iter().map(OsStr::new));
        Server::spawn("serve", &args, env)
    }

    /// Starts `seglog serve ARGS`, the whole argument list given (its
    /// `--listen` too), its stderr lines shown as `[label] ...`: for a
    /// caller that picks its own ports, as a cluster's nodes keep theirs
    /// across a restart.
    pub fn start_args<A: AsRef<OsStr>>(label: &str, args: &[A]) -> Server {
        Server::spawn(label, args, std::iter::empty::<(&str, &str)>())
    }

    fn spawn<A, K, V>(label: &str, args: &[A], env: impl IntoIterator<Item = (K, V)>) -> Server
    where
        A: AsRef<OsStr>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
            .arg("serve")
            .args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start seglog serve");
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        let prefix = label.to_string();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[{prefix}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut early = Vec::new();
        let base = loop {
            let line = stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| {
                    panic!("{label} never said where it listens ({e}); it said {early:?}")
                });
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split(',').next().expect("address").to_string();
            }
            early.push(line);
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PATIENCE))
            .build()
            .into();
        Server {
            child,
            base,
            stderr: Mutex::new(stderr),
            early,
            agent,
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, text) = self.request_text(method, path, body);
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
        };
        (status, value)
    }

    pub fn request_text(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_request_text(method, path, body, PATIENCE)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The status and body of a request that may get no answer within
    /// `timeout` (a node cut off from its cluster may hold it): the error
    /// then, as every transport error, is a value.
    pub fn try_request_text(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<(u16, String), ureq::Error> {
        fn within<B>(
            request: ureq::RequestBuilder<B>,
            timeout: Duration,
        ) -> ureq::RequestBuilder<B> {
            request.config().timeout_global(Some(timeout)).build()
        }
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => within(self.agent.get(&url), timeout).call(),
            ("DELETE", _) => within(self.agent.delete(&url), timeout).call(),
            ("POST", Some(body)) => within(self.agent.post(&url), timeout)
                .content_type("application/json")
                .send(body),
            ("POST", None) => within(self.agent.post(&url), timeout).send_empty(),
            ("PUT", _) => within(self.agent.put(&url), timeout).send_empty(),
            _ => panic!("no such method in these tests: {method}"),
        };
        let mut response = response?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()?;
        Ok((status, text))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(&body.to_string()))
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let (status, body) = self.post("/topics", json!({"name": name, "partitions": partitions}));
        assert_eq!(status, 201, "{body}");
    }

    /// Produces `values` to one partition; returns their offsets.
    pub fn produce(&self, topic: &str, partition: u32, values: &[Value]) -> Vec<u64> {
        let records: Vec<Value> = values.iter().map(|v| json!({"value": v})).collect();
        let (status, body) = self.post(
            &format!("/topics/{topic}/partitions/{partition}"),
            json!({ "records": records }),
        );
        assert_eq!(status, 200, "{body}");
        body["offsets"]
            .as_array()
            .expect("offsets")
            .iter()
            .map(|o| {
                assert_eq!(o["partition"], partition);
                o["offset"].as_u64().expect("offset")
            })
            .collect()
    }

    /// The records of a partition from `offset` (one fetch).
    pub fn fetch(&self, topic: &str, partition: u32, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!(
            "/topics/{topic}/partitions/{partition}/records?{query}"
        ));
        assert_eq!(status, 200, "{body}");
        body.as_array().expect("an array of records").clone()
    }

    /// Asserts an error reply with this status and code.
    pub fn assert_error(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        status: u16,
        code: u64,
    ) {
        let (got, reply) = self.request(method, path, body);
        assert_eq!(
            (got, reply["error_code"].as_u64()),
            (status, Some(code)),
            "{method} {path}: {reply}"
        );
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }

    /// The server's process id: a test that expects it to heal without a
    /// restart checks it is the same process throughout.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM; waits for the exit and returns whether it succeeded.
    pub fn terminate(mut self) -> bool {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "send SIGTERM");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop after SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of a metric without labels.
    pub fn metric(&self, name: &str) -> u64 {
        let (status, text) = self.request_text("GET", "/metrics", None);
        assert_eq!(status, 200);
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Waits until `count` long polls wait in the server.
    pub fn wait_for_polls(&self, count: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.metric("seglog_fetches_waiting") != count {
            assert!(
                Instant::now() < deadline,
                "the long polls never started waiting"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether a stderr line containing `text` has arrived within `PATIENCE`.
    pub fn wait_for_log(&self, text: &str) -> bool {
        self.log_line(text).is_some()
    }

    /// The first line of stderr that holds `text`, waiting for it at most
    /// [`PATIENCE`].
    pub fn log_line(&self, text: &str) -> Option<String> {
        if let Some(line) = self.early.iter().find(|line| line.contains(text)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + PATIENCE;
        let stderr = self.stderr.lock().expect("stderr lock");
        while let Ok(line) = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(text) {
                return Some(line);
            }
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
