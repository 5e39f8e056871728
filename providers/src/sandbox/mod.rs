//! A provider for `tidings dev` and drills: each message becomes a file in an
//! outbox folder (`<id>.eml` for email, `<id>.json` otherwise; a second send
//! of the same notification `<id>.2.eml`, so a copy sent twice shows), or
//! nowhere with `discard` (benchmarks), with knobs for latency, a transient
//! error rate, outage windows and rate-limited windows (429 with
//! `Retry-After`).

pub mod config;
mod outages;

use self::config::SandboxConfig;
use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tidings_core::Channel;

pub use outages::parse_window;

pub struct Sandbox {
    name: String,
    outbox: PathBuf,
    latency: Duration,
    error_rate: f64,
    outages: Vec<(Duration, Duration)>,
    rate_limited: Vec<(Duration, Duration)>,
    retry_after: Duration,
    discard: bool,
}

/// When the process's sandboxes handled their first message: fault windows
/// count from there, so a fleet that takes a while to start (a loaded
/// machine, a slow group join) still meets each fault with traffic flowing,
/// and every sandbox of a drill meets it at the same moment.
fn first_send() -> Instant {
    static FIRST: OnceLock<Instant> = OnceLock::new();
    *FIRST.get_or_init(Instant::now)
}

impl Sandbox {
    pub fn new(name: &str, c: &SandboxConfig) -> Result<Self, String> {
        let windows = |ws: &[String]| {
            ws.iter().map(|w| parse_window(w).map_err(|e| format!("`{w}`: {e}"))).collect::<Result<Vec<_>, _>>()
        };
        let (outages, rate_limited) = (windows(&c.outages)?, windows(&c.rate_limited)?);
        Ok(Sandbox {
            name: name.to_string(),
            outbox: c.outbox.clone(),
            latency: c.latency,
            error_rate: c.error_rate,
            outages,
            rate_limited,
            retry_after: c.retry_after,
            discard: c.discard,
        })
    }
}

#[async_trait]
impl Provider for Sandbox {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, _: Channel) -> bool {
        true
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let epoch = first_send();
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let elapsed = epoch.elapsed();
        let within =
            |windows: &[(Duration, Duration)]| windows.iter().any(|(from, to)| (*from..*to).contains(&elapsed));
        if within(&self.outages) {
            return Err(ProviderError::down(format!("sandbox {}: in an outage window", self.name)));
        }
        if within(&self.rate_limited) {
            return Err(ProviderError::transient(format!("sandbox {}: 429 too many requests", self.name))
                .retry_after(Some(self.retry_after)));
        }
        if self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate {
            return Err(ProviderError::transient(format!("sandbox {}: injected error", self.name)));
        }
        if self.discard {
            return Ok(Receipt { provider_message_id: None });
        }
        let channel = message.content.channel();
        let dir = self.outbox.join(channel.as_str());
        let (extension, body) = match &message.content {
            Content::Email { to, subject, text, html, unsubscribe } => (
                "eml",
                format!(
                    "To: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@tidings>\r\n{}Content-Type: multipart/alternative; boundary=tidings\r\n\r\n--tidings\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--tidings\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--tidings--\r\n",
                    message.notification_id,
                    unsubscribe.as_ref().map_or(String::new(), |u| format!(
                        "List-Unsubscribe: {}\r\nList-Unsubscribe-Post: {}\r\n",
                        u.header(),
                        tidings_core::unsubscribe::ONE_CLICK
                    )),
                )
                .into_bytes(),
            ),
            _ => ("json", serde_json::to_vec_pretty(message).map_err(|e| ProviderError::permanent(e.to_string()))?),
        };
        let io = |e: std::io::Error| ProviderError::down(format!("sandbox {}: {e}", self.name));
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        let id = &message.notification_id;
        for copy in 1.. {
            let file = if copy == 1 { format!("{id}.{extension}") } else { format!("{id}.{copy}.{extension}") };
            let created = tokio::fs::OpenOptions::new().write(true).create_new(true).open(dir.join(&file)).await;
            match created {
                Ok(mut f) => {
                    tokio::io::AsyncWriteExt::write_all(&mut f, &body).await.map_err(io)?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(e)),
            }
        }
        Ok(Receipt { provider_message_id: Some(format!("sandbox-{}", message.notification_id)) })
    }
}
