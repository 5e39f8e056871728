//! Channel workers: a notification in, a delivery out.
//!
//! # Layout
//!
//! - [`render`]: handlebars templates from `templates/`, strict, with date, money and plural helpers.
//! - [`breaker`]: a circuit breaker per provider (closed / open / half-open).
//! - [`chain`]: a channel's providers in failover order, each with retry and its breaker.
//! - [`deliver`]: one notification end to end: dedupe, re-check preferences, render, send, record.
//! - [`lanes`]: per-user ordering with concurrency across users.
//! - [`limit`]: a provider's fleet-wide rate and per-process concurrency cap.
//! - [`offsets`]: which offset may be stored once out-of-order work completes.
//! - [`service`]: the consume loop of one channel.

pub mod breaker;
pub mod chain;
pub mod deliver;
pub mod lanes;
pub mod limit;
pub mod offsets;
pub mod render;
pub mod retry;
pub mod service;

pub use service::run;
