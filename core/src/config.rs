//! The configuration: one TOML file (`--config` or `TIDINGS_CONFIG`), with
//! environment overrides. Any field can be set from the environment as
//! `TIDINGS_<SECTION>__<FIELD>` (double underscore between levels), e.g.
//! `TIDINGS_REDIS__URL` or `TIDINGS_PROVIDERS__TWILIO__AUTH_TOKEN`; only
//! variables with a `__` are read, so `TIDINGS_CONFIG` and `TIDINGS_LOG` are not.

use crate::{Channel, Priority};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Kafka cluster.
    pub kafka: KafkaConfig,
    /// The Redis holding preferences, dedupe records and deferred messages.
    #[serde(default)]
    pub redis: RedisConfig,
    /// What intake consumes and how it reads events.
    #[serde(default)]
    pub intake: IntakeConfig,
    /// How channel workers process notifications.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// How the scheduler returns deferred notifications.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Where templates live.
    #[serde(default)]
    pub templates: TemplatesConfig,
    /// Prometheus metrics, and the health endpoints beside them.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Trace export (OTLP); off by default.
    #[serde(default)]
    pub traces: TracesConfig,
    /// The `tidings callbacks` role: provider callbacks and unsubscribe links in.
    #[serde(default)]
    pub callbacks: CallbacksConfig,
    /// One-click unsubscribe links in email (RFC 8058); off until a URL and a key are set.
    #[serde(default)]
    pub unsubscribe: UnsubscribeConfig,
    /// Event type -> how it becomes notifications.
    #[serde(default)]
    pub events: BTreeMap<String, EventRoute>,
    /// Channel -> its providers, in failover order.
    #[serde(default)]
    pub channels: BTreeMap<Channel, ChannelConfig>,
    /// Provider name -> its settings.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSection>,
    /// Provider name -> how much it may be called.
    #[serde(default)]
    pub limits: BTreeMap<String, ProviderLimits>,
    /// Cap name -> how many non-critical notifications of some categories a
    /// user may get per channel in a sliding window (see [`Cap`]).
    #[serde(default)]
    pub caps: BTreeMap<String, Cap>,
    /// Category -> when its messages may go and what happens over a cap.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryConfig>,
}

/// A frequency cap: at most `max` notifications per user and channel in any
/// window of `per` (sliding), counting the non-critical notifications of
/// `categories`. Critical ones are never capped and never count. A
/// notification is counted once, by its id, at the instant it is admitted
/// for (now, or the end of a deferral), however often its event is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    pub max: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// The categories it counts; `["*"]` for every category. Left out: the
    /// category named as the cap is.
    #[serde(default)]
    pub categories: Option<Vec<String>>,
}

impl Cap {
    /// Whether it counts notifications of `category`; `name` is the cap's.
    pub fn covers(&self, name: &str, category: &str) -> bool {
        match &self.categories {
            Some(list) => list.iter().any(|c| c == "*" || c == category),
            None => name == category,
        }
    }
}

/// What a category's messages do beyond what their route says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// Non-critical messages of the category go only inside this local
    /// window of the user's zone; outside it they are deferred to its next
    /// opening. Quiet hours still apply inside it.
    #[serde(default)]
    pub send_window: Option<SendWindow>,
    /// Over a cap: `defer` to the instant the window admits the message, or
    /// `drop` it (a `suppressed` status, reason class `frequency_cap`).
    #[serde(default)]
    pub over_cap: OverCap,
}

/// A local time window, `from` inclusive to `to` exclusive; `to` before
/// `from` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendWindow {
    #[serde(deserialize_with = "crate::prefs::de_hhmm")]
    pub from: chrono::NaiveTime,
    #[serde(deserialize_with = "crate::prefs::de_hhmm")]
    pub to: chrono::NaiveTime,
}

impl SendWindow {
    /// The window's complement, as the quiet window it amounts to.
    pub fn as_quiet(&self) -> crate::prefs::QuietHours {
        crate::prefs::QuietHours::Daily(crate::prefs::Window { start: self.to, end: self.from })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverCap {
    #[default]
    Defer,
    Drop,
}

/// How much one provider may be called. The rate holds across every worker
/// process of the fleet together; the concurrency cap is per process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimits {
    /// Calls per second, fleet-wide.
    #[serde(default)]
    pub per_second: Option<f64>,
    /// Calls that may go at once after a quiet moment (default: a tenth of a second's worth, at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Calls under way at once in one process (an SMTP relay's sessions, say).
    #[serde(default)]
    pub max_concurrent: Option<usize>,
}

impl ProviderLimits {
    /// The burst, defaulted.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| (self.per_second.unwrap_or(0.0) / 10.0).ceil().max(1.0) as u32)
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Consumer groups are named `<group_prefix>-intake`, `<group_prefix>-worker-<channel>`, …
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    /// Partitions for topics that `tidings topics create` makes.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor for topics that `tidings topics create` makes.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Per kind of topic, what `tidings topics create` makes and `check`
    /// expects: partitions and replication (the two above when left out)
    /// and retention.
    #[serde(default)]
    pub topics: TopicKinds,
    /// Extra librdkafka settings passed as they are, e.g. `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanisms" = "PLAIN"`, `"sasl.username"`, `"sasl.password"`, `"ssl.ca.location"`.
    /// They win over Tidings' defaults but never over the settings its guarantees rest on
    /// (see `kafka::consumer_config` and `kafka::producer`). `"message.max.bytes"` is also
    /// the size above which a record is dead-lettered as too large.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://` for TLS. A Redis
    /// Cluster: several node URLs separated by commas, or any one node of it
    /// (the server says whether it is a cluster node).
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// Prefix of every key Tidings writes (no `{` or `}`: Tidings places
    /// its own hash tags on a Redis Cluster).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Replicas that must hold a deferral before it counts: before intake
    /// or a worker writes its `deferred` status and moves past its record
    /// (Redis `WAIT`). With 0, the default, a failover in the instant after
    /// a deferral may lose it while its status says `deferred`; with Redis
    /// replicas, set it to 1 or more.
    #[serde(default)]
    pub deferral_replicas: u32,
    /// How long one deferral waits for those replicas; past it, the
    /// deferral is written again and waited for anew (the record is held
    /// meanwhile, never skipped).
    #[serde(default = "default_deferral_wait", with = "humantime_serde")]
    pub deferral_wait: Duration,
}

/// As written, but for the value of a librdkafka setting that may hold a
/// credential (`sasl.password`, `ssl.key.password`, `…client.secret`, …).
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> =
            self.options.iter().map(|(k, v)| (k.as_str(), if is_credential(k) { "***" } else { v.as_str() })).collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_prefix", &self.group_prefix)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("topics", &self.topics)
            .field("options", &options)
            .finish()
    }
}

/// Whether a librdkafka setting's value may be a credential, or a key or
/// certificate itself, or who authenticates: it never prints.
fn is_credential(setting: &str) -> bool {
    // librdkafka's own sensitive settings (`sasl.oauthbearer.config`, `sasl.username` among them) too.
    ["password", "secret", "key", "token", "jaas", "credential", "pem", "oauthbearer.config", "username"]
        .iter()
        .any(|word| setting.contains(word))
}

/// As written, but for the password of every node in the URL.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &crate::redact::credentials(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("deferral_replicas", &self.deferral_replicas)
            .field("deferral_wait", &self.deferral_wait)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Topics holding CloudEvents.
    #[serde(default = "default_input_topics")]
    pub topics: Vec<String>,
    /// JSON pointer into the structured event where the user id is.
    #[serde(default = "default_user_pointer")]
    pub user_pointer: String,
    /// What happens to an event whose type has no route: `dead_letter` or `suppress`.
    #[serde(default)]
    pub unknown_types: UnknownTypes,
    /// Records whose writes may await acknowledgement at once, counted by
    /// the batch: a routed batch's records leave the count together, once
    /// every one of them is acknowledged.
    #[serde(default = "default_intake_in_flight")]
    pub max_in_flight: usize,
    /// Records read and hydrated together: one Redis round trip per batch.
    #[serde(default = "default_intake_batch")]
    pub batch_size: usize,
    /// Users whose preferences are cached in the process (0 turns the cache off).
    #[serde(default = "default_cache_size")]
    pub prefs_cache_size: u64,
    /// How long a cached preference is used: a change is seen by intake within it.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub prefs_cache_ttl: Duration,
    /// At shutdown, how long intake waits for the writes in flight (a broker
    /// outage holds them for ever); a batch whose writes are not all
    /// acknowledged by then keeps its offsets unstored, and its records are
    /// read again after a restart (the workers drop what was already sent).
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// What an event may be at most; one beyond is dead-lettered with the reason.
    #[serde(default)]
    pub limits: EventLimits,
}

/// Bounds on an input event, checked before anything is built from it, in
/// both Kafka modes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLimits {
    /// The record's value and headers together, in bytes.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Each identifier (`id`, `type`, `source`, `subject`, `correlationid`,
    /// `traceparent`, the user id), in bytes.
    #[serde(default = "default_max_id_bytes")]
    pub max_id_bytes: usize,
    /// How deep objects and arrays may nest in the event's `data`.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTypes {
    #[default]
    DeadLetter,
    Suppress,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Notifications being delivered at once per consumer (one per priority),
    /// ordered per user. A record waiting for its user's earlier one takes no place here.
    #[serde(default = "default_worker_in_flight")]
    pub max_in_flight: usize,
    /// Records read and not yet finished per consumer (delivering, or waiting for
    /// their user's turn or a place in flight); reading stops beyond it, polling does not.
    /// While places in flight are free (what is read waits for its users' earlier
    /// records), reading goes on up to four times this.
    #[serde(default = "default_worker_buffered")]
    pub max_buffered: usize,
    /// How long a send claim holds before another worker may take the notification over.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub claim_lease: Duration,
    /// How long a delivered notification's dedupe record is kept.
    #[serde(default = "default_dedupe_ttl", with = "humantime_serde")]
    pub dedupe_ttl: Duration,
    /// Retry of one provider's transient errors.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breaker per provider.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// What happens after an ambiguous answer (the request was written, no answer came).
    #[serde(default)]
    pub ambiguous: AmbiguityConfig,
    /// How long shutdown waits for in-flight sends before abandoning them (they are redelivered).
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per provider, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// First backoff; each later one doubles, with full jitter.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest backoff.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Passes over all of a channel's providers before a message that fails on
    /// every one of them is dead-lettered; a pass counts when it called a
    /// provider whose breaker was closed (one that could call nothing is an outage: held).
    #[serde(default = "default_passes")]
    pub passes: u32,
}

/// Per priority: what an ambiguous answer (a timeout or a cut connection after
/// the request was written: the provider may have accepted it) leads to. It is
/// never sent again through another provider or channel.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmbiguityConfig {
    #[serde(default = "at_least_once")]
    pub critical: Ambiguity,
    #[serde(default = "at_most_once")]
    pub normal: Ambiguity,
    #[serde(default = "at_most_once")]
    pub bulk: Ambiguity,
}

impl AmbiguityConfig {
    pub fn of(&self, priority: Priority) -> Ambiguity {
        match priority {
            Priority::Critical => self.critical,
            Priority::Normal => self.normal,
            Priority::Bulk => self.bulk,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ambiguity {
    /// Retry on the same provider: the user may get a second copy (counted).
    AtLeastOnce,
    /// End as `unconfirmed`, with the reason: never a second copy.
    AtMostOnce,
}

fn at_least_once() -> Ambiguity {
    Ambiguity::AtLeastOnce
}
fn at_most_once() -> Ambiguity {
    Ambiguity::AtMostOnce
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// How far back the closed breaker looks at outcomes.
    #[serde(default = "default_breaker_window", with = "humantime_serde")]
    pub window: Duration,
    /// Calls the window must hold before the rates below count.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// Share of failed calls (0.0 to 1.0) in the window that opens the breaker.
    #[serde(default = "default_failure_rate")]
    pub failure_rate: f64,
    /// A call taking this long or longer is slow.
    #[serde(default = "default_slow_call", with = "humantime_serde")]
    pub slow_call: Duration,
    /// Share of slow calls (0.0 to 1.0) in the window that opens the breaker.
    #[serde(default = "default_slow_call_rate")]
    pub slow_call_rate: f64,
    /// How long an open breaker waits before probing (jittered by up to +25 %).
    #[serde(default = "default_reset_timeout", with = "humantime_serde")]
    pub reset_timeout: Duration,
    /// Calls admitted while half-open; all must succeed to close the breaker.
    #[serde(default = "default_half_open_probes")]
    pub half_open_probes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How often the scheduler looks for due notifications.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Notifications claimed per poll.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long a claim holds; a scheduler that dies mid-move is taken over after it.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub claim_lease: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    /// The templates folder (`<event type>/<channel>.<part>.hbs`, `partials/`, `layouts/`).
    #[serde(default = "default_templates_dir")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `http://<listen>/metrics`, e.g. `"0.0.0.0:9464"`; off when left out.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// OTLP/HTTP collector to export spans to, e.g. `"http://otel-collector:4318"`
    /// (`/v1/traces` is added); off when left out. Headers it needs (an API
    /// key) come from `OTEL_EXPORTER_OTLP_HEADERS`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces kept, 0.0 to 1.0; a trace an event started upstream
    /// follows its parent's decision.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

/// As written, but for credentials in the collector's URL.
impl std::fmt::Debug for TracesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracesConfig")
            .field("otlp_endpoint", &self.otlp_endpoint.as_deref().map(crate::redact::credentials))
            .field("sample_ratio", &self.sample_ratio)
            .finish()
    }
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig { otlp_endpoint: None, sample_ratio: default_sample_ratio() }
    }
}

fn default_sample_ratio() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbacksConfig {
    /// Where the role listens (its `/healthz` too).
    #[serde(default = "default_callbacks_listen")]
    pub listen: std::net::SocketAddr,
    /// The URL providers call the role at, e.g. `https://hooks.shop.example`:
    /// Twilio signs the full URL it called, which a proxy in front of the
    /// role hides. When left out, the request's `Host` over plain `http`.
    #[serde(default)]
    pub public_url: Option<url::Url>,
    /// Requests whose callbacks are being written to `tidings.callbacks`
    /// at once; beyond it a provider is answered 503 and sends again later.
    #[serde(default = "default_callbacks_queue")]
    pub queue: usize,
    /// How long a request waits for its callbacks to be written before it
    /// is answered 503 (the provider sends it again; a copy written after
    /// all is applied once).
    #[serde(default = "default_callbacks_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How far a signed timestamp may be from now (SendGrid, Vonage).
    #[serde(default = "default_signature_tolerance", with = "humantime_serde")]
    pub signature_tolerance: Duration,
    /// Soft bounces of one address within `soft_bounce_window` that list it.
    #[serde(default = "default_soft_bounces")]
    pub soft_bounces: u64,
    #[serde(default = "default_soft_bounce_window", with = "humantime_serde")]
    pub soft_bounce_window: Duration,
    /// How long a callback is remembered, so a copy of it records nothing more.
    #[serde(default = "default_dedupe_ttl", with = "humantime_serde")]
    pub remember: Duration,
    /// Connections served at once; past it the next waits in the listen
    /// backlog until one closes. A connection reading headers holds 16 KiB at
    /// most, so the cap is high: slow clients must not crowd providers out.
    #[serde(default = "default_callbacks_connections")]
    pub max_connections: usize,
    /// Request bytes (by `Content-Length`, a body without one counted at the
    /// batch limit) being read or handled at once, over every connection;
    /// past it a request is answered 503 (providers send it again).
    #[serde(default = "default_body_budget")]
    pub body_budget: usize,
    /// How long a client has to send a request's headers (each request of a
    /// kept-alive connection too) before the connection is closed.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a request may take from its headers to its answer, its
    /// body included: past it, 408 and the connection closed.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The largest body of a form (Twilio, Vonage, an unsubscribe) and of a
    /// SendGrid batch; a larger one is answered 413 without being read.
    #[serde(default)]
    pub max_body: BodyLimits,
}

/// Request body limits of the callbacks role, in bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyLimits {
    /// A form or an unsubscribe: providers send a few hundred bytes.
    #[serde(default = "default_form_body")]
    pub form: usize,
    /// A SendGrid event batch (up to a few hundred events).
    #[serde(default = "default_batch_body")]
    pub batch: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits { form: default_form_body(), batch: default_batch_body() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeConfig {
    /// Where links point: the callbacks role's `/u`, e.g. `https://hooks.shop.example/u`.
    #[serde(default)]
    pub url: Option<url::Url>,
    /// An address that unsubscribes by mail too (`List-Unsubscribe: <mailto:…>`).
    #[serde(default)]
    pub mailto: Option<String>,
    /// The categories whose email carries the links.
    #[serde(default = "default_unsubscribe_categories")]
    pub categories: Vec<String>,
    /// Signing keys: the first signs, every one verifies (rotation).
    #[serde(default)]
    pub keys: Vec<UnsubscribeKey>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeKey {
    /// A short name, written into each token.
    pub id: String,
    /// At least 16 bytes.
    pub secret: secrecy::SecretString,
}

/// How one event type becomes notifications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRoute {
    /// Template folder; the event type when left out.
    #[serde(default)]
    pub template: Option<String>,
    /// Preference category checked against the user's opt-outs.
    pub category: String,
    /// `critical` bypasses quiet hours and may fall back across channels.
    pub priority: Priority,
    /// Channels to use, in order of preference.
    pub channels: Vec<Channel>,
    /// `all`: every channel the user enabled; `first`: only the first enabled one.
    #[serde(default)]
    pub mode: ChannelMode,
    /// For critical types: channels to fall back to, in order, when one fails for good.
    #[serde(default)]
    pub fallback: Vec<Channel>,
    /// Collects the user's events of this type into one notification (see [`Digest`]).
    #[serde(default)]
    pub digest: Option<Digest>,
}

/// A digest: a user's events of one type (and one value of `key`) within a
/// window become one notification, whose template sees `items` (each
/// event's data, in the order read) and `count`. The window opens with its
/// first event and closes `window` later, or at the next `at` in the
/// user's zone (a daily digest), or as soon as it holds `max_items`. An
/// event read after its window closed opens the next one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    /// A local time, e.g. `09:00`: daily at that time in the user's zone.
    #[serde(default, deserialize_with = "crate::prefs::de_hhmm_opt")]
    pub at: Option<chrono::NaiveTime>,
    #[serde(default = "default_digest_items")]
    pub max_items: u32,
    /// A JSON pointer into the event (e.g. `/data/order_id`): one digest per
    /// value. An event without it is dead-lettered. None: one per user.
    #[serde(default)]
    pub key: Option<String>,
}

fn default_digest_items() -> u32 {
    50
}

impl ChannelConfig {
    /// These providers, in this order, with the default limits.
    pub fn with_providers(providers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ChannelConfig {
            providers: providers.into_iter().map(Into::into).collect(),
            max_segments: default_max_segments(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelMode {
    #[default]
    All,
    First,
}

/// One provider's settings: `kind` picks the adapter, whose own
/// configuration (`providers/src/<kind>/config.rs`) reads and checks the
/// rest when the provider is built.
#[derive(Clone, Deserialize)]
pub struct ProviderSection {
    pub kind: String,
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl ProviderSection {
    /// A section of `kind` holding `settings` (a provider config serialized).
    pub fn new(kind: &str, settings: &impl serde::Serialize) -> Self {
        let settings = match serde_json::to_value(settings).expect("provider settings serialize to JSON") {
            serde_json::Value::Object(map) => map,
            _ => panic!("provider settings serialize to an object"),
        };
        ProviderSection { kind: kind.to_string(), settings }
    }
}

/// The names of the settings only: their values may be secrets.
impl std::fmt::Debug for ProviderSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSection").field("kind", &self.kind).field("settings", &self.settings.keys()).finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Provider names (keys of `[providers]`), in failover order.
    pub providers: Vec<String>,
    /// SMS only: the most segments a body may take; longer ones are dead-lettered, never sent.
    #[serde(default = "default_max_segments")]
    pub max_segments: u32,
}

/// Fields that hold strings which may look like numbers or booleans (keys,
/// tokens, passwords, account ids, sender ids): read as written from the
/// environment.
const STRING_FIELDS: [&str; 19] = [
    "signature_secret",
    "webhook_verification_key",
    "password",
    "username",
    "api_key",
    "api_secret",
    "auth_token",
    "account_sid",
    "messaging_service_sid",
    "secret",
    "previous_secret",
    "credentials_json",
    "key_pem",
    "key_id",
    "team_id",
    "project_id",
    "from",
    "url",
    "bootstrap_servers",
];

/// The fewest bytes a secret that signs or checks requests may have.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why `secret` cannot be trusted to sign or check anything, if it cannot:
/// empty, shorter than `min` bytes, fewer than six different characters,
/// or a placeholder left from an example or a template (`replace-me…`,
/// `change-me`, `<your token>`, `${TOKEN}`, …). The answer never quotes
/// the secret.
pub fn weak_secret(secret: &str, min: usize) -> Option<String> {
    // Words of an example or a template left in place, never of a random secret.
    const PLACEHOLDERS: [&str; 14] = [
        "replace",
        "change-me",
        "change_me",
        "changeme",
        "placeholder",
        "your-",
        "your_",
        "your ",
        "random",
        "example",
        "secret here",
        "todo",
        "${",
        "xxxx",
    ];
    let lower = secret.to_ascii_lowercase();
    let distinct = secret.chars().collect::<std::collections::HashSet<_>>().len();
    if secret.is_empty() {
        Some("is empty".into())
    } else if secret.len() < min {
        Some(format!("is shorter than {min} bytes"))
    } else if PLACEHOLDERS.iter().any(|p| lower.contains(p)) || secret.starts_with('<') || distinct < 6 {
        Some("is a placeholder, not a secret: set the real one".into())
    } else {
        None
    }
}

/// Secret fields: an error about one never shows its value.
const SECRET_FIELDS: [&str; 9] = [
    "keys",
    "password",
    "api_secret",
    "auth_token",
    "secret",
    "previous_secret",
    "credentials_json",
    "key_pem",
    "signature_secret",
];

/// `error` with the value taken out of every message about a secret field,
/// and out of every type error in `[providers]` (whose tagged sections do
/// not tell serde which field was wrong).
fn without_secrets(error: figment::Error) -> figment::Error {
    use figment::error::Kind;
    let mut out: Option<figment::Error> = None;
    for mut e in error {
        if e.path.last().is_some_and(|field| SECRET_FIELDS.contains(&field.as_str())) {
            e.kind = Kind::Message(format!("`{}` is not a usable secret (its value is not shown)", e.path.join(".")));
        } else if e.path.first().is_some_and(|section| section == "providers") {
            if let Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) = &e.kind {
                e.kind =
                    Kind::Message(format!("a value is not {expected} (the value is not shown: it may be a secret)"));
            }
        }
        out = Some(match out {
            None => e,
            Some(prev) => prev.chain(e),
        });
    }
    out.expect("an error holds at least one")
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads `path` (when given) and the `TIDINGS_*__*` environment, then checks it.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::extract(figment)
    }

    /// `base` (a TOML text) with the file at `path` over it, and the
    /// environment over both.
    pub fn layered(base: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::extract(Figment::from(Toml::string(base)).merge(Toml::file_exact(path)))
    }

    /// Parses a TOML text, with the environment on top.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::extract(Figment::from(Toml::string(text)))
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let env = Env::prefixed("TIDINGS_").filter(|k| k.as_str().contains("__")).split("__");
        // The environment's values are parsed (`918273645` becomes a number,
        // `true` a boolean); a field that holds a string takes them as written.
        let raw: Vec<(String, String)> = env
            .iter()
            .filter(|(key, _)| key.as_str().rsplit('.').next().is_some_and(|field| STRING_FIELDS.contains(&field)))
            .map(|(key, value)| (key.as_str().to_string(), value))
            .collect();
        let mut figment = figment.merge(env);
        for pair in raw {
            figment = figment.merge(pair);
        }
        let config: Config = figment.extract().map_err(|e| Box::new(without_secrets(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-references that serde cannot check.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (ty, route) in &self.events {
            if route.channels.is_empty() {
                return bad(format!("events.\"{ty}\": no channels"));
            }
            if !route.fallback.is_empty() && route.priority != Priority::Critical {
                return bad(format!("events.\"{ty}\": fallback is for critical events only"));
            }
        }
        self.validate_caps()?;
        if !(0.0..=1.0).contains(&self.traces.sample_ratio) {
            return bad("traces.sample_ratio must be within 0.0..=1.0".into());
        }
        for key in &self.unsubscribe.keys {
            use secrecy::ExposeSecret;
            if key.id.is_empty() || key.id.contains('.') {
                return bad(format!("unsubscribe.keys `{}`: an id without dots", key.id));
            }
            if let Some(why) = weak_secret(key.secret.expose_secret(), MIN_SECRET_BYTES) {
                return bad(format!("unsubscribe.keys `{}`: the secret {why}", key.id));
            }
        }
        let c = &self.callbacks;
        if c.body_budget < c.max_body.batch.max(c.max_body.form) {
            return bad("callbacks.body_budget must be at least the largest of max_body".into());
        }
        // The producer gives a write up after it; librdkafka wants more than the linger.
        if c.write_timeout < Duration::from_secs(1) {
            return bad("callbacks.write_timeout must be at least 1s".into());
        }
        if self.redis.key_prefix.contains(['{', '}']) {
            return bad("redis.key_prefix: no `{` or `}` (Tidings places its own hash tags)".into());
        }
        if self.worker.max_in_flight == 0 || self.worker.max_buffered < self.worker.max_in_flight {
            return bad("worker: max_in_flight must be at least 1 and max_buffered at least max_in_flight".into());
        }
        if self.worker.claim_lease < Duration::from_millis(300) {
            return bad("worker.claim_lease must be at least 300ms: it is renewed every third of it".into());
        }
        let b = &self.worker.breaker;
        if !(0.0..=1.0).contains(&b.failure_rate) || !(0.0..=1.0).contains(&b.slow_call_rate) {
            return bad("worker.breaker: failure_rate and slow_call_rate must be within 0.0..=1.0".into());
        }
        for (channel, c) in &self.channels {
            if c.providers.is_empty() {
                return bad(format!("channels.{channel}: no providers"));
            }
            for name in &c.providers {
                if !self.providers.contains_key(name) {
                    return bad(format!("channels.{channel}: provider `{name}` is not in [providers]"));
                }
            }
        }
        for (name, l) in &self.limits {
            if !self.providers.contains_key(name) {
                return bad(format!("limits.{name}: no provider `{name}` in [providers]"));
            }
            if l.per_second.is_some_and(|r| !(r > 0.0 && r.is_finite())) || l.burst == Some(0) {
                return bad(format!("limits.{name}: per_second must be above 0 and burst at least 1"));
            }
            if l.max_concurrent == Some(0) {
                return bad(format!("limits.{name}: max_concurrent must be at least 1"));
            }
        }
        Ok(())
    }

    /// Caps, categories and send windows.
    fn validate_caps(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let used: std::collections::BTreeSet<&str> = self.events.values().map(|r| r.category.as_str()).collect();
        for (name, cap) in &self.caps {
            if name.is_empty() || name.contains([':', '{', '}', '|', ',']) {
                return bad(format!("caps.\"{name}\": a name without `:`, `|`, `,`, `{{` or `}}`"));
            }
            if cap.max == 0 {
                return bad(format!(
                    "caps.{name}.max must be at least 1 (to send nothing of a category, opt users out)"
                ));
            }
            if cap.per < Duration::from_secs(1) {
                return bad(format!("caps.{name}.per must be at least 1s"));
            }
            match &cap.categories {
                Some(list) if list.is_empty() => return bad(format!("caps.{name}.categories is empty")),
                Some(list) => {
                    if let Some(c) = list.iter().find(|c| *c != "*" && !used.contains(c.as_str())) {
                        return bad(format!("caps.{name}.categories: no event type has category `{c}`"));
                    }
                }
                None if !used.contains(name.as_str()) => {
                    return bad(format!(
                        "caps.{name}: no event type has category `{name}`; name what it counts with \
                         `categories = [...]` (`[\"*\"]` for every category)"
                    ))
                }
                None => {}
            }
        }
        for (ty, route) in &self.events {
            let Some(d) = &route.digest else { continue };
            let at = format!("events.\"{ty}\".digest");
            match (d.window, d.at) {
                (Some(_), Some(_)) | (None, None) => {
                    return bad(format!("{at}: give either `window` or `at` (a daily digest), not both nor neither"))
                }
                (Some(w), None) if w < Duration::from_secs(1) => {
                    return bad(format!("{at}.window must be at least 1s"))
                }
                _ => {}
            }
            if d.max_items == 0 || d.max_items > 10_000 {
                return bad(format!("{at}.max_items must be within 1..=10000"));
            }
            if let Some(key) = &d.key {
                if !key.starts_with('/') {
                    return bad(format!("{at}.key `{key}` is not a JSON pointer (like `/data/order_id`)"));
                }
            }
            if route.priority == Priority::Critical {
                return bad(format!("{at}: a critical event goes at once, it cannot wait in a digest"));
            }
        }
        for (name, c) in &self.categories {
            if !used.contains(name.as_str()) {
                return bad(format!("categories.{name}: no event type has this category"));
            }
            if let Some(w) = c.send_window {
                if w.from == w.to {
                    return bad(format!("categories.{name}.send_window: `from` and `to` are equal (an empty window)"));
                }
            }
        }
        Ok(())
    }

    /// The caps that count a notification of `category` at `priority`,
    /// with their names: none for a critical one.
    pub fn caps_of<'a>(
        &'a self,
        category: &'a str,
        priority: Priority,
    ) -> impl Iterator<Item = (&'a str, &'a Cap)> + 'a {
        let counted = priority != Priority::Critical;
        self.caps.iter().filter(move |(name, cap)| counted && cap.covers(name, category)).map(|(n, c)| (n.as_str(), c))
    }

    /// The input topic events of type `ty` go to: the first of
    /// `intake.topics` named after its domain (`orders.events` for
    /// `order.confirmed`), else the first.
    pub fn input_topic(&self, ty: &str) -> String {
        let domain = ty.split('.').next().unwrap_or("");
        let topics = &self.intake.topics;
        let named = topics.iter().find(|t| !domain.is_empty() && t.starts_with(domain));
        named.or_else(|| topics.first()).cloned().unwrap_or_default()
    }

    /// The consumer group of a role, e.g. `tidings-worker-email`.
    pub fn group(&self, role: &str) -> String {
        format!("{}-{role}", self.kafka.group_prefix)
    }
}

/// The kinds of topic, each with its own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicKinds {
    /// The input topics (`intake.topics`), when Tidings creates them.
    #[serde(default = "TopicSettings::week")]
    pub input: TopicSettings,
    /// `tidings.<channel>.<priority>`.
    #[serde(default = "TopicSettings::week")]
    pub channel: TopicSettings,
    /// `tidings.status`.
    #[serde(default = "TopicSettings::week")]
    pub status: TopicSettings,
    /// `tidings.callbacks`: what providers said, until it is applied.
    #[serde(default = "TopicSettings::week")]
    pub callbacks: TopicSettings,
    /// `tidings.<channel>.dlq` and `tidings.intake.dlq`: kept long enough
    /// for a dead letter to be looked at and replayed.
    #[serde(default = "TopicSettings::month")]
    pub dlq: TopicSettings,
}

impl Default for TopicKinds {
    fn default() -> Self {
        TopicKinds {
            input: TopicSettings::week(),
            channel: TopicSettings::week(),
            status: TopicSettings::week(),
            callbacks: TopicSettings::week(),
            dlq: TopicSettings::month(),
        }
    }
}

/// How one kind of topic is made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Partitions; `kafka.partitions` when left out.
    #[serde(default)]
    pub partitions: Option<i32>,
    /// Replication factor; `kafka.replication_factor` when left out.
    #[serde(default)]
    pub replication_factor: Option<i32>,
    /// How long records are kept (`retention.ms`), e.g. `"7d"`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl TopicSettings {
    fn week() -> Self {
        TopicSettings { partitions: None, replication_factor: None, retention: Duration::from_secs(7 * 86_400) }
    }
    fn month() -> Self {
        TopicSettings { partitions: None, replication_factor: None, retention: Duration::from_secs(30 * 86_400) }
    }
}

fn default_callbacks_listen() -> std::net::SocketAddr {
    ([0, 0, 0, 0], 8080).into()
}
fn default_callbacks_queue() -> usize {
    10_000
}
fn default_callbacks_write_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_callbacks_connections() -> usize {
    2048
}
fn default_body_budget() -> usize {
    32 * 1024 * 1024
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_form_body() -> usize {
    64 * 1024
}
fn default_batch_body() -> usize {
    1024 * 1024
}
fn default_signature_tolerance() -> Duration {
    Duration::from_secs(300)
}
fn default_soft_bounces() -> u64 {
    3
}
fn default_soft_bounce_window() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_unsubscribe_categories() -> Vec<String> {
    vec!["marketing".into()]
}
fn default_group_prefix() -> String {
    "tidings".into()
}
fn default_partitions() -> i32 {
    12
}
fn default_replication() -> i32 {
    3
}
fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_key_prefix() -> String {
    "tidings".into()
}
fn default_deferral_wait() -> Duration {
    Duration::from_secs(1)
}
fn default_input_topics() -> Vec<String> {
    ["orders.events", "payments.events", "shipments.events", "accounts.events", "marketing.events"]
        .map(String::from)
        .to_vec()
}
fn default_user_pointer() -> String {
    "/data/user_id".into()
}
fn default_intake_in_flight() -> usize {
    1024
}
fn default_intake_batch() -> usize {
    256
}
fn default_cache_size() -> u64 {
    100_000
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_max_event_bytes() -> usize {
    256 * 1024
}
fn default_max_id_bytes() -> usize {
    256
}
fn default_max_depth() -> usize {
    32
}
fn default_worker_in_flight() -> usize {
    256
}
fn default_worker_buffered() -> usize {
    4096
}
fn default_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_dedupe_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_drain() -> Duration {
    Duration::from_secs(20)
}
fn default_attempts() -> u32 {
    3
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_passes() -> u32 {
    3
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}
fn default_breaker_window() -> Duration {
    Duration::from_secs(30)
}
fn default_min_calls() -> u32 {
    10
}
fn default_failure_rate() -> f64 {
    0.5
}
fn default_slow_call() -> Duration {
    Duration::from_secs(5)
}
fn default_slow_call_rate() -> f64 {
    0.8
}
fn default_half_open_probes() -> u32 {
    3
}
fn default_reset_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_poll() -> Duration {
    Duration::from_millis(500)
}
fn default_batch() -> usize {
    500
}
fn default_templates_dir() -> PathBuf {
    "templates".into()
}
fn default_max_segments() -> u32 {
    4
}

macro_rules! default_via_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                serde_json::from_value(serde_json::json!({})).expect("every field has a default")
            }
        }
    )*};
}
default_via_serde!(
    RedisConfig,
    IntakeConfig,
    EventLimits,
    WorkerConfig,
    RetryConfig,
    AmbiguityConfig,
    BreakerConfig,
    SchedulerConfig,
    TemplatesConfig,
    CallbacksConfig,
    UnsubscribeConfig
);
