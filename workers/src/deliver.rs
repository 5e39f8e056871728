//! One notification, end to end: claim it (dedupe), re-check the user's
//! preferences, render, send through the chain, and make the outcome durable.
//!
//! The order of writes is what makes redelivery safe:
//!
//! 1. claim `notification_id` in Redis (a lease, so a dead worker's claim expires);
//! 2. send;
//! 3. replace the claim with the outcome record (the dedupe record);
//! 4. write the status record and wait for Kafka's acknowledgement;
//! 5. mark the dedupe record published; the caller then stores the offset.
//!
//! A copy that arrives after step 3 finds the dedupe record and becomes a
//! `duplicate` (re-writing the status first if step 5 never happened). The one
//! window where a customer can get a second copy is a crash between the
//! provider accepting (2) and the dedupe record (3): the claim then expires and
//! the message is sent again. It is as short as one Redis write; email carries
//! a stable `Message-ID` so a receiving system can fold such a copy.

use crate::chain::{Chain, Failed, WhenDown};
use crate::render::Renderer;
use chrono::Utc;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::STATUS_TOPIC;
use tidings_core::dead_letter::DeadLetter;
use tidings_core::kafka::{delivered, enqueue_dead_letter, enqueue_json};
use tidings_core::notification::{headers, notification_id};
use tidings_core::persist::until_ok;
use tidings_core::status::ErrorClass;
use tidings_core::store::{Claim, SharedStore};
use tidings_core::{Channel, Clock, Config, Notification, Preferences, Priority, State, StatusRecord};
use tidings_providers::{rules, Content, Outgoing};

/// A consumed channel-topic record, detached from the consumer.
#[derive(Debug, Clone)]
pub struct Input {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// `correlation_id` and `traceparent`, passed on to a fallback notification.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What the dedupe record holds once a notification has an outcome.
#[derive(Debug, Serialize, Deserialize)]
struct DedupeRecord {
    status: StatusRecord,
    /// The status record is acknowledged on `tidings.status`.
    published: bool,
}

/// Where a dead letter goes and why.
struct Letter {
    class: ErrorClass,
    error: String,
    attempts: u32,
    providers_tried: Vec<String>,
    first_failure: chrono::DateTime<Utc>,
}

pub struct Deliverer {
    pub channel: Channel,
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub producer: FutureProducer,
    pub renderer: Arc<Renderer>,
    pub chain: Chain,
    pub clock: Clock,
    /// This process's claim owner id.
    pub owner: String,
}

impl Deliverer {
    /// Handles one record; returns once its outcome is durable.
    #[tracing::instrument(skip_all, fields(channel = %self.channel, offset = input.offset, notification_id))]
    pub async fn process(&self, input: &Input) {
        let n: Notification = match input.payload.as_deref().map(serde_json::from_slice) {
            Some(Ok(n)) => n,
            other => {
                let error = match other {
                    Some(Err(e)) => format!("not a notification record: {e}"),
                    _ => "empty record".to_string(),
                };
                let letter = Letter {
                    class: ErrorClass::Poison,
                    error,
                    attempts: 0,
                    providers_tried: vec![],
                    first_failure: Utc::now(),
                };
                until_ok("dead-letter", || self.dead_letter(input, &letter)).await;
                return;
            }
        };
        tracing::Span::current().record("notification_id", n.notification_id.as_str());
        let lease = self.config.worker.claim_lease;
        loop {
            match until_ok("claim", || self.store.claim(&n.notification_id, &self.owner, lease)).await {
                Claim::Acquired => break,
                Claim::Done(record) => return self.duplicate(&n, &record).await,
                // Another worker is sending it (a rebalance moved the partition
                // mid-send): wait for its outcome or for its claim to expire.
                Claim::Held => tokio::time::sleep(Duration::from_millis(200).min(lease)).await,
            }
        }
        let status = self.deliver(input, &n).await;
        self.record(&n, status).await;
    }

    /// Everything between the claim and the outcome.
    async fn deliver(&self, input: &Input, n: &Notification) -> StatusRecord {
        let users = [n.user_id.clone()];
        let prefs = until_ok("read preferences", || self.store.prefs_many(&users)).await;
        let prefs = prefs.into_iter().next().flatten().map(|json| Preferences::parse(&json));
        let prefs = match prefs {
            None => return self.suppressed(n, format!("no preferences for user {}", n.user_id)),
            Some(Err(e)) => return self.suppressed(n, format!("stored preferences are unusable: {e}")),
            Some(Ok(p)) => p,
        };
        if let Some(reason) = prefs.suppression(n.channel, &n.category) {
            return self.suppressed(n, reason);
        }
        let content = match self.renderer.render(n) {
            Ok(c) => c,
            Err(e) => {
                let letter = Letter {
                    class: ErrorClass::Render,
                    error: e.to_string(),
                    attempts: n.attempt,
                    providers_tried: vec![],
                    first_failure: Utc::now(),
                };
                until_ok("dead-letter", || self.dead_letter(input, &letter)).await;
                return self.status(n, State::DeadLettered).with_error(Some(ErrorClass::Render), e.to_string());
            }
        };
        let max_segments = self.config.channels.get(&n.channel).map_or(u32::MAX, |c| c.max_segments);
        if let Err(error) = rules::check(&content, max_segments) {
            let now = Utc::now();
            let refused = Failed {
                error,
                exhausted: false,
                attempts: 0,
                providers_tried: vec![],
                first_failure: now,
                last_failure: now,
            };
            return self.failed(input, n, &prefs, refused).await;
        }
        let outgoing = Outgoing { notification_id: n.notification_id.clone(), priority: n.priority, content };
        // A critical message that can go another way does not wait out an outage.
        let can_fall_back = n.priority == Priority::Critical && !n.fallback.is_empty();
        let when_down = if can_fall_back { WhenDown::GiveUp } else { WhenDown::Hold };
        // A push to devices on several platforms goes through each platform's provider.
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        for part in by_platform(outgoing) {
            match self.chain.send(&part, when_down).await {
                Ok(s) => sent.push(s),
                Err(f) => failed.push(f),
            }
        }
        if sent.is_empty() {
            let first = failed.into_iter().next().expect("a message has at least one part");
            return self.failed(input, n, &prefs, first).await;
        }
        let mut s = self.status(n, State::Sent);
        s.provider = Some(sent.iter().map(|p| p.provider.as_str()).collect::<Vec<_>>().join("+"));
        s.provider_message_id = sent.iter().find_map(|p| p.receipt.provider_message_id.clone());
        s.attempts = n.attempt + sent.iter().map(|p| p.attempts).sum::<u32>();
        if !failed.is_empty() {
            // Sent to some devices: say which failed, so invalid tokens can be cleaned up.
            let why: Vec<String> = failed.iter().map(|f| f.error.to_string()).collect();
            let class = failed.iter().any(|f| f.error.invalid_recipient).then_some(ErrorClass::Permanent);
            s = s.with_error(class, format!("not every device took it: {}", why.join("; ")));
        }
        s
    }

    fn suppressed(&self, n: &Notification, reason: String) -> StatusRecord {
        self.status(n, State::Suppressed).with_error(None, reason)
    }

    async fn failed(&self, input: &Input, n: &Notification, prefs: &Preferences, failed: Failed) -> StatusRecord {
        let attempts = n.attempt + failed.attempts;
        let mut s = self.status(n, State::Suppressed);
        s.attempts = attempts;
        s.provider = failed.providers_tried.last().cloned();
        if n.priority == Priority::Critical {
            if let Some(next) = self.fall_back(input, n, prefs).await {
                tracing::warn!(to = %next.channel, error = %failed.error, "critical notification falls back to another channel");
                s.state = State::FailedOver;
                s.fallback_notification_id = Some(next.notification_id);
                let class = if failed.exhausted { ErrorClass::Exhausted } else { ErrorClass::Permanent };
                return s.with_error(Some(class), failed.error.to_string());
            }
        }
        if failed.error.invalid_recipient {
            // Reported so the owning service can clean the address or token up.
            return s.with_error(Some(ErrorClass::Permanent), format!("invalid recipient: {}", failed.error));
        }
        let class = if failed.exhausted { ErrorClass::Exhausted } else { ErrorClass::Permanent };
        let letter = Letter {
            class,
            error: failed.error.to_string(),
            attempts,
            providers_tried: failed.providers_tried,
            first_failure: failed.first_failure,
        };
        until_ok("dead-letter", || self.dead_letter(input, &letter)).await;
        s.state = State::DeadLettered;
        s.with_error(Some(class), failed.error.to_string())
    }

    /// Hands a critical notification that failed for good on this channel to
    /// the next channel of its fallback list that the user can receive. The
    /// copy has its own deterministic id, so a redelivery republishes the
    /// same one and its worker's dedupe absorbs it.
    async fn fall_back(&self, input: &Input, n: &Notification, prefs: &Preferences) -> Option<Notification> {
        let at = n
            .fallback
            .iter()
            .position(|c| prefs.recipient(*c).is_some() && prefs.suppression(*c, &n.category).is_none())?;
        let channel = n.fallback[at];
        let next = Notification {
            notification_id: notification_id(&n.event_id, channel, &n.user_id, &n.template),
            channel,
            recipient: prefs.recipient(channel)?,
            fallback: n.fallback[at + 1..].to_vec(),
            attempt: 0,
            created_at: self.clock.now(),
            ..n.clone()
        };
        let topic = channel.topic(Priority::Critical);
        until_ok("publish the fallback", || async {
            let passed_on = input
                .headers
                .iter()
                .filter(|(k, _)| k == headers::CORRELATION_ID || k == headers::TRACEPARENT)
                .map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap_or_default()));
            let passed_on = tidings_core::kafka::headers(passed_on);
            delivered(enqueue_json(&self.producer, &topic, &next.user_id, &next, Some(passed_on)).await?).await
        })
        .await;
        Some(next)
    }

    /// Steps 3 to 5: dedupe record, status, published mark.
    async fn record(&self, n: &Notification, status: StatusRecord) {
        let ttl = self.config.worker.dedupe_ttl;
        let mut record = DedupeRecord { status, published: false };
        let json = serde_json::to_string(&record).expect("records serialize to JSON");
        until_ok("record outcome", || self.store.finish(&n.notification_id, &json, ttl)).await;
        until_ok("write status", || self.publish(&record.status)).await;
        record.published = true;
        let json = serde_json::to_string(&record).expect("records serialize to JSON");
        until_ok("mark published", || self.store.finish(&n.notification_id, &json, ttl)).await;
        tracing::debug!(state = record.status.state.as_str(), "outcome recorded");
        metrics::counter!("tidings_notifications_total", "channel" => self.channel.as_str(), "state" => record.status.state.as_str())
            .increment(1);
    }

    /// A copy of a notification that already has an outcome.
    async fn duplicate(&self, n: &Notification, raw: &str) {
        if let Ok(mut record) = serde_json::from_str::<DedupeRecord>(raw) {
            if !record.published {
                // The worker that sent it died before its status was acknowledged.
                until_ok("write status", || self.publish(&record.status)).await;
                record.published = true;
                let json = serde_json::to_string(&record).expect("records serialize to JSON");
                let ttl = self.config.worker.dedupe_ttl;
                until_ok("mark published", || self.store.finish(&n.notification_id, &json, ttl)).await;
            }
        }
        let status = self.status(n, State::Duplicate);
        until_ok("write status", || self.publish(&status)).await;
    }

    fn status(&self, n: &Notification, state: State) -> StatusRecord {
        StatusRecord::of(n, state, self.clock.now())
    }

    async fn publish(&self, status: &StatusRecord) -> Result<(), rdkafka::error::KafkaError> {
        delivered(enqueue_json(&self.producer, STATUS_TOPIC, &status.user_id, status, None).await?).await
    }

    async fn dead_letter(&self, input: &Input, letter: &Letter) -> Result<(), rdkafka::error::KafkaError> {
        let dl = DeadLetter {
            original_topic: input.topic.clone(),
            original_partition: input.partition,
            original_offset: input.offset,
            error_class: letter.class,
            error: letter.error.clone(),
            attempts: letter.attempts,
            providers_tried: letter.providers_tried.clone(),
            first_failure: letter.first_failure,
            last_failure: Utc::now(),
        };
        let topic = self.channel.dlq_topic();
        delivered(
            enqueue_dead_letter(&self.producer, &topic, input.key.as_deref(), input.payload.as_deref(), &dl).await?,
        )
        .await
    }
}

/// Splits a push to devices on several platforms into one message a platform.
fn by_platform(message: Outgoing) -> Vec<Outgoing> {
    let Content::Push { tokens, title, body } = &message.content else { return vec![message] };
    let mut platforms: Vec<&str> = tokens.iter().map(|t| t.platform.as_str()).collect();
    platforms.sort_unstable();
    platforms.dedup();
    if platforms.len() < 2 {
        return vec![message];
    }
    platforms
        .into_iter()
        .map(|platform| Outgoing {
            content: Content::Push {
                tokens: tokens.iter().filter(|t| t.platform == platform).cloned().collect(),
                title: title.clone(),
                body: body.clone(),
            },
            ..message.clone()
        })
        .collect()
}
