//! Email through the SendGrid v3 API: `POST /v3/mail/send` with a bearer key;
//! `202 Accepted` and the message id in `X-Message-Id`.

pub mod callback;
pub mod config;
mod request;
mod response;

#[cfg(test)]
mod tests;

use self::config::SendgridConfig;
use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tidings_core::Channel;

pub struct Sendgrid {
    name: String,
    client: reqwest::Client,
    url: String,
    api_key: SecretString,
    from: request::Address,
}

impl Sendgrid {
    pub fn new(name: &str, c: &SendgridConfig) -> Result<Self, String> {
        let from = request::Address::parse(&c.from).ok_or("`from` is not an address")?;
        let client = crate::http_client(c.timeout).build().map_err(|e| e.to_string())?;
        Ok(Sendgrid {
            name: name.to_string(),
            client,
            url: format!("{}/v3/mail/send", c.base_url.trim_end_matches('/')),
            api_key: c.api_key.clone(),
            from,
        })
    }
}

#[async_trait]
impl Provider for Sendgrid {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, channel: Channel) -> bool {
        channel == Channel::Email
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let Content::Email { .. } = &message.content else {
            return Err(ProviderError::permanent("sendgrid sends email only"));
        };
        let body = request::body(&self.from, message)?;
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(self.api_key.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| ProviderError::from_http(&e))?;
        response::read(&self.name, response).await
    }
}
