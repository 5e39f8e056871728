//! Drills: faults that last longer or look odder than a clean crash, run
//! against the real roles on the mock cluster and a private `redis-server`,
//! with faked providers. Each drill asserts the delivery promise from what
//! the fakes received and what `tidings.status` says: lost 0, sent twice 0
//! (or, where an ambiguous answer is retried on purpose, counted), one
//! terminal state per notification, per-user order.
//!
//! Run them alone with `cargo test --test suite drills::`. Each prints a
//! `drill <name>: …` line with its figures (the README's drill table).

mod broker_outage;
mod claim_outlives_lease;
mod drain_timeout;
mod intake_scheduler_kills;
mod long_outage;
mod panics;
mod redis_outage;
mod secondary_down;
mod slow_tenant;
mod stalled_provider;
mod worker_kills;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use tidings_core::notification::notification_id;
use tidings_core::{Channel, State, StatusRecord};

/// The notifications a drill expects: per user, ids in the order their events were fed.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    pub per_user: HashMap<String, Vec<String>>,
    pub total: usize,
}

impl Expected {
    /// `order.confirmed` events `from..to` spread over `users` users, on `channel`.
    pub fn orders(from: usize, to: usize, users: usize, channel: Channel) -> Self {
        let mut e = Expected::default();
        for seq in from..to {
            let user = format!("u-{}", seq % users);
            let id = notification_id("/test", &format!("evt-{seq}"), channel, &user);
            e.per_user.entry(user).or_default().push(id);
            e.total += 1;
        }
        e
    }

    /// `order.confirmed` events, one per `(seq, user)` in the order fed, on `channel`.
    pub fn of(events: &[(usize, String)], channel: Channel) -> Self {
        let mut e = Expected::default();
        for (seq, user) in events {
            let id = notification_id("/test", &format!("evt-{seq}"), channel, user);
            e.per_user.entry(user.clone()).or_default().push(id);
            e.total += 1;
        }
        e
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.per_user.values().flatten()
    }
}

/// What a drill measured.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub messages: usize,
    /// Expected notifications with no terminal status.
    pub lost: usize,
    /// Notifications a provider accepted more than once.
    pub sent_twice: usize,
    /// Notifications ended `unconfirmed` (ambiguous answer, at most once).
    pub unconfirmed: usize,
    pub dead_lettered: usize,
    /// Notifications with more than one terminal status (a record repeated byte for byte counts once).
    pub extra_terminal: usize,
    /// Pairs of one user's notifications that reached the provider out of order.
    pub out_of_order: usize,
    /// From the fault's end to the last terminal status.
    pub recovery: Option<Duration>,
}

impl Tally {
    /// Counts from the provider's arrivals (`accepted`, ids in arrival order)
    /// and the status records.
    pub fn of(expected: &Expected, accepted: &[String], records: &[StatusRecord]) -> Self {
        let mut sends: HashMap<&str, usize> = HashMap::new();
        let mut first_arrival: HashMap<&str, usize> = HashMap::new();
        for (at, id) in accepted.iter().enumerate() {
            *sends.entry(id).or_default() += 1;
            first_arrival.entry(id).or_insert(at);
        }
        // A terminal record written again byte for byte (a copy read after the status was
        // written and before it was marked published) is the same fact, folded as a reader would.
        let mut terminal: HashMap<&str, Vec<State>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for r in records.iter().filter(|r| r.state.is_terminal()) {
            if seen.insert((r.notification_id.as_str(), r.state, r.at)) {
                terminal.entry(r.notification_id.as_str()).or_default().push(r.state);
            }
        }
        let mut t = Tally { messages: expected.total, ..Tally::default() };
        for id in expected.ids() {
            let states = terminal.get(id.as_str()).map(Vec::as_slice).unwrap_or_default();
            match states.first() {
                None => t.lost += 1,
                Some(State::Unconfirmed) => t.unconfirmed += 1,
                Some(State::DeadLettered) => t.dead_lettered += 1,
                Some(_) => {}
            }
            if states.len() > 1 {
                t.extra_terminal += 1;
            }
            if sends.get(id.as_str()).copied().unwrap_or(0) > 1 {
                t.sent_twice += 1;
            }
        }
        for ids in expected.per_user.values() {
            let arrivals: Vec<usize> = ids.iter().filter_map(|id| first_arrival.get(id.as_str()).copied()).collect();
            t.out_of_order += arrivals.windows(2).filter(|w| w[0] > w[1]).count();
        }
        t
    }

    /// Every expected notification ended once; nothing went out twice or out of order.
    pub fn assert_kept(&self, drill: &str) {
        println!("drill {drill}: {self}");
        assert_eq!(
            (self.lost, self.sent_twice, self.extra_terminal, self.out_of_order),
            (0, 0, 0, 0),
            "drill {drill} broke the promise (lost, sent twice, extra terminal, out of order): {self}"
        );
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "messages {} | lost {} | sent twice {} | unconfirmed {} | dead-lettered {} | extra terminal {} | out of order {} | recovered in {}",
            self.messages,
            self.lost,
            self.sent_twice,
            self.unconfirmed,
            self.dead_lettered,
            self.extra_terminal,
            self.out_of_order,
            self.recovery.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        )
    }
}

/// Every expected notification has a terminal status.
pub fn all_ended(expected: &Expected) -> impl Fn(&[StatusRecord]) -> bool + '_ {
    move |records| {
        let ended: std::collections::HashSet<&str> =
            records.iter().filter(|r| r.state.is_terminal()).map(|r| r.notification_id.as_str()).collect();
        expected.ids().all(|id| ended.contains(id.as_str()))
    }
}
