//! The suppression list: email addresses and phone numbers that get nothing
//! more, whoever the user, with why, who said so and when.
//!
//! An address goes on the list when a provider says it can never take mail
//! or texts (a hard bounce, a refused number at send time), when its owner
//! complained or unsubscribed at the provider, when a number texts STOP, or
//! after `soft_bounces` soft bounces within `soft_bounce_window`. It comes
//! off with `tidings suppressions remove`, or a START from the number.
//! Workers look every email and SMS up before sending (in the claim's round
//! trip) and end a listed one `suppressed` with the list's reason.
//!
//! Push tokens and webhook URLs are not listed: a refused token is reported
//! on the message's status and its owner rotates it, and a webhook endpoint
//! is its owner's to fix.

use crate::{Channel, Recipient};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why an address is on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The provider says the address or number does not exist or can never
    /// take messages (a hard bounce, an invalid number).
    HardBounce,
    /// Soft bounces reached the configured count within the window.
    SoftBounces,
    /// The recipient marked a message as spam.
    Complaint,
    /// The recipient unsubscribed at the provider (entries listed before an
    /// unsubscribe became an opt-out of the categories with links).
    Unsubscribe,
    /// The number texted STOP (or one of its family).
    Stop,
    /// An operator added it.
    Manual,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::HardBounce => "hard_bounce",
            Cause::SoftBounces => "soft_bounces",
            Cause::Complaint => "complaint",
            Cause::Unsubscribe => "unsubscribe",
            Cause::Stop => "stop",
            Cause::Manual => "manual",
        }
    }
}

/// One entry of the list, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// The address as listed ([`normalize`]d).
    pub address: String,
    pub channel: Channel,
    pub cause: Cause,
    /// What was said: the provider's code and text, or an operator's note.
    pub reason: String,
    /// Who said it: a provider name, `callbacks`, or `cli`.
    pub source: String,
    pub at: DateTime<Utc>,
}

impl Suppression {
    /// The reason a message to this address ends `suppressed` with.
    pub fn why(&self) -> String {
        format!(
            "{SUPPRESSED_PREFIX}{} ({}, from {} at {})",
            self.cause.as_str(),
            self.reason,
            self.source,
            self.at.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// How the reason of a message stopped by the list starts.
pub const SUPPRESSED_PREFIX: &str = "the address is on the suppression list: ";

/// The listed form of an address: an email address trimmed and lowercased
/// (mailbox providers treat the local part case-blind in practice), a phone
/// number trimmed; `None` for what is neither.
pub fn normalize(address: &str) -> Option<(Channel, String)> {
    let a = address.trim();
    if crate::prefs::is_email(a) {
        Some((Channel::Email, a.to_lowercase()))
    } else if crate::prefs::is_e164(a) {
        Some((Channel::Sms, a.to_string()))
    } else {
        None
    }
}

/// The listed form of a recipient's address: email and SMS only.
pub fn address_of(recipient: &Recipient) -> Option<String> {
    match recipient {
        Recipient::Email { address } => normalize(address).map(|(_, a)| a),
        Recipient::Sms { phone } => normalize(phone).map(|(_, a)| a),
        Recipient::Push { .. } | Recipient::Webhook { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_listed_in_one_form() {
        assert_eq!(normalize(" Ana@Example.COM "), Some((Channel::Email, "ana@example.com".into())));
        assert_eq!(normalize("+33612345678"), Some((Channel::Sms, "+33612345678".into())));
        assert_eq!(normalize("https://hooks.example/x"), None);
        let push = Recipient::Push { tokens: vec![] };
        assert_eq!(address_of(&push), None);
        assert_eq!(address_of(&Recipient::Email { address: "B@x.io".into() }).as_deref(), Some("b@x.io"));
    }

    #[test]
    fn the_reason_names_cause_source_and_time() {
        let s = Suppression {
            address: "ana@example.com".into(),
            channel: Channel::Email,
            cause: Cause::HardBounce,
            reason: "550 5.1.1 no such user".into(),
            source: "sendgrid".into(),
            at: "2026-11-27T10:00:00Z".parse().unwrap(),
        };
        assert_eq!(
            s.why(),
            "the address is on the suppression list: hard_bounce (550 5.1.1 no such user, from sendgrid at 2026-11-27T10:00:00Z)"
        );
    }
}
