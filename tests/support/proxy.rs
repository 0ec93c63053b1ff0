//! A fault-injecting TCP proxy for the cluster tests: put it between two
//! nodes (the address one node dials for the other) to cut the link, slow
//! it, and let it through again, as a network would.
//!
//! It runs on the test's tokio runtime. While cut, it closes every
//! connection it carries and every new one at once; `resume` lets new
//! connections through again (the nodes' links dial again on their own).
//! `delay` holds every chunk of bytes for that long before forwarding it,
//! in both directions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes read at once from one side: a chunk is delayed as one.
const CHUNK_BYTES: usize = 64 << 10;

struct State {
    /// True while cut.
    cut: watch::Sender<bool>,
    /// The delay of every chunk, in milliseconds.
    delay_ms: AtomicU64,
    /// Connections carried through (closed at once while cut not counted).
    carried: AtomicU64,
}

/// A proxy to one address. Dropping it stops it and closes its connections.
pub struct Proxy {
    address: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(State {
            cut: watch::channel(false).0,
            delay_ms: AtomicU64::new(0),
            carried: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, target, Arc::clone(&state)));
        Proxy {
            address,
            state,
            task,
        }
    }

    /// Where to connect to reach the target through the proxy.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection, and every new one, until [`Proxy::resume`].
    pub fn cut(&self) {
        self.state.cut.send_replace(true);
    }

    /// Lets new connections through again.
    pub fn resume(&self) {
        self.state.cut.send_replace(false);
    }

    /// Holds every chunk for `delay` before forwarding it (zero: none).
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many connections the proxy has carried through.
    pub fn carried(&self) -> u64 {
        self.state.carried.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, state: Arc<State>) {
    // Dropped with this task: aborts every connection's pumps.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *state.cut.borrow() {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        state.carried.fetch_add(1, Ordering::SeqCst);
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            // Either direction ending (closed, failed, or cut) ends both.
            tokio::select! {
                () = pump(client_read, server_write, &state) => {}
                () = pump(server_read, client_write, &state) => {}
            }
        });
    }
}

/// Copies `from` to `to`, chunk by chunk, each after the delay, until
/// either side closes or the proxy is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: &State,
) {
    let mut cut = state.cut.subscribe();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = cut.wait_for(|&cut| cut) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = cut.wait_for(|&cut| cut) => return,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
