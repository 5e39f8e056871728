//! Intake: domain events in, notifications out.
//!
//! # Layout
//!
//! - [`route`]: the pure decision for one event: which channels, which
//!   recipients, now or after quiet hours, or why not at all.
//! - [`scheduler`]: returns deferred notifications to their channel topic when due.
//! - [`service`]: the consume loop: decode, hydrate preferences, route,
//!   produce, and store the offset once every outcome is acknowledged.

pub mod route;
pub mod scheduler;
pub mod service;

pub use service::run;
