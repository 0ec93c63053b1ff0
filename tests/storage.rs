//! Storage engine tests: one binary, a module per area (ripgrep style).

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
#[path = "storage/review.rs"]
mod review;
#[path = "storage/spec.rs"]
mod spec;
