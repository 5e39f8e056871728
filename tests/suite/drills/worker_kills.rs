//! A worker process SIGKILLed five times at random points of one run, each
//! time restarted: in the middle of provider calls, between an acceptance
//! and its recording, during its group join. Nothing is lost, nothing goes
//! out twice (a message whose sender died during its call ends
//! `unconfirmed` at normal priority, as an ambiguous answer does), one
//! terminal state each, per-user order.

use super::{all_ended, Expected, Tally};
use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use rand::RngExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet;
use tidings_core::{Channel, Clock};

const USERS: usize = 100;
const EVENTS: usize = 2000;
const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_five_times_loses_and_repeats_nothing() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    // Calls take a while, so kills land in the middle of them.
    *sendgrid.state.latency.lock().unwrap() = Duration::from_millis(300);
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "5s");
    let config = Arc::new(infra.config(&providers, &[(Channel::Email, &["sendgrid"])]));
    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(
        dir.path(),
        &providers,
        "\n[channels.email]\nproviders = [\"sendgrid\"]\n",
        &[("claim_lease = \"30s\"", "claim_lease = \"2s\"")],
    );
    let store = harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    let intake = fleet::spawn_fleet(config.clone(), store, Clock::system(), harness::intake_only()).unwrap();
    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();

    let mut worker = infra.spawn(&file, &["worker", "--channel", "email"]);
    for kill in 0..KILLS {
        // The fault schedule: once this worker is sending, at a random point of its life.
        let before = sendgrid.state.accepted().len();
        harness::eventually("the worker to send", Duration::from_secs(60), Duration::from_millis(10), || async {
            sendgrid.state.accepted().len() > before
        })
        .await;
        // A random point: once the provider took a random number more from this worker.
        let more = rand::rng().random_range(1..=150);
        harness::eventually(
            "the worker to send some more",
            Duration::from_secs(60),
            Duration::from_millis(5),
            || async { sendgrid.state.accepted().len() >= (before + more).min(EVENTS) },
        )
        .await;
        worker.kill().unwrap();
        worker.wait().unwrap();
        println!("kill {} after {more} more: {} accepted so far", kill + 1, sendgrid.state.accepted().len());
        worker = infra.spawn(&file, &["worker", "--channel", "email"]);
    }
    let last = Instant::now();
    let before_end: std::collections::HashSet<String> = sendgrid.state.accepted().into_iter().collect();
    assert!(before_end.len() < EVENTS, "the kills came mid-run");

    let expected = Expected::orders(0, EVENTS, USERS, Channel::Email);
    let records = watch.wait_until("every notification to end", Duration::from_secs(180), all_ended(&expected)).await;
    let accepted = sendgrid.state.accepted();
    let distinct: std::collections::HashSet<&str> = accepted.iter().map(String::as_str).collect();
    let mut tally = Tally::of(&expected, &accepted, &records);
    tally.recovery = Some(last.elapsed());
    worker.kill().unwrap();
    worker.wait().unwrap();
    intake.shutdown().await.unwrap();
    tally.assert_kept("worker-kills");
    assert_eq!(tally.dead_lettered, 0);
    // Each unconfirmed one was taken over from a killed delivery; say how many of those had reached the provider.
    let unconfirmed: Vec<&str> = records
        .iter()
        .filter(|r| r.state == tidings_core::State::Unconfirmed)
        .map(|r| r.notification_id.as_str())
        .collect();
    let reached = unconfirmed.iter().filter(|id| distinct.contains(**id)).count();
    println!(
        "drill worker-kills: {} unconfirmed, {reached} of them accepted by the provider before the kill",
        unconfirmed.len()
    );
    assert!(unconfirmed.iter().all(|id| records
        .iter()
        .any(|r| r.notification_id == *id && r.error.as_deref().is_some_and(|e| e.contains("stopped part-way")))));
}
