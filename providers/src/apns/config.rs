//! How to reach APNs, and the provider token key.

use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// `https://api.push.apple.com` (or `https://api.sandbox.push.apple.com`).
    #[serde(default = "default_apns_url")]
    pub base_url: String,
    /// Path of the `.p8` signing key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The `.p8` signing key itself (PEM).
    #[serde(default)]
    pub key_pem: Option<SecretString>,
    /// The key's id (the JWT `kid`).
    pub key_id: String,
    /// The Apple developer team id (the JWT `iss`).
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    #[serde(default = "crate::registry::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl crate::registry::Settings for ApnsConfig {
    fn validate(&self) -> Result<(), String> {
        if self.key_file.is_none() && self.key_pem.is_none() {
            return Err("set `key_file` or `key_pem`".into());
        }
        Ok(())
    }
}

fn default_apns_url() -> String {
    "https://api.push.apple.com".into()
}
