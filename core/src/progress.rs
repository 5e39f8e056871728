//! Counters each role advances as work becomes durable. `tidings dev` reads
//! them to show progress and to tell when the fleet is idle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Progress {
    /// Input records intake has finished (routed, suppressed or dead-lettered).
    pub events: AtomicU64,
    /// Notifications intake wrote to channel topics.
    pub published: AtomicU64,
    /// Deferred notifications the scheduler put back on channel topics.
    pub released: AtomicU64,
    /// Channel-topic records workers have finished (any outcome, duplicates included).
    pub finished: AtomicU64,
    /// Partitions taken away from workers' consumers: by a rebalance, or
    /// because a consumer went unpolled past `max.poll.interval.ms`.
    pub revoked: AtomicU64,
    /// Each provider's breaker: `closed`, `half-open` or `open`.
    breakers: Mutex<BTreeMap<String, &'static str>>,
}

impl Progress {
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Notes that `provider`'s breaker is now `state`.
    pub fn breaker(&self, provider: &str, state: &'static str) {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner()).insert(provider.to_string(), state);
    }

    /// Every breaker's state, by provider.
    pub fn breakers(&self) -> BTreeMap<String, &'static str> {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
