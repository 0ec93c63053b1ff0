//! Whether this node may vote in a group: the guard that keeps a node
//! that lost its disk from electing a leader without the entries it had
//! acknowledged.
//!
//! Raft's safety rests on every voter remembering what it acknowledged
//! and whom it voted for. A node restarted on an empty directory remembers
//! neither: were it to vote at once, it and a follower that lacks the
//! latest entries could elect that follower, whose log then replaces
//! entries a majority (the wiped node among it) had made committed. So a
//! node that has no state for a group does not vote or stand for election
//! there until it knows it may:
//!
//! 0. It first waits out an election timeout ([`PROBE_AFTER_MS`]) from
//!    the start of its groups (not of the group: a group added later, once
//!    the metadata names it, waits no more): an election that counted a
//!    vote it cast before it lost its disk is over by then, won or expired,
//!    since every such vote is older than the groups. Only answers to the
//!    probes of these groups count ([`Note::Known`] names the probing it
//!    answers), never a late answer to a probe of a previous process.
//! 1. **Probing.** It asks every peer whether the group has anything past
//!    its first entry (the membership every node writes when it
//!    initializes the group), and its current term, until enough peers
//!    answered that every majority it could have voted or acknowledged in
//!    has a member among them ([`sample_size`]). If none of them says yes,
//!    nothing was ever committed beyond that entry (a committed entry is on
//!    a majority, and the others of that majority would say so), so
//!    nothing can be lost: the cluster is new, and the node votes. If one
//!    says yes, the group has a history this node may have been part of:
//!    the highest term they report is its *floor*, and it is rejoining. It
//!    accepts nothing from a leader while probing.
//! 2. **Rejoining.** It asks the peers to readmit it; the group's leader
//!    answers with its last log id at that moment. The node follows any
//!    leader of a term at or above its floor (a leader of an older term
//!    may be one that a majority, this node among it, has deposed: its
//!    acknowledgements must not help such a leader commit), and starts to
//!    vote once its own log reaches that id, durably: by then it holds
//!    every entry committed before it asked, the ones it had acknowledged
//!    before it lost them among them.
//!
//! The standing is durable: a node that starts probing writes a marker in
//! the group's log key, and only the switch to voting clears it, so a node
//! killed while it rejoins rejoins again after its restart, however much
//! it had caught up. A node whose group state is on disk and unmarked votes
//! from the start.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::{LogId, NodeId};

/// How often a probing node asks its peers again, and a rejoining one
/// asks to be readmitted: a few of Maelstrom's round trips, even with
/// `--latency 20`, so an answer lost to a partition is asked for again
/// soon, and rare enough to cost nothing next to the groups' traffic.
pub const ASK_EVERY_MS: u64 = 300;

/// How long after its groups started a node without a group's state waits
/// before it probes: twice the longest election timeout
/// (`TIMING_DEFAULT`), so that an election still counting a vote it cast
/// before it lost its disk has ended, won or expired, before it learns the
/// terms of its peers.
pub const PROBE_AFTER_MS: u64 = 1_000;

/// How long a rejoining node waits for a leader's answer before it probes
/// afresh: ten rounds of asking. Its floor may have come from a peer that
/// has gone since, with a term no live leader reaches.
pub const REJOIN_UNANSWERED_MS: u64 = 10 * ASK_EVERY_MS;

/// How many other nodes of `nodes` must answer a probe for the highest
/// term among them to be at least that of any majority this node voted or
/// acknowledged in: every majority has `nodes / 2` members besides this
/// node, so a sample of more than the other `nodes - 1 - nodes / 2` meets
/// it.
pub fn sample_size(nodes: usize) -> usize {
    (nodes - nodes / 2).min(nodes.saturating_sub(1))
}

/// Where this node stands in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Votes and may be elected.
    Voting,
    /// Has no state for the group (or was rejoining when it stopped);
    /// asking every peer whether the group has a history. Holds each
    /// answer: whether the group is new there, and the peer's term; and
    /// whether a leader has sent this node entries past the first.
    Probing {
        answers: BTreeMap<NodeId, (bool, u64)>,
        history: bool,
    },
    /// The group has a history: follows leaders of a term at or above
    /// `floor`, and votes once its log reaches `upto`, the leader's last
    /// log id when it answered.
    Rejoining { floor: u64, upto: Option<LogId> },
    /// May vote: the marker that says so is being made durable.
    Admitting,
}

/// What nodes tell each other about their standing, in their batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Note {
    /// Does the group have anything past its first entry on your side, and
    /// what is your term? `probing` names the asking node's groups: drawn
    /// at random when they start, so distinct for each process and heal.
    Probe { group: u32, probing: u64 },
    /// The answer to a probe, naming the probing it answers: an answer to
    /// a previous process's probe, sent before that process's votes could
    /// have been counted out, is told apart and dropped.
    Known {
        group: u32,
        probing: u64,
        pristine: bool,
        term: u64,
    },
    /// I lost my state for the group: tell me how far to catch up.
    Rejoin { group: u32 },
    /// The leader's answer to a rejoin: its last log id.
    Readmit { group: u32, upto: LogId },
}

impl Note {
    /// The group the note is about.
    pub fn group(&self) -> u32 {
        match self {
            Note::Probe { group, .. }
            | Note::Known { group, .. }
            | Note::Rejoin { group }
            | Note::Readmit { group, .. } => *group,
        }
    }
}

impl Standing {
    /// The standing a group starts with: voting if this node has state for
    /// it and was not rejoining when it stopped.
    pub fn at_start(votes: bool) -> Standing {
        if votes {
            Standing::Voting
        } else {
            Standing::Probing {
                answers: BTreeMap::new(),
                history: false,
            }
        }
    }

    pub fn votes(&self) -> bool {
        *self == Standing::Voting
    }

    /// A peer's answer to a probe.
    pub fn known(&mut self, peer: NodeId, pristine: bool, term: u64) {
        if let Standing::Probing { answers, .. } = self {
            answers.insert(peer, (pristine, term));
        }
    }

    /// A probing node that was sent entries past the first has learnt that
    /// the group has a history.
    pub fn sent_history(&mut self, last: Option<LogId>) {
        if let Standing::Probing { history, .. } = self
            && last.is_some_and(|last| last.index > 0)
        {
            *history = true;
        }
    }

    /// Decides what the probes' answers allow, once a sample of the `nodes`
    /// (see [`sample_size`]) answered: true if this node may now vote (none
    /// knows a history of the group), in which case the caller makes that
    /// durable and calls [`Standing::admitted`]; else it rejoins.
    pub fn settle(&mut self, peers: &BTreeSet<NodeId>, nodes: usize) -> bool {
        let Standing::Probing { answers, history } = self else {
            return false;
        };
        // Enough answers meet every majority this node could have been part
        // of: a history of the group shows in one of them.
        let enough = answers.len() >= sample_size(nodes);
        let history = *history || answers.values().any(|(pristine, _)| !pristine);
        if !history && (enough || peers.is_empty()) {
            *self = Standing::Admitting;
            return true;
        }
        if history && enough {
            let floor = answers.values().map(|(_, term)| *term).max().unwrap_or(0);
            *self = Standing::Rejoining { floor, upto: None };
        }
        false
    }

    /// The leader's answer to a rejoin: the later of what it asks and what
    /// was asked before. An answer from a leader of a term below the floor
    /// is ignored.
    pub fn readmit(&mut self, upto: LogId) {
        if let Standing::Rejoining { floor, upto: known } = self
            && upto.leader_id.term >= *floor
        {
            *known = Some(match known.take() {
                Some(before) if before > upto => before,
                _ => upto,
            });
        }
    }

    /// Whether the log reached what the leader asked: then the caller makes
    /// the switch to voting durable (it syncs the log with it) and calls
    /// [`Standing::admitted`].
    pub fn caught_up(&mut self, last: Option<LogId>) -> bool {
        if let Standing::Rejoining {
            upto: Some(upto), ..
        } = self
            && last.is_some_and(|last| last >= *upto)
        {
            *self = Standing::Admitting;
            return true;
        }
        false
    }

    /// The switch to voting is durable.
    pub fn admitted(&mut self) {
        if *self == Standing::Admitting {
            *self = Standing::Voting;
        }
    }

    /// Whether this node takes AppendEntries or a snapshot from a leader of
    /// `term`: not while probing (its floor is unknown), and only from at
    /// or above the floor while rejoining.
    pub fn follows(&self, term: u64) -> bool {
        match self {
            Standing::Probing { .. } => false,
            Standing::Rejoining { floor, .. } => term >= *floor,
            Standing::Voting | Standing::Admitting => true,
        }
    }

    /// What this node answers a peer's probe, given its last log id.
    pub fn pristine(&self, last: Option<LogId>) -> bool {
        match self {
            Standing::Rejoining { .. } => false,
            Standing::Probing { history, .. } => {
                !history && last.is_none_or(|last| last.index == 0)
            }
            Standing::Voting | Standing::Admitting => last.is_none_or(|last| last.index == 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(term, 0), index)
    }

    fn peers(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_node_with_state_votes_and_one_without_probes() {
        assert!(Standing::at_start(true).votes());
        assert!(!Standing::at_start(false).votes());
    }

    #[test]
    fn a_lone_node_may_vote_at_once() {
        let mut standing = Standing::at_start(false);
        assert!(standing.settle(&peers(&[]), 1));
        assert!(!standing.votes(), "not before the switch is durable");
        standing.admitted();
        assert!(standing.votes());
    }

    #[test]
    fn votes_when_a_sample_meeting_every_majority_says_the_group_is_new() {
        let all = peers(&[1, 2, 3, 4]);
        let mut standing = Standing::at_start(false);
        for peer in [1, 2] {
            standing.known(peer, true, 0);
            assert!(
                !standing.settle(&all, 5),
                "2 of 4 peers meet not every majority"
            );
        }
        standing.known(4, true, 2);
        assert!(
            standing.settle(&all, 5),
            "3 of 4 do: a node cut off does not matter"
        );
        assert_eq!(standing, Standing::Admitting);
        let mut three = Standing::at_start(false);
        three.known(1, true, 0);
        assert!(
            !three.settle(&peers(&[1, 2]), 3),
            "of 3 nodes, both others must answer"
        );
    }

    #[test]
    fn a_history_makes_it_rejoin_once_a_sample_answered_with_the_highest_term_as_floor() {
        let all = peers(&[1, 2, 3, 4]);
        let mut standing = Standing::at_start(false);
        standing.known(1, false, 7);
        standing.known(2, true, 9);
        assert!(!standing.settle(&all, 5));
        assert!(
            matches!(standing, Standing::Probing { .. }),
            "2 of 4 peers meet not every majority"
        );
        standing.known(3, true, 4);
        assert!(!standing.settle(&all, 5));
        assert_eq!(
            standing,
            Standing::Rejoining {
                floor: 9,
                upto: None
            }
        );
        assert!(
            !standing.caught_up(Some(log_id(9, 9))),
            "no leader has answered yet"
        );
    }

    #[test]
    fn entries_from_a_leader_are_a_history_too() {
        let all = peers(&[1, 2]);
        let mut standing = Standing::at_start(false);
        standing.sent_history(Some(log_id(0, 0)));
        standing.known(1, true, 0);
        standing.known(2, true, 0);
        let mut copy = standing.clone();
        assert!(copy.settle(&all, 3), "only the first entry is no history");
        standing.sent_history(Some(log_id(3, 1)));
        assert!(!standing.pristine(None));
        assert!(!standing.settle(&all, 3));
        assert_eq!(
            standing,
            Standing::Rejoining {
                floor: 0,
                upto: None
            }
        );
    }

    #[test]
    fn a_rejoining_node_follows_leaders_from_its_floor_and_votes_once_its_log_reaches_the_leaders()
    {
        let mut standing = Standing::Rejoining {
            floor: 3,
            upto: None,
        };
        assert!(!standing.follows(2), "a leader the majority deposed");
        assert!(standing.follows(3));
        standing.readmit(log_id(2, 90));
        assert_eq!(
            standing,
            Standing::Rejoining {
                floor: 3,
                upto: None
            },
            "below the floor"
        );
        standing.readmit(log_id(3, 40));
        standing.readmit(log_id(3, 30));
        assert_eq!(
            standing,
            Standing::Rejoining {
                floor: 3,
                upto: Some(log_id(3, 40))
            }
        );
        assert!(!standing.caught_up(None));
        assert!(!standing.caught_up(Some(log_id(3, 39))));
        assert!(
            !standing.caught_up(Some(log_id(2, 45))),
            "an older term's entry is not the leader's"
        );
        assert!(standing.caught_up(Some(log_id(4, 40))));
        assert_eq!(standing, Standing::Admitting);
        standing.admitted();
        assert!(standing.votes());
    }

    #[test]
    fn a_probing_node_follows_nobody() {
        assert!(!Standing::at_start(false).follows(100));
        assert!(Standing::Voting.follows(0));
    }

    #[test]
    fn answers_pristine_only_without_anything_past_the_first_entry() {
        assert!(Standing::at_start(false).pristine(None));
        assert!(Standing::Voting.pristine(None));
        assert!(Standing::Voting.pristine(Some(log_id(0, 0))));
        assert!(!Standing::Voting.pristine(Some(log_id(1, 1))));
        assert!(
            !Standing::Rejoining {
                floor: 0,
                upto: None
            }
            .pristine(None)
        );
        assert!(!Standing::at_start(false).pristine(Some(log_id(1, 1))));
    }

    #[test]
    fn samples_meet_every_majority() {
        assert_eq!(sample_size(1), 0);
        assert_eq!(sample_size(2), 1);
        assert_eq!(sample_size(3), 2);
        assert_eq!(sample_size(5), 3);
    }
}
