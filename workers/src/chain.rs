//! A channel's providers in failover order.
//!
//! Each provider call is bounded by the adapter's own timeout, retried on
//! transient errors with exponential backoff and jitter (a `Retry-After` the
//! provider sent wins when it fits), and guarded by the provider's breaker.
//! A provider that is down, or whose retries ran out, hands the message to
//! the next one with the same `notification_id`; an open breaker is skipped
//! without a call. A permanent error stops the chain: the message itself is
//! at fault. When every provider fails a message, it is held and tried again
//! while any breaker is open (an outage burns nothing into the dead-letter
//! topic); with every breaker closed it is dead-lettered after
//! `retry.passes` passes.
//!
//! A breaker that opens here is announced to the fleet through Redis
//! ([`Chain::sync_fleet`]), so other workers stop sending there within a
//! second; their own breakers still decide when to probe.

use crate::breaker::{Breaker, State, Transition};
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidings_core::config::{BreakerConfig, RetryConfig};
use tidings_core::store::SharedStore;
use tidings_providers::{ErrorKind, Outgoing, Provider, ProviderError, Receipt};
use tokio::time::Instant;

pub struct Chain {
    links: Vec<Link>,
    retry: RetryConfig,
    /// Where breaker openings are shared with the fleet.
    fleet: Option<SharedStore>,
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
    /// Every provider was tried or is open (as opposed to a permanent error).
    pub exhausted: bool,
    pub attempts: u32,
    pub providers_tried: Vec<String>,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

/// What to do when every provider's breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDown {
    /// Wait for a probe to be due: the message is held, not burnt.
    Hold,
    /// Give up at once (a critical message that can fall back to another channel).
    GiveUp,
}

impl Chain {
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        retry: RetryConfig,
        breaker: &BreakerConfig,
        fleet: Option<SharedStore>,
    ) -> Self {
        let links = providers
            .into_iter()
            .map(|provider| Link { breaker: Breaker::new(provider.name(), breaker), provider })
            .collect();
        Chain { links, retry, fleet }
    }

    /// Every provider's breaker is open: the channel cannot send now.
    pub fn all_open(&self) -> bool {
        self.links.iter().all(|l| l.breaker.is_open())
    }

    /// Sends `message` through the first provider that takes it.
    pub async fn send(&self, message: &Outgoing, when_down: WhenDown) -> Result<Sent, Failed> {
        let attempts = AtomicU32::new(0);
        let mut tried = Vec::new();
        let mut first_failure = None;
        let mut passes = 0u32;
        loop {
            let mut last_error = None;
            let mut any_allowed = false;
            for link in self.links.iter().filter(|l| l.provider.accepts(&message.content)) {
                if !link.breaker.allow() {
                    continue;
                }
                any_allowed = true;
                if !tried.iter().any(|t| t == link.provider.name()) {
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
                // Every provider failed this message. While a breaker is open
                // that is an outage: hold the message and go round again. With
                // every breaker closed the providers are up and it is this
                // message that fails: dead-letter it after a few passes.
                passes += 1;
                let outage = self.links.iter().any(|l| l.breaker.state() != State::Closed);
                if when_down == WhenDown::GiveUp || (!outage && passes >= self.retry.passes.max(1)) {
                    let first = first_failure.unwrap_or_else(Utc::now);
                    return Err(self.failed(e, true, &attempts, tried, first));
                }
                let pause = self.retry.initial_backoff.saturating_mul(1 << passes.min(16)).min(self.retry.max_backoff);
                tokio::time::sleep(pause).await;
                continue;
            }
            if !any_allowed {
                if when_down == WhenDown::GiveUp {
                    let e = ProviderError::down("every provider of the channel is open");
                    return Err(self.failed(e, true, &attempts, tried, first_failure.unwrap_or_else(Utc::now)));
                }
                let wake = self.links.iter().filter_map(|l| l.breaker.reopens_at()).min();
                let wake = wake.unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
                tracing::debug!("every provider of the channel is open; holding the message");
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
            let started = Instant::now();
            let result = link.provider.send(message).await;
            // A permanent error is the message's fault, an endpoint's error the recipient's:
            // neither is the provider's.
            let failed = matches!(&result, Err(e) if e.kind != ErrorKind::Permanent && !e.recipient_fault);
            let outcome = match &result {
                Ok(_) => "sent",
                Err(e) if e.kind == ErrorKind::Transient => "transient",
                Err(e) if e.kind == ErrorKind::ProviderDown => "down",
                Err(_) => "permanent",
            };
            metrics::histogram!("tidings_provider_call_seconds", "provider" => link.provider.name().to_string(), "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
            if let Some(Transition::Opened { until }) = link.breaker.record(failed, started.elapsed()) {
                self.announce(link.provider.name(), until).await;
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

    /// Tells the fleet that `provider`'s breaker opened until `until`.
    async fn announce(&self, provider: &str, until: Instant) {
        if let Some(store) = &self.fleet {
            let open_for = until.saturating_duration_since(Instant::now());
            if let Err(e) = store.open_breaker(provider, open_for).await {
                tracing::warn!(provider, error = %e, "could not share the breaker state with the fleet");
            }
        }
    }

    /// Opens the breakers that another worker of the fleet opened. Called
    /// about every half second by the worker.
    pub async fn sync_fleet(&self) {
        let Some(store) = &self.fleet else { return };
        let names: Vec<String> = self.links.iter().map(|l| l.provider.name().to_string()).collect();
        match store.open_breakers(&names).await {
            Ok(open) => {
                for (link, open) in self.links.iter().zip(open) {
                    if open {
                        link.breaker.open_from_fleet();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read the fleet's breakers"),
        }
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
