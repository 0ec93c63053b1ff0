//! `seglog produce TOPIC`: lines of stdin as records, sent in batches, one
//! batch at a time so that records keep their order, each acknowledged
//! once durable. Prints how many records each partition took and at which
//! offsets.
//!
//! A bad line stops the command before it: every record of an earlier
//! line was produced, none of a later one. That holds for the lines the
//! server refuses too (a record over its size limit): the server checks a
//! request whole and refuses it whole, so a refused batch is sent again in
//! ever shorter prefixes until the one line it refuses is found, and every
//! line before it is produced. Only a reply that never came (a timeout, a
//! reset connection, a storage error that may have written) leaves a batch
//! unknown, and the failure says which lines those are.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{Client, code, is_overloaded, segment};
use super::output::{Out, count, plural};
use super::{Done, Failure, Outcome};
use crate::table::Align;

/// Records sent in one request at most: large enough that a request's
/// round trip and sync point are shared by many records, small enough
/// that an error loses little work and the progress line moves.
const BATCH_RECORDS_MAX: usize = 1000;

/// Bytes of JSON in one request at most (a record larger than this goes
/// alone): well under the server's default `--max-request-bytes` (16 MiB).
const BATCH_BYTES_MAX: usize = 1 << 20;

/// Longest line read: the server's default request limit, since a longer
/// record could not be sent in any request.
const LINE_BYTES_MAX: u64 = 16 << 20;

/// Times a batch is sent again after the server said it was too busy
/// (nothing of it was applied then), waiting twice as long each time from
/// [`OVERLOADED_WAIT_FIRST`]: about 50 s in all before giving up.
const OVERLOADED_RETRIES: u32 = 10;
const OVERLOADED_WAIT_FIRST: Duration = Duration::from_millis(50);

/// Options of `seglog produce`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Send every record to this partition (else by key, or rotating).
    #[arg(short, long)]
    pub partition: Option<u32>,
    /// How a line is read: `value` (the line is the value: JSON if it
    /// parses, else a string), `keyed` (KEY:VALUE, the key a string), or
    /// `record` (a JSON object as the HTTP API takes: key, value,
    /// partition, timestamp).
    #[arg(short, long, value_enum, default_value_t = LineFormat::Value)]
    pub format: LineFormat,
    /// What separates the key from the value with `--format keyed`.
    #[arg(short, long, default_value = ":")]
    pub separator: String,
}

/// How `seglog produce` reads a line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Value,
    Keyed,
    Record,
}

/// What each partition took.
#[derive(Clone, Copy, Debug)]
struct Took {
    records: u64,
    first: u64,
    last: u64,
}

/// What was produced so far.
#[derive(Default)]
struct Tally {
    records: u64,
    batches: u64,
    /// Empty lines, which are no records.
    skipped: u64,
    partitions: BTreeMap<u32, Took>,
}

/// A batch waiting to be sent, and the line each record came from.
#[derive(Default)]
struct Batch {
    records: Vec<Value>,
    lines: Vec<u64>,
    bytes: usize,
}

impl Batch {
    fn clear(&mut self) {
        self.records.clear();
        self.lines.clear();
        self.bytes = 0;
    }
}

pub fn run(client: &Client, out: &Out, args: &ProduceArgs) -> Outcome {
    if args.format == LineFormat::Keyed && args.separator.is_empty() {
        return Err(Failure::Usage("--separator must not be empty".into()).into());
    }
    // Checked before reading: a wrong name fails at once, not after stdin.
    let topic = client.topic(&args.topic)?;
    if let Some(p) = args.partition {
        topic.check_partitions(&[p])?;
    }
    let partitions = topic.partitions.len() as u64;
    let mut tally = Tally::default();
    let result = produce_lines(client, out, args, partitions, &mut tally);
    // What was acknowledged is printed even when a later batch failed; a
    // failure to print it (stdout closed) does not hide the failure.
    let printed = print(out, &args.topic, &tally);
    result.and(printed)
}

fn produce_lines(
    client: &Client,
    out: &Out,
    args: &ProduceArgs,
    partitions: u64,
    tally: &mut Tally,
) -> Outcome {
    let stdin = std::io::stdin().lock();
    let mut reader = std::io::BufReader::new(stdin);
    let mut progress = out.progress();
    let status = |tally: &Tally, number: u64, seconds: f64| {
        format!(
            "produced {} ({}/s), line {}",
            plural(tally.records, "record"),
            count((tally.records as f64 / seconds.max(0.001)) as u64),
            count(number)
        )
    };
    let mut batch = Batch::default();
    let mut line = Vec::new();
    let mut number: u64 = 0;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(LINE_BYTES_MAX + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
        if read == 0 {
            break;
        }
        number += 1;
        let record = match line_text(&line, number) {
            Ok(text) if text.trim().is_empty() => {
                tally.skipped += 1;
                continue;
            }
            Ok(text) => record_of(text, args, partitions, number),
            Err(e) => Err(e),
        };
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                // Every line before the bad one is produced, none after.
                send(client, &args.topic, &mut batch, tally)?;
                return Err(e.noted(&nothing_from(number, tally)).into());
            }
        };
        let size = record.to_string().len() + 1;
        if !batch.records.is_empty()
            && (batch.records.len() >= BATCH_RECORDS_MAX || batch.bytes + size > BATCH_BYTES_MAX)
        {
            send(client, &args.topic, &mut batch, tally)?;
        }
        batch.records.push(record);
        batch.lines.push(number);
        batch.bytes += size;
        let seconds = progress.seconds();
        progress.update(|| status(tally, number, seconds));
    }
    send(client, &args.topic, &mut batch, tally)?;
    let seconds = progress.seconds();
    progress.finish(|| status(tally, number, seconds));
    Ok(())
}

/// A line without its line ending, as UTF-8.
fn line_text(line: &[u8], number: u64) -> Result<&str, Failure> {
    if line.len() as u64 > LINE_BYTES_MAX {
        return Err(Failure::Usage(format!(
            "line {number} is longer than {LINE_BYTES_MAX} bytes, more than any request may hold"
        )));
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line).map_err(|e| {
        Failure::Usage(format!(
            "line {number} is not UTF-8 text ({e}); records are JSON, so binary bytes need \
             encoding first (for example base64)"
        ))
    })
}

/// JSON text as itself; anything else as a JSON string.
fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The record a line stands for; `partitions` is the topic's count.
fn record_of(
    text: &str,
    args: &ProduceArgs,
    partitions: u64,
    number: u64,
) -> Result<Value, Failure> {
    let mut record = match args.format {
        LineFormat::Value => json!({ "value": value_of(text) }),
        LineFormat::Keyed => {
            let Some((key, value)) = text.split_once(args.separator.as_str()) else {
                return Err(Failure::Usage(format!(
                    "line {number} has no {:?} between a key and a value (--format keyed)",
                    args.separator
                )));
            };
            json!({ "key": key, "value": value_of(value) })
        }
        LineFormat::Record => {
            let record: Value = serde_json::from_str(text).map_err(|e| {
                Failure::Usage(format!(
                    "line {number} is not JSON ({e}); --format record takes one object a line"
                ))
            })?;
            check_record(&record, args.partition, partitions, number)?;
            record
        }
    };
    if let Some(p) = args.partition
        && record.get("partition").is_none()
    {
        record["partition"] = json!(p);
    }
    Ok(record)
}

/// Checks a `--format record` line as the server would, so that a bad one
/// stops the command as a bad line (exit 2) with its number: the fields
/// the API takes, a partition of the topic, a timestamp of milliseconds
/// since the epoch. (Its size is the server's to judge: see [`send`].)
fn check_record(
    record: &Value,
    partition: Option<u32>,
    partitions: u64,
    number: u64,
) -> Result<(), Failure> {
    let bad = |why: String| {
        Err(Failure::Usage(format!(
            "line {number} is not a record the server takes: {why} (--format record takes \
             objects with a \"value\" and optionally \"key\", \"partition\", \"timestamp\")"
        )))
    };
    let Some(fields) = record.as_object() else {
        return bad("it is not a JSON object".into());
    };
    if !fields.contains_key("value") {
        return bad("it has no \"value\"".into());
    }
    for (name, value) in fields {
        match name.as_str() {
            "key" | "value" => {}
            "partition" => match value.as_u64() {
                Some(p)
                    if p < partitions && partition.is_none_or(|given| u64::from(given) == p) => {}
                Some(p) if p < partitions => {
                    return bad(format!("it names partition {p}, not --partition's"));
                }
                _ => {
                    return bad(format!(
                        "\"partition\": {value} is not one of the topic's, 0 to {}",
                        partitions.saturating_sub(1)
                    ));
                }
            },
            "timestamp" if value.is_u64() => {}
            "timestamp" => {
                return bad(format!(
                    "\"timestamp\": {value} is not a count of milliseconds since the epoch"
                ));
            }
            other => return bad(format!("the field {other:?} is unknown")),
        }
    }
    Ok(())
}

/// What a failure at line `number` adds: nothing from it on was produced.
fn nothing_from(number: u64, tally: &Tally) -> String {
    format!(
        "; nothing from line {number} on was produced ({} before it {})",
        plural(tally.records, "record"),
        if tally.records == 1 { "was" } else { "were" }
    )
}

/// Whether the server refused a request for one of its records (and so
/// refused it whole, before applying anything): a record too large, a
/// field it does not take, a partition it does not have; or the request
/// too large. A shorter batch may then go through.
fn refuses_a_record(failure: &Failure) -> bool {
    matches!(
        failure.code(),
        Some(
            code::MALFORMED
                | code::INVALID
                | code::PARTITION_NOT_FOUND
                | code::RECORD_TOO_LARGE
                | code::REQUEST_TOO_LARGE
        )
    )
}

/// Whether a failed request may still have been carried out.
fn maybe_applied(failure: &Failure) -> bool {
    match failure {
        Failure::Unreachable { maybe_applied, .. } => *maybe_applied,
        _ => failure.code() == Some(code::STORAGE),
    }
}

/// Sends a batch, in order, and counts what it took. When the server
/// refuses it for one of its records, sends it again in prefixes, halving
/// the one refused each time, until the first record it refuses is alone:
/// every record before that one is then produced, in order, and the
/// failure names its line. Sends a request again while the server says it
/// is too busy (nothing of it was applied then).
fn send(client: &Client, topic: &str, batch: &mut Batch, tally: &mut Tally) -> Result<(), Done> {
    let path = format!("/topics/{}", segment(topic));
    let mut start = 0;
    while start < batch.records.len() {
        let mut end = batch.records.len();
        loop {
            match post_with_retries(client, &path, &batch.records[start..end]) {
                Ok(placed) => {
                    tally.count(&placed);
                    start = end;
                    break;
                }
                Err(e) if refuses_a_record(&e) && end - start > 1 => {
                    end = start + (end - start) / 2;
                }
                Err(e) if refuses_a_record(&e) => {
                    let line = batch.lines[start];
                    let e = e.prefixed(&format!("line {line} was refused: "));
                    return Err(e.noted(&nothing_from(line, tally)).into());
                }
                Err(e) if maybe_applied(&e) => {
                    let (first, last) = (batch.lines[start], batch.lines[end - 1]);
                    let lines = if first == last {
                        format!("line {first}")
                    } else {
                        format!("lines {first} to {last}")
                    };
                    return Err(Failure::MaybeApplied(format!(
                        "{e}; {lines} may have been produced, in whole or in part (the server \
                         did not confirm them): check with `seglog consume {topic}` before \
                         sending them again. Acknowledged: {} before line {first}; nothing \
                         after line {last} was sent",
                        plural(tally.records, "record"),
                    ))
                    .into());
                }
                Err(e) => return Err(e.noted(&nothing_from(batch.lines[start], tally)).into()),
            }
        }
    }
    batch.clear();
    Ok(())
}

/// Where the server put one record.
#[derive(Deserialize)]
struct Placed {
    partition: u32,
    offset: u64,
}

/// One produce request of `records`, sent again while the server is too
/// busy.
fn post_with_retries(
    client: &Client,
    path: &str,
    records: &[Value],
) -> Result<Vec<Placed>, Failure> {
    #[derive(Deserialize)]
    struct Offsets {
        offsets: Vec<Placed>,
    }
    let body = json!({ "records": records }).to_string();
    let mut wait = OVERLOADED_WAIT_FIRST;
    let mut tries = 0;
    loop {
        match client.post::<Offsets>(path, body.as_bytes()) {
            Ok(reply) => return Ok(reply.offsets),
            Err(e) if is_overloaded(&e) && tries < OVERLOADED_RETRIES => {
                tries += 1;
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Tally {
    /// Counts the records of one acknowledged request.
    fn count(&mut self, placed: &[Placed]) {
        for at in placed {
            let took = self.partitions.entry(at.partition).or_insert(Took {
                records: 0,
                first: at.offset,
                last: at.offset,
            });
            took.records += 1;
            took.first = took.first.min(at.offset);
            took.last = took.last.max(at.offset);
        }
        self.records += placed.len() as u64;
        self.batches += 1;
    }
}

fn print(out: &Out, topic: &str, tally: &Tally) -> Outcome {
    if out.json() {
        return out.print_json(&json!({
            "topic": topic,
            "records": tally.records,
            "batches": tally.batches,
            "empty_lines": tally.skipped,
            "partitions": tally.partitions.iter().map(|(p, t)| json!({
                "partition": p, "records": t.records, "first_offset": t.first, "last_offset": t.last,
            })).collect::<Vec<_>>(),
        }));
    }
    let skipped = if tally.skipped > 0 {
        format!(" ({} skipped)", plural(tally.skipped, "empty line"))
    } else {
        String::new()
    };
    out.line(&format!(
        "produced {} to {topic} in {}{skipped}",
        plural(tally.records, "record"),
        plural(tally.batches, "batch")
    ))?;
    if tally.partitions.is_empty() {
        return Ok(());
    }
    out.print_table(
        &[
            ("PARTITION", Align::Right),
            ("RECORDS", Align::Right),
            ("OFFSETS", Align::Left),
        ],
        tally
            .partitions
            .iter()
            .map(|(p, t)| {
                vec![
                    p.to_string(),
                    count(t.records),
                    format!("{}-{}", count(t.first), count(t.last)),
                ]
            })
            .collect(),
    )
}
