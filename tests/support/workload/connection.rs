//! The multiplexer: many concurrent requests over one node process's stdin and stdout.
//!
//! A node has a single stdin and stdout, but Maelstrom pipelines requests from many clients over
//! them. Writers share stdin behind a mutex (one whole line per write): clients, and in a cluster
//! the router delivering other nodes' messages. One reader thread owns stdout and routes each
//! line by its `dest`: a reply to a client goes, by `in_reply_to`, to the channel its request
//! registered; anything else goes to the run's [`Network`] (the router), or is a protocol error
//! for a lone node. When the process dies the reader sees EOF and drops every waiting channel, so
//! callers learn at once that their requests' fate is unknown instead of waiting for a timeout.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::traffic::Traffic;

/// The longest stdout line accepted. A final-read poll of a long log is the largest reply; this
/// is far above it, and a line beyond it means the node is not speaking the protocol.
const REPLY_LINE_BYTES_MAX: u64 = 64 << 20;

/// Protocol violations seen by reader threads and the router, shared by every connection of a run.
pub type ProtocolErrors = Arc<Mutex<Vec<String>>>;

/// Where a node's lines to anything but a client go: the router of a cluster run.
pub trait Network: Send + Sync {
    /// Node `src` wrote `line` (one whole JSON message) to `dest`, which is not a client.
    fn forward(&self, src: &str, dest: &str, line: &[u8]);
    /// Lines to `node_id` go to `connection` from now on: its process was just started.
    fn attach(&self, node_id: &str, connection: &Arc<Connection>);
    /// `connection`'s process is about to end: lines to `node_id` are lost until the next
    /// attach. Does nothing if another connection was attached since.
    fn detach(&self, node_id: &str, connection: &Arc<Connection>);
}

/// What every connection of a run shares.
#[derive(Clone, Default)]
pub struct Wiring {
    /// Every protocol violation of the run; any one makes the run invalid.
    pub protocol_errors: ProtocolErrors,
    /// Message counts for msgs-per-op.
    pub traffic: Arc<Traffic>,
    /// The router between nodes; `None` for a lone node, which must message clients only.
    pub network: Option<Arc<dyn Network>>,
}

/// Whether `id` names a client. Maelstrom's clients are `c1`, `c2`, ...; nodes are `n0`, ...;
/// services have names like `lin-kv`.
pub fn is_client(id: &str) -> bool {
    id.starts_with('c')
}

/// A reply as the reader thread received it.
#[derive(Debug)]
pub struct Reply {
    /// The `msg_id` of the request this answers.
    pub in_reply_to: u64,
    /// The reply's body, undecoded: decoding depends on the request.
    pub body: Value,
    /// When the reader thread read the line: the latency end point benchmarks use.
    pub received_at: Instant,
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Nothing was written: the connection was already closed. The request had no effect.
    NotSent,
    /// Writing to stdin failed part-way; the node may have read the request.
    WriteFailed(String),
    /// The process's stdout closed (it died or exited) before the reply came.
    Died,
    /// No reply within the timeout.
    Timeout,
}

/// A request awaiting its reply.
struct Pending {
    /// The client that sent it: the only valid `dest` of its reply.
    src: String,
    reply_to: Sender<Reply>,
}

/// Requests awaiting replies, and whether the reader is gone.
struct Waiting {
    /// The request per outstanding `msg_id`.
    channels: HashMap<u64, Pending>,
    /// Requests given up on (timed out, or the write failed): a late reply to one is expected,
    /// any other reply without a channel is a duplicate or was never asked for.
    abandoned: HashSet<u64>,
    /// Set when the reader hits EOF; later requests are refused rather than left hanging.
    closed: bool,
}

/// One node process's stdin and stdout, shared by every client of that process.
pub struct Connection {
    /// The node's id (`n0`), used as `dest` of every request.
    node_id: String,
    /// `None` once closed, which is how a node is asked to shut down. Boxed so a test can put an
    /// in-process stand-in for a node behind a connection.
    stdin: Mutex<Option<Box<dyn Write + Send>>>,
    waiting: Mutex<Waiting>,
    /// The next `msg_id`; ids are unique per connection, so replies cannot be misrouted.
    next_msg_id: AtomicU64,
    wiring: Wiring,
}

impl Connection {
    /// Wraps a freshly started node's stdin and stdout and starts the reader thread, which ends
    /// when stdout closes.
    pub fn start(
        node_id: &str,
        stdin: impl Write + Send + 'static,
        stdout: impl Read + Send + 'static,
        wiring: Wiring,
    ) -> Result<(Arc<Connection>, ReaderHandle), String> {
        let connection = Arc::new(Connection {
            node_id: node_id.to_owned(),
            stdin: Mutex::new(Some(Box::new(stdin))),
            waiting: Mutex::new(Waiting {
                channels: HashMap::new(),
                abandoned: HashSet::new(),
                closed: false,
            }),
            next_msg_id: AtomicU64::new(1),
            wiring,
        });
        let reader = Arc::clone(&connection);
        let (done_sender, done) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("{node_id}-stdout"))
            .spawn(move || {
                // Dropped when the thread ends, which is what `ReaderHandle::wait_exit` waits for.
                let _done = done_sender;
                reader.read_lines(stdout);
            })
            .map_err(|e| format!("spawn reader thread: {e}"))?;
        Ok((connection, ReaderHandle { thread, done }))
    }

    /// Writes a request and routes its reply to `reply_to`; returns the request's `msg_id`.
    ///
    /// `body` must be a JSON object; `msg_id` is added here.
    pub fn submit(
        &self,
        src: &str,
        mut body: Value,
        reply_to: Sender<Reply>,
    ) -> Result<u64, CallError> {
        let msg_id = self.next_msg_id.fetch_add(1, Ordering::Relaxed);
        body["msg_id"] = json!(msg_id);
        let mut line = json!({"src": src, "dest": self.node_id, "body": body}).to_string();
        line.push('\n');
        {
            let mut waiting = lock(&self.waiting);
            if waiting.closed {
                return Err(CallError::NotSent);
            }
            // Registered before writing, so even an instant reply finds its channel.
            let pending = Pending {
                src: src.to_owned(),
                reply_to,
            };
            waiting.channels.insert(msg_id, pending);
        }
        let written = self.write_line(line.as_bytes());
        match written {
            Ok(()) => self.wiring.traffic.count_client(),
            Err(_) => {
                self.abandon(msg_id);
            }
        }
        written.map(|()| msg_id)
    }

    /// Writes a message another node sent to this one; the router's way in.
    pub fn deliver(&self, line: &[u8]) -> Result<(), CallError> {
        self.write_line(line)
    }

    /// Writes one whole line under the stdin lock, so concurrent writers never interleave.
    fn write_line(&self, line: &[u8]) -> Result<(), CallError> {
        match lock(&self.stdin).as_mut() {
            None => Err(CallError::NotSent),
            Some(stdin) => stdin
                .write_all(line)
                .and_then(|()| stdin.flush())
                .map_err(|e| CallError::WriteFailed(e.to_string())),
        }
    }

    /// Sends a request and waits up to `timeout` for its reply.
    pub fn call(&self, src: &str, body: Value, timeout: Duration) -> Result<Reply, CallError> {
        let (sender, receiver) = mpsc::channel();
        let msg_id = self.submit(src, body, sender)?;
        match receiver.recv_timeout(timeout) {
            Ok(reply) => Ok(reply),
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Died),
            Err(RecvTimeoutError::Timeout) => {
                if self.abandon(msg_id) {
                    return Err(CallError::Timeout);
                }
                // The reader took the channel just as the wait ended: the reply is on its way,
                // or the process died and the channel is being dropped.
                receiver.recv().map_err(|_| CallError::Died)
            }
        }
    }

    /// Stops waiting for `msg_id`'s reply; false if the reader already took its channel.
    fn abandon(&self, msg_id: u64) -> bool {
        let mut waiting = lock(&self.waiting);
        let was_waiting = waiting.channels.remove(&msg_id).is_some();
        if was_waiting {
            waiting.abandoned.insert(msg_id);
        }
        was_waiting
    }

    /// Closes stdin: the node's signal to sync and exit.
    pub fn close_stdin(&self) {
        lock(&self.stdin).take();
    }

    /// Reads stdout line by line until EOF, routing each line; runs on the reader thread.
    fn read_lines(&self, stdout: impl Read) {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut stdout)
                .take(REPLY_LINE_BYTES_MAX + 1)
                .read_until(b'\n', &mut line);
            match read {
                Ok(0) => break,
                Ok(_) if line.len() as u64 > REPLY_LINE_BYTES_MAX => {
                    self.protocol_error(format!(
                        "stdout line longer than {REPLY_LINE_BYTES_MAX} bytes"
                    ));
                    break;
                }
                Ok(_) => self.route(&line),
                Err(e) => {
                    self.protocol_error(format!("reading stdout: {e}"));
                    break;
                }
            }
        }
        let mut waiting = lock(&self.waiting);
        waiting.closed = true;
        // Dropping the senders wakes every waiting caller with `Disconnected`.
        waiting.channels.clear();
    }

    fn route(&self, line: &[u8]) {
        let received_at = Instant::now();
        let message: Value = match serde_json::from_slice(line) {
            Ok(message) => message,
            Err(e) => {
                let text = String::from_utf8_lossy(line);
                self.protocol_error(format!(
                    "stdout line is not JSON ({e}): {}",
                    text.trim_end()
                ));
                return;
            }
        };
        if message["src"].as_str() != Some(self.node_id.as_str()) {
            self.protocol_error(format!("message not from {}: {message}", self.node_id));
        }
        let Some(dest) = message["dest"].as_str() else {
            self.protocol_error(format!("message without a string dest: {message}"));
            return;
        };
        if is_client(dest) {
            self.wiring.traffic.count_client();
            self.route_reply(dest, &message, received_at);
        } else {
            self.wiring.traffic.count_server();
            self.route_to_peer(dest, &message, line);
        }
    }

    /// A message to another node goes to the router, unchanged.
    fn route_to_peer(&self, dest: &str, message: &Value, line: &[u8]) {
        if !message["body"]["type"].is_string() {
            self.protocol_error(format!("message without a string body.type: {message}"));
            return;
        }
        match &self.wiring.network {
            Some(network) => network.forward(&self.node_id, dest, line),
            None => self.protocol_error(format!(
                "message to {dest}, but a lone node may only answer clients: {message}"
            )),
        }
    }

    fn route_reply(&self, dest: &str, message: &Value, received_at: Instant) {
        let Some(in_reply_to) = message["body"]["in_reply_to"].as_u64() else {
            self.protocol_error(format!("message without in_reply_to: {message}"));
            return;
        };
        let channel = {
            let mut waiting = lock(&self.waiting);
            let channel = waiting.channels.remove(&in_reply_to);
            if channel.is_none() && waiting.abandoned.remove(&in_reply_to) {
                // A late reply to a request given up on.
                return;
            }
            channel
        };
        let Some(pending) = channel else {
            self.protocol_error(format!(
                "reply to a msg_id never sent or already answered: {message}"
            ));
            return;
        };
        if pending.src != dest {
            // Still delivered: the protocol error fails the run, and the caller need not time out.
            self.protocol_error(format!(
                "reply to {}'s request sent to {dest}: {message}",
                pending.src
            ));
        }
        let body = message["body"].clone();
        // The caller may have stopped waiting in the meantime; that is fine.
        let _ = pending.reply_to.send(Reply {
            in_reply_to,
            body,
            received_at,
        });
    }

    fn protocol_error(&self, error: String) {
        lock(&self.wiring.protocol_errors).push(format!("{}: {error}", self.node_id));
    }

    /// The node this connection talks to.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// The reader thread of one connection.
pub struct ReaderHandle {
    /// Joined once the process is dead, so no thread outlives its node.
    thread: JoinHandle<()>,
    /// Disconnects when the thread ends.
    done: mpsc::Receiver<()>,
}

impl ReaderHandle {
    /// Waits up to `timeout` for stdout to close; true if it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        matches!(
            self.done.recv_timeout(timeout),
            Err(RecvTimeoutError::Disconnected)
        )
    }

    /// Waits for the thread to end; call once stdout is known to close (the process is dead).
    pub fn join(self) {
        // A panic here would be a harness bug; its message is already on stderr.
        let _ = self.thread.join();
    }
}

/// Locks a mutex, going on if another thread panicked while holding it
/// (seglog's own helper): every value guarded here stays consistent between
/// statements, and the panic itself fails the test.
pub use seglog::lock::lock;
