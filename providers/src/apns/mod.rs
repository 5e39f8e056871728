//! Push through APNs over HTTP/2: `POST /3/device/{token}` with a provider
//! JWT (ES256, `kid` = key id, `iss` = team id) re-signed every 40 minutes
//! (Apple accepts tokens between 20 and 60 minutes old), and the `apns-*`
//! headers. The notification id is the `apns-id` and the collapse id, so a
//! copy sent twice in the crash window replaces the first on the device.

pub mod config;
mod request;
mod response;

#[cfg(test)]
mod tests;

use self::config::ApnsConfig;
use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use std::time::{Duration, Instant};
use tidings_core::Channel;
use tokio::sync::Mutex;

/// How long a provider token is used before it is signed again.
const RESIGN_AFTER: Duration = Duration::from_secs(40 * 60);

pub struct Apns {
    name: String,
    client: reqwest::Client,
    base_url: String,
    topic: String,
    key_id: String,
    team_id: String,
    key: EncodingKey,
    token: Mutex<Option<(String, Instant)>>,
}

impl Apns {
    pub fn new(name: &str, c: &ApnsConfig) -> Result<Self, String> {
        let down = |e: String| e;
        let pem = match (&c.key_pem, &c.key_file) {
            (Some(inline), _) => inline.expose_secret().to_string(),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map_err(|e| down(format!("{}: {e}", path.display())))?
            }
            (None, None) => return Err(down("set key_file or key_pem".into())),
        };
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| down(format!("signing key: {e}")))?;
        let mut client = crate::http_client(c.timeout);
        // APNs speaks HTTP/2 only; over TLS it is negotiated, in the clear (tests) assumed.
        if c.base_url.starts_with("http://") {
            client = client.http2_prior_knowledge();
        }
        Ok(Apns {
            name: name.to_string(),
            client: client.build().map_err(|e| down(e.to_string()))?,
            base_url: c.base_url.trim_end_matches('/').to_string(),
            topic: c.topic.clone(),
            key_id: c.key_id.clone(),
            team_id: c.team_id.clone(),
            key,
            token: Mutex::new(None),
        })
    }

    /// The provider token, signed again when it is 40 minutes old.
    async fn provider_token(&self) -> Result<String, ProviderError> {
        let mut token = self.token.lock().await;
        if let Some((jwt, signed)) = token.as_ref() {
            if signed.elapsed() < RESIGN_AFTER {
                return Ok(jwt.clone());
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = serde_json::json!({"iss": self.team_id, "iat": chrono::Utc::now().timestamp()});
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| ProviderError::down(format!("apns {}: cannot sign: {e}", self.name)))?;
        *token = Some((jwt.clone(), Instant::now()));
        Ok(jwt)
    }
}

#[async_trait]
impl Provider for Apns {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, channel: Channel) -> bool {
        channel == Channel::Push
    }

    fn accepts(&self, content: &Content) -> bool {
        matches!(content, Content::Push { tokens, .. } if tokens.iter().any(|t| t.platform == "apns"))
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let Content::Push { tokens, title, body } = &message.content else {
            return Err(ProviderError::permanent("apns sends push only"));
        };
        let jwt = self.provider_token().await?;
        let mut sent = Vec::new();
        let mut failures = Vec::new();
        for token in tokens.iter().filter(|t| t.platform == "apns") {
            let url = format!("{}/3/device/{}", self.base_url, token.token);
            let request =
                request::headers(self.client.post(url), &jwt, &self.topic, message.priority, &message.notification_id)
                    .json(&request::body(title, body, &message.notification_id));
            let result = match request.send().await {
                Ok(r) => response::read(&self.name, r).await,
                Err(e) => Err(ProviderError::from_http(&e)),
            };
            match result {
                Ok(id) => sent.push(id),
                Err(e) => {
                    if e.message.contains("ExpiredProviderToken") {
                        *self.token.lock().await = None;
                    }
                    failures.push(e);
                }
            }
        }
        crate::message::fan_in(sent, failures)
    }
}
