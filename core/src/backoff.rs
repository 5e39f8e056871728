//! The one backoff policy every retry loop uses: exponential, capped, with
//! full jitter (each wait is drawn uniformly between zero and the capped
//! exponential ceiling), so a fleet that failed together does not retry
//! together.
//!
//! Written here rather than taken from `backon`: its jitter adds up to one
//! more delay on top of the exponential one instead of drawing below it, and
//! the provider chain needs the ceiling itself to state its time bound.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub initial: Duration,
    /// No ceiling is higher.
    pub max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial) }
    }

    /// The ceiling of wait number `n` (0 for the first): `initial · 2ⁿ`, at most `max`.
    pub fn ceiling(&self, n: u32) -> Duration {
        self.initial.saturating_mul(1u32 << n.min(20)).min(self.max)
    }

    /// Wait number `n`, drawn uniformly in `[0, ceiling(n)]`.
    pub fn delay(&self, n: u32) -> Duration {
        self.ceiling(n).mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let c: Vec<u64> = (0..6).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(c, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1), "no overflow however many tries");
    }

    #[test]
    fn waits_are_drawn_below_the_ceiling_and_spread() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let waits: Vec<Duration> = (0..200).map(|_| b.delay(3)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(800)));
        let low = waits.iter().filter(|w| **w < Duration::from_millis(400)).count();
        assert!((40..160).contains(&low), "full jitter spreads waits over the range ({low} of 200 low)");
    }
}
