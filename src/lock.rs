//! Taking locks that a panicked holder left poisoned.
//!
//! Every value seglog keeps behind a `Mutex` or `RwLock` (the store, the
//! topic catalog, the group commit's queue, the consumer groups) is changed
//! only through methods that leave it consistent at every point where they
//! can fail, and a store that saw a failed sync poisons itself. So a panic
//! in one holder, which is a bug, does not make the value unusable, and the
//! rest of the server goes on rather than panicking in turn. Every layer
//! takes its locks through these three functions.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, going on if a thread panicked while holding it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes `rwlock` for reading, going on if a writer panicked.
pub fn read<T>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes `rwlock` for writing, going on if a writer panicked.
pub fn write<T>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
