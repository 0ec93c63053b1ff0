//! Replication: every node's owned logs and the commits it took reach every
//! other node, in batches, until each peer has acknowledged them durable.
//!
//! The owner pushes. For each peer it keeps what the peer last reported
//! holding durably (`known`, per key) and the keys the peer may lack
//! (`dirty`). A round is one `replicate` carrying, for each dirty key, the
//! records from the peer's known end to the owner's durable end (or a probe
//! when the end is not known yet), and the commits not yet acknowledged. At
//! most one round is in flight per peer; the next goes after
//! [`REPLICATE_INTERVAL`], so records that arrive meanwhile share it. The
//! peer applies each run strictly in offset order, syncs, and answers with
//! its durable end for every key named: the owner sets `known` from that,
//! so a lost, late or repeated round costs bandwidth, never records. A round
//! unanswered after [`REPLICATE_TIMEOUT`] is forgotten and the next one
//! resends from `known`. State is per key, not per message, so a peer that
//! was cut off for long catches up in as many rounds as its gap needs, and
//! nothing grows with the length of the partition.
//!
//! After the owner restarts it knows nothing of its peers: every key it owns
//! is probed. After a peer restarts (its `boot` changes) the owner forgets
//! what it knew of it in the same way, in case the peer lost its data.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::fields::REQUEST_KEYS_MAX;
use super::owner::Cluster;
use super::peer::{PeerReply, ReplicateBuilder};
use crate::log;
use crate::storage::store::Store;

/// Least time between the start of two rounds to one peer. Rounds carry
/// everything new since the last, so this trades replication lag against
/// messages: 50 ms is 20 rounds a second per peer, a small fraction of
/// Maelstrom's 1,000 requests a second, and a lag far below what a client
/// notices (the final read waits 10 s).
pub const REPLICATE_INTERVAL: Duration = Duration::from_millis(50);

/// How long a round may go unanswered before the next one is sent. A peer
/// answers after one sync point; a second covers latency spikes, and a
/// peer behind a partition costs one message a second.
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(1);

/// An empty round goes to an idle peer this often, so a restarted peer is
/// noticed (its `boot` changes) even when no records flow.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Record and commit bytes in one round: far below the receiving node's
/// line limit, and the same order as a poll reply. A peer that is far
/// behind catches up in rounds of this size, 20 of them a second.
pub const ROUND_BYTES_MAX: usize = 1 << 20;

/// Keys one round may name. Probes after a restart cost a few dozen bytes
/// each; 4,096 keeps such a round well within [`ROUND_BYTES_MAX`].
pub const ROUND_KEYS_MAX: usize = 4096;

/// Commits one round may carry. The receiver refuses a round whose
/// commits name more than [`REQUEST_KEYS_MAX`] keys (its limit on any key
/// map), and 1 MiB of short keys is more than that: without this bound a
/// peer that missed many commits would refuse every round for ever.
pub const ROUND_COMMITS_MAX: usize = REQUEST_KEYS_MAX / 2;

/// A round sent and not yet answered.
struct Round {
    msg_id: u64,
    sent_at: Instant,
    /// The commits it carries, cleared from the pending ones when answered.
    commits: Vec<(String, u64)>,
}

/// What this node knows of one peer.
#[derive(Default)]
struct PeerLink {
    /// The peer's boot id, from its last answer.
    boot: Option<u64>,
    /// Per owned key, the durable end the peer last reported.
    known: HashMap<String, u64>,
    /// Owned keys the peer may lack records of.
    dirty: BTreeSet<String>,
    /// Commits to send: key to the largest offset not yet acknowledged.
    commits: HashMap<String, u64>,
    /// The round in flight.
    in_flight: Option<Round>,
    /// When the last round went.
    last_round: Option<Instant>,
}

/// What a reply to a round meant.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Not an answer to a round of ours: nothing changed.
    NotOurs,
    Taken,
    /// Taken, and the peer's boot id changed: it restarted, and the caller
    /// should queue every committed offset for it again.
    PeerRestarted,
}

/// The replication state of this node.
pub struct Replicator {
    /// Every key this node owns that has records: what a reset must probe.
    owned: HashSet<String>,
    peers: BTreeMap<String, PeerLink>,
    /// This process's boot id, sent in every round.
    boot: u64,
}

impl Replicator {
    /// Starts replicating to `cluster`'s peers. `owned` lists the keys this
    /// node owns that have records, all probed; `committed` is every durable
    /// commit, all sent again (this node may have crashed before sending
    /// some).
    pub fn new(
        cluster: &Cluster,
        boot: u64,
        owned: impl IntoIterator<Item = String>,
        committed: &[(String, u64)],
    ) -> Replicator {
        let owned: HashSet<String> = owned.into_iter().collect();
        let peers = cluster
            .peers()
            .map(|peer| {
                let link = PeerLink {
                    dirty: owned.iter().cloned().collect(),
                    commits: committed.iter().cloned().collect(),
                    ..PeerLink::default()
                };
                (peer.to_string(), link)
            })
            .collect();
        Replicator { owned, peers, boot }
    }

    /// This node's boot id.
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// Records of `key`, which this node owns, became durable.
    pub fn records_durable(&mut self, key: &str) {
        if self.peers.is_empty() {
            return;
        }
        if !self.owned.contains(key) {
            self.owned.insert(key.to_string());
        }
        for link in self.peers.values_mut() {
            if !link.dirty.contains(key) {
                link.dirty.insert(key.to_string());
            }
        }
    }

    /// Commits this node took became durable: every peer must get them.
    pub fn commits_durable(&mut self, commits: &[(String, u64)]) {
        for link in self.peers.values_mut() {
            for (key, offset) in commits {
                let slot = link.commits.entry(key.clone()).or_insert(*offset);
                *slot = (*slot).max(*offset);
            }
        }
    }

    /// Builds the rounds that are due; returns the lines to send.
    pub fn pump(
        &mut self,
        me: &str,
        now: Instant,
        store: &mut Store,
        msg_id: &mut dyn FnMut() -> u64,
    ) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for (peer, link) in &mut self.peers {
            if let Some(round) = &link.in_flight {
                if now.duration_since(round.sent_at) < REPLICATE_TIMEOUT {
                    continue;
                }
                log::info(format_args!("replication round to {peer} timed out"));
                link.in_flight = None;
            }
            let since_last = link
                .last_round
                .map_or(Duration::MAX, |last| now.duration_since(last));
            let has_work = !link.dirty.is_empty() || !link.commits.is_empty();
            let due =
                since_last >= REPLICATE_INTERVAL && (has_work || since_last >= HEARTBEAT_INTERVAL);
            if !due {
                continue;
            }
            let (builder, commits) = build_round(link, store);
            let id = msg_id();
            lines.push(builder.encode(me, peer, id, self.boot));
            link.in_flight = Some(Round {
                msg_id: id,
                sent_at: now,
                commits,
            });
            link.last_round = Some(now);
        }
        lines
    }

    /// Queues `committed` (every durable commit of this node) for `peer`,
    /// which restarted and may have lost them.
    pub fn resend_commits<'a>(
        &mut self,
        peer: &str,
        committed: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        if let Some(link) = self.peers.get_mut(peer) {
            for (key, offset) in committed {
                let slot = link.commits.entry(key.to_string()).or_insert(offset);
                *slot = (*slot).max(offset);
            }
        }
    }

    /// Takes a peer's answer to a round.
    pub fn on_reply(&mut self, peer: &str, in_reply_to: u64, reply: &PeerReply) -> ReplyOutcome {
        let Some(link) = self.peers.get_mut(peer) else {
            return ReplyOutcome::NotOurs;
        };
        let current = link
            .in_flight
            .as_ref()
            .is_some_and(|round| round.msg_id == in_reply_to);
        match reply {
            PeerReply::ReplicateOk { boot, ends } => {
                let restarted = link.boot.is_some_and(|known| known != *boot);
                if restarted {
                    log::info(format_args!(
                        "{peer} restarted: probing every key it may have lost"
                    ));
                    link.known.clear();
                    link.dirty = self.owned.iter().cloned().collect();
                }
                link.boot = Some(*boot);
                // Any answer, even a late one, is what the peer held durably
                // then: never more than it holds now.
                for (key, end) in ends {
                    link.known.insert(key.clone(), *end);
                }
                if current && let Some(round) = link.in_flight.take() {
                    for (key, offset) in round.commits {
                        if link.commits.get(&key).is_some_and(|&o| o <= offset) {
                            link.commits.remove(&key);
                        }
                    }
                }
                if restarted {
                    ReplyOutcome::PeerRestarted
                } else {
                    ReplyOutcome::Taken
                }
            }
            PeerReply::Error { code, text } if current => {
                log::warn(format_args!(
                    "{peer} refused a replication round: error {code}: {text}"
                ));
                link.in_flight = None;
                ReplyOutcome::Taken
            }
            _ if current => ReplyOutcome::Taken,
            _ => ReplyOutcome::NotOurs,
        }
    }

    /// Keys some peer may lack, over all peers: how far replication is behind.
    pub fn dirty_count(&self) -> usize {
        self.peers.values().map(|link| link.dirty.len()).sum()
    }
}

/// Fills one round for a peer from its dirty keys and pending commits;
/// returns it and the commits it carries. Keys found up to date leave the
/// dirty set.
fn build_round(link: &mut PeerLink, store: &mut Store) -> (ReplicateBuilder, Vec<(String, u64)>) {
    let mut builder = ReplicateBuilder::new();
    let mut settled = Vec::new();
    let mut runs = 0;
    for key in &link.dirty {
        if runs >= ROUND_KEYS_MAX || builder.len() >= ROUND_BYTES_MAX {
            break;
        }
        let Some(&from) = link.known.get(key) else {
            // Where the peer stands is unknown: ask.
            builder.add_run(key, 0, "");
            runs += 1;
            continue;
        };
        let end = match store.durable_next_offset(key) {
            Ok(end) => end,
            Err(e) => {
                log::warn(format_args!("cannot replicate key {key:?}: {e}"));
                continue;
            }
        };
        if from >= end {
            settled.push(key.clone());
            continue;
        }
        let budget = ROUND_BYTES_MAX.saturating_sub(builder.len());
        let msgs = read_run(store, key, from, budget);
        if msgs.is_empty() {
            continue;
        }
        builder.add_run(key, from, &msgs);
        runs += 1;
    }
    for key in settled {
        link.dirty.remove(&key);
    }
    let mut commits = Vec::new();
    for (key, &offset) in &link.commits {
        if builder.len() >= ROUND_BYTES_MAX || commits.len() >= ROUND_COMMITS_MAX {
            break;
        }
        builder.add_commit(key, offset);
        commits.push((key.clone(), offset));
    }
    (builder, commits)
}

/// The durable records of `key` from `from` on, as their JSON texts joined
/// by commas, within `budget` bytes (but at least one record).
fn read_run(store: &mut Store, key: &str, from: u64, budget: usize) -> String {
    let mut msgs = String::new();
    let mut count = 0;
    let result = store.read(key, from, &mut |_, payload| {
        let Ok(text) = std::str::from_utf8(payload) else {
            return false;
        };
        if count > 0 && msgs.len() + text.len() + 1 > budget {
            return false;
        }
        if count > 0 {
            msgs.push(',');
        }
        let _ = write!(msgs, "{text}");
        count += 1;
        true
    });
    if let Err(e) = result {
        log::warn(format_args!(
            "replicating key {key:?} stopped at a bad record: {e}"
        ));
    }
    msgs
}

/// What applying a round on a replica did.
pub struct Applied {
    /// Every key the round named: the answer reports the durable end of each.
    pub keys: Vec<String>,
    /// Whether anything was appended or committed, so a sync point must
    /// pass before the answer.
    pub changed: bool,
}

/// Applies a round from `owner` to the store of a replica: the commits
/// first, then each run strictly in offset order (only the part past what
/// the replica has; a run that starts past its end leaves a gap, so it is
/// not applied, and the answer tells the owner where to resend from). Runs
/// for keys `owner` does not own are ignored: offsets of a key come from its
/// owner only.
///
/// A key the store refuses (a full disk, a directory it cannot create) is
/// logged and skipped, so one bad key holds up neither the others nor the
/// commits: the answer's ends tell the owner where each key stands, and it
/// resends. The owner forgets the round's commits when the answer is
/// `replicate_ok`, so a commit the store refuses makes the result an error
/// (the answer must then be one too).
pub fn apply_round(
    store: &mut Store,
    cluster: &Cluster,
    owner: &str,
    round: &super::peer::Replicate,
) -> (Applied, Result<(), crate::Error>) {
    let mut applied = Applied {
        keys: Vec::with_capacity(round.logs.len()),
        changed: false,
    };
    let mut result = Ok(());
    for (key, offset) in &round.commits {
        if store.committed(key).is_some_and(|known| known >= *offset) {
            continue;
        }
        if let Err(e) = store.commit(key, *offset) {
            result = Err(e);
            break;
        }
        applied.changed = true;
    }
    for run in &round.logs {
        applied.keys.push(run.key.clone());
        if cluster.owner(&run.key) != owner {
            log::warn(format_args!(
                "{owner} sent records of key {:?}, which {} owns: ignored",
                run.key,
                cluster.owner(&run.key)
            ));
            continue;
        }
        if run.msgs.is_empty() {
            continue;
        }
        if let Err(e) = apply_run(store, run, &mut applied.changed) {
            log::warn(format_args!(
                "cannot apply records of key {:?} from {owner}: {e}",
                run.key
            ));
        }
    }
    (applied, result)
}

/// Appends the part of `run` past the replica's end, if it follows on.
fn apply_run(
    store: &mut Store,
    run: &super::peer::LogRun,
    changed: &mut bool,
) -> Result<(), crate::Error> {
    let next = store.next_offset(&run.key)?;
    let Some(skip) = next.checked_sub(run.from) else {
        return Ok(()); // A gap: the answer reports `next`.
    };
    for (offset, msg) in (next..).zip(run.msgs.iter().skip(skip as usize)) {
        store.append_at(&run.key, offset, msg)?;
        *changed = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::peer::{LogRun, PeerRequest, Replicate};
    use crate::node::protocol::{Incoming, Request, parse_line};
    use crate::storage::store::StoreConfig;

    fn cluster(me: &str) -> Cluster {
        Cluster::new(me, &["n0".to_string(), "n1".to_string()]).expect("valid")
    }

    /// Keys n0 owns among two nodes.
    fn owned_by(cluster: &Cluster, owner: &str, count: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("key{i}"))
            .filter(|k| cluster.owner(k) == owner)
            .take(count)
            .collect()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let store = Store::open(dir.path(), StoreConfig::default()).expect("open");
        (dir, store)
    }

    fn ids() -> impl FnMut() -> u64 {
        let mut next = 0;
        move || {
            next += 1;
            next
        }
    }

    fn round_in(line: &[u8]) -> Replicate {
        match parse_line(line) {
            Ok(Incoming::Request {
                request: Request::Peer(PeerRequest::Replicate(round)),
                ..
            }) => round,
            other => panic!("{other:?}"),
        }
    }

    fn ok(ends: &[(&str, u64)], boot: u64) -> PeerReply {
        PeerReply::ReplicateOk {
            boot,
            ends: ends.iter().map(|(k, e)| (k.to_string(), *e)).collect(),
        }
    }

    #[test]
    fn an_owner_probes_then_sends_what_the_replica_lacks_then_settles() {
        let c = cluster("n0");
        let key = owned_by(&c, "n0", 1).remove(0);
        let (_dir, mut store) = store();
        for i in 0..3 {
            store
                .append(&key, format!("{i}").as_bytes())
                .expect("append");
        }
        store.sync().expect("sync");
        let mut r = Replicator::new(&c, 1, [key.clone()], &[]);
        let mut next_id = ids();
        let t0 = Instant::now();
        let lines = r.pump("n0", t0, &mut store, &mut next_id);
        let probe = round_in(&lines[0]);
        assert_eq!(probe.logs[0].msgs.len(), 0, "unknown end: a probe");
        assert!(
            r.pump("n0", t0, &mut store, &mut next_id).is_empty(),
            "one in flight"
        );
        assert_eq!(
            r.on_reply("n1", 1, &ok(&[(&key, 1)], 7)),
            ReplyOutcome::Taken
        );
        let t1 = t0 + REPLICATE_INTERVAL;
        let lines = r.pump("n0", t1, &mut store, &mut next_id);
        let round = round_in(&lines[0]);
        assert_eq!(
            round.logs,
            vec![LogRun {
                key: key.clone(),
                from: 1,
                msgs: vec![b"1".to_vec(), b"2".to_vec()]
            }]
        );
        r.on_reply("n1", 2, &ok(&[(&key, 3)], 7));
        // Up to date: the key leaves the dirty set; only heartbeats follow.
        let t2 = t1 + REPLICATE_INTERVAL;
        let lines = r.pump("n0", t2, &mut store, &mut next_id);
        assert!(round_in(&lines[0]).logs.is_empty());
        assert_eq!(r.dirty_count(), 0);
        r.on_reply("n1", 3, &ok(&[], 7));
        assert!(
            r.pump("n0", t2 + REPLICATE_INTERVAL, &mut store, &mut next_id)
                .is_empty()
        );
        assert_eq!(
            r.pump("n0", t2 + HEARTBEAT_INTERVAL, &mut store, &mut next_id)
                .len(),
            1,
            "a heartbeat"
        );
    }

    #[test]
    fn a_lost_round_is_resent_after_the_timeout_and_a_restart_reprobes() {
        let c = cluster("n0");
        let key = owned_by(&c, "n0", 1).remove(0);
        let (_dir, mut store) = store();
        store.append(&key, b"1").expect("append");
        store.sync().expect("sync");
        let mut r = Replicator::new(&c, 1, [key.clone()], &[("k".into(), 4)]);
        let mut next_id = ids();
        let t0 = Instant::now();
        let first = round_in(&r.pump("n0", t0, &mut store, &mut next_id)[0]);
        assert_eq!(first.commits, vec![("k".to_string(), 4)]);
        assert!(
            r.pump("n0", t0 + REPLICATE_TIMEOUT / 2, &mut store, &mut next_id)
                .is_empty()
        );
        let again = round_in(&r.pump("n0", t0 + REPLICATE_TIMEOUT, &mut store, &mut next_id)[0]);
        assert_eq!(again, first, "the same content, resent");
        // The late answer to the first round teaches the ends, but only the
        // answer to the round in flight clears its commits.
        assert_eq!(
            r.on_reply("n1", 1, &ok(&[(&key, 0)], 5)),
            ReplyOutcome::Taken
        );
        let t1 = t0 + REPLICATE_TIMEOUT * 2;
        let third = round_in(&r.pump("n0", t1, &mut store, &mut next_id)[0]);
        assert_eq!(third.commits, vec![("k".to_string(), 4)]);
        assert_eq!(third.logs[0].msgs, vec![b"1".to_vec()]);
        assert_eq!(
            r.on_reply("n1", 3, &ok(&[(&key, 1)], 5)),
            ReplyOutcome::Taken
        );
        // The peer restarts (new boot): everything owned is probed again.
        let t2 = t1 + REPLICATE_INTERVAL;
        r.pump("n0", t2, &mut store, &mut next_id);
        assert_eq!(
            r.on_reply("n1", 4, &ok(&[], 6)),
            ReplyOutcome::PeerRestarted
        );
        let probe = round_in(&r.pump("n0", t2 + REPLICATE_INTERVAL, &mut store, &mut next_id)[0]);
        assert_eq!(probe.logs[0].msgs.len(), 0);
        assert_eq!(r.on_reply("n9", 5, &ok(&[], 6)), ReplyOutcome::NotOurs);
    }

    #[test]
    fn a_replica_applies_runs_in_order_only_and_only_from_their_owner() {
        let c = cluster("n1");
        let mine = owned_by(&c, "n1", 1).remove(0);
        let theirs = owned_by(&c, "n0", 2);
        let (_dir, mut store) = store();
        let run = |key: &str, from: u64, msgs: &[&str]| LogRun {
            key: key.to_string(),
            from,
            msgs: msgs.iter().map(|m| m.as_bytes().to_vec()).collect(),
        };
        let round = Replicate {
            boot: 1,
            logs: vec![
                run(&theirs[0], 0, &["a", "b"]),
                run(&theirs[1], 2, &["z"]), // a gap: nothing at 0 and 1 here
                run(&mine, 0, &["x"]),      // n0 does not own it
            ],
            commits: vec![("c".into(), 3)],
        };
        let (applied, result) = apply_round(&mut store, &c, "n0", &round);
        result.expect("applied");
        assert!(applied.changed);
        assert_eq!(applied.keys.len(), 3);
        store.sync().expect("sync");
        assert_eq!(store.durable_next_offset(&theirs[0]).expect("end"), 2);
        assert_eq!(store.durable_next_offset(&theirs[1]).expect("end"), 0);
        assert_eq!(store.durable_next_offset(&mine).expect("end"), 0);
        assert_eq!(store.committed("c"), Some(3));
        // Overlapping and repeated runs apply only what is new.
        let again = Replicate {
            boot: 1,
            logs: vec![run(&theirs[0], 1, &["b", "c"])],
            commits: vec![("c".into(), 2)],
        };
        let (applied, result) = apply_round(&mut store, &c, "n0", &again);
        result.expect("applied");
        assert!(applied.changed);
        store.sync().expect("sync");
        let mut read = Vec::new();
        store
            .read(&theirs[0], 0, &mut |offset, msg| {
                read.push((offset, msg.to_vec()));
                true
            })
            .expect("read");
        assert_eq!(
            read,
            vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
        );
        assert_eq!(store.committed("c"), Some(3), "commits never go back");
        let (applied, _) = apply_round(&mut store, &c, "n0", &again);
        assert!(!applied.changed, "a repeat changes nothing");
    }

    /// One key the replica's store refuses (here a file stands where its
    /// directory goes) holds up neither the commits nor the keys after it.
    #[test]
    fn a_key_the_replica_cannot_store_holds_up_nothing_else() {
        let c = cluster("n1");
        let mut theirs = owned_by(&c, "n0", 3);
        theirs.sort();
        let (dir, mut store) = store();
        let blocker = dir.path().join("logs").join(format!("k.{}", theirs[1]));
        std::fs::write(&blocker, b"not a directory").expect("blocker");
        let run = |key: &str| LogRun {
            key: key.to_string(),
            from: 0,
            msgs: vec![b"1".to_vec()],
        };
        let round = Replicate {
            boot: 1,
            logs: theirs.iter().map(|key| run(key)).collect(),
            commits: vec![("c".into(), 3)],
        };
        let (applied, result) = apply_round(&mut store, &c, "n0", &round);
        result.expect("the commits were applied, so the answer is replicate_ok");
        assert!(applied.changed);
        store.sync().expect("sync");
        assert_eq!(store.committed("c"), Some(3));
        assert_eq!(store.durable_next_offset(&theirs[0]).expect("end"), 1);
        assert_eq!(store.durable_next_offset(&theirs[1]).expect("end"), 0);
        assert!(store.append(&theirs[1], b"1").is_err(), "still refused");
        assert_eq!(store.durable_next_offset(&theirs[2]).expect("end"), 1);
    }

    /// However many commits a peer missed, a round carries no more than the
    /// receiver accepts; the rest follow in later rounds.
    #[test]
    fn a_round_carries_no_more_commits_than_the_receiver_accepts() {
        let c = cluster("n0");
        let (_dir, mut store) = store();
        let committed: Vec<(String, u64)> = (0..ROUND_COMMITS_MAX + 10)
            .map(|i| (format!("{i}"), 1))
            .collect();
        let mut r = Replicator::new(&c, 1, [], &committed);
        let mut next_id = ids();
        let t0 = Instant::now();
        let lines = r.pump("n0", t0, &mut store, &mut next_id);
        let first = round_in(&lines[0]);
        assert_eq!(first.commits.len(), ROUND_COMMITS_MAX);
        r.on_reply("n1", 1, &ok(&[], 7));
        let lines = r.pump("n0", t0 + REPLICATE_INTERVAL, &mut store, &mut next_id);
        assert_eq!(round_in(&lines[0]).commits.len(), 10, "the rest");
    }
}
