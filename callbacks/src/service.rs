//! The role: the routes with the probes beside them, served until
//! shutdown, and the applier reading `tidings.callbacks` beside them.

use crate::{apply, consume, listener, routes};
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::sync::Arc;
use tidings_core::channel::CALLBACKS_TOPIC;
use tidings_core::store::SharedStore;
use tidings_core::telemetry::{Health, Watched};
use tidings_core::{Clock, Config};
use tokio_util::sync::CancellationToken;

/// Serves the role on `listener` until `shutdown`, with `extra` routes
/// beside its own (the probes); returns once every request is answered and
/// what the applier read is applied and committed.
pub async fn run(
    config: Arc<Config>,
    store: SharedStore,
    clock: Clock,
    health: Arc<Health>,
    listener: tokio::net::TcpListener,
    extra: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Status records: written however long the cluster takes.
    let producer = tidings_core::kafka::producer(&config.kafka).map_err(Error::Kafka)?;
    let writer =
        tidings_core::kafka::callbacks_producer(&config.kafka, config.callbacks.write_timeout).map_err(Error::Kafka)?;
    // Ready before it joins: answering needs the cluster, not the group.
    let watched = Watched::new("callbacks", health.check("callbacks: joined its group", true));
    let consumer: StreamConsumer<Watched> =
        tidings_core::kafka::role_consumer_config(&config.kafka, &config.group("callbacks"))
            .create_with_context(watched)
            .map_err(Error::Kafka)?;
    consumer.subscribe(&[CALLBACKS_TOPIC]).map_err(Error::Kafka)?;
    let applier = Arc::new(apply::Applier { config: config.clone(), store: store.clone(), producer: producer.clone() });
    let stop = CancellationToken::new();
    let applying = tokio::spawn(consume::consume(applier, consumer, stop.clone()));
    let state = routes::State::new(&config, store, clock, writer)?;
    let app = routes::router(state).merge(extra);
    tracing::info!(addr = ?listener.local_addr().ok(), "callbacks listening");
    listener::serve(listener, app, &config.callbacks, shutdown).await;
    stop.cancel();
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
