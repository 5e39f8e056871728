//! SendGrid's Event Webhook: a JSON array of events, POSTed in batches.
//! With signing on, `X-Twilio-Email-Event-Webhook-Signature` holds a base64
//! DER ECDSA signature (P-256, SHA-256) of the
//! `X-Twilio-Email-Event-Webhook-Timestamp` header's text followed by the
//! raw body, checked against the verification key SendGrid shows (base64
//! DER of the public key). Our `custom_args` come back as fields of each
//! event, `notification_id` among them.

use crate::feedback::{fresh, Feedback, Outcome, Refused};
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::Signature;
pub use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use std::time::Duration;

pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// The verification key, read from its base64 DER form.
pub fn verification_key(base64_der: &str) -> Result<VerifyingKey, String> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64_der.trim())
        .map_err(|_| "the verification key is not base64".to_string())?;
    VerifyingKey::from_public_key_der(&der).map_err(|_| "the verification key is not a P-256 public key (DER)".into())
}

/// Checks a batch's signature, and that it was signed within `tolerance` of `now` (Unix seconds).
pub fn verify(
    key: &VerifyingKey,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), Refused> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else { return Err(Refused::Forged) };
    let der = base64::engine::general_purpose::STANDARD.decode(signature.trim()).map_err(|_| Refused::Forged)?;
    let signature = Signature::from_der(&der).map_err(|_| Refused::Forged)?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    key.verify(&signed, &signature).map_err(|_| Refused::Forged)?;
    let at: i64 = timestamp.trim().parse().map_err(|_| Refused::Forged)?;
    fresh(at, now, tolerance)
}

#[derive(Deserialize)]
struct Event {
    event: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    sg_message_id: Option<String>,
    #[serde(default)]
    notification_id: Option<String>,
    /// A bounce's kind: `bounce` (hard) or `blocked` (soft).
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// The enhanced status code of a bounce (`5.1.1`).
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Every event of a batch, or why the batch is not one (nothing of it is used then).
pub fn events(body: &[u8]) -> Result<Vec<Feedback>, Refused> {
    let events: Vec<Event> = serde_json::from_slice(body)
        .map_err(|e| Refused::Malformed(format!("not an array of events: {}", crate::error::json_problem(&e))))?;
    Ok(events.into_iter().map(feedback).collect())
}

fn feedback(e: Event) -> Feedback {
    let said = e.reason.clone().unwrap_or_default();
    let outcome = match e.event.as_str() {
        "delivered" => Outcome::Delivered,
        "bounce" => Outcome::Bounced { hard: e.kind.as_deref() != Some("blocked") },
        // SendGrid would not even try: the address is on one of its own lists, or invalid.
        "dropped" => {
            let listed = ["Bounced Address", "Invalid", "Unsubscribed Address", "Spam Reporting Address"];
            Outcome::Bounced { hard: listed.iter().any(|l| said.contains(l)) }
        }
        "spamreport" => Outcome::Complained,
        "unsubscribe" | "group_unsubscribe" => Outcome::Unsubscribed,
        _ => Outcome::Progress,
    };
    let reason = match (&e.status, said.is_empty()) {
        (Some(status), false) => format!("sendgrid {} {status}: {said}", e.event),
        (None, false) => format!("sendgrid {}: {said}", e.event),
        (Some(status), true) => format!("sendgrid {} {status}", e.event),
        (None, true) => format!("sendgrid {}", e.event),
    };
    Feedback {
        notification_id: e.notification_id,
        // `<id>.filter…`: the part before the first dot is the X-Message-Id we got at send.
        provider_message_id: e.sg_message_id.map(|id| id.split('.').next().unwrap_or_default().to_string()),
        outcome,
        code: e.status,
        reason: tidings_core::redact::scrub(&reason),
        address: e.email,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector SendGrid's own libraries test their verification with.
    const KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
    const SIGNATURE: &str =
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
    const TIMESTAMP: &str = "1588788367";
    const PAYLOAD: &str = r#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;

    #[test]
    fn sendgrids_published_vector_verifies_and_changes_do_not() {
        let key = verification_key(KEY).unwrap();
        let tolerance = Duration::from_secs(300);
        let now = 1_588_788_367 + 10;
        let check = |sig: &str, ts: &str, body: &str, now: i64| {
            verify(&key, Some(sig), Some(ts), body.as_bytes(), now, tolerance)
        };
        assert_eq!(check(SIGNATURE, TIMESTAMP, PAYLOAD, now), Ok(()));
        assert_eq!(check(SIGNATURE, TIMESTAMP, "payload", now), Err(Refused::Forged));
        assert_eq!(check(SIGNATURE, "1588788368", PAYLOAD, now), Err(Refused::Forged));
        let other = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=";
        assert_eq!(check(other, TIMESTAMP, PAYLOAD, now), Err(Refused::Forged));
        assert_eq!(check(SIGNATURE, TIMESTAMP, PAYLOAD, now + 3600), Err(Refused::Stale), "signed an hour ago");
        assert_eq!(verify(&key, None, Some(TIMESTAMP), PAYLOAD.as_bytes(), now, tolerance), Err(Refused::Forged));
        assert!(verification_key("not a key").is_err());
    }

    #[test]
    fn events_map_to_outcomes_with_our_id() {
        let body = br#"[
          {"email":"a@example.com","event":"delivered","sg_message_id":"X1.filter0001","notification_id":"n1"},
          {"email":"b@example.com","event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user b@example.com","notification_id":"n2"},
          {"email":"c@example.com","event":"bounce","type":"blocked","status":"4.0.0","reason":"try later","notification_id":"n3"},
          {"email":"d@example.com","event":"spamreport","notification_id":"n4"},
          {"email":"e@example.com","event":"group_unsubscribe","notification_id":"n5"},
          {"email":"f@example.com","event":"deferred","notification_id":"n6"},
          {"email":"g@example.com","event":"dropped","reason":"Bounced Address","notification_id":"n7"}
        ]"#;
        let fb = events(body).unwrap();
        let outcomes: Vec<Outcome> = fb.iter().map(|f| f.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Delivered,
                Outcome::Bounced { hard: true },
                Outcome::Bounced { hard: false },
                Outcome::Complained,
                Outcome::Unsubscribed,
                Outcome::Progress,
                Outcome::Bounced { hard: true }
            ]
        );
        assert_eq!(fb[0].provider_message_id.as_deref(), Some("X1"));
        assert_eq!(fb[1].notification_id.as_deref(), Some("n2"));
        assert_eq!(fb[1].code.as_deref(), Some("5.1.1"));
        assert_eq!(fb[1].reason, "sendgrid bounce 5.1.1: 550 5.1.1 no such user b***@example.com");
        assert!(matches!(events(b"{\"event\":\"delivered\"}"), Err(Refused::Malformed(_))));
        assert!(matches!(events(b"[{\"email\":\"a@example.com\"}]"), Err(Refused::Malformed(_))));
    }
}
