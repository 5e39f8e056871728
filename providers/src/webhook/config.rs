//! The limits on where webhooks may go. Signing keys are per user and
//! stored in Redis ([`super::keys`]), not configured.

use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The master key of earlier versions, from which each endpoint's key
    /// was derived; refused at start with what to do instead.
    #[serde(default)]
    pub secret: Option<secrecy::SecretString>,
    #[serde(default)]
    pub previous_secret: Option<secrecy::SecretString>,
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
        if self.secret.is_some() || self.previous_secret.is_some() || self.previous_until.is_some() {
            return Err("secret, previous_secret and previous_until are no longer read: each user signs with a \
                 random key of their own, kept in Redis (`tidings prefs webhook-secret <user>` prints it for the \
                 endpoint's owner); remove them"
                .into());
        }
        if self.allowed_ports.is_empty() {
            return Err("allowed_ports is empty: no webhook could be sent".into());
        }
        Ok(())
    }
}

fn default_webhook_ports() -> Vec<u16> {
    vec![80, 443, 8080, 8443]
}
fn default_per_destination() -> usize {
    8
}
