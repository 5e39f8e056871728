//! The callbacks role: what providers say after accepting a message, and
//! the one-click unsubscribe links, coming back in over HTTP.
//!
//! A request is checked (each provider's signature, a fresh timestamp),
//! read, and queued; the provider is answered at once. The queue is
//! applied in the background: status records on `tidings.status`
//! (`delivered`, `bounced`, `complained`, `undelivered`), suppression-list
//! entries in Redis, STOP and START. The role meets the other stages only
//! through those: it never calls a worker.
//!
//! Callbacks queued and not yet applied when the process dies are lost
//! (providers do not send an answered callback again); SIGTERM stops taking
//! requests and drains the queue first.
//!
//! # Layout
//!
//! - [`service`]: the role: serve the routes until shutdown, then drain the queue.
//! - [`listener`]: serving them to the internet, each client bounded.
//! - [`routes`]: the HTTP routes, one per provider callback, each checking
//!   and reading with its provider's `callback.rs`.
//! - [`verify`]: each configured provider's verification material.
//! - [`apply`]: turning what was queued into status records and suppressions.
//! - [`unsubscribe`]: `GET` and `POST /u/{token}` (RFC 8058).

pub mod apply;
pub mod listener;
pub mod routes;
pub mod service;
pub mod unsubscribe;
pub mod verify;

pub use service::{run, Error};
