//! What the nemesis did and when, in run time, written to a kept run's `report.txt` so a failure
//! can be lined up with the history and the node logs.

use std::fmt::Display;
use std::sync::Mutex;
use std::time::Instant;

use super::connection::lock;

pub struct Timeline {
    /// Time zero of the run, the same as the history's.
    start: Instant,
    /// `12.345s kill n1`, in the order they happened.
    events: Mutex<Vec<String>>,
}

impl Timeline {
    pub fn new(start: Instant) -> Self {
        Timeline {
            start,
            events: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, event: impl Display) {
        let at = self.start.elapsed().as_secs_f64();
        lock(&self.events).push(format!("{at:.3}s {event}"));
    }

    pub fn events(&self) -> Vec<String> {
        lock(&self.events).clone()
    }
}
