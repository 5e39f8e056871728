//! A channel's providers in failover order.
//!
//! Each provider call is bounded by the adapter's own timeout, retried on
//! transient errors with exponential backoff and jitter (a `Retry-After` the
//! provider sent wins when it fits), and guarded by the provider's breaker.
//! A provider that is down, or whose retries ran out, hands the message to
//! the next one with the same `notification_id`. A permanent error stops the
//! chain: the message itself is at fault.

use crate::breaker::Breaker;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tidings_core::config::{BreakerConfig, RetryConfig};
use tidings_providers::{ErrorKind, Outgoing, Provider, ProviderError, Receipt};

pub struct Chain {
    links: Vec<Link>,
    retry: RetryConfig,
}

struct Link {
    provider: Arc<dyn Provider>,
    breaker: Breaker,
}

/// A send that went out.
#[derive(Debug)]
pub struct Sent {
    pub provider: String,
    pub receipt: Receipt,
    pub attempts: u32,
    pub providers_tried: Vec<String>,
}

/// A send that cannot go out.
#[derive(Debug)]
pub struct Failed {
    pub error: ProviderError,
    /// Every provider was tried and none took it (as opposed to a permanent error).
    pub exhausted: bool,
    pub attempts: u32,
    pub providers_tried: Vec<String>,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

impl Chain {
    pub fn new(providers: Vec<Arc<dyn Provider>>, retry: RetryConfig, breaker: &BreakerConfig) -> Self {
        let links = providers
            .into_iter()
            .map(|provider| Link {
                breaker: Breaker::new(provider.name(), breaker.failure_threshold, breaker.reset_timeout),
                provider,
            })
            .collect();
        Chain { links, retry }
    }

    /// Sends `message` through the first provider that takes it. When every
    /// breaker is open it waits for the first to admit a probe rather than
    /// failing the message: an outage holds messages back, it does not burn them.
    pub async fn send(&self, message: &Outgoing) -> Result<Sent, Failed> {
        let attempts = AtomicU32::new(0);
        let mut tried = Vec::new();
        let mut first_failure = None;
        loop {
            let mut last_error = None;
            let mut any_allowed = false;
            for link in &self.links {
                if !link.breaker.allow() {
                    continue;
                }
                any_allowed = true;
                if !tried.contains(&link.provider.name().to_string()) {
                    tried.push(link.provider.name().to_string());
                }
                match self.try_link(link, message, &attempts).await {
                    Ok(receipt) => {
                        return Ok(Sent {
                            provider: link.provider.name().to_string(),
                            receipt,
                            attempts: attempts.load(Ordering::Relaxed),
                            providers_tried: tried,
                        })
                    }
                    Err(e) => {
                        let now = Utc::now();
                        first_failure.get_or_insert(now);
                        tracing::warn!(provider = link.provider.name(), kind = ?e.kind, error = %e, "send failed");
                        if e.kind == ErrorKind::Permanent {
                            return Err(self.failed(e, false, &attempts, tried, first_failure.unwrap_or(now)));
                        }
                        last_error = Some(e);
                    }
                }
            }
            if let Some(e) = last_error {
                let first = first_failure.unwrap_or_else(Utc::now);
                return Err(self.failed(e, true, &attempts, tried, first));
            }
            if !any_allowed {
                let wake = self.links.iter().filter_map(|l| l.breaker.reopens_at()).min();
                let wake = wake.unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_millis(100));
                tracing::warn!("every provider of the channel is open; holding the message");
                tokio::time::sleep_until(wake).await;
            }
        }
    }

    async fn try_link(&self, link: &Link, message: &Outgoing, attempts: &AtomicU32) -> Result<Receipt, ProviderError> {
        let backoff = ExponentialBuilder::new()
            .with_min_delay(self.retry.initial_backoff)
            .with_max_delay(self.retry.max_backoff)
            .with_max_times(self.retry.attempts.saturating_sub(1) as usize)
            .with_jitter();
        let max_wait = self.retry.max_backoff;
        let here = AtomicU32::new(0);
        let call = || async {
            // The first call was admitted by the caller; retries ask the breaker again.
            if here.fetch_add(1, Ordering::Relaxed) > 0 && !link.breaker.allow() {
                return Err(ProviderError::down(format!("{}: breaker open", link.provider.name())));
            }
            attempts.fetch_add(1, Ordering::Relaxed);
            let result = link.provider.send(message).await;
            match &result {
                Ok(_) => link.breaker.success(),
                Err(e) if e.kind != ErrorKind::Permanent => link.breaker.failure(),
                Err(_) => {}
            }
            result
        };
        call.retry(backoff)
            .sleep(tokio::time::sleep)
            // A provider asking for a longer pause than we wait is as good as down for this message.
            .when(|e: &ProviderError| e.kind == ErrorKind::Transient && e.retry_after.is_none_or(|d| d <= max_wait))
            .adjust(|e: &ProviderError, d| e.retry_after.or(d))
            .await
    }

    fn failed(
        &self,
        error: ProviderError,
        exhausted: bool,
        attempts: &AtomicU32,
        tried: Vec<String>,
        first: DateTime<Utc>,
    ) -> Failed {
        Failed {
            error,
            exhausted,
            attempts: attempts.load(Ordering::Relaxed),
            providers_tried: tried,
            first_failure: first,
            last_failure: Utc::now(),
        }
    }
}
