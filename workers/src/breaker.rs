//! A circuit breaker per provider, with explicit states.
//!
//! - **Closed**: calls pass. Outcomes are counted over a sliding `window`;
//!   once it holds `min_calls`, a share of failures at or above
//!   `failure_rate`, or of calls slower than `slow_call` at or above
//!   `slow_call_rate`, opens the breaker. The window is kept as counts in
//!   fixed time buckets (as Resilience4j's time-based window): a call costs
//!   the same whatever the load, and a call stays in the window at most one
//!   bucket (a twentieth of it) longer than its exact age says.
//! - **Open**: calls are refused until the reset timeout has passed. The
//!   timeout is jittered (up to +25 %) so a fleet does not probe in step.
//! - **Half-open**: up to `half_open_probes` calls pass; all of them
//!   succeeding closes the breaker, any failure opens it again. A probe is
//!   an [`Admission`]: one dropped without an outcome (its delivery was told
//!   to stop before calling, or the call panicked) gives its slot back, so
//!   abandoned probes never leave the breaker half-open for good.
//!
//! Every transition is logged and exported as the gauge
//! `tidings_breaker_state{provider}` (0 closed, 1 half-open, 2 open).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings_core::config::BreakerConfig;
use tidings_core::progress::Progress;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

/// What a recorded outcome did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened { until: Instant },
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    progress: Option<Arc<Progress>>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Recent calls while closed.
    calls: Window,
    /// Counts the times the breaker went half-open: a probe slot is given
    /// back only to the half-open state that lent it.
    probing: u64,
}

/// Leave to call a provider, from [`Breaker::allow`]. Its outcome goes
/// through [`Admission::record`]; dropped without one, a half-open probe's
/// slot is given back.
#[derive(Debug)]
#[must_use = "an admission is spent by recording the call's outcome"]
pub struct Admission<'b> {
    breaker: &'b Breaker,
    /// The half-open state (`Inner::probing`) whose slot this holds, if a probe.
    probe: Option<u64>,
}

impl Admission<'_> {
    /// Records the outcome of the call this admitted (see [`Breaker::record`]).
    pub fn record(mut self, failed: bool, elapsed: Duration) -> Option<Transition> {
        self.probe = None;
        self.breaker.record(failed, elapsed)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let Some(probing) = self.probe else { return };
        let mut inner = self.breaker.lock();
        if let State::HalfOpen { admitted, succeeded } = inner.state {
            if inner.probing == probing && admitted > 0 {
                inner.state = State::HalfOpen { admitted: admitted - 1, succeeded };
            }
        }
    }
}

/// Buckets a window is cut into.
const BUCKETS: u32 = 20;

/// Calls, failures and slow calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    calls: u32,
    failed: u32,
    slow: u32,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.slow += other.slow;
    }

    fn remove(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failed -= other.failed;
        self.slow -= other.slow;
    }
}

/// Counts over the last `window`, in [`BUCKETS`] + 1 buckets of a
/// twentieth of it each: the current one, filling, and the twenty before.
/// A call falls out once its bucket is more than twenty buckets old, so on
/// bucket boundaries the window is exact. Recording is O(1) amortised: a
/// bucket is emptied once per pass of time over it.
#[derive(Debug)]
struct Window {
    origin: Instant,
    width: Duration,
    buckets: Vec<Counts>,
    /// The bucket number (since `origin`) of the newest bucket.
    newest: u64,
    total: Counts,
}

impl Window {
    fn new(window: Duration) -> Self {
        Window {
            origin: Instant::now(),
            width: (window / BUCKETS).max(Duration::from_millis(1)),
            buckets: vec![Counts::default(); BUCKETS as usize + 1],
            newest: 0,
            total: Counts::default(),
        }
    }

    /// Adds a call made at `now` and returns the counts over the window.
    fn record(&mut self, now: Instant, call: Counts) -> Counts {
        let bucket = (now.duration_since(self.origin).as_nanos() / self.width.as_nanos()) as u64;
        let len = self.buckets.len() as u64;
        // Empty the buckets time has moved past; all of them after a long quiet.
        for expired in (self.newest + 1..=bucket).take(self.buckets.len()) {
            let slot = &mut self.buckets[(expired % len) as usize];
            self.total.remove(*slot);
            *slot = Counts::default();
        }
        self.newest = self.newest.max(bucket);
        self.buckets[(bucket % len) as usize].add(call);
        self.total.add(call);
        self.total
    }

    fn clear(&mut self) {
        self.buckets.fill(Counts::default());
        self.total = Counts::default();
    }
}

impl Breaker {
    pub fn new(name: &str, config: &BreakerConfig) -> Self {
        let breaker = Breaker {
            name: name.to_string(),
            config: config.clone(),
            inner: Mutex::new(Inner { state: State::Closed, calls: Window::new(config.window), probing: 0 }),
            progress: None,
        };
        breaker.export(State::Closed);
        breaker
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Whether a call may go out now; in half-open this takes a probe slot,
    /// which the admission gives back if dropped without an outcome.
    pub fn allow(&self) -> Option<Admission<'_>> {
        let mut inner = self.lock();
        let probe = match inner.state {
            State::Closed => None,
            State::Open { until } if Instant::now() >= until => {
                tracing::info!(provider = %self.name, "breaker half-open: probing");
                inner.probing += 1;
                self.set(&mut inner, State::HalfOpen { admitted: 1, succeeded: 0 });
                Some(inner.probing)
            }
            State::Open { .. } => return None,
            State::HalfOpen { admitted, succeeded } if admitted < self.config.half_open_probes.max(1) => {
                inner.state = State::HalfOpen { admitted: admitted + 1, succeeded };
                Some(inner.probing)
            }
            State::HalfOpen { .. } => return None,
        };
        Some(Admission { breaker: self, probe })
    }

    /// Open now, refusing calls until `until` has passed.
    pub fn is_open(&self) -> bool {
        matches!(self.lock().state, State::Open { until } if Instant::now() < until)
    }

    /// When an open breaker admits its next probe.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.lock().state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Records a call's outcome: whether it failed in a way that counts
    /// against the provider, and how long it took.
    pub fn record(&self, failed: bool, elapsed: Duration) -> Option<Transition> {
        let mut inner = self.lock();
        let slow = elapsed >= self.config.slow_call;
        match inner.state {
            State::Closed => {
                let call = Counts { calls: 1, failed: failed as u32, slow: slow as u32 };
                let counts = inner.calls.record(Instant::now(), call);
                if counts.calls < self.config.min_calls.max(1) {
                    return None;
                }
                let n = counts.calls as f64;
                let (failures, slows) = (counts.failed as f64 / n, counts.slow as f64 / n);
                if failures >= self.config.failure_rate || slows >= self.config.slow_call_rate {
                    let why = if failures >= self.config.failure_rate { "failure rate" } else { "slow-call rate" };
                    tracing::warn!(provider = %self.name, failures, slows, "breaker opens on {why}");
                    return Some(self.open(&mut inner));
                }
                None
            }
            State::HalfOpen { admitted, succeeded } => {
                if failed || slow {
                    tracing::warn!(provider = %self.name, "probe failed; breaker opens again");
                    Some(self.open(&mut inner))
                } else if succeeded + 1 >= self.config.half_open_probes.max(1) {
                    tracing::info!(provider = %self.name, "probes succeeded; breaker closed");
                    inner.calls.clear();
                    self.set(&mut inner, State::Closed);
                    Some(Transition::Closed)
                } else {
                    inner.state = State::HalfOpen { admitted, succeeded: succeeded + 1 };
                    None
                }
            }
            // A late answer to a call made before the breaker opened.
            State::Open { .. } => None,
        }
    }

    /// Opens the breaker because another process of the fleet opened it. Its
    /// own reset timeout still decides when this process probes.
    pub fn open_from_fleet(&self) -> bool {
        let mut inner = self.lock();
        if inner.state == State::Closed {
            tracing::warn!(provider = %self.name, "breaker opened by another worker of the fleet");
            self.open(&mut inner);
            true
        } else {
            false
        }
    }

    fn open(&self, inner: &mut Inner) -> Transition {
        let jitter = self.config.reset_timeout.mul_f64(rand::random::<f64>() * 0.25);
        let until = Instant::now() + self.config.reset_timeout + jitter;
        inner.calls.clear();
        self.set(inner, State::Open { until });
        Transition::Opened { until }
    }

    fn set(&self, inner: &mut Inner, state: State) {
        inner.state = state;
        self.export(state);
    }

    fn export(&self, state: State) {
        let (value, label) = match state {
            State::Closed => (0.0, "closed"),
            State::HalfOpen { .. } => (1.0, "half-open"),
            State::Open { .. } => (2.0, "open"),
        };
        metrics::gauge!("tidings_breaker_state", "provider" => self.name.clone()).set(value);
        if let Some(progress) = &self.progress {
            progress.breaker(&self.name, label);
        }
    }

    /// Also reports each change of state to `progress` (what `tidings dev` shows).
    pub fn report_to(&mut self, progress: Arc<Progress>) {
        progress.breaker(&self.name, "closed");
        self.progress = Some(progress);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        serde_json::from_value(serde_json::json!({
            "window": "10s", "min_calls": 4, "failure_rate": 0.5, "slow_call": "2s", "slow_call_rate": 0.75,
            "reset_timeout": "10s", "half_open_probes": 2
        }))
        .unwrap()
    }

    const FAST: Duration = Duration::from_millis(10);

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_rate_once_the_window_has_enough_calls() {
        let b = Breaker::new("p", &config());
        assert_eq!(b.record(true, FAST), None);
        assert_eq!(b.record(true, FAST), None, "two calls are too few to judge");
        assert_eq!(b.record(false, FAST), None);
        assert!(matches!(b.record(false, FAST), Some(Transition::Opened { .. })), "2 of 4 failed");
        assert!(b.allow().is_none());
        assert!(b.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn old_calls_leave_the_window() {
        let b = Breaker::new("p", &config());
        for _ in 0..3 {
            b.record(true, FAST);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..3 {
            assert_eq!(b.record(false, FAST), None);
        }
        assert_eq!(b.record(false, FAST), None, "the old failures no longer count");
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_open_it_too() {
        let b = Breaker::new("p", &config());
        for _ in 0..3 {
            assert_eq!(b.record(false, Duration::from_secs(3)), None);
        }
        assert!(matches!(b.record(false, Duration::from_secs(3)), Some(Transition::Opened { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn the_reset_is_jittered_then_probes_close_it() {
        let b = Breaker::new("p", &config());
        for _ in 0..4 {
            b.record(true, FAST);
        }
        let wait = b.reopens_at().unwrap() - Instant::now();
        assert!(wait >= Duration::from_secs(10) && wait <= Duration::from_millis(12_500), "{wait:?}");
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        assert!(b.allow().is_none(), "not before the reset timeout");
        tokio::time::advance(Duration::from_millis(1)).await;
        let first = b.allow().expect("first probe");
        let second = b.allow().expect("second probe");
        assert!(b.allow().is_none(), "only two probes at a time");
        assert_eq!(first.record(false, FAST), None);
        assert_eq!(second.record(false, FAST), Some(Transition::Closed));
        assert_eq!(b.state(), State::Closed);
    }

    /// A probe's delivery told to stop before it called (a shutdown, a lost
    /// claim), or whose provider panicked, records nothing: its slot comes
    /// back, or after `half_open_probes` of them nothing would ever probe.
    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_called_gives_its_slot_back() {
        let b = Breaker::new("p", &config());
        for _ in 0..4 {
            b.record(true, FAST);
        }
        tokio::time::advance(Duration::from_secs(13)).await;
        for _ in 0..5 {
            let (first, second) = (b.allow().expect("a probe slot"), b.allow().expect("a second slot"));
            assert!(b.allow().is_none(), "two probes at a time");
            drop((first, second));
        }
        let probe = b.allow().expect("slots came back");
        assert_eq!(probe.record(false, FAST), None);
        // A slot lent before the breaker opened again is not given to the next half-open state.
        let stale = b.allow().expect("the second slot");
        assert!(matches!(b.record(true, FAST), Some(Transition::Opened { .. })), "a late failure opens it again");
        tokio::time::advance(Duration::from_secs(13)).await;
        let (first, second) = (b.allow().expect("probe"), b.allow().expect("probe"));
        drop(stale);
        assert!(b.allow().is_none(), "the stale slot freed nothing: {:?}", b.state());
        drop((first, second));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again() {
        let b = Breaker::new("p", &config());
        for _ in 0..4 {
            b.record(true, FAST);
        }
        tokio::time::advance(Duration::from_secs(13)).await;
        let probe = b.allow().expect("a probe");
        assert!(matches!(probe.record(true, FAST), Some(Transition::Opened { .. })));
        assert!(b.allow().is_none());
    }

    mod window {
        use super::super::{Counts, Window, BUCKETS};
        use proptest::prelude::*;
        use std::collections::VecDeque;
        use std::time::Duration;
        use tokio::time::Instant;

        proptest! {
            /// On bucket boundaries the bucketed window counts exactly what
            /// a window of every call's time (the breaker's former one) does:
            /// calls no older than the window.
            #[test]
            fn counts_what_an_exact_window_counts(calls in prop::collection::vec((0..30u32, any::<bool>(), any::<bool>()), 1..300)) {
                let window = Duration::from_secs(10);
                let width = window / BUCKETS;
                let origin = Instant::now();
                let mut bucketed = Window { origin, ..Window::new(window) };
                let mut exact: VecDeque<(Instant, bool, bool)> = VecDeque::new();
                let mut now = origin;
                for (gap, failed, slow) in calls {
                    now += width * gap;
                    let counts = bucketed.record(now, Counts { calls: 1, failed: failed as u32, slow: slow as u32 });
                    exact.push_back((now, failed, slow));
                    while exact.front().is_some_and(|(t, ..)| now.duration_since(*t) > window) {
                        exact.pop_front();
                    }
                    let expected = Counts {
                        calls: exact.len() as u32,
                        failed: exact.iter().filter(|c| c.1).count() as u32,
                        slow: exact.iter().filter(|c| c.2).count() as u32,
                    };
                    prop_assert_eq!(counts, expected);
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_a_fleet() {
        let resets: std::collections::HashSet<_> = (0..20)
            .map(|_| {
                let b = Breaker::new("p", &config());
                for _ in 0..4 {
                    b.record(true, FAST);
                }
                b.reopens_at().unwrap() - Instant::now()
            })
            .collect();
        assert!(resets.len() > 10, "reset timeouts differ between breakers");
    }
}
