//! The `tidings` binary's library: role wiring, embedded infrastructure for
//! `tidings dev` and tests, and the subcommands.
//!
//! # Layout
//!
//! - [`cli`]: the command line.
//! - [`fleet`]: opening the store, building providers, spawning intake, workers and the scheduler.
//! - [`serve`]: `/metrics`, `/healthz` and `/readyz` on `[metrics] listen`.
//! - [`traces`]: the OTLP span exporter, when `[traces] otlp_endpoint` is set.
//! - [`embedded`]: librdkafka's mock cluster on its own thread, and a private `redis-server` (or three as a Redis Cluster).
//! - [`commands`]: one module per subcommand that is more than a role (`dev`, `dlq`, `prefs`, `templates`, `topics`).

pub mod cli;
pub mod commands;
pub mod embedded;
pub mod fleet;
pub mod serve;
pub mod traces;
