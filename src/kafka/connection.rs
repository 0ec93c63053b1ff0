//! One client connection: size-prefixed frames in, replies out in the
//! order of the requests, as Kafka promises.
//!
//! Requests are taken in order and each one's immediate part runs before
//! the next is read (so a producer's pipelined batches are appended in the
//! order sent); the part that waits (a sync point, a long poll, a
//! rebalance) runs in a task of its own, so that pipelined produce
//! requests share sync points. A writer task sends the replies in order.
//!
//! A frame over the size limit, a frame that does not decode, an unknown
//! API key or an unserved version (other than ApiVersions) close the
//! connection with a log line, as Kafka does; nothing of such a request
//! was applied. With `--users`, a connection authenticates first
//! (`sasl.rs`), and each request is held to its user's topic prefixes
//! (`authorize.rs`) before its handler sees it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::reply::Reply;
use super::sasl::{self, Session};
use super::{
    Context, admin, admin_groups, authorize, fetch, groups, offsets, produce, producers, refusals,
    topics, versions,
};
use crate::log;

/// Requests of one connection whose replies may wait at once: bounds the
/// memory one client can hold (librdkafka sends up to 5 produce requests
/// ahead by default, kafka-python 5).
pub const IN_FLIGHT_MAX: usize = 64;

/// Bytes of fetch replies one connection may hold at once: one fetch of
/// the largest size served ([`fetch::FETCH_BYTES_MAX`]). Each fetch
/// reserves what its reply may take before it reads, and the writer gives
/// it back once the reply is sent, so a client that pipelines fetches and
/// does not read holds one reply, not [`IN_FLIGHT_MAX`]. Clients send one
/// fetch per broker at a time (librdkafka, kafka-python), so they never
/// wait for it.
pub const REPLY_BYTES_MAX: usize = fetch::FETCH_BYTES_MAX;

/// Bytes reserved for a request before its bytes arrive: most requests
/// are smaller; a larger one grows its buffer as it comes.
const FRAME_RESERVE_BYTES_MAX: usize = 64 << 10;

/// Why a connection is closed.
type Close = String;

/// A request's task, and the part of the connection's reply budget its
/// reply holds until it is written.
type Pending = (
    tokio::task::JoinHandle<Result<Option<BytesMut>, ()>>,
    Option<OwnedSemaphorePermit>,
);

/// Serves one connection (its two halves: plain TCP or TLS) until the
/// client closes it or breaks the protocol.
pub async fn run<R, W>(mut reader: R, mut writer: W, peer: SocketAddr, ctx: Arc<Context>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Pending>(IN_FLIGHT_MAX);
    let reply_budget = Arc::new(Semaphore::new(REPLY_BYTES_MAX));
    let write_task = tokio::spawn(async move {
        // `_reserved` is given back to the budget once the reply is sent.
        while let Some((handle, _reserved)) = rx.recv().await {
            let frame = match handle.await {
                Ok(Ok(frame)) => frame,
                // Logged where it happened; the client must not wait for
                // a reply that will never come.
                Ok(Err(())) => break,
                Err(e) => {
                    log::warn(format_args!("kafka {peer}: a request's task failed: {e}"));
                    break;
                }
            };
            if let Some(frame) = frame
                && let Err(e) = writer.write_all(&frame).await
            {
                log::debug(format_args!("kafka {peer}: cannot send a reply: {e}"));
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut session = Session::new(&ctx);
    let authenticate_by = tokio::time::Instant::now() + sasl::AUTHENTICATE_WITHIN;
    loop {
        let frame = if session.pending() {
            let limit = ctx
                .broker
                .limits
                .request_bytes
                .min(sasl::UNAUTHENTICATED_REQUEST_BYTES_MAX);
            match tokio::time::timeout_at(authenticate_by, read_frame(&mut reader, limit)).await {
                Ok(read) => read,
                Err(_) => Err(format!(
                    "not authenticated within {} s",
                    sasl::AUTHENTICATE_WITHIN.as_secs()
                )),
            }
        } else {
            read_frame(&mut reader, ctx.broker.limits.request_bytes).await
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(reason) => {
                log::warn(format_args!(
                    "kafka {peer}: {reason}; closing the connection"
                ));
                break;
            }
        };
        if session.carrier() == Some(sasl::Carrier::Raw) {
            // After a SaslHandshake v0: the frame is a bare SASL token, and
            // so is the answer.
            let token = match session.raw_token(&ctx, frame).await {
                Ok(token) => token,
                Err(reason) => {
                    log::warn(format_args!(
                        "kafka {peer}: {reason}; closing the connection"
                    ));
                    // One try per connection and per delay, as after a
                    // refused SaslAuthenticate.
                    tokio::time::sleep(sasl::CLOSE_DELAY).await;
                    break;
                }
            };
            let mut out = BytesMut::with_capacity(4 + token.len());
            let size = u32::try_from(token.len()).expect("a SASL token is a few hundred bytes");
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&token);
            let task = tokio::spawn(async move { Ok(Some(out)) });
            if tx.send((task, None)).await.is_err() {
                break;
            }
            continue;
        }
        let ((api_key, version, correlation_id, reply, reply_bytes), close) =
            match handle(&ctx, &mut session, frame).await {
                Ok(handled) => handled,
                Err(reason) => {
                    log::warn(format_args!(
                        "kafka {peer}: {reason}; closing the connection"
                    ));
                    break;
                }
            };
        // Reserved in request order, before the request's work starts (a
        // fetch reads when its task first runs): a later request can never
        // hold what an earlier one waits for, and while the budget is
        // spent no further request is read.
        let reserved = if reply_bytes > 0 {
            let permits = u32::try_from(reply_bytes.min(REPLY_BYTES_MAX))
                .expect("REPLY_BYTES_MAX fits a u32");
            match Arc::clone(&reply_budget).acquire_many_owned(permits).await {
                Ok(permit) => Some(permit),
                Err(_) => break, // never closed
            }
        } else {
            None
        };
        let task = tokio::spawn(async move {
            let response = match reply {
                Reply::Now(response) => Some(*response),
                Reply::Later(future) => future.await,
                Reply::Nothing => None,
            };
            let Some(response) = response else {
                return Ok(None);
            };
            match encode(api_key, version, correlation_id, &response) {
                Ok(frame) => Ok(Some(frame)),
                Err(e) => {
                    // Our own reply does not encode: a bug, and the
                    // client is better told by a closed connection than
                    // by a hang.
                    log::warn(format_args!(
                        "kafka {peer}: cannot encode a {api_key:?} v{version} reply ({e}); \
                         closing the connection"
                    ));
                    Err(())
                }
            }
        });
        if tx.send((task, reserved)).await.is_err() {
            break;
        }
        if let Some(reason) = close {
            // The reply goes out first: the writer sends what it was given;
            // the close waits a moment more, as Kafka's does.
            log::warn(format_args!(
                "kafka {peer}: {reason}; closing the connection"
            ));
            tokio::time::sleep(sasl::CLOSE_DELAY).await;
            break;
        }
    }
    drop(tx);
    let _ = write_task.await;
}

/// Reads one frame: `None` when the client closed the connection between
/// frames; an error for an oversized frame or one cut short.
async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    limit: usize,
) -> Result<Option<Bytes>, Close> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("cannot read a request: {e}")),
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size).map_err(|_| format!("a request of size {size}"))?;
    if size > limit {
        return Err(format!(
            "a request of {size} bytes, over the limit of {limit} (--max-request-bytes)"
        ));
    }
    // The buffer grows with the bytes that arrive, so a size field alone
    // (or a slow sender) does not reserve the whole limit.
    let mut frame = Vec::with_capacity(size.min(FRAME_RESERVE_BYTES_MAX));
    let read = reader
        .take(size as u64)
        .read_to_end(&mut frame)
        .await
        .map_err(|e| format!("cannot read a {size}-byte request: {e}"))?;
    if read != size {
        return Err(format!(
            "the client left in the middle of a {size}-byte request, after {read} bytes"
        ));
    }
    Ok(Some(Bytes::from(frame)))
}

/// Bytes before a request's header fields that every version has: API key,
/// API version and correlation id.
const FIXED_HEADER_BYTES: usize = 8;

/// What [`handle`] gives back: the API key, version and correlation id of
/// the reply, the reply, and the bytes of the connection's reply budget
/// it must hold before its work starts (0: none; small replies hold none).
type Handled = (ApiKey, i16, i32, Reply, usize);

/// Decodes a request and runs its immediate part; the second value, when
/// set, closes the connection once the reply is sent (a failed SASL
/// authentication), and says why.
async fn handle(
    ctx: &Arc<Context>,
    session: &mut Session,
    mut frame: Bytes,
) -> Result<(Handled, Option<Close>), Close> {
    let fixed = frame.get(..FIXED_HEADER_BYTES).ok_or_else(|| {
        format!(
            "a request of {} bytes, shorter than a request header",
            frame.len()
        )
    })?;
    let key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let api_key =
        ApiKey::try_from(key).map_err(|()| format!("a request with unknown API key {key}"))?;
    if session.pending()
        && !matches!(
            api_key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        // Kafka's IllegalSaslStateException: "Unexpected Kafka request
        // of type ... during SASL handshake", and the connection closes.
        return Err(format!(
            "a {api_key:?} request before SASL authentication (a client without SASL settings?)"
        ));
    }
    let sasl = ctx.auth.is_some();
    if !versions::is_served(api_key, version, sasl) {
        if api_key == ApiKey::ApiVersions {
            // Kafka's rule: an ApiVersions request of a version the broker
            // does not know is answered in version 0 with the error, so the
            // client can read the versions served and retry.
            let reply = versions::api_versions(
                kafka_protocol::ResponseError::UnsupportedVersion.code(),
                sasl,
            );
            let handled = (
                api_key,
                0,
                correlation_id,
                Reply::now(ResponseKind::ApiVersions(reply)),
                0,
            );
            return Ok((handled, None));
        }
        // With SASL served, a SaslHandshake of another version closes the
        // connection rather than getting the refusal meant for no SASL.
        if !(sasl && api_key == ApiKey::SaslHandshake)
            && let Some(refused) = refuse(api_key, version, correlation_id, &mut frame)
        {
            return Ok((refused, None));
        }
        return Err(format!(
            "a {api_key:?} request of version {version}, which this broker does not serve \
             (ApiVersions lists what it does)"
        ));
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| {
            format!("a {api_key:?} v{version} request header that does not decode: {e}")
        })?;
    let request = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| format!("a {api_key:?} v{version} request that does not decode: {e:#}"))?;
    let client = header.client_id.as_ref().map_or("", |c| c.as_str());
    log::debug(format_args!("kafka: {client} {api_key:?} v{version}"));
    let answer =
        |response: ResponseKind| (api_key, version, correlation_id, Reply::now(response), 0);
    let request = match request {
        RequestKind::ApiVersions(_) => {
            let reply = versions::api_versions(0, sasl);
            return Ok((answer(ResponseKind::ApiVersions(reply)), None));
        }
        RequestKind::SaslHandshake(r) => {
            let step = session.handshake(&r, version);
            return Ok((answer(step.response), step.close));
        }
        RequestKind::SaslAuthenticate(r) => {
            let step = session.authenticate(ctx, r).await;
            if step.close.is_none()
                && let Some(user) = session.access().as_ref().and_then(|a| a.user())
            {
                log::info(format_args!("kafka: {client} authenticated as {user}"));
            }
            return Ok((answer(step.response), step.close));
        }
        other => other,
    };
    let Some(access) = session.access() else {
        return Err(format!("a {api_key:?} request before SASL authentication"));
    };
    let (request, denied) = authorize::guard(ctx, &access, request);
    let mut reply_bytes = 0;
    let reply = match request {
        RequestKind::Metadata(r) => topics::metadata(ctx, r, version),
        RequestKind::CreateTopics(r) => topics::create(ctx, r, version),
        RequestKind::DeleteTopics(r) => topics::delete(ctx, r, version),
        RequestKind::Produce(r) => produce::produce(ctx, r, version),
        RequestKind::InitProducerId(r) => producers::init_producer_id(ctx, r),
        RequestKind::Fetch(r) => {
            reply_bytes = fetch::reply_bytes_max(ctx, &r);
            fetch::fetch(ctx, r, version)
        }
        RequestKind::ListOffsets(r) => fetch::list_offsets(ctx, r, version),
        RequestKind::FindCoordinator(r) => groups::find_coordinator(ctx, r, version),
        RequestKind::JoinGroup(r) => groups::join(ctx, r, client, version),
        RequestKind::SyncGroup(r) => groups::sync(ctx, r, version),
        RequestKind::Heartbeat(r) => groups::heartbeat(ctx, r),
        RequestKind::LeaveGroup(r) => groups::leave(ctx, r, version),
        RequestKind::OffsetCommit(r) => offsets::offset_commit(ctx, r),
        RequestKind::OffsetFetch(r) => offsets::offset_fetch(ctx, r, version),
        RequestKind::DescribeConfigs(r) => admin::describe_configs(ctx, r),
        RequestKind::AlterConfigs(r) => admin::alter_configs(ctx, r),
        RequestKind::IncrementalAlterConfigs(r) => admin::incremental_alter_configs(ctx, r),
        RequestKind::CreatePartitions(r) => admin::create_partitions(ctx, r),
        RequestKind::DeleteRecords(r) => admin::delete_records(ctx, r),
        RequestKind::DescribeCluster(r) => admin::describe_cluster(ctx, r),
        RequestKind::ListGroups(r) => admin_groups::list_groups(ctx, r),
        RequestKind::DescribeGroups(r) => admin_groups::describe_groups(ctx, r),
        RequestKind::DeleteGroups(r) => admin_groups::delete_groups(ctx, r),
        RequestKind::OffsetDelete(r) => admin_groups::offset_delete(ctx, r),
        other => {
            return Err(format!(
                "a {api_key:?} request, which is not served: {:?}",
                std::mem::discriminant(&other)
            ));
        }
    };
    let reply = match denied {
        Some(denied) => reply.map(denied),
        None => reply,
    };
    Ok(((api_key, version, correlation_id, reply, reply_bytes), None))
}

/// The refusal of a request of an API not served that Kafka's protocol
/// has an error for (`refusals.rs`), if it decodes; `None`: close.
fn refuse(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    frame: &mut Bytes,
) -> Option<Handled> {
    let codec = api_key.valid_versions();
    if !(codec.min..=codec.max).contains(&version) {
        return None;
    }
    RequestHeader::decode(frame, api_key.request_header_version(version)).ok()?;
    let request = RequestKind::decode(api_key, frame, version).ok()?;
    let response = refusals::refusal(request, version)?;
    log::debug(format_args!(
        "kafka: {api_key:?} v{version} refused: not served"
    ));
    Some((api_key, version, correlation_id, Reply::now(response), 0))
}

/// A reply frame: size, header, body.
fn encode(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<BytesMut, String> {
    let mut frame = BytesMut::with_capacity(64);
    frame.extend_from_slice(&[0; 4]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // ApiVersions replies always have header version 0, so that a client
    // can read one whatever version it asked with.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    header
        .encode(&mut frame, header_version)
        .map_err(|e| e.to_string())?;
    response
        .encode(&mut frame, version)
        .map_err(|e| e.to_string())?;
    let size = i32::try_from(frame.len() - 4).map_err(|_| "a reply over 2 GiB".to_string())?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}
