//! Provider adapters: one per external service, each turning a rendered
//! message into that service's API call and its answer into a [`Receipt`] or
//! a classified [`ProviderError`]. Adapters know nothing of Kafka or Redis.
//!
//! # Layout
//!
//! - [`message`]: the rendered message a provider sends, and the receipt it returns.
//! - [`error`]: the classification every answer maps to (`Transient`, `Permanent`, `ProviderDown`).
//! - [`fcm`]: push through FCM HTTP v1, with OAuth2 tokens from a service-account key.
//! - [`apns`]: push through APNs over HTTP/2 with an ES256 provider token.
//! - [`smtp`]: email over SMTP (lettre), pooled, STARTTLS or implicit TLS.
//! - [`sendgrid`]: email through the SendGrid v3 `mail/send` API.
//! - [`twilio`]: SMS through the Twilio Messages API.
//! - [`webhook`]: signed (Standard Webhooks) POSTs to users' URLs, never to internal addresses.
//! - [`vonage`]: SMS through the Vonage SMS API (per-message status in a 200 answer).
//! - [`rules`]: what each channel accepts (E.164, SMS segments, push payload size), checked before sending.
//! - [`sandbox`]: writes each message to an outbox folder, with latency, error-rate and outage knobs.
//!
//! Each adapter folder has the same shape: `mod.rs` (the [`Provider`] impl and
//! construction), `request.rs` (building the provider's request), and
//! `response.rs` (classifying its answers).

pub mod apns;
pub mod error;
pub mod fcm;
pub mod message;
pub mod rules;
pub mod sandbox;
pub mod sendgrid;
pub mod smtp;
pub mod twilio;
pub mod vonage;
pub mod webhook;

pub use error::{ErrorKind, ProviderError};
pub use message::{Content, Outgoing, Receipt};

use async_trait::async_trait;
use std::sync::Arc;
use tidings_core::config::ProviderConfig;
use tidings_core::Channel;

/// One external service that can deliver messages of some channels.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The configured name, used in status records, logs and metrics.
    fn name(&self) -> &str;

    /// Whether this provider can deliver on `channel`.
    fn serves(&self, channel: Channel) -> bool;

    /// Whether this provider can take this particular message (a push
    /// provider takes messages with tokens of its platform).
    fn accepts(&self, _content: &Content) -> bool {
        true
    }

    /// Whether each call goes to the recipient's own endpoint (webhooks): its
    /// slowness and failures are that recipient's, and move no breaker.
    fn calls_recipients(&self) -> bool {
        false
    }

    /// Sends one message. The call is bounded by the provider's own timeout.
    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError>;
}

/// The HTTP client every adapter starts from: bounded by the provider's
/// timeout, and never following a redirect (a 307 or 308 would re-send the
/// body, and with it a secret some APIs take there, to wherever it points).
pub(crate) fn http_client(timeout: std::time::Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none())
}

/// Builds the adapter named `name` from its configuration.
pub fn build(name: &str, config: &ProviderConfig) -> Result<Arc<dyn Provider>, ProviderError> {
    Ok(match config {
        ProviderConfig::Smtp(c) => Arc::new(smtp::Smtp::new(name, c)?),
        ProviderConfig::Twilio(c) => Arc::new(twilio::Twilio::new(name, c)?),
        ProviderConfig::Sandbox(c) => Arc::new(sandbox::Sandbox::new(name, c)?),
        ProviderConfig::Sendgrid(c) => Arc::new(sendgrid::Sendgrid::new(name, c)?),
        ProviderConfig::Vonage(c) => Arc::new(vonage::Vonage::new(name, c)?),
        ProviderConfig::Webhook(c) => Arc::new(webhook::Webhook::new(name, c)?),
        ProviderConfig::Fcm(c) => Arc::new(fcm::Fcm::new(name, c)?),
        ProviderConfig::Apns(c) => Arc::new(apns::Apns::new(name, c)?),
    })
}
