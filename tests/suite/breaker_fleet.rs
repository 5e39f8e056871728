//! A breaker opened by one worker reaches the other workers of the fleet
//! through Redis (one server, or a Redis Cluster), and they stop calling the
//! provider too.

use crate::harness;
use std::sync::Arc;
use std::time::Duration;
use tidings::embedded::{RedisCluster, RedisServer};
use tidings_core::config::{Ambiguity, BreakerConfig, RetryConfig};
use tidings_core::store::{RedisStore, SharedStore};
use tidings_providers::twilio::config::TwilioConfig;
use tidings_providers::twilio::Twilio;
use tidings_providers::{Content, Outgoing, Provider};
use tidings_workers::chain::{Chain, Outcome, WhenDown};
use tidings_workers::retry::Policy;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn chain(twilio_url: &str, store: SharedStore) -> Chain {
    let config: TwilioConfig = serde_json::from_value(serde_json::json!({
        "base_url": twilio_url, "account_sid": "AC123", "auth_token": "t", "from": "+15550001111", "timeout": "2s"
    }))
    .unwrap();
    let provider: Arc<dyn Provider> = Arc::new(Twilio::new("twilio", &config).unwrap());
    let breaker: BreakerConfig =
        serde_json::from_value(serde_json::json!({"min_calls": 3, "failure_rate": 0.5, "reset_timeout": "60s"}))
            .unwrap();
    Chain::new(vec![provider], &breaker, Some(store))
}

/// One attempt, one pass, then give up.
fn once(chain: &Chain) -> impl std::future::Future<Output = Outcome> + '_ {
    let retry: RetryConfig = serde_json::from_value(serde_json::json!({"attempts": 1, "passes": 1})).unwrap();
    let policy = Policy::new(&retry, Ambiguity::AtMostOnce);
    async move { chain.send(&sms(), &policy, WhenDown::GiveUp, None, &CancellationToken::new()).await }
}

fn sms() -> Outgoing {
    Outgoing {
        notification_id: "n".into(),
        priority: tidings_core::Priority::Normal,
        content: Content::Sms { to: "+33612345678".into(), body: "hello".into() },
    }
}

#[tokio::test]
async fn one_workers_open_breaker_stops_the_others() {
    let redis = RedisServer::start().unwrap();
    one_open_breaker_stops_the_others(&redis.url()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_one_workers_open_breaker_stops_the_others() {
    let cluster = RedisCluster::start().unwrap();
    one_open_breaker_stops_the_others(&cluster.url()).await;
}

/// Two workers, each with its own connection to the Redis at `url`.
async fn one_open_breaker_stops_the_others(url: &str) {
    let store = || async { Arc::new(RedisStore::connect(url, "t").await.unwrap()) as SharedStore };
    let twilio = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).mount(&twilio).await;
    let (first, second) = (chain(&twilio.uri(), store().await), chain(&twilio.uri(), store().await));

    // The first worker sees the provider fail and opens its breaker.
    for _ in 0..3 {
        assert!(matches!(once(&first).await, Outcome::Failed(_)));
    }
    assert!(first.all_open());
    assert!(!second.all_open(), "the second has not heard yet");

    // Within its next sync (every half second in a worker), the second opens too.
    harness::eventually(
        "the second worker to learn of the open breaker",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            second.sync_fleet().await;
            second.all_open()
        },
    )
    .await;
    let calls = twilio.received_requests().await.unwrap().len();
    let Outcome::Failed(e) = once(&second).await else { panic!("the second worker sent") };
    assert!(e.error.message.contains("every provider of the channel is open"), "{}", e.error);
    assert_eq!(twilio.received_requests().await.unwrap().len(), calls, "the second worker made no call");
}
