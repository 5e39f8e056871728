//! Intake: domain events in, notifications out.
//!
//! # Layout
//!
//! - [`route`]: the pure decision for one event: which channels, which
//!   recipients, now or after quiet hours, or why not at all.
//! - [`service`]: the consume loop: decode, hydrate preferences, route,
//!   produce, and store the offset once every outcome is acknowledged.

pub mod route;
pub mod service;

pub use service::run;
