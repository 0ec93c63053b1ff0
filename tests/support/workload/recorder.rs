//! Performs operations against the node and records them into the history as they complete.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::connection::{CallError, Connection, lock};
use super::history::{FINAL_READER_PROCESS, Operation, Outcome, Request};
use super::protocol;

/// The shared, growing history of one run.
pub struct Recorder {
    /// Time zero of the run; history times are nanoseconds since it.
    start: Instant,
    operations: Mutex<Vec<Operation>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Recorder {
            start,
            operations: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` as `process` and records how it ended.
    ///
    /// Returns `None`, recording nothing, when the request was never written (the node was
    /// already gone): such an operation did not happen.
    pub fn perform(
        &self,
        connection: &Connection,
        process: u32,
        request: Request,
        timeout: Duration,
    ) -> Option<Outcome> {
        let src = client_name(process);
        let invoke_ns = self.nanos(Instant::now());
        let result = connection.call(&src, protocol::request_body(&request), timeout);
        let (outcome, completed_at) = match result {
            Ok(reply) => (
                protocol::decode_reply(&request, &reply.body),
                reply.received_at,
            ),
            Err(CallError::NotSent) => return None,
            Err(CallError::WriteFailed(e)) => {
                (unknown(format!("write failed: {e}")), Instant::now())
            }
            Err(CallError::Died) => (unknown("node died".to_owned()), Instant::now()),
            Err(CallError::Timeout) => (
                unknown(format!("no reply within {timeout:?}")),
                Instant::now(),
            ),
        };
        let complete_ns = self.nanos(completed_at);
        let mut operations = lock(&self.operations);
        let index = operations.len();
        operations.push(Operation {
            index,
            process,
            invoke_ns,
            complete_ns,
            request,
            outcome: outcome.clone(),
        });
        Some(outcome)
    }

    /// Now, in history nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.nanos(Instant::now())
    }

    /// The history so far.
    pub fn history(&self) -> Vec<Operation> {
        lock(&self.operations).clone()
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Maelstrom-style client names: `c0` is init's, clients are `c1`, `c2`, ...
fn client_name(process: u32) -> String {
    if process == FINAL_READER_PROCESS {
        "c-final".to_owned()
    } else {
        format!("c{}", u64::from(process) + 1)
    }
}

fn unknown(reason: String) -> Outcome {
    Outcome::Unknown { reason }
}
