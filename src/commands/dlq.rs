//! `tidings dlq list|replay`.
//!
//! `list` reads a dead-letter topic from the start without committing.
//! `replay` sends each dead letter back to the topic it came from, in order,
//! under its own consumer group, so a record is replayed once however often
//! the command runs. A replayed channel notification has its outcome
//! forgotten first, so the worker delivers it instead of calling it a
//! duplicate. A dead letter from the deferral schedule (an entry that did
//! not read) has no topic to go back to: replay leaves it, and `list` shows it.

use crate::cli::DlqCommand;
use crate::fleet;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::INTAKE_DLQ_TOPIC;
use tidings_core::dead_letter;
use tidings_core::kafka::{self, header_pairs};
use tidings_core::{Channel, Config, Notification};

fn topic_of(from: &str) -> anyhow::Result<String> {
    if from == "intake" {
        Ok(INTAKE_DLQ_TOPIC.to_string())
    } else {
        Ok(from.parse::<Channel>().map_err(|e| anyhow::anyhow!(e))?.dlq_topic())
    }
}

pub async fn run(command: DlqCommand, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { from, max } => {
            let topic = topic_of(&from)?;
            let group = format!("{}-dlq-list-{}", config.kafka.group_prefix, rand::random::<u32>());
            let consumer = reader(&config, &group, &topic, Offset::Beginning)?;
            let mut shown = 0;
            read_to_end(&consumer, &topic, max, |m| {
                let headers: serde_json::Map<String, serde_json::Value> = header_pairs(m)
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned().into()))
                    .collect();
                let line = serde_json::json!({
                    "partition": m.partition(), "offset": m.offset(),
                    "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    "value": m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
                    "headers": headers,
                });
                println!("{line}");
                shown += 1;
                Ok(())
            })?;
            eprintln!("{shown} dead letters in {topic}");
        }
        DlqCommand::Replay { from, max } => {
            let topic = topic_of(&from)?;
            let group = config.group(&format!("dlq-replay-{from}"));
            let consumer = reader(&config, &group, &topic, Offset::Stored)?;
            let producer = kafka::command_producer(&config.kafka)?;
            let store = fleet::open_store(&config).await?;
            let mut records = Vec::new();
            read_to_end(&consumer, &topic, max, |m| {
                let original = header_pairs(m)
                    .into_iter()
                    .find(|(k, _)| k == dead_letter::ORIGINAL_TOPIC)
                    .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                    .ok_or_else(|| {
                        anyhow::anyhow!("offset {}: no {} header", m.offset(), dead_letter::ORIGINAL_TOPIC)
                    })?;
                records.push((
                    original,
                    m.partition(),
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                ));
                Ok(())
            })?;
            let mut offsets = TopicPartitionList::new();
            let mut replayed = 0;
            let mut left = 0;
            for (target, partition, offset, key, value) in &records {
                offsets.add_partition_offset(&topic, *partition, Offset::Offset(offset + 1))?;
                if target == dead_letter::SCHEDULE {
                    left += 1;
                    continue;
                }
                if topic != INTAKE_DLQ_TOPIC {
                    if let Some(n) = value.as_deref().and_then(|v| serde_json::from_slice::<Notification>(v).ok()) {
                        store.forget(&n.notification_id).await?;
                    }
                }
                let mut record = rdkafka::producer::FutureRecord::<[u8], [u8]>::to(target);
                if let Some(k) = key {
                    record = record.key(k);
                }
                if let Some(v) = value {
                    record = record.payload(v);
                }
                kafka::delivered(kafka::enqueue(&producer, record).await?).await?;
                replayed += 1;
            }
            if !records.is_empty() {
                consumer.commit(&offsets, CommitMode::Sync)?;
            }
            println!("replayed {replayed} dead letters from {topic}");
            if left > 0 {
                println!("left {left} from the deferral schedule, which cannot be replayed: see `tidings dlq list`");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn reader(config: &Config, group: &str, topic: &str, start: Offset) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = kafka::client_config(&config.kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), start)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Calls `each` for every record up to the high watermarks seen at the start.
fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    max: usize,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let assignment = consumer.assignment()?;
    let mut remaining = std::collections::HashMap::new();
    for e in assignment.elements() {
        let (_, high) = consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(10))?;
        remaining.insert(e.partition(), high);
    }
    let mut seen = 0;
    let mut position = std::collections::HashMap::new();
    let done = |position: &std::collections::HashMap<i32, i64>| {
        remaining.iter().all(|(p, high)| *high == 0 || position.get(p).is_some_and(|o: &i64| *o + 1 >= *high))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen < max && !done(&position) && std::time::Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            // Partitions whose start was already at the end (everything replayed) yield nothing.
            if let Ok(pos) = consumer.position() {
                for e in pos.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        position.insert(e.partition(), o - 1);
                    }
                }
            }
            continue;
        };
        let m = result?;
        position.insert(m.partition(), m.offset());
        each(&m)?;
        seen += 1;
    }
    Ok(())
}
