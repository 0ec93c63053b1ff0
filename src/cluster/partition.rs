//! How a partition's Raft group applies its appends: the records all or
//! none, and an idempotent producer's batch first judged against the
//! producer's state in the partition by Kafka's rules
//! ([`crate::broker::producers`], as a single node does), the new state
//! recorded right after the records, in the same sync point. Every replica
//! applies the same entries in the same order to the same state, so every
//! one reaches the same verdict: a retry of a batch that was committed is
//! answered with its first offset by whichever node leads by then, and
//! appended again by none.
//!
//! The state records the time the proposer took the batch, never a
//! replica's clock. States do not expire on a cluster yet (a single node
//! drops a producer's after `--producer-expiry` without a write): expiry
//! must be an entry of the log, so that every replica drops the same
//! states at the same point.

use std::time::Duration;

use crate::broker::cluster::Produced;
use crate::broker::producers::{self, ProducerState, Sequenced, Verdict};
use crate::broker::{Error, Result as BrokerResult, Written};
use crate::raft::groups::{ProposeError, Submitted};
use crate::raft::state_machine::Appender;
use crate::raft::types::{Bytes64, Op, OpResult, Sequence, SequenceRefusal};
use crate::storage::store::Store;

/// Bytes `records` take in a Raft entry's JSON: each a base64 string, its
/// quotes and a comma.
pub fn entry_bytes(records: &[Vec<u8>]) -> usize {
    records.iter().map(|r| r.len().div_ceil(3) * 4 + 3).sum()
}

/// The operation that appends `records` to `key` at `at_ms`.
pub fn append_op(key: &str, records: Vec<Vec<u8>>, sequence: Option<Sequence>, at_ms: u64) -> Op {
    Op::Append {
        key: key.to_string(),
        records: records.into_iter().map(Bytes64).collect(),
        sequence,
        at_ms,
    }
}

/// A batch's sequence as the log carries it.
pub fn sequence(batch: Sequenced) -> Sequence {
    Sequence {
        producer_id: batch.producer_id,
        epoch: batch.epoch,
        first_seq: batch.first_seq,
        count: batch.count,
    }
}

/// The outcome of a produce from its proposals (a batch's records, in
/// order, with how many each carries), each waited for at most
/// `patience`: the first record's offset, or why none or not all of them
/// were committed, or why their offsets are not consecutive.
pub async fn produced(
    submitted: Vec<(u64, Submitted)>,
    patience: Duration,
) -> BrokerResult<Produced> {
    let proposals = submitted.len();
    let mut first = None;
    let mut next = None;
    for (i, (count, proposal)) in submitted.into_iter().enumerate() {
        let outcome = match tokio::time::timeout(patience, proposal).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ProposeError::Unknown(format!(
                "the partition's group did not commit the records within {patience:?} (is this \
                 node, its leader, cut off from the other replicas?)"
            ))),
        };
        let results = match outcome {
            Ok((_, results)) => results,
            Err(e) if i == 0 => return Err(refusal(e)),
            Err(e) => {
                return Err(Error::Unavailable {
                    why: format!(
                        "{i} of the batch's {proposals} proposals were committed, the others may \
                         or may not be: {}",
                        refusal(e)
                    ),
                    written: Written::Maybe,
                });
            }
        };
        match results.as_slice() {
            [OpResult::Offset(base)] => {
                if next.is_some_and(|n| n != *base) {
                    // Another proposal took entries between them (a
                    // forwarded or HTTP one): written, but not as one run.
                    return Err(Error::Unavailable {
                        why: "the batch's records were committed, but not at consecutive \
                              offsets (another write came between its proposals)"
                            .into(),
                        written: Written::Maybe,
                    });
                }
                first.get_or_insert(*base);
                next = Some(base + count);
            }
            [OpResult::Duplicate(base)] => return Ok(Produced::Duplicate(*base)),
            [OpResult::Refused(SequenceRefusal::Fenced { current })] => {
                return Ok(Produced::Fenced { current: *current });
            }
            [OpResult::Refused(SequenceRefusal::OutOfOrder { expected })] => {
                return Ok(Produced::OutOfOrder {
                    expected: *expected,
                });
            }
            other => {
                return Err(Error::Internal(format!(
                    "an append was applied with the results {other:?}"
                )));
            }
        }
    }
    first
        .map(Produced::Appended)
        .ok_or_else(|| Error::Internal("a produce without records".into()))
}

/// A proposal to a partition's group that failed, as the broker's error:
/// a leader gone is for the client to find the new one (Kafka's
/// NOT_LEADER_OR_FOLLOWER), an outcome unknown for it to retry.
fn refusal(e: ProposeError) -> Error {
    match e {
        ProposeError::NotLeader(leader) => Error::NotLeader(format!(
            "the partition's leadership moved (to {}) before the records were appended",
            leader.map_or_else(|| "no node yet".to_string(), |l| format!("node {l}"))
        )),
        ProposeError::NoGroup(why) => Error::NotLeader(why),
        ProposeError::Unknown(why) => Error::Unavailable {
            why: format!("the records may or may not be committed: {why}"),
            written: Written::Maybe,
        },
        ProposeError::Failed { appended, why } => Error::Unavailable {
            why,
            written: if appended {
                Written::Maybe
            } else {
                Written::No
            },
        },
    }
}

/// The appender of every partition group.
pub struct PartitionAppender;

impl Appender for PartitionAppender {
    fn append(
        &self,
        store: &mut Store,
        key: &str,
        records: &[&[u8]],
        sequence: Option<Sequence>,
        at_ms: u64,
    ) -> Result<OpResult, String> {
        let Some(sequence) = sequence else {
            return store
                .append_all(key, records)
                .map(OpResult::Offset)
                .map_err(|e| e.to_string());
        };
        let batch = Sequenced {
            producer_id: sequence.producer_id,
            epoch: sequence.epoch,
            first_seq: sequence.first_seq,
            count: sequence.count,
        };
        if usize::try_from(batch.count).ok() != Some(records.len()) {
            // The proposer builds both from one batch: a bug, not input.
            return Err(format!(
                "a batch of {} records whose sequence counts {}",
                records.len(),
                batch.count
            ));
        }
        // Never expired here (see the module's comment).
        let state = producers::state_of(store, batch.producer_id, key, at_ms, Duration::MAX);
        let verdict = state
            .as_ref()
            .map_or(Verdict::Append, |state| state.verdict(&batch));
        Ok(match verdict {
            Verdict::Duplicate { base_offset } => OpResult::Duplicate(base_offset),
            Verdict::Fenced { current } => OpResult::Refused(SequenceRefusal::Fenced { current }),
            Verdict::OutOfOrder { expected } => {
                OpResult::Refused(SequenceRefusal::OutOfOrder { expected })
            }
            Verdict::Append => {
                let base = store.append_all(key, records).map_err(|e| e.to_string())?;
                let after = ProducerState::after(state.as_ref(), &batch, base, at_ms);
                store
                    .change_committed_after(
                        &producers::state_key(batch.producer_id, key),
                        Some(producers::state_commit(&after)),
                        key,
                    )
                    .map_err(|e| format!("recording the producer's state: {e}"))?;
                OpResult::Offset(base)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::StoreConfig;

    fn sequence(epoch: i16, first_seq: i32, count: u32) -> Option<Sequence> {
        Some(Sequence {
            producer_id: 7,
            epoch,
            first_seq,
            count,
        })
    }

    /// Kafka's rules at apply: a batch appends once, its retry is answered
    /// with its offset, a gap and an older epoch are refused, and nothing
    /// refused or repeated is appended.
    #[test]
    fn an_idempotent_producers_batches_append_once() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut store = Store::open(dir.path(), StoreConfig::default()).expect("a store");
        let key = "t.0";
        let two: [&[u8]; 2] = [b"a", b"b"];
        let apply = |store: &mut Store, records: &[&[u8]], sequence| {
            PartitionAppender
                .append(store, key, records, sequence, 1_000)
                .expect("an apply")
        };
        assert_eq!(
            apply(&mut store, &two, sequence(0, 0, 2)),
            OpResult::Offset(0)
        );
        assert_eq!(
            apply(&mut store, &two, sequence(0, 0, 2)),
            OpResult::Duplicate(0)
        );
        assert_eq!(
            apply(&mut store, &two, sequence(0, 5, 2)),
            OpResult::Refused(SequenceRefusal::OutOfOrder { expected: 2 })
        );
        assert_eq!(
            apply(&mut store, &two, sequence(0, 2, 2)),
            OpResult::Offset(2)
        );
        assert_eq!(
            apply(&mut store, &two, sequence(1, 0, 2)),
            OpResult::Offset(4)
        );
        assert_eq!(
            apply(&mut store, &two, sequence(0, 4, 2)),
            OpResult::Refused(SequenceRefusal::Fenced { current: 1 })
        );
        assert_eq!(apply(&mut store, &two, None), OpResult::Offset(6));
        assert_eq!(store.next_offset(key).expect("the end"), 8);
        assert!(
            PartitionAppender
                .append(&mut store, key, &two, sequence(1, 2, 3), 1_000)
                .is_err(),
            "a count that is not the records' is a bug, refused"
        );
        assert_eq!(store.next_offset(key).expect("the end"), 8);
    }
}
