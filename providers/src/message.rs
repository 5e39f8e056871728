//! The rendered message a provider sends.

use serde::Serialize;
use tidings_core::notification::PushToken;
use tidings_core::Channel;

#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    /// Stable across redeliveries: adapters pass it on where the provider
    /// takes an idempotency key or message id.
    pub notification_id: String,
    pub content: Content,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "channel")]
pub enum Content {
    Email { to: String, subject: String, text: String, html: String },
    Sms { to: String, body: String },
    Push { tokens: Vec<PushToken>, title: String, body: String },
    Webhook { url: String, body: serde_json::Value },
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
}

/// What the provider said when it accepted the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    pub provider_message_id: Option<String>,
}
