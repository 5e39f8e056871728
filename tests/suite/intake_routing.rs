//! Intake choices an operator configures: unknown types, and how soon a
//! preference change reaches intake through its cache.

use crate::harness;
use crate::harness::smtp::SmtpServer;
use crate::harness::{order_event, smtp_and_twilio, Infra, StatusWatch};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::config::UnknownTypes;
use tidings_core::notification::notification_id;
use tidings_core::{Channel, Clock, State};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_types_can_be_suppressed_instead_of_dead_lettered() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let mut config = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    config.intake.unknown_types = UnknownTypes::Suppress;
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    let unknown =
        r#"{"specversion":"1.0","id":"evt-u","type":"loyalty.points_expired","source":"/t","data":{"user_id":"u-1"}}"#;
    tidings::commands::dev::feed(&config, unknown).await.unwrap();
    // Another service's event on the shared topic, with no user at the configured place.
    let userless = r#"{"specversion":"1.0","id":"evt-v","type":"inventory.restocked","source":"/t","data":{}}"#;
    tidings::commands::dev::feed(&config, userless).await.unwrap();
    let records = watch
        .wait_until("suppressed statuses for both unknown events", Duration::from_secs(60), |rs| {
            ["evt-u", "evt-v"].iter().all(|id| rs.iter().any(|r| r.event_id == *id && r.state == State::Suppressed))
        })
        .await;
    let r = records.iter().find(|r| r.event_id == "evt-u").unwrap();
    assert_eq!(r.error.as_deref(), Some("unknown event type `loyalty.points_expired`"));
    assert_eq!(r.event_type, "loyalty.points_expired");
    fleet.shutdown().await.unwrap();
    let dlq = tidings::commands::dev::count_topic(&config, tidings_core::channel::INTAKE_DLQ_TOPIC).unwrap();
    assert_eq!(dlq, 0, "nothing was dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preference_change_reaches_intake_within_the_cache_ttl_and_workers_at_once() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let mut config = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    config.intake.prefs_cache_ttl = Duration::from_secs(1);
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    let mut prefs: serde_json::Value = serde_json::from_str(&harness::email_user(1)).unwrap();
    store.set_prefs("u-1", &prefs.to_string()).await.unwrap();
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store.clone(), Clock::system(), Roles::all(&config)).unwrap();

    tidings::commands::dev::feed(&config, &order_event(1, "u-1")).await.unwrap();
    let first = notification_id("/test", "evt-1", Channel::Email, "u-1");
    watch.wait_for_status(&first, State::Sent, Duration::from_secs(60)).await;

    // The user turns email off. Intake may still route from its cache for up
    // to a second; the worker reads preferences afresh and suppresses.
    prefs["channels"]["email"] = false.into();
    store.set_prefs("u-1", &prefs.to_string()).await.unwrap();
    let mut seq = 2;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seen_by_intake = loop {
        tidings::commands::dev::feed(&config, &order_event(seq, "u-1")).await.unwrap();
        let event = format!("evt-{seq}");
        let records = watch
            .wait_until("the event's outcome", Duration::from_secs(30), |rs| {
                rs.iter().any(|r| r.event_id == event && r.state.is_terminal())
            })
            .await;
        let r = records.into_iter().find(|r| r.event_id == event && r.state.is_terminal()).unwrap();
        assert_eq!(r.state, State::Suppressed, "nothing reaches a disabled channel");
        match r.error.as_deref() {
            Some("user has none of this event's channels enabled") => break true,
            Some("user disabled the email channel") => {}
            other => panic!("unexpected reason {other:?}"),
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        seq += 1;
    };
    assert!(seen_by_intake, "intake never saw the change");
    assert_eq!(smtp.received().len(), 1);
    fleet.shutdown().await.unwrap();
}

/// Two services' events with one id are two events: only the CloudEvents
/// `source` and `id` together identify one. On the code before, the
/// notification of the second had the first's id and ended `duplicate`,
/// never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_two_sources_with_one_id_are_two_events() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let config = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, 2).await;
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    let shop = order_event(1, "u-1");
    let mut billing: serde_json::Value = serde_json::from_str(&shop).unwrap();
    billing["source"] = "/billing".into();
    tidings::commands::dev::feed(&config, &format!("{shop}\n{billing}\n")).await.unwrap();
    for source in ["/test", "/billing"] {
        let id = notification_id(source, "evt-1", Channel::Email, "u-1");
        watch.wait_for_status(&id, State::Sent, Duration::from_secs(60)).await;
    }
    assert_eq!(smtp.received().len(), 2, "one email per event");
    fleet.shutdown().await.unwrap();
}

/// An event read again after a deploy changed its route's template is the
/// notification it was: a `duplicate`, not a second email. Before, the id
/// was a hash of the template too, so the copy routed under the new
/// template had a new id and went out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_read_again_after_its_template_changed_is_not_sent_again() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let before = infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    let before = Arc::new(before);
    let store = harness::store_with_email_users(&before, 2).await;
    let watch = StatusWatch::start(&before);
    let event = order_event(1, "u-1");

    let fleet = fleet::spawn_fleet(before.clone(), store.clone(), Clock::system(), Roles::all(&before)).unwrap();
    tidings::commands::dev::feed(&before, &event).await.unwrap();
    let sent = watch.wait_until("the email sent", Duration::from_secs(60), |rs| !rs.is_empty()).await;
    assert_eq!(sent[0].state, State::Sent);
    let id = sent[0].notification_id.clone();
    fleet.shutdown().await.unwrap();

    // The deploy: the route now names a template of another name (the same files).
    let templates = tempfile::tempdir().unwrap();
    harness::copy_dir(&before.templates.dir, templates.path());
    harness::copy_dir(&before.templates.dir.join("order.confirmed"), &templates.path().join("order.confirmed.v2"));
    let mut after = (*before).clone();
    after.templates.dir = templates.path().to_path_buf();
    after.events.get_mut("order.confirmed").unwrap().template = Some("order.confirmed.v2".into());
    let after = Arc::new(after);
    let fleet = fleet::spawn_fleet(after.clone(), store, Clock::system(), Roles::all(&after)).unwrap();
    tidings::commands::dev::feed(&after, &event).await.unwrap();
    let outcomes = watch.wait_until("the copy's outcome", Duration::from_secs(60), |rs| rs.len() >= 2).await;
    assert_eq!((outcomes[1].state, &outcomes[1].notification_id), (State::Duplicate, &id), "{outcomes:?}");
    let routed = harness::read_topic(&after, &Channel::Email.topic(tidings_core::Priority::Normal), 2);
    assert!(routed[1].value.contains("\"template\":\"order.confirmed.v2\""), "routed under the new template");
    assert_eq!(smtp.received().len(), 1, "one email");
    assert!(watch.records().iter().all(|r| r.notification_id == id), "{:?}", watch.records());
    fleet.shutdown().await.unwrap();
}
