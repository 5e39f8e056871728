//! `tidings audit`: what came in, against what became of it, read from the
//! topics themselves (the daily diff between source and sink counts).
//!
//! Every input event read in the window must have an outcome from intake: a
//! notification on a channel topic, a status naming the event (suppressed or
//! deferred when nothing was sent at once), or, for a record intake could
//! not use, its dead letter on `tidings.intake.dlq`. Every notification
//! published or deferred in the window must have a terminal status. What has
//! none past `--grace` is **missing**; a deferred notification not yet due
//! is counted apart. A notification sent more than once (distinct sends, not
//! a status record published again) is **repeated**; repeats of a priority
//! whose ambiguous answers are retried (`at_least_once`) are counted apart,
//! as declared.
//!
//! The topics are read outcomes first (statuses, channel topics, intake's
//! letters), then inputs, each input judged as it is read: what is kept is a
//! 128-bit digest per event with an outcome and a 32-byte entry per
//! notification, and the ids of the few the report names.

use super::dlq::letters::Ends;
use crate::cli::AuditArgs;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::channel::{INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::config::Ambiguity;
use tidings_core::dead_letter::DeadLetter;
use tidings_core::event::CloudEvent;
use tidings_core::kafka::{self, header_pairs};
use tidings_core::{Channel, Config, Notification, Priority, State, StatusRecord};

pub async fn run(args: AuditArgs, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let began = std::time::Instant::now();
    let report = audit(&config, &args).await?;
    // The report first: a push that fails must not take the ids from the log.
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    if let Some(gateway) = &args.pushgateway {
        push(gateway, &report, began.elapsed()).await?;
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Puts the report's figures on the Pushgateway at `gateway` as the
/// `tidings_audit` job's gauges, replacing the last run's: a batch job is
/// gone before any scrape, so it pushes (the Pushgateway's purpose).
async fn push(gateway: &url::Url, report: &Report, took: Duration) -> anyhow::Result<()> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let figures = [
            ("tidings_audit_events", report.events),
            ("tidings_audit_notifications", report.notifications),
            ("tidings_audit_ended", report.ended),
            ("tidings_audit_deferred", report.deferred),
            ("tidings_audit_pending", report.pending),
            ("tidings_audit_missing", report.missing()),
            ("tidings_audit_repeated", report.repeated.len()),
            ("tidings_audit_declared_repeats", report.declared_repeats.len()),
        ];
        for (name, value) in figures {
            metrics::gauge!(name).set(value as f64);
        }
        metrics::gauge!("tidings_audit_passed").set(if report.passed() { 1.0 } else { 0.0 });
        metrics::gauge!("tidings_audit_duration_seconds").set(took.as_secs_f64());
        metrics::gauge!("tidings_audit_last_run_timestamp_seconds").set(Utc::now().timestamp() as f64);
    });
    // Under the gateway's own path, if it has one (`http://host/pushgateway`).
    let mut url = gateway.clone();
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("{gateway} cannot be a Pushgateway URL"))?
        .pop_if_empty()
        .extend(["metrics", "job", "tidings_audit"]);
    let answer = reqwest::Client::new()
        .put(url.clone())
        .header("content-type", "text/plain; version=0.0.4")
        .body(handle.render())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("push to {url}: {e}"))?;
    anyhow::ensure!(answer.status().is_success(), "push to {url}: HTTP {}", answer.status());
    Ok(())
}

/// Reads the topics through to their ends and judges what they hold.
pub async fn audit(config: &Config, args: &AuditArgs) -> anyhow::Result<Report> {
    let grace = chrono::Duration::from_std(args.grace)?;
    let settled = Utc::now() - grace;
    let shards = args.shards.max(1);
    let mut report: Option<Report> = None;
    for shard in 0..shards {
        let mut ledger = Ledger::new(args.since, args.until, settled, (shard, shards));
        // Outcomes first: statuses, so that what ended is known before the
        // channel topics are read and only the ids of what did not are kept;
        // then inputs, each judged as it is read.
        read(config, &[STATUS_TOPIC.to_string()], |m| ledger.status(m)).await?;
        let published: Vec<String> = Channel::ALL
            .iter()
            .flat_map(|c| Priority::ALL.map(|p| c.topic(p)))
            .chain([INTAKE_DLQ_TOPIC.to_string()])
            .collect();
        read(config, &published, |m| match m.topic() {
            INTAKE_DLQ_TOPIC => ledger.intake_letter(m),
            _ => ledger.published(m),
        })
        .await?;
        read(config, &config.intake.topics, |m| ledger.input(m, config)).await?;
        let part = ledger.report(|p| config.worker.ambiguous.of(p) == Ambiguity::AtLeastOnce);
        report = Some(match report {
            None => part,
            Some(so_far) => so_far.merge(part),
        });
    }
    Ok(report.expect("at least one shard"))
}

/// Reads `topics` from their beginnings to where they ended when reading
/// began: one consumer for them all, outside any group, committing nothing,
/// with a bounded read-ahead.
pub(super) async fn read(
    config: &Config,
    topics: &[String],
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    let consumer: StreamConsumer<Ends> = kafka::client_config(&config.kafka)
        .set("group.id", config.group("audit"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Bounded read-ahead: the queue, and what one fetch may bring.
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.max.bytes", "8388608")
        .set("max.partition.fetch.bytes", "262144")
        .create_with_context(Ends)?;
    let metadata = consumer.fetch_metadata(None, WAIT)?;
    let mut partitions = TopicPartitionList::new();
    // Per topic, the end of each partition still to reach (`None` once reached).
    let mut ends: HashMap<String, Vec<Option<i64>>> = HashMap::new();
    let mut left = 0;
    for t in metadata.topics().iter().filter(|t| t.error().is_none() && topics.iter().any(|n| n == t.name())) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(t.name(), p.id(), WAIT)?;
            let slots = ends.entry(t.name().to_string()).or_default();
            let at = usize::try_from(p.id())?;
            slots.resize(slots.len().max(at + 1), None);
            if high > low {
                partitions.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
                slots[at] = Some(high);
                left += 1;
            }
        }
    }
    if left == 0 {
        return Ok(());
    }
    consumer.assign(&partitions)?;
    while left > 0 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.map_err(|_| {
            anyhow::anyhow!("no record for 30 s before the ends of the topics: is the cluster reachable?")
        })??;
        let slot = ends.get_mut(m.topic()).and_then(|s| s.get_mut(usize::try_from(m.partition()).ok()?));
        let Some(slot) = slot else { continue };
        let Some(end) = *slot else { continue };
        if m.offset() >= end {
            continue;
        }
        if m.offset() + 1 >= end {
            *slot = None;
            left -= 1;
        }
        each(&m);
    }
    Ok(())
}

const WAIT: Duration = Duration::from_secs(10);

/// A 128-bit digest of an id: what the ledger keeps instead of the id.
type Id = u128;

fn id(s: &str) -> Id {
    (u128::from(half(0, s)) << 64) | u128::from(half(1, s))
}

fn half(salt: u8, s: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (salt, s).hash(&mut h);
    h.finish()
}

/// Seconds since the epoch, as a note keeps them (to 2106).
fn secs(t: i64) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

/// One notification, as the topics tell of it: 16 bytes.
#[derive(Default)]
struct Note {
    /// When it was first published or deferred within the window (0: not in it).
    seen: u32,
    /// The latest release time of its `deferred` statuses (0: never deferred).
    deferred_until: u32,
    /// A digest of its first send (provider and message id).
    first_send: u32,
    terminal: u8,
    /// Distinct sends (a `sent` record published again is the same send).
    sends: u8,
    /// Its priority, plus one (0: not known).
    priority: u8,
}

/// What the topics hold, reduced to digests.
pub struct Ledger {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    /// What was under way after this is not missing yet.
    settled: i64,
    /// This ledger keeps the ids whose digest is `.0` modulo `.1`.
    shard: (u128, u128),
    notes: HashMap<Id, Note>,
    /// The ids the report may name: notifications not ended when last seen, and repeated ones.
    names: HashMap<Id, (String, String)>,
    /// The digests of the later sends of notifications sent more than once.
    sends: HashMap<Id, Vec<u32>>,
    /// Event ids with some outcome.
    answered: HashSet<Id>,
    /// Places (`topic:partition:offset`) intake dead-lettered.
    lettered: HashSet<String>,
    events: usize,
    missing_events: Vec<String>,
    missing_letters: Vec<String>,
}

/// What `tidings audit` reports.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub events: usize,
    pub notifications: usize,
    /// Notifications with a terminal status.
    pub ended: usize,
    /// Deferred and not yet due (or due within the grace period).
    pub deferred: usize,
    /// Published within the grace period and not ended yet.
    pub pending: usize,
    /// Events with no outcome, as `event id (topic:partition:offset)`.
    pub missing_events: Vec<String>,
    /// Input records intake could not use and did not dead-letter.
    pub missing_letters: Vec<String>,
    /// Notifications with no terminal status, as `notification id (event id)`.
    pub missing_notifications: Vec<String>,
    /// Notifications sent more than once, with how many times.
    pub repeated: Vec<(String, usize)>,
    /// The same, of priorities declared `at_least_once`.
    pub declared_repeats: Vec<(String, usize)>,
}

impl Report {
    pub fn missing(&self) -> usize {
        self.missing_events.len() + self.missing_letters.len() + self.missing_notifications.len()
    }

    fn merge(mut self, other: Report) -> Report {
        self.events += other.events;
        self.notifications += other.notifications;
        self.ended += other.ended;
        self.deferred += other.deferred;
        self.pending += other.pending;
        self.missing_events.extend(other.missing_events);
        self.missing_letters.extend(other.missing_letters);
        self.missing_notifications.extend(other.missing_notifications);
        self.repeated.extend(other.repeated);
        self.declared_repeats.extend(other.declared_repeats);
        for list in [&mut self.missing_events, &mut self.missing_letters, &mut self.missing_notifications] {
            list.sort();
        }
        self.repeated.sort();
        self.declared_repeats.sort();
        self
    }

    pub fn passed(&self) -> bool {
        self.missing() == 0 && self.repeated.is_empty()
    }

    fn print(&self) {
        println!("events read                      {:>10}", self.events);
        println!("notifications                    {:>10}", self.notifications);
        println!("  ended (terminal status)        {:>10}", self.ended);
        println!("  deferred, not yet due          {:>10}", self.deferred);
        println!("  under way (within the grace)   {:>10}", self.pending);
        println!("missing: events with no outcome  {:>10}", self.missing_events.len());
        println!("missing: unusable, not lettered  {:>10}", self.missing_letters.len());
        println!("missing: no terminal status      {:>10}", self.missing_notifications.len());
        println!("repeated: sent more than once    {:>10}", self.repeated.len());
        println!("  declared at_least_once repeats {:>10}", self.declared_repeats.len());
        let shown = self.missing_events.iter().chain(&self.missing_letters).chain(&self.missing_notifications);
        for line in shown.take(20) {
            println!("  missing {line}");
        }
        for (id, n) in self.repeated.iter().take(20) {
            println!("  repeated {id}: sent {n} times");
        }
        println!("{}", if self.passed() { "passed" } else { "FAILED" });
    }
}

fn seconds(m: &BorrowedMessage<'_>) -> Option<i64> {
    m.timestamp().to_millis().map(|ms| ms.div_euclid(1000))
}

impl Ledger {
    /// A ledger of shard `shard` of `shards` (ids are spread over shards by digest).
    pub fn new(
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        settled: DateTime<Utc>,
        (shard, shards): (u32, u32),
    ) -> Self {
        Ledger {
            since,
            until,
            shard: (u128::from(shard), u128::from(shards.max(1))),
            settled: settled.timestamp(),
            notes: HashMap::new(),
            names: HashMap::new(),
            sends: HashMap::new(),
            answered: HashSet::new(),
            lettered: HashSet::new(),
            events: 0,
            missing_events: Vec::new(),
            missing_letters: Vec::new(),
        }
    }

    fn mine(&self, key: Id) -> bool {
        key % self.shard.1 == self.shard.0
    }

    fn within(&self, at: i64) -> bool {
        self.since.is_none_or(|s| at >= s.timestamp()) && self.until.is_none_or(|u| at < u.timestamp())
    }

    fn answered(&mut self, event_id: &str) {
        let key = id(event_id);
        if self.mine(key) {
            self.answered.insert(key);
        }
    }

    fn name(&mut self, key: Id, notification_id: &str, event_id: &str) {
        self.names.entry(key).or_insert_with(|| (notification_id.to_string(), event_id.to_string()));
    }

    /// A status record. One notification's statuses share a key (its user),
    /// so they are read in the order they were written.
    fn status(&mut self, m: &BorrowedMessage<'_>) {
        let Some(s) = m.payload().and_then(|v| serde_json::from_slice::<StatusRecord>(v).ok()) else { return };
        self.answered(&s.event_id);
        let at = s.at.timestamp();
        let within = self.within(at);
        let key = id(&s.notification_id);
        if !self.mine(key) {
            return;
        }
        let note = self.notes.entry(key).or_default();
        if let Some(p) = s.priority {
            note.priority = p as u8 + 1;
        }
        match s.state {
            State::Deferred => {
                if within && note.seen == 0 {
                    note.seen = secs(at).max(1);
                }
                let until = secs(s.not_before.map_or(at, |t| t.timestamp())).max(1);
                note.deferred_until = note.deferred_until.max(until);
                if note.terminal == 0 {
                    self.name(key, &s.notification_id, &s.event_id);
                }
            }
            state if state.is_terminal() => {
                note.terminal = note.terminal.saturating_add(1);
                if state == State::Sent {
                    let provider = s.provider.as_deref().unwrap_or_default();
                    let send = s.provider_message_id.clone().unwrap_or_else(|| s.at.to_rfc3339());
                    let send = half(2, &format!("{provider}/{send}")) as u32;
                    if note.sends == 0 {
                        (note.sends, note.first_send) = (1, send);
                    } else if send != note.first_send {
                        let later = self.sends.entry(key).or_default();
                        if !later.contains(&send) {
                            later.push(send);
                            note.sends = note.sends.saturating_add(1);
                        }
                    }
                }
                if note.sends > 1 {
                    self.name(key, &s.notification_id, &s.event_id);
                } else {
                    self.names.remove(&key);
                }
            }
            _ => {}
        }
    }

    /// A record of a channel topic: a notification published.
    fn published(&mut self, m: &BorrowedMessage<'_>) {
        let Some(n) = m.payload().and_then(|v| serde_json::from_slice::<Notification>(v).ok()) else { return };
        let at = seconds(m).unwrap_or(n.created_at.timestamp());
        self.answered(&n.event_id);
        let within = self.within(at);
        let key = id(&n.notification_id);
        if !self.mine(key) {
            return;
        }
        let note = self.notes.entry(key).or_default();
        if within && note.seen == 0 {
            note.seen = secs(at).max(1);
        }
        if note.terminal == 0 {
            self.name(key, &n.notification_id, &n.event_id);
        }
    }

    /// A record of `tidings.intake.dlq`: the place of the input it stands for.
    fn intake_letter(&mut self, m: &BorrowedMessage<'_>) {
        if let Ok(letter) = DeadLetter::read(&header_pairs(m)) {
            let place = format!("{}:{}:{}", letter.original_topic, letter.original_partition, letter.original_offset);
            self.lettered.insert(place);
        }
    }

    /// A record of an input topic, judged as it is read (outcomes are read before).
    fn input(&mut self, m: &BorrowedMessage<'_>, config: &Config) {
        let Some(at) = seconds(m) else { return };
        if !self.within(at) {
            return;
        }
        let headers = header_pairs(m);
        let decoded = CloudEvent::decode(m.payload(), &headers, &config.intake.limits);
        // An unusable record is the first shard's.
        if !decoded.as_ref().map_or(self.shard.0 == 0, |event| self.mine(id(&event.id))) {
            return;
        }
        self.events += 1;
        let place = || format!("{}:{}:{}", m.topic(), m.partition(), m.offset());
        match decoded {
            // An event intake dead-lettered (an unknown type, say) has its letter for outcome.
            Ok(event) if at <= self.settled && !self.answered.contains(&id(&event.id)) => {
                let place = place();
                if !self.lettered.contains(&place) {
                    self.missing_events.push(format!("{} ({place})", event.id));
                }
            }
            Ok(_) => {}
            Err(_) if at <= self.settled && !self.lettered.contains(&place()) => self.missing_letters.push(place()),
            Err(_) => {}
        }
    }

    /// The verdict: what had the grace period to end and did not.
    pub fn report(mut self, declared: impl Fn(Priority) -> bool) -> Report {
        let mut report = Report {
            events: self.events,
            notifications: 0,
            ended: 0,
            deferred: 0,
            pending: 0,
            missing_events: std::mem::take(&mut self.missing_events),
            missing_letters: std::mem::take(&mut self.missing_letters),
            missing_notifications: Vec::new(),
            repeated: Vec::new(),
            declared_repeats: Vec::new(),
        };
        let settled = secs(self.settled);
        for (key, note) in &self.notes {
            if note.seen == 0 {
                continue;
            }
            report.notifications += 1;
            let named = || self.names.get(key).cloned().unwrap_or_default();
            if note.terminal > 0 {
                report.ended += 1;
            } else if note.deferred_until > settled {
                report.deferred += 1;
            } else if note.seen > settled {
                report.pending += 1;
            } else {
                let (nid, event_id) = named();
                report.missing_notifications.push(format!("{nid} (event {event_id})"));
            }
            if note.sends > 1 {
                let priority = Priority::ALL.get(usize::from(note.priority).wrapping_sub(1)).copied();
                let list =
                    if priority.is_some_and(&declared) { &mut report.declared_repeats } else { &mut report.repeated };
                list.push((named().0, usize::from(note.sends)));
            }
        }
        for list in [&mut report.missing_events, &mut report.missing_letters, &mut report.missing_notifications] {
            list.sort();
        }
        report.repeated.sort();
        report.declared_repeats.sort();
        report
    }
}
