//! How to reach FCM, and the service account to authenticate as.

use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// `https://fcm.googleapis.com` in production.
    #[serde(default = "default_fcm_url")]
    pub base_url: String,
    /// The Firebase project; the service account's when left out.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Path of the service-account key file (JSON).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The service-account key itself (JSON), e.g. from `TIDINGS_PROVIDERS__FCM__CREDENTIALS_JSON`.
    #[serde(default)]
    pub credentials_json: Option<SecretString>,
    /// OAuth2 token endpoint; the key's `token_uri` when left out.
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default = "crate::registry::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl crate::registry::Settings for FcmConfig {
    fn validate(&self) -> Result<(), String> {
        if self.credentials_file.is_none() && self.credentials_json.is_none() {
            return Err("set `credentials_file` or `credentials_json`".into());
        }
        Ok(())
    }
}

fn default_fcm_url() -> String {
    "https://fcm.googleapis.com".into()
}
