//! Forwarding: sends for keys another node owns go to that owner, many per
//! message, and each client is answered when the owner answers.
//!
//! Per owner there is a queue and at most one `forward` in flight. A send
//! that arrives while one is in flight waits in the queue and goes with the
//! next: under load, one message carries every send that arrived during the
//! previous round trip (Nagle's rule, without a timer). A forward is never
//! sent twice, so an owner never appends a send twice; the price is that a
//! forward lost in a partition gets its clients an indefinite timeout error.
//!
//! Errors follow `maelstrom.md`: a send that never left this node gets the
//! definite "temporarily unavailable" (11); a send that left and got no
//! answer gets the indefinite "timeout" (0); an owner's answer is passed on
//! as it is.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::peer::{self, FORWARD_SENDS_MAX, ForwardResult, PeerReply};
use super::protocol::{ReplyTo, code};

/// Sends waiting per owner. At Maelstrom's rate a queue holds what arrives
/// in one round trip, a few; 4,096 is reached only while the owner is
/// unreachable, and bounds the memory a partition can make us hold.
pub const FORWARD_QUEUE_MAX: usize = 4096;

/// Message bytes in one `forward`, so a batch stays far below the line
/// limit of the receiving node ([`super::lines::LINE_BYTES_MAX`]). A single
/// send larger than this still goes, alone.
pub const FORWARD_BYTES_MAX: usize = 1 << 20;

/// How long a forward may go unanswered before its clients get an
/// indefinite timeout error. An owner answers after one sync point, a few
/// milliseconds plus network latency; 1.5 s also leaves room for a queue
/// wait before it, all within Maelstrom's 5 s client timeout.
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long a send may wait in the queue, unsent, before it is refused with
/// a definite error: the owner is not answering (a partition), and the
/// client should hear so before its own 5 s timeout.
pub const FORWARD_QUEUE_WAIT_MAX: Duration = Duration::from_millis(1500);

/// A send waiting for its turn.
struct Queued {
    to: ReplyTo,
    key: String,
    msg: Vec<u8>,
    queued_at: Instant,
}

/// A `forward` sent and not yet answered.
struct InFlight {
    msg_id: u64,
    sent_at: Instant,
    /// The clients of its sends, in the order of the message.
    clients: Vec<ReplyTo>,
}

/// One owner's queue and its forward in flight.
#[derive(Default)]
struct OwnerQueue {
    queued: VecDeque<Queued>,
    in_flight: Option<InFlight>,
}

/// The forwarding state of this node, per owner.
#[derive(Default)]
pub struct Forwarder {
    queues: HashMap<String, OwnerQueue>,
}

/// A client to answer, and the answer.
pub type Answer = (ReplyTo, ForwardResult);

fn refused(text: &str) -> ForwardResult {
    ForwardResult::Error {
        code: code::TEMPORARILY_UNAVAILABLE,
        text: text.to_string(),
    }
}

impl Forwarder {
    /// Queues a send for `owner`. Returns the refusal when the queue is full;
    /// nothing was sent then, so the error is definite.
    pub fn enqueue(
        &mut self,
        owner: &str,
        to: ReplyTo,
        key: String,
        msg: Vec<u8>,
        now: Instant,
    ) -> Result<(), Answer> {
        let queue = self.queues.entry(owner.to_string()).or_default();
        if queue.queued.len() >= FORWARD_QUEUE_MAX {
            return Err((
                to,
                refused(&format!(
                    "{FORWARD_QUEUE_MAX} sends already wait for owner {owner}"
                )),
            ));
        }
        queue.queued.push_back(Queued {
            to,
            key,
            msg,
            queued_at: now,
        });
        Ok(())
    }

    /// Builds a `forward` for every owner with sends queued and none in
    /// flight; returns the lines to send. `msg_id` hands out message ids.
    pub fn pump(
        &mut self,
        me: &str,
        now: Instant,
        msg_id: &mut dyn FnMut() -> u64,
    ) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for (owner, queue) in &mut self.queues {
            if queue.in_flight.is_some() || queue.queued.is_empty() {
                continue;
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(next) = queue.queued.front() {
                // As written on the line: a key's JSON escapes can make it
                // six times its length.
                let size = next.msg.len() + peer::quoted_len(&next.key);
                let full = batch.len() >= FORWARD_SENDS_MAX
                    || (!batch.is_empty() && bytes + size > FORWARD_BYTES_MAX);
                if full {
                    break;
                }
                bytes += size;
                batch.extend(queue.queued.pop_front());
            }
            let id = msg_id();
            lines.push(peer::encode_forward(
                me,
                owner,
                id,
                batch.iter().map(|q| (q.key.as_str(), q.msg.as_slice())),
            ));
            queue.in_flight = Some(InFlight {
                msg_id: id,
                sent_at: now,
                clients: batch.into_iter().map(|q| q.to).collect(),
            });
        }
        lines
    }

    /// Takes `owner`'s reply to message `in_reply_to`, if it answers the
    /// forward in flight; returns the clients to answer, or `None` when the
    /// reply is not for a forward of ours (a late one, or another kind).
    pub fn on_reply(
        &mut self,
        owner: &str,
        in_reply_to: u64,
        reply: &PeerReply,
    ) -> Option<Vec<Answer>> {
        let queue = self.queues.get_mut(owner)?;
        if queue.in_flight.as_ref()?.msg_id != in_reply_to {
            return None;
        }
        let in_flight = queue.in_flight.take()?;
        let answers = match reply {
            PeerReply::ForwardOk { results } if results.len() == in_flight.clients.len() => {
                in_flight.clients.into_iter().zip(results.clone()).collect()
            }
            PeerReply::ForwardOk { results } => {
                // The owner answered another number of sends than we sent:
                // a bug somewhere, and nobody can tell which were applied.
                let text = format!(
                    "owner {owner} answered {} results for {} sends",
                    results.len(),
                    in_flight.clients.len()
                );
                crate::log::warn(format_args!("{text}"));
                answer_all(in_flight.clients, code::CRASH, &text)
            }
            PeerReply::Error { code, text } => answer_all(in_flight.clients, *code, text),
            PeerReply::ReplicateOk { .. } => {
                let text = format!("owner {owner} answered a forward with replicate_ok");
                answer_all(in_flight.clients, code::CRASH, &text)
            }
        };
        Some(answers)
    }

    /// Answers what has waited too long: forwards in flight past
    /// [`FORWARD_TIMEOUT`] (indefinite), and queued sends past
    /// [`FORWARD_QUEUE_WAIT_MAX`] (definite: never sent).
    pub fn expire(&mut self, now: Instant) -> Vec<Answer> {
        let mut answers = Vec::new();
        for (owner, queue) in &mut self.queues {
            if queue
                .in_flight
                .as_ref()
                .is_some_and(|f| now.duration_since(f.sent_at) >= FORWARD_TIMEOUT)
                && let Some(in_flight) = queue.in_flight.take()
            {
                answers.extend(answer_all(
                    in_flight.clients,
                    code::TIMEOUT,
                    &format!("owner {owner} did not answer within {FORWARD_TIMEOUT:?}"),
                ));
            }
            while queue
                .queued
                .front()
                .is_some_and(|q| now.duration_since(q.queued_at) >= FORWARD_QUEUE_WAIT_MAX)
            {
                let Some(stale) = queue.queued.pop_front() else {
                    break;
                };
                answers.push((
                    stale.to,
                    refused(&format!(
                        "owner {owner} is not answering; the send was not forwarded"
                    )),
                ));
            }
        }
        answers
    }

    /// Sends queued or in flight, over all owners.
    pub fn outstanding(&self) -> usize {
        self.queues
            .values()
            .map(|q| q.queued.len() + q.in_flight.as_ref().map_or(0, |f| f.clients.len()))
            .sum()
    }
}

fn answer_all(clients: Vec<ReplyTo>, code: u32, text: &str) -> Vec<Answer> {
    clients
        .into_iter()
        .map(|to| {
            (
                to,
                ForwardResult::Error {
                    code,
                    text: text.to_string(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::peer::PeerRequest;
    use crate::node::protocol::{Incoming, Request, parse_line};

    fn client(msg_id: u64) -> ReplyTo {
        ReplyTo {
            src: "c1".into(),
            dest: "n0".into(),
            msg_id,
        }
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut next = 0;
        move || {
            next += 1;
            next
        }
    }

    fn sends_in(line: &[u8]) -> Vec<(String, Vec<u8>)> {
        match parse_line(line) {
            Ok(Incoming::Request {
                request: Request::Peer(PeerRequest::Forward { sends }),
                ..
            }) => sends,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sends_coalesce_while_one_forward_is_in_flight() {
        let mut f = Forwarder::default();
        let mut ids = counter();
        let t0 = Instant::now();
        f.enqueue("n1", client(1), "a".into(), b"1".to_vec(), t0)
            .expect("room");
        let first = f.pump("n0", t0, &mut ids);
        assert_eq!(first.len(), 1);
        assert_eq!(sends_in(&first[0]).len(), 1);
        for i in 2..=5 {
            f.enqueue("n1", client(i), "b".into(), b"2".to_vec(), t0)
                .expect("room");
        }
        assert!(
            f.pump("n0", t0, &mut ids).is_empty(),
            "one in flight per owner"
        );
        let answers = f
            .on_reply(
                "n1",
                1,
                &PeerReply::ForwardOk {
                    results: vec![ForwardResult::Offset(7)],
                },
            )
            .expect("ours");
        assert_eq!(answers, vec![(client(1), ForwardResult::Offset(7))]);
        let second = f.pump("n0", t0, &mut ids);
        assert_eq!(sends_in(&second[0]).len(), 4, "the four queued go together");
        assert_eq!(f.outstanding(), 4);
    }

    #[test]
    fn late_and_foreign_replies_are_not_taken() {
        let mut f = Forwarder::default();
        let mut ids = counter();
        let t0 = Instant::now();
        f.enqueue("n1", client(1), "a".into(), b"1".to_vec(), t0)
            .expect("room");
        f.pump("n0", t0, &mut ids);
        let ok = PeerReply::ForwardOk {
            results: vec![ForwardResult::Offset(0)],
        };
        assert!(f.on_reply("n1", 99, &ok).is_none());
        assert!(f.on_reply("n2", 1, &ok).is_none());
        let expired = f.expire(t0 + FORWARD_TIMEOUT);
        assert_eq!(expired.len(), 1);
        assert!(matches!(
            expired[0].1,
            ForwardResult::Error {
                code: code::TIMEOUT,
                ..
            }
        ));
        assert!(
            f.on_reply("n1", 1, &ok).is_none(),
            "too late: answered already"
        );
    }

    #[test]
    fn unsent_sends_expire_with_a_definite_error_and_queues_are_bounded() {
        let mut f = Forwarder::default();
        let mut ids = counter();
        let t0 = Instant::now();
        f.enqueue("n1", client(0), "a".into(), b"1".to_vec(), t0)
            .expect("room");
        f.pump("n0", t0, &mut ids);
        for i in 1..=FORWARD_QUEUE_MAX as u64 {
            f.enqueue("n1", client(i), "a".into(), b"1".to_vec(), t0)
                .expect("room");
        }
        let (_, refusal) = f
            .enqueue("n1", client(0), "a".into(), b"1".to_vec(), t0)
            .expect_err("full");
        assert!(matches!(
            refusal,
            ForwardResult::Error {
                code: code::TEMPORARILY_UNAVAILABLE,
                ..
            }
        ));
        let expired = f.expire(t0 + FORWARD_QUEUE_WAIT_MAX);
        assert_eq!(expired.len(), FORWARD_QUEUE_MAX + 1);
        let definite = expired
            .iter()
            .filter(
                |(_, r)| matches!(r, ForwardResult::Error { code, .. } if code::is_definite(*code)),
            )
            .count();
        assert_eq!(definite, FORWARD_QUEUE_MAX, "all but the one in flight");
        assert_eq!(f.outstanding(), 0);
    }

    #[test]
    fn an_owner_error_reaches_every_client_of_the_forward() {
        let mut f = Forwarder::default();
        let mut ids = counter();
        let t0 = Instant::now();
        for i in 0..3 {
            f.enqueue("n1", client(i), "a".into(), b"1".to_vec(), t0)
                .expect("room");
        }
        f.pump("n0", t0, &mut ids);
        let answers = f
            .on_reply(
                "n1",
                1,
                &PeerReply::Error {
                    code: 11,
                    text: "not initialised".into(),
                },
            )
            .expect("ours");
        assert_eq!(answers.len(), 3);
        assert!(
            answers
                .iter()
                .all(|(_, r)| matches!(r, ForwardResult::Error { code: 11, .. }))
        );
    }
}
