//! `tidings dlq replay`: dead letters back to the topics they came from.
//!
//! It reads as a consumer group of its own (`<prefix>-dlq-replay-<from>`,
//! and a group per filter, so a filtered replay never hides the letters it
//! skipped from a later one), stores each letter's offset once the letter is
//! handled and commits every second and at the end: an interrupted replay
//! resumes where it stopped, and two replays at once share the partitions.
//! It stops when every partition it reads reached its end.
//!
//! What makes a letter read twice (a replay killed before its last commit,
//! or a partition moving between two replays) harmless is the decision made
//! for each channel letter from its notification's dedupe record:
//! - none: the notification is republished;
//! - its dead-lettered outcome, or any outcome recorded before the letter:
//!   the outcome is forgotten (compare-and-set, so only what was read goes)
//!   and the notification republished;
//! - another outcome recorded after the letter (sent, suppressed, …): it was
//!   replayed already and ended; nothing is done;
//! - a claim: a copy is being delivered now; nothing is done.
//!
//! A republished copy that meets another copy is a `duplicate` to the worker,
//! never a second send. Intake letters are republished as they are: the
//! events' notifications have deterministic ids, so the workers' dedupe
//! absorbs what was delivered before. A record keeps its key and every header
//! (`correlation_id`, `traceparent`, CloudEvents attributes) and gains
//! `tidings_replayed_from`. It lands at the end of its user's partition, after
//! whatever was queued for the user since it failed. A member the
//! scheduler dead-lettered goes back on its lane, due at once.

use super::letters::{self, Ends, Letter, Start};
use crate::cli::LetterFilter;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tidings_core::channel::INTAKE_DLQ_TOPIC;
use tidings_core::dead_letter::{DeadLetter, REPLAYED_FROM, SCHEDULE};
use tidings_core::kafka;
use tidings_core::notification::Deferred;
use tidings_core::status::recorded_status;
use tidings_core::store::{lane, SharedStore, CLAIM_MARK};
use tidings_core::{Config, State};

/// What to replay and how.
pub struct Replay {
    pub from: String,
    pub filter: LetterFilter,
    pub dry_run: bool,
    pub limit: Option<usize>,
    pub rate: Option<f64>,
}

/// What was done with one letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Done {
    Replayed,
    /// Its notification ended after the letter was written, in this state.
    Ended(String),
    /// A copy of its notification is being delivered.
    InFlight,
    /// An entry of the deferral schedule that does not read: it has no lane to go back to.
    Schedule,
    Filtered,
    Unreadable,
}

impl Done {
    fn describe(&self) -> String {
        match self {
            Done::Replayed => "replayed".into(),
            Done::Ended(state) => format!("already replayed: ended {state} after the letter"),
            Done::InFlight => "already replayed: being delivered".into(),
            Done::Schedule => "left: from the deferral schedule, unreadable".into(),
            Done::Filtered => "not taken by the filter".into(),
            Done::Unreadable => "skipped: unreadable".into(),
        }
    }
}

/// The consumer group a replay of `from` with `filter` reads as: one per
/// filter, named after it (times in Unix milliseconds, so an age such as
/// `--since 2h` names a new group each time; a time resumes).
fn group(config: &Config, from: &str, filter: &LetterFilter) -> String {
    let LetterFilter { error_class, event_type, since, until, id } = filter;
    let mut name = format!("dlq-replay-{from}");
    let parts = [
        ("class", error_class.map(|c| c.as_str().to_string())),
        ("type", event_type.clone()),
        ("since", since.map(|t| t.timestamp_millis().to_string())),
        ("until", until.map(|t| t.timestamp_millis().to_string())),
        ("id", id.clone()),
    ];
    for (what, value) in parts {
        if let Some(value) = value {
            let value: String =
                value.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_".contains(c) { c } else { '_' }).collect();
            name.push_str(&format!("-{what}={value}"));
        }
    }
    config.group(&name)
}

pub async fn run(replay: Replay, config: &Config, store: SharedStore) -> anyhow::Result<()> {
    let topic = letters::topic_of(&replay.from)?;
    let group = group(config, &replay.from, &replay.filter);
    if replay.dry_run {
        return dry_run(&replay, config, &store, &topic, &group).await;
    }
    let consumer: StreamConsumer<Ends> =
        kafka::consumer_config(&config.kafka, &group).set("enable.partition.eof", "true").create_with_context(Ends)?;
    consumer.subscribe(&[&topic])?;
    let producer = kafka::command_producer(&config.kafka)?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} letters read from {prefix} ({per_sec}) {msg}")
            .expect("the template is valid"),
    );
    bar.set_prefix(topic.clone());
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut pace = replay.rate.filter(|r| *r > 0.0).map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
    let mut counts: BTreeMap<Done, usize> = BTreeMap::new();
    let mut ended: HashSet<i32> = HashSet::new();
    let mut waited = Duration::ZERO;
    loop {
        let assigned: HashSet<i32> = consumer.assignment()?.elements().iter().map(|e| e.partition()).collect();
        if !assigned.is_empty() && assigned.is_subset(&ended) {
            break;
        }
        if replay.limit.is_some_and(|l| counts.get(&Done::Replayed).copied().unwrap_or(0) >= l) {
            break;
        }
        let m = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Err(_) => {
                waited += Duration::from_secs(1);
                if assigned.is_empty() && waited >= Duration::from_secs(60) {
                    anyhow::bail!("no partition of {topic} was assigned within a minute (group {group})");
                }
                continue;
            }
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
                continue;
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(m)) => m,
        };
        ended.remove(&rdkafka::Message::partition(&m));
        let letter = Letter::from_message(&m);
        let done = handle(&letter, &replay.filter, &store, &producer, pace.as_mut()).await?;
        if done == Done::Unreadable {
            bar.suspend(|| eprintln!("{}: {}; skipped", letter.place(), unreadable(&letter)));
        }
        *counts.entry(done).or_default() += 1;
        // Handled: the group moves past it (committed within a second, and at the end).
        if let Err(e) = consumer.store_offset(&topic, letter.partition, letter.offset) {
            // The partition moved to another replay, which reads it from the last commit.
            tracing::debug!(error = %e, "offset not stored");
        }
        bar.inc(1);
        bar.set_message(format!("{} replayed", counts.get(&Done::Replayed).copied().unwrap_or(0)));
    }
    bar.finish_and_clear();
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit (or nothing read at all).
        tracing::debug!(error = %e, "nothing to commit");
    }
    consumer.unsubscribe();
    summary(&topic, &counts);
    Ok(())
}

/// Does what a letter needs; says what that was.
async fn handle(
    letter: &Letter,
    filter: &LetterFilter,
    store: &SharedStore,
    producer: &FutureProducer,
    pace: Option<&mut tokio::time::Interval>,
) -> anyhow::Result<Done> {
    let done = decide(letter, filter, store, true).await?;
    if let (Done::Replayed, Ok(read)) = (&done, &letter.read) {
        if let Some(pace) = pace {
            pace.tick().await;
        }
        if read.original_topic == SCHEDULE {
            reschedule(letter, store).await?;
        } else {
            republish(letter, read, producer).await?;
        }
    }
    Ok(done)
}

/// A letter of the deferral schedule: the member as it was held, and what it holds.
fn scheduled(letter: &Letter) -> Option<(&str, Deferred)> {
    let member = std::str::from_utf8(letter.value.as_deref()?).ok()?;
    Some((member, serde_json::from_str(member).ok()?))
}

/// Puts a member the scheduler dead-lettered (its topic refused it) back
/// on its lane, due now: the scheduler publishes it in its lane's order.
/// Replayed twice while held, it is held once; once published, a second
/// copy is a `duplicate` to the worker.
async fn reschedule(letter: &Letter, store: &SharedStore) -> anyhow::Result<()> {
    let (member, held) =
        scheduled(letter).ok_or_else(|| anyhow::anyhow!("{}: not a deferred entry", letter.place()))?;
    let n = &held.notification;
    store.defer(&lane(&n.user_id, n.channel), member, chrono::Utc::now()).await?;
    Ok(())
}

/// What a replay does with a letter: [`Done::Replayed`] when it is to be
/// republished, having forgotten its notification's outcome when `forget`
/// (a dry run forgets nothing).
async fn decide(letter: &Letter, filter: &LetterFilter, store: &SharedStore, forget: bool) -> anyhow::Result<Done> {
    let Ok(read) = &letter.read else { return Ok(Done::Unreadable) };
    if !letter.matches(filter) {
        return Ok(Done::Filtered);
    }
    if read.original_topic == SCHEDULE {
        // A member that reads goes back on its lane, unless a replay put it back
        // already (being delivered, or ended since); one that does not has nowhere to go.
        let Some((_, held)) = scheduled(letter) else { return Ok(Done::Schedule) };
        return Ok(match store.dedupe_value(&held.notification.notification_id).await? {
            Some(record) if record.starts_with(CLAIM_MARK) => Done::InFlight,
            Some(record) => match recorded_status(&record) {
                Some(status) if status.at > read.last_failure => Done::Ended(status.state.as_str().to_string()),
                _ => Done::Replayed,
            },
            None => Done::Replayed,
        });
    }
    if letter.topic == INTAKE_DLQ_TOPIC {
        return Ok(Done::Replayed);
    }
    forget_outcome(letter, read, store, forget).await
}

/// For a channel letter: whether its notification is to be republished
/// (having forgotten its outcome when `forget`), from its dedupe record.
async fn forget_outcome(letter: &Letter, read: &DeadLetter, store: &SharedStore, forget: bool) -> anyhow::Result<Done> {
    let Some(n) = &letter.notification else {
        return Ok(Done::Unreadable);
    };
    // A record that changes between reading and forgetting is read again.
    for _ in 0..10 {
        let Some(record) = store.dedupe_value(&n.notification_id).await? else { return Ok(Done::Replayed) };
        if record.starts_with(CLAIM_MARK) {
            return Ok(Done::InFlight);
        }
        if let Some(status) = recorded_status(&record) {
            if status.state != State::DeadLettered && status.at > read.last_failure {
                return Ok(Done::Ended(status.state.as_str().to_string()));
            }
        }
        if !forget || store.swap(&n.notification_id, &record, None, Duration::ZERO).await? {
            return Ok(Done::Replayed);
        }
    }
    anyhow::bail!("the dedupe record of {} keeps changing", n.notification_id)
}

/// Why a letter cannot be replayed.
fn unreadable(letter: &Letter) -> String {
    match &letter.read {
        Err(e) => e.clone(),
        Ok(_) => "its value is not a notification".into(),
    }
}

/// Sends a letter's record back to its topic and waits for the acknowledgement.
async fn republish(letter: &Letter, read: &DeadLetter, producer: &FutureProducer) -> anyhow::Result<()> {
    let place = letter.place();
    let headers = read
        .original_headers
        .iter()
        .filter(|(k, _)| k != REPLAYED_FROM)
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }))
        .insert(Header { key: REPLAYED_FROM, value: Some(&place) });
    let mut record = FutureRecord::<[u8], [u8]>::to(&read.original_topic).headers(headers);
    if let Some(k) = &letter.key {
        record = record.key(k);
    }
    if let Some(v) = &letter.value {
        record = record.payload(v);
    }
    kafka::delivered(kafka::enqueue(producer, record).await?).await?;
    Ok(())
}

/// `--dry-run`: reads from where the replay's group stands, without joining
/// it, and says what a replay would do, grouped. Changes nothing.
async fn dry_run(
    replay: &Replay,
    config: &Config,
    store: &SharedStore,
    topic: &str,
    group: &str,
) -> anyhow::Result<()> {
    let consumer = letters::reader(config, topic, &Start::Committed(group.to_string()))?;
    let mut read = Vec::new();
    letters::read_to_end(&consumer, |l| {
        read.push(l);
        true
    })
    .await?;
    let mut groups: BTreeMap<(Done, String, String, String), usize> = BTreeMap::new();
    let mut replayed = 0;
    for letter in &read {
        let done = decide(letter, &replay.filter, store, false).await?;
        if done == Done::Unreadable {
            eprintln!("{}: {}; would be skipped", letter.place(), unreadable(letter));
        }
        let done = match done {
            Done::Replayed if replay.limit.is_some_and(|l| replayed >= l) => continue,
            Done::Replayed => {
                replayed += 1;
                Done::Replayed
            }
            other => other,
        };
        let class = letter.read.as_ref().map_or("-", |r| r.error_class.as_str()).to_string();
        let event_type = letter.event_type.clone().unwrap_or_else(|| "-".into());
        *groups.entry((done, letter.source().to_string(), class, event_type)).or_default() += 1;
    }
    println!("dry run: nothing is changed; {} letters unread by group {group} in {topic}", read.len());
    println!("{:<46} {:<9} {:<10} {:<28} {:>7}", "would be", "from", "class", "event type", "letters");
    for ((done, source, class, event_type), n) in &groups {
        println!("{:<46} {source:<9} {class:<10} {event_type:<28} {n:>7}", done.describe());
    }
    Ok(())
}

fn summary(topic: &str, counts: &BTreeMap<Done, usize>) {
    let count = |d: &Done| counts.get(d).copied().unwrap_or(0);
    println!("replayed {} dead letters from {topic}", count(&Done::Replayed));
    for (done, n) in counts {
        match done {
            Done::Replayed => {}
            Done::Schedule => {
                println!("left {n} from the deferral schedule, which do not read: see `tidings dlq list`")
            }
            other => println!("{}: {n}", other.describe()),
        }
    }
}
