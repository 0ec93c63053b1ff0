//! Who leads the groups this node does not run, and how far behind each
//! replica of every group is: what each node's leads, sent to every peer
//! every [`LEADS_EVERY`] (the [`Lead`]s of a batch), say.
//!
//! A node runs only the partition groups it replicates, so its own Raft
//! instances cannot tell it who leads the others; yet Kafka's `Metadata`
//! must name every partition's leader on every broker (a client asks any
//! of them), a produce over HTTP to a node without a replica must reach
//! the leader, and `GET /cluster` shows each replica's lag wherever it is
//! asked. A report is believed for [`LEAD_FRESH`] only: a leader that died
//! stops reporting, and after that the partition shows no leader here
//! until its new leader's first report, rather than a dead one for good.
//! Of two fresh reports for one group the higher term wins (an old leader
//! cut off from its majority may still think it leads, and say so).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock::lock;
use crate::raft::transport::Lead;
use crate::raft::types::NodeId;

/// How often a node tells its peers which groups it leads: well under
/// [`LEAD_FRESH`], so that a live leader's report never lapses between
/// two of them, and under openraft's failover (about a second, see
/// `raft::groups::TIMING_DEFAULT`), so that a new leader is known
/// cluster-wide about when it takes writes.
pub const LEADS_EVERY: Duration = Duration::from_millis(250);

/// How long a report is believed: several reports' worth, so a batch lost
/// with a link that reconnects does not blank a live leader, and short
/// enough that clients stop being sent to a dead one within the failover
/// goal (issue 20: new leaders within 2 s).
pub const LEAD_FRESH: Duration = Duration::from_millis(1500);

/// One group's leader, as its last report had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub leader: NodeId,
    pub term: u64,
    /// The leader's last log index.
    pub last: u64,
    /// The last index each follower is known to hold.
    pub matched: BTreeMap<NodeId, u64>,
    at: Instant,
}

impl Reported {
    /// What `leader`'s own `lead` says, as of `now`.
    pub fn of_lead(leader: NodeId, lead: Lead, now: Instant) -> Reported {
        Reported {
            leader,
            term: lead.term,
            last: lead.last,
            matched: lead.matched,
            at: now,
        }
    }

    /// How many entries `replica` is behind its leader (0 for the leader
    /// itself), when known.
    pub fn lag(&self, replica: NodeId) -> Option<u64> {
        if replica == self.leader {
            return Some(0);
        }
        self.matched
            .get(&replica)
            .map(|&matched| self.last.saturating_sub(matched))
    }
}

/// The reports peers sent, by group.
#[derive(Default)]
pub struct Leads {
    reported: Mutex<HashMap<u32, Reported>>,
}

impl Leads {
    /// Takes what `from` reported leading at `now` (every group it leads).
    /// A report for a group replaces a fresh one only at the same term or
    /// a higher one; a group `from` was believed to lead and no longer
    /// reports has no known leader until someone reports it.
    pub fn record(&self, from: NodeId, leads: Vec<Lead>, now: Instant) {
        let mut reported = lock(&self.reported);
        let led: HashSet<u32> = leads.iter().map(|lead| lead.group).collect();
        reported.retain(|g, held| held.leader != from || led.contains(g));
        for lead in leads {
            let newer = reported.get(&lead.group).is_none_or(|held| {
                lead.term >= held.term || now.duration_since(held.at) >= LEAD_FRESH
            });
            if newer {
                reported.insert(lead.group, Reported::of_lead(from, lead, now));
            }
        }
        // Reports of removed groups, and of groups whose leaders stopped
        // reporting, go once stale, so the table holds at most the groups
        // led somewhere lately.
        reported.retain(|_, held| now.duration_since(held.at) < LEAD_FRESH);
    }

    /// Group `g`'s leader and replication, as last reported, if still
    /// fresh at `now`.
    pub fn of(&self, g: u32, now: Instant) -> Option<Reported> {
        let reported = lock(&self.reported);
        let held = reported.get(&g)?;
        (now.duration_since(held.at) < LEAD_FRESH).then(|| held.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(group: u32, term: u64, last: u64) -> Lead {
        Lead {
            group,
            term,
            last,
            matched: BTreeMap::from([(2, last.saturating_sub(3))]),
        }
    }

    #[test]
    fn a_report_is_believed_while_fresh_only() {
        let leads = Leads::default();
        let at = Instant::now();
        leads.record(1, vec![lead(7, 3, 10)], at);
        let held = leads.of(7, at + LEAD_FRESH / 2).expect("fresh");
        assert_eq!((held.leader, held.term), (1, 3));
        assert_eq!(held.lag(1), Some(0));
        assert_eq!(held.lag(2), Some(3));
        assert_eq!(held.lag(3), None, "a follower not yet matched");
        assert!(leads.of(7, at + LEAD_FRESH).is_none(), "stale");
        assert!(leads.of(8, at).is_none(), "never reported");
    }

    #[test]
    fn an_old_term_does_not_replace_a_fresh_newer_one() {
        let leads = Leads::default();
        let at = Instant::now();
        leads.record(2, vec![lead(7, 5, 10)], at);
        // Node 1 was cut off and still thinks it leads, at term 4.
        leads.record(1, vec![lead(7, 4, 9)], at);
        assert_eq!(leads.of(7, at).map(|r| r.leader), Some(2));
        // Once node 2's report is stale, node 1's is the best there is.
        let later = at + LEAD_FRESH;
        leads.record(1, vec![lead(7, 4, 9)], later);
        assert_eq!(leads.of(7, later).map(|r| r.leader), Some(1));
        // A new leader at a higher term replaces a fresh report at once.
        leads.record(3, vec![lead(7, 6, 11)], later);
        assert_eq!(leads.of(7, later).map(|r| r.leader), Some(3));
    }

    #[test]
    fn a_leader_that_stops_reporting_a_group_no_longer_leads_it() {
        let leads = Leads::default();
        let at = Instant::now();
        leads.record(1, vec![lead(7, 1, 1), lead(8, 1, 1)], at);
        leads.record(1, vec![lead(8, 1, 2)], at);
        assert!(leads.of(7, at).is_none());
        assert_eq!(leads.of(8, at).map(|r| r.last), Some(2));
    }

    #[test]
    fn stale_reports_are_dropped() {
        let leads = Leads::default();
        let at = Instant::now();
        leads.record(1, vec![lead(7, 1, 1), lead(8, 1, 1)], at);
        leads.record(2, vec![lead(9, 1, 1)], at + LEAD_FRESH);
        assert_eq!(lock(&leads.reported).len(), 1);
    }
}
