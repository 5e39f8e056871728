//! A delivery that panics is a failure, not a lost slot: its record is
//! dead-lettered and ends `dead_lettered`, its offset moves on, and the
//! user's next message and everyone else's are delivered.

use super::{all_ended, Expected, Tally};
use crate::harness::{self, order_event, Infra, StatusWatch};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::fleet;
use tidings_core::notification::notification_id;
use tidings_core::progress::Progress;
use tidings_core::{Channel, Clock, State};
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
    let worker = Worker {
        channel: Channel::Email,
        config: config.clone(),
        store,
        renderer: Arc::new(Renderer::load(&config.templates.dir).unwrap()),
        providers: vec![provider.clone()],
        clock: Clock::system(),
        progress: Progress::shared(),
        health: tidings_core::telemetry::Health::shared(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(tidings_workers::run(worker, stop.clone().cancelled_owned()));

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
