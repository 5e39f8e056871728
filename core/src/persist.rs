//! Retrying infrastructure calls (Redis, Kafka) until they succeed: an
//! outage holds a message back, it never skips or drops it.

use crate::backoff::Backoff;
use std::future::Future;
use std::time::Duration;

/// Calls `call` until it succeeds, backing off (full jitter, ceilings from
/// 50 ms to 5 s) between tries and logging each failure as `what`.
pub async fn until_ok<T, E, F, Fut>(what: &str, mut call: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut failures = 0u32;
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(backoff.delay(failures)).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn retries_until_the_call_succeeds() {
        let mut calls = 0;
        let v: u32 = super::until_ok("test", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err("down")
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(v, 4);
    }
}
