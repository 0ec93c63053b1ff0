//! The HTTP front end of `seglog serve`: topics of partitions, produce,
//! fetch with long polls and consumer group offsets over HTTP/1.1 and JSON,
//! shaped after the Kafka REST Proxy (v2) and Redpanda's HTTP Proxy, on the
//! shared [`Broker`]. A write is answered once durable.
//!
//! It imports [`crate::broker`] (and the leaf modules), never
//! [`crate::kafka`]; it maps the broker's errors to statuses and its own
//! stable error codes in [`error`], in one place.
//!
//! # Layout
//! - [`api`]: the route table, the metrics layer, what every handler uses,
//!   `/health` and `/metrics`.
//! - [`topics`], [`produce`], [`fetch`], [`groups`]: the handlers of each resource.
//! - [`records`]: records as this front end takes and serves them (JSON).
//! - [`error`]: error replies, their stable codes, and the broker's errors mapped to them.
//! - [`metrics`]: `GET /metrics`: the broker's counts and this front end's own.
//! - [`console`]: the web console at `/ui`, its files embedded in the binary.

pub mod api;
pub mod console;
pub mod error;
pub mod fetch;
pub mod groups;
pub mod metrics;
pub mod produce;
pub mod records;
pub mod topics;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::log;

pub use console::Console;

/// Serves the routes (and the console, as `console` says) on `listener`
/// until `shutdown` resolves, then finishes
/// the requests in flight (long polls end at once: the caller has begun the
/// broker's shutdown by then) and returns.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    console: Console,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Replies go out whole, at once: Nagle's algorithm would hold a reply's
    // tail back waiting for the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            log::warn(format_args!("cannot set TCP_NODELAY: {e}"));
        }
    });
    axum::serve(listener, api::router(broker, console))
        .with_graceful_shutdown(shutdown)
        .await
}
