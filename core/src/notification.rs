//! The notification record: what intake writes to `tidings.<channel>.<priority>`
//! (key = user id) and a channel worker delivers.

use crate::{Channel, Priority};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// A push device token and the service it belongs to (`fcm` or `apns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushToken {
    pub platform: String,
    pub token: String,
}

/// Where the notification goes, in the shape its channel needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Recipient {
    Email { address: String },
    Sms { phone: String },
    Push { tokens: Vec<PushToken> },
    Webhook { url: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// Deterministic: see [`notification_id`].
    pub notification_id: String,
    /// The CloudEvents `source` of the event: with `event_id`, what
    /// identifies it (two services may each send an event "1").
    #[serde(default)]
    pub source: String,
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    pub channel: Channel,
    pub priority: Priority,
    /// The template folder under `templates/` (usually the event type).
    pub template: String,
    /// Preference category (`transactional`, `marketing`, …) checked against opt-outs.
    pub category: String,
    pub locale: String,
    /// IANA time zone of the user, for dates in templates and quiet hours.
    pub timezone: String,
    pub recipient: Recipient,
    /// Template variables: the event's `data`, as the JSON text it arrived as.
    pub data: Box<RawValue>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// Channels to try, in order, if this one fails for good (critical only).
    #[serde(default)]
    pub fallback: Vec<Channel>,
    /// How many delivery attempts came before this copy (0 when fresh).
    #[serde(default)]
    pub attempt: u32,
}

/// The id of the notification for (event, channel, user), the event named
/// by its CloudEvents `source` and `id` (only the two together identify it).
///
/// A hash of exactly those four, so a redelivered or replayed event maps to
/// the same id and the worker's dedupe turns it into a `duplicate`. Nothing
/// the configuration decides goes in: a record read again after a deploy
/// changed its route's template, priority or mode (`all` or `first`) is the
/// notification it was, not a second one. (A deploy that adds a channel to
/// a route sends the records read again on it too, as the route now asks.)
pub fn notification_id(source: &str, event_id: &str, channel: Channel, user_id: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [source, event_id, channel.as_str(), user_id] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Header names carried on channel-topic records.
pub mod headers {
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const TRACEPARENT: &str = "traceparent";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_id_is_deterministic_and_separates_its_parts() {
        let a = notification_id("/shop", "e1", Channel::Email, "u1");
        assert_eq!(a, notification_id("/shop", "e1", Channel::Email, "u1"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, notification_id("/shop", "e1", Channel::Sms, "u1"));
        assert_ne!(a, notification_id("/shop", "e2", Channel::Email, "u1"));
        assert_ne!(a, notification_id("/billing", "e1", Channel::Email, "u1"), "another service's e1");
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(notification_id("/s", "ab", Channel::Email, "c"), notification_id("/s", "a", Channel::Email, "bc"));
    }
}

/// A notification held until its `not_before`, with the headers it goes back with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deferred {
    pub notification: Notification,
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}
