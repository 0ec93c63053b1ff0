//! The Maelstrom node: one event loop over three inputs (request lines,
//! finished sync points, and a timer), serving clients from the store,
//! acknowledging writes only once durable, and working with the other
//! nodes of the cluster as one log (`cluster.md`).
//!
//! # Layout
//! - [`lines`]: request lines cut from the input, reply lines collected for output.
//! - [`stdio`]: stdin and stdout as non-blocking pipes on the loop's thread.
//! - [`fields`]: fields of a message body, decoded and checked against their limits.
//! - [`protocol`]: Maelstrom's envelope, client requests and replies.
//! - [`peer`]: node-to-node messages.
//! - [`poll`]: poll replies built straight from the mapped records.
//! - [`owner`]: the cluster's nodes and which one owns a key.
//! - [`forward`]: sends for keys another node owns, coalesced per owner.
//! - [`replicate`]: records and commits pushed to every peer, and applied there.
//! - [`server`]: the initialised node, tying them together.
//!
//! The loop runs on one tokio task; the group commit
//! ([`crate::storage::group_commit`]) is a thread, since fdatasync blocks. [`serve`] takes its input and output as parameters, so
//! tests can run nodes in-process; [`run`] is what `main` calls with stdin
//! and stdout.

pub mod fields;
pub mod forward;
pub mod lines;
pub mod owner;
pub mod peer;
pub mod poll;
pub mod protocol;
pub mod replicate;
pub mod server;
pub mod stdio;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::log;
use crate::storage::group_commit::Synced;
use crate::storage::store::{SEGMENT_BYTES_DEFAULT, StoreConfig};
use lines::{Input, Outbox, Splitter};
use owner::Cluster;
use protocol::{Incoming, ParseError, ReplyBody, ReplyTo, Request, code};
use server::Server;

/// How often the loop looks at its timers: forward timeouts and the start
/// of replication rounds. Much finer than any of them, coarse enough to
/// cost nothing when idle.
pub const TICK: Duration = Duration::from_millis(5);

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
/// write it acknowledged is answered: the event loop over input, finished
/// sync points, output and the timer. [`run`] calls it with stdin and
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
    // Made at init, with the group commit.
    let mut synced_rx: Option<SyncedReceiver> = None;
    let mut server: Option<Server> = None;
    let mut input_open = true;
    // Set once the group commit has drained and the store is closed.
    let mut shutdown_result: Option<Result<(), String>> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if written == writing.len() {
            writing = out.take();
            written = 0;
        }
        if !input_open && server.is_none() && written == writing.len() {
            break;
        }
        tokio::select! {
            // Answers first, then writing them, then timers, then new
            // requests: a busy input must not starve the others.
            biased;
            synced = recv_synced(&mut synced_rx), if server.is_some() => match (synced, &mut server) {
                (Some(synced), Some(running)) => running.on_synced(synced, Instant::now()),
                _ => {
                    // The group commit is done: close the store, then write what is left.
                    if let Some(done) = server.take() {
                        let closed = done.shut_down().map_err(|e| format!("closing the store: {e}"));
                        if closed.is_ok() {
                            log::info(format_args!("closed cleanly"));
                        }
                        shutdown_result = Some(closed);
                    }
                }
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
            _ = tick.tick(), if input_open && server.is_some() => {
                if let Some(server) = &mut server {
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
                        Input::Line(line) => {
                            handle_line(&line, &mut server, &mut synced_rx, &args, &out);
                        }
                        Input::TooLong { bytes } => log::warn(format_args!(
                            "skipped an input line of {bytes} bytes, over the limit of {}",
                            lines::LINE_BYTES_MAX
                        )),
                    }
                }
                if !input_open && let Some(server) = &server {
                    // The group commit drains what waits; the loop ends
                    // when its channel closes.
                    server.close_group_commit();
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

type SyncedReceiver = mpsc::UnboundedReceiver<Synced<server::Pending>>;

/// The next batch from the group commit; never ready before there is one.
async fn recv_synced(synced_rx: &mut Option<SyncedReceiver>) -> Option<Synced<server::Pending>> {
    match synced_rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Decodes one line and serves it.
fn handle_line(
    line: &[u8],
    server: &mut Option<Server>,
    synced_rx: &mut Option<SyncedReceiver>,
    args: &NodeArgs,
    out: &Outbox,
) {
    let now = Instant::now();
    let (to, request) = match protocol::parse_line(line) {
        Ok(Incoming::Request { to, request }) => (to, request),
        Ok(Incoming::Reply {
            src,
            in_reply_to,
            reply,
        }) => {
            match server {
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
            reply_error(out, &to, code, &text);
            return;
        }
    };
    log::debug(format_args!("{} msg {}: {request:?}", to.src, to.msg_id));
    match (server.as_mut(), request) {
        (None, Request::Init { node_id, node_ids }) => {
            let (synced_tx, rx) = mpsc::unbounded_channel();
            match start(args, &node_id, &node_ids, out, synced_tx) {
                Ok(started) => {
                    *server = Some(started);
                    *synced_rx = Some(rx);
                    reply_init_ok(out, &to);
                }
                Err(e) => {
                    log::warn(format_args!("init failed: {e}"));
                    reply_error(
                        out,
                        &to,
                        code::TEMPORARILY_UNAVAILABLE,
                        &format!("init failed: {e}"),
                    );
                }
            }
        }
        (Some(running), Request::Init { node_id, node_ids }) => {
            let same = Cluster::new(&node_id, &node_ids).is_ok_and(|c| {
                c.me() == running.cluster().me() && c.ids() == running.cluster().ids()
            });
            if same {
                reply_init_ok(out, &to);
            } else {
                reply_error(
                    out,
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
            out,
            &to,
            code::TEMPORARILY_UNAVAILABLE,
            "not initialised yet",
        ),
        (Some(running), request) => running.handle(to, request, now),
    }
}

/// Opens the store for `node_id` and starts serving.
fn start(
    args: &NodeArgs,
    node_id: &str,
    node_ids: &[String],
    out: &Outbox,
    synced_tx: mpsc::UnboundedSender<Synced<server::Pending>>,
) -> Result<Server, String> {
    // Maelstrom always names this node among node_ids; a test that starts a
    // lone node may leave the list empty.
    let node_ids = if node_ids.is_empty() {
        vec![node_id.to_string()]
    } else {
        node_ids.to_vec()
    };
    let cluster = Cluster::new(node_id, &node_ids)?;
    let root = crate::data_dir::resolve(
        args.data_dir.as_deref(),
        crate::data_dir::Default::FreshTemp,
    )
    .map_err(|e| format!("cannot create the data directory: {e}"))?;
    let config = StoreConfig {
        segment_bytes: args.segment_bytes,
        ..StoreConfig::default()
    };
    Server::start(cluster, &root.join(node_id), config, out.clone(), synced_tx)
        .map_err(|e| e.to_string())
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

    #[test]
    fn node_ids_must_be_safe_directory_names() {
        let args = NodeArgs {
            data_dir: Some(PathBuf::from("/nonexistent")),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            verbose: 0,
        };
        let out = Outbox::default();
        for bad in ["", "..", "a/b", "n0\0"] {
            let (tx, _) = mpsc::unbounded_channel();
            assert!(
                start(&args, bad, &[bad.to_string()], &out, tx).is_err(),
                "{bad:?}"
            );
        }
    }
}
