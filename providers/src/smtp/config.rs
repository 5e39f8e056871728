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
    #[serde(default = "crate::registry::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Pooled connections kept open.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    /// Sign every message with DKIM; unsigned when left out.
    #[serde(default)]
    pub dkim: Option<DkimSettings>,
}

/// A DKIM key and where its public half is published:
/// `<selector>._domainkey.<domain>` (see the README).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The signing domain (`d=`), normally the `From` address's.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// `rsa` (a PKCS#1 PEM key, `BEGIN RSA PRIVATE KEY`) or `ed25519` (the
    /// 32-byte seed in base64).
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// The private key itself, e.g. from `TIDINGS_PROVIDERS__SMTP__DKIM__PRIVATE_KEY`.
    #[serde(default)]
    pub private_key: Option<SecretString>,
    /// Or the file holding it.
    #[serde(default)]
    pub private_key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DkimAlgorithm {
    #[default]
    Rsa,
    Ed25519,
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
        if let Some(dkim) = &self.dkim {
            super::dkim::Signer::new(dkim)?;
        }
        Ok(())
    }
}

fn default_smtp_port() -> u16 {
    587
}
fn default_pool() -> u32 {
    8
}
