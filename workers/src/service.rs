//! The consume loop of one channel.
//!
//! Each priority has its own consumer (group `<prefix>-worker-<channel>-<priority>`)
//! and its own budget, so a bulk backlog never takes the slots a password
//! reset needs. Within a consumer, records of one user run in order
//! ([`Lanes`]) and different users run concurrently; an offset is stored only
//! when every record below it has a durable outcome ([`Offsets`]).
//!
//! Two limits, both explicit: `max_in_flight` deliveries run at once (a
//! record waiting for its user's earlier one takes no place, so one slow user
//! holds only its own lane), and `max_buffered` records are read and
//! unfinished at most, four times that while slots are free
//! ([`Turns::full`]). A full buffer stops taking records from librdkafka's
//! queue, which goes on fetching ahead, so reading goes on at once when a
//! place frees. A buffer that stays full for [`kafka::stall_limit`], or every
//! provider open, *pauses* the partitions and polls on: the worker stays in
//! its group through an outage of any length (`max.poll.interval.ms` is never
//! reached).
//! Pausing is kept for that: librdkafka drops what it fetched ahead of a
//! paused partition, and fetching again after a resume takes hundreds of ms.
//!
//! A partition taken away in a rebalance is forgotten at once and its
//! deliveries are told to stop at their next safe point; the new owner
//! delivers them, and the dedupe claim keeps the two from both sending.
//!
//! A delivery that panics is caught: its record is dead-lettered and the
//! loop goes on. A consume loop that panics ends the worker with an error.
//!
//! Shutdown: stop reading, let in-flight records finish (up to
//! `drain_timeout`; what is left is told to stop and redelivered later),
//! store and commit offsets, leave the group.

use crate::chain::Chain;
use crate::deliver::{Deliverer, Input, Marks};
use crate::lanes::Lanes;
use crate::offsets::Offsets;
use crate::render::Renderer;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::ClientContext;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::kafka;
use tidings_core::progress::Progress;
use tidings_core::store::SharedStore;
use tidings_core::telemetry::{Beat, Health, Outcomes, Watched};
use tidings_core::trace::Hop;
use tidings_core::{Channel, Clock, Config, Priority};
use tidings_providers::Provider;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("channel {0} has no providers configured")]
    NoProviders(Channel),
    #[error("the {0} consume loop panicked")]
    Panicked(Channel),
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
    pub health: Arc<Health>,
}

/// Runs the channel's worker until `shutdown` completes.
pub async fn run(worker: Worker, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    if worker.providers.is_empty() {
        return Err(WorkerError::NoProviders(worker.channel));
    }
    let config = worker.config.clone();
    let (marks, marking) = Marks::start(worker.store.clone());
    let deliverer = Arc::new(Deliverer {
        channel: worker.channel,
        producer: kafka::producer(&config.kafka)?,
        chain: Chain::new(worker.providers, &config.worker.breaker, Some(worker.store.clone()))
            .limited(&config.limits)
            .clocked(worker.clock.clone())
            .reporting(worker.progress.clone()),
        config: config.clone(),
        store: worker.store,
        renderer: worker.renderer,
        clock: worker.clock,
        owner: format!("{}-{:016x}", worker.channel, rand::random::<u64>()),
        deliveries: Default::default(),
        marks,
        outcomes: Outcomes::default(),
    });
    let token = CancellationToken::new();
    let mut loops = JoinSet::new();
    for priority in Priority::ALL {
        let group = config.group(&format!("worker-{}-{}", worker.channel, priority));
        let (rebalances, events) = mpsc::unbounded_channel();
        let topic = worker.channel.topic(priority);
        let joined = worker.health.check(format!("{topic}: joined its group"), false);
        let context = Rebalances { events: rebalances, topic: topic.clone(), watch: Watched::new("worker", joined) };
        let mut consumer_config = kafka::role_consumer_config(&config.kafka, &group);
        // librdkafka fetches ahead of what the worker takes, 64 MB a consumer by default: a
        // worker buffers its own records, and 16 MB ahead keeps its budget busy.
        if !config.kafka.options.contains_key("queued.max.messages.kbytes") {
            consumer_config.set("queued.max.messages.kbytes", "16384");
        }
        if priority == Priority::Critical {
            // A fetch that finds nothing waits at most this long for data (a
            // broker answers at once when data comes, not every one does).
            consumer_config.set("fetch.wait.max.ms", "100");
        }
        let consumer: StreamConsumer<Rebalances> = consumer_config.create_with_context(context)?;
        consumer.subscribe(&[&topic])?;
        let watch = Watch::new(worker.channel, priority, worker.health.beat(format!("{topic} consume loop")));
        loops.spawn(consume(deliverer.clone(), consumer, events, worker.progress.clone(), watch, token.clone()));
    }
    // Learn of breakers other workers of the fleet opened; not ready while every provider is open.
    let (d, t) = (deliverer.clone(), token.clone());
    let sendable = worker.health.check(format!("{}: a provider not open", worker.channel), true);
    loops.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = t.cancelled() => return,
                _ = tick.tick() => {
                    d.chain.sync_fleet().await;
                    sendable.set(!d.chain.all_open());
                }
            }
        }
    });
    tracing::info!(channel = %worker.channel, "worker started");
    let mut result = Ok(());
    tokio::select! {
        _ = shutdown => {}
        // A loop only ends on its own if its consumer failed for good, or it panicked.
        Some(ended) = loops.join_next() => {
            if ended.is_err() {
                result = Err(WorkerError::Panicked(worker.channel));
            }
        }
    }
    token.cancel();
    while let Some(ended) = loops.join_next().await {
        if ended.is_err() {
            result = Err(WorkerError::Panicked(worker.channel));
        }
    }
    // The last deliveries' published marks; one lost only makes a later copy write its status again.
    drop(deliverer);
    if tokio::time::timeout(Duration::from_secs(5), marking).await.is_err() {
        tracing::warn!("published marks not all written at shutdown");
    }
    tracing::info!(channel = %worker.channel, "worker stopped");
    result
}

/// Tells the consume loop about rebalances as they happen: the partitions
/// revoked (before they go), and that an assignment arrived (an empty list).
struct Rebalances {
    events: mpsc::UnboundedSender<Vec<i32>>,
    /// The one topic the consumer reads.
    topic: String,
    /// Lag, errors, and whether the consumer joined its group.
    watch: Watched,
}

impl ClientContext for Rebalances {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.watch.stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.error(error, reason);
    }
}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let _ = self.events.send(list.elements().iter().map(|e| e.partition()).collect());
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.watch.rebalanced(consumer, rebalance);
        if let Rebalance::Assign(_) = rebalance {
            let _ = self.events.send(Vec::new());
        }
    }
}

/// What a consume loop reports: its heartbeat, records in and out, and
/// (every check) how many it holds, runs and has paused.
struct Watch {
    beat: Beat,
    read: metrics::Counter,
    finished: metrics::Counter,
    in_flight: metrics::Gauge,
    held: metrics::Gauge,
    paused: metrics::Gauge,
}

impl Watch {
    fn new(channel: Channel, priority: Priority, beat: Beat) -> Self {
        let labels = [("channel", channel.as_str()), ("priority", priority.as_str())];
        let role = [("role", "worker"), ("channel", channel.as_str()), ("priority", priority.as_str())];
        Watch {
            beat,
            read: metrics::counter!("tidings_records_in_total", &role),
            finished: metrics::counter!("tidings_records_out_total", &role),
            in_flight: metrics::gauge!("tidings_worker_in_flight", &labels),
            held: metrics::gauge!("tidings_worker_held", &labels),
            paused: metrics::gauge!("tidings_paused_partitions", &role),
        }
    }
}

/// How far past `max_buffered` the buffer reads while its records wait for
/// their users' earlier ones and slots are free.
const BUFFER_SPAN: usize = 4;

/// A finished record: partition, generation, offset, and its user's lane.
type Done = (i32, u64, i64, u64);

/// Pauses or resumes every partition assigned now, and those assigned later.
fn pause(consumer: &StreamConsumer<Rebalances>, pause: bool) -> Result<(), KafkaError> {
    consumer.context().watch.hold().set(consumer, pause)
}

/// The consume loop's state: what is in flight, per partition and per user.
struct Turns {
    offsets: Offsets,
    lanes: Lanes,
    /// Per partition, what tells its deliveries the partition moved away.
    revoked: HashMap<i32, CancellationToken>,
}

impl Turns {
    fn finish(
        &mut self,
        consumer: &StreamConsumer<Rebalances>,
        progress: &Progress,
        (partition, generation, offset, lane): Done,
    ) {
        self.lanes.leave(lane);
        if let Some(safe) = self.offsets.finish(partition, generation, offset) {
            // librdkafka stores what it is given as the next offset to read,
            // so a restart resumes at `safe + 1` (rdkafka adds the one).
            if let Err(e) = consumer.store_offset(consumer_topic(consumer), partition, safe) {
                // The partition moved to another member; it reads the record again.
                tracing::debug!(error = %e, "offset not stored");
            }
        }
        Progress::add(&progress.finished, 1);
    }

    /// Whether the buffer takes no more records: `max_buffered` unfinished,
    /// unless a slot is free while that many wait, which means they wait for
    /// their users' earlier records (a lane), not for a slot. A broker that
    /// answers a fetch with one partition's records (tansu does) fills the
    /// buffer with a few rounds of the same users; reading on, up to
    /// [`BUFFER_SPAN`] times `max_buffered`, finds other users to run.
    fn full(&self, max_buffered: usize, slot_free: bool) -> bool {
        let buffered = self.offsets.in_flight();
        buffered >= max_buffered && (!slot_free || buffered >= max_buffered * BUFFER_SPAN)
    }

    fn revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.offsets.revoke(*p);
            if let Some(token) = self.revoked.remove(p) {
                token.cancel();
            }
        }
    }
}

/// The one topic a consumer reads (each priority has its own consumer).
fn consumer_topic(consumer: &StreamConsumer<Rebalances>) -> &str {
    &consumer.context().topic
}

async fn consume(
    deliverer: Arc<Deliverer>,
    consumer: StreamConsumer<Rebalances>,
    mut rebalances: mpsc::UnboundedReceiver<Vec<i32>>,
    progress: Arc<Progress>,
    watch: Watch,
    token: CancellationToken,
) {
    let config = &deliverer.config.worker;
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut turns = Turns { offsets: Offsets::default(), lanes: Lanes::default(), revoked: HashMap::new() };
    let mut tasks = JoinSet::new();
    // Reading pauses (polling never does) while every provider is open or the buffer stalled.
    let hold = consumer.context().watch.hold().clone();
    let mut paused_down = false;
    let mut down = false;
    let mut stalled = false;
    // Since when the buffer has been full without a break (a finished record breaks it).
    let mut full_since: Option<Instant> = None;
    let stall_limit = kafka::stall_limit(&deliverer.config.kafka);
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        let full = turns.full(config.max_buffered, slots.available_permits() > 0);
        if !full {
            (full_since, stalled) = (None, false);
        } else if full_since.is_none() {
            full_since = Some(Instant::now());
        }
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            Some(done) = done_rx.recv() => {
                turns.finish(&consumer, &progress, done);
                watch.finished.increment(1);
            }
            // (A new assignment takes the hold's state in the consumer's context.)
            Some(revoked) = rebalances.recv() => {
                turns.revoke(&revoked);
                Progress::add(&progress.revoked, revoked.len() as u64);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            // Whether every provider is open is read here, not per message: it locks every breaker.
            _ = check.tick() => {
                down = deliverer.chain.all_open();
                stalled = full_since.is_some_and(|since| since.elapsed() >= stall_limit);
                watch.beat.beat();
                let buffered = turns.offsets.in_flight();
                let running = config.max_in_flight - slots.available_permits();
                watch.in_flight.set(running as f64);
                watch.held.set(buffered.saturating_sub(running) as f64);
                let assigned = consumer.assignment().map_or(0, |a| a.count());
                watch.paused.set(if hold.is_paused() { assigned as f64 } else { 0.0 });
            }
            // A paused consumer is polled however full the buffer is: what still comes is taken.
            message = consumer.recv(), if !full || hold.is_paused() => match message {
                Ok(m) => {
                    watch.read.increment(1);
                    let input = Input {
                        topic: m.topic().to_string(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: kafka::header_pairs(&m),
                        trace: Hop::root(),
                    };
                    let generation = turns.offsets.begin(input.partition, input.offset);
                    let lane = turns.lanes.lane(input.key.as_deref().unwrap_or_default());
                    let mut turn = turns.lanes.enter(lane);
                    let revoked = turns.revoked.entry(input.partition).or_default().clone();
                    let (deliverer, done_tx, slots) = (deliverer.clone(), done_tx.clone(), slots.clone());
                    tasks.spawn(async move {
                        let mut input = input;
                        turn.wait().await;
                        // Made once its turn came: a record waiting for its user's earlier one holds no span.
                        let span = input.span(deliverer.channel);
                        let owners = deliverer.owners();
                        {
                            let _slot = slots.acquire_owned().await.expect("the slots are never closed");
                            // Boxed: the task itself stays small, so spawning it copies little.
                            let delivery = deliverer.process(&input, &owners, &revoked).instrument(span);
                            let delivery = AssertUnwindSafe(Box::pin(delivery));
                            if let Err(panic) = delivery.catch_unwind().await {
                                deliverer.panicked(&input, &owners, &panic_text(panic.as_ref())).await;
                            }
                        }
                        drop(turn.done);
                        let _ = done_tx.send((input.partition, generation, input.offset, lane));
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        let holding = down || stalled;
        if holding != hold.is_paused() {
            match pause(&consumer, holding) {
                Ok(()) => {
                    // A stalled buffer can pause and resume often under load: only an
                    // outage of every provider is worth a warning, and its end.
                    if down || paused_down {
                        tracing::warn!(channel = %deliverer.channel, paused = holding, every_provider_open = down, "consumption {}", if holding { "paused" } else { "resumed" });
                    }
                    paused_down = down;
                }
                Err(e) => tracing::warn!(error = %e, "cannot pause or resume consumption"),
            }
        }
    }
    drain(&deliverer, &consumer, &mut turns, &mut done_rx, &mut tasks, &progress).await;
    kafka::close(consumer, kafka::CLOSE_WITHIN).await;
}

/// Lets in-flight records finish within the drain timeout, polling the
/// paused consumer all the while; then tells the rest to stop.
async fn drain(
    deliverer: &Deliverer,
    consumer: &StreamConsumer<Rebalances>,
    turns: &mut Turns,
    done_rx: &mut mpsc::UnboundedReceiver<Done>,
    tasks: &mut JoinSet<()>,
    progress: &Progress,
) {
    let _ = pause(consumer, true);
    let deadline = tokio::time::sleep(deliverer.config.worker.drain_timeout);
    tokio::pin!(deadline);
    while turns.offsets.in_flight() > 0 {
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => turns.finish(consumer, progress, done),
            _ = &mut deadline => {
                tracing::warn!(abandoned = turns.offsets.in_flight(), "drain timed out; the rest stops and is redelivered");
                // As though every partition moved away: what ends from now on,
                // abandoned or not, stores no offset, so the next owner reads it
                // again (one that was sent meanwhile is a duplicate there).
                let partitions: Vec<i32> = turns.revoked.keys().copied().collect();
                turns.revoke(&partitions);
                break;
            }
            // Whatever still arrives is not begun: its offset is never stored.
            _ = consumer.recv() => {}
        }
    }
    // Told to stop, deliveries release their claims; a few seconds for that.
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            tokio::select! {
                biased;
                joined = tasks.join_next() => if joined.is_none() { break },
                _ = consumer.recv() => {}
            }
        }
    });
    if stopped.await.is_err() {
        tasks.abort_all();
    }
}

/// What a caught panic said.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
