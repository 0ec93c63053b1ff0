//! The final phase: read every key from offset 0 to its end and list every committed offset.
//!
//! These operations go into the history like any other (as [`FINAL_READER_PROCESS`]), so the
//! poll checks apply to them too; the assembled logs become the [`FinalRead`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::connection::Connection;
use super::history::{FINAL_READER_PROCESS, FinalRead, Outcome, Request, Response};
use super::recorder::Recorder;

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
            let Response::Poll { msgs } = perform_ok(connection, recorder, request)? else {
                unreachable!("perform_ok checks the response kind");
            };
            positions.retain(|key, position| {
                let Some(records) = msgs.get(key) else {
                    return false;
                };
                let log: &mut Vec<_> = logs.entry(key.clone()).or_default();
                log.extend(records.iter().filter(|&&(offset, _)| offset >= *position));
                let next = records.last().map_or(*position, |&(offset, _)| offset + 1);
                // A poll that does not move forward ends this key; the checker reports why.
                let advanced = next > *position;
                *position = next;
                advanced
            });
        }
    }
    Ok(FinalRead { logs })
}

/// Lists the committed offsets of all `keys`.
pub fn list_all(
    connection: &Connection,
    recorder: &Recorder,
    keys: &[String],
) -> Result<BTreeMap<String, u64>, String> {
    let mut committed = BTreeMap::new();
    for batch in keys.chunks(KEYS_PER_REQUEST_MAX) {
        let request = Request::List {
            keys: batch.to_vec(),
        };
        let Response::List { offsets } = perform_ok(connection, recorder, request)? else {
            unreachable!("perform_ok checks the response kind");
        };
        committed.extend(offsets);
    }
    Ok(committed)
}

/// Performs `request`, retrying failures, until it succeeds with a response of its own kind.
fn perform_ok(
    connection: &Connection,
    recorder: &Recorder,
    request: Request,
) -> Result<Response, String> {
    let mut last = String::new();
    for _ in 0..ATTEMPTS_MAX {
        match recorder.perform(
            connection,
            FINAL_READER_PROCESS,
            request.clone(),
            FINAL_TIMEOUT,
        ) {
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
