//! The command line.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tidings_core::Channel;

#[derive(Debug, Parser)]
#[command(name = "tidings", version, about = "Kafka events in; email, SMS, push and webhooks out.")]
pub struct Cli {
    /// The TOML configuration (see tidings.example.toml). For `dev`, a file
    /// whose channels and sandbox providers (latency, error rate, outage and
    /// rate-limited windows) the fleet uses, over the example's other settings
    /// (see examples/drill.toml).
    #[arg(long, global = true, env = "TIDINGS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log as JSON lines (production) instead of text.
    #[arg(long, global = true, env = "TIDINGS_LOG_JSON")]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume domain events and route notifications to channel topics.
    Intake,
    /// Deliver one channel's notifications.
    Worker {
        #[arg(long)]
        channel: Channel,
    },
    /// Put deferred notifications back on their channel topics when due.
    Scheduler,
    /// Take provider callbacks (receipts, bounces, complaints, STOP) and
    /// one-click unsubscribes, on `callbacks.listen`.
    Callbacks,
    /// Inspect or replay dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Reconcile the input events of a window with what became of each, from the topics: exit 1
    /// when anything is missing or sent twice.
    Audit(AuditArgs),
    /// Run the whole fleet as processes through a seeded schedule of faults, then judge every
    /// notification: exit 1 when one was lost, sent twice, out of order or inside quiet hours.
    Soak(SoakArgs),
    /// Check or preview templates.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// Create Tidings' topics on the cluster.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Manage the suppression list: addresses and numbers that get nothing more.
    #[command(subcommand)]
    Suppressions(SuppressionsCommand),
    /// Read and write user preferences.
    #[command(subcommand)]
    Prefs(PrefsCommand),
    /// The whole fleet in one process on embedded infrastructure.
    Dev(DevArgs),
    /// Measure throughput on embedded infrastructure.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Intake events/s with a warm and a cold preference cache, next to a bare passthrough.
    Intake(BenchArgs),
    /// One email worker process draining a backlog through a sandbox provider: throughput,
    /// end-to-end latency, CPU per message and peak RSS, next to a one-in-flight-per-partition
    /// baseline and a run where critical messages arrive while a bulk backlog drains.
    Worker(WorkerBenchArgs),
    /// The callbacks role as a process of its own under a slowloris and a body flood: its
    /// RSS before, during and after, and the genuine callbacks answered meanwhile.
    Callbacks(CallbacksBenchArgs),
    /// `tidings audit` as a process of its own over a miniature of a fleet's topics with planted
    /// losses and repeats: its time and peak RSS, and whether it found exactly what was planted.
    Audit(AuditBenchArgs),
}

#[derive(Debug, Args)]
pub struct AuditBenchArgs {
    /// Input events, each with one notification and its `sent` status.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Notifications left without a status, and as many sent twice.
    #[arg(long, default_value_t = 10)]
    pub planted: usize,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// The audit's `--shards`.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    #[command(flatten)]
    pub cluster: BenchClusterArgs,
}

#[derive(Debug, Args)]
pub struct CallbacksBenchArgs {
    /// How long the flood lasts, in seconds.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Connections that send headers and never finish them (each reconnects when cut).
    #[arg(long, default_value_t = 1000)]
    pub slow: usize,
    /// Connections that announce a form body near the limit and trickle it (each reconnects).
    #[arg(long, default_value_t = 200)]
    pub bodies: usize,
    /// Genuine signed callbacks (Twilio inbound STOPs) a second during the flood.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
}

#[derive(Debug, Args)]
pub struct WorkerBenchArgs {
    /// Notifications queued before the worker starts.
    #[arg(long, default_value_t = 200_000)]
    pub messages: usize,
    /// Distinct users the notifications are spread over.
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    /// Notifications in the baseline run (one in flight per partition is slow: at 200 ms, 12
    /// partitions take 60/s).
    #[arg(long, default_value_t = 3_000)]
    pub baseline_messages: usize,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// How long the sandbox provider takes to accept a message.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub latency: std::time::Duration,
    /// Share of sends (0.0 to 1.0) the sandbox fails as transient errors.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// The worker's `max_in_flight`.
    #[arg(long, default_value_t = 4096)]
    pub in_flight: usize,
    /// Critical notifications per second during the mixed run.
    #[arg(long, default_value_t = 10.0)]
    pub critical_rate: f64,
    /// Worker processes sharing the work (and the provider's limits).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// A fleet-wide limit on the sandbox provider, in calls per second.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Runs of each kind; each figure is the median.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Only this run: pipelined, baseline or mixed.
    #[arg(long)]
    pub only: Option<String>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: BenchClusterArgs,
    /// The `tidings` binary the worker processes run (default: this one), to compare two
    /// builds under the same harness.
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// Fail (exit 1) when the pipelined run's steady rate is below this share of what its
    /// in-flight budget allows over the provider latency (`in_flight / latency`): a ratio
    /// measured within the run, which a busy machine does not fool.
    #[arg(long)]
    pub guard: Option<f64>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events measured per run (each run consumes twice as many: the first half warms up).
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Runs of each kind; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[command(flatten)]
    pub cluster: BenchClusterArgs,
    /// Fail (exit 1) when intake, cold or warm, is below this share of the passthrough
    /// measured beside it.
    #[arg(long)]
    pub guard: Option<f64>,
    /// Fail (exit 1) when the two-caps run is below this share of the passthrough.
    #[arg(long)]
    pub guard_caps: Option<f64>,
    /// Fail (exit 1) when the every-event-digested run is below this share of the passthrough.
    #[arg(long)]
    pub guard_digests: Option<f64>,
}

/// Where a benchmark runs.
#[derive(Debug, Args)]
pub struct BenchClusterArgs {
    /// An external Kafka-protocol cluster (`host:port`) instead of librdkafka's mock cluster:
    /// the benchmark makes its topics there for the run and removes them after, and refuses
    /// a cluster that already has them.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Replicas of each topic made on an external cluster.
    #[arg(long, default_value_t = 1)]
    pub replication: i32,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count dead letters, grouped by channel, error class, event type, error and age.
    List {
        /// A channel, or `intake` (default: every dead-letter topic).
        #[arg(long, alias = "channel")]
        from: Option<String>,
        #[command(flatten)]
        filter: LetterFilter,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show dead letters in full: the original message, every header, the failure.
    Inspect {
        /// A notification or event id (every letter of it), or `topic:partition:offset`.
        what: String,
        /// A channel, or `intake` (default: every dead-letter topic).
        #[arg(long, alias = "channel")]
        from: Option<String>,
    },
    /// Send dead letters back to the topic they came from: once, resumably.
    Replay {
        /// A channel, or `intake`.
        #[arg(long, alias = "channel")]
        from: String,
        #[command(flatten)]
        filter: LetterFilter,
        /// Say what would be replayed, grouped; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Replay at most this many a second.
        #[arg(long)]
        rate: Option<f64>,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Events (and notifications) from this time on: an RFC 3339 time, or an age such as `24h`.
    #[arg(long, value_parser = parse_instant)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Events before this time: an RFC 3339 time, or an age such as `1h`.
    #[arg(long, value_parser = parse_instant)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// How long an event or notification may be under way before what it lacks counts as missing.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// The report as JSON, with every id it names.
    #[arg(long)]
    pub json: bool,
    /// Read the topics this many times, keeping a share of the ids each time: memory divided
    /// by the shards, time multiplied (about 200 bytes an event in one pass).
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Push the run's figures as gauges to this Prometheus Pushgateway (`http://pushgateway:9091`),
    /// under job `tidings_audit`: what a scheduled audit leaves for alerts.
    #[arg(long)]
    pub pushgateway: Option<url::Url>,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Draws the schedule of faults and the traffic: the same seed, the same faults at the same times.
    #[arg(long)]
    pub seed: u64,
    /// How long traffic runs and faults come (the drain comes after).
    #[arg(long, default_value_t = 5.0)]
    pub minutes: f64,
    /// Events a second.
    #[arg(long, default_value_t = SoakArgs::RATE)]
    pub rate: u32,
    /// Users the events are for.
    #[arg(long, default_value_t = SoakArgs::USERS)]
    pub users: usize,
    /// A fault begins this often on average.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    pub mean_gap: std::time::Duration,
    /// The Kafka broker: librdkafka's mock cluster in this process, or a tansu process.
    #[arg(long, value_enum, default_value = "embedded")]
    pub broker: SoakBroker,
    /// How long the fleet may take to drain once the faults end, at most.
    #[arg(long, default_value_t = 10)]
    pub drain_minutes: u64,
    /// The templates the workers render (and whose samples the events carry).
    #[arg(long, default_value = "templates")]
    pub templates: std::path::PathBuf,
    /// The verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep the configuration and the roles' logs even when the run passes.
    #[arg(long)]
    pub keep: bool,
}

impl SoakArgs {
    pub const RATE: u32 = 20;
    pub const USERS: usize = 200;
    pub const MEAN_GAP: std::time::Duration = std::time::Duration::from_secs(6);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SoakBroker {
    Embedded,
    Tansu,
}

/// Which dead letters a `dlq` command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct LetterFilter {
    /// Only this error class: permanent, exhausted, poison or render.
    #[arg(long)]
    pub error_class: Option<tidings_core::status::ErrorClass>,
    /// Only letters of this event type.
    #[arg(long)]
    pub event_type: Option<String>,
    /// Only letters whose last failure is at or after this: an RFC 3339 time, or an age such as `2h`.
    #[arg(long, value_parser = parse_instant)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only letters whose last failure is before this: an RFC 3339 time, or an age such as `30m`.
    #[arg(long, value_parser = parse_instant)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only letters of this notification or event id.
    #[arg(long)]
    pub id: Option<String>,
}

/// An RFC 3339 time, or an age (`90s`, `2h`, `3days`) back from now.
fn parse_instant(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let age =
        humantime::parse_duration(s).map_err(|_| format!("`{s}` is neither an RFC 3339 time nor an age like 2h"))?;
    let age = chrono::Duration::from_std(age).map_err(|_| format!("`{s}` is too long ago"))?;
    Ok(chrono::Utc::now() - age)
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Render every template with its sample.json, strictly; fail on any error.
    Check {
        /// The templates folder (default: from the config, else ./templates).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Render one template and print it.
    Render {
        /// The template folder (usually the event type), e.g. order.confirmed.
        template: String,
        channel: Channel,
        #[arg(long, default_value = "en")]
        locale: String,
        /// JSON data to render with (default: the folder's sample.json).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Write it as `templates preview` does (HTML, .eml, index.html) into this folder instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Render every template, channel and locale with its sample into a
    /// folder a browser opens: index.html, each email as .html and .eml,
    /// each SMS with its segments, each push with its payload size.
    Preview {
        /// Where to write (made if missing).
        #[arg(long, default_value = "preview")]
        out: PathBuf,
        /// Render again whenever a file under the templates folder changes.
        #[arg(long)]
        watch: bool,
        /// The templates folder (default: from the config, else ./templates).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every channel, status, dead-letter and input topic that is missing,
    /// with the partitions, replication and retention of its kind.
    Create,
    /// Report topics that are missing or differ from the configuration (exit 1 when any).
    Check,
    /// List the topics Tidings uses, with their kind and settings.
    List,
}

#[derive(Debug, Subcommand)]
pub enum PrefsCommand {
    /// Write one user's preferences (a JSON object).
    Set { json: String },
    /// Print one user's preferences.
    Get { user_id: String },
    /// Write preferences from a file of JSON lines; invalid lines are reported and skipped.
    Import { file: PathBuf },
    /// Print the key the user's webhook endpoint verifies signatures with
    /// (and, during a rotation, its previous one): what to hand to its owner.
    /// The key is random and the user's own, made the first time it is needed.
    WebhookSecret {
        user_id: String,
        /// Make a new key; the old one signs beside it for `--overlap`.
        #[arg(long)]
        rotate: bool,
        /// How long the old key keeps signing after `--rotate` (0s: at once, for a leaked key).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuppressionsCommand {
    /// Print every entry: address, channel, cause, source, time, reason.
    List {
        /// One JSON object a line instead of tab-separated columns.
        #[arg(long)]
        json: bool,
    },
    /// Put an email address or phone number (E.164) on the list.
    Add {
        address: String,
        /// Why, for whoever reads the list later.
        #[arg(long, default_value = "added by an operator")]
        reason: String,
    },
    /// Take an address off the list: messages to it are sent again.
    Remove { address: String },
    /// Say whether an address is listed and why; exits 0 when listed, 1 when not (as grep).
    Check { address: String },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Users to load (JSON lines); default: examples/users.jsonl.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Events to feed (CloudEvents, JSON lines); default: examples/events.jsonl.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Where the sandbox providers write messages.
    #[arg(long, default_value = "outbox")]
    pub outbox: PathBuf,
    /// Write every status record here, one JSON per line.
    #[arg(long)]
    pub status_out: Option<PathBuf>,
    /// Stop once every event has a terminal or deferred status.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Start the clock at this instant (RFC 3339); it runs on from there.
    #[arg(long)]
    pub now: Option<chrono::DateTime<chrono::Utc>>,
    /// Run a built-in provider fault with live traffic, then say what became of
    /// every notification (the outbox is `<outbox>/<drill>`).
    #[arg(long, value_enum)]
    pub drill: Option<crate::commands::drill::Drill>,
}
