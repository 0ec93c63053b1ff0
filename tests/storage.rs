//! The storage engine in this process on a real disk: codecs and constants
//! against the spec, cuts at every byte, garbage, flipped bits, damaged and
//! missing files, hostile key names, searches by time, the directory lock, a property test
//! against a model, retention and key removal.
//!
//! Nothing here starts a process: a child holds a copy of this process's
//! descriptors until its exec, the lock of a store a test is about to reopen
//! among them, and the reopen would find the directory locked. The store
//! under the real binary is tested in `durability`.

#[path = "support/mod.rs"]
mod support;

#[path = "storage/commits.rs"]
mod commits;
#[path = "storage/common.rs"]
mod common;
#[path = "storage/crash.rs"]
mod crash;
#[path = "storage/damage.rs"]
mod damage;
#[path = "storage/fuzz_finds.rs"]
mod fuzz_finds;
#[path = "storage/journal.rs"]
mod journal;
#[path = "storage/keys.rs"]
mod keys;
#[path = "storage/model.rs"]
mod model;
#[path = "storage/replica.rs"]
mod replica;
#[path = "storage/retention.rs"]
mod retention;
#[path = "storage/review.rs"]
mod review;
#[path = "storage/spec.rs"]
mod spec;
#[path = "storage/timeindex.rs"]
mod timeindex;
