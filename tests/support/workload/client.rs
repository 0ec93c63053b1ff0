//! One workload client, behaving like a Maelstrom kafka client pinned to one node.
//!
//! It sends unique values to the rotating keys, polls the keys it is assigned from its own
//! positions and commits what each poll returned, and now and then takes a new assignment,
//! starting new keys from their committed offsets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::history::{Outcome, Request, Response};
use super::keys::KeyPool;
use super::recorder::Recorder;
use super::supervisor::Supervisor;

/// Maelstrom's client timeout: a request unanswered this long ends as unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Share of steps that send, in percent.
const SEND_PERCENT: u32 = 50;

/// Share of steps that poll (and then commit), in percent; the remaining steps assign.
const POLL_PERCENT: u32 = 42;

/// Keys one client follows at a time: enough that polls span several keys.
const ASSIGNED_KEYS_MAX: usize = 6;

/// An assign picks among this many newest keys, so clients read keys that are still being
/// written as well as recently retired ones.
const ASSIGN_CANDIDATES: usize = 2 * super::keys::ACTIVE_KEYS;

/// What a client shares with the rest of the run.
pub struct ClientContext {
    /// Where sends get their key and unique value.
    pub keys: Arc<KeyPool>,
    /// The nodes, this client's waited for while it is down.
    pub supervisor: Arc<Supervisor>,
    /// The node this client talks to, for the whole run, as a Maelstrom process is pinned to one.
    pub node: usize,
    /// The history every operation is appended to.
    pub recorder: Arc<Recorder>,
    /// Minimum time between this client's steps, so the run's rate is bounded; `None` runs the
    /// client flat out.
    pub step_interval: Option<Duration>,
}

pub struct Client {
    /// This client's number in the history.
    process: u32,
    /// Seeded from the run's seed, so a seed replays the client's choices.
    rng: StdRng,
    context: ClientContext,
    /// Next offset to poll, per assigned key.
    positions: BTreeMap<String, u64>,
}

impl Client {
    pub fn new(process: u32, rng: StdRng, context: ClientContext) -> Self {
        Client {
            process,
            rng,
            context,
            positions: BTreeMap::new(),
        }
    }

    /// Runs steps until the workload ends, waiting out restarts.
    pub fn run(mut self) {
        let mut next_step_at = Instant::now();
        loop {
            if let Some(interval) = self.context.step_interval {
                let now = Instant::now();
                // A client that fell behind (the node was down) resumes at the rate, not in a burst.
                next_step_at = next_step_at.max(now);
                thread::sleep(next_step_at - now);
                next_step_at += interval;
            }
            if self.context.supervisor.wait_up(self.context.node).is_none() {
                return;
            }
            self.step();
        }
    }

    fn step(&mut self) {
        let roll = self.rng.gen_range(0..100);
        if roll < SEND_PERCENT {
            self.send();
        } else if roll < SEND_PERCENT + POLL_PERCENT && !self.positions.is_empty() {
            self.poll_and_commit();
        } else {
            self.assign();
        }
    }

    /// Performs one request against the node if it is up; `None` if it was not sent.
    fn perform(&self, request: Request) -> Option<Outcome> {
        let connection = self.context.supervisor.wait_up(self.context.node)?;
        self.context
            .recorder
            .perform(&connection, self.process, request, REQUEST_TIMEOUT)
    }

    fn send(&mut self) {
        let (key, value) = self.context.keys.next_send(&mut self.rng);
        self.perform(Request::Send { key, value });
    }

    /// Polls from the client's positions, advances them past what came back, and commits the
    /// highest offset seen per key, as Maelstrom's clients do after every poll.
    fn poll_and_commit(&mut self) {
        let request = Request::Poll {
            offsets: self.positions.clone(),
        };
        let Some(Outcome::Ok {
            response: Response::Poll { msgs },
        }) = self.perform(request)
        else {
            return;
        };
        let mut highest = BTreeMap::new();
        for (key, records) in msgs {
            let Some(&(last, _)) = records.last() else {
                continue;
            };
            if let Some(position) = self.positions.get_mut(&key) {
                *position = (*position).max(last + 1);
            }
            highest.insert(key, last);
        }
        if !highest.is_empty() {
            self.perform(Request::Commit { offsets: highest });
        }
    }

    /// Takes a new set of keys. Keys kept from the old set keep their positions; new ones start
    /// after their committed offset (committed means processed up to and including it), else at 0.
    fn assign(&mut self) {
        let candidates = self.context.keys.recent(ASSIGN_CANDIDATES);
        let count = self.rng.gen_range(1..=ASSIGNED_KEYS_MAX);
        let keys: Vec<String> = candidates
            .choose_multiple(&mut self.rng, count)
            .cloned()
            .collect();
        let committed = match self.perform(Request::List { keys: keys.clone() }) {
            Some(Outcome::Ok {
                response: Response::List { offsets },
            }) => offsets,
            _ => BTreeMap::new(),
        };
        let positions = keys
            .into_iter()
            .map(|key| {
                let position = self
                    .positions
                    .get(&key)
                    .copied()
                    .or_else(|| committed.get(&key).map(|offset| offset + 1))
                    .unwrap_or(0);
                (key, position)
            })
            .collect();
        self.positions = positions;
    }
}
