//! The callbacks role: what providers say after accepting a message, and
//! the one-click unsubscribe links, coming back in over HTTP.
//!
//! A request is checked (each provider's signature, a fresh timestamp),
//! read, and written to `tidings.callbacks`; the provider is answered once
//! the cluster has it. The role's consumer of that topic applies it:
//! status records on `tidings.status` (`delivered`, `bounced`,
//! `complained`, `undelivered`), suppression-list entries in Redis, STOP
//! and START. The role meets the other stages only through those: it never
//! calls a worker.
//!
//! A callback answered is never lost with a pod: what one pod wrote,
//! another applies, and a record applied again changes nothing more.
//!
//! # Layout
//!
//! - [`service`]: the role: serve the routes and apply what is written, until shutdown.
//! - [`listener`]: serving them to the internet, each client bounded.
//! - [`routes`]: the HTTP routes, one per provider callback, each checking
//!   and reading with its provider's `callback.rs`.
//! - [`verify`]: each configured provider's verification material.
//! - [`apply`]: turning a callback into status records and suppressions.
//! - [`consume`]: reading `tidings.callbacks` and applying it, at least once.
//! - [`unsubscribe`]: `GET` and `POST /u/{token}` (RFC 8058).

pub mod apply;
pub mod consume;
pub mod listener;
pub mod routes;
pub mod service;
pub mod unsubscribe;
pub mod verify;

pub use service::{run, Error};
