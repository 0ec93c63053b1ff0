//! Nemeses that aim at the Raft groups: kill -9 of each group's leader in turn (the failover
//! gap is measured from the history afterwards), and a node whose data directory is deleted
//! before it restarts (it must rejoin as an empty follower and lose nothing acknowledged).
//!
//! Both learn who leads each group from a live node's `topology` reply, seglog's own request
//! (`cluster.md`).

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::history::{Operation, Outcome, Request};
use super::recorder::Recorder;
use super::supervisor::Supervisor;
use super::timeline::Timeline;

/// How long a killed leader stays down: longer than openraft's longest election timeout (1.6 s)
/// plus a few rounds, so a send that succeeds while it is down proves another node took over
/// its group rather than the old leader coming back.
pub const LEADER_DOWNTIME: Duration = Duration::from_secs(4);

/// How long a `topology` request may take before another node is asked.
const TOPOLOGY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the nemesis waits, before a kill, for every group to have a leader that every node
/// votes under.
const LEADERS_WAIT: Duration = Duration::from_secs(10);

/// One leader kill: the group whose leader died (of `groups`), which node that was, and when
/// (history time).
#[derive(Clone, Debug)]
pub struct LeaderKill {
    pub group: u32,
    pub groups: u32,
    pub node: usize,
    pub at_ns: u64,
    /// When the node was back (history time).
    pub back_ns: u64,
}

/// Whether every node votes in every group and knows the same leader for each: the leaders, else
/// `None`. A node that has not yet learnt that it may vote (at a fresh start, it probes its peers
/// first, `src/raft/standing.rs`) needs an answer from every other node of three, so with the
/// leader killed before then, the two left could elect no one until it is back.
fn formed_leaders(supervisor: &Supervisor) -> Option<Vec<usize>> {
    let mut agreed: Option<Vec<Option<usize>>> = None;
    for node in 0..supervisor.node_count() {
        let reply = supervisor
            .connection(node)
            .ok()?
            .call("c-nemesis", json!({"type": "topology"}), TOPOLOGY_TIMEOUT)
            .ok()?;
        let votes = reply.body.get("votes").and_then(Value::as_array)?;
        if !votes.iter().all(|v| v.as_bool() == Some(true)) {
            return None;
        }
        let leaders: Vec<Option<usize>> = reply
            .body
            .get("leaders")
            .and_then(Value::as_array)?
            .iter()
            .map(|leader| {
                leader
                    .as_str()
                    .and_then(|name| name.strip_prefix('n'))
                    .and_then(|index| index.parse().ok())
            })
            .collect();
        match &agreed {
            Some(before) if *before != leaders => return None,
            _ => agreed = Some(leaders),
        }
    }
    agreed?.into_iter().collect()
}

/// Waits until every node votes in every group and all know the same leader for each (so that
/// the others can elect a new one when that leader dies); the leaders, or `None` in time.
fn settled_leaders(supervisor: &Supervisor) -> Option<Vec<usize>> {
    let deadline = Instant::now() + LEADERS_WAIT;
    while Instant::now() < deadline {
        if let Some(all) = formed_leaders(supervisor) {
            return Some(all);
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}

/// `kills` times, one per slot of `duration`: kills the leader of group 0, 1, ... in turn (round
/// the groups the nodes report), each down for [`LEADER_DOWNTIME`]. Stops early when the workload
/// ends or the run failed.
pub fn kill_leaders(
    supervisor: &Supervisor,
    recorder: &Recorder,
    timeline: &Timeline,
    start: Instant,
    duration: Duration,
    kills_wanted: u32,
) -> Vec<LeaderKill> {
    let mut kills = Vec::new();
    let slot = duration / kills_wanted.max(1);
    for index in 0..kills_wanted {
        thread::sleep((start + slot * index + slot / 8).saturating_duration_since(Instant::now()));
        if supervisor.workload_over() || supervisor.failure().is_some() {
            break;
        }
        let Some(leaders) = settled_leaders(supervisor) else {
            supervisor.fail(format!("no leader for every group within {LEADERS_WAIT:?}"));
            break;
        };
        let groups = u32::try_from(leaders.len()).expect("group count fits in u32");
        let group = index % groups.max(1);
        let node = leaders[group as usize];
        timeline.record(format_args!("kill n{node}, the leader of group {group}"));
        let at_ns = recorder.now_ns();
        if supervisor.kill(node).is_err() {
            break;
        }
        thread::sleep(LEADER_DOWNTIME);
        if supervisor.restart(node).is_err() {
            break;
        }
        timeline.record(format_args!("n{node} restarted"));
        kills.push(LeaderKill {
            group,
            groups,
            node,
            at_ns,
            back_ns: recorder.now_ns(),
        });
    }
    kills
}

/// `wipes` times, one per slot of `duration`: kills a node, deletes its data directory, and
/// restarts it on the empty directory.
pub fn wipe(
    supervisor: &Supervisor,
    timeline: &Timeline,
    start: Instant,
    duration: Duration,
    wipes: u32,
) {
    let slot = duration / wipes.max(1);
    for index in 0..wipes {
        thread::sleep((start + slot * index + slot / 3).saturating_duration_since(Instant::now()));
        if supervisor.workload_over() || supervisor.failure().is_some() {
            return;
        }
        // A different node each time, the leader of some group among them.
        let node = index as usize % supervisor.node_count();
        timeline.record(format_args!("kill n{node} and delete its data directory"));
        if supervisor.kill(node).is_err() {
            return;
        }
        let dir = supervisor.data_dir(node);
        if let Err(e) = fs::remove_dir_all(&dir) {
            supervisor.fail(format!("deleting {}: {e}", dir.display()));
            return;
        }
        if supervisor.restart(node).is_err() {
            return;
        }
        timeline.record(format_args!("n{node} restarted on an empty directory"));
    }
}

/// How long after each kill a send to the dead leader's group, invoked after the kill,
/// first succeeded: `None` if none did before the old leader was back.
pub fn failover_gaps(
    history: &[Operation],
    kills: &[LeaderKill],
) -> Vec<(LeaderKill, Option<Duration>)> {
    kills
        .iter()
        .map(|kill| {
            let first_ok = history
                .iter()
                .filter(|op| op.invoke_ns >= kill.at_ns && op.complete_ns < kill.back_ns)
                .filter(|op| matches!(op.outcome, Outcome::Ok { .. }))
                .filter(|op| match &op.request {
                    Request::Send { key, .. } => {
                        seglog::raft::snapshot::group_of(key, kill.groups) == kill.group
                    }
                    _ => false,
                })
                .map(|op| op.complete_ns)
                .min();
            (
                kill.clone(),
                first_ok.map(|ns| Duration::from_nanos(ns - kill.at_ns)),
            )
        })
        .collect()
}
