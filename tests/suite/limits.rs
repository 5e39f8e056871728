//! A provider's rate holds across processes: limits that share one
//! `redis-server` through their own connections admit, together, no more
//! than the rate and the burst allow; a 429's `Retry-After` halves it.
//! Asserted as the least time a number of calls can take: a slow machine
//! only makes it longer.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::embedded::RedisServer;
use tidings_core::config::ProviderLimits;
use tidings_core::store::{RedisStore, SharedStore};
use tidings_core::Priority;
use tidings_workers::limit::Limit;
use tokio_util::sync::CancellationToken;

/// How long `calls` admissions take, spread over `limits` by many callers at once.
async fn time_to_admit(limits: &[Arc<Limit>], calls: usize) -> f64 {
    let never = CancellationToken::new();
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(calls));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for limit in limits {
        for _ in 0..50 {
            let (limit, never, left) = (limit.clone(), never.clone(), left.clone());
            callers.spawn(async move {
                // Take a place among the calls still to make, then wait for the limit.
                while left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
                    assert!(limit.admit(Priority::Bulk, &never).await.is_some());
                }
            });
        }
    }
    callers.join_all().await;
    started.elapsed().as_secs_f64()
}

async fn two_processes(server: &RedisServer, per_second: f64, burst: u32) -> Vec<Arc<Limit>> {
    two_processes_of(server, "sendgrid", per_second, burst).await
}

/// Two limits for `provider`, each with a connection of its own, as two worker processes have.
async fn two_processes_of(server: &RedisServer, provider: &str, per_second: f64, burst: u32) -> Vec<Arc<Limit>> {
    let limits = ProviderLimits { per_second: Some(per_second), burst: Some(burst), max_concurrent: None };
    let mut out = Vec::new();
    for _ in 0..2 {
        let store: SharedStore = Arc::new(RedisStore::connect(&server.url(), "t").await.unwrap());
        out.push(Arc::new(Limit::new(provider, &limits, Some(store))));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_together_stay_within_the_rate_and_a_429_halves_it() {
    let server = RedisServer::start().unwrap();
    // The burst at once, then 200 a second; a lease (10) per process may come just before the
    // end, so 330 calls take at least (330 - 10 - 2 × 10) / 200 = 1.5 s, however fast the callers.
    let limits = two_processes(&server, 200.0, 10).await;
    let took = time_to_admit(&limits, 330).await;
    assert!(took >= 1.5, "330 calls went in {took:.2} s: more than 200 a second");

    // Another provider, slowed for 10 s by one process: half the rate for both,
    // so 180 calls take at least (180 - 10 - 2 × 10) / 100 = 1.5 s.
    let slowed = two_processes_of(&server, "twilio", 200.0, 10).await;
    slowed[0].slow_down(Duration::from_secs(10)).await;
    let took = time_to_admit(&slowed, 180).await;
    assert!(took >= 1.5, "slowed: 180 calls went in {took:.2} s: more than 100 a second");
}
