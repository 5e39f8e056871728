//! Faults on the real broker: the broker killed and started again after
//! longer than the consumers' `max.poll.interval.ms`, and a worker SIGKILLed
//! while sends are in flight. Each ends with every event's notification in
//! one terminal state, none sent twice by the provider, per-user order kept.
//! Both run on tansu's SQLite storage: the broker outlives its process, and
//! a consumer resuming inside a batch is served (see `TansuBroker`).

use crate::harness::{Process, StatusWatch};
use crate::{check_each_once_in_order, tansu_on_sqlite, wait_for_all, Real};
use std::time::Duration;
use tidings_core::State;

const USERS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_down_longer_than_the_poll_interval_loses_and_repeats_nothing() {
    const EVENTS: usize = 2_000;
    const OUTAGE: Duration = Duration::from_secs(15);
    // Both roles' consumers would leave their groups after 7 s unpolled.
    let options = "group_prefix = \"tidings\"\noptions = { \"max.poll.interval.ms\" = \"7000\", \"session.timeout.ms\" = \"6000\" }";
    let mut real = Real::start(tansu_on_sqlite(), "latency = \"20ms\"", &[("group_prefix = \"tidings\"", options)]);
    real.users(USERS).await;
    let watch = StatusWatch::start(&real.config);
    let _intake = real.spawn(&["intake"]);
    let _worker = real.spawn(&["worker", "--channel", "email"]);
    real.feed(0..EVENTS, USERS).await;
    watch
        .wait_until("some to be sent", Duration::from_secs(120), |rs| {
            rs.iter().filter(|r| r.state == State::Sent).count() >= EVENTS / 5
        })
        .await;

    real.broker.stop();
    // The outage itself: nothing is waited for here, the broker is simply away.
    tokio::time::sleep(OUTAGE).await;
    assert!(real.outbox_count() < EVENTS, "the outage came mid-run");
    real.broker.restart().unwrap();

    let records = wait_for_all(&watch, EVENTS, Duration::from_secs(60)).await;
    check_each_once_in_order(&records, EVENTS, &[State::Sent]);
    assert_eq!(real.sent_twice(), Vec::<String>::new());
    assert_eq!(real.outbox_count(), EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_send_loses_and_repeats_nothing() {
    const EVENTS: usize = 3_000;
    // Sends take long enough that hundreds are in flight when the worker dies.
    let real =
        Real::start(tansu_on_sqlite(), "latency = \"300ms\"", &[("claim_lease = \"30s\"", "claim_lease = \"3s\"")]);
    real.users(USERS).await;
    real.feed(0..EVENTS, USERS).await;
    let watch = StatusWatch::start(&real.config);
    let _intake = real.spawn(&["intake"]);
    let mut worker = real.spawn(&["worker", "--channel", "email"]);
    watch
        .wait_until("a third to be sent", Duration::from_secs(120), |rs| {
            rs.iter().filter(|r| r.state == State::Sent).count() >= EVENTS / 3
        })
        .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(real.outbox_count() < EVENTS, "the kill came mid-run");
    let _worker = real.spawn(&["worker", "--channel", "email"]);

    let records = wait_for_all(&watch, EVENTS, Duration::from_secs(60)).await;
    // What was being sent when the worker died is taken over: `unconfirmed` (at most once) if
    // the provider may have taken it, `sent` otherwise; never sent twice.
    check_each_once_in_order(&records, EVENTS, &[State::Sent, State::Unconfirmed]);
    assert_eq!(real.sent_twice(), Vec::<String>::new());
}

/// SIGTERM during an outage: the worker holds what it read while its only
/// provider fails, and its drain times out. What it abandoned is read again
/// by the worker started next (the provider mended), not committed as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_that_times_out_during_an_outage_commits_nothing_it_abandoned() {
    const EVENTS: usize = 2_000;
    let real = Real::start(tansu_on_sqlite(), "latency = \"5ms\"", &[]);
    real.users(USERS).await;
    let watch = StatusWatch::start(&real.config);
    let _intake = real.spawn(&["intake"]);
    let log = real.dir.path().join("first-worker.log");
    let down = [("TIDINGS_PROVIDERS__SANDBOX__ERROR_RATE", "1.0"), ("TIDINGS_WORKER__DRAIN_TIMEOUT", "3s")];
    let mut first = Process::from(
        real.command(&["worker", "--channel", "email"])
            .envs(down)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    real.feed(0..EVENTS, USERS).await;
    // The worker reads, its breaker opens on the failures, and it holds what it read.
    crate::harness::eventually(
        "the worker's breaker to open",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || std::future::ready(std::fs::read_to_string(&log).is_ok_and(|said| said.contains("breaker opens"))),
    )
    .await;
    super::signal(first.id(), "TERM");
    assert!(crate::wait_exit(&mut first, Duration::from_secs(60)).await.success());
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("drain timed out"), "the drain held deliveries when it timed out:\n{said}");
    assert_eq!(real.outbox_count(), 0, "nothing went out during the outage");

    let _worker = real.spawn(&["worker", "--channel", "email"]);
    let records = wait_for_all(&watch, EVENTS, Duration::from_secs(60)).await;
    check_each_once_in_order(&records, EVENTS, &[State::Sent]);
    assert_eq!(real.sent_twice(), Vec::<String>::new());
    assert_eq!(real.outbox_count(), EVENTS);
}
