//! Intake decisions users can see, with `tidings dev`-style wiring and a
//! clock started at a fixed instant: quiet hours defer and the scheduler
//! delivers at the window's end; critical messages bypass; opt-outs hold at
//! intake and again at delivery.

use crate::harness::{Infra, StatusWatch};
use std::sync::Arc;
use std::time::Duration;
use tidings::fleet::{self, Roles};
use tidings_core::notification::notification_id;
use tidings_core::{Channel, Clock, State};

fn prefs(user: &str, opt_out: &[&str]) -> String {
    serde_json::json!({
        "user_id": user, "timezone": "Europe/Paris", "locale": "en",
        "email": format!("{user}@example.com"), "phone": "+33612345678",
        "channels": {"email": true, "sms": false},
        "opt_out": opt_out,
        "quiet_hours": {"start": "22:00", "end": "07:00"}
    })
    .to_string()
}

fn event(id: &str, ty: &str, user: &str) -> String {
    let sample: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/templates/{ty}/sample.json", env!("CARGO_MANIFEST_DIR"))).unwrap(),
    )
    .unwrap();
    let mut data = sample;
    data["user_id"] = user.into();
    data["order_id"] = id.into();
    serde_json::json!({"specversion": "1.0", "id": id, "type": ty, "source": "/test", "data": data}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_hours_defer_critical_bypasses_and_opt_outs_suppress() {
    let infra = Infra::start();
    let (smtp, _twilio, config) = infra.email_and_sms().await;
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    store.set_prefs("ana", &prefs("ana", &[])).await.unwrap();
    store.set_prefs("bob", &prefs("bob", &["marketing"])).await.unwrap();
    store.set_prefs("cleo", &prefs("cleo", &[])).await.unwrap();

    // 23:00 in Paris.
    let clock = Clock::starting_at("2026-11-26T22:00:00Z".parse().unwrap());
    let watch = StatusWatch::start(&config);
    let fleet = fleet::spawn_fleet(config.clone(), store.clone(), clock.clone(), Roles::all(&config)).unwrap();
    let events = [
        event("o-000001", "order.confirmed", "ana"),
        event("reset-1", "account.password_reset", "ana"),
        event("o-000002", "order.confirmed", "ana"),
        event("camp-1", "marketing.campaign", "bob"),
        event("o-000003", "order.confirmed", "cleo"),
    ]
    .join("\n");
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    let id = |event: &str, user: &str| notification_id("/test", event, Channel::Email, user);
    let wait = Duration::from_secs(60);

    // The order at 23:00 local waits for 07:00 local (06:00Z).
    let first = watch.wait_for_status(&id("o-000001", "ana"), State::Deferred, wait).await;
    assert_eq!(first.not_before, Some("2026-11-27T06:00:00Z".parse().unwrap()));
    // The later order queues behind it.
    let second = watch.wait_for_status(&id("o-000002", "ana"), State::Deferred, wait).await;
    assert_eq!(second.not_before, first.not_before);
    // The password reset goes now.
    let reset = watch.wait_for_status(&id("reset-1", "ana"), State::Sent, wait).await;
    assert_eq!(reset.provider.as_deref(), Some("smtp"));
    // Marketing for a user who opted out of it.
    let campaign = watch.wait_for_status(&id("camp-1", "bob"), State::Suppressed, wait).await;
    assert_eq!(campaign.error.as_deref(), Some("user opted out of marketing"));
    watch.wait_for_status(&id("o-000003", "cleo"), State::Deferred, wait).await;
    assert_eq!(smtp.received().len(), 1, "only the reset went out at night");

    // Cleo opts out of transactional messages while hers waits.
    store.set_prefs("cleo", &prefs("cleo", &["transactional"])).await.unwrap();

    // Morning comes: the scheduler hands both orders to the worker, in order.
    clock.advance(Duration::from_secs(8 * 3600 + 60));
    watch.wait_for_status(&id("o-000001", "ana"), State::Sent, wait).await;
    watch.wait_for_status(&id("o-000002", "ana"), State::Sent, wait).await;
    let late = watch.wait_for_status(&id("o-000003", "cleo"), State::Suppressed, wait).await;
    assert_eq!(late.error.as_deref(), Some("user opted out of transactional"));

    let subjects: Vec<String> = smtp.received().iter().map(|m| m.header("Subject").unwrap()).collect();
    assert_eq!(subjects, vec!["Reset your password", "Order o-000001 confirmed", "Order o-000002 confirmed"]);
    assert_eq!(store.deferred_len().await.unwrap(), 0);
    fleet.shutdown().await.unwrap();
}
