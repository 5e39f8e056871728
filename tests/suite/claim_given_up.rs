//! A delivery held through a provider outage loses its claim when Redis
//! goes away (no renewal for two thirds of a lease) and stops, sending
//! nothing; the claim cannot be given up while Redis is away. Once Redis is
//! back, the delivery gives that claim up before it claims again, so it
//! sends the message as it would have. Each claim attempt has an owner of
//! its own: without the give-up, the next attempt would find the earlier
//! one's claim, wait out its lease, take it over as a delivery that stopped
//! part-way and, under `at_most_once`, end the message `unconfirmed` though
//! nothing went out.

use crate::harness::{self, fakes, Infra};
use std::sync::Arc;
use std::time::Duration;
use tidings_core::Channel;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_lost_with_redis_is_given_up_before_the_next_attempt() {
    let mut infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    let mut config =
        infra.config(&harness::sendgrid_provider(&sendgrid.server.uri(), "5s"), &[(Channel::Email, &["sendgrid"])]);
    // One refused call opens the breaker; the message is then held, its passes not counted.
    let b = &mut config.worker.breaker;
    (b.min_calls, b.failure_rate, b.reset_timeout) = (1, 0.5, Duration::from_secs(1));
    config.worker.retry.passes = 5;
    let config = Arc::new(config);
    let store = harness::store_with_email_users(&config, 1).await;
    let deliverer = Arc::new(harness::deliverer(&config, store.clone(), Channel::Email));
    let n = harness::order_notification("n-held", "evt-1");
    let input = harness::input_of(&n, 0);

    *sendgrid.state.down_until.lock().unwrap() = Some(std::time::Instant::now() + Duration::from_secs(3600));
    let delivery = tokio::spawn({
        let deliverer = deliverer.clone();
        async move { deliverer.process(&input, &deliverer.owners(), &CancellationToken::new()).await }
    });
    harness::eventually("the breaker to open", Duration::from_secs(10), Duration::from_millis(10), || async {
        deliverer.chain.all_open()
    })
    .await;

    // Redis shuts down (its data written out) for longer than the lease: the claim is lost.
    let mut admin = redis::Client::open(infra.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: Result<(), _> = redis::cmd("SHUTDOWN").query_async(&mut admin).await;
    // The outage itself: nothing is waited for here, Redis is simply away.
    tokio::time::sleep(config.worker.claim_lease + Duration::from_secs(1)).await;
    *sendgrid.state.down_until.lock().unwrap() = None;
    tokio::task::block_in_place(|| infra.redis.restart()).unwrap();

    tokio::time::timeout(Duration::from_secs(30), delivery).await.expect("the delivery ends").unwrap();
    let record = store.dedupe_value("n-held").await.unwrap().expect("an outcome is recorded");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["status"]["state"], "sent", "{record}");
    assert_eq!(sendgrid.state.accepted(), vec!["n-held".to_string()]);
}
