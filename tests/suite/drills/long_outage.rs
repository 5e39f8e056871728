//! The only email provider is down for longer than the consumers'
//! `max.poll.interval.ms` (shortened for the drill) while two workers in one
//! group hold more work than their in-flight budget: they must stay in the
//! group, hold, and deliver everything once and in order when it comes back.

use super::{all_ended, Expected, Tally};
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet;
use tidings_core::{Channel, Clock, Config};

const USERS: usize = 150;
const EVENTS: usize = 1500;
const OUTAGE: Duration = Duration::from_secs(25);

/// SendGrid alone for email, a budget smaller than the backlog, and a poll
/// interval the outage outlasts three times over.
pub fn config(infra: &Infra, sendgrid: &str) -> Config {
    let providers = harness::sendgrid_provider(sendgrid, "5s");
    let mut config = infra.config(&providers, &[(Channel::Email, &["sendgrid"])]);
    for (k, v) in [("max.poll.interval.ms", "7000"), ("session.timeout.ms", "6000")] {
        config.kafka.options.insert(k.to_string(), v.to_string());
    }
    config.worker.max_in_flight = 32;
    let b = &mut config.worker.breaker;
    b.window = Duration::from_secs(5);
    b.min_calls = 5;
    b.reset_timeout = Duration::from_secs(2);
    let r = &mut config.worker.retry;
    r.attempts = 2;
    r.max_backoff = Duration::from_millis(500);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_longer_than_the_poll_interval_loses_and_repeats_nothing() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    let config = Arc::new(config(&infra, &sendgrid.server.uri()));
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let intake = harness::intake_only();
    let email = harness::worker_only(Channel::Email);
    let fleets = [
        fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), intake).unwrap(),
        fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), email.clone()).unwrap(),
        fleet::spawn_fleet(config.clone(), store, Clock::system(), email).unwrap(),
    ];

    let back = Instant::now() + OUTAGE;
    *sendgrid.state.down_until.lock().unwrap() = Some(back);
    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();

    let expected = Expected::orders(0, EVENTS, USERS, Channel::Email);
    let records =
        watch.wait_until("every notification to end", OUTAGE + Duration::from_secs(120), all_ended(&expected)).await;
    let mut tally = Tally::of(&expected, &sendgrid.state.accepted(), &records);
    tally.recovery = Some(Instant::now().saturating_duration_since(back));
    assert!(sendgrid.state.refused() > 0, "the provider was down while messages waited");
    tally.assert_kept("long-outage");
    assert_eq!(tally.dead_lettered, 0, "an outage burns nothing into the dead-letter topic");
    for f in fleets {
        f.shutdown().await.unwrap();
    }
}
