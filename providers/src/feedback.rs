//! What a provider says about a message after it accepted it, read from its
//! callbacks; and why a callback is refused. Each adapter folder has a
//! `callback.rs` that checks its provider's signature and reads its
//! callbacks into these.

use std::fmt;

/// One thing a provider said about one message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Feedback {
    /// Ours, carried through the provider (Twilio's status URL, SendGrid's
    /// `custom_args`, Vonage's `client-ref`).
    pub notification_id: Option<String>,
    pub provider_message_id: Option<String>,
    pub outcome: Outcome,
    /// The provider's own code (`30005`, `5.1.1`, `err-code 3`), if any.
    pub code: Option<String>,
    /// What the provider said, for people.
    pub reason: String,
    /// The recipient the callback names: the address to list when the
    /// outcome calls for it.
    pub address: Option<String>,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It reached the handset or the receiving mail server.
    Delivered,
    /// The mail server refused it; a hard bounce lists the address.
    Bounced { hard: bool },
    /// The recipient marked it as spam (lists the address).
    Complained,
    /// The recipient unsubscribed at the provider (opts the user out of the
    /// categories with unsubscribe links).
    Unsubscribed,
    /// An SMS that did not arrive; a permanent failure lists the number.
    Undelivered { permanent: bool },
    /// An SMS refused because the number opted out at the provider (texted
    /// STOP to it): `undelivered`, and the number listed as a STOP.
    OptedOut,
    /// A step on the way (queued, sent, deferred, accepted): nothing to record.
    Progress,
}

/// An inbound SMS keyword (Twilio's and the carriers' families).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keyword {
    /// STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT, REVOKE: no more SMS.
    Stop,
    /// START, YES, UNSTOP: SMS again.
    Start,
    /// HELP, INFO: the provider answers it; nothing changes.
    Help,
}

impl Keyword {
    /// The keyword a message body is, if it is one (a whole body, any case,
    /// surrounding spaces and punctuation ignored).
    pub fn of(body: &str) -> Option<Keyword> {
        let word = body.trim().trim_matches(|c: char| !c.is_alphanumeric()).to_ascii_uppercase();
        match word.as_str() {
            "STOP" | "STOPALL" | "STOP ALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "OPTOUT" | "REVOKE" => {
                Some(Keyword::Stop)
            }
            "START" | "YES" | "UNSTOP" => Some(Keyword::Start),
            "HELP" | "INFO" => Some(Keyword::Help),
            _ => None,
        }
    }
}

/// Why a callback is refused; nothing it said is acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No signature, or one that does not match (401).
    Forged,
    /// Signed too long ago, or in the future (401): a replay.
    Stale,
    /// Not what the provider sends (400).
    Malformed(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Forged => f.write_str("the signature is missing or does not match"),
            Refused::Stale => f.write_str("the signed timestamp is too old or in the future"),
            Refused::Malformed(why) => write!(f, "malformed: {why}"),
        }
    }
}

/// Whether a signed timestamp (Unix seconds) is within `tolerance` of `now`.
pub fn fresh(signed_at: i64, now: i64, tolerance: std::time::Duration) -> Result<(), Refused> {
    if (now - signed_at).unsigned_abs() <= tolerance.as_secs() {
        Ok(())
    } else {
        Err(Refused::Stale)
    }
}

/// Form or query parameters as pairs, `+` and percent-escapes decoded.
pub fn form_pairs(text: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text).into_owned().collect()
}

/// The value of parameter `key`, if there.
pub fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_whole_bodies_in_any_case() {
        assert_eq!(Keyword::of(" stop "), Some(Keyword::Stop));
        assert_eq!(Keyword::of("Unsubscribe."), Some(Keyword::Stop));
        assert_eq!(Keyword::of("START"), Some(Keyword::Start));
        assert_eq!(Keyword::of("help!"), Some(Keyword::Help));
        assert_eq!(Keyword::of("please stop sending"), None);
        assert_eq!(Keyword::of("Thanks"), None);
    }

    #[test]
    fn a_timestamp_is_fresh_within_the_tolerance_either_way() {
        let five = std::time::Duration::from_secs(300);
        assert_eq!(fresh(1000, 1300, five), Ok(()));
        assert_eq!(fresh(1000, 1301, five), Err(Refused::Stale));
        assert_eq!(fresh(1400, 1000, five), Err(Refused::Stale));
    }
}
