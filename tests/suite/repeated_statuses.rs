//! A notification read again once its outcome is recorded (events fed
//! twice, a replayed topic, a partition moved mid-send) ends `duplicate`,
//! and its terminal status is written once. The copy finds the outcome
//! recorded; the mark saying its status was published is written in the
//! background and may come later. The copy republishes the status only
//! when the delivery that recorded it may have died before publishing it:
//! never for one of its own process (a delivery ends once its status is
//! acknowledged, and one user's copies are delivered one after the other),
//! and for another worker's only once a lease passed with no mark. On the
//! code before, a late mark was enough: a scenario fed twice through
//! `tidings dev` had one notification in eight with its `sent` record twice.

use crate::harness;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::store::RedisStore;
use tidings_core::{Channel, State, StatusRecord};
use tidings_workers::deliver::{Deliverer, Input, Marks};
use tokio_util::sync::CancellationToken;

async fn deliver(deliverer: &Deliverer, input: &Input) {
    let owners = deliverer.owners();
    tokio::time::timeout(Duration::from_secs(30), deliverer.process(input, &owners, &CancellationToken::new()))
        .await
        .expect("the delivery ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_republishes_a_status_only_when_its_recorder_may_have_died() {
    let harness::OneWorker { infra: _infra, smtp, config, store, watch, .. } = harness::one_email_worker().await;
    // The marks of both workers go to a Redis that has stopped: as late as a mark can be.
    let mut gone = tidings::embedded::RedisServer::start().unwrap();
    let unreachable: Arc<dyn tidings_core::store::Store> =
        Arc::new(RedisStore::connect(&gone.url(), &config.redis.key_prefix).await.unwrap());
    tokio::task::block_in_place(|| gone.stop());
    let unmarked = |owner: &str| {
        let mut deliverer = harness::deliverer(&config, store.clone(), Channel::Email);
        deliverer.marks = Marks::start(unreachable.clone()).0;
        deliverer.owner = owner.to_string();
        deliverer
    };
    let (here, elsewhere) = (unmarked("email-here"), unmarked("email-elsewhere"));
    let n = harness::order_notification("n-twice", "evt-1");
    let input = harness::input_of(&n, 0);
    deliver(&here, &input).await;
    let sent = |records: &[tidings_core::StatusRecord]| records.iter().filter(|r| r.state == State::Sent).count();
    let duplicates = |n: usize| {
        move |rs: &[tidings_core::StatusRecord]| rs.iter().filter(|r| r.state == State::Duplicate).count() >= n
    };

    // A copy in the same worker: its recorder published the status before it ended.
    deliver(&here, &input).await;
    let records = watch.wait_until("the copy to end duplicate", Duration::from_secs(60), duplicates(1)).await;
    assert_eq!(sent(&records), 1, "{records:?}");

    // A copy in another worker: no mark came within a lease, so the recorder may have died.
    deliver(&elsewhere, &input).await;
    let records = watch.wait_until("the second copy to end duplicate", Duration::from_secs(60), duplicates(2)).await;
    assert_eq!(sent(&records), 2, "republished once: {records:?}");
    assert_eq!(smtp.received().len(), 1, "sent once");
}

/// A delivery's `finish` went through but its answer was lost (Redis slow
/// past the client's timeout): retried, it reads "claim lost", and the next
/// claim of the same delivery finds its own outcome recorded. That outcome
/// is the delivery's to publish, not a copy's: its status is written once,
/// and no `duplicate`. (The state such a loss leaves is written here as it
/// would be.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_finds_its_own_outcome_recorded_publishes_it() {
    let harness::OneWorker { infra: _infra, smtp, store, watch, deliverer, .. } = harness::one_email_worker().await;
    let n = harness::order_notification("n-own", "evt-1");
    let owners = deliverer.owners();
    // What attempt 1 of this delivery recorded, unpublished.
    let status = StatusRecord::of(&n, State::Sent, chrono::Utc::now());
    let record = serde_json::json!({"status": status, "by": "email-test.0.1", "published": false}).to_string();
    store.claim("n-own", "email-test.0.1", Duration::from_secs(30)).await.unwrap();
    assert!(store.finish("n-own", "email-test.0.1", &record, Duration::from_secs(600)).await.unwrap());

    tokio::time::timeout(
        Duration::from_secs(30),
        deliverer.process(&harness::input_of(&n, 0), &owners, &CancellationToken::new()),
    )
    .await
    .expect("the delivery ends");
    // The user's next notification: its status comes after any of the first one's.
    let next = harness::order_notification("n-next", "evt-2");
    deliver(&deliverer, &harness::input_of(&next, 1)).await;
    let records = watch
        .wait_until("the next one's status", Duration::from_secs(60), |rs| {
            rs.iter().any(|r| r.notification_id == "n-next")
        })
        .await;
    let states: Vec<State> = records.iter().filter(|r| r.notification_id == "n-own").map(|r| r.state).collect();
    assert_eq!(states, vec![State::Sent], "{records:?}");
    let record: serde_json::Value = serde_json::from_str(&store.dedupe_value("n-own").await.unwrap().unwrap()).unwrap();
    assert_eq!(record["published"], true, "marked published");
    assert_eq!(smtp.received().len(), 1, "only the next one was sent");
}

/// An outcome recorded by another delivery of this worker that stopped
/// before its status was acknowledged (its partition was revoked, or it
/// panicked, between the two): a copy writes the status at once. On the
/// code before, a copy took any outcome recorded in its own process for
/// published, and the notification never had a terminal status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_recorded_here_and_never_published_is_published_by_a_copy() {
    let harness::OneWorker { infra: _infra, store, watch, deliverer, .. } = harness::one_email_worker().await;
    let n = harness::order_notification("n-stopped", "evt-1");
    // What delivery 9 of this worker recorded before it stopped.
    let status = StatusRecord::of(&n, State::Sent, chrono::Utc::now());
    let record = serde_json::json!({"status": status, "by": "email-test.9.1", "published": false}).to_string();
    store.claim("n-stopped", "email-test.9.1", Duration::from_secs(30)).await.unwrap();
    assert!(store.finish("n-stopped", "email-test.9.1", &record, Duration::from_secs(600)).await.unwrap());

    deliver(&deliverer, &harness::input_of(&n, 0)).await;
    let records = watch
        .wait_until("the copy to end duplicate", Duration::from_secs(60), |rs| {
            rs.iter().any(|r| r.state == State::Duplicate)
        })
        .await;
    let states: Vec<State> = records.iter().map(|r| r.state).collect();
    assert_eq!(states, vec![State::Sent, State::Duplicate], "{records:?}");
}
