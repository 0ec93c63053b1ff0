//! The node's two byte streams: request lines in, message lines out.
//!
//! Both run as tasks at the edge of the event loop so that the loop itself
//! never blocks on a pipe. Input lines longer than [`LINE_BYTES_MAX`] are
//! skipped without being held in memory. Output goes through a bounded queue:
//! when the reader of our output stalls past [`OUTPUT_LINES_MAX`] lines,
//! further lines are dropped, which the protocol tolerates (a dropped reply is
//! a timeout, indefinite, for the client; a dropped node-to-node message is
//! what a partition does anyway).

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::log;

/// Longest input line read. A send of the largest message
/// ([`crate::storage::format::MESSAGE_BYTES_MAX`]) with JSON escaping fits with
/// room to spare, and so does the largest `replicate` (1 MiB of records).
pub const LINE_BYTES_MAX: usize = 4 << 20;

/// Input lines read ahead of the event loop. Enough to keep the loop busy
/// while a line is parsed; reading stops (and the pipe fills) beyond it.
pub const INPUT_LINES_MAX: usize = 1024;

/// Output lines queued for the writer. Maelstrom reads our output as fast
/// as we write it; the bound only matters when it stops reading.
pub const OUTPUT_LINES_MAX: usize = 65_536;

/// What the reader hands the event loop.
#[derive(Debug, PartialEq)]
pub enum Input {
    Line(Vec<u8>),
    /// A line over [`LINE_BYTES_MAX`], skipped; `bytes` is its length.
    TooLong {
        bytes: usize,
    },
}

/// How reading one line ended.
#[derive(Debug, PartialEq)]
enum Read {
    Complete,
    TooLong { bytes: usize },
    End,
}

/// Reads one line (without its newline) into `line`, holding at most `max`
/// bytes: the rest of a longer line is read and dropped.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Read> {
    line.clear();
    let mut total = 0;
    loop {
        let chunk = match input.fill_buf().await {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if total == 0 {
                Read::End
            } else if total > max {
                Read::TooLong { bytes: total }
            } else {
                Read::Complete
            });
        }
        let (part, used) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        total += part.len();
        if total <= max {
            line.extend_from_slice(part);
        } else {
            line.clear();
        }
        let found_newline = used > part.len();
        input.consume(used);
        if found_newline {
            return Ok(if total > max {
                Read::TooLong { bytes: total }
            } else {
                Read::Complete
            });
        }
    }
}

/// Reads lines from `input` into `lines` until the input ends, fails, or the
/// event loop stops listening. Blank lines are skipped.
pub async fn read_lines<R: AsyncBufRead + Unpin>(mut input: R, lines: mpsc::Sender<Input>) {
    let mut line = Vec::new();
    loop {
        let item = match read_line(&mut input, &mut line, LINE_BYTES_MAX).await {
            Ok(Read::Complete) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Read::Complete) => Input::Line(std::mem::take(&mut line)),
            Ok(Read::TooLong { bytes }) => Input::TooLong { bytes },
            Ok(Read::End) => return,
            Err(e) => {
                log::warn(format_args!("reading input: {e}"));
                return;
            }
        };
        if lines.send(item).await.is_err() {
            return;
        }
    }
}

/// Where the event loop puts lines to write.
#[derive(Clone)]
pub struct Outbox {
    lines: mpsc::Sender<Vec<u8>>,
}

impl Outbox {
    /// A new outbox and the receiving end for [`write_lines`].
    pub fn new() -> (Outbox, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(OUTPUT_LINES_MAX);
        (Outbox { lines: tx }, rx)
    }

    /// Queues one line (newline included) for the writer.
    pub fn send(&self, line: Vec<u8>) {
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => log::warn(format_args!(
                "output queue full ({OUTPUT_LINES_MAX} lines): dropped a message"
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                log::warn(format_args!("output closed: dropped a message"));
            }
        }
    }
}

/// Writes queued lines to `output`, flushing whenever the queue runs dry,
/// until every [`Outbox`] is gone. Returns the first write error.
pub async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut lines: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    while let Some(line) = lines.recv().await {
        output.write_all(&line).await?;
        while let Ok(line) = lines.try_recv() {
            output.write_all(&line).await?;
        }
        output.flush().await?;
    }
    output.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_skipped_and_the_next_is_read() {
        let mut input = &b"0123456789\nabc\nxyz"[..];
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut input, &mut line, 5).await.expect("read"),
            Read::TooLong { bytes: 10 }
        );
        assert_eq!(
            read_line(&mut input, &mut line, 5).await.expect("read"),
            Read::Complete
        );
        assert_eq!(line, b"abc");
        assert_eq!(
            read_line(&mut input, &mut line, 5).await.expect("read"),
            Read::Complete
        );
        assert_eq!(line, b"xyz");
        assert_eq!(
            read_line(&mut input, &mut line, 5).await.expect("read"),
            Read::End
        );
    }

    #[tokio::test]
    async fn the_reader_skips_blank_lines_and_reports_long_ones() {
        let (tx, mut rx) = mpsc::channel(16);
        let input = format!("a\n\n  \n{}\nb", "x".repeat(LINE_BYTES_MAX + 1));
        read_lines(input.as_bytes(), tx).await;
        assert_eq!(rx.recv().await, Some(Input::Line(b"a".to_vec())));
        assert_eq!(
            rx.recv().await,
            Some(Input::TooLong {
                bytes: LINE_BYTES_MAX + 1
            })
        );
        assert_eq!(rx.recv().await, Some(Input::Line(b"b".to_vec())));
        assert_eq!(rx.recv().await, None);
    }
}
