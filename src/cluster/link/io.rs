//! Reading and writing a peer link's frames on a socket, each step under
//! its timeout: a length field, a body (after the handshake, taken from
//! the receive budget as it arrives), a handshake's frame (its kind
//! checked before it is decoded), and a sealed frame written in chunks.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

use super::{
    DECODE_FACTOR, DELIVER_TIMEOUT, FRAME_READ_TIMEOUT, HELLO_TIMEOUT, RECEIVE_CHUNK_BYTES,
    WRITE_CHUNK_BYTES, WRITE_TIMEOUT,
};
use crate::cluster::frame::{
    Frame, FrameError, LENGTH_BYTES, decode_handshake, handshake_length, seal,
};
use crate::cluster::handshake::Session;

/// Why reading a frame failed.
pub(super) enum ReadError {
    /// The connection closed between frames.
    Closed,
    /// Nothing came for this long.
    Timeout(Duration),
    Io(std::io::Error),
    Frame(FrameError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "the connection closed"),
            ReadError::Timeout(wait) => write!(f, "nothing came for {} ms", wait.as_millis()),
            ReadError::Io(e) => write!(f, "reading: {e}"),
            ReadError::Frame(e) => write!(f, "the peer sent {e}"),
        }
    }
}

/// Reads a frame's length field, waiting at most `idle` for it; the
/// caller checks the length against its limit.
pub(super) async fn read_length_field<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle: Duration,
) -> Result<[u8; LENGTH_BYTES], ReadError> {
    let mut field = [0u8; LENGTH_BYTES];
    match timeout(idle, reader.read_exact(&mut field)).await {
        Err(_) => return Err(ReadError::Timeout(idle)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ReadError::Closed);
        }
        Ok(Err(e)) => return Err(ReadError::Io(e)),
        Ok(Ok(_)) => {}
    }
    Ok(field)
}

/// Reads a frame's body of `length` bytes (at most [`crate::cluster::frame::FRAME_BYTES_MAX`],
/// checked by [`crate::cluster::frame::body_length`]), not yet decoded.
pub(super) async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    length: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = vec![0; length];
    match timeout(FRAME_READ_TIMEOUT, reader.read_exact(&mut body)).await {
        Err(_) => return Err(ReadError::Timeout(FRAME_READ_TIMEOUT)),
        Ok(Err(e)) => return Err(ReadError::Io(e)),
        Ok(Ok(_)) => {}
    }
    Ok(body)
}

/// Why a frame's body was not read whole.
pub(super) enum BodyError {
    /// The node dropped its links (the budget is closed).
    Stopping,
    /// No room in [`super::INCOMING_BYTES_MAX`] for the next chunk within
    /// [`DELIVER_TIMEOUT`], `had` bytes of the body read.
    NoRoom {
        had: usize,
    },
    Read(ReadError),
}

/// Reads a frame's body of `length` bytes (checked by [`crate::cluster::frame::body_length`]) in
/// chunks of [`RECEIVE_CHUNK_BYTES`], taking each chunk's share of
/// `budget` ([`DECODE_FACTOR`] per byte) before reading it: the body and
/// its share. The whole body within [`FRAME_READ_TIMEOUT`]; each wait for
/// room within [`DELIVER_TIMEOUT`].
pub(super) async fn read_budgeted_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    length: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), BodyError> {
    let deadline = tokio::time::Instant::now() + FRAME_READ_TIMEOUT;
    let mut body = Vec::new();
    // An empty share, which each chunk's joins.
    let mut held = Arc::clone(budget)
        .acquire_many_owned(0)
        .await
        .map_err(|_| BodyError::Stopping)?;
    while body.len() < length {
        let had = body.len();
        let chunk = (length - had).min(RECEIVE_CHUNK_BYTES);
        // At most RECEIVE_CHUNK_BYTES * DECODE_FACTOR: it fits.
        let share = u32::try_from(chunk * DECODE_FACTOR).unwrap_or(u32::MAX);
        let permit = match timeout(
            DELIVER_TIMEOUT,
            Arc::clone(budget).acquire_many_owned(share),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(BodyError::Stopping),
            Err(_) => return Err(BodyError::NoRoom { had }),
        };
        held.merge(permit);
        // Grown as it fills: never more memory than the bytes read (at
        // most doubled by the vector's growth) and their share covers.
        body.resize(had + chunk, 0);
        let unread = body.get_mut(had..).unwrap_or_default();
        match tokio::time::timeout_at(deadline, reader.read_exact(unread)).await {
            Err(_) => return Err(BodyError::Read(ReadError::Timeout(FRAME_READ_TIMEOUT))),
            Ok(Err(e)) => return Err(BodyError::Read(ReadError::Io(e))),
            Ok(Ok(_)) => {}
        }
    }
    Ok((body, held))
}

/// Reads one frame of the handshake (a hello, a proof or a refusal): its
/// body as sent, for the transcript, and the frame decoded; nothing over
/// [`crate::cluster::frame::HANDSHAKE_BYTES_MAX`] is allocated, and a frame of
/// another kind is refused by its kind byte, unparsed. The caller bounds
/// the whole handshake by [`HELLO_TIMEOUT`].
pub(super) async fn read_handshake_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<(Vec<u8>, Frame), ReadError> {
    let field = read_length_field(reader, HELLO_TIMEOUT).await?;
    let length = handshake_length(field).map_err(ReadError::Frame)?;
    let body = read_body(reader, length).await?;
    let frame = decode_handshake(&body).map_err(ReadError::Frame)?;
    Ok((body, frame))
}

/// Seals an encoded frame with the session's next tag.
pub(super) fn seal_next(session: &mut Session, frame: &mut Vec<u8>) {
    let tag = session.seal(frame.get(LENGTH_BYTES..).unwrap_or_default());
    seal(frame, &tag);
}

/// Writes one encoded frame, in chunks of [`WRITE_CHUNK_BYTES`] each
/// within [`WRITE_TIMEOUT`].
pub(super) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), String> {
    for chunk in frame.chunks(WRITE_CHUNK_BYTES) {
        match timeout(WRITE_TIMEOUT, writer.write_all(chunk)).await {
            Err(_) => {
                return Err(format!(
                    "the peer read nothing for {} ms",
                    WRITE_TIMEOUT.as_millis()
                ));
            }
            Ok(Err(e)) => return Err(format!("writing: {e}")),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}
