//! Vonage SMS delivery receipts: `msisdn`, `messageId`, `status`,
//! `err-code`, and our notification id as `client-ref`; sent as a GET
//! query, a form POST or a JSON POST, as the account is set up.
//!
//! With signed webhooks on, the receipt carries `timestamp` and `sig`: over
//! every other parameter sorted by name, written `&name=value` with `&` and
//! `=` in values turned to `_`, either the MD5 of that text followed by the
//! signature secret (`md5hash`, Vonage's default) or its HMAC keyed with the
//! secret (`md5`, `sha1`, `sha256`, `sha512`), in hex.

use crate::feedback::{fresh, param, Feedback, Outcome, Refused};
use hmac::{Hmac, Mac};
use md5::Digest;
use serde::Deserialize;
use std::time::Duration;

/// How receipts are signed (the dashboard's choice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureMethod {
    #[default]
    Md5hash,
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

/// The signature of `params` (any `sig` among them left out).
pub fn signature(method: SignatureMethod, secret: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "sig").collect();
    sorted.sort();
    let mut text = String::new();
    for (k, v) in sorted {
        text.push('&');
        text.push_str(k);
        text.push('=');
        text.push_str(&v.replace(['&', '='], "_"));
    }
    fn hmac<M: Mac + hmac::digest::KeyInit>(secret: &str, text: &str) -> String {
        let mut mac =
            <M as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
    match method {
        SignatureMethod::Md5hash => hex::encode(md5::Md5::digest(format!("{text}{secret}").as_bytes())),
        SignatureMethod::Md5 => hmac::<Hmac<md5::Md5>>(secret, &text),
        SignatureMethod::Sha1 => hmac::<Hmac<sha1::Sha1>>(secret, &text),
        SignatureMethod::Sha256 => hmac::<Hmac<sha2::Sha256>>(secret, &text),
        SignatureMethod::Sha512 => hmac::<Hmac<sha2::Sha512>>(secret, &text),
    }
}

/// Checks a receipt's `sig` (in constant time, either case of hex) and
/// that its `timestamp` is within `tolerance` of `now` (Unix seconds).
pub fn verify(
    method: SignatureMethod,
    secret: &str,
    params: &[(String, String)],
    now: i64,
    tolerance: Duration,
) -> Result<(), Refused> {
    let given = param(params, "sig").ok_or(Refused::Forged)?.to_ascii_lowercase();
    let expected = signature(method, secret, params);
    let same = given.len() == expected.len()
        && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !same {
        return Err(Refused::Forged);
    }
    let at: i64 = param(params, "timestamp").and_then(|t| t.trim().parse().ok()).ok_or(Refused::Forged)?;
    fresh(at, now, tolerance)
}

/// A receipt's parameters: from a JSON body, whose values may be numbers.
pub fn json_params(body: &[u8]) -> Result<Vec<(String, String)>, Refused> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| Refused::Malformed(crate::error::json_problem(&e)))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// A receipt's news.
pub fn receipt(params: &[(String, String)]) -> Result<Feedback, Refused> {
    let status = param(params, "status").ok_or_else(|| Refused::Malformed("no status".into()))?;
    let id = param(params, "messageId").ok_or_else(|| Refused::Malformed("no messageId".into()))?;
    let code = param(params, "err-code").map(str::to_string);
    let outcome = match status {
        "delivered" => Outcome::Delivered,
        "expired" | "failed" | "rejected" => {
            // 3 absent subscriber (permanent), 4 barred by the user, 9 illegal number.
            Outcome::Undelivered { permanent: matches!(code.as_deref(), Some("3" | "4" | "9")) }
        }
        "accepted" | "buffered" | "unknown" => Outcome::Progress,
        other => return Err(Refused::Malformed(format!("unknown status `{other}`"))),
    };
    let reason = match code.as_deref() {
        Some("0") | None => format!("vonage {status}"),
        Some(c) => format!("vonage {status}, err-code {c}"),
    };
    Ok(Feedback {
        notification_id: param(params, "client-ref").filter(|r| !r.is_empty()).map(str::to_string),
        provider_message_id: Some(id.to_string()),
        outcome,
        code,
        reason,
        // Vonage writes numbers without the `+`.
        address: param(params, "msisdn").map(|m| format!("+{}", m.trim_start_matches('+'))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Vonage publishes no worked example; these were computed with
    /// Python's `hashlib` and `hmac` from the documented text,
    /// `&a=1&b=x_y_z&timestamp=1700000000`.
    #[test]
    fn signatures_match_an_independent_computation() {
        let params = pairs(&[("timestamp", "1700000000"), ("b", "x&y=z"), ("a", "1")]);
        assert_eq!(signature(SignatureMethod::Md5hash, "s3cret", &params), KNOWN_MD5HASH);
        assert_eq!(signature(SignatureMethod::Sha256, "s3cret", &params), KNOWN_SHA256);
        let mut signed = params.clone();
        signed.push(("sig".into(), KNOWN_SHA256.to_ascii_uppercase()));
        let tolerance = Duration::from_secs(300);
        assert_eq!(verify(SignatureMethod::Sha256, "s3cret", &signed, 1_700_000_100, tolerance), Ok(()));
        assert_eq!(verify(SignatureMethod::Sha256, "other", &signed, 1_700_000_100, tolerance), Err(Refused::Forged));
        assert_eq!(verify(SignatureMethod::Sha256, "s3cret", &signed, 1_700_009_000, tolerance), Err(Refused::Stale));
        assert_eq!(verify(SignatureMethod::Sha256, "s3cret", &params, 1_700_000_100, tolerance), Err(Refused::Forged));
    }

    const KNOWN_MD5HASH: &str = "6f19622b16711e71e7597cad24d7490d";
    const KNOWN_SHA256: &str = "683012df0aaaf87795664c87167f9006ec9fbf2f7c5f0b08facaf00a76d3b8f5";

    #[test]
    fn receipts_map_to_outcomes_with_our_id() {
        let r = |status: &str, code: &str| {
            receipt(&pairs(&[
                ("msisdn", "33612345678"),
                ("messageId", "0A1"),
                ("status", status),
                ("err-code", code),
                ("client-ref", "n1"),
            ]))
            .unwrap()
        };
        let d = r("delivered", "0");
        assert_eq!(
            (d.outcome, d.notification_id.as_deref(), d.address.as_deref()),
            (Outcome::Delivered, Some("n1"), Some("+33612345678"))
        );
        assert_eq!(r("failed", "9").outcome, Outcome::Undelivered { permanent: true });
        assert_eq!(r("expired", "2").outcome, Outcome::Undelivered { permanent: false });
        assert_eq!(r("accepted", "0").outcome, Outcome::Progress);
        assert!(matches!(receipt(&pairs(&[("status", "delivered")])), Err(Refused::Malformed(_))));
        let json =
            json_params(br#"{"msisdn":"33612345678","messageId":"0A1","status":"delivered","err-code":0}"#).unwrap();
        assert_eq!(receipt(&json).unwrap().code.as_deref(), Some("0"));
    }
}
