//! A scheduler process killed (SIGKILL) while it moves due notifications back
//! to their channel topic: a restarted scheduler loses nothing, and after the
//! worker's dedupe nothing is sent twice.

use crate::harness;
use crate::harness::smtp::SmtpServer;
use crate::harness::{smtp_and_twilio, user, Infra, StatusWatch};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::notification::{notification_id, Deferred};
use tidings_core::store::lane;
use tidings_core::{Channel, Clock, State};

const HELD: usize = 3000;
const USERS: usize = 200;

/// A notification as intake defers it.
pub fn deferred(seq: usize) -> (String, String, String) {
    let user = format!("u-{}", seq % USERS);
    let event = format!("evt-{seq}");
    let id = notification_id("/test", &event, Channel::Email, &user);
    let data = serde_json::json!({"order_id": format!("o-{seq:06}"), "total": "1.00", "currency": "EUR", "items": [],
        "item_count": 1, "placed_at": "2026-11-26T10:00:00Z", "order_url": "https://shop.example/o"});
    let n = harness::email_notification(&id, &event, &user, &format!("{user}@example.com"), data);
    let member =
        serde_json::to_string(&Deferred { notification: n, correlation_id: "c".into(), traceparent: None }).unwrap();
    (id, lane(&user, Channel::Email), member)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_scheduler_loses_nothing_and_the_worker_sends_nothing_twice() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let providers = smtp_and_twilio(smtp.port, "http://127.0.0.1:9");
    let config = Arc::new(infra.config(&providers, &[(Channel::Email, &["smtp"])]));
    let store = fleet::open_store(&config).await.unwrap();
    for i in 0..USERS {
        store.set_prefs(&format!("u-{i}"), &user(i)).await.unwrap();
    }
    let due = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut ids = HashSet::new();
    for seq in 0..HELD {
        let (id, l, member) = deferred(seq);
        store.defer(&l, &member, due).await.unwrap();
        ids.insert(id);
    }

    let watch = StatusWatch::start(&config);
    let worker = fleet::spawn_fleet(
        config.clone(),
        store.clone(),
        Clock::system(),
        Roles { intake: false, scheduler: false, callbacks: false, channels: vec![Channel::Email] },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(
        dir.path(),
        &providers,
        "\n[channels.email]\nproviders = [\"smtp\"]\n",
        &[("batch = 500\nclaim_lease = \"30s\"", "batch = 50\nclaim_lease = \"2s\"")],
    );

    let mut scheduler = infra.spawn(&file, &["scheduler"]);
    // Kill it part-way through the move.
    harness::eventually("the scheduler to move some", Duration::from_secs(60), Duration::from_millis(5), || async {
        store.deferred_len().await.unwrap() <= (HELD - 325) as u64
    })
    .await;
    scheduler.kill().unwrap();
    scheduler.wait().unwrap();
    let left = store.deferred_len().await.unwrap();
    assert!(left > 0, "the scheduler was killed before it finished");

    let mut scheduler = infra.spawn(&file, &["scheduler"]);
    let records = watch
        .wait_until("every held notification sent", Duration::from_secs(120), |rs| {
            rs.iter().filter(|r| r.state == State::Sent).map(|r| &r.notification_id).collect::<HashSet<_>>().len()
                == HELD
        })
        .await;
    scheduler.kill().unwrap();
    scheduler.wait().unwrap();
    worker.shutdown().await.unwrap();

    let sent: HashSet<_> =
        records.iter().filter(|r| r.state == State::Sent).map(|r| r.notification_id.clone()).collect();
    assert_eq!(sent, ids, "nothing lost");
    let mut copies: HashMap<String, usize> = HashMap::new();
    for m in smtp.received() {
        *copies.entry(m.header("Message-ID").unwrap()).or_default() += 1;
    }
    assert_eq!(copies.len(), HELD);
    assert!(copies.values().all(|n| *n == 1), "a notification reached the relay twice");
    assert_eq!(store.deferred_len().await.unwrap(), 0, "the schedule is empty");
    let republished = records.iter().filter(|r| r.state == State::Duplicate).count();
    eprintln!("{left} held at the kill; {republished} republished copies absorbed by dedupe");
}
