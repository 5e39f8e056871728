//! The real-broker tier: the roles as processes of their own on tansu, an
//! independent Kafka-protocol broker, with a private `redis-server`.
//!
//! librdkafka's mock cluster hides what a real broker does with pauses,
//! fetches, watermarks and latency; these drills run the delivery promise
//! where those show: a backlog of 100,000 events through intake and an email
//! worker, a broker outage longer than `max.poll.interval.ms`, a worker
//! killed mid-send, a dead-letter replay, a channel topic the cluster
//! lacks, digests whose intake and scheduler are killed mid-window, and a
//! short seeded soak of the whole fleet (`tidings soak`).

#[allow(dead_code)]
#[path = "../suite/harness/mod.rs"]
mod harness;

mod backlog;
mod digests;
mod dlq;
mod faults;
mod refused;
mod soak;

use harness::Process;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tidings::embedded::{RedisServer, TansuBroker};
use tidings_core::{Config, State, StatusRecord};

/// A tansu broker, a `redis-server`, and the configuration of the processes
/// that run on them: email through the sandbox provider into `outbox`.
pub struct Real {
    pub broker: TansuBroker,
    pub redis: RedisServer,
    pub config: Config,
    pub file: PathBuf,
    pub outbox: PathBuf,
    /// Where the configuration, the outbox and any log of the test live.
    pub dir: tempfile::TempDir,
}

impl Real {
    /// Starts on `broker` with the sandbox's extra settings (`latency = "5ms"`)
    /// and `replace` pairs applied to the example configuration; makes every
    /// topic with `tidings topics create`, as an operator does.
    pub fn start(broker: TansuBroker, sandbox: &str, replace: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start().expect("redis-server (scripts/test installs it)");
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let providers =
            format!("\n[providers.sandbox]\nkind = \"sandbox\"\noutbox = \"{}\"\n{sandbox}\n", outbox.display());
        let file =
            harness::config_file(dir.path(), &providers, "\n[channels.email]\nproviders = [\"sandbox\"]\n", replace);
        let mut config = Config::from_toml(&std::fs::read_to_string(&file).unwrap()).unwrap();
        config.kafka.bootstrap_servers = broker.bootstrap_servers();
        config.kafka.replication_factor = 1;
        config.redis.url = redis.url();
        config.metrics.listen = None;
        let real = Real { broker, redis, config, file, outbox, dir };
        let made = real.command(&["topics", "create"]).status().unwrap();
        assert!(made.success(), "tidings topics create failed on tansu");
        real
    }

    /// Environment overrides that point a `tidings` process here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TIDINGS_KAFKA__BOOTSTRAP_SERVERS", self.broker.bootstrap_servers()),
            ("TIDINGS_KAFKA__REPLICATION_FACTOR", "1".to_string()),
            ("TIDINGS_REDIS__URL", self.redis.url()),
            ("TIDINGS_TEMPLATES__DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/templates").to_string()),
            ("TIDINGS_LOG", "warn".to_string()),
        ]
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
        command.args(args).env("TIDINGS_CONFIG", &self.file).envs(self.env()).stdout(std::process::Stdio::null());
        command
    }

    /// `tidings <args>` as a process of its own, killed when dropped.
    pub fn spawn(&self, args: &[&str]) -> Process {
        Process::from(self.command(args).spawn().expect("the tidings binary"))
    }

    /// Imports `n` email-only users (`u-0` …).
    pub async fn users(&self, n: usize) {
        harness::store_with_email_users(&self.config, n).await;
    }

    /// Feeds `order.confirmed` events `0..n`, event `seq` for user `u-<seq % users>`.
    pub async fn feed(&self, n: std::ops::Range<usize>, users: usize) {
        let events: String = n.map(|seq| harness::order_event(seq, &format!("u-{}", seq % users)) + "\n").collect();
        tidings::commands::dev::feed(&self.config, &events).await.unwrap();
    }

    /// Notification ids the sandbox wrote more than once (`<id>.2.eml`).
    pub fn sent_twice(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.outbox.join("email")) else { return Vec::new() };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|name| name.ends_with(".2.eml"))
            .collect()
    }

    /// Messages in the sandbox's outbox.
    pub fn outbox_count(&self) -> usize {
        std::fs::read_dir(self.outbox.join("email")).map_or(0, |d| d.count())
    }
}

/// The tansu broker of a test, keeping its log in memory.
pub fn tansu() -> TansuBroker {
    TansuBroker::start().expect("tansu (scripts/test installs it)")
}

/// A tansu broker keeping its log in SQLite: it survives its process, and
/// serves a consumer that resumes inside a batch (see `TansuBroker`).
pub fn tansu_on_sqlite() -> TansuBroker {
    TansuBroker::start_durable().expect("tansu (scripts/test installs it)")
}

/// Waits until `events` notifications have a terminal status; panics when
/// none ends for `stall` (a partition left behind shows as a stall, not as a
/// slow run).
pub async fn wait_for_all(watch: &harness::StatusWatch, events: usize, stall: Duration) -> Vec<StatusRecord> {
    let ended = |rs: &[StatusRecord]| {
        rs.iter()
            .filter(|r| r.state.is_terminal())
            .map(|r| &r.notification_id)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let (mut last, mut since) = (0, std::time::Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let records = watch.records();
        let now = ended(&records);
        if now >= events {
            return records;
        }
        if now > last {
            (last, since) = (now, std::time::Instant::now());
        }
        assert!(
            since.elapsed() < stall,
            "stalled: {now} of {events} notifications ended, none more for {stall:?}; {:?}",
            harness::count_states(&records)
        );
    }
}

/// Checks the promise over `records` for events `0..events`: each event's
/// notification has exactly one terminal state, in `allowed`; and each
/// user's `sent` records are in the order of their events. A terminal record
/// written again byte for byte (a copy read after the status was written and
/// before it was marked published; a producer's retry the broker took twice)
/// is the same fact, folded as a reader would.
pub fn check_each_once_in_order(records: &[StatusRecord], events: usize, allowed: &[State]) {
    let mut seen = std::collections::HashSet::new();
    let terminal: Vec<&StatusRecord> = records
        .iter()
        .filter(|r| r.state.is_terminal() && seen.insert((r.notification_id.as_str(), r.state, r.at)))
        .collect();
    let mut by_event: HashMap<&str, Vec<State>> = HashMap::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for r in &terminal {
        by_event.entry(r.event_id.as_str()).or_default().push(r.state);
        *by_id.entry(r.notification_id.as_str()).or_default() += 1;
    }
    let missing: Vec<usize> = (0..events).filter(|seq| !by_event.contains_key(format!("evt-{seq}").as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} events have no outcome, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let repeated: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "{} notifications ended twice, e.g. {:?}", repeated.len(), repeated.first());
    let odd: Vec<_> = by_event.iter().filter(|(_, states)| states.iter().any(|s| !allowed.contains(s))).collect();
    assert!(odd.is_empty(), "{} events ended outside {allowed:?}, e.g. {:?}", odd.len(), odd.first());
    // The status topic is keyed by user: a user's records are in the order they were written.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for r in terminal.iter().filter(|r| r.state == State::Sent) {
        let seq: usize = r.event_id.trim_start_matches("evt-").parse().unwrap();
        if let Some(before) = last.insert(r.user_id.as_str(), seq) {
            assert!(before < seq, "user {} was sent event {seq} after event {before}", r.user_id);
        }
    }
}

/// Waits for the process to exit by itself, within `deadline`.
pub async fn wait_exit(process: &mut Process, deadline: Duration) -> std::process::ExitStatus {
    let mut status = None;
    harness::eventually("the process to exit", deadline, Duration::from_millis(50), || {
        status = process.try_wait().unwrap();
        std::future::ready(status.is_some())
    })
    .await;
    status.unwrap()
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(sent.success());
}
