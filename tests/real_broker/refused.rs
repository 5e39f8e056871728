//! A write the cluster refuses for good, on a real broker: tansu creates no
//! topic by itself, so a channel topic an operator removed (or never made)
//! refuses every record for it. Each event routed there is dead-lettered
//! with the cluster's reason, and intake goes on routing the rest; before,
//! intake stopped on the first such record, and so did every next owner of
//! its partition.

use crate::harness::{self, email_user, order_event, StatusWatch};
use crate::{tansu, Real};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use std::time::Duration;
use tidings_core::channel::INTAKE_DLQ_TOPIC;
use tidings_core::notification::notification_id;
use tidings_core::{dead_letter, kafka, Channel, Priority, State};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_for_a_topic_the_cluster_lacks_are_dead_lettered_and_intake_goes_on() {
    let real = Real::start(tansu(), "latency = \"5ms\"", &[]);
    let missing = Channel::Email.topic(Priority::Normal);
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(&real.config.kafka).create().unwrap();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let deleted = admin.delete_topics(&[&missing], &options).await.unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let store = tidings::fleet::open_store(&real.config).await.unwrap();
    store.set_prefs("u-1", &email_user(1)).await.unwrap();
    let watch = StatusWatch::start(&real.config);
    let mut intake = real.spawn(&["intake"]);
    // The worker reads the topics that exist; its consumer is told the other is missing.
    let _worker = real.spawn(&["worker", "--channel", "email"]);

    let reset = |id: &str| harness::password_reset(id, "u-1");
    let events = [order_event(1, "u-1"), reset("reset-2"), order_event(3, "u-1"), reset("reset-4")].join("\n");
    tidings::commands::dev::feed(&real.config, &events).await.unwrap();

    for id in ["reset-2", "reset-4"] {
        let n = notification_id("/auth", id, Channel::Email, "u-1");
        watch.wait_for_status(&n, State::Sent, Duration::from_secs(120)).await;
    }
    // librdkafka fails a record for a topic the cluster lacks once the
    // topic has stayed unknown for `topic.metadata.propagation.max.ms`.
    let letters = harness::read_topic(&real.config, INTAKE_DLQ_TOPIC, 2);
    let mut lettered: Vec<&str> = letters.iter().map(|l| l.value.as_str()).collect();
    lettered.sort();
    assert_eq!(lettered.len(), 2, "{letters:?}");
    assert!(lettered[0].contains("\"evt-1\"") && lettered[1].contains("\"evt-3\""), "{lettered:?}");
    for letter in &letters {
        let error = &letter.headers[dead_letter::ERROR];
        assert!(error.contains(&missing) && error.contains("refused") && error.contains("for good"), "{error}");
        assert!(error.to_lowercase().contains("unknown"), "{error}");
    }
    assert_eq!(intake.try_wait().unwrap(), None, "intake is still running");

    // Later events reach intake and are routed: it did not stop at the refusals.
    tidings::commands::dev::feed(&real.config, &reset("reset-5")).await.unwrap();
    let n = notification_id("/auth", "reset-5", Channel::Email, "u-1");
    watch.wait_for_status(&n, State::Sent, Duration::from_secs(60)).await;
    assert_eq!(real.outbox_count(), 3, "the three resets");
}
