//! `seglog produce TOPIC`: lines of stdin as records, sent in batches, one
//! batch at a time so that records keep their order, each acknowledged
//! once durable. Prints how many records each partition took and at which
//! offsets. A bad line stops the command before it: every record of an
//! earlier line was produced, none of a later one.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{Client, is_overloaded, segment};
use super::output::{Out, count};
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

/// A batch waiting to be sent, and the line its first record came from.
struct Batch {
    records: Vec<Value>,
    bytes: usize,
    first_line: u64,
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
    let mut tally = Tally::default();
    let result = produce_lines(client, out, args, &mut tally);
    // What was acknowledged is printed even when a later batch failed.
    print(out, &args.topic, &tally)?;
    result
}

fn produce_lines(client: &Client, out: &Out, args: &ProduceArgs, tally: &mut Tally) -> Outcome {
    let stdin = std::io::stdin().lock();
    let mut reader = std::io::BufReader::new(stdin);
    let mut progress = out.progress();
    let mut batch = Batch {
        records: Vec::new(),
        bytes: 0,
        first_line: 1,
    };
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
            Ok(text) => record_of(text, args, number),
            Err(e) => Err(e),
        };
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                // Every line before the bad one is produced, none after.
                if !batch.records.is_empty() {
                    send(client, &args.topic, &mut batch, tally)?;
                }
                return Err(stopped(e, number, tally).into());
            }
        };
        let size = record.to_string().len() + 1;
        if !batch.records.is_empty()
            && (batch.records.len() >= BATCH_RECORDS_MAX || batch.bytes + size > BATCH_BYTES_MAX)
        {
            send(client, &args.topic, &mut batch, tally)?;
            batch.first_line = number;
        }
        batch.records.push(record);
        batch.bytes += size;
        let seconds = progress.seconds().max(0.001);
        progress.update(|| {
            format!(
                "produced {} records ({}/s), line {}",
                count(tally.records),
                count((tally.records as f64 / seconds) as u64),
                count(number)
            )
        });
    }
    if !batch.records.is_empty() {
        send(client, &args.topic, &mut batch, tally)?;
    }
    progress.finish();
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

/// The record a line stands for.
fn record_of(text: &str, args: &ProduceArgs, number: u64) -> Result<Value, Failure> {
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
            if !record.as_object().is_some_and(|r| r.contains_key("value")) {
                return Err(Failure::Usage(format!(
                    "line {number} is not a record: --format record takes objects with a \
                     \"value\" (and optionally \"key\", \"partition\", \"timestamp\")"
                )));
            }
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

/// A failure at line `number`, saying what was produced before it.
fn stopped(failure: Failure, number: u64, tally: &Tally) -> Failure {
    let note = format!(
        "; nothing from line {number} on was produced ({} records before it were)",
        count(tally.records)
    );
    match failure {
        Failure::Refused(m) => Failure::Refused(m + &note),
        Failure::Usage(m) => Failure::Usage(m + &note),
        Failure::Unreachable(m) => Failure::Unreachable(m + &note),
    }
}

/// Sends a batch (again while the server is too busy) and counts what it
/// took.
fn send(client: &Client, topic: &str, batch: &mut Batch, tally: &mut Tally) -> Result<(), Done> {
    #[derive(Deserialize)]
    struct Offsets {
        offsets: Vec<Placed>,
    }
    #[derive(Deserialize)]
    struct Placed {
        partition: u32,
        offset: u64,
    }
    let body = json!({ "records": batch.records }).to_string();
    let path = format!("/topics/{}", segment(topic));
    let mut wait = OVERLOADED_WAIT_FIRST;
    let mut tries = 0;
    let reply: Offsets = loop {
        match client.post(&path, body.as_bytes()) {
            Ok(reply) => break reply,
            Err(e) if is_overloaded(&e) && tries < OVERLOADED_RETRIES => {
                tries += 1;
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => return Err(stopped(e, batch.first_line, tally).into()),
        }
    };
    for placed in &reply.offsets {
        let took = tally.partitions.entry(placed.partition).or_insert(Took {
            records: 0,
            first: placed.offset,
            last: placed.offset,
        });
        took.records += 1;
        took.first = took.first.min(placed.offset);
        took.last = took.last.max(placed.offset);
    }
    tally.records += reply.offsets.len() as u64;
    tally.batches += 1;
    batch.records.clear();
    batch.bytes = 0;
    Ok(())
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
        format!(" ({} empty lines skipped)", count(tally.skipped))
    } else {
        String::new()
    };
    out.line(&format!(
        "produced {} records to {topic} in {} batches{skipped}",
        count(tally.records),
        count(tally.batches)
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
                    format!("{}-{}", t.first, t.last),
                ]
            })
            .collect(),
    )
}
