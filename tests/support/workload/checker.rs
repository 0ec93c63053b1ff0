//! The checker: a pure function from a history and the final reads to the anomalies found.
//!
//! It follows the anomalies Jepsen's kafka checker fails a Maelstrom run for, specialised to our
//! log, whose offsets are dense (0, 1, 2, ... with no holes). Density is what makes "an offset
//! known to exist" simple: every offset at or below the highest one observed for a key (in an
//! acknowledged send, a poll, or a final read) exists.
//!
//! A cluster must behave as one log, so its history is checked exactly like a lone node's, with
//! everything every node returned gathered together: two nodes returning different messages at
//! one offset are `inconsistent-offsets`. Two things differ. Each node's final read must hold
//! every record known to exist (`not-replicated` names the node that lacks one), which is
//! stricter than Jepsen, which is content if any process saw it; and listings of committed
//! offsets may lag during the run (see [`CommitRule`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use super::history::{FinalRead, NodeRead, Operation, Outcome, Record, Request, Response};

/// Every kind of anomaly the checker reports, one per distinct way the node can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    MalformedReply,
    Duplicate,
    InconsistentOffsets,
    UnsentValue,
    G1a,
    NonmonotonicSend,
    IntNonmonotonicPoll,
    PollStartsBelow,
    IntPollSkip,
    PollSkip,
    Lost,
    PolledMissing,
    NotReplicated,
    CommitRegression,
}

impl AnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::MalformedReply => "malformed-reply",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::InconsistentOffsets => "inconsistent-offsets",
            AnomalyKind::UnsentValue => "unsent-value",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::NonmonotonicSend => "nonmonotonic-send",
            AnomalyKind::IntNonmonotonicPoll => "int-nonmonotonic-poll",
            AnomalyKind::PollStartsBelow => "poll-starts-below",
            AnomalyKind::IntPollSkip => "int-poll-skip",
            AnomalyKind::PollSkip => "poll-skip",
            AnomalyKind::Lost => "lost",
            AnomalyKind::PolledMissing => "polled-missing",
            AnomalyKind::NotReplicated => "not-replicated",
            AnomalyKind::CommitRegression => "commit-regression",
        }
    }
}

/// One anomaly, with what is needed to find it in the history (`op` fields are history indices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A reply that breaks the protocol.
    MalformedReply { op: usize, reason: String },
    /// One value at two or more offsets.
    Duplicate {
        key: String,
        value: u64,
        offsets: Vec<u64>,
    },
    /// Two or more values at one offset.
    InconsistentOffsets {
        key: String,
        offset: u64,
        values: Vec<u64>,
    },
    /// A value read from a key that no client ever sent to that key.
    UnsentValue {
        key: String,
        offset: u64,
        value: u64,
    },
    /// A value read whose send got a definite error (an aborted write was read).
    G1a {
        key: String,
        value: u64,
        send_op: usize,
    },
    /// Send `earlier_op` was acknowledged before send `later_op` began, yet got a higher offset.
    NonmonotonicSend {
        key: String,
        earlier_op: usize,
        earlier_offset: u64,
        later_op: usize,
        later_offset: u64,
    },
    /// Offsets within one poll of one key that do not strictly increase.
    IntNonmonotonicPoll {
        op: usize,
        key: String,
        prev: u64,
        next: u64,
    },
    /// A poll whose first offset is below the one asked for.
    PollStartsBelow {
        op: usize,
        key: String,
        asked: u64,
        first: u64,
    },
    /// A poll with a hole between two consecutive offsets of one key.
    IntPollSkip {
        op: usize,
        key: String,
        prev: u64,
        next: u64,
    },
    /// A poll starting above the offset asked for, though that offset is known to exist.
    PollSkip {
        op: usize,
        key: String,
        asked: u64,
        first: u64,
    },
    /// An acknowledged send whose value is not in the final read.
    Lost {
        key: String,
        value: u64,
        offset: u64,
        send_op: usize,
    },
    /// A record some poll returned that is not in the final read.
    PolledMissing {
        key: String,
        value: u64,
        offset: u64,
        poll_op: usize,
    },
    /// A record known to exist (acknowledged by send `op`, or returned by poll `op`) that some
    /// node's final read has and `node`'s final read lacks: that node never caught up.
    NotReplicated {
        node: String,
        key: String,
        value: u64,
        offset: u64,
        op: usize,
    },
    /// A committed offset listed below one acknowledged before the listing began.
    CommitRegression {
        key: String,
        list_op: usize,
        acked: u64,
        listed: Option<u64>,
    },
}

impl Anomaly {
    pub fn kind(&self) -> AnomalyKind {
        match self {
            Anomaly::MalformedReply { .. } => AnomalyKind::MalformedReply,
            Anomaly::Duplicate { .. } => AnomalyKind::Duplicate,
            Anomaly::InconsistentOffsets { .. } => AnomalyKind::InconsistentOffsets,
            Anomaly::UnsentValue { .. } => AnomalyKind::UnsentValue,
            Anomaly::G1a { .. } => AnomalyKind::G1a,
            Anomaly::NonmonotonicSend { .. } => AnomalyKind::NonmonotonicSend,
            Anomaly::IntNonmonotonicPoll { .. } => AnomalyKind::IntNonmonotonicPoll,
            Anomaly::PollStartsBelow { .. } => AnomalyKind::PollStartsBelow,
            Anomaly::IntPollSkip { .. } => AnomalyKind::IntPollSkip,
            Anomaly::PollSkip { .. } => AnomalyKind::PollSkip,
            Anomaly::Lost { .. } => AnomalyKind::Lost,
            Anomaly::PolledMissing { .. } => AnomalyKind::PolledMissing,
            Anomaly::NotReplicated { .. } => AnomalyKind::NotReplicated,
            Anomaly::CommitRegression { .. } => AnomalyKind::CommitRegression,
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {self:?}", self.kind().name())
    }
}

/// Counts anomalies per kind, for the summary line.
pub fn count_by_kind(anomalies: &[Anomaly]) -> BTreeMap<AnomalyKind, usize> {
    let mut counts = BTreeMap::new();
    for anomaly in anomalies {
        *counts.entry(anomaly.kind()).or_insert(0) += 1;
    }
    counts
}

/// What a listing of committed offsets must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitRule {
    /// Every listing shows, per key, at least the highest commit acknowledged before it began:
    /// a lone node answers from the one journal its commits went to.
    Linearizable,
    /// Only listings begun at or after `final_ns` must. A cluster may answer a listing from a
    /// replica that has not yet heard of a commit made through another node; Jepsen's kafka
    /// checker accepts that (it does not check listings: a stale offset only makes a client
    /// read again what it already processed). Once the cluster has settled, every node must
    /// list what was acknowledged.
    Eventual {
        /// When the final phase began, in history nanoseconds.
        final_ns: u64,
    },
}

/// The node name a lone node's final read is checked under.
const LONE_NODE: &str = "n0";

/// Checks `history` against `final_read` and returns every anomaly found, grouped by kind.
pub fn check(history: &[Operation], final_read: &FinalRead) -> Vec<Anomaly> {
    check_inner(
        history,
        Some(&[(LONE_NODE, final_read)]),
        CommitRule::Linearizable,
    )
}

/// Checks a history that has no final read (the run broke off before it): every check except
/// those that compare against the final read.
pub fn check_without_final_read(history: &[Operation]) -> Vec<Anomaly> {
    check_inner(history, None, CommitRule::Linearizable)
}

/// Checks a cluster's history against every node's final reads (`None` if the run broke off
/// before them).
pub fn check_cluster(
    history: &[Operation],
    final_reads: Option<&[NodeRead]>,
    commits: CommitRule,
) -> Vec<Anomaly> {
    let reads: Option<Vec<(&str, &FinalRead)>> = final_reads.map(|reads| {
        reads
            .iter()
            .map(|read| (read.node.as_str(), &read.read))
            .collect()
    });
    check_inner(history, reads.as_deref(), commits)
}

/// One final read and the node it came from.
type Read<'a> = (&'a str, &'a FinalRead);

fn check_inner(
    history: &[Operation],
    final_reads: Option<&[Read<'_>]>,
    commits: CommitRule,
) -> Vec<Anomaly> {
    let observed = Observations::gather(history, final_reads.unwrap_or_default());
    let mut anomalies = Vec::new();
    check_malformed(history, &mut anomalies);
    check_offsets(&observed, &mut anomalies);
    check_values(history, &observed, &mut anomalies);
    check_send_order(history, &mut anomalies);
    check_polls(history, &observed, &mut anomalies);
    if let Some(final_reads) = final_reads {
        check_final_reads(history, final_reads, &mut anomalies);
    }
    check_commits(history, commits, &mut anomalies);
    anomalies
}

/// The highest offset observed per key, in acknowledged sends and successful polls: what a
/// final read must reach, as Jepsen's final polls wait to catch up to it.
pub fn known_offsets(history: &[Operation]) -> BTreeMap<String, u64> {
    Observations::gather(history, &[])
        .keys
        .iter()
        .filter_map(|(key, observations)| Some((key.clone(), observations.max_offset()?)))
        .collect()
}

/// Per node, the acknowledged sends missing from any of its final reads: zero everywhere once
/// the cluster has converged.
pub fn missing_acknowledged(history: &[Operation], reads: &[NodeRead]) -> BTreeMap<String, usize> {
    let acknowledged: Vec<(&str, u64)> = history
        .iter()
        .filter_map(|op| match (&op.request, ok_response(op)) {
            (Request::Send { key, value }, Some(Response::Send { .. })) => {
                Some((key.as_str(), *value))
            }
            _ => None,
        })
        .collect();
    let mut missing: BTreeMap<&str, BTreeSet<(&str, u64)>> = BTreeMap::new();
    for read in reads {
        let values = values_by_key(&read.read);
        let node_missing = missing.entry(read.node.as_str()).or_default();
        for &(key, value) in &acknowledged {
            if !values
                .get(key)
                .is_some_and(|values| values.contains(&value))
            {
                node_missing.insert((key, value));
            }
        }
    }
    missing
        .into_iter()
        .map(|(node, values)| (node.to_owned(), values.len()))
        .collect()
}

fn values_by_key(read: &FinalRead) -> BTreeMap<&str, BTreeSet<u64>> {
    read.logs
        .iter()
        .map(|(key, records)| (key.as_str(), records.iter().map(|&(_, v)| v).collect()))
        .collect()
}

/// Where one value was seen: from an acknowledged send, or read (by a poll or the final read).
#[derive(Default)]
struct KeyObservations {
    /// Offset to the values seen there.
    values_at: BTreeMap<u64, BTreeSet<u64>>,
    /// Value to the offsets it was seen at.
    offsets_of: BTreeMap<u64, BTreeSet<u64>>,
    /// (offset, value) pairs that were read, as opposed to only acknowledged by a send.
    read: BTreeSet<Record>,
}

impl KeyObservations {
    fn add(&mut self, (offset, value): Record) {
        self.values_at.entry(offset).or_default().insert(value);
        self.offsets_of.entry(value).or_default().insert(offset);
    }

    /// The highest offset observed; in a dense log every offset up to it exists.
    fn max_offset(&self) -> Option<u64> {
        self.values_at.keys().next_back().copied()
    }
}

/// Everything observed per key.
struct Observations {
    keys: BTreeMap<String, KeyObservations>,
}

impl Observations {
    fn gather(history: &[Operation], final_reads: &[Read<'_>]) -> Self {
        let mut keys: BTreeMap<String, KeyObservations> = BTreeMap::new();
        for op in history {
            match (&op.request, ok_response(op)) {
                (Request::Send { key, value }, Some(Response::Send { offset })) => {
                    keys.entry(key.clone()).or_default().add((*offset, *value));
                }
                (Request::Poll { .. }, Some(Response::Poll { msgs })) => {
                    for (key, records) in msgs {
                        let observations = keys.entry(key.clone()).or_default();
                        for &record in records {
                            observations.add(record);
                            observations.read.insert(record);
                        }
                    }
                }
                _ => {}
            }
        }
        for (key, records) in final_reads.iter().flat_map(|(_, read)| &read.logs) {
            let observations = keys.entry(key.clone()).or_default();
            for &record in records {
                observations.add(record);
                observations.read.insert(record);
            }
        }
        Observations { keys }
    }

    fn known_max_offset(&self, key: &str) -> Option<u64> {
        self.keys.get(key).and_then(KeyObservations::max_offset)
    }
}

fn ok_response(op: &Operation) -> Option<&Response> {
    match &op.outcome {
        Outcome::Ok { response } => Some(response),
        _ => None,
    }
}

fn check_malformed(history: &[Operation], anomalies: &mut Vec<Anomaly>) {
    for op in history {
        if let Outcome::Malformed { reason } = &op.outcome {
            anomalies.push(Anomaly::MalformedReply {
                op: op.index,
                reason: reason.clone(),
            });
        }
    }
}

/// Duplicates and inconsistent offsets: the value-to-offset relation must be one-to-one.
fn check_offsets(observed: &Observations, anomalies: &mut Vec<Anomaly>) {
    for (key, observations) in &observed.keys {
        for (value, offsets) in &observations.offsets_of {
            if offsets.len() > 1 {
                anomalies.push(Anomaly::Duplicate {
                    key: key.clone(),
                    value: *value,
                    offsets: offsets.iter().copied().collect(),
                });
            }
        }
        for (offset, values) in &observations.values_at {
            if values.len() > 1 {
                anomalies.push(Anomaly::InconsistentOffsets {
                    key: key.clone(),
                    offset: *offset,
                    values: values.iter().copied().collect(),
                });
            }
        }
    }
}

/// Every value read must come from a send to that key whose outcome was not a definite failure.
fn check_values(history: &[Operation], observed: &Observations, anomalies: &mut Vec<Anomaly>) {
    let mut sends: HashMap<(&str, u64), &Operation> = HashMap::new();
    for op in history {
        if let Request::Send { key, value } = &op.request {
            sends.insert((key.as_str(), *value), op);
        }
    }
    for (key, observations) in &observed.keys {
        let mut reported = BTreeSet::new();
        for &(offset, value) in &observations.read {
            if !reported.insert(value) {
                continue;
            }
            match sends.get(&(key.as_str(), value)) {
                None => anomalies.push(Anomaly::UnsentValue {
                    key: key.clone(),
                    offset,
                    value,
                }),
                Some(send) if matches!(send.outcome, Outcome::Fail { .. }) => {
                    anomalies.push(Anomaly::G1a {
                        key: key.clone(),
                        value,
                        send_op: send.index,
                    });
                }
                Some(_) => {}
            }
        }
    }
}

/// An acknowledged send to a key that finished before another began must get a lower offset.
fn check_send_order(history: &[Operation], anomalies: &mut Vec<Anomaly>) {
    let mut sends_by_key: BTreeMap<&str, Vec<(&Operation, u64)>> = BTreeMap::new();
    for op in history {
        if let (Request::Send { key, .. }, Some(Response::Send { offset })) =
            (&op.request, ok_response(op))
        {
            sends_by_key.entry(key).or_default().push((op, *offset));
        }
    }
    for (key, sends) in sends_by_key {
        let mut by_invoke = sends.clone();
        by_invoke.sort_by_key(|(op, _)| op.invoke_ns);
        let mut by_complete = sends;
        by_complete.sort_by_key(|(op, _)| op.complete_ns);
        // Sweep: for each send in invoke order, the highest offset among sends completed before it.
        let mut completed = by_complete.into_iter().peekable();
        let mut highest: Option<(&Operation, u64)> = None;
        for (later, later_offset) in by_invoke {
            while let Some((earlier, offset)) =
                completed.next_if(|(op, _)| op.complete_ns < later.invoke_ns)
            {
                if highest.is_none_or(|(_, max)| offset > max) {
                    highest = Some((earlier, offset));
                }
            }
            if let Some((earlier, earlier_offset)) = highest
                && earlier_offset > later_offset
            {
                anomalies.push(Anomaly::NonmonotonicSend {
                    key: key.to_owned(),
                    earlier_op: earlier.index,
                    earlier_offset,
                    later_op: later.index,
                    later_offset,
                });
            }
        }
    }
}

/// Each key's records in a poll must be the contiguous run starting at the offset asked for.
fn check_polls(history: &[Operation], observed: &Observations, anomalies: &mut Vec<Anomaly>) {
    for op in history {
        let (Request::Poll { offsets }, Some(Response::Poll { msgs })) =
            (&op.request, ok_response(op))
        else {
            continue;
        };
        for (key, records) in msgs {
            if let (Some(&asked), Some(&(first, _))) = (offsets.get(key), records.first()) {
                if first < asked {
                    anomalies.push(Anomaly::PollStartsBelow {
                        op: op.index,
                        key: key.clone(),
                        asked,
                        first,
                    });
                } else if first > asked
                    && observed
                        .known_max_offset(key)
                        .is_some_and(|max| asked <= max)
                {
                    anomalies.push(Anomaly::PollSkip {
                        op: op.index,
                        key: key.clone(),
                        asked,
                        first,
                    });
                }
            }
            for pair in records.windows(2) {
                let [(prev, _), (next, _)] = pair else {
                    continue;
                };
                let (prev, next) = (*prev, *next);
                if next <= prev {
                    anomalies.push(Anomaly::IntNonmonotonicPoll {
                        op: op.index,
                        key: key.clone(),
                        prev,
                        next,
                    });
                } else if next != prev + 1 {
                    anomalies.push(Anomaly::IntPollSkip {
                        op: op.index,
                        key: key.clone(),
                        prev,
                        next,
                    });
                }
            }
        }
    }
}

/// Everything acknowledged or read during the run must still be there after the last restart, in
/// every node's final read. Missing from all of them, it is `lost` (or `polled-missing`); missing
/// from some, `not-replicated` on each node that lacks it.
fn check_final_reads(history: &[Operation], reads: &[Read<'_>], anomalies: &mut Vec<Anomaly>) {
    let reads = FinalValues::new(reads);
    let mut not_replicated: BTreeSet<(&str, &str, u64)> = BTreeSet::new();
    let mut polled_missing: BTreeSet<(&str, u64)> = BTreeSet::new();
    let mut lost = Vec::new();
    for op in history {
        let records: Vec<(&str, u64, u64, bool)> = match (&op.request, ok_response(op)) {
            (Request::Send { key, value }, Some(Response::Send { offset })) => {
                vec![(key.as_str(), *offset, *value, true)]
            }
            (Request::Poll { .. }, Some(Response::Poll { msgs })) => msgs
                .iter()
                .flat_map(|(key, records)| {
                    records
                        .iter()
                        .map(move |&(offset, value)| (key.as_str(), offset, value, false))
                })
                .collect(),
            _ => continue,
        };
        for (key, offset, value, acknowledged) in records {
            let lacking = reads.lacking(key, value);
            if lacking.len() < reads.nodes.len() {
                for node in lacking {
                    if not_replicated.insert((node, key, value)) {
                        anomalies.push(Anomaly::NotReplicated {
                            node: node.to_owned(),
                            key: key.to_owned(),
                            value,
                            offset,
                            op: op.index,
                        });
                    }
                }
            } else if acknowledged {
                lost.push(Anomaly::Lost {
                    key: key.to_owned(),
                    value,
                    offset,
                    send_op: op.index,
                });
            } else if polled_missing.insert((key, value)) {
                lost.push(Anomaly::PolledMissing {
                    key: key.to_owned(),
                    value,
                    offset,
                    poll_op: op.index,
                });
            }
        }
    }
    anomalies.extend(lost);
}

/// The values of every final read, by node and key.
struct FinalValues<'a> {
    /// One entry per read; a node with several readers appears several times.
    nodes: Vec<(&'a str, BTreeMap<&'a str, BTreeSet<u64>>)>,
}

impl<'a> FinalValues<'a> {
    fn new(reads: &[Read<'a>]) -> Self {
        FinalValues {
            nodes: reads
                .iter()
                .map(|(node, read)| (*node, values_by_key(read)))
                .collect(),
        }
    }

    /// The node of every read that lacks `value` under `key`, once per read.
    fn lacking(&self, key: &str, value: u64) -> Vec<&'a str> {
        self.nodes
            .iter()
            .filter(|(_, values)| {
                !values
                    .get(key)
                    .is_some_and(|values| values.contains(&value))
            })
            .map(|(node, _)| *node)
            .collect()
    }
}

/// A listing must show, per key, at least the highest commit acknowledged before it began; under
/// [`CommitRule::Eventual`], only listings of the final phase are held to it.
fn check_commits(history: &[Operation], rule: CommitRule, anomalies: &mut Vec<Anomaly>) {
    let mut commits: Vec<(u64, &BTreeMap<String, u64>)> = history
        .iter()
        .filter_map(|op| match (&op.request, ok_response(op)) {
            (Request::Commit { offsets }, Some(Response::Commit)) => {
                Some((op.complete_ns, offsets))
            }
            _ => None,
        })
        .collect();
    commits.sort_by_key(|(complete_ns, _)| *complete_ns);
    let mut lists: Vec<(&Operation, &Vec<String>, &BTreeMap<String, u64>)> = history
        .iter()
        .filter_map(|op| match (&op.request, ok_response(op)) {
            (Request::List { keys }, Some(Response::List { offsets })) => Some((op, keys, offsets)),
            _ => None,
        })
        .filter(|(op, _, _)| match rule {
            CommitRule::Linearizable => true,
            CommitRule::Eventual { final_ns } => op.invoke_ns >= final_ns,
        })
        .collect();
    lists.sort_by_key(|(op, _, _)| op.invoke_ns);
    // Sweep lists in invoke order, folding in the commits that completed before each began.
    let mut acked: BTreeMap<&str, u64> = BTreeMap::new();
    let mut pending = commits.iter().peekable();
    for (list, keys, listed) in lists {
        while let Some((_, offsets)) =
            pending.next_if(|(complete_ns, _)| *complete_ns < list.invoke_ns)
        {
            for (key, &offset) in offsets.iter() {
                let max = acked.entry(key).or_insert(offset);
                *max = (*max).max(offset);
            }
        }
        for key in keys {
            let Some(&acked) = acked.get(key.as_str()) else {
                continue;
            };
            let listed = listed.get(key).copied();
            if listed.is_none_or(|listed| listed < acked) {
                anomalies.push(Anomaly::CommitRegression {
                    key: key.clone(),
                    list_op: list.index,
                    acked,
                    listed,
                });
            }
        }
    }
}
