//! The Maelstrom node: one event loop over its inputs (request lines, the
//! Raft groups' events, and a timer), serving writes through the groups
//! ([`crate::raft`]) and reads from the store, so that the nodes of a
//! cluster act as one replicated log (`cluster.md`).
//!
//! # Layout
//! - [`lines`]: request lines cut from the input, reply lines collected for output.
//! - [`stdio`]: stdin and stdout as non-blocking pipes on the loop's thread.
//! - [`fields`]: fields of a message body, decoded and checked against their limits.
//! - [`protocol`]: Maelstrom's envelope, client requests and replies.
//! - [`peer`]: node-to-node messages.
//! - [`poll`]: poll replies built straight from the mapped records.
//! - [`members`]: the cluster's nodes, and each one's id in the groups.
//! - [`server`]: the initialised node: client requests routed to their
//!   groups' leaders, answers once applied here, the groups' traffic.
//!
//! The loop and the groups' tasks run on one thread; the group commit
//! ([`crate::storage::group_commit`]) is a thread of its own, since
//! fdatasync blocks. [`serve`] takes its input and output as parameters,
//! so tests can run nodes in-process; [`run`] is what `main` calls with
//! stdin and stdout.

pub mod fields;
pub mod lines;
pub mod members;
pub mod peer;
pub mod poll;
pub mod protocol;
pub mod server;
pub mod stdio;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::log;
use crate::storage::store::{SEGMENT_BYTES_DEFAULT, StoreConfig};
use lines::{Input, Outbox, Splitter};
use members::Cluster;
use protocol::{Incoming, ParseError, ReplyBody, ReplyTo, Request, code};
use server::Server;

/// Raft groups by default: one. Spreading leaders over the nodes (`--groups
/// N`, one per node) spreads write load, but under Maelstrom's workload each
/// more leader sends its own appends every tick: measured on 3 nodes, 3.8
/// msgs-per-op with one group against 5.1 with three, and on 5 nodes 4.7
/// against 7.9 (cluster.md, "Message cost").
pub const GROUPS_DEFAULT: u32 = 1;

/// How often the loop routes waiting writes and sends the groups' traffic:
/// every message to a peer carries what accumulated over one tick, so the
/// tick trades a little latency (far below an election timeout) for far
/// fewer messages.
pub const TICK: Duration = Duration::from_millis(10);

/// Options of the node (the default command).
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Keep data in DIR/<node_id>/; a restarted node with the same DIR
    /// recovers and carries on. Without it, each process uses a fresh
    /// directory under the system temp dir and prints its path on stderr
    /// (see `data_dir` for why).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Segment size in bytes at which a key's segment is sealed.
    #[arg(long, value_name = "BYTES", default_value_t = SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,
    /// Raft groups the keys are spread over, each led by its own node when
    /// all are up (default 1: under Maelstrom's workload one leader costs
    /// far fewer messages per operation, see cluster.md, "Message cost").
    /// Every node of a cluster must be started with the same number.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=crate::raft::groups::GROUPS_MAX as i64))]
    pub groups: Option<u32>,
    /// Refuse writes (error 11) while the data directory's file system has
    /// fewer free bytes than this, and take them again by themselves once
    /// space is back (default: 1 GiB or 5% of the file system, the larger;
    /// see `src/storage/space.rs`).
    #[arg(long, value_name = "BYTES")]
    pub min_free_bytes: Option<u64>,
    /// More logs on stderr (-v: each recovery and sync, -vv: every request).
    /// The SEGLOG_LOG environment variable (1 or 2) does the same.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Runs the node on stdin and stdout until stdin ends; then syncs, marks a
/// clean shutdown and returns.
pub fn run(args: &NodeArgs) -> Result<(), String> {
    log::init(args.verbose);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    let result = runtime.block_on(async {
        // Pipes, as Maelstrom gives them, are read and written on this
        // thread; anything else goes through tokio's thread pool.
        let (input, output) = (stdio::stdin(), stdio::stdout());
        serve(input, output, args.clone()).await
    });
    // A fallback stdin reader may be blocked in a read that only the
    // process's end interrupts: do not wait for it.
    runtime.shutdown_background();
    result
}

/// Runs the node over `input` and `output` until the input ends and every
/// write it acknowledged is answered: the event loop over input, the
/// groups' events, output and the timer. [`run`] calls it with stdin and
/// stdout; tests call it with in-memory pipes.
pub async fn serve<R, W>(mut input: R, mut output: W, args: NodeArgs) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let out = Outbox::default();
    let mut splitter = Splitter::default();
    let mut read_buf = vec![0u8; lines::READ_BYTES];
    let mut lines = Vec::new();
    // Output being written, and how much of it is out.
    let mut writing: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut output_open = true;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let (life_tx, mut life_rx) = mpsc::unbounded_channel();
    let mut node = Node {
        server: None,
        starting: None,
        stopping: false,
        stop_started: false,
        args,
        out: out.clone(),
        events: events_tx,
        life: life_tx,
    };
    let mut input_open = true;
    // Set once the groups have stopped and the store is closed.
    let mut shutdown_result: Option<Result<(), String>> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if written == writing.len() {
            writing = out.take();
            written = 0;
        }
        let idle = node.server.is_none() && node.starting.is_none();
        if !input_open && idle && written == writing.len() {
            break;
        }
        tokio::select! {
            // Start-up and shutdown first, then the groups' events, then
            // writing, then timers, then new requests: a busy input must
            // not starve the others.
            biased;
            Some(life) = life_rx.recv() => match life {
                Life::Started(started) => node.started(started),
                Life::Stopped => {
                    if let Some(done) = node.server.take() {
                        let closed = done.shut_down().map_err(|e| format!("closing the store: {e}"));
                        if closed.is_ok() {
                            log::info(format_args!("closed cleanly"));
                        }
                        shutdown_result = Some(closed);
                    }
                }
            },
            Some(event) = events_rx.recv() => {
                if let Some(server) = &mut node.server {
                    server.on_event(event);
                }
                // A stop that waited for a heal to end goes on.
                node.stop_if_due();
            },
            result = output.write(&writing[written..]), if output_open && written < writing.len() => {
                match result {
                    Ok(n) if n > 0 => written += n,
                    Ok(_) | Err(_) => {
                        log::warn(format_args!("output closed: {result:?}; replies are dropped"));
                        output_open = false;
                    }
                }
            },
            _ = tick.tick(), if node.server.is_some() && !node.stopping => {
                if let Some(server) = &mut node.server {
                    server.on_tick(Instant::now());
                }
            },
            read = input.read(&mut read_buf), if input_open => {
                match read {
                    Ok(0) | Err(_) => {
                        if let Err(e) = read {
                            log::warn(format_args!("reading input: {e}"));
                        }
                        splitter.finish(&mut lines);
                        input_open = false;
                    }
                    Ok(n) => splitter.feed(&read_buf[..n], &mut lines),
                }
                for item in lines.drain(..) {
                    match item {
                        Input::Line(line) => node.handle_line(&line),
                        Input::TooLong { bytes } => log::warn(format_args!(
                            "skipped an input line of {bytes} bytes, over the limit of {}",
                            lines::LINE_BYTES_MAX
                        )),
                    }
                }
                if !input_open {
                    node.stop();
                }
            },
        }
        if !output_open {
            // Nobody reads us: keep what is written from piling up.
            out.take();
            writing.clear();
            written = 0;
        }
    }
    let _ = output.flush().await;
    shutdown_result.unwrap_or(Ok(()))
}

/// A node's start and stop, reported to the loop.
enum Life {
    /// The server `init` started, and whom to answer.
    Started(Box<(Result<Server, String>, ReplyTo)>),
    /// The groups have stopped: the store can close.
    Stopped,
}

/// What the loop keeps: the server once started, and what starting and
/// stopping it need.
struct Node {
    server: Option<Server>,
    /// The `init` being served while the server starts.
    starting: Option<(String, Vec<String>)>,
    /// Set once the input ended: the groups are stopping.
    stopping: bool,
    /// Set once the groups were told to stop (after a heal in progress
    /// has ended).
    stop_started: bool,
    args: NodeArgs,
    out: Outbox,
    events: mpsc::UnboundedSender<server::Event>,
    life: mpsc::UnboundedSender<Life>,
}

impl Node {
    /// Decodes one line and serves it.
    fn handle_line(&mut self, line: &[u8]) {
        let now = Instant::now();
        let out = self.out.clone();
        let (to, request) = match protocol::parse_line(line) {
            Ok(Incoming::Request { to, request }) => (to, request),
            Ok(Incoming::Reply {
                src,
                in_reply_to,
                reply,
            }) => {
                match &mut self.server {
                    Some(server) => server.on_reply(&src, in_reply_to, reply, now),
                    None => log::warn(format_args!(
                        "ignored a reply from {src} before init: {reply:?}"
                    )),
                }
                return;
            }
            Err(ParseError::Unanswerable(why)) => {
                log::warn(format_args!(
                    "ignored a line that cannot be answered: {why}"
                ));
                return;
            }
            Err(ParseError::Rejected { to, code, text }) => {
                reply_error(&out, &to, code, &text);
                return;
            }
        };
        log::debug(format_args!("{} msg {}: {request:?}", to.src, to.msg_id));
        match (self.server.as_mut(), request) {
            (None, Request::Init { node_id, node_ids }) if self.starting.is_none() => {
                self.start(to, node_id, node_ids);
            }
            (None, Request::Init { .. }) => reply_error(
                &out,
                &to,
                code::TEMPORARILY_UNAVAILABLE,
                "already starting from an earlier init",
            ),
            (Some(running), Request::Init { node_id, node_ids }) => {
                let same = Cluster::new(&node_id, &node_ids).is_ok_and(|c| {
                    c.me() == running.cluster().me() && c.ids() == running.cluster().ids()
                });
                if same {
                    reply_init_ok(&out, &to);
                } else {
                    reply_error(
                        &out,
                        &to,
                        code::MALFORMED_REQUEST,
                        &format!(
                            "already initialised as {} of {:?}",
                            running.cluster().me(),
                            running.cluster().ids()
                        ),
                    );
                }
            }
            (None, _) => reply_error(
                &out,
                &to,
                code::TEMPORARILY_UNAVAILABLE,
                "not initialised yet",
            ),
            (Some(running), request) => running.handle(to, request, now),
        }
    }

    /// Starts the server for `init` in a task; the loop gets it back.
    fn start(&mut self, to: ReplyTo, node_id: String, node_ids: Vec<String>) {
        // Maelstrom always names this node among node_ids; a test that
        // starts a lone node may leave the list empty.
        let node_ids = if node_ids.is_empty() {
            vec![node_id.clone()]
        } else {
            node_ids
        };
        let cluster = match Cluster::new(&node_id, &node_ids) {
            Ok(cluster) => cluster,
            Err(e) => {
                reply_error(
                    &self.out,
                    &to,
                    code::MALFORMED_REQUEST,
                    &format!("init: {e}"),
                );
                return;
            }
        };
        let root = match crate::data_dir::resolve(
            self.args.data_dir.as_deref(),
            crate::data_dir::Default::FreshTemp,
        ) {
            Ok(root) => root,
            Err(e) => {
                let text = format!("init failed: cannot create the data directory: {e}");
                log::warn(format_args!("{text}"));
                reply_error(&self.out, &to, code::TEMPORARILY_UNAVAILABLE, &text);
                return;
            }
        };
        let config = StoreConfig {
            segment_bytes: self.args.segment_bytes,
            ..StoreConfig::default()
        };
        let groups = self.args.groups.unwrap_or(GROUPS_DEFAULT);
        let min_free = self.args.min_free_bytes;
        self.starting = Some((node_id.clone(), node_ids));
        let (out, events, life) = (self.out.clone(), self.events.clone(), self.life.clone());
        tokio::spawn(async move {
            let dir = root.join(&node_id);
            let started = Server::start(cluster, &dir, config, groups, min_free, out, events).await;
            let _ = life.send(Life::Started(Box::new((started, to))));
        });
    }

    fn started(&mut self, started: Box<(Result<Server, String>, ReplyTo)>) {
        self.starting = None;
        let (started, to) = *started;
        match started {
            Ok(server) => {
                self.server = Some(server);
                reply_init_ok(&self.out, &to);
                self.stop_if_due();
            }
            Err(e) => {
                log::warn(format_args!("init failed: {e}"));
                reply_error(
                    &self.out,
                    &to,
                    code::TEMPORARILY_UNAVAILABLE,
                    &format!("init failed: {e}"),
                );
            }
        }
    }

    /// The input ended: stop the groups; the store closes once they have.
    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if let Some(server) = &self.server {
            // A heal in place ends first (called off): it may be starting
            // groups that must be stopped too.
            server.cancel_heal();
        }
        self.stop_if_due();
    }

    /// Stops the groups once the input has ended, the server has started
    /// and no heal is in progress; once.
    fn stop_if_due(&mut self) {
        if !self.stopping || self.stop_started {
            return;
        }
        let Some(server) = &self.server else {
            // Still starting: stopped once started.
            return;
        };
        if server.is_healing() {
            return;
        }
        self.stop_started = true;
        let groups = server.groups();
        let group_commit = server.group_commit();
        let life = self.life.clone();
        tokio::spawn(async move {
            Server::stop_groups(groups, group_commit).await;
            let _ = life.send(Life::Stopped);
        });
    }
}

fn reply_init_ok(out: &Outbox, to: &ReplyTo) {
    out.send(protocol::encode_reply(
        to,
        &ReplyBody::InitOk {
            in_reply_to: to.msg_id,
        },
    ));
}

fn reply_error(out: &Outbox, to: &ReplyTo, code: u32, text: &str) {
    log::debug(format_args!(
        "error {code} to {} msg {}: {text}",
        to.src, to.msg_id
    ));
    out.send(protocol::encode_reply(
        to,
        &ReplyBody::Error {
            in_reply_to: to.msg_id,
            code,
            text,
        },
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the loop over `input`, returning what it wrote.
    async fn run_lines(input: &str) -> String {
        let args = NodeArgs {
            data_dir: Some(std::env::temp_dir().join("seglog-node-unit")),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            groups: None,
            min_free_bytes: None,
            verbose: 0,
        };
        let mut output = Vec::new();
        let _ = serve(input.as_bytes(), &mut output, args).await;
        String::from_utf8(output).expect("text")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn node_ids_must_be_safe_directory_names() {
        for bad in ["", "..", "a/b"] {
            let line = format!(
                "{{\"src\":\"c0\",\"dest\":\"n0\",\"body\":{{\"type\":\"init\",\"msg_id\":1,\"node_id\":{bad:?},\"node_ids\":[{bad:?}]}}}}\n"
            );
            let out = run_lines(&line).await;
            assert!(out.contains("\"code\":12"), "{bad:?}: {out}");
        }
    }
}
