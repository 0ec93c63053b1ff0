//! The workload the simulation tests run on the simulated disk, the model
//! of what it acknowledged, and the checks of every image a power loss
//! leaves.
//!
//! What every check asserts, for each image a power loss may leave:
//! * the store opens;
//! * every acknowledged append (one a sync point returned `Ok` for) reads
//!   back at its offset with its bytes, and every record read is the one
//!   appended at that offset (never a wrong or unacknowledged-and-garbled
//!   record);
//! * reads from the log start deliver contiguous offsets up to the durable
//!   end, with no CRC or offset error;
//! * the log start is at least every acknowledged `truncate_front` and at
//!   most the highest one attempted; a key removed with an acknowledged
//!   `remove_key` holds only what was appended after it;
//! * every acknowledged commit is listed, at that offset or a later one
//!   committed;
//! * every record and committed offset a read served before the power
//!   loss is still there (no phantom reads);
//! * after a crash without a power loss (`kill -9`, [`SimFs::restart`]),
//!   what recovery serves survives a power loss right after;
//! * one more append per key takes the next offset and survives another
//!   power loss, and the store then closes cleanly and opens clean.
//!

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use seglog::storage::sim::{Keep, SimFs};
use seglog::storage::store::Checkpoint;
use seglog::{Store, StoreConfig};

/// Returns an error with the message unless the condition holds: the
/// checks report failures as values, so the caller can name the seed, the
/// crash point and the image.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}
pub(crate) use ensure;

/// The data directory on the simulated disk.
pub const DATA: &str = "/data";

/// Segment size of the workloads: a few records each, so segments roll
/// every few appends and sealed segments pile up for `truncate_front`.
pub const SEGMENT_BYTES: u64 = 600;

/// Journal size at which a checkpoint starts: a few sync points' worth, so
/// checkpoints and journal rotations happen many times in one workload.
pub const CHECKPOINT_BYTES: u64 = 2048;

/// Key logs kept open: fewer than the workload's keys, so keys are evicted
/// and reopened (their recovery runs again) in the middle of a run.
pub const OPEN_KEYS: usize = 3;

/// Steps (appends, commits, sync points, ...) of one workload before its
/// clean close: enough for several rolls, checkpoints, a truncation and a
/// removal, few enough that every operation can be crashed at within the
/// CI budget (about 420 counted operations a workload, 2 s each to crash
/// at every one with 5 images).
pub const WORKLOAD_STEPS: usize = 100;

/// Largest payload of a workload record, in bytes: several records fit in
/// one segment, and some records straddle a 4 KiB page of the journal.
pub const PAYLOAD_BYTES_MAX: usize = 150;

/// The keys of the workloads: plain ones, one that needs escaping, and one
/// too long for an escaped name (a hashed directory with a `KEY` file,
/// created through a temporary directory and a rename).
pub fn workload_keys() -> Vec<String> {
    vec![
        "a".to_string(),
        "b".to_string(),
        "c/d e".to_string(),
        "long-".repeat(45),
    ]
}

/// The store settings a workload runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub segment_bytes: u64,
    pub checkpoint_bytes: u64,
    pub open_keys: usize,
}

/// The settings of the exhaustive and fault tests (see the constants).
pub const SHAPE: Shape = Shape {
    segment_bytes: SEGMENT_BYTES,
    checkpoint_bytes: CHECKPOINT_BYTES,
    open_keys: OPEN_KEYS,
};

impl Default for Shape {
    fn default() -> Shape {
        SHAPE
    }
}

impl Shape {
    /// Settings drawn from `seed` for the random workloads: segments from
    /// one record to many, checkpoints from every sync point to none in a
    /// run, and from one key kept open to all of them.
    pub fn random(seed: u64) -> Shape {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        Shape {
            segment_bytes: [64, 200, SEGMENT_BYTES, 4096, 1 << 20][rng.gen_range(0..5)],
            checkpoint_bytes: [256, CHECKPOINT_BYTES, 16 << 10, 64 << 20][rng.gen_range(0..4)],
            open_keys: [1, OPEN_KEYS, 16][rng.gen_range(0..3)],
        }
    }

    pub fn config(&self, fs: &Arc<SimFs>) -> StoreConfig {
        StoreConfig {
            segment_bytes: self.segment_bytes,
            checkpoint_bytes: self.checkpoint_bytes,
            open_keys_max: self.open_keys,
            fs: Arc::clone(fs) as _,
            ..StoreConfig::default()
        }
    }
}

/// The first seed of the random workloads, apart from the exhaustive
/// test's seeds.
pub const RANDOM_SEED_BASE: u64 = 1_000;

/// The settings workload `seed` runs with: random ones for the random
/// workloads' seeds.
pub fn shape_for(seed: u64) -> Shape {
    if seed >= RANDOM_SEED_BASE {
        Shape::random(seed)
    } else {
        SHAPE
    }
}

/// Opens the store of `fs` with the default settings.
pub fn open(fs: &Arc<SimFs>) -> seglog::Result<Store> {
    open_shaped(fs, &SHAPE)
}

pub fn open_shaped(fs: &Arc<SimFs>, shape: &Shape) -> seglog::Result<Store> {
    Store::open(Path::new(DATA), shape.config(fs))
}

/// What the workload did to one key, and what of it was acknowledged.
#[derive(Clone, Debug, Default)]
pub struct KeyModel {
    /// Every record appended in the key's current life, at its offset.
    pub appended: Vec<Vec<u8>>,
    /// Offsets below this (and at or past the log start) were acknowledged.
    pub acked_end: u64,
    /// The highest log start `truncate_front` acknowledged.
    pub start_acked: u64,
    /// The highest log start a `truncate_front` may have made durable,
    /// acknowledged or not.
    pub start_max: u64,
    /// The key's lives before each `remove_key` that failed: after a crash
    /// the key is any one of them, whole, or the current one.
    pub earlier_lives: Vec<KeyModel>,
    /// Lives ended by `remove_key`, for payloads that tell lives apart.
    pub generation: u32,
}

/// Committed offsets of one key.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitModel {
    /// The highest acknowledged commit.
    pub acked: Option<u64>,
    /// The highest commit attempted.
    pub max: u64,
}

/// The workload's view of the store.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub keys: BTreeMap<String, KeyModel>,
    pub commits: BTreeMap<String, CommitModel>,
    /// Commits made since the last sync point was prepared.
    pub commits_pending: BTreeMap<String, u64>,
    /// The settings the store runs with.
    pub shape: Shape,
    /// What the workload got done, to show it covers what it claims.
    pub done: Done,
}

/// Steps of a workload that succeeded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Done {
    pub syncs: u64,
    pub split_syncs: u64,
    pub checkpoints: u64,
    /// Of those, checkpoints detached from their sync point and finished
    /// some steps later, as the group commit runs them on their own thread.
    pub detached_checkpoints: u64,
    /// Sync points acknowledged while a detached checkpoint had yet to run.
    pub syncs_beside_checkpoint: u64,
    pub truncations: u64,
    pub removals: u64,
    /// Journal files the store went through (rotations by checkpoints).
    pub journal_files: u64,
    /// Whether the clean close succeeded.
    pub closed: bool,
    /// Reopens in place after a fault (`run_workload_with`).
    pub heals: u64,
    /// Of those, reopens after the page cache dropped what the failed
    /// sync left ([`SimFs::evict_lost_writeback`]).
    pub evicted_heals: u64,
}

/// What a sync point covers: taken just before it is prepared.
pub struct Snapshot {
    pub ends: Vec<(String, u64)>,
    pub commits: BTreeMap<String, u64>,
}

impl Model {
    pub fn new(keys: &[String]) -> Model {
        Model {
            keys: keys
                .iter()
                .map(|k| (k.clone(), KeyModel::default()))
                .collect(),
            ..Model::default()
        }
    }

    pub fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            ends: self
                .keys
                .iter()
                .map(|(k, m)| (k.clone(), m.appended.len() as u64))
                .collect(),
            commits: std::mem::take(&mut self.commits_pending),
        }
    }

    /// A sync point prepared at `snapshot` returned `Ok`.
    pub fn acknowledge(&mut self, snapshot: Snapshot) {
        for (key, end) in snapshot.ends {
            let model = self.keys.get_mut(&key).expect("a workload key");
            model.acked_end = model.acked_end.max(end);
        }
        for (key, offset) in snapshot.commits {
            let commit = self.commits.entry(key).or_default();
            commit.acked = commit.acked.max(Some(offset));
        }
    }
}

/// The payload of the record appended at `offset` of `key` in life
/// `generation`: names all three, so a record read at the wrong offset, of
/// another key or of an earlier life never matches, and carries filler so
/// sizes vary.
pub fn payload(key: &str, generation: u32, offset: u64, rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = format!("{}|g{generation}|o{offset}|", &key[..key.len().min(8)]).into_bytes();
    let filler = rng.gen_range(1..=PAYLOAD_BYTES_MAX.saturating_sub(bytes.len()).max(1));
    bytes.extend((0..filler).map(|_| rng.gen_range(b'a'..=b'z')));
    bytes
}

/// Runs the workload of `seed` on `fs`: opens the store (creating it),
/// takes `WORKLOAD_STEPS` random steps and closes it cleanly. Errors are
/// part of the run (from a crash point or a fault): the workload goes on
/// after them, and only sync points that returned `Ok` acknowledge
/// anything. Returns what was acknowledged.
pub fn run_workload(seed: u64, fs: &Arc<SimFs>) -> Result<Model, String> {
    run_workload_shaped(seed, fs, SHAPE)
}

/// [`run_workload`] with the store settings `shape`.
pub fn run_workload_shaped(seed: u64, fs: &Arc<SimFs>, shape: Shape) -> Result<Model, String> {
    run_workload_with(seed, fs, shape, None)
}

/// [`run_workload_shaped`]; with `heal`, a store a fault poisoned is healed
/// in place before the next step, as `seglog serve` does: the fault is
/// cleared ([`SimFs::heal`], the condition going away), the store reopened
/// on the same disk without a restart ([`Store::reopen`]: the page cache
/// keeps what a failed fdatasync left, pages that are not on the disk
/// among them), checked against the model, and everything it then serves
/// counts as acknowledged: a later power loss must keep it.
///
/// `heal` is the parity of the operation count at which the page cache
/// first drops what the failed sync left ([`SimFs::evict_lost_writeback`]):
/// a sweep runs with one parity, evicting in about half its runs, or with
/// both, each fault point then checked with and without eviction.
pub fn run_workload_with(
    seed: u64,
    fs: &Arc<SimFs>,
    shape: Shape,
    heal: Option<u64>,
) -> Result<Model, String> {
    let keys = workload_keys();
    let mut model = Model::new(&keys);
    model.shape = shape;
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(mut store) = open_shaped(fs, &shape) else {
        return Ok(model);
    };
    // A checkpoint detached from its sync point and not yet run: later
    // steps go on meanwhile, as they do beside the group commit's
    // checkpoint thread.
    let mut detached: Option<Checkpoint> = None;
    for _ in 0..WORKLOAD_STEPS {
        // It finishes some steps later, and always before a reopen (the
        // group commit waits for it first).
        if detached.is_some() && (rng.gen_range(0..4) == 0 || store.is_poisoned()) {
            finish_detached(&mut store, &mut model, detached.take());
        }
        if let Some(parity) = heal
            && store.is_poisoned()
        {
            fs.heal();
            // In about half the runs of a sweep (by the operations done so
            // far, which differ from run to run), the kernel has meanwhile
            // dropped the pages a failed sync left: recovery reads what the
            // disk holds, and must cut and rewrite from the journal.
            let evict = fs.ops() % 2 == parity;
            if evict {
                fs.evict_lost_writeback();
            }
            traced("reopen", store.reopen()).map_err(|e| format!("reopen in place: {e}"))?;
            let observed =
                verify(&mut store, &model).map_err(|e| format!("healed in place: {e}"))?;
            let done = Done {
                heals: model.done.heals + 1,
                evicted_heals: model.done.evicted_heals + u64::from(evict),
                ..model.done
            };
            model = Model {
                shape,
                done,
                ..observed
            };
            // What the healed store serves must be on the disk already.
            let image = fs.power_loss(Keep::Nothing);
            open_and_verify(&image, &model)
                .map_err(|e| format!("healed in place, then a power loss: {e}"))?;
        }
        let key = keys[rng.gen_range(0..keys.len())].clone();
        match rng.gen_range(0..100) {
            0..42 => {
                for _ in 0..rng.gen_range(1..=3) {
                    append(&mut store, &mut model, &key, &mut rng)?;
                }
            }
            42..50 => {
                let end = model.keys[&key].appended.len() as u64;
                let offset = rng.gen_range(0..=end);
                if store.commit(&key, offset).is_ok() {
                    let commit = model.commits.entry(key.clone()).or_default();
                    commit.max = commit.max.max(offset);
                    let pending = model.commits_pending.entry(key).or_default();
                    *pending = (*pending).max(offset);
                }
            }
            50..59 => {
                let snapshot = model.snapshot();
                if traced("sync", store.sync()).is_ok() {
                    model.acknowledge(snapshot);
                    model.done.syncs += 1;
                    model.done.syncs_beside_checkpoint += u64::from(detached.is_some());
                }
            }
            59..68 => {
                // A sync point as the group commit runs it: a checkpoint due
                // is detached from it, to finish some steps later.
                let snapshot = model.snapshot();
                let prepared = store.prepare_sync();
                trace(format_args!(
                    "group commit sync: {:?}",
                    prepared.as_ref().err()
                ));
                if let Ok(mut plan) = prepared {
                    if let Some(checkpoint) = store.detach_checkpoint(&mut plan) {
                        ensure!(detached.is_none(), "a second checkpoint started");
                        detached = Some(checkpoint);
                    }
                    let executed = plan.execute();
                    if traced("group commit sync", store.complete_sync(plan, executed)).is_ok() {
                        model.acknowledge(snapshot);
                        model.done.syncs += 1;
                        model.done.syncs_beside_checkpoint += u64::from(detached.is_some());
                    }
                }
            }
            68..78 => {
                // A sync point with appends arriving while it runs: they
                // are not covered by it.
                let snapshot = model.snapshot();
                match store.prepare_sync() {
                    Ok(plan) => {
                        append(&mut store, &mut model, &key, &mut rng)?;
                        let executed = plan.execute();
                        if traced("split sync", store.complete_sync(plan, executed)).is_ok() {
                            model.acknowledge(snapshot);
                            model.done.split_syncs += 1;
                        }
                    }
                    Err(_) => {
                        // Nothing was acknowledged; the commits stay pending
                        // for no later sync point can succeed after a
                        // failed one (the store is poisoned).
                    }
                }
            }
            78..81 => {
                let snapshot = model.snapshot();
                if traced("checkpoint", store.checkpoint()).is_ok() {
                    model.acknowledge(snapshot);
                    model.done.checkpoints += 1;
                }
            }
            81..83 if detached.is_none() => {
                // A checkpoint detached from its sync point, which completes
                // (acknowledging what it covers) before the checkpoint runs.
                let snapshot = model.snapshot();
                let prepared = store.prepare_checkpoint();
                trace(format_args!(
                    "checkpoint to detach: {:?}",
                    prepared.as_ref().err()
                ));
                if let Ok(mut plan) = prepared {
                    detached = store.detach_checkpoint(&mut plan);
                    let executed = plan.execute();
                    if traced("detached sync", store.complete_sync(plan, executed)).is_ok() {
                        model.acknowledge(snapshot);
                        model.done.syncs += 1;
                    }
                }
            }
            // One is detached already: only one runs at a time.
            81..83 => {}
            83..88 => {
                let m = model.keys.get_mut(&key).expect("a workload key");
                if m.acked_end > m.start_acked {
                    // Near the acknowledged end, so that whole sealed
                    // segments fall below it.
                    let low = m.start_acked.max(m.acked_end.saturating_sub(4));
                    let before = rng.gen_range(low..=m.acked_end);
                    m.start_max = m.start_max.max(before);
                    if let Ok(start) = traced("truncate_front", store.truncate_front(&key, before))
                    {
                        if start > m.start_acked {
                            model.done.truncations += 1;
                        }
                        m.start_acked = m.start_acked.max(start);
                        ensure!(
                            start <= before,
                            "truncate_front({before}) started the log at {start}"
                        );
                    }
                }
            }
            88..93 => read_step(&mut store, &mut model, &key)?,
            _ => {
                // A removal needs the key's records durable first.
                let snapshot = model.snapshot();
                if traced("sync", store.sync()).is_ok() {
                    model.acknowledge(snapshot);
                }
                let m = model.keys.get_mut(&key).expect("a workload key");
                match traced("remove_key", store.remove_key(&key)) {
                    Ok(()) => {
                        model.done.removals += u64::from(!m.appended.is_empty());
                        *m = KeyModel {
                            generation: m.generation + 1,
                            ..KeyModel::default()
                        };
                    }
                    // Refused before anything was written, or failed
                    // before the removal entry was durable: a failure
                    // after it poisons the store (`Store::remove_key`).
                    Err(_) if !store.is_poisoned() => {}
                    Err(_) => {
                        let mut old = std::mem::take(m);
                        let mut earlier_lives = std::mem::take(&mut old.earlier_lives);
                        let generation = old.generation + 1;
                        earlier_lives.push(old);
                        *m = KeyModel {
                            generation,
                            earlier_lives,
                            ..KeyModel::default()
                        };
                    }
                }
            }
        }
    }
    finish_detached(&mut store, &mut model, detached.take());
    let snapshot = model.snapshot();
    model.done.journal_files = store.journal_seq() + 1;
    if store.close().is_ok() {
        model.acknowledge(snapshot);
        model.done.closed = true;
    }
    Ok(model)
}

/// Runs a detached checkpoint (if any) and hands its outcome to the store,
/// as the group commit's checkpoint thread does. It acknowledges nothing:
/// the sync point it started with did.
fn finish_detached(store: &mut Store, model: &mut Model, detached: Option<Checkpoint>) {
    if let Some(checkpoint) = detached {
        let ran = checkpoint.run();
        if traced(
            "detached checkpoint",
            store.finish_checkpoint(checkpoint, ran),
        )
        .is_ok()
        {
            model.done.checkpoints += 1;
            model.done.detached_checkpoints += 1;
        }
    }
}

/// Reads `key` on the live store: every record served must be the one
/// appended at its offset, contiguous from the log start, and durable, so
/// it counts as acknowledged from now on (a poll must never see what a
/// power loss could take back: KAFKA-10101); likewise the committed offset.
pub fn read_step(store: &mut Store, model: &mut Model, key: &str) -> Result<(), String> {
    let m = model.keys.get_mut(key).expect("a workload key");
    let start = store.log_start(key);
    let records = read_key(store, key);
    trace(format_args!(
        "read {key:.8}: {:?}",
        records.as_ref().map(|r| r.len())
    ));
    if let (Ok(start), Ok(records), true) = (start, records, m.earlier_lives.is_empty()) {
        let mut expected = start;
        for (offset, bytes) in &records {
            ensure!(
                *offset == expected,
                "a read of {key:?} served offset {offset} where {expected} was next"
            );
            ensure!(
                m.appended.get(*offset as usize) == Some(bytes),
                "a read of {key:?} served a wrong record at offset {offset}"
            );
            expected += 1;
        }
        ensure!(
            expected >= m.acked_end || m.acked_end <= start,
            "a read of {key:?} ended at {expected}, before the acknowledged {}",
            m.acked_end
        );
        m.acked_end = m.acked_end.max(expected);
    }
    if let Some(committed) = store.committed(key) {
        let commit = model.commits.entry(key.to_string()).or_default();
        ensure!(
            committed <= commit.max,
            "{key:?} shows committed offset {committed}, at most {} was committed",
            commit.max
        );
        commit.acked = commit.acked.max(Some(committed));
    }
    Ok(())
}

/// Appends the next record of `key`; an error from the store is part of
/// the run, an offset other than the next one is a failure.
pub fn append(
    store: &mut Store,
    model: &mut Model,
    key: &str,
    rng: &mut StdRng,
) -> Result<(), String> {
    let m = model.keys.get_mut(key).expect("a workload key");
    let offset = m.appended.len() as u64;
    let bytes = payload(key, m.generation, offset, rng);
    let result = store.append(key, &bytes);
    trace(format_args!("append {key:.8} {offset}: {result:?}"));
    if let Ok(got) = result {
        ensure!(
            got == offset,
            "append to {key:?} took offset {got}, expected {offset}"
        );
        m.appended.push(bytes);
    }
    Ok(())
}

/// Traces `result` of step `what`.
pub fn traced<T: std::fmt::Debug>(what: &str, result: seglog::Result<T>) -> seglog::Result<T> {
    trace(format_args!("{what}: {result:?}"));
    result
}

/// Prints a workload's steps when `SEGLOG_SIM_TRACE` is set, to follow a
/// failing seed.
pub fn trace(what: std::fmt::Arguments) {
    if std::env::var_os("SEGLOG_SIM_TRACE").is_some() {
        eprintln!("{what}");
    }
}

/// Every record of `key` from its log start, or the error that stopped the read.
pub fn read_key(store: &mut Store, key: &str) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut out = Vec::new();
    store
        .read(key, 0, &mut |offset, bytes| {
            out.push((offset, bytes.to_vec()));
            true
        })
        .map_err(|e| format!("read of {key:?} failed after {} records: {e}", out.len()))?;
    Ok(out)
}

/// Checks the key's log against one life of it; `Ok` with the observed
/// model (what the store now holds, all of it durable) if it matches.
pub fn check_life(
    key: &str,
    m: &KeyModel,
    start: u64,
    next: u64,
    records: &[(u64, Vec<u8>)],
) -> Result<KeyModel, String> {
    ensure!(
        start >= m.start_acked && start <= m.start_max.max(m.start_acked),
        "{key:?}: log start {start}, acknowledged {}, at most {} attempted",
        m.start_acked,
        m.start_max
    );
    let mut expected = start;
    for (offset, bytes) in records {
        ensure!(
            *offset == expected,
            "{key:?}: offset {offset} read where {expected} was next (log start {start})"
        );
        let appended = m.appended.get(*offset as usize);
        ensure!(
            appended == Some(bytes),
            "{key:?}: offset {offset} holds {:?}, appended {:?}",
            String::from_utf8_lossy(bytes),
            appended.map(|b| String::from_utf8_lossy(b))
        );
        expected += 1;
    }
    ensure!(
        next == expected,
        "{key:?}: durable end {next}, but reads from the log start {start} ended at {expected}"
    );
    ensure!(
        next >= m.acked_end || m.acked_end <= start,
        "{key:?}: acknowledged up to offset {} but the log ends at {next} (start {start})",
        m.acked_end
    );
    let mut appended = m.appended.clone();
    appended.truncate(next as usize);
    Ok(KeyModel {
        appended,
        acked_end: next,
        start_acked: start,
        start_max: start,
        earlier_lives: Vec::new(),
        generation: m.generation,
    })
}

/// Checks everything the model requires of an open store; returns the
/// observed model, which a later power loss must keep whole (everything the
/// store serves after recovery is durable).
pub fn verify(store: &mut Store, model: &Model) -> Result<Model, String> {
    verify_store(store, model, true)
}

/// [`verify`], on a store just opened (`fresh`: nothing is pending, so the
/// next append takes the durable end) or on one a fault left with appends
/// that never became durable.
pub fn verify_store(store: &mut Store, model: &Model, fresh: bool) -> Result<Model, String> {
    let mut observed = Model {
        shape: model.shape,
        ..Model::default()
    };
    for (key, m) in &model.keys {
        let start = store
            .log_start(key)
            .map_err(|e| format!("log_start({key:?}): {e}"))?;
        let next = store
            .durable_next_offset(key)
            .map_err(|e| format!("durable_next_offset({key:?}): {e}"))?;
        let appendable = store
            .next_offset(key)
            .map_err(|e| format!("next_offset({key:?}): {e}"))?;
        ensure!(
            appendable == next || (!fresh && appendable > next),
            "{key:?}: next offset {appendable}, durable end {next}"
        );
        let records = read_key(store, key)?;
        let mut life = check_life(key, m, start, next, &records);
        // Or a removal that failed did not happen: an earlier life, whole.
        for old in m.earlier_lives.iter().rev() {
            if let Err(current) = &life {
                life = check_life(key, old, start, next, &records).map_err(|before| {
                    format!("{current}; nor a life before a removal that failed: {before}")
                });
            }
        }
        let life = life?;
        observed.keys.insert(key.clone(), life);
    }
    for (key, commit) in &model.commits {
        let got = store.committed(key);
        if let Some(acked) = commit.acked {
            ensure!(
                got.is_some_and(|got| got >= acked),
                "{key:?}: commit {acked} acknowledged, committed offset is {got:?}"
            );
        }
        ensure!(
            got.is_none_or(|got| got <= commit.max),
            "{key:?}: committed offset {got:?}, but at most {} was committed",
            commit.max
        );
        if let Some(got) = got {
            observed.commits.insert(
                key.clone(),
                CommitModel {
                    acked: Some(got),
                    max: got,
                },
            );
        }
    }
    let keys = store.keys().map_err(|e| format!("keys(): {e}"))?;
    for key in keys {
        ensure!(
            model.keys.contains_key(&key),
            "keys() lists {key:?}, never appended to"
        );
    }
    Ok(observed)
}

/// Opens `fs` and verifies it against `model`.
pub fn open_and_verify(fs: &Arc<SimFs>, model: &Model) -> Result<(Store, Model), String> {
    let mut store = open_shaped(fs, &model.shape).map_err(|e| format!("open failed: {e}"))?;
    let observed = verify(&mut store, model)?;
    Ok((store, observed))
}

/// One more append per key on the recovered `store` takes the key's next
/// offset, and survives a power loss that keeps only what is durable; the
/// store then closes cleanly and opens clean.
pub fn append_after_recovery(
    fs: &Arc<SimFs>,
    mut store: Store,
    mut model: Model,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(0);
    for (key, m) in model.keys.iter_mut() {
        let next = m.appended.len() as u64;
        let bytes = payload(key, m.generation, next, &mut rng);
        let got = store
            .append(key, &bytes)
            .map_err(|e| format!("append to {key:?} after recovery: {e}"))?;
        ensure!(
            got == next,
            "{key:?}: append after recovery took offset {got}, expected {next}"
        );
        m.appended.push(bytes);
        m.acked_end = next + 1;
    }
    store
        .sync()
        .map_err(|e| format!("sync after recovery: {e}"))?;
    drop(store);
    let image = fs.power_loss(Keep::Nothing);
    let (store, observed) = open_and_verify(&image, &model)
        .map_err(|e| format!("after the appends that followed recovery, a power loss: {e}"))?;
    store.close().map_err(|e| format!("close: {e}"))?;
    let image = image.power_loss(Keep::Nothing);
    let (store, _) =
        open_and_verify(&image, &observed).map_err(|e| format!("after a clean close: {e}"))?;
    ensure!(
        store.opened_clean(),
        "a store closed cleanly opened as unclean"
    );
    Ok(())
}

/// What one checked image cost and found, for the printed counts.
#[derive(Default)]
pub struct Counts {
    pub crash_points: u64,
    pub images: u64,
    pub recovery_crashes: u64,
    /// Crashes followed by a restart on the same disk (`kill -9`), then
    /// power losses.
    pub restarts: u64,
}

/// Checks one power-loss image against `model`: it opens and verifies;
/// then a copy of it is opened with a crash point inside recovery (the
/// open and the first reads of every key, where keys are recovered), a
/// power loss taken of that, and the result must verify too, and take one
/// more append per key that survives another power loss.
pub fn check_image(
    image: &Arc<SimFs>,
    model: &Model,
    seed: u64,
    counts: &mut Counts,
) -> Result<(), String> {
    let first = image.power_loss(Keep::Everything);
    let (store, _) = open_and_verify(&first, model)?;
    drop(store);
    counts.images += 1;
    let recovery_ops = first.ops();
    let crash = StdRng::seed_from_u64(seed).gen_range(0..recovery_ops.max(1));
    let second = image.power_loss(Keep::Everything);
    second.crash_at(crash);
    if let Ok(mut store) = open_shaped(&second, &model.shape) {
        let _ = verify(&mut store, model);
    }
    let after = second.power_loss(Keep::Random(seed));
    counts.recovery_crashes += 1;
    let (store, observed) = open_and_verify(&after, model).map_err(|e| {
        format!("after a second power loss at operation {crash} of {recovery_ops} of recovery: {e}")
    })?;
    append_after_recovery(&after, store, observed)
}

/// The crashed process's disk as the next process finds it without a
/// power loss (`kill -9`): recovery runs on written but unsynced state,
/// and whatever it then serves must survive a power loss right after
/// (the bug of serving unsynced data from recovery). Checks the restart
/// and two power losses after it.
pub fn check_restart(fs: &Arc<SimFs>, model: &Model, seed: u64) -> Result<(), String> {
    let restarted = fs.restart();
    let (store, observed) =
        open_and_verify(&restarted, model).map_err(|e| format!("after kill -9: {e}"))?;
    drop(store);
    let (served, _) = with_served(model, observed);
    for keep in [Keep::Nothing, Keep::Random(seed)] {
        let image = restarted.power_loss(keep);
        let (store, observed) = open_and_verify(&image, &served).map_err(|e| {
            format!("after kill -9, recovery and a power loss (image {keep:?}): {e}")
        })?;
        append_after_recovery(&image, store, observed)?;
    }
    Ok(())
}

/// The images checked per crash: only what was durable, everything, and
/// `random` seeded choices.
pub fn images(random: u64, seed: u64) -> Vec<Keep> {
    let mut keeps = vec![Keep::Nothing, Keep::Everything];
    keeps.extend((0..random).map(|i| Keep::Random(seed.wrapping_mul(1_000_003).wrapping_add(i))));
    keeps
}

/// Runs workload `seed` with a power loss at counted operation `crash`,
/// and checks every image in `keeps`.
pub fn crash_and_check(seed: u64, shape: Shape, crash: u64, keeps: &[Keep], counts: &mut Counts) {
    let fs = SimFs::new();
    fs.crash_at(crash);
    let model = run_workload_shaped(seed, &fs, shape).unwrap_or_else(|e| {
        panic!("workload seed {seed}, power loss at operation {crash}, during the run: {e}")
    });
    assert!(
        fs.crashed(),
        "seed {seed}: crash point {crash} was never reached"
    );
    counts.crash_points += 1;
    if let Err(e) = check_restart(&fs, &model, seed ^ crash) {
        panic!("workload seed {seed} ({shape:?}), crash at operation {crash}: {e}");
    }
    counts.restarts += 1;
    for keep in keeps {
        let image = fs.power_loss(*keep);
        let check_seed = seed
            ^ crash.rotate_left(20)
            ^ match keep {
                Keep::Random(s) => *s,
                Keep::Nothing => 1,
                Keep::Everything => 2,
            };
        if let Err(e) = check_image(&image, &model, check_seed, counts) {
            panic!(
                "workload seed {seed} ({shape:?}), power loss at operation {crash}, image {keep:?}, \
                 recovery check seed {check_seed}: {e}\nimage: {:#?}",
                image.tree()
            );
        }
    }
}

/// Counts the counted operations of workload `seed` run to its end, and
/// checks the run is replayable (the same count twice) and its end state
/// verifies.
pub fn count_ops(seed: u64) -> (u64, Done) {
    let fs = SimFs::new();
    let model = run_workload(seed, &fs).unwrap_or_else(|e| panic!("workload seed {seed}: {e}"));
    let ops = fs.ops();
    let segments = fs
        .tree()
        .iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "log"))
        .count();
    println!(
        "workload seed {seed}: {ops} counted operations, {segments} segment files at the end, {:?}",
        model.done
    );
    let again = SimFs::new();
    run_workload(seed, &again).unwrap_or_else(|e| panic!("workload seed {seed}: {e}"));
    assert_eq!(
        again.ops(),
        ops,
        "seed {seed}: two runs of one workload differ"
    );
    let mut counts = Counts::default();
    if let Err(e) = check_image(&fs.power_loss(Keep::Nothing), &model, seed, &mut counts) {
        panic!("workload seed {seed} without a crash: {e}");
    }
    (ops, model.done)
}

/// `model` with everything `observed` on a store counted as acknowledged
/// (a store serves only what is durable), and how many records that adds.
pub fn with_served(model: &Model, observed: Model) -> (Model, u64) {
    let mut served = model.clone();
    let mut beyond = 0;
    for (key, m) in served.keys.iter_mut() {
        let seen = observed.keys[key].acked_end;
        beyond += seen.saturating_sub(m.acked_end);
        m.acked_end = m.acked_end.max(seen);
    }
    for (key, commit) in observed.commits {
        let c = served.commits.entry(key).or_default();
        c.acked = c.acked.max(commit.acked);
    }
    (served, beyond)
}
