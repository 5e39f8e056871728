//! Counters each role advances as work becomes durable. `tidings dev` reads
//! them to show progress and to tell when the fleet is idle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}
