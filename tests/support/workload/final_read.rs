//! The final phase: read every key from offset 0 to its end and list every committed offset.
//!
//! These operations go into the history like any other (a lone node's as
//! [`FINAL_READER_PROCESS`], a cluster client's as its own process), so the poll checks apply to
//! them too; the assembled logs become the [`FinalRead`].
//!
//! A lone node is read once to its end: it has nothing to catch up on. A cluster client instead
//! polls, like Jepsen's final polls, until it has read past the highest offset known for every key
//! or Maelstrom's clip of 10 s runs out, since its node may still be receiving replicated records.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use super::client::REQUEST_TIMEOUT;
use super::connection::Connection;
use super::history::{FINAL_READER_PROCESS, FinalRead, Outcome, Record, Request, Response};
use super::recorder::Recorder;
use super::supervisor::Supervisor;

/// Keys per final poll or listing: bounds the reply size while keeping the phase short.
const KEYS_PER_REQUEST_MAX: usize = 100;

/// The final phase is not racing a nemesis, so it allows Maelstrom's final-read clip of 10 s per
/// request.
const FINAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Failed or unknown final requests retried before the phase gives up.
const ATTEMPTS_MAX: u32 = 3;

/// Upper bound on polls for one batch of keys; each poll either advances or finishes every key
/// still being read, so only a node looping on the same answer could reach it.
const POLLS_PER_BATCH_MAX: u32 = 100_000;

/// Maelstrom clips its final phase to 10 s: a cluster that has not caught up by then has lost
/// the records it is missing, as far as the checker can tell.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// Pause after a round of catch-up polls that brought nothing new, so a lagging node is asked
/// again soon without being flooded; Jepsen staggers its final polls by about 200 ms.
const CATCH_UP_PAUSE: Duration = Duration::from_millis(100);

/// Reads each of `keys` from offset 0 until a poll returns nothing more for it.
pub fn read_all(
    connection: &Connection,
    recorder: &Recorder,
    keys: &[String],
) -> Result<FinalRead, String> {
    let mut logs = BTreeMap::new();
    for batch in keys.chunks(KEYS_PER_REQUEST_MAX) {
        let mut positions: BTreeMap<String, u64> =
            batch.iter().map(|key| (key.clone(), 0)).collect();
        let mut polls = 0;
        while !positions.is_empty() {
            polls += 1;
            if polls > POLLS_PER_BATCH_MAX {
                return Err(format!(
                    "final read did not finish within {POLLS_PER_BATCH_MAX} polls"
                ));
            }
            let request = Request::Poll {
                offsets: positions.clone(),
            };
            let Response::Poll { msgs } =
                perform_ok(connection, recorder, FINAL_READER_PROCESS, request)?
            else {
                unreachable!("perform_ok checks the response kind");
            };
            positions.retain(|key, position| {
                let Some(records) = msgs.get(key) else {
                    return false;
                };
                // A poll that does not move forward ends this key; the checker reports why.
                absorb(&mut logs, key, position, records)
            });
        }
    }
    Ok(FinalRead { logs })
}

/// Appends the records of one key's poll at or past `position` to its log and moves `position`
/// past them; false if the poll brought nothing new.
fn absorb(
    logs: &mut BTreeMap<String, Vec<Record>>,
    key: &str,
    position: &mut u64,
    records: &[Record],
) -> bool {
    let log = logs.entry(key.to_owned()).or_default();
    log.extend(records.iter().filter(|&&(offset, _)| offset >= *position));
    let next = records.last().map_or(*position, |&(offset, _)| offset + 1);
    let advanced = next > *position;
    *position = next;
    advanced
}

/// A cluster client's final read: polls `keys` from offset 0 through `node` until each key has
/// been read past its offset in `targets` and a poll returns nothing more for it, or until
/// `deadline`. Failed polls are retried until then too. Returns what was read; what is missing is
/// for the checker to report.
pub fn catch_up(
    supervisor: &Supervisor,
    node: usize,
    recorder: &Recorder,
    process: u32,
    keys: &[String],
    targets: &BTreeMap<String, u64>,
    deadline: Instant,
) -> FinalRead {
    let mut logs = BTreeMap::new();
    let mut positions: BTreeMap<String, u64> = keys.iter().map(|key| (key.clone(), 0)).collect();
    while !positions.is_empty() {
        let mut progressed = false;
        let batches: Vec<Vec<String>> = positions
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .chunks(KEYS_PER_REQUEST_MAX)
            .map(<[String]>::to_vec)
            .collect();
        for batch in batches {
            let Some(timeout) = deadline
                .checked_duration_since(Instant::now())
                .map(|left| left.min(REQUEST_TIMEOUT))
            else {
                return FinalRead { logs };
            };
            let Ok(connection) = supervisor.connection(node) else {
                return FinalRead { logs };
            };
            let offsets = batch
                .iter()
                .map(|key| (key.clone(), positions[key]))
                .collect();
            let request = Request::Poll { offsets };
            let Some(Outcome::Ok {
                response: Response::Poll { msgs },
            }) = recorder.perform(&connection, process, request, timeout)
            else {
                continue;
            };
            for key in &batch {
                let Some(position) = positions.get_mut(key) else {
                    continue;
                };
                match msgs.get(key) {
                    Some(records) => progressed |= absorb(&mut logs, key, position, records),
                    // Nothing more here; done once past every offset known to exist.
                    None => {
                        if targets.get(key).is_none_or(|&target| *position > target) {
                            positions.remove(key);
                        }
                    }
                }
            }
        }
        if !progressed && !positions.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(CATCH_UP_PAUSE.min(left));
        }
    }
    FinalRead { logs }
}

/// Lists the committed offsets of all `keys`, as `process`.
pub fn list_all(
    connection: &Connection,
    recorder: &Recorder,
    process: u32,
    keys: &[String],
) -> Result<BTreeMap<String, u64>, String> {
    let mut committed = BTreeMap::new();
    for batch in keys.chunks(KEYS_PER_REQUEST_MAX) {
        let request = Request::List {
            keys: batch.to_vec(),
        };
        let Response::List { offsets } = perform_ok(connection, recorder, process, request)? else {
            unreachable!("perform_ok checks the response kind");
        };
        committed.extend(offsets);
    }
    Ok(committed)
}

/// Performs `request` as `process`, retrying failures, until it succeeds with a response of its
/// own kind.
fn perform_ok(
    connection: &Connection,
    recorder: &Recorder,
    process: u32,
    request: Request,
) -> Result<Response, String> {
    let mut last = String::new();
    for _ in 0..ATTEMPTS_MAX {
        match recorder.perform(connection, process, request.clone(), FINAL_TIMEOUT) {
            Some(Outcome::Ok { response }) => return Ok(response),
            Some(other) => last = format!("{other:?}"),
            None => return Err(format!("final {:?} not sent: node is gone", request.kind())),
        }
    }
    Err(format!(
        "final {:?} failed {ATTEMPTS_MAX} times, last: {last}",
        request.kind()
    ))
}
