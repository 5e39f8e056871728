//! How much a provider may be called: a fleet-wide rate and a per-process
//! cap on calls under way (`[limits.<provider>]`).
//!
//! The rate is a GCRA budget in the store, shared by every worker process.
//! A process leases calls in small batches (a twentieth of a second's worth,
//! within the burst) and hands them out itself, so the common case costs no
//! round trip; what a lease leaves unused is dropped after a short while,
//! never saved up. Critical messages are served first: a lease goes to the
//! critical messages waiting before any other, and a critical message may
//! take a leased call while others wait. A message waiting for a call is
//! neither failed nor retried, and the wait counts nowhere: not in the
//! breaker's slow calls, not against the provider's timeout.
//!
//! A 429 with `Retry-After` halves the provider's fleet-wide rate for that
//! long.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings_core::config::ProviderLimits;
use tidings_core::persist::until_ok;
use tidings_core::store::SharedStore;
use tidings_core::Priority;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long leased calls stay usable: unused ones are dropped then, so a
/// process never holds back part of the fleet's budget for long.
const LEASE_LIFE: Duration = Duration::from_millis(100);

/// One provider's limits in this process.
pub struct Limit {
    rate: Option<Arc<Rate>>,
    concurrency: Option<Arc<Semaphore>>,
}

/// What lets one call go: held for the call's length.
pub struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Limit {
    /// No limit.
    pub fn none() -> Self {
        Limit { rate: None, concurrency: None }
    }

    pub fn new(provider: &str, limits: &ProviderLimits, store: Option<SharedStore>) -> Self {
        let rate = limits.per_second.zip(store).map(|(per_second, store)| {
            let burst = limits.burst();
            let lease = ((per_second / 20.0).ceil() as u32).clamp(1, burst);
            Arc::new(Rate {
                provider: provider.to_string(),
                per_second,
                burst,
                lease,
                store,
                pool: Mutex::new(Pool::default()),
            })
        });
        Limit { rate, concurrency: limits.max_concurrent.map(|n| Arc::new(Semaphore::new(n))) }
    }

    /// Waits until a call may go; `None` if `stop` fired first.
    pub async fn admit(&self, priority: Priority, stop: &CancellationToken) -> Option<Admitted> {
        if let Some(rate) = &self.rate {
            if !rate.take(priority, stop).await {
                return None;
            }
        }
        let slot = match &self.concurrency {
            None => None,
            Some(slots) => tokio::select! {
                _ = stop.cancelled() => return None,
                slot = slots.clone().acquire_owned() => Some(slot.expect("limit semaphores are never closed")),
            },
        };
        Some(Admitted { _slot: slot })
    }

    /// The provider asked to be called less for `period` (429 with `Retry-After`).
    pub async fn slow_down(&self, period: Duration) {
        if let Some(rate) = &self.rate {
            if let Err(e) = rate.store.slow_down(&rate.provider, period).await {
                tracing::warn!(provider = %rate.provider, error = %e, "could not slow the fleet down");
            }
        }
    }
}

struct Rate {
    provider: String,
    per_second: f64,
    burst: u32,
    /// Calls asked for in one lease.
    lease: u32,
    store: SharedStore,
    pool: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    /// Leased calls not handed out yet, usable until `expires`.
    calls: u32,
    expires: Option<Instant>,
    critical: VecDeque<oneshot::Sender<()>>,
    others: VecDeque<oneshot::Sender<()>>,
    /// A task is leasing for the waiters.
    leasing: bool,
}

impl Pool {
    fn usable(&mut self) -> u32 {
        if self.expires.is_none_or(|at| Instant::now() >= at) {
            self.calls = 0;
        }
        self.calls
    }

    /// Hands leased calls to waiters, critical ones first; a waiter that
    /// gave up passes its call on.
    fn hand_out(&mut self) {
        while self.usable() > 0 {
            let Some(waiter) = self.critical.pop_front().or_else(|| self.others.pop_front()) else { return };
            if waiter.send(()).is_ok() {
                self.calls -= 1;
            }
        }
    }

    fn waiting(&self) -> usize {
        self.critical.len() + self.others.len()
    }
}

impl Rate {
    async fn take(self: &Arc<Self>, priority: Priority, stop: &CancellationToken) -> bool {
        let turn = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            // Leased calls are handed to waiters as they come: any left means nobody waits.
            if pool.usable() > 0 {
                pool.calls -= 1;
                return true;
            }
            let (tx, rx) = oneshot::channel();
            if priority == Priority::Critical {
                pool.critical.push_back(tx);
            } else {
                pool.others.push_back(tx);
            }
            pool.hand_out();
            if !pool.leasing && pool.waiting() > 0 {
                pool.leasing = true;
                tokio::spawn(self.clone().lease());
            }
            rx
        };
        tokio::select! {
            _ = stop.cancelled() => false,
            given = turn => given.is_ok(),
        }
    }

    /// Leases calls while anyone waits for one.
    async fn lease(self: Arc<Self>) {
        loop {
            let want = {
                let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                pool.hand_out();
                // Those who gave up are no longer waiting.
                pool.critical.retain(|w| !w.is_closed());
                pool.others.retain(|w| !w.is_closed());
                if pool.waiting() == 0 {
                    pool.leasing = false;
                    return;
                }
                (pool.waiting() as u32).max(self.lease).min(self.burst)
            };
            let (granted, wait) = until_ok("lease provider calls", || {
                self.store.lease_calls(&self.provider, self.per_second, self.burst, want)
            })
            .await;
            if granted == 0 {
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                continue;
            }
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.calls = pool.usable() + granted;
            pool.expires = Some(Instant::now() + LEASE_LIFE);
            pool.hand_out();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::store::MemoryStore;

    fn limits(per_second: f64, burst: u32) -> ProviderLimits {
        ProviderLimits { per_second: Some(per_second), burst: Some(burst), max_concurrent: None }
    }

    /// However many ask at once, no more calls go than the rate and the
    /// burst allow over the time they took.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_calls_than_the_rate_allows() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let limit = Arc::new(Limit::new("p", &limits(200.0, 10), Some(store)));
        let started = std::time::Instant::now();
        let never = CancellationToken::new();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..120 {
            let (limit, never) = (limit.clone(), never.clone());
            calls.spawn(async move { limit.admit(Priority::Normal, &never).await.is_some() });
        }
        let admitted = calls.join_all().await.into_iter().filter(|a| *a).count();
        let took = started.elapsed().as_secs_f64();
        assert_eq!(admitted, 120);
        // 10 at once, then one per 5 ms: 120 need at least 0.55 s.
        assert!(took >= 0.5, "120 calls went in {took:.3} s");
    }

    /// While others wait for calls, a critical message is served first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn critical_messages_are_served_before_others_waiting() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let limit = Arc::new(Limit::new("p", &limits(20.0, 1), Some(store)));
        let never = CancellationToken::new();
        // The burst goes at once; then one call each 50 ms.
        assert!(limit.admit(Priority::Bulk, &never).await.is_some());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = tokio::task::JoinSet::new();
        for i in 0..5 {
            let (limit, never, order) = (limit.clone(), never.clone(), order.clone());
            waiting.spawn(async move {
                limit.admit(Priority::Bulk, &never).await;
                order.lock().unwrap().push(format!("bulk-{i}"));
            });
        }
        // The bulk ones are queued first; then a critical one arrives.
        let rate = limit.rate.clone().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rate.pool.lock().unwrap().waiting() < 5 {
            assert!(std::time::Instant::now() < deadline, "the bulk messages never queued");
            tokio::task::yield_now().await;
        }
        let (l, n, o) = (limit.clone(), never.clone(), order.clone());
        waiting.spawn(async move {
            l.admit(Priority::Critical, &n).await;
            o.lock().unwrap().push("critical".into());
        });
        waiting.join_all().await;
        let order = order.lock().unwrap().clone();
        let at = order.iter().position(|o| o == "critical").unwrap();
        assert!(at <= 1, "the critical message went at place {at}: {order:?}");
    }

    /// A message waiting for a call gives up when told to; its call goes to the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_that_stops_takes_nothing() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let limit = Limit::new("p", &limits(5.0, 1), Some(store));
        let never = CancellationToken::new();
        assert!(limit.admit(Priority::Normal, &never).await.is_some());
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(limit.admit(Priority::Normal, &stop).await.is_none());
        assert!(limit.admit(Priority::Normal, &never).await.is_some(), "the next one still gets a call");
    }

    /// At most `max_concurrent` calls are under way at once.
    #[tokio::test]
    async fn the_concurrency_cap_holds() {
        let limits = ProviderLimits { per_second: None, burst: None, max_concurrent: Some(2) };
        let limit = Limit::new("p", &limits, None);
        let never = CancellationToken::new();
        let a = limit.admit(Priority::Normal, &never).await.unwrap();
        let _b = limit.admit(Priority::Normal, &never).await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), limit.admit(Priority::Normal, &never)).await;
        assert!(third.is_err(), "a third waits");
        drop(a);
        assert!(limit.admit(Priority::Normal, &never).await.is_some());
    }
}
