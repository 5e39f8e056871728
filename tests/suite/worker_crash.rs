//! A worker process killed (SIGKILL) between provider calls and offset
//! commits, some of its sends stalled inside the relay: after a restart
//! nothing is lost and nothing reaches the relay twice. What the killed
//! worker had recorded becomes `duplicate`; what it was sending when it died
//! is taken over and ends `unconfirmed` (normal priority: at most once).

use crate::harness;
use crate::harness::smtp::SmtpServer;
use crate::harness::{order_event, smtp_and_twilio, Infra, StatusWatch};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::{Channel, Clock, State};

const EVENTS: usize = 400;

/// Notification ids whose dedupe record (an outcome, not a claim) is in Redis.
async fn recorded_outcomes(redis_url: &str) -> HashSet<String> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("tidings:dedupe:*").query_async(&mut conn).await.unwrap();
    let mut out = HashSet::new();
    for key in keys {
        let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
        if value.is_some_and(|v| !v.starts_with(tidings_core::store::CLAIM_MARK)) {
            out.insert(key.trim_start_matches("tidings:dedupe:").to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_worker_loses_nothing_and_resends_nothing_it_recorded() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let mut config = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    config.worker.claim_lease = Duration::from_secs(2);
    let config = Arc::new(config);
    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(
        dir.path(),
        &smtp_and_twilio(smtp.port, "http://127.0.0.1:9"),
        "\n[channels.email]\nproviders = [\"smtp\"]\n",
        &[("claim_lease = \"30s\"\ndedupe_ttl", "claim_lease = \"2s\"\ndedupe_ttl")],
    );

    let store = fleet::open_store(&config).await.unwrap();
    for i in 0..50 {
        store.set_prefs(&format!("u-{i}"), &harness::email_user(i)).await.unwrap();
    }
    let watch = StatusWatch::start(&config);
    let intake = fleet::spawn_fleet(
        config.clone(),
        store,
        Clock::system(),
        Roles { intake: true, scheduler: false, callbacks: false, channels: vec![] },
    )
    .unwrap();

    // The relay takes 150 messages, then stops answering: sends are in flight,
    // some accepted with no answer, and offsets behind them are not committed.
    smtp.shared.stall_after.store(150, Ordering::SeqCst);
    let mut worker = infra.spawn(&file, &["worker", "--channel", "email"]);
    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % 50)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    watch.wait_until("the relay to take 150 messages", Duration::from_secs(90), |_| smtp.received().len() > 150).await;
    watch
        .wait_until("sends to settle into the stall", Duration::from_secs(30), |rs| {
            rs.iter().filter(|r| r.state == State::Sent).count() >= 100
        })
        .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    let recorded = recorded_outcomes(&infra.redis.url()).await;
    assert!(!recorded.is_empty());

    smtp.shared.stall_after.store(usize::MAX, Ordering::SeqCst);
    let mut worker = infra.spawn(&file, &["worker", "--channel", "email"]);
    let records = watch
        .wait_until("every notification to end", Duration::from_secs(120), |rs| {
            rs.iter().filter(|r| r.state.is_terminal()).map(|r| &r.notification_id).collect::<HashSet<_>>().len()
                == EVENTS
        })
        .await;
    // Every notification has an outcome record now, so a record the restarted
    // worker reads again later (its offset not yet committed) becomes a
    // `duplicate` status and can send nothing: what the relay has is final.
    worker.kill().unwrap();
    worker.wait().unwrap();
    intake.shutdown().await.unwrap();

    let mut sends: HashMap<String, usize> = HashMap::new();
    for m in smtp.received() {
        let id = m.header("Message-ID").unwrap();
        *sends.entry(id.trim_matches(['<', '>']).trim_end_matches("@tidings").to_string()).or_default() += 1;
    }
    assert!(sends.values().all(|n| *n == 1), "a notification reached the relay twice");
    let ended = |state: State| -> HashSet<&str> {
        records.iter().filter(|r| r.state == state).map(|r| r.notification_id.as_str()).collect()
    };
    let (sent, unconfirmed) = (ended(State::Sent), ended(State::Unconfirmed));
    assert!(sent.is_disjoint(&unconfirmed), "one terminal state each");
    assert_eq!(sent.len() + unconfirmed.len(), EVENTS, "no notification was lost");
    assert!(sent.iter().all(|id| sends.contains_key(*id)), "every one reported sent reached the relay");
    assert!(!unconfirmed.is_empty(), "the sends stalled at the kill were taken over, not sent again");
    for id in &recorded {
        assert_eq!(sends.get(id), Some(&1), "{id} had a dedupe record before the kill");
    }
}
