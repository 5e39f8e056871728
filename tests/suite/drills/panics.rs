//! A delivery that panics is a failure, not a lost slot: its record is
//! dead-lettered and ends `dead_lettered`, its offset moves on, and the
//! user's next message and everyone else's are delivered. A stage of
//! intake that panics stops intake with an error, and loses nothing.

use super::{all_ended, Expected, Tally};
use crate::harness::{self, order_event, Infra, StatusWatch};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::fleet;
use tidings_core::caps::{Admission, CapAsk};
use tidings_core::digest::{Added, DigestAdd, OpenDigest, Taken};
use tidings_core::notification::notification_id;
use tidings_core::progress::Progress;
use tidings_core::store::{CapCount, CapsRead, CapsSeen, Claim, Hydrated, Placed, SharedStore, Store, StoreError};
use tidings_core::suppression::{Cause, Suppression};
use tidings_core::{Channel, Clock, State};
use tidings_intake::service::IntakeError;
use tidings_providers::{Outgoing, Provider, ProviderError, Receipt};
use tidings_workers::render::Renderer;
use tidings_workers::service::Worker;

/// Takes every message but one, on which it panics.
struct Panicky {
    poison: String,
    accepted: Mutex<Vec<String>>,
}

#[async_trait]
impl Provider for Panicky {
    fn name(&self) -> &str {
        "sandbox"
    }
    fn serves(&self, channel: Channel) -> bool {
        channel == Channel::Email
    }
    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        assert_ne!(message.notification_id, self.poison, "the adapter hit a bug");
        self.accepted.lock().unwrap().push(message.notification_id.clone());
        Ok(Receipt::default())
    }
}

/// An email worker sending through `provider` alone, running until the token is cancelled.
fn email_worker(
    config: &Arc<tidings_core::Config>,
    store: SharedStore,
    provider: Arc<Panicky>,
) -> (tokio_util::sync::CancellationToken, tokio::task::JoinHandle<Result<(), tidings_workers::service::WorkerError>>) {
    let worker = Worker {
        channel: Channel::Email,
        config: config.clone(),
        store,
        renderer: Arc::new(Renderer::load(&config.templates.dir).unwrap()),
        providers: vec![provider],
        clock: Clock::system(),
        progress: Progress::shared(),
        health: tidings_core::telemetry::Health::shared(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(tidings_workers::run(worker, stop.clone().cancelled_owned()));
    (stop, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_delivery_is_dead_lettered_and_the_rest_flow() {
    const USERS: usize = 10;
    const EVENTS: usize = 30;
    let infra = Infra::start();
    let sandbox = "\n[providers.sandbox]\nkind = \"sandbox\"\n";
    let config = Arc::new(infra.config(sandbox, &[(Channel::Email, &["sandbox"])]));
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let intake = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), harness::intake_only()).unwrap();
    let poison = notification_id("/test", "evt-3", Channel::Email, "u-3");
    let provider = Arc::new(Panicky { poison: poison.clone(), accepted: Mutex::default() });
    let (stop, running) = email_worker(&config, store, provider.clone());

    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    let expected = Expected::orders(0, EVENTS, USERS, Channel::Email);
    let records = watch.wait_until("every notification to end", Duration::from_secs(60), all_ended(&expected)).await;
    let tally = Tally::of(&expected, &provider.accepted.lock().unwrap(), &records);
    tally.assert_kept("panic");
    let ended = records.iter().find(|r| r.notification_id == poison && r.state.is_terminal()).unwrap();
    assert_eq!(ended.state, State::DeadLettered);
    assert!(ended.error.as_deref().unwrap_or_default().contains("panicked"), "{:?}", ended.error);
    assert_eq!(tally.dead_lettered, 1, "only the panicking delivery");
    let letters = harness::read_topic(&config, &Channel::Email.dlq_topic(), 1);
    assert!(letters[0].headers["dlq_error"].contains("the adapter hit a bug"), "{:?}", letters[0].headers);
    stop.cancel();
    running.await.unwrap().unwrap();
    intake.shutdown().await.unwrap();
}

/// A store that answers as `inner` does, except that the first hydration of
/// a batch holding `poison` panics, as a bug in a stage would.
struct PanicsOnHydrate {
    inner: SharedStore,
    poison: String,
    armed: AtomicBool,
}

#[async_trait]
impl Store for PanicsOnHydrate {
    async fn hydrate(&self, users: &[String], lanes: &[String]) -> Result<Hydrated, StoreError> {
        if users.contains(&self.poison) && self.armed.swap(false, Ordering::SeqCst) {
            panic!("a bug while hydrating {}", self.poison);
        }
        self.inner.hydrate(users, lanes).await
    }
    async fn prefs_many(&self, users: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.inner.prefs_many(users).await
    }
    async fn set_prefs(&self, user: &str, json: &str) -> Result<(), StoreError> {
        self.inner.set_prefs(user, json).await
    }
    async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(id, owner, lease).await
    }
    async fn swap(&self, id: &str, expected: &str, new: Option<&str>, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.swap(id, expected, new, ttl).await
    }
    async fn swap_tails(&self, swaps: &[(String, String, String)]) -> Result<(), StoreError> {
        self.inner.swap_tails(swaps).await
    }
    async fn dedupe_value(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.inner.dedupe_value(id).await
    }
    async fn undefer(&self, lane: &str, member: &str) -> Result<(), StoreError> {
        self.inner.undefer(lane, member).await
    }
    async fn digest_add(&self, adds: &[DigestAdd]) -> Result<Vec<Added>, StoreError> {
        self.inner.digest_add(adds).await
    }
    async fn digest_take(
        &self,
        user: &str,
        name: &str,
        window: u64,
        opened: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Taken>, StoreError> {
        self.inner.digest_take(user, name, window, opened, now).await
    }
    async fn open_digests(&self, user: &str) -> Result<Vec<OpenDigest>, StoreError> {
        self.inner.open_digests(user).await
    }
    async fn admit_from(
        &self,
        asks: &[CapAsk],
        read: &CapsRead,
    ) -> Result<(Vec<Admission>, std::collections::HashMap<String, CapsSeen>), StoreError> {
        self.inner.admit_from(asks, read).await
    }
    async fn caps_values(&self, users: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.inner.caps_values(users).await
    }
    async fn cap_counts(
        &self,
        user: &str,
        caps: &[(String, Duration)],
        channels: &[Channel],
        now: DateTime<Utc>,
    ) -> Result<Vec<CapCount>, StoreError> {
        self.inner.cap_counts(user, caps, channels, now).await
    }
    async fn place(&self, lane: &str, member: &str, due: DateTime<Utc>, exact: bool) -> Result<Placed, StoreError> {
        self.inner.place(lane, member, due, exact).await
    }
    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> Result<Vec<String>, StoreError> {
        self.inner.claim_due(now, limit, lease).await
    }
    async fn remove_deferred(&self, lane: &str, member: &str) -> Result<(), StoreError> {
        self.inner.remove_deferred(lane, member).await
    }
    async fn open_breaker(&self, provider: &str, open_for: Duration) -> Result<(), StoreError> {
        self.inner.open_breaker(provider, open_for).await
    }
    async fn open_breakers(&self, providers: &[String]) -> Result<Vec<bool>, StoreError> {
        self.inner.open_breakers(providers).await
    }
    async fn deferred_len(&self) -> Result<u64, StoreError> {
        self.inner.deferred_len().await
    }
    async fn deferred_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.deferred_due(now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn lease_calls(
        &self,
        provider: &str,
        per_second: f64,
        burst: u32,
        want: u32,
    ) -> Result<(u32, Duration), StoreError> {
        self.inner.lease_calls(provider, per_second, burst, want).await
    }
    async fn slow_down(&self, provider: &str, period: Duration) -> Result<(), StoreError> {
        self.inner.slow_down(provider, period).await
    }
    async fn swap_prefs(&self, user: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        self.inner.swap_prefs(user, old, new).await
    }
    async fn webhook_keys(&self, user: &str, fresh: &str) -> Result<String, StoreError> {
        self.inner.webhook_keys(user, fresh).await
    }
    async fn swap_webhook_keys(&self, user: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        self.inner.swap_webhook_keys(user, old, new).await
    }
    async fn suppress(&self, entry: &Suppression) -> Result<bool, StoreError> {
        self.inner.suppress(entry).await
    }
    async fn lift(&self, address: &str, cause: Cause, at: chrono::DateTime<chrono::Utc>) -> Result<bool, StoreError> {
        self.inner.lift(address, cause, at).await
    }
    async fn unsuppress(&self, address: &str) -> Result<bool, StoreError> {
        self.inner.unsuppress(address).await
    }
    async fn suppression(&self, address: &str) -> Result<Option<Suppression>, StoreError> {
        self.inner.suppression(address).await
    }
    async fn suppressions(&self, cursor: u64) -> Result<(u64, Vec<Suppression>), StoreError> {
        self.inner.suppressions(cursor).await
    }
    async fn soft_bounce(&self, address: &str, by: &str, window: Duration) -> Result<u64, StoreError> {
        self.inner.soft_bounce(address, by, window).await
    }
    async fn first_sighting(&self, key: &str, by: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.first_sighting(key, by, ttl).await
    }
    async fn sighting_done(&self, key: &str, by: &str) -> Result<(), StoreError> {
        self.inner.sighting_done(key, by).await
    }
}

/// A stage of intake that panics stops intake with an error (the process
/// exits non-zero and is restarted, rather than exiting as though asked to),
/// after committing only what was routed: the next intake routes the rest,
/// and every notification is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_intake_stage_stops_intake_with_an_error_and_the_next_routes_the_rest() {
    const USERS: usize = 10;
    const FIRST: usize = 20;
    const EVENTS: usize = 40;
    let infra = Infra::start();
    let sandbox = "\n[providers.sandbox]\nkind = \"sandbox\"\n";
    let config = Arc::new(infra.config(sandbox, &[(Channel::Email, &["sandbox"])]));
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let provider = Arc::new(Panicky { poison: String::new(), accepted: Mutex::default() });
    let (stop, running) = email_worker(&config, store.clone(), provider.clone());

    // The poisoned user's events come only in the second half, so the first
    // half is routed, acknowledged and committed before the stage panics.
    let poison = "u-0".to_string();
    let faulty: SharedStore =
        Arc::new(PanicsOnHydrate { inner: store.clone(), poison: poison.clone(), armed: AtomicBool::new(true) });
    let first = tokio::spawn(tidings_intake::service::run(
        config.clone(),
        faulty,
        Clock::system(),
        Progress::shared(),
        tidings_core::telemetry::Health::shared(),
        std::future::pending(),
    ));
    let events: Vec<(usize, String)> = (0..EVENTS)
        .map(|seq| {
            (seq, if seq < FIRST { format!("u-{}", 1 + seq % (USERS - 1)) } else { format!("u-{}", seq % USERS) })
        })
        .collect();
    let lines =
        |part: &[(usize, String)]| part.iter().map(|(seq, user)| order_event(*seq, user) + "\n").collect::<String>();
    tidings::commands::dev::feed(&config, &lines(&events[..FIRST])).await.unwrap();
    let expected = Expected::of(&events[..FIRST], Channel::Email);
    watch.wait_until("the first half to end", Duration::from_secs(60), all_ended(&expected)).await;
    tidings::commands::dev::feed(&config, &lines(&events[FIRST..])).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("intake stops once a stage panicked")
        .unwrap();
    match ended {
        Err(IntakeError::Stage("hydrator", error)) => assert!(error.contains("panicked"), "{error}"),
        other => panic!("intake ended with {other:?}, not the hydrator's failure"),
    }

    // The next intake (as a restarted process) routes what the first did not.
    let next = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), harness::intake_only()).unwrap();
    let expected = Expected::of(&events, Channel::Email);
    let records = watch.wait_until("every notification to end", Duration::from_secs(60), all_ended(&expected)).await;
    let tally = Tally::of(&expected, &provider.accepted.lock().unwrap(), &records);
    tally.assert_kept("intake stage panic");
    assert_eq!(tally.dead_lettered, 0);
    stop.cancel();
    running.await.unwrap().unwrap();
    next.shutdown().await.unwrap();
}
