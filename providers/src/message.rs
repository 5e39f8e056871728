//! The rendered message a provider sends.

use serde::Serialize;
use tidings_core::notification::PushToken;
use tidings_core::unsubscribe::ListUnsubscribe;
use tidings_core::{Channel, Priority};

#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    /// Stable across redeliveries: adapters pass it on where the provider
    /// takes an idempotency key or message id.
    pub notification_id: String,
    /// Adapters with a notion of urgency (APNs) use it.
    pub priority: Priority,
    pub content: Content,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "channel")]
pub enum Content {
    Email {
        to: String,
        subject: String,
        text: String,
        html: String,
        /// `List-Unsubscribe` and one-click (RFC 8058), for email of the configured categories.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unsubscribe: Option<ListUnsubscribe>,
    },
    Sms {
        to: String,
        body: String,
    },
    Push {
        tokens: Vec<PushToken>,
        title: String,
        body: String,
    },
    Webhook {
        url: String,
        body: serde_json::Value,
        /// The user's signing keys, which the worker adds after rendering.
        #[serde(skip)]
        keys: crate::webhook::keys::SigningKeys,
    },
}

impl Content {
    pub fn channel(&self) -> Channel {
        match self {
            Content::Email { .. } => Channel::Email,
            Content::Sms { .. } => Channel::Sms,
            Content::Push { .. } => Channel::Push,
            Content::Webhook { .. } => Channel::Webhook,
        }
    }

    /// What the message is, for an error saying no provider takes it
    /// (`email`, or `push to apns` naming the platforms).
    pub fn kind(&self) -> String {
        match self {
            Content::Push { tokens, .. } => {
                let mut platforms: Vec<&str> = tokens.iter().map(|t| t.platform.as_str()).collect();
                platforms.sort_unstable();
                platforms.dedup();
                format!("push to {}", platforms.join("+"))
            }
            other => other.channel().to_string(),
        }
    }
}

/// What the provider said when it accepted the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    pub provider_message_id: Option<String>,
}

/// One receipt for a message sent to several devices: sent when any device
/// took it. When none did, the error that says most about what to do next:
/// a retryable one first, then the provider being down, then the message's
/// own fault, and an invalid recipient only when every device was invalid.
pub fn fan_in(sent: Vec<String>, failures: Vec<crate::ProviderError>) -> Result<Receipt, crate::ProviderError> {
    use crate::ErrorKind::*;
    for f in failures.iter().filter(|f| f.invalid_recipient) {
        tracing::warn!(error = %f, "a device token was refused");
    }
    if let Some(first) = sent.into_iter().next() {
        return Ok(Receipt { provider_message_id: Some(first) });
    }
    let rank = |e: &crate::ProviderError| match (e.kind, e.invalid_recipient) {
        (Transient, _) => 0,
        (ProviderDown, _) => 1,
        (Permanent, false) => 2,
        (Permanent, true) => 3,
    };
    failures
        .into_iter()
        .min_by_key(rank)
        .map(Err)
        .unwrap_or_else(|| Err(crate::ProviderError::invalid_recipient("no device token for this provider")))
}
