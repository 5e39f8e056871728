//! Bad input ends on a dead-letter topic or as `suppressed` with its reason,
//! while the rest flows.

use crate::harness;
use crate::harness::smtp::SmtpServer;
use crate::harness::{email_user, order_event, smtp_and_twilio, Infra, StatusWatch};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::channel::INTAKE_DLQ_TOPIC;
use tidings_core::dead_letter;
use tidings_core::notification::notification_id;
use tidings_core::store::lane;
use tidings_core::{Channel, Clock, State};
use tidings_intake::scheduler::release_due;

/// Every dead letter on `topic`: (value, error header), until `n` arrive or the deadline.
fn dead_letters(config: &tidings_core::Config, topic: &str, n: usize) -> Vec<(String, String)> {
    harness::read_topic(config, topic, n)
        .into_iter()
        .map(|r| {
            let error = r.headers.get(tidings_core::dead_letter::ERROR).cloned().unwrap_or_default();
            (r.value, error)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_unknown_and_unknown_user_are_reported_while_others_flow() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let config =
        Arc::new(infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]));
    let store = fleet::open_store(&config).await.unwrap();
    // u-1 has email only, so the good event makes exactly one notification.
    store.set_prefs("u-1", &email_user(1)).await.unwrap();

    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    let malformed = r#"{"specversion": "1.0", "id": "broken""#;
    let unknown =
        r#"{"specversion":"1.0","id":"evt-u","type":"loyalty.points_expired","source":"/t","data":{"user_id":"u-1"}}"#;
    let events =
        [malformed.to_string(), unknown.to_string(), order_event(1, "u-nobody"), order_event(2, "u-1")].join("\n");
    tidings::commands::dev::feed(&config, &events).await.unwrap();

    let good = notification_id("/test", "evt-2", Channel::Email, "u-1");
    let sent = watch.wait_for_status(&good, State::Sent, Duration::from_secs(60)).await;
    assert_eq!(sent.provider.as_deref(), Some("smtp"));

    let nobody = notification_id("/test", "evt-1", Channel::Email, "u-nobody");
    let suppressed = watch.wait_for_status(&nobody, State::Suppressed, Duration::from_secs(60)).await;
    assert_eq!(suppressed.error.as_deref(), Some("no preferences for user u-nobody"));

    let letters = dead_letters(&config, INTAKE_DLQ_TOPIC, 2);
    assert_eq!(letters.len(), 2, "{letters:?}");
    let malformed_letter = letters.iter().find(|(v, _)| v == malformed).expect("the malformed value, unchanged");
    assert!(malformed_letter.1.contains("not valid JSON"), "{}", malformed_letter.1);
    let unknown_letter = letters.iter().find(|(v, _)| v == unknown).expect("the unknown event, unchanged");
    assert_eq!(unknown_letter.1, "unknown event type `loyalty.points_expired`");
    assert_eq!(smtp.received().len(), 1);
    fleet.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_template_variable_dead_letters_and_an_opt_out_after_queueing_suppresses() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let config =
        Arc::new(infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]));
    let store = fleet::open_store(&config).await.unwrap();
    let mut u1: serde_json::Value = serde_json::from_str(&email_user(1)).unwrap();
    store.set_prefs("u-1", &u1.to_string()).await.unwrap();

    // Intake only: the notification is queued while the user still wants it.
    let watch = StatusWatch::start(&config);
    let intake_only = Roles { intake: true, scheduler: false, callbacks: false, channels: vec![] };
    let intake = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), intake_only).unwrap();
    let mut no_total: serde_json::Value = serde_json::from_str(&order_event(7, "u-1")).unwrap();
    no_total["data"].as_object_mut().unwrap().remove("total");
    let events = [no_total.to_string(), order_event(8, "u-1")].join("\n");
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    watch
        .wait_until("intake to route both events", Duration::from_secs(60), |_| {
            intake.progress.published.load(std::sync::atomic::Ordering::Relaxed) == 2
        })
        .await;
    intake.shutdown().await.unwrap();

    // The user mutes everything before a worker picks the messages up.
    u1["muted"] = true.into();
    store.set_prefs("u-1", &u1.to_string()).await.unwrap();
    let workers = Roles { intake: false, scheduler: false, callbacks: false, channels: vec![Channel::Email] };
    let fleet = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), workers).unwrap();
    for seq in [7, 8] {
        let id = notification_id("/test", &format!("evt-{seq}"), Channel::Email, "u-1");
        let r = watch.wait_for_status(&id, State::Suppressed, Duration::from_secs(60)).await;
        assert_eq!(r.error.as_deref(), Some("user is muted"));
    }
    fleet.shutdown().await.unwrap();

    // Unmuted, a fresh event with a missing variable dead-letters with the
    // render error naming the variable and the file, while another user's
    // order beside it is delivered.
    u1["muted"] = false.into();
    store.set_prefs("u-1", &u1.to_string()).await.unwrap();
    store.set_prefs("u-2", &email_user(2)).await.unwrap();
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    let mut missing: serde_json::Value = serde_json::from_str(&order_event(9, "u-1")).unwrap();
    missing["data"].as_object_mut().unwrap().remove("total");
    tidings::commands::dev::feed(&config, &[missing.to_string(), order_event(10, "u-2")].join("\n")).await.unwrap();
    let id = notification_id("/test", "evt-9", Channel::Email, "u-1");
    let r = watch.wait_for_status(&id, State::DeadLettered, Duration::from_secs(60)).await;
    assert_eq!(r.error_class, Some(tidings_core::status::ErrorClass::Render));
    let why = r.error.as_deref().unwrap();
    assert!(why.contains("total") && why.contains("order.confirmed/email.text"), "{why}");
    let other = notification_id("/test", "evt-10", Channel::Email, "u-2");
    watch.wait_for_status(&other, State::Sent, Duration::from_secs(60)).await;
    let letters = dead_letters(&config, &Channel::Email.dlq_topic(), 1);
    assert_eq!(letters.len(), 1);
    let received = smtp.received();
    assert_eq!(received.len(), 1, "only the other user's order reached an inbox");
    assert_eq!(received[0].rcpt, ["<user2@example.com>"]);
    fleet.shutdown().await.unwrap();
}

/// An entry on the deferral schedule that does not read (another version
/// wrote it, or someone by hand) is dead-lettered unchanged, its lane freed
/// when the lane still reads, and the schedule goes on; `dlq replay` leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_deferred_entry_is_dead_lettered_and_the_schedule_goes_on() {
    let infra = Infra::start();
    let config = infra.config(&smtp_and_twilio(9, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let store = fleet::open_store(&config).await.unwrap();
    let due = chrono::Utc::now() - chrono::Duration::seconds(1);
    let garbage = "not json at all";
    let older = r#"{"notification": {"user_id": "u-7", "channel": "email", "shape": "old"}}"#;
    let u7 = lane("u-7", Channel::Email);
    store.defer("u-3:email", garbage, due).await.unwrap();
    store.defer(&u7, older, due).await.unwrap();

    let producer = tidings_core::kafka::producer(&config.kafka).unwrap();
    let released = release_due(&config, &store, &producer, &Clock::system()).await.unwrap();
    assert_eq!(released, 0, "nothing readable was published");
    assert_eq!(store.deferred_len().await.unwrap(), 0, "both left the schedule");
    let holds = store.hydrate(&[], std::slice::from_ref(&u7)).await.unwrap().holds;
    assert_eq!(holds, vec![None], "the lane that still read was freed");

    let letters = harness::read_topic(&config, INTAKE_DLQ_TOPIC, 2);
    assert_eq!(letters.len(), 2);
    for value in [garbage, older] {
        let letter = letters.iter().find(|r| r.value == value).expect("the entry, unchanged");
        assert_eq!(letter.headers[dead_letter::ERROR_CLASS], "poison");
        assert_eq!(letter.headers[dead_letter::ORIGINAL_TOPIC], dead_letter::SCHEDULE);
        assert!(letter.headers[dead_letter::ERROR].starts_with("unreadable deferred entry"));
    }

    let dir = tempfile::tempdir().unwrap();
    let file = harness::config_file(dir.path(), "", "", &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["dlq", "replay", "--from", "intake"])
        .env("TIDINGS_CONFIG", &file)
        .envs(infra.env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("replayed 0 dead letters") && stdout.contains("left 2 from the deferral schedule"),
        "{stdout}"
    );
}

/// An event whose notification is larger than the producer writes (here a
/// 20 kB `message.max.bytes`) is dead-lettered with the reason; the letter,
/// too large itself, goes without its value; intake goes on with the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_too_large_to_route_is_dead_lettered_and_intake_goes_on() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let unlimited = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let mut config = unlimited.clone();
    config.kafka.options.insert("message.max.bytes".into(), "20000".into());
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("u-1", &email_user(1)).await.unwrap();
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();

    let mut big: serde_json::Value = serde_json::from_str(&order_event(1, "u-1")).unwrap();
    big["data"]["note"] = "x".repeat(30_000).into();
    let events = [big.to_string(), order_event(2, "u-1")].join("\n");
    tidings::commands::dev::feed(&unlimited, &events).await.unwrap();

    let good = notification_id("/test", "evt-2", Channel::Email, "u-1");
    watch.wait_for_status(&good, State::Sent, Duration::from_secs(60)).await;
    let letters = harness::read_topic(&config, INTAKE_DLQ_TOPIC, 1);
    assert_eq!(letters.len(), 1);
    let error = &letters[0].headers[dead_letter::ERROR];
    assert!(error.contains("tidings.email.normal would be") && error.contains("more than the 20000"), "{error}");
    assert!(error.contains("value (") && error.contains("is left out"), "{error}");
    assert_eq!(letters[0].headers[dead_letter::ORIGINAL_OFFSET], "0");
    let big_id = notification_id("/test", "evt-1", Channel::Email, "u-1");
    assert!(watch.records().iter().all(|r| r.notification_id != big_id), "nothing of it went on");
    assert_eq!(smtp.received().len(), 1);
    fleet.shutdown().await.unwrap();
}

/// A deferred notification larger than the producer now writes is
/// dead-lettered unchanged and leaves the schedule; the pass does not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_entry_too_large_to_publish_is_dead_lettered_and_the_schedule_goes_on() {
    let infra = Infra::start();
    let mut config = infra.config(&smtp_and_twilio(9, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    config.kafka.options.insert("message.max.bytes".into(), "50000".into());
    let store = fleet::open_store(&config).await.unwrap();
    let due = chrono::Utc::now() - chrono::Duration::seconds(1);
    let entry = |id: &str, note: usize| harness::deferred_entry(id, tidings_core::Priority::Normal, note, due);
    let (big, small) = (entry("n-big", 60_000), entry("n-small", 10));
    let u1 = lane("u-1", Channel::Email);
    store.defer(&u1, &big, due).await.unwrap();
    store.defer(&u1, &small, due).await.unwrap();

    let producer = tidings_core::kafka::producer(&config.kafka).unwrap();
    let released = release_due(&config, &store, &producer, &Clock::system()).await.unwrap();
    assert_eq!(released, 1, "the one that fits went out");
    assert_eq!(store.deferred_len().await.unwrap(), 0, "both left the schedule");
    let letters = harness::read_topic(&config, INTAKE_DLQ_TOPIC, 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].headers[dead_letter::ORIGINAL_TOPIC], dead_letter::SCHEDULE);
    let error = &letters[0].headers[dead_letter::ERROR];
    assert!(error.contains("too large to publish to tidings.email.normal"), "{error}");
    let published = harness::read_topic(&config, &Channel::Email.topic(tidings_core::Priority::Normal), 1);
    assert!(published[0].value.contains("n-small"));
}

/// Events beyond intake's limits are dead-lettered with a reason that does
/// not quote them: a 350,000-byte user id (beyond the event size limit; its
/// status record would be larger than the producer writes), a 1,000-byte
/// one, and binary-mode data nested 10,000 levels deep. The event beside
/// them is delivered, and every offset is committed: nothing is read again
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_beyond_the_limits_are_dead_lettered_and_intake_commits_past_them() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let config =
        Arc::new(infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]));
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("u-1", &email_user(1)).await.unwrap();
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();

    let with_user = |seq: usize, user: String| {
        let mut event: serde_json::Value = serde_json::from_str(&order_event(seq, "u-1")).unwrap();
        event["data"]["user_id"] = user.into();
        event.to_string()
    };
    let (huge, long) = (with_user(1, "u".repeat(350_000)), with_user(3, "u".repeat(1_000)));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let headers =
        [("ce_specversion", "1.0"), ("ce_id", "evt-deep"), ("ce_type", "order.confirmed"), ("ce_source", "/t")]
            .into_iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }));
    let producer = tidings_core::kafka::command_producer(&config.kafka).unwrap();
    let good = order_event(2, "u-1");
    let records = [
        FutureRecord::to("orders.events").key("k").payload(huge.as_str()),
        FutureRecord::to("orders.events").key("k").payload(long.as_str()),
        FutureRecord::to("orders.events").key("k").payload(deep.as_str()).headers(headers),
        FutureRecord::to("orders.events").key("k").payload(good.as_str()),
    ];
    for record in records {
        producer.send(record, Duration::from_secs(30)).await.unwrap();
    }

    let good = notification_id("/test", "evt-2", Channel::Email, "u-1");
    watch.wait_for_status(&good, State::Sent, Duration::from_secs(60)).await;
    let errors: Vec<String> = dead_letters(&config, INTAKE_DLQ_TOPIC, 3).into_iter().map(|(_, e)| e).collect();
    let size = huge.len();
    assert_eq!(
        errors,
        [
            format!("the event is {size} bytes, more than the 262144 allowed (intake.limits.max_event_bytes)"),
            "`user id` is 1000 bytes, more than the 256 allowed (intake.limits.max_id_bytes)".into(),
            "`data` nests deeper than the 32 levels allowed (intake.limits.max_depth)".into(),
        ]
    );
    assert!(watch.records().iter().all(|r| r.user_id.len() < 100), "no record carries the long id");
    harness::eventually("intake commits past all four", Duration::from_secs(30), Duration::from_millis(200), || {
        let config = config.clone();
        async move { harness::uncommitted(&config, &config.group("intake"), "orders.events") == 0 }
    })
    .await;
    fleet.shutdown().await.unwrap();
}
