//! The shared vocabulary of Tidings: what every role says to every other.
//!
//! # Layout
//!
//! - [`caps`]: per-user frequency caps, counted once per notification.
//! - [`backoff`]: the exponential backoff with full jitter every retry loop uses.
//! - [`channel`]: delivery channels and priorities, and the topic names they map to.
//! - [`event`]: CloudEvents 1.0 input, structured and binary mode.
//! - [`notification`]: the record intake writes to a channel topic, with its deterministic id.
//! - [`status`]: the outcome record on `tidings.status`.
//! - [`digest`]: a user's events of one type collected into one notification.
//! - [`dead_letter`]: the headers a dead-lettered record carries.
//! - [`persist`]: retrying Redis and Kafka calls until they succeed.
//! - [`prefs`]: a user's preferences, validated when written.
//! - [`quiet_hours`]: when a user's quiet window ends, across time zones and DST.
//! - [`config`]: the TOML configuration, every field documented.
//! - [`clock`]: the wall clock, which `tidings dev --now` can start anywhere.
//! - [`progress`]: counters of durable work, for progress and idleness in `tidings dev`.
//! - [`kafka`]: librdkafka client settings and the producer helpers every role shares.
//! - [`store`]: the Redis state (preferences, dedupe records, deferred messages).
//! - [`suppression`]: addresses and numbers that get nothing more, and why.
//! - [`telemetry`]: health and readiness, and the metrics every role shares.
//! - [`trace`]: W3C trace context from event to provider answer, across Kafka.
//! - [`unsubscribe`]: signed one-click unsubscribe links (RFC 8058), with rotatable keys.
//! - [`testing`] (feature `testing`): strategies for property tests.

pub mod backoff;
pub mod caps;
pub mod channel;
pub mod clock;
pub mod config;
pub mod dead_letter;
pub mod digest;
pub mod event;
pub mod kafka;
pub mod notification;
pub mod persist;
pub mod prefs;
pub mod progress;
pub mod quiet_hours;
pub mod redact;
pub mod status;
pub mod store;
pub mod suppression;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace;
pub mod unsubscribe;

pub use channel::{Channel, Priority};
pub use clock::Clock;
pub use config::Config;
pub use notification::{Notification, Recipient};
pub use prefs::Preferences;
pub use status::{State, StatusRecord};
