//! Quiet hours are read again at delivery. A backlog held through an
//! outage (or a user who set quiet hours after intake routed the message)
//! reaches the worker inside the user's quiet window: a non-critical message
//! is held until the window ends, through the scheduler, with a `deferred`
//! status, and goes out then; a critical one goes out at once. On the code
//! before, only intake read quiet hours: the held message went out at 03:00
//! in the user's zone.

use crate::harness;
use std::time::Duration;
use tidings_core::{Priority, State};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaching_the_worker_in_quiet_hours_is_held_until_they_end() {
    let harness::OneWorker { infra: _infra, smtp, store, watch, deliverer, .. } = harness::one_email_worker().await;
    // The user's quiet hours began an hour ago and end in two (their zone is UTC).
    let now = chrono::Utc::now();
    let (start, end) = (now - chrono::Duration::hours(1), now + chrono::Duration::hours(2));
    let prefs = serde_json::json!({
        "user_id": "u-0", "timezone": "UTC", "email": "user0@example.com", "channels": {"email": true},
        "quiet_hours": {"start": start.format("%H:%M").to_string(), "end": end.format("%H:%M").to_string()}
    });
    store.set_prefs("u-0", &prefs.to_string()).await.unwrap();
    let normal = harness::order_notification("n-normal", "evt-1");
    let mut critical = harness::order_notification("n-critical", "evt-2");
    critical.priority = Priority::Critical;

    for (n, offset) in [(&normal, 0), (&critical, 1)] {
        let (owners, input, live) = (deliverer.owners(), harness::input_of(n, offset), CancellationToken::new());
        let delivery = deliverer.process(&input, &owners, &live);
        tokio::time::timeout(Duration::from_secs(30), delivery).await.expect("the delivery ends");
    }
    let records = watch
        .wait_until("both statuses", Duration::from_secs(60), |rs| {
            rs.iter().any(|r| r.notification_id == "n-normal") && rs.iter().any(|r| r.notification_id == "n-critical")
        })
        .await;
    let normal = records.iter().find(|r| r.notification_id == "n-normal").unwrap();
    assert_eq!(normal.state, State::Deferred, "{normal:?}");
    let until = normal.not_before.expect("held until a time");
    assert!(until > now && until <= end, "held until the window ends: {until}");
    assert_eq!(records.iter().find(|r| r.notification_id == "n-critical").unwrap().state, State::Sent);
    let received = smtp.received();
    assert_eq!(received.len(), 1, "only the critical one went out");
    assert_eq!(store.deferred_len().await.unwrap(), 1, "the normal one is on the schedule");
    assert_eq!(store.dedupe_value("n-normal").await.unwrap(), None, "its claim was given up");

    // Released by the scheduler at the window's end by a clock a little ahead of the worker's:
    // held for this window already, it goes (held again, it would be lost or go round).
    let mut released = harness::order_notification("n-released", "evt-3");
    released.not_before = Some(until);
    let (owners, input, live) = (deliverer.owners(), harness::input_of(&released, 2), CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(30), deliverer.process(&input, &owners, &live))
        .await
        .expect("the delivery ends");
    let records = watch
        .wait_until("its status", Duration::from_secs(60), |rs| rs.iter().any(|r| r.notification_id == "n-released"))
        .await;
    assert_eq!(records.iter().find(|r| r.notification_id == "n-released").unwrap().state, State::Sent);
}
