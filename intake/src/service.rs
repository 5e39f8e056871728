//! The intake consume loop.
//!
//! Three stages, so that both cores work and no stage waits on another's
//! round trip: a reader task takes records in batches (what is already
//! fetched, up to `batch_size`) and decodes them; a hydrator task reads what
//! each batch needs from Redis, one round trip per batch (the preferences
//! the bounded in-process cache lacks, the deferral lanes of the batch's
//! users, and the frequency caps of those the caps count), while the router
//! routes and writes the batch before it, in
//! partition order. Every write a record causes (notifications, statuses,
//! dead letters, deferrals) is enqueued before the next record is handled,
//! so per-user order holds, and its offset is stored only once all of them
//! are acknowledged. Acknowledgements are awaited in a bounded ordered
//! queue, so the loop keeps reading while earlier writes are in flight.
//!
//! Order across deferral: while a user has a notification deferred on a
//! channel, later non-critical notifications for that user and channel are
//! deferred behind it (same release time or later, released in order), so
//! quiet hours never reorder a user's messages. Critical ones go at once.
//! A batch's lanes are read while the batch before it is routed, so they may
//! lack what that routing deferred: the router carries the holds it made
//! itself until a batch hydrated after them comes (see [`Carried`]), and
//! the caps it wrote (admitting checks every value it answers from against
//! the one stored, and reads again what another process replaced).

use crate::route::{route, Outcome};
use chrono::{DateTime, Utc};
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use moka::sync::Cache;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidings_core::caps::{Admission, CapAsk};
use tidings_core::channel::{INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::config::{ChannelMode, EventRoute, OverCap, SendWindow, UnknownTypes};
use tidings_core::dead_letter::DeadLetter;
use tidings_core::digest::{self, Added, DigestAdd};
use tidings_core::event::{check_id, CloudEvent};
use tidings_core::kafka::{self, enqueue_dead_letter, enqueue_json};
use tidings_core::notification::{headers as h, notification_id, Deferred};
use tidings_core::persist::until_ok;
use tidings_core::progress::Progress;
use tidings_core::status::DIGESTED_PREFIX;
use tidings_core::store::{caps_version, lane, CapsRead, CapsSeen, Placed, SharedStore};
use tidings_core::suppression::address_of;
use tidings_core::telemetry::{Beat, Health, Outcomes, Watched};
use tidings_core::trace::{self, Hop};
use tidings_core::{Channel, Clock, Config, Notification, Preferences, Priority, State, StatusRecord};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A stage of the loop panicked: intake stops (with an error, so the
    /// process does not exit as though asked to) after committing what was
    /// acknowledged.
    #[error("intake's {0} stage failed: {1}")]
    Stage(&'static str, String),
    /// A write a record causes is larger than the producer takes: the record
    /// is dead-lettered instead (never retried, which could not help).
    #[error(
        "a record for {topic} would be {bytes} bytes, more than the {max} the producer writes (`message.max.bytes`)"
    )]
    TooLarge { topic: String, bytes: usize, max: usize },
    /// The cluster refused a write the record causes for good (see
    /// [`kafka::refused_for_good`]): the record is dead-lettered instead, so
    /// it stops neither this partition nor its next owner.
    #[error("the cluster refused a record for {topic} for good: {error}")]
    Refused { topic: String, error: KafkaError },
}

/// What every record intake writes about an event carries: the event's
/// correlation id, and this hop of its trace.
struct Traced {
    correlation_id: String,
    hop: Hop,
}

impl Traced {
    /// The span of handling `event`, child of the event's `traceparent`.
    ///
    /// An info span only while spans are exported: the log formats a span's
    /// fields when the span is made, which at intake's rates is a few percent
    /// of its CPU for context that only the rare warning inside routing
    /// would show. Otherwise it is a debug span (`TIDINGS_LOG=debug` shows it).
    fn event(event: &CloudEvent) -> (Self, tracing::Span) {
        let correlation_id = event.correlationid.clone().unwrap_or_else(|| event.id.clone());
        let span = if trace::exporting() {
            tracing::info_span!("intake.event", event_id = %event.id, event_type = %event.ty, %correlation_id)
        } else {
            tracing::debug_span!("intake.event", event_id = %event.id, event_type = %event.ty, %correlation_id)
        };
        let hop = trace::hop(&span, event.traceparent.as_deref());
        (Traced { correlation_id, hop }, span)
    }
}

/// A user's preferences as intake uses them, or why there are none to use.
type Hydrated = Arc<Result<Preferences, String>>;

/// Everything intake needs, shared by the loop.
pub struct Intake {
    config: Arc<Config>,
    store: SharedStore,
    producer: FutureProducer,
    clock: Clock,
    progress: Arc<Progress>,
    cache: Cache<String, Hydrated>,
    outcomes: Outcomes,
    /// `tidings_records_out_total` of intake, by priority.
    published: [metrics::Counter; 3],
    /// Event type -> what its category adds to its route.
    limits: HashMap<String, TypeLimits>,
}

/// What an event type's category adds to its route: the caps that count its
/// non-critical notifications (by name), whether it drops over them rather
/// than defer, and its send window.
#[derive(Default)]
struct TypeLimits {
    caps: Vec<(String, u32, Duration)>,
    drop: bool,
    window: Option<SendWindow>,
}

impl TypeLimits {
    fn of(config: &Config) -> HashMap<String, TypeLimits> {
        let limits = config.events.iter().map(|(ty, route)| {
            let category = config.categories.get(&route.category);
            let caps = config.caps_of(&route.category, route.priority);
            let limits = TypeLimits {
                caps: caps.map(|(name, c)| (name.to_string(), c.max, c.per)).collect(),
                drop: category.is_some_and(|c| c.over_cap == OverCap::Drop),
                window: category.and_then(|c| c.send_window),
            };
            (ty.clone(), limits)
        });
        limits.collect()
    }
}

/// What adding an event to its digest takes ([`Intake::digesting`]).
enum Digesting {
    Add(DigestAdd, Option<String>),
    Letter(String),
    Status(String),
}

/// Where a routed notification stands with its caps: the place of its
/// record in the batch and of the notification among the record's outcomes.
type CapPlace = (usize, usize);

/// Why a notification over a cap was dropped, as its status says it.
fn over_cap(by: Option<&str>, limits: &TypeLimits) -> String {
    match by.and_then(|by| limits.caps.iter().find(|c| c.0 == by)) {
        Some((name, max, per)) => {
            format!("frequency cap `{name}` reached: {max} per {}", humantime::format_duration(*per))
        }
        None => "frequency cap reached (dropped when first routed)".to_string(),
    }
}

/// One record's writes, and where its offset goes once they are
/// acknowledged; its key and value, to dead-letter it should the broker
/// refuse a write as too large.
struct Pending {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    published: u64,
    deliveries: Vec<DeliveryFuture>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    /// The record is dead-lettered already: a write of it refused later adds no second letter.
    lettered: bool,
}

/// What a routed batch's acknowledgements settled: the last offset of each
/// partition whose records (and every one before them) are written, what
/// they published, and the failure that stopped the rest.
#[derive(Default)]
struct Settled {
    /// Records in the batch, settled or not.
    records: usize,
    offsets: Vec<(Arc<str>, i32, i64)>,
    events: u64,
    published: u64,
    failed: Option<IntakeError>,
}

impl Settled {
    fn add(&mut self, p: &Pending) {
        self.events += 1;
        self.published += p.published;
        let same = |(topic, partition, _): &&mut (Arc<str>, i32, i64)| *partition == p.partition && *topic == p.topic;
        match self.offsets.iter_mut().rev().find(same) {
            // A partition's records come in offset order.
            Some(last) => last.2 = p.offset,
            None => self.offsets.push((p.topic.clone(), p.partition, p.offset)),
        }
    }
}

/// A record as the reader hands it over: where it came from, what it says,
/// and its key and value as read (what a dead letter carries).
struct Read {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    decoded: Decoded,
}

/// A decoded record, before hydration.
enum Decoded {
    /// An event with a route (`config.events[&event.ty]`) and its user.
    Routed(CloudEvent, String),
    /// An event of a type whose route digests, for its user's digest (a
    /// digest's release, marked so by the scheduler, is [`Decoded::Routed`]).
    Digested(CloudEvent, String),
    /// Not usable as it is: why; the event, if it decoded, and its user.
    Rejected(Rejection),
}

enum Rejection {
    Poison(String),
    /// An event of a type no route names, with its user id if it has one.
    Unknown(CloudEvent, Option<String>),
}

/// A batch with what routing it needs, read by the hydrator.
struct Prepared {
    batch: Vec<Read>,
    prefs: HashMap<String, Hydrated>,
    /// Lane -> when the last member held on it is released.
    holds: HashMap<String, DateTime<Utc>>,
    /// The stored caps of the users whose notifications the caps may count.
    caps: CapsRead,
    /// Why each listed address of the batch's `first` routes is on the
    /// suppression list: such a route passes over its channel.
    listed: HashMap<String, String>,
    /// How many batches were wholly routed when its lanes were read: the
    /// holds the batches after those made may be missing from `holds`.
    routed_before: u64,
    /// When its preferences and lanes were read.
    read_at: Instant,
}

/// What routing one event reads: the event and its user, its route, and the
/// user's preferences.
struct Routing<'a> {
    event: &'a CloudEvent,
    user_id: &'a str,
    route: &'a EventRoute,
    prefs: &'a Result<Preferences, String>,
}

/// The caps' answers for a batch, by [`CapPlace`], in batch order.
struct Admitted {
    answers: std::collections::VecDeque<(CapPlace, Admission)>,
}

impl Admitted {
    /// The answers of record `i` (by the place of each notification among its outcomes).
    fn take(all: &mut Admitted, i: usize) -> HashMap<usize, Admission> {
        let mut mine = HashMap::new();
        while all.answers.front().is_some_and(|((r, _), _)| *r == i) {
            let ((_, j), a) = all.answers.pop_front().expect("a front");
            mine.insert(j, a);
        }
        mine
    }
}

/// A batch that waited longer than this for the router (its writes held up
/// by a broker outage) has its preferences and lanes read again before it is
/// routed: a user who opted out or set quiet hours meanwhile is routed as
/// they are now, as with no hydrator ahead.
const HYDRATED_FOR: Duration = Duration::from_secs(1);

/// The lanes a batch's routing finds held: those read with the batch, those
/// the router made since, and those it makes while routing the batch.
struct Holds {
    lanes: HashMap<String, DateTime<Utc>>,
    made: Vec<(String, DateTime<Utc>)>,
    /// The users' caps as read with the batch, or as written or read again since.
    caps: CapsRead,
    /// The caps written while routing the batch: the user, the version
    /// the write replaced, and the value written.
    caps_made: Vec<(String, String, Option<String>)>,
}

impl Holds {
    fn get(&self, lane: &str) -> Option<DateTime<Utc>> {
        self.lanes.get(lane).copied()
    }

    /// Whether `user`'s lane on `channel` is held (its name is made only when some lane is).
    fn is_held(&self, user: &str, channel: Channel) -> bool {
        !self.lanes.is_empty() && self.lanes.contains_key(&lane(user, channel))
    }

    /// What admitting read and wrote of the caps: read so by what comes next.
    fn admitted(&mut self, seen: HashMap<String, CapsSeen>) {
        for (user, CapsSeen { value, replaced }) in seen {
            self.caps.insert(user.clone(), value.clone());
            if let Some(replaced) = replaced {
                self.caps_made.push((user, replaced, value));
            }
        }
    }

    /// `lane` is held until `until` (or later, if it already was).
    fn hold(&mut self, lane: String, until: DateTime<Utc>) {
        let until = self.lanes.get(&lane).map_or(until, |held| until.max(*held));
        self.made.push((lane.clone(), until));
        self.lanes.insert(lane, until);
    }
}

/// The holds the router made, and the caps it wrote, by the batch (counted
/// from 1) that made them, kept until every batch that may have been
/// hydrated before they were written to Redis is routed.
#[derive(Default)]
struct Carried {
    holds: Vec<(u64, String, DateTime<Utc>)>,
    caps: Vec<(u64, String, String, Option<String>)>,
}

impl Carried {
    /// The lanes and caps of a batch hydrated when `routed_before` batches
    /// were routed, with the holds made and caps written by the batches
    /// routed after that: a write replaces the value read only where that
    /// is the value it replaced (the read came before it). Caps another
    /// process wrote meanwhile fail the check of the value read when
    /// admitting, and are read again.
    fn merge(&mut self, mut lanes: HashMap<String, DateTime<Utc>>, mut caps: CapsRead, routed_before: u64) -> Holds {
        self.holds.retain(|(batch, _, _)| *batch > routed_before);
        for (_, lane, until) in &self.holds {
            let held = lanes.entry(lane.clone()).or_insert(*until);
            *held = (*held).max(*until);
        }
        self.caps.retain(|(batch, _, _, _)| *batch > routed_before);
        for (_, user, replaced, value) in &self.caps {
            if let Some(read) = caps.get_mut(user).filter(|read| caps_version(read.as_deref()) == replaced) {
                read.clone_from(value);
            }
        }
        Holds { lanes, made: Vec::new(), caps, caps_made: Vec::new() }
    }

    fn keep(&mut self, batch: u64, holds: Holds) {
        self.holds.extend(holds.made.into_iter().map(|(lane, until)| (batch, lane, until)));
        self.caps.extend(holds.caps_made.into_iter().map(|(user, replaced, value)| (batch, user, replaced, value)));
    }
}

/// Runs intake until `shutdown` completes, then drains and commits.
pub async fn run(
    config: Arc<Config>,
    store: SharedStore,
    clock: Clock,
    progress: Arc<Progress>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IntakeError> {
    let watched = Watched::new("intake", health.check("intake: joined its group", false));
    let consumer: StreamConsumer<Watched> =
        kafka::role_consumer_config(&config.kafka, &config.group("intake")).create_with_context(watched)?;
    let consumer = Arc::new(consumer);
    let topics = config.intake.topics.clone();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let intake = Arc::new(Intake::new(config.clone(), store, clock, progress)?);
    let max_in_flight = config.intake.max_in_flight.max(1);
    let config_drain = config.intake.drain_timeout;
    // A batch decoded ahead and one hydrated ahead; the rest waits in librdkafka.
    let (batches, decoded) = mpsc::channel(1);
    let (prepared, mut ready) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let beat = health.beat("intake reader");
    let reader = tokio::spawn(read(consumer.clone(), config, batches, beat, stop.clone()));
    let routed = Arc::new(AtomicU64::new(0));
    let hydrator = tokio::spawn(hydrate(intake.clone(), decoded, prepared, routed.clone(), stop.clone()));
    let mut carried = Carried::default();
    // Each routed batch's acknowledgements, awaited in order, and how many records they hold.
    let mut acks = FuturesOrdered::new();
    let mut in_flight = 0;
    tokio::pin!(shutdown);
    tracing::info!(?topics, "intake started");
    let failed = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break None,
            Some(done) = acks.next(), if !acks.is_empty() => {
                let done: Settled = done;
                in_flight -= done.records;
                if let Err(e) = intake.stored(consumer.as_ref(), done) {
                    break Some(e);
                }
            }
            batch = ready.recv(), if in_flight < max_in_flight => match batch {
                Some(batch) => {
                    let batch = intake.refreshed(batch, &routed).await;
                    let number = routed.load(Ordering::Relaxed) + 1;
                    match intake.handle_batch(batch, number, &mut carried).await {
                        Ok(handled) => {
                            in_flight += handled.len();
                            acks.push_back(intake.settle_batch(handled));
                        }
                        Err(e) => break Some(e),
                    }
                    // Its deferrals are in Redis: a batch hydrated from now on reads them.
                    routed.store(number, Ordering::Release);
                }
                // A stage ended without being stopped: it failed (below).
                None => break None,
            },
        }
    };
    // Stop reading (decoded batches not handled are read again after a
    // restart), drain what is in flight, then commit what is stored.
    stop.cancel();
    drop(ready);
    let stages = [("reader", reader.await), ("hydrator", hydrator.await)];
    let drained = match failed {
        Some(e) => Err(e),
        None => {
            let drained = tokio::time::timeout(config_drain, async {
                while let Some(done) = acks.next().await {
                    in_flight -= done.records;
                    intake.stored(consumer.as_ref(), done)?;
                }
                Ok::<(), IntakeError>(())
            })
            .await;
            drained.unwrap_or_else(|_| {
                tracing::warn!(
                    in_flight,
                    "drain timed out; the records of batches not wholly acknowledged are read again after a restart"
                );
                Ok(())
            })
        }
    };
    // The reader and hydrator are done: this is the consumer's last holder.
    // Closed on failure too, so that no error path drops it on the runtime.
    match Arc::try_unwrap(consumer) {
        Ok(consumer) => kafka::close(consumer, kafka::CLOSE_WITHIN).await,
        Err(consumer) => {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "nothing to commit at shutdown");
            }
        }
    }
    drained?;
    for (stage, ended) in stages {
        if let Err(e) = ended {
            tracing::error!(stage, error = %e, "intake stage failed");
            return Err(IntakeError::Stage(stage, e.to_string()));
        }
    }
    tracing::info!("intake stopped");
    Ok(())
}

/// The hydrator stage: reads what each decoded batch needs from Redis (one
/// round trip, retried until Redis answers) while the router routes the batch
/// before it. `routed` is read before the lanes are, so the router knows
/// which of its own holds the lanes may lack.
async fn hydrate(
    intake: Arc<Intake>,
    mut decoded: mpsc::Receiver<Vec<Read>>,
    prepared: mpsc::Sender<Prepared>,
    routed: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            batch = decoded.recv() => match batch {
                Some(batch) => batch,
                None => return,
            },
        };
        let ready = tokio::select! {
            _ = stop.cancelled() => return,
            ready = intake.prepare(batch, &routed) => ready,
        };
        if prepared.send(ready).await.is_err() {
            return;
        }
    }
}

/// The reader stage: consume and decode, a batch at a time, in order.
///
/// A batch the stages after it have no room for waits here, and the reader
/// stops taking records: librdkafka goes on fetching ahead into its own
/// bounded queue, so reading goes on at once when a place frees. Only stages
/// that stay full for [`kafka::stall_limit`] (the router's writes wait for a
/// broker, or Redis is gone) make the reader *pause* the partitions and poll on, so intake stays
/// in its group through an outage of any length instead of exceeding
/// `max.poll.interval.ms`; what still arrives joins the waiting batch, and
/// the partitions resume when that batch leaves. Pausing is kept for that:
/// librdkafka drops what it fetched ahead of a paused partition.
async fn read(
    consumer: Arc<StreamConsumer<Watched>>,
    config: Arc<Config>,
    batches: mpsc::Sender<Vec<Read>>,
    beat: Beat,
    stop: CancellationToken,
) {
    let size = config.intake.batch_size.max(1);
    let mut topic: Arc<str> = Arc::from("");
    // A batch the hydrator had no room for, and since when.
    let mut waiting: Option<(Vec<Read>, Instant)> = None;
    let hold = consumer.context().hold().clone();
    let read = metrics::counter!("tidings_records_in_total", "role" => "intake");
    let paused = metrics::gauge!("tidings_paused_partitions", "role" => "intake");
    let stall_limit = kafka::stall_limit(&config.kafka);
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        let held = hold.is_paused();
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = check.tick() => {
                beat.beat();
                if !held && waiting.as_ref().is_some_and(|(_, since)| since.elapsed() >= stall_limit) {
                    set_hold(&consumer, &hold, true);
                }
                // A resume that failed when the batch left is tried again.
                if held && waiting.is_none() {
                    set_hold(&consumer, &hold, false);
                }
                let assigned = consumer.assignment().map_or(0, |a| a.count());
                paused.set(if hold.is_paused() { assigned as f64 } else { 0.0 });
            }
            // The only way a waiting batch leaves, so a paused reader always resumes.
            room = batches.reserve(), if waiting.is_some() => {
                let Ok(room) = room else { return };
                room.send(waiting.take().expect("a batch waits").0);
                if held {
                    set_hold(&consumer, &hold, false);
                }
            }
            // Full stages stop reading until they stall; a paused consumer is polled however full.
            m = consumer.recv(), if waiting.is_none() || held => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "consume error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let Some((batch, _)) = &mut waiting {
                    read.increment(1);
                    batch.push(decode(&config, &m, &mut topic));
                    continue;
                }
                let mut batch = Vec::with_capacity(size);
                batch.push(decode(&config, &m, &mut topic));
                // Take what is already fetched, without waiting for more.
                while batch.len() < size {
                    match consumer.recv().now_or_never() {
                        Some(Ok(m)) => batch.push(decode(&config, &m, &mut topic)),
                        _ => break,
                    }
                }
                read.increment(batch.len() as u64);
                match batches.try_send(batch) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(batch)) => waiting = Some((batch, Instant::now())),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}

/// Pauses or resumes reading (every partition, now and as assigned).
fn set_hold(consumer: &StreamConsumer<Watched>, hold: &kafka::Hold, pause: bool) {
    if let Err(e) = hold.set(consumer, pause) {
        tracing::warn!(error = %e, pause, "cannot pause or resume reading");
    }
}

fn decode(config: &Config, m: &BorrowedMessage<'_>, topic: &mut Arc<str>) -> Read {
    if topic.as_ref() != m.topic() {
        *topic = Arc::from(m.topic());
    }
    let (key, value) = (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec));
    let headers = kafka::header_pairs(m);
    let limits = &config.intake.limits;
    let reason = match CloudEvent::decode(m.payload(), &headers, limits) {
        Err(e) => Rejection::Poison(e.to_string()),
        Ok(event) => {
            let user =
                event.user_id(&config.intake.user_pointer).and_then(|u| check_id("user id", &u, limits).map(|()| u));
            match user {
                // Another service's event may have no user where ours do: its type is what counts.
                _ if !config.events.contains_key(&event.ty) => Rejection::Unknown(event, user.ok()),
                Err(e) => Rejection::Poison(e.to_string()),
                Ok(user) => {
                    let released = headers.iter().any(|(k, _)| k == digest::RELEASE_HEADER);
                    let decoded = match config.events[&event.ty].digest {
                        Some(_) if !released => Decoded::Digested(event, user),
                        _ => Decoded::Routed(event, user),
                    };
                    return Read {
                        topic: topic.clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key,
                        value,
                        headers,
                        decoded,
                    };
                }
            }
        }
    };
    Read {
        topic: topic.clone(),
        partition: m.partition(),
        offset: m.offset(),
        key,
        value,
        headers,
        decoded: Decoded::Rejected(reason),
    }
}

impl Intake {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        clock: Clock,
        progress: Arc<Progress>,
    ) -> Result<Self, IntakeError> {
        let cache = Cache::builder()
            .max_capacity(config.intake.prefs_cache_size)
            .time_to_live(config.intake.prefs_cache_ttl)
            .build();
        let published = Priority::ALL
            .map(|p| metrics::counter!("tidings_records_out_total", "role" => "intake", "priority" => p.as_str()));
        Ok(Intake {
            limits: TypeLimits::of(&config),
            producer: kafka::producer(&config.kafka)?,
            config,
            store,
            clock,
            progress,
            cache,
            outcomes: Outcomes::default(),
            published,
        })
    }

    /// Waits for a record's writes; what a refused one needs is a dead
    /// letter, whose reason is returned. One the cluster refused for good
    /// (too large for the broker, a topic this client may not write or that
    /// does not exist) dead-letters the record, once; any other failure is
    /// one no retry fixes (writes never time out; the producer met a fatal
    /// error), and ends intake, to start again with a new producer.
    async fn acknowledged(&self, p: &mut Pending) -> Result<Vec<String>, IntakeError> {
        let mut letters = Vec::new();
        for d in std::mem::take(&mut p.deliveries) {
            match d.await {
                Ok(Ok(_)) => {}
                // The letter itself refused (for another reason than its size,
                // which a letter without the value mends, below): nowhere else to put the record.
                Ok(Err((e, refused))) if refused.topic() == INTAKE_DLQ_TOPIC && !kafka::too_large(&e) => {
                    return Err(e.into())
                }
                // Its other writes refused too: the record is dead-lettered once.
                Ok(Err((e, refused)))
                    if kafka::refused_for_good(&e) && p.lettered && refused.topic() != INTAKE_DLQ_TOPIC => {}
                Ok(Err((e, refused))) if kafka::refused_for_good(&e) && !kafka::fatal(&self.producer, &e) => {
                    p.lettered = true;
                    letters.push(if kafka::too_large(&e) {
                        format!(
                            "a record for {} of {} bytes was refused by the broker as too large",
                            refused.topic(),
                            refused.payload().map_or(0, <[u8]>::len)
                        )
                    } else {
                        format!("the cluster refused a record for {} for good: {e}", refused.topic())
                    });
                }
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(KafkaError::Canceled.into()),
            }
        }
        Ok(letters)
    }

    /// Writes the dead letter of a record one of whose writes was refused for good.
    async fn letter(&self, p: &Pending, reason: String) -> Result<(), IntakeError> {
        tracing::error!(topic = %p.topic, partition = p.partition, offset = p.offset, %reason, "input dead-lettered");
        let letter =
            DeadLetter::poison(&p.topic, p.partition, p.offset, reason, self.clock.now()).with_headers(&p.headers);
        let (key, value) = (p.key.as_deref(), p.value.as_deref());
        Ok(kafka::dead_letter(&self.producer, INTAKE_DLQ_TOPIC, key, value, &letter).await?)
    }

    /// Waits for a routed batch's writes, record by record in order, up to
    /// the first record whose writes failed, then writes the letters of the
    /// records whose writes were refused, all at once. One future per batch,
    /// not per record: the loop is woken about once a batch, not once an
    /// acknowledgement. A record counts as settled once its letters are written.
    async fn settle_batch(&self, batch: Vec<Pending>) -> Settled {
        let mut settled = Settled { records: batch.len(), ..Settled::default() };
        let mut acknowledged = Vec::with_capacity(batch.len());
        for mut pending in batch {
            match self.acknowledged(&mut pending).await {
                Ok(letters) => acknowledged.push((pending, letters)),
                Err(e) => {
                    settled.failed = Some(e);
                    break;
                }
            }
        }
        let counts: Vec<usize> = acknowledged.iter().map(|(_, letters)| letters.len()).collect();
        let letters: Vec<(usize, String)> = (acknowledged.iter_mut().enumerate())
            .flat_map(|(i, (_, letters))| std::mem::take(letters).into_iter().map(move |reason| (i, reason)))
            .collect();
        let written = letters.into_iter().map(|(i, reason)| self.letter(&acknowledged[i].0, reason));
        let mut written = futures::future::join_all(written).await.into_iter();
        for ((pending, _), n) in acknowledged.iter().zip(counts) {
            if let Some(e) = written.by_ref().take(n).find_map(Result::err) {
                settled.failed = Some(e);
                break;
            }
            settled.add(pending);
        }
        settled
    }

    /// Stores the offsets of what a batch settled; its failure, if any, ends intake.
    fn stored<C: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        done: Settled,
    ) -> Result<(), IntakeError> {
        for (topic, partition, offset) in &done.offsets {
            if let Err(e) = consumer.store_offset(topic, *partition, *offset) {
                // The partition was revoked meanwhile: its new owner reads the record again.
                tracing::debug!(error = %e, "offset not stored");
            }
        }
        Progress::add(&self.progress.published, done.published);
        Progress::add(&self.progress.events, done.events);
        // A failed write leaves its record's offset unstored: it is consumed again after restart.
        done.failed.map_or(Ok(()), Err)
    }

    /// Reads what routing `batch` needs: the preferences the cache lacks, and
    /// the lanes the batch may defer behind (non-critical channels the user
    /// has on, or every channel of the route while the preferences are
    /// unknown), in one round trip; and, for a batch with `first` routes,
    /// the suppression list's entries of the addresses they may choose, in
    /// a second ([`Self::listed`]).
    async fn prepare(&self, batch: Vec<Read>, routed: &AtomicU64) -> Prepared {
        let events = &self.config.events;
        let mut prefs: HashMap<String, Hydrated> = HashMap::new();
        let mut missing = Vec::new();
        let mut asked = HashSet::new();
        let mut lanes = Vec::new();
        let mut capped = Vec::new();
        for read in &batch {
            let (Decoded::Routed(event, user) | Decoded::Digested(event, user)) = &read.decoded else { continue };
            let route = &events[&event.ty];
            if matches!(read.decoded, Decoded::Routed(..))
                && self.limits.get(&event.ty).is_some_and(|l| !l.caps.is_empty())
            {
                capped.push(user.clone());
            }
            if asked.insert(user.as_str()) {
                match self.cache.get(user) {
                    Some(p) => {
                        prefs.insert(user.clone(), p);
                    }
                    None => missing.push(user.clone()),
                }
            }
            if route.priority == Priority::Critical || matches!(read.decoded, Decoded::Digested(..)) {
                continue;
            }
            let known = prefs.get(user.as_str()).map(|p| p.as_ref().as_ref().ok());
            for c in &route.channels {
                let wanted = match known {
                    Some(Some(p)) => p.channel_enabled(*c),
                    Some(None) => false,
                    None => true,
                };
                if wanted {
                    lanes.push(lane(user, *c));
                }
            }
        }
        lanes.sort_unstable();
        lanes.dedup();
        capped.sort_unstable();
        capped.dedup();
        let routed_before = routed.load(Ordering::Acquire);
        let read_at = Instant::now();
        // At once: two commands pipelined on one connection (on a cluster, per node).
        let (fetched, caps) = futures::join!(
            until_ok("read preferences and lanes", || self.store.hydrate(&missing, &lanes)),
            until_ok("read the frequency caps", || self.store.caps_values(&capped))
        );
        let caps = capped.into_iter().zip(caps).collect();
        for (user, raw) in missing.into_iter().zip(fetched.prefs) {
            let parsed: Hydrated = Arc::new(match raw {
                None => Err(format!("no preferences for user {user}")),
                Some(json) => Preferences::parse(&json).map_err(|e| format!("stored preferences are unusable: {e}")),
            });
            self.cache.insert(user.clone(), parsed.clone());
            prefs.insert(user, parsed);
        }
        let holds = lanes.into_iter().zip(fetched.holds).filter_map(|(l, h)| h.map(|h| (l, h))).collect();
        let listed = self.listed(&batch, &prefs).await;
        Prepared { batch, prefs, listed, holds, caps, routed_before, read_at }
    }

    /// The suppression-list entries of the addresses a `first` route of
    /// `batch` may choose, read in one round trip (none for a batch without
    /// such a route), as why each listed one is.
    async fn listed(&self, batch: &[Read], prefs: &HashMap<String, Hydrated>) -> HashMap<String, String> {
        let mut addresses = Vec::new();
        for read in batch {
            let Decoded::Routed(event, user) = &read.decoded else { continue };
            let route = &self.config.events[&event.ty];
            let Some(Ok(p)) = prefs.get(user.as_str()).map(|p| p.as_ref().as_ref()) else { continue };
            if route.mode != ChannelMode::First {
                continue;
            }
            let on = route.channels.iter().filter(|c| p.channel_enabled(**c));
            addresses.extend(on.filter_map(|c| p.recipient(*c)).filter_map(|r| address_of(&r)));
        }
        if addresses.is_empty() {
            return HashMap::new();
        }
        addresses.sort_unstable();
        addresses.dedup();
        let entries = until_ok("read the suppression list", || self.store.listed(&addresses)).await;
        addresses.into_iter().zip(entries).filter_map(|(a, e)| Some((a, e?.why()))).collect()
    }

    /// `prepared`, or read again if it waited longer than [`HYDRATED_FOR`].
    /// Read again, it still counts as hydrated when first read: the batch
    /// hydrated behind it, earlier than this read, needs what the router
    /// carries from then on (see [`Carried::merge`]).
    async fn refreshed(&self, prepared: Prepared, routed: &AtomicU64) -> Prepared {
        if prepared.read_at.elapsed() > HYDRATED_FOR {
            let first = prepared.routed_before;
            let mut again = self.prepare(prepared.batch, routed).await;
            again.routed_before = again.routed_before.min(first);
            again
        } else {
            prepared
        }
    }

    /// Decides and enqueues everything a batch of records causes, in order;
    /// `number` counts the batches routed, this one included.
    async fn handle_batch(
        &self,
        prepared: Prepared,
        number: u64,
        carried: &mut Carried,
    ) -> Result<Vec<Pending>, IntakeError> {
        let now = self.clock.now();
        let events = &self.config.events;
        let Prepared { batch, prefs, listed, holds, caps, routed_before, .. } = prepared;
        let mut holds = carried.merge(holds, caps, routed_before);

        // Routed first, all of them, so that what the caps must admit goes
        // to Redis in one round trip for the batch.
        let mut routed: Vec<Option<Vec<Outcome>>> =
            batch.iter().map(|read| self.routed(read, &prefs, &listed, now)).collect();
        let mut admissions = self.admit(&batch, &routed, &mut holds, now).await;
        // And what goes to digests, in one more.
        let mut digesting: Vec<Option<Digesting>> = (batch.iter())
            .map(|read| match &read.decoded {
                Decoded::Digested(event, user) => Some(self.digesting(event, user, prefs.get(user.as_str()), now)),
                _ => None,
            })
            .collect();
        let adds: Vec<DigestAdd> = (digesting.iter().flatten())
            .filter_map(|d| if let Digesting::Add(add, _) = d { Some(add.clone()) } else { None })
            .collect();
        let added = match adds.is_empty() {
            true => Vec::new(),
            false => until_ok("add to digests", || self.store.digest_add(&adds)).await,
        };
        // Each add's release, held before any of the batch's records is settled.
        let mut releases = self.hold_releases(&batch, &digesting, added).await.into_iter();

        let mut out = Vec::with_capacity(batch.len());
        for (i, read) in batch.iter().enumerate() {
            let mut pending = Pending {
                topic: read.topic.clone(),
                partition: read.partition,
                offset: read.offset,
                published: 0,
                deliveries: Vec::new(),
                key: None,
                value: None,
                headers: Vec::new(),
                lettered: false,
            };
            let handled = match &read.decoded {
                Decoded::Rejected(Rejection::Poison(reason)) => {
                    self.dead_letter(read, reason.clone(), now, &mut pending).await
                }
                Decoded::Rejected(Rejection::Unknown(event, user)) => {
                    let reason = format!("unknown event type `{}`", event.ty);
                    match self.config.intake.unknown_types {
                        UnknownTypes::DeadLetter => self.dead_letter(read, reason, now, &mut pending).await,
                        UnknownTypes::Suppress => {
                            let (traced, span) = Traced::event(event);
                            let user = user.as_deref().unwrap_or_default();
                            let status = event_status(event, user, Channel::Email, reason, now);
                            self.status(status, &traced, &mut pending).instrument(span).await
                        }
                    }
                }
                Decoded::Digested(event, user) => {
                    let digesting = digesting[i].take().expect("a digested record's add");
                    let release = matches!(digesting, Digesting::Add(..)).then(|| releases.next()).flatten();
                    let (traced, span) = Traced::event(event);
                    self.digested(read, event, user, digesting, release, now, &traced, &mut pending)
                        .instrument(span)
                        .await
                }
                Decoded::Routed(event, user) => {
                    let hydrated = prefs
                        .get(user.as_str())
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Err(format!("no preferences for user {user}"))));
                    let route_cfg = &events[&event.ty];
                    let (traced, span) = Traced::event(event);
                    let routing = Routing { event, user_id: user, route: route_cfg, prefs: &hydrated };
                    let outcomes = routed[i].take().unwrap_or_default();
                    let admitted = Admitted::take(&mut admissions, i);
                    self.route_event(routing, outcomes, admitted, &mut holds, now, &traced, &mut pending)
                        .instrument(span)
                        .await
                }
            };
            match handled {
                Ok(()) => {}
                // What it wrote before stays (a replay's copies are duplicates the workers drop).
                Err(refused @ (IntakeError::TooLarge { .. } | IntakeError::Refused { .. })) => {
                    self.dead_letter(read, refused.to_string(), now, &mut pending).await?
                }
                Err(e) => return Err(e),
            }
            out.push(pending);
        }
        carried.keep(number, holds);
        for (pending, read) in out.iter_mut().zip(batch) {
            (pending.key, pending.value, pending.headers) = (read.key, read.value, read.headers);
        }
        Ok(out)
    }

    /// What adding a record's event to its user's digest takes: the add
    /// (and the key's value), or why it cannot be added: a dead letter's
    /// reason (its digest key is missing), or a `suppressed` status's (no
    /// usable preferences).
    fn digesting(&self, event: &CloudEvent, user: &str, hydrated: Option<&Hydrated>, now: DateTime<Utc>) -> Digesting {
        let route = &self.config.events[&event.ty];
        let d = route.digest.as_ref().expect("a route that digests");
        let prefs = match hydrated.map(|h| h.as_ref()) {
            Some(Ok(p)) => p,
            Some(Err(reason)) => return Digesting::Status(reason.clone()),
            None => return Digesting::Status(format!("no preferences for user {user}")),
        };
        let key = match &d.key {
            None => None,
            Some(pointer) => match event.string_at(pointer) {
                Some(key) => Some(key),
                None => {
                    let ty = &event.ty;
                    return Digesting::Letter(format!(
                        "digest key {pointer} is missing from the event (events.\"{ty}\".digest.key)"
                    ));
                }
            },
        };
        let closes = match (d.window, d.at) {
            (Some(window), _) => now + window,
            (None, Some(at)) => tidings_core::quiet_hours::next_local(at, crate::route::zone(prefs), now),
            (None, None) => now,
        };
        let add = DigestAdd {
            user: user.to_string(),
            name: digest::name(&event.ty, key.as_deref()),
            event: digest::event_ref(&event.source, &event.id),
            item: event.data.get().to_string(),
            now,
            closes,
            max_items: d.max_items,
        };
        Digesting::Add(add, key)
    }

    /// The release of each add of the batch (`added`, in the order of
    /// `digesting`), each held on the schedule where it must be: by the
    /// event that opened or filled its window (full: released at once), or
    /// read again (its first read may have stopped before). Every read of
    /// an event does the same, and adds it once: the release's member is
    /// made from the window alone, and holding it again changes nothing.
    /// Holds of different digests go to Redis together; one digest's in
    /// the batch's order (its windows share a lane, and a window held
    /// after the next one would wait behind it).
    async fn hold_releases(
        &self,
        batch: &[Read],
        digesting: &[Option<Digesting>],
        added: Vec<Added>,
    ) -> Vec<(digest::Release, Added)> {
        let adds = batch.iter().zip(digesting).filter_map(|(read, d)| match (&read.decoded, d) {
            (Decoded::Digested(event, user), Some(Digesting::Add(add, key))) => Some((event, user, add, key)),
            _ => None,
        });
        let mut releases = Vec::with_capacity(added.len());
        // Per lane (one per digest): each hold (its member, take back first, until).
        let mut holds: HashMap<String, Vec<(String, bool, DateTime<Utc>)>> = HashMap::new();
        for ((event, user, add, key), added) in adds.zip(added) {
            let route = &self.config.events[&event.ty];
            let max_items = route.digest.as_ref().map_or(u32::MAX, |d| d.max_items);
            let release = digest::Release {
                digest: digest::ReleaseOf {
                    user_id: user.to_string(),
                    event_type: event.ty.clone(),
                    name: add.name.clone(),
                    key: key.clone(),
                    window: added.window,
                    opened: added.opened_at.timestamp_millis(),
                },
            };
            let full = added.full || added.count >= max_items;
            if !added.taken && (added.opened || full || !added.fresh) {
                // Full: held at the window's end until now; released at once instead.
                holds.entry(release.lane()).or_default().push((release.member(), full, added.closes));
                if added.opened {
                    metrics::counter!("tidings_digests_opened_total", "type" => event.ty.clone()).increment(1);
                }
            }
            releases.push((release, added));
        }
        let held = holds.iter().map(|(lane, steps)| async move {
            for (member, full, until) in steps {
                if *full {
                    until_ok("take a digest's release back", || self.store.undefer(lane, member)).await;
                }
                until_ok("hold a digest's release", || self.store.defer(lane, member, *until)).await;
            }
        });
        futures::future::join_all(held).await;
        releases
    }

    /// Ends a record's event that went to its user's digest (its release
    /// held already) with a `suppressed` status (reason class `digested`)
    /// naming its digest; one whose digest key is missing is dead-lettered.
    #[allow(clippy::too_many_arguments)]
    async fn digested(
        &self,
        read: &Read,
        event: &CloudEvent,
        user: &str,
        digesting: Digesting,
        release: Option<(digest::Release, Added)>,
        now: DateTime<Utc>,
        traced: &Traced,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        let route = &self.config.events[&event.ty];
        let (release, added) = match (digesting, release) {
            (Digesting::Add(..), Some(release)) => release,
            (Digesting::Letter(reason), _) => return self.dead_letter(read, reason, now, pending).await,
            (Digesting::Status(reason), _) => {
                let status = event_status(event, user, route.channels[0], reason, now);
                return self.status(status, traced, pending).await;
            }
            (Digesting::Add(..), None) => unreachable!("every add of a batch is answered"),
        };
        metrics::counter!("tidings_digested_total", "type" => event.ty.clone()).increment(1);
        let reason = format!(
            "{DIGESTED_PREFIX} into {} (window {} of digest `{}`, item {})",
            release.event_id(),
            added.window,
            release.digest.name,
            added.count
        );
        let status = event_status(event, user, route.channels[0], reason, now);
        self.status(status, traced, pending).await
    }

    /// Routes one record's event (its notifications, before the caps), or
    /// `None` for a record that is not routed or whose user has no usable
    /// preferences.
    fn routed(
        &self,
        read: &Read,
        prefs: &HashMap<String, Hydrated>,
        listed: &HashMap<String, String>,
        now: DateTime<Utc>,
    ) -> Option<Vec<Outcome>> {
        let Decoded::Routed(event, user) = &read.decoded else { return None };
        let Some(Ok(p)) = prefs.get(user.as_str()).map(|p| p.as_ref().as_ref()) else { return None };
        let window = self.limits.get(&event.ty).and_then(|l| l.window.as_ref());
        Some(route(event, user, &self.config.events[&event.ty], p, listed, window, now))
    }

    /// Asks the caps, in one round trip (retried until Redis answers), to
    /// admit each notification of `routed` that goes out and that a cap
    /// counts, at the instant it would go: now, its deferral's end, or the
    /// end of what its lane holds as far as the batch's hydration knew.
    async fn admit(
        &self,
        batch: &[Read],
        routed: &[Option<Vec<Outcome>>],
        holds: &mut Holds,
        now: DateTime<Utc>,
    ) -> Admitted {
        let mut places = Vec::new();
        let mut asks = Vec::new();
        for (i, (read, outcomes)) in batch.iter().zip(routed).enumerate() {
            let (Decoded::Routed(event, _), Some(outcomes)) = (&read.decoded, outcomes) else { continue };
            let Some(limits) = self.limits.get(&event.ty).filter(|l| !l.caps.is_empty()) else { continue };
            for (j, outcome) in outcomes.iter().enumerate() {
                let (Outcome::Publish(n) | Outcome::Defer(n)) = outcome else { continue };
                let held = holds.get(&lane(&n.user_id, n.channel));
                let at = n.not_before.unwrap_or(now).max(held.unwrap_or(now));
                places.push((i, j));
                asks.push(self.cap_ask(n, limits, at, now, false));
            }
        }
        if asks.is_empty() {
            return Admitted { answers: Default::default() };
        }
        let answers = self.admit_caps(&asks, holds).await;
        Admitted { answers: places.into_iter().zip(answers).collect() }
    }

    /// Admits `asks` from the caps as `holds` has them, retried until Redis
    /// answers; what is read and written is read so from then on.
    async fn admit_caps(&self, asks: &[CapAsk], holds: &mut Holds) -> Vec<Admission> {
        let (answers, seen) =
            until_ok("admit under the frequency caps", || self.store.admit_from(asks, &holds.caps)).await;
        holds.admitted(seen);
        answers
    }

    fn cap_ask(
        &self,
        n: &Notification,
        limits: &TypeLimits,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        again: bool,
    ) -> CapAsk {
        CapAsk {
            user: n.user_id.clone(),
            channel: n.channel,
            id: n.notification_id.clone(),
            caps: limits.caps.clone(),
            at,
            now,
            drop: limits.drop,
            again,
        }
    }

    /// When a notification the caps admitted goes, or why it is dropped.
    /// What the caps answered is checked against what holds it: an instant
    /// inside quiet hours or outside the send window, or before the end of
    /// what its lane holds now (a deferral earlier in the batch), is moved
    /// to the next instant all of them allow, and admitted again there.
    async fn capped(
        &self,
        n: &Notification,
        mut admission: Admission,
        prefs: &Preferences,
        holds: &mut Holds,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, bool), String> {
        let limits = &self.limits[&n.event_type];
        let (quiet, zone) = (prefs.quiet_hours.as_ref(), crate::route::zone(prefs));
        let held = holds.get(&lane(&n.user_id, n.channel));
        let mut by = None;
        // Each pass moves the instant later; a few cover any real mix of windows.
        for _ in 0..8 {
            let fresh = !matches!(admission, Admission::Before { .. });
            let (at, floor) = match admission {
                Admission::Dropped { by } => {
                    let cap = by.clone().unwrap_or_default();
                    metrics::counter!("tidings_capped_total", "cap" => cap, "outcome" => "dropped").increment(1);
                    return Err(over_cap(by.as_deref(), limits));
                }
                // Decided by an earlier read: its lane holds what came after
                // it, which must not move it. Only a first answer the
                // windows had not yet moved (that read stopped in between) is moved.
                Admission::Before { at } => (at, at),
                Admission::Admitted { at, by: held_by } => {
                    by = by.or(held_by);
                    (at, held.map_or(at, |h| h.max(at)))
                }
            };
            let want = tidings_core::quiet_hours::opening(quiet, limits.window.as_ref(), zone, floor);
            if want <= at {
                if let Some(cap) = by.filter(|_| at > now) {
                    metrics::counter!("tidings_capped_total", "cap" => cap, "outcome" => "deferred").increment(1);
                }
                return Ok((at, fresh));
            }
            let ask = self.cap_ask(n, limits, want, now, true);
            let asks = std::slice::from_ref(&ask);
            admission = self.admit_caps(asks, holds).await.pop().unwrap_or(Admission::Admitted { at: want, by: None });
        }
        // Not settled in as many passes: the instant last admitted stands.
        match admission {
            Admission::Admitted { at, .. } => Ok((at, true)),
            Admission::Before { at } => Ok((at, false)),
            Admission::Dropped { by } => Err(over_cap(by.as_deref(), limits)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn route_event(
        &self,
        routing: Routing<'_>,
        outcomes: Vec<Outcome>,
        mut admitted: HashMap<usize, Admission>,
        holds: &mut Holds,
        now: DateTime<Utc>,
        traced: &Traced,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        let Routing { event, user_id, route: route_cfg, prefs } = routing;
        let prefs = match prefs {
            Ok(p) => p,
            Err(reason) => {
                let status = event_status(event, user_id, route_cfg.channels[0], reason.clone(), now);
                return self.status(status, traced, pending).await;
            }
        };
        if outcomes.is_empty() {
            let reason = "user has none of this event's channels enabled".to_string();
            let status = event_status(event, user_id, route_cfg.channels[0], reason, now);
            self.status(status, traced, pending).await?;
        }
        for (j, outcome) in outcomes.into_iter().enumerate() {
            // What the caps say comes first: they may defer or drop it.
            let outcome = match (outcome, admitted.remove(&j)) {
                (Outcome::Publish(n) | Outcome::Defer(n), Some(admission)) => {
                    match self.capped(&n, admission, prefs, holds, now).await {
                        // Counted for a later instant, or admitted now behind its
                        // lane: held where the lane truly places it, and counted there.
                        Ok((at, true)) if at > now || holds.is_held(user_id, n.channel) => {
                            self.defer_capped(n, at, prefs, holds, traced, now, pending).await?;
                            continue;
                        }
                        // Counted so by another read of its event (for its own
                        // now, a moment later, or a deferral): held where it counted.
                        Ok((at, false)) if at > now || holds.is_held(user_id, n.channel) => {
                            self.defer_copy(n, at, holds, traced, now, pending).await?;
                            continue;
                        }
                        Ok(_) => Outcome::Publish(n),
                        Err(reason) => {
                            // A read before this one (stopped, or before a change of
                            // preferences) may have held it: taken back, or it would go.
                            let (l, member) = (lane(&n.user_id, n.channel), self.member(&n, traced));
                            until_ok("take a dropped message off the schedule", || self.store.undefer(&l, &member))
                                .await;
                            Outcome::Suppress(n, reason)
                        }
                    }
                }
                (outcome, _) => outcome,
            };
            match outcome {
                Outcome::Publish(n) if n.priority != Priority::Critical && holds.is_held(user_id, n.channel) => {
                    // Behind a deferred message of the same user and channel.
                    self.defer(n, now, holds, traced, now, pending).await?
                }
                Outcome::Publish(n) => {
                    let traceparent = traced.hop.header();
                    let pairs = [(h::CORRELATION_ID, traced.correlation_id.as_str()), (h::TRACEPARENT, &traceparent)];
                    let topic = n.channel.topic(n.priority);
                    self.write(&topic, &n.user_id, &n, Some(kafka::headers(pairs)), pending).await?;
                    self.published[n.priority as usize].increment(1);
                    pending.published += 1;
                }
                Outcome::Defer(n) => {
                    let until = n.not_before.unwrap_or(now);
                    self.defer(n, until, holds, traced, now, pending).await?
                }
                Outcome::Suppress(n, reason) => {
                    let status = StatusRecord::of(&n, State::Suppressed, now).with_error(None, reason);
                    self.status(status, traced, pending).await?
                }
            }
        }
        Ok(())
    }

    /// Holds `n` until `until` (or behind what its lane already holds) and
    /// enqueues its `deferred` status. A member the scheduler could not
    /// publish (too large) is never held.
    async fn defer(
        &self,
        mut n: Notification,
        until: DateTime<Utc>,
        holds: &mut Holds,
        traced: &Traced,
        now: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        let (_, placed) = self.hold(&mut n, until, holds, traced, false).await?;
        self.deferred(&n, placed.at, traced, now, pending).await
    }

    /// Puts `n` on the schedule at `until`, or behind what its lane holds
    /// unless `exact`: answers the member and where it was placed.
    async fn hold(
        &self,
        n: &mut Notification,
        until: DateTime<Utc>,
        holds: &mut Holds,
        traced: &Traced,
        exact: bool,
    ) -> Result<(String, Placed), IntakeError> {
        let l = lane(&n.user_id, n.channel);
        let until = match holds.get(&l) {
            Some(held) if !exact => until.max(held),
            _ => until,
        };
        n.not_before = Some(until);
        let member = self.member(n, traced);
        let max = kafka::max_message_bytes(&self.config.kafka);
        if member.len() > max {
            let topic = n.channel.topic(n.priority);
            return Err(IntakeError::TooLarge { topic, bytes: member.len(), max });
        }
        let placed = until_ok("defer", || self.store.place(&l, &member, until, exact)).await;
        holds.hold(l, placed.at);
        Ok((member, placed))
    }

    /// `n` as the schedule holds it.
    fn member(&self, n: &Notification, traced: &Traced) -> String {
        let held = Deferred {
            notification: n.clone(),
            correlation_id: traced.correlation_id.clone(),
            traceparent: Some(traced.hop.header()),
        };
        serde_json::to_string(&held).expect("records serialize to JSON")
    }

    async fn deferred(
        &self,
        n: &Notification,
        released: DateTime<Utc>,
        traced: &Traced,
        now: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        let mut status = StatusRecord::of(n, State::Deferred, now);
        status.not_before = Some(released);
        self.status(status, traced, pending).await
    }

    /// Holds `n`, which the caps admitted at `at`. Its lane may release it
    /// later than that (what another intake process deferred meanwhile,
    /// which this batch's hydration did not see): the caps then admit it
    /// again where the lane releases it, and where they hold it later
    /// still, it is taken off the schedule and held there. So a capped
    /// message is counted at the instant it is released; one whose category
    /// drops is dropped when the caps have no room where the lane puts it.
    #[allow(clippy::too_many_arguments)]
    async fn defer_capped(
        &self,
        mut n: Notification,
        at: DateTime<Utc>,
        prefs: &Preferences,
        holds: &mut Holds,
        traced: &Traced,
        now: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        let limits = &self.limits[&n.event_type];
        let (quiet, zone) = (prefs.quiet_hours.as_ref(), crate::route::zone(prefs));
        let mut until = at;
        // Each pass places it later; the lane moves only as fast as other processes add to it.
        for _ in 0..8 {
            let (member, placed) = self.hold(&mut n, until, holds, traced, false).await?;
            let released = placed.at;
            if released < until {
                // Another read of its event holds it earlier: taken back, and held here.
                self.unhold(&n, &member).await;
                continue;
            }
            let floor = tidings_core::quiet_hours::opening(quiet, limits.window.as_ref(), zone, released);
            if released == until && floor <= released {
                return self.deferred(&n, released, traced, now, pending).await;
            }
            let ask = self.cap_ask(&n, limits, floor, now, true);
            let asks = std::slice::from_ref(&ask);
            let admission = self.admit_caps(asks, holds).await.pop();
            match admission {
                Some(Admission::Dropped { by }) => {
                    let reason = over_cap(by.as_deref(), limits);
                    return self.dropped(&n, &member, reason, traced, now, pending).await;
                }
                Some(Admission::Admitted { at, .. } | Admission::Before { at }) if at > released => {
                    self.unhold(&n, &member).await;
                    until = at;
                }
                _ => return self.deferred(&n, released, traced, now, pending).await,
            }
        }
        // Not settled in as many passes (other processes keep adding to
        // its lane): held where the caps last admitted it, or behind.
        let (_, placed) = self.hold(&mut n, until, holds, traced, false).await?;
        self.deferred(&n, placed.at, traced, now, pending).await
    }

    /// Holds `n`, a copy: the caps counted it at `at` for another read of
    /// its event, whose placing stands (a copy never moves a count another
    /// read made). The member that read holds is joined. Where none waits
    /// (that read published it, or stopped before holding it), `n` is held
    /// at `at` itself, before what its lane gained since, so it goes where
    /// it was counted and in the order it was admitted. Then the caps are
    /// asked again: one another read dropped meanwhile is taken back
    /// (whichever read's member holds it) and suppressed; one another read
    /// moved, and this read holds, is held where it moved to.
    async fn defer_copy(
        &self,
        mut n: Notification,
        at: DateTime<Utc>,
        holds: &mut Holds,
        traced: &Traced,
        now: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        let limits = &self.limits[&n.event_type];
        let mut until = at;
        for _ in 0..8 {
            let (member, placed) = self.hold(&mut n, until, holds, traced, true).await?;
            let ask = self.cap_ask(&n, limits, until, now, false);
            let asks = std::slice::from_ref(&ask);
            match self.admit_caps(asks, holds).await.pop() {
                // Joined, only a drop remembered is another read's: one
                // decided now means the count was forgotten (clocks apart).
                Some(Admission::Dropped { by }) if !placed.joined || by.is_none() => {
                    let reason = over_cap(by.as_deref(), limits);
                    return self.dropped(&n, &member, reason, traced, now, pending).await;
                }
                Some(Admission::Admitted { at, .. } | Admission::Before { at })
                    if at != placed.at && !placed.joined =>
                {
                    self.unhold(&n, &member).await;
                    until = at;
                }
                _ => return self.deferred(&n, placed.at, traced, now, pending).await,
            }
        }
        // Not settled in as many passes: held where the caps last counted it.
        let (_, placed) = self.hold(&mut n, until, holds, traced, true).await?;
        self.deferred(&n, placed.at, traced, now, pending).await
    }

    /// Takes `n`, held as `member`, off the schedule (whichever read's member
    /// holds it) and ends it `suppressed`: over a cap of a category that drops.
    async fn dropped(
        &self,
        n: &Notification,
        member: &str,
        reason: String,
        traced: &Traced,
        now: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        self.unhold(n, member).await;
        let status = StatusRecord::of(n, State::Suppressed, now).with_error(None, reason);
        self.status(status, traced, pending).await
    }

    /// Takes `n`, held as `member`, off the schedule (whichever read's member
    /// holds it), retried until Redis answers.
    async fn unhold(&self, n: &Notification, member: &str) {
        let l = lane(&n.user_id, n.channel);
        until_ok("take a message off the schedule", || self.store.undefer(&l, member)).await;
    }

    async fn status(&self, status: StatusRecord, traced: &Traced, pending: &mut Pending) -> Result<(), IntakeError> {
        let status = status.traced(&traced.correlation_id, &traced.hop);
        self.write(STATUS_TOPIC, &status.user_id, &status, None, pending).await?;
        self.outcomes.count(&status);
        Ok(())
    }

    /// Enqueues one of a record's writes; its acknowledgement joins the record's.
    async fn write<T: serde::Serialize>(
        &self,
        topic: &str,
        key: &str,
        value: &T,
        headers: Option<rdkafka::message::OwnedHeaders>,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        match enqueue_json(&self.producer, topic, key, value, headers).await {
            Ok(delivery) => {
                pending.deliveries.push(delivery);
                Ok(())
            }
            Err(e) if kafka::too_large(&e) => {
                let bytes = serde_json::to_vec(value).map_or(0, |v| v.len()) + key.len();
                Err(IntakeError::TooLarge {
                    topic: topic.to_string(),
                    bytes,
                    max: kafka::max_message_bytes(&self.config.kafka),
                })
            }
            Err(e) if kafka::refused_for_good(&e) && !kafka::fatal(&self.producer, &e) => {
                Err(IntakeError::Refused { topic: topic.to_string(), error: e })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn dead_letter(
        &self,
        read: &Read,
        reason: String,
        now: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Result<(), IntakeError> {
        tracing::warn!(topic = %read.topic, partition = read.partition, offset = read.offset, %reason, "input dead-lettered");
        let letter =
            DeadLetter::poison(&read.topic, read.partition, read.offset, reason, now).with_headers(&read.headers);
        let (key, value) = (read.key.as_deref(), read.value.as_deref());
        pending.deliveries.push(enqueue_dead_letter(&self.producer, INTAKE_DLQ_TOPIC, key, value, &letter).await?);
        pending.lettered = true;
        Ok(())
    }
}

/// A `suppressed` status about an event that produced no notification.
fn event_status(
    event: &CloudEvent,
    user_id: &str,
    channel: Channel,
    reason: String,
    now: DateTime<Utc>,
) -> StatusRecord {
    StatusRecord {
        notification_id: notification_id(&event.source, &event.id, channel, user_id),
        event_id: event.id.clone(),
        event_type: event.ty.clone(),
        user_id: user_id.to_string(),
        state: State::Suppressed,
        channel: None,
        priority: None,
        provider: None,
        provider_message_id: None,
        provider_code: None,
        attempts: 0,
        error_class: None,
        error: None,
        not_before: None,
        fallback_notification_id: None,
        created_at: Some(now),
        at: now,
        correlation_id: None,
        trace_id: None,
    }
    .with_error(None, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::store::{MemoryStore, Store as _};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// The example configuration, its writes only enqueued: nothing listens.
    fn example() -> Config {
        let mut config = Config::from_toml(include_str!("../../tidings.example.toml")).unwrap();
        config.kafka.bootstrap_servers = "127.0.0.1:9".into();
        config
    }

    /// `user`'s preferences: email on, in UTC, with quiet hours 22:00–07:00 if `quiet`.
    fn prefs(user: &str, quiet: bool) -> String {
        let mut p = serde_json::json!({"user_id": user, "timezone": "UTC", "email": format!("{user}@example.com"),
            "channels": {"email": true}});
        if quiet {
            p["quiet_hours"] = serde_json::json!({"start": "22:00", "end": "07:00"});
        }
        p.to_string()
    }

    /// Intake on `config` and a memory store holding `u1`'s preferences,
    /// its clock starting at `start`.
    async fn set_up(config: Config, start: &str, quiet: bool) -> (Arc<MemoryStore>, Intake, Clock) {
        let store = Arc::new(MemoryStore::new());
        store.set_prefs("u1", &prefs("u1", quiet)).await.unwrap();
        let clock = Clock::starting_at(at(start));
        let intake = Intake::new(Arc::new(config), store.clone(), clock.clone(), Progress::shared()).unwrap();
        (store, intake, clock)
    }

    #[test]
    fn carried_holds_reach_only_batches_hydrated_before_they_were_written() {
        let mut carried = Carried::default();
        let mut first = carried.merge(HashMap::new(), CapsRead::new(), 0);
        first.hold("u1:email".into(), at("2026-12-06T07:00:00Z"));
        carried.keep(1, first);
        // Hydrated before batch 1 was routed: its lanes lack the hold.
        let second = carried.merge(HashMap::new(), CapsRead::new(), 0);
        assert_eq!(second.get("u1:email"), Some(at("2026-12-06T07:00:00Z")));
        // A later release read from Redis wins; an earlier one is raised.
        let read = HashMap::from([("u1:email".to_string(), at("2026-12-06T06:00:00Z"))]);
        assert_eq!(carried.merge(read, CapsRead::new(), 0).get("u1:email"), Some(at("2026-12-06T07:00:00Z")));
        let read = HashMap::from([("u1:email".to_string(), at("2026-12-06T08:00:00Z"))]);
        assert_eq!(carried.merge(read, CapsRead::new(), 0).get("u1:email"), Some(at("2026-12-06T08:00:00Z")));
        // Hydrated once batch 1 was routed: Redis has it, and nothing is carried any more.
        assert!(!carried.merge(HashMap::new(), CapsRead::new(), 1).is_held("u1", Channel::Email));
        assert!(carried.holds.is_empty());
    }

    /// A write carried to a batch read before it replaces what that batch
    /// read only where the read is the value the write replaced: a read
    /// that already has it, or another process's later value, stands.
    #[test]
    fn carried_caps_replace_only_the_value_they_were_written_over() {
        let (v1, v2, theirs) = ("1111111111111111{}", "2222222222222222{}", "3333333333333333{}");
        let mut carried = Carried::default();
        let mut holds = carried.merge(HashMap::new(), CapsRead::new(), 0);
        let write =
            |replaced: &str, value: &str| CapsSeen { value: Some(value.into()), replaced: Some(replaced.into()) };
        holds.admitted(HashMap::from([("u".to_string(), write("", v1))]));
        holds.admitted(HashMap::from([("u".to_string(), write(&v1[..16], v2))]));
        carried.keep(1, holds);
        let read = |value: Option<&str>| CapsRead::from([("u".to_string(), value.map(str::to_string))]);
        for (was, now) in [(None, v2), (Some(v1), v2), (Some(v2), v2), (Some(theirs), theirs)] {
            let holds = carried.merge(HashMap::new(), read(was), 0);
            assert_eq!(holds.caps["u"].as_deref(), Some(now), "read {was:?}");
        }
        // Users the batch does not read are not added; once routed, nothing is carried.
        assert!(carried.merge(HashMap::new(), CapsRead::new(), 0).caps.is_empty());
        assert_eq!(carried.merge(HashMap::new(), read(Some(v1)), 1).caps["u"].as_deref(), Some(v1));
    }

    fn read(seq: u64) -> Read {
        read_for(seq, "u1")
    }

    fn read_for(seq: u64, user: &str) -> Read {
        let event: CloudEvent = serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": format!("e{seq}"), "type": "order.confirmed", "source": "/shop",
            "data": {"user_id": user}
        }))
        .unwrap();
        Read {
            topic: Arc::from("orders.events"),
            partition: 0,
            offset: seq as i64,
            key: Some(b"u1".to_vec()),
            value: None,
            headers: Vec::new(),
            decoded: Decoded::Routed(event, user.into()),
        }
    }

    /// The hydrator reads a batch's lanes while the batch before it is
    /// routed: a message that batch deferred must still hold the next one
    /// back, even once quiet hours are over when the next one is routed.
    #[tokio::test]
    async fn a_batch_hydrated_during_the_routing_of_the_one_before_waits_behind_its_deferral() {
        let (store, intake, clock) = set_up(example(), "2026-12-06T06:59:59Z", true).await;
        let routed = AtomicU64::new(0);
        let first = intake.prepare(vec![read(1)], &routed).await;
        let second = intake.prepare(vec![read(2)], &routed).await;
        let mut carried = Carried::default();

        let out = intake.handle_batch(first, 1, &mut carried).await.unwrap();
        routed.store(1, Ordering::Release);
        assert_eq!(out[0].published, 0, "quiet hours defer the first");
        clock.advance(Duration::from_secs(2));
        let out = intake.handle_batch(second, 2, &mut carried).await.unwrap();
        assert_eq!(out[0].published, 0, "the second waits behind the first, not past it");
        assert_eq!(store.deferred_len().await.unwrap(), 2);
    }

    /// A read of an event that stopped between the caps counting its
    /// message for later and holding it: the copy read again finds it
    /// counted (for 11:00) and nothing of it on the schedule, while the
    /// lane has grown since (a message counted for noon, behind it). The
    /// copy goes where it was counted, before that one: held behind the
    /// lane, two would go at noon under a cap of one an hour.
    #[tokio::test]
    async fn a_copy_whose_first_read_stopped_before_holding_it_goes_where_it_was_counted() {
        let mut config = example();
        config.caps = serde_json::from_value(serde_json::json!({"transactional": {"max": 1, "per": "1h"}})).unwrap();
        config.validate().unwrap();
        let ten = at("2026-12-06T10:00:00Z");
        let (store, intake, clock) = set_up(config, "2026-12-06T10:00:00Z", false).await;
        let (routed, mut carried) = (AtomicU64::new(0), Carried::default());
        let mut batches = 0;
        let mut route = async |seq| {
            batches += 1;
            let batch = intake.prepare(vec![read(seq)], &routed).await;
            let out = intake.handle_batch(batch, batches, &mut carried).await.unwrap();
            routed.store(batches, Ordering::Release);
            out[0].published
        };
        assert_eq!(route(1).await, 1, "the first goes at once");
        // The second's first read: counted for 11:00 (an hour after the
        // first, which went a moment after ten), and stopped there.
        let id = notification_id("/shop", "e2", Channel::Email, "u1");
        let caps = intake.limits["order.confirmed"].caps.clone();
        let now = clock.now();
        let ask =
            CapAsk { user: "u1".into(), channel: Channel::Email, id, caps, at: now, now, drop: false, again: false };
        let eleven = match &store.admit(&[ask]).await.unwrap()[..] {
            [Admission::Admitted { at, by: Some(_) }] => *at,
            other => panic!("{other:?}"),
        };
        assert!(eleven >= ten + chrono::Duration::hours(1), "{eleven}");
        assert_eq!(route(3).await, 0, "the third is counted for noon");
        assert_eq!(route(2).await, 0, "the copy of the second waits");
        assert_eq!(store.deferred_len().await.unwrap(), 2);
        let lease = Duration::from_secs(60);
        let events = |members: &[String]| -> Vec<String> {
            members.iter().map(|m| serde_json::from_str::<Deferred>(m).unwrap().notification.event_id).collect()
        };
        let due = store.claim_due(eleven, 10, lease).await.unwrap();
        assert_eq!(events(&due), ["e2"], "the copy at 11:00, before the third");
        store.remove_deferred("u1:email", &due[0]).await.unwrap();
        let noon = eleven + chrono::Duration::hours(1);
        assert_eq!(events(&store.claim_due(noon, 10, lease).await.unwrap()), ["e3"]);
    }

    /// A copy counted for another read that has since dropped its
    /// notification (the lane moved it to where the cap of its category,
    /// which drops, had no room) and taken it off the schedule: the copy
    /// is held first (nothing of it waits), then finds it dropped, and is
    /// taken back and suppressed instead of sent.
    #[tokio::test]
    async fn a_copy_of_a_notification_another_read_dropped_is_suppressed_not_held() {
        let mut config = example();
        let limits = serde_json::json!({"caps": {"marketing": {"max": 1, "per": "24h"}},
            "categories": {"marketing": {"over_cap": "drop"}}});
        config.caps = serde_json::from_value(limits["caps"].clone()).unwrap();
        config.categories = serde_json::from_value(limits["categories"].clone()).unwrap();
        config.validate().unwrap();
        let ten = at("2026-12-06T10:00:00Z");
        let (store, intake, _) = set_up(config, "2026-12-06T10:00:00Z", false).await;
        let mut read = read(1);
        let Decoded::Routed(event, _) = &mut read.decoded else { unreachable!() };
        event.ty = "marketing.campaign".into();
        let caps = intake.limits["marketing.campaign"].caps.clone();
        let ask = |id: &str, at: DateTime<Utc>, again| CapAsk {
            user: "u1".into(),
            channel: Channel::Email,
            id: id.into(),
            caps: caps.clone(),
            at,
            now: ten,
            drop: true,
            again,
        };
        // The other read: counted at 10:00, then (a day later, behind its
        // lane) admitted again where another campaign fills the window: dropped.
        let x = notification_id("/shop", "e1", Channel::Email, "u1");
        let day = chrono::Duration::hours(24);
        assert!(matches!(&store.admit(&[ask(&x, ten, false)]).await.unwrap()[..], [Admission::Admitted { .. }]));
        assert!(matches!(&store.admit(&[ask("y", ten + day, false)]).await.unwrap()[..], [Admission::Admitted { .. }]));
        let again = ask(&x, ten + day + chrono::Duration::hours(1), true);
        assert!(matches!(&store.admit(&[again]).await.unwrap()[..], [Admission::Dropped { .. }]));

        // The copy, answered before the drop as counted at 10:00.
        let routed = AtomicU64::new(0);
        let prepared = intake.prepare(vec![read], &routed).await;
        let outcomes = intake.routed(&prepared.batch[0], &prepared.prefs, &prepared.listed, ten).unwrap();
        let [Outcome::Publish(n)] = &outcomes[..] else { panic!("{outcomes:?}") };
        let mut holds = Carried::default().merge(prepared.holds, prepared.caps, 0);
        let Decoded::Routed(event, _) = &prepared.batch[0].decoded else { unreachable!() };
        let (traced, _) = Traced::event(event);
        let mut pending = Pending {
            topic: Arc::from("marketing.events"),
            partition: 0,
            offset: 1,
            published: 0,
            deliveries: Vec::new(),
            key: None,
            value: None,
            headers: Vec::new(),
            lettered: false,
        };
        intake.defer_copy(n.clone(), ten, &mut holds, &traced, ten, &mut pending).await.unwrap();
        assert_eq!(store.deferred_len().await.unwrap(), 0, "taken back: nothing of it waits to be sent");
        assert_eq!(pending.deliveries.len(), 1, "its one status");
        assert_eq!(pending.published, 0);
    }

    /// A batch read again after waiting still counts as hydrated when it
    /// was first read: the batch behind it, hydrated before the deferral
    /// routed just before, keeps the hold the router carries for it (the
    /// batch read again, another user's, holds nothing of its own there).
    #[tokio::test(start_paused = true)]
    async fn a_batch_read_again_leaves_the_holds_the_batch_behind_it_needs() {
        let (store, intake, clock) = set_up(example(), "2026-12-06T06:59:59Z", true).await;
        let routed = AtomicU64::new(0);
        store.set_prefs("u2", &prefs("u2", false)).await.unwrap();
        let first = intake.prepare(vec![read(1)], &routed).await;
        let (second, third) =
            (intake.prepare(vec![read_for(2, "u2")], &routed).await, intake.prepare(vec![read(3)], &routed).await);
        let mut carried = Carried::default();
        let out = intake.handle_batch(first, 1, &mut carried).await.unwrap();
        routed.store(1, Ordering::Release);
        assert_eq!(out[0].published, 0, "quiet hours defer the first");
        // The second waited: read again, after the first was routed.
        tokio::time::advance(HYDRATED_FOR * 2).await;
        clock.advance(Duration::from_secs(2));
        let second = intake.refreshed(second, &routed).await;
        let out = intake.handle_batch(second, 2, &mut carried).await.unwrap();
        routed.store(2, Ordering::Release);
        assert_eq!(out[0].published, 1, "another user's goes at once");
        // The third was read before the first was routed, and not again.
        let third = Prepared { read_at: Instant::now(), ..third };
        let out = intake.handle_batch(third, 3, &mut carried).await.unwrap();
        assert_eq!(out[0].published, 0, "the third waits behind the first, not past it");
        assert_eq!(store.deferred_len().await.unwrap(), 2);
    }

    /// A batch hydrated before a broker outage held the router up is routed
    /// with the preferences of when it is routed: an opt-out made meanwhile holds.
    #[tokio::test(start_paused = true)]
    async fn a_batch_that_waited_reads_preferences_again() {
        let mut config = example();
        config.intake.prefs_cache_size = 0;
        let store = Arc::new(MemoryStore::new());
        let prefs = |on: bool| {
            serde_json::json!({"user_id": "u1", "timezone": "UTC", "email": "u1@example.com", "channels": {"email": on}})
                .to_string()
        };
        store.set_prefs("u1", &prefs(true)).await.unwrap();
        let clock = Clock::starting_at(at("2026-12-06T12:00:00Z"));
        let intake = Intake::new(Arc::new(config), store.clone(), clock, Progress::shared()).unwrap();
        let routed = AtomicU64::new(0);
        let waited = intake.prepare(vec![read(1)], &routed).await;
        let fresh = intake.prepare(vec![read(2)], &routed).await;
        store.set_prefs("u1", &prefs(false)).await.unwrap();
        let mut carried = Carried::default();

        // Routed at once, a batch uses what was read with it.
        let fresh = intake.refreshed(fresh, &routed).await;
        let out = intake.handle_batch(fresh, 1, &mut carried).await.unwrap();
        assert_eq!(out[0].published, 1);
        tokio::time::advance(HYDRATED_FOR * 2).await;
        let waited = intake.refreshed(waited, &routed).await;
        let out = intake.handle_batch(waited, 2, &mut carried).await.unwrap();
        assert_eq!(out[0].published, 0, "the user turned email off while the batch waited");
    }
}
