//! The consume loop of one channel.
//!
//! Each priority has its own consumer (group `<prefix>-worker-<channel>-<priority>`)
//! and its own in-flight budget, so a bulk backlog never takes the slots a
//! password reset needs. Within a consumer, records of one user run in order
//! ([`Lanes`]) and different users run concurrently; an offset is stored only
//! when every record below it has a durable outcome ([`Offsets`]).
//!
//! Shutdown: stop reading, let in-flight records finish (up to
//! `drain_timeout`; what is left is abandoned and redelivered later), store
//! and commit offsets, leave the group.

use crate::chain::Chain;
use crate::deliver::{Deliverer, Input};
use crate::lanes::Lanes;
use crate::offsets::Offsets;
use crate::render::Renderer;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::kafka;
use tidings_core::progress::Progress;
use tidings_core::store::SharedStore;
use tidings_core::{Channel, Clock, Config, Priority};
use tidings_providers::Provider;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("channel {0} has no providers configured")]
    NoProviders(Channel),
}

/// What a worker for one channel is built from.
pub struct Worker {
    pub channel: Channel,
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub renderer: Arc<Renderer>,
    pub providers: Vec<Arc<dyn Provider>>,
    pub clock: Clock,
    pub progress: Arc<Progress>,
}

/// Runs the channel's worker until `shutdown` completes.
pub async fn run(worker: Worker, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    if worker.providers.is_empty() {
        return Err(WorkerError::NoProviders(worker.channel));
    }
    let config = worker.config.clone();
    let deliverer = Arc::new(Deliverer {
        channel: worker.channel,
        producer: kafka::producer(&config.kafka)?,
        chain: Chain::new(
            worker.providers,
            config.worker.retry.clone(),
            &config.worker.breaker,
            Some(worker.store.clone()),
        ),
        config: config.clone(),
        store: worker.store,
        renderer: worker.renderer,
        clock: worker.clock,
        owner: format!("{}-{:016x}", worker.channel, rand::random::<u64>()),
    });
    let token = CancellationToken::new();
    let mut loops = JoinSet::new();
    for priority in Priority::ALL {
        let group = config.group(&format!("worker-{}-{}", worker.channel, priority));
        let consumer = kafka::consumer(&config.kafka, &group)?;
        consumer.subscribe(&[&worker.channel.topic(priority)])?;
        loops.spawn(consume(deliverer.clone(), consumer, worker.progress.clone(), token.clone()));
    }
    // Learn of breakers other workers of the fleet opened.
    let (d, t) = (deliverer.clone(), token.clone());
    loops.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = t.cancelled() => return,
                _ = tick.tick() => d.chain.sync_fleet().await,
            }
        }
    });
    tracing::info!(channel = %worker.channel, "worker started");
    tokio::select! {
        _ = shutdown => {}
        // A loop only ends on its own if its consumer failed for good.
        Some(_) = loops.join_next() => {}
    }
    token.cancel();
    while loops.join_next().await.is_some() {}
    tracing::info!(channel = %worker.channel, "worker stopped");
    Ok(())
}

type Done = (String, i32, i64);

fn pause(consumer: &StreamConsumer, pause: bool) -> Result<(), KafkaError> {
    let assignment = consumer.assignment()?;
    if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    }
}

async fn consume(
    deliverer: Arc<Deliverer>,
    consumer: StreamConsumer,
    progress: Arc<Progress>,
    token: CancellationToken,
) {
    let max_in_flight = deliverer.config.worker.max_in_flight.max(1);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut offsets = Offsets::default();
    let mut lanes = Lanes::default();
    let mut tasks = JoinSet::new();
    let finish = |offsets: &mut Offsets, (topic, partition, offset): Done| {
        if let Some(safe) = offsets.finish(&topic, partition, offset) {
            if let Err(e) = consumer.store_offset(&topic, partition, safe) {
                // The partition moved to another member; it reads the record again.
                tracing::debug!(error = %e, "offset not stored");
            }
        }
        Progress::add(&progress.finished, 1);
    };
    // Every provider open: stop fetching (keep polling, so the group keeps us)
    // until a breaker is due to probe.
    let mut paused = false;
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            Some(done) = done_rx.recv() => finish(&mut offsets, done),
            _ = check.tick() => {
                let down = deliverer.chain.all_open();
                if down != paused {
                    if let Err(e) = pause(&consumer, down) {
                        tracing::warn!(error = %e, "cannot pause or resume consumption");
                    } else {
                        paused = down;
                        tracing::warn!(channel = %deliverer.channel, paused, "every provider is open: consumption {}", if down { "paused" } else { "resumed" });
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            message = consumer.recv(), if offsets.in_flight() < max_in_flight => match message {
                Ok(m) => {
                    let input = Input {
                        topic: m.topic().to_string(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: kafka::header_pairs(&m),
                    };
                    offsets.begin(&input.topic, input.partition, input.offset);
                    let mut turn = lanes.enter(&String::from_utf8_lossy(input.key.as_deref().unwrap_or_default()));
                    let deliverer = deliverer.clone();
                    let done_tx = done_tx.clone();
                    tasks.spawn(async move {
                        turn.wait().await;
                        deliverer.process(&input).await;
                        drop(turn.done);
                        let _ = done_tx.send((input.topic, input.partition, input.offset));
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Drain: finish what is in flight, within the deadline.
    let deadline = tokio::time::sleep(deliverer.config.worker.drain_timeout);
    tokio::pin!(deadline);
    while offsets.in_flight() > 0 {
        tokio::select! {
            _ = &mut deadline => {
                tracing::warn!(abandoned = offsets.in_flight(), "drain timed out; abandoned records will be redelivered");
                tasks.abort_all();
                break;
            }
            Some(done) = done_rx.recv() => finish(&mut offsets, done),
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "nothing to commit at shutdown");
    }
    consumer.unsubscribe();
}
