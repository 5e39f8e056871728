//! What a callback changes, applied by the consumer of `tidings.callbacks`
//! ([`crate::consume`]) from the record the route wrote before answering:
//!
//! - feedback on a notification becomes one status record per notification
//!   and state (a copy of the callback records nothing more), keyed by the
//!   notification's user, built on the outcome its worker recorded (so it
//!   carries event, user, channel, priority, correlation and trace ids);
//! - a hard bounce, a complaint and a permanent SMS failure list the
//!   address; soft ones are counted, and list it once
//!   `callbacks.soft_bounces` came within `callbacks.soft_bounce_window`;
//! - an unsubscribe at the provider opts the user out of the categories
//!   that carry unsubscribe links (the address is not listed);
//! - STOP lists the number, START takes it off the list when STOP listed
//!   it (and only then).
//!
//! Feedback on a notification whose outcome is no longer remembered (older
//! than `worker.dedupe_ttl`, or never ours) is logged and counted; its
//! address is still listed when the feedback calls for it.
//!
//! Applying a record again (read again after a crash or a rebalance) changes
//! nothing more: the time of everything written is the time the callback
//! was received; the sighting that drops copies of a callback is first for
//! the record that made it until that record is applied, a copy after; a
//! soft bounce counts once per record; and the rest (listing, opting out,
//! lifting) sets what it sets. A status record written again (a crash
//! between its acknowledgement and the note that it was applied) is the
//! same, byte for byte.

use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tidings_core::channel::STATUS_TOPIC;
use tidings_core::kafka::{delivered, enqueue_json};
use tidings_core::persist::until_ok;
use tidings_core::redact::printable;
use tidings_core::status::recorded_status;
use tidings_core::store::SharedStore;
use tidings_core::suppression::{normalize, Cause, Suppression};
use tidings_core::{Config, State, StatusRecord};
use tidings_providers::feedback::{Feedback, Keyword, Outcome};

/// One thing to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// `provider` (its configured name) said `feedback`.
    Feedback { provider: String, feedback: Feedback },
    /// `number` texted `keyword` to `provider`.
    Keyword { provider: String, keyword: Keyword, number: String },
}

impl Work {
    /// The record's key: what it is about, so that the copies of one
    /// callback, and a number's STOP and START, are applied one after
    /// another in the order they came.
    pub fn key(&self) -> &str {
        match self {
            Work::Feedback { provider, feedback: f } => f
                .notification_id
                .as_deref()
                .or(f.provider_message_id.as_deref())
                .or(f.address.as_deref())
                .unwrap_or(provider),
            Work::Keyword { number, .. } => number,
        }
    }
}

/// A callback as written to [`CALLBACKS_TOPIC`]: what to apply and when it
/// was received (the time of everything it writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub at: DateTime<Utc>,
    pub work: Work,
}

pub struct Applier {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub producer: FutureProducer,
}

impl Applier {
    /// Applies `callback`, the record `by` (its topic, partition and offset).
    pub async fn apply(&self, callback: Callback, by: &str) {
        let at = callback.at;
        match callback.work {
            Work::Feedback { provider, feedback } => self.feedback(&provider, feedback, at, by).await,
            Work::Keyword { provider, keyword, number } => self.keyword(&provider, keyword, &number, at).await,
        }
    }

    async fn feedback(&self, provider: &str, mut f: Feedback, now: DateTime<Utc>, by: &str) {
        // What a provider says is stored and printed: its control characters as text.
        f.reason = printable(&f.reason);
        for said in [&mut f.code, &mut f.provider_message_id, &mut f.notification_id].into_iter().flatten() {
            *said = printable(said);
        }
        let state = match f.outcome {
            Outcome::Delivered => Some(State::Delivered),
            Outcome::Bounced { .. } => Some(State::Bounced),
            Outcome::Complained => Some(State::Complained),
            Outcome::Undelivered { .. } | Outcome::OptedOut => Some(State::Undelivered),
            Outcome::Unsubscribed => None,
            Outcome::Progress => return counted(provider, "progress"),
        };
        // The outcome its worker recorded: feedback on a notification counts
        // only from the provider that sent it (another account's, forged or
        // mistaken, changes nothing, and cannot make the genuine one a copy).
        let sent = match &f.notification_id {
            Some(id) => until_ok("read an outcome", || self.store.dedupe_value(id)).await,
            None => None,
        };
        let sent = sent.as_deref().and_then(recorded_status);
        if let Some(sent) = &sent {
            if sent.provider.as_deref() != Some(provider) {
                tracing::warn!(provider, notification_id = ?f.notification_id, "feedback on a notification another provider sent: ignored");
                return counted(provider, "other_provider");
            }
        }
        // One sighting per provider, notification (else provider message)
        // and what it says; the key holds a digest, never the raw id.
        let about = f.notification_id.as_ref().or(f.provider_message_id.as_ref());
        let what = state.map_or("unsubscribed", State::as_str);
        let key = about.map(|about| format!("cb:{provider}:{}:{what}", digest(about)));
        if let Some(key) = &key {
            let remember = self.config.callbacks.remember;
            if !until_ok("remember a callback", || self.store.first_sighting(key, by, remember)).await {
                return counted(provider, "duplicate");
            }
        }
        match state {
            Some(state) => self.record(provider, &f, state, sent, now).await,
            None => self.unsubscribe(provider, &f, sent, now).await,
        }
        self.list(provider, &f, now, by).await;
        // Read again (a crash before its offset was committed), it is a copy.
        if let Some(key) = &key {
            until_ok("note a callback applied", || self.store.sighting_done(key, by)).await;
        }
    }

    /// An unsubscribe at the provider (SendGrid's own link, or one of its
    /// groups): its user leaves the categories that carry unsubscribe
    /// links, as with ours, and the address is not listed, so password
    /// resets and order confirmations still go to it. With no user to opt
    /// out (the notification is no longer remembered) or no such category,
    /// the address is listed instead: an unsubscribe is never dropped.
    async fn unsubscribe(&self, provider: &str, f: &Feedback, sent: Option<StatusRecord>, now: DateTime<Utc>) {
        let categories = &self.config.unsubscribe.categories;
        let user = sent.map(|sent| sent.user_id);
        let opted_out = match &user {
            Some(user) if !categories.is_empty() => {
                for category in categories {
                    crate::unsubscribe::opt_out(self.store.as_ref(), user, category).await;
                }
                true
            }
            _ => false,
        };
        if opted_out {
            return counted(provider, "unsubscribed");
        }
        tracing::info!(provider, "an unsubscribe with no user or category to opt out of: the address is listed");
        self.list_for(provider, f, Cause::Unsubscribe, now).await;
        counted(provider, "unsubscribed_listed");
    }

    /// The status record of `f`, when its notification's outcome is remembered.
    async fn record(&self, provider: &str, f: &Feedback, state: State, sent: Option<StatusRecord>, now: DateTime<Utc>) {
        let Some(sent) = sent else {
            tracing::info!(provider, notification_id = ?f.notification_id, state = state.as_str(), "feedback on a notification not remembered, or without an id");
            return counted(provider, "unknown_notification");
        };
        let status = StatusRecord {
            state,
            provider: Some(provider.to_string()),
            provider_message_id: f.provider_message_id.clone().or(sent.provider_message_id.clone()),
            provider_code: f.code.clone(),
            error_class: None,
            error: Some(tidings_core::status::cut_reason(f.reason.clone())),
            not_before: None,
            fallback_notification_id: None,
            at: now,
            ..sent
        };
        until_ok("publish a status", || async {
            delivered(enqueue_json(&self.producer, STATUS_TOPIC, &status.user_id, &status, None).await?).await
        })
        .await;
        counted(provider, "recorded");
    }

    /// Lists (or counts a soft bounce of) the address `f` names, when `f` calls for it.
    async fn list(&self, provider: &str, f: &Feedback, now: DateTime<Utc>, by: &str) {
        let cause = match f.outcome {
            Outcome::Bounced { hard: true } | Outcome::Undelivered { permanent: true } => Some(Cause::HardBounce),
            Outcome::Complained => Some(Cause::Complaint),
            Outcome::OptedOut => Some(Cause::Stop),
            Outcome::Bounced { hard: false } | Outcome::Undelivered { permanent: false } => None,
            Outcome::Delivered | Outcome::Progress | Outcome::Unsubscribed => return,
        };
        let cause = match cause {
            Some(c) => c,
            None => {
                let Some((_, address)) = f.address.as_deref().and_then(normalize) else { return };
                let window = self.config.callbacks.soft_bounce_window;
                let count = until_ok("count a soft bounce", || self.store.soft_bounce(&address, by, window)).await;
                if count < self.config.callbacks.soft_bounces {
                    return;
                }
                Cause::SoftBounces
            }
        };
        self.list_for(provider, f, cause, now).await;
    }

    /// Lists the address `f` names for `cause`.
    async fn list_for(&self, provider: &str, f: &Feedback, cause: Cause, now: DateTime<Utc>) {
        let Some((channel, address)) = f.address.as_deref().and_then(normalize) else { return };
        let entry =
            Suppression { address, channel, cause, reason: f.reason.clone(), source: provider.to_string(), at: now };
        if until_ok("list an address", || self.store.suppress(&entry)).await {
            metrics::counter!("tidings_suppressions_added_total", "cause" => cause.as_str(), "source" => "callback")
                .increment(1);
        }
    }

    async fn keyword(&self, provider: &str, keyword: Keyword, number: &str, now: DateTime<Utc>) {
        let Some((channel, number)) = normalize(number) else {
            return counted(provider, "malformed");
        };
        match keyword {
            Keyword::Stop => {
                let entry = Suppression {
                    address: number,
                    channel,
                    cause: Cause::Stop,
                    reason: "the number texted STOP".into(),
                    source: provider.to_string(),
                    at: now,
                };
                if until_ok("list a number", || self.store.suppress(&entry)).await {
                    metrics::counter!("tidings_suppressions_added_total", "cause" => "stop", "source" => "callback")
                        .increment(1);
                }
                counted(provider, "stop");
            }
            // START undoes a STOP made before it, nothing else: a bounce, a
            // complaint, an operator's entry or a later STOP stays. (A STOP
            // after a provider's entry replaces it: the number that texted
            // exists, and its START lifts it.)
            Keyword::Start => {
                let lifted = until_ok("lift a number", || self.store.lift(&number, Cause::Stop, now)).await;
                counted(provider, if lifted { "start" } else { "start_nothing_to_lift" });
            }
            Keyword::Help => counted(provider, "help"),
        }
    }
}

/// A short digest of an id from outside, for a Redis key: its length is
/// fixed whatever the id's.
fn digest(id: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(id.as_bytes())[..16])
}

fn counted(provider: &str, outcome: &'static str) {
    metrics::counter!("tidings_callbacks_applied_total", "provider" => provider.to_string(), "outcome" => outcome)
        .increment(1);
}
