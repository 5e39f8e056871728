//! OAuth2 access tokens from a Google service-account key (the JWT-bearer
//! grant, RFC 7523): a JWT signed RS256 with the key is exchanged at the
//! token endpoint (configurable, so tests can fake it).

use super::config::FcmConfig;
use crate::ProviderError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A cached token is replaced this long before it expires.
const REFRESH_EARLY: Duration = Duration::from_secs(300);

/// The fields of a service-account key file that we use.
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl ServiceAccount {
    pub fn load(c: &FcmConfig) -> Result<Self, String> {
        let json = match (&c.credentials_json, &c.credentials_file) {
            (Some(inline), _) => inline.expose_secret().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
            (None, None) => return Err("set credentials_file or credentials_json".into()),
        };
        serde_json::from_str(&json)
            .map_err(|e| format!("the service-account key is not usable: {}", crate::error::json_problem(&e)))
    }
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    #[serde(default = "an_hour")]
    expires_in: u64,
}

fn an_hour() -> u64 {
    3600
}

pub struct TokenSource {
    account: ServiceAccount,
    token_url: String,
    client: reqwest::Client,
    cached: Mutex<Option<(String, Instant)>>,
}

impl TokenSource {
    pub fn new(account: ServiceAccount, token_url: Option<String>, client: reqwest::Client) -> Self {
        let token_url = token_url.unwrap_or_else(|| account.token_uri.clone());
        TokenSource { account, token_url, client, cached: Mutex::new(None) }
    }

    /// A valid access token, fetched again when the cached one is near expiry.
    pub async fn get(&self) -> Result<String, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref() {
            if Instant::now() + REFRESH_EARLY < *expires {
                return Ok(token.clone());
            }
        }
        let granted = self.exchange().await?;
        let token = granted.access_token.clone();
        *cached = Some((granted.access_token, Instant::now() + Duration::from_secs(granted.expires_in)));
        Ok(token)
    }

    /// Drops the cached token (FCM refused it).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    async fn exchange(&self) -> Result<Granted, ProviderError> {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": self.account.client_email, "scope": SCOPE, "aud": self.token_url, "iat": now, "exp": now + 3600,
        });
        let key = EncodingKey::from_rsa_pem(self.account.private_key.as_bytes())
            .map_err(|e| ProviderError::down(format!("fcm: service-account key: {e}")))?;
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)
            .map_err(|e| ProviderError::down(format!("fcm: cannot sign the token request: {e}")))?;
        let response = self
            .client
            .post(&self.token_url)
            .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|e| ProviderError::from_http(&e).before_sending())?;
        let status = response.status();
        if !status.is_success() {
            tracing::error!(status = status.as_u16(), "fcm: the token endpoint refused the service account");
            return Err(ProviderError::down(format!("fcm: token endpoint answered HTTP {status}")));
        }
        response
            .json()
            .await
            .map_err(|e| ProviderError::down(format!("fcm: unreadable token answer: {}", crate::error::http_cause(&e))))
    }
}
