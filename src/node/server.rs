//! The node after `init`: serves each request, answers writes once they are
//! durable, and drives forwarding and replication. Everything here runs on
//! the event loop's one task, so none of it needs a lock of its own; only
//! the store is shared, with the group commit thread.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::forward::{Answer, Forwarder};
use super::lines::Outbox;
use super::owner::Cluster;
use super::peer::{ForwardResult, PeerReply, PeerRequest, Replicate};
use super::poll;
use super::protocol::{self, ReplyBody, ReplyTo, Request, code};
use super::replicate::{self, Replicator, ReplyOutcome};
use crate::lock::lock;
use crate::log;
use crate::storage::error::{Error, Result};
use crate::storage::group_commit::{GroupCommit, Synced};
use crate::storage::store::{Store, StoreConfig};

/// Forward message ids remembered per peer, to drop a forward that arrives
/// twice: a forward is never resent, so only a duplicating network could
/// deliver one twice, and a duplicate that got past this window would be
/// appended twice. 4,096 forwards is seconds of traffic at any rate seen.
pub const FORWARD_IDS_REMEMBERED: usize = 4096;

/// A write applied to the store, answered once a sync point covers it.
pub enum Pending {
    /// A client's send to a key this node owns.
    Send {
        to: ReplyTo,
        key: String,
        offset: u64,
    },
    /// A client's commit.
    Commit {
        to: ReplyTo,
        offsets: Vec<(String, u64)>,
    },
    /// A peer's forward: `results` holds an offset for each send appended
    /// and a definite error for each refused one.
    Forwarded {
        to: ReplyTo,
        keys: Vec<String>,
        results: Vec<ForwardResult>,
    },
    /// An owner's replication round, applied here.
    /// `refused` is why its commits could not be applied: then the answer
    /// is an error, so that the owner keeps them and sends them again.
    Replicated {
        to: ReplyTo,
        keys: Vec<String>,
        refused: Option<(u32, String)>,
    },
}

/// Message ids recently seen from one peer.
#[derive(Default)]
struct RecentIds {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    /// Remembers `id`; false if it was already remembered.
    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > FORWARD_IDS_REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// An initialised node.
pub struct Server {
    cluster: Cluster,
    store: Arc<Mutex<Store>>,
    group_commit: GroupCommit<Pending>,
    out: Outbox,
    forwarder: Forwarder,
    replicator: Replicator,
    /// The id of the last request this node sent to a peer. It starts at
    /// the time of start-up in microseconds, so a restarted node never
    /// reuses an id of its previous process: a peer's late reply to the old
    /// process cannot be taken for a reply to the new one.
    last_msg_id: u64,
    /// Forwards seen per peer, to drop repeats.
    forwards_seen: HashMap<String, RecentIds>,
}

impl Server {
    /// Opens the store in `dir` for `cluster` and starts the group commit,
    /// whose batches come back on `synced`.
    pub fn start(
        cluster: Cluster,
        dir: &std::path::Path,
        config: StoreConfig,
        out: Outbox,
        synced: UnboundedSender<Synced<Pending>>,
    ) -> Result<Server> {
        let store = Store::open(dir, config)?;
        log::info(format_args!(
            "store open at {} ({} shutdown, {} committed keys)",
            dir.display(),
            if store.opened_clean() {
                "clean"
            } else {
                "unclean"
            },
            store.committed_count()
        ));
        let (owned, committed) = if cluster.peers().next().is_some() {
            let keys = store.keys()?;
            let owned: Vec<String> = keys.into_iter().filter(|k| cluster.owns(k)).collect();
            let committed: Vec<(String, u64)> = store
                .committed_offsets()
                .map(|(key, offset)| (key.to_string(), offset))
                .collect();
            (owned, committed)
        } else {
            (Vec::new(), Vec::new())
        };
        let replicator = Replicator::new(&cluster, boot_id(), owned, &committed);
        let store = Arc::new(Mutex::new(store));
        // The event loop answers each batch; once it is gone, nobody is.
        let group_commit =
            GroupCommit::start(Arc::clone(&store), move |batch| synced.send(batch).is_ok())?;
        Ok(Server {
            cluster,
            store,
            group_commit,
            out,
            forwarder: Forwarder::default(),
            replicator,
            last_msg_id: first_msg_id(),
            forwards_seen: HashMap::new(),
        })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Serves one request (not `init`, which the event loop handles).
    pub fn handle(&mut self, to: ReplyTo, request: Request, now: Instant) {
        match request {
            Request::Init { .. } => unreachable!("init is handled by the event loop"),
            Request::Send { key, msg } => {
                if self.cluster.owns(&key) {
                    self.send_here(to, &key, &msg);
                } else {
                    let owner = self.cluster.owner(&key).to_string();
                    match self.forwarder.enqueue(&owner, to, key, msg, now) {
                        Ok(()) => self.pump_forwards(now),
                        Err(answer) => self.answer_send(answer),
                    }
                }
            }
            Request::Poll { offsets } => self.poll(&to, &offsets),
            Request::CommitOffsets { offsets } => self.commit(to, offsets),
            Request::ListCommittedOffsets { keys } => {
                let store = lock(&self.store);
                let offsets: BTreeMap<&str, u64> = keys
                    .iter()
                    .filter_map(|key| Some((key.as_str(), store.committed(key)?)))
                    .collect();
                let line = protocol::encode_reply(
                    &to,
                    &ReplyBody::ListCommittedOffsetsOk {
                        in_reply_to: to.msg_id,
                        offsets,
                    },
                );
                drop(store);
                self.out.send(line);
            }
            Request::Peer(_) if !self.cluster.is_peer(&to.src) => self.reply_error(
                &to,
                code::NOT_SUPPORTED,
                "node-to-node requests are taken from other nodes of the cluster only",
            ),
            Request::Peer(PeerRequest::Forward { sends }) => self.forwarded(to, sends),
            Request::Peer(PeerRequest::Replicate(round)) => self.replicated(to, &round),
        }
    }

    /// A peer's reply to a forward or a replication round of ours.
    pub fn on_reply(&mut self, src: &str, in_reply_to: u64, reply: PeerReply, now: Instant) {
        if let Some(answers) = self.forwarder.on_reply(src, in_reply_to, &reply) {
            for answer in answers {
                self.answer_send(answer);
            }
            self.pump_forwards(now);
            return;
        }
        match self.replicator.on_reply(src, in_reply_to, &reply) {
            ReplyOutcome::Taken => {}
            ReplyOutcome::PeerRestarted => {
                let store = lock(&self.store);
                self.replicator
                    .resend_commits(src, store.committed_offsets());
            }
            ReplyOutcome::NotOurs => log::debug(format_args!(
                "ignored a late or unknown reply from {src} to {in_reply_to}: {reply:?}"
            )),
        }
    }

    /// Answers the writes a sync point made durable, and schedules their
    /// records for replication.
    pub fn on_synced(&mut self, synced: Synced<Pending>, now: Instant) {
        let Synced { items, result, .. } = synced;
        let failed = result.as_ref().err();
        for item in items {
            match item {
                Pending::Send { to, key, offset } => match failed {
                    None => {
                        self.replicator.records_durable(&key);
                        self.reply(
                            &to,
                            &ReplyBody::SendOk {
                                in_reply_to: to.msg_id,
                                offset,
                            },
                        );
                    }
                    Some(e) => {
                        self.reply_error(&to, code::CRASH, &format!("send may not be durable: {e}"))
                    }
                },
                Pending::Commit { to, offsets } => match failed {
                    None => {
                        self.replicator.commits_durable(&offsets);
                        self.reply(
                            &to,
                            &ReplyBody::CommitOffsetsOk {
                                in_reply_to: to.msg_id,
                            },
                        );
                    }
                    Some(e) => self.reply_error(
                        &to,
                        code::CRASH,
                        &format!("commit may not be durable: {e}"),
                    ),
                },
                Pending::Forwarded {
                    to,
                    keys,
                    mut results,
                } => {
                    match failed {
                        None => keys
                            .iter()
                            .for_each(|key| self.replicator.records_durable(key)),
                        Some(e) => {
                            for result in &mut results {
                                if let ForwardResult::Offset(_) = result {
                                    *result = ForwardResult::Error {
                                        code: code::CRASH,
                                        text: format!("send may not be durable: {e}"),
                                    };
                                }
                            }
                        }
                    }
                    self.reply(
                        &to,
                        &ReplyBody::ForwardOk {
                            in_reply_to: to.msg_id,
                            results: &results,
                        },
                    );
                }
                Pending::Replicated { to, keys, refused } => match failed {
                    None => match refused {
                        None => self.reply_replicated(&to, &keys),
                        Some((code, text)) => self.reply_error(&to, code, &text),
                    },
                    Some(e) => self.reply_error(
                        &to,
                        code::CRASH,
                        &format!("replicated records may not be durable: {e}"),
                    ),
                },
            }
        }
        self.pump_replication(now);
    }

    /// Timeouts, and replication rounds that fell due.
    pub fn on_tick(&mut self, now: Instant) {
        for answer in self.forwarder.expire(now) {
            self.answer_send(answer);
        }
        self.pump_forwards(now);
        self.pump_replication(now);
    }

    /// Asks the group commit to drain and stop; its last batch still arrives.
    pub fn close_group_commit(&self) {
        self.group_commit.close();
    }

    /// Joins the group commit and closes the store cleanly.
    pub fn shut_down(self) -> Result<()> {
        let Server {
            group_commit,
            store,
            ..
        } = self;
        group_commit.join()?;
        // The thread has ended, so this is the store's last holder; should a
        // bug have kept another, the store is shut down in place instead.
        match Arc::try_unwrap(store) {
            Ok(store) => store
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .close(),
            Err(shared) => lock(&shared).shut_down(),
        }
    }

    fn reply(&self, to: &ReplyTo, body: &ReplyBody<'_>) {
        self.out.send(protocol::encode_reply(to, body));
    }

    fn reply_error(&self, to: &ReplyTo, code: u32, text: &str) {
        log::debug(format_args!(
            "error {code} to {} msg {}: {text}",
            to.src, to.msg_id
        ));
        self.reply(
            to,
            &ReplyBody::Error {
                in_reply_to: to.msg_id,
                code,
                text,
            },
        );
    }

    /// Answers a client's send from a forward's outcome.
    fn answer_send(&self, (to, result): Answer) {
        match result {
            ForwardResult::Offset(offset) => self.reply(
                &to,
                &ReplyBody::SendOk {
                    in_reply_to: to.msg_id,
                    offset,
                },
            ),
            ForwardResult::Error { code, text } => self.reply_error(&to, code, &text),
        }
    }

    /// Appends a send for a key this node owns.
    fn send_here(&mut self, to: ReplyTo, key: &str, msg: &[u8]) {
        if !self.group_commit.has_room() {
            self.reply_error(&to, code::TEMPORARILY_UNAVAILABLE, WAITING_FULL);
            return;
        }
        let appended = lock(&self.store).append(key, msg);
        match appended {
            Ok(offset) => self.group_commit.push(Pending::Send {
                to,
                key: key.to_string(),
                offset,
            }),
            // The record was not taken: a definite error is the truth.
            Err(e) => self.reply_error(&to, write_error_code(&e), &e.to_string()),
        }
    }

    fn commit(&mut self, to: ReplyTo, offsets: Vec<(String, u64)>) {
        if !self.group_commit.has_room() {
            self.reply_error(&to, code::TEMPORARILY_UNAVAILABLE, WAITING_FULL);
            return;
        }
        let mut store = lock(&self.store);
        if store.is_poisoned() {
            drop(store);
            let text = Error::Poisoned.to_string();
            self.reply_error(&to, code::TEMPORARILY_UNAVAILABLE, &text);
            return;
        }
        for (key, offset) in &offsets {
            // Keys were checked by the parser and the store is not
            // poisoned: commit cannot fail half-way.
            if let Err(e) = store.commit(key, *offset) {
                unreachable!("commit of a checked key failed: {e}");
            }
        }
        drop(store);
        self.group_commit.push(Pending::Commit { to, offsets });
    }

    /// A peer forwards sends for keys this node owns: append them in order,
    /// answer once durable.
    fn forwarded(&mut self, to: ReplyTo, sends: Vec<(String, Vec<u8>)>) {
        if !self
            .forwards_seen
            .entry(to.src.clone())
            .or_default()
            .insert(to.msg_id)
        {
            log::warn(format_args!(
                "forward {} from {} arrived twice: dropped the repeat",
                to.msg_id, to.src
            ));
            return;
        }
        if !self.group_commit.has_room() {
            self.reply_error(&to, code::TEMPORARILY_UNAVAILABLE, WAITING_FULL);
            return;
        }
        let mut keys = Vec::new();
        let mut results = Vec::with_capacity(sends.len());
        let mut store = lock(&self.store);
        for (key, msg) in sends {
            if !self.cluster.owns(&key) {
                results.push(ForwardResult::Error {
                    code: code::TEMPORARILY_UNAVAILABLE,
                    text: format!(
                        "{} does not own key {key:?}; {} does",
                        self.cluster.me(),
                        self.cluster.owner(&key)
                    ),
                });
                continue;
            }
            match store.append(&key, &msg) {
                Ok(offset) => {
                    results.push(ForwardResult::Offset(offset));
                    keys.push(key);
                }
                Err(e) => results.push(ForwardResult::Error {
                    code: write_error_code(&e),
                    text: e.to_string(),
                }),
            }
        }
        drop(store);
        if keys.is_empty() {
            self.reply(
                &to,
                &ReplyBody::ForwardOk {
                    in_reply_to: to.msg_id,
                    results: &results,
                },
            );
        } else {
            self.group_commit
                .push(Pending::Forwarded { to, keys, results });
        }
    }

    /// An owner's replication round: apply it, answer once durable.
    fn replicated(&mut self, to: ReplyTo, round: &Replicate) {
        if !self.group_commit.has_room() {
            self.reply_error(&to, code::TEMPORARILY_UNAVAILABLE, WAITING_FULL);
            return;
        }
        let (applied, result) =
            replicate::apply_round(&mut lock(&self.store), &self.cluster, &to.src, round);
        if let Err(e) = &result {
            log::warn(format_args!("applying a round from {}: {e}", to.src));
        }
        if applied.changed {
            // What was applied is answered once durable (an error answer
            // too: it must not overtake the data it leaves out); the owner
            // resends the rest from the ends it gets.
            let refused = result.err().map(|e| (write_error_code(&e), e.to_string()));
            self.group_commit.push(Pending::Replicated {
                to,
                keys: applied.keys,
                refused,
            });
        } else if let Err(e) = result {
            self.reply_error(&to, write_error_code(&e), &e.to_string());
        } else {
            self.reply_replicated(&to, &applied.keys);
        }
    }

    /// Answers a round with the durable end of every key it named.
    fn reply_replicated(&self, to: &ReplyTo, keys: &[String]) {
        let mut store = lock(&self.store);
        let ends: BTreeMap<&str, u64> = keys
            .iter()
            .filter_map(|key| Some((key.as_str(), store.durable_next_offset(key).ok()?)))
            .collect();
        drop(store);
        self.reply(
            to,
            &ReplyBody::ReplicateOk {
                in_reply_to: to.msg_id,
                boot: self.replicator.boot(),
                ends,
            },
        );
    }

    fn pump_forwards(&mut self, now: Instant) {
        let me = self.cluster.me().to_string();
        let mut last = self.last_msg_id;
        let lines = self.forwarder.pump(&me, now, &mut || {
            last += 1;
            last
        });
        self.last_msg_id = last;
        for line in lines {
            self.out.send(line);
        }
    }

    fn pump_replication(&mut self, now: Instant) {
        let me = self.cluster.me().to_string();
        let mut last = self.last_msg_id;
        let lines = {
            let mut store = lock(&self.store);
            self.replicator.pump(&me, now, &mut store, &mut || {
                last += 1;
                last
            })
        };
        self.last_msg_id = last;
        for line in lines {
            self.out.send(line);
        }
    }

    fn poll(&self, to: &ReplyTo, offsets: &[(String, u64)]) {
        let line = poll::poll_reply(&mut lock(&self.store), to, offsets);
        self.out.send(line);
    }
}

const WAITING_FULL: &str = "too many writes are waiting for the disk";

/// The error code for a write the store refused before taking it.
fn write_error_code(error: &Error) -> u32 {
    match error {
        Error::KeyTooLong { .. } | Error::BadMessageSize { .. } => code::MALFORMED_REQUEST,
        _ => code::TEMPORARILY_UNAVAILABLE,
    }
}

/// Where this process's peer message ids start: microseconds since the
/// epoch. The ids of the previous process of this node stayed below it
/// unless it sent more than one message per microsecond of its life; and it
/// stays below 2^53 (exact in every JSON parser) until the year 2255.
fn first_msg_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A number that differs between two starts of this process (time and pid).
fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(48)
}
