//! `seglog inspect`, run as the real binary: every option, every kind of
//! damage reported at the right file and position, JSON that parses, safety
//! on a store in use, a closed pipe, the output pinned on the committed
//! format-v1 sample in `data/`, and the engine still reading that sample.

#[path = "support/mod.rs"]
mod support;

// The sample's contents, shared with the generator that wrote `data/`.
#[path = "../examples/sample/contents.rs"]
mod sample;

#[path = "inspect/common.rs"]
mod common;
#[path = "inspect/damage.rs"]
mod damage;
#[path = "inspect/options.rs"]
mod options;
#[path = "inspect/safety.rs"]
mod safety;
#[path = "inspect/samples.rs"]
mod samples;
