//! A role started while Redis is down (a pod rescheduled during a Redis
//! outage) waits for it, alive and not ready, instead of exiting into a
//! crash loop whose back-off would outlast the outage; once Redis is back it
//! runs, and what was queued meanwhile is delivered.

use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::time::Duration;
use tidings_core::{Channel, State};

const USERS: usize = 10;
const EVENTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_started_while_redis_is_down_waits_for_it_and_then_delivers() {
    let mut infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "5s");
    let config = infra.config(&providers, &[(Channel::Email, &["sendgrid"])]);
    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(dir.path(), &providers, "\n[channels.email]\nproviders = [\"sendgrid\"]\n", &[]);
    harness::store_with_email_users(&config, USERS).await;
    let watch = StatusWatch::start(&config);
    infra.redis.stop();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut worker = harness::Process::from(
        infra
            .command(&file, &["worker", "--channel", "email"])
            .env("TIDINGS_METRICS__LISTEN", format!("127.0.0.1:{port}"))
            .spawn()
            .unwrap(),
    );
    let mut intake = infra.spawn(&file, &["intake"]);
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        if let Ok(r) = http.get(&ready).send().await {
            if r.status().as_u16() == 503 {
                break r.text().await.unwrap();
            }
        }
        assert!(std::time::Instant::now() < deadline, "the waiting worker never answered its probes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(answer.contains("redis answers"), "not ready, for Redis: {answer}");
    let alive = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap();
    assert_eq!(alive.status().as_u16(), 200, "alive while it waits");
    // Its probes are served only while it waits: past its first attempt, it is still there (and
    // intake, had it exited, would route nothing below).
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited while Redis was down");
    assert!(intake.try_wait().unwrap().is_none(), "intake exited while Redis was down");

    infra.redis.restart().unwrap();
    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    watch
        .wait_until("every event's email sent", Duration::from_secs(90), |rs| {
            rs.iter().filter(|r| r.state == State::Sent).count() >= EVENTS
        })
        .await;
    assert_eq!(sendgrid.state.accepted().len(), EVENTS);
}
