//! `tidings dev --drill <name>`: a provider fault on the sandbox, with live
//! traffic, that anyone can watch. Two email providers (`primary`, then
//! `secondary`) and an SMS one; 100 users; an order confirmation every
//! 50 ms for 25 s and a password reset (critical, falling back to SMS) with
//! every tenth. Breakers react within seconds (a 10 s window, 5 calls, 5 s
//! reset) so a drill ends in about half a minute.
//!
//! `chatty-shipments` drills digests instead of a fault: the same 25 s feed
//! is tracking updates of twenty orders, each order's collected into digests
//! ([`Drill::digest`]).
//!
//! The closing summary comes from what the fleet wrote, not from its own
//! counters: every notification on a channel topic, its terminal status,
//! and the outbox files (a second send of a notification is a second file;
//! for digests, which updates each email lists).

use crate::commands::dlq::letters::{self, Start};
use clap::ValueEnum;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use tidings_core::config::{ChannelConfig, Digest, EventRoute, ProviderLimits, ProviderSection};
use tidings_core::{Channel, Config, Priority, State, StatusRecord};
use tidings_providers::sandbox::config::SandboxConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Drill {
    /// The first email provider is down for 20 s.
    PrimaryDown,
    /// Both email providers are down for 15 s.
    AllDown,
    /// The first email provider is up 5 s, down 5 s, three times.
    Flapping,
    /// The first email provider answers in 1.5 s, above the 1 s slow-call threshold.
    Slow,
    /// The first email provider answers 429 with `Retry-After: 2s` for 10 s.
    RateLimited,
    /// Tracking updates of twenty orders, collected per order into digests.
    ChattyShipments,
}

/// The tracking updates' type in `chatty-shipments`.
pub const UPDATE: &str = "shipment.tracking_update";
/// Orders in `chatty-shipments`: the first [`BUSY`] get half the updates.
const ORDERS: usize = 20;
const BUSY: usize = 4;

/// How long traffic is fed.
pub const FEED: Duration = Duration::from_secs(25);
/// Events a second while feeding.
const RATE: u32 = 20;
pub const USERS: usize = 100;

impl Drill {
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    pub fn describe(self) -> &'static str {
        match self {
            Drill::PrimaryDown => "primary (email) down from 2 s to 22 s",
            Drill::AllDown => "primary and secondary (email) down from 2 s to 17 s",
            Drill::Flapping => "primary (email) down 5-10 s, 15-20 s and 25-30 s",
            Drill::Slow => "primary (email) answers in 1.5 s; slow calls are those over 1 s",
            Drill::RateLimited => "primary (email) answers 429, Retry-After 2 s, from 2 s to 12 s",
            Drill::ChattyShipments => {
                "tracking updates of 20 orders (4 busy ones get half), each order's in digests of 8 updates or 5 s"
            }
        }
    }

    /// The users the drill's events are for.
    pub fn users(self) -> usize {
        match self {
            Drill::ChattyShipments => ORDERS / 2,
            _ => USERS,
        }
    }

    /// `chatty-shipments`' digest: per order, closed at 8 updates or 5 s
    /// after it opened. The four busy orders (2.5 updates a second) fill
    /// theirs; the sixteen quiet ones (one every 1.6 s) reach the end.
    pub fn digest(self) -> Option<Digest> {
        (self == Drill::ChattyShipments).then(|| Digest {
            window: Some(Duration::from_secs(5)),
            at: None,
            max_items: 8,
            key: Some("/data/order_id".into()),
        })
    }

    /// The drill's providers, channels and breaker settings on `config`.
    pub fn configure(self, config: &mut Config, outbox: &Path) {
        let sandbox = |f: &dyn Fn(&mut SandboxConfig)| {
            let mut c = SandboxConfig {
                outbox: outbox.to_path_buf(),
                latency: Duration::from_millis(20),
                error_rate: 0.0,
                outages: vec![],
                rate_limited: vec![],
                retry_after: Duration::from_secs(2),
                discard: false,
            };
            f(&mut c);
            ProviderSection::new("sandbox", &c)
        };
        let windows = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let primary = sandbox(&|c| match self {
            Drill::PrimaryDown => c.outages = windows(&["2s..22s"]),
            Drill::AllDown => c.outages = windows(&["2s..17s"]),
            Drill::Flapping => c.outages = windows(&["5s..10s", "15s..20s", "25s..30s"]),
            Drill::Slow => c.latency = Duration::from_millis(1500),
            Drill::RateLimited => c.rate_limited = windows(&["2s..12s"]),
            Drill::ChattyShipments => {}
        });
        let secondary = sandbox(&|c| {
            if self == Drill::AllDown {
                c.outages = windows(&["2s..17s"]);
            }
        });
        config.providers.clear();
        config.providers.insert("primary".into(), primary);
        config.providers.insert("secondary".into(), secondary);
        config.providers.insert("sms".into(), sandbox(&|_| {}));
        config.channels = [
            (Channel::Email, ChannelConfig::with_providers(["primary", "secondary"])),
            (Channel::Sms, ChannelConfig::with_providers(["sms"])),
        ]
        .into_iter()
        .collect();
        config.limits.clear();
        if self == Drill::RateLimited {
            config.limits.insert(
                "primary".into(),
                ProviderLimits { per_second: Some(100.0), burst: Some(20), max_concurrent: None },
            );
        }
        if let Some(digest) = self.digest() {
            let route = EventRoute {
                template: None,
                category: "transactional".into(),
                priority: Priority::Normal,
                channels: vec![Channel::Email],
                mode: Default::default(),
                fallback: vec![],
                digest: Some(digest),
            };
            config.events.insert(UPDATE.into(), route);
        }
        let breaker = &mut config.worker.breaker;
        breaker.window = Duration::from_secs(10);
        breaker.min_calls = 5;
        breaker.reset_timeout = Duration::from_secs(5);
        breaker.slow_call = Duration::from_secs(1);
    }
}

/// The drill's users: email and SMS, no quiet hours.
pub fn users() -> String {
    (0..USERS)
        .map(|i| {
            serde_json::json!({
                "user_id": format!("d-{i}"), "timezone": "UTC", "locale": "en",
                "email": format!("user{i}@example.com"), "phone": format!("+1555{i:07}"),
                "channels": {"email": true, "sms": true}
            })
            .to_string()
                + "\n"
        })
        .collect()
}

/// Event `seq`: a password reset every tenth, an order confirmation
/// otherwise; in `chatty-shipments`, a tracking update.
fn event(drill: Drill, seq: usize) -> String {
    if drill == Drill::ChattyShipments {
        return update(seq);
    }
    let user = format!("d-{}", seq % USERS);
    let (ty, data) = if seq % 10 == 9 {
        (
            "account.password_reset",
            serde_json::json!({
                "user_id": user, "reset_url": format!("https://shop.example/reset?token=t{seq}"),
                "expires_in_minutes": 30, "requested_ip": "203.0.113.7"
            }),
        )
    } else {
        (
            "order.confirmed",
            serde_json::json!({
                "user_id": user, "order_id": format!("o-{seq:05}"), "total": "10.00", "currency": "EUR",
                "items": [], "item_count": 1, "placed_at": "2026-11-27T10:00:00Z",
                "order_url": format!("https://shop.example/o-{seq:05}")
            }),
        )
    };
    serde_json::json!({"specversion": "1.0", "id": format!("drill-{seq}"), "type": ty, "source": "/drill", "data": data})
        .to_string()
}

/// Update `seq`: every other one to a busy order, the rest round the quiet
/// ones; its status names it (`update <seq>`), so the emails show where it went.
fn update(seq: usize) -> String {
    const STEPS: [(&str, &str); 4] = [
        ("Left the sorting centre", "Leipzig"),
        ("Arrived at the depot", "Lyon"),
        ("Out with the courier", "Lyon"),
        ("Back at the depot", "Lyon"),
    ];
    let order = if seq % 2 == 0 { (seq / 2) % BUSY } else { BUSY + (seq / 2) % (ORDERS - BUSY) };
    let (status, location) = STEPS[seq % STEPS.len()];
    let data = serde_json::json!({
        "user_id": format!("d-{}", order / 2), "order_id": format!("o-{order:02}"),
        "status": format!("{status} (update {seq})"), "location": location, "at": chrono::Utc::now().to_rfc3339()
    });
    serde_json::json!({"specversion": "1.0", "id": format!("drill-{seq}"), "type": UPDATE, "source": "/drill", "data": data})
        .to_string()
}

/// Feeds the drill's events for [`FEED`], a batch every 50 ms; how many.
pub async fn feed(drill: Drill, config: &Config) -> anyhow::Result<usize> {
    let producer = tidings_core::kafka::command_producer(&config.kafka)?;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(RATE)));
    let total = (FEED.as_secs() as usize) * RATE as usize;
    for seq in 0..total {
        tick.tick().await;
        super::dev::feed_with(&producer, config, &event(drill, seq)).await?;
    }
    Ok(total)
}

/// What became of the drill's notifications.
#[derive(Debug, Default)]
pub struct Report {
    pub notifications: usize,
    pub sent: usize,
    /// Sent by a provider after the channel's first.
    pub through_fallback_provider: usize,
    /// Handed to another channel (`failed_over`).
    pub failed_over: usize,
    pub dead_lettered: usize,
    pub other: BTreeMap<&'static str, usize>,
    /// On a channel topic, with no terminal status.
    pub lost: usize,
    /// With more than one outbox file.
    pub sent_twice: usize,
    /// For a digest drill: where the updates went.
    pub digests: Option<Digests>,
}

/// Which digest emails list each update of a digest drill (read from the
/// outbox: each email's text part, first copies only).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub updates: usize,
    pub emails: usize,
    /// Emails that list `max_items` updates: closed full, not by time.
    pub full: usize,
    /// Updates listed in exactly one email, in more than one, in none.
    pub in_one: usize,
    pub in_several: usize,
    pub in_none: usize,
}

impl Digests {
    /// What the email outbox says of updates `0..updates`.
    pub fn read(outbox: &Path, updates: usize, max_items: u32) -> Self {
        let mut emails_of = vec![0usize; updates];
        let mut report = Digests { updates, ..Digests::default() };
        for file in std::fs::read_dir(outbox.join(Channel::Email.as_str())).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            // `<id>.eml`: a second copy (`<id>.2.eml`) is counted as sent twice already.
            if name.matches('.').count() != 1 {
                continue;
            }
            let text = std::fs::read_to_string(file.path()).unwrap_or_default();
            let Some(plain) = text.split("text/plain; charset=utf-8\r\n\r\n").nth(1) else { continue };
            let plain = plain.split("\r\n--tidings").next().unwrap_or_default();
            let listed: HashSet<usize> =
                plain.split("(update ").skip(1).filter_map(|s| s.split(')').next()?.parse().ok()).collect();
            report.emails += 1;
            report.full += usize::from(listed.len() == max_items as usize);
            for seq in listed.into_iter().filter(|s| *s < updates) {
                emails_of[seq] += 1;
            }
        }
        for n in emails_of {
            match n {
                0 => report.in_none += 1,
                1 => report.in_one += 1,
                _ => report.in_several += 1,
            }
        }
        report
    }

    pub fn render(&self) -> String {
        format!(
            "{} tracking updates in {} digest emails ({} closed full, {} at the end of their window)\n\
             in exactly one digest {}, in several {} (must be 0), in none {} (must be 0)",
            self.updates,
            self.emails,
            self.full,
            self.emails - self.full,
            self.in_one,
            self.in_several,
            self.in_none
        )
    }
}

/// Whether a status ends its notification.
fn terminal(state: State) -> bool {
    !matches!(state, State::Deferred | State::Duplicate)
}

/// The notifications on every channel topic.
pub async fn queued(config: &Config) -> anyhow::Result<HashSet<String>> {
    let mut ids = HashSet::new();
    for channel in config.channels.keys() {
        for priority in Priority::ALL {
            let consumer = letters::reader(config, &channel.topic(priority), &Start::Beginning)?;
            letters::read_to_end(&consumer, |l| {
                if let Some(n) = l.notification {
                    ids.insert(n.notification_id);
                }
                true
            })
            .await?;
        }
    }
    Ok(ids)
}

/// Whether every notification in `queued` has a terminal status in `statuses`.
pub fn all_ended(queued: &HashSet<String>, statuses: &[StatusRecord]) -> bool {
    let ended: HashSet<&str> =
        statuses.iter().filter(|r| terminal(r.state)).map(|r| r.notification_id.as_str()).collect();
    queued.iter().all(|id| ended.contains(id.as_str()))
}

impl Report {
    pub fn new(queued: &HashSet<String>, statuses: &[StatusRecord], outbox: &Path) -> Self {
        let mut ended: HashMap<&str, &StatusRecord> = HashMap::new();
        for r in statuses.iter().filter(|r| terminal(r.state)) {
            ended.entry(r.notification_id.as_str()).or_insert(r);
        }
        let mut report = Report { notifications: queued.len(), ..Report::default() };
        for id in queued {
            let Some(r) = ended.get(id.as_str()) else {
                report.lost += 1;
                continue;
            };
            match r.state {
                State::Sent => {
                    report.sent += 1;
                    if r.provider.as_deref() == Some("secondary") {
                        report.through_fallback_provider += 1;
                    }
                }
                State::FailedOver => report.failed_over += 1,
                State::DeadLettered => report.dead_lettered += 1,
                other => *report.other.entry(other.as_str()).or_default() += 1,
            }
        }
        report.sent_twice = copies(outbox).values().filter(|n| **n > 1).count();
        report
    }

    /// The report of a digest drill that fed `updates`.
    pub fn with_digests(mut self, outbox: &Path, updates: usize, max_items: u32) -> Self {
        self.digests = Some(Digests::read(outbox, updates, max_items));
        self
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{} notifications: sent {} ({} through the secondary provider), failed over to SMS {}, dead-lettered {}",
            self.notifications, self.sent, self.through_fallback_provider, self.failed_over, self.dead_lettered
        );
        for (state, n) in &self.other {
            out.push_str(&format!(", {state} {n}"));
        }
        out.push_str(&format!("\nlost {} (must be 0), sent twice {} (must be 0)", self.lost, self.sent_twice));
        if let Some(d) = &self.digests {
            out.push('\n');
            out.push_str(&d.render());
        }
        out
    }

    pub fn held(&self) -> bool {
        let digests = self.digests.as_ref().is_none_or(|d| d.in_several == 0 && d.in_none == 0 && d.emails > 0);
        self.lost == 0 && self.sent_twice == 0 && digests
    }
}

/// Outbox files per notification (`<id>.eml`, `<id>.2.eml`, …), every channel.
fn copies(outbox: &Path) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for channel in std::fs::read_dir(outbox).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(channel.path()).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let Some((stem, _)) = name.rsplit_once('.') else { continue };
            // `<id>.<n>` for a copy after the first; ids hold no dots of their own but this suffix.
            let id = match stem.rsplit_once('.') {
                Some((id, n)) if n.parse::<u32>().is_ok() => id.to_string(),
                _ => stem.to_string(),
            };
            *out.entry(format!("{}/{id}", channel.file_name().to_string_lossy())).or_default() += 1;
        }
    }
    out
}
