//! Idempotent producers: producer ids, and per producer and partition the
//! last batches' sequence numbers, so that a batch a client sends again
//! (its first attempt's reply was lost) is answered with the offsets it got
//! then and not appended twice.
//!
//! Everything is kept as commits of the store (`segment-format.md`,
//! "Producer state"), so it is durable by the same sync point, in the same
//! journal batch, as the records it describes: if a batch's first attempt
//! was acknowledged, its state survives a crash with it and a retry after
//! the restart is still recognised; if the crash took the records, it took
//! the state too, and the retry is appended as new.
//!
//! * `producer-ids`: the next producer id to hand out (the committed
//!   offset); ids are never reused.
//! * `producer <id> <partition key>`: that producer's state in that
//!   partition ([`ProducerState`], encoded as the commit's value).
//!
//! The rules are Kafka's (`ProducerStateManager`): a batch of an older
//! epoch than the partition last saw is fenced; a batch of a newer epoch
//! starts at sequence 0; within an epoch a batch equal to one of the last
//! [`BATCHES_KEPT`] is a duplicate, and any other must follow the last
//! sequence, or it is out of order. A producer the partition has no state
//! for (new, or expired) may start at any sequence. This module knows
//! nothing of Kafka error codes: `kafka/produce.rs` maps [`Verdict`].

use std::time::Duration;

use crate::storage::offsets::Committed;
use crate::storage::store::Store;

/// The key holding the next producer id.
pub const PRODUCER_IDS_KEY: &str = "producer-ids";

/// Batches remembered per producer and partition: Kafka's (and its
/// clients') `max.in.flight.requests.per.connection` limit for idempotent
/// producers is 5, so a retried batch is always one of the last five.
pub const BATCHES_KEPT: usize = 5;

/// How long a producer's state in a partition is kept after its last
/// batch there, by default. Kafka's `transactional.id.expiration.ms` (and
/// `producer.id.expiration.ms` before Kafka 3.4 tied it to a day) is 7
/// days: a producer idle for less, whose last reply was lost, still has
/// its retry recognised. The state is small (under 100 bytes a partition),
/// so a week of it costs little; `--producer-expiry` sets another.
pub const EXPIRY_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most producer states kept (producer and partition pairs). A producer
/// that restarts gets a new id each time, and each leaves its state behind
/// until it expires; past this many, the expiry pass lets the least
/// recently used go first (a state is about 200 bytes in memory, so this
/// bounds them to about 20 MB). A producer whose state was let go may
/// start at any sequence, as after expiry.
pub const STATES_MAX: usize = 100_000;

/// Version of the encoding of [`ProducerState`] in a commit's value.
const STATE_VERSION: u8 = 1;

/// Bytes of an encoded state before its batches: version, epoch, last
/// time, batch count.
const STATE_HEADER_BYTES: usize = 1 + 2 + 8 + 1;
/// Bytes of one encoded batch: first and last sequence, base offset.
const BATCH_BYTES: usize = 4 + 4 + 8;

/// One batch a producer appended: its sequence numbers and where its
/// records went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSeen {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
}

/// A producer's state in one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerState {
    /// The epoch of its last batch here.
    pub epoch: i16,
    /// When its last batch here was appended (ms since the Unix epoch):
    /// what expiry goes by.
    pub last_ms: u64,
    /// Its last batches here, oldest first, at most [`BATCHES_KEPT`].
    pub batches: Vec<BatchSeen>,
}

/// The sequence fields of a batch from an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequenced {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// Records in the batch (at least 1).
    pub count: u32,
}

impl Sequenced {
    /// The sequence number of the batch's last record, wrapping after
    /// `i32::MAX` to 0 as Kafka's does.
    pub fn last_seq(&self) -> i32 {
        next_seq(self.first_seq, self.count.saturating_sub(1))
    }
}

/// `seq` advanced by `by`, wrapping after `i32::MAX` to 0.
fn next_seq(seq: i32, by: u32) -> i32 {
    let wrapped = (i64::from(seq) + i64::from(by)) % (i64::from(i32::MAX) + 1);
    i32::try_from(wrapped).unwrap_or(0)
}

/// What to do with a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// A batch appended before: answer with its base offset, append nothing.
    Duplicate { base_offset: u64 },
    /// An epoch older than the partition has seen: the producer was
    /// replaced by a newer instance of itself.
    Fenced { current: i16 },
    /// A sequence that does not follow the last one.
    OutOfOrder { expected: i32 },
}

/// The store key of `producer_id`'s state in the partition `partition_key`.
pub fn state_key(producer_id: i64, partition_key: &str) -> String {
    format!("producer {producer_id} {partition_key}")
}

/// Whether `key` is a producer state's key.
pub fn is_state_key(key: &str) -> bool {
    key.starts_with("producer ")
}

impl ProducerState {
    /// The state's bytes: version, epoch, last time, then each batch (all
    /// little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_HEADER_BYTES + BATCH_BYTES * self.batches.len());
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.last_ms.to_le_bytes());
        out.push(u8::try_from(self.batches.len()).unwrap_or(u8::MAX));
        for b in &self.batches {
            out.extend_from_slice(&b.first_seq.to_le_bytes());
            out.extend_from_slice(&b.last_seq.to_le_bytes());
            out.extend_from_slice(&b.base_offset.to_le_bytes());
        }
        out
    }

    /// Decodes [`ProducerState::encode`]'s bytes, checking every field;
    /// `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<ProducerState> {
        let (&version, rest) = bytes.split_first()?;
        if version != STATE_VERSION {
            return None;
        }
        let epoch = i16::from_le_bytes(rest.get(0..2)?.try_into().ok()?);
        let last_ms = u64::from_le_bytes(rest.get(2..10)?.try_into().ok()?);
        let count = usize::from(*rest.get(10)?);
        let batches_bytes = rest.get(11..)?;
        if count > BATCHES_KEPT || batches_bytes.len() != count * BATCH_BYTES {
            return None;
        }
        let batches = batches_bytes
            .chunks_exact(BATCH_BYTES)
            .map(|b| {
                Some(BatchSeen {
                    first_seq: i32::from_le_bytes(b.get(0..4)?.try_into().ok()?),
                    last_seq: i32::from_le_bytes(b.get(4..8)?.try_into().ok()?),
                    base_offset: u64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ProducerState {
            epoch,
            last_ms,
            batches,
        })
    }

    /// What to do with `batch` given this state (Kafka's rules, above).
    pub fn verdict(&self, batch: &Sequenced) -> Verdict {
        if batch.epoch < self.epoch {
            return Verdict::Fenced {
                current: self.epoch,
            };
        }
        if batch.epoch > self.epoch {
            // A new epoch starts its sequences again.
            return if batch.first_seq == 0 {
                Verdict::Append
            } else {
                Verdict::OutOfOrder { expected: 0 }
            };
        }
        let last_seq = batch.last_seq();
        if let Some(seen) = self
            .batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == last_seq)
        {
            return Verdict::Duplicate {
                base_offset: seen.base_offset,
            };
        }
        match self.batches.last() {
            Some(last) if next_seq(last.last_seq, 1) != batch.first_seq => Verdict::OutOfOrder {
                expected: next_seq(last.last_seq, 1),
            },
            _ => Verdict::Append,
        }
    }

    /// The state after `batch` was appended at `base_offset` at `now_ms`.
    pub fn after(
        state: Option<&ProducerState>,
        batch: &Sequenced,
        base_offset: u64,
        now_ms: u64,
    ) -> ProducerState {
        let mut batches = match state {
            Some(s) if s.epoch == batch.epoch => s.batches.clone(),
            _ => Vec::new(),
        };
        batches.push(BatchSeen {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq(),
            base_offset,
        });
        if batches.len() > BATCHES_KEPT {
            batches.remove(0);
        }
        ProducerState {
            epoch: batch.epoch,
            last_ms: now_ms,
            batches,
        }
    }

    /// Whether the state is older than `expiry` at `now_ms`.
    pub fn expired(&self, now_ms: u64, expiry: Duration) -> bool {
        let expiry_ms = u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(self.last_ms) > expiry_ms
    }
}

/// `producer_id`'s state in `partition_key` as the next sync point leaves
/// it (a batch of the same producer pipelined right before this one
/// counts), unless it expired.
pub fn state_of(
    store: &Store,
    producer_id: i64,
    partition_key: &str,
    now_ms: u64,
    expiry: Duration,
) -> Option<ProducerState> {
    let committed = store.committed_latest(&state_key(producer_id, partition_key))?;
    ProducerState::decode(&committed.value).filter(|s| !s.expired(now_ms, expiry))
}

/// The commit that records `state` for `producer_id` in `partition_key`
/// (its offset the base offset of the last batch, for `seglog inspect`).
pub fn state_commit(state: &ProducerState) -> Committed {
    Committed {
        offset: state.batches.last().map_or(0, |b| b.base_offset),
        value: state.encode(),
    }
}

/// The next producer id to hand out, as the next sync point leaves it.
pub fn next_producer_id(store: &Store) -> u64 {
    store
        .committed_latest(PRODUCER_IDS_KEY)
        .map_or(0, |c| c.offset)
}

/// The producer states to remove: those expired at `now_ms`, and beyond
/// [`STATES_MAX`] the least recently used. Listed from the durable
/// commits, each judged by its latest state: a producer whose batch is
/// pending or in a sync point in flight has a fresh state that a removal
/// would undo (the caller removes them under the same lock).
pub fn to_expire(store: &Store, now_ms: u64, expiry: Duration) -> Vec<String> {
    let mut live: Vec<(u64, &str)> = Vec::new();
    let mut out = Vec::new();
    for (key, _) in store.committed_entries() {
        if !is_state_key(key) {
            continue;
        }
        let Some(latest) = store.committed_latest(key) else {
            // Removed already, not yet durably.
            continue;
        };
        match ProducerState::decode(&latest.value) {
            Some(s) if !s.expired(now_ms, expiry) => live.push((s.last_ms, key)),
            _ => out.push(key.to_string()),
        }
    }
    if live.len() > STATES_MAX {
        live.sort_unstable();
        let over = live.len() - STATES_MAX;
        out.extend(live.iter().take(over).map(|(_, key)| (*key).to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first_seq: i32, count: u32) -> Sequenced {
        Sequenced {
            producer_id: 7,
            epoch,
            first_seq,
            count,
        }
    }

    fn state_after(batches: &[(Sequenced, u64)]) -> ProducerState {
        let mut state: Option<ProducerState> = None;
        for (b, offset) in batches {
            state = Some(ProducerState::after(state.as_ref(), b, *offset, 1));
        }
        state.expect("a batch")
    }

    #[test]
    fn a_retry_of_any_of_the_last_five_batches_is_a_duplicate_with_its_offset() {
        let batches: Vec<(Sequenced, u64)> = (0..7)
            .map(|i| (batch(0, i * 10, 10), 100 + i as u64 * 10))
            .collect();
        let state = state_after(&batches);
        assert_eq!(state.batches.len(), BATCHES_KEPT);
        for (b, offset) in &batches[2..] {
            assert_eq!(
                state.verdict(b),
                Verdict::Duplicate {
                    base_offset: *offset
                }
            );
        }
        // Older than the last five: neither known nor next.
        assert_eq!(
            state.verdict(&batches[1].0),
            Verdict::OutOfOrder { expected: 70 }
        );
        assert_eq!(state.verdict(&batch(0, 70, 3)), Verdict::Append);
    }

    #[test]
    fn a_gap_is_out_of_order_and_a_same_start_of_another_length_is_not_a_duplicate() {
        let state = state_after(&[(batch(0, 0, 5), 0)]);
        assert_eq!(
            state.verdict(&batch(0, 6, 1)),
            Verdict::OutOfOrder { expected: 5 }
        );
        assert_eq!(
            state.verdict(&batch(0, 0, 4)),
            Verdict::OutOfOrder { expected: 5 }
        );
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_starts_at_zero() {
        let state = state_after(&[(batch(3, 0, 5), 0)]);
        assert_eq!(
            state.verdict(&batch(2, 5, 1)),
            Verdict::Fenced { current: 3 }
        );
        assert_eq!(
            state.verdict(&batch(4, 5, 1)),
            Verdict::OutOfOrder { expected: 0 }
        );
        assert_eq!(state.verdict(&batch(4, 0, 1)), Verdict::Append);
        let bumped = ProducerState::after(Some(&state), &batch(4, 0, 1), 9, 2);
        assert_eq!(
            bumped.batches.len(),
            1,
            "a new epoch forgets the old batches"
        );
    }

    #[test]
    fn sequences_wrap_after_the_largest_i32() {
        let b = batch(0, i32::MAX - 1, 3);
        assert_eq!(b.last_seq(), 0);
        let state = state_after(&[(b, 0)]);
        assert_eq!(state.verdict(&batch(0, 1, 1)), Verdict::Append);
    }

    #[test]
    fn the_encoding_round_trips_and_refuses_anything_else() {
        let state = state_after(&[(batch(2, 0, 5), 10), (batch(2, 5, 5), 15)]);
        let bytes = state.encode();
        assert_eq!(ProducerState::decode(&bytes), Some(state));
        for cut in 0..bytes.len() {
            assert_eq!(ProducerState::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(ProducerState::decode(&longer), None);
        let mut version = bytes;
        version[0] = 9;
        assert_eq!(ProducerState::decode(&version), None);
    }

    #[test]
    fn a_state_expires_after_its_time() {
        let state = state_after(&[(batch(0, 0, 1), 0)]);
        assert!(!state.expired(1 + 1000, Duration::from_secs(1)));
        assert!(state.expired(1 + 1001, Duration::from_secs(1)));
    }

    /// A state past its expiry is neither served nor kept: `state_of`
    /// takes it for none (the producer may start at any sequence), and the
    /// expiry pass lists it for removal, other commits untouched.
    #[test]
    fn an_expired_state_is_forgotten_and_listed_for_removal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path(), Default::default()).expect("store");
        let expiry = Duration::from_secs(10);
        for (producer_id, last_ms) in [(1, 1_000), (2, 20_000)] {
            let state = ProducerState {
                epoch: 0,
                last_ms,
                batches: vec![BatchSeen {
                    first_seq: 0,
                    last_seq: 0,
                    base_offset: 0,
                }],
            };
            store
                .change_committed(&state_key(producer_id, "t.1-0"), Some(state_commit(&state)))
                .expect("commit");
        }
        store
            .change_committed(
                PRODUCER_IDS_KEY,
                Some(Committed {
                    offset: 3,
                    value: Vec::new(),
                }),
            )
            .expect("commit");
        store.sync().expect("sync");
        let now = 25_000;
        assert_eq!(state_of(&store, 1, "t.1-0", now, expiry), None);
        assert!(state_of(&store, 2, "t.1-0", now, expiry).is_some());
        assert_eq!(to_expire(&store, now, expiry), vec![state_key(1, "t.1-0")]);
        assert_eq!(next_producer_id(&store), 3);
    }

    fn one_batch_state(epoch: i16, seq: i32, offset: u64, last_ms: u64) -> Committed {
        state_commit(&ProducerState {
            epoch,
            last_ms,
            batches: vec![BatchSeen {
                first_seq: seq,
                last_seq: seq,
                base_offset: offset,
            }],
        })
    }

    /// InitProducerId's read-modify-write, as `kafka/producers.rs` does it.
    fn hand_out_id(store: &mut Store) -> u64 {
        let id = next_producer_id(store);
        store
            .change_committed(
                PRODUCER_IDS_KEY,
                Some(Committed {
                    offset: id + 1,
                    value: Vec::new(),
                }),
            )
            .expect("commit");
        id
    }

    /// An id whose change is in a sync point in flight (the group commit
    /// fdatasyncs without the store's lock) is not handed out again.
    #[test]
    fn an_id_in_a_sync_point_in_flight_is_not_handed_out_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path(), Default::default()).expect("store");
        let first = hand_out_id(&mut store);
        let plan = store.prepare_sync().expect("prepare");
        let second = hand_out_id(&mut store);
        assert_ne!(first, second);
        let executed = plan.execute();
        store.complete_sync(plan, executed).expect("complete");
        store.sync().expect("sync");
        assert_eq!(next_producer_id(&store), second + 1);
    }

    /// Produce's read-modify-write of a batch, as `kafka/produce.rs` does
    /// it: the verdict, then the append and the state after it.
    fn produce(store: &mut Store, batch: &Sequenced, now: u64) -> Verdict {
        let key = "t.1-0";
        let state = state_of(store, batch.producer_id, key, now, EXPIRY_DEFAULT);
        let verdict = state.as_ref().map_or(Verdict::Append, |s| s.verdict(batch));
        if verdict == Verdict::Append {
            let offset = store.append(key, b"{}").expect("append");
            let after = ProducerState::after(state.as_ref(), batch, offset, now);
            store
                .change_committed(
                    &state_key(batch.producer_id, key),
                    Some(state_commit(&after)),
                )
                .expect("commit");
        }
        verdict
    }

    /// A pipelined producer (five requests in flight): its second batch is
    /// in a sync point in flight when the third arrives, which must be
    /// judged against the second's state, not the durable first's.
    #[test]
    fn a_pipelined_batch_follows_one_in_a_sync_point_in_flight() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path(), Default::default()).expect("store");
        assert_eq!(produce(&mut store, &batch(0, 0, 1), 1), Verdict::Append);
        store.sync().expect("sync");
        assert_eq!(produce(&mut store, &batch(0, 1, 1), 1), Verdict::Append);
        let plan = store.prepare_sync().expect("prepare");
        assert_eq!(produce(&mut store, &batch(0, 2, 1), 1), Verdict::Append);
        let second = store.prepare_sync().expect("prepare");
        assert_eq!(produce(&mut store, &batch(0, 3, 1), 1), Verdict::Append);
        assert_eq!(
            produce(&mut store, &batch(0, 2, 1), 1),
            Verdict::Duplicate { base_offset: 2 },
            "a retry of the batch in flight"
        );
        for plan in [plan, second] {
            let executed = plan.execute();
            store.complete_sync(plan, executed).expect("complete");
        }
        store.sync().expect("sync");
        let state = state_of(&store, 7, "t.1-0", 1, EXPIRY_DEFAULT).expect("state");
        assert_eq!(state.batches.last().map(|b| b.last_seq), Some(3));
    }

    /// The expiry pass judges a state by its latest change: a producer
    /// whose durable state expired but whose fresh batch is pending or in
    /// a sync point in flight keeps its state.
    #[test]
    fn the_expiry_pass_spares_a_state_refreshed_but_not_yet_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path(), Default::default()).expect("store");
        let expiry = Duration::from_secs(10);
        let (pending, in_flight) = (state_key(1, "t.1-0"), state_key(2, "t.1-0"));
        for key in [&pending, &in_flight] {
            store
                .change_committed(key, Some(one_batch_state(0, 0, 0, 1_000)))
                .expect("commit");
        }
        store.sync().expect("sync");
        let now = 60_000;
        assert_eq!(to_expire(&store, now, expiry).len(), 2, "both expired");
        store
            .change_committed(&in_flight, Some(one_batch_state(0, 1, 1, now)))
            .expect("commit");
        let plan = store.prepare_sync().expect("prepare");
        store
            .change_committed(&pending, Some(one_batch_state(0, 1, 2, now)))
            .expect("commit");
        assert_eq!(to_expire(&store, now, expiry), Vec::<String>::new());
        let executed = plan.execute();
        store.complete_sync(plan, executed).expect("complete");
    }
}
