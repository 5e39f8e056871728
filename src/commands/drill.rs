//! `tidings dev --drill <name>`: a provider fault on the sandbox, with live
//! traffic, that anyone can watch. Two email providers (`primary`, then
//! `secondary`) and an SMS one; 100 users; an order confirmation every
//! 50 ms for 25 s and a password reset (critical, falling back to SMS) with
//! every tenth. Breakers react within seconds (a 10 s window, 5 calls, 5 s
//! reset) so a drill ends in about half a minute.
//!
//! The closing summary comes from what the fleet wrote, not from its own
//! counters: every notification on a channel topic, its terminal status,
//! and the outbox files (a second send of a notification is a second file).

use crate::commands::dlq::letters::{self, Start};
use clap::ValueEnum;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use tidings_core::config::{ChannelConfig, ProviderLimits, ProviderSection};
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
}

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
        }
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

/// Event `seq`: a password reset every tenth, an order confirmation otherwise.
fn event(seq: usize) -> String {
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

/// Feeds the drill's events for [`FEED`], a batch every 50 ms; how many.
pub async fn feed(config: &Config) -> anyhow::Result<usize> {
    let producer = tidings_core::kafka::command_producer(&config.kafka)?;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(RATE)));
    let total = (FEED.as_secs() as usize) * RATE as usize;
    for seq in 0..total {
        tick.tick().await;
        super::dev::feed_with(&producer, config, &event(seq)).await?;
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

    pub fn render(&self) -> String {
        let mut out = format!(
            "{} notifications: sent {} ({} through the secondary provider), failed over to SMS {}, dead-lettered {}",
            self.notifications, self.sent, self.through_fallback_provider, self.failed_over, self.dead_lettered
        );
        for (state, n) in &self.other {
            out.push_str(&format!(", {state} {n}"));
        }
        out.push_str(&format!("\nlost {} (must be 0), sent twice {} (must be 0)", self.lost, self.sent_twice));
        out
    }

    pub fn held(&self) -> bool {
        self.lost == 0 && self.sent_twice == 0
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
