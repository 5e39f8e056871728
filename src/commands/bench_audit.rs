//! `tidings bench audit`: `tidings audit` as a process of its own over a
//! fleet's topics in miniature: `--events` events, one email notification
//! each, and a `sent` status each, with `--planted` notifications left
//! without a status and as many sent twice, which the audit must find
//! exactly. Its time and peak RSS (`VmHWM`), so its memory per event shows.

use super::bench_cluster::BenchCluster;
use super::bench_worker::{peak_rss_kb, queue};
use crate::cli::AuditBenchArgs;
use chrono::Utc;
use rdkafka::producer::FutureRecord;
use std::io::Read as _;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};
use tidings_core::channel::STATUS_TOPIC;
use tidings_core::{kafka, Channel, Config, Priority, State, StatusRecord};

const PARTITIONS: i32 = 12;

pub async fn run(args: AuditBenchArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::from_toml(include_str!("../../tidings.example.toml"))?;
    let topics = super::topics::topics(&config);
    let (brokers, replication) = (args.cluster.brokers.as_deref(), args.cluster.replication);
    let kafka = BenchCluster::start(brokers, &topics, PARTITIONS, replication).await?;
    config.kafka.bootstrap_servers = kafka.bootstrap_servers();
    let measured = measure(&args, &config).await;
    if let Err(e) = kafka.remove().await {
        eprintln!("warning: {e:#}");
    }
    measured
}

async fn measure(args: &AuditBenchArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let (events, planted, users) = (args.events, args.planted, args.users.max(1));
    anyhow::ensure!(2 * planted <= events, "--planted is at most half of --events");
    let started = Instant::now();
    let producer = kafka::command_producer(&config.kafka)?;
    queue(&producer, "n", 0..events, users, Priority::Normal).await?;
    let mut deliveries = Vec::new();
    let input = &config.intake.topics[0];
    for seq in 0..events {
        let user = format!("u-{}", seq % users);
        let event = serde_json::json!({"specversion": "1.0", "id": format!("n-{seq}"), "type": "order.confirmed",
            "source": "/bench", "data": {"user_id": user, "order_id": format!("o-{seq}")}})
        .to_string();
        let record = FutureRecord::<str, [u8]>::to(input).key(&user).payload(event.as_bytes());
        deliveries.push(kafka::enqueue(&producer, record).await?);
        // The first `planted` have no status (lost); the next `planted` are sent twice.
        let sends = match seq {
            s if s < planted => 0,
            s if s < 2 * planted => 2,
            _ => 1,
        };
        for send in 0..sends {
            let status = sent(&format!("n-{seq}"), &user, send);
            let record = FutureRecord::<str, [u8]>::to(STATUS_TOPIC).key(&user).payload(&status);
            deliveries.push(kafka::enqueue(&producer, record).await?);
        }
        if deliveries.len() >= 10_000 {
            for d in deliveries.drain(..) {
                kafka::delivered(d).await?;
            }
        }
    }
    for d in deliveries {
        kafka::delivered(d).await?;
    }
    let records = 3 * events;
    println!(
        "{events} events, {records} records written in {:.1} s ({planted} notifications lost, {planted} sent twice)",
        started.elapsed().as_secs_f64()
    );

    let file = std::env::temp_dir().join(format!("tidings-bench-audit-{}.toml", std::process::id()));
    std::fs::write(&file, include_str!("../../tidings.example.toml"))?;
    let started = Instant::now();
    let mut audit = std::process::Command::new(std::env::current_exe()?)
        .args(["audit", "--json", "--grace", "0s", "--shards", &args.shards.to_string()])
        .env("TIDINGS_CONFIG", &file)
        .env("TIDINGS_KAFKA__BOOTSTRAP_SERVERS", &config.kafka.bootstrap_servers)
        .env("TIDINGS_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = audit.id();
    let mut peak_kb = 0;
    let status = loop {
        peak_kb = peak_kb.max(peak_rss_kb(pid).unwrap_or(0));
        if let Some(status) = audit.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    let mut out = String::new();
    audit.stdout.take().expect("piped").read_to_string(&mut out)?;
    let report: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("the audit ({status}) wrote no report ({e}): {out}"))?;
    let count = |field: &str| report[field].as_array().map_or(0, Vec::len);
    let found = (report["events"].as_u64().unwrap_or(0) as usize, count("missing_notifications"), count("repeated"));
    println!(
        "audit: {seconds:.1} s ({:.0} records/s), peak RSS {:.0} MB ({:.0} bytes per event); found {} events, {} lost, {} sent twice; exit {status}",
        records as f64 / seconds,
        peak_kb as f64 / 1024.0,
        peak_kb as f64 * 1024.0 / events as f64,
        found.0,
        found.1,
        found.2
    );
    let exact = found == (events, planted, planted) && count("missing_events") == 0;
    if !exact {
        println!("the audit did not find exactly what was planted");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A `sent` status of notification `id`, the `send`th (each with its own message id).
fn sent(id: &str, user: &str, send: usize) -> Vec<u8> {
    let status = StatusRecord {
        notification_id: id.to_string(),
        event_id: id.to_string(),
        event_type: "order.confirmed".into(),
        user_id: user.to_string(),
        state: State::Sent,
        channel: Some(Channel::Email),
        priority: Some(Priority::Normal),
        provider: Some("sandbox".into()),
        provider_message_id: Some(format!("{id}-{send}")),
        provider_code: None,
        attempts: 1,
        error_class: None,
        error: None,
        not_before: None,
        fallback_notification_id: None,
        created_at: Some(Utc::now()),
        at: Utc::now(),
        correlation_id: None,
        trace_id: None,
    };
    serde_json::to_vec(&status).expect("records serialize to JSON")
}
