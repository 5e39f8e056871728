//! The wall clock every role reads. In production it is the system clock;
//! `tidings dev --now` starts it at a chosen instant and lets it run on, so that
//! quiet hours can be shown at any time of day; tests can also move it forward.

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct Clock {
    origin: Option<(DateTime<Utc>, Instant)>,
    /// Milliseconds added by [`Clock::advance`], shared by every clone.
    skew_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock that reads `start` now and advances in real time from there.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Clock { origin: Some((start, Instant::now())), ..Clock::default() }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let base = match self.origin {
            None => Utc::now(),
            Some((start, at)) => start + chrono::Duration::from_std(at.elapsed()).unwrap_or_default(),
        };
        base + chrono::Duration::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock and every clone of it forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        self.skew_ms.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_where_told_and_clones_advance_together() {
        let start: DateTime<Utc> = "2026-11-26T22:00:00Z".parse().unwrap();
        let clock = Clock::starting_at(start);
        let other = clock.clone();
        assert!(clock.now() >= start && clock.now() < start + chrono::Duration::seconds(5));
        clock.advance(std::time::Duration::from_secs(8 * 3600));
        assert!(other.now() >= start + chrono::Duration::hours(8));
    }
}
