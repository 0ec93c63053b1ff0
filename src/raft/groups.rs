//! The Raft groups of one node: one openraft instance per group, on one
//! store and one transport, and what a front end asks of them: which
//! group a key is in, who leads it, how far it has applied, and proposing
//! operations to it.
//!
//! Every node is a voter of every group (a cluster's groups replicate on
//! all its nodes). Group `g` is first led by the node at index
//! `g % nodes`, which initializes it at a fresh start, so that leaders
//! spread over the nodes; openraft elects another when that one fails.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};

use super::durability::Durability;
use super::log_store::{Group, LogStore};
use super::snapshot::group_of;
use super::state_machine::StateMachine;
use super::transport::{Network, Transport};
use super::types::{NodeId, Proposal, ProposalId, TypeConfig};
use crate::lock::lock;
use crate::storage::store::Store;

/// Most groups a cluster may have: each is an openraft instance with its
/// own tasks and timers on every node; 64 is far more than a cluster of a
/// few nodes needs to spread its leaders.
pub const GROUPS_MAX: u32 = 64;

/// Timing of the groups, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often a leader tells its followers it is alive.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a time between these starts an
    /// election.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

/// The defaults: heartbeats every 100 ms, elections after 500 to 1,000 ms
/// of silence. An election timeout is many round trips of Maelstrom's
/// network even with `--latency 20` (tens of milliseconds each way, with
/// tails), so a slow message does not depose a live leader; and short
/// enough that a dead leader's keys take writes again within about a
/// second and a half.
pub const TIMING_DEFAULT: Timing = Timing {
    heartbeat_ms: 200,
    election_min_ms: 800,
    election_max_ms: 1600,
};

/// Entries a group applies between snapshots: a snapshot lets it purge
/// its log, which is kept in memory.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 5_000;

/// Entries kept in the log below a snapshot, so a follower a little behind
/// catches up from the log rather than by a snapshot.
pub const LOG_KEPT_BELOW_SNAPSHOT: u64 = 1_000;

/// Entries one AppendEntries carries at most: with proposals of up to a
/// forward batch each, this keeps a message to a peer well within a
/// node's line limit.
pub const ENTRIES_PER_APPEND_MAX: u64 = 64;

/// Bytes of a snapshot one InstallSnapshot chunk carries.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 256 << 10;

/// The groups of one node.
pub struct Groups {
    me: NodeId,
    /// Every node's name, by id.
    nodes: Vec<String>,
    pub transport: Arc<Transport>,
    rafts: Vec<Raft<TypeConfig>>,
    state: Vec<Arc<Group>>,
    /// The next proposal's sequence number.
    next_proposal: Mutex<u64>,
    timing: Timing,
    /// When each group last asked its Raft instance for a heartbeat.
    heartbeat_asked: Mutex<Vec<Option<std::time::Instant>>>,
}

/// Why a proposal did not take effect, or may not have.
#[derive(Debug)]
pub enum ProposeError {
    /// This node is not the group's leader (the leader it knows of, if
    /// any): nothing was appended.
    NotLeader(Option<NodeId>),
    /// Appended here, then lost its place (a new leader's log replaced
    /// it), or the group failed after appending it: it may still be
    /// committed by another leader.
    Unknown(String),
}

impl Groups {
    /// Starts `count` groups for node `me` of `nodes`, on `store`.
    pub async fn start(
        me: NodeId,
        nodes: Vec<String>,
        count: u32,
        store: Arc<Mutex<Store>>,
        durability: Arc<dyn Durability>,
        timing: Timing,
    ) -> Result<Groups, String> {
        if count == 0 || count > GROUPS_MAX {
            return Err(format!("a cluster has 1 to {GROUPS_MAX} groups, not {count}"));
        }
        let config = Config {
            cluster_name: "seglog".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            max_payload_entries: ENTRIES_PER_APPEND_MAX,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
            max_in_snapshot_log_to_keep: LOG_KEPT_BELOW_SNAPSHOT,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            // Heartbeats are sent by `heartbeat_idle` only to followers
            // that replication has left idle: under load they would be
            // messages of their own for nothing.
            enable_heartbeat: false,
            ..Config::default()
        }
        .validate()
        .map_err(|e| format!("the Raft configuration: {e}"))?;
        let config = Arc::new(config);
        let transport = Transport::new(me);
        let mut rafts = Vec::new();
        let mut state = Vec::new();
        for g in 0..count {
            let group = Group::open(g, Arc::clone(&store), Arc::clone(&durability))
                .map_err(|e| format!("opening group {g}'s log: {e}"))?;
            let log_store = LogStore {
                group: Arc::clone(&group),
            };
            let state_machine = StateMachine::new(Arc::clone(&group), count);
            let network = Network {
                group: g,
                transport: Arc::clone(&transport),
            };
            let raft = Raft::new(me, Arc::clone(&config), network, log_store, state_machine)
                .await
                .map_err(|e| format!("starting group {g}: {e}"))?;
            rafts.push(raft);
            state.push(group);
        }
        let started_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Ok(Groups {
            me,
            nodes,
            transport,
            rafts,
            state,
            next_proposal: Mutex::new(started_us),
            timing,
            heartbeat_asked: Mutex::new(vec![None; count as usize]),
        })
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Every node's name, by id.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// How many groups there are.
    pub fn count(&self) -> u32 {
        self.rafts.len() as u32
    }

    /// The group of a client key.
    pub fn group_of(&self, key: &str) -> u32 {
        group_of(key, self.count())
    }

    /// Group `g`'s Raft instance.
    pub fn raft(&self, g: u32) -> Option<&Raft<TypeConfig>> {
        self.rafts.get(g as usize)
    }

    /// The node group `g` leads first.
    pub fn preferred_leader(&self, g: u32) -> NodeId {
        u64::from(g) % self.nodes.len().max(1) as u64
    }

    /// The leader of group `g` as this node knows it.
    pub fn leader(&self, g: u32) -> Option<NodeId> {
        self.raft(g)?.metrics().borrow().current_leader
    }

    /// The index of the last entry group `g` applied here.
    pub fn applied(&self, g: u32) -> Option<u64> {
        self.raft(g)?
            .metrics()
            .borrow()
            .last_applied
            .map(|id| id.index)
    }

    /// Whether group `g` has any state here: a vote, an entry, or an
    /// applied entry (a group never initialized here has none).
    pub fn has_state(&self, g: u32) -> bool {
        self.state.get(g as usize).is_some_and(|group| {
            let log = lock(&group.log);
            log.vote.is_some() || log.last_log_id().is_some() || log.applied.is_some()
        })
    }

    /// The membership every group starts with: every node a voter.
    fn members(&self) -> BTreeMap<NodeId, BasicNode> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(id, name)| (id as u64, BasicNode::new(name)))
            .collect()
    }

    /// Initializes group `g` with every node as a voter, and asks for an
    /// election here at once. Harmless where the group already has a log
    /// (openraft refuses; every node would write the same first entry).
    pub async fn initialize(&self, g: u32) -> Result<(), String> {
        let raft = self.raft(g).ok_or_else(|| format!("no group {g}"))?;
        match raft.initialize(self.members()).await {
            Ok(()) => {}
            Err(RaftError::APIError(e)) => return Err(format!("group {g}: {e}")),
            Err(e) => return Err(format!("group {g}: {e}")),
        }
        let _ = raft.trigger().elect().await;
        Ok(())
    }

    /// A new proposal id of this node.
    pub fn next_proposal_id(&self) -> ProposalId {
        let mut next = lock(&self.next_proposal);
        *next += 1;
        ProposalId {
            node: self.me,
            seq: *next,
        }
    }

    /// Proposes `proposal` to group `g`, which this node must lead; returns
    /// the index of its entry and the results of its operations, once
    /// committed and applied here.
    pub async fn propose(
        &self,
        g: u32,
        proposal: Proposal,
    ) -> Result<(u64, Vec<super::types::OpResult>), ProposeError> {
        let Some(raft) = self.raft(g) else {
            return Err(ProposeError::NotLeader(None));
        };
        let id = proposal.id;
        match raft.client_write(proposal).await {
            Ok(response) => Ok((response.log_id.index, response.data.results)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                if self.was_appended(g, id) {
                    Err(ProposeError::Unknown(format!(
                        "the entry lost its place in group {g}'s log; another leader may commit it"
                    )))
                } else {
                    Err(ProposeError::NotLeader(forward.leader_id))
                }
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Unknown(format!("group {g}: {e}"))),
            Err(RaftError::Fatal(e)) if !self.was_appended(g, id) => Err(ProposeError::NotLeader(None))
                .inspect_err(|_| crate::log::warn(format_args!("group {g} failed: {e}"))),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Unknown(format!("group {g} failed: {e}"))),
        }
    }

    /// Whether a proposal was appended to group `g`'s log here.
    pub fn was_appended(&self, g: u32, id: ProposalId) -> bool {
        self.state
            .get(g as usize)
            .is_some_and(|group| lock(&group.proposals).was_appended(id))
    }

    /// The entry index and results of a proposal applied here.
    pub fn outcome(&self, g: u32, id: ProposalId) -> Option<(u64, Vec<super::types::OpResult>)> {
        self.state
            .get(g as usize)
            .and_then(|group| lock(&group.proposals).outcome(id))
    }

    /// Every node's id.
    pub fn node_ids(&self) -> BTreeSet<NodeId> {
        (0..self.nodes.len() as u64).collect()
    }

    /// Asks each group this node leads for a heartbeat where some
    /// follower has had no AppendEntries for a heartbeat interval (a
    /// follower hearing nothing for an election timeout starts an
    /// election). Call it every tick.
    pub fn heartbeat_idle(&self, now: std::time::Instant) {
        let interval = std::time::Duration::from_millis(self.timing.heartbeat_ms);
        let mut asked = lock(&self.heartbeat_asked);
        for (g, raft) in self.rafts.iter().enumerate() {
            if raft.metrics().borrow().current_leader != Some(self.me) {
                continue;
            }
            if asked[g].is_some_and(|at| now.duration_since(at) < interval / 2) {
                continue;
            }
            let idle = (0..self.nodes.len() as u64)
                .filter(|&peer| peer != self.me)
                .any(|peer| {
                    self.transport
                        .last_append(g as u32, peer)
                        .is_none_or(|at| now.duration_since(at) >= interval)
                });
            if idle {
                asked[g] = Some(now);
                let raft = raft.clone();
                tokio::spawn(async move {
                    let _ = raft.trigger().heartbeat().await;
                });
            }
        }
    }

    /// Stops every group.
    pub async fn shutdown(&self) {
        for raft in &self.rafts {
            let _ = raft.shutdown().await;
        }
    }
}
