//! A circuit breaker per provider, with explicit states.
//!
//! - **Closed**: calls pass. Every outcome is kept for a sliding `window`;
//!   once it holds `min_calls`, a share of failures at or above
//!   `failure_rate`, or of calls slower than `slow_call` at or above
//!   `slow_call_rate`, opens the breaker.
//! - **Open**: calls are refused until the reset timeout has passed. The
//!   timeout is jittered (up to +25 %) so a fleet does not probe in step.
//! - **Half-open**: up to `half_open_probes` calls pass; all of them
//!   succeeding closes the breaker, any failure opens it again.
//!
//! Every transition is logged and exported as the gauge
//! `tidings_breaker_state{provider}` (0 closed, 1 half-open, 2 open).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tidings_core::config::BreakerConfig;
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
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// (when, failed, slow) of recent calls while closed.
    calls: VecDeque<(Instant, bool, bool)>,
}

impl Breaker {
    pub fn new(name: &str, config: &BreakerConfig) -> Self {
        let breaker = Breaker {
            name: name.to_string(),
            config: config.clone(),
            inner: Mutex::new(Inner { state: State::Closed, calls: VecDeque::new() }),
        };
        breaker.export(State::Closed);
        breaker
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Whether a call may go out now; in half-open this takes a probe slot.
    pub fn allow(&self) -> bool {
        let mut inner = self.lock();
        match inner.state {
            State::Closed => true,
            State::Open { until } if Instant::now() >= until => {
                tracing::info!(provider = %self.name, "breaker half-open: probing");
                self.set(&mut inner, State::HalfOpen { admitted: 1, succeeded: 0 });
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { admitted, succeeded } if admitted < self.config.half_open_probes.max(1) => {
                inner.state = State::HalfOpen { admitted: admitted + 1, succeeded };
                true
            }
            State::HalfOpen { .. } => false,
        }
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
                let now = Instant::now();
                inner.calls.push_back((now, failed, slow));
                while inner.calls.front().is_some_and(|(t, ..)| now.duration_since(*t) > self.config.window) {
                    inner.calls.pop_front();
                }
                let n = inner.calls.len();
                if n < self.config.min_calls.max(1) as usize {
                    return None;
                }
                let failures = inner.calls.iter().filter(|c| c.1).count() as f64 / n as f64;
                let slows = inner.calls.iter().filter(|c| c.2).count() as f64 / n as f64;
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
        let value = match state {
            State::Closed => 0.0,
            State::HalfOpen { .. } => 1.0,
            State::Open { .. } => 2.0,
        };
        metrics::gauge!("tidings_breaker_state", "provider" => self.name.clone()).set(value);
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
        assert!(!b.allow());
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
        assert!(!b.allow(), "not before the reset timeout");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.allow(), "first probe");
        assert!(b.allow(), "second probe");
        assert!(!b.allow(), "only two probes at a time");
        assert_eq!(b.record(false, FAST), None);
        assert_eq!(b.record(false, FAST), Some(Transition::Closed));
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again() {
        let b = Breaker::new("p", &config());
        for _ in 0..4 {
            b.record(true, FAST);
        }
        tokio::time::advance(Duration::from_secs(13)).await;
        assert!(b.allow());
        assert!(matches!(b.record(true, FAST), Some(Transition::Opened { .. })));
        assert!(!b.allow());
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
