//! The store in real processes: disk faults injected under the binary (an
//! `LD_PRELOAD` shim), power loss replayed from the binary's recorded file
//! operations, and a store of many keys under a low descriptor limit in a
//! process of its own. Kept apart from the in-process stores of `storage`:
//! a child being started here would hold their locks until its exec.

#[path = "support/mod.rs"]
mod support;

#[path = "durability/faults.rs"]
mod faults;
#[path = "durability/many_keys.rs"]
mod many_keys;
#[path = "durability/powerloss.rs"]
mod powerloss;
#[path = "durability/space.rs"]
mod space;
