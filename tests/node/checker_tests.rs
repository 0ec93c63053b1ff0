//! The checker's unit tests: one hand-made history per anomaly kind, each proving that kind is
//! reported with the right details, and clean histories proving nothing is reported when the
//! node behaved.

use std::collections::BTreeMap;

use crate::workload::checker::{
    Anomaly, AnomalyKind, CommitRule, check, check_cluster, known_offsets, missing_acknowledged,
};
use crate::workload::history::{
    FinalRead, NodeRead, Operation, Outcome, Record, Request, Response,
};

/// Builds a history one operation at a time. By default operations are sequential: each is
/// invoked after the previous one completed.
#[derive(Default)]
struct History {
    operations: Vec<Operation>,
    /// Nanoseconds handed out so far.
    clock: u64,
}

impl History {
    fn at(
        &mut self,
        invoke_ns: u64,
        complete_ns: u64,
        request: Request,
        outcome: Outcome,
    ) -> usize {
        let index = self.operations.len();
        self.clock = self.clock.max(complete_ns);
        self.operations.push(Operation {
            index,
            process: 0,
            invoke_ns,
            complete_ns,
            request,
            outcome,
        });
        index
    }

    fn next(&mut self, request: Request, outcome: Outcome) -> usize {
        let invoke_ns = self.clock + 1;
        self.at(invoke_ns, invoke_ns + 1, request, outcome)
    }

    fn send_ok(&mut self, key: &str, value: u64, offset: u64) -> usize {
        self.next(send(key, value), ok(Response::Send { offset }))
    }

    fn send_fail(&mut self, key: &str, value: u64) -> usize {
        let outcome = Outcome::Fail {
            code: 11,
            text: "temporarily unavailable".to_owned(),
        };
        self.next(send(key, value), outcome)
    }

    fn send_unknown(&mut self, key: &str, value: u64) -> usize {
        let outcome = Outcome::Unknown {
            reason: "node died".to_owned(),
        };
        self.next(send(key, value), outcome)
    }

    fn poll_ok(&mut self, key: &str, asked: u64, records: &[Record]) -> usize {
        let request = Request::Poll {
            offsets: BTreeMap::from([(key.to_owned(), asked)]),
        };
        let msgs = if records.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([(key.to_owned(), records.to_vec())])
        };
        self.next(request, ok(Response::Poll { msgs }))
    }

    fn commit_ok(&mut self, key: &str, offset: u64) -> usize {
        let request = Request::Commit {
            offsets: BTreeMap::from([(key.to_owned(), offset)]),
        };
        self.next(request, ok(Response::Commit))
    }

    fn list_ok(&mut self, key: &str, listed: Option<u64>) -> usize {
        let request = Request::List {
            keys: vec![key.to_owned()],
        };
        let offsets = listed
            .map(|offset| BTreeMap::from([(key.to_owned(), offset)]))
            .unwrap_or_default();
        self.next(request, ok(Response::List { offsets }))
    }

    fn check(&self, final_read: &FinalRead) -> Vec<Anomaly> {
        check(&self.operations, final_read)
    }

    fn check_cluster(&self, reads: &[NodeRead], commits: CommitRule) -> Vec<Anomaly> {
        check_cluster(&self.operations, Some(reads), commits)
    }
}

/// `node`'s final read of `logs`.
fn node_read(node: &str, logs: &[(&str, &[Record])]) -> NodeRead {
    NodeRead {
        node: node.to_owned(),
        process: 0,
        read: final_read(logs),
        committed: BTreeMap::new(),
    }
}

fn send(key: &str, value: u64) -> Request {
    Request::Send {
        key: key.to_owned(),
        value,
    }
}

fn ok(response: Response) -> Outcome {
    Outcome::Ok { response }
}

fn final_read(logs: &[(&str, &[Record])]) -> FinalRead {
    FinalRead {
        logs: logs
            .iter()
            .map(|(key, records)| ((*key).to_owned(), records.to_vec()))
            .collect(),
    }
}

/// Asserts `expected` is among the anomalies, showing them all if not.
fn assert_reports(anomalies: &[Anomaly], expected: &Anomaly) {
    assert!(
        anomalies.contains(expected),
        "expected {expected}\nreported: {anomalies:#?}"
    );
}

fn kinds(anomalies: &[Anomaly]) -> Vec<AnomalyKind> {
    let mut kinds: Vec<_> = anomalies.iter().map(Anomaly::kind).collect();
    kinds.dedup();
    kinds
}

#[test]
fn clean_history_reports_nothing() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 1);
    history.send_ok("k1", 10, 0);
    // Unknown sends may or may not land; a failed one must not, and does not.
    history.send_unknown("k0", 2);
    history.send_fail("k0", 3);
    history.send_unknown("k1", 11);
    history.poll_ok("k0", 0, &[(0, 0), (1, 1)]);
    history.commit_ok("k0", 1);
    history.list_ok("k0", Some(1));
    history.poll_ok("k0", 2, &[(2, 2)]);
    history.poll_ok("k0", 3, &[]);
    history.poll_ok("k1", 5, &[]);
    history.send_ok("k0", 4, 3);
    history.commit_ok("k0", 3);
    history.list_ok("k0", Some(3));
    let final_read = final_read(&[
        ("k0", &[(0, 0), (1, 1), (2, 2), (3, 4)]),
        ("k1", &[(0, 10)]),
    ]);
    assert_eq!(history.check(&final_read), vec![]);
}

#[test]
fn concurrent_sends_may_take_offsets_in_either_order() {
    let mut history = History::default();
    // Both sends overlap in time, so neither precedes the other.
    history.at(0, 10, send("k0", 0), ok(Response::Send { offset: 1 }));
    history.at(5, 15, send("k0", 1), ok(Response::Send { offset: 0 }));
    let final_read = final_read(&[("k0", &[(0, 1), (1, 0)])]);
    assert_eq!(history.check(&final_read), vec![]);
}

#[test]
fn concurrent_commit_need_not_be_listed() {
    let mut history = History::default();
    // The list begins before the commit is acknowledged, so it may miss it.
    history.at(
        0,
        10,
        Request::Commit {
            offsets: BTreeMap::from([("k0".to_owned(), 4)]),
        },
        ok(Response::Commit),
    );
    history.at(
        5,
        15,
        Request::List {
            keys: vec!["k0".to_owned()],
        },
        ok(Response::List {
            offsets: BTreeMap::new(),
        }),
    );
    assert_eq!(history.check(&FinalRead::default()), vec![]);
}

#[test]
fn reports_malformed_reply() {
    let mut history = History::default();
    let op = history.next(
        send("k0", 0),
        Outcome::Malformed {
            reason: "unexpected field `extra` in send_ok".to_owned(),
        },
    );
    let anomalies = history.check(&FinalRead::default());
    assert_eq!(
        anomalies,
        vec![Anomaly::MalformedReply {
            op,
            reason: "unexpected field `extra` in send_ok".to_owned()
        }]
    );
}

#[test]
fn reports_duplicate_value_at_two_offsets() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 1);
    let final_read = final_read(&[("k0", &[(0, 0), (1, 1), (2, 0)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        anomalies,
        vec![Anomaly::Duplicate {
            key: "k0".to_owned(),
            value: 0,
            offsets: vec![0, 2]
        }]
    );
}

#[test]
fn reports_inconsistent_offsets_two_values_at_one_offset() {
    let mut history = History::default();
    history.at(0, 10, send("k0", 0), ok(Response::Send { offset: 0 }));
    history.at(5, 15, send("k0", 1), ok(Response::Send { offset: 0 }));
    let final_read = final_read(&[("k0", &[(0, 0)])]);
    let anomalies = history.check(&final_read);
    assert_reports(
        &anomalies,
        &Anomaly::InconsistentOffsets {
            key: "k0".to_owned(),
            offset: 0,
            values: vec![0, 1],
        },
    );
}

#[test]
fn reports_value_nobody_sent() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    // Value 7 was sent, but to k1, so on k0 nobody sent it.
    history.send_unknown("k1", 7);
    let final_read = final_read(&[("k0", &[(0, 0), (1, 99), (2, 7)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        anomalies,
        vec![
            Anomaly::UnsentValue {
                key: "k0".to_owned(),
                offset: 1,
                value: 99
            },
            Anomaly::UnsentValue {
                key: "k0".to_owned(),
                offset: 2,
                value: 7
            },
        ]
    );
}

#[test]
fn reports_g1a_read_of_a_definitely_failed_send() {
    let mut history = History::default();
    let failed = history.send_fail("k0", 5);
    history.poll_ok("k0", 0, &[(0, 5)]);
    let final_read = final_read(&[("k0", &[(0, 5)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        anomalies,
        vec![Anomaly::G1a {
            key: "k0".to_owned(),
            value: 5,
            send_op: failed
        }]
    );
}

#[test]
fn reports_nonmonotonic_send_in_real_time_order() {
    let mut history = History::default();
    let earlier = history.send_ok("k0", 0, 1);
    let later = history.send_ok("k0", 1, 0);
    let final_read = final_read(&[("k0", &[(0, 1), (1, 0)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        anomalies,
        vec![Anomaly::NonmonotonicSend {
            key: "k0".to_owned(),
            earlier_op: earlier,
            earlier_offset: 1,
            later_op: later,
            later_offset: 0
        }]
    );
}

#[test]
fn reports_int_nonmonotonic_poll() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 1);
    let poll = history.poll_ok("k0", 0, &[(0, 0), (1, 1), (0, 0)]);
    let final_read = final_read(&[("k0", &[(0, 0), (1, 1)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        kinds(&anomalies),
        vec![AnomalyKind::IntNonmonotonicPoll],
        "{anomalies:#?}"
    );
    assert_reports(
        &anomalies,
        &Anomaly::IntNonmonotonicPoll {
            op: poll,
            key: "k0".to_owned(),
            prev: 1,
            next: 0,
        },
    );
}

#[test]
fn reports_poll_starting_below_the_asked_offset() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 1);
    let poll = history.poll_ok("k0", 1, &[(0, 0), (1, 1)]);
    let final_read = final_read(&[("k0", &[(0, 0), (1, 1)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        anomalies,
        vec![Anomaly::PollStartsBelow {
            op: poll,
            key: "k0".to_owned(),
            asked: 1,
            first: 0
        }]
    );
}

#[test]
fn reports_int_poll_skip_a_hole_inside_one_poll() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 1);
    history.send_ok("k0", 2, 2);
    let poll = history.poll_ok("k0", 0, &[(0, 0), (2, 2)]);
    let final_read = final_read(&[("k0", &[(0, 0), (1, 1), (2, 2)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        anomalies,
        vec![Anomaly::IntPollSkip {
            op: poll,
            key: "k0".to_owned(),
            prev: 0,
            next: 2
        }]
    );
}

#[test]
fn reports_poll_skip_over_an_offset_known_to_exist() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 1);
    let poll = history.poll_ok("k0", 0, &[(1, 1)]);
    let final_read = final_read(&[("k0", &[(0, 0), (1, 1)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        anomalies,
        vec![Anomaly::PollSkip {
            op: poll,
            key: "k0".to_owned(),
            asked: 0,
            first: 1
        }]
    );
}

#[test]
fn reports_lost_acknowledged_send() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    let lost = history.send_ok("k0", 1, 1);
    let final_read = final_read(&[("k0", &[(0, 0)])]);
    let anomalies = history.check(&final_read);
    assert_eq!(
        anomalies,
        vec![Anomaly::Lost {
            key: "k0".to_owned(),
            value: 1,
            offset: 1,
            send_op: lost
        }]
    );
}

#[test]
fn reports_polled_record_missing_from_final_read() {
    let mut history = History::default();
    // The send's fate was unknown, but a poll saw it, so it must survive.
    history.send_unknown("k0", 0);
    let poll = history.poll_ok("k0", 0, &[(0, 0)]);
    history.poll_ok("k0", 0, &[(0, 0)]);
    let anomalies = history.check(&FinalRead::default());
    assert_eq!(
        anomalies,
        vec![Anomaly::PolledMissing {
            key: "k0".to_owned(),
            value: 0,
            offset: 0,
            poll_op: poll
        }]
    );
}

#[test]
fn reports_commit_regression_below_an_acknowledged_commit() {
    let mut history = History::default();
    history.commit_ok("k0", 5);
    let lower = history.list_ok("k0", Some(3));
    let missing = history.list_ok("k0", None);
    let anomalies = history.check(&FinalRead::default());
    assert_eq!(
        anomalies,
        vec![
            Anomaly::CommitRegression {
                key: "k0".to_owned(),
                list_op: lower,
                acked: 5,
                listed: Some(3)
            },
            Anomaly::CommitRegression {
                key: "k0".to_owned(),
                list_op: missing,
                acked: 5,
                listed: None
            },
        ]
    );
}

#[test]
fn without_a_final_read_only_the_final_read_checks_are_skipped() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    let poll = history.poll_ok("k0", 1, &[(0, 0)]);
    let anomalies = crate::workload::checker::check_without_final_read(&history.operations);
    assert_eq!(
        anomalies,
        vec![Anomaly::PollStartsBelow {
            op: poll,
            key: "k0".to_owned(),
            asked: 1,
            first: 0
        }]
    );
}

#[test]
fn cluster_whose_nodes_all_hold_the_log_reports_nothing() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 1);
    // A lagging replica may return a prefix during the run.
    history.poll_ok("k0", 0, &[(0, 0)]);
    let log: &[Record] = &[(0, 0), (1, 1)];
    let reads = [
        node_read("n0", &[("k0", log)]),
        node_read("n1", &[("k0", log)]),
    ];
    assert_eq!(
        history.check_cluster(&reads, CommitRule::Linearizable),
        vec![]
    );
    let missing = missing_acknowledged(&history.operations, &reads);
    assert_eq!(
        missing,
        BTreeMap::from([("n0".to_owned(), 0), ("n1".to_owned(), 0)])
    );
}

#[test]
fn reports_not_replicated_on_the_node_that_lacks_a_record() {
    let mut history = History::default();
    let sent = history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 1);
    let reads = [
        node_read("n0", &[("k0", &[(0, 0), (1, 1)])]),
        node_read("n1", &[("k0", &[(1, 1)])]),
        // A node's second reader lacking it too is still one anomaly for that node.
        node_read("n1", &[]),
    ];
    let anomalies = history.check_cluster(&reads, CommitRule::Linearizable);
    assert_reports(
        &anomalies,
        &Anomaly::NotReplicated {
            node: "n1".to_owned(),
            key: "k0".to_owned(),
            value: 0,
            offset: 0,
            op: sent,
        },
    );
    assert_eq!(kinds(&anomalies), vec![AnomalyKind::NotReplicated]);
    assert_eq!(anomalies.len(), 2, "{anomalies:#?}");
    let missing = missing_acknowledged(&history.operations, &reads);
    assert_eq!(
        missing,
        BTreeMap::from([("n0".to_owned(), 0), ("n1".to_owned(), 2)])
    );
}

#[test]
fn record_missing_from_every_node_is_lost_not_unreplicated() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    let lost = history.send_ok("k0", 1, 1);
    let log: &[Record] = &[(0, 0)];
    let reads = [
        node_read("n0", &[("k0", log)]),
        node_read("n1", &[("k0", log)]),
    ];
    assert_eq!(
        history.check_cluster(&reads, CommitRule::Linearizable),
        vec![Anomaly::Lost {
            key: "k0".to_owned(),
            value: 1,
            offset: 1,
            send_op: lost
        }]
    );
}

/// Two nodes each keeping their own log (today's binary run as a cluster) disagree at offset 0.
#[test]
fn reports_inconsistent_offsets_between_nodes() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_ok("k0", 1, 0);
    let reads = [
        node_read("n0", &[("k0", &[(0, 0)])]),
        node_read("n1", &[("k0", &[(0, 1)])]),
    ];
    let anomalies = history.check_cluster(&reads, CommitRule::Linearizable);
    assert_reports(
        &anomalies,
        &Anomaly::InconsistentOffsets {
            key: "k0".to_owned(),
            offset: 0,
            values: vec![0, 1],
        },
    );
    assert!(kinds(&anomalies).contains(&AnomalyKind::NotReplicated));
}

#[test]
fn eventual_commits_check_only_final_listings() {
    let mut history = History::default();
    history.commit_ok("k0", 5);
    // A replica that has not heard of the commit yet: accepted during the run.
    history.list_ok("k0", Some(3));
    let final_ns = history.clock + 1;
    let stale = history.list_ok("k0", None);
    let anomalies = history.check_cluster(&[], CommitRule::Eventual { final_ns });
    assert_eq!(
        anomalies,
        vec![Anomaly::CommitRegression {
            key: "k0".to_owned(),
            list_op: stale,
            acked: 5,
            listed: None
        }]
    );
}

#[test]
fn known_offsets_are_the_highest_acknowledged_or_polled() {
    let mut history = History::default();
    history.send_ok("k0", 0, 0);
    history.send_unknown("k0", 1);
    history.poll_ok("k0", 0, &[(0, 0), (1, 1)]);
    history.send_ok("k1", 2, 4);
    history.send_fail("k2", 3);
    assert_eq!(
        known_offsets(&history.operations),
        BTreeMap::from([("k0".to_owned(), 1), ("k1".to_owned(), 4)])
    );
}
