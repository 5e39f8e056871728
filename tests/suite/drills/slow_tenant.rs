//! One user's webhook endpoint answers in 10 s with more notifications
//! queued for it than the worker's in-flight budget, while 500 other users'
//! endpoints answer at once. Records waiting for their user's lane take no
//! slot and the endpoint's slowness does not open the shared webhook
//! breaker: the others finish at their own speed. (`max_per_destination`,
//! which keeps several slow users behind one host to a few calls, has its
//! own test in the webhook provider.)

use super::{all_ended, Expected, Tally};
use crate::harness::{order_event, Infra, StatusWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings::fleet;
use tidings_core::{Channel, Clock};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// What the slow user has queued: more than the whole budget.
const SLOW_QUEUED: usize = 100;
const OTHERS: usize = 500;
const BUDGET: usize = 64;

fn webhook_user(user: &str, url: &str) -> String {
    serde_json::json!({"user_id": user, "webhook_url": url, "channels": {"webhook": true}}).to_string()
}

/// The `webhook-id` (our notification id) of every request `server` received, in order.
async fn received(server: &MockServer) -> Vec<String> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests.iter().filter_map(|r| r.headers.get("webhook-id")?.to_str().ok().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_endpoint_holds_only_its_own_user() {
    let infra = Infra::start();
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&slow)
        .await;
    let fast = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&fast).await;

    let providers = format!(
        "\n[providers.webhook]\nkind = \"webhook\"\n\
         allow_private = true\nallowed_ports = [{}, {}]\ntimeout = \"15s\"\n",
        slow.address().port(),
        fast.address().port()
    );
    let mut config = infra.config(&providers, &[(Channel::Webhook, &["webhook"])]);
    config.events.get_mut("order.confirmed").unwrap().channels = vec![Channel::Webhook];
    config.worker.max_in_flight = BUDGET;
    config.worker.drain_timeout = Duration::from_secs(1);
    let config = Arc::new(config);
    let store = fleet::open_store(&config).await.unwrap();
    let mut users = String::new();
    users += &(webhook_user("slow", &format!("{}/hook/slow", slow.uri())) + "\n");
    for i in 0..OTHERS {
        users += &(webhook_user(&format!("t-{i}"), &format!("{}/hook/t-{i}", fast.uri())) + "\n");
    }
    tidings::commands::prefs::import(store.as_ref(), &users).await.unwrap();

    let watch = StatusWatch::start(&config);
    let roles = fleet::Roles { intake: true, scheduler: false, callbacks: false, channels: vec![Channel::Webhook] };
    let running = fleet::spawn_fleet(config.clone(), store, Clock::system(), roles).unwrap();

    // The slow user's backlog first, then everyone else's.
    let slow_events: Vec<(usize, String)> = (0..SLOW_QUEUED).map(|seq| (seq, "slow".to_string())).collect();
    let others: Vec<(usize, String)> = (0..2 * OTHERS).map(|k| (10_000 + k, format!("t-{}", k % OTHERS))).collect();
    let lines: String = slow_events.iter().chain(&others).map(|(seq, user)| order_event(*seq, user) + "\n").collect();
    let start = Instant::now();
    tidings::commands::dev::feed(&config, &lines).await.unwrap();

    let expected = Expected::of(&others, Channel::Webhook);
    let records = watch
        .wait_until("the other tenants' notifications to end", Duration::from_secs(60), all_ended(&expected))
        .await;
    let mut tally = Tally::of(&expected, &received(&fast).await, &records);
    tally.recovery = Some(start.elapsed());
    tally.assert_kept("slow-tenant (the 1,000 others)");
    assert_eq!(tally.dead_lettered, 0);

    // The slow user: in order, none twice.
    let slow_expected = Expected::of(&slow_events, Channel::Webhook);
    let reached = received(&slow).await;
    assert!(!reached.is_empty(), "the slow endpoint was called");
    let slow_tally = Tally::of(&slow_expected, &reached, &records);
    assert_eq!((slow_tally.sent_twice, slow_tally.out_of_order), (0, 0), "{slow_tally}");
    running.shutdown().await.unwrap();
}
