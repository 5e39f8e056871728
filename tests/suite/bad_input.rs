//! Bad input ends on a dead-letter topic or as `suppressed` with its reason,
//! while the rest flows.

use crate::harness;
use crate::harness::smtp::SmtpServer;
use crate::harness::{email_user, order_event, smtp_and_twilio, Infra, StatusWatch};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::channel::INTAKE_DLQ_TOPIC;
use tidings_core::notification::notification_id;
use tidings_core::{Channel, Clock, State};

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

    let good = notification_id("evt-2", Channel::Email, "u-1", "order.confirmed");
    let sent = watch.wait_for_status(&good, State::Sent, Duration::from_secs(60)).await;
    assert_eq!(sent.provider.as_deref(), Some("smtp"));

    let nobody = notification_id("evt-1", Channel::Email, "u-nobody", "order.confirmed");
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
    let intake_only = Roles { intake: true, scheduler: false, channels: vec![] };
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
    let workers = Roles { intake: false, scheduler: false, channels: vec![Channel::Email] };
    let fleet = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), workers).unwrap();
    for seq in [7, 8] {
        let id = notification_id(&format!("evt-{seq}"), Channel::Email, "u-1", "order.confirmed");
        let r = watch.wait_for_status(&id, State::Suppressed, Duration::from_secs(60)).await;
        assert_eq!(r.error.as_deref(), Some("user is muted"));
    }
    fleet.shutdown().await.unwrap();

    // Unmuted, a fresh event with a missing variable dead-letters with the render error.
    u1["muted"] = false.into();
    store.set_prefs("u-1", &u1.to_string()).await.unwrap();
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    let mut missing: serde_json::Value = serde_json::from_str(&order_event(9, "u-1")).unwrap();
    missing["data"].as_object_mut().unwrap().remove("total");
    tidings::commands::dev::feed(&config, &missing.to_string()).await.unwrap();
    let id = notification_id("evt-9", Channel::Email, "u-1", "order.confirmed");
    let r = watch.wait_for_status(&id, State::DeadLettered, Duration::from_secs(60)).await;
    assert_eq!(r.error_class, Some(tidings_core::status::ErrorClass::Render));
    assert!(r.error.as_deref().unwrap().contains("total"), "{:?}", r.error);
    let letters = dead_letters(&config, &Channel::Email.dlq_topic(), 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(smtp.received().len(), 0, "nothing blank reached an inbox");
    fleet.shutdown().await.unwrap();
}
