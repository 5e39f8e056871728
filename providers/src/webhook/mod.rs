//! Webhooks: the notification as JSON, POSTed to the user's URL and signed
//! per the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256>`). Redirects are not followed,
//! and destinations on loopback, link-local or private addresses are refused
//! unless `allow_private` is set (the name is resolved by a guard, so a DNS
//! answer cannot smuggle one in).

mod guard;
mod response;

#[cfg(test)]
mod tests;

use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use secrecy::ExposeSecret;
use std::sync::Arc;
use tidings_core::config::WebhookConfig;
use tidings_core::Channel;

pub struct Webhook {
    name: String,
    client: reqwest::Client,
    signer: standardwebhooks::Webhook,
    allow_private: bool,
}

impl Webhook {
    pub fn new(name: &str, c: &WebhookConfig) -> Result<Self, ProviderError> {
        let signer = standardwebhooks::Webhook::new(c.secret.expose_secret())
            .map_err(|e| ProviderError::down(format!("webhook {name}: signing secret: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(guard::Resolver { allow_private: c.allow_private }))
            .user_agent("tidings-webhooks")
            .build()
            .map_err(|e| ProviderError::down(format!("webhook {name}: {e}")))?;
        Ok(Webhook { name: name.to_string(), client, signer, allow_private: c.allow_private })
    }
}

#[async_trait]
impl Provider for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, channel: Channel) -> bool {
        channel == Channel::Webhook
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let Content::Webhook { url, body } = &message.content else {
            return Err(ProviderError::permanent("the webhook provider sends webhooks only"));
        };
        let url = guard::check_url(url, self.allow_private)?;
        let payload = serde_json::to_vec(body).map_err(|e| ProviderError::permanent(e.to_string()))?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self
            .signer
            .sign(&message.notification_id, timestamp, &payload)
            .map_err(|e| ProviderError::permanent(format!("cannot sign: {e}")))?;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &message.notification_id)
            .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(payload)
            .send()
            .await
            .map_err(|e| response::transport(&e))?;
        response::read(&self.name, response)
    }
}
