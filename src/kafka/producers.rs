//! InitProducerId: a producer id for an idempotent producer, durable
//! before the reply (ids are never handed out twice, across restarts too),
//! and the expiry of producers' states on a timer. Transactional producers
//! are refused: seglog serves no transactions.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind,
};

use super::Context;
use super::error::code;
use super::reply::Reply;
use crate::broker::producers::{self, PRODUCER_IDS_KEY};
use crate::broker::time::now_ms;
use crate::log;
use crate::storage::offsets::Committed;

/// Time between passes that remove expired producer states: the expiry is
/// days, so a pass a minute removes a state within a minute of its time,
/// and a pass reads the commits once under the store's lock (a few
/// milliseconds for `STATES_MAX` of them).
pub const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(60);

fn error_reply(error_code: i16) -> Reply {
    let mut response = InitProducerIdResponse::default();
    response.error_code = error_code;
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    Reply::now(ResponseKind::InitProducerId(response))
}

/// Hands out the next producer id with epoch 0. A request that names its
/// current id and epoch (KIP-360, version 3 and later) gets a new id too,
/// as Kafka gives a producer without a transactional id.
pub fn init_producer_id(ctx: &Arc<Context>, request: InitProducerIdRequest) -> Reply {
    if request.transactional_id.is_some() {
        // Kafka's answer to a transactional id the client may not use: the
        // client stops with a clear error instead of retrying.
        return error_reply(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if let Some(cluster) = ctx.broker.cluster() {
        // A node of a cluster hands out ids from blocks the cluster's
        // metadata gives it, so two nodes never give out the same one.
        let cluster = Arc::clone(cluster);
        let ctx = Arc::clone(ctx);
        return Reply::Later(Box::pin(async move {
            let outcome = cluster.producer_id().await;
            Some(id_response(&ctx, outcome))
        }));
    }
    let mut writer = match ctx.broker.writer() {
        Ok(writer) => writer,
        Err(e) => return error_reply(code(&e)),
    };
    let id = producers::next_producer_id(writer.store());
    let Some(next) = id.checked_add(1).filter(|&n| i64::try_from(n).is_ok()) else {
        return error_reply(ResponseError::UnknownServerError.code());
    };
    let change = Some(Committed {
        offset: next,
        value: Vec::new(),
    });
    if let Err(e) = writer.change(PRODUCER_IDS_KEY, change) {
        return error_reply(code(&e));
    }
    let durable = writer.finish();
    let ctx = Arc::clone(ctx);
    Reply::Later(Box::pin(async move {
        let outcome = match durable {
            Some(durable) => durable.wait().await,
            None => Ok(()),
        };
        Some(id_response(&ctx, outcome.map(|()| id)))
    }))
}

/// The reply that hands out producer id `id` (epoch 0), counted, or says
/// why none was.
fn id_response(ctx: &Context, outcome: crate::broker::Result<u64>) -> ResponseKind {
    let mut response = InitProducerIdResponse::default();
    match outcome {
        Ok(id) => {
            ctx.broker
                .metrics
                .producer_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            response.producer_id = ProducerId(i64::try_from(id).unwrap_or(-1));
            response.producer_epoch = 0;
        }
        Err(e) => {
            response.error_code = code(&e);
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
        }
    }
    ResponseKind::InitProducerId(response)
}

/// Removes expired producer states (and the least recently used beyond
/// `producers::STATES_MAX`) every [`EXPIRY_CHECK_EVERY`], until aborted.
pub async fn expiry_loop(ctx: Arc<Context>) {
    let mut timer = tokio::time::interval(EXPIRY_CHECK_EVERY);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let ctx = Arc::clone(&ctx);
        let pass = tokio::task::spawn_blocking(move || expire(&ctx));
        if !matches!(pass.await, Ok(Ok(()))) {
            log::warn(format_args!("kafka: a producer expiry pass failed"));
        }
    }
}

/// One expiry pass; durable with the next sync point (nobody waits for it).
pub fn expire(ctx: &Context) -> crate::broker::Result<()> {
    // A node of a cluster keeps its producers' states in its partitions'
    // Raft groups, where every replica must drop the same ones at the same
    // point: not here (`cluster/partition.rs`).
    if ctx.broker.cluster().is_some() {
        return Ok(());
    }
    let mut writer = ctx.broker.writer()?;
    let expired = producers::to_expire(writer.store(), now_ms(), ctx.producer_expiry);
    for key in &expired {
        writer.change(key, None)?;
    }
    drop(writer.finish());
    if !expired.is_empty() {
        log::info(format_args!(
            "kafka: {} producer states expired",
            expired.len()
        ));
    }
    Ok(())
}
