//! `seglog consume TOPIC`: prints a topic's records, from the log start,
//! a group's committed offsets, an offset or a time, up to the end each
//! partition had when the command started, or (`--follow`) on as they
//! come. With `--group` it commits each printed batch's next offset, so
//! the next run with that group goes on after it.
//!
//! `--follow` waits for new records with long polls: a fetch at a
//! partition's end waits on the server until a record comes. One request
//! waits on one partition, so each followed partition has a thread and a
//! connection of its own (up to [`FOLLOW_THREADS_MAX`]), and the main
//! thread prints (and commits) what they fetch, in each partition's order.

use std::collections::BTreeMap;
use std::sync::mpsc;

use serde_json::Value;

use super::client::{Client, TopicInfo, is_not_found};
use super::output::{Out, count, plural};
use super::{Done, Failure, Outcome, when};

/// Records one fetch asks for: the server's default, a batch that is
/// cheap to print and commit.
const FETCH_RECORDS: u64 = 500;

/// How long a fetch of a followed partition waits at its end for new
/// records (the server allows 30 s): a long poll answers as soon as a
/// record is durable, so this only bounds how often an idle follow asks.
const FOLLOW_WAIT_MS: u64 = 10_000;

/// Threads (each with a connection, and a waiting fetch on the server)
/// that follow partitions: one per partition up to this, which covers a
/// topic of the server's default 100 partitions; past it, a thread takes
/// several partitions in turn, each fetch waiting `FOLLOW_WAIT_SHARED_MS`.
pub const FOLLOW_THREADS_MAX: usize = 128;

/// How long a fetch waits at a partition's end when its thread follows
/// other partitions too: a record in one of them waits for at most this
/// per partition before it of the thread's.
const FOLLOW_WAIT_SHARED_MS: u64 = 100;

/// Fetched batches waiting to be printed, per following thread: bounds
/// the memory a slow stdout lets the fetches take.
const FOLLOW_BATCHES_AHEAD: usize = 2;

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
            (None, None) => match committed.get(&p) {
                // A group may have committed past the end (commits are
                // the client's word); it reads on from the end then.
                Some(&offset) if offset > state.end_offset => {
                    eprintln!(
                        "seglog consume: group {}'s offset {offset} in partition {p} is past \
                         its end, {}; reading from the end",
                        args.group.as_deref().unwrap_or_default(),
                        state.end_offset
                    );
                    state.end_offset
                }
                Some(&offset) => offset,
                None => state.log_start_offset,
            },
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
            .filter_map(|p| Some((p.partition, p.offset?)))
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
    if args.follow {
        return follow(client, out, args, topic, cursors);
    }
    let total: u64 = cursors
        .iter()
        .filter_map(|c| c.end.map(|end| end.saturating_sub(c.next)))
        .sum();
    let mut printer = Printer::new(out, args, topic);
    let status = |printed: u64| format!("read {} of {}", count(printed), plural(total, "record"));
    for cursor in cursors.iter_mut() {
        while let Some(end) = cursor.end.filter(|&end| cursor.next < end) {
            let want = printer.wanted();
            let query = format!("offset={}&max_records={want}", cursor.next);
            let records = client.fetch(topic, cursor.partition, &query)?;
            if records.is_empty() {
                // Nothing below the end it had (retention deleted it
                // meanwhile): this partition is done.
                cursor.next = end;
                break;
            }
            let before = records
                .iter()
                .take_while(|r| r["offset"].as_u64().is_some_and(|offset| offset < end));
            let printed = printer.print(client, cursor.partition, before)?;
            cursor.next = printed.unwrap_or(end);
            if printer.done() {
                break;
            }
            let printed = printer.printed;
            printer.progress.update(|| status(printed));
        }
        if printer.done() {
            break;
        }
    }
    let printed = printer.printed;
    printer.progress.finish(|| status(printed));
    Ok(())
}

/// `--follow`: threads fetch each partition with long polls and send what
/// they fetch here, where it is printed until interrupted (or `-n`).
fn follow(
    client: &Client,
    out: &Out,
    args: &ConsumeArgs,
    topic: &str,
    cursors: &[Cursor],
) -> Outcome {
    let threads = cursors.len().clamp(1, FOLLOW_THREADS_MAX);
    let (tx, rx) = mpsc::sync_channel(threads * FOLLOW_BATCHES_AHEAD);
    for t in 0..threads {
        let mine: Vec<(u32, u64)> = cursors
            .iter()
            .skip(t)
            .step_by(threads)
            .map(|c| (c.partition, c.next))
            .collect();
        let (client, topic, tx) = (client.clone(), topic.to_string(), tx.clone());
        // Not joined: the command ends (and its threads with it) when the
        // printing below stops, however long a fetch still waits.
        std::thread::spawn(move || follow_partitions(&client, &topic, mine, &tx));
    }
    drop(tx);
    let mut printer = Printer::new(out, args, topic);
    for fetched in rx {
        let (partition, records) = fetched?;
        printer.print(client, partition, records.iter())?;
        if printer.done() {
            return Ok(());
        }
        let printed = printer.printed;
        printer
            .progress
            .update(|| format!("read {}", plural(printed, "record")));
    }
    Err(Failure::Unreachable {
        message: "every partition's follower stopped".into(),
        maybe_applied: false,
    }
    .into())
}

/// One following thread: fetches its partitions from their offsets, in
/// turn, each with a long poll, and sends every non-empty batch on, until
/// a fetch fails (the failure is sent) or the receiver is gone.
fn follow_partitions(
    client: &Client,
    topic: &str,
    mut partitions: Vec<(u32, u64)>,
    tx: &mpsc::SyncSender<Result<(u32, Vec<Value>), Failure>>,
) {
    let wait_ms = if partitions.len() == 1 {
        FOLLOW_WAIT_MS
    } else {
        FOLLOW_WAIT_SHARED_MS
    };
    loop {
        for (partition, next) in &mut partitions {
            let query = format!("offset={next}&max_records={FETCH_RECORDS}&wait_ms={wait_ms}");
            let records = match client.fetch(topic, *partition, &query) {
                Ok(records) => records,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let Some(last) = records.last().and_then(|r| r["offset"].as_u64()) else {
                continue;
            };
            *next = last + 1;
            if tx.send(Ok((*partition, records))).is_err() {
                return;
            }
        }
    }
}

/// Prints records and, with `--group`, commits after each batch.
struct Printer<'a> {
    out: &'a Out,
    args: &'a ConsumeArgs,
    topic: &'a str,
    printed: u64,
    progress: super::output::Progress,
}

impl<'a> Printer<'a> {
    fn new(out: &'a Out, args: &'a ConsumeArgs, topic: &'a str) -> Printer<'a> {
        Printer {
            out,
            args,
            topic,
            printed: 0,
            progress: out.progress(),
        }
    }

    /// Records the next fetch should ask for: a batch, or what `-n` leaves.
    fn wanted(&self) -> u64 {
        self.args
            .max
            .map_or(FETCH_RECORDS, |max| FETCH_RECORDS.min(max - self.printed))
    }

    /// Whether `-n` is reached.
    fn done(&self) -> bool {
        self.args.max.is_some_and(|max| self.printed >= max)
    }

    /// Prints records of one partition (up to `-n`), commits the offset
    /// after the last one for the group, and returns that offset (`None`
    /// when none was printed).
    fn print<'r>(
        &mut self,
        client: &Client,
        partition: u32,
        records: impl Iterator<Item = &'r Value>,
    ) -> Result<Option<u64>, Done> {
        let mut next = None;
        let mut stdout = std::io::stdout().lock();
        for record in records {
            if self.done() {
                break;
            }
            let Some(offset) = record["offset"].as_u64() else {
                return Err(Failure::Unreachable {
                    message: format!("a record without an offset: {record}"),
                    maybe_applied: false,
                }
                .into());
            };
            print_record(&mut stdout, self.out, record)?;
            next = Some(offset + 1);
            self.printed += 1;
        }
        std::io::Write::flush(&mut stdout)?;
        drop(stdout);
        if let (Some(group), Some(next)) = (&self.args.group, next) {
            client.commit(group, &[(self.topic.to_string(), partition, next)])?;
        }
        Ok(next)
    }
}

/// One record: `--output json` as the server serves it, one a line; for
/// people as `PARTITION@OFFSET key=KEY headers=K=V,... VALUE`, without
/// `key=` when it has none, without `headers=` when it has none.
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
                let name = shown(&h["key"], &Value::Null).unwrap_or_default();
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

/// A key, value or header for people, safe to print on a terminal: a
/// JSON string as its text, other JSON compact, bytes as their text when
/// UTF-8, else `base64(...)`; `None` when there is none. Text that holds
/// control characters (a terminal's escape sequences, a line break that
/// would forge a record's line) or characters that reorder a line is
/// shown as a quoted JSON string with them escaped instead.
fn shown(json: &Value, base64: &Value) -> Option<String> {
    if let Some(encoded) = base64.as_str() {
        return Some(
            match decode_base64(encoded).and_then(|b| String::from_utf8(b).ok()) {
                Some(text) => safe_text(text),
                None => format!("base64({encoded})"),
            },
        );
    }
    match json {
        Value::Null => None,
        Value::String(s) => Some(safe_text(s.clone())),
        // serde_json escapes control characters in strings already.
        other => Some(escape_hostile(&other.to_string())),
    }
}

/// Whether a character must not reach a terminal as it is: control
/// characters but tab, and the Unicode line separators and direction
/// overrides, which can make a line read as another.
fn hostile_char(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text as it is when it is safe to print, else as a quoted JSON string
/// with every hostile character escaped.
fn safe_text(text: String) -> String {
    if text.chars().any(hostile_char) {
        escape_hostile(&serde_json::to_string(&text).unwrap_or_default())
    } else {
        text
    }
}

/// JSON text with the hostile characters serde_json leaves as they are
/// written as `\uXXXX` escapes (which JSON strings take too).
fn escape_hostile(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if hostile_char(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
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
            Some("base64(//4AYmluYXJ5)".into())
        );
        // Text with control characters: quoted, escaped.
        assert_eq!(
            shown(&Value::Null, &Value::from("G1szMW1yZWQKMEAw")),
            Some(r#""\u001b[31mred\n0@0""#.into())
        );
        assert_eq!(
            shown(&serde_json::json!({"a": 1}), &Value::Null),
            Some("{\"a\":1}".into())
        );
        assert_eq!(shown(&Value::from("tea"), &Value::Null), Some("tea".into()));
        assert_eq!(shown(&Value::Null, &Value::Null), None);
    }

    #[test]
    fn json_strings_with_control_characters_are_escaped() {
        assert_eq!(
            shown(&Value::from("a\u{1b}]0;pwned\u{7}\nb"), &Value::Null),
            Some(r#""a\u001b]0;pwned\u0007\nb""#.into())
        );
        assert_eq!(
            shown(&Value::from("abc\u{202e}def"), &Value::Null),
            Some(r#""abc\u202edef""#.into())
        );
        assert_eq!(
            shown(&serde_json::json!({"k": "x\u{2028}\u{1b}"}), &Value::Null),
            Some(r#"{"k":"x\u2028\u001b"}"#.into())
        );
        assert_eq!(
            shown(&Value::from("tab\tok"), &Value::Null),
            Some("tab\tok".into())
        );
    }
}
