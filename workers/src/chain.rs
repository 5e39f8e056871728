//! A channel's providers in failover order: the loop that walks them, doing
//! what [`Policy`] decides.
//!
//! Each call is bounded by the adapter's own timeout and guarded by the
//! provider's breaker; an open breaker is skipped without a call. A provider
//! that is down, or whose retries ran out, hands the message to the next one
//! with the same `notification_id`. An ambiguous answer pins the message to
//! the provider that gave it: it is never sent through another, and a
//! permanent error there ends it unconfirmed (the first request may have
//! been taken). A send abandoned while pinned says so, and the caller's next
//! send of the message starts pinned ([`Chain::send`]'s `pin`). When no
//! provider could be called (every breaker open), the message is held until
//! a breaker probes: an outage burns nothing into the dead-letter topic.
//!
//! The caller's `stop` token (its claim was lost, or its partition moved) is
//! obeyed before every call and during every wait, never during a call: a
//! call in progress may already have been accepted.
//!
//! A breaker that opens here is announced to the fleet through Redis
//! ([`Chain::sync_fleet`]), so other workers stop sending there within a
//! second; their own breakers still decide when to probe.
//!
//! Before each call the provider's limits ([`Limit`]) admit it: waiting there
//! is neither an attempt nor part of the call's time, and a 429 with
//! `Retry-After` slows the fleet's rate for the provider down for that long.

use crate::breaker::{Admission, Breaker, State, Transition};
use crate::limit::Limit;
use crate::retry::{AfterCall, AfterPass, Ending, Policy};
use chrono::{DateTime, Utc};
use metrics::Histogram;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::config::{BreakerConfig, ProviderLimits};
use tidings_core::progress::Progress;
use tidings_core::store::SharedStore;
use tidings_core::Clock;
use tidings_providers::{ErrorKind, Outgoing, Provider, ProviderError, Receipt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub struct Chain {
    links: Vec<Link>,
    /// Where breaker openings are shared with the fleet.
    fleet: Option<SharedStore>,
    /// What failure times are read from.
    clock: Clock,
}

struct Link {
    provider: Arc<dyn Provider>,
    breaker: Breaker,
    limit: Limit,
    /// `tidings_provider_call_seconds` of the provider, by outcome ([`CALL_OUTCOMES`]).
    calls: [Histogram; 5],
    /// `tidings_retries_total` of the provider: calls made again after a failure.
    retries: metrics::Counter,
}

/// How a call ended, as the call histogram's `outcome` label says it.
const CALL_OUTCOMES: [&str; 5] = ["sent", "ambiguous", "transient", "down", "permanent"];

/// How a send through the chain ended.
#[derive(Debug)]
pub enum Outcome {
    Sent(Sent),
    Failed(Failed),
    /// The caller's `stop` fired before the message went out. `pinned`:
    /// the provider an ambiguous answer tied the message to, if one did.
    Abandoned {
        pinned: Option<String>,
    },
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
    pub ending: Ending,
    pub attempts: u32,
    pub providers_tried: Vec<String>,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

/// What to do when no provider can be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDown {
    /// Wait for a probe to be due: the message is held, not burnt.
    Hold,
    /// Give up at once (a critical message that can fall back to another channel).
    GiveUp,
}

/// What one message's walk through the chain has done so far.
#[derive(Default)]
struct Walk {
    attempts: u32,
    tried: Vec<String>,
    first_failure: Option<DateTime<Utc>>,
    /// The provider an ambiguous answer tied the message to.
    pinned: Option<String>,
}

impl Walk {
    /// Stopped: the pin of the walk, or the one it was given that is another
    /// part's (a push to several platforms), which the next send needs too.
    fn abandoned(self, pin: Option<&str>) -> Outcome {
        Outcome::Abandoned { pinned: self.pinned.or_else(|| pin.map(str::to_string)) }
    }

    fn failed(self, error: ProviderError, mut ending: Ending, clock: &Clock) -> Outcome {
        // Refused after an ambiguous answer: the first request may have been
        // taken, unless the refusal says the recipient can take nothing.
        if self.pinned.is_some() && ending == Ending::Permanent && !error.invalid_recipient {
            ending = Ending::Unconfirmed;
        }
        let now = clock.now();
        Outcome::Failed(Failed {
            error,
            ending,
            attempts: self.attempts,
            providers_tried: self.tried,
            first_failure: self.first_failure.unwrap_or(now),
            last_failure: now,
        })
    }
}

/// How the calls to one provider in one pass ended, short of a receipt.
enum Left {
    Next(ProviderError),
    Stop(Ending, ProviderError),
    Abandoned,
}

impl Chain {
    pub fn new(providers: Vec<Arc<dyn Provider>>, breaker: &BreakerConfig, fleet: Option<SharedStore>) -> Self {
        let links = providers
            .into_iter()
            .map(|provider| {
                // A recipient's own endpoint being slow says nothing of the provider:
                // such a provider's breaker counts no call as slow.
                let mut config = breaker.clone();
                if provider.calls_recipients() {
                    config.slow_call = Duration::MAX;
                }
                // Registered once: a registration per call costs a lookup and an allocation.
                let calls = CALL_OUTCOMES.map(|outcome| {
                    metrics::histogram!("tidings_provider_call_seconds", "provider" => provider.name().to_string(), "outcome" => outcome)
                });
                let retries = metrics::counter!("tidings_retries_total", "provider" => provider.name().to_string());
                Link { breaker: Breaker::new(provider.name(), &config), provider, limit: Limit::none(), calls, retries }
            })
            .collect();
        Chain { links, fleet, clock: Clock::system() }
    }

    /// Reports each breaker's state to `progress`.
    pub fn reporting(mut self, progress: Arc<Progress>) -> Self {
        for link in &mut self.links {
            link.breaker.report_to(progress.clone());
        }
        self
    }

    /// Reads failure times from `clock`.
    pub fn clocked(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Applies the providers' limits (`[limits]`); the rates are shared
    /// through the fleet's store.
    pub fn limited(mut self, limits: &BTreeMap<String, ProviderLimits>) -> Self {
        for link in &mut self.links {
            if let Some(l) = limits.get(link.provider.name()) {
                link.limit = Limit::new(link.provider.name(), l, self.fleet.clone());
            }
        }
        self
    }

    /// Every provider's breaker is open: the channel cannot send now.
    pub fn all_open(&self) -> bool {
        self.links.iter().all(|l| l.breaker.is_open())
    }

    /// Sends `message` through the first provider that takes it, or only
    /// through provider `pin` when an earlier send of it was pinned there
    /// (a pin naming no provider of this chain that takes the message, as
    /// after a configuration change, is ignored).
    pub async fn send(
        &self,
        message: &Outgoing,
        policy: &Policy,
        when_down: WhenDown,
        pin: Option<&str>,
        stop: &CancellationToken,
    ) -> Outcome {
        let links: Vec<&Link> = self.links.iter().filter(|l| l.provider.accepts(&message.content)).collect();
        let mut walk = Walk::default();
        if links.is_empty() {
            let e = ProviderError::permanent(format!(
                "no provider of the channel takes this message ({})",
                message.content.kind()
            ));
            return walk.failed(e, Ending::Permanent, &self.clock);
        }
        if let Some(pin) = pin {
            if links.iter().any(|l| l.provider.name() == pin) {
                walk.pinned = Some(pin.to_string());
            } else if !self.links.iter().any(|l| l.provider.name() == pin) {
                // (One that takes other messages is another part's pin: a push to several platforms.)
                tracing::warn!(provider = pin, "pinned to a provider the channel no longer has; the pin is ignored");
            }
        }
        let mut passes = 0u32;
        // Not the provider the message is pinned to, if it is.
        let elsewhere = |walk: &Walk, link: &Link| walk.pinned.as_deref().is_some_and(|p| p != link.provider.name());
        loop {
            let mut counted = false;
            let mut last_error = None;
            for link in &links {
                if elsewhere(&walk, link) {
                    continue;
                }
                let Some(admission) = link.breaker.allow() else { continue };
                counted |= link.breaker.state() == State::Closed;
                if !walk.tried.iter().any(|t| t == link.provider.name()) {
                    walk.tried.push(link.provider.name().to_string());
                }
                match self.on_link(link, admission, message, policy, stop, &mut walk).await {
                    Ok(receipt) => {
                        return Outcome::Sent(Sent {
                            provider: link.provider.name().to_string(),
                            receipt,
                            attempts: walk.attempts,
                            providers_tried: walk.tried,
                        })
                    }
                    Err(Left::Abandoned) => return walk.abandoned(pin),
                    Err(Left::Stop(ending, e)) => return walk.failed(e, ending, &self.clock),
                    Err(Left::Next(e)) => last_error = Some(e),
                }
            }
            if counted {
                passes += 1;
            }
            let wait = match policy.after_pass(passes, counted, when_down == WhenDown::GiveUp, walk.pinned.is_some()) {
                AfterPass::Again(wait) => wait,
                AfterPass::Stop(ending) => {
                    let e = last_error.unwrap_or_else(|| ProviderError::down("every provider of the channel is open"));
                    return walk.failed(e, ending, &self.clock);
                }
                AfterPass::Hold => {
                    let open = links.iter().filter(|l| !elsewhere(&walk, l));
                    let wake = open.filter_map(|l| l.breaker.reopens_at()).min();
                    tracing::debug!("no provider of the channel can be called; holding the message");
                    wake.unwrap_or_else(|| Instant::now() + Duration::from_millis(100))
                        .saturating_duration_since(Instant::now())
                }
            };
            if !pause(wait, stop).await {
                return walk.abandoned(pin);
            }
        }
    }

    /// Calls one provider until it takes the message or the policy moves on.
    /// The first call was admitted by the caller; retries ask the breaker
    /// again. An admission not spent on a call (told to stop first) gives
    /// its probe slot back as it is dropped.
    async fn on_link<'l>(
        &self,
        link: &'l Link,
        first: Admission<'l>,
        message: &Outgoing,
        policy: &Policy,
        stop: &CancellationToken,
        walk: &mut Walk,
    ) -> Result<Receipt, Left> {
        let name = link.provider.name();
        let mut calls = 0u32;
        let mut next = Some(first);
        loop {
            if stop.is_cancelled() {
                return Err(Left::Abandoned);
            }
            let Some(admission) = next.take().or_else(|| link.breaker.allow()) else {
                return Err(Left::Next(ProviderError::down(format!("{name}: breaker open"))));
            };
            // Waiting for the provider's limits is no attempt, and no call to time.
            let Some(admitted) = link.limit.admit(message.priority, stop).await else {
                return Err(Left::Abandoned);
            };
            calls += 1;
            walk.attempts += 1;
            let result = self.call(link, admission, message).await;
            drop(admitted);
            let error = match result {
                Ok(receipt) => return Ok(receipt),
                Err(e) => e,
            };
            if let Some(period) = error.retry_after {
                link.limit.slow_down(period).await;
            }
            walk.first_failure.get_or_insert_with(|| self.clock.now());
            tracing::warn!(provider = name, kind = ?error.kind, ambiguous = error.ambiguous, error = %error, "send failed");
            if error.ambiguous && walk.pinned.is_none() {
                tracing::warn!(
                    provider = name,
                    "no answer after the request was written: retried on this provider only"
                );
                walk.pinned = Some(name.to_string());
            }
            match policy.after_call(calls, &error) {
                AfterCall::Retry(wait) => {
                    link.retries.increment(1);
                    if !pause(wait, stop).await {
                        return Err(Left::Abandoned);
                    }
                }
                AfterCall::Next => return Err(Left::Next(error)),
                AfterCall::Stop(ending) => return Err(Left::Stop(ending, error)),
            }
        }
    }

    /// One call, with its latency and outcome measured and told to the breaker.
    async fn call(&self, link: &Link, admission: Admission<'_>, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let started = Instant::now();
        let span = tracing::info_span!("provider.call", provider = link.provider.name());
        let result = link.provider.send(message).instrument(span).await;
        let elapsed = started.elapsed();
        // A permanent error is the message's fault, an endpoint's error the recipient's:
        // neither is the provider's.
        let failed = matches!(&result, Err(e) if e.kind != ErrorKind::Permanent && !e.recipient_fault);
        // Indexes into CALL_OUTCOMES.
        let outcome = match &result {
            Ok(_) => 0,
            Err(e) if e.ambiguous => 1,
            Err(e) if e.kind == ErrorKind::Transient => 2,
            Err(e) if e.kind == ErrorKind::ProviderDown => 3,
            Err(_) => 4,
        };
        link.calls[outcome].record(elapsed.as_secs_f64());
        if let Some(Transition::Opened { until }) = admission.record(failed, elapsed) {
            self.announce(link.provider.name(), until).await;
        }
        result
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
}

/// Waits `wait`; false if `stop` fired first.
async fn pause(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::config::{Ambiguity, RetryConfig};
    use tidings_core::Channel;
    use tidings_providers::Content;

    /// Takes every message after `latency`; `recipients` says whether its calls go to users' own endpoints.
    struct Slow {
        recipients: bool,
    }

    #[async_trait::async_trait]
    impl Provider for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn serves(&self, _: Channel) -> bool {
            true
        }
        fn calls_recipients(&self) -> bool {
            self.recipients
        }
        async fn send(&self, _: &Outgoing) -> Result<Receipt, ProviderError> {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(Receipt::default())
        }
    }

    async fn open_after_slow_calls(recipients: bool) -> bool {
        let breaker: BreakerConfig =
            serde_json::from_value(serde_json::json!({"min_calls": 3, "slow_call": "5s", "slow_call_rate": 0.5}))
                .unwrap();
        let chain = Chain::new(vec![Arc::new(Slow { recipients })], &breaker, None);
        let retry: RetryConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let policy = Policy::new(&retry, Ambiguity::AtMostOnce);
        let message = Outgoing {
            notification_id: "n".into(),
            priority: tidings_core::Priority::Normal,
            content: Content::Sms { to: "+33612345678".into(), body: "hi".into() },
        };
        for _ in 0..3 {
            let sent = chain.send(&message, &policy, WhenDown::GiveUp, None, &CancellationToken::new()).await;
            assert!(matches!(sent, Outcome::Sent(_)));
        }
        chain.all_open()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_provider_opens_its_breaker_but_a_slow_recipient_endpoint_does_not() {
        assert!(open_after_slow_calls(false).await, "slow calls to a provider open its breaker");
        assert!(!open_after_slow_calls(true).await, "a user's slow endpoint moves no breaker");
    }

    /// Down (every call refused as such) while `down` is set.
    struct Toggle {
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Provider for Toggle {
        fn name(&self) -> &str {
            "toggle"
        }
        fn serves(&self, _: Channel) -> bool {
            true
        }
        async fn send(&self, _: &Outgoing) -> Result<Receipt, ProviderError> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ProviderError::down("toggle is down"));
            }
            Ok(Receipt::default())
        }
    }

    /// Deliveries that take a half-open probe slot and are told to stop
    /// before calling (a shutdown, a partition moving away) leave the
    /// breaker able to probe: the next message goes once the provider is up.
    #[tokio::test(start_paused = true)]
    async fn probes_abandoned_before_calling_do_not_keep_the_breaker_half_open() {
        let breaker: BreakerConfig = serde_json::from_value(serde_json::json!({
            "min_calls": 2, "failure_rate": 0.5, "reset_timeout": "1s", "half_open_probes": 2
        }))
        .unwrap();
        let provider = Arc::new(Toggle { down: true.into() });
        let chain = Chain::new(vec![provider.clone()], &breaker, None);
        let retry: RetryConfig = serde_json::from_value(serde_json::json!({"attempts": 2})).unwrap();
        let policy = Policy::new(&retry, Ambiguity::AtMostOnce);
        let message = Outgoing {
            notification_id: "n".into(),
            priority: tidings_core::Priority::Normal,
            content: Content::Sms { to: "+33612345678".into(), body: "hi".into() },
        };
        let live = CancellationToken::new();
        let sent = chain.send(&message, &policy, WhenDown::GiveUp, None, &live).await;
        assert!(!matches!(sent, Outcome::Sent(_)), "{sent:?}");
        assert!(chain.all_open(), "two refused calls open the breaker");
        provider.down.store(false, std::sync::atomic::Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(2)).await;
        let stopped = CancellationToken::new();
        stopped.cancel();
        for _ in 0..3 {
            let sent = chain.send(&message, &policy, WhenDown::GiveUp, None, &stopped).await;
            assert!(matches!(sent, Outcome::Abandoned { pinned: None }), "{sent:?}");
        }
        let sent = chain.send(&message, &policy, WhenDown::GiveUp, None, &live).await;
        assert!(matches!(sent, Outcome::Sent(_)), "the provider is up and a probe may call it: {sent:?}");
    }

    /// Answers each call with the next of its errors, then takes the message.
    struct Scripted {
        answers: std::sync::Mutex<Vec<ProviderError>>,
    }

    #[async_trait::async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn serves(&self, _: Channel) -> bool {
            true
        }
        async fn send(&self, _: &Outgoing) -> Result<Receipt, ProviderError> {
            let mut answers = self.answers.lock().unwrap();
            if answers.is_empty() {
                return Ok(Receipt::default());
            }
            Err(answers.remove(0))
        }
    }

    /// A retry on the provider an ambiguous answer pinned the message to
    /// that is refused for good does not say the message never went: the
    /// first request may have been taken, so it ends unconfirmed, never
    /// handed to another channel.
    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_after_an_ambiguous_answer_ends_unconfirmed() {
        let answers = vec![ProviderError::ambiguous("timed out after writing"), ProviderError::permanent("refused")];
        let provider = Arc::new(Scripted { answers: answers.into() });
        let breaker: BreakerConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let chain = Chain::new(vec![provider], &breaker, None);
        let retry: RetryConfig = serde_json::from_value(serde_json::json!({"attempts": 3})).unwrap();
        let policy = Policy::new(&retry, Ambiguity::AtLeastOnce);
        let message = Outgoing {
            notification_id: "n".into(),
            priority: tidings_core::Priority::Critical,
            content: Content::Sms { to: "+33612345678".into(), body: "hi".into() },
        };
        let sent = chain.send(&message, &policy, WhenDown::GiveUp, None, &CancellationToken::new()).await;
        let Outcome::Failed(failed) = sent else { panic!("it fails: {sent:?}") };
        assert_eq!((failed.ending, failed.attempts), (Ending::Unconfirmed, 2), "{failed:?}");

        // A refusal of the recipient says no request reached anyone: it stays permanent.
        let answers = vec![
            ProviderError::ambiguous("timed out after writing"),
            ProviderError::invalid_recipient("no such number"),
        ];
        let provider = Arc::new(Scripted { answers: answers.into() });
        let chain = Chain::new(vec![provider], &breaker, None);
        let sent = chain.send(&message, &policy, WhenDown::GiveUp, None, &CancellationToken::new()).await;
        let Outcome::Failed(failed) = sent else { panic!("it fails: {sent:?}") };
        assert_eq!(failed.ending, Ending::Permanent, "{failed:?}");
    }

    /// Takes every message at once.
    struct Quick;

    #[async_trait::async_trait]
    impl Provider for Quick {
        fn name(&self) -> &str {
            "quick"
        }
        fn serves(&self, _: Channel) -> bool {
            true
        }
        async fn send(&self, _: &Outgoing) -> Result<Receipt, ProviderError> {
            Ok(Receipt::default())
        }
    }

    /// Messages waiting for a rate-limited provider wait far longer than a
    /// slow call, yet none counts as slow or as an attempt: the breaker stays
    /// closed and each message went in one attempt.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_the_rate_is_no_slow_call_and_no_attempt() {
        let breaker: BreakerConfig =
            serde_json::from_value(serde_json::json!({"min_calls": 3, "slow_call": "50ms", "slow_call_rate": 0.5}))
                .unwrap();
        let store: SharedStore = Arc::new(tidings_core::store::MemoryStore::new());
        let limits: BTreeMap<String, ProviderLimits> =
            [("quick".to_string(), ProviderLimits { per_second: Some(20.0), burst: Some(1), max_concurrent: None })]
                .into();
        let chain = Arc::new(Chain::new(vec![Arc::new(Quick)], &breaker, Some(store)).limited(&limits));
        let retry: RetryConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let policy = Arc::new(Policy::new(&retry, Ambiguity::AtMostOnce));
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (chain, policy) = (chain.clone(), policy.clone());
            sends.spawn(async move {
                let message = Outgoing {
                    notification_id: format!("n{i}"),
                    priority: tidings_core::Priority::Bulk,
                    content: Content::Sms { to: "+33612345678".into(), body: "hi".into() },
                };
                chain.send(&message, &policy, WhenDown::GiveUp, None, &CancellationToken::new()).await
            });
        }
        let started = std::time::Instant::now();
        for sent in sends.join_all().await {
            let Outcome::Sent(sent) = sent else { panic!("every message goes: {sent:?}") };
            assert_eq!(sent.attempts, 1);
        }
        assert!(started.elapsed() >= Duration::from_millis(400), "ten at 20/s take close to half a second");
        assert_eq!(chain.links[0].breaker.state(), State::Closed);
    }
}
