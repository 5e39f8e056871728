//! The intake consume loop.
//!
//! Records are handled in partition order: decode, hydrate preferences, route.
//! Every write a record causes (notifications, statuses, dead letters,
//! deferrals) is enqueued before the next record is read, so per-user order
//! holds, and its offset is stored only once all of them are acknowledged.
//! Acknowledgements are awaited in a bounded ordered queue, so the loop keeps
//! reading while earlier writes are in flight.

use crate::route::{route, Outcome};
use chrono::{DateTime, Utc};
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::{INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::config::UnknownTypes;
use tidings_core::dead_letter::DeadLetter;
use tidings_core::event::CloudEvent;
use tidings_core::kafka::{self, delivered, enqueue_dead_letter, enqueue_json};
use tidings_core::notification::{headers as h, notification_id, Deferred};
use tidings_core::progress::Progress;
use tidings_core::status::ErrorClass;
use tidings_core::store::{SharedStore, StoreError};
use tidings_core::{Channel, Clock, Config, Preferences, State, StatusRecord};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Everything intake needs, shared by the loop.
pub struct Intake {
    config: Arc<Config>,
    store: SharedStore,
    producer: FutureProducer,
    clock: Clock,
    progress: Arc<Progress>,
}

/// One record's writes, and where its offset goes once they are acknowledged.
struct Pending {
    topic: String,
    partition: i32,
    offset: i64,
    published: u64,
    deliveries: Vec<DeliveryFuture>,
}

/// Runs intake until `shutdown` completes, then drains and commits.
pub async fn run(
    config: Arc<Config>,
    store: SharedStore,
    clock: Clock,
    progress: Arc<Progress>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IntakeError> {
    let consumer = kafka::consumer(&config.kafka, &config.group("intake"))?;
    let topics = config.intake.topics.clone();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let intake = Intake {
        producer: kafka::producer(&config.kafka)?,
        config,
        store,
        clock,
        progress,
    };
    let max_in_flight = intake.config.intake.max_in_flight.max(1);
    let mut acks = FuturesOrdered::new();
    tokio::pin!(shutdown);
    tracing::info!(?topics, "intake started");
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(done) = acks.next(), if !acks.is_empty() => intake.stored(&consumer, done)?,
            message = consumer.recv(), if acks.len() < max_in_flight => match message {
                Ok(m) => {
                    let pending = intake.handle(&m).await?;
                    acks.push_back(settle(pending));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Drain what is in flight, then commit what is stored.
    while let Some(done) = acks.next().await {
        intake.stored(&consumer, done)?;
    }
    intake.producer_flush();
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "nothing to commit at shutdown");
    }
    tracing::info!("intake stopped");
    Ok(())
}

async fn settle(p: Pending) -> Result<Pending, KafkaError> {
    let mut p = p;
    for d in std::mem::take(&mut p.deliveries) {
        delivered(d).await?;
    }
    Ok(p)
}

impl Intake {
    fn stored(
        &self,
        consumer: &impl Consumer,
        done: Result<Pending, KafkaError>,
    ) -> Result<(), IntakeError> {
        // A failed write leaves the offset unstored: the record is consumed again after restart.
        let done = done?;
        match consumer.store_offset(&done.topic, done.partition, done.offset) {
            Ok(()) => {}
            // The partition was revoked meanwhile: its new owner reads the record again.
            Err(e) => tracing::debug!(error = %e, "offset not stored"),
        }
        Progress::add(&self.progress.published, done.published);
        Progress::add(&self.progress.events, 1);
        Ok(())
    }

    fn producer_flush(&self) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(Duration::from_secs(10));
    }

    /// Decides and enqueues everything one record causes.
    async fn handle(&self, m: &BorrowedMessage<'_>) -> Result<Pending, IntakeError> {
        let mut pending = Pending {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            published: 0,
            deliveries: Vec::new(),
        };
        let headers = kafka::header_pairs(m);
        let now = self.clock.now();
        let event = match CloudEvent::decode(m.payload(), &headers) {
            Ok(e) => e,
            Err(e) => return self.dead_letter(m, e.to_string(), now, pending).await,
        };
        let user_id = match event.user_id(&self.config.intake.user_pointer) {
            Ok(u) => u,
            Err(e) => return self.dead_letter(m, e.to_string(), now, pending).await,
        };
        let Some(route_cfg) = self.config.events.get(&event.ty) else {
            let reason = format!("unknown event type `{}`", event.ty);
            return match self.config.intake.unknown_types {
                UnknownTypes::DeadLetter => self.dead_letter(m, reason, now, pending).await,
                UnknownTypes::Suppress => {
                    let status =
                        event_status(&event, &user_id, Channel::Email, &event.ty, reason, now);
                    pending.deliveries.push(
                        enqueue_json(&self.producer, STATUS_TOPIC, &user_id, &status, None).await?,
                    );
                    Ok(pending)
                }
            };
        };
        let first_channel = route_cfg.channels[0];
        let template = route_cfg.template.as_deref().unwrap_or(&event.ty);
        let prefs = match self.prefs(&user_id).await {
            Ok(p) => p,
            Err(reason) => {
                let status = event_status(&event, &user_id, first_channel, template, reason, now);
                pending.deliveries.push(
                    enqueue_json(&self.producer, STATUS_TOPIC, &user_id, &status, None).await?,
                );
                return Ok(pending);
            }
        };
        let correlation_id = event
            .correlationid
            .clone()
            .unwrap_or_else(|| event.id.clone());
        let outcomes = route(&event, &user_id, route_cfg, &prefs, now);
        if outcomes.is_empty() {
            let reason = "user has none of this event's channels enabled".to_string();
            let status = event_status(&event, &user_id, first_channel, template, reason, now);
            pending
                .deliveries
                .push(enqueue_json(&self.producer, STATUS_TOPIC, &user_id, &status, None).await?);
        }
        for outcome in outcomes {
            let delivery = match outcome {
                Outcome::Publish(n) => {
                    let mut pairs = vec![(h::CORRELATION_ID, correlation_id.as_str())];
                    if let Some(tp) = &event.traceparent {
                        pairs.push((h::TRACEPARENT, tp.as_str()));
                    }
                    pending.published += 1;
                    let topic = n.channel.topic(n.priority);
                    enqueue_json(
                        &self.producer,
                        &topic,
                        &n.user_id,
                        &n,
                        Some(kafka::headers(pairs)),
                    )
                    .await?
                }
                Outcome::Defer(n) => {
                    let until = n.not_before.unwrap_or(now);
                    let status = StatusRecord::of(&n, State::Deferred, now);
                    let held = Deferred {
                        notification: n,
                        correlation_id: correlation_id.clone(),
                        traceparent: event.traceparent.clone(),
                    };
                    let member = serde_json::to_string(&held).expect("records serialize to JSON");
                    self.retrying(|| self.store.defer(&member, until)).await?;
                    enqueue_json(&self.producer, STATUS_TOPIC, &status.user_id, &status, None)
                        .await?
                }
                Outcome::Suppress(n, reason) => {
                    let status =
                        StatusRecord::of(&n, State::Suppressed, now).with_error(None, reason);
                    enqueue_json(&self.producer, STATUS_TOPIC, &status.user_id, &status, None)
                        .await?
                }
            };
            pending.deliveries.push(delivery);
        }
        Ok(pending)
    }

    /// The user's preferences, or why there are none to use.
    async fn prefs(&self, user_id: &str) -> Result<Preferences, String> {
        let users = [user_id.to_string()];
        let raw = self
            .retrying(|| self.store.prefs_many(&users))
            .await
            .map_err(|e| e.to_string())?;
        match raw.into_iter().next().flatten() {
            None => Err(format!("no preferences for user {user_id}")),
            Some(json) => Preferences::parse(&json)
                .map_err(|e| format!("stored preferences are unusable: {e}")),
        }
    }

    /// Retries a store call until it succeeds: Redis being away must hold
    /// records back, never drop them.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut wait = Duration::from_millis(50);
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(error = %e, "store unavailable; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        reason: String,
        now: DateTime<Utc>,
        mut pending: Pending,
    ) -> Result<Pending, IntakeError> {
        tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "poison input dead-lettered");
        let letter = DeadLetter {
            original_topic: m.topic().to_string(),
            original_partition: m.partition(),
            original_offset: m.offset(),
            error_class: ErrorClass::Poison,
            error: reason,
            attempts: 1,
            providers_tried: Vec::new(),
            first_failure: now,
            last_failure: now,
        };
        pending.deliveries.push(
            enqueue_dead_letter(
                &self.producer,
                INTAKE_DLQ_TOPIC,
                m.key(),
                m.payload(),
                &letter,
            )
            .await?,
        );
        Ok(pending)
    }
}

/// A `suppressed` status about an event that produced no notification.
fn event_status(
    event: &CloudEvent,
    user_id: &str,
    channel: Channel,
    template: &str,
    reason: String,
    now: DateTime<Utc>,
) -> StatusRecord {
    StatusRecord {
        notification_id: notification_id(&event.id, channel, user_id, template),
        event_id: event.id.clone(),
        event_type: event.ty.clone(),
        user_id: user_id.to_string(),
        state: State::Suppressed,
        channel: None,
        provider: None,
        provider_message_id: None,
        attempts: 0,
        error_class: None,
        error: Some(reason),
        not_before: None,
        created_at: Some(now),
        at: now,
    }
}
