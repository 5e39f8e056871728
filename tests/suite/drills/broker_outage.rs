//! The mock cluster's broker goes down for longer than the consumers'
//! session and poll intervals and the producers' (test-shortened)
//! `message.timeout.ms` while events keep arriving: intake, the worker and
//! the scheduler hold (their writes never time out), and once the broker is
//! back everything is delivered once and in order.

use super::{all_ended, Expected, Tally};
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet;
use tidings_core::{Channel, Clock};

const USERS: usize = 50;
const EVENTS: usize = 600;
const OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_down_and_back_loses_and_repeats_nothing() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    *sendgrid.state.latency.lock().unwrap() = Duration::from_millis(20);
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "5s");
    let plain = infra.config(&providers, &[(Channel::Email, &["sendgrid"])]);
    let mut config = plain.clone();
    for (k, v) in [("max.poll.interval.ms", "7000"), ("session.timeout.ms", "6000"), ("message.timeout.ms", "5000")] {
        config.kafka.options.insert(k.to_string(), v.to_string());
    }
    config.worker.max_in_flight = 16;
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let roles = fleet::Roles { intake: true, scheduler: true, callbacks: false, channels: vec![Channel::Email] };
    let running = fleet::spawn_fleet(config.clone(), store, Clock::system(), roles).unwrap();

    let feed = |from: usize, to: usize| -> String {
        (from..to).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect()
    };
    tidings::commands::dev::feed(&plain, &feed(0, EVENTS / 2)).await.unwrap();
    harness::eventually("some to be sent", Duration::from_secs(60), Duration::from_millis(20), || async {
        sendgrid.state.accepted().len() >= EVENTS / 10
    })
    .await;
    infra.kafka.broker_down(1).unwrap();
    // The rest arrives during the outage: the feed's own writes wait for the broker.
    let late = feed(EVENTS / 2, EVENTS);
    let feeding = tokio::spawn(async move { tidings::commands::dev::feed(&plain, &late).await });
    // The outage itself: nothing is waited for here, the broker is simply away.
    tokio::time::sleep(OUTAGE).await;
    assert!(sendgrid.state.accepted().len() < EVENTS, "the outage came mid-run");
    infra.kafka.broker_up(1).unwrap();
    let back = Instant::now();
    feeding.await.unwrap().unwrap();

    let expected = Expected::orders(0, EVENTS, USERS, Channel::Email);
    let records = watch.wait_until("every notification to end", Duration::from_secs(120), all_ended(&expected)).await;
    let mut tally = Tally::of(&expected, &sendgrid.state.accepted(), &records);
    tally.recovery = Some(back.elapsed());
    tally.assert_kept("broker-outage");
    assert_eq!((tally.dead_lettered, tally.unconfirmed), (0, 0));
    running.shutdown().await.unwrap();
}
