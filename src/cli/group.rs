//! `seglog group list|describe|seek`: consumer groups, their committed
//! offsets and lag, and moving a group's offsets. A commit stores the
//! offset given, lower ones included (as Kafka does, over HTTP and Kafka
//! alike), so a seek moves a group backward or forward; should the server
//! answer with other offsets than asked (a seglog before version 5 of the
//! data format kept the highest), the command says so and exits 1.

use serde_json::json;

use super::client::{Client, GroupInfo};
use super::output::{Out, count, plural};
use super::{Failure, Outcome, when};
use crate::table::Align;

/// What `seglog group` does.
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List the groups that have committed offsets, with their lag.
    List,
    /// Show a group's committed offset, end offset and lag per partition.
    Describe { group: String },
    /// Commit new offsets for a group in one topic (backward or forward).
    Seek(SeekArgs),
}

/// Options of `seglog group seek`: where to, exactly one of the `--to-*`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("to").required(true).multiple(false)))]
pub struct SeekArgs {
    pub group: String,
    /// The topic whose offsets move.
    #[arg(short, long)]
    pub topic: String,
    /// Only this partition (repeat for more; default: every partition).
    #[arg(short, long)]
    pub partition: Vec<u32>,
    /// To each partition's end: skip everything not yet read.
    #[arg(long, group = "to")]
    pub to_end: bool,
    /// To each partition's log start: read everything again.
    #[arg(long, group = "to")]
    pub to_beginning: bool,
    /// To this offset.
    #[arg(long, group = "to")]
    pub to_offset: Option<u64>,
    /// To the first record at or after this time (as `seglog consume --time`).
    #[arg(long, group = "to", value_name = "TIME", allow_hyphen_values = true)]
    pub to_time: Option<String>,
}

pub fn run(client: &Client, out: &Out, command: GroupCommand) -> Outcome {
    match command {
        GroupCommand::List => list(client, out),
        GroupCommand::Describe { group } => describe(client, out, &group),
        GroupCommand::Seek(args) => seek(client, out, &args),
    }
}

fn list(client: &Client, out: &Out) -> Outcome {
    let groups = client.groups()?;
    if out.json() {
        return out.print_json(
            &groups
                .iter()
                .map(|g| {
                    json!({
                        "group": g.group, "topics": g.topics, "partitions": g.partitions,
                        "committed_partitions": g.committed_partitions, "lag": g.lag,
                    })
                })
                .collect::<Vec<_>>(),
        );
    }
    if groups.is_empty() {
        return out.line("no consumer group has committed an offset yet");
    }
    out.print_table(
        &[
            ("GROUP", Align::Left),
            ("TOPICS", Align::Left),
            ("PARTITIONS", Align::Right),
            ("COMMITTED", Align::Right),
            ("LAG", Align::Right),
        ],
        groups
            .iter()
            .map(|g| {
                vec![
                    g.group.clone(),
                    g.topics.join(","),
                    count(g.partitions),
                    count(g.committed_partitions),
                    count(g.lag),
                ]
            })
            .collect(),
    )
}

fn group_json(group: &GroupInfo) -> serde_json::Value {
    json!({
        "group": group.group,
        "lag": group.lag,
        "partitions": group.partitions.iter().map(|p| json!({
            "topic": p.topic, "partition": p.partition, "offset": p.offset,
            "log_start_offset": p.log_start_offset, "end_offset": p.end_offset, "lag": p.lag,
        })).collect::<Vec<_>>(),
    })
}

fn describe(client: &Client, out: &Out, name: &str) -> Outcome {
    let group = client.group(name)?;
    if out.json() {
        return out.print_json(&group_json(&group));
    }
    out.line(&format!(
        "group {}: lag {} (a partition without a commit, \"-\", counts every record it holds)",
        group.group,
        plural(group.lag, "record")
    ))?;
    out.print_table(
        &[
            ("TOPIC", Align::Left),
            ("PARTITION", Align::Right),
            ("COMMITTED", Align::Right),
            ("LOG-START", Align::Right),
            ("END", Align::Right),
            ("LAG", Align::Right),
        ],
        group
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.offset.map_or_else(|| "-".into(), count),
                    count(p.log_start_offset),
                    count(p.end_offset),
                    count(p.lag),
                ]
            })
            .collect(),
    )
}

fn seek(client: &Client, out: &Out, args: &SeekArgs) -> Outcome {
    let since = when::parse_option(args.to_time.as_deref())?;
    let topic = client.topic(&args.topic)?;
    topic.check_partitions(&args.partition)?;
    let mut wanted = Vec::new();
    for state in &topic.partitions {
        if !args.partition.is_empty() && !args.partition.contains(&state.partition) {
            continue;
        }
        let offset = if args.to_end {
            state.end_offset
        } else if args.to_beginning {
            state.log_start_offset
        } else if let Some(offset) = args.to_offset {
            offset
        } else if let Some(ms) = since {
            client.offset_at(&topic.name, state.partition, ms, state.end_offset)?
        } else {
            return Err(Failure::Usage(
                "say where to: --to-end, --to-beginning, --to-offset N or --to-time TIME".into(),
            )
            .into());
        };
        wanted.push((topic.name.clone(), state.partition, offset));
    }
    let committed = client.commit(&args.group, &wanted)?;
    let kept: Vec<String> = wanted
        .iter()
        .zip(&committed)
        .filter(|((_, _, asked), (_, _, now))| now != asked)
        .map(|((_, p, asked), (_, _, now))| format!("partition {p} stays at {now} (asked {asked})"))
        .collect();
    if out.json() {
        out.print_json(&json!({
            "group": args.group,
            "offsets": wanted.iter().zip(&committed).map(|((t, p, asked), (_, _, now))| json!({
                "topic": t, "partition": p, "requested": asked, "offset": now,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        out.print_table(
            &[
                ("TOPIC", Align::Left),
                ("PARTITION", Align::Right),
                ("REQUESTED", Align::Right),
                ("COMMITTED", Align::Right),
            ],
            wanted
                .iter()
                .zip(&committed)
                .map(|((t, p, asked), (_, _, now))| {
                    vec![t.clone(), p.to_string(), count(*asked), count(*now)]
                })
                .collect(),
        )?;
    }
    if kept.is_empty() {
        return Ok(());
    }
    Err(Failure::refused(format!(
        "{}: the server kept other offsets than asked (an older seglog keeps the highest offset \
         a group committed). To read again from earlier, consume with `--offset N` or \
         `--from-beginning` (with or without --group), or use a new group name",
        kept.join("; ")
    ))
    .into())
}
