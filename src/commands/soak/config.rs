//! What the soak runs: its configuration (the example's, with its channels
//! on the fakes and faults felt within seconds), its users, and its traffic.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidings_core::prefs::{Preferences, QuietHours, Window};
use tidings_core::{kafka, Config};

const EXAMPLE: &str = include_str!("../../../tidings.example.toml");

/// The example configuration up to its channels, with `(from, to)`
/// replaced; each `from` must be there.
fn replaced(text: &str, pairs: &[(&str, String)]) -> anyhow::Result<String> {
    let mut text = text.to_string();
    for (from, to) in pairs {
        anyhow::ensure!(text.contains(from), "`{from}` is not in the example configuration");
        text = text.replace(from, to);
    }
    Ok(text)
}

pub fn text(bootstrap: &str, redis: &str, fakes: u16, callbacks: u16, templates: &Path) -> anyhow::Result<String> {
    let head = &EXAMPLE[..EXAMPLE.find("# ---- Channels").unwrap_or(EXAMPLE.len())];
    let templates = std::fs::canonicalize(templates)
        .map_err(|e| anyhow::anyhow!("templates folder {}: {e}", templates.display()))?;
    let mut text = replaced(
        head,
        &[
            ("bootstrap_servers = \"localhost:9092\"", format!("bootstrap_servers = \"{bootstrap}\"")),
            ("partitions = 12", "partitions = 6".into()),
            ("replication_factor = 3", "replication_factor = 1".into()),
            // Members that die leave their groups within seconds.
            (
                "group_prefix = \"tidings\"",
                "group_prefix = \"tidings\"\noptions = { \"session.timeout.ms\" = \"6000\", \"max.poll.interval.ms\" = \"10000\" }"
                    .into(),
            ),
            ("url = \"redis://127.0.0.1:6379\"", format!("url = \"{redis}\"")),
            ("drain_timeout = \"20s\"", "drain_timeout = \"4s\"".into()),
            ("claim_lease = \"30s\"", "claim_lease = \"6s\"".into()),
            ("window = \"30s\"", "window = \"10s\"".into()),
            ("min_calls = 10", "min_calls = 5".into()),
            ("slow_call = \"5s\"", "slow_call = \"2s\"".into()),
            ("reset_timeout = \"30s\"", "reset_timeout = \"5s\"".into()),
            ("listen = \"0.0.0.0:9464\"", "listen = \"127.0.0.1:0\"".into()),
            ("listen = \"0.0.0.0:8080\"", format!("listen = \"127.0.0.1:{callbacks}\"")),
            ("dir = \"templates\"", format!("dir = \"{}\"", templates.display())),
        ],
    )?;
    // Push needs device tokens and OAuth; the soak's third channel is webhooks.
    let events = text.find("# ---- Event types").unwrap_or(0);
    let tail = text.split_off(events).replace("\"push\"", "\"webhook\"");
    text.push_str(&tail);
    let base = format!("http://127.0.0.1:{fakes}");
    text.push_str(&format!(
        r#"
[channels.email]
providers = ["sendgrid_a", "sendgrid_b"]

[channels.sms]
providers = ["vonage_a", "vonage_b"]

[channels.webhook]
providers = ["webhook"]

[providers.sendgrid_a]
kind = "sendgrid"
base_url = "{base}/sendgrid/a"
api_key = "soak-key-a"
from = "Shop <no-reply@shop.example>"
timeout = "3s"

[providers.sendgrid_b]
kind = "sendgrid"
base_url = "{base}/sendgrid/b"
api_key = "soak-key-b"
from = "Shop <no-reply@shop.example>"
timeout = "3s"

[providers.vonage_a]
kind = "vonage"
base_url = "{base}/vonage/a"
api_key = "soak-a"
api_secret = "soak-secret-a"
from = "Shop"
timeout = "3s"

[providers.vonage_b]
kind = "vonage"
base_url = "{base}/vonage/b"
api_key = "soak-b"
api_secret = "soak-secret-b"
from = "Shop"
timeout = "3s"

[providers.webhook]
kind = "webhook"
allow_private = true
allowed_ports = [{fakes}]
timeout = "3s"

[limits.sendgrid_a]
per_second = 200
burst = 20
"#
    ));
    Ok(text)
}

/// Zones of the soak's users: whole, half and three-quarter hour offsets,
/// both sides of UTC and of the date line.
const ZONES: [&str; 10] = [
    "Europe/Paris",
    "America/New_York",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/St_Johns",
    "Australia/Adelaide",
    "Pacific/Kiritimati",
    "Pacific/Honolulu",
    "Asia/Tokyo",
    "UTC",
];

pub struct Users {
    pub prefs: Vec<Preferences>,
}

impl Users {
    pub fn jsonl(&self) -> String {
        self.prefs.iter().map(|p| serde_json::to_string(p).expect("preferences serialize") + "\n").collect()
    }

    /// The zone and quiet hours of user `id`.
    pub fn quiet(&self, id: &str) -> Option<(&QuietHours, Tz)> {
        let n: usize = id.strip_prefix("s-")?.parse().ok()?;
        let p = self.prefs.get(n)?;
        Some((p.quiet_hours.as_ref()?, p.timezone.parse().ok()?))
    }
}

/// `n` users `s-0` …: every channel but push, one in five opted out of
/// marketing, one in four with quiet hours that began an hour before
/// `started` and end at a point drawn from `seed` between a fifth and
/// seven tenths of the run (so that what they hold is released while
/// faults go on).
pub fn users(seed: u64, n: usize, fakes: u16, started: DateTime<Utc>, run: Duration) -> Users {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15);
    let prefs = (0..n)
        .map(|i| {
            let zone = ZONES[i % ZONES.len()];
            let tz: Tz = zone.parse().expect("a known zone");
            let quiet_hours = (i % 4 == 1).then(|| {
                let end = started + run.mul_f64(rng.random_range(0.2..0.7));
                let local = |t: DateTime<Utc>| t.with_timezone(&tz).time();
                // Whole minutes: the window ends at the first minute after `end`.
                let end = local(end + chrono::Duration::seconds(60));
                let start = local(started - chrono::Duration::hours(1));
                let minute = |t: chrono::NaiveTime| {
                    chrono::NaiveTime::from_hms_opt(chrono::Timelike::hour(&t), chrono::Timelike::minute(&t), 0)
                        .expect("a time")
                };
                QuietHours::Daily(Window { start: minute(start), end: minute(end) })
            });
            let json = serde_json::json!({
                "user_id": format!("s-{i}"),
                "timezone": zone,
                "locale": if i % 3 == 0 { "fr-FR" } else { "en" },
                "email": format!("s-{i}@soak.example"),
                "phone": format!("+1555{i:07}"),
                "webhook_url": format!("http://127.0.0.1:{fakes}/hooks/s-{i}"),
                "channels": {"email": true, "sms": true, "push": false, "webhook": true},
                "opt_out": if i % 5 == 2 { vec!["marketing"] } else { vec![] },
                "quiet_hours": quiet_hours,
                "muted": false,
            });
            Preferences::parse(&json.to_string()).expect("the soak's users are valid")
        })
        .collect();
    Users { prefs }
}

/// An event the soak fed that intake can use.
pub struct Fed {
    pub id: String,
    pub ty: String,
    pub user: String,
}

/// Feeds `rate` events a second for `run`, of every type the
/// configuration knows, to users drawn from `seed`, with one record in a
/// hundred unusable (not JSON, or of an unknown type), which intake must
/// dead-letter. Returns how many writes failed, and the usable events.
pub async fn feed(
    config: Arc<Config>,
    seed: u64,
    rate: u32,
    users: usize,
    run: Duration,
    templates: std::path::PathBuf,
    fed: Arc<AtomicUsize>,
) -> anyhow::Result<(usize, Vec<Fed>)> {
    // The roles' producer: its writes wait out a broker outage of any length.
    let producer = kafka::producer(&config.kafka)?;
    let mut types: Vec<(String, serde_json::Value)> = Vec::new();
    for ty in config.events.keys() {
        let sample = std::fs::read_to_string(templates.join(ty).join("sample.json")).unwrap_or_else(|_| "{}".into());
        types.push((ty.clone(), serde_json::from_str(&sample).unwrap_or_default()));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.rotate_left(17));
    let tick = Duration::from_millis(100);
    let per_tick = (rate as f64 * tick.as_secs_f64()).max(1.0) as usize;
    let mut ticker = tokio::time::interval(tick);
    let ends = tokio::time::Instant::now() + run;
    let mut deliveries = futures::stream::FuturesUnordered::new();
    let failures = Arc::new(AtomicUsize::new(0));
    let mut seq = 0usize;
    let mut usable = Vec::new();
    while tokio::time::Instant::now() < ends {
        ticker.tick().await;
        for _ in 0..per_tick {
            seq += 1;
            let user = format!("s-{}", rng.random_range(0..users));
            let id = format!("soak-{seed}-{seq}");
            let (topic, line) = match rng.random_range(0..100) {
                0 => (config.intake.topics[0].clone(), format!("{{\"id\": \"{id}\", not json")),
                1 => (config.intake.topics[0].clone(), event(&id, "order.unheard_of", &user, serde_json::json!({}))),
                _ => {
                    let (ty, data) = &types[rng.random_range(0..types.len())];
                    usable.push(Fed { id: id.clone(), ty: ty.clone(), user: user.clone() });
                    (super::super::dev::input_topic(&config, ty), event(&id, ty, &user, data.clone()))
                }
            };
            let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(&topic).key(&user).payload(line.as_bytes());
            deliveries.push(kafka::delivered(kafka::enqueue(&producer, record).await?));
            fed.fetch_add(1, Ordering::Relaxed);
        }
        // Acknowledgements are collected as they come, not waited for.
        while let Some(Some(done)) = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut deliveries)) {
            failed(done, &failures);
        }
    }
    while let Some(done) = futures::StreamExt::next(&mut deliveries).await {
        failed(done, &failures);
    }
    Ok((failures.load(Ordering::Relaxed), usable))
}

/// Counts a write that failed, and says why for the first few.
fn failed(done: rdkafka::error::KafkaResult<()>, failures: &AtomicUsize) {
    if let Err(e) = done {
        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("soak: an event's write failed: {e}");
        }
    }
}

/// The `source` of the soak's events.
pub const SOURCE: &str = "/soak";

fn event(id: &str, ty: &str, user: &str, mut data: serde_json::Value) -> String {
    if let Some(map) = data.as_object_mut() {
        map.insert("user_id".into(), user.into());
    }
    serde_json::json!({
        "specversion": "1.0", "id": id, "type": ty, "source": SOURCE,
        "time": Utc::now().to_rfc3339(), "data": data,
    })
    .to_string()
}
