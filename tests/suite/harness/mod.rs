//! The test harness: real infrastructure on loopback, and ways to wait for outcomes.
//!
//! - [`Infra`]: librdkafka's mock cluster with every topic, and a private `redis-server`.
//! - [`fakes`]: wiremock servers speaking the providers' APIs.
//! - [`smtp`]: a real SMTP server in the test process that records, fails or stalls.
//! - [`StatusWatch`]: reads `tidings.status` and waits, with a deadline, for outcomes.

pub mod fakes;
pub mod smtp;
pub mod soak;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings::embedded::{EmbeddedKafka, RedisServer};
use tidings_core::channel::STATUS_TOPIC;
use tidings_core::config::ChannelConfig;
use tidings_core::{kafka, Channel, Config, Notification, State, StatusRecord};
use tidings_workers::chain::Chain;
use tidings_workers::deliver::{Deliverer, Input, Marks};
use tidings_workers::render::Renderer;

pub const PARTITIONS: i32 = 4;

pub struct Infra {
    pub kafka: EmbeddedKafka,
    pub redis: RedisServer,
}

impl Infra {
    pub fn start() -> Self {
        let kafka = EmbeddedKafka::start(1).expect("mock cluster");
        let redis = RedisServer::start().expect("redis-server (scripts/test installs it)");
        let config = Config::from_toml(&example_toml()).unwrap();
        for topic in tidings::commands::topics::topics(&config) {
            kafka.create_topic(&topic, PARTITIONS).unwrap();
        }
        Infra { kafka, redis }
    }

    /// Email through the in-process SMTP relay and SMS through a Twilio fake,
    /// and the configuration that uses them.
    pub async fn email_and_sms(&self) -> (smtp::SmtpServer, wiremock::MockServer, Config) {
        let smtp = smtp::SmtpServer::start().await;
        let twilio = fakes::twilio().await;
        let config = self.config(
            &smtp_and_twilio(smtp.port, &twilio.uri()),
            &[(Channel::Email, &["smtp"]), (Channel::Sms, &["twilio"])],
        );
        (smtp, twilio, config)
    }

    /// Environment overrides that point a `tidings` process at this infrastructure.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TIDINGS_KAFKA__BOOTSTRAP_SERVERS", self.kafka.bootstrap_servers().to_string()),
            ("TIDINGS_REDIS__URL", self.redis.url()),
            ("TIDINGS_TEMPLATES__DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/templates").to_string()),
            ("TIDINGS_LOG", "warn".to_string()),
        ]
    }

    /// Runs `tidings <args>` as a process of its own, configured by `file`;
    /// killed when dropped, so a failing test leaves nothing running.
    pub fn spawn(&self, file: &std::path::Path, args: &[&str]) -> Process {
        Process(self.command(file, args).spawn().expect("the tidings binary"))
    }

    /// `tidings <args>` configured by `file` and pointed at this infrastructure.
    pub fn command(&self, file: &std::path::Path, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
        command.args(args).env("TIDINGS_CONFIG", file).envs(self.env()).stdout(std::process::Stdio::null());
        command
    }

    /// The example configuration pointed at this infrastructure, with the given providers.
    pub fn config(&self, providers: &str, channels: &[(Channel, &[&str])]) -> Config {
        let mut text = example_toml();
        // Replace everything from the channels section on with the test's providers.
        let cut = text.find("# ---- Channels").unwrap();
        text.truncate(cut);
        text.push_str(providers);
        let mut config = Config::from_toml(&text).unwrap();
        config.kafka.bootstrap_servers = self.kafka.bootstrap_servers().to_string();
        config.redis.url = self.redis.url();
        // Fleets of concurrent tests share the process: none serves endpoints (`metrics` starts processes that do).
        config.metrics.listen = None;
        config.worker.drain_timeout = Duration::from_secs(5);
        config.worker.claim_lease = Duration::from_secs(3);
        config.worker.retry.initial_backoff = Duration::from_millis(20);
        config.scheduler.poll_interval = Duration::from_millis(100);
        config.templates.dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates").into();
        config.channels =
            channels.iter().map(|(c, names)| (*c, ChannelConfig::with_providers(names.iter().copied()))).collect();
        config.validate().unwrap();
        config
    }
}

/// A `tidings` process a test started; killed (SIGKILL) when dropped.
pub struct Process(std::process::Child);

impl std::ops::Deref for Process {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<std::process::Child> for Process {
    fn from(child: std::process::Child) -> Self {
        Process(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A configuration file for a `tidings` process: the example with `providers`
/// and `channels` (TOML), and `replace` pairs applied to the text. Endpoints
/// come from the environment (see [`Infra::env`]).
pub fn config_file(
    dir: &std::path::Path,
    providers: &str,
    channels: &str,
    replace: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut text = example_toml();
    text.truncate(text.find("# ---- Channels").unwrap());
    text.push_str(providers);
    text.push_str(channels);
    // Processes of concurrent tests each serve metrics, on a port of their own.
    text = text.replace("listen = \"0.0.0.0:9464\"", "listen = \"127.0.0.1:0\"");
    for (from, to) in replace {
        assert!(text.contains(from), "{from} is not in the example config");
        text = text.replace(from, to);
    }
    let file = dir.join("tidings.toml");
    std::fs::write(&file, text).unwrap();
    file
}

pub fn example_toml() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tidings.example.toml")).unwrap()
}

/// TOML for an SMTP provider at `port` and a Twilio provider at `twilio_url`.
pub fn smtp_and_twilio(port: u16, twilio_url: &str) -> String {
    format!(
        r#"
[providers.smtp]
kind = "smtp"
host = "127.0.0.1"
port = {port}
tls = "none"
allow_plaintext = true
from = "Shop <no-reply@shop.example>"
timeout = "5s"
pool_size = 4

[providers.twilio]
kind = "twilio"
base_url = "{twilio_url}"
account_sid = "AC123"
auth_token = "5f0e8c2b9a7d4e1f3c6b8a0d2e4f6a8c"
from = "+15550001111"
timeout = "5s"
"#
    )
}

/// TOML for a SendGrid provider at `url`, answering within `timeout`.
pub fn sendgrid_provider(url: &str, timeout: &str) -> String {
    format!(
        "\n[providers.sendgrid]\nkind = \"sendgrid\"\nbase_url = \"{url}\"\napi_key = \"SG.key\"\nfrom = \"Shop <no-reply@shop.example>\"\ntimeout = \"{timeout}\"\n"
    )
}

/// Opens the configured store with `n` email-only users (`u-0` …) in it.
pub async fn store_with_email_users(config: &Config, n: usize) -> tidings_core::store::SharedStore {
    let store = tidings::fleet::open_store(config).await.unwrap();
    let users: String = (0..n).map(|i| email_user(i) + "\n").collect();
    tidings::commands::prefs::import(store.as_ref(), &users).await.unwrap();
    store
}

/// The roles of a process that runs intake alone.
pub fn intake_only() -> tidings::fleet::Roles {
    tidings::fleet::Roles { intake: true, scheduler: false, callbacks: false, channels: vec![] }
}

/// The roles of a process that runs one channel's worker alone.
pub fn worker_only(channel: Channel) -> tidings::fleet::Roles {
    tidings::fleet::Roles { intake: false, scheduler: false, callbacks: false, channels: vec![channel] }
}

/// A user with email and SMS enabled and no quiet hours.
pub fn user(i: usize) -> String {
    serde_json::json!({
        "user_id": format!("u-{i}"), "timezone": "UTC", "locale": "en",
        "email": format!("user{i}@example.com"), "phone": format!("+1555{i:07}"),
        "channels": {"email": true, "sms": true, "push": false}
    })
    .to_string()
}

/// A user with email only.
pub fn email_user(i: usize) -> String {
    let mut u: serde_json::Value = serde_json::from_str(&user(i)).unwrap();
    u["channels"]["sms"] = false.into();
    u.to_string()
}

/// An `order.confirmed` event for `user` whose order id carries `seq`.
pub fn order_event(seq: usize, user: &str) -> String {
    serde_json::json!({
        "specversion": "1.0", "id": format!("evt-{seq}"), "type": "order.confirmed", "source": "/test",
        "data": {
            "user_id": user, "order_id": format!("o-{seq:06}"), "total": "10.00", "currency": "EUR",
            "items": [], "item_count": 1, "placed_at": "2026-11-26T10:00:00Z",
            "order_url": format!("https://shop.example/o-{seq:06}")
        }
    })
    .to_string()
}

/// An `order.confirmed` email notification `id` of event `event_id` for
/// `user` at `address`, normal priority, with `data`.
/// An `account.password_reset` event (critical, email) for `user`, with id `id`.
pub fn password_reset(id: &str, user: &str) -> String {
    serde_json::json!({
        "specversion": "1.0", "id": id, "type": "account.password_reset", "source": "/auth",
        "data": {"user_id": user, "reset_url": "https://shop.example/reset", "expires_in_minutes": 30, "requested_ip": "203.0.113.7"}
    })
    .to_string()
}

pub fn email_notification(
    id: &str,
    event_id: &str,
    user: &str,
    address: &str,
    data: serde_json::Value,
) -> Notification {
    Notification {
        notification_id: id.to_string(),
        source: "/test".into(),
        event_id: event_id.to_string(),
        event_type: "order.confirmed".into(),
        user_id: user.to_string(),
        channel: Channel::Email,
        priority: tidings_core::Priority::Normal,
        template: "order.confirmed".into(),
        category: "transactional".into(),
        locale: "en".into(),
        timezone: "UTC".into(),
        recipient: tidings_core::Recipient::Email { address: address.to_string() },
        data: serde_json::value::to_raw_value(&data).unwrap(),
        created_at: chrono::Utc::now(),
        not_before: None,
        fallback: vec![],
        attempt: 0,
    }
}

/// A deliverer of `channel` through the configured providers, with its
/// own producer and the published marks' writer (which ends with it).
pub fn deliverer(config: &Arc<Config>, store: tidings_core::store::SharedStore, channel: Channel) -> Deliverer {
    let (marks, _marking) = Marks::start(store.clone());
    Deliverer {
        channel,
        producer: kafka::producer(&config.kafka).unwrap(),
        chain: Chain::new(tidings::fleet::providers(config, channel).unwrap(), &config.worker.breaker, None),
        config: config.clone(),
        store,
        renderer: Arc::new(Renderer::load(&tidings::fleet::templates_dir(config)).unwrap()),
        clock: tidings_core::Clock::system(),
        owner: format!("{channel}-test"),
        deliveries: Default::default(),
        marks,
        outcomes: tidings_core::telemetry::Outcomes::default(),
    }
}

/// An `order.confirmed` email notification `id` of event `event_id` for
/// `u-0` at `user0@example.com`, with the template's sample data.
pub fn order_notification(id: &str, event_id: &str) -> Notification {
    let sample = serde_json::from_str(include_str!("../../../templates/order.confirmed/sample.json")).unwrap();
    email_notification(id, event_id, "u-0", "user0@example.com", sample)
}

/// One email worker's deliverer as a test drives it, through the SMTP
/// relay, for one email user (`u-0`), with a watch on the status topic.
pub struct OneWorker {
    pub infra: Infra,
    pub smtp: smtp::SmtpServer,
    pub config: Arc<Config>,
    pub store: tidings_core::store::SharedStore,
    pub watch: StatusWatch,
    pub deliverer: Deliverer,
    _twilio: wiremock::MockServer,
}

pub async fn one_email_worker() -> OneWorker {
    let infra = Infra::start();
    let (smtp, _twilio, config) = infra.email_and_sms().await;
    let config = Arc::new(config);
    let store = store_with_email_users(&config, 1).await;
    let watch = StatusWatch::start(&config);
    let deliverer = deliverer(&config, store.clone(), Channel::Email);
    OneWorker { infra, smtp, config, store, watch, deliverer, _twilio }
}

/// A deferred entry of an `order.confirmed` email `id` for `u-1` at
/// `priority`, due `due`, its data a note of `note` bytes: as intake holds it.
pub fn deferred_entry(
    id: &str,
    priority: tidings_core::Priority,
    note: usize,
    due: chrono::DateTime<chrono::Utc>,
) -> String {
    serde_json::json!({
        "notification": {
            "notification_id": id, "event_id": id, "event_type": "order.confirmed", "user_id": "u-1",
            "channel": "email", "priority": priority.as_str(), "template": "order.confirmed",
            "category": "transactional", "locale": "en", "timezone": "UTC",
            "recipient": {"kind": "email", "address": "u1@example.com"},
            "data": {"note": "x".repeat(note)}, "created_at": due,
        },
        "correlation_id": id,
    })
    .to_string()
}

/// Notification `n` as the record at `offset` of partition 0 of its topic.
pub fn input_of(n: &Notification, offset: i64) -> Input {
    Input {
        topic: n.channel.topic(n.priority),
        partition: 0,
        offset,
        key: Some(n.user_id.as_bytes().to_vec()),
        payload: Some(serde_json::to_vec(n).unwrap()),
        headers: vec![],
        trace: tidings_core::trace::Hop::root(),
    }
}

/// Reads every status record as it is written.
pub struct StatusWatch {
    records: Arc<Mutex<Vec<StatusRecord>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWatch {
    pub fn start(config: &Config) -> Self {
        let consumer: StreamConsumer = kafka::client_config(&config.kafka)
            .set("group.id", format!("test-status-{}", rand::random::<u64>()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[STATUS_TOPIC]).unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let task = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(m) => {
                        if let Some(r) = m.payload().and_then(|v| serde_json::from_slice::<StatusRecord>(v).ok()) {
                            sink.lock().unwrap().push(r);
                        }
                    }
                    // A broker gone for a while (a drill): the consumer reconnects on its own.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        StatusWatch { records, task }
    }

    pub fn records(&self) -> Vec<StatusRecord> {
        self.records.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the records read so far, or panics at the deadline.
    pub async fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[StatusRecord]) -> bool,
    ) -> Vec<StatusRecord> {
        let end = Instant::now() + deadline;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            let records = self.records();
            if done(&records) {
                return records;
            }
            if Instant::now() > end {
                panic!(
                    "timed out after {deadline:?} waiting for {what}; {} status records: {:?}",
                    records.len(),
                    count_states(&records)
                );
            }
            tick.tick().await;
        }
    }

    /// Waits for a record of `notification_id` in `state`.
    pub async fn wait_for_status(&self, notification_id: &str, state: State, deadline: Duration) -> StatusRecord {
        let records = self
            .wait_until(&format!("{notification_id} {state:?}"), deadline, |rs| {
                rs.iter().any(|r| r.notification_id == notification_id && r.state == state)
            })
            .await;
        records.into_iter().find(|r| r.notification_id == notification_id && r.state == state).unwrap()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub value: String,
    pub headers: HashMap<String, String>,
}

/// The first `n` records of `topic` (fewer if the deadline of 60 s passes first).
pub fn read_topic(config: &Config, topic: &str, n: usize) -> Vec<Record> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = kafka::client_config(&config.kafka)
        .set("group.id", format!("test-read-{}", rand::random::<u64>()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while out.len() < n && Instant::now() < end {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = kafka::header_pairs(&m)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            out.push(Record { value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(), headers });
        }
    }
    out
}

/// How many records of `topic` the consumer group `group` has not committed,
/// over all its partitions.
pub fn uncommitted(config: &Config, group: &str, topic: &str) -> i64 {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka::client_config(&config.kafka).set("group.id", group).create().unwrap();
    let timeout = Duration::from_secs(10);
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, timeout).unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let (_, high) = consumer.fetch_watermarks(topic, p, timeout).unwrap();
            let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            high - at
        })
        .sum()
}

/// Checks `condition` every `every` until it holds; panics at the deadline.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, every: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if condition().await {
            return;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
    }
}

pub fn count_states(records: &[StatusRecord]) -> HashMap<State, usize> {
    let mut m = HashMap::new();
    for r in records {
        *m.entry(r.state).or_default() += 1;
    }
    m
}

/// Terminal records per notification id.
pub fn terminal_counts(records: &[StatusRecord]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in records.iter().filter(|r| r.state.is_terminal()) {
        *m.entry(r.notification_id.clone()).or_default() += 1;
    }
    m
}

/// A copy of folder `from` (and everything under it) at `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
