//! `seglog serve` as a cluster (issue 20): the peer links between nodes,
//! over real sockets, through a fault-injecting proxy.

#[path = "support/proxy.rs"]
mod proxy;

#[path = "cluster/links.rs"]
mod links;
