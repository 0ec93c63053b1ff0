//! stdin and stdout as non-blocking pipes on the event loop's own thread.
//!
//! tokio's `stdin()` and `stdout()` run every read and write on its blocking
//! thread pool, a hand-off between threads per call; a node that answers
//! thousands of requests a second then spends more time switching threads
//! than serving. When stdin and stdout are pipes, as Maelstrom gives them,
//! they are instead made non-blocking and watched with epoll, so the loop
//! reads and writes them itself. Anything else (a terminal, a file) falls
//! back to tokio's versions.
//!
//! The pipes are duplicates of descriptors 0 and 1 and share their file
//! descriptions, so those become non-blocking too; only this process reads
//! and writes them through these handles.

use std::os::fd::AsFd;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

/// stdin, as a non-blocking pipe where it is one. Needs a runtime with I/O.
pub fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    let piped = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Receiver::from_owned_fd);
    match piped {
        Ok(receiver) => Box::new(receiver),
        Err(_) => Box::new(tokio::io::stdin()),
    }
}

/// stdout, as a non-blocking pipe where it is one. Needs a runtime with I/O.
pub fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    let piped = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Sender::from_owned_fd);
    match piped {
        Ok(sender) => Box::new(sender),
        Err(_) => Box::new(tokio::io::stdout()),
    }
}
