//! A partition moved away while a delivery's claim request was on its way
//! to Redis: the delivery stops once Redis answers, and gives back the
//! claim the request took anyway, instead of leaving it for the partition's
//! new owner to wait out and take over as a delivery that stopped part-way
//! (on the code before, the claim stayed).

use crate::harness::{self, Infra};
use std::sync::Arc;
use std::time::Duration;
use tidings_core::Channel;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_request_in_flight_when_the_partition_moves_leaves_no_claim() {
    let infra = Infra::start();
    let providers = harness::sendgrid_provider("http://127.0.0.1:9", "5s");
    let config = Arc::new(infra.config(&providers, &[(Channel::Email, &["sendgrid"])]));
    let store = harness::store_with_email_users(&config, 1).await;
    let deliverer = harness::deliverer(&config, store.clone(), Channel::Email);
    let n = harness::email_notification("n-revoked", "evt-1", "u-0", "u0@example.com", serde_json::json!({}));
    let input = harness::input_of(&n, 0);

    // Redis holds every write (the claim script is one) a little while, less than the client's
    // response timeout: the request is sent, and answered late.
    let mut admin = redis::Client::open(infra.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(400).arg("WRITE").query_async(&mut admin).await.unwrap();
    let revoked = CancellationToken::new();
    let owners = deliverer.owners();
    let delivery = deliverer.process(&input, &owners, &revoked);
    tokio::pin!(delivery);
    // The delivery's claim request goes out and waits on the paused server; then the partition moves.
    assert!(tokio::time::timeout(Duration::from_millis(150), &mut delivery).await.is_err(), "it waits for the claim");
    revoked.cancel();
    tokio::time::timeout(Duration::from_secs(10), delivery).await.expect("a revoked delivery stops");

    // A claim of another id goes through the same batches, after the first one's: once it is
    // answered, Redis has run the revoked delivery's claim.
    let lease = Duration::from_secs(30);
    tidings_core::persist::until_ok("a later claim", || store.claim("after", "someone", lease)).await;
    assert_eq!(store.dedupe_value("n-revoked").await.unwrap(), None, "the claim was given back");

    // A record whose partition was gone before its delivery began (it waited for its user's
    // turn) asks Redis nothing: it returns at once, Redis paused or not, and leaves no claim.
    let mut late = n.clone();
    late.notification_id = "n-never-begun".into();
    let input = harness::input_of(&late, 1);
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(400).arg("WRITE").query_async(&mut admin).await.unwrap();
    tokio::time::timeout(Duration::from_millis(100), deliverer.process(&input, &deliverer.owners(), &revoked))
        .await
        .expect("a record of a revoked partition returns without asking Redis");
    tidings_core::persist::until_ok("a later claim", || store.claim("after-2", "someone", lease)).await;
    assert_eq!(store.dedupe_value("n-never-begun").await.unwrap(), None);
}
