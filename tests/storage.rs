//! The storage engine: the store in this process on a real disk, and the
//! binary's durability on it. Codecs and constants against the spec, cuts
//! at every byte, garbage, flipped bits, damaged and missing files, hostile
//! key names, a property test against a model, retention, 100,000 keys under
//! a low descriptor limit, disk faults injected under the binary, and power
//! loss replayed from the binary's recorded file operations.

#[path = "support/mod.rs"]
mod support;

#[path = "storage/common.rs"]
mod common;
#[path = "storage/crash.rs"]
mod crash;
#[path = "storage/damage.rs"]
mod damage;
#[path = "storage/faults.rs"]
mod faults;
#[path = "storage/fuzz_finds.rs"]
mod fuzz_finds;
#[path = "storage/journal.rs"]
mod journal;
#[path = "storage/keys.rs"]
mod keys;
#[path = "storage/many_keys.rs"]
mod many_keys;
#[path = "storage/model.rs"]
mod model;
#[path = "storage/powerloss.rs"]
mod powerloss;
#[path = "storage/replica.rs"]
mod replica;
#[path = "storage/retention.rs"]
mod retention;
#[path = "storage/review.rs"]
mod review;
#[path = "storage/spec.rs"]
mod spec;
