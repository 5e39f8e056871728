//! `tidings scheduler`: puts deferred notifications back on their channel
//! topic when they are due.
//!
//! Claiming is atomic in Redis (a Lua script moves due members into a claimed
//! set with a lease), so several schedulers never publish the same member at
//! once. A member is removed only after Kafka acknowledged it; a scheduler
//! that dies in between leaves the claim to expire, and the member is
//! published again: the worker's dedupe turns that copy into a `duplicate`.

use rdkafka::producer::FutureProducer;
use std::future::Future;
use std::sync::Arc;
use tidings_core::kafka::{self, delivered, enqueue_json};
use tidings_core::notification::{headers as h, Deferred};
use tidings_core::progress::Progress;
use tidings_core::store::{lane, SharedStore, StoreError};
use tidings_core::{Clock, Config};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Runs until `shutdown` completes.
pub async fn run(
    config: Arc<Config>,
    store: SharedStore,
    clock: Clock,
    progress: Arc<Progress>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let producer = kafka::producer(&config.kafka)?;
    let mut tick = tokio::time::interval(config.scheduler.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!("scheduler started");
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                match release_due(&config, &store, &producer, &clock).await {
                    Ok(n) => Progress::add(&progress.released, n),
                    Err(e) => tracing::warn!(error = %e, "scheduler pass failed; will retry"),
                }
            }
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// One pass: claim what is due, publish it, remove it. Returns how many went out.
pub async fn release_due(
    config: &Config,
    store: &SharedStore,
    producer: &FutureProducer,
    clock: &Clock,
) -> Result<u64, SchedulerError> {
    let s = &config.scheduler;
    let mut released = 0;
    loop {
        let claimed = store.claim_due(clock.now(), s.batch, s.claim_lease).await?;
        if claimed.is_empty() {
            return Ok(released);
        }
        let mut pending = Vec::with_capacity(claimed.len());
        for member in &claimed {
            let Ok(held) = serde_json::from_str::<Deferred>(member) else {
                // Not ours to read: dropped, so it cannot block the schedule. Its
                // lane, if any, expires on its own.
                tracing::error!("unreadable deferred entry dropped from the schedule");
                store.remove_deferred("", member).await?;
                continue;
            };
            let n = &held.notification;
            let mut pairs = vec![(h::CORRELATION_ID, held.correlation_id.as_str())];
            if let Some(tp) = &held.traceparent {
                pairs.push((h::TRACEPARENT, tp.as_str()));
            }
            let delivery =
                enqueue_json(producer, &n.channel.topic(n.priority), &n.user_id, n, Some(kafka::headers(pairs)))
                    .await?;
            pending.push((lane(&n.user_id, n.channel), member, delivery));
        }
        for (lane, member, delivery) in pending {
            delivered(delivery).await?;
            store.remove_deferred(&lane, member).await?;
            released += 1;
        }
        if claimed.len() < s.batch {
            return Ok(released);
        }
    }
}
