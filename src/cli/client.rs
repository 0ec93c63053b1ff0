//! Requests to a seglog server's HTTP API, and its replies as the types
//! the commands use. An error reply becomes a [`Failure::Refused`] with the
//! server's message and a hint of what to do; a server that cannot be
//! reached, a [`Failure::Unreachable`] that says how to point at one.
//! The types mirror the API's JSON (README, "Using the HTTP API"); the
//! client shares no code with the server, so it works against any
//! version that speaks the same API.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Failure, Result};

/// Longest a request may take, a long poll included: the server holds a
/// fetch for at most 30 s (`wait_ms`), so this leaves a margin.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for a connection: a server on this machine or a near one
/// answers in milliseconds; a wrong address should fail soon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest reply read: a fetch returns at most 64 MiB of record payloads
/// (`max_bytes`), and its JSON adds the topic, offsets and escapes.
const REPLY_BYTES_MAX: u64 = 96 << 20;

/// A server's state of one partition (`GET /topics/{topic}`).
#[derive(Deserialize, Debug, Clone)]
pub struct PartitionInfo {
    pub partition: u32,
    pub log_start_offset: u64,
    pub end_offset: u64,
    pub bytes: u64,
}

/// A topic and its partitions (`GET /topics/{topic}`).
#[derive(Deserialize, Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub created_ms: u64,
}

impl TopicInfo {
    /// Records held now, over all partitions.
    pub fn records(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.end_offset.saturating_sub(p.log_start_offset))
            .sum()
    }

    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }

    /// Checks partitions a command line names against the topic's.
    pub fn check_partitions(&self, named: &[u32]) -> Result<()> {
        let count = self.partitions.len() as u32;
        match named.iter().find(|&&p| p >= count) {
            Some(bad) => Err(Failure::Usage(format!(
                "--partition {bad}: topic {} has partitions 0 to {}",
                self.name,
                count.saturating_sub(1)
            ))),
            None => Ok(()),
        }
    }
}

/// One partition of a group's topics (`GET /groups/{group}`).
#[derive(Deserialize, Debug, Clone)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: u32,
    /// The committed offset; `None` where the group has committed nothing
    /// (its lag is then every record the partition holds).
    pub offset: Option<u64>,
    pub log_start_offset: u64,
    pub end_offset: u64,
    pub lag: u64,
}

/// A group as `GET /groups` lists it.
#[derive(Deserialize, Debug, Clone)]
pub struct GroupSummary {
    pub group: String,
    pub topics: Vec<String>,
    /// Partitions of those topics, and how many of them have a commit.
    pub partitions: u64,
    pub committed_partitions: u64,
    pub lag: u64,
}

/// A consumer group's offsets and lag (`GET /groups/{group}`).
#[derive(Deserialize, Debug, Clone)]
pub struct GroupInfo {
    pub group: String,
    pub lag: u64,
    pub partitions: Vec<GroupPartition>,
}

/// The client of one server.
#[derive(Clone)]
pub struct Client {
    /// The server's address without a trailing `/`.
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the server at `server` (`http://HOST:PORT`);
    /// `from_env` says it came from `SEGLOG_SERVER`, so an error names that.
    pub fn new(server: &str, from_env: bool) -> Result<Client> {
        let base = server.trim_end_matches('/').to_string();
        let given = if from_env {
            format!("SEGLOG_SERVER={server} (from the environment)")
        } else {
            format!("--server {server}")
        };
        if base.starts_with("https://") {
            return Err(Failure::Usage(format!(
                "{given}: seglog serves plain HTTP, and this client speaks no TLS; \
                 use http://, or reach a remote server through an SSH tunnel"
            )));
        }
        if !base.starts_with("http://") {
            return Err(Failure::Usage(format!(
                "{given}: give the server's address as http://HOST:PORT (its \
                 --listen address; the default is {})",
                super::SERVER_DEFAULT
            )));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .build()
            .into();
        Ok(Client { base, agent })
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    /// GET `path`, its JSON reply as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let reply = self.send("GET", path, None)?;
        self.parse(path, &reply)
    }

    /// POST `body` to `path`, its JSON reply as `T`.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T> {
        let reply = self.send("POST", path, Some(body))?;
        self.parse(path, &reply)
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        self.send("DELETE", path, None).map(drop)
    }

    pub fn topics(&self) -> Result<Vec<String>> {
        self.get("/topics")
    }

    pub fn topic(&self, name: &str) -> Result<TopicInfo> {
        self.get(&format!("/topics/{}", segment(name)))
    }

    pub fn groups(&self) -> Result<Vec<GroupSummary>> {
        self.get("/groups")
    }

    pub fn group(&self, name: &str) -> Result<GroupInfo> {
        self.get(&format!("/groups/{}", segment(name)))
    }

    /// Records of one partition (`query` is the fetch's query string).
    pub fn fetch(&self, topic: &str, partition: u32, query: &str) -> Result<Vec<Value>> {
        self.get(&format!(
            "/topics/{}/partitions/{partition}/records?{query}",
            segment(topic)
        ))
    }

    /// The offset of a partition's first record at or after `ms` (since
    /// the epoch), or `end` (its end, read before) when there is none.
    /// The server searches a bounded number of bytes per request and says
    /// where it stopped; the search goes on from there, request after
    /// request, each further into the partition, until it ends.
    pub fn offset_at(&self, topic: &str, partition: u32, ms: u64, end: u64) -> Result<u64> {
        let mut from = 0;
        loop {
            let query = format!("timestamp={ms}&offset={from}&max_records=1");
            match self.fetch(topic, partition, &query) {
                Ok(found) => {
                    return Ok(found
                        .first()
                        .and_then(|r| r["offset"].as_u64())
                        .unwrap_or(end));
                }
                Err(Failure::Refused {
                    code: Some(code::SEARCH_STOPPED),
                    next_offset: Some(next),
                    ..
                }) if next > from => from = next,
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits one group's offsets; returns the offsets now committed
    /// (higher than asked where a commit was already higher).
    pub fn commit(
        &self,
        group: &str,
        offsets: &[(String, u32, u64)],
    ) -> Result<Vec<(String, u32, u64)>> {
        #[derive(Deserialize)]
        struct Committed {
            offsets: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            topic: String,
            partition: u32,
            offset: u64,
        }
        let body = serde_json::json!({
            "offsets": offsets
                .iter()
                .map(|(topic, partition, offset)| {
                    serde_json::json!({"topic": topic, "partition": partition, "offset": offset})
                })
                .collect::<Vec<_>>()
        });
        let reply: Committed = self.post(
            &format!("/groups/{}/offsets", segment(group)),
            body.to_string().as_bytes(),
        )?;
        Ok(reply
            .offsets
            .into_iter()
            .map(|e| (e.topic, e.partition, e.offset))
            .collect())
    }

    /// Sends a request; the reply's body on a 2xx status, else the
    /// server's error as a failure.
    fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let sent = match (method, body) {
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body),
            ("DELETE", _) => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        };
        // A read changes nothing, whatever became of it.
        let write = method != "GET";
        let mut response = sent.map_err(|e| self.unreachable(&e, write && maybe_applied(&e)))?;
        let status = response.status().as_u16();
        // The request was carried out (or refused) by now: a reply lost
        // while it is read may hide a write that happened.
        let text = response
            .body_mut()
            .with_config()
            .limit(REPLY_BYTES_MAX)
            .read_to_string()
            .map_err(|e| self.unreachable(&e, write))?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(refused(status, &text))
        }
    }

    fn parse<T: DeserializeOwned>(&self, path: &str, text: &str) -> Result<T> {
        serde_json::from_str(text).map_err(|e| Failure::Unreachable {
            message: format!(
                "{}{path} answered something that is not the reply of a seglog server ({e}); \
                 is --server the address of `seglog serve`?",
                self.base
            ),
            // A 2xx status came with it: whatever it was, it happened.
            maybe_applied: true,
        })
    }

    fn unreachable(&self, e: &ureq::Error, maybe_applied: bool) -> Failure {
        let why = match e {
            ureq::Error::ConnectionFailed | ureq::Error::Io(_) => {
                format!("cannot connect to {} ({e})", self.base)
            }
            ureq::Error::HostNotFound => format!("cannot find the host of {}", self.base),
            ureq::Error::Timeout(_) => format!("{} did not answer in time ({e})", self.base),
            _ => format!("the request to {} failed: {e}", self.base),
        };
        let advice = if maybe_applied {
            "The request went out, so the server may have carried it out before the \
             connection failed."
        } else {
            "Is `seglog serve` running there? Start one with `seglog serve`, or point \
             --server (or SEGLOG_SERVER) at the address it listens on."
        };
        Failure::Unreachable {
            message: format!("{why}. {advice}"),
            maybe_applied,
        }
    }
}

/// Whether a request that failed with `e` may have reached the server:
/// only a failure to resolve or connect proves it did not.
fn maybe_applied(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => false,
        ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => false,
        ureq::Error::Io(io) => !matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::NotFound
        ),
        _ => true,
    }
}

/// An error reply (`{"error_code": N, "message": "..."}`) as a failure,
/// with what to do about it.
fn refused(status: u16, text: &str) -> Failure {
    let reply: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = reply["error_code"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok());
    let message = reply["message"]
        .as_str()
        .map_or_else(|| format!("HTTP {status}: {}", text.trim()), str::to_string);
    let hint = match code {
        Some(40401) => {
            "; `seglog topic list` lists the topics, `seglog topic create NAME` makes one"
        }
        Some(40402) => "; `seglog topic describe TOPIC` shows its partitions",
        Some(40403) => "; `seglog group list` lists the groups that have committed offsets",
        Some(40901) => {
            "; `seglog topic describe NAME` shows it (`--if-not-exists` makes this no error)"
        }
        Some(41301) => "; the server's --max-record-bytes sets the limit",
        Some(41302) => "; the server's --max-request-bytes sets the limit",
        Some(41501) => "; this client sends JSON: is --server the address of `seglog serve`?",
        Some(41601) => "; `seglog topic describe TOPIC` shows where each partition ends",
        Some(50301) => {
            "; the server is reopening its store after a failed sync: try again shortly \
             (`curl SERVER/health` says `healing` until it is done)"
        }
        Some(50303) => "; the server is busy: try again shortly",
        Some(50304) => "; the server is shutting down: try again once it is back",
        _ => "",
    };
    let shown = code.map_or_else(String::new, |c| format!(", code {c}"));
    Failure::Refused {
        message: format!("{message} (HTTP {status}{shown}){hint}"),
        status: Some(status),
        code,
        next_offset: reply["next_offset"].as_u64(),
    }
}

/// A path segment, percent-encoded: group names may hold any character
/// but control characters.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a failure is the server's "no such ..." (404) reply.
pub fn is_not_found(failure: &Failure) -> bool {
    matches!(
        failure,
        Failure::Refused {
            status: Some(404),
            ..
        }
    )
}

/// Whether a failure is the server's "too many writes wait" reply, after
/// which nothing changed and the request may be sent again.
pub fn is_overloaded(failure: &Failure) -> bool {
    failure.code() == Some(code::OVERLOADED)
}

/// The server's stable error codes the client acts on (README, "Using the
/// HTTP API").
pub mod code {
    /// A body or query parameter the route does not take.
    pub const MALFORMED: u32 = 40001;
    /// A value out of range.
    pub const INVALID: u32 = 40002;
    pub const PARTITION_NOT_FOUND: u32 = 40402;
    pub const TOPIC_EXISTS: u32 = 40901;
    pub const RECORD_TOO_LARGE: u32 = 41301;
    pub const REQUEST_TOO_LARGE: u32 = 41302;
    /// A search by time stopped at its bound; `next_offset` goes on.
    pub const SEARCH_STOPPED: u32 = 42201;
    /// A storage error: the write may have happened (the message says).
    pub const STORAGE: u32 = 50302;
    pub const OVERLOADED: u32 = 50303;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_keeps_safe_bytes_and_encodes_the_rest() {
        assert_eq!(segment("orders.v2_x-1~"), "orders.v2_x-1~");
        assert_eq!(segment("a b/c?ü"), "a%20b%2Fc%3F%C3%BC");
    }

    #[test]
    fn an_error_reply_keeps_the_message_and_adds_a_hint() {
        let failure = refused(404, r#"{"error_code":40401,"message":"no topic 'x'"}"#);
        let text = failure.to_string();
        assert!(
            text.starts_with("no topic 'x' (HTTP 404, code 40401); `seglog topic list`"),
            "{text}"
        );
        assert!(is_not_found(&failure));
        assert_eq!(failure.code(), Some(40401));
        assert_eq!(failure.exit_code(), 1);
        assert!(is_overloaded(&refused(
            503,
            r#"{"error_code":50303,"message":"busy"}"#
        )));
        let odd = refused(502, "bad gateway");
        assert_eq!(odd.to_string(), "HTTP 502: bad gateway (HTTP 502)");
    }
}
