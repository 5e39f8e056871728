//! `tidings bench intake`: intake throughput on the embedded broker (or an
//! external one, `--brokers`), with a warm and a cold preference cache, next
//! to a bare consume→produce passthrough on the same broker. `--guard`
//! fails the run when intake falls below a share of that passthrough, and
//! `--guard-caps` and `--guard-digests` when the runs with limits do.
//!
//! Each run consumes `2 × events` records under a fresh consumer group; the
//! first half warms up (connections, group join, and for the warm run the
//! cache), and the figure is the second half: events per second from the
//! moment the first half is done to the moment the second is. Every event
//! becomes exactly one record in every run (bench users enable one channel,
//! no quiet hours), so the three figures compare like with like. Beside each
//! figure, the CPU time of this process per event over the same half: the
//! role or the passthrough with its librdkafka clients, and on the mock
//! cluster the broker too (an external broker is a process of its own),
//! and the benchmark's Redis's CPU time per event apart: the caps and
//! digests cost there too, on the same cores.

use super::bench_cluster::BenchCluster;
use super::live::LiveLine;
use crate::cli::BenchArgs;
use crate::embedded::RedisServer;
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidings_core::kafka;
use tidings_core::progress::Progress;
use tidings_core::store::SharedStore;
use tidings_core::{Clock, Config};
use tokio_util::sync::CancellationToken;

const INPUT: &str = "orders.events";
const PASSTHROUGH: &str = "bench.passthrough";
const PARTITIONS: i32 = 32;

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(RedisServer::available(), "the benchmark needs redis-server");
    let redis = RedisServer::start()?;
    let _ = REDIS_PID.set(redis.pid().unwrap_or_default());
    let mut config = Config::from_toml(include_str!("../../tidings.example.toml"))?;
    config.kafka.options.clear();
    config.redis.url = redis.url();
    config.intake.topics = vec![INPUT.to_string()];
    let topics: Vec<String> = super::topics::topics(&config).into_iter().chain([PASSTHROUGH.to_string()]).collect();
    let (brokers, replication) = (args.cluster.brokers.as_deref(), args.cluster.replication);
    let kafka = BenchCluster::start(brokers, &topics, PARTITIONS, replication).await?;
    config.kafka.bootstrap_servers = kafka.bootstrap_servers();
    let measured = measure_all(&args, &config).await;
    if let Err(e) = kafka.remove().await {
        eprintln!("warning: {e:#}");
    }
    let [bare, cold, warm, capped, digested] = measured?;
    println!("median of {} runs:", args.runs.max(1));
    println!(
        "  passthrough (consume -> produce): {:>9.0} events/s  {:>5.1} µs CPU/event  Redis {:>4.1} µs",
        bare.rate, bare.cpu_us, bare.redis_us
    );
    let runs = [
        ("intake, cold cache (no cache):", cold),
        ("intake, warm cache:", warm),
        ("intake, warm, two caps:", capped),
        ("intake, warm, all digested:", digested),
    ];
    for (name, run) in runs {
        println!(
            "  {name:<33}{:>9.0} events/s  {:>5.1} µs CPU/event  Redis {:>4.1} µs  ({:.0} % of passthrough)",
            run.rate,
            run.cpu_us,
            run.redis_us,
            100.0 * run.rate / bare.rate
        );
    }
    // Each guarded run against its own floor (the caps' and digests' runs
    // are far below intake's: README, Benchmarks), every one reported.
    let guards = [
        ("intake", args.guard, cold.rate.min(warm.rate)),
        ("intake with two caps", args.guard_caps, capped.rate),
        ("intake with every event digested", args.guard_digests, digested.rate),
    ];
    let mut kept = true;
    for (name, floor, rate) in guards {
        let Some(floor) = floor else { continue };
        let (share, floor) = (100.0 * rate / bare.rate, 100.0 * floor);
        match share < floor {
            true => println!("guard: {name} at {share:.0} % of passthrough, below the {floor:.0} % floor"),
            false => println!("guard: {name} at {share:.0} % of passthrough, floor {floor:.0} %: kept"),
        }
        kept &= share >= floor;
    }
    Ok(if kept { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One run's figure: events per second, and this process's CPU time per event.
#[derive(Debug, Clone, Copy)]
struct Measured {
    rate: f64,
    cpu_us: f64,
    /// The benchmark's Redis's CPU time per event.
    redis_us: f64,
}

/// The benchmark's Redis (its CPU time is measured apart).
static REDIS_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Prepares the users and events, then measures every run; the medians
/// (by rate) of passthrough, cold, warm, warm with frequency caps, and warm
/// with every event going to a digest.
async fn measure_all(args: &BenchArgs, config: &Config) -> anyhow::Result<[Measured; 5]> {
    let store = crate::fleet::open_store(config).await?;
    let users: String = (0..args.users)
        .map(|i| {
            serde_json::json!({"user_id": format!("u-{i}"), "timezone": "Europe/Paris", "email": format!("u{i}@example.com"),
                "channels": {"email": true}})
            .to_string()
                + "\n"
        })
        .collect();
    super::prefs::import(store.as_ref(), &users).await?;
    let total = 2 * args.events;
    let events: String = (0..total)
        .map(|seq| {
            serde_json::json!({"specversion": "1.0", "id": format!("evt-{seq}"), "type": "order.confirmed", "source": "/bench",
                "time": "2026-11-26T12:00:00Z",
                "data": {"user_id": format!("u-{}", seq % args.users), "order_id": format!("o-{seq}"), "total": "89.90",
                    "currency": "EUR", "items": [{"name": "Linen shirt", "quantity": 2, "price": "29.95"}], "item_count": 2,
                    "placed_at": "2026-11-26T09:15:00Z", "order_url": "https://shop.example/orders/o"}})
            .to_string()
                + "\n"
        })
        .collect();
    super::dev::feed(config, &events).await?;
    println!(
        "{} events for {} users on {PARTITIONS} partitions of {}; measuring the second {} of each run",
        total,
        args.users,
        if args.cluster.brokers.is_some() { "an external cluster" } else { "the mock cluster" },
        args.events
    );

    // Runs alternate, so that a noisy moment on the machine does not favour one kind.
    let (mut bare, mut cold, mut warm, mut capped, mut digested) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Every event to its user's digest of the hour, ten at most: one event in
    // ten fills a window (its release held at once) and the next opens one
    // (its release held at the hour). Each becomes one `digested` status.
    let mut with_digests = config.clone();
    let digest = serde_json::json!({"window": "1h", "max_items": 10});
    with_digests.events.get_mut("order.confirmed").expect("the example routes orders").digest =
        Some(serde_json::from_value(digest)?);
    with_digests.validate()?;
    // Two caps count every event (one of its category, one across
    // categories), each admission a script call in Redis; set high enough
    // never to hold one, so each event still becomes one record.
    let mut with_caps = config.clone();
    with_caps.caps = serde_json::from_value(serde_json::json!({
        "transactional": {"max": 1_000_000, "per": "1h"},
        "all_non_critical": {"max": 1_000_000, "per": "24h", "categories": ["*"]}
    }))?;
    with_caps.validate()?;
    // Groups of this benchmark's own: an external cluster may remember a group's offsets of an earlier run's topics.
    let tag = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    for run in 0..args.runs.max(1) {
        let progress = Progress::shared();
        let token = CancellationToken::new();
        let group = format!("bench-passthrough-{tag}-{run}");
        let copy = passthrough(config.clone(), group, progress.clone(), token.clone().cancelled_owned());
        bare.push(measure(args.events, progress, token, copy).await?);
        cold.push(intake_run(config, &store, &format!("cold-{tag}-{run}"), 0, args.events).await?);
        let warm_cache = args.users as u64 * 2;
        warm.push(intake_run(config, &store, &format!("warm-{tag}-{run}"), warm_cache, args.events).await?);
        // Each run reads the same events: what an earlier run admitted or
        // digested is forgotten first, so that no run meets only second reads.
        forget_limits(config).await?;
        let name = format!("capped-{tag}-{run}");
        capped.push(intake_run(&with_caps, &store, &name, warm_cache, args.events).await?);
        forget_limits(config).await?;
        let name = format!("digested-{tag}-{run}");
        digested.push(intake_run(&with_digests, &store, &name, warm_cache, args.events).await?);
        eprintln!(
            "run {}: passthrough {:.0}, cold {:.0}, warm {:.0}, capped {:.0}, digested {:.0} events/s",
            run + 1,
            bare[run].rate,
            cold[run].rate,
            warm[run].rate,
            capped[run].rate,
            digested[run].rate
        );
    }
    Ok([median(bare), median(cold), median(warm), median(capped), median(digested)])
}

/// Deletes every cap, digest and deferral key of the benchmark's Redis.
async fn forget_limits(config: &Config) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(config.redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let prefix = &config.redis.key_prefix;
    for pattern in [format!("{{{prefix}:caps:*"), format!("{{{prefix}:digest:*"), format!("{prefix}:deferred*")] {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let () = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    let () = redis::cmd("DEL").arg(format!("{prefix}:lanes")).query_async(&mut conn).await?;
    Ok(())
}

fn median(mut v: Vec<Measured>) -> Measured {
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    v[v.len() / 2]
}

async fn intake_run(
    config: &Config,
    store: &SharedStore,
    name: &str,
    cache: u64,
    events: usize,
) -> anyhow::Result<Measured> {
    let mut config = config.clone();
    config.kafka.group_prefix = format!("bench-{name}");
    config.intake.prefs_cache_size = cache;
    config.intake.prefs_cache_ttl = Duration::from_secs(3600);
    let progress = Progress::shared();
    let token = CancellationToken::new();
    let run = tidings_intake::run(
        Arc::new(config),
        store.clone(),
        Clock::system(),
        progress.clone(),
        tidings_core::telemetry::Health::shared(),
        token.clone().cancelled_owned(),
    );
    measure(events, progress, token, async move { Ok(run.await?) }).await
}

/// Runs `run` until it has handled `2 × events` records (counted in
/// `progress.events`); returns events/s and CPU per event over the second half.
async fn measure(
    events: usize,
    progress: Arc<Progress>,
    token: CancellationToken,
    run: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<Measured> {
    let cpu = || {
        let of = |pid| super::bench_worker::cpu_seconds(pid).unwrap_or_default();
        (of(std::process::id()), REDIS_PID.get().map_or(0.0, |pid| of(*pid)))
    };
    let task = tokio::spawn(run);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut start = None;
    let mut live = LiveLine::stdout();
    let mut shown = Instant::now();
    loop {
        let done = Progress::get(&progress.events);
        if shown.elapsed() >= Duration::from_millis(250) {
            live.show(&format!("  {done} of {} events", 2 * events));
            shown = Instant::now();
        }
        if start.is_none() && done >= events as u64 {
            start = Some((Instant::now(), cpu()));
        }
        if done >= 2 * events as u64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "benchmark run did not finish in 10 minutes ({done} done)");
        anyhow::ensure!(!task.is_finished(), "benchmark run stopped early ({done} done)");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (elapsed, (used, redis)) = start
        .map(|(at, (then, redis_then))| {
            let (now, redis_now) = cpu();
            (at.elapsed(), (now - then, redis_now - redis_then))
        })
        .unwrap_or_default();
    live.finish();
    token.cancel();
    task.await??;
    Ok(Measured {
        rate: events as f64 / elapsed.as_secs_f64(),
        cpu_us: used * 1e6 / events as f64,
        redis_us: redis * 1e6 / events as f64,
    })
}

/// The baseline: the same consumer and producer settings as intake, each
/// record copied to another topic, its offset stored once acknowledged.
async fn passthrough(
    config: Config,
    group: String,
    progress: Arc<Progress>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = kafka::consumer(&config.kafka, &group)?;
    consumer.subscribe(&[INPUT])?;
    let producer = kafka::command_producer(&config.kafka)?;
    let mut acks = FuturesOrdered::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(done) = acks.next(), if !acks.is_empty() => {
                let (topic, partition, offset): (String, i32, i64) = done?;
                let _ = consumer.store_offset(&topic, partition, offset);
                Progress::add(&progress.events, 1);
            }
            m = consumer.recv(), if acks.len() < config.intake.max_in_flight => {
                let m = m?;
                let record = FutureRecord::<[u8], [u8]>::to(PASSTHROUGH).key(m.key().unwrap_or_default()).payload(m.payload().unwrap_or_default());
                let delivery = kafka::enqueue(&producer, record).await?;
                let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
                acks.push_back(async move { kafka::delivered(delivery).await.map(|()| (topic, partition, offset)) });
            }
        }
    }
    Ok(())
}
