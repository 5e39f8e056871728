//! SMS through the Twilio Messages API:
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, basic auth.

mod request;
mod response;

use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use secrecy::SecretString;
use tidings_core::config::TwilioConfig;
use tidings_core::Channel;

pub struct Twilio {
    name: String,
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: SecretString,
    sender: request::Sender,
}

impl Twilio {
    pub fn new(name: &str, c: &TwilioConfig) -> Result<Self, ProviderError> {
        let sender = match (&c.messaging_service_sid, &c.from) {
            (Some(sid), _) => request::Sender::MessagingService(sid.clone()),
            (None, Some(from)) => request::Sender::From(from.clone()),
            (None, None) => {
                return Err(ProviderError::down(format!("twilio {name}: set `from` or `messaging_service_sid`")))
            }
        };
        let client =
            crate::http_client(c.timeout).build().map_err(|e| ProviderError::down(format!("twilio {name}: {e}")))?;
        Ok(Twilio {
            name: name.to_string(),
            client,
            url: format!("{}/2010-04-01/Accounts/{}/Messages.json", c.base_url.trim_end_matches('/'), c.account_sid),
            account_sid: c.account_sid.clone(),
            auth_token: c.auth_token.clone(),
            sender,
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
        let form = request::form(&self.sender, to, body);
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
