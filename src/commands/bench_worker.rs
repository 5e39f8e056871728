//! `tidings bench worker`: one email worker, as a process of its own, on the
//! embedded broker and a private `redis-server`, sending through a sandbox
//! provider that answers after `--latency` (and fails `--error-rate` of the
//! calls). Notifications are queued on the channel topic before the worker
//! starts, as a backlog it drains.
//!
//! Three runs, each on fresh infrastructure:
//! - **pipelined**: the configured in-flight budget;
//! - **baseline**: the budget set to the partition count, what a consumer
//!   that handles each partition's records one at a time reaches;
//! - **mixed**: the backlog on the bulk topic while critical notifications
//!   arrive at `--critical-rate` per second.
//!
//! `--workers` runs several worker processes on the same backlog, and
//! `--rate-limit` puts a fleet-wide limit on the sandbox: together they show
//! the limit holding across processes.
//!
//! `--brokers` runs on an external cluster instead of the mock cluster (its
//! topics made for each run and removed after); `--guard` fails the command
//! when the pipelined run drains below a share of what its budget allows.
//!
//! Figures, from the status records the worker writes: steady throughput
//! (the middle 80 % of sends, by the time the worker recorded them),
//! end-to-end p50/p99 (queued → provider accepted), the worker's CPU per
//! message over that middle 80 % (from `/proc/<pid>/stat`, all workers
//! together), its peak RSS (`VmHWM`, the largest worker's), and whether
//! every user's notifications were sent in the order they were queued in.
//! Printed as a table, and as JSON with `--json`.

use super::bench_cluster::BenchCluster;
use super::live::LiveLine;
use crate::cli::WorkerBenchArgs;
use crate::embedded::RedisServer;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use std::collections::{HashMap, HashSet};
use std::process::{Child, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings_core::channel::STATUS_TOPIC;
use tidings_core::{kafka, Channel, Config, Notification, Priority, Recipient, State, StatusRecord};

/// What one run measured.
#[derive(Debug, serde::Serialize)]
struct Figures {
    run: String,
    messages: usize,
    in_flight: usize,
    steady_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_message: f64,
    peak_rss_mb: f64,
    /// Users whose backlog notifications were sent in another order than they were queued in.
    users_out_of_order: usize,
    /// Mixed run: the critical notifications' end-to-end p50 and p99.
    #[serde(skip_serializing_if = "Option::is_none")]
    critical: Option<(usize, f64, f64)>,
}

pub async fn run(args: WorkerBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(RedisServer::available(), "the benchmark needs redis-server");
    let templates = std::env::current_dir()?.join("templates");
    anyhow::ensure!(templates.join("order.confirmed").is_dir(), "run from the repository root (templates/ is read)");
    let mut results = Vec::new();
    let runs: [(&str, usize, usize, Priority); 3] = [
        ("pipelined", args.messages, args.in_flight, Priority::Normal),
        ("baseline", args.baseline_messages, args.partitions as usize, Priority::Normal),
        ("mixed", args.messages, args.in_flight, Priority::Bulk),
    ];
    for (name, messages, in_flight, priority) in runs {
        if args.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let critical = if name == "mixed" { args.critical_rate } else { 0.0 };
        let mut repeats = Vec::new();
        for _ in 0..args.runs.max(1) {
            let run = Run { name, messages, in_flight, priority, critical_rate: critical };
            let figures = one_run(&args, &templates, run).await?;
            eprintln!("{name}: {figures:?}");
            repeats.push(figures);
        }
        results.push(median(repeats));
    }
    println!(
        "{} users on {} partitions of {}; sandbox latency {:?}, error rate {}",
        args.users,
        args.partitions,
        args.cluster.brokers.as_deref().map_or("the mock cluster".to_string(), |b| format!("the cluster at {b}")),
        args.latency,
        args.error_rate
    );
    println!(
        "{:<10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>11} {:>7}  {:<14} critical (n, p50, p99 ms)",
        "run", "messages", "in flight", "steady/s", "p50 ms", "p99 ms", "CPU µs/msg", "RSS MB", "per-user order"
    );
    for f in &results {
        let critical = f.critical.map(|(n, p50, p99)| format!("{n}, {p50:.0}, {p99:.0}")).unwrap_or_default();
        let order = match f.users_out_of_order {
            0 => "kept".to_string(),
            n => format!("{n} users not"),
        };
        println!(
            "{:<10} {:>9} {:>9} {:>10.0} {:>9.0} {:>9.0} {:>11.1} {:>7.0}  {order:<14} {critical}",
            f.run,
            f.messages,
            f.in_flight,
            f.steady_per_second,
            f.p50_ms,
            f.p99_ms,
            f.cpu_us_per_message,
            f.peak_rss_mb
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
        println!("written to {}", path.display());
    }
    if let (Some(floor), Some(pipelined)) = (args.guard, results.iter().find(|f| f.run == "pipelined")) {
        let budget = pipelined.in_flight as f64 / args.latency.as_secs_f64();
        let share = pipelined.steady_per_second / budget;
        let verdict = if share < floor { "below the floor" } else { "kept" };
        println!(
            "guard: pipelined at {:.0} % of its budget over the latency ({budget:.0}/s), floor {:.0} %: {verdict}",
            100.0 * share,
            100.0 * floor
        );
        if share < floor {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One run's settings.
struct Run<'a> {
    name: &'a str,
    messages: usize,
    in_flight: usize,
    priority: Priority,
    critical_rate: f64,
}

async fn one_run(args: &WorkerBenchArgs, templates: &std::path::Path, run: Run<'_>) -> anyhow::Result<Figures> {
    let redis = RedisServer::start()?;
    let mut config = Config::from_toml(include_str!("../../tidings.example.toml"))?;
    config.redis.url = redis.url();
    let topics = super::topics::topics(&config);
    let (brokers, replication) = (args.cluster.brokers.as_deref(), args.cluster.replication);
    let kafka = BenchCluster::start(brokers, &topics, args.partitions, replication).await?;
    config.kafka.bootstrap_servers = kafka.bootstrap_servers();
    let measured = measure(args, templates, run, &config, &redis).await;
    if let Err(e) = kafka.remove().await {
        eprintln!("warning: {e:#}");
    }
    measured
}

/// One run on the cluster `config` names.
async fn measure(
    args: &WorkerBenchArgs,
    templates: &std::path::Path,
    run: Run<'_>,
    config: &Config,
    redis: &RedisServer,
) -> anyhow::Result<Figures> {
    let Run { name, messages, in_flight, priority, critical_rate } = run;
    let store = crate::fleet::open_store(config).await?;
    let users: String = (0..args.users)
        .map(|i| {
            serde_json::json!({"user_id": format!("u-{i}"), "email": format!("u{i}@example.com"), "channels": {"email": true}})
                .to_string()
                + "\n"
        })
        .collect();
    super::prefs::import(store.as_ref(), &users).await?;
    let producer = kafka::command_producer(&config.kafka)?;
    queue(&producer, "n", 0..messages, args.users, priority).await?;

    let file = std::env::temp_dir().join(format!("tidings-bench-{}-{name}.toml", std::process::id()));
    std::fs::write(&file, worker_config(args, in_flight))?;
    let statuses = Statuses::start(config)?;
    // Groups of their own: an external cluster may remember a group's offsets of an earlier run's topics.
    let groups = format!("bench-{}-{name}-{:08x}", std::process::id(), rand::random::<u32>());
    let mut workers = Vec::new();
    for _ in 0..args.workers.max(1) {
        let binary = args.worker_bin.clone().map_or_else(std::env::current_exe, Ok)?;
        let worker = std::process::Command::new(binary)
            .args(["worker", "--channel", "email"])
            .env("TIDINGS_CONFIG", &file)
            .env("TIDINGS_KAFKA__BOOTSTRAP_SERVERS", &config.kafka.bootstrap_servers)
            .env("TIDINGS_KAFKA__GROUP_PREFIX", &groups)
            .env("TIDINGS_REDIS__URL", redis.url())
            .env("TIDINGS_TEMPLATES__DIR", templates)
            .env("TIDINGS_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        workers.push(worker);
    }
    let pids: Vec<u32> = workers.iter().map(Child::id).collect();
    let cpu: CpuSamples = Arc::default();
    let sampler = tokio::spawn(sample_cpu(pids.clone(), cpu.clone()));

    // Critical notifications at a steady rate while the backlog drains.
    let backlog_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Arc::new(tokio::sync::Notify::new());
    let injector = (critical_rate > 0.0).then(|| {
        let (producer, done, users, started) = (producer.clone(), backlog_done.clone(), args.users, started.clone());
        tokio::spawn(async move {
            // From the worker's first send on: before, it is starting and joining its groups.
            started.notified().await;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / critical_rate));
            let mut sent = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                queue(&producer, "c", sent..sent + 1, users, Priority::Critical).await?;
                sent += 1;
            }
            anyhow::Ok(sent)
        })
    });

    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut live = LiveLine::stdout();
    loop {
        let backlog = statuses.sent(|id| id.starts_with("n-"));
        live.show(&format!("  {name}: {backlog} of {messages} sent"));
        if backlog > 0 {
            started.notify_one();
        }
        if backlog >= messages {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{name}: not drained within 30 minutes ({backlog} sent)");
        for worker in &mut workers {
            if let Some(status) = worker.try_wait()? {
                anyhow::bail!("{name}: a worker exited with {status} ({backlog} sent)");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    live.finish();
    backlog_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let critical_sent = match injector {
        Some(task) => task.await??,
        None => 0,
    };
    // The last critical ones, queued just before the backlog ended.
    let end = Instant::now() + Duration::from_secs(30);
    while statuses.sent(|id| id.starts_with("c-")) < critical_sent && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak_rss_mb = pids.iter().filter_map(|pid| peak_rss_kb(*pid)).max().unwrap_or(0) as f64 / 1024.0;
    for worker in &mut workers {
        stop(worker);
    }
    sampler.abort();
    let _ = std::fs::remove_file(&file);

    let records = statuses.records();
    let backlog: Vec<&StatusRecord> = records.iter().filter(|r| r.notification_id.starts_with("n-")).collect();
    let mut at: Vec<DateTime<Utc>> = backlog.iter().map(|r| r.at).collect();
    at.sort();
    let (from, to) = (at[at.len() / 10], at[at.len() * 9 / 10]);
    let middle = (at.len() * 9 / 10 - at.len() / 10).max(1) as f64;
    let seconds = (to - from).num_microseconds().unwrap_or(1).max(1) as f64 / 1e6;
    let cpu = cpu.lock().unwrap().clone();
    let cpu_seconds = cpu_at(&cpu, to) - cpu_at(&cpu, from);
    let (p50_ms, p99_ms) = percentiles(&backlog);
    let critical = (critical_rate > 0.0).then(|| {
        let critical: Vec<&StatusRecord> = records.iter().filter(|r| r.notification_id.starts_with("c-")).collect();
        let (p50, p99) = percentiles(&critical);
        (critical.len(), p50, p99)
    });
    Ok(Figures {
        run: name.to_string(),
        messages,
        in_flight,
        steady_per_second: middle / seconds,
        p50_ms,
        p99_ms,
        cpu_us_per_message: cpu_seconds * 1e6 / middle,
        peak_rss_mb,
        users_out_of_order: out_of_order(&backlog),
        critical,
    })
}

/// How many users had backlog notifications (`n-<seq>`) sent in another
/// order than they were queued in. Read from the status topic, where a
/// user's records are on one partition, in the order the worker wrote them.
fn out_of_order(sent: &[&StatusRecord]) -> usize {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut users = HashSet::new();
    for r in sent {
        let Some(seq) = r.notification_id.strip_prefix("n-").and_then(|s| s.parse().ok()) else { continue };
        if last.insert(r.user_id.as_str(), seq).is_some_and(|before| before > seq) {
            users.insert(r.user_id.as_str());
        }
    }
    users.len()
}

/// Each figure's median over repeated runs of one kind (this machine is
/// shared: a single run can be off by a tenth either way).
fn median(mut runs: Vec<Figures>) -> Figures {
    fn mid(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    let of = |f: fn(&Figures) -> f64, runs: &[Figures]| mid(runs.iter().map(f).collect());
    let critical = runs[0].critical.map(|(n, _, _)| {
        let p50 = mid(runs.iter().filter_map(|r| r.critical.map(|c| c.1)).collect());
        let p99 = mid(runs.iter().filter_map(|r| r.critical.map(|c| c.2)).collect());
        (n, p50, p99)
    });
    let (steady, p50, p99) = (of(|f| f.steady_per_second, &runs), of(|f| f.p50_ms, &runs), of(|f| f.p99_ms, &runs));
    let (cpu, rss) = (of(|f| f.cpu_us_per_message, &runs), of(|f| f.peak_rss_mb, &runs));
    let mut first = runs.swap_remove(0);
    first.steady_per_second = steady;
    first.p50_ms = p50;
    first.p99_ms = p99;
    first.cpu_us_per_message = cpu;
    first.peak_rss_mb = rss;
    first.users_out_of_order =
        runs.iter().map(|r| r.users_out_of_order).max().unwrap_or(0).max(first.users_out_of_order);
    first.critical = critical;
    first
}

/// The worker's configuration: the example's settings, the sandbox as the
/// email provider, and the run's in-flight budget.
fn worker_config(args: &WorkerBenchArgs, in_flight: usize) -> String {
    let mut text = include_str!("../../tidings.example.toml").to_string();
    text.truncate(text.find("# ---- Channels").expect("the example has a channels section"));
    text = text
        .replace("listen = \"0.0.0.0:9464\"", "listen = \"127.0.0.1:0\"")
        .replace("max_in_flight = 256", &format!("max_in_flight = {in_flight}"))
        .replace("max_buffered = 4096", &format!("max_buffered = {}", (2 * in_flight).max(4096)));
    text.push_str(&format!(
        "\n[providers.sandbox]\nkind = \"sandbox\"\nlatency = \"{}\"\nerror_rate = {}\ndiscard = true\n\n\
         [channels.email]\nproviders = [\"sandbox\"]\n",
        humantime::format_duration(args.latency),
        args.error_rate
    ));
    if let Some(rate) = args.rate_limit {
        text.push_str(&format!("\n[limits.sandbox]\nper_second = {rate}\n"));
    }
    text
}

/// Queues notifications `n-<seq>` (or `c-<seq>`) for users round-robin,
/// each stamped with the moment it is queued.
pub(super) async fn queue(
    producer: &rdkafka::producer::FutureProducer,
    prefix: &str,
    seqs: std::ops::Range<usize>,
    users: usize,
    priority: Priority,
) -> anyhow::Result<()> {
    let topic = Channel::Email.topic(priority);
    let data = serde_json::value::to_raw_value(&serde_json::json!({
        "order_id": "o-1042", "total": "89.90", "currency": "EUR",
        "items": [{"name": "Linen shirt", "quantity": 2, "price": "29.95"}], "item_count": 2,
        "placed_at": "2026-11-26T09:15:00Z", "order_url": "https://shop.example/orders/o-1042"
    }))?;
    let mut deliveries = Vec::new();
    for seq in seqs {
        let user = format!("u-{}", seq % users);
        let n = Notification {
            notification_id: format!("{prefix}-{seq}"),
            source: "/bench".into(),
            event_id: format!("{prefix}-{seq}"),
            event_type: "order.confirmed".into(),
            user_id: user.clone(),
            channel: Channel::Email,
            priority,
            template: "order.confirmed".into(),
            category: "transactional".into(),
            locale: "en".into(),
            timezone: "Europe/Paris".into(),
            recipient: Recipient::Email { address: format!("{user}@example.com") },
            data: data.clone(),
            created_at: Utc::now(),
            not_before: None,
            fallback: vec![],
            attempt: 0,
        };
        let value = serde_json::to_vec(&n)?;
        let record = FutureRecord::<str, [u8]>::to(&topic).key(&user).payload(&value);
        deliveries.push(kafka::enqueue(producer, record).await?);
        if deliveries.len() >= 10_000 {
            for d in deliveries.drain(..) {
                kafka::delivered(d).await?;
            }
        }
    }
    for d in deliveries {
        kafka::delivered(d).await?;
    }
    Ok(())
}

/// Every `sent` status the worker writes, read as it is written.
struct Statuses {
    records: Arc<Mutex<Vec<StatusRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Statuses {
    fn start(config: &Config) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = kafka::client_config(&config.kafka)
            .set("group.id", "bench-statuses")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&[STATUS_TOPIC])?;
        let records: Arc<Mutex<Vec<StatusRecord>>> = Arc::default();
        let sink = records.clone();
        let task = tokio::spawn(async move {
            while let Ok(m) = consumer.recv().await {
                if let Some(r) = m.payload().and_then(|v| serde_json::from_slice::<StatusRecord>(v).ok()) {
                    if r.state == State::Sent {
                        sink.lock().unwrap().push(r);
                    }
                }
            }
        });
        Ok(Statuses { records, task })
    }

    fn sent(&self, which: impl Fn(&str) -> bool) -> usize {
        self.records.lock().unwrap().iter().filter(|r| which(&r.notification_id)).count()
    }

    fn records(&self) -> Vec<StatusRecord> {
        self.records.lock().unwrap().clone()
    }
}

impl Drop for Statuses {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// End-to-end p50 and p99 in milliseconds: queued (`created_at`) to sent (`at`).
fn percentiles(records: &[&StatusRecord]) -> (f64, f64) {
    let mut ms: Vec<f64> =
        records.iter().filter_map(|r| Some((r.at - r.created_at?).num_microseconds()? as f64 / 1000.0)).collect();
    if ms.is_empty() {
        return (0.0, 0.0);
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[(ms.len() * 99 / 100).min(ms.len() - 1)])
}

/// (when, CPU seconds the worker had used by then).
type CpuSamples = Arc<Mutex<Vec<(DateTime<Utc>, f64)>>>;

/// Samples the processes' CPU time together (user + system, seconds) every 100 ms.
async fn sample_cpu(pids: Vec<u32>, samples: CpuSamples) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Some(seconds) = pids.iter().map(|pid| cpu_seconds(*pid)).sum::<Option<f64>>() else { return };
        samples.lock().unwrap().push((Utc::now(), seconds));
    }
}

/// The CPU time a process has used, from `/proc/<pid>/stat`.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let ticks = 100.0; // USER_HZ, 100 on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (utime, stime) = (fields.get(11)?.parse::<f64>().ok()?, fields.get(12)?.parse::<f64>().ok()?);
    Some((utime + stime) / ticks)
}

/// The CPU seconds at `at`, interpolated between the samples around it.
fn cpu_at(samples: &[(DateTime<Utc>, f64)], at: DateTime<Utc>) -> f64 {
    let after = samples.iter().position(|(t, _)| *t >= at).unwrap_or(samples.len().saturating_sub(1));
    let Some(&(t1, c1)) = samples.get(after) else { return 0.0 };
    let Some(&(t0, c0)) = after.checked_sub(1).and_then(|i| samples.get(i)) else { return c1 };
    let span = (t1 - t0).num_microseconds().unwrap_or(1).max(1) as f64;
    let into = (at - t0).num_microseconds().unwrap_or(0) as f64;
    c0 + (c1 - c0) * (into / span).clamp(0.0, 1.0)
}

pub(super) fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn stop(worker: &mut Child) {
    let _ = worker.kill();
    let _ = worker.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_whose_sends_came_out_of_queue_order_is_counted() {
        let sent = |id: &str, user: &str| -> StatusRecord {
            serde_json::from_value(serde_json::json!({"notification_id": id, "event_id": id,
                "event_type": "order.confirmed", "user_id": user, "state": "sent", "at": "2026-11-27T05:00:00Z"}))
            .unwrap()
        };
        let records =
            [sent("n-1", "u-1"), sent("n-4", "u-2"), sent("c-0", "u-2"), sent("n-3", "u-1"), sent("n-2", "u-2")];
        let records: Vec<&StatusRecord> = records.iter().collect();
        assert_eq!(out_of_order(&records), 1);
        assert_eq!(out_of_order(&records[..4]), 0);
    }
}
