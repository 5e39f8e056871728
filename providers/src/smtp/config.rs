//! How to reach an SMTP relay, and the sender.

use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls`, `tls` (implicit), or `none` (plain; only with `allow_plaintext`).
    #[serde(default)]
    pub tls: SmtpTls,
    /// Plain SMTP must be asked for by name: it is for local relays and tests.
    #[serde(default)]
    pub allow_plaintext: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// The `From:` address, e.g. `Shop <no-reply@shop.example>`.
    pub from: String,
    /// Per-send timeout.
    #[serde(default = "default_provider_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Pooled connections kept open.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}

impl crate::registry::Settings for SmtpConfig {
    fn validate(&self) -> Result<(), String> {
        if self.tls == SmtpTls::None && !self.allow_plaintext {
            return Err("tls = \"none\" needs allow_plaintext = true".into());
        }
        Ok(())
    }
}

fn default_smtp_port() -> u16 {
    587
}
fn default_provider_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_pool() -> u32 {
    8
}
