//! Choosing a channel the user can receive reads the suppression list: a
//! `mode = "first"` route passes over a channel whose address is listed,
//! and a critical message falls back past one. On the code before, both
//! read only the preferences: the first route picked the listed email,
//! which the worker then suppressed, and the fallback went to the listed
//! number; the user, reachable another way, got nothing.

use crate::harness::{self, fakes, order_event, smtp::SmtpServer, smtp_and_twilio, Infra, StatusWatch};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::config::ChannelMode;
use tidings_core::notification::notification_id;
use tidings_core::suppression::{Cause, Suppression};
use tidings_core::{Channel, Clock, Priority, State};
use tokio_util::sync::CancellationToken;

/// `address` on the suppression list of `store`, as a bounce would put it there.
async fn listed(store: &dyn tidings_core::store::Store, address: &str, channel: Channel) {
    let entry = Suppression {
        address: address.to_string(),
        channel,
        cause: Cause::HardBounce,
        reason: "550 no such user".into(),
        source: "test".into(),
        at: chrono::Utc::now(),
    };
    store.suppress(&entry).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_route_passes_over_a_listed_address() {
    let infra = Infra::start();
    let smtp = SmtpServer::start().await;
    let twilio = fakes::twilio().await;
    let mut config = infra.config(
        &smtp_and_twilio(smtp.port, &twilio.uri()),
        &[(Channel::Email, &["smtp"]), (Channel::Sms, &["twilio"])],
    );
    let route = config.events.get_mut("order.confirmed").unwrap();
    (route.mode, route.channels) = (ChannelMode::First, vec![Channel::Email, Channel::Sms]);
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    tidings::commands::prefs::import(store.as_ref(), &(harness::user(1) + "\n")).await.unwrap();
    listed(store.as_ref(), "user1@example.com", Channel::Email).await;
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store, Clock::system(), Roles::all(&config)).unwrap();
    tidings::commands::dev::feed(&config, &order_event(1, "u-1")).await.unwrap();

    let sms = notification_id("/test", "evt-1", Channel::Sms, "u-1");
    watch.wait_for_status(&sms, State::Sent, Duration::from_secs(60)).await;
    let email = notification_id("/test", "evt-1", Channel::Email, "u-1");
    let records = watch.records();
    let email = records.iter().find(|r| r.notification_id == email).expect("the email has a status");
    assert_eq!(email.state, State::Suppressed);
    assert!(email.error.as_deref().unwrap_or_default().contains("hard_bounce"), "{email:?}");
    assert!(smtp.received().is_empty());
    fleet.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_message_falls_back_past_a_listed_number() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    let mut config =
        infra.config(&harness::sendgrid_provider(&sendgrid.server.uri(), "5s"), &[(Channel::Email, &["sendgrid"])]);
    (config.worker.retry.attempts, config.worker.retry.passes) = (1, 1);
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    let prefs = serde_json::json!({
        "user_id": "u-0", "email": "user0@example.com", "phone": "+15550000000",
        "webhook_url": "https://hooks.example/u-0",
        "channels": {"email": true, "sms": true, "webhook": true}
    });
    store.set_prefs("u-0", &prefs.to_string()).await.unwrap();
    listed(store.as_ref(), "+15550000000", Channel::Sms).await;
    let deliverer = harness::deliverer(&config, store.clone(), Channel::Email);
    let mut n = harness::order_notification("n-critical", "evt-1");
    (n.priority, n.fallback) = (Priority::Critical, vec![Channel::Sms, Channel::Webhook]);

    // SendGrid refuses it as down: the message falls back.
    *sendgrid.state.down_until.lock().unwrap() = Some(std::time::Instant::now() + Duration::from_secs(3600));
    let owners = deliverer.owners();
    tokio::time::timeout(
        Duration::from_secs(30),
        deliverer.process(&harness::input_of(&n, 0), &owners, &CancellationToken::new()),
    )
    .await
    .expect("the delivery ends");
    let record = store.dedupe_value("n-critical").await.unwrap().expect("an outcome is recorded");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["status"]["state"], "failed_over", "{record}");
    let webhook = notification_id("/test", "evt-1", Channel::Webhook, "u-0");
    assert_eq!(record["status"]["fallback_notification_id"], webhook.as_str(), "past the listed number: {record}");
}
