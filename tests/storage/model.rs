//! A property test: random appends, reads, syncs and reopens (clean, and
//! after a simulated crash with torn tails) against an in-memory model.

use std::collections::HashMap;
use std::fs::OpenOptions;

use proptest::prelude::*;
use seglog::Store;
use tempfile::TempDir;

use crate::common::*;

const KEYS: &[&str] = &["a", "b/c", ""];
/// Small segments so that rolls happen often.
const SEGMENT_BYTES: u64 = 300;

#[derive(Clone, Debug)]
enum Op {
    Append {
        key: usize,
        len: usize,
    },
    Read {
        key: usize,
        from: u64,
    },
    Commit {
        key: usize,
        offset: u64,
    },
    Sync,
    CloseAndReopen,
    /// Drop the store without a final sync, then cut the active segment of
    /// one key somewhere after its durable records.
    Crash {
        key: usize,
        cut: u16,
    },
    /// A checkpoint, whole.
    Checkpoint,
    /// A checkpoint stopped after `steps` of its steps, then a crash.
    CheckpointCrash {
        steps: u8,
    },
    /// A sync point prepared (its batch or direct write made) and never
    /// executed, then a crash.
    MidSyncCrash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS.len(), 1..60usize).prop_map(|(key, len)| Op::Append { key, len }),
        3 => (0..KEYS.len(), 0..40u64).prop_map(|(key, from)| Op::Read { key, from }),
        1 => (0..KEYS.len(), 0..40u64).prop_map(|(key, offset)| Op::Commit { key, offset }),
        3 => Just(Op::Sync),
        1 => Just(Op::CloseAndReopen),
        1 => (0..KEYS.len(), any::<u16>()).prop_map(|(key, cut)| Op::Crash { key, cut }),
        1 => Just(Op::Checkpoint),
        1 => (0..12u8).prop_map(|steps| Op::CheckpointCrash { steps }),
        1 => Just(Op::MidSyncCrash),
    ]
}

#[derive(Default)]
struct Model {
    /// Durable messages per key.
    durable: HashMap<usize, Vec<Vec<u8>>>,
    /// Appended but not yet synced.
    pending: HashMap<usize, Vec<Vec<u8>>>,
    committed: HashMap<usize, u64>,
    pending_commits: HashMap<usize, u64>,
    counter: u64,
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, small_segments(SEGMENT_BYTES)).expect("open")
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = TempDir::new().expect("tempdir");
    let mut store = Some(open(dir.path()));
    let mut model = Model::default();
    for op in ops {
        let s = store.as_mut().expect("store open");
        match op {
            Op::Append { key, len } => {
                model.counter += 1;
                let msg = format!("\"{}{}\"", model.counter, "m".repeat(len)).into_bytes();
                let offset = s.append(KEYS[key], &msg).expect("append");
                let pending = model.pending.entry(key).or_default();
                let durable = model.durable.get(&key).map_or(0, Vec::len);
                prop_assert_eq!(offset as usize, durable + pending.len());
                pending.push(msg);
            }
            Op::Read { key, from } => {
                let (records, error) = read_all(s, KEYS[key], from);
                prop_assert!(error.is_none());
                let durable = model.durable.get(&key).cloned().unwrap_or_default();
                let expected: Vec<_> = durable
                    .into_iter()
                    .enumerate()
                    .skip(from as usize)
                    .map(|(i, m)| (i as u64, m))
                    .collect();
                prop_assert_eq!(records, expected);
            }
            Op::Commit { key, offset } => {
                s.commit(KEYS[key], offset).expect("commit");
                let slot = model.pending_commits.entry(key).or_insert(offset);
                *slot = (*slot).max(offset);
            }
            Op::Sync => {
                s.sync().expect("sync");
                for (key, pending) in model.pending.drain() {
                    model.durable.entry(key).or_default().extend(pending);
                }
                for (key, offset) in model.pending_commits.drain() {
                    let slot = model.committed.entry(key).or_insert(offset);
                    *slot = (*slot).max(offset);
                }
            }
            Op::CloseAndReopen => {
                store.take().expect("store").close().expect("close");
                for (key, pending) in model.pending.drain() {
                    model.durable.entry(key).or_default().extend(pending);
                }
                for (key, offset) in model.pending_commits.drain() {
                    let slot = model.committed.entry(key).or_insert(offset);
                    *slot = (*slot).max(offset);
                }
                store = Some(open(dir.path()));
            }
            Op::Crash { key, cut } => {
                drop(store.take());
                // Tear the active segment of `key` somewhere after its
                // durable records: only unsynced bytes may be lost.
                let kdir = key_dir_of(dir.path(), KEYS[key]);
                if let Some(log) = kdir.as_deref().map(segment_logs).and_then(|mut l| l.pop()) {
                    let bounds = record_bounds(&log);
                    let base: u64 = log
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.parse().ok())
                        .expect("base");
                    let durable = model.durable.get(&key).map_or(0, Vec::len) as u64;
                    let first_unsynced = durable.saturating_sub(base) as usize;
                    if let Some(&from) = bounds.get(first_unsynced) {
                        let end = *bounds.last().expect("bounds");
                        if end > from {
                            let at = from + u64::from(cut) % (end - from);
                            OpenOptions::new()
                                .write(true)
                                .open(&log)
                                .and_then(|f| f.set_len(at))
                                .expect("tear");
                        }
                    }
                }
                store = Some(reopen_after_crash(dir.path(), &mut model)?);
            }
            Op::Checkpoint => {
                store
                    .as_mut()
                    .expect("store")
                    .checkpoint()
                    .expect("checkpoint");
                sync_model(&mut model);
            }
            Op::CheckpointCrash { steps } => {
                let mut s = store.take().expect("store");
                s.checkpoint_interrupted(usize::from(steps))
                    .expect("interrupted checkpoint");
                drop(s);
                store = Some(reopen_after_crash(dir.path(), &mut model)?);
            }
            Op::MidSyncCrash => {
                let mut s = store.take().expect("store");
                let plan = s.prepare_sync().expect("prepare");
                drop(plan);
                drop(s);
                store = Some(reopen_after_crash(dir.path(), &mut model)?);
            }
        }
        let s = store.as_mut().expect("store open");
        for (k, name) in KEYS.iter().enumerate() {
            prop_assert_eq!(s.committed(name), model.committed.get(&k).copied());
        }
    }
    Ok(())
}

/// The model's durable records and commits all survive a crash; of the
/// pending ones, each key keeps a prefix, which the model adopts.
fn reopen_after_crash(dir: &std::path::Path, model: &mut Model) -> Result<Store, TestCaseError> {
    let mut reopened = open(dir);
    // Each key now holds its durable records plus some prefix of
    // its pending ones; the model adopts whatever survived.
    for (k, name) in KEYS.iter().enumerate() {
        let records = read_ok(&mut reopened, name);
        let durable = model.durable.entry(k).or_default();
        let pending = model.pending.remove(&k).unwrap_or_default();
        prop_assert!(records.len() >= durable.len(), "durable record lost");
        prop_assert!(records.len() <= durable.len() + pending.len());
        let mut expected = durable.clone();
        expected.extend(pending);
        for (i, (offset, msg)) in records.iter().enumerate() {
            prop_assert_eq!(*offset, i as u64);
            prop_assert_eq!(msg, &expected[i]);
        }
        durable.truncate(0);
        durable.extend(records.into_iter().map(|r| r.1));
        let committed = reopened.committed(name);
        let floor = model.committed.get(&k).copied();
        prop_assert!(committed >= floor, "durable commit lost");
        if let Some(c) = committed {
            model.committed.insert(k, c);
        }
    }
    model.pending_commits.clear();
    Ok(reopened)
}

/// The model after a completed sync point: everything pending is durable.
fn sync_model(model: &mut Model) {
    for (key, pending) in model.pending.drain() {
        model.durable.entry(key).or_default().extend(pending);
    }
    for (key, offset) in model.pending_commits.drain() {
        let slot = model.committed.entry(key).or_insert(offset);
        *slot = (*slot).max(offset);
    }
}

/// Resolves a short key's directory if it exists.
fn key_dir_of(data: &std::path::Path, key: &str) -> Option<std::path::PathBuf> {
    let dir = key_dir(data, key);
    dir.is_dir().then_some(dir)
}

proptest! {
    // 48 cases in CI; PROPTEST_CASES=2000 for a longer local run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
    ))]

    /// Guards against: any divergence between the store and the simple
    /// model of a durable log, across rolls, reopens and torn tails.
    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
