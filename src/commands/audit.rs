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
//! Only ids are kept, as 128-bit digests, so memory grows with the number of
//! events and notifications in the window, not with their size.

use super::dlq::letters::{read_messages, reader, Start};
use crate::cli::AuditArgs;
use chrono::{DateTime, Utc};
use rdkafka::message::{BorrowedMessage, Message};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::process::ExitCode;
use std::sync::Arc;
use tidings_core::channel::{INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::config::Ambiguity;
use tidings_core::dead_letter::DeadLetter;
use tidings_core::event::CloudEvent;
use tidings_core::kafka::header_pairs;
use tidings_core::{Channel, Config, Notification, Priority, State, StatusRecord};

pub async fn run(args: AuditArgs, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let report = audit(&config, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Reads the topics through to their ends and judges what they hold.
pub async fn audit(config: &Config, args: &AuditArgs) -> anyhow::Result<Report> {
    let now = Utc::now();
    let mut ledger = Ledger::new(args.since, args.until);
    let channels: Vec<String> = Channel::ALL.iter().flat_map(|c| Priority::ALL.map(|p| c.topic(p))).collect();
    for topic in &channels {
        read(config, topic, |m| ledger.published(m)).await?;
    }
    read(config, STATUS_TOPIC, |m| ledger.status(m)).await?;
    read(config, INTAKE_DLQ_TOPIC, |m| ledger.intake_letter(m)).await?;
    for topic in &config.intake.topics {
        read(config, topic, |m| ledger.input(m, config)).await?;
    }
    let grace = chrono::Duration::from_std(args.grace)?;
    Ok(ledger.report(now, grace, |p| config.worker.ambiguous.of(p) == Ambiguity::AtLeastOnce))
}

async fn read(config: &Config, topic: &str, each: impl FnMut(&BorrowedMessage<'_>)) -> anyhow::Result<()> {
    let consumer = reader(config, topic, &Start::Beginning)?;
    let mut each = each;
    read_messages(&consumer, |m| {
        each(m);
        true
    })
    .await
}

/// A 128-bit digest of an id: what the ledger keeps instead of the id.
type Id = u128;

fn id(s: &str) -> Id {
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        (salt, s).hash(&mut h);
        h.finish() as u128
    };
    (half(0) << 64) | half(1)
}

/// One notification, as the topics tell of it.
#[derive(Default)]
struct Note {
    /// Published to a channel topic or deferred within the window.
    in_window: bool,
    /// When it was first published or deferred (seconds).
    seen: i64,
    /// The latest release time of its `deferred` statuses (seconds).
    deferred_until: Option<i64>,
    terminal: u32,
    /// Its distinct sends: a `sent` record published again is one send.
    sends: HashSet<Id>,
    /// Its event and notification id, kept only for what the report names.
    named: Option<(String, String)>,
}

/// What the topics hold, reduced to ids.
pub struct Ledger {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    notes: HashMap<Id, Note>,
    /// Events read in the window: digest of the event id -> (when, the id, where).
    events: HashMap<Id, (i64, String, String)>,
    /// Input records intake cannot use, read in the window: where, and when.
    unusable: Vec<(String, i64)>,
    /// Event ids with some outcome.
    answered: HashSet<Id>,
    /// Places (`topic:partition:offset`) intake dead-lettered.
    lettered: HashSet<String>,
    priorities: HashMap<Id, Priority>,
}

/// What `tidings audit` reports.
#[derive(Debug, Serialize)]
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
    pub fn new(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        Ledger {
            since,
            until,
            notes: HashMap::new(),
            events: HashMap::new(),
            unusable: Vec::new(),
            answered: HashSet::new(),
            lettered: HashSet::new(),
            priorities: HashMap::new(),
        }
    }

    fn within(&self, at: i64) -> bool {
        self.since.is_none_or(|s| at >= s.timestamp()) && self.until.is_none_or(|u| at < u.timestamp())
    }

    fn note(&mut self, notification_id: &str, event_id: &str) -> &mut Note {
        let note = self.notes.entry(id(notification_id)).or_default();
        if note.named.is_none() {
            note.named = Some((notification_id.to_string(), event_id.to_string()));
        }
        note
    }

    /// A record of a channel topic: a notification published.
    fn published(&mut self, m: &BorrowedMessage<'_>) {
        let Some(n) = m.payload().and_then(|v| serde_json::from_slice::<Notification>(v).ok()) else { return };
        let at = seconds(m).unwrap_or(n.created_at.timestamp());
        self.answered.insert(id(&n.event_id));
        let within = self.within(at);
        let note = self.note(&n.notification_id, &n.event_id);
        if within && !note.in_window {
            (note.in_window, note.seen) = (true, at);
        }
    }

    /// A status record.
    fn status(&mut self, m: &BorrowedMessage<'_>) {
        let Some(s) = m.payload().and_then(|v| serde_json::from_slice::<StatusRecord>(v).ok()) else { return };
        self.answered.insert(id(&s.event_id));
        let at = s.at.timestamp();
        let within = self.within(at);
        if let Some(p) = s.priority {
            self.priorities.insert(id(&s.notification_id), p);
        }
        let note = self.note(&s.notification_id, &s.event_id);
        match s.state {
            State::Deferred => {
                if within && !note.in_window {
                    (note.in_window, note.seen) = (true, at);
                }
                let until = s.not_before.map_or(at, |t| t.timestamp());
                note.deferred_until = Some(note.deferred_until.map_or(until, |d| d.max(until)));
            }
            state if state.is_terminal() => {
                note.terminal += 1;
                if state == State::Sent {
                    let send = s.provider_message_id.clone().unwrap_or_else(|| s.at.to_rfc3339());
                    note.sends.insert(id(&format!("{}/{send}", s.provider.as_deref().unwrap_or_default())));
                }
            }
            _ => {}
        }
    }

    /// A record of `tidings.intake.dlq`: the place of the input it stands for.
    fn intake_letter(&mut self, m: &BorrowedMessage<'_>) {
        if let Ok(letter) = DeadLetter::read(&header_pairs(m)) {
            let place = format!("{}:{}:{}", letter.original_topic, letter.original_partition, letter.original_offset);
            self.lettered.insert(place);
        }
    }

    /// A record of an input topic.
    fn input(&mut self, m: &BorrowedMessage<'_>, config: &Config) {
        let Some(at) = seconds(m) else { return };
        if !self.within(at) {
            return;
        }
        let place = format!("{}:{}:{}", m.topic(), m.partition(), m.offset());
        let headers = header_pairs(m);
        match CloudEvent::decode(m.payload(), &headers, &config.intake.limits) {
            Ok(event) => {
                self.events.insert(id(&event.id), (at, event.id, place));
            }
            Err(_) => self.unusable.push((place, at)),
        }
    }

    /// The verdict at `now`: what has had `grace` to end and did not.
    pub fn report(self, now: DateTime<Utc>, grace: chrono::Duration, declared: impl Fn(Priority) -> bool) -> Report {
        let settled = (now - grace).timestamp();
        let mut report = Report {
            events: self.events.len(),
            notifications: 0,
            ended: 0,
            deferred: 0,
            pending: 0,
            missing_events: Vec::new(),
            missing_letters: Vec::new(),
            missing_notifications: Vec::new(),
            repeated: Vec::new(),
            declared_repeats: Vec::new(),
        };
        for (key, (at, event_id, place)) in &self.events {
            // An event intake dead-lettered (an unknown type, say) has its letter for outcome.
            if *at < settled && !self.answered.contains(key) && !self.lettered.contains(place) {
                report.missing_events.push(format!("{event_id} ({place})"));
            }
        }
        for (place, at) in &self.unusable {
            if *at < settled && !self.lettered.contains(place) {
                report.missing_letters.push(place.clone());
            }
        }
        for (key, note) in &self.notes {
            if !note.in_window {
                continue;
            }
            report.notifications += 1;
            let (nid, event_id) = note.named.clone().unwrap_or_default();
            if note.terminal > 0 {
                report.ended += 1;
            } else if note.deferred_until.is_some_and(|d| d >= settled) {
                report.deferred += 1;
            } else if note.seen >= settled {
                report.pending += 1;
            } else {
                report.missing_notifications.push(format!("{nid} (event {event_id})"));
            }
            if note.sends.len() > 1 {
                let at_least_once = self.priorities.get(key).is_some_and(|p| declared(*p));
                let list = if at_least_once { &mut report.declared_repeats } else { &mut report.repeated };
                list.push((nid, note.sends.len()));
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
