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
//! 1. **Probing.** It asks every peer whether the group has anything past
//!    its first entry (the membership every node writes when it
//!    initializes the group). If every peer says no, nothing was ever
//!    committed beyond that entry, so nothing can be lost: the cluster is
//!    new, and the node votes ([`Standing::Voting`]). If any peer says yes,
//!    the group has a history this node may have been part of: it is
//!    rejoining. Until every peer has answered, it waits.
//! 2. **Rejoining.** It asks the peers to readmit it; the group's leader
//!    answers with its last log id at that moment. The node follows as
//!    any follower does (its acknowledgements are of what it durably holds,
//!    so they count as anyone's) and starts to vote once its own log
//!    reaches that id: by then it holds every entry that was committed
//!    before it asked, the ones it had acknowledged before it lost them
//!    among them.
//!
//! A node whose group state is on disk votes from the start.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::types::{LogId, NodeId};

/// How often a probing node asks its peers again, and a rejoining one
/// asks to be readmitted: a few of Maelstrom's round trips, even with
/// `--latency 20`, so an answer lost to a partition is asked for again
/// soon, and rare enough to cost nothing next to the groups' traffic.
pub const ASK_EVERY_MS: u64 = 300;

/// Where this node stands in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Votes and may be elected.
    Voting,
    /// Has no state for the group; asking every peer whether the group
    /// has a history. Holds the peers that said it has none.
    Probing { pristine: BTreeSet<NodeId> },
    /// The group has a history and this node holds none of it (or part):
    /// follows without voting until its log reaches `upto`, the leader's
    /// last log id when it answered.
    Rejoining { upto: Option<LogId> },
}

/// What nodes tell each other about their standing, in their batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Note {
    /// Does the group have anything past its first entry on your side?
    Probe { group: u32 },
    /// The answer to a probe.
    Known { group: u32, pristine: bool },
    /// I lost my state for the group: tell me how far to catch up.
    Rejoin { group: u32 },
    /// The leader's answer to a rejoin: its last log id.
    Readmit { group: u32, upto: LogId },
}

impl Standing {
    /// The standing a group starts with, from whether this node has any
    /// state for it.
    pub fn at_start(has_state: bool) -> Standing {
        if has_state {
            Standing::Voting
        } else {
            Standing::Probing {
                pristine: BTreeSet::new(),
            }
        }
    }

    pub fn votes(&self) -> bool {
        *self == Standing::Voting
    }

    /// A peer's answer to a probe; true if this node now votes.
    pub fn known(&mut self, peer: NodeId, pristine: bool, peers: &BTreeSet<NodeId>) -> bool {
        let Standing::Probing { pristine: said } = self else {
            return false;
        };
        if !pristine {
            *self = Standing::Rejoining { upto: None };
            return false;
        }
        said.insert(peer);
        self.settle(peers)
    }

    /// Votes if every peer said the group is new; true if it now does.
    pub fn settle(&mut self, peers: &BTreeSet<NodeId>) -> bool {
        if let Standing::Probing { pristine } = self
            && peers.is_subset(pristine)
        {
            *self = Standing::Voting;
            return true;
        }
        false
    }

    /// A probing node that was sent entries past the first has learnt that
    /// the group has a history: it rejoins. True if it now does.
    pub fn sent_history(&mut self, last: Option<LogId>) -> bool {
        if matches!(self, Standing::Probing { .. }) && last.is_some_and(|last| last.index > 0) {
            *self = Standing::Rejoining { upto: None };
            return true;
        }
        false
    }

    /// The leader's answer to a rejoin: the later of what it asks and what
    /// was asked before.
    pub fn readmit(&mut self, upto: LogId) {
        if let Standing::Rejoining { upto: known } = self {
            *known = Some(match known.take() {
                Some(before) if before > upto => before,
                _ => upto,
            });
        }
    }

    /// Votes once the log reaches what the leader asked; true if it now does.
    pub fn caught_up(&mut self, last: Option<LogId>) -> bool {
        if let Standing::Rejoining { upto: Some(upto) } = self
            && last.is_some_and(|last| {
                last.leader_id.term >= upto.leader_id.term && last.index >= upto.index
            })
        {
            *self = Standing::Voting;
            return true;
        }
        false
    }

    /// What this node answers a peer's probe, given its last log id.
    pub fn pristine(&self, last: Option<LogId>) -> bool {
        match self {
            Standing::Rejoining { .. } => false,
            Standing::Probing { .. } | Standing::Voting => last.is_none_or(|last| last.index == 0),
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
    fn a_lone_node_votes_at_once() {
        let mut standing = Standing::at_start(false);
        assert!(standing.settle(&peers(&[])));
        assert!(standing.votes());
    }

    #[test]
    fn votes_only_when_every_peer_says_the_group_is_new() {
        let all = peers(&[1, 2]);
        let mut standing = Standing::at_start(false);
        assert!(!standing.known(1, true, &all));
        assert!(
            !standing.known(1, true, &all),
            "the same peer twice is one answer"
        );
        assert!(!standing.votes());
        assert!(standing.known(2, true, &all));
        assert!(standing.votes());
    }

    #[test]
    fn one_peer_with_a_history_makes_it_rejoin_whatever_the_others_say() {
        let all = peers(&[1, 2]);
        let mut standing = Standing::at_start(false);
        standing.known(1, true, &all);
        assert!(!standing.known(2, false, &all));
        assert_eq!(standing, Standing::Rejoining { upto: None });
        assert!(
            !standing.known(1, true, &all),
            "a rejoining node stays rejoining"
        );
        assert!(
            !standing.caught_up(Some(log_id(9, 9))),
            "no leader has answered yet"
        );
    }

    #[test]
    fn a_rejoining_node_votes_once_its_log_reaches_the_leaders() {
        let mut standing = Standing::Rejoining { upto: None };
        standing.readmit(log_id(3, 40));
        standing.readmit(log_id(3, 30));
        assert_eq!(
            standing,
            Standing::Rejoining {
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
        assert!(standing.votes());
    }

    #[test]
    fn answers_pristine_only_without_anything_past_the_first_entry() {
        assert!(Standing::at_start(false).pristine(None));
        assert!(Standing::Voting.pristine(None));
        assert!(Standing::Voting.pristine(Some(log_id(0, 0))));
        assert!(!Standing::Voting.pristine(Some(log_id(1, 1))));
        assert!(!Standing::Rejoining { upto: None }.pristine(None));
        assert!(!Standing::at_start(false).pristine(Some(log_id(1, 1))));
    }

    #[test]
    fn a_probing_node_sent_a_history_rejoins() {
        let mut standing = Standing::at_start(false);
        assert!(!standing.sent_history(Some(log_id(0, 0))));
        assert!(standing.sent_history(Some(log_id(1, 1))));
        assert_eq!(standing, Standing::Rejoining { upto: None });
    }
}
