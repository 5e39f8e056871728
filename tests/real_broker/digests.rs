//! Digests on the real broker: the kill drill of the suite on tansu, with
//! every role a process of its own. Intake and the scheduler are SIGKILLed
//! mid-window while tracking updates arrive; every update ends in exactly
//! one digest, and each window is sent once.

use crate::harness::StatusWatch;
use crate::{tansu_on_sqlite, Real};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tidings_core::status::Reason;

const USERS: usize = 4;
const EVENTS: usize = 200;

fn update(seq: usize) -> String {
    let user = format!("k{}", seq % USERS);
    let order = format!("{user}-O{}", (seq / USERS) % 2);
    let data = serde_json::json!({"user_id": user, "order_id": order, "status": format!("update ev-{seq}"),
        "location": "Lyon", "at": "2026-12-07T12:00:00Z"});
    serde_json::json!({"specversion": "1.0", "id": format!("ev-{seq}"), "type": "shipment.tracking_update",
        "source": "/carrier", "data": data})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digests_are_exact_on_tansu_when_intake_and_scheduler_are_killed_mid_window() {
    let route = "\n[events.\"shipment.tracking_update\"]\ncategory = \"transactional\"\npriority = \"normal\"\n\
                 channels = [\"email\"]\ndigest = { window = \"6s\", max_items = 1000, key = \"/data/order_id\" }\n";
    let real = Real::start(
        tansu_on_sqlite(),
        &format!("latency = \"2ms\"\n{route}"),
        &[("poll_interval = \"500ms\"", "poll_interval = \"100ms\"")],
    );
    let store = tidings::fleet::open_store(&real.config).await.unwrap();
    for u in 0..USERS {
        let prefs = serde_json::json!({"user_id": format!("k{u}"), "timezone": "UTC",
            "email": format!("k{u}@example.com"), "channels": {"email": true}});
        store.set_prefs(&format!("k{u}"), &prefs.to_string()).await.unwrap();
    }
    let watch = StatusWatch::start(&real.config);
    let _worker = real.spawn(&["worker", "--channel", "email"]);
    let mut intake = real.spawn(&["intake"]);
    let mut scheduler = real.spawn(&["scheduler"]);
    let producer = tidings_core::kafka::command_producer(&real.config.kafka).unwrap();
    let kills = [(40, "intake"), (66, "scheduler"), (125, "scheduler"), (155, "intake")];
    let started = std::time::Instant::now();
    // The feed's pace: an update every 100 ms.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..EVENTS {
        tidings::commands::dev::feed_with(&producer, &real.config, &update(seq)).await.unwrap();
        if let Some((_, role)) = kills.iter().find(|(at, _)| *at == seq) {
            let process = if *role == "intake" { &mut intake } else { &mut scheduler };
            process.kill().unwrap();
            process.wait().unwrap();
            println!("SIGKILL {role} after update {seq}, {:.1} s into the feed", started.elapsed().as_secs_f64());
            *process = real.spawn(&[role]);
        }
        pace.tick().await;
    }

    let records = watch
        .wait_until("every update digested", Duration::from_secs(120), |rs| {
            let digested: HashSet<&str> =
                rs.iter().filter(|r| r.reason() == Reason::Digested).map(|r| r.event_id.as_str()).collect();
            digested.len() == EVENTS
        })
        .await;
    let mut window_of: HashMap<&str, &str> = HashMap::new();
    for r in records.iter().filter(|r| r.reason() == Reason::Digested) {
        let digest = r.error.as_deref().unwrap().split(" (").next().unwrap();
        assert_eq!(*window_of.entry(r.event_id.as_str()).or_insert(digest), digest, "{} in two digests", r.event_id);
    }
    let digests: HashSet<&&str> = window_of.values().collect();
    crate::harness::eventually(
        "one email per digest",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async { real.outbox_count() >= digests.len() && store.deferred_len().await.unwrap() == 0 },
    )
    .await;
    assert_eq!(real.outbox_count(), digests.len(), "one email per digest");
    assert_eq!(real.sent_twice(), Vec::<String>::new());
    // Each update in exactly one email, once in its text and once in its HTML.
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    for file in std::fs::read_dir(real.outbox.join("email")).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file.path()).unwrap();
        for id in
            text.split("update ").skip(1).filter_map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '-')).next())
        {
            let (email, times) = seen.entry(id.to_string()).or_insert((name.clone(), 0));
            assert_eq!(*email, name, "{id} is in two emails");
            *times += 1;
        }
    }
    for seq in 0..EVENTS {
        let times = seen.get(&format!("ev-{seq}")).map_or(0, |(_, n)| *n);
        assert_eq!(times, 2, "ev-{seq}: {times} times in its email");
    }
    println!("{EVENTS} updates in {} digests on tansu, each sent once", digests.len());
}
