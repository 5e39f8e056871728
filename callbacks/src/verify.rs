//! What the role checks each provider's callbacks with, read from the
//! provider's own configuration when the role starts.

use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use tidings_core::config::{weak_secret, MIN_SECRET_BYTES};
use tidings_core::Config;
use tidings_providers::registry::settings;
use tidings_providers::{sendgrid, twilio, vonage, ConfigError};

/// One configured provider that calls back.
pub enum Verifier {
    Twilio {
        auth_token: SecretString,
    },
    /// `None`: no verification key configured, so every event is refused.
    Sendgrid {
        key: Option<tidings_providers::sendgrid::callback::VerifyingKey>,
    },
    /// `None`: receipts are refused, or taken unsigned when `accept_unsigned`.
    Vonage {
        secret: Option<SecretString>,
        method: vonage::callback::SignatureMethod,
        accept_unsigned: bool,
    },
}

/// `secret` of provider `name`'s `setting`, unless it is too weak to check
/// anything with (see [`weak_secret`]): then the role does not start.
fn strong(name: &str, setting: &str, secret: SecretString) -> Result<SecretString, ConfigError> {
    match weak_secret(secret.expose_secret(), MIN_SECRET_BYTES) {
        Some(why) => Err(ConfigError::new(name, format!("{setting} {why}"))),
        None => Ok(secret),
    }
}

/// Every provider of `config` that calls back, by name.
pub fn verifiers(config: &Config) -> Result<HashMap<String, Verifier>, ConfigError> {
    let mut out = HashMap::new();
    for (name, section) in &config.providers {
        let verifier = match section.kind.as_str() {
            "twilio" => {
                let c: twilio::config::TwilioConfig = settings(name, section)?;
                Verifier::Twilio { auth_token: strong(name, "auth_token", c.auth_token)? }
            }
            "sendgrid" => {
                let c: sendgrid::config::SendgridConfig = settings(name, section)?;
                let key = c.webhook_verification_key.map(|k| sendgrid::callback::verification_key(&k));
                let key = key.transpose().map_err(|problem| ConfigError::new(name, problem))?;
                Verifier::Sendgrid { key }
            }
            "vonage" => {
                let c: vonage::config::VonageConfig = settings(name, section)?;
                let secret = c.signature_secret.map(|s| strong(name, "signature_secret", s)).transpose()?;
                match (&secret, c.accept_unsigned) {
                    (Some(_), _) => {}
                    (None, false) => tracing::warn!(
                        provider = %name,
                        "signature_secret is not set: Vonage receipts are refused (set it, or accept_unsigned = true)"
                    ),
                    (None, true) => tracing::warn!(
                        provider = %name,
                        "accept_unsigned: Vonage receipts are taken unsigned; anyone who reaches this role can forge them"
                    ),
                }
                Verifier::Vonage { secret, method: c.signature_method, accept_unsigned: c.accept_unsigned }
            }
            _ => continue,
        };
        out.insert(name.clone(), verifier);
    }
    Ok(out)
}
