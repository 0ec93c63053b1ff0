//! Message counts: msgs-per-op, counted the way Maelstrom's net checker counts them, and what the
//! router did with the messages between nodes.
//!
//! Maelstrom journals every message sent through its network, client traffic (requests, replies,
//! init) as well as traffic between nodes, and counts a message even if the network then drops
//! it. `:servers` is every message that involves no client. Both are divided by the number of
//! client operations invoked (`:invoke` events, whatever their outcome), final reads included.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every connection and the router of one run.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Messages between a client and a node, both ways, init included.
    client_msgs: AtomicU64,
    /// Messages a node addressed to anything but a client: other nodes, or services.
    server_msgs: AtomicU64,
}

impl Traffic {
    /// A request written to a node or a reply read from one.
    pub fn count_client(&self) {
        self.client_msgs.fetch_add(1, Ordering::Relaxed);
    }

    /// A line a node wrote to another node (or, wrongly, to a service).
    pub fn count_server(&self) {
        self.server_msgs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TrafficCounts {
        TrafficCounts {
            client_msgs: self.client_msgs.load(Ordering::Relaxed),
            server_msgs: self.server_msgs.load(Ordering::Relaxed),
        }
    }
}

/// The counters at the end of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Messages between clients and nodes.
    pub client_msgs: u64,
    /// Messages between nodes.
    pub server_msgs: u64,
}

impl TrafficCounts {
    /// Maelstrom's `:net :all :msgs-per-op`.
    pub fn all_per_op(&self, operations: usize) -> f64 {
        per_op(self.client_msgs + self.server_msgs, operations)
    }

    /// Maelstrom's `:net :servers :msgs-per-op`.
    pub fn servers_per_op(&self, operations: usize) -> f64 {
        per_op(self.server_msgs, operations)
    }
}

fn per_op(messages: u64, operations: usize) -> f64 {
    if operations == 0 {
        return 0.0;
    }
    messages as f64 / operations as f64
}

/// What the router did with node-to-node messages, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkCounts {
    /// Messages nodes wrote to other nodes.
    pub sent: u64,
    /// Written to the destination's stdin.
    pub delivered: u64,
    /// Dropped by the loss probability.
    pub lost: u64,
    /// Dropped because a partition separated source and destination when the message came due.
    pub partitioned: u64,
    /// Dropped because the destination was down (or its stdin closed) when the message came due.
    pub undeliverable: u64,
    /// Partitions put in place.
    pub partitions: u64,
}
