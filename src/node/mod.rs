//! The Maelstrom node: reads requests from stdin, serves them from the store,
//! and writes replies to stdout, acknowledging writes only once durable.
//!
//! Two threads share the store. The main thread parses each line and serves
//! it at once: a poll or a list reads durable state and is answered
//! immediately; a send or a commit is buffered in the store and handed to
//! the syncer. The syncer runs group commit: it takes every write waiting,
//! makes them durable with one sync point (fdatasyncs run without the store
//! lock, so polls go on meanwhile), then answers them; writes that arrive
//! during a sync wait for the next one. Replies therefore go out in any
//! order, matched by `in_reply_to`.

pub mod protocol;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use serde_json::value::RawValue;

use crate::log;
use crate::storage::error::Error;
use crate::storage::store::{SEGMENT_BYTES_DEFAULT, Store, StoreConfig};
use protocol::{ParseError, ReplyBody, ReplyTo, Request, code};

/// Longest request line read. A send of the largest message
/// ([`crate::storage::format::MESSAGE_BYTES_MAX`]) with JSON escaping fits with room to
/// spare; a longer line is skipped without being held in memory.
pub const LINE_BYTES_MAX: usize = 4 << 20;

/// Records returned per key by one poll. The workload writes at most 16 per
/// key, so this never cuts its final catch-up read short, and it bounds the
/// work one poll of a long log can ask for.
pub const POLL_RECORDS_PER_KEY_MAX: usize = 1024;

/// Message bytes in one poll reply. 1 MiB lets the final read fetch hundreds
/// of short keys per round trip while keeping a reply line a size that a
/// JSON parser on the other end handles quickly.
pub const POLL_REPLY_BYTES_MAX: usize = 1 << 20;

/// Options of the node (the default command).
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Keep data in DIR/<node_id>/; a restarted node with the same DIR
    /// recovers and carries on. Without it, each process uses a fresh
    /// directory under the system temp dir and logs its path to stderr.
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

/// Writes that wait for the next sync point.
#[derive(Default)]
struct Waiting {
    /// Sends appended to the store, with the offset each got.
    sends: Vec<(ReplyTo, u64)>,
    /// Commits recorded in the store.
    commits: Vec<ReplyTo>,
    /// Set at end of input: the syncer drains what is waiting and exits.
    closing: bool,
}

/// State shared by the main thread and the syncer.
struct Shared {
    store: Mutex<Store>,
    waiting: Mutex<Waiting>,
    /// Signalled when a write is added to `waiting` or the node closes.
    wake: Condvar,
}

/// Locks a mutex, going on if a thread panicked while holding it: the data it
/// guards is only ever changed through methods that leave it consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes one reply line to stdout. Lines are written whole under stdout's
/// lock, so replies from the two threads never interleave.
fn reply(to: &ReplyTo, body: &ReplyBody<'_>) {
    let line = protocol::encode_reply(to, body);
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
        log::warn(format_args!("cannot write a reply to stdout: {e}"));
    }
}

fn reply_error(to: &ReplyTo, code: u32, text: &str) {
    log::debug(format_args!(
        "error {code} to {} msg {}: {text}",
        to.src, to.msg_id
    ));
    reply(
        to,
        &ReplyBody::Error {
            in_reply_to: to.msg_id,
            code,
            text,
        },
    );
}

/// Runs the node until stdin ends; then syncs, marks a clean shutdown and returns.
pub fn run(args: &NodeArgs) -> Result<(), String> {
    log::init(args.verbose);
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    let mut node: Option<(String, Arc<Shared>, thread::JoinHandle<()>)> = None;
    loop {
        match read_line(&mut input, &mut line, LINE_BYTES_MAX) {
            Ok(Line::Complete) => {}
            Ok(Line::TooLong { bytes }) => {
                log::warn(format_args!(
                    "skipped a request line of {bytes} bytes, over the limit of {LINE_BYTES_MAX}"
                ));
                continue;
            }
            Ok(Line::End) => break,
            Err(e) => return Err(format!("reading stdin: {e}")),
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (to, request) = match protocol::parse_line(&line) {
            Ok(parsed) => parsed,
            Err(ParseError::Unanswerable(why)) => {
                log::warn(format_args!(
                    "ignored a line that cannot be answered: {why}"
                ));
                continue;
            }
            Err(ParseError::Rejected { to, code, text }) => {
                reply_error(&to, code, &text);
                continue;
            }
        };
        log::debug(format_args!("{} msg {}: {request:?}", to.src, to.msg_id));
        match (&node, request) {
            (None, Request::Init { node_id }) => match start(args, &node_id) {
                Ok((shared, syncer)) => {
                    node = Some((node_id, shared, syncer));
                    reply(
                        &to,
                        &ReplyBody::InitOk {
                            in_reply_to: to.msg_id,
                        },
                    );
                }
                Err(e) => {
                    log::warn(format_args!("init failed: {e}"));
                    reply_error(
                        &to,
                        code::TEMPORARILY_UNAVAILABLE,
                        &format!("init failed: {e}"),
                    );
                }
            },
            (Some((id, ..)), Request::Init { node_id }) => {
                if *id == node_id {
                    reply(
                        &to,
                        &ReplyBody::InitOk {
                            in_reply_to: to.msg_id,
                        },
                    );
                } else {
                    reply_error(
                        &to,
                        code::MALFORMED_REQUEST,
                        &format!("already initialised as {id}"),
                    );
                }
            }
            (None, _) => reply_error(&to, code::TEMPORARILY_UNAVAILABLE, "not initialised yet"),
            (Some((_, shared, _)), request) => serve(shared, to, request),
        }
    }
    if let Some((_, shared, syncer)) = node {
        lock(&shared.waiting).closing = true;
        shared.wake.notify_one();
        syncer
            .join()
            .map_err(|_| "the syncer thread panicked".to_string())?;
        let shared = Arc::try_unwrap(shared)
            .map_err(|_| "the store is still shared after the syncer ended".to_string())?;
        let store = shared
            .store
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        store
            .close()
            .map_err(|e| format!("closing the store: {e}"))?;
        log::info(format_args!("closed cleanly"));
    }
    Ok(())
}

/// Opens the store for `node_id` and starts the syncer.
fn start(args: &NodeArgs, node_id: &str) -> Result<(Arc<Shared>, thread::JoinHandle<()>), String> {
    let valid_id = !node_id.is_empty()
        && node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_id {
        return Err(format!(
            "node id {node_id:?} is not a safe directory name ([A-Za-z0-9_-]+)"
        ));
    }
    let root = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => fresh_temp_dir()?,
    };
    let dir = root.join(node_id);
    let config = StoreConfig {
        segment_bytes: args.segment_bytes,
        ..StoreConfig::default()
    };
    let store = Store::open(&dir, config).map_err(|e| e.to_string())?;
    log::info(format_args!(
        "store open at {} ({} shutdown, {} committed keys)",
        dir.display(),
        if store.opened_clean() {
            "clean"
        } else {
            "unclean"
        },
        store.committed_count()
    ));
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        waiting: Mutex::new(Waiting::default()),
        wake: Condvar::new(),
    });
    let syncer_shared = Arc::clone(&shared);
    let syncer = thread::Builder::new()
        .name("syncer".into())
        .spawn(move || sync_loop(&syncer_shared))
        .map_err(|e| format!("cannot start the syncer thread: {e}"))?;
    Ok((shared, syncer))
}

/// A new directory under the system temp dir, unique to this process:
/// Maelstrom starts every node of every run in the same working directory,
/// so a fixed default would mix runs.
fn fresh_temp_dir() -> Result<PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("seglog-{}-{nanos}", std::process::id()));
    crate::storage::fsutil::create_dir_all_durably(&dir).map_err(|e| e.to_string())?;
    eprintln!(
        "seglog: no --data-dir given; keeping data in {}",
        dir.display()
    );
    Ok(dir)
}

/// Serves one request after init.
fn serve(shared: &Shared, to: ReplyTo, request: Request) {
    match request {
        Request::Init { .. } => unreachable!("init is handled by the caller"),
        Request::Send { key, msg } => {
            let appended = lock(&shared.store).append(&key, &msg);
            match appended {
                Ok(offset) => {
                    lock(&shared.waiting).sends.push((to, offset));
                    shared.wake.notify_one();
                }
                // The record was not taken: a definite error is the truth.
                Err(e) => reply_error(&to, write_error_code(&e), &e.to_string()),
            }
        }
        Request::CommitOffsets { offsets } => {
            let mut store = lock(&shared.store);
            if store.is_poisoned() {
                drop(store);
                reply_error(
                    &to,
                    code::TEMPORARILY_UNAVAILABLE,
                    &Error::Poisoned.to_string(),
                );
                return;
            }
            for (key, offset) in &offsets {
                // Keys were checked by the parser and the store is not
                // poisoned: commit cannot fail half-way.
                if let Err(e) = store.commit(key, *offset) {
                    unreachable!("commit of a checked key failed: {e}");
                }
            }
            drop(store);
            lock(&shared.waiting).commits.push(to);
            shared.wake.notify_one();
        }
        Request::Poll { offsets } => {
            let msgs = poll(&mut lock(&shared.store), &offsets);
            match serde_json::from_str::<&RawValue>(&msgs) {
                Ok(msgs) => reply(
                    &to,
                    &ReplyBody::PollOk {
                        in_reply_to: to.msg_id,
                        msgs,
                    },
                ),
                Err(e) => {
                    log::warn(format_args!("a stored message is not JSON: {e}"));
                    reply_error(&to, code::CRASH, "a stored message is not JSON");
                }
            }
        }
        Request::ListCommittedOffsets { keys } => {
            let store = lock(&shared.store);
            let offsets: BTreeMap<&str, u64> = keys
                .iter()
                .filter_map(|key| Some((key.as_str(), store.committed(key)?)))
                .collect();
            drop(store);
            reply(
                &to,
                &ReplyBody::ListCommittedOffsetsOk {
                    in_reply_to: to.msg_id,
                    offsets,
                },
            );
        }
    }
}

/// The error code for a write the store refused before taking it.
fn write_error_code(error: &Error) -> u32 {
    match error {
        Error::KeyTooLong { .. } | Error::BadMessageSize { .. } => code::MALFORMED_REQUEST,
        _ => code::TEMPORARILY_UNAVAILABLE,
    }
}

/// Reads the durable records each key has at or after its offset, within
/// the poll limits, and returns the `msgs` object as JSON text. Keys with no
/// records are left out (an empty list breaks Maelstrom's checker).
fn poll(store: &mut Store, offsets: &[(String, u64)]) -> String {
    let mut msgs = String::from("{");
    let mut budget = POLL_REPLY_BYTES_MAX;
    for (key, from) in offsets {
        if budget == 0 {
            break;
        }
        let mut records = String::new();
        let mut count = 0;
        let result = store.read(key, *from, &mut |offset, payload| {
            let Ok(text) = std::str::from_utf8(payload) else {
                return false;
            };
            // Always take one record, so a poll of one huge message progresses.
            if count > 0 && text.len() > budget {
                budget = 0;
                return false;
            }
            budget = budget.saturating_sub(text.len());
            if count > 0 {
                records.push(',');
            }
            let _ = write!(records, "[{offset},{text}]");
            count += 1;
            count < POLL_RECORDS_PER_KEY_MAX && budget > 0
        });
        if let Err(e) = result {
            log::warn(format_args!("poll of key {key:?} stopped: {e}"));
        }
        if count > 0 {
            if msgs.len() > 1 {
                msgs.push(',');
            }
            msgs.push_str(&serde_json::to_string(key).expect("strings serialize"));
            msgs.push_str(":[");
            msgs.push_str(&records);
            msgs.push(']');
        }
    }
    msgs.push('}');
    msgs
}

/// The syncer: group commit until the node closes.
fn sync_loop(shared: &Shared) {
    loop {
        let batch = {
            let mut waiting = lock(&shared.waiting);
            while waiting.sends.is_empty() && waiting.commits.is_empty() && !waiting.closing {
                waiting = shared
                    .wake
                    .wait(waiting)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if waiting.sends.is_empty() && waiting.commits.is_empty() {
                return;
            }
            std::mem::take(&mut *waiting)
        };
        let closing = batch.closing;
        let result = sync_point(shared);
        for (to, offset) in batch.sends {
            match &result {
                Ok(()) => reply(
                    &to,
                    &ReplyBody::SendOk {
                        in_reply_to: to.msg_id,
                        offset,
                    },
                ),
                Err(e) => reply_error(&to, code::CRASH, &format!("send may not be durable: {e}")),
            }
        }
        for to in batch.commits {
            match &result {
                Ok(()) => reply(
                    &to,
                    &ReplyBody::CommitOffsetsOk {
                        in_reply_to: to.msg_id,
                    },
                ),
                Err(e) => reply_error(&to, code::CRASH, &format!("commit may not be durable: {e}")),
            }
        }
        if closing {
            lock(&shared.waiting).closing = true;
        }
    }
}

/// One sync point: write buffers under the lock, fdatasync without it,
/// publish under it again.
fn sync_point(shared: &Shared) -> Result<(), Error> {
    let plan = lock(&shared.store).prepare_sync()?;
    let started = std::time::Instant::now();
    let executed = plan.execute();
    log::info(format_args!(
        "sync of {} keys took {:?}",
        plan.key_count(),
        started.elapsed()
    ));
    lock(&shared.store).complete_sync(plan, executed)
}

/// How reading one line ended.
enum Line {
    Complete,
    TooLong { bytes: usize },
    End,
}

/// Reads one line (without its newline) into `line`, holding at most `max`
/// bytes: the rest of a longer line is read and dropped.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    line.clear();
    let mut total = 0;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if total == 0 {
                Line::End
            } else if total > max {
                Line::TooLong { bytes: total }
            } else {
                Line::Complete
            });
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        total += part.len();
        if total <= max {
            line.extend_from_slice(part);
        } else {
            line.clear();
        }
        let found_newline = done > part.len();
        input.consume(done);
        if found_newline {
            return Ok(if total > max {
                Line::TooLong { bytes: total }
            } else {
                Line::Complete
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_and_the_next_is_read() {
        let mut input = io::Cursor::new(b"0123456789\nabc\nxyz".to_vec());
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut line, 5),
            Ok(Line::TooLong { bytes: 10 })
        ));
        assert!(matches!(
            read_line(&mut input, &mut line, 5),
            Ok(Line::Complete)
        ));
        assert_eq!(line, b"abc");
        assert!(matches!(
            read_line(&mut input, &mut line, 5),
            Ok(Line::Complete)
        ));
        assert_eq!(line, b"xyz");
        assert!(matches!(read_line(&mut input, &mut line, 5), Ok(Line::End)));
    }

    #[test]
    fn data_dir_path_is_unused_until_init() {
        // The node id becomes one path component; anything else is refused.
        let args = NodeArgs {
            data_dir: Some(PathBuf::from("/nonexistent")),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            verbose: 0,
        };
        for bad in ["", "..", "a/b", "n0\0"] {
            assert!(start(&args, bad).is_err(), "{bad:?}");
        }
    }
}
