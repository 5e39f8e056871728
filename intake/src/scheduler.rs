//! `tidings scheduler`: puts deferred notifications back on their channel
//! topic when they are due.
//!
//! Claiming is atomic in Redis (a Lua script moves due members into a claimed
//! set with a lease), so several schedulers never publish the same member at
//! once. A member is removed only after Kafka acknowledged it; a scheduler
//! that dies in between leaves the claim to expire, and the member is
//! published again: the worker's dedupe turns that copy into a `duplicate`.
//! An entry that cannot be read, or that the cluster refuses for good (too
//! large, a topic it may not write or that does not exist), goes to
//! `tidings.intake.dlq` (class `poison`), unchanged, before it leaves the
//! schedule: it never fails every pass. A producer that met a fatal error
//! is replaced, and the scheduler is unready until a pass goes through;
//! what the broken producer had claimed is published again once its lease
//! runs out, first in its lanes.
//!
//! Order: a lane whose earlier member is claimed (by a scheduler that may
//! have died) releases nothing after it until that member is published or
//! its claim runs out and it is claimed again, first.

use rdkafka::producer::FutureProducer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::{INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::dead_letter::{self, DeadLetter};
use tidings_core::digest::{self, Release};
use tidings_core::kafka::{self, delivered, enqueue_dead_letter, enqueue_json};
use tidings_core::notification::{headers as h, Deferred};
use tidings_core::progress::Progress;
use tidings_core::status::ErrorClass;
use tidings_core::store::{lane, SharedStore, StoreError};
use tidings_core::telemetry::Health;
use tidings_core::trace::Hop;
use tidings_core::{Channel, Clock, Config, State, StatusRecord};

/// As much of a deferred entry as names its lane, for an entry that does not
/// read whole (written by another version, say).
#[derive(serde::Deserialize)]
struct LaneOf {
    notification: LaneFields,
}

#[derive(serde::Deserialize)]
struct LaneFields {
    user_id: String,
    channel: Channel,
}

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
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let kafka = config.kafka.clone();
    run_with(config, store, clock, progress, health, shutdown, || kafka::producer(&kafka)).await
}

/// [`run`], with its producers made by `producer`: the first at start, and
/// a new one whenever the one in use met a fatal error.
pub async fn run_with(
    config: Arc<Config>,
    store: SharedStore,
    clock: Clock,
    progress: Arc<Progress>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
    producer: impl Fn() -> rdkafka::error::KafkaResult<FutureProducer>,
) -> Result<(), SchedulerError> {
    let make = producer;
    let mut producer = make()?;
    let publishing = health.check("scheduler: its last pass went through", true);
    let mut tick = tokio::time::interval(config.scheduler.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The loop turns while a pass waits (for a broker, or Redis): waiting is no hang.
    let beat = health.beat("scheduler");
    let mut beating = tokio::time::interval(Duration::from_secs(1));
    let (waiting, due) =
        (metrics::gauge!("tidings_deferred_messages"), metrics::gauge!("tidings_deferred_due_messages"));
    let mut counted = tokio::time::Instant::now() - COUNT_EVERY;
    tokio::pin!(shutdown);
    tracing::info!("scheduler started");
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = beating.tick() => beat.beat(),
            _ = tick.tick() => {
                // A pass cut short (shutdown while its writes wait for a broker) leaves its
                // claims to expire: the members are published again, and deduped.
                let pass = {
                    let pass = release_due(&config, &store, &producer, &clock);
                    tokio::pin!(pass);
                    loop {
                        tokio::select! {
                            biased;
                            _ = &mut shutdown => break None,
                            _ = beating.tick() => beat.beat(),
                            pass = &mut pass => break Some(pass),
                        }
                    }
                };
                let Some(pass) = pass else { break };
                if counted.elapsed() >= COUNT_EVERY {
                    counted = tokio::time::Instant::now();
                    let now = clock.now();
                    match futures::future::try_join(store.deferred_len(), store.deferred_due(now)).await {
                        Ok((all, ready)) => {
                            waiting.set(all as f64);
                            due.set(ready as f64);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot count the deferred set"),
                    }
                }
                publishing.set(pass.is_ok());
                match pass {
                    Ok(n) => Progress::add(&progress.released, n),
                    Err(SchedulerError::Kafka(e)) if kafka::fatal(&producer, &e) => {
                        tracing::error!(error = %e, "the scheduler's producer met a fatal error; a new one takes over");
                        producer = make()?;
                    }
                    Err(e) => tracing::warn!(error = %e, "scheduler pass failed; will retry"),
                }
            }
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// How often the scheduler counts the deferred set for its gauges.
const COUNT_EVERY: Duration = Duration::from_secs(5);

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
            if let Ok(release) = serde_json::from_str::<Release>(member) {
                release_digest(config, store, producer, &release, clock).await?;
                store.remove_deferred(&release.lane(), member).await?;
                continue;
            }
            let held = match serde_json::from_str::<Deferred>(member) {
                Ok(held) => held,
                Err(e) => {
                    // Kept for an operator, so it cannot block the schedule. When not
                    // even its lane reads, that lane keeps a place no entry holds:
                    // the user's later messages on it pass through the schedule.
                    tracing::error!(error = %e, "unreadable deferred entry dead-lettered");
                    let owner = serde_json::from_str::<LaneOf>(member).ok().map(|o| o.notification);
                    let error = format!("unreadable deferred entry: {e}");
                    let letter = DeadLetter::poison(dead_letter::SCHEDULE, -1, -1, error, clock.now());
                    let key = owner.as_ref().map(|o| o.user_id.as_bytes());
                    let delivery =
                        enqueue_dead_letter(producer, INTAKE_DLQ_TOPIC, key, Some(member.as_bytes()), &letter).await?;
                    pending.push((owner.map(|o| lane(&o.user_id, o.channel)), member, delivery, None));
                    continue;
                }
            };
            let n = &held.notification;
            let mut pairs = vec![(h::CORRELATION_ID, held.correlation_id.as_str())];
            if let Some(tp) = &held.traceparent {
                pairs.push((h::TRACEPARENT, tp.as_str()));
            }
            let lane = lane(&n.user_id, n.channel);
            match enqueue_json(producer, &n.channel.topic(n.priority), &n.user_id, n, Some(kafka::headers(pairs))).await
            {
                Ok(delivery) => pending.push((Some(lane), member, delivery, Some(held))),
                Err(e) if kafka::refused_for_good(&e) && !kafka::fatal(producer, &e) => {
                    refused(producer, member, &held, &e, clock).await?;
                    store.remove_deferred(&lane, member).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (lane, member, delivery, held) in pending {
            // The priority of a member published; none for one dead-lettered.
            let published = match (delivered(delivery).await, held) {
                (Ok(()), held) => held.map(|held| held.notification.priority),
                (Err(e), Some(held)) if kafka::refused_for_good(&e) && !kafka::fatal(producer, &e) => {
                    refused(producer, member, &held, &e, clock).await?;
                    None
                }
                (Err(e), _) => return Err(e.into()),
            };
            store.remove_deferred(lane.as_deref().unwrap_or_default(), member).await?;
            if let Some(priority) = published {
                released += 1;
                metrics::counter!("tidings_records_out_total", "role" => "scheduler", "priority" => priority.as_str())
                    .increment(1);
            }
        }
        if claimed.len() < s.batch {
            return Ok(released);
        }
    }
}

/// Takes a digest's window (closed: an event read from now on opens the
/// next) and writes it back to intake as one event of the digest's type,
/// marked as a release ([`digest::RELEASE_HEADER`]), with its items: what
/// intake then routes as any event. Its id is made from the window, so a
/// release written twice (this scheduler died before removing the member)
/// becomes the same notifications, which the workers' dedupe sends once.
/// Returns once it is written, or dead-lettered with the reason: too large
/// for intake, or refused by the cluster for good (a topic this scheduler
/// may not write, say). A window forgotten (taken long ago, and released
/// then) writes nothing. The caller removes the member after.
async fn release_digest(
    config: &Config,
    store: &SharedStore,
    producer: &FutureProducer,
    release: &Release,
    clock: &Clock,
) -> Result<(), SchedulerError> {
    let d = &release.digest;
    let opened = chrono::DateTime::from_timestamp_millis(d.opened).unwrap_or_default();
    let Some(taken) = store.digest_take(&d.user_id, &d.name, d.window, opened, clock.now()).await? else {
        tracing::warn!(user = %d.user_id, digest = %d.name, window = d.window, "a digest's window is gone (or is another of that number); nothing released");
        return Ok(());
    };
    let items: Vec<&serde_json::value::RawValue> =
        taken.items.iter().filter_map(|i| serde_json::from_str(i).ok()).collect();
    let mut event = serde_json::json!({
        "specversion": "1.0",
        "id": release.event_id(),
        "type": d.event_type,
        "source": digest::RELEASE_SOURCE,
        "time": taken.closed,
        "data": {
            "items": items,
            "count": items.len(),
            "key": d.key,
            "opened_at": taken.opened,
            "closed_at": taken.closed,
        },
    });
    digest::set_at(&mut event, &config.intake.user_pointer, &d.user_id);
    let payload = serde_json::to_vec(&event).expect("an event serializes");
    metrics::histogram!("tidings_digest_items", "type" => d.event_type.clone()).record(items.len() as f64);
    let payload = payload.as_slice();
    let letter = |error: String| async move {
        tracing::error!(%error, "digest dead-lettered");
        let letter = DeadLetter::poison(dead_letter::SCHEDULE, -1, -1, error, clock.now());
        let key = Some(d.user_id.as_bytes());
        kafka::dead_letter(producer, INTAKE_DLQ_TOPIC, key, Some(payload), &letter).await
    };
    let max = config.intake.limits.max_event_bytes.min(kafka::max_message_bytes(&config.kafka));
    if payload.len() > max {
        let error = format!(
            "digest of {} items is {} bytes, more than intake and the producer take ({max}); lower its max_items",
            items.len(),
            payload.len(),
        );
        return Ok(letter(error).await?);
    }
    let topic = config.input_topic(&d.event_type);
    let window = d.window.to_string();
    let headers = kafka::headers([(digest::RELEASE_HEADER, window.as_str())]);
    let record = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(&topic)
        .key(d.user_id.as_bytes())
        .payload(payload)
        .headers(headers);
    // Awaited here: releases are few, and a refusal must not stop the pass.
    let written = match kafka::enqueue(producer, record).await {
        Ok(delivery) => delivered(delivery).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => Ok(()),
        Err(e) if kafka::refused_for_good(&e) && !kafka::fatal(producer, &e) => {
            Ok(letter(format!("digest refused for good by the cluster for {topic}: {e}")).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Dead-letters a member the cluster refused for good (`why`), so it
/// leaves the schedule instead of failing every pass, and ends its
/// notification `dead_lettered` with the reason (its last status said
/// `deferred`). `tidings dlq replay --from intake` puts it back on its lane.
async fn refused(
    producer: &FutureProducer,
    member: &str,
    held: &Deferred,
    why: &rdkafka::error::KafkaError,
    clock: &Clock,
) -> Result<(), SchedulerError> {
    let n = &held.notification;
    let topic = n.channel.topic(n.priority);
    let error = if kafka::too_large(why) {
        format!("deferred notification of {} bytes is too large to publish to {topic}", member.len())
    } else {
        format!("deferred notification refused for good by the cluster for {topic}: {why}")
    };
    tracing::error!(%error, "deferred entry dead-lettered");
    let letter = DeadLetter::poison(dead_letter::SCHEDULE, -1, -1, error.clone(), clock.now());
    let key = Some(n.user_id.as_bytes()).filter(|k| !k.is_empty());
    kafka::dead_letter(producer, INTAKE_DLQ_TOPIC, key, Some(member.as_bytes()), &letter).await?;
    let mut status = StatusRecord::of(n, State::DeadLettered, clock.now()).with_error(Some(ErrorClass::Poison), error);
    status.correlation_id = Some(held.correlation_id.clone());
    status.trace_id = held.traceparent.as_deref().and_then(Hop::parse).map(|hop| hop.trace_id());
    // The letter is what keeps the member: a status the cluster will not take
    // does not hold the pass (and every member claimed after it) back.
    let written = async { delivered(enqueue_json(producer, STATUS_TOPIC, &n.user_id, &status, None).await?).await };
    if let Err(e) = written.await {
        tracing::warn!(error = %e, "the dead-lettered status of a deferred entry was not written");
    }
    Ok(())
}
