//! What the role checks each provider's callbacks with, read from the
//! provider's own configuration when the role starts.

use secrecy::SecretString;
use std::collections::HashMap;
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
    /// `None`: receipts are taken unsigned.
    Vonage {
        secret: Option<SecretString>,
        method: vonage::callback::SignatureMethod,
    },
}

/// Every provider of `config` that calls back, by name.
pub fn verifiers(config: &Config) -> Result<HashMap<String, Verifier>, ConfigError> {
    let mut out = HashMap::new();
    for (name, section) in &config.providers {
        let verifier = match section.kind.as_str() {
            "twilio" => {
                let c: twilio::config::TwilioConfig = settings(name, section)?;
                Verifier::Twilio { auth_token: c.auth_token }
            }
            "sendgrid" => {
                let c: sendgrid::config::SendgridConfig = settings(name, section)?;
                let key = c.webhook_verification_key.map(|k| sendgrid::callback::verification_key(&k));
                let key = key.transpose().map_err(|problem| ConfigError::new(name, problem))?;
                Verifier::Sendgrid { key }
            }
            "vonage" => {
                let c: vonage::config::VonageConfig = settings(name, section)?;
                Verifier::Vonage { secret: c.signature_secret, method: c.signature_method }
            }
            _ => continue,
        };
        out.insert(name.clone(), verifier);
    }
    Ok(out)
}
