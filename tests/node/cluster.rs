//! The cluster scenarios of issue 8: N real `seglog` processes joined by the router, the kafka
//! workload with clients pinned to nodes, a nemesis, and a final phase in which every node must
//! return every acknowledged send. Print the summaries with `--nocapture`.
//!
//! The three-node scenarios pass only against a replicating cluster build: a node that keeps its
//! own log and ignores its peers gives `inconsistent-offsets` and `not-replicated`. The one-node
//! runs pass against any build and prove the router and the cluster harness sound.
//!
//! `SEGLOG_CLUSTER_SECS` sets the workload length of every scenario (faults keep their rate, so a
//! longer run has more of them) and `SEGLOG_CLUSTER_NODES` the node count of the multi-node
//! ones; with `SEGLOG_SEED`, `SEGLOG_KEEP` and `SEGLOG_BIN` they make a soak of one scenario:
//! `SEGLOG_CLUSTER_SECS=300 cargo test --release --test node cluster::cluster_with_healing -- --nocapture`.

use std::time::Duration;

use crate::support::{tier, tools};
use crate::workload::cluster::{self, ClusterConfig, Faults};
use crate::workload::disk_nemesis::HEALED_EVENT;
use crate::workload::leader_nemesis::{self, LEADER_DOWNTIME};
use crate::workload::report::Report;
use crate::workload::router::NetworkConfig;

/// Nodes in the multi-node scenarios: the smallest cluster with a majority and a minority.
const NODES_DEFAULT: usize = 3;

/// Workload lengths in the long tier, each long enough for a few faults and a couple of hundred
/// keys at Maelstrom's rate; with the final phases the six scenarios take about 75 s.
const ONE_NODE_RUN_LONG: Duration = Duration::from_secs(6);
const CLEAN_RUN_LONG: Duration = Duration::from_secs(10);
const PARTITION_RUN_LONG: Duration = Duration::from_secs(15);
const KILL_ONE_RUN_LONG: Duration = Duration::from_secs(12);
const KILL_ALL_RUN_LONG: Duration = Duration::from_secs(12);

/// The disk-fault scenario's length in the long tier: a fault every [`DISK_FAULT_EVERY`].
const DISK_FAULT_RUN_LONG: Duration = Duration::from_secs(12);

/// Workload lengths by default: every scenario, with fewer faults (two partitions, two kills of
/// one node, one kill of all before the final one) and fewer keys.
const ONE_NODE_RUN_SHORT: Duration = Duration::from_secs(3);
const CLEAN_RUN_SHORT: Duration = Duration::from_secs(4);
const PARTITION_RUN_SHORT: Duration = Duration::from_secs(10);
const KILL_ONE_RUN_SHORT: Duration = Duration::from_secs(6);
const KILL_ALL_RUN_SHORT: Duration = Duration::from_secs(6);
const DISK_FAULT_RUN_SHORT: Duration = Duration::from_secs(6);

/// One failed fdatasync per this much run: time for the node to heal (a backoff of 100 ms to
/// 1 s, a reopen, its groups' start) and for the cluster to settle before the next.
const DISK_FAULT_EVERY: Duration = Duration::from_secs(3);

/// The disk-fault shim's source, shared with the durability tests.
const SHIM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/durability/faults.c");

/// One partition-and-heal cycle per this much run: partitioned for half of it (see
/// `partition_nemesis`), long enough that requests time out and replicas fall behind.
const PARTITION_CYCLE: Duration = Duration::from_secs(5);

/// One kill of a single node per this much run.
const KILL_ONE_EVERY: Duration = Duration::from_secs(3);

/// One kill of the whole cluster per this much run (plus the one before the final phase).
const KILL_ALL_EVERY: Duration = Duration::from_secs(6);

/// Message delay under partitions: a range, so messages overtake each other, as in Maelstrom
/// runs with `--latency 20`.
const PARTITION_DELAY_MAX: Duration = Duration::from_millis(20);

/// Loss under partitions: besides whole links going down, one message in a hundred vanishes on
/// a healthy link, so a replica sees gaps that no partition explains.
const PARTITION_LOSS: f64 = 0.01;

/// After each leader comes back, time for the cluster to settle before the next kill.
const LEADER_KILL_SETTLE: Duration = Duration::from_secs(2);

/// One wipe per this much run: time for the wiped node to be caught up before the next.
const WIPE_EVERY: Duration = Duration::from_secs(4);

/// Delay while nodes are killed: small, but a range, so restarts meet reordered messages.
const KILL_DELAY_MAX: Duration = Duration::from_millis(5);

/// The scenario's length in this tier, or `SEGLOG_CLUSTER_SECS`.
fn duration(short: Duration, long: Duration) -> Duration {
    tier::env_u64("SEGLOG_CLUSTER_SECS")
        .map_or_else(|| tier::pick(short, long), Duration::from_secs)
}

/// The multi-node scenarios' node count, or `SEGLOG_CLUSTER_NODES`.
fn nodes() -> usize {
    tier::env_u64("SEGLOG_CLUSTER_NODES").map_or(NODES_DEFAULT, |nodes| {
        usize::try_from(nodes).expect("SEGLOG_CLUSTER_NODES fits in usize")
    })
}

/// How many times `every` fits in `duration`, at least once.
fn times(duration: Duration, every: Duration) -> u32 {
    u32::try_from(duration.as_millis() / every.as_millis())
        .expect("fault count fits in u32")
        .max(1)
}

fn run(config: &ClusterConfig) -> Report {
    let report = cluster::run(config);
    eprintln!("{}", report.summary());
    report
}

/// Valid, every kind of operation succeeded at least once (Maelstrom's `stats` checker fails a
/// run otherwise), and every node returned every acknowledged send.
fn assert_valid(report: &Report) {
    assert!(report.is_valid(), "{}", report.details());
    report.assert_every_kind_succeeded();
    for (node, missing) in report.missing_per_node() {
        assert_eq!(
            missing,
            0,
            "{node} lacks acknowledged sends\n{}",
            report.details()
        );
    }
}

/// A lone node behind the router is a valid one-node cluster: the harness itself (pinning,
/// catch-up reads, the cluster checker, message counts) finds nothing wrong with a correct node.
#[test]
fn one_node_through_the_router_is_valid() {
    let report = run(&ClusterConfig::new(
        "one-node",
        1,
        duration(ONE_NODE_RUN_SHORT, ONE_NODE_RUN_LONG),
    ));
    assert_valid(&report);
    assert_eq!(report.traffic.server_msgs, 0, "{}", report.details());
}

/// Kill and restart a lone node behind the router: the cluster harness's restart path (re-init
/// with the same id and node ids, reattaching to the router) loses nothing.
#[test]
fn one_node_with_kill_restarts_through_the_router_is_valid() {
    let run_for = duration(ONE_NODE_RUN_SHORT, ONE_NODE_RUN_LONG);
    let kills = times(run_for, KILL_ONE_EVERY);
    let config = ClusterConfig {
        faults: Faults::KillOne { kills },
        ..ClusterConfig::new("one-node-kill", 1, run_for)
    };
    let report = run(&config);
    assert_valid(&report);
    assert!(report.kills >= kills, "{}", report.details());
}

/// Scenario 1: a healthy cluster behaves as one log. Passes once the cluster is built.
#[test]
fn cluster_without_faults_is_valid() {
    let report = run(&ClusterConfig::new(
        "clean",
        nodes(),
        duration(CLEAN_RUN_SHORT, CLEAN_RUN_LONG),
    ));
    assert_valid(&report);
}

/// Scenario 2: partitions that heal (isolate one, majority/minority, random splits) on a
/// network with delays and some loss: availability may suffer, correctness must not, and every
/// node catches up once healed. Passes once the cluster is built.
#[test]
fn cluster_with_healing_partitions_is_valid() {
    let run_for = duration(PARTITION_RUN_SHORT, PARTITION_RUN_LONG);
    let cycles = times(run_for, PARTITION_CYCLE);
    let config = ClusterConfig {
        network: NetworkConfig {
            delay_min: Duration::ZERO,
            delay_max: PARTITION_DELAY_MAX,
            loss: PARTITION_LOSS,
        },
        faults: Faults::Partitions { cycles },
        ..ClusterConfig::new("partitions", nodes(), run_for)
    };
    let report = run(&config);
    assert_valid(&report);
    if config.nodes > 1 {
        let partitions = report.network.map_or(0, |net| net.partitions);
        assert_eq!(partitions, u64::from(cycles), "{}", report.details());
    }
}

/// Scenario 3: `kill -9` of one node at a time, restarted on the same data directory with the
/// same init: nothing acknowledged is lost and the restarted node catches up. Passes once the
/// cluster is built.
#[test]
fn cluster_with_one_node_killed_and_restarted_is_valid() {
    let run_for = duration(KILL_ONE_RUN_SHORT, KILL_ONE_RUN_LONG);
    let kills = times(run_for, KILL_ONE_EVERY);
    let config = ClusterConfig {
        network: NetworkConfig {
            delay_max: KILL_DELAY_MAX,
            ..NetworkConfig::PERFECT
        },
        faults: Faults::KillOne { kills },
        ..ClusterConfig::new("kill-one", nodes(), run_for)
    };
    let report = run(&config);
    assert_valid(&report);
    assert!(report.kills >= kills, "{}", report.details());
}

/// Scenario 4: every node killed at once and restarted, during the run and once more before the
/// final reads: the disks alone hold every acknowledged send. Passes once the cluster is built.
#[test]
fn cluster_with_all_nodes_killed_and_restarted_is_valid() {
    let run_for = duration(KILL_ALL_RUN_SHORT, KILL_ALL_RUN_LONG);
    let kills = times(run_for, KILL_ALL_EVERY);
    let config = ClusterConfig {
        network: NetworkConfig {
            delay_max: KILL_DELAY_MAX,
            ..NetworkConfig::PERFECT
        },
        faults: Faults::KillAll { kills },
        ..ClusterConfig::new("kill-all", nodes(), run_for)
    };
    let report = run(&config);
    assert_valid(&report);
    let nodes = u32::try_from(config.nodes).expect("node count fits in u32");
    assert!(report.kills >= (kills + 1) * nodes, "{}", report.details());
}

/// Scenario 5: `kill -9` of the leader, once per node (each time whoever leads then: the groups
/// in turn), each down for [`LEADER_DOWNTIME`], while clients write through every node: another
/// node takes over, so sends to the dead leader's keys succeed again while it is still down. The
/// gap from each kill to the first such success is printed; nothing acknowledged is lost.
#[test]
fn the_leader_killed_in_turn_fails_over_and_loses_nothing() {
    let nodes = nodes();
    let kills = u32::try_from(nodes).expect("node count fits in u32");
    let config = ClusterConfig {
        network: NetworkConfig {
            delay_max: KILL_DELAY_MAX,
            ..NetworkConfig::PERFECT
        },
        faults: Faults::KillLeaders { kills },
        ..ClusterConfig::new(
            "kill-leaders",
            nodes,
            (LEADER_DOWNTIME + LEADER_KILL_SETTLE) * kills,
        )
    };
    let report = run(&config);
    assert_valid(&report);
    assert_eq!(
        report.leader_kills.len(),
        kills as usize,
        "{}",
        report.details()
    );
    for (kill, gap) in leader_nemesis::failover_gaps(&report.history, &report.leader_kills) {
        match gap {
            Some(gap) => eprintln!(
                "group {}: leader n{} killed; sends to its keys succeed again after {} ms",
                kill.group,
                kill.node,
                gap.as_millis()
            ),
            None => panic!(
                "group {}: no send to its keys succeeded while its old leader n{} was down\n{}",
                kill.group,
                kill.node,
                report.details()
            ),
        }
    }
}

/// Scenario 6: a node killed, its data directory deleted, and restarted empty, once per node:
/// it rejoins as a follower that does not vote until it holds what its group had, so no
/// acknowledged send is lost, no offset holds two messages on any node, and the wiped node
/// serves every acknowledged send in the final reads.
#[test]
fn a_node_restarted_on_an_empty_directory_rejoins_and_loses_nothing() {
    let nodes = nodes();
    let wipes = u32::try_from(nodes).expect("node count fits in u32");
    let config = ClusterConfig {
        network: NetworkConfig {
            delay_max: KILL_DELAY_MAX,
            ..NetworkConfig::PERFECT
        },
        faults: Faults::Wipe { wipes },
        ..ClusterConfig::new("wipe", nodes, WIPE_EVERY * wipes)
    };
    let report = run(&config);
    assert_valid(&report);
    assert!(report.kills >= wipes, "{}", report.details());
}

/// Scenario 7: the disk of n0 (the first leader of group 0) fails an fdatasync with EIO now and
/// then, through the `LD_PRELOAD` shim of `tests/durability/faults.c`: each time n0's store is
/// poisoned, and n0 heals it in place, in the same process, stopping and starting its groups
/// over the reopened store while the others go on; the cluster stays valid, no node restarts,
/// and every node (n0 included) returns every acknowledged send.
#[test]
fn a_node_whose_disk_fails_heals_in_place_and_the_cluster_stays_valid() {
    let shim_dir = tempfile::tempdir().expect("a directory for the shim");
    let shim = tools::build_shim(
        std::path::Path::new(SHIM),
        &shim_dir.path().join("faults.so"),
        &["-ldl"],
    );
    let nodes = nodes();
    let run_for = duration(DISK_FAULT_RUN_SHORT, DISK_FAULT_RUN_LONG);
    let faults = times(run_for, DISK_FAULT_EVERY);
    let config = ClusterConfig {
        network: NetworkConfig {
            delay_max: KILL_DELAY_MAX,
            ..NetworkConfig::PERFECT
        },
        faults: Faults::DiskEio { node: 0, faults },
        shim: Some(shim),
        ..ClusterConfig::new("disk-eio", nodes, run_for)
    };
    let report = run(&config);
    assert_valid(&report);
    let heals = report
        .timeline
        .iter()
        .filter(|event| event.ends_with(HEALED_EVENT))
        .count();
    assert_eq!(heals, faults as usize, "{}", report.details());
    assert_eq!(
        (report.starts, report.kills),
        (u32::try_from(nodes).expect("node count fits in u32"), 0),
        "healed without a restart\n{}",
        report.details()
    );
}
