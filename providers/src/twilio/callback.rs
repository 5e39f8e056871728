//! Twilio's callbacks: message status (`StatusCallback`, which we give per
//! message with our notification id in its query) and inbound messages
//! (the STOP / START / HELP keywords).
//!
//! Both are form POSTs signed in `X-Twilio-Signature`: base64 of
//! HMAC-SHA1, keyed with the account's auth token, over the full URL Twilio
//! called (query included) followed by every form parameter's name and
//! value, sorted by name. Twilio signs no timestamp: a replayed status
//! yields nothing new (one record per notification and state), and a
//! replayed keyword changes nothing.

use crate::feedback::{param, Feedback, Keyword, Outcome, Refused};
use base64::Engine;
use hmac::{Hmac, Mac};

/// The header Twilio signs in.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The HMAC over what Twilio signs of a request to `url` with form `params`.
fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<sha1::Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// The signature of a request to `url` with form `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Checks a request's signature (in constant time).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: Option<&str>) -> Result<(), Refused> {
    let given = header.ok_or(Refused::Forged)?;
    let given = base64::engine::general_purpose::STANDARD.decode(given.trim()).map_err(|_| Refused::Forged)?;
    mac(auth_token, url, params).verify_slice(&given).map_err(|_| Refused::Forged)
}

/// A status callback's news. `notification_id` is the `n` of the URL we gave.
pub fn status(params: &[(String, String)], notification_id: Option<String>) -> Result<Feedback, Refused> {
    let state = param(params, "MessageStatus")
        .or_else(|| param(params, "SmsStatus"))
        .ok_or_else(|| Refused::Malformed("no MessageStatus".into()))?;
    let sid = param(params, "MessageSid")
        .or_else(|| param(params, "SmsSid"))
        .ok_or_else(|| Refused::Malformed("no MessageSid".into()))?;
    let code = param(params, "ErrorCode").filter(|c| !c.is_empty()).map(str::to_string);
    let outcome = match state {
        "delivered" | "read" => Outcome::Delivered,
        "undelivered" | "failed" if code.as_deref() == Some("21610") => Outcome::OptedOut,
        "undelivered" | "failed" => Outcome::Undelivered { permanent: code.as_deref().is_some_and(permanent) },
        "accepted" | "scheduled" | "queued" | "sending" | "sent" | "receiving" | "received" | "canceled" => {
            Outcome::Progress
        }
        other => return Err(Refused::Malformed(format!("unknown MessageStatus `{other}`"))),
    };
    let reason = match &code {
        Some(c) => format!("twilio {state}, error {c}{}", describe(c).map(|d| format!(": {d}")).unwrap_or_default()),
        None => format!("twilio {state}"),
    };
    Ok(Feedback {
        notification_id,
        provider_message_id: Some(sid.to_string()),
        outcome,
        code,
        reason,
        address: param(params, "To").map(str::to_string),
    })
}

/// Error codes that say the number can never take our messages.
fn permanent(code: &str) -> bool {
    // 21211 invalid To, 21614 not a mobile (21610, the number sent STOP, is an opt-out),
    // 30004 blocked by the recipient, 30005 unknown handset, 30006 a landline.
    matches!(code, "21211" | "21614" | "30004" | "30005" | "30006")
}

fn describe(code: &str) -> Option<&'static str> {
    Some(match code {
        "21211" => "invalid To number",
        "21610" => "the recipient sent STOP",
        "21614" => "not a mobile number",
        "30003" => "unreachable handset",
        "30004" => "blocked by the recipient",
        "30005" => "unknown handset",
        "30006" => "landline or unreachable carrier",
        "30007" => "filtered by the carrier",
        "30008" => "unknown error",
        _ => return None,
    })
}

/// An inbound message's keyword and sender, if it is a keyword. Twilio's
/// Advanced Opt-Out says which family in `OptOutType`; otherwise the body
/// is read.
pub fn inbound(params: &[(String, String)]) -> Result<Option<(Keyword, String)>, Refused> {
    let from = param(params, "From").ok_or_else(|| Refused::Malformed("no From".into()))?;
    let keyword = match param(params, "OptOutType") {
        Some(kind) => Keyword::of(kind),
        None => Keyword::of(param(params, "Body").unwrap_or_default()),
    };
    Ok(keyword.map(|k| (k, from.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The example in Twilio's "Webhooks security" guide.
    #[test]
    fn twilios_published_example_verifies() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        // Out of order on purpose: the signature sorts them.
        let params = pairs(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("Caller", "+12349013030"),
        ]);
        assert_eq!(signature("12345", url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert_eq!(verify("12345", url, &params, Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")), Ok(()));
        let other_url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert_eq!(verify("12345", other_url, &params, Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")), Err(Refused::Forged));
        assert_eq!(verify("54321", url, &params, Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")), Err(Refused::Forged));
        assert_eq!(verify("12345", url, &params, None), Err(Refused::Forged));
        assert_eq!(verify("12345", url, &params, Some("not base64!")), Err(Refused::Forged));
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let s = |state: &str, code: &str| {
            status(
                &pairs(&[("MessageStatus", state), ("MessageSid", "SM1"), ("ErrorCode", code), ("To", "+33612345678")]),
                Some("n1".into()),
            )
            .unwrap()
        };
        assert_eq!(s("delivered", "").outcome, Outcome::Delivered);
        assert_eq!(s("sent", "").outcome, Outcome::Progress);
        assert_eq!(s("undelivered", "30005").outcome, Outcome::Undelivered { permanent: true });
        assert_eq!(s("failed", "30003").outcome, Outcome::Undelivered { permanent: false });
        let f = s("undelivered", "30006");
        assert_eq!(
            (f.code.as_deref(), f.reason.as_str()),
            (Some("30006"), "twilio undelivered, error 30006: landline or unreachable carrier")
        );
        assert!(matches!(status(&pairs(&[("MessageSid", "SM1")]), None), Err(Refused::Malformed(_))));
        assert!(matches!(
            status(&pairs(&[("MessageStatus", "exploded"), ("MessageSid", "SM1")]), None),
            Err(Refused::Malformed(_))
        ));
    }

    #[test]
    fn inbound_keywords_come_from_opt_out_type_or_the_body() {
        let stop = pairs(&[("From", "+33612345678"), ("Body", "Stop"), ("MessageSid", "SM2")]);
        assert_eq!(inbound(&stop), Ok(Some((Keyword::Stop, "+33612345678".into()))));
        let start = pairs(&[("From", "+33612345678"), ("Body", "oui"), ("OptOutType", "START")]);
        assert_eq!(inbound(&start), Ok(Some((Keyword::Start, "+33612345678".into()))));
        let chat = pairs(&[("From", "+33612345678"), ("Body", "where is my parcel?")]);
        assert_eq!(inbound(&chat), Ok(None));
    }
}
