//! Dead letters as `tidings dlq` reads them back, which ones a filter takes,
//! and reading dead-letter topics through to their end.

use crate::cli::LetterFilter;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::time::Duration;
use tidings_core::channel::INTAKE_DLQ_TOPIC;
use tidings_core::dead_letter::DeadLetter;
use tidings_core::kafka::header_pairs;
use tidings_core::{Channel, Config, Notification};

/// The dead-letter topic of `from`: a channel, or `intake`.
pub fn topic_of(from: &str) -> anyhow::Result<String> {
    if from == "intake" {
        Ok(INTAKE_DLQ_TOPIC.to_string())
    } else {
        Ok(from.parse::<Channel>().map_err(|e| anyhow::anyhow!("--from {from}: {e} (or intake)"))?.dlq_topic())
    }
}

/// The dead-letter topics of `from`, or every one.
pub fn topics_of(from: Option<&str>) -> anyhow::Result<Vec<String>> {
    match from {
        Some(from) => Ok(vec![topic_of(from)?]),
        None => Ok(std::iter::once(INTAKE_DLQ_TOPIC.to_string()).chain(Channel::ALL.map(|c| c.dlq_topic())).collect()),
    }
}

/// One record of a dead-letter topic.
#[derive(Debug, Clone)]
pub struct Letter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// What its headers say, or why they cannot be read.
    pub read: Result<DeadLetter, String>,
    /// The notification, for a channel's letter that holds one.
    pub notification: Option<Notification>,
    /// The event's type and id: the notification's, or the CloudEvent's.
    pub event_type: Option<String>,
    pub event_id: Option<String>,
}

impl Letter {
    /// The record, its value read once: as a notification on a channel's
    /// topic, else as a CloudEvent (structured, or binary mode's `ce_type`
    /// and `ce_id` headers).
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let headers = header_pairs(m);
        let value = m.payload();
        let notification: Option<Notification> =
            value.filter(|_| m.topic() != INTAKE_DLQ_TOPIC).and_then(|v| serde_json::from_slice(v).ok());
        let (event_type, event_id) = match &notification {
            Some(n) => (Some(n.event_type.clone()), Some(n.event_id.clone())),
            None => {
                let event: Option<serde_json::Value> = value.and_then(|v| serde_json::from_slice(v).ok());
                let field = |name: &str| {
                    let attribute = event.as_ref().and_then(|e| e.get(name)).and_then(|v| v.as_str());
                    attribute.map(str::to_string).or_else(|| {
                        let header = format!("ce_{name}");
                        headers.iter().find(|(k, _)| *k == header).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    })
                };
                (field("type"), field("id"))
            }
        };
        Letter {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            read: DeadLetter::read(&headers),
            headers,
            notification,
            event_type,
            event_id,
        }
    }

    /// `topic:partition:offset`.
    pub fn place(&self) -> String {
        format!("{}:{}:{}", self.topic, self.partition, self.offset)
    }

    /// The channel whose letter it is, or `intake`.
    pub fn source(&self) -> &str {
        self.topic.strip_prefix("tidings.").and_then(|t| t.strip_suffix(".dlq")).unwrap_or(&self.topic)
    }

    /// Whether `filter` takes this letter. A letter whose headers do not read
    /// is taken only by a filter on nothing but ids and event types.
    pub fn matches(&self, filter: &LetterFilter) -> bool {
        if filter.event_type.is_some() && filter.event_type != self.event_type {
            return false;
        }
        if let Some(id) = &filter.id {
            let notification = self.notification.as_ref().map(|n| &n.notification_id);
            if notification != Some(id) && self.event_id.as_ref() != Some(id) {
                return false;
            }
        }
        let timed = filter.error_class.is_some() || filter.since.is_some() || filter.until.is_some();
        match &self.read {
            Err(_) => !timed,
            Ok(letter) => {
                filter.error_class.is_none_or(|c| c == letter.error_class)
                    && filter.since.is_none_or(|t| letter.last_failure >= t)
                    && filter.until.is_none_or(|t| letter.last_failure < t)
            }
        }
    }

    /// When it last failed, as its headers say.
    pub fn last_failure(&self) -> Option<DateTime<Utc>> {
        self.read.as_ref().ok().map(|l| l.last_failure)
    }
}

/// The context of the `dlq` commands' consumers: the end of a partition is
/// how they know they are done, not an error to log.
pub struct Ends;

impl rdkafka::ClientContext for Ends {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !matches!(error, KafkaError::PartitionEOF(_)) && error != end {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for Ends {}

/// Where reading starts in each partition.
pub enum Start {
    Beginning,
    /// Where the consumer group `group` left off (the beginning if nowhere).
    Committed(String),
    /// One record.
    At(i32, i64),
}

/// A consumer that reads `topic` from `start` without joining a group or
/// committing anything, and says when each partition reached its end.
pub fn reader(config: &Config, topic: &str, start: &Start) -> anyhow::Result<StreamConsumer<Ends>> {
    let group = match start {
        Start::Committed(group) => group.clone(),
        _ => config.group("dlq-read"),
    };
    let consumer: StreamConsumer<Ends> = tidings_core::kafka::client_config(&config.kafka)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(Ends)?;
    let mut partitions = TopicPartitionList::new();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
        for p in t.partitions() {
            let offset = match start {
                Start::At(partition, offset) if *partition == p.id() => Offset::Offset(*offset),
                Start::At(..) => continue,
                _ => Offset::Beginning,
            };
            partitions.add_partition_offset(topic, p.id(), offset)?;
        }
    }
    if let Start::Committed(_) = start {
        let committed = consumer.committed_offsets(partitions.clone(), Duration::from_secs(10))?;
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                partitions.set_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
            }
        }
    }
    consumer.assign(&partitions)?;
    Ok(consumer)
}

/// Calls `each` with every record a [`reader`] reads, until every partition
/// it reads reached its end or `each` says stop.
pub async fn read_to_end(consumer: &StreamConsumer<Ends>, mut each: impl FnMut(Letter) -> bool) -> anyhow::Result<()> {
    read_messages(consumer, |m| each(Letter::from_message(m))).await
}

/// [`read_to_end`] with each record as read.
pub async fn read_messages(
    consumer: &StreamConsumer<Ends>,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> anyhow::Result<()> {
    let assigned = consumer.assignment()?.count();
    let mut ended = HashSet::new();
    while ended.len() < assigned {
        match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Err(_) => anyhow::bail!("no record and no end of partition for 30 s: is the cluster reachable?"),
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(m)) => {
                ended.remove(&m.partition());
                if !each(&m) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
