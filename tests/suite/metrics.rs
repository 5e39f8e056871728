//! What operators watch: `/metrics`, `/healthz` and `/readyz`, scraped from
//! real `tidings` processes while they work, while Redis is gone, and while
//! their provider is down.

use crate::harness::{self, fakes, order_event, Infra, StatusWatch};
use std::time::Duration;
use tidings_core::config::BreakerConfig;
use tidings_core::telemetry::Health;
use tidings_core::Channel;
use tidings_workers::breaker::Breaker;

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `url`: status and body, or `None` when nothing answers.
async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

/// The sum of every sample of `name` whose labels contain each of `labels`.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric == name && labels.iter().all(|l| rest.contains(l)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    found
}

#[tokio::test]
async fn breaker_state_is_exported_for_prometheus() {
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _server = tidings::serve::start(addr, Health::shared()).unwrap();

    let settings: BreakerConfig =
        serde_json::from_value(serde_json::json!({"min_calls": 2, "failure_rate": 0.5})).unwrap();
    // A name no other test in this process gives a breaker: the recorder is global.
    let breaker = Breaker::new("metrics-probe", &settings);
    breaker.record(true, Duration::from_millis(5));
    breaker.record(true, Duration::from_millis(5));
    assert!(breaker.is_open());

    let body = get(&format!("http://{addr}/metrics")).await.expect("the endpoint answers").1;
    assert!(body.contains("tidings_breaker_state{provider=\"metrics-probe\"} 2"), "{body}");
}

/// Intake and an email worker as processes of their own, each serving its
/// endpoints. While 300 events go through a slow provider, the worker's
/// consumer lag, deliveries in flight and `sent` outcomes are seen to move;
/// while Redis is stopped both say they are not ready (and still alive),
/// and ready again once it is back; while the provider is down its breaker
/// is seen to open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_and_probes_follow_redis_and_the_provider() {
    let mut infra = Infra::start();
    let sendgrid = fakes::sendgrid().await;
    *sendgrid.state.latency.lock().unwrap() = Duration::from_millis(100);
    let providers = harness::sendgrid_provider(&sendgrid.server.uri(), "5s");
    let config = infra.config(&providers, &[(Channel::Email, &["sendgrid"])]);
    harness::store_with_email_users(&config, 50).await;
    let (intake_port, worker_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let file = |port: u16, name: &str| {
        let dir = dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        harness::config_file(
            &dir,
            &providers,
            "\n[channels.email]\nproviders = [\"sendgrid\"]\n",
            &[
                ("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\"")),
                // Lag every half second, and few deliveries at once: a backlog lasts long enough to see.
                (
                    "group_prefix = \"tidings\"",
                    "group_prefix = \"tidings\"\noptions = { \"statistics.interval.ms\" = \"500\" }",
                ),
                ("max_in_flight = 256", "max_in_flight = 8"),
                ("min_calls = 10", "min_calls = 4"),
            ],
        )
    };
    let watch = StatusWatch::start(&config);
    let _intake = infra.spawn(&file(intake_port, "intake"), &["intake"]);
    let _worker = infra.spawn(&file(worker_port, "worker"), &["worker", "--channel", "email"]);
    let worker = format!("http://127.0.0.1:{worker_port}");
    let intake = format!("http://127.0.0.1:{intake_port}");

    for url in [&intake, &worker] {
        harness::eventually("the process to be ready", Duration::from_secs(60), Duration::from_millis(100), || async {
            get(&format!("{url}/readyz")).await.is_some_and(|(status, _)| status == 200)
        })
        .await;
    }

    // 300 events through a provider that takes 100 ms, 8 at a time.
    let events: String = (0..300).map(|seq| order_event(seq, &format!("u-{}", seq % 50)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    // Scraped until every notification ended, having seen lag and deliveries in flight on the way.
    let seen = std::sync::Mutex::new((false, false, None::<f64>, 0.0));
    harness::eventually(
        "lag, in-flight and every outcome seen",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || async {
            let body = get(&format!("{worker}/metrics")).await.expect("the worker serves metrics").1;
            let sent =
                sample(&body, "tidings_notifications_total", &["channel=\"email\"", "state=\"sent\""]).unwrap_or(0.0);
            let mut seen = seen.lock().unwrap();
            let (lag, in_flight, first_sent, last_sent) = &mut *seen;
            first_sent.get_or_insert(sent);
            *last_sent = sent;
            *lag |= sample(&body, "tidings_consumer_lag", &["tidings.email.normal"]).is_some_and(|v| v > 0.0);
            *in_flight |= sample(&body, "tidings_worker_in_flight", &["channel=\"email\""]).is_some_and(|v| v > 0.0);
            let ended = watch.records().iter().filter(|r| r.state.is_terminal()).count();
            ended >= 300 && *lag && *in_flight
        },
    )
    .await;
    let (_, _, first_sent, last_sent) = seen.into_inner().unwrap();
    assert!(last_sent > first_sent.unwrap(), "`sent` outcomes moved while scraped");
    let body = get(&format!("{worker}/metrics")).await.unwrap().1;
    assert_eq!(sample(&body, "tidings_notifications_total", &["state=\"sent\""]), Some(300.0), "{body}");
    assert!(sample(&body, "tidings_records_in_total", &["role=\"worker\""]).is_some_and(|v| v >= 300.0), "{body}");
    let body = get(&format!("{intake}/metrics")).await.unwrap().1;
    assert_eq!(sample(&body, "tidings_records_in_total", &["role=\"intake\""]), Some(300.0), "{body}");
    assert_eq!(sample(&body, "tidings_records_out_total", &["role=\"intake\"", "priority=\"normal\""]), Some(300.0));
    // Once the backlog is done the lag comes back to nothing.
    harness::eventually("the lag to fall to 0", Duration::from_secs(30), Duration::from_millis(200), || async {
        let body = get(&format!("{worker}/metrics")).await.unwrap().1;
        sample(&body, "tidings_consumer_lag", &["role=\"worker\""]) == Some(0.0)
    })
    .await;

    // Redis stopped: neither process is ready, both are alive; ready again when it is back.
    infra.redis.stop();
    for url in [&intake, &worker] {
        harness::eventually("unready without Redis", Duration::from_secs(30), Duration::from_millis(100), || async {
            let (status, body) = get(&format!("{url}/readyz")).await.expect("the process answers");
            assert_eq!(get(&format!("{url}/healthz")).await.map(|a| a.0), Some(200), "alive while Redis is gone");
            status == 503 && body.contains("redis")
        })
        .await;
    }
    infra.redis.restart().unwrap();
    for url in [&intake, &worker] {
        harness::eventually("ready with Redis back", Duration::from_secs(30), Duration::from_millis(100), || async {
            get(&format!("{url}/readyz")).await.is_some_and(|(status, _)| status == 200)
        })
        .await;
    }

    // The provider down: its breaker opens, and the worker has no provider to send with.
    *sendgrid.state.down_until.lock().unwrap() = Some(std::time::Instant::now() + Duration::from_secs(600));
    let events: String = (300..340).map(|seq| order_event(seq, &format!("u-{}", seq % 50)) + "\n").collect();
    tidings::commands::dev::feed(&config, &events).await.unwrap();
    harness::eventually("the breaker to open", Duration::from_secs(60), Duration::from_millis(100), || async {
        let body = get(&format!("{worker}/metrics")).await.unwrap().1;
        sample(&body, "tidings_breaker_state", &["provider=\"sendgrid\""]) == Some(2.0)
    })
    .await;
    harness::eventually(
        "unready with every provider open",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let (status, body) = get(&format!("{worker}/readyz")).await.unwrap();
            status == 503 && body.contains("email: a provider not open")
        },
    )
    .await;
    assert_eq!(get(&format!("{worker}/healthz")).await.map(|a| a.0), Some(200));
    let terminal = harness::terminal_counts(&watch.records());
    assert!(terminal.values().all(|n| *n == 1), "a notification ended twice");
}
