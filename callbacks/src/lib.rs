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
//! - [`routes`]: the HTTP routes, one per provider callback, each checking
//!   and reading with its provider's `callback.rs`.
//! - [`verify`]: each configured provider's verification material.
//! - [`apply`]: turning what was queued into status records and suppressions.
//! - [`unsubscribe`]: `GET` and `POST /u/{token}` (RFC 8058).

pub mod apply;
pub mod routes;
pub mod unsubscribe;
pub mod verify;

use std::sync::Arc;
use tidings_core::store::SharedStore;
use tidings_core::{Clock, Config};
use tokio::sync::mpsc;

/// Serves the role on `listener` until `shutdown`, with `extra` routes
/// beside its own (the probes); returns once the queue is drained.
pub async fn run(
    config: Arc<Config>,
    store: SharedStore,
    clock: Clock,
    listener: tokio::net::TcpListener,
    extra: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let producer = tidings_core::kafka::producer(&config.kafka).map_err(Error::Kafka)?;
    let (tx, rx) = mpsc::channel(config.callbacks.queue.max(1));
    let applier = apply::Applier { config: config.clone(), store: store.clone(), producer, clock: clock.clone() };
    let applying = tokio::spawn(applier.run(rx));
    let state = routes::State::new(&config, store, clock, tx)?;
    let app = routes::router(state).merge(extra);
    tracing::info!(addr = ?listener.local_addr().ok(), "callbacks listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(Error::Serve)?;
    // Every sender is gone with the router: the applier drains and ends.
    applying.await.map_err(|e| Error::Applier(e.to_string()))?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] tidings_providers::ConfigError),
    #[error("serving callbacks: {0}")]
    Serve(std::io::Error),
    #[error("applying callbacks: {0}")]
    Applier(String),
}
