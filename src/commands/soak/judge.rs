//! The soak's verdict: `tidings audit` over the topics (every event has its
//! outcome, every notification its terminal status, none sent twice), and
//! what the fake providers took against what the fleet recorded: a `sent`
//! status with no message taken is a loss, a message taken twice a repeat
//! (counted apart for priorities declared `at_least_once`), a user's
//! message taken before an earlier one of the same lane an order
//! violation, and a non-critical message taken inside its user's quiet
//! hours a quiet-hour violation.

use super::config::{Fed, Users};
use super::fakes::{Fakes, Taken};
use super::procs::Procs;
use crate::cli::{AuditArgs, SoakArgs};
use crate::commands::audit::{self, Report};
use rdkafka::message::Message;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tidings_core::channel::STATUS_TOPIC;
use tidings_core::config::{Ambiguity, ChannelMode};
use tidings_core::notification::notification_id;
use tidings_core::quiet_hours::quiet_until;
use tidings_core::status::ErrorClass;
use tidings_core::{Channel, Config, Notification, Priority, State, StatusRecord};

/// Waits until the audit finds nothing under way: every event with its
/// outcome and every notification ended, or nothing more ending for
/// `stall`, or `within` passed. Crashed roles are started again meanwhile.
pub async fn drain(config: &Config, procs: &mut Procs, within: Duration) -> anyhow::Result<Report> {
    let stall = Duration::from_secs(180);
    let deadline = Instant::now() + within;
    let (mut ended, mut since) = (usize::MAX, Instant::now());
    loop {
        procs.watch()?;
        let report = audit::audit(config, &now()).await?;
        let done = report.missing() == 0 && report.deferred == 0 && report.pending == 0;
        if done || Instant::now() >= deadline || (report.ended == ended && since.elapsed() >= stall) {
            return Ok(report);
        }
        if report.ended != ended {
            (ended, since) = (report.ended, Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The audit of everything, with nothing under way allowed.
fn now() -> AuditArgs {
    AuditArgs { since: None, until: None, grace: Duration::ZERO, json: false, shards: 1, pushgateway: None }
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub seed: u64,
    pub minutes: f64,
    pub broker: String,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    pub events: usize,
    /// Events whose write to Kafka failed (not the fleet's doing, but the run is void).
    pub feed_failures: usize,
    pub notifications: usize,
    /// Terminal statuses by state (and error class).
    pub outcomes: BTreeMap<String, usize>,
    /// Distinct notifications the providers took.
    pub delivered: usize,
    /// Messages each provider took (failover shows as the second ones taking some).
    pub taken_by: BTreeMap<String, usize>,
    /// Provider refusals the faults caused (down, rate-limited, invalid).
    pub refusals: usize,
    /// The audit's missing, notifications of a fed event's route with no
    /// terminal status, and `sent` statuses of messages no provider took.
    pub lost: usize,
    /// Terminal outcomes no fault explains: a user without preferences or
    /// an address (every soak user has both), an unreadable record or a
    /// template that did not render.
    pub unexplained: usize,
    /// Taken more than once, of priorities that promise at most once.
    pub sent_twice: usize,
    /// Taken more than once, of priorities declared `at_least_once`.
    pub declared_repeats: usize,
    pub order_violations: usize,
    pub quiet_hour_violations: usize,
    /// Roles that exited when nobody asked, or did not exit when asked.
    pub crashes: Vec<String>,
    /// Some ids of each finding, to start from.
    pub examples: Vec<String>,
    pub audit: Report,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.unexplained == 0
            && self.sent_twice == 0
            && self.order_violations == 0
            && self.quiet_hour_violations == 0
            && self.crashes.is_empty()
            && self.feed_failures == 0
            && self.audit.passed()
    }

    pub fn print(&self) {
        let line = |label: &str, n: usize| println!("{label:<44}{n:>8}");
        line("faults injected", self.faults.values().sum());
        for (kind, n) in &self.faults {
            line(&format!("  {kind}"), *n);
        }
        line("events fed", self.events);
        line("  whose write to Kafka failed", self.feed_failures);
        line("notifications", self.notifications);
        line("  taken by the providers", self.delivered);
        for (endpoint, n) in &self.taken_by {
            line(&format!("    by {endpoint}"), *n);
        }
        line("  refusals the faults caused", self.refusals);
        for (outcome, n) in &self.outcomes {
            line(&format!("  ended {outcome}"), *n);
        }
        line("lost", self.lost);
        line("unexplained outcomes", self.unexplained);
        line("sent twice", self.sent_twice);
        line("  declared at_least_once repeats", self.declared_repeats);
        line("order violations", self.order_violations);
        line("quiet-hour violations", self.quiet_hour_violations);
        line("audit: missing", self.audit.missing());
        line("audit: sent more than once", self.audit.repeated.len());
        line("audit: declared at_least_once repeats", self.audit.declared_repeats.len());
        line("roles crashed", self.crashes.len());
        for crash in &self.crashes {
            println!("  {crash}");
        }
        for example in self.examples.iter().take(20) {
            println!("  {example}");
        }
        let audit = &self.audit;
        let missing = audit.missing_events.iter().chain(&audit.missing_letters).chain(&audit.missing_notifications);
        for id in missing.take(10) {
            println!("  audit: missing {id}");
        }
        for (id, n) in audit.repeated.iter().take(10) {
            println!("  audit: {id} sent {n} times");
        }
        println!("{}", if self.passed() { "passed" } else { "FAILED" });
    }
}

/// Why a terminal status is one no fault of the soak explains, if it is.
fn unexplained_outcome(r: &StatusRecord) -> Option<String> {
    let error = r.error.as_deref().unwrap_or_default();
    if matches!(r.error_class, Some(ErrorClass::Poison | ErrorClass::Render)) {
        return Some(error.to_string());
    }
    let unknown_user = error.contains("no preferences") || (error.contains("has no") && error.contains("address"));
    (r.state == State::Suppressed && unknown_user).then(|| error.to_string())
}

/// What one notification was, from the first copy on its channel topic.
struct Published {
    user: String,
    lane: String,
    priority: Priority,
    /// Where it stands among its user's notifications on its lane.
    rank: usize,
}

/// What the run did, for the verdict.
pub struct Run {
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Records fed, usable or not.
    pub events: usize,
    pub feed_failures: usize,
    /// The usable events fed.
    pub usable: Vec<Fed>,
}

pub async fn judge(
    config: &Config,
    args: &SoakArgs,
    users: &Users,
    fakes: &Fakes,
    report: Report,
    run: Run,
    crashes: &[String],
) -> anyhow::Result<Verdict> {
    let mut sent_statuses: HashSet<String> = HashSet::new();
    let mut ended: HashSet<String> = HashSet::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexplained: Vec<String> = Vec::new();
    audit::read(config, &[STATUS_TOPIC.to_string()], |m| {
        let Some(r) = m.payload().and_then(|p| serde_json::from_slice::<StatusRecord>(p).ok()) else { return };
        if !r.state.is_terminal() || !ended.insert(r.notification_id.clone()) {
            return;
        }
        let class = r.error_class.map(|c| format!(" ({})", c.as_str())).unwrap_or_default();
        *outcomes.entry(format!("{}{class}", r.state.as_str())).or_default() += 1;
        if let Some(why) = unexplained_outcome(&r) {
            unexplained.push(format!("{} {}: {why}", r.state.as_str(), r.notification_id));
        }
        if r.state == State::Sent {
            sent_statuses.insert(r.notification_id);
        }
    })
    .await?;
    // Every channel its route names (the first one, for `first` routes):
    // each must have ended, whatever the audit saw of its siblings.
    let mut unended = Vec::new();
    for fed in &run.usable {
        let Some(route) = config.events.get(&fed.ty) else { continue };
        let channels = match route.mode {
            ChannelMode::All => &route.channels[..],
            ChannelMode::First => &route.channels[..route.channels.len().min(1)],
        };
        for &channel in channels {
            let id = notification_id(super::config::SOURCE, &fed.id, channel, &fed.user);
            if !ended.contains(&id) {
                unended.push(format!("{id} ({} on {channel})", fed.id));
            }
        }
    }
    let lanes: Vec<String> = Channel::ALL.iter().flat_map(|c| Priority::ALL.map(|p| c.topic(p))).collect();
    let mut published: HashMap<String, Published> = HashMap::new();
    let mut ranks: HashMap<(String, String), usize> = HashMap::new();
    audit::read(config, &lanes, |m| {
        let Some(n) = m.payload().and_then(|p| serde_json::from_slice::<Notification>(p).ok()) else { return };
        if published.contains_key(&n.notification_id) {
            return;
        }
        let rank = ranks.entry((n.user_id.clone(), m.topic().to_string())).or_default();
        *rank += 1;
        let entry = Published { user: n.user_id, lane: m.topic().to_string(), priority: n.priority, rank: *rank };
        published.insert(n.notification_id, entry);
    })
    .await?;

    let taken = fakes.taken();
    let declared = |p: Priority| config.worker.ambiguous.of(p) == Ambiguity::AtLeastOnce;
    let mut found = findings(&published, &taken, &sent_statuses, users, declared);
    for id in unended.iter().take(10) {
        found.examples.push(format!("no terminal status: {id}"));
    }
    for what in unexplained.iter().take(10) {
        found.examples.push(format!("unexplained: {what}"));
    }
    Ok(Verdict {
        seed: args.seed,
        minutes: args.minutes,
        broker: format!("{:?}", args.broker).to_lowercase(),
        faults: run.faults,
        events: run.events,
        feed_failures: run.feed_failures,
        notifications: report.notifications,
        outcomes,
        delivered: found.delivered,
        taken_by: taken.iter().fold(BTreeMap::new(), |mut by, t| {
            *by.entry(format!("{:?}", t.endpoint)).or_default() += 1;
            by
        }),
        refusals: fakes.refused(),
        lost: report.missing() + found.unsent + unended.len(),
        unexplained: unexplained.len(),
        sent_twice: found.sent_twice,
        declared_repeats: found.declared_repeats,
        order_violations: found.order_violations,
        quiet_hour_violations: found.quiet_hour_violations,
        crashes: crashes.to_vec(),
        examples: found.examples,
        audit: report,
    })
}

/// A notification's rank among its user's on its lane, where it was first
/// taken among everything the providers took, and its id.
type Ranked<'a> = (usize, usize, &'a str);

/// What the providers took, against what the fleet published and recorded.
#[derive(Debug, Default)]
struct Findings {
    delivered: usize,
    /// `sent` statuses of notifications no provider took.
    unsent: usize,
    sent_twice: usize,
    declared_repeats: usize,
    order_violations: usize,
    quiet_hour_violations: usize,
    examples: Vec<String>,
}

fn findings(
    published: &HashMap<String, Published>,
    taken: &[Taken],
    sent: &HashSet<String>,
    users: &Users,
    declared: impl Fn(Priority) -> bool,
) -> Findings {
    let mut found = Findings::default();
    let mut times: HashMap<&str, usize> = HashMap::new();
    // The first time each was taken, as a position in the order of taking.
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (at, t) in taken.iter().enumerate() {
        *times.entry(&t.notification_id).or_default() += 1;
        first.entry(&t.notification_id).or_insert(at);
    }
    found.delivered = times.len();
    let mut repeats: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    repeats.sort();
    for (id, n) in repeats {
        match published.get(*id).map(|p| p.priority) {
            Some(p) if declared(p) => found.declared_repeats += 1,
            _ => {
                found.sent_twice += 1;
                found.examples.push(format!("sent {n} times: {id}"));
            }
        }
    }
    let mut unsent: Vec<&String> = sent.iter().filter(|id| !times.contains_key(id.as_str())).collect();
    unsent.sort();
    found.unsent = unsent.len();
    for id in unsent.iter().take(10) {
        found.examples.push(format!("`sent` with no message taken: {id}"));
    }

    // Order: on each user's lane, the notifications taken must have been
    // first taken in the order they were first published.
    // Per (user, lane): (rank published, position taken, id).
    let mut by_lane: HashMap<(&str, &str), Vec<Ranked>> = HashMap::new();
    for (id, at) in &first {
        if let Some(p) = published.get(*id) {
            by_lane.entry((&p.user, &p.lane)).or_default().push((p.rank, *at, id));
        }
    }
    for ((user, lane), mut taken_in) in by_lane {
        taken_in.sort();
        for pair in taken_in.windows(2) {
            if pair[1].1 < pair[0].1 {
                found.order_violations += 1;
                found.examples.push(format!("order: {user} on {lane}: {} taken before {}", pair[1].2, pair[0].2));
            }
        }
    }

    for (id, at) in &first {
        let Some(p) = published.get(*id) else { continue };
        if p.priority == Priority::Critical {
            continue;
        }
        if let Some((quiet, tz)) = users.quiet(&p.user) {
            let when = taken[*at].at;
            if quiet_until(quiet, tz, when).is_some() {
                found.quiet_hour_violations += 1;
                found.examples.push(format!("quiet hours: {id} to {} taken at {when}", p.user));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::soak::schedule::Endpoint;
    use chrono::{DateTime, Utc};

    fn published(list: &[(&str, &str, Priority)]) -> HashMap<String, Published> {
        let mut ranks: HashMap<String, usize> = HashMap::new();
        list.iter()
            .map(|(id, user, priority)| {
                let rank = ranks.entry(user.to_string()).or_default();
                *rank += 1;
                let lane = format!("tidings.email.{priority:?}");
                (id.to_string(), Published { user: user.to_string(), lane, priority: *priority, rank: *rank })
            })
            .collect()
    }

    fn taken(ids: &[&str], at: DateTime<Utc>) -> Vec<Taken> {
        ids.iter().map(|id| Taken { notification_id: id.to_string(), endpoint: Endpoint::SendgridA, at }).collect()
    }

    fn no_users() -> Users {
        Users { prefs: Vec::new() }
    }

    #[test]
    fn a_clean_run_has_no_findings() {
        let p = published(&[
            ("a", "s-0", Priority::Normal),
            ("b", "s-0", Priority::Normal),
            ("c", "s-1", Priority::Normal),
        ]);
        let sent = ["a", "b", "c"].map(String::from).into();
        let f = findings(&p, &taken(&["c", "a", "b"], Utc::now()), &sent, &no_users(), |_| false);
        assert_eq!((f.delivered, f.unsent, f.sent_twice, f.order_violations, f.quiet_hour_violations), (3, 0, 0, 0, 0));
    }

    #[test]
    fn repeats_overtakes_and_unsent_statuses_are_found() {
        let p = published(&[
            ("a", "s-0", Priority::Normal),
            ("b", "s-0", Priority::Normal),
            ("r", "s-1", Priority::Critical),
            ("n", "s-1", Priority::Normal),
        ]);
        let sent = ["a", "b", "r", "n", "ghost"].map(String::from).into();
        let f = findings(&p, &taken(&["b", "a", "r", "r", "n", "n"], Utc::now()), &sent, &no_users(), |p| {
            p == Priority::Critical
        });
        assert_eq!(f.order_violations, 1, "{:?}", f.examples);
        assert_eq!((f.sent_twice, f.declared_repeats), (1, 1), "{:?}", f.examples);
        assert_eq!(f.unsent, 1);
    }

    #[test]
    fn a_non_critical_message_taken_inside_quiet_hours_is_found() {
        let started = "2026-12-07T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        // s-1 has quiet hours (one user in four), from an hour before the start.
        let users = super::super::config::users(1, 2, 9, started, Duration::from_secs(600));
        let p = published(&[("n", "s-1", Priority::Normal), ("c", "s-1", Priority::Critical)]);
        let inside = taken(&["n", "c"], started + chrono::Duration::seconds(30));
        let f = findings(&p, &inside, &HashSet::new(), &users, |_| false);
        assert_eq!(f.quiet_hour_violations, 1, "{:?}", f.examples);
        let after = taken(&["n"], started + chrono::Duration::seconds(600));
        assert_eq!(findings(&p, &after, &HashSet::new(), &users, |_| false).quiet_hour_violations, 0);
    }
}
