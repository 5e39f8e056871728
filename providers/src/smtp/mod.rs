//! Email over SMTP through lettre's pooled async transport.

pub mod config;
mod dkim;
mod request;
mod response;

use self::config::{SmtpConfig, SmtpTls};
use crate::{Content, Outgoing, Provider, ProviderError, Receipt};
use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use tidings_core::Channel;

pub use request::one_line;

/// The MIME message the adapter would send for `message` from `from`,
/// unsigned: what a preview writes as `.eml`.
pub fn mime(from: &str, message: &Outgoing) -> Result<Vec<u8>, ProviderError> {
    let from = from.parse().map_err(|e| ProviderError::permanent(format!("`from`: {e}")))?;
    Ok(request::build(&from, message)?.formatted())
}
pub use response::classify;

pub struct Smtp {
    name: String,
    from: lettre::message::Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: std::time::Duration,
    dkim: Option<dkim::Signer>,
}

impl Smtp {
    pub fn new(name: &str, c: &SmtpConfig) -> Result<Self, String> {
        let bad = |e: &dyn std::fmt::Display| e.to_string();
        let from = c.from.parse().map_err(|e| bad(&e))?;
        let tls = |host: &str| TlsParameters::new(host.to_string()).map_err(|e| bad(&e));
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
            .port(c.port)
            .timeout(Some(c.timeout))
            .pool_config(PoolConfig::new().max_size(c.pool_size));
        builder = match c.tls {
            SmtpTls::Starttls => builder.tls(Tls::Required(tls(&c.host)?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(&c.host)?)),
            SmtpTls::None if c.allow_plaintext => builder.tls(Tls::None),
            SmtpTls::None => return Err(bad(&"plain SMTP needs allow_plaintext = true")),
        };
        if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.expose_secret().to_string()));
        }
        let dkim = c.dkim.as_ref().map(dkim::Signer::new).transpose()?;
        Ok(Smtp { name: name.to_string(), from, transport: builder.build(), timeout: c.timeout, dkim })
    }
}

#[async_trait]
impl Provider for Smtp {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, channel: Channel) -> bool {
        channel == Channel::Email
    }

    async fn send(&self, message: &Outgoing) -> Result<Receipt, ProviderError> {
        let Content::Email { unsubscribe, .. } = &message.content else {
            return Err(ProviderError::permanent("smtp sends email only"));
        };
        let mut email = request::build(&self.from, message)?;
        if let Some(signer) = &self.dkim {
            signer.sign(&mut email, unsubscribe.is_some());
        }
        match tokio::time::timeout(self.timeout, self.transport.send(email)).await {
            // The relay may have taken the message before it went quiet.
            Err(_) => Err(ProviderError::ambiguous(format!("smtp {}: no answer in time", self.name))),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(reply)) => Ok(Receipt { provider_message_id: reply.first_line().map(str::to_string) }),
        }
    }
}
