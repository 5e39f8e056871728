//! How to reach SendGrid, and how to check its Event Webhook.

use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendgridConfig {
    /// `https://api.sendgrid.com` in production.
    #[serde(default = "default_sendgrid_url")]
    pub base_url: String,
    pub api_key: SecretString,
    /// The sender, e.g. `Shop <no-reply@shop.example>`.
    pub from: String,
    #[serde(default = "crate::registry::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The Signed Event Webhook's verification key (base64, as SendGrid
    /// shows it). `tidings callbacks` refuses this provider's events until
    /// it is set: unsigned events could list any address.
    #[serde(default)]
    pub webhook_verification_key: Option<String>,
}

impl crate::registry::Settings for SendgridConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(key) = &self.webhook_verification_key {
            super::callback::verification_key(key).map_err(|e| format!("webhook_verification_key: {e}"))?;
        }
        Ok(())
    }
}

fn default_sendgrid_url() -> String {
    "https://api.sendgrid.com".into()
}
