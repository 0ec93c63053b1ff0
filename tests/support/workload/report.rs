//! What a run produced: counts for the summary line, the anomalies, and the artifacts a failed
//! run leaves behind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checker::{self, Anomaly, count_by_kind};
use super::history::{self, NodeRead, OpKind, Operation, Outcome, OutcomeClass, Request, Response};
use super::traffic::{NetworkCounts, TrafficCounts};

/// Anomalies and protocol errors spelled out in a failure message; the rest are in the kept files.
const LISTED_MAX: usize = 20;

pub struct Report {
    /// The run's name from its config.
    pub name: String,
    /// The seed to replay the run with.
    pub seed: u64,
    /// Wall time of the whole run, final phase included.
    pub elapsed: Duration,
    /// Every operation, final reads included.
    pub history: Vec<Operation>,
    /// Nodes in the run; a cluster's summary has per-node figures.
    pub nodes: usize,
    /// One per final reader (one for a lone node, one per client of a cluster); empty when the
    /// run failed before the final phase.
    pub final_reads: Vec<NodeRead>,
    /// Messages between clients and nodes and between nodes, for msgs-per-op.
    pub traffic: TrafficCounts,
    /// What the router did with node-to-node messages; `None` without a router.
    pub network: Option<NetworkCounts>,
    /// What the nemesis did and when.
    pub timeline: Vec<String>,
    /// What the checker found; empty in a valid run.
    pub anomalies: Vec<Anomaly>,
    /// Lines on the node's stdout that broke the protocol outright.
    pub protocol_errors: Vec<String>,
    /// Why the harness could not finish the run (a restart failed, the node exited non-zero, ...).
    pub failure: Option<String>,
    /// Node processes that came up (answered init), counting the first.
    pub starts: u32,
    /// SIGKILLs sent, counting the final one and those that cut a restart short.
    pub kills: u32,
    /// The leaders killed by the leader nemesis, in order.
    pub leader_kills: Vec<super::leader_nemesis::LeaderKill>,
    /// Where the run directory was kept, if it was.
    pub artifacts: Option<PathBuf>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.failure.is_none() && self.anomalies.is_empty() && self.protocol_errors.is_empty()
    }

    /// Fails the test unless every kind of operation succeeded at least once (Maelstrom's
    /// `stats` checker fails a run otherwise).
    pub fn assert_every_kind_succeeded(&self) {
        for kind in OpKind::ALL {
            assert!(
                self.count(kind, OutcomeClass::Ok) > 0,
                "no {} succeeded\n{}",
                kind.name(),
                self.details()
            );
        }
    }

    /// Operations of `kind` that ended in `class`.
    pub fn count(&self, kind: OpKind, class: OutcomeClass) -> usize {
        self.history
            .iter()
            .filter(|op| op.request.kind() == kind && op.outcome.class() == class)
            .count()
    }

    /// Sends the node acknowledged.
    pub fn acked_sends(&self) -> usize {
        self.history
            .iter()
            .filter(|op| {
                matches!(
                    (&op.request, &op.outcome),
                    (
                        Request::Send { .. },
                        Outcome::Ok {
                            response: Response::Send { .. }
                        }
                    )
                )
            })
            .count()
    }

    /// Records in the fullest final read, over all keys.
    pub fn final_records(&self) -> usize {
        self.final_reads
            .iter()
            .map(|read| read.read.logs.values().map(Vec::len).sum())
            .max()
            .unwrap_or(0)
    }

    /// Keys any final read returned.
    pub fn final_keys(&self) -> usize {
        self.final_reads
            .iter()
            .flat_map(|read| read.read.logs.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    /// Per node, the acknowledged sends its final reads lack.
    pub fn missing_per_node(&self) -> BTreeMap<String, usize> {
        checker::missing_acknowledged(&self.history, &self.final_reads)
    }

    /// The one-line summary tests print.
    pub fn summary(&self) -> String {
        let total = |class| {
            OpKind::ALL
                .iter()
                .map(|&kind| self.count(kind, class))
                .sum::<usize>()
        };
        let mut line = format!(
            "workload {}: {:.1}s seed={} ops={} ok={} fail={} unknown={} |",
            self.name,
            self.elapsed.as_secs_f64(),
            self.seed,
            self.history.len(),
            total(OutcomeClass::Ok),
            total(OutcomeClass::Fail),
            total(OutcomeClass::Unknown),
        );
        for kind in OpKind::ALL {
            let _ = write!(
                line,
                " {} {}/{}/{}",
                kind.name(),
                self.count(kind, OutcomeClass::Ok),
                self.count(kind, OutcomeClass::Fail),
                self.count(kind, OutcomeClass::Unknown),
            );
        }
        let _ = write!(
            line,
            " | keys={} acked-sends={} final-records={}",
            self.final_keys(),
            self.acked_sends(),
            self.final_records(),
        );
        if self.nodes > 1 {
            line.push_str(" missing-acked:");
            for (node, missing) in self.missing_per_node() {
                let _ = write!(line, " {node}={missing}");
            }
        }
        let ops = self.history.len();
        let _ = write!(
            line,
            " | msgs-per-op all={:.2} servers={:.2}",
            self.traffic.all_per_op(ops),
            self.traffic.servers_per_op(ops),
        );
        if let Some(net) = &self.network {
            let _ = write!(
                line,
                " | net sent={} delivered={} lost={} partitioned={} undeliverable={} partitions={}",
                net.sent,
                net.delivered,
                net.lost,
                net.partitioned,
                net.undeliverable,
                net.partitions,
            );
        }
        let _ = write!(
            line,
            " | starts={} kills={} | anomalies={}",
            self.starts,
            self.kills,
            self.anomalies.len(),
        );
        for (kind, count) in count_by_kind(&self.anomalies) {
            let _ = write!(line, " {}={count}", kind.name());
        }
        let _ = write!(line, " protocol-errors={}", self.protocol_errors.len());
        if let Some(failure) = &self.failure {
            let _ = write!(line, " | FAILED: {failure}");
        }
        line
    }

    /// Everything a failing assertion should show: the summary, the first anomalies and protocol
    /// errors, and where the artifacts are.
    pub fn details(&self) -> String {
        let mut text = self.summary();
        for anomaly in self.anomalies.iter().take(LISTED_MAX) {
            let _ = write!(text, "\n  {anomaly}");
        }
        for error in self.protocol_errors.iter().take(LISTED_MAX) {
            let _ = write!(text, "\n  protocol: {error}");
        }
        match &self.artifacts {
            Some(path) => {
                let _ = write!(
                    text,
                    "\n  run directory kept at {} (report.txt, history.jsonl, final-reads.json, \
                     node logs *.log, data/)",
                    path.display()
                );
            }
            None => text.push_str("\n  run directory not kept"),
        }
        text
    }

    /// Writes the history, final reads and report next to the nodes' data and logs.
    pub fn write_artifacts(&self, dir: &Path) -> Result<(), String> {
        history::write_json_lines(&self.history, &dir.join("history.jsonl"))?;
        let path = dir.join("final-reads.json");
        let final_reads = serde_json::to_string(&self.final_reads)
            .map_err(|e| format!("encode final reads: {e}"))?;
        fs::write(&path, final_reads).map_err(|e| format!("write {}: {e}", path.display()))?;
        let mut report = self.details();
        for anomaly in self.anomalies.iter().skip(LISTED_MAX) {
            let _ = write!(report, "\n  {anomaly}");
        }
        for error in self.protocol_errors.iter().skip(LISTED_MAX) {
            let _ = write!(report, "\n  protocol: {error}");
        }
        report.push_str("\nnemesis timeline:");
        for event in &self.timeline {
            let _ = write!(report, "\n  {event}");
        }
        report.push('\n');
        let path = dir.join("report.txt");
        fs::write(&path, report).map_err(|e| format!("write {}: {e}", path.display()))
    }
}
