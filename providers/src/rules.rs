//! What each channel accepts, checked before any provider is called.
//!
//! - SMS: an E.164 number, and a body within the configured number of
//!   segments. A body in the GSM 03.38 alphabet takes 7 bits a character
//!   (160 in one segment, 153 a segment when split; `^{}\[~]|€` and form feed
//!   take two); any other character makes the whole body UCS-2 (70 UTF-16
//!   units in one segment, 67 when split).
//! - Push: the payload (title, body and data) within 4 KB, the limit of both
//!   FCM and APNs.
//! - Email: header values on one line (see [`crate::smtp::one_line`]).

use crate::{Content, ProviderError};

/// The largest push payload FCM and APNs accept.
pub const PUSH_PAYLOAD_MAX: usize = 4096;

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// How an SMS body is encoded, and how many segments it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub unicode: bool,
    pub units: usize,
    pub count: usize,
}

/// Whether `c` is in the GSM 03.38 alphabet (basic set or extension).
pub fn is_gsm7(c: char) -> bool {
    GSM7_BASIC.contains(c) || GSM7_EXTENSION.contains(c)
}

/// The bytes a push payload of `title` and `body` takes, with the room
/// FCM's and APNs' envelopes take around them.
pub fn push_payload_size(title: &str, body: &str) -> usize {
    title.len() + body.len() + 64
}

pub fn sms_segments(body: &str) -> Segments {
    let mut septets = 0;
    for c in body.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENSION.contains(c) {
            septets += 2;
        } else {
            let units = body.encode_utf16().count();
            return Segments { unicode: true, units, count: split(units, 70, 67) };
        }
    }
    Segments { unicode: false, units: septets, count: split(septets, 160, 153) }
}

fn split(units: usize, single: usize, part: usize) -> usize {
    if units == 0 {
        0
    } else if units <= single {
        1
    } else {
        units.div_ceil(part)
    }
}

/// Checks `content` against its channel's rules. `max_segments` bounds SMS.
pub fn check(content: &Content, max_segments: u32) -> Result<(), ProviderError> {
    match content {
        Content::Sms { to, body } => {
            if !tidings_core::prefs::is_e164(to) {
                return Err(ProviderError::invalid_recipient(format!(
                    "`{}` is not an E.164 number",
                    tidings_core::redact::phone(to)
                )));
            }
            let s = sms_segments(body);
            if s.count > max_segments as usize {
                return Err(ProviderError::permanent(format!(
                    "SMS body takes {} {} segments, more than the {max_segments} allowed",
                    s.count,
                    if s.unicode { "UCS-2" } else { "GSM-7" }
                )));
            }
            Ok(())
        }
        Content::Push { tokens, title, body } => {
            if tokens.is_empty() {
                return Err(ProviderError::invalid_recipient("no push token"));
            }
            let size = push_payload_size(title, body);
            if size > PUSH_PAYLOAD_MAX {
                return Err(ProviderError::permanent(format!("push payload of {size} bytes exceeds 4 KB")));
            }
            Ok(())
        }
        Content::Email { .. } | Content::Webhook { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_counts_160_then_153_a_segment() {
        assert_eq!(sms_segments(&"a".repeat(160)), Segments { unicode: false, units: 160, count: 1 });
        assert_eq!(sms_segments(&"a".repeat(161)).count, 2);
        assert_eq!(sms_segments(&"a".repeat(306)).count, 2);
        assert_eq!(sms_segments(&"a".repeat(307)).count, 3);
        assert_eq!(sms_segments("").count, 0);
    }

    #[test]
    fn extension_characters_count_twice() {
        assert_eq!(sms_segments("€").units, 2);
        assert_eq!(sms_segments(&"{".repeat(80)), Segments { unicode: false, units: 160, count: 1 });
        assert_eq!(sms_segments(&format!("{}€", "a".repeat(159))).count, 2);
    }

    #[test]
    fn any_other_character_makes_it_ucs2() {
        assert!(!sms_segments(&"é".repeat(161)).unicode, "é is in the GSM alphabet");
        let s = sms_segments(&format!("{}ç", "a".repeat(69)));
        assert_eq!(s, Segments { unicode: true, units: 70, count: 1 });
        assert_eq!(sms_segments(&"ç".repeat(71)).count, 2);
        assert_eq!(sms_segments(&"ç".repeat(134)).count, 2);
        assert_eq!(sms_segments(&"ç".repeat(135)).count, 3);
        // An emoji is two UTF-16 units.
        assert_eq!(sms_segments("👋").units, 2);
    }

    #[test]
    fn checks_enforce_the_limits_before_sending() {
        let sms = |to: &str, body: &str| Content::Sms { to: to.into(), body: body.into() };
        assert!(check(&sms("+33612345678", "hello"), 1).is_ok());
        let e = check(&sms("0612345678", "hello"), 1).unwrap_err();
        assert!(e.invalid_recipient);
        let e = check(&sms("+33612345678", &"a".repeat(161)), 1).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Permanent);
        assert!(e.message.contains("2 GSM-7 segments"), "{}", e.message);
        let token = tidings_core::notification::PushToken { platform: "fcm".into(), token: "t".into() };
        let push = |body: &str| Content::Push { tokens: vec![token.clone()], title: "t".into(), body: body.into() };
        assert!(check(&push("short"), 1).is_ok());
        assert!(check(&push(&"x".repeat(4096)), 1).unwrap_err().message.contains("exceeds 4 KB"));
    }
}
