//! What the client commands print: tables or JSON on stdout, and the
//! progress line of long work on stderr (on a terminal, or with
//! `--progress`), redrawn at most every `PROGRESS_EVERY` and cleared
//! when the work ends. Numbers, sizes and times are formatted for people
//! here, once.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Format, Outcome};
use crate::table::{Align, Table};

/// How often the progress line is redrawn: often enough to look alive,
/// rarely enough to cost nothing.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Work shorter than this shows no progress line: it would only flicker.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// Where and how a command prints.
pub struct Out {
    pub format: Format,
    /// Whether the progress line is drawn.
    progress: bool,
    /// Whether it was asked for (`--progress`): then its last state stays
    /// as a final line, however short the work.
    progress_asked: bool,
    /// Whether stderr is a terminal (the line is redrawn in place) or not
    /// (each update is a line of its own).
    terminal: bool,
}

impl Out {
    pub fn new(format: Format, forced_progress: bool) -> Out {
        let terminal = std::io::stderr().is_terminal();
        Out {
            format,
            progress: forced_progress || terminal,
            progress_asked: forced_progress,
            terminal,
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints `value` as one line of JSON.
    pub fn print_json<T: Serialize>(&self, value: &T) -> Outcome {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, value).map_err(std::io::Error::from)?;
        writeln!(stdout)?;
        Ok(())
    }

    /// Prints a table with these columns and rows.
    pub fn print_table(
        &self,
        columns: &[(&'static str, Align)],
        rows: Vec<Vec<String>>,
    ) -> Outcome {
        let mut table = Table::new(columns).unindented();
        for row in rows {
            table.push(row);
        }
        let mut stdout = std::io::stdout().lock();
        table.write(&mut stdout)?;
        Ok(())
    }

    /// Prints a line for people.
    pub fn line(&self, text: &str) -> Outcome {
        writeln!(std::io::stdout().lock(), "{text}")?;
        Ok(())
    }

    /// A progress line for work that starts now.
    pub fn progress(&self) -> Progress {
        Progress {
            enabled: self.progress,
            asked: self.progress_asked,
            terminal: self.terminal,
            started: Instant::now(),
            drawn: None,
        }
    }
}

/// The progress line of one piece of work.
pub struct Progress {
    enabled: bool,
    /// `--progress` was given: [`Progress::finish`] leaves a final line.
    asked: bool,
    terminal: bool,
    started: Instant,
    /// When the line was last drawn; `None` before the first time.
    drawn: Option<Instant>,
}

impl Progress {
    /// Redraws the line with what `text` says, if it is time to.
    pub fn update(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled || self.started.elapsed() < PROGRESS_AFTER {
            return;
        }
        if self.drawn.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(stderr, "\r\x1b[K{}", text())
        } else {
            writeln!(stderr, "{}", text())
        };
        let _ = stderr.flush();
        self.drawn = Some(Instant::now());
    }

    /// Seconds since the work started.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Ends the line: with `--progress`, `text` (the final state) stays
    /// as a line of its own; else a line drawn in place is cleared.
    pub fn finish(&mut self, text: impl FnOnce() -> String) {
        let mut stderr = std::io::stderr().lock();
        if self.asked {
            let clear = if self.terminal { "\r\x1b[K" } else { "" };
            let _ = writeln!(stderr, "{clear}{}", text());
        } else {
            self.clear();
        }
        self.drawn = None;
    }

    /// Clears a line drawn in place (the work ended early).
    fn clear(&mut self) {
        if self.terminal && self.drawn.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
        self.drawn = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// 1234567 as "1,234,567".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count and a noun, plural unless one: "1 batch", "2,000 records".
pub fn plural(n: u64, noun: &str) -> String {
    match (n, noun.as_bytes().last()) {
        (1, _) => format!("1 {noun}"),
        (_, Some(b's' | b'x' | b'h')) => format!("{} {noun}es", count(n)),
        _ => format!("{} {noun}s", count(n)),
    }
}

/// Bytes with a binary unit and one decimal, as the console shows them:
/// "512 B", "19.7 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in milliseconds for people: "7d", "12h", "90s", "250ms".
pub fn millis(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Milliseconds since the epoch as an RFC 3339 time in UTC.
pub fn time(ms: u64) -> String {
    super::when::format_utc(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(plural(1, "batch"), "1 batch");
        assert_eq!(plural(2, "batch"), "2 batches");
        assert_eq!(plural(0, "record"), "0 records");
        assert_eq!(plural(25_000, "record"), "25,000 records");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(20_173), "19.7 KiB");
        assert_eq!(millis(604_800_000), "7d");
        assert_eq!(millis(90_000), "90s");
        assert_eq!(millis(250), "250ms");
    }
}
