//! Webhooks: the notification as JSON, POSTed to the user's URL and signed
//! per the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256>`) with the user's own
//! key ([`keys`]), which the worker reads from Redis and hands over with
//! the content. Redirects are not followed, no proxy is used, only the
//! allowed ports are called, and destinations on loopback, link-local,
//! private or other special-purpose addresses are refused unless
//! `allow_private` is set (the name is resolved by a guard, so a DNS
//! answer cannot smuggle one in).
//!
//! Each destination (scheme, host and port) takes at most
//! `max_per_destination` calls at once, so one customer's slow endpoint
//! cannot take every connection; the worker's lanes already keep a user's
//! own messages one at a time.

pub mod config;
mod guard;
pub mod keys;
mod response;

#[cfg(test)]
mod tests;

use self::config::WebhookConfig;
use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tidings_core::Channel;
use tokio::sync::Semaphore;

pub struct Webhook {
    name: String,
    client: reqwest::Client,
    allow_private: bool,
    ports: Vec<u16>,
    per_destination: usize,
    /// Calls under way per destination; an entry lives while a call holds it.
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Webhook {
    pub fn new(name: &str, c: &WebhookConfig) -> Result<Self, String> {
        let client = crate::http_client(c.timeout)
            // A proxy from the environment (`HTTPS_PROXY`, `ALL_PROXY`) would be the only
            // address the guard sees: webhooks never go through one.
            .no_proxy()
            .dns_resolver(Arc::new(guard::Resolver { allow_private: c.allow_private }))
            .user_agent("tidings-webhooks")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Webhook {
            name: name.to_string(),
            client,
            allow_private: c.allow_private,
            ports: c.allowed_ports.clone(),
            per_destination: c.max_per_destination.max(1),
            destinations: Mutex::default(),
        })
    }

    /// Waits for a place among the calls to `destination`.
    async fn slot(&self, destination: &str) -> tokio::sync::OwnedSemaphorePermit {
        let semaphore = {
            let mut map = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
            // Forget destinations no call holds, so the map stays as small as the calls under way.
            if map.len() > 1024 {
                map.retain(|_, s| Arc::strong_count(s) > 1);
            }
            map.entry(destination.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_destination))).clone()
        };
        semaphore.acquire_owned().await.expect("destination semaphores are never closed")
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

    fn calls_recipients(&self) -> bool {
        true
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let Content::Webhook { url, body, keys } = &message.content else {
            return Err(ProviderError::permanent("the webhook provider sends webhooks only"));
        };
        if keys.0.is_empty() {
            return Err(ProviderError::permanent("no signing key for this webhook"));
        }
        let url = guard::check_url(url, self.allow_private, &self.ports)?;
        let destination = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let _slot = self.slot(&destination).await;
        let payload = serde_json::to_vec(body).map_err(|e| ProviderError::permanent(e.to_string()))?;
        let timestamp = chrono::Utc::now().timestamp();
        // Space-separated when a rotation is under way: receivers accept either.
        let signature = keys
            .0
            .iter()
            .map(|key| {
                standardwebhooks::Webhook::from_bytes(key.clone())
                    .and_then(|signer| signer.sign(&message.notification_id, timestamp, &payload))
                    .map_err(|e| ProviderError::permanent(format!("cannot sign: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(" ");
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
