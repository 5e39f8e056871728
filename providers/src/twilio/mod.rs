//! SMS through the Twilio Messages API:
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, basic auth.

pub mod callback;
pub mod config;
mod request;
mod response;

use self::config::TwilioConfig;
use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use secrecy::SecretString;
use tidings_core::Channel;

pub struct Twilio {
    name: String,
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: SecretString,
    sender: request::Sender,
    status_callback: Option<url::Url>,
}

impl Twilio {
    pub fn new(name: &str, c: &TwilioConfig) -> Result<Self, String> {
        let sender = match (&c.messaging_service_sid, &c.from) {
            (Some(sid), _) => request::Sender::MessagingService(sid.clone()),
            (None, Some(from)) => request::Sender::From(from.clone()),
            (None, None) => return Err("set `from` or `messaging_service_sid`".into()),
        };
        let client = crate::http_client(c.timeout).build().map_err(|e| e.to_string())?;
        Ok(Twilio {
            name: name.to_string(),
            client,
            url: format!("{}/2010-04-01/Accounts/{}/Messages.json", c.base_url.trim_end_matches('/'), c.account_sid),
            account_sid: c.account_sid.clone(),
            auth_token: c.auth_token.clone(),
            sender,
            status_callback: c.status_callback.clone(),
        })
    }
}

#[async_trait]
impl Provider for Twilio {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, channel: Channel) -> bool {
        channel == Channel::Sms
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let Content::Sms { to, body } = &message.content else {
            return Err(ProviderError::permanent("twilio sends SMS only"));
        };
        let status_url = self.status_callback.as_ref().map(|base| request::status_url(base, &message.notification_id));
        let form = request::form(&self.sender, to, body, status_url.as_deref());
        let response = self
            .client
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(secrecy::ExposeSecret::expose_secret(&self.auth_token)))
            .form(&form)
            .send()
            .await
            .map_err(|e| ProviderError::from_http(&e))?;
        response::read(&self.name, response).await
    }
}

#[cfg(test)]
mod tests;
