//! The rotating key set clients send to, and the source of unique values.
//!
//! Maelstrom's kafka workload writes at most 16 messages per key with about 10 keys active at
//! once, so a run produces many short logs. Unique values are what let the checker tell every
//! message apart.

use std::sync::Mutex;

use rand::Rng;

use super::connection::lock;

/// Keys accepting sends at any moment (Maelstrom keeps about this many).
pub const ACTIVE_KEYS: usize = 10;

/// Sends per key before it retires (Maelstrom's `max-writes-per-key`).
pub const SENDS_PER_KEY_MAX: u32 = 16;

struct ActiveKey {
    /// `k<n>`, numbered in creation order.
    name: String,
    /// Sends handed out so far; the key retires at [`SENDS_PER_KEY_MAX`].
    sends: u32,
}

struct PoolState {
    /// The keys sends go to, [`ACTIVE_KEYS`] of them.
    active: Vec<ActiveKey>,
    /// Every key ever created, oldest first: the final read covers all of them.
    created: Vec<String>,
    /// The next value to send; values are never reused.
    next_value: u64,
}

impl PoolState {
    fn create_key(&mut self) -> ActiveKey {
        let name = format!("k{}", self.created.len());
        self.created.push(name.clone());
        ActiveKey { name, sends: 0 }
    }
}

/// Shared by all clients of a run.
pub struct KeyPool {
    /// One lock for all: a send takes it for a few instructions.
    state: Mutex<PoolState>,
}

impl KeyPool {
    pub fn new() -> Self {
        let mut state = PoolState {
            active: Vec::with_capacity(ACTIVE_KEYS),
            created: Vec::new(),
            next_value: 0,
        };
        for _ in 0..ACTIVE_KEYS {
            let key = state.create_key();
            state.active.push(key);
        }
        KeyPool {
            state: Mutex::new(state),
        }
    }

    /// Picks a random active key and a fresh value for the next send, retiring the key (and
    /// creating its replacement) once it has had its share of sends.
    pub fn next_send(&self, rng: &mut impl Rng) -> (String, u64) {
        let mut state = lock(&self.state);
        let slot = rng.gen_range(0..state.active.len());
        let value = state.next_value;
        state.next_value += 1;
        let key = &mut state.active[slot];
        key.sends += 1;
        let name = key.name.clone();
        if key.sends >= SENDS_PER_KEY_MAX {
            let replacement = state.create_key();
            state.active[slot] = replacement;
        }
        (name, value)
    }

    /// The `count` most recently created keys: the ones an assign chooses from.
    pub fn recent(&self, count: usize) -> Vec<String> {
        let state = lock(&self.state);
        let skip = state.created.len().saturating_sub(count);
        state.created[skip..].to_vec()
    }

    /// Every key ever created.
    pub fn all(&self) -> Vec<String> {
        lock(&self.state).created.clone()
    }
}
