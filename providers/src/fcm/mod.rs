//! Push through FCM HTTP v1: `POST /v1/projects/{project}/messages:send`, one
//! request per device token, authorised by an OAuth2 access token obtained
//! from a service-account key and cached until shortly before it expires.

mod auth;
pub mod config;
mod request;
mod response;

#[cfg(test)]
mod tests;

use self::config::FcmConfig;
use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use tidings_core::Channel;

pub use auth::ServiceAccount;

pub struct Fcm {
    name: String,
    client: reqwest::Client,
    url: String,
    tokens: auth::TokenSource,
}

impl Fcm {
    pub fn new(name: &str, c: &FcmConfig) -> Result<Self, String> {
        let down = |e: String| e;
        let account = ServiceAccount::load(c).map_err(down)?;
        let client = crate::http_client(c.timeout).build().map_err(|e| down(e.to_string()))?;
        let project = c.project_id.clone().unwrap_or_else(|| account.project_id.clone());
        Ok(Fcm {
            name: name.to_string(),
            url: format!("{}/v1/projects/{project}/messages:send", c.base_url.trim_end_matches('/')),
            tokens: auth::TokenSource::new(account, c.token_url.clone(), client.clone()),
            client,
        })
    }
}

#[async_trait]
impl Provider for Fcm {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, channel: Channel) -> bool {
        channel == Channel::Push
    }

    fn accepts(&self, content: &Content) -> bool {
        matches!(content, Content::Push { tokens, .. } if tokens.iter().any(|t| t.platform == "fcm"))
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let Content::Push { tokens, title, body } = &message.content else {
            return Err(ProviderError::permanent("fcm sends push only"));
        };
        let access = self.tokens.get().await?;
        let mut sent = Vec::new();
        let mut failures = Vec::new();
        for token in tokens.iter().filter(|t| t.platform == "fcm") {
            let payload = request::body(&token.token, title, body, &message.notification_id);
            let result = match self.client.post(&self.url).bearer_auth(&access).json(&payload).send().await {
                Ok(r) => response::read(&self.name, r).await,
                Err(e) => Err(ProviderError::from_http(&e)),
            };
            match result {
                Ok(id) => sent.push(id),
                Err(e) => {
                    if e.kind == crate::ErrorKind::ProviderDown {
                        self.tokens.forget().await;
                    }
                    failures.push(e);
                }
            }
        }
        crate::message::fan_in(sent, failures)
    }
}
