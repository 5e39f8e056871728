//! Signing keys: one per endpoint, so that a receiver, who must hold its
//! key to verify, cannot forge deliveries to anyone else.
//!
//! An endpoint's key is derived from the configured master key with
//! HKDF-SHA256 (RFC 5869), the endpoint's URL as the `info`: nothing per
//! endpoint is stored, and `tidings prefs webhook-secret <user>` prints the
//! key to hand to its owner. Rotation: the new master goes in `secret`, the
//! old one in `previous_secret` with `previous_until`; until then every
//! delivery carries both signatures (`v1,<new> v1,<old>`, as Standard
//! Webhooks allows), so receivers move to their new key at their own pace.

use super::config::WebhookConfig;
use base64::Engine;
use chrono::{DateTime, Utc};
use hkdf::Hkdf;
use secrecy::ExposeSecret;
use sha2::Sha256;

/// The shortest master key taken, in bytes (Standard Webhooks asks 24 to 64).
pub const MIN_KEY_BYTES: usize = 24;

/// Domain separation: a key derived here is good for nothing else.
const SALT: &[u8] = b"tidings webhook endpoint key v1";

/// The master keys, decoded.
pub struct Keys {
    current: Vec<u8>,
    previous: Option<(Vec<u8>, DateTime<Utc>)>,
}

impl Keys {
    /// Reads and checks the configured keys; the reason never quotes them.
    pub fn from_config(c: &WebhookConfig) -> Result<Self, String> {
        let current = master_key("secret", c.secret.expose_secret())?;
        let previous = match (&c.previous_secret, c.previous_until) {
            (None, None) => None,
            (Some(key), Some(until)) => Some((master_key("previous_secret", key.expose_secret())?, until)),
            _ => return Err("previous_secret and previous_until go together".into()),
        };
        Ok(Keys { current, previous })
    }

    /// The keys `url` is signed with at `now`: its own, and during a
    /// rotation its own under the previous master.
    pub fn for_endpoint(&self, url: &str, now: DateTime<Utc>) -> Vec<[u8; 32]> {
        let mut keys = vec![derive(&self.current, url)];
        if let Some((previous, until)) = &self.previous {
            if now < *until {
                keys.push(derive(previous, url));
            }
        }
        keys
    }
}

/// A `whsec_<base64>` (or bare base64) master key of at least
/// [`MIN_KEY_BYTES`] bytes.
fn master_key(field: &str, text: &str) -> Result<Vec<u8>, String> {
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| format!("{field} is not `whsec_` followed by base64"))?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!("{field} is {} bytes, fewer than the {MIN_KEY_BYTES} a signing key needs", key.len()));
    }
    Ok(key)
}

/// The key of the endpoint at `url` under `master`.
fn derive(master: &[u8], url: &str) -> [u8; 32] {
    let mut key = [0; 32];
    Hkdf::<Sha256>::new(Some(SALT), master)
        .expand(url.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 length");
    key
}

/// A key as receivers' Standard Webhooks libraries take it.
pub fn encode(key: &[u8]) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// The secrets the owner of the endpoint at `url` verifies with, now:
/// what `tidings prefs webhook-secret` prints.
pub fn endpoint_secrets(c: &WebhookConfig, url: &str) -> Result<Vec<String>, String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let keys = Keys::from_config(c)?;
    Ok(keys.for_endpoint(url.as_str(), Utc::now()).iter().map(|k| encode(k)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> WebhookConfig {
        let mut c = serde_json::json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(c).unwrap()
    }

    #[test]
    fn empty_short_or_malformed_keys_are_refused_without_quoting_them() {
        for (secret, reason) in [
            ("whsec_", "secret is 0 bytes, fewer than the 24 a signing key needs"),
            ("whsec_c2hvcnQ=", "secret is 5 bytes, fewer than the 24 a signing key needs"),
            ("whsec_not base64!", "secret is not `whsec_` followed by base64"),
        ] {
            let e = Keys::from_config(&config(serde_json::json!({"secret": secret}))).err().unwrap();
            assert_eq!(e, reason);
        }
        let half = config(serde_json::json!({"previous_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}));
        assert!(Keys::from_config(&half).is_err());
    }

    #[test]
    fn each_endpoint_has_its_own_key_and_a_rotation_overlaps() {
        let keys = Keys::from_config(&config(serde_json::json!({}))).unwrap();
        let now = Utc::now();
        let a = keys.for_endpoint("https://a.example/hook", now);
        let b = keys.for_endpoint("https://b.example/hook", now);
        assert_eq!(a.len(), 1);
        assert_ne!(a, b);
        assert_eq!(a, keys.for_endpoint("https://a.example/hook", now), "derivation is stable");

        let until = now + chrono::Duration::days(7);
        let rotating = config(serde_json::json!({
            "secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "previous_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "previous_until": until,
        }));
        let rotating = Keys::from_config(&rotating).unwrap();
        let during = rotating.for_endpoint("https://a.example/hook", now);
        assert_eq!(during.len(), 2);
        assert_eq!(during[1], a[0], "the old key still signs during the overlap");
        assert_ne!(during[0], a[0]);
        assert_eq!(rotating.for_endpoint("https://a.example/hook", until), [during[0]], "and not after");
    }
}
