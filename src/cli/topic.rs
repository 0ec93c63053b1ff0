//! `seglog topic create|list|describe|delete`.

use serde_json::{Value, json};

use super::client::{Client, TopicInfo, code, is_not_found, segment};
use super::output::{Out, bytes, count, millis, plural, time};
use super::{Failure, Outcome};
use crate::table::Align;

/// What `seglog topic` does.
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (the server's default is 100).
        #[arg(short, long)]
        partitions: Option<u32>,
        /// Delete a partition's sealed segments older than this (ms).
        #[arg(long, value_name = "MS")]
        retention_ms: Option<u64>,
        /// Keep about this many bytes per partition, deleting the oldest segments.
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
        /// A topic of that name existing already is no error (its settings
        /// are left as they are).
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List the topics with their partitions, records and size.
    List,
    /// Show a topic's partitions: log start, end offset, records, size.
    Describe { name: String },
    /// Delete a topic and all its records.
    Delete {
        name: String,
        /// No such topic is no error.
        #[arg(long)]
        if_exists: bool,
    },
}

pub fn run(client: &Client, out: &Out, command: TopicCommand) -> Outcome {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            if_not_exists,
        } => {
            let mut body = json!({ "name": name });
            for (field, value) in [
                ("partitions", partitions.map(u64::from)),
                ("retention_ms", retention_ms),
                ("retention_bytes", retention_bytes),
            ] {
                if let Some(value) = value {
                    body[field] = json!(value);
                }
            }
            let created: Result<TopicInfo, Failure> =
                client.post("/topics", body.to_string().as_bytes());
            let (topic, made) = match created {
                Ok(topic) => (topic, true),
                Err(e) if if_not_exists && e.code() == Some(code::TOPIC_EXISTS) => {
                    (client.topic(&name)?, false)
                }
                Err(e) => return Err(e.into()),
            };
            if out.json() {
                return out.print_json(&json!({"created": made, "topic": topic_json(&topic)}));
            }
            let what = if made { "created" } else { "exists already:" };
            out.line(&format!(
                "{what} topic {} with {}",
                topic.name,
                plural(topic.partitions.len() as u64, "partition")
            ))
        }
        TopicCommand::List => list(client, out),
        TopicCommand::Describe { name } => describe(client, out, &name),
        TopicCommand::Delete { name, if_exists } => {
            let deleted = match client.delete(&format!("/topics/{}", segment(&name))) {
                Ok(()) => true,
                Err(e) if if_exists && is_not_found(&e) => false,
                Err(e) => return Err(e.into()),
            };
            if out.json() {
                out.print_json(&json!({"topic": name, "deleted": deleted}))
            } else if deleted {
                out.line(&format!("deleted topic {name}"))
            } else {
                out.line(&format!("no topic {name}: nothing to delete"))
            }
        }
    }
}

/// A topic as `--output json` prints it: the server's description plus
/// the totals.
fn topic_json(topic: &TopicInfo) -> Value {
    json!({
        "name": topic.name,
        "partitions": topic.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "log_start_offset": p.log_start_offset,
            "end_offset": p.end_offset,
            "records": p.end_offset.saturating_sub(p.log_start_offset),
            "bytes": p.bytes,
        })).collect::<Vec<_>>(),
        "records": topic.records(),
        "bytes": topic.bytes(),
        "retention_ms": topic.retention_ms,
        "retention_bytes": topic.retention_bytes,
        "created_ms": topic.created_ms,
    })
}

/// A topic's retention as the console shows it too: "server default",
/// or each limit it sets ("7d old; size: server default").
fn retention(topic: &TopicInfo) -> String {
    match (topic.retention_ms, topic.retention_bytes) {
        (None, None) => "server default".into(),
        (ms, size) => format!(
            "{}; {}",
            ms.map_or_else(
                || "age: server default".into(),
                |ms| format!("{} old", millis(ms))
            ),
            size.map_or_else(
                || "size: server default".into(),
                |b| format!("{} per partition", bytes(b))
            ),
        ),
    }
}

fn list(client: &Client, out: &Out) -> Outcome {
    let mut topics = Vec::new();
    for name in client.topics()? {
        match client.topic(&name) {
            Ok(topic) => topics.push(topic),
            // Deleted between the list and its description.
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if out.json() {
        return out.print_json(&topics.iter().map(topic_json).collect::<Vec<_>>());
    }
    if topics.is_empty() {
        return out.line("no topics (create one with `seglog topic create NAME`)");
    }
    out.print_table(
        &[
            ("TOPIC", Align::Left),
            ("PARTITIONS", Align::Right),
            ("RECORDS", Align::Right),
            ("SIZE", Align::Right),
            ("RETENTION", Align::Left),
        ],
        topics
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    count(t.partitions.len() as u64),
                    count(t.records()),
                    bytes(t.bytes()),
                    retention(t),
                ]
            })
            .collect(),
    )
}

fn describe(client: &Client, out: &Out, name: &str) -> Outcome {
    let topic = client.topic(name)?;
    if out.json() {
        return out.print_json(&topic_json(&topic));
    }
    out.line(&format!(
        "topic {}: {}, {}, {}; retention {}; created {}",
        topic.name,
        plural(topic.partitions.len() as u64, "partition"),
        plural(topic.records(), "record"),
        bytes(topic.bytes()),
        retention(&topic),
        time(topic.created_ms)
    ))?;
    out.print_table(
        &[
            ("PARTITION", Align::Right),
            ("LOG-START", Align::Right),
            ("END", Align::Right),
            ("RECORDS", Align::Right),
            ("SIZE", Align::Right),
        ],
        topic
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.partition.to_string(),
                    count(p.log_start_offset),
                    count(p.end_offset),
                    count(p.end_offset.saturating_sub(p.log_start_offset)),
                    bytes(p.bytes),
                ]
            })
            .collect(),
    )
}
