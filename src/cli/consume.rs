//! `seglog consume TOPIC`: prints a topic's records, from the log start,
//! a group's committed offsets, an offset or a time, up to the end each
//! partition had when the command started, or (`--follow`) on as they
//! come. With `--group` it commits each printed batch's next offset, so
//! the next run with that group goes on after it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::client::{Client, TopicInfo, is_not_found};
use super::output::{Out, count};
use super::{Done, Failure, Outcome, when};

/// Records one fetch asks for: the server's default, a batch that is
/// cheap to print and commit.
const FETCH_RECORDS: u64 = 500;

/// How long a fetch of one followed partition waits at its end for new
/// records (the server allows 30 s): a long poll answers at once when a
/// record arrives, so this only bounds how often an idle follow asks.
const FOLLOW_WAIT_MS: u64 = 10_000;

/// Pause after a round over several followed partitions found nothing
/// (one request cannot wait on several partitions): new records show up
/// within this.
const FOLLOW_IDLE: Duration = Duration::from_millis(250);

/// Options of `seglog consume`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Only this partition (repeat for more; default: every partition).
    #[arg(short, long)]
    pub partition: Vec<u32>,
    /// Consume as this group: start at its committed offsets (the log start
    /// where it has none) and commit what was printed.
    #[arg(short, long)]
    pub group: Option<String>,
    /// Start at the log start, whatever the group committed.
    #[arg(long, conflicts_with_all = ["offset", "time"])]
    pub from_beginning: bool,
    /// Start at this offset in each partition.
    #[arg(long, conflicts_with = "time")]
    pub offset: Option<u64>,
    /// Start at the first record at or after this time: milliseconds since
    /// the epoch, 2026-03-01T12:00:00Z, 2026-03-01, or a time ago (-15m).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub time: Option<String>,
    /// Keep printing new records as they come, until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(short = 'n', long, value_name = "N")]
    pub max: Option<u64>,
}

/// Where one partition's read stands.
struct Cursor {
    partition: u32,
    next: u64,
    /// Where the read stops without `--follow`: the end when it started.
    end: Option<u64>,
}

pub fn run(client: &Client, out: &Out, args: &ConsumeArgs) -> Outcome {
    let since = when::parse_option(args.time.as_deref())?;
    if args.max == Some(0) {
        return Err(Failure::Usage("--max is at least 1".into()).into());
    }
    let topic = client.topic(&args.topic)?;
    let partitions = chosen_partitions(&topic, &args.partition)?;
    let committed = match &args.group {
        Some(group) => committed_offsets(client, group, &topic.name)?,
        None => BTreeMap::new(),
    };
    let mut cursors = Vec::with_capacity(partitions.len());
    for p in partitions {
        let state = &topic.partitions[p as usize];
        let next = match (args.offset, since) {
            (Some(offset), _) if offset > state.end_offset => {
                return Err(Failure::Usage(format!(
                    "--offset {offset} is past the end of partition {p} of {}, which is {}; \
                     `seglog topic describe {}` shows where each partition ends",
                    topic.name, state.end_offset, topic.name
                ))
                .into());
            }
            (Some(offset), _) => offset,
            (None, Some(ms)) => client.offset_at(&topic.name, p, ms, state.end_offset)?,
            (None, None) if args.from_beginning => state.log_start_offset,
            (None, None) => committed.get(&p).copied().unwrap_or(state.log_start_offset),
        };
        cursors.push(Cursor {
            partition: p,
            next,
            end: (!args.follow).then_some(state.end_offset),
        });
    }
    consume(client, out, args, &topic.name, &mut cursors)
}

/// The partitions to read: those named, checked, or all.
fn chosen_partitions(topic: &TopicInfo, named: &[u32]) -> Result<Vec<u32>, Failure> {
    topic.check_partitions(named)?;
    if named.is_empty() {
        return Ok((0..topic.partitions.len() as u32).collect());
    }
    let mut chosen = named.to_vec();
    chosen.sort_unstable();
    chosen.dedup();
    Ok(chosen)
}

/// A group's committed offsets in one topic, by partition; none for a
/// group that has committed nothing yet.
fn committed_offsets(
    client: &Client,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<u32, u64>, Failure> {
    match client.group(group) {
        Ok(info) => Ok(info
            .partitions
            .into_iter()
            .filter(|p| p.topic == topic)
            .map(|p| (p.partition, p.offset))
            .collect()),
        Err(e) if is_not_found(&e) => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

fn consume(
    client: &Client,
    out: &Out,
    args: &ConsumeArgs,
    topic: &str,
    cursors: &mut [Cursor],
) -> Outcome {
    let total: u64 = cursors
        .iter()
        .filter_map(|c| c.end.map(|end| end.saturating_sub(c.next)))
        .sum();
    let mut printed: u64 = 0;
    let mut progress = out.progress();
    let single = cursors.len() == 1;
    loop {
        let mut any = false;
        let mut open = false;
        for cursor in cursors.iter_mut() {
            if cursor.end.is_some_and(|end| cursor.next >= end) {
                continue;
            }
            open = true;
            let mut want = FETCH_RECORDS;
            if let Some(max) = args.max {
                want = want.min(max - printed);
            }
            let mut query = format!("offset={}&max_records={want}", cursor.next);
            if args.follow && single {
                query.push_str(&format!("&wait_ms={FOLLOW_WAIT_MS}"));
            }
            let records = client.fetch(topic, cursor.partition, &query)?;
            let mut stdout = std::io::stdout().lock();
            for record in &records {
                let Some(offset) = record["offset"].as_u64() else {
                    return Err(Failure::Unreachable(format!(
                        "a record without an offset: {record}"
                    ))
                    .into());
                };
                if cursor.end.is_some_and(|end| offset >= end) {
                    break;
                }
                print_record(&mut stdout, out, record)?;
                cursor.next = offset + 1;
                printed += 1;
                any = true;
            }
            std::io::Write::flush(&mut stdout)?;
            drop(stdout);
            if records.is_empty()
                && let Some(end) = cursor.end
            {
                // Nothing below the end it had (retention deleted it
                // meanwhile): this partition is done.
                cursor.next = end;
            }
            if let (Some(group), Some(_)) = (&args.group, records.first()) {
                client.commit(group, &[(topic.to_string(), cursor.partition, cursor.next)])?;
            }
            if args.max.is_some_and(|max| printed >= max) {
                return Ok(());
            }
            progress.update(|| {
                if args.follow {
                    format!("read {} records", count(printed))
                } else {
                    format!("read {} of {} records", count(printed), count(total))
                }
            });
        }
        if !open {
            return Ok(());
        }
        if !any && args.follow && !single {
            std::thread::sleep(FOLLOW_IDLE);
        }
    }
}

/// One record: `--output json` as the server serves it, one a line; for
/// people as `PARTITION@OFFSET key=KEY headers=K=V,... VALUE`.
fn print_record(stdout: &mut impl std::io::Write, out: &Out, record: &Value) -> Result<(), Done> {
    if out.json() {
        serde_json::to_writer(&mut *stdout, record).map_err(std::io::Error::from)?;
        writeln!(stdout)?;
        return Ok(());
    }
    let mut line = format!("{}@{}", record["partition"], record["offset"]);
    if let Some(key) = shown(&record["key"], &record["key_base64"]) {
        line.push_str(" key=");
        line.push_str(&key);
    }
    if let Some(headers) = record["headers"].as_array().filter(|h| !h.is_empty()) {
        let shown: Vec<String> = headers
            .iter()
            .map(|h| {
                let name = h["key"].as_str().unwrap_or_default();
                let value = shown(&Value::Null, &h["value_base64"]).unwrap_or_default();
                format!("{name}={value}")
            })
            .collect();
        line.push_str(" headers=");
        line.push_str(&shown.join(","));
    }
    line.push(' ');
    line.push_str(
        &shown(&record["value"], &record["value_base64"]).unwrap_or_else(|| "null".into()),
    );
    writeln!(stdout, "{line}")?;
    Ok(())
}

/// A key or value for people: a JSON string as its text, other JSON
/// compact, bytes as their text when UTF-8, else `base64:...`; `None`
/// when there is none.
fn shown(json: &Value, base64: &Value) -> Option<String> {
    if let Some(encoded) = base64.as_str() {
        return Some(
            match decode_base64(encoded).and_then(|b| String::from_utf8(b).ok()) {
                Some(text) if !text.chars().any(|c| c.is_control() && c != '\t') => text,
                _ => format!("base64:{encoded}"),
            },
        );
    }
    match json {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Standard base64 (with padding) as bytes; `None` if it is not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= digit(c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("a2NhdA=="), Some(b"kcat".to_vec()));
        assert_eq!(
            decode_base64("//4AYmluYXJ5"),
            Some(b"\xff\xfe\0binary".to_vec())
        );
        assert_eq!(decode_base64("YQ"), Some(b"a".to_vec()));
        assert_eq!(decode_base64("Y"), None);
        assert_eq!(decode_base64("a!=="), None);
    }

    #[test]
    fn bytes_show_as_text_when_they_are_text() {
        assert_eq!(
            shown(&Value::Null, &Value::from("a2NhdA==")),
            Some("kcat".into())
        );
        assert_eq!(
            shown(&Value::Null, &Value::from("//4AYmluYXJ5")),
            Some("base64://4AYmluYXJ5".into())
        );
        assert_eq!(
            shown(&serde_json::json!({"a": 1}), &Value::Null),
            Some("{\"a\":1}".into())
        );
        assert_eq!(shown(&Value::from("tea"), &Value::Null), Some("tea".into()));
        assert_eq!(shown(&Value::Null, &Value::Null), None);
    }
}
