//! Frequency caps end to end: two intake processes share the caps through
//! Redis, every event is read twice (two partitions, so by both processes
//! or by one twice), and each user gets exactly what the caps allow: no
//! more in any window, and none held or dropped while there was room.

use crate::harness::{self, Infra, StatusWatch};
use chrono::DateTime;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::notification::notification_id;
use tidings_core::status::Reason;
use tidings_core::{Channel, Clock, Config, State};

const USERS: usize = 4;
const CAMPAIGNS: usize = 4;
const ORDERS: usize = 5;

fn prefs(user: &str) -> String {
    serde_json::json!({
        "user_id": user, "timezone": "UTC", "email": format!("{user}@example.com"), "channels": {"email": true}
    })
    .to_string()
}

/// An event of type `ty` with the data of its template's sample.
pub fn event(id: &str, ty: &str, user: &str) -> String {
    let path = format!("{}/templates/{ty}/sample.json", env!("CARGO_MANIFEST_DIR"));
    let mut data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    data["user_id"] = user.into();
    serde_json::json!({"specversion": "1.0", "id": id, "type": ty, "source": "/test", "data": data}).to_string()
}

fn capped(config: &mut Config) {
    let limits = serde_json::json!({
        "caps": {
            "marketing": {"max": 2, "per": "24h"},
            "all_non_critical": {"max": 3, "per": "1h", "categories": ["*"]}
        },
        "categories": {"marketing": {"over_cap": "drop"}}
    });
    config.caps = serde_json::from_value(limits["caps"].clone()).unwrap();
    config.categories = serde_json::from_value(limits["categories"].clone()).unwrap();
    config.validate().unwrap();
}

/// Writes each event twice, on two different partitions of its topic.
async fn feed_twice(config: &Config, events: &[(String, String)]) {
    let producer = tidings_core::kafka::command_producer(&config.kafka).unwrap();
    let mut deliveries = Vec::new();
    for (k, (topic, event)) in events.iter().enumerate() {
        for copy in 0..2 {
            let partition = ((k + copy) % harness::PARTITIONS as usize) as i32;
            let record =
                rdkafka::producer::FutureRecord::<str, [u8]>::to(topic).partition(partition).payload(event.as_bytes());
            deliveries.push(tidings_core::kafka::enqueue(&producer, record).await.unwrap());
        }
    }
    for d in deliveries {
        tidings_core::kafka::delivered(d).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_across_two_intake_processes_and_redelivery() {
    let infra = Infra::start();
    let (smtp, _twilio, mut config) = infra.email_and_sms().await;
    capped(&mut config);
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    let users: Vec<String> = (0..USERS).map(|i| format!("cap-{i}")).collect();
    for u in &users {
        store.set_prefs(u, &prefs(u)).await.unwrap();
    }
    // Every event arrives within seconds: the caps' windows are an hour long.
    let clock = Clock::starting_at("2026-12-07T12:00:00Z".parse().unwrap());
    let watch = StatusWatch::start(&config);
    let worker = Roles { intake: true, scheduler: true, callbacks: false, channels: vec![Channel::Email] };
    let one = fleet::spawn_fleet(config.clone(), store.clone(), clock.clone(), worker).unwrap();
    let two = fleet::spawn_fleet(config.clone(), store.clone(), clock.clone(), harness::intake_only()).unwrap();

    // Interleaved per user: campaigns, orders and a password reset.
    let mut events = Vec::new();
    for i in 0..ORDERS.max(CAMPAIGNS) {
        for u in &users {
            if i < CAMPAIGNS {
                events.push(("marketing.events".to_string(), event(&format!("c{i}-{u}"), "marketing.campaign", u)));
            }
            if i < ORDERS {
                events.push(("orders.events".to_string(), event(&format!("o{i}-{u}"), "order.confirmed", u)));
            }
        }
    }
    for u in &users {
        events.push(("accounts.events".to_string(), event(&format!("r-{u}"), "account.password_reset", u)));
    }
    feed_twice(&config, &events).await;

    let id = |event: &str, user: &str| notification_id("/test", event, Channel::Email, user);
    let mut ids = Vec::new();
    for u in &users {
        ids.extend((0..CAMPAIGNS).map(|i| (u.clone(), "marketing", id(&format!("c{i}-{u}"), u))));
        ids.extend((0..ORDERS).map(|i| (u.clone(), "transactional", id(&format!("o{i}-{u}"), u))));
        ids.push((u.clone(), "security", id(&format!("r-{u}"), u)));
    }
    let decided = |r: &tidings_core::StatusRecord| matches!(r.state, State::Sent | State::Deferred | State::Suppressed);
    watch
        .wait_until("a decision for every notification", Duration::from_secs(90), |rs| {
            let seen: HashSet<&str> = rs.iter().filter(|r| decided(r)).map(|r| r.notification_id.as_str()).collect();
            ids.iter().all(|(_, _, id)| seen.contains(id.as_str()))
        })
        .await;
    // What was held for now goes out: three per user, and the resets.
    watch
        .wait_until("every email due now to be sent", Duration::from_secs(60), |rs| {
            rs.iter().filter(|r| r.state == State::Sent).map(|r| &r.notification_id).collect::<HashSet<_>>().len()
                == USERS * 4
        })
        .await;
    // Every copy read and handled by both intakes and the worker.
    let groups = [(config.group("intake"), config.intake.topics.clone())];
    harness::eventually("every copy to be read", Duration::from_secs(60), Duration::from_millis(200), || async {
        let worker = |p: tidings_core::Priority| (config.group(&format!("worker-email-{p}")), Channel::Email.topic(p));
        groups.iter().all(|(g, topics)| topics.iter().all(|t| harness::uncommitted(&config, g, t) == 0))
            && tidings_core::Priority::ALL.map(worker).iter().all(|(g, t)| harness::uncommitted(&config, g, t) == 0)
    })
    .await;
    let records = watch.records();
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();

    // What the caps admitted, as Redis holds it: notification id -> instant.
    let redis =
        redis::Client::open(config.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let admitted = |user: String, cap: &'static str| {
        let (key, mut conn) = (format!("{{tidings:caps:{user}}}"), redis.clone());
        async move {
            // A version (16 hex digits), then the user's caps.
            let value: Option<String> = redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap();
            let state = value.map(|v| tidings_core::caps::State::decode(&v[16..]).unwrap()).unwrap_or_default();
            let window = state.windows.get(&format!("{cap}:email")).cloned().unwrap_or_default();
            window.admitted.into_iter().map(|(score, id)| (id, score)).collect::<Vec<(u64, i64)>>()
        }
    };
    // The schedule: the notification id and release instant (ms) of each member.
    let schedule: Vec<(String, i64)> = {
        let mut conn = redis.clone();
        let members: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg("tidings:deferred")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        let id =
            |m: &str| serde_json::from_str::<serde_json::Value>(m).unwrap()["notification"]["notification_id"].clone();
        members.iter().map(|(m, score)| (id(m).as_str().unwrap().to_string(), score / 1000)).collect()
    };
    let hour = 3_600_000;
    for u in &users {
        let all = admitted(u.clone(), "all_non_critical").await;
        let campaigns = admitted(u.clone(), "marketing").await;
        // Never a fourth in any hour; the first at once. A message waits
        // either for the third before it to leave the window, or behind
        // what its lane already holds (a user's messages never overtake one
        // another on a channel, and read from other partitions by another
        // process, the user's events have no order): never for an instant
        // that neither the caps nor another message of the lane ask for.
        let times: Vec<i64> = all.iter().map(|(_, t)| *t).collect();
        let first = times[0];
        assert!(times.len() >= 3, "{u}: {times:?}");
        for i in 3..times.len() {
            assert!(times[i] >= times[i - 3] + hour, "{u}: four in an hour: {times:?}");
        }
        for (i, t) in times.iter().enumerate().filter(|(_, t)| **t - first >= 60_000) {
            let capped = i >= 3 && *t == times[i - 3] + hour;
            let laned = times.iter().filter(|x| *x == t).count() > 1;
            assert!(capped || laned, "{u}: held to {t} for nothing: {times:?}");
        }
        assert!(campaigns.len() <= 2, "{u}: {campaigns:?}");
        let at: HashMap<u64, i64> = all.iter().copied().collect();
        for (user, category, id) in ids.iter().filter(|(user, _, _)| user == u) {
            let mine: Vec<_> = records.iter().filter(|r| r.notification_id == *id && decided(r)).collect();
            let has = |state: State| mine.iter().any(|r| r.state == state);
            match (*category, at.get(&tidings_core::caps::short(id))) {
                ("security", admitted) => {
                    assert!(has(State::Sent), "critical: never capped");
                    assert!(admitted.is_none(), "critical: never counted");
                }
                // Admitted with room: sent at once (or through the schedule, due now).
                (_, Some(t)) if *t - times[0] < 60_000 => assert!(has(State::Sent), "{id}: {mine:?}"),
                // Held by the caps: on the schedule once, released at
                // exactly the instant it was counted at.
                (_, Some(t)) => {
                    assert!(!has(State::Sent) && !has(State::Suppressed) && has(State::Deferred), "{id}: {mine:?}");
                    let held: Vec<i64> = schedule.iter().filter(|(n, _)| n == id).map(|(_, at)| *at).collect();
                    assert_eq!(held, [*t], "{id}: {mine:?}");
                }
                ("marketing", None) => {
                    for r in &mine {
                        assert_eq!(r.state, State::Suppressed, "{r:?}");
                        assert_eq!(r.reason(), Reason::FrequencyCap, "{r:?}");
                        assert!(r.error.as_deref().unwrap().starts_with("frequency cap"), "{r:?}");
                    }
                    assert!(!mine.is_empty());
                }
                _ => panic!("{user}: an order neither admitted nor dropped: {mine:?}"),
            }
        }
        // What `prefs get` shows agrees.
        let end = DateTime::from_timestamp_millis(times[2]).unwrap();
        let shown = tidings::commands::prefs::limits(&config, store.as_ref(), u, end).await.unwrap();
        let all = format!("cap all_non_critical on email: 3 of 3 in the last 1h, {} held for later", times.len() - 3);
        let mut expected = vec![all];
        if !campaigns.is_empty() {
            // A campaign admitted behind what the user's lane held is counted later.
            let held = campaigns.iter().filter(|(_, t)| *t > times[2]).count();
            let now = campaigns.len() - held;
            expected.push(format!("cap marketing on email: {now} of 2 in the last 1day, {held} held for later"));
        }
        assert_eq!(shown, expected, "{u}");
    }
    // One email per notification sent, though each event was read twice.
    let sent: HashSet<&str> =
        records.iter().filter(|r| r.state == State::Sent).map(|r| r.notification_id.as_str()).collect();
    assert_eq!(smtp.received().len(), sent.len(), "one email per notification sent");
}

/// A campaign with a send window lands at a civil hour in every zone: at
/// once where the window is open, at the next local opening elsewhere,
/// and the scheduler delivers it then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_windows_hold_a_campaign_to_each_zones_next_opening() {
    let infra = Infra::start();
    let (smtp, _twilio, mut config) = infra.email_and_sms().await;
    config.categories = serde_json::from_value(serde_json::json!({
        "marketing": {"send_window": {"from": "10:00", "to": "18:00"}}
    }))
    .unwrap();
    config.validate().unwrap();
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    // 06:00Z: 15:00 in Tokyo, 19:00 in Tonga (UTC+13), 20:00 the day before in Honolulu (UTC-10).
    let zones = [("tokyo", "Asia/Tokyo"), ("tonga", "Pacific/Tongatapu"), ("honolulu", "Pacific/Honolulu")];
    for (user, zone) in zones {
        let mut p: serde_json::Value = serde_json::from_str(&prefs(user)).unwrap();
        p["timezone"] = zone.into();
        store.set_prefs(user, &p.to_string()).await.unwrap();
    }
    let clock = Clock::starting_at("2026-12-07T06:00:00Z".parse().unwrap());
    let watch = StatusWatch::start(&config);
    let roles = Roles { intake: true, scheduler: true, callbacks: false, channels: vec![Channel::Email] };
    let fleet = fleet::spawn_fleet(config.clone(), store.clone(), clock.clone(), roles).unwrap();
    let events: Vec<String> = zones.iter().map(|(u, _)| event(&format!("camp-{u}"), "marketing.campaign", u)).collect();
    tidings::commands::dev::feed(&config, &events.join("\n")).await.unwrap();
    let id = |user: &str| notification_id("/test", &format!("camp-{user}"), Channel::Email, user);
    let wait = Duration::from_secs(60);

    watch.wait_for_status(&id("tokyo"), State::Sent, wait).await;
    let tonga = watch.wait_for_status(&id("tonga"), State::Deferred, wait).await;
    assert_eq!(tonga.not_before, Some("2026-12-07T21:00:00Z".parse().unwrap()), "10:00 the next day in Tonga");
    let honolulu = watch.wait_for_status(&id("honolulu"), State::Deferred, wait).await;
    assert_eq!(honolulu.not_before, Some("2026-12-07T20:00:00Z".parse().unwrap()), "10:00 in Honolulu");
    assert_eq!(smtp.received().len(), 1);

    // 20:00Z: Honolulu's window opens; Tonga's an hour later.
    clock.advance(Duration::from_secs(14 * 3600));
    watch.wait_for_status(&id("honolulu"), State::Sent, wait).await;
    assert!(!watch.records().iter().any(|r| r.notification_id == id("tonga") && r.state == State::Sent));
    clock.advance(Duration::from_secs(3600));
    watch.wait_for_status(&id("tonga"), State::Sent, wait).await;
    assert_eq!(smtp.received().len(), 3);
    fleet.shutdown().await.unwrap();
}
