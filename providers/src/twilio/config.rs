//! How to reach Twilio, and where it reports on each message.

use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// `https://api.twilio.com` in production.
    #[serde(default = "default_twilio_url")]
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: SecretString,
    /// Sender number (E.164) or alphanumeric sender id.
    #[serde(default)]
    pub from: Option<String>,
    /// Messaging service SID, used instead of `from` when set.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    #[serde(default = "crate::registry::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The `tidings callbacks` URL Twilio reports each message's status
    /// to, e.g. `https://hooks.shop.example/callbacks/twilio/status` (the
    /// provider's name in place of `twilio`); each message's carries
    /// `?n=<notification id>`. No status callbacks when left out.
    #[serde(default)]
    pub status_callback: Option<url::Url>,
}

impl crate::registry::Settings for TwilioConfig {
    fn validate(&self) -> Result<(), String> {
        if self.from.is_none() && self.messaging_service_sid.is_none() {
            return Err("set `from` or `messaging_service_sid`".into());
        }
        Ok(())
    }
}

fn default_twilio_url() -> String {
    "https://api.twilio.com".into()
}
