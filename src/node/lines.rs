//! Lines in and out: cutting the input stream into request lines, and
//! collecting reply lines until the event loop writes them.
//!
//! The event loop does its own reading and writing (see `mod.rs`): a pipe
//! costs its wake-ups more than its bytes, so one read hands over every
//! whole line it got, and everything the loop wrote while serving them goes
//! out in one write. Input lines longer than [`LINE_BYTES_MAX`] are skipped
//! without being held in memory. Output is bounded by [`OUTPUT_BYTES_MAX`]:
//! when the reader of our output stalls, further lines are dropped, which
//! the protocol tolerates (a dropped reply is a timeout, indefinite, for the
//! client; a dropped node-to-node message is what a partition does anyway).

use std::sync::{Arc, Mutex};

use crate::log;

/// Longest input line read. A send of the largest message
/// ([`crate::storage::format::MESSAGE_BYTES_MAX`]) with JSON escaping fits with
/// room to spare, and so does the largest `replicate` (1 MiB of records).
pub const LINE_BYTES_MAX: usize = 4 << 20;

/// Bytes asked for by one read of the input: many request lines at once
/// when a client pipelines, and a small fixed buffer.
pub const READ_BYTES: usize = 256 * 1024;

/// Output bytes not yet handed to the writer. Maelstrom reads our output as
/// fast as we write it; the bound only matters when it stops reading, and
/// 64 MiB is minutes of replies at any rate seen.
pub const OUTPUT_BYTES_MAX: usize = 64 << 20;

/// What the input holds, line by line.
#[derive(Debug, PartialEq)]
pub enum Input {
    Line(Vec<u8>),
    /// A line over [`LINE_BYTES_MAX`], skipped; `bytes` is its length.
    TooLong {
        bytes: usize,
    },
}

/// Cuts a byte stream into lines, skipping blank ones and dropping the
/// bytes of over-long ones as they come.
#[derive(Default)]
pub struct Splitter {
    /// The line so far (empty while skipping an over-long one).
    partial: Vec<u8>,
    /// Bytes of the line so far, including dropped ones.
    length: usize,
}

impl Splitter {
    /// Consumes `chunk`, appending every line it completes to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Input>) {
        while !chunk.is_empty() {
            let (part, rest, ends) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            self.length += part.len();
            if self.length <= LINE_BYTES_MAX {
                self.partial.extend_from_slice(part);
            } else {
                self.partial = Vec::new();
            }
            if ends {
                self.finish(out);
            }
            chunk = rest;
        }
    }

    /// Ends the line in progress (at a newline or at the end of input).
    pub fn finish(&mut self, out: &mut Vec<Input>) {
        if self.length > LINE_BYTES_MAX {
            out.push(Input::TooLong { bytes: self.length });
        } else if !self.partial.iter().all(u8::is_ascii_whitespace) {
            out.push(Input::Line(std::mem::take(&mut self.partial)));
        }
        self.partial.clear();
        self.length = 0;
    }
}

/// Where the node puts lines to write; the event loop takes them all at
/// once with [`Outbox::take`] and writes them.
#[derive(Clone, Default)]
pub struct Outbox {
    pending: Arc<Mutex<Vec<u8>>>,
}

impl Outbox {
    /// Adds one line (newline included), dropping it when
    /// [`OUTPUT_BYTES_MAX`] bytes already wait.
    pub fn send(&self, line: Vec<u8>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() + line.len() > OUTPUT_BYTES_MAX {
            drop(pending);
            log::warn(format_args!(
                "{OUTPUT_BYTES_MAX} output bytes wait to be written: dropped a message"
            ));
            return;
        }
        if pending.is_empty() {
            *pending = line;
        } else {
            pending.extend_from_slice(&line);
        }
    }

    /// Everything written since the last take.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Input> {
        let mut splitter = Splitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, &mut out);
        }
        splitter.finish(&mut out);
        out
    }

    #[test]
    fn lines_split_across_chunks_and_blank_ones_are_skipped() {
        assert_eq!(
            split(&[b"ab", b"c\n\n  \nx", b"yz\n", b"last"]),
            vec![
                Input::Line(b"abc".to_vec()),
                Input::Line(b"xyz".to_vec()),
                Input::Line(b"last".to_vec())
            ]
        );
    }

    #[test]
    fn long_lines_are_skipped_and_the_next_is_read() {
        let long = vec![b'x'; LINE_BYTES_MAX + 1];
        let (a, b) = long.split_at(LINE_BYTES_MAX / 2);
        assert_eq!(
            split(&[a, b, b"\nok\n"]),
            vec![
                Input::TooLong {
                    bytes: LINE_BYTES_MAX + 1
                },
                Input::Line(b"ok".to_vec())
            ]
        );
    }

    #[test]
    fn output_is_taken_whole_and_bounded_while_nobody_takes_it() {
        let out = Outbox::default();
        out.send(b"one\n".to_vec());
        out.send(b"two\n".to_vec());
        assert_eq!(out.take(), b"one\ntwo\n");
        assert!(out.take().is_empty());
        let half = vec![b'x'; OUTPUT_BYTES_MAX / 2];
        out.send(half.clone());
        out.send(half.clone());
        out.send(b"dropped\n".to_vec());
        assert_eq!(out.take().len(), OUTPUT_BYTES_MAX);
        out.send(b"taken again\n".to_vec());
        assert_eq!(out.take(), b"taken again\n");
    }
}
