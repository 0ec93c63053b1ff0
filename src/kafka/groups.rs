//! Consumer groups: FindCoordinator (this broker; on a node of a cluster,
//! the metadata group's leader, and the other nodes refuse a coordinator's
//! requests with NOT_COORDINATOR, so that one node holds each group's
//! membership), the classic group
//! protocol that `subscribe()` uses (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), and OffsetCommit / OffsetFetch on the store's committed
//! offsets, the same ones the HTTP front end's group routes use.
//!
//! Membership lives in memory: a restart of seglog makes every member join
//! again (their heartbeats get UNKNOWN_MEMBER_ID), while committed offsets
//! are durable. A rebalance follows Kafka's: a join or a leave moves the
//! group to *preparing*; members learn it from their heartbeat and join
//! again; once every member has joined (or the rebalance timeout dropped
//! the ones that did not) all joins are answered, the leader with every
//! member's subscription; the leader's SyncGroup hands out the assignment.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ResponseKind,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use super::reply::Reply;
use super::{Context, NODE_ID};
use crate::lock::lock;
use crate::log;

/// Most consumer groups kept at once: each holds its members'
/// subscriptions in memory. An empty group (no members) is kept for its
/// generation but evicted when a new group needs its place.
pub const GROUPS_MAX: usize = 10_000;
/// Most members of one group: bounds a JoinGroup reply to the leader.
pub const MEMBERS_MAX: usize = 1_000;
/// Longest member subscription or assignment kept, in bytes (a list of
/// topic names and partitions; Kafka bounds them only by the request size).
pub const MEMBER_METADATA_BYTES_MAX: usize = 1 << 20;
/// How often expired members and overdue rebalances are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Bounds of a member's session timeout (Kafka's group.min/max.session.timeout.ms).
pub const SESSION_TIMEOUT_MS_MIN: i32 = 1_000;
pub const SESSION_TIMEOUT_MS_MAX: i32 = 1_800_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Empty,
    /// Waiting for every member to join.
    Preparing,
    /// Joins answered; waiting for the leader's assignment.
    Completing,
    Stable,
}

struct Member {
    /// The client id of its JoinGroup, for DescribeGroups.
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    /// Joined in the rebalance under way.
    joined: bool,
}

type JoinResult = JoinGroupResponse;

#[derive(Default)]
struct Group {
    state: Option<State>,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    joins: Vec<(String, oneshot::Sender<JoinResult>)>,
    syncs: Vec<(String, oneshot::Sender<(i16, Bytes)>)>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn state(&self) -> State {
        self.state.unwrap_or(State::Empty)
    }

    /// Starts a rebalance: pending syncs are told to join again.
    fn prepare(&mut self, now: Instant) {
        if self.state() == State::Preparing {
            return;
        }
        self.state = Some(State::Preparing);
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_deadline = Some(now + timeout);
        for member in self.members.values_mut() {
            member.joined = false;
        }
        for (_, tx) in self.syncs.drain(..) {
            let _ = tx.send((ResponseError::RebalanceInProgress.code(), Bytes::new()));
        }
    }

    /// Answers the joins once every member has joined, or `force`d at the
    /// rebalance deadline (members that did not join are dropped).
    fn try_complete(&mut self, force: bool) {
        if self.state() != State::Preparing {
            return;
        }
        if !force && self.members.values().any(|m| !m.joined) {
            return;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.state = Some(State::Empty);
            self.leader = None;
            self.joins.clear();
            return;
        }
        // The first protocol of the leader's that every member has.
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        let protocol = self.members.get(&leader).and_then(|m| {
            m.protocols
                .iter()
                .map(|(name, _)| name)
                .find(|name| {
                    self.members
                        .values()
                        .all(|o| o.protocols.iter().any(|(n, _)| n == *name))
                })
                .cloned()
        });
        self.generation += 1;
        self.leader = Some(leader.clone());
        self.protocol = protocol.clone();
        self.state = Some(State::Completing);
        self.rebalance_deadline = None;
        let protocol_name = protocol.unwrap_or_default();
        let members: Vec<JoinGroupResponseMember> = self
            .members
            .iter()
            .map(|(id, m)| {
                let mut entry = JoinGroupResponseMember::default();
                entry.member_id = StrBytes::from_string(id.clone());
                entry.metadata = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol_name)
                    .map(|(_, meta)| meta.clone())
                    .unwrap_or_default();
                entry
            })
            .collect();
        for (id, tx) in self.joins.drain(..) {
            let mut response = JoinGroupResponse::default();
            response.generation_id = self.generation;
            response.protocol_type = Some(StrBytes::from_string(self.protocol_type.clone()));
            response.protocol_name = Some(StrBytes::from_string(protocol_name.clone()));
            response.leader = StrBytes::from_string(leader.clone());
            response.member_id = StrBytes::from_string(id.clone());
            if id == leader {
                response.members = members.clone();
            }
            let _ = tx.send(response);
        }
    }
}

/// A group as DescribeGroups shows it.
pub struct GroupView {
    /// Kafka's name of its state: Empty, PreparingRebalance,
    /// CompletingRebalance or Stable.
    pub state: &'static str,
    pub protocol_type: String,
    /// The protocol (assignor) chosen, empty before one is.
    pub protocol: String,
    pub members: Vec<MemberView>,
}

/// A member as DescribeGroups shows it.
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    /// Its subscription in the group's protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

impl GroupView {
    fn of(group: &Group) -> GroupView {
        let protocol = group.protocol.clone().unwrap_or_default();
        GroupView {
            state: match group.state() {
                State::Empty => "Empty",
                State::Preparing => "PreparingRebalance",
                State::Completing => "CompletingRebalance",
                State::Stable => "Stable",
            },
            protocol_type: group.protocol_type.clone(),
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == protocol)
                        .or(m.protocols.first())
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        }
    }
}

/// The topics of a consumer protocol subscription (the metadata of a
/// member of a group of protocol type "consumer": version, then an array
/// of topic names); empty for anything that does not decode as one.
pub fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    fn parse(bytes: &[u8]) -> Option<Vec<String>> {
        let count = i32::from_be_bytes(bytes.get(2..6)?.try_into().ok()?);
        let mut position = 6;
        let mut topics = Vec::new();
        for _ in 0..count.max(0) {
            let len = usize::try_from(i16::from_be_bytes(
                bytes.get(position..position + 2)?.try_into().ok()?,
            ))
            .ok()?;
            position += 2;
            let name = bytes.get(position..position + len)?;
            topics.push(String::from_utf8(name.to_vec()).ok()?);
            position += len;
        }
        Some(topics)
    }
    parse(metadata).unwrap_or_default()
}

/// Every group's membership.
pub struct Coordinator {
    /// Groups by name.
    groups: Mutex<HashMap<String, Group>>,
    /// Numbers the member ids handed out.
    next_member: AtomicU64,
    /// Drawn at random when the coordinator starts, in every member id it
    /// hands out: another process (this server restarted, or another node
    /// of a cluster coordinating after it) never gives out an id that a
    /// member of this one still holds (as Kafka's `{client.id}-{UUID}`).
    instance: String,
    /// Most groups kept: [`GROUPS_MAX`], lowered by tests.
    groups_max: usize,
}

impl Default for Coordinator {
    fn default() -> Coordinator {
        Coordinator::with_groups_max(GROUPS_MAX)
    }
}

impl Coordinator {
    /// A coordinator that keeps at most `groups_max` groups.
    pub fn with_groups_max(groups_max: usize) -> Coordinator {
        let mut random = [0u8; 8];
        if getrandom::fill(&mut random).is_err() {
            // No randomness from the OS: the start time tells processes apart.
            random = crate::broker::time::now_ms().to_le_bytes();
        }
        Coordinator {
            groups: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(0),
            instance: random.iter().map(|b| format!("{b:02x}")).collect(),
            groups_max,
        }
    }
}

/// Whether `group_id` has or can get a place among `groups`, at most
/// `groups_max` of them: a new group takes the place of an empty one (no
/// members, no join waiting) when all are taken. Empty groups are kept
/// otherwise only so that their generation goes on counting; a group that
/// forms again after eviction starts at generation 1, and its old members'
/// ids, unique to this process, are unknown to it.
fn make_room(groups: &mut HashMap<String, Group>, group_id: &str, groups_max: usize) -> bool {
    if groups.contains_key(group_id) || groups.len() < groups_max {
        return true;
    }
    let empty = groups
        .iter()
        .find(|(_, g)| g.members.is_empty() && g.joins.is_empty())
        .map(|(name, _)| name.clone());
    match empty {
        Some(name) => {
            log::debug(format_args!(
                "kafka: empty group '{name}' evicted for '{group_id}' ({groups_max} groups kept)"
            ));
            groups.remove(&name);
            true
        }
        None => false,
    }
}

fn error_join(code: i16, member_id: &str) -> ResponseKind {
    let mut response = JoinGroupResponse::default();
    response.error_code = code;
    response.generation_id = -1;
    response.member_id = StrBytes::from_string(member_id.to_string());
    ResponseKind::JoinGroup(response)
}

/// The broker's check of a group name, as Kafka answers a bad one.
pub(super) fn check_group(group: &str) -> Result<(), i16> {
    crate::broker::groups::check_group(group).map_err(|_| ResponseError::InvalidGroupId.code())
}

/// FindCoordinator's key type of a transactional id (0 is a group).
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The coordinator of every consumer group: this broker, or on a node of a
/// cluster the metadata group's leader (where the groups' offsets are
/// committed first), as its id, host and port; else the error to answer.
fn coordinator(ctx: &Context) -> Result<(i32, String, i32), i16> {
    let Some(cluster) = ctx.broker.cluster() else {
        return Ok((NODE_ID, ctx.advertised.0.clone(), ctx.advertised.1));
    };
    let id = cluster.coordinator();
    let member = cluster.members().into_iter().find(|m| Some(m.id) == id);
    member
        .and_then(super::topics::member_broker)
        .map(|(id, host, port)| (id.0, host, port))
        .ok_or(ResponseError::CoordinatorNotAvailable.code())
}

/// On a node of a cluster that does not coordinate the consumer groups,
/// the code a coordinator's request is refused with (the client looks for
/// the coordinator again); `None` where it may be served.
pub fn not_coordinator(ctx: &Context) -> Option<i16> {
    let cluster = ctx.broker.cluster()?;
    match cluster.coordinator() {
        Some(id) if id == cluster.node_id() => None,
        Some(_) => Some(ResponseError::NotCoordinator.code()),
        None => Some(ResponseError::CoordinatorNotAvailable.code()),
    }
}

pub fn find_coordinator(
    ctx: &Arc<Context>,
    request: FindCoordinatorRequest,
    version: i16,
) -> Reply {
    let mut response = FindCoordinatorResponse::default();
    if request.key_type == KEY_TYPE_TRANSACTION {
        // No transactions: Kafka's answer to a transactional id the client
        // may not use, which stops it with a clear error rather than a
        // retry loop.
        response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        response.node_id = BrokerId(-1);
        response.host = StrBytes::from_static_str("");
        response.port = -1;
        return Reply::now(ResponseKind::FindCoordinator(response));
    }
    match coordinator(ctx) {
        Ok((id, host, port)) => {
            response.node_id = BrokerId(id);
            response.host = StrBytes::from_string(host);
            response.port = port;
        }
        Err(code) => {
            response.error_code = code;
            response.node_id = BrokerId(-1);
            response.host = StrBytes::from_static_str("");
            response.port = -1;
        }
    }
    // Version 4 and later list one coordinator per key instead.
    if version >= 4 {
        let mut entry = CoordinatorEntry::default();
        entry.key = request.key;
        entry.error_code = response.error_code;
        entry.node_id = response.node_id;
        entry.host = response.host.clone();
        entry.port = response.port;
        response.coordinators = vec![entry];
    }
    Reply::now(ResponseKind::FindCoordinator(response))
}

pub fn join(ctx: &Arc<Context>, request: JoinGroupRequest, client: &str, version: i16) -> Reply {
    let group_id = request.group_id.0.as_str().to_string();
    let mut member_id = request.member_id.as_str().to_string();
    if let Some(code) = check_group(&group_id)
        .err()
        .or_else(|| not_coordinator(ctx))
    {
        return Reply::now(error_join(code, &member_id));
    }
    if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&request.session_timeout_ms) {
        return Reply::now(error_join(
            ResponseError::InvalidSessionTimeout.code(),
            &member_id,
        ));
    }
    let metadata_bytes: usize = request.protocols.iter().map(|p| p.metadata.len()).sum();
    if request.protocols.is_empty() || metadata_bytes > MEMBER_METADATA_BYTES_MAX {
        return Reply::now(error_join(
            ResponseError::InconsistentGroupProtocol.code(),
            &member_id,
        ));
    }
    let now = Instant::now();
    let (tx, rx) = oneshot::channel();
    {
        let mut groups = lock(&ctx.groups.groups);
        if !make_room(&mut groups, &group_id, ctx.groups.groups_max) {
            return Reply::now(error_join(
                ResponseError::CoordinatorNotAvailable.code(),
                &member_id,
            ));
        }
        let group = groups.entry(group_id.clone()).or_default();
        if member_id.is_empty() {
            let n = ctx.groups.next_member.fetch_add(1, Ordering::Relaxed);
            member_id = format!("{client}-{}-{n}", ctx.groups.instance);
        } else if !group.members.contains_key(&member_id) {
            return Reply::now(error_join(
                ResponseError::UnknownMemberId.code(),
                &member_id,
            ));
        }
        if !group.members.contains_key(&member_id) && group.members.len() >= MEMBERS_MAX {
            return Reply::now(error_join(
                ResponseError::GroupMaxSizeReached.code(),
                &member_id,
            ));
        }
        if group.members.is_empty() {
            group.protocol_type = request.protocol_type.as_str().to_string();
        } else if group.protocol_type != request.protocol_type.as_str() {
            return Reply::now(error_join(
                ResponseError::InconsistentGroupProtocol.code(),
                &member_id,
            ));
        }
        // As Kafka: a member must share a protocol (an assignor) with every
        // other member, or the group could agree on none.
        let shared = request.protocols.iter().any(|p| {
            group
                .members
                .iter()
                .filter(|(id, _)| **id != member_id)
                .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == p.name.as_str()))
        });
        if !shared {
            return Reply::now(error_join(
                ResponseError::InconsistentGroupProtocol.code(),
                &member_id,
            ));
        }
        let rebalance_ms = u64::try_from(request.rebalance_timeout_ms)
            .unwrap_or(u64::try_from(request.session_timeout_ms).unwrap_or(0));
        let member = Member {
            client_id: client.to_string(),
            session_timeout: Duration::from_millis(request.session_timeout_ms as u64),
            rebalance_timeout: Duration::from_millis(rebalance_ms),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.as_str().to_string(), p.metadata))
                .collect(),
            assignment: Bytes::new(),
            last_seen: now,
            joined: true,
        };
        group.members.insert(member_id.clone(), member);
        group.prepare(now);
        if let Some(m) = group.members.get_mut(&member_id) {
            m.joined = true;
        }
        // A member that joins again replaces its earlier, unanswered join.
        group.joins.retain(|(id, _)| *id != member_id);
        group.joins.push((member_id.clone(), tx));
        group.try_complete(false);
    }
    log::debug(format_args!("kafka: {member_id} joins group '{group_id}'"));
    Reply::Later(Box::pin(async move {
        match rx.await {
            Ok(mut response) => {
                // Only version 7 and later carry the protocol type.
                if version < 7 {
                    response.protocol_type = None;
                }
                Some(ResponseKind::JoinGroup(response))
            }
            // Dropped: the member was removed before the join completed.
            Err(_) => Some(error_join(
                ResponseError::UnknownMemberId.code(),
                &member_id,
            )),
        }
    }))
}

fn sync_reply(code: i16, assignment: Bytes, group: Option<&Group>) -> ResponseKind {
    let mut response = SyncGroupResponse::default();
    response.error_code = code;
    response.assignment = assignment;
    if let Some(group) = group {
        response.protocol_type = Some(StrBytes::from_string(group.protocol_type.clone()));
        response.protocol_name = group.protocol.clone().map(StrBytes::from_string);
    }
    ResponseKind::SyncGroup(response)
}

pub fn sync(ctx: &Arc<Context>, request: SyncGroupRequest, version: i16) -> Reply {
    let reply = sync_inner(ctx, request);
    // Only version 5 and later carry the protocol type and name.
    if version >= 5 {
        return reply;
    }
    let strip = |response: ResponseKind| match response {
        ResponseKind::SyncGroup(mut r) => {
            r.protocol_type = None;
            r.protocol_name = None;
            ResponseKind::SyncGroup(r)
        }
        other => other,
    };
    match reply {
        Reply::Now(r) => Reply::now(strip(*r)),
        Reply::Later(f) => Reply::Later(Box::pin(async move { f.await.map(strip) })),
        Reply::Nothing => Reply::Nothing,
    }
}

fn sync_inner(ctx: &Arc<Context>, request: SyncGroupRequest) -> Reply {
    let group_id = request.group_id.0.as_str();
    let member_id = request.member_id.as_str().to_string();
    if let Some(code) = not_coordinator(ctx) {
        return Reply::now(sync_reply(code, Bytes::new(), None));
    }
    let mut groups = lock(&ctx.groups.groups);
    let Some(group) = groups.get_mut(group_id) else {
        return Reply::now(sync_reply(
            ResponseError::UnknownMemberId.code(),
            Bytes::new(),
            None,
        ));
    };
    let Some(member) = group.members.get_mut(&member_id) else {
        return Reply::now(sync_reply(
            ResponseError::UnknownMemberId.code(),
            Bytes::new(),
            None,
        ));
    };
    member.last_seen = Instant::now();
    let own_assignment = member.assignment.clone();
    if request.generation_id != group.generation {
        return Reply::now(sync_reply(
            ResponseError::IllegalGeneration.code(),
            Bytes::new(),
            None,
        ));
    }
    match group.state() {
        State::Preparing | State::Empty => Reply::now(sync_reply(
            ResponseError::RebalanceInProgress.code(),
            Bytes::new(),
            None,
        )),
        State::Stable => Reply::now(sync_reply(0, own_assignment, Some(group))),
        State::Completing if group.leader.as_deref() == Some(member_id.as_str()) => {
            let oversized = request
                .assignments
                .iter()
                .any(|a| a.assignment.len() > MEMBER_METADATA_BYTES_MAX);
            if oversized {
                return Reply::now(sync_reply(
                    ResponseError::InvalidRequest.code(),
                    Bytes::new(),
                    None,
                ));
            }
            for a in request.assignments {
                if let Some(m) = group.members.get_mut(a.member_id.as_str()) {
                    m.assignment = a.assignment;
                }
            }
            group.state = Some(State::Stable);
            for (id, tx) in group.syncs.drain(..) {
                let assignment = group
                    .members
                    .get(&id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let _ = tx.send((0, assignment));
            }
            let assignment = group
                .members
                .get(&member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default();
            log::debug(format_args!(
                "kafka: group '{group_id}' is stable at generation {} with {} members",
                group.generation,
                group.members.len()
            ));
            Reply::now(sync_reply(0, assignment, Some(group)))
        }
        State::Completing => {
            let (tx, rx) = oneshot::channel();
            group.syncs.retain(|(id, _)| *id != member_id);
            group.syncs.push((member_id, tx));
            let (protocol_type, protocol) = (group.protocol_type.clone(), group.protocol.clone());
            Reply::Later(Box::pin(async move {
                let (code, assignment) = rx
                    .await
                    .unwrap_or((ResponseError::RebalanceInProgress.code(), Bytes::new()));
                let mut response = SyncGroupResponse::default();
                response.error_code = code;
                response.assignment = assignment;
                response.protocol_type = Some(StrBytes::from_string(protocol_type));
                response.protocol_name = protocol.map(StrBytes::from_string);
                Some(ResponseKind::SyncGroup(response))
            }))
        }
    }
}

pub fn heartbeat(ctx: &Arc<Context>, request: HeartbeatRequest) -> Reply {
    if let Some(code) = not_coordinator(ctx) {
        let mut response = HeartbeatResponse::default();
        response.error_code = code;
        return Reply::now(ResponseKind::Heartbeat(response));
    }
    let mut groups = lock(&ctx.groups.groups);
    let code = match groups.get_mut(request.group_id.0.as_str()) {
        None => ResponseError::UnknownMemberId.code(),
        Some(group) => {
            let (state, generation) = (group.state(), group.generation);
            match group.members.get_mut(request.member_id.as_str()) {
                None => ResponseError::UnknownMemberId.code(),
                Some(member) => {
                    member.last_seen = Instant::now();
                    if state == State::Preparing {
                        ResponseError::RebalanceInProgress.code()
                    } else if request.generation_id != generation {
                        ResponseError::IllegalGeneration.code()
                    } else {
                        0
                    }
                }
            }
        }
    };
    let mut response = HeartbeatResponse::default();
    response.error_code = code;
    Reply::now(ResponseKind::Heartbeat(response))
}

pub fn leave(ctx: &Arc<Context>, request: LeaveGroupRequest, version: i16) -> Reply {
    // Up to version 2 one member leaves; from 3 a list.
    let leaving: Vec<String> = if version < 3 {
        vec![request.member_id.as_str().to_string()]
    } else {
        request
            .members
            .iter()
            .map(|m| m.member_id.as_str().to_string())
            .collect()
    };
    let mut response = LeaveGroupResponse::default();
    if let Some(code) = not_coordinator(ctx) {
        response.error_code = code;
        return Reply::now(ResponseKind::LeaveGroup(response));
    }
    let mut groups = lock(&ctx.groups.groups);
    let group_id = request.group_id.0.as_str();
    let group = groups.get_mut(group_id);
    let Some(group) = group else {
        response.error_code = ResponseError::UnknownMemberId.code();
        return Reply::now(ResponseKind::LeaveGroup(response));
    };
    let now = Instant::now();
    let mut codes = Vec::with_capacity(leaving.len());
    for id in &leaving {
        let code = if group.members.remove(id).is_some() {
            log::debug(format_args!("kafka: {id} leaves group '{group_id}'"));
            group.joins.retain(|(j, _)| j != id);
            0
        } else {
            ResponseError::UnknownMemberId.code()
        };
        codes.push(code);
    }
    if codes.contains(&0) {
        if group.members.is_empty() {
            group.state = Some(State::Empty);
            group.leader = None;
        } else {
            group.prepare(now);
            group.try_complete(false);
        }
    }
    if version < 3 {
        response.error_code = codes.first().copied().unwrap_or(0);
    } else {
        response.members = leaving
            .into_iter()
            .zip(codes)
            .map(|(id, code)| {
                let mut m = MemberResponse::default();
                m.member_id = StrBytes::from_string(id);
                m.error_code = code;
                m
            })
            .collect();
    }
    Reply::now(ResponseKind::LeaveGroup(response))
}

/// Drops members whose session expired and completes rebalances past
/// their deadline, every [`SWEEP_EVERY`].
pub async fn sweep_loop(ctx: Arc<Context>) {
    let mut timer = tokio::time::interval(SWEEP_EVERY);
    loop {
        timer.tick().await;
        let now = Instant::now();
        let mut groups = lock(&ctx.groups.groups);
        for (name, group) in groups.iter_mut() {
            let before = group.members.len();
            // A member waiting in a join is alive while it waits.
            let waiting: Vec<String> = group.joins.iter().map(|(id, _)| id.clone()).collect();
            group.members.retain(|id, m| {
                waiting.contains(id) || now.duration_since(m.last_seen) < m.session_timeout
            });
            let expired = before - group.members.len();
            if expired > 0 {
                log::info(format_args!(
                    "kafka: {expired} members of group '{name}' missed their session timeout"
                ));
                if group.members.is_empty() {
                    group.state = Some(State::Empty);
                    group.leader = None;
                } else {
                    group.prepare(now);
                }
            }
            let overdue = group.rebalance_deadline.is_some_and(|d| now >= d);
            group.try_complete(overdue);
        }
        groups.retain(|_, g| !g.members.is_empty() || g.generation > 0);
    }
}

impl Coordinator {
    /// Whether a commit naming `generation` and `member_id` of `group_id`
    /// is taken: `None` if so, else the Kafka error code. A generation of
    /// -1 (a consumer that assigns partitions itself) is always taken; any
    /// other must be a current member's, which counts as a sign of life.
    /// What DescribeGroups and ListGroups show of a group with members (or
    /// an empty one kept for its generation); `None` for a group unknown
    /// to the coordinator.
    pub fn view(&self, group_id: &str) -> Option<GroupView> {
        lock(&self.groups).get(group_id).map(GroupView::of)
    }

    /// Every group the coordinator knows, by name.
    pub fn views(&self) -> Vec<(String, GroupView)> {
        lock(&self.groups)
            .iter()
            .map(|(name, group)| (name.clone(), GroupView::of(group)))
            .collect()
    }

    /// Forgets a group without members (DeleteGroups); `false`, changing
    /// nothing, when it has members or a join waits.
    pub fn forget_if_empty(&self, group_id: &str) -> bool {
        let mut groups = lock(&self.groups);
        match groups.get(group_id) {
            Some(group) if !group.members.is_empty() || !group.joins.is_empty() => false,
            _ => {
                groups.remove(group_id);
                true
            }
        }
    }

    pub fn check_commit(&self, group_id: &str, generation: i32, member_id: &str) -> Option<i16> {
        if generation < 0 {
            return None;
        }
        let mut groups = lock(&self.groups);
        match groups.get_mut(group_id) {
            None => Some(ResponseError::IllegalGeneration.code()),
            Some(group) => match group.members.get_mut(member_id) {
                None => Some(ResponseError::UnknownMemberId.code()),
                Some(member) => {
                    member.last_seen = Instant::now();
                    // As Kafka: commits of the current generation are taken
                    // while a rebalance prepares (a consumer commits what it
                    // read before giving its partitions up), refused while
                    // the new assignment is handed out.
                    if group.state == Some(State::Completing) {
                        Some(ResponseError::RebalanceInProgress.code())
                    } else if group.generation != generation {
                        Some(ResponseError::IllegalGeneration.code())
                    } else {
                        None
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::GroupId;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;

    /// A broker on a fresh store whose coordinator keeps `groups_max` groups.
    fn context(dir: &std::path::Path, groups_max: usize) -> Arc<Context> {
        let store = crate::storage::store::Store::open(dir, Default::default()).expect("store");
        let catalog = crate::broker::catalog::Catalog::open(dir).expect("catalog");
        Arc::new(Context {
            broker: crate::broker::test_broker(store, catalog),
            advertised: ("127.0.0.1".into(), 9092),
            groups: Coordinator::with_groups_max(groups_max),
            auto_create_partitions: 0,
            producer_expiry: crate::broker::producers::EXPIRY_DEFAULT,
            auth: None,
            tls: None,
        })
    }

    /// The reply, which must be ready: polled once, so a join that would
    /// wait for a rebalance fails the test instead of hanging it.
    fn reply(reply: Reply) -> ResponseKind {
        match reply {
            Reply::Now(response) => *response,
            Reply::Later(mut future) => {
                let mut context = std::task::Context::from_waker(std::task::Waker::noop());
                match future.as_mut().poll(&mut context) {
                    std::task::Poll::Ready(response) => response.expect("a reply"),
                    std::task::Poll::Pending => panic!("the reply waits"),
                }
            }
            Reply::Nothing => panic!("no reply"),
        }
    }

    /// A new member's JoinGroup of `group` offering `protocols`.
    fn join_request(group: &str, protocols: &[&str]) -> JoinGroupRequest {
        let mut request = JoinGroupRequest::default();
        request.group_id = GroupId(StrBytes::from_string(group.into()));
        request.session_timeout_ms = 10_000;
        request.rebalance_timeout_ms = 10_000;
        request.protocol_type = StrBytes::from_static_str("consumer");
        request.protocols = protocols
            .iter()
            .map(|name| {
                let mut p = JoinGroupRequestProtocol::default();
                p.name = StrBytes::from_string((*name).into());
                p.metadata = Bytes::from_static(b"m");
                p
            })
            .collect();
        request
    }

    /// A new member's join of `group` with `protocols`; returns the reply.
    fn join_with(ctx: &Arc<Context>, group: &str, protocols: &[&str]) -> JoinGroupResponse {
        let request = join_request(group, protocols);
        match reply(join(ctx, request, "test", 5)) {
            ResponseKind::JoinGroup(r) => r,
            _ => panic!("not a JoinGroup reply"),
        }
    }

    /// Whether a new member's join of `group` is taken and waits for the
    /// rebalance it starts.
    fn join_with_pending(ctx: &Arc<Context>, group: &str, protocols: &[&str]) -> bool {
        let request = join_request(group, protocols);
        match join(ctx, request, "test", 5) {
            Reply::Later(mut future) => {
                let mut context = std::task::Context::from_waker(std::task::Waker::noop());
                future.as_mut().poll(&mut context).is_pending()
            }
            _ => false,
        }
    }

    fn leave_group(ctx: &Arc<Context>, group: &str, member: &StrBytes) {
        let mut request = LeaveGroupRequest::default();
        request.group_id = GroupId(StrBytes::from_string(group.into()));
        request.member_id = member.clone();
        match reply(leave(ctx, request, 0)) {
            ResponseKind::LeaveGroup(r) => assert_eq!(r.error_code, 0),
            _ => panic!("not a LeaveGroup reply"),
        }
    }

    /// Regression: groups that had formed once (generation > 0) were kept
    /// forever and counted against GROUPS_MAX, so after that many groups
    /// had ever formed every new group got COORDINATOR_NOT_AVAILABLE until
    /// a restart. Empty groups now give their place up.
    #[test]
    fn empty_groups_give_their_place_to_new_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ctx = context(dir.path(), 2);
        for group in ["a", "b"] {
            let joined = join_with(&ctx, group, &["range"]);
            assert_eq!((joined.error_code, joined.generation_id), (0, 1));
            leave_group(&ctx, group, &joined.member_id);
        }
        // Both places are held by empty groups of generation 1.
        let c = join_with(&ctx, "c", &["range"]);
        assert_eq!((c.error_code, c.generation_id), (0, 1), "c");
        let d = join_with(&ctx, "d", &["range"]);
        assert_eq!((d.error_code, d.generation_id), (0, 1), "d");
        // Groups with members keep theirs: the limit still holds.
        let e = join_with(&ctx, "e", &["range"]);
        assert_eq!(e.error_code, ResponseError::CoordinatorNotAvailable.code());
    }

    /// Regression: a member that shared no protocol with the group was
    /// taken, and the group then agreed on an empty protocol name. It is
    /// refused with INCONSISTENT_GROUP_PROTOCOL, as Kafka refuses it, and
    /// the group stays as it was.
    #[test]
    fn a_member_sharing_no_protocol_with_the_group_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ctx = context(dir.path(), 10);
        let first = join_with(&ctx, "g", &["range", "cooperative-sticky"]);
        assert_eq!((first.error_code, first.generation_id), (0, 1));
        let other = join_with(&ctx, "g", &["roundrobin"]);
        assert_eq!(
            other.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );
        let groups = lock(&ctx.groups.groups);
        let group = groups.get("g").expect("the group");
        assert_eq!((group.state(), group.members.len()), (State::Completing, 1));
        drop(groups);
        // One shared protocol is enough.
        let sharing = join_with_pending(&ctx, "g", &["roundrobin", "cooperative-sticky"]);
        assert!(
            sharing,
            "a member sharing a protocol joins (and waits for the rebalance)"
        );
    }
}
