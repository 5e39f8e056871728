//! The role: its queue and applier, its routes with the probes beside them,
//! served until shutdown; then the queue drained.

use crate::{apply, listener, routes};
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
    listener::serve(listener, app, &config.callbacks, shutdown).await;
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
    #[error("applying callbacks: {0}")]
    Applier(String),
}
