//! SIGTERM during an outage: the only email provider is down, the worker
//! holds what it read, and its drain times out. Whatever it abandoned must
//! be read again by the worker that comes next, not committed as done: every
//! notification ends once the provider is back.

use super::{Expected, Tally};
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet;
use tidings_core::{Channel, Clock};

const USERS: usize = 100;
const EVENTS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_that_times_out_commits_nothing_it_abandoned() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    let mut config = super::long_outage::config(&infra, &sendgrid.server.uri());
    config.worker.drain_timeout = Duration::from_secs(2);
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let intake = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), harness::intake_only()).unwrap();
    let email = harness::worker_only(Channel::Email);
    let first = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), email.clone()).unwrap();

    *sendgrid.state.down_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3600));
    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    // The breaker opens on the first failures; what the worker read since waits for it.
    harness::eventually(
        "the worker to call the failing provider",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || std::future::ready(sendgrid.state.refused() >= 10),
    )
    .await;
    first.shutdown().await.unwrap();

    *sendgrid.state.down_until.lock().unwrap() = None;
    let second = fleet::spawn_fleet(config.clone(), store, Clock::system(), email).unwrap();
    let expected = Expected::orders(0, EVENTS, USERS, Channel::Email);
    let back = Instant::now();
    let records =
        watch.wait_until("every notification to end", Duration::from_secs(120), super::all_ended(&expected)).await;
    let mut tally = Tally::of(&expected, &sendgrid.state.accepted(), &records);
    tally.recovery = Some(back.elapsed());
    tally.assert_kept("drain-timeout");
    for f in [second, intake] {
        f.shutdown().await.unwrap();
    }
}
