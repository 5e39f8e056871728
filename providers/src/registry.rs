//! From a `[providers.<name>]` section to an adapter: `kind` picks the
//! adapter, whose own configuration (`<kind>/config.rs`) reads the rest and
//! checks it. Adding a provider is its folder and one line here.

use crate::{apns, fcm, sandbox, sendgrid, smtp, twilio, vonage, webhook, Provider};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tidings_core::config::ProviderSection;
use tidings_core::Config;

/// A provider section that cannot be used: a configuration error, reported
/// at start and never retried.
#[derive(Debug, thiserror::Error)]
#[error("configuration: providers.{name}: {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    pub name: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(name: &str, problem: impl Into<String>) -> Self {
        ConfigError { name: name.to_string(), problem: problem.into() }
    }
}

/// What each provider configuration checks beyond its types.
pub trait Settings: DeserializeOwned {
    fn validate(&self) -> Result<(), String>;
}

/// How long a provider call may take unless its section says (`timeout`).
pub fn default_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// The kinds there are.
pub const KINDS: [&str; 8] = ["smtp", "sendgrid", "twilio", "vonage", "webhook", "fcm", "apns", "sandbox"];

/// Builds the adapter named `name` from its section.
pub fn build(name: &str, section: &ProviderSection) -> Result<Arc<dyn Provider>, ConfigError> {
    made(name, section, true).map(|p| p.expect("built when asked"))
}

/// Reads and checks every provider section of `config`, building nothing:
/// what a role does at start, so a mistake stops it before it takes work.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    for (name, section) in &config.providers {
        made(name, section, false)?;
    }
    Ok(())
}

/// The settings of a section of the kind `C` reads, checked.
pub fn settings<C: Settings>(name: &str, section: &ProviderSection) -> Result<C, ConfigError> {
    read::<C>(section).map_err(|problem| ConfigError { name: name.to_string(), problem })
}

fn made(name: &str, section: &ProviderSection, build: bool) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let made = match section.kind.as_str() {
        "smtp" => make(section, build, |c| smtp::Smtp::new(name, c)),
        "sendgrid" => make(section, build, |c| sendgrid::Sendgrid::new(name, c)),
        "twilio" => make(section, build, |c| twilio::Twilio::new(name, c)),
        "vonage" => make(section, build, |c| vonage::Vonage::new(name, c)),
        "webhook" => make(section, build, |c| webhook::Webhook::new(name, c)),
        "fcm" => make(section, build, |c| fcm::Fcm::new(name, c)),
        "apns" => make(section, build, |c| apns::Apns::new(name, c)),
        "sandbox" => make(section, build, |c| sandbox::Sandbox::new(name, c)),
        other => Err(format!("unknown kind `{other}` (one of {})", KINDS.join(", "))),
    };
    made.map_err(|problem| ConfigError { name: name.to_string(), problem })
}

fn make<C: Settings, P: Provider + 'static>(
    section: &ProviderSection,
    build: bool,
    new: impl FnOnce(&C) -> Result<P, String>,
) -> Result<Option<Arc<dyn Provider>>, String> {
    let c = read::<C>(section)?;
    if !build {
        return Ok(None);
    }
    Ok(Some(Arc::new(new(&c)?)))
}

/// The section's settings as `C`, checked. A problem names the field but
/// never shows a value: it may be a secret.
fn read<C: Settings>(section: &ProviderSection) -> Result<C, String> {
    let value = serde_json::Value::Object(section.settings.clone());
    let c: C = serde_path_to_error::deserialize(value).map_err(|e| {
        let text = e.inner().to_string();
        let problem = if text.starts_with("missing field") || text.starts_with("unknown field") {
            text
        } else {
            "a value of the wrong type or form (not shown: it may be a secret)".to_string()
        };
        match e.path().to_string().as_str() {
            "." => problem,
            path => format!("{path}: {problem}"),
        }
    })?;
    c.validate()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml: serde_json::Value) -> ProviderSection {
        serde_json::from_value(toml).unwrap()
    }

    #[test]
    fn each_kind_reads_its_own_settings_and_says_what_is_wrong() {
        let twilio = section(
            serde_json::json!({"kind": "twilio", "account_sid": "AC1", "auth_token": "t", "from": "+15550001111"}),
        );
        assert!(build("sms", &twilio).is_ok());
        let no_sender = section(serde_json::json!({"kind": "twilio", "account_sid": "AC1", "auth_token": "t"}));
        let e = build("sms", &no_sender).err().unwrap();
        assert_eq!(e.to_string(), "configuration: providers.sms: set `from` or `messaging_service_sid`");
        let secret_typo = section(
            serde_json::json!({"kind": "twilio", "account_sid": "AC1", "auth_token": 918273645, "from": "+1555"}),
        );
        let e = build("sms", &secret_typo).err().unwrap().to_string();
        assert!(e.contains("auth_token") && !e.contains("918273645"), "{e}");
        let unknown = section(
            serde_json::json!({"kind": "twilio", "account_sid": "AC1", "auth_token": "t", "from": "+1", "form": "x"}),
        );
        let e = build("sms", &unknown).err().unwrap().problem;
        assert!(e.contains("unknown field `form`"), "{e}");
        let plain = section(serde_json::json!({"kind": "smtp", "host": "h", "from": "a@b.io", "tls": "none"}));
        assert_eq!(build("mail", &plain).err().unwrap().problem, "tls = \"none\" needs allow_plaintext = true");
        let kind = section(serde_json::json!({"kind": "pigeon"}));
        assert!(build("p", &kind).err().unwrap().problem.starts_with("unknown kind `pigeon`"));
    }
}
