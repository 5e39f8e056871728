//! Redis is stopped for 15 s in the middle of a run (claims, outcomes,
//! preferences and the schedule all gone at once) and started again on its
//! own data: intake and two workers hold, nothing is lost or sent twice, and
//! everything ends once Redis is back. The outage is longer than the
//! consumers' `max.poll.interval.ms` (shortened for the drill) while the
//! workers' buffers are full of deliveries that cannot go on: they keep
//! polling, so no partition moves.

use super::{all_ended, Expected, Tally};
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet;
use tidings_core::progress::Progress;
use tidings_core::{Channel, Clock};

const USERS: usize = 100;
const EVENTS: usize = 1000;
const OUTAGE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_gone_for_fifteen_seconds_loses_and_repeats_nothing() {
    let mut infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    // Slow enough that the outage lands mid-run.
    *sendgrid.state.latency.lock().unwrap() = Duration::from_millis(50);
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "5s");
    let mut config = infra.config(&providers, &[(Channel::Email, &["sendgrid"])]);
    for (k, v) in [("max.poll.interval.ms", "7000"), ("session.timeout.ms", "6000")] {
        config.kafka.options.insert(k.to_string(), v.to_string());
    }
    config.worker.max_in_flight = 16;
    config.worker.max_buffered = 32;
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let email = harness::worker_only(Channel::Email);
    let fleets = [
        fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), harness::intake_only()).unwrap(),
        fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), email.clone()).unwrap(),
        fleet::spawn_fleet(config.clone(), store, Clock::system(), email).unwrap(),
    ];
    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();

    // Both workers hold partitions (the group's first rebalances are over) and a fifth is out.
    harness::eventually(
        "a fifth to be sent by both workers",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            fleets[1..].iter().all(|f| Progress::get(&f.progress.finished) > 0)
                && sendgrid.state.accepted().len() >= EVENTS / 5
        },
    )
    .await;
    let revoked = || fleets.iter().map(|f| Progress::get(&f.progress.revoked)).sum::<u64>();
    let revoked_before = revoked();
    tokio::task::block_in_place(|| infra.redis.stop());
    let sent_before = sendgrid.state.accepted().len();
    // The outage itself: nothing is waited for here, Redis is simply away.
    tokio::time::sleep(OUTAGE).await;
    assert!(sent_before < EVENTS, "the outage came mid-run");
    tokio::task::block_in_place(|| infra.redis.restart()).unwrap();
    let back = Instant::now();

    let expected = Expected::orders(0, EVENTS, USERS, Channel::Email);
    let records = watch.wait_until("every notification to end", Duration::from_secs(120), all_ended(&expected)).await;
    let mut tally = Tally::of(&expected, &sendgrid.state.accepted(), &records);
    tally.recovery = Some(back.elapsed());
    tally.assert_kept("redis-outage");
    assert_eq!(revoked(), revoked_before, "a worker's consumer lost its partitions during the outage");
    assert_eq!((tally.dead_lettered, tally.unconfirmed), (0, 0));
    for f in fleets {
        f.shutdown().await.unwrap();
    }
}
