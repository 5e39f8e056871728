//! Metrics are served for Prometheus, breaker state among them.

use crate::harness;
use std::time::Duration;
use tidings_core::config::BreakerConfig;
use tidings_core::Config;
use tidings_workers::breaker::Breaker;

#[tokio::test]
async fn breaker_state_is_exported_for_prometheus() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = Config::from_toml("[kafka]\nbootstrap_servers = \"k:9092\"\n").unwrap();
    config.metrics.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    tidings::fleet::install_metrics(&config).unwrap();

    let settings: BreakerConfig =
        serde_json::from_value(serde_json::json!({"min_calls": 2, "failure_rate": 0.5})).unwrap();
    // A name no other test in this process gives a breaker: the recorder is global.
    let breaker = Breaker::new("metrics-probe", &settings);
    breaker.record(true, Duration::from_millis(5));
    breaker.record(true, Duration::from_millis(5));
    assert!(breaker.is_open());

    // The listener starts in the background: scrape until it answers.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let body = std::sync::Mutex::new(String::new());
    harness::eventually("the metrics endpoint", Duration::from_secs(10), Duration::from_millis(20), || async {
        match reqwest::get(&url).await {
            Ok(r) => {
                *body.lock().unwrap() = r.text().await.unwrap_or_default();
                true
            }
            Err(_) => false,
        }
    })
    .await;
    let body = body.into_inner().unwrap();
    assert!(body.contains("tidings_breaker_state{provider=\"metrics-probe\"} 2"), "{body}");
}
