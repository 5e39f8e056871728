//! Sends that take longer than the claim lease while a second worker joins
//! and takes partitions over mid-send: the first worker keeps its claims
//! renewed and records its outcomes; the second waits for them and records
//! duplicates, sending nothing twice.

use super::{all_ended, Expected, Tally};
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet;
use tidings_core::{Channel, Clock, State};

const USERS: usize = 100;
const EVENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_outliving_its_lease_while_the_partition_moves_is_sent_once() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "40s");
    let mut config = infra.config(&providers, &[(Channel::Email, &["sendgrid"])]);
    config.worker.claim_lease = Duration::from_millis(600);
    config.worker.max_in_flight = 1024;
    // Slow on purpose: the breaker must not take these sends for an outage.
    config.worker.breaker.slow_call = Duration::from_secs(60);
    let config = Arc::new(config);
    // Every send takes many leases, and longer than the rebalance that moves its partition.
    *sendgrid.state.latency.lock().unwrap() = Duration::from_secs(15);
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let intake = harness::intake_only();
    let email = harness::worker_only(Channel::Email);
    let first = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), intake).unwrap();
    let worker = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), email.clone()).unwrap();
    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();

    // Sends are under way on the first worker; the second joins and takes partitions.
    harness::eventually("sends to be under way", Duration::from_secs(60), Duration::from_millis(20), || async {
        sendgrid.server.received_requests().await.unwrap_or_default().len() >= 20
    })
    .await;
    let second = fleet::spawn_fleet(config.clone(), store, Clock::system(), email).unwrap();

    let expected = Expected::orders(0, EVENTS, USERS, Channel::Email);
    watch.wait_until("every notification to end", Duration::from_secs(120), all_ended(&expected)).await;
    // The second worker read records the first was still sending, waited
    // for their outcomes and recorded its copies as duplicates.
    let records = watch
        .wait_until("duplicates of the records that moved", Duration::from_secs(30), |rs| {
            rs.iter().any(|r| r.state == State::Duplicate)
        })
        .await;
    let tally = Tally::of(&expected, &sendgrid.state.accepted(), &records);
    tally.assert_kept("claim-outlives-lease");
    for f in [first, worker, second] {
        f.shutdown().await.unwrap();
    }
}
