//! An ambiguous answer (the request written, no answer in time) pins a
//! critical message to the provider that gave it: the message may be out
//! already, so it is never sent through another provider or channel. The
//! pin outlives the delivery that learned it: a delivery abandoned while
//! pinned (its partition moved, the worker drained, its claim was lost)
//! leaves the pin to the next one. On the code before, the pin lived in the
//! abandoned delivery only: the next one, SendGrid answering 503, handed the
//! message to SMTP, a second copy by another route that no status counted.

use crate::harness::{self, fakes, smtp::SmtpServer, Infra};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::store::{pinned_to, Claim, Keys, CLAIM_MEMORY};
use tidings_core::{Channel, Priority};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_abandoned_while_pinned_leaves_the_pin_to_the_next_one() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    let smtp = SmtpServer::start().await;
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "1s")
        + &harness::smtp_and_twilio(smtp.port, "http://127.0.0.1:9");
    let mut config = infra.config(&providers, &[(Channel::Email, &["sendgrid", "smtp"])]);
    config.worker.retry.attempts = 2;
    config.worker.retry.passes = 2;
    config.worker.retry.max_backoff = Duration::from_millis(100);
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, 1).await;
    let deliverer = Arc::new(harness::deliverer(&config, store.clone(), Channel::Email));
    let mut n = harness::order_notification("n-pinned", "evt-1");
    n.priority = Priority::Critical;
    let input = harness::input_of(&n, 0);

    // SendGrid takes the request and answers after the adapter gave up on it: ambiguous.
    sendgrid.state.stall_next.store(1, SeqCst);
    *sendgrid.state.stall_for.lock().unwrap() = Duration::from_secs(3);
    let revoked = CancellationToken::new();
    let first = tokio::spawn({
        let (deliverer, input, revoked) = (deliverer.clone(), input.clone(), revoked.clone());
        async move { deliverer.process(&input, &deliverer.owners(), &revoked).await }
    });
    harness::eventually("SendGrid has the request", Duration::from_secs(10), Duration::from_millis(10), || async {
        sendgrid.state.accepted().len() == 1
    })
    .await;
    // The partition moves while the call is on its way: the call ends (ambiguous), then the delivery stops.
    revoked.cancel();
    tokio::time::timeout(Duration::from_secs(10), first).await.expect("a revoked delivery stops").unwrap();
    assert!(smtp.received().is_empty(), "the first delivery sent nothing through SMTP");

    let pin = || async { store.dedupe_value("n-pinned").await.unwrap().as_deref().and_then(pinned_to) };
    assert_eq!(pin().await.as_deref(), Some("sendgrid"), "the claim was given up pinned");

    // A delivery whose partition moves while its claim request is on its way (Redis holding
    // writes a while) takes the pinned claim over all the same: it hands the pin on.
    let mut admin = redis::Client::open(infra.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(400).arg("WRITE").query_async(&mut admin).await.unwrap();
    let moved = CancellationToken::new();
    let owners = deliverer.owners();
    let delivery = deliverer.process(&input, &owners, &moved);
    tokio::pin!(delivery);
    assert!(tokio::time::timeout(Duration::from_millis(150), &mut delivery).await.is_err(), "it waits for the claim");
    moved.cancel();
    tokio::time::timeout(Duration::from_secs(10), delivery).await.expect("a revoked delivery stops");
    assert_eq!(pin().await.as_deref(), Some("sendgrid"), "the pin was handed on");

    // The partition's next owner delivers the record again, SendGrid now refusing every call.
    *sendgrid.state.down_until.lock().unwrap() = Some(std::time::Instant::now() + Duration::from_secs(3600));
    let live = CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(30), deliverer.process(&input, &deliverer.owners(), &live))
        .await
        .expect("the second delivery ends");
    assert_eq!(smtp.received().len(), 0, "no second copy through SMTP");
    let record = store.dedupe_value("n-pinned").await.unwrap().expect("an outcome is recorded");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["status"]["state"], "unconfirmed", "{record}");
    assert!(sendgrid.state.refused() > 0, "the second delivery called SendGrid again");
}

/// A critical message whose claim a delivery took over from one that died
/// (`at_least_once`: it is sent, saying it may be a second copy) is held
/// behind an open breaker when its partition moves. The claim is handed on
/// as taken over, so the partition's next owner still knows a delivery of
/// it stopped part-way. On the code before, the claim was released and the
/// next owner read a plain claim: its copy went out as a first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_took_a_claim_over_hands_it_on_as_taken_over() {
    let infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    let mut config =
        infra.config(&harness::sendgrid_provider(&sendgrid.server.uri(), "5s"), &[(Channel::Email, &["sendgrid"])]);
    let b = &mut config.worker.breaker;
    (b.min_calls, b.failure_rate, b.reset_timeout) = (1, 0.5, Duration::from_secs(1));
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, 1).await;
    let deliverer = Arc::new(harness::deliverer(&config, store.clone(), Channel::Email));
    let mut n = harness::order_notification("n-taken", "evt-1");
    n.priority = Priority::Critical;
    let input = harness::input_of(&n, 0);

    // A delivery died holding the claim: its lease runs out, the claim is remembered.
    let lease = Duration::from_millis(100);
    assert_eq!(store.claim("n-taken", "dead.0.1", lease).await.unwrap(), Claim::Acquired);
    let key = Keys::new(&config.redis.key_prefix).dedupe("n-taken");
    let admin = redis::Client::open(infra.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    harness::eventually(
        "the dead delivery's lease to run out",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || {
            let (mut admin, key) = (admin.clone(), key.clone());
            async move {
                let left: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut admin).await.unwrap();
                left <= CLAIM_MEMORY.as_millis() as i64
            }
        },
    )
    .await;

    *sendgrid.state.down_until.lock().unwrap() = Some(std::time::Instant::now() + Duration::from_secs(3600));
    let revoked = CancellationToken::new();
    let delivery = tokio::spawn({
        let (deliverer, revoked) = (deliverer.clone(), revoked.clone());
        async move { deliverer.process(&input, &deliverer.owners(), &revoked).await }
    });
    harness::eventually("the breaker to open", Duration::from_secs(10), Duration::from_millis(10), || async {
        deliverer.chain.all_open()
    })
    .await;
    revoked.cancel();
    tokio::time::timeout(Duration::from_secs(10), delivery).await.expect("a revoked delivery stops").unwrap();

    let next = store.claim("n-taken", "next.0.1", Duration::from_secs(30)).await.unwrap();
    assert_eq!(next, Claim::TakenOver { pinned: None }, "handed on as taken over");
}
