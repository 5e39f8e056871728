//! A user's preferences, as `tidings prefs` writes them and intake and workers
//! read them. Addresses are validated when written, so a bad phone number is
//! refused at the door rather than bounced by a provider later.

use crate::notification::PushToken;
use crate::redact;
use crate::{Channel, Recipient};
use chrono::NaiveTime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preferences {
    pub user_id: String,
    /// IANA time zone, e.g. `Europe/Paris`.
    #[serde(default = "utc")]
    pub timezone: String,
    /// BCP 47 locale, e.g. `fr-FR`; templates pick `fr` variants from it.
    #[serde(default = "en")]
    pub locale: String,
    #[serde(default)]
    pub email: Option<String>,
    /// E.164, e.g. `+33612345678`.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub push_tokens: Vec<PushToken>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Per-channel enablement; a channel not named is disabled.
    #[serde(default)]
    pub channels: BTreeMap<Channel, bool>,
    /// Categories the user opted out of (`marketing`, …).
    #[serde(default)]
    pub opt_out: Vec<String>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// Mutes every channel, every category.
    #[serde(default)]
    pub muted: bool,
    // Fields Tidings does not use are allowed and ignored here: the stored
    // preferences are the text as it was written, so they are kept there.
}

fn utc() -> String {
    "UTC".into()
}
fn en() -> String {
    "en".into()
}

/// A local quiet window. `end` before `start` crosses midnight; equal means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    #[serde(serialize_with = "ser_hhmm", deserialize_with = "de_hhmm")]
    pub start: NaiveTime,
    #[serde(serialize_with = "ser_hhmm", deserialize_with = "de_hhmm")]
    pub end: NaiveTime,
}

/// Either one window for every day, or windows per weekday (`mon` … `sun`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum QuietHours {
    Daily(Window),
    Weekly(BTreeMap<String, Window>),
}

impl<'de> Deserialize<'de> for QuietHours {
    /// By shape, so that a mistake inside a window is reported as itself.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        if map.contains_key("start") || map.contains_key("end") {
            serde_json::from_value(map.into()).map(QuietHours::Daily).map_err(D::Error::custom)
        } else {
            serde_json::from_value(map.into()).map(QuietHours::Weekly).map_err(D::Error::custom)
        }
    }
}

fn ser_hhmm<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.format("%H:%M").to_string())
}

pub(crate) fn de_hhmm<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
    let s = String::deserialize(d)?;
    NaiveTime::parse_from_str(&s, "%H:%M")
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a local time like 22:00")))
}

pub(crate) fn de_hhmm_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveTime>, D::Error> {
    de_hhmm(d).map(Some)
}

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Preferences {
    /// Parses and validates one preferences object.
    pub fn parse(json: &str) -> Result<Self, String> {
        let prefs: Preferences = serde_json::from_str(json).map_err(|e| e.to_string())?;
        prefs.validate()?;
        Ok(prefs)
    }

    /// Every address and setting that a provider or the scheduler would trip on.
    pub fn validate(&self) -> Result<(), String> {
        let user = &self.user_id;
        if user.is_empty() {
            return Err("user_id must not be empty".into());
        }
        self.timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| format!("user {user}: `{}` is not an IANA time zone", self.timezone))?;
        if let Some(email) = &self.email {
            if !is_email(email) {
                return Err(format!("user {user}: `{}` is not an email address", redact::email(email)));
            }
        }
        if let Some(phone) = &self.phone {
            if !is_e164(phone) {
                return Err(format!(
                    "user {user}: `{}` is not an E.164 phone number like +33612345678",
                    redact::phone(phone)
                ));
            }
        }
        for t in &self.push_tokens {
            if !matches!(t.platform.as_str(), "fcm" | "apns") || t.token.trim().is_empty() {
                return Err(format!("user {user}: push token must have platform fcm or apns and a token"));
            }
        }
        if let Some(url) = &self.webhook_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(char::is_whitespace) {
                return Err(format!("user {user}: `{}` is not an http(s) URL", redact::url(url)));
            }
        }
        if let Some(QuietHours::Weekly(days)) = &self.quiet_hours {
            if let Some(bad) = days.keys().find(|d| !WEEKDAYS.contains(&d.as_str())) {
                return Err(format!("user {user}: quiet_hours day `{bad}` is not one of mon…sun"));
            }
        }
        Ok(())
    }

    /// The user's address on `channel`, if they have one.
    pub fn recipient(&self, channel: Channel) -> Option<Recipient> {
        match channel {
            Channel::Email => self.email.clone().map(|address| Recipient::Email { address }),
            Channel::Sms => self.phone.clone().map(|phone| Recipient::Sms { phone }),
            Channel::Push => {
                (!self.push_tokens.is_empty()).then(|| Recipient::Push { tokens: self.push_tokens.clone() })
            }
            Channel::Webhook => self.webhook_url.clone().map(|url| Recipient::Webhook { url }),
        }
    }

    pub fn channel_enabled(&self, channel: Channel) -> bool {
        self.channels.get(&channel).copied().unwrap_or(false)
    }

    /// Why nothing in `category` may reach this user on `channel`, if so.
    pub fn suppression(&self, channel: Channel, category: &str) -> Option<String> {
        if self.muted {
            Some("user is muted".into())
        } else if self.opt_out.iter().any(|c| c == category) {
            Some(format!("user opted out of {category}"))
        } else if !self.channel_enabled(channel) {
            Some(format!("user disabled the {channel} channel"))
        } else {
            None
        }
    }
}

/// A practical address check: one `@`, a dotted domain, no spaces or line breaks.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `+` then 8 to 15 digits, the first not zero.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANA: &str = r#"{"user_id": "u-42", "timezone": "Europe/Paris", "locale": "fr-FR",
      "email": "ana@example.com", "phone": "+33612345678",
      "push_tokens": [{"platform": "fcm", "token": "t1"}],
      "webhook_url": null, "channels": {"email": true, "sms": true, "push": false},
      "opt_out": ["marketing"], "quiet_hours": {"start": "22:00", "end": "07:00"},
      "muted": false, "loyalty_tier": "gold"}"#;

    #[test]
    fn parses_the_documented_example_with_extra_fields() {
        let p = Preferences::parse(ANA).unwrap();
        assert!(p.channel_enabled(Channel::Email));
        assert!(!p.channel_enabled(Channel::Push));
        assert!(!p.channel_enabled(Channel::Webhook));
        assert_eq!(p.suppression(Channel::Email, "marketing").unwrap(), "user opted out of marketing");
        assert_eq!(p.suppression(Channel::Email, "transactional"), None);
        let back: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(back["quiet_hours"]["start"], "22:00");
    }

    #[test]
    fn invalid_addresses_are_refused_with_the_reason() {
        let bad_phone = ANA.replace("+33612345678", "0612345678");
        assert!(Preferences::parse(&bad_phone).unwrap_err().contains("E.164"));
        let bad_email = ANA.replace("ana@example.com", "ana at example");
        assert!(Preferences::parse(&bad_email).unwrap_err().contains("email"));
        let bad_tz = ANA.replace("Europe/Paris", "Mars/Olympus");
        assert!(Preferences::parse(&bad_tz).unwrap_err().contains("IANA"));
        let bad_time = ANA.replace("22:00", "late");
        assert!(Preferences::parse(&bad_time).is_err());
    }

    #[test]
    fn address_checks() {
        assert!(is_e164("+14155550123"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+1415555012345678"));
        assert!(is_email("a.b+c@mail.example.org"));
        assert!(!is_email("a@b\r\nBcc: x@y.z"));
        assert!(!is_email("@example.com"));
    }
}
