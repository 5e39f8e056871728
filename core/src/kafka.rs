//! librdkafka settings every role shares, and the producer helpers.

use crate::config::KafkaConfig;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The cluster address and the configured librdkafka options.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    tuned(kafka, &[], &[])
}

/// `defaults`, then the configured options (an operator's setting wins), then
/// `fixed`: the settings Tidings' guarantees rest on, which no option may change.
fn tuned(kafka: &KafkaConfig, defaults: &[(&str, &str)], fixed: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in &kafka.options {
        config.set(k, v);
    }
    for (k, v) in fixed {
        config.set(*k, *v);
    }
    config
}

/// The largest record a producer writes unless `kafka.options` says otherwise
/// (librdkafka's `message.max.bytes` default).
const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The producer of a role (intake, worker, scheduler): idempotent, so
/// per-partition order holds across retries and a retried batch is never
/// written twice; and a record never times out locally, so a broker outage
/// of any length holds the role's writes (and, behind them, its reading)
/// instead of failing them. The only errors its deliveries report are ones
/// no retry fixes (a record too large, a topic refused).
pub fn producer(kafka: &KafkaConfig) -> KafkaResult<FutureProducer> {
    tuned(
        kafka,
        &[("linger.ms", "5"), ("compression.type", "lz4")],
        &[("enable.idempotence", "true"), ("message.timeout.ms", "0")],
    )
    .create()
}

/// The producer of a command an operator runs and waits for (`dev feed`,
/// `dlq replay`, `bench`): as [`producer`], but a write the cluster does not
/// take within a minute fails, so a command pointed at the wrong cluster ends.
pub fn command_producer(kafka: &KafkaConfig) -> KafkaResult<FutureProducer> {
    tuned(
        kafka,
        &[("linger.ms", "5"), ("compression.type", "lz4"), ("message.timeout.ms", "60000")],
        &[("enable.idempotence", "true")],
    )
    .create()
}

/// The producer of the callbacks role's routes: a write the cluster has not
/// taken within `timeout` (the request's `callbacks.write_timeout`, whose
/// answer was 503) fails instead of landing later, and what waits is at
/// most 32 MB, so an outage neither grows the pod past its limit nor lets a
/// keyword the provider was refused for land after a later one.
pub fn callbacks_producer(kafka: &KafkaConfig, timeout: Duration) -> KafkaResult<FutureProducer> {
    let timeout = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
    tuned(
        kafka,
        &[("linger.ms", "5"), ("compression.type", "lz4"), ("queue.buffering.max.kbytes", "32768")],
        &[("enable.idempotence", "true"), ("message.timeout.ms", &timeout)],
    )
    .create()
}

/// How long a role waits for its consumer to leave its group at the end.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// The end of a role's consumer: commits what it stored, leaves its group
/// and closes, on a thread of its own. librdkafka's close waits for the
/// group as long as that takes (a rejoin after a session timeout, a
/// coordinator away), and on the async runtime it stalls every task of the
/// process: a worker told to stop as the broker came back held both runtime
/// threads there, its other consumers' drains and timers with them, until
/// it was killed. Waits at most `within`; past it the role ends anyway: what
/// was committed stays committed, and the group notices the member gone at
/// session timeout, as after a crash.
pub async fn close<C: ConsumerContext + 'static>(consumer: StreamConsumer<C>, within: Duration) {
    let (done, closed) = tokio::sync::oneshot::channel();
    let closing = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "nothing to commit at shutdown");
        }
        consumer.unsubscribe();
        drop(consumer);
        let _ = done.send(());
    });
    if let Err(e) = closing {
        tracing::warn!(error = %e, "no thread to close the consumer on");
        return;
    }
    match tokio::time::timeout(within, closed).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::warn!("closing the consumer panicked; the group notices at session timeout"),
        Err(_) => tracing::warn!(
            ?within,
            "the consumer did not leave its group in time; ending without it (the group notices at session timeout)"
        ),
    }
}

/// The largest record the producers write (`message.max.bytes`).
pub fn max_message_bytes(kafka: &KafkaConfig) -> usize {
    kafka.options.get("message.max.bytes").and_then(|v| v.parse().ok()).unwrap_or(MAX_MESSAGE_BYTES)
}

/// Whether a write failed because the record is larger than the producer or
/// the broker takes: retrying it never helps.
pub fn too_large(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

/// Whether the cluster refused a write for good: the record is too large,
/// or its topic is one this client may not write or that does not exist
/// (auto-creation off), or the record breaks a topic's policy. Writing the
/// same record to the same topic again never helps; the record that caused
/// it is dead-lettered, so it stops no partition. A producer's fatal error
/// is not one of these: the producer is what is broken ([`fatal`]).
pub fn refused_for_good(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    too_large(e)
        || matches!(
            e,
            KafkaError::MessageProduction(
                C::TopicAuthorizationFailed
                    | C::UnknownTopic
                    | C::UnknownTopicOrPartition
                    | C::UnknownPartition
                    | C::InvalidTopic
                    | C::InvalidRecord
                    | C::PolicyViolation
                    | C::MessageBatchTooLarge
            )
        )
}

/// Whether a write failed because its producer met a fatal error (for an
/// idempotent producer, a broken sequence after the cluster lost data): no
/// write through that producer succeeds again, a new one is needed.
pub fn fatal(producer: &FutureProducer, e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::Fatal)) || producer.client().fatal_error().is_some()
}

/// Consumer settings: offsets are stored only when told to (once an outcome
/// is durable) and what was stored is committed in the background. Session
/// and poll intervals may be tuned in `kafka.options`; a role that holds work
/// pauses its partitions after [`stall_limit`] and polls on, so an outage
/// never outlasts `max.poll.interval.ms`.
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    tuned(
        kafka,
        &[
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
        ],
        &[("group.id", group), ("enable.auto.commit", "true"), ("enable.auto.offset.store", "false")],
    )
}

/// [`consumer_config`] for a role's consumer, whose context
/// ([`crate::telemetry::Watched`]) exports its lag from librdkafka's
/// statistics every 5 s unless `kafka.options` sets `statistics.interval.ms`.
pub fn role_consumer_config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
    let mut config = consumer_config(kafka, group);
    if !kafka.options.contains_key("statistics.interval.ms") {
        config.set("statistics.interval.ms", "5000");
    }
    config
}

/// A consumer with [`consumer_config`].
pub fn consumer(kafka: &KafkaConfig, group: &str) -> KafkaResult<StreamConsumer> {
    consumer_config(kafka, group).create()
}

/// How long a role may hold work without taking records before it pauses
/// its partitions to poll on without taking any: a quarter of the
/// consumer's `max.poll.interval.ms` (librdkafka's default, 5 minutes,
/// unless `kafka.options` sets it), at most 10 s.
///
/// Long, because a pause costs: librdkafka drops what it fetched ahead of a
/// paused partition and fetches it again on resume (tansu's memory storage
/// never serves that fetch, as it starts inside a batch), so a busy moment
/// must not pause. Short enough that the consumer is polled well within
/// `max.poll.interval.ms`, and a rebalance waits for it at most this long.
pub fn stall_limit(kafka: &KafkaConfig) -> Duration {
    let poll_interval = kafka.options.get("max.poll.interval.ms").and_then(|v| v.parse().ok()).unwrap_or(300_000u64);
    Duration::from_millis(poll_interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// Whether a consumer's reading is paused, as one flag for every partition
/// it owns now or later.
///
/// librdkafka pauses and resumes the partitions it is given, and keeps an
/// application's pause on a partition across a revoke and a later
/// re-assignment: resuming "the assignment" leaves a partition revoked while
/// paused paused for good when it comes back, and a partition assigned while
/// paused arrives unpaused. So the flag is applied to every assignment as it
/// arrives ([`Hold::assigned`], from the consumer's context), and
/// [`Hold::set`] applies it to the whole assignment of the moment.
#[derive(Debug, Clone, Default)]
pub struct Hold(Arc<AtomicBool>);

impl Hold {
    pub fn is_paused(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Pauses or resumes every partition assigned now, and those assigned later.
    pub fn set<C: ConsumerContext>(&self, consumer: &impl Consumer<C>, paused: bool) -> KafkaResult<()> {
        let assignment = consumer.assignment()?;
        if paused {
            consumer.pause(&assignment)?;
        } else {
            consumer.resume(&assignment)?;
        }
        // Assignments are given the flag while the consumer is polled, by the task that calls this.
        self.0.store(paused, Ordering::Relaxed);
        Ok(())
    }

    /// Gives partitions just assigned the hold's state (resuming one that
    /// was paused when it was taken away).
    pub fn assigned<C: ConsumerContext>(&self, consumer: &impl Consumer<C>, partitions: &rdkafka::TopicPartitionList) {
        if partitions.count() == 0 {
            return;
        }
        let paused = self.is_paused();
        let done = if paused { consumer.pause(partitions) } else { consumer.resume(partitions) };
        if let Err(e) = done {
            tracing::warn!(error = %e, paused, "cannot set the reading state of assigned partitions");
        }
    }
}

/// Builds Kafka headers from (name, value) pairs.
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs.into_iter().fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }))
}

/// A message's headers as owned (name, value) pairs.
pub fn header_pairs<M: Message>(message: &M) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
        .unwrap_or_default()
}

/// Enqueues a record without waiting for its acknowledgement, waiting only
/// while librdkafka's local queue is full. Records enqueued one after another
/// keep their order per partition.
pub async fn enqueue<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, [u8]>,
) -> KafkaResult<rdkafka::producer::DeliveryFuture> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits for an enqueued record's acknowledgement.
pub async fn delivered(delivery: rdkafka::producer::DeliveryFuture) -> KafkaResult<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Enqueues `value` as JSON, keyed by `key`.
pub async fn enqueue_json<T: serde::Serialize>(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &T,
    headers: Option<OwnedHeaders>,
) -> KafkaResult<rdkafka::producer::DeliveryFuture> {
    thread_local! {
        static PAYLOAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // librdkafka copies what it is given, so one buffer per thread serves
    // every record; only a record met by a full queue needs one of its own.
    let first = PAYLOAD.with_borrow_mut(|payload| {
        payload.clear();
        // Our records are plain structs and JSON values: serializing them cannot fail.
        serde_json::to_writer(&mut *payload, value).expect("records serialize to JSON");
        let mut record = FutureRecord::to(topic).key(key).payload(payload.as_slice());
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let sent = producer.send_result(record).map_err(|(e, record)| (e, record.headers, payload.clone()));
        if payload.capacity() > 64 * 1024 {
            *payload = Vec::new();
        }
        sent
    });
    match first {
        Ok(delivery) => Ok(delivery),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), headers, payload)) => {
            let mut record = FutureRecord::to(topic).key(key).payload(payload.as_slice());
            record.headers = headers;
            enqueue(producer, record).await
        }
        Err((e, _, _)) => Err(e),
    }
}

/// Writes a dead-letter record and waits for it, as [`enqueue_dead_letter`];
/// a letter the broker refuses as too large is written again without the value.
pub async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    letter: &crate::dead_letter::DeadLetter,
) -> KafkaResult<()> {
    match delivered(enqueue_dead_letter(producer, topic, key, value, letter).await?).await {
        Err(e) if too_large(&e) && value.is_some() => {
            delivered(enqueue_dead_letter(producer, topic, key, None, &without_value(letter, value)).await?).await
        }
        other => other,
    }
}

/// Enqueues a dead-letter record: the original key and value unchanged, plus
/// the headers of `letter`. A letter too large to write (the headers grew it
/// past the limit, or the original never fitted) is written without the
/// value, and its error says so; it still names the original's topic,
/// partition and offset.
pub async fn enqueue_dead_letter(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    letter: &crate::dead_letter::DeadLetter,
) -> KafkaResult<rdkafka::producer::DeliveryFuture> {
    let enqueued = match enqueue(producer, letter_record(topic, key, value, letter)).await {
        Err(e) if too_large(&e) && value.is_some() => {
            enqueue(producer, letter_record(topic, key, None, &without_value(letter, value))).await
        }
        other => other,
    };
    if enqueued.is_ok() {
        metrics::counter!("tidings_dead_letters_total", "topic" => topic.to_string(), "class" => letter.error_class.as_str())
            .increment(1);
    }
    enqueued
}

fn letter_record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    letter: &crate::dead_letter::DeadLetter,
) -> FutureRecord<'a, [u8], [u8]> {
    let pairs = letter.headers();
    let headers =
        pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }));
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    record
}

fn without_value(letter: &crate::dead_letter::DeadLetter, value: Option<&[u8]>) -> crate::dead_letter::DeadLetter {
    let mut bare = letter.clone();
    let bytes = value.map_or(0, <[u8]>::len);
    bare.error = format!("{}; the record's value ({bytes} bytes) is left out: too large to write", letter.error);
    bare
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka is built with TLS: a SASL_SSL configuration (as a managed
    /// Kafka asks for) makes clients, where a build without OpenSSL refuses it.
    #[tokio::test]
    async fn sasl_over_tls_options_make_clients() {
        let mut kafka: KafkaConfig =
            serde_json::from_value(serde_json::json!({"bootstrap_servers": "127.0.0.1:9"})).unwrap();
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "tidings"),
            ("sasl.password", "secret"),
        ] {
            kafka.options.insert(k.into(), v.into());
        }
        let _producer = producer(&kafka).expect("a SASL_SSL producer");
        let _consumer = consumer(&kafka, "g").expect("a SASL_SSL consumer");
    }
}
