//! The soak's fault schedule: drawn from the seed alone, so the same seed
//! gives the same faults at the same offsets, whatever the machine does.
//!
//! Faults come as a Poisson stream (one every `mean_gap` on average) over
//! the faulted part of the run, each lasting a few seconds to tens of
//! seconds, so several overlap; one in three brings a second fault at the
//! same instant (SIGTERM during an outage, a rebalance during a probe).

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// A role of the fleet the soak runs as processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Role {
    Intake,
    Scheduler,
    Callbacks,
    /// The `n`th standing worker of a channel (two per channel).
    Worker(Lane, u8),
}

/// A channel the soak sends on, through the fake providers of [`super::fakes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Lane {
    Email,
    Sms,
    Webhook,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Email, Lane::Sms, Lane::Webhook];

    pub fn channel(self) -> &'static str {
        match self {
            Lane::Email => "email",
            Lane::Sms => "sms",
            Lane::Webhook => "webhook",
        }
    }
}

impl Role {
    pub fn all() -> Vec<Role> {
        let mut roles = vec![Role::Intake, Role::Scheduler, Role::Callbacks];
        roles.extend(Lane::ALL.iter().flat_map(|&l| [Role::Worker(l, 0), Role::Worker(l, 1)]));
        roles
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Intake => write!(f, "intake"),
            Role::Scheduler => write!(f, "scheduler"),
            Role::Callbacks => write!(f, "callbacks"),
            Role::Worker(lane, n) => write!(f, "worker-{}-{n}", lane.channel()),
        }
    }
}

/// A fake provider endpoint a fault can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Endpoint {
    /// The first email provider (SendGrid's API).
    SendgridA,
    /// The second email provider, another SendGrid account.
    SendgridB,
    /// The first SMS provider (Vonage's SMS API).
    VonageA,
    VonageB,
    /// Every user's webhook endpoint at once.
    Hooks,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] =
        [Endpoint::SendgridA, Endpoint::SendgridB, Endpoint::VonageA, Endpoint::VonageB, Endpoint::Hooks];
}

/// How a faulted provider answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Mode {
    /// 503 to everything.
    Down,
    /// Every answer after this long: 1 to 3 s, near the providers' 3 s
    /// timeout, so the slowest come too late (ambiguous, as a real slow
    /// provider's do).
    Slow(Duration),
    /// Down and up by turns, this long each.
    Flapping(Duration),
    /// 429 with this `Retry-After`.
    RateLimited(Duration),
    /// Takes each message, then answers only after this long (past the
    /// providers' timeout): the send happened, the worker cannot know.
    Stall(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Fault {
    Kill(Role),
    /// SIGTERM: the role drains (with a short drain timeout) and exits.
    Term(Role),
    Provider(Endpoint, Mode),
    /// The providers refuse the recipients of one user in eight as invalid.
    InvalidRecipients,
    /// `redis-server` killed, then started again on its append-only file.
    RedisDown,
    /// The Kafka broker down, then up again.
    BrokerDown,
    /// A third worker of the lane joins its groups, and leaves (SIGTERM) at the end.
    ExtraWorker(Lane),
}

impl Fault {
    /// The kind, for the counts of a campaign.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "SIGKILL of a role",
            Fault::Term(_) => "SIGTERM of a role",
            Fault::Provider(_, Mode::Down) => "provider down",
            Fault::Provider(_, Mode::Slow(_)) => "provider slow",
            Fault::Provider(_, Mode::Flapping(_)) => "provider flapping",
            Fault::Provider(_, Mode::RateLimited(_)) => "provider rate-limited",
            Fault::Provider(_, Mode::Stall(_)) => "provider accepts, then stalls",
            Fault::InvalidRecipients => "invalid recipients",
            Fault::RedisDown => "Redis down (restarted on AOF)",
            Fault::BrokerDown => "Kafka broker down",
            Fault::ExtraWorker(_) => "worker added, then removed (rebalances)",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(r) => write!(f, "SIGKILL {r}"),
            Fault::Term(r) => write!(f, "SIGTERM {r}"),
            Fault::Provider(e, m) => write!(f, "{e:?} {m:?}"),
            Fault::InvalidRecipients => write!(f, "invalid recipients"),
            Fault::RedisDown => write!(f, "redis down"),
            Fault::BrokerDown => write!(f, "broker down"),
            Fault::ExtraWorker(l) => write!(f, "extra {} worker", l.channel()),
        }
    }
}

/// One fault: from `at` (since the run began) for `lasting` (for a kill,
/// how long the role stays down before it is started again).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    pub at: Duration,
    pub lasting: Duration,
    pub fault: Fault,
}

impl Step {
    pub fn until(&self) -> Duration {
        self.at + self.lasting
    }
}

/// The faults of seed `seed` over a run of `run`: none start in its last
/// fifth, and every one has ended by the run's end.
pub fn schedule(seed: u64, run: Duration, mean_gap: Duration) -> Vec<Step> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let faulted = run.mul_f64(0.8);
    let mut steps = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        // Exponential gaps: a Poisson stream of faults.
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        at += mean_gap.mul_f64(-u.ln()).max(Duration::from_millis(200));
        if at >= faulted {
            break;
        }
        let pair = rng.random_bool(1.0 / 3.0);
        for _ in 0..(1 + pair as usize) {
            let (fault, lasting) = draw(&mut rng);
            steps.push(Step { at, lasting: lasting.min(run - at), fault });
        }
    }
    steps
}

fn secs(rng: &mut Xoshiro256PlusPlus, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.random_range(range.start * 1000..range.end * 1000))
}

fn draw(rng: &mut Xoshiro256PlusPlus) -> (Fault, Duration) {
    let roles = Role::all();
    let role = roles[rng.random_range(0..roles.len())];
    let endpoint = Endpoint::ALL[rng.random_range(0..Endpoint::ALL.len())];
    let lane = Lane::ALL[rng.random_range(0..Lane::ALL.len())];
    match rng.random_range(0..100) {
        0..20 => (Fault::Kill(role), secs(rng, 1..10)),
        20..32 => (Fault::Term(role), secs(rng, 1..10)),
        32..44 => (Fault::Provider(endpoint, Mode::Down), secs(rng, 5..45)),
        44..52 => (Fault::Provider(endpoint, Mode::Slow(secs(rng, 1..3))), secs(rng, 5..30)),
        52..60 => (Fault::Provider(endpoint, Mode::Flapping(secs(rng, 2..8))), secs(rng, 10..40)),
        60..68 => (Fault::Provider(endpoint, Mode::RateLimited(secs(rng, 1..4))), secs(rng, 5..30)),
        68..76 => (Fault::Provider(endpoint, Mode::Stall(secs(rng, 5..12))), secs(rng, 3..15)),
        76..82 => (Fault::InvalidRecipients, secs(rng, 5..20)),
        82..89 => (Fault::RedisDown, secs(rng, 2..16)),
        89..94 => (Fault::BrokerDown, secs(rng, 2..16)),
        _ => (Fault::ExtraWorker(lane), secs(rng, 10..40)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const RUN: Duration = Duration::from_secs(600);

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let gap = Duration::from_secs(6);
        assert_eq!(schedule(7, RUN, gap), schedule(7, RUN, gap));
        assert_ne!(schedule(7, RUN, gap), schedule(8, RUN, gap));
    }

    #[test]
    fn faults_overlap_and_end_within_the_run() {
        let steps = schedule(3, RUN, Duration::from_secs(6));
        assert!(steps.len() > 40, "{} faults in ten minutes", steps.len());
        assert!(steps.iter().all(|s| s.at < RUN.mul_f64(0.8) && s.until() <= RUN));
        let overlapping = steps.windows(2).filter(|w| w[1].at < w[0].until()).count();
        assert!(overlapping > steps.len() / 4, "{overlapping} of {} overlap the one before", steps.len());
        assert!(steps.windows(2).any(|w| w[0].at == w[1].at), "some come in pairs");
    }

    #[test]
    fn every_kind_of_fault_is_drawn() {
        let kinds: HashSet<&str> =
            (0..10).flat_map(|seed| schedule(seed, RUN, Duration::from_secs(6))).map(|s| s.fault.kind()).collect();
        assert_eq!(kinds.len(), 11, "{kinds:?}");
    }
}
