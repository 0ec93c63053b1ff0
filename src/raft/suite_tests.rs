//! openraft's own storage test suite, run against a group's log store and
//! state machine on a real store in a temporary directory.

use std::sync::{Arc, Mutex};

use openraft::testing::{StoreBuilder, Suite};

use super::durability::OwnGroupCommit;
use super::log_store::{Group, LogStore};
use super::snapshot::Keys;
use super::state_machine::StateMachine;
use super::types::{StorageError, TypeConfig};
use crate::storage::store::{Store, StoreConfig};

/// Builds a group's storage on a fresh store; the guard keeps the
/// directory until the test ends.
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("store");
        let store = Arc::new(Mutex::new(store));
        let durability = Arc::new(OwnGroupCommit::start(Arc::clone(&store)).expect("group commit"));
        let group = Group::open(0, store, durability).expect("group");
        let log_store = LogStore {
            group: Arc::clone(&group),
        };
        let state_machine = StateMachine::new(group, Keys::hashed(0, 1), None);
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("the suite passes");
}
