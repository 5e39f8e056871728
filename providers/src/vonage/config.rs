//! How to reach Vonage, and how to check its delivery receipts.

use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    /// `https://rest.nexmo.com` in production.
    #[serde(default = "default_vonage_url")]
    pub base_url: String,
    pub api_key: String,
    pub api_secret: SecretString,
    /// Sender number or alphanumeric sender id.
    pub from: String,
    #[serde(default = "crate::registry::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The account's signature secret: delivery receipts must be signed
    /// with it (and recent). Without it, receipts are refused, unless
    /// `accept_unsigned`.
    #[serde(default)]
    pub signature_secret: Option<SecretString>,
    /// Take receipts unsigned when no `signature_secret` is set: anyone who
    /// can reach the role can then mark a number undeliverable or a message
    /// delivered. The role warns at start and counts each such receipt.
    #[serde(default)]
    pub accept_unsigned: bool,
    /// How receipts are signed, as chosen in the dashboard.
    #[serde(default)]
    pub signature_method: super::callback::SignatureMethod,
    /// The `tidings callbacks` URL each message's receipt goes to, e.g.
    /// `https://hooks.shop.example/callbacks/vonage/receipts`; the
    /// account's default receipt URL when left out.
    #[serde(default)]
    pub receipt_callback: Option<url::Url>,
}

impl crate::registry::Settings for VonageConfig {
    fn validate(&self) -> Result<(), String> {
        if self.from.trim().is_empty() {
            return Err("`from` is empty".into());
        }
        Ok(())
    }
}

fn default_vonage_url() -> String {
    "https://rest.nexmo.com".into()
}
