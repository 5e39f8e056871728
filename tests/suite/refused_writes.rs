//! Writes the cluster refuses for good (a topic an ACL denies) and a
//! producer broken for good (a fatal error): the record that caused a
//! refusal is dead-lettered with the reason and the rest flows; a broken
//! producer is replaced. Before, intake stopped on such a record (and so did
//! the next owner of its partition), and the scheduler kept claiming
//! members it could never publish.

use crate::harness::smtp::SmtpServer;
use crate::harness::{self, deferred_entry, email_user, order_event, smtp_and_twilio, Infra, StatusWatch};
use rdkafka::producer::Producer as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::channel::{INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::notification::{notification_id, Deferred};
use tidings_core::progress::Progress;
use tidings_core::store::lane;
use tidings_core::telemetry::Health;
use tidings_core::{dead_letter, kafka, Channel, Clock, Priority, State, StatusRecord};
use tidings_intake::scheduler::{release_due, run_with};
use tokio_util::sync::CancellationToken;

/// Order confirmations go to `tidings.email.normal`, which the cluster
/// refuses; password resets go to `tidings.email.critical`. Each order event
/// is dead-lettered with the refusal, and the resets after them are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_whose_write_is_refused_for_good_is_dead_lettered_and_intake_goes_on() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let config =
        Arc::new(infra.config(&smtp_and_twilio(smtp.port, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]));
    infra.kafka.forbid(&Channel::Email.topic(Priority::Normal), true).unwrap();
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("u-1", &email_user(1)).await.unwrap();
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();

    let reset = |id: &str| harness::password_reset(id, "u-1");
    let events = [order_event(1, "u-1"), reset("reset-2"), order_event(3, "u-1"), reset("reset-4")].join("\n");
    tidings::commands::dev::feed(&config, &events).await.unwrap();

    for id in ["reset-2", "reset-4"] {
        let n = notification_id("/auth", id, Channel::Email, "u-1");
        watch.wait_for_status(&n, State::Sent, Duration::from_secs(60)).await;
    }
    let letters = harness::read_topic(&config, INTAKE_DLQ_TOPIC, 2);
    let mut lettered: Vec<&str> = letters.iter().map(|l| l.value.as_str()).collect();
    lettered.sort();
    assert_eq!(lettered.len(), 2, "{letters:?}");
    assert!(lettered[0].contains("\"evt-1\"") && lettered[1].contains("\"evt-3\""), "{lettered:?}");
    for letter in &letters {
        let error = &letter.headers[dead_letter::ERROR];
        assert!(error.contains("tidings.email.normal") && error.contains("refused"), "{error}");
        assert!(error.to_lowercase().contains("authorization"), "{error}");
    }
    assert_eq!(smtp.received().len(), 2, "the two resets");
    fleet.shutdown().await.unwrap();
}

/// A due member whose topic the cluster refuses is dead-lettered unchanged
/// and leaves the schedule; the member beside it goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_entry_refused_for_good_is_dead_lettered_and_the_schedule_goes_on() {
    let infra = Infra::start();
    let config = infra.config(&smtp_and_twilio(9, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    infra.kafka.forbid(&Channel::Email.topic(Priority::Normal), true).unwrap();
    let store = fleet::open_store(&config).await.unwrap();
    let due = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (refused, bulk) =
        (deferred_entry("n-refused", Priority::Normal, 0, due), deferred_entry("n-bulk", Priority::Bulk, 0, due));
    let u1 = lane("u-1", Channel::Email);
    store.defer(&u1, &refused, due).await.unwrap();
    store.defer(&u1, &bulk, due).await.unwrap();

    let producer = kafka::producer(&config.kafka).unwrap();
    let released = release_due(&config, &store, &producer, &Clock::system()).await.unwrap();
    assert_eq!(released, 1, "the one whose topic takes it went out");
    assert_eq!(store.deferred_len().await.unwrap(), 0, "both left the schedule");
    let letters = harness::read_topic(&config, INTAKE_DLQ_TOPIC, 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].value, refused, "dead-lettered unchanged");
    assert_eq!(letters[0].headers[dead_letter::ORIGINAL_TOPIC], dead_letter::SCHEDULE);
    let error = &letters[0].headers[dead_letter::ERROR];
    assert!(error.contains("refused for good") && error.contains("tidings.email.normal"), "{error}");
    let published = harness::read_topic(&config, &Channel::Email.topic(Priority::Bulk), 1);
    assert!(published[0].value.contains("n-bulk"));
    let statuses = harness::read_topic(&config, STATUS_TOPIC, 1);
    let status: StatusRecord = serde_json::from_str(&statuses[0].value).unwrap();
    assert_eq!((status.notification_id.as_str(), status.state), ("n-refused", State::DeadLettered));
    assert!(status.error.as_deref().is_some_and(|e| e.contains("refused for good")), "{status:?}");

    // The topic fixed, a replay puts the member back on its lane, and it goes out.
    infra.kafka.forbid(&Channel::Email.topic(Priority::Normal), false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["dlq", "replay", "--from", "intake"])
        .env("TIDINGS_CONFIG", harness::config_file(dir.path(), "", "", &[]))
        .envs(infra.env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("replayed 1 dead letters"), "{stdout}");
    assert_eq!(store.deferred_len().await.unwrap(), 1, "back on the schedule");
    let producer = kafka::producer(&config.kafka).unwrap();
    assert_eq!(release_due(&config, &store, &producer, &Clock::system()).await.unwrap(), 1);
    let published = harness::read_topic(&config, &Channel::Email.topic(Priority::Normal), 1);
    assert_eq!(
        published[0].value,
        serde_json::to_string(&serde_json::from_str::<Deferred>(&refused).unwrap().notification).unwrap()
    );
}

/// The scheduler's first producer meets a fatal error (as an idempotent
/// producer does after the cluster lost data): the pass fails, the
/// scheduler is unready, a new producer takes over, and the member it had
/// claimed goes out once its lease ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_whose_producer_met_a_fatal_error_replaces_it() {
    let infra = Infra::start();
    let mut config = infra.config(&smtp_and_twilio(9, "http://127.0.0.1:9"), &[(Channel::Email, &["smtp"])]);
    (config.scheduler.poll_interval, config.scheduler.claim_lease) =
        (Duration::from_millis(100), Duration::from_secs(2));
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    let due = chrono::Utc::now() - chrono::Duration::seconds(1);
    let member = deferred_entry("n-held", Priority::Normal, 0, due);
    store.defer(&lane("u-1", Channel::Email), &member, due).await.unwrap();

    let made = Arc::new(AtomicUsize::new(0));
    let make = {
        let (kafka_config, made) = (config.kafka.clone(), made.clone());
        move || {
            let producer = kafka::producer(&kafka_config)?;
            if made.fetch_add(1, Ordering::SeqCst) == 0 {
                use rdkafka::bindings::{rd_kafka_resp_err_t, rd_kafka_test_fatal_error};
                let error = rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
                // SAFETY: the client pointer is the live producer's; the reason is a C string.
                let raised =
                    unsafe { rd_kafka_test_fatal_error(producer.client().native_ptr(), error, c"test".as_ptr()) };
                assert_eq!(raised, rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
            }
            Ok(producer)
        }
    };
    let health = Health::shared();
    let stop = CancellationToken::new();
    let scheduler = tokio::spawn(run_with(
        config.clone(),
        store.clone(),
        Clock::system(),
        Progress::shared(),
        health.clone(),
        stop.clone().cancelled_owned(),
        make,
    ));

    harness::eventually("a failed pass to make it unready", Duration::from_secs(30), Duration::from_millis(20), || {
        let unready = health.ready().is_err();
        async move { unready }
    })
    .await;
    let published = harness::read_topic(&config, &Channel::Email.topic(Priority::Normal), 1);
    assert!(published.first().is_some_and(|r| r.value.contains("n-held")), "{published:?}");
    harness::eventually("the schedule to empty", Duration::from_secs(30), Duration::from_millis(50), || async {
        store.deferred_len().await.unwrap() == 0
    })
    .await;
    harness::eventually("a pass to go through", Duration::from_secs(30), Duration::from_millis(20), || {
        let ready = health.ready().is_ok();
        async move { ready }
    })
    .await;
    assert_eq!(made.load(Ordering::SeqCst), 2, "one producer replaced, once");
    stop.cancel();
    scheduler.await.unwrap().unwrap();
}
