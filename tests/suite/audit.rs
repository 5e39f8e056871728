//! `tidings audit` on a run of the whole fleet: it passes the run as it
//! ended, and finds a loss and a repeat planted in the topics afterwards.

use crate::harness::{order_event, order_notification, read_topic, terminal_counts, user, Infra, StatusWatch};
use rdkafka::producer::FutureRecord;
use std::sync::Arc;
use std::time::Duration;
use tidings::cli::AuditArgs;
use tidings::commands::audit::audit;
use tidings::fleet::{self, Roles};
use tidings_core::channel::{INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::{kafka, Clock, State, StatusRecord};

const USERS: usize = 20;
const EVENTS: usize = 60;

fn args() -> AuditArgs {
    AuditArgs { since: None, until: None, grace: Duration::ZERO, json: false, shards: 1, pushgateway: None }
}

async fn write(producer: &rdkafka::producer::FutureProducer, topic: &str, key: &str, value: &str) {
    let record = FutureRecord::to(topic).key(key).payload(value.as_bytes());
    kafka::delivered(kafka::enqueue(producer, record).await.unwrap()).await.unwrap();
}

/// Runs `tidings audit --pushgateway` against `gateway` (a wiremock
/// Pushgateway); returns what it put there.
async fn push(gateway: &wiremock::MockServer, config: &Arc<tidings_core::Config>) -> String {
    use wiremock::matchers::{method, path};
    gateway.reset().await;
    wiremock::Mock::given(method("PUT"))
        .and(path("/metrics/job/tidings_audit"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(gateway)
        .await;
    let args = AuditArgs { pushgateway: Some(gateway.uri().parse().unwrap()), ..args() };
    let code = tidings::commands::audit::run(args, config.clone()).await.unwrap();
    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "one push a run");
    let body = String::from_utf8(requests[0].body.clone()).unwrap();
    let passed = gauge(&body, "tidings_audit_passed") == 1.0;
    assert_eq!(code == std::process::ExitCode::SUCCESS, passed, "the exit code says what the gauge says");
    body
}

/// The value of gauge `name` in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> f64 {
    let line =
        text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_passes_a_clean_run_and_finds_a_planted_loss_and_repeat() {
    let infra = Infra::start();
    let (_smtp, _twilio, config) = infra.email_and_sms().await;
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    let users: String = (0..USERS).map(|i| user(i) + "\n").collect();
    tidings::commands::prefs::import(store.as_ref(), &users).await.unwrap();
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    let producer = kafka::command_producer(&config.kafka).unwrap();
    let events: String = (0..EVENTS).map(|seq| order_event(seq, &format!("u-{}", seq % USERS)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    // Unusable: intake dead-letters it, and that letter is its outcome.
    write(&producer, &config.intake.topics[0], "k", "not an event").await;
    let letters = tokio::task::spawn_blocking({
        let config = config.clone();
        move || read_topic(&config, INTAKE_DLQ_TOPIC, 1)
    });
    assert_eq!(letters.await.unwrap().len(), 1, "intake dead-letters the unusable record");
    // Email and SMS on for every user: two notifications an event.
    let records = watch
        .wait_until("every notification ended", Duration::from_secs(120), |rs| terminal_counts(rs).len() >= 2 * EVENTS)
        .await;
    fleet.shutdown().await.unwrap();

    let clean = audit(&config, &args()).await.unwrap();
    assert!(clean.passed(), "{clean:?}");
    assert_eq!((clean.events, clean.notifications, clean.ended), (EVENTS + 1, 2 * EVENTS, 2 * EVENTS));
    let gateway = wiremock::MockServer::start().await;
    let pushed = push(&gateway, &config).await;
    assert_eq!(gauge(&pushed, "tidings_audit_passed"), 1.0, "{pushed}");
    assert_eq!(gauge(&pushed, "tidings_audit_notifications"), (2 * EVENTS) as f64, "{pushed}");

    // Planted: an event and an unusable record intake never read (it is stopped), a notification
    // deferred until an hour ago that nothing released, and a second,
    // different send of a notification that was sent.
    let lost_event = order_event(EVENTS + 1, "u-1");
    tidings::commands::dev::feed(&config, &(lost_event + "\n")).await.unwrap();
    write(&producer, &config.intake.topics[0], "k", "not an event").await;
    let now = chrono::Utc::now();
    let lost = order_notification("planted-lost-notification", "evt-planted");
    let mut deferred = StatusRecord::of(&lost, State::Deferred, now - chrono::Duration::hours(2));
    deferred.not_before = Some(now - chrono::Duration::hours(1));
    write(&producer, STATUS_TOPIC, &lost.user_id, &serde_json::to_string(&deferred).unwrap()).await;
    let sent = records.iter().find(|r| r.state == State::Sent).unwrap().clone();
    let mut again = sent.clone();
    again.provider_message_id = Some("a-second-send".into());
    again.at = now;
    write(&producer, STATUS_TOPIC, &sent.user_id, &serde_json::to_string(&again).unwrap()).await;
    // A status published again as it was is not a second send.
    write(&producer, STATUS_TOPIC, &sent.user_id, &serde_json::to_string(&sent).unwrap()).await;

    let found = audit(&config, &args()).await.unwrap();
    assert!(!found.passed());
    assert_eq!(found.missing_events.len(), 1, "{found:?}");
    assert!(found.missing_events[0].starts_with(&format!("evt-{}", EVENTS + 1)), "{found:?}");
    assert_eq!(found.missing_letters.len(), 1, "an unusable record with no letter: {found:?}");
    assert_eq!(found.missing_notifications.len(), 1, "{found:?}");
    assert!(found.missing_notifications[0].starts_with("planted-lost-notification"), "{found:?}");
    assert_eq!(found.repeated, vec![(sent.notification_id.clone(), 2)]);
    // The command exits 1, and its gauges on the Pushgateway say why.
    let pushed = push(&gateway, &config).await;
    assert_eq!(gauge(&pushed, "tidings_audit_passed"), 0.0, "{pushed}");
    assert_eq!(gauge(&pushed, "tidings_audit_missing"), 3.0, "{pushed}");
    assert_eq!(gauge(&pushed, "tidings_audit_repeated"), 1.0, "{pushed}");

    // In shards, each pass keeping a share of the ids: the same verdict.
    let sharded = audit(&config, &AuditArgs { shards: 3, ..args() }).await.unwrap();
    assert_eq!(sharded, found);

    // Within a grace period longer than their age, the event and the release are still under way.
    let patient = audit(&config, &AuditArgs { grace: Duration::from_secs(3 * 3600), ..args() }).await.unwrap();
    assert_eq!((patient.missing(), patient.repeated.len()), (0, 1), "{patient:?}");
}
