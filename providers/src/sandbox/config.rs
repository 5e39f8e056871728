//! The sandbox provider's outbox and its fault knobs.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Folder each message is written to (`.eml` for email, `.json` otherwise).
    #[serde(default = "default_outbox")]
    pub outbox: PathBuf,
    /// Added latency per send.
    #[serde(default, with = "humantime_serde")]
    pub latency: Duration,
    /// Share of sends (0.0 to 1.0) that fail as transient errors.
    #[serde(default)]
    pub error_rate: f64,
    /// Windows during which the provider is down: `["10s..40s"]`, counted from
    /// the first message any sandbox of the process handled.
    #[serde(default)]
    pub outages: Vec<String>,
    /// Windows during which it answers as a provider over its rate does
    /// (429, `Retry-After: retry_after`).
    #[serde(default)]
    pub rate_limited: Vec<String>,
    /// The `Retry-After` of its answers in a `rate_limited` window.
    #[serde(default = "default_retry_after", with = "humantime_serde")]
    pub retry_after: Duration,
    /// Accept each message without writing it (benchmarks).
    #[serde(default)]
    pub discard: bool,
}

impl crate::registry::Settings for SandboxConfig {
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err("error_rate must be within 0.0..=1.0".into());
        }
        Ok(())
    }
}

fn default_outbox() -> PathBuf {
    "outbox".into()
}
fn default_retry_after() -> Duration {
    Duration::from_secs(2)
}
