//! Dead letters on the real broker: a worker whose provider fails every
//! send dead-letters each notification; the provider mended, `tidings dlq
//! replay` sends each back once and the worker delivers it once; a second
//! replay finds nothing to send.

use crate::harness::{Process, StatusWatch};
use crate::{check_each_once_in_order, tansu_on_sqlite, wait_exit, Real};
use std::time::Duration;
use tidings_core::State;

const EVENTS: usize = 300;
const USERS: usize = 30;

/// `tidings <args>` to its end; its stdout.
fn run(real: &Real, args: &[&str]) -> String {
    let out = real.command(args).stdout(std::process::Stdio::piped()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "tidings {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_replayed_once_the_provider_is_mended_are_delivered_once() {
    // The worker restarts from committed offsets.
    let real = Real::start(tansu_on_sqlite(), "latency = \"2ms\"", &[]);
    real.users(USERS).await;
    let watch = StatusWatch::start(&real.config);
    let _intake = real.spawn(&["intake"]);
    // Every send fails, one attempt each, and the breaker never opens: each notification is dead-lettered.
    let failing = [
        ("TIDINGS_PROVIDERS__SANDBOX__ERROR_RATE", "1.0"),
        ("TIDINGS_WORKER__RETRY__ATTEMPTS", "1"),
        ("TIDINGS_WORKER__RETRY__PASSES", "1"),
        ("TIDINGS_WORKER__BREAKER__MIN_CALLS", "1000000"),
    ];
    let mut worker = Process::from(real.command(&["worker", "--channel", "email"]).envs(failing).spawn().unwrap());
    real.feed(0..EVENTS, USERS).await;
    let records = watch
        .wait_until("every notification dead-lettered", Duration::from_secs(120), |rs| {
            rs.iter().filter(|r| r.state == State::DeadLettered).count() >= EVENTS
        })
        .await;
    check_each_once_in_order(&records, EVENTS, &[State::DeadLettered]);
    let listed = run(&real, &["dlq", "list", "--from", "email", "--json"]);
    assert!(listed.contains(&format!("{EVENTS}")), "dlq list counts every letter: {listed}");
    super::signal(worker.id(), "TERM");
    assert!(wait_exit(&mut worker, Duration::from_secs(60)).await.success());
    assert_eq!(real.outbox_count(), 0);

    let _worker = real.spawn(&["worker", "--channel", "email"]);
    let replayed = run(&real, &["dlq", "replay", "--from", "email"]);
    assert!(replayed.contains(&format!("replayed {EVENTS} dead letters")), "{replayed}");
    watch
        .wait_until("every replayed notification sent", Duration::from_secs(120), |rs| {
            rs.iter().filter(|r| r.state == State::Sent).count() >= EVENTS
        })
        .await;
    let again = run(&real, &["dlq", "replay", "--from", "email"]);
    assert!(again.contains("replayed 0 dead letters"), "{again}");
    assert_eq!(real.outbox_count(), EVENTS, "each delivered once");
    assert_eq!(real.sent_twice(), Vec::<String>::new());
}
