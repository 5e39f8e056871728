//! Signing keys: one per user, random, so that a receiver, who must hold
//! its key to verify, cannot forge deliveries to anyone else, and no one can
//! work out another user's key from anything they know or register.
//!
//! A user's key is 32 random bytes, made the first time it is needed (the
//! first delivery, or `tidings prefs webhook-secret <user>`) and stored in
//! Redis beside the preferences ([`EndpointKeys`], as JSON). No key is
//! derived from configuration, so no configuration file, image or example
//! holds anything that signs. `tidings prefs webhook-secret <user>
//! --rotate` makes a new key and keeps the old one until the overlap ends;
//! meanwhile every delivery carries both signatures (`v1,<new> v1,<old>`, as
//! Standard Webhooks allows), so the receiver moves to its new key at its
//! own pace.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A user's keys as stored: `whsec_<base64>` each.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointKeys {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for EndpointKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointKeys").field("previous_until", &self.previous_until).finish_non_exhaustive()
    }
}

impl EndpointKeys {
    /// A new random key.
    pub fn fresh() -> Self {
        EndpointKeys { key: encode(&rand::random::<[u8; 32]>()), previous: None, previous_until: None }
    }

    /// Reads stored keys; the reason never quotes them.
    pub fn parse(json: &str) -> Result<Self, String> {
        // serde's reason may quote the value: a key.
        let keys: EndpointKeys = serde_json::from_str(json).map_err(|_| {
            "the stored webhook keys are not readable; `tidings prefs webhook-secret <user> --rotate` replaces them"
                .to_string()
        })?;
        decode(&keys.key)?;
        if let Some(previous) = &keys.previous {
            decode(previous)?;
        }
        Ok(keys)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("keys serialize to JSON")
    }

    /// A new key in place of this one, which keeps signing beside it until
    /// `now + overlap` (not at all for a zero overlap: a leaked key).
    pub fn rotated(&self, now: DateTime<Utc>, overlap: std::time::Duration) -> Self {
        let overlap = chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::MAX);
        let until = now.checked_add_signed(overlap).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let keep = !overlap.is_zero();
        EndpointKeys {
            previous: keep.then(|| self.key.clone()),
            previous_until: keep.then_some(until),
            ..EndpointKeys::fresh()
        }
    }

    /// The keys that sign at `now`, the current one first.
    pub fn signing(&self, now: DateTime<Utc>) -> Result<SigningKeys, String> {
        Ok(SigningKeys(self.printable(now).into_iter().map(|(_, key)| decode(&key)).collect::<Result<_, _>>()?))
    }

    /// The keys that sign at `now` as receivers take them, with what each
    /// is (`current`, `previous until <time>`).
    pub fn printable(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        let mut out = vec![("current".to_string(), self.key.clone())];
        if let (Some(previous), Some(until)) = (&self.previous, self.previous_until) {
            if now < until {
                out.push((format!("previous until {}", until.to_rfc3339()), previous.clone()));
            }
        }
        out
    }
}

/// The raw keys one delivery is signed with; never printed.
#[derive(Clone, Default, PartialEq)]
pub struct SigningKeys(pub Vec<Vec<u8>>);

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys({} redacted)", self.0.len())
    }
}

/// A key as receivers' Standard Webhooks libraries take it.
pub fn encode(key: &[u8]) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

fn decode(key: &str) -> Result<Vec<u8>, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key.strip_prefix("whsec_").unwrap_or(key))
        .map_err(|_| "a stored webhook key is not `whsec_` followed by base64".to_string())?;
    if raw.len() < 24 {
        return Err(format!("a stored webhook key is {} bytes, fewer than 24", raw.len()));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_fresh_key_is_random_and_round_trips() {
        let (a, b) = (EndpointKeys::fresh(), EndpointKeys::fresh());
        assert_ne!(a, b);
        assert_eq!(EndpointKeys::parse(&a.to_json()).unwrap(), a);
        let now = Utc::now();
        assert_eq!(a.signing(now).unwrap().0.len(), 1);
        assert_eq!(a.signing(now).unwrap().0[0].len(), 32);
        assert!(!format!("{a:?}{:?}", a.signing(now).unwrap()).contains(&a.key[6..]), "keys never print");
    }

    #[test]
    fn a_rotation_signs_with_both_until_the_overlap_ends() {
        let old = EndpointKeys::fresh();
        let now = Utc::now();
        let new = old.rotated(now, Duration::from_secs(3600));
        let during = new.signing(now).unwrap().0;
        assert_eq!(during.len(), 2);
        assert_eq!(during[1], old.signing(now).unwrap().0[0], "the old key still signs during the overlap");
        assert_ne!(during[0], during[1]);
        let after = new.signing(now + chrono::Duration::hours(1)).unwrap().0;
        assert_eq!(after, [during[0].clone()], "and not after");
        assert_eq!(old.rotated(now, Duration::ZERO).signing(now).unwrap().0.len(), 1, "a leaked key stops at once");
    }

    #[test]
    fn unreadable_stored_keys_are_refused_without_quoting_them() {
        let bare = r#""whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw""#;
        for json in [r#"{"key":"whsec_c2hvcnQ="}"#, r#"{"key":"whsec_not base64!"}"#, "{}", bare] {
            let e = EndpointKeys::parse(json).unwrap_err();
            assert!(!e.contains("c2hvcnQ") && !e.contains("not base64!") && !e.contains("MfKQ9r8"), "{e}");
        }
    }
}
