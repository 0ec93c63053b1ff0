//! What a request's handler gives back to the connection that runs it.
//! Its own module so that handlers and the connection both import it and
//! neither imports the other's internals: the connection dispatches to the
//! handlers, the handlers know only this type.

use std::future::Future;
use std::pin::Pin;

use kafka_protocol::messages::ResponseKind;

/// A handler's outcome.
pub enum Reply {
    /// The reply, ready now (boxed: replies are large and few).
    Now(Box<ResponseKind>),
    /// The reply once something happens (a sync point, new records, a
    /// rebalance); `None` for none at all (a produce with `acks=0`).
    Later(Pin<Box<dyn Future<Output = Option<ResponseKind>> + Send>>),
    /// No reply (a produce with `acks=0`).
    Nothing,
}

impl Reply {
    pub fn now(response: ResponseKind) -> Reply {
        Reply::Now(Box::new(response))
    }
}

impl Reply {
    /// The same reply, changed by `change` once it is ready.
    pub fn map(self, change: impl FnOnce(&mut ResponseKind) + Send + 'static) -> Reply {
        match self {
            Reply::Now(mut response) => {
                change(&mut response);
                Reply::Now(response)
            }
            Reply::Later(future) => Reply::Later(Box::pin(async move {
                let mut response = future.await?;
                change(&mut response);
                Some(response)
            })),
            Reply::Nothing => Reply::Nothing,
        }
    }
}
