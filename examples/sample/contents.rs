//! What the samples in `data/` hold: their keys, messages and commits
//! (the same in the format-v1 and format-v2 samples). Shared by the generator (`examples/make_sample.rs`) and the test
//! that reads the committed sample back (`tests/inspect.rs`), so the test
//! compares the bytes on disk with what the generator meant to write.

use std::collections::BTreeMap;

/// Segment size of the sample store: just past one index interval (4096
/// bytes), so that every full segment gets exactly one index entry while
/// the whole sample stays small.
pub const SEGMENT_BYTES: u64 = 4352;

/// A key with a `/`, which must not become a path separator.
pub const KEY_SLASH: &str = "a/b";
/// A key of non-ASCII characters, escaped byte by byte in its directory name.
pub const KEY_CYRILLIC: &str = "ключ";
/// A key whose log spans several segments.
pub const KEY_LONG_LOG: &str = "orders";
/// A key too long for an escaped directory name: it gets a hashed name and
/// a `KEY` file.
pub const KEY_HASHED: &str =
    "очень длинный ключ, имя которого не помещается в имя каталога целиком";

/// Messages of the long log.
pub const LONG_LOG_MESSAGES: u64 = 260;

/// A message of the long log: a small JSON object, as a client might send.
pub fn order(i: u64) -> String {
    format!("{{\"order\":{i},\"qty\":{}}}", i % 5 + 1)
}

/// One step of the generator, in the order it is taken.
pub enum Step {
    Append(&'static str, String),
    Commit(&'static str, u64),
    Sync,
    /// A checkpoint (format version 2; the version 1 generator had none):
    /// what follows is only in the write-ahead journal until the next.
    Checkpoint,
}

/// Every step: two rounds of appends, each made durable and followed by
/// commits, with a checkpoint between them.
pub fn steps() -> Vec<Step> {
    let mut steps = Vec::new();
    let append = |steps: &mut Vec<Step>, key, message: &str| {
        steps.push(Step::Append(key, message.to_string()));
    };
    for message in ["10", "20", "30"] {
        append(&mut steps, KEY_SLASH, message);
    }
    append(&mut steps, KEY_CYRILLIC, "\"привет\"");
    append(&mut steps, KEY_CYRILLIC, "\"мир\"");
    for i in 0..100 {
        append(&mut steps, KEY_LONG_LOG, &order(i));
    }
    steps.push(Step::Sync);
    steps.push(Step::Commit(KEY_SLASH, 1));
    steps.push(Step::Commit(KEY_LONG_LOG, 50));
    steps.push(Step::Sync);
    steps.push(Step::Checkpoint);
    for i in 100..LONG_LOG_MESSAGES {
        append(&mut steps, KEY_LONG_LOG, &order(i));
    }
    append(&mut steps, KEY_SLASH, "40");
    append(&mut steps, KEY_SLASH, "50");
    append(
        &mut steps,
        KEY_CYRILLIC,
        "\"Съешь же ещё этих мягких французских булок, да выпей чаю. \
         The quick brown fox jumps over the lazy dog.\"",
    );
    append(&mut steps, KEY_HASHED, "1");
    append(&mut steps, KEY_HASHED, "2");
    steps.push(Step::Sync);
    steps.push(Step::Commit(KEY_SLASH, 4));
    steps.push(Step::Commit(KEY_LONG_LOG, 199));
    steps.push(Step::Commit(KEY_CYRILLIC, 2));
    steps.push(Step::Sync);
    steps
}

/// Each key's messages in offset order, as the steps append them.
pub fn expected_logs() -> BTreeMap<&'static str, Vec<String>> {
    let mut logs: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for step in steps() {
        if let Step::Append(key, message) = step {
            logs.entry(key).or_default().push(message);
        }
    }
    logs
}

/// Each key's committed offset after all steps.
pub fn expected_commits() -> BTreeMap<&'static str, u64> {
    let mut commits = BTreeMap::new();
    for step in steps() {
        if let Step::Commit(key, offset) = step {
            commits.insert(key, offset);
        }
    }
    commits
}
