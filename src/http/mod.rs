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
//! - [`auth`]: HTTP basic auth with `serve --users`, and the users' topic
//!   prefixes on the routes that name a topic.
//! - [`error`]: error replies, their stable codes, and the broker's errors mapped to them.
//! - [`metrics`]: `GET /metrics`: the broker's counts and this front end's own.
//! - [`console`]: the web console at `/ui`, its files embedded in the binary.

pub mod api;
pub mod auth;
pub mod console;
pub mod error;
pub mod fetch;
pub mod groups;
pub mod metrics;
pub mod produce;
pub mod records;
pub mod relay;
pub mod topics;

use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::auth::Authenticator;
use crate::auth::tls::Tls;
use crate::broker::Broker;
use crate::log;

pub use console::Console;

/// Who may connect: TLS on the listener, and the users of basic auth.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS (`--tls-cert`, `--tls-key`); plain HTTP without.
    pub tls: Option<Tls>,
    /// The users (`--users`); every request is served without.
    pub auth: Option<Arc<Authenticator>>,
}

/// Serves the routes (and the console, as `console` says) on `listener`
/// until `shutdown` resolves, then finishes
/// the requests in flight (long polls end at once: the caller has begun the
/// broker's shutdown by then) and returns.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    console: Console,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cluster = broker.cluster().cloned();
    let router = api::router(broker, console, security.auth);
    if let Some(cluster) = cluster {
        cluster.serve_relayed(relay::relayer(router.clone()));
    }
    match security.tls {
        None => {
            // Replies go out whole, at once: Nagle's algorithm would hold a
            // reply's tail back waiting for the client's delayed ACK.
            let listener = axum::serve::ListenerExt::tap_io(listener, nodelay);
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let listener = TlsListener::start(listener, tls);
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

fn nodelay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        log::warn(format_args!("cannot set TCP_NODELAY: {e}"));
    }
}

/// Connections whose TLS handshake is done and not yet taken by the
/// server: the handshakes run in tasks of their own, so one slow client
/// does not hold up the others' accepts.
const HANDSHAKEN_MAX: usize = 64;

/// A listener of TLS connections for `axum::serve`: a task accepts TCP
/// connections and runs each one's handshake in a task, within
/// [`crate::auth::tls::HANDSHAKE_TIMEOUT`]; a failed handshake is logged
/// and dropped.
struct TlsListener {
    address: std::net::SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    /// Stops the accepting task when the listener goes.
    _acceptor: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    fn start(listener: TcpListener, tls: Tls) -> TlsListener {
        let address = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(HANDSHAKEN_MAX);
        let acceptor = tokio::spawn(async move {
            loop {
                let (mut tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, for example: wait rather than spin.
                        log::warn(format_args!("http: accept failed: {e}"));
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                nodelay(&mut tcp);
                let tls = tls.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tls.accept(tcp).await {
                        Ok(stream) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Err(e) => log::warn(format_args!("http: {peer}: {e}")),
                    }
                });
            }
        });
        TlsListener {
            address,
            ready,
            _acceptor: AbortOnDrop(acceptor),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task holds the sender until it is aborted,
            // which happens only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.address)
    }
}
