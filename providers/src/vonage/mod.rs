//! SMS through the Vonage SMS API: `POST /sms/json`, form-encoded, key and
//! secret in the body. The HTTP status is 200 even when a message failed:
//! the per-message `status` in the body says what happened.

pub mod callback;
pub mod config;
mod request;
mod response;

#[cfg(test)]
mod tests;

use self::config::VonageConfig;
use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tidings_core::Channel;

pub struct Vonage {
    name: String,
    client: reqwest::Client,
    url: String,
    api_key: String,
    api_secret: SecretString,
    from: String,
    receipt_callback: Option<String>,
}

impl Vonage {
    pub fn new(name: &str, c: &VonageConfig) -> Result<Self, String> {
        let client = crate::http_client(c.timeout).build().map_err(|e| e.to_string())?;
        Ok(Vonage {
            name: name.to_string(),
            client,
            url: format!("{}/sms/json", c.base_url.trim_end_matches('/')),
            api_key: c.api_key.clone(),
            api_secret: c.api_secret.clone(),
            from: c.from.clone(),
            receipt_callback: c.receipt_callback.as_ref().map(|u| u.to_string()),
        })
    }
}

#[async_trait]
impl Provider for Vonage {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, channel: Channel) -> bool {
        channel == Channel::Sms
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let Content::Sms { to, body } = &message.content else {
            return Err(ProviderError::permanent("vonage sends SMS only"));
        };
        let secret = self.api_secret.expose_secret();
        let mut form = request::form(&self.api_key, secret, &self.from, to, body, &message.notification_id);
        if let Some(url) = &self.receipt_callback {
            form.push(("callback", url));
        }
        let response =
            self.client.post(&self.url).form(&form).send().await.map_err(|e| ProviderError::from_http(&e))?;
        response::read(&self.name, response).await
    }
}
