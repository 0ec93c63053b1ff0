//! How the Raft storage learns that what it wrote is durable: it asks for
//! the outcome of the next sync point of the store's group commit, which
//! covers everything appended before the request. One sync point (one
//! fdatasync of the journal) makes every group's entries, votes and
//! applied state durable at once.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::storage::error::{Error, Result};
use crate::storage::group_commit::{GroupCommit, Outcome, Synced};
use crate::storage::store::Store;

/// A callback run with the outcome of a sync point.
pub type Done = Box<dyn FnOnce(Outcome) + Send>;

/// Where durability comes from: the front end's group commit.
pub trait Durability: Send + Sync + 'static {
    /// Calls `done` with the outcome of a sync point that covers every
    /// write applied to the store before this call. `done` must be quick:
    /// it may run on the group commit's thread.
    fn after_sync(&self, done: Done);
}

/// Waits for a sync point that covers everything written so far.
pub async fn synced(durability: &dyn Durability) -> Outcome {
    let (tx, rx) = oneshot::channel();
    durability.after_sync(Box::new(move |outcome| {
        let _ = tx.send(outcome);
    }));
    match rx.await {
        Ok(outcome) => outcome,
        Err(_) => Err(Arc::new(Error::Panicked {
            what: "the group commit, which dropped a waiter,".into(),
        })),
    }
}

/// A group commit of its own whose batches are callbacks, run on its
/// thread: what the node, the storage tests and openraft's suite use.
/// `None` once closed.
pub struct OwnGroupCommit(Mutex<Option<GroupCommit<Done>>>);

impl OwnGroupCommit {
    /// Starts a group commit over `store`.
    pub fn start(store: Arc<Mutex<Store>>) -> Result<OwnGroupCommit> {
        let group_commit = GroupCommit::start(store, |synced: Synced<Done>| {
            for done in synced.items {
                done(synced.result.clone());
            }
            true
        })?;
        Ok(OwnGroupCommit(Mutex::new(Some(group_commit))))
    }

    /// Drains what waits, and waits for the thread to end: afterwards no
    /// sync point is in flight, so the store can close. Later waiters are
    /// told the group commit is closed.
    pub fn close_and_join(&self) -> Result<()> {
        let Some(group_commit) = crate::lock::lock(&self.0).take() else {
            return Ok(());
        };
        group_commit.close();
        group_commit.join()
    }
}

impl Durability for OwnGroupCommit {
    fn after_sync(&self, done: Done) {
        match &*crate::lock::lock(&self.0) {
            Some(group_commit) => group_commit.push(done),
            None => done(Err(Arc::new(Error::Busy(
                "the group commit is closed".into(),
            )))),
        }
    }
}

impl Drop for OwnGroupCommit {
    fn drop(&mut self) {
        // The thread drains what waits and ends; nobody joins it.
        if let Some(group_commit) = &*crate::lock::lock(&self.0) {
            group_commit.close();
        }
    }
}
