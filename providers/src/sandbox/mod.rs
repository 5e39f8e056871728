//! A provider for `tidings dev` and drills: each message becomes a file in an
//! outbox folder (`.eml` for email, `.json` otherwise), or nowhere with
//! `discard` (benchmarks), with knobs for latency, a transient error rate,
//! and outage windows.

mod outages;

use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tidings_core::config::SandboxConfig;
use tidings_core::Channel;

pub use outages::parse_window;

pub struct Sandbox {
    name: String,
    outbox: PathBuf,
    latency: Duration,
    error_rate: f64,
    outages: Vec<(Duration, Duration)>,
    started: Instant,
    discard: bool,
}

impl Sandbox {
    pub fn new(name: &str, c: &SandboxConfig) -> Result<Self, ProviderError> {
        let outages = c
            .outages
            .iter()
            .map(|w| parse_window(w).map_err(|e| ProviderError::down(format!("sandbox {name}: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Sandbox {
            name: name.to_string(),
            outbox: c.outbox.clone(),
            latency: c.latency,
            error_rate: c.error_rate,
            outages,
            started: Instant::now(),
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
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let elapsed = self.started.elapsed();
        if self.outages.iter().any(|(from, to)| (*from..*to).contains(&elapsed)) {
            return Err(ProviderError::down(format!("sandbox {}: in an outage window", self.name)));
        }
        if self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate {
            return Err(ProviderError::transient(format!("sandbox {}: injected error", self.name)));
        }
        if self.discard {
            return Ok(Receipt { provider_message_id: None });
        }
        let channel = message.content.channel();
        let dir = self.outbox.join(channel.as_str());
        let (file, body) = match &message.content {
            Content::Email { to, subject, text, html } => (
                format!("{}.eml", message.notification_id),
                format!(
                    "To: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@tidings>\r\nContent-Type: multipart/alternative; boundary=tidings\r\n\r\n--tidings\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--tidings\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--tidings--\r\n",
                    message.notification_id
                )
                .into_bytes(),
            ),
            _ => (
                format!("{}.json", message.notification_id),
                serde_json::to_vec_pretty(message).map_err(|e| ProviderError::permanent(e.to_string()))?,
            ),
        };
        let io = |e: std::io::Error| ProviderError::down(format!("sandbox {}: {e}", self.name));
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        tokio::fs::write(dir.join(&file), body).await.map_err(io)?;
        Ok(Receipt { provider_message_id: Some(format!("sandbox-{}", message.notification_id)) })
    }
}
