//! `tidings dev`: the whole fleet in one process on embedded infrastructure.
//!
//! librdkafka's mock cluster, a private `redis-server` (or, when none is
//! installed, an in-process store with the same semantics), intake, a worker
//! per channel with sandbox providers writing to an outbox, and the
//! scheduler. It loads sample users, feeds sample events, shows progress, and
//! prints what became of every notification. `--config` takes channels and
//! sandbox providers from a file; `--drill` runs a provider fault ([`drill`]).

use super::drill::{self, Drill};
use super::live::LiveLine;
use crate::cli::DevArgs;
use crate::embedded::{EmbeddedKafka, RedisServer};
use crate::fleet::{self, Roles};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings_core::channel::{INTAKE_DLQ_TOPIC, STATUS_TOPIC};
use tidings_core::config::{ChannelConfig, ProviderSection};
use tidings_core::kafka;
use tidings_core::progress::Progress;
use tidings_core::store::{MemoryStore, SharedStore};
use tidings_core::{Channel, Clock, Config, StatusRecord};
use tidings_providers::sandbox::config::SandboxConfig;

const EXAMPLE_CONFIG: &str = include_str!("../../tidings.example.toml");
const EXAMPLE_USERS: &str = include_str!("../../examples/users.jsonl");
const EXAMPLE_EVENTS: &str = include_str!("../../examples/events.jsonl");
const PARTITIONS: i32 = 4;

pub async fn run(args: DevArgs, config_file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let kafka = EmbeddedKafka::start(1).map_err(|e| anyhow::anyhow!("mock cluster: {e}"))?;
    let redis = if RedisServer::available() {
        Some(RedisServer::start()?)
    } else {
        println!(
            "redis-server is not installed: running on an in-process store (same semantics, nothing kept on exit)"
        );
        None
    };
    let outbox = match args.drill {
        Some(d) => {
            let dir = args.outbox.join(d.name());
            // A drill counts the files of its own run.
            let _ = std::fs::remove_dir_all(&dir);
            dir
        }
        None => args.outbox.clone(),
    };
    let mut config = dev_config(kafka.bootstrap_servers(), redis.as_ref().map(RedisServer::url), &args, config_file)?;
    if let Some(d) = args.drill {
        d.configure(&mut config, &outbox);
        config.validate()?;
    }
    let config = Arc::new(config);
    let store: SharedStore = match &redis {
        Some(_) => fleet::open_store(&config).await?,
        None => Arc::new(MemoryStore::new()),
    };
    for topic in super::topics::topics(&config) {
        kafka.create_topic(&topic, PARTITIONS).map_err(|e| anyhow::anyhow!("create {topic}: {e}"))?;
    }
    let users = if args.drill.is_some() { drill::users() } else { read_or(&args.users, EXAMPLE_USERS)? };
    let (stored, rejected) = super::prefs::import(store.as_ref(), &users).await?;
    for r in &rejected {
        println!("user rejected: {r}");
    }
    let clock = args.now.map(Clock::starting_at).unwrap_or_else(Clock::system);
    let statuses = StatusLog::start(&config, args.status_out.as_deref())?;
    let fleet = fleet::spawn_fleet(config.clone(), store.clone(), clock.clone(), Roles::all(&config))?;
    let progress = fleet.progress.clone();
    if let Some(d) = args.drill {
        let code = run_drill(d, &config, &progress, &statuses, &outbox).await;
        fleet.shutdown().await?;
        statuses.stop().await;
        drop(kafka);
        return code;
    }

    let events = read_or(&args.events, EXAMPLE_EVENTS)?;
    let fed = feed(&config, &events).await?;
    println!(
        "tidings dev: {stored} users, {fed} events, redis {}, clock {}, outbox {}",
        redis.as_ref().map_or("in-process".into(), RedisServer::url),
        clock.now().to_rfc3339(),
        args.outbox.display()
    );

    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut live = LiveLine::stdout();
    let mut last_seen = usize::MAX;
    let mut shown_idle = false;
    let stop = super::terminated();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {
                let seen = statuses.len();
                live.show(&progress_line(&progress, fed, seen));
                let idle = Progress::get(&progress.events) == fed as u64
                    && Progress::get(&progress.finished) >= Progress::get(&progress.published) + Progress::get(&progress.released)
                    && seen == last_seen;
                if idle && !shown_idle {
                    shown_idle = true;
                    live.finish();
                    println!("{}", statuses.summary().render(count_topic(&config, INTAKE_DLQ_TOPIC)?));
                    if args.exit_when_idle {
                        break;
                    }
                    println!("idle: every event has its outcome. Ctrl-C stops the fleet.");
                }
                last_seen = seen;
            }
        }
    }
    live.finish();
    fleet.shutdown().await?;
    let dead_intake = count_topic(&config, INTAKE_DLQ_TOPIC)?;
    let summary = statuses.summary();
    statuses.stop().await;
    if !shown_idle {
        println!("{}", summary.render(dead_intake));
    }
    // The cluster goes last, once every client of it is closed.
    drop(kafka);
    Ok(ExitCode::SUCCESS)
}

/// Runs `drill` on the running fleet: feeds its traffic, shows breakers and
/// held messages as they change, and ends with what became of every
/// notification; fails when one was lost or sent twice.
async fn run_drill(
    drill: Drill,
    config: &Arc<Config>,
    progress: &Progress,
    statuses: &StatusLog,
    outbox: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    println!(
        "drill {}: {}; {} users, events for {} s",
        drill.name(),
        drill.describe(),
        drill.users(),
        drill::FEED.as_secs()
    );
    let feeding = tokio::spawn({
        let config = config.clone();
        async move { drill::feed(drill, &config).await }
    });
    let started = tokio::time::Instant::now();
    let deadline = started + drill::FEED + Duration::from_secs(90);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut feeding = Some(feeding);
    let mut fed = None;
    let mut live = LiveLine::stdout();
    let queued = loop {
        ticker.tick().await;
        if feeding.as_ref().is_some_and(|f| f.is_finished()) {
            fed = Some(feeding.take().expect("checked").await??);
        }
        let records = statuses.records();
        let windows = drill.digest().map(|_| Windows::of(&records));
        live.show(&match &windows {
            Some(w) => digest_line(started, w, &records),
            None => drill_line(started, progress, statuses),
        });
        let Some(fed) = fed else { continue };
        // Every event read; for digests, every update digested and each window's digest routed.
        let settled = Progress::get(&progress.events) >= (fed + windows.as_ref().map_or(0, |w| w.windows)) as u64
            && windows.as_ref().is_none_or(|w| w.updates == fed)
            && Progress::get(&progress.finished)
                >= Progress::get(&progress.published) + Progress::get(&progress.released);
        if settled || tokio::time::Instant::now() >= deadline {
            let queued = drill::queued(config).await?;
            if drill::all_ended(&queued, &statuses.records()) || tokio::time::Instant::now() >= deadline {
                break (queued, fed);
            }
        }
    };
    let (queued, fed) = queued;
    live.finish();
    let mut report = drill::Report::new(&queued, &statuses.records(), outbox);
    if let Some(digest) = drill.digest() {
        report = report.with_digests(outbox, fed, digest.max_items);
    }
    println!("{}", report.render());
    Ok(if report.held() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The updates digested so far, and into how many windows (each digested
/// status names its window).
struct Windows {
    updates: usize,
    windows: usize,
}

impl Windows {
    fn of(records: &[StatusRecord]) -> Self {
        let digested = records.iter().filter(|r| r.reason() == tidings_core::status::Reason::Digested);
        let (mut updates, mut windows) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for r in digested {
            updates.insert(r.event_id.as_str());
            windows.insert(r.error.as_deref().unwrap_or_default().split(" (").next().unwrap_or_default());
        }
        Windows { updates: updates.len(), windows: windows.len() }
    }
}

/// Time, updates digested, windows opened and digests sent so far.
fn digest_line(started: tokio::time::Instant, w: &Windows, records: &[StatusRecord]) -> String {
    let sent = records.iter().filter(|r| r.state == tidings_core::State::Sent).count();
    format!(
        "{:>3} s · updates digested {} · digest windows opened {} · digests sent {sent} · open {}   ",
        started.elapsed().as_secs(),
        w.updates,
        w.windows,
        w.windows.saturating_sub(sent),
    )
}

/// Time, breakers, held messages and outcomes so far.
fn drill_line(started: tokio::time::Instant, progress: &Progress, statuses: &StatusLog) -> String {
    let breakers: Vec<String> = progress.breakers().iter().map(|(p, s)| format!("{p} {s}")).collect();
    let held = (Progress::get(&progress.published) + Progress::get(&progress.released))
        .saturating_sub(Progress::get(&progress.finished));
    let records = statuses.records();
    let count = |f: &dyn Fn(&StatusRecord) -> bool| records.iter().filter(|r| f(r)).count();
    format!(
        "{:>3} s · breakers: {} · held {held} · sent {} (secondary {}) · failed over {} · dead-lettered {}   ",
        started.elapsed().as_secs(),
        breakers.join(", "),
        count(&|r| r.state == tidings_core::State::Sent),
        count(&|r| r.state == tidings_core::State::Sent && r.provider.as_deref() == Some("secondary")),
        count(&|r| r.state == tidings_core::State::FailedOver),
        count(&|r| r.state == tidings_core::State::DeadLettered),
    )
}

/// The shipped example configuration, pointed at the embedded cluster and
/// Redis, with a sandbox provider on every channel; with `--config`, the
/// file's channels and sandbox providers over the example's other settings.
fn dev_config(
    bootstrap: &str,
    redis_url: Option<String>,
    args: &DevArgs,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Config> {
    if let Some(path) = file {
        let base = &EXAMPLE_CONFIG[..EXAMPLE_CONFIG.find("# ---- Channels").unwrap_or(EXAMPLE_CONFIG.len())];
        let mut config = Config::layered(base, path)?;
        if let Some((name, _)) = config.providers.iter().find(|(_, p)| p.kind != "sandbox") {
            anyhow::bail!(
                "{}: provider `{name}` is not a sandbox; tidings dev sends through sandboxes only",
                path.display()
            );
        }
        point_at(&mut config, bootstrap, redis_url);
        config.validate()?;
        return Ok(config);
    }
    let mut config = Config::from_toml(EXAMPLE_CONFIG)?;
    point_at(&mut config, bootstrap, redis_url);
    config.providers.clear();
    config.limits.clear();
    config.providers.insert(
        "sandbox".into(),
        ProviderSection::new(
            "sandbox",
            &SandboxConfig {
                outbox: args.outbox.clone(),
                latency: Duration::ZERO,
                error_rate: 0.0,
                outages: vec![],
                rate_limited: vec![],
                retry_after: Duration::from_secs(2),
                discard: false,
            },
        ),
    );
    config.channels = Channel::ALL.into_iter().map(|c| (c, ChannelConfig::with_providers(["sandbox"]))).collect();
    config.validate()?;
    Ok(config)
}

/// Points `config` at the embedded cluster and Redis, with the short waits `dev` wants.
fn point_at(config: &mut Config, bootstrap: &str, redis_url: Option<String>) {
    // No endpoints: the fleet shows itself on the terminal, and several may run on one machine.
    config.metrics.listen = None;
    config.kafka.bootstrap_servers = bootstrap.to_string();
    config.kafka.options.clear();
    if let Some(url) = redis_url {
        config.redis.url = url;
    }
    config.worker.drain_timeout = Duration::from_secs(5);
    config.scheduler.poll_interval = Duration::from_millis(200);
}

fn read_or(path: &Option<std::path::PathBuf>, shipped: &str) -> anyhow::Result<String> {
    match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())),
        None => Ok(shipped.to_string()),
    }
}

/// Produces every line of `events` to the input topic its type belongs to
/// (`order.*` to `orders.events`, …; the first input topic otherwise).
pub async fn feed(config: &Config, events: &str) -> anyhow::Result<usize> {
    feed_with(&kafka::command_producer(&config.kafka)?, config, events).await
}

/// [`feed`] through `producer`.
pub async fn feed_with(
    producer: &rdkafka::producer::FutureProducer,
    config: &Config,
    events: &str,
) -> anyhow::Result<usize> {
    let mut deliveries = Vec::new();
    for line in events.lines().filter(|l| !l.trim().is_empty()) {
        let json: Option<serde_json::Value> = serde_json::from_str(line).ok();
        let ty = json.as_ref().and_then(|j| j["type"].as_str()).unwrap_or("");
        let key = json.as_ref().and_then(|j| j["data"]["user_id"].as_str()).unwrap_or("").to_string();
        let topic = input_topic(config, ty);
        let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(&topic).key(&key).payload(line.as_bytes());
        deliveries.push(kafka::enqueue(producer, record).await?);
    }
    let fed = deliveries.len();
    for d in deliveries {
        kafka::delivered(d).await?;
    }
    Ok(fed)
}

pub(super) fn input_topic(config: &Config, event_type: &str) -> String {
    config.input_topic(event_type)
}

fn progress_line(p: &Progress, fed: usize, statuses: usize) -> String {
    format!(
        "events {}/{fed} · notifications queued {} · deferred released {} · delivered {} · status records {statuses}",
        Progress::get(&p.events),
        Progress::get(&p.published),
        Progress::get(&p.released),
        Progress::get(&p.finished),
    )
}

/// Records in `topic`, by high watermark.
pub fn count_topic(config: &Config, topic: &str) -> anyhow::Result<i64> {
    let consumer: rdkafka::consumer::BaseConsumer = kafka::client_config(&config.kafka).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut total = 0;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
            total += high - low;
        }
    }
    Ok(total)
}

/// Every status record, read as it is written.
struct StatusLog {
    records: Arc<Mutex<Vec<StatusRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Outcome counts per channel and state.
struct Summary(BTreeMap<String, BTreeMap<&'static str, usize>>);

impl StatusLog {
    fn start(config: &Config, out: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let consumer: StreamConsumer = kafka::client_config(&config.kafka)
            .set("group.id", format!("{}-dev-status", config.kafka.group_prefix))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&[STATUS_TOPIC])?;
        let mut file = match out {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
            None => None,
        };
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let task = tokio::spawn(async move {
            while let Ok(m) = consumer.recv().await {
                let Some(record) = m.payload().and_then(|v| serde_json::from_slice::<StatusRecord>(v).ok()) else {
                    continue;
                };
                if let Some(f) = file.as_mut() {
                    let _ = serde_json::to_writer(&mut *f, &record).map(|_| f.write_all(b"\n")).map(|_| f.flush());
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(record);
            }
        });
        Ok(StatusLog { records, task })
    }

    fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every record read so far.
    fn records(&self) -> Vec<StatusRecord> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops reading, closing the consumer.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Outcomes read so far, per channel and state.
    fn summary(&self) -> Summary {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let mut table: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
        for r in records.iter() {
            let channel = r.channel.map_or("(event)".to_string(), |c| c.to_string());
            *table.entry(channel).or_default().entry(r.state.as_str()).or_default() += 1;
        }
        Summary(table)
    }
}

impl Summary {
    fn render(self, dead_intake: i64) -> String {
        let table = self.0;
        let mut out = String::from("outcomes by channel and state:\n");
        for (channel, states) in table {
            let cells: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
            out.push_str(&format!("  {channel:<8} {}\n", cells.join(", ")));
        }
        out.push_str(&format!("  intake dead letters: {dead_intake}"));
        out
    }
}
