//! A circuit breaker with explicit states.
//!
//! Closed: calls pass; `failure_threshold` consecutive failures open it.
//! Open: calls are refused until a reset timeout (jittered by up to 25 %, so a
//! fleet does not probe in step) has passed. Half-open: one probe passes;
//! its success closes the breaker, its failure opens it again.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct Breaker {
    name: String,
    threshold: u32,
    reset: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(name: &str, threshold: u32, reset: Duration) -> Self {
        Breaker {
            name: name.to_string(),
            threshold: threshold.max(1),
            reset,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> State {
        *self.lock()
    }

    /// Whether a call may go out now. In half-open this admits the one probe.
    pub fn allow(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                tracing::info!(provider = %self.name, "breaker half-open: probing");
                *state = State::HalfOpen { probing: true };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probing: true } => false,
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
        }
    }

    /// When an open breaker admits its next probe.
    pub fn reopens_at(&self) -> Option<Instant> {
        match *self.lock() {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    pub fn success(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { .. }) {
            tracing::info!(provider = %self.name, "breaker closed");
        }
        *state = State::Closed { failures: 0 };
    }

    pub fn failure(&self) {
        let mut state = self.lock();
        let open = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed { failures: failures + 1 };
                false
            }
            State::Open { .. } => false,
            _ => true,
        };
        if open {
            let jitter = self.reset.mul_f64(rand::random::<f64>() * 0.25);
            *state = State::Open { until: Instant::now() + self.reset + jitter };
            tracing::warn!(provider = %self.name, reset_in = ?(self.reset + jitter), "breaker open");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_probes_once_and_closes_on_success() {
        let b = Breaker::new("p", 3, Duration::from_secs(10));
        b.failure();
        b.failure();
        assert!(b.allow(), "two failures stay closed");
        b.failure();
        assert!(!b.allow(), "the third opens it");
        let until = b.reopens_at().unwrap();
        let wait = until - Instant::now();
        assert!(wait >= Duration::from_secs(10) && wait <= Duration::from_millis(12_500), "{wait:?}");
        tokio::time::advance(wait).await;
        assert!(b.allow(), "the probe passes");
        assert!(!b.allow(), "only one probe at a time");
        b.success();
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again() {
        let b = Breaker::new("p", 1, Duration::from_secs(5));
        b.failure();
        tokio::time::advance(Duration::from_secs(7)).await;
        assert!(b.allow());
        b.failure();
        assert!(!b.allow());
        assert!(matches!(b.state(), State::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_count() {
        let b = Breaker::new("p", 2, Duration::from_secs(5));
        b.failure();
        b.success();
        b.failure();
        assert!(b.allow());
    }
}
