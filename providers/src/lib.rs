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
//! - [`feedback`]: what providers say after accepting a message (their callbacks), and why a callback is refused.
//! - [`registry`]: from a `[providers.<name>]` section to its adapter, each kind reading its own `config.rs`.
//! - [`rules`]: what each channel accepts (E.164, SMS segments, push payload size), checked before sending.
//! - [`sandbox`]: writes each message to an outbox folder, with latency, error-rate and outage knobs.
//!
//! Each adapter folder has the same shape: `mod.rs` (the [`Provider`] impl and
//! construction), `config.rs` (its settings and their checks), `request.rs`
//! (building the provider's request), `response.rs` (classifying its
//! answers), and `callback.rs` where the provider reports back later.

pub mod apns;
pub mod error;
pub mod fcm;
pub mod feedback;
pub mod message;
pub mod registry;
pub mod rules;
pub mod sandbox;
pub mod sendgrid;
pub mod smtp;
pub mod twilio;
pub mod vonage;
pub mod webhook;

pub use error::{ErrorKind, ProviderError};
pub use message::{Content, Outgoing, Receipt};
pub use registry::{build, ConfigError};

use async_trait::async_trait;
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
