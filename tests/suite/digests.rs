//! Digests end to end: a user's chatty events of one type and key become
//! one notification per window, whatever reads them twice, and however
//! many arrive at the same instant.

use crate::harness::{self, Infra, StatusWatch};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::channel::INTAKE_DLQ_TOPIC;
use tidings_core::status::Reason;
use tidings_core::{Channel, Clock, Config, State};

pub const TYPE: &str = "shipment.tracking_update";

/// The digest route of the tests: email, by order, an hour, five at most;
/// or daily at `at` when given.
pub fn digest_route(config: &mut Config, at: Option<&str>) {
    let digest = match at {
        None => serde_json::json!({"window": "1h", "max_items": 5, "key": "/data/order_id"}),
        Some(at) => serde_json::json!({"at": at, "max_items": 50}),
    };
    let route = serde_json::json!({
        "category": "transactional", "priority": "normal", "channels": ["email"], "digest": digest
    });
    config.events.insert(TYPE.into(), serde_json::from_value(route).unwrap());
    config.validate().unwrap();
}

pub fn prefs(user: &str, zone: &str) -> String {
    serde_json::json!({
        "user_id": user, "timezone": zone, "email": format!("{user}@example.com"), "channels": {"email": true}
    })
    .to_string()
}

/// A tracking update `id` of `order` for `user` (no order: the key is missing).
pub fn update(id: &str, user: &str, order: Option<&str>) -> String {
    let mut data = serde_json::json!({"user_id": user, "status": format!("update {id}"), "location": "Lyon",
        "at": "2026-12-07T12:00:00Z"});
    if let Some(order) = order {
        data["order_id"] = order.into();
    }
    serde_json::json!({"specversion": "1.0", "id": id, "type": TYPE, "source": "/carrier", "data": data}).to_string()
}

/// The subjects of the mail received, counted.
fn subjects(smtp: &harness::smtp::SmtpServer) -> HashMap<String, usize> {
    let mut counted = HashMap::new();
    for m in smtp.received() {
        *counted.entry(m.header("Subject").unwrap_or_default()).or_default() += 1;
    }
    counted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_instant_events_make_one_digest_a_full_one_goes_at_once_and_a_late_one_opens_the_next() {
    let infra = Infra::start();
    let (smtp, _twilio, mut config) = infra.email_and_sms().await;
    digest_route(&mut config, None);
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("ana", &prefs("ana", "Europe/Paris")).await.unwrap();
    let clock = Clock::starting_at("2026-12-07T12:00:00Z".parse().unwrap());
    let watch = StatusWatch::start(&config);
    let roles = Roles { intake: true, scheduler: true, callbacks: false, channels: vec![Channel::Email] };
    let fleet = fleet::spawn_fleet(config.clone(), store.clone(), clock.clone(), roles).unwrap();

    // Three updates of order A at the same instant, each written twice; five
    // of order B (full at five) and a sixth, which opens B's next window in
    // the same batch; one without an order.
    let mut events: Vec<String> = Vec::new();
    for i in 0..3 {
        events.push(update(&format!("a{i}"), "ana", Some("A")));
    }
    for i in 0..6 {
        events.push(update(&format!("b{i}"), "ana", Some("B")));
    }
    let twice: Vec<String> = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
    tidings::commands::dev::feed(&config, &(twice.join("\n") + "\n" + &update("x", "ana", None))).await.unwrap();

    let wait = Duration::from_secs(60);
    // B filled up: sent now, with its five updates (not held behind the
    // window the sixth opened: one digest's windows share a lane).
    watch
        .wait_until("B's digest sent", wait, |rs| {
            rs.iter().any(|r| r.state == State::Sent && r.event_type == TYPE && r.user_id == "ana")
        })
        .await;
    harness::eventually("B's email", wait, Duration::from_millis(100), || async {
        subjects(&smtp).get("5 updates on order B") == Some(&1)
    })
    .await;
    // Every event ends `digested`, once per read.
    let digested = watch
        .wait_until("every read digested", wait, |rs| {
            rs.iter().filter(|r| r.reason() == Reason::Digested).count() == 18
        })
        .await;
    let into: HashMap<&str, &str> = digested
        .iter()
        .filter(|r| r.reason() == Reason::Digested)
        .map(|r| (r.event_id.as_str(), r.error.as_deref().unwrap()))
        .collect();
    assert!(into["a0"].contains("window 1 of digest `shipment.tracking_update:A`"), "{}", into["a0"]);
    // The event without its key is dead-lettered with the reason.
    let letters = harness::read_topic(&config, INTAKE_DLQ_TOPIC, 1);
    let error = letters[0].headers["dlq_error"].clone();
    assert!(error.contains("digest key /data/order_id is missing"), "{error}");

    // An hour on, A's window closes: one digest of its three updates; and
    // B's second, of its sixth.
    clock.advance(Duration::from_secs(3600));
    harness::eventually("A's email", wait, Duration::from_millis(100), || async {
        let mail = subjects(&smtp);
        mail.get("3 updates on order A") == Some(&1) && mail.get("1 updates on order B") == Some(&1)
    })
    .await;
    // An update read after A's window closed opens the next one.
    tidings::commands::dev::feed(&config, &update("a3", "ana", Some("A"))).await.unwrap();
    let open = watch
        .wait_until("the late update digested", wait, |rs| {
            rs.iter().any(|r| r.event_id == "a3" && r.reason() == Reason::Digested)
        })
        .await;
    let late = open.iter().find(|r| r.event_id == "a3" && r.reason() == Reason::Digested).unwrap();
    assert!(late.error.as_deref().unwrap().contains("window 2 of digest"), "{late:?}");
    let shown = store.open_digests("ana").await.unwrap();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!((shown[0].name.as_str(), shown[0].window, shown[0].count), ("shipment.tracking_update:A", 2, 1));
    let printed = tidings::commands::prefs::limits(&config, store.as_ref(), "ana", clock.now()).await.unwrap();
    assert_eq!(printed.len(), 1);
    assert!(
        printed[0].starts_with("digest shipment.tracking_update:A window 2: 1 items, released at 2026-12-07T1"),
        "{printed:?}"
    );
    clock.advance(Duration::from_secs(3600));
    harness::eventually("the second digest of A", wait, Duration::from_millis(100), || async {
        subjects(&smtp).get("1 updates on order A") == Some(&1)
    })
    .await;
    let mail = subjects(&smtp);
    assert_eq!(mail.values().sum::<usize>(), 4, "{mail:?}");
    assert!(store.open_digests("ana").await.unwrap().is_empty());
    fleet.shutdown().await.unwrap();
}

/// The kill drill: intake and scheduler processes SIGKILLed mid-window
/// (intake while it adds events, the scheduler as windows close), each
/// started again at once, while updates arrive for eight digests. Every
/// update ends in exactly one digest, and each window is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digests_are_exact_when_intake_and_scheduler_are_killed_mid_window() {
    const USERS: usize = 4;
    const EVENTS: usize = 240;
    let infra = Infra::start();
    let (smtp, twilio, mut config) = infra.email_and_sms().await;
    let route = "\n[events.\"shipment.tracking_update\"]\ncategory = \"transactional\"\npriority = \"normal\"\n\
                 channels = [\"email\"]\ndigest = { window = \"6s\", max_items = 1000, key = \"/data/order_id\" }\n";
    let dir = tempfile::tempdir().unwrap();
    let providers = harness::smtp_and_twilio(smtp.port, &twilio.uri()) + route;
    let channels = "\n[channels.email]\nproviders = [\"smtp\"]\n";
    let file = harness::config_file(
        dir.path(),
        &providers,
        channels,
        &[("poll_interval = \"500ms\"", "poll_interval = \"100ms\"")],
    );
    digest_route(&mut config, None);
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    for u in 0..USERS {
        store.set_prefs(&format!("k{u}"), &prefs(&format!("k{u}"), "UTC")).await.unwrap();
    }
    let watch = StatusWatch::start(&config);
    let worker =
        fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), harness::worker_only(Channel::Email))
            .unwrap();
    let mut intake = infra.spawn(&file, &["intake"]);
    let mut scheduler = infra.spawn(&file, &["scheduler"]);

    // An update every 100 ms, round the eight (user, order) pairs; the kills
    // at fixed points of the feed (the windows close about 6 s after they open).
    let producer = tidings_core::kafka::command_producer(&config.kafka).unwrap();
    let started = std::time::Instant::now();
    // The feed's pace: an update every 100 ms.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let kills = [(40, "intake"), (66, "scheduler"), (125, "scheduler"), (155, "intake"), (190, "intake")];
    for seq in 0..EVENTS {
        let (user, order) = (format!("k{}", seq % USERS), format!("O{}", (seq / USERS) % 2));
        let event = update(&format!("ev-{seq}"), &user, Some(&format!("{user}-{order}")));
        tidings::commands::dev::feed_with(&producer, &config, &event).await.unwrap();
        if let Some((_, role)) = kills.iter().find(|(at, _)| *at == seq) {
            let process = if *role == "intake" { &mut intake } else { &mut scheduler };
            process.kill().unwrap();
            process.wait().unwrap();
            println!("SIGKILL {role} after update {seq}, {:.1} s into the feed", started.elapsed().as_secs_f64());
            *process = infra.spawn(&file, &[role]);
        }
        pace.tick().await;
    }

    // Every update digested (once per read), and every digest sent.
    let wait = Duration::from_secs(120);
    let records = watch
        .wait_until("every update digested", wait, |rs| {
            let digested: std::collections::HashSet<&str> =
                rs.iter().filter(|r| r.reason() == Reason::Digested).map(|r| r.event_id.as_str()).collect();
            digested.len() == EVENTS
        })
        .await;
    let mut window_of: HashMap<&str, String> = HashMap::new();
    for r in records.iter().filter(|r| r.reason() == Reason::Digested) {
        let said = r.error.as_deref().unwrap();
        let digest = said.split(" (").next().unwrap().to_string();
        let first = window_of.entry(r.event_id.as_str()).or_insert(digest.clone());
        assert_eq!(*first, digest, "{}: read twice, put in two digests", r.event_id);
    }
    let digests: std::collections::HashSet<&String> = window_of.values().collect();
    harness::eventually("one email per digest", wait, Duration::from_millis(200), || async {
        smtp.received().len() >= digests.len()
    })
    .await;
    // Settled: nothing more on the schedule, no digest left open.
    harness::eventually("the schedule to empty", wait, Duration::from_millis(200), || async {
        store.deferred_len().await.unwrap() == 0
    })
    .await;
    let mail = smtp.received();
    assert_eq!(mail.len(), digests.len(), "one email per digest, {} windows", digests.len());
    // Each update in exactly one email, once (in its text and its HTML part).
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    for (i, m) in mail.iter().enumerate() {
        let ids = m.data.split("update ").skip(1);
        for id in ids.filter_map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '-')).next()) {
            let (email, times) = seen.entry(id.to_string()).or_insert((i, 0));
            assert_eq!(*email, i, "{id} is in two emails");
            *times += 1;
        }
    }
    for seq in 0..EVENTS {
        let (_, times) = seen.get(&format!("ev-{seq}")).copied().unwrap_or_default();
        assert_eq!(times, 2, "ev-{seq}: {times} times in its email (text and HTML once each)");
    }
    println!("{EVENTS} updates in {} digests, each sent once", digests.len());
    intake.kill().unwrap();
    scheduler.kill().unwrap();
    worker.shutdown().await.unwrap();
}

/// A daily digest goes at 09:00 in the user's zone, the night the clocks
/// go back included: 07:00Z the day before, 08:00Z that day in Paris.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daily_digest_lands_at_nine_local_across_a_dst_change() {
    use chrono::{DateTime, Timelike, Utc};
    let infra = Infra::start();
    let (smtp, _twilio, mut config) = infra.email_and_sms().await;
    digest_route(&mut config, Some("09:00"));
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("eve", &prefs("eve", "Europe/Paris")).await.unwrap();
    // Saturday 24 October 2026, 08:00 in Paris (summer time, UTC+2).
    let clock = Clock::starting_at("2026-10-24T06:00:00Z".parse().unwrap());
    let watch = StatusWatch::start(&config);
    let roles = Roles { intake: true, scheduler: true, callbacks: false, channels: vec![Channel::Email] };
    let fleet = fleet::spawn_fleet(config.clone(), store.clone(), clock.clone(), roles).unwrap();
    let wait = Duration::from_secs(60);
    let digested = |id: &'static str| {
        move |rs: &[tidings_core::StatusRecord]| rs.iter().any(|r| r.event_id == id && r.reason() == Reason::Digested)
    };

    tidings::commands::dev::feed(&config, &[update("d1", "eve", None), update("d2", "eve", None)].join("\n"))
        .await
        .unwrap();
    watch.wait_until("both digested", wait, |rs| digested("d1")(rs) && digested("d2")(rs)).await;
    let paris: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
    let open = store.open_digests("eve").await.unwrap();
    assert_eq!(open[0].closes, "2026-10-24T07:00:00Z".parse::<DateTime<Utc>>().unwrap());
    assert_eq!((open[0].closes.with_timezone(&paris).hour(), open[0].count), (9, 2));

    // 09:00 comes: the digest goes.
    clock.advance(Duration::from_secs(3600 + 60));
    let sent = |count: &'static str| {
        let smtp = &smtp;
        move || async move { subjects(smtp).keys().any(|s| s.starts_with(count)) }
    };
    harness::eventually("Saturday's digest", wait, Duration::from_millis(100), sent("2 updates")).await;
    // The next opens on Saturday; the clocks go back that night (winter
    // time, UTC+1), and it closes at 09:00 on Sunday, 08:00Z.
    tidings::commands::dev::feed(&config, &update("d3", "eve", None)).await.unwrap();
    watch.wait_until("the third digested", wait, digested("d3")).await;
    let open = store.open_digests("eve").await.unwrap();
    assert_eq!(open[0].closes, "2026-10-25T08:00:00Z".parse::<DateTime<Utc>>().unwrap());
    assert_eq!(open[0].closes.with_timezone(&paris).hour(), 9);
    clock.advance(Duration::from_secs(25 * 3600));
    harness::eventually("Sunday's digest", wait, Duration::from_millis(100), sent("1 updates")).await;
    assert_eq!(smtp.received().len(), 2);
    fleet.shutdown().await.unwrap();
}
