//! A provider's rate holds across processes: limits that share one
//! `redis-server` through their own connections admit, together, no more
//! than the rate and the burst allow; a 429's `Retry-After` halves it.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::embedded::RedisServer;
use tidings_core::config::ProviderLimits;
use tidings_core::store::{RedisStore, SharedStore};
use tidings_core::Priority;
use tidings_workers::limit::Limit;
use tokio_util::sync::CancellationToken;

/// Admits as many calls as it can through `limits` for `period`; how many went.
async fn admitted_within(limits: &[Arc<Limit>], period: Duration) -> usize {
    let stop = CancellationToken::new();
    let mut callers = tokio::task::JoinSet::new();
    for limit in limits {
        for _ in 0..50 {
            let (limit, stop) = (limit.clone(), stop.clone());
            callers.spawn(async move {
                let mut n = 0;
                while limit.admit(Priority::Bulk, &stop).await.is_some() {
                    n += 1;
                }
                n
            });
        }
    }
    tokio::time::sleep(period).await;
    stop.cancel();
    callers.join_all().await.into_iter().sum()
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
    let limits = two_processes(&server, 200.0, 10).await;
    let started = Instant::now();
    let went = admitted_within(&limits, Duration::from_secs(2)).await;
    let seconds = started.elapsed().as_secs_f64();
    // The burst, then 200 a second; a lease may be handed out just as the period ends.
    let most = (200.0 * seconds) as usize + 10 + 2 * 10;
    assert!(went <= most, "{went} calls in {seconds:.2} s, at most {most} allowed");
    assert!(went > 0);

    // Another provider, slowed for 10 s by one process: half the rate for both.
    let slowed = two_processes_of(&server, "twilio", 200.0, 10).await;
    slowed[0].slow_down(Duration::from_secs(10)).await;
    let started = Instant::now();
    let went = admitted_within(&slowed, Duration::from_secs(1)).await;
    let seconds = started.elapsed().as_secs_f64();
    let most = (100.0 * seconds) as usize + 10 + 2 * 10;
    assert!(went <= most, "slowed: {went} calls in {seconds:.2} s, at most {most} allowed");
}
