//! Signing keys and the limits on where webhooks may go.

use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Master signing key, `whsec_<base64>` of at least 24 bytes. Each
    /// endpoint signs with its own key derived from it (HKDF-SHA256 over its
    /// URL); `tidings prefs webhook-secret <user>` prints a user's.
    pub secret: SecretString,
    /// The master key being rotated out: its signature is sent beside the
    /// new one until `previous_until`.
    #[serde(default)]
    pub previous_secret: Option<SecretString>,
    #[serde(default)]
    pub previous_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Allow destinations on loopback, link-local and private addresses (tests, internal hooks).
    #[serde(default)]
    pub allow_private: bool,
    /// The ports a destination may use.
    #[serde(default = "default_webhook_ports")]
    pub allowed_ports: Vec<u16>,
    /// Calls at once to one destination (scheme, host, port), across users.
    #[serde(default = "default_per_destination")]
    pub max_per_destination: usize,
    #[serde(default = "crate::registry::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl crate::registry::Settings for WebhookConfig {
    fn validate(&self) -> Result<(), String> {
        super::keys::Keys::from_config(self).map(|_| ())
    }
}

fn default_webhook_ports() -> Vec<u16> {
    vec![80, 443, 8080, 8443]
}
fn default_per_destination() -> usize {
    8
}
