//! `seglog serve` as a cluster (issue 20): the peer links between nodes,
//! over real sockets, through a fault-injecting proxy; and the `--peers`
//! flags of the real binary.

#[path = "support/proxy.rs"]
mod proxy;

#[path = "cluster/links.rs"]
mod links;
#[path = "cluster/serve_flags.rs"]
mod serve_flags;
